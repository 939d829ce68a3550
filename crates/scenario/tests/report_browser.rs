//! The HTML reports of every catalogue scenario in a real headless browser (Debian's Chromium): each loads without a
//! script error, has its PASSED/FAILED banner and every section, and no element is wider than
//! a 1280-pixel window. The report's own small script records errors and overflowing elements
//! as attributes of `<html>`, read here from `--dump-dom`. Screenshots of a few reports are
//! kept under `target/report-screenshots/` as CI artefacts.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const SCREENSHOTS: &[&str] = &[
    "happy-path-ipv4",
    "boot-storm-after-patch-reboot",
    "recovery-https-mp-down-fails-over-to-http",
];

fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

/// The value of attribute `name` on the dumped `<html>` element.
fn html_attribute(dom: &str, name: &str) -> Option<String> {
    let html = &dom[dom.find("<html")?..];
    let tag = &html[..html.find('>')?];
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/report-screenshots")
}

#[test]
fn reports_load_without_errors_show_their_sections_and_fit_1280_pixels() {
    if !testkit::require_tool("chromium") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for name in scenario::catalogue::names() {
        let loaded = scenario::load_catalogue(name).unwrap();
        let result = scenario::run(&loaded, None).unwrap();
        let dir = work.path().join(name);
        scenario::write_outputs(&result, &dir).unwrap();
        let report = dir.join("report.html");
        let url = format!("file://{}", report.display());
        let profile = tempfile::tempdir().unwrap();
        let out = chromium(
            profile.path(),
            &["--virtual-time-budget=3000", "--dump-dom", &url],
        );
        let dom = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            html_attribute(&dom, "data-checked").as_deref(),
            Some("1"),
            "{name}: the report's check did not run (stderr: {})",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            html_attribute(&dom, "data-script-errors"),
            None,
            "{name}: script errors"
        );
        assert_eq!(
            html_attribute(&dom, "data-overflow").as_deref(),
            Some(""),
            "{name}: elements wider than 1280 px"
        );
        let banner = if result.passed() {
            "id=\"banner\">PASSED<"
        } else {
            "id=\"banner\">FAILED<"
        };
        assert!(dom.contains(banner), "{name}: no banner");
        for section in [
            "files",
            "expectations",
            "outcome",
            "sequence",
            "key-chains",
            "packets",
            "transcript",
        ] {
            assert!(
                dom.contains(&format!("<h2 id=\"{section}\">")),
                "{name}: no {section} section"
            );
        }
        if result.clients.len() > 12 {
            assert!(dom.contains("<h2 id=\"summary\">"), "{name}: no summary");
        }
        if name.starts_with("recovery-") {
            assert!(dom.contains("<h2 id=\"recovery\">"), "{name}: no recovery");
        }
        if SCREENSHOTS.contains(&name) {
            std::fs::create_dir_all(screenshot_dir()).unwrap();
            let png = screenshot_dir().join(format!("{name}.png"));
            let profile = tempfile::tempdir().unwrap();
            chromium(
                profile.path(),
                &[
                    "--window-size=1280,2400",
                    &format!("--screenshot={}", png.display()),
                    &url,
                ],
            );
            let bytes = std::fs::read(&png).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{name}: no screenshot");
        }
    }
}
