//! The catalogue inside the binary: every scenario of `scenarios/` at the workspace root, with
//! the files they name (`policy_file`, `pfx`), put in at build time (`build.rs`). A name on the
//! command line is a file when one exists at that path, else a catalogue entry (`happy-path-ipv4`,
//! `scenarios/happy-path-ipv4.toml` or `happy-path-ipv4.toml` alike; [`crate::model::resolve`]).

use std::path::{Component, Path, PathBuf};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));
}

/// The folder of the catalogue in the source tree; catalogue entries carry paths inside it, so
/// that errors read as they do on the files.
pub const FOLDER: &str = "scenarios";

/// The names of the catalogue's scenarios, sorted.
pub fn names() -> Vec<&'static str> {
    generated::SCENARIOS.iter().map(|(name, _)| *name).collect()
}

/// The text of a catalogue scenario.
pub fn text(name: &str) -> Option<&'static str> {
    generated::SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// A file a catalogue scenario names, by its path relative to the catalogue's folder.
pub fn file(relative: &Path) -> Option<&'static [u8]> {
    let wanted = normalise(relative);
    generated::FILES
        .iter()
        .find(|(path, _)| normalise(Path::new(path)) == wanted)
        .map(|(_, bytes)| *bytes)
}

/// `relative` without `.` components, `..` applied.
fn normalise(relative: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The catalogue name `arg` stands for, if any: `NAME`, `NAME.toml` or `scenarios/NAME.toml`.
pub fn name_of(arg: &str) -> Option<&'static str> {
    let stem = arg
        .strip_prefix("scenarios/")
        .unwrap_or(arg)
        .trim_end_matches(".toml");
    generated::SCENARIOS
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_inside_and_sorted() {
        let names = names();
        assert!(names.len() >= 30, "{names:?}");
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(names.contains(&"happy-path-ipv4"));
    }

    #[test]
    fn a_name_resolves_in_each_spelling() {
        for arg in [
            "happy-path-ipv4",
            "happy-path-ipv4.toml",
            "scenarios/happy-path-ipv4.toml",
        ] {
            assert_eq!(name_of(arg), Some("happy-path-ipv4"), "{arg}");
        }
        assert_eq!(name_of("happy-path"), None);
    }

    #[test]
    fn paths_are_compared_normalised() {
        assert_eq!(normalise(Path::new("./a/../b/c")), PathBuf::from("b/c"));
    }
}
