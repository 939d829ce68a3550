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

/// The dissector opens a reply under the "Session key" preference: `nulab demo` computes an
/// exchange and prints its SK and CK; under that SK the tag verifies and CK is the demo's,
/// under another it does not verify and nothing is shown as CK.
#[test]
fn the_dissector_opens_the_reply_under_the_session_key_preference() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(["demo", "--seed", "7", "--json", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let demo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sk = demo["session_key"].as_str().unwrap();
    let ck = demo["client_key"].as_str().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wireshark/nkpu.lua");
    let reply_fields = |key: &str| -> String {
        let out = Command::new("tshark")
            .arg("-X")
            .arg(format!("lua_script:{}", script.display()))
            .args(["-o", &format!("nkpu.session_key:{key}")])
            .arg("-r")
            .arg(&pcap)
            .args(["-Y", "nkpu.kind == \"reply\"", "-T", "fields"])
            .args(["-e", "nkpu.reply.verified", "-e", "nkpu.reply.ck"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(reply_fields(sk), format!("verifies\t{ck}"));
    let mut other = sk.to_owned();
    other.replace_range(..2, if sk.starts_with("00") { "01" } else { "00" });
    let refused = reply_fields(&other);
    assert!(refused.starts_with("does not verify"), "{refused}");
    assert!(!refused.contains(ck), "{refused}");
}
