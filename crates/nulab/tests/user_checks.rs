//! What a user expects nulab to check, and the defects found by trying it as a new user would:
//! no silent overwrite, a named TPM state must exist, output folders are created, PIN lengths,
//! errors said once, `hexdump -C` squeezed dumps, and option 43's body not taken for DHCPv6.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nulab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .output()
        .unwrap()
}

fn nulab_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    text(&out.stderr)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `volume create IMAGE` with the cheapest protector.
fn create(image: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "volume",
        "create",
        p(image),
        "--size",
        "4096",
        "--iterations",
        "1",
        "--recovery-password",
        "--seed",
        "1",
    ];
    args.extend_from_slice(extra);
    nulab(&args)
}

#[test]
fn volume_create_refuses_an_existing_image_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("v.img");
    ok(&create(&image, &[]));
    let before = std::fs::read(&image).unwrap();
    let err = failed(&create(&image, &["--label", "OTHER"]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "the image was changed"
    );
    ok(&create(&image, &["--label", "OTHER", "--force"]));
    assert_ne!(
        std::fs::read(&image).unwrap(),
        before,
        "--force replaced nothing"
    );
}

#[test]
fn a_named_tpm_state_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("v.img");
    let typo = dir.path().join("tmp-state.json");
    let err = failed(&create(&image, &["--tpm", "--tpm-state", p(&typo)]));
    assert!(
        err.contains("tmp-state.json") && err.contains("no such TPM state"),
        "{err}"
    );
    assert!(!typo.exists(), "a new TPM was made at the mistyped path");
    assert!(!image.exists(), "the image was made anyway");
    // Asked for explicitly, a new TPM is made; unlocking then finds it.
    ok(&create(
        &image,
        &["--tpm", "--tpm-state", p(&typo), "--new-tpm"],
    ));
    assert!(typo.exists());
    ok(&nulab(&[
        "volume",
        "unlock",
        p(&image),
        "--with",
        "tpm",
        "--tpm-state",
        p(&typo),
    ]));
    let missing = dir.path().join("gone.json");
    let err = failed(&nulab(&[
        "volume",
        "unlock",
        p(&image),
        "--with",
        "tpm",
        "--tpm-state",
        p(&missing),
    ]));
    assert!(err.contains("gone.json"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn startup_key_out_creates_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("v.img");
    let keys = dir.path().join("usb/keys");
    let out = ok(&create(&image, &["--startup-key-out", p(&keys)]));
    let written: Vec<_> = std::fs::read_dir(&keys).unwrap().collect();
    assert_eq!(written.len(), 1, "{out}");
}

#[test]
fn startup_pins_are_4_to_20_digits_and_a_policy_raises_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("v.img");
    for (pin, why) in [
        ("12", "2 digits"),
        ("123456789012345678901", "21 digits"),
        ("12a4", "digits only"),
    ] {
        let err = failed(&create(&image, &["--tpm-pin", pin]));
        assert!(err.contains(why), "{pin}: {err}");
        assert!(!image.exists());
    }
    let err = failed(&create(
        &image,
        &["--tpm-pin", "1234", "--min-pin-length", "6"],
    ));
    assert!(err.contains("--min-pin-length"), "{err}");
    ok(&create(
        &image,
        &["--tpm-pin", "123456", "--min-pin-length", "6"],
    ));
    ok(&create(&image, &["--tpm-pin", "1234", "--force"]));
    ok(&create(
        &image,
        &["--tpm-pin", "12345678901234567890", "--force"],
    ));
    // A policy cannot go below BitLocker's 4 or above 20.
    let out = nulab(&["volume", "create", "x.img", "--min-pin-length", "3"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn cert_new_refuses_to_overwrite_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/certs");
    let new = |extra: &[&str]| {
        let mut args = vec!["cert", "new", "--seed", "1", "--out", p(&out)];
        args.extend_from_slice(extra);
        nulab(&args)
    };
    ok(&new(&[]));
    let err = failed(&new(&[]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    ok(&new(&["--force"]));
}

#[test]
fn an_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    ok(&nulab(&[
        "cert",
        "new",
        "--seed",
        "1",
        "--out",
        p(&certs),
        "--name",
        "lab",
        "--password",
        "pw",
    ]));
    let pfx = certs.join("lab.pfx");
    let err = failed(&nulab(&["cert", "show", p(&pfx), "--password", "wrong"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("wrong password").count(), 1, "{err}");
    assert_eq!(err.matches("lab.pfx").count(), 1, "{err}");
}

#[test]
fn a_hexdump_c_dump_with_squeezed_lines_decodes() {
    let frame = testkit::fixture("windows-captures/windows10-nkpu-request-v4.frame.hex");
    let frame: String = std::fs::read_to_string(frame)
        .unwrap()
        .split_whitespace()
        .collect();
    let frame = hex::decode(frame).unwrap();
    // What `hexdump -C` prints: runs of identical 16-byte lines (the capture's zero-filled
    // sname and file fields) become one line and `*`, and the last line is the length.
    let mut dump = String::new();
    let mut previous: Option<&[u8]> = None;
    let mut squeezing = false;
    for (i, line) in frame.chunks(16).enumerate() {
        if previous == Some(line) && line.len() == 16 {
            if !squeezing {
                dump.push_str("*\n");
                squeezing = true;
            }
            continue;
        }
        squeezing = false;
        previous = Some(line);
        let bytes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        dump.push_str(&format!(
            "{:08x}  {}  |................|\n",
            i * 16,
            bytes.join(" ")
        ));
    }
    dump.push_str(&format!("{:08x}\n", frame.len()));
    assert!(
        dump.contains("\n*\n"),
        "the fixture has no repeated line:\n{dump}"
    );
    let out = ok(&nulab_stdin(
        &["packet", "decode", "--json", "-"],
        dump.as_bytes(),
    ));
    let view: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(view["nkpu"]["kind"], "request", "{out}");
    assert_eq!(
        view["nkpu"]["thumbprint"],
        "4ad038da813176acbd5caaae0fe3494b0d008159"
    );
}

#[test]
fn the_option_43_reply_sample_is_not_taken_for_dhcpv6() {
    let sample = testkit::fixture("windows-captures/reply-option43-payload-sample.hex");
    let out = nulab(&["packet", "decode", p(&sample)]);
    let err = failed(&out);
    assert!(!text(&out.stdout).contains("Advertise"), "{out:?}");
    assert!(err.contains("not a DHCPv6 message"), "{err}");
    assert!(
        err.contains("option 43") && err.contains("reply open"),
        "{err}"
    );
}

#[test]
fn standard_input_is_read_for_dash() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    ok(&nulab(&["cert", "new", "--seed", "1", "--out", p(&certs)]));
    let cer = std::fs::read(certs.join("BitLocker-NetworkUnlock.cer")).unwrap();
    let out = ok(&nulab_stdin(&["cert", "show", "--json", "-"], &cer));
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["network_unlock"]["fit"], true, "{out}");
    let ini = "[SUBNETS]\nLAB=10.0.4.0/24\n";
    let out = ok(&nulab_stdin(&["policy", "check", "-"], ini.as_bytes()));
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let bash = ok(&nulab(&["completions", "bash"]));
    assert!(
        bash.contains("complete") && bash.contains("nulab"),
        "{bash}"
    );
    assert!(
        bash.contains("--tpm-pin") && bash.contains("recovery-password"),
        "{bash}"
    );
    let zsh = ok(&nulab(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef nulab"), "{zsh}");
    let man = ok(&nulab(&["man"]));
    assert!(man.contains(".TH nulab"), "{man}");
    assert!(man.contains("recovery\\-password"), "{man}");
    let out = nulab(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
