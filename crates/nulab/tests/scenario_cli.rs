//! `nulab scenario` end to end through the binary: a catalogue scenario runs, passes and writes
//! every output; a broken scenario file is refused with its file and line; `list` names the
//! catalogue.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn nulab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nulab"));
    command.current_dir(testkit::workspace_root());
    command
}

#[test]
fn run_writes_every_output_and_passes() {
    let out = tempfile::tempdir().unwrap();
    let output = nulab()
        .args(["scenario", "run", "scenarios/happy-path-ipv4.toml", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("[phase 8]"), "{stdout}");
    assert!(stdout.contains("happy-path-ipv4: PASSED"), "{stdout}");
    let dir = out.path().join("happy-path-ipv4");
    for file in [
        "transcript.txt",
        "result.json",
        "sequence.mmd",
        "report.html",
        "corp.pcap",
        "wds-wds.log",
        "bitlocker-pc1.log",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert!(!bytes.is_empty(), "{file} is empty");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["clients"][0]["unlocked_by"], "network-unlock");
    let golden =
        std::fs::read_to_string(testkit::workspace_root().join("scenarios/happy-path-ipv4.golden"))
            .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("transcript.txt")).unwrap(),
        golden
    );
}

#[test]
fn a_broken_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "title = \"x\"\n\n[[segment]]\nname = \"corp\"\nsubnett = \"10.0.0.0/24\"\n",
    )
    .unwrap();
    let output = nulab()
        .args(["scenario", "run"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.toml:5:"), "{stderr}");
    assert!(stderr.contains("subnett"), "{stderr}");
}

#[test]
fn list_names_the_catalogue() {
    let output = nulab().args(["scenario", "list"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.lines().count() >= 30, "{stdout}");
    assert!(stdout.contains("relay-forwards-to-dhcp-only"), "{stdout}");
}
