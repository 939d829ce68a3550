//! The `nulab` binary, run as a user runs it: decode the real captures in every input form,
//! seal and open replies, and fail with useful messages.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn nulab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .output()
        .expect("nulab runs")
}

fn nulab_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nulab runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nulab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn capture(name: &str) -> String {
    testkit::fixture(&format!("windows-captures/{name}"))
        .display()
        .to_string()
}

const THUMBPRINT: &str = "4ad038da813176acbd5caaae0fe3494b0d008159";

#[test]
fn decodes_the_v4_capture_as_text() {
    let text = stdout(&nulab(&[
        "packet",
        "decode",
        &capture("windows10-nkpu-request-v4.pcap"),
    ]));
    assert!(text.contains("DHCPv4"), "{text}");
    assert!(text.contains("ciaddr         10.0.4.110"), "{text}");
    assert!(text.contains("flags          0x8000 (broadcast)"), "{text}");
    assert!(
        text.contains("option  60  Vendor Class Identifier (9 bytes): \"BITLOCKER\""),
        "{text}"
    );
    assert!(text.contains("option  43  Vendor-Specific Information (152 bytes): sub-option 1 (20 bytes), sub-option 2 (128 bytes)"), "{text}");
    assert!(text.contains("option 125  V-I Vendor-Specific Information (135 bytes): enterprise 311, data length 130"), "{text}");
    assert!(text.contains("Network Unlock request"), "{text}");
    assert!(text.contains(THUMBPRINT), "{text}");
    assert!(text.contains("542851c212ff0699"), "{text}");
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_for_both_captures_in_every_input_form() {
    for (family, name) in [
        ("dhcpv4", "windows10-nkpu-request-v4"),
        ("dhcpv6", "windows10-nkpu-request-v6"),
    ] {
        let pcap = json_lines(&nulab(&[
            "packet",
            "decode",
            "--json",
            &capture(&format!("{name}.pcap")),
        ]));
        let hex = json_lines(&nulab(&[
            "packet",
            "decode",
            "--json",
            &capture(&format!("{name}.frame.hex")),
        ]));
        for packets in [&pcap, &hex] {
            assert_eq!(packets.len(), 1);
            let p = &packets[0];
            assert_eq!(p["family"], family);
            assert_eq!(p["nkpu"]["kind"], "request");
            assert_eq!(p["nkpu"]["thumbprint"], THUMBPRINT);
            assert_eq!(p["nkpu"]["key_protector"].as_str().unwrap().len(), 512);
        }
        assert_eq!(pcap[0]["nkpu"], hex[0]["nkpu"]);
    }
}

/// The frame as Wireshark's "Copy as Hex Dump" gives it, on standard input.
#[test]
fn wireshark_hex_dump_on_stdin_and_bare_payload_as_raw_bytes() {
    let text = std::fs::read_to_string(capture("windows10-nkpu-request-v4.frame.hex")).unwrap();
    let frame = hex::decode(text.split_whitespace().collect::<String>()).unwrap();
    let mut dump = String::new();
    for (i, chunk) in frame.chunks(16).enumerate() {
        let bytes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        dump.push_str(&format!(
            "{:04x}   {:<47}   {ascii}\n",
            i * 16,
            bytes.join(" ")
        ));
    }
    let from_dump = json_lines(&nulab_stdin(
        &["packet", "decode", "--json", "-"],
        dump.as_bytes(),
    ));
    assert_eq!(from_dump[0]["layer"], "ethernet");
    assert_eq!(from_dump[0]["nkpu"]["thumbprint"], THUMBPRINT);

    // The bare DHCP payload: Ethernet (14) + IPv4 (20) + UDP (8) stripped, as raw bytes.
    let bare = json_lines(&nulab_stdin(
        &["packet", "decode", "--json", "-"],
        &frame[42..],
    ));
    assert_eq!(bare[0]["layer"], "bare");
    assert_eq!(bare[0]["nkpu"], from_dump[0]["nkpu"]);
}

#[test]
fn an_ordinary_dhcp_packet_is_shown_but_not_network_unlock() {
    let text = std::fs::read_to_string(capture("windows10-nkpu-request-v4.frame.hex")).unwrap();
    let mut frame = hex::decode(text.split_whitespace().collect::<String>()).unwrap();
    // Turn "BITLOCKER" into "MSFT 5.0\0"-like text: no longer a Network Unlock vendor class.
    let at = frame.windows(9).position(|w| w == b"BITLOCKER").unwrap();
    frame[at..at + 9].copy_from_slice(b"MSFT 5.0 ");
    let packets = json_lines(&nulab_stdin(&["packet", "decode", "--json", "-"], &frame));
    assert!(packets[0]["nkpu"].is_null());
    assert!(
        packets[0]["nkpu_error"]
            .as_str()
            .unwrap()
            .contains("MSFT 5.0")
    );
    assert!(!packets[0]["dhcp"]["options"].as_array().unwrap().is_empty());
}

#[test]
fn unreadable_input_fails_with_the_file_and_line() {
    let out = nulab_stdin(&["packet", "decode", "-"], b"0000  ff ff\n0010  zz\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:2"), "{err}");

    let out = nulab(&["packet", "decode", "/no/such/file.pcap"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.pcap"));
}

#[test]
fn reply_seal_then_open_and_a_wrong_key_fails() {
    let sk = "00".repeat(31) + "07";
    let ck = "ab".repeat(32);
    let sealed = stdout(&nulab(&[
        "reply",
        "seal",
        "--session-key",
        &sk,
        "--client-key",
        &ck,
    ]));
    let sealed = sealed.trim();
    assert_eq!(sealed.len(), 120, "60 bytes in hex");
    let opened = stdout(&nulab(&["reply", "open", "--session-key", &sk, sealed]));
    assert_eq!(opened.trim(), ck);
    // As the body of option 43 (sub-option 2, length 60), in JSON.
    let json = stdout(&nulab(&[
        "reply",
        "open",
        "--json",
        "--session-key",
        &sk,
        &format!("023c{sealed}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["client_key"], ck);

    let wrong = "11".repeat(32);
    let out = nulab(&["reply", "open", "--session-key", &wrong, sealed]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tag does not verify"));

    let out = nulab(&[
        "reply",
        "seal",
        "--session-key",
        "abcd",
        "--client-key",
        &ck,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--session-key must be 32 bytes"));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["packet", "--help"],
        &["packet", "decode", "--help"],
        &["reply", "seal", "--help"],
        &["reply", "open", "--help"],
        &["cert", "new", "--help"],
        &["cert", "show", "--help"],
        &["policy", "check", "--help"],
        &["demo", "--help"],
    ] {
        let text = stdout(&nulab(args));
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
}

mod policy {
    use super::*;

    const CERT: &str = "2158a767e1c14e88e27a4c0aee111d2de2eafe60";

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn allow_deny_and_provider_stops_in_json() {
        let file = write(&format!(
            "[SUBNETS]\nOFFICE=10.185.250.0/24\n[{CERT}]\nOFFICE\n"
        ));
        let path = file.path().to_str().unwrap();
        let check = |ip: &str| {
            let out = nulab(&[
                "policy",
                "check",
                path,
                "--thumbprint",
                CERT,
                "--ip",
                ip,
                "--json",
            ]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (out.status.code(), v)
        };
        let (code, v) = check("10.185.250.9");
        assert_eq!(code, Some(0));
        assert_eq!(v["valid"], true);
        assert_eq!(v["decision"], "allow");
        assert!(v["reason"].as_str().unwrap().contains("OFFICE"));
        let (code, v) = check("10.185.251.9");
        assert_eq!(code, Some(3));
        assert_eq!(v["decision"], "deny");
        assert!(v["errors"].as_array().unwrap().is_empty());

        let bad = write("[SUBNETS]\nENABLED=10.0.0.0/8\n");
        let out = nulab(&[
            "policy",
            "check",
            bad.path().to_str().unwrap(),
            "--thumbprint",
            CERT,
            "--ip",
            "10.0.0.1",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["valid"], false);
        assert_eq!(v["decision"], "provider-stops");
        assert_eq!(v["errors"][0]["line"], 2);
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("ENABLED")
        );
    }

    #[test]
    fn text_output_names_file_and_line() {
        let file = write(
            "[SUBNETS]\nA=10.0.0.0/8\n[21 58 a7 67 e1 c1 4e 88 e2 7a 4c 0a ee 11 1d 2d e2 ea fe 60]\n",
        );
        let path = file.path().to_str().unwrap();
        let out = nulab(&["policy", "check", path]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{path}:3: error:")), "{text}");
        assert!(text.contains("without spaces"), "{text}");
    }
}

mod cert {
    use super::*;

    #[test]
    fn new_with_a_seed_is_deterministic_and_show_reads_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let first = stdout(&nulab(&[
            "cert",
            "new",
            "--out",
            out,
            "--seed",
            "1",
            "--password",
            "pw",
        ]));
        // The thumbprint the certificates crate pins for seed 1.
        assert_eq!(first.trim(), "f0f0685c46b9486d6de55b7a46f3a384ccd361a3");

        let cer = dir.path().join("BitLocker-NetworkUnlock.cer");
        let pfx = dir.path().join("BitLocker-NetworkUnlock.pfx");
        let view: serde_json::Value = serde_json::from_str(&stdout(&nulab(&[
            "cert",
            "show",
            "--json",
            cer.to_str().unwrap(),
        ])))
        .unwrap();
        assert_eq!(view["thumbprint"], first.trim());
        assert_eq!(view["network_unlock"]["fit"], true);
        assert_eq!(view["public_key"]["bits"], 2048);
        assert_eq!(view["key_usage"]["critical"], true);

        let text = stdout(&nulab(&[
            "cert",
            "show",
            pfx.to_str().unwrap(),
            "--password",
            "pw",
        ]));
        assert!(text.contains(first.trim()), "{text}");
        let out = nulab(&["cert", "show", pfx.to_str().unwrap(), "--password", "wrong"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("BitLocker-NetworkUnlock.pfx"));
    }

    #[test]
    fn show_refuses_a_certificate_unfit_for_network_unlock() {
        if !testkit::require_tool("openssl") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("tls.pem");
        let key = dir.path().join("tls.key");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=web", "-days", "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&pem)
            .output()
            .unwrap();
        assert!(status.status.success());
        let out = nulab(&["cert", "show", "--json", pem.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(view["network_unlock"]["fit"], false);
        let codes: Vec<&str> = view["network_unlock"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&"missing-network-unlock-eku"), "{codes:?}");

        // The seed's template: an openssl default certificate misses its purpose and policy.
        let out = nulab(&[
            "cert",
            "show",
            "--template",
            "--json",
            pem.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(view["template"]["followed"], false);
        let missed: Vec<&str> = view["template"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["verdict"] == "missed")
            .map(|s| s["code"].as_str().unwrap())
            .collect();
        assert!(missed.contains(&"application-policy"), "{missed:?}");
    }

    #[test]
    fn show_template_judges_the_seed_template_step_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        stdout(&nulab(&["cert", "new", "--out", out, "--seed", "1"]));
        let pfx = dir.path().join("BitLocker-NetworkUnlock.pfx");
        let cer = dir.path().join("BitLocker-NetworkUnlock.cer");
        let text = stdout(&nulab(&[
            "cert",
            "show",
            "--template",
            pfx.to_str().unwrap(),
        ]));
        for step in ["step 5", "step 6", "steps 10 to 14", "step 15"] {
            assert!(text.contains(&format!("[ok] {step}")), "{step}: {text}");
        }
        // A .cer holds no key: the exportable-key step cannot be judged from it, and is not
        // counted as missed.
        let view: serde_json::Value = serde_json::from_str(&stdout(&nulab(&[
            "cert",
            "show",
            "--template",
            "--json",
            cer.to_str().unwrap(),
        ])))
        .unwrap();
        assert_eq!(view["template"]["followed"], true);
        assert_eq!(
            view["template"]["steps"][1]["code"],
            "private-key-exportable"
        );
        assert_eq!(view["template"]["steps"][1]["verdict"], "cannot-tell");
        assert_eq!(view["network_unlock"]["fit"], true);
    }
}

#[test]
fn demo_runs_the_exchange_and_writes_a_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("demo.pcap");
    let text = stdout(&nulab(&[
        "demo",
        "--seed",
        "1",
        "--pcap",
        pcap.to_str().unwrap(),
    ]));
    assert!(
        text.contains("4ad038da813176acbd5caaae0fe3494b0d008159"),
        "the real capture"
    );
    assert!(text.contains("the tag verifies"), "{text}");
    // The pcap holds the computed request and reply, which nulab decodes again.
    let packets = json_lines(&nulab(&[
        "packet",
        "decode",
        "--json",
        pcap.to_str().unwrap(),
    ]));
    assert_eq!(packets.len(), 2);
    assert_eq!(packets[0]["nkpu"]["kind"], "request");
    assert_eq!(
        packets[0]["nkpu"]["thumbprint"],
        "f0f0685c46b9486d6de55b7a46f3a384ccd361a3"
    );
    assert_eq!(packets[1]["nkpu"]["kind"], "reply");
    // Same seed, same bytes.
    let again = dir.path().join("again.pcap");
    stdout(&nulab(&[
        "demo",
        "--seed",
        "1",
        "--pcap",
        again.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&pcap).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

mod volume {
    use super::*;

    #[test]
    fn create_list_and_unlock_with_each_protector() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("c.img");
        let img = img.to_str().unwrap();
        let created: serde_json::Value = serde_json::from_str(&stdout(&nulab(&[
            "volume",
            "create",
            img,
            "--tpm-pin",
            "123456",
            "--recovery-password",
            "--startup-key-out",
            dir.path().to_str().unwrap(),
            "--seed",
            "3",
            "--iterations",
            "16",
            "--json",
        ])))
        .unwrap();
        let password = created["recovery_password"].as_str().unwrap().to_owned();
        let bek = created["startup_key"].as_str().unwrap().to_owned();
        assert_eq!(created["protectors"].as_array().unwrap().len(), 3);

        let table = stdout(&nulab(&["volume", "protectors", img]));
        assert!(
            table.contains("TPM And PIN:") && table.contains("Numerical Password:"),
            "{table}"
        );
        assert!(
            !table.contains(&password),
            "the password shows only once unlocked"
        );

        for args in [
            vec!["--with", "tpm-and-pin", "--pin", "123456"],
            vec!["--with", "recovery-password", "--password", &password],
            vec!["--with", "startup-key", "--key", &bek],
        ] {
            let mut all = vec!["volume", "unlock", img, "--json"];
            all.extend(args.iter().copied());
            let v: serde_json::Value = serde_json::from_str(&stdout(&nulab(&all))).unwrap();
            assert_eq!(v["unlocked"], true, "{args:?}");
            assert_eq!(v["label"], "NULAB");
        }

        let out = nulab(&[
            "volume",
            "unlock",
            img,
            "--with",
            "tpm-and-pin",
            "--pin",
            "999999",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["unlocked"], false);
        assert!(v["error"].as_str().unwrap().contains("wrong PIN"), "{v}");
    }

    #[test]
    fn recovery_password_new_and_check() {
        let pw = stdout(&nulab(&["recovery-password", "new", "--seed", "1"]));
        assert_eq!(
            pw.trim(),
            stdout(&nulab(&["recovery-password", "new", "--seed", "1"])).trim()
        );
        assert!(
            nulab(&["recovery-password", "check", pw.trim()])
                .status
                .success()
        );
        let bad = "111111-222222-333333-444444-555555-666666-777777-888888";
        let out = nulab(&["recovery-password", "check", "--json", bad]);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["valid"], false);
        assert_eq!(v["group"], 7);
        let out = nulab(&[
            "recovery-password",
            "check",
            "111111-222222-333333-444444-555555-666666-123456-888888",
        ]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("group 7 (123456)"));
    }
}
