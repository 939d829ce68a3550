//! Every `nulab` command that prints, run into a closed pipe (`nulab … | head`) and into a full
//! disk (`/dev/full`): the first ends quietly with status 141 as `cat` does, the second with one
//! error line and status 1; none panics (status 101, "panicked").

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// How standard output is broken.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// A pipe whose reading end is closed before nulab starts: every write fails with EPIPE.
    ClosedPipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

fn run_into(sink: Sink, args: &[String]) -> Output {
    let stdout: Stdio = match sink {
        Sink::ClosedPipe => {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            writer.into()
        }
        Sink::Full => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into(),
    };
    Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn workspace(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

/// The commands, with what each needs made in `dir` first (a fresh one per run, so that no
/// command refuses to overwrite).
fn commands(dir: &Path) -> Vec<Vec<String>> {
    let d = |name: &str| dir.join(name).display().to_string();
    let ok = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(["cert", "new", "--seed", "1", "--out", &d("certs")])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    std::fs::write(
        d("policy.ini"),
        "[SUBNETS]\nLAB=10.0.4.0/24\n[4ad038da813176acbd5caaae0fe3494b0d008159]\nLAB\n",
    )
    .unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args([
            "volume",
            "create",
            &d("u.img"),
            "--seed",
            "3",
            "--iterations",
            "1",
        ])
        .args(["--recovery-password", "--json"])
        .output()
        .unwrap();
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let password = made["recovery_password"].as_str().unwrap().to_owned();
    let sealed = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(["reply", "seal", "--session-key", &"11".repeat(32)])
        .args(["--client-key", &"22".repeat(32)])
        .output()
        .unwrap();
    let blob = String::from_utf8(sealed.stdout).unwrap().trim().to_owned();
    let cer = d("certs/BitLocker-NetworkUnlock.cer");
    let pcap = workspace("fixtures/windows-captures/windows10-nkpu-request-v4.pcap");
    let key = "11".repeat(32);
    let lists: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["cert", "--help"],
        &["scenario", "list", &workspace("scenarios")],
        &["recovery-password", "new"],
        &["recovery-password", "new", "--json"],
        &[
            "recovery-password",
            "check",
            "000000-000000-000000-000000-000000-000000-000000-000000",
        ],
        &["demo"],
        &["demo", "--json"],
        &["packet", "decode", &pcap],
        &["packet", "decode", "--json", &pcap],
        &["cert", "show", &cer],
        &["cert", "show", "--json", &cer],
        &["cert", "new", "--seed", "2", "--out", &d("certs2")],
        &["policy", "check", &d("policy.ini")],
        &["policy", "check", "--json", &d("policy.ini")],
        &["reply", "seal", "--session-key", &key, "--client-key", &key],
        &[
            "volume",
            "create",
            &d("v.img"),
            "--seed",
            "1",
            "--iterations",
            "1",
            "--recovery-password",
        ],
        &["volume", "protectors", &d("v.img")],
        &["volume", "protectors", "--json", &d("v.img")],
        &[
            "volume",
            "unlock",
            &d("u.img"),
            "--with",
            "recovery-password",
            "--password",
            &password,
        ],
        &["reply", "open", "--session-key", &key, &blob],
        &["reply", "open", "--json", "--session-key", &key, &blob],
        &[
            "policy",
            "check",
            &d("policy.ini"),
            "--thumbprint",
            "4ad038da813176acbd5caaae0fe3494b0d008159",
            "--ip",
            "10.0.4.110",
        ],
        &["completions", "bash"],
        &["man"],
        &["recovery", "enrol", "--db", &d("escrow.sqlite"), "PC1"],
        &[
            "recovery",
            "enrol",
            "--json",
            "--db",
            &d("escrow.sqlite"),
            "PC2",
        ],
        &[
            "recovery",
            "operator",
            "--db",
            &d("escrow.sqlite"),
            "helpdesk1",
        ],
        &[
            "recovery",
            "operator",
            "--json",
            "--db",
            &d("escrow.sqlite"),
            "helpdesk2",
        ],
        // Ends at its first line (where it listens), which cannot be written.
        &[
            "recovery",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &d("serve.sqlite"),
        ],
        &[
            "recovery",
            "serve",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &d("serve-json.sqlite"),
        ],
    ];
    lists
        .iter()
        .map(|args| args.iter().map(|a| (*a).to_owned()).collect())
        .collect()
}

fn check_every_command(sink: Sink, expected_status: i32, stderr_check: fn(&str) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    for args in commands(dir.path()) {
        let out = run_into(sink, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{sink:?} {args:?}: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(expected_status),
            "{sink:?} {args:?}: {stderr}"
        );
        assert!(stderr_check(&stderr), "{sink:?} {args:?}: {stderr:?}");
    }
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_status_141() {
    check_every_command(Sink::ClosedPipe, 141, |stderr| {
        // Only what a command says to people on stderr before printing (none of these do).
        !stderr.contains("error")
    });
}

#[test]
fn a_full_disk_is_one_error_line_and_status_1() {
    check_every_command(Sink::Full, 1, |stderr| {
        let errors: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("nulab: error:"))
            .collect();
        errors.len() == 1 && errors[0].contains("No space left on device")
    });
}

#[test]
fn with_json_a_failure_is_one_json_object_on_stdout() {
    let out = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(["cert", "show", "--json", "/nonexistent/x.cer"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exit_code"], 1);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/x.cer"),
        "{report}"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    // A usage error too, with clap's status 2.
    let out = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(["cert", "show", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exit_code"], 2);
    assert!(
        report["error"].as_str().unwrap().contains("<FILE>"),
        "{report}"
    );
}
