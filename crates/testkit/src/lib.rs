//! Shared test support for every crate's tests: the one place that decides what a test does
//! when an external tool (openssl, tshark, swtpm, dnsmasq, ...) is missing.
//!
//! The rule (DEVELOPERS.md): a test that needs a real tool checks for it; locally it skips with
//! a message, under `CI=true` it fails, because CI installs every tool and a missing one means
//! the install step is broken.

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `tool` is on PATH. Returns `false` (the caller returns early, skipping) when it is
/// missing locally; panics under CI, where a missing tool is a broken install step.
pub fn require_tool(tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    assert!(
        !in_ci(),
        "`{tool}` is required under CI=true but is not on PATH (.ci/run should install it)"
    );
    eprintln!(
        "skipping: `{tool}` is not installed (install it, or run `cargo xtask install-deps`)"
    );
    false
}

/// Like [`require_tool`], for tests that need root (network namespaces, raw sockets).
pub fn require_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    if root {
        return true;
    }
    assert!(!in_ci(), "this test needs root, and CI runs as root");
    eprintln!("skipping: this test needs root");
    false
}

/// The full path of `tool` on PATH, if any.
pub fn which(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The workspace root (the folder holding the root `Cargo.toml` and `fixtures/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives at crates/testkit")
        .to_path_buf()
}

/// A file under the workspace's `fixtures/` folder.
pub fn fixture(relative: &str) -> PathBuf {
    workspace_root().join("fixtures").join(relative)
}

/// The length tshark reports for DHCP option `option`, from the comma-separated
/// `dhcp.option.type` and `dhcp.option.length` columns of one packet's line. Panics (a failed
/// test) when the packet has no such option.
pub fn tshark_dhcp_option_length<'a>(types: &str, lengths: &'a str, option: &str) -> &'a str {
    let position = types
        .split(',')
        .position(|t| t == option)
        .unwrap_or_else(|| panic!("option {option} in {types:?}"));
    lengths
        .split(',')
        .nth(position)
        .unwrap_or_else(|| panic!("a length for option {option} in {lengths:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_that_every_machine_has() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-nulab").is_none());
    }

    #[test]
    fn fixtures_are_found_from_the_workspace_root() {
        assert!(fixture("windows-captures/README.md").is_file());
    }

    #[test]
    fn an_option_length_is_read_beside_its_type() {
        assert_eq!(
            tshark_dhcp_option_length("53,60,43", "1,9,152", "43"),
            "152"
        );
    }

    #[test]
    #[should_panic(expected = "option 125")]
    fn a_missing_option_fails_the_test() {
        tshark_dhcp_option_length("53,60", "1,9", "125");
    }
}
