//! Text helpers the views share: HTML escaping for the report and the recovery lab's pages.

/// `text` escaped for HTML text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
