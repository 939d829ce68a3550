//! `nulab doctor` end to end: scenario runs written to a folder, then diagnosed from their
//! capture and the files an admin would have; the exit statuses (0 all unlocked, 1 otherwise, 2
//! bad input), JSON errors, and a broken policy that is a finding, not an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nulab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(args)
        .output()
        .expect("nulab runs")
}

/// Runs a catalogue scenario into `dir` and returns its output folder.
fn scenario(dir: &Path, name: &str) -> PathBuf {
    let out = nulab(&[
        "scenario",
        "run",
        name,
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(out.status.code().is_some(), "{out:?}");
    let folder = dir.join(name);
    assert!(folder.join("corp.pcap").exists(), "{out:?}");
    folder
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

const REFUSING_POLICY: &str = "[SUBNETS]\nCORP = 10.0.4.0/24 ; the corporate LAN\n\
                               BRANCH=10.0.9.0/24\n\n[f0f0685c46b9486d6de55b7a46f3a384ccd361a3]\nBRANCH\n";

#[test]
fn an_unlocked_client_exits_0_and_a_refused_one_names_the_ini_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let happy = scenario(dir.path(), "happy-path-ipv4");
    let pcap = happy.join("corp.pcap");
    let out = nulab(&["doctor", "--pcap", pcap.to_str().expect("utf-8"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json(&out);
    assert_eq!(report["schema"], 1);
    assert_eq!(report["clients"][0]["cause"], "unlocked");
    assert_eq!(report["clients"][0]["address"], "10.0.4.100");

    let refused = scenario(dir.path(), "subnet-unlisted-refused");
    let ini = dir.path().join("bde-network-unlock.ini");
    std::fs::write(&ini, REFUSING_POLICY).expect("written");
    let pcap = refused.join("corp.pcap");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--policy",
        ini.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("): subnet-denied"), "{text}");
    assert!(
        text.contains(&format!("{}:5: certificate", ini.display())),
        "{text}"
    );
    assert!(text.contains(&format!("{}:3: BRANCH=10.0.9.0/24", ini.display())));
    assert!(text.contains(&format!("{}:5: unlock request sent", pcap.display())));
    assert!(text.contains("retransmission 1"));

    // The WDS debug log alone settles it too, citing its line.
    let log = refused.join("wds-wds.log");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--wds-log",
        log.to_str().expect("utf-8"),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(report["clients"][0]["cause"], "subnet-denied");
    let evidence = report["clients"][0]["evidence"].to_string();
    assert!(evidence.contains("wds-wds.log:5: "), "{evidence}");

    // A WDS log exported while its debug channel was off (the default) holds no Network
    // Unlock line: doctor says so and how to turn it on, rather than that the server saw
    // nothing.
    let off = dir.path().join("wds-debug-off.log");
    std::fs::write(&off, "").expect("written");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--wds-log",
        off.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not one Network Unlock line: the WDS debug log is off by default"),
        "{text}"
    );
    assert!(
        text.contains(
            "wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true"
        ),
        "{text}"
    );
    assert!(!text.contains("did not process"), "{text}");

    // A broken INI is a finding (policy-invalid with the linter's lines), not an input error.
    std::fs::write(&ini, "[SUBNETS]\nCORP = 10.0.4.0/33\n").expect("written");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--policy",
        ini.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out);
    assert_eq!(report["clients"][0]["cause"], "policy-invalid");
    assert!(
        report["clients"][0]["evidence"]
            .to_string()
            .contains(&format!("{}:2: ", ini.display())),
        "{report}"
    );
}

#[test]
fn certificates_settle_the_thumbprint_and_bad_inputs_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = scenario(dir.path(), "subnet-unlisted-refused");
    let pcap = refused.join("corp.pcap");
    let certs = dir.path().join("certs");
    let out = nulab(&[
        "cert",
        "new",
        "--out",
        certs.to_str().expect("utf-8"),
        "--name",
        "other",
        "--seed",
        "2",
        "--password",
        "secret",
    ]);
    assert!(out.status.success(), "{out:?}");
    let pfx = certs.join("other.pfx");

    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--cert",
        pfx.to_str().expect("utf-8"),
        "--password",
        "secret",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out);
    assert_eq!(report["clients"][0]["cause"], "unknown-certificate");
    assert!(
        report["clients"][0]["evidence"]
            .to_string()
            .contains("other.pfx")
    );

    // The client's own certificate and protector list add their evidence.
    let cer = certs.join("other.cer");
    let protectors = dir.path().join("protectors.txt");
    std::fs::write(
        &protectors,
        "All Key Protectors\n\n    Network (Certificate Based):\n      ID: {1}\n",
    )
    .expect("written");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--client-cert",
        cer.to_str().expect("utf-8"),
        "--protectors",
        protectors.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let evidence = json(&out)["clients"][0]["evidence"].to_string();
    assert!(
        evidence.contains("the client's FVE_NKP certificate is")
            && evidence.contains("but its requests name f0f0685c46b9486d6de55b7a46f3a384ccd361a3"),
        "{evidence}"
    );
    assert!(
        evidence.contains("the Network (Certificate Based) protector is present"),
        "{evidence}"
    );

    // A wrong password: a clear error, status 2, JSON with --json.
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--cert",
        pfx.to_str().expect("utf-8"),
        "--password",
        "wrong",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let error = json(&out);
    assert_eq!(error["exit_code"], 2);
    assert!(
        error["error"]
            .as_str()
            .expect("a message")
            .contains("other.pfx")
    );

    // Unreadable and damaged captures, and a bad key log.
    let out = nulab(&["doctor", "--pcap", "/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.pcap"));
    let damaged = dir.path().join("damaged.pcap");
    let mut bytes = std::fs::read(&pcap).expect("pcap");
    bytes.truncate(60);
    std::fs::write(&damaged, &bytes).expect("written");
    let out = nulab(&[
        "doctor",
        "--pcap",
        damaged.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        json(&out)["error"]
            .as_str()
            .expect("message")
            .contains("damaged.pcap")
    );
    let keylog = dir.path().join("keys.log");
    std::fs::write(&keylog, "NKPU_SESSION 00\n").expect("written");
    let out = nulab(&[
        "doctor",
        "--pcap",
        pcap.to_str().expect("utf-8"),
        "--keylog",
        keylog.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys.log:1: "));
}
