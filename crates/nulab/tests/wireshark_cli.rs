//! `nulab wireshark install` as a user runs it: into the personal plugin folder under `HOME`
//! (a temporary one here), after which tshark, started with that `HOME` and no `-X` option,
//! loads the dissector by itself and names the fields of the real Windows capture.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn nulab(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .env("HOME", home)
        .output()
        .unwrap()
}

#[test]
fn the_installed_dissector_is_loaded_by_tshark_from_the_personal_plugin_folder() {
    let home = tempfile::tempdir().unwrap();
    let out = nulab(home.path(), &["wireshark", "install"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let installed = home.path().join(".local/lib/wireshark/plugins/nkpu.lua");
    assert!(text.contains(&installed.display().to_string()), "{text}");
    assert!(
        text.contains("Key log file"),
        "says how to give the key log: {text}"
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wireshark/nkpu.lua");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&shipped).unwrap(),
        "the installed file is the repository's dissector"
    );

    // A second install finds it; a user's edit is kept unless --force.
    let again = nulab(home.path(), &["wireshark", "install", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(value["result"], "already-installed", "{value}");
    std::fs::write(&installed, "-- edited\n").unwrap();
    let refused = nulab(home.path(), &["wireshark", "install"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&installed).unwrap(), "-- edited\n");
    let forced = nulab(home.path(), &["wireshark", "install", "--force", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(value["result"], "replaced", "{value}");

    if !testkit::require_tool("tshark") {
        return;
    }
    let capture = testkit::fixture("windows-captures/windows10-nkpu-request-v4.pcap");
    let out = Command::new("tshark")
        .env("HOME", home.path())
        .arg("-r")
        .arg(&capture)
        .args(["-T", "fields", "-e", "nkpu.kind", "-e", "nkpu.thumbprint"])
        .output()
        .unwrap();
    let fields = String::from_utf8_lossy(&out.stdout);
    assert!(
        fields.trim() == "request\t4ad038da813176acbd5caaae0fe3494b0d008159",
        "tshark loaded the installed dissector: {fields:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
