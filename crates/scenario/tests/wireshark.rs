//! The Wireshark dissector shipped in `wireshark/nkpu.lua`, run by tshark on the real Windows
//! captures and on a scenario's pcap: its named fields hold the values nulab's own decoder
//! reads (thumbprint, the key protector's halves, the reply), and with the run's key log each
//! exchange's session key.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One line per dissected frame that has a `nkpu.kind`, `|`-separated `fields`.
fn tshark(pcap: &Path, extra: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let script = repo().join("wireshark/nkpu.lua");
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .arg("-X")
        .arg(format!("lua_script:{}", script.display()))
        .args(extra)
        .args(["-T", "fields", "-E", "separator=|"]);
    for field in fields {
        cmd.args(["-e", field]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('|') && !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[test]
fn the_dissector_names_the_fields_of_the_real_windows_captures() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let captures = repo().join("fixtures/windows-captures");
    let v4 = tshark(
        &captures.join("windows10-nkpu-request-v4.pcap"),
        &[],
        &[
            "nkpu.kind",
            "nkpu.family",
            "nkpu.thumbprint",
            "nkpu.kp.first_half",
            "nkpu.kp.second_half",
        ],
    );
    assert_eq!(v4.len(), 1, "{v4:?}");
    let r = &v4[0];
    assert_eq!(r[0], "request");
    assert_eq!(r[1], "DHCPv4");
    assert_eq!(r[2], "4ad038da813176acbd5caaae0fe3494b0d008159");
    assert_eq!(r[3].len(), 256, "128 bytes");
    assert!(r[3].starts_with("542851c212ff0699"), "{}", r[3]);
    assert_eq!(r[4].len(), 256, "128 bytes");
    assert!(r[4].ends_with("f871c375f9c86459"), "{}", r[4]);

    let v6 = tshark(
        &captures.join("windows10-nkpu-request-v6.pcap"),
        &[],
        &[
            "nkpu.kind",
            "nkpu.family",
            "nkpu.xid",
            "nkpu.thumbprint",
            "nkpu.kp",
        ],
    );
    assert_eq!(v6.len(), 1, "{v6:?}");
    let r = &v6[0];
    assert_eq!(
        r[..4],
        [
            "request",
            "DHCPv6",
            "45d495",
            "4ad038da813176acbd5caaae0fe3494b0d008159"
        ]
    );
    assert_eq!(r[4].len(), 512, "256 bytes");
}

#[test]
fn the_dissector_reads_a_scenario_pcap_request_and_reply() {
    if !testkit::require_tool("tshark") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for (name, family) in [("happy-path-ipv4", "DHCPv4"), ("happy-path-ipv6", "DHCPv6")] {
        let loaded = scenario::load_catalogue(name).unwrap();
        let result = scenario::run(&loaded, None).unwrap();
        let dir = work.path().join(name);
        scenario::write_outputs(&result, &dir).unwrap();
        let rows = tshark(
            &dir.join("corp.pcap"),
            &[],
            &[
                "nkpu.kind",
                "nkpu.family",
                "nkpu.xid",
                "nkpu.thumbprint",
                "nkpu.reply.tag",
                "nkpu.reply.ciphertext",
            ],
        );
        assert_eq!(rows.len(), 2, "{name}: {rows:?}");
        assert_eq!(rows[0][0], "request");
        assert_eq!(rows[0][1], family);
        assert_eq!(rows[0][3], "f0f0685c46b9486d6de55b7a46f3a384ccd361a3");
        assert_eq!(rows[1][0], "reply");
        assert_eq!(
            rows[1][2], rows[0][2],
            "{name}: the reply answers the request's xid"
        );
        assert_eq!(rows[1][4].len(), 32, "16-byte tag");
        assert_eq!(rows[1][5].len(), 88, "44-byte ciphertext");

        // With the run's key log: the session key on the request and on its reply, the SK the
        // provider logged in its phase 5 line.
        let key_log = dir.join("nkpu-keys.log");
        let keyed = tshark(
            &dir.join("corp.pcap"),
            &["-o", &format!("nkpu.keylog:{}", key_log.display())],
            &[
                "nkpu.kind",
                "nkpu.session_key",
                "nkpu.keylog.line",
                "nkpu.reply.verified",
                "nkpu.reply.header",
                "nkpu.reply.ck",
            ],
        );
        assert_eq!(keyed.len(), 2, "{name}: {keyed:?}");
        let sk = &keyed[0][1];
        assert_eq!(sk.len(), 64, "{name}: {keyed:?}");
        assert_eq!(&keyed[1][1], sk, "{name}: the reply's session key");
        assert_eq!(keyed[0][2], "2");
        let short = format!("SK {}…{}", &sk[..8], &sk[56..]);
        let wds_log = std::fs::read_to_string(dir.join("wds-wds.log")).unwrap();
        assert!(
            wds_log.contains(&short),
            "{name}: {short} not in\n{wds_log}"
        );
        // The dissector opens the reply under that SK (AES-256-CCM in Lua): the tag verifies,
        // the header is the key blob's, and CK is the network key the provider decrypted.
        let reply = &keyed[1];
        assert_eq!(reply[3], "verifies", "{name}: {keyed:?}");
        assert_eq!(reply[4], "2c0000000100000006200000", "{name}: {keyed:?}");
        let ck = &reply[5];
        assert_eq!(ck.len(), 64, "{name}: {keyed:?}");
        let short_ck = format!("CK {}…{}", &ck[..8], &ck[56..]);
        assert!(
            wds_log.contains(&short_ck),
            "{name}: {short_ck} not in\n{wds_log}"
        );
    }
}
