//! ARCHITECTURE.md's invariant for the sans-IO cores, checked with `cargo tree`: no core has a
//! normal (non-dev) dependency on a shell (the simulator `netsim`, the real-socket `realnet`),
//! on tokio, or on the threaded decrypt pool (`unlock-processor`), and no core's source spawns
//! a thread. Dev-dependencies (the cores' own simulator tests) are allowed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates ARCHITECTURE.md calls sans-IO cores, and the contract they are written against.
const CORES: &[&str] = &[
    "nkpu",
    "dhcp",
    "unlock-server",
    "boot-client",
    "tpm",
    "volume",
    "certificates",
    "host-contract",
    "dhcp-wire",
];

/// What no core may link.
const FORBIDDEN: &[&str] = &["netsim", "realnet", "tokio", "unlock-processor"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The packages `core` links in a normal build (every feature on, so a feature cannot hide one).
fn normal_dependencies(core: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "-e", "normal", "--all-features", "--prefix", "none"])
        .args(["-f", "{p}", "-p", core])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {core}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn cores_link_neither_a_shell_nor_tokio() {
    let mut violations = Vec::new();
    for core in CORES {
        let deps = normal_dependencies(core);
        assert!(
            deps.iter().any(|d| d == core),
            "cargo tree -p {core} lists the crate itself: {deps:?}"
        );
        for forbidden in FORBIDDEN {
            if deps.iter().any(|d| d == forbidden) {
                violations.push(format!("{core} depends on {forbidden}"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_check_sees_a_shell_where_there_is_one() {
    // realnet is a shell: it links tokio. If this failed, the test above would prove nothing.
    let deps = normal_dependencies("realnet");
    assert!(deps.iter().any(|d| d == "tokio"), "{deps:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn cores_spawn_no_thread() {
    let mut violations = Vec::new();
    for core in CORES {
        let mut files = Vec::new();
        rust_files(
            &workspace_root().join("crates").join(core).join("src"),
            &mut files,
        );
        assert!(!files.is_empty(), "{core} has sources");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            if text.contains("thread::spawn") || text.contains("thread::Builder") {
                violations.push(file.display().to_string());
            }
        }
    }
    assert!(
        violations.is_empty(),
        "cores that start threads: {violations:#?}"
    );
}
