//! The teaching views of catalogue scenarios, read as a reader would: the server's phases come
//! from the provider's own log over DHCPv4 and DHCPv6, the diagrams draw a broadcast reaching
//! every host on its segment (the WDS reply reaches the client), adapters apart, and a storm
//! gets a summary and a Mermaid file far under Mermaid's text limit.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

fn outputs(name: &str) -> std::collections::BTreeMap<String, String> {
    let loaded = scenario::load_catalogue(name).unwrap();
    let result = scenario::run(&loaded, None).unwrap();
    scenario::outputs(&result)
        .into_iter()
        .filter(|(file, _)| !file.ends_with(".pcap"))
        .map(|(file, bytes)| (file, String::from_utf8(bytes).unwrap()))
        .collect()
}

#[test]
fn every_phase_is_in_the_transcript_over_v4_and_v6_with_the_servers_from_its_log() {
    for name in ["happy-path-ipv4", "happy-path-ipv6"] {
        let out = outputs(name);
        let transcript = &out["transcript.txt"];
        for phase in 1..=9 {
            assert!(
                transcript.contains(&format!("[phase {phase}]")),
                "{name}: no phase {phase}\n{transcript}"
            );
        }
        let wds_log = &out["wds-wds.log"];
        for phase in 4..=6 {
            assert!(
                wds_log.contains(&format!("[phase {phase}]")),
                "{name}: the provider's log has no phase {phase}\n{wds_log}"
            );
        }
    }
}

#[test]
fn the_happy_path_diagram_draws_the_reply_reaching_the_client() {
    let out = outputs("happy-path-ipv4");
    let mermaid = &out["sequence.mmd"];
    assert!(!mermaid.contains("broadcast"), "{mermaid}");
    assert!(
        mermaid.contains("participant L0 as pc1 (corp)"),
        "{mermaid}"
    );
    let wds = mermaid
        .lines()
        .find_map(|l| l.strip_suffix(" as wds (corp)"))
        .and_then(|l| l.trim().strip_prefix("participant "))
        .unwrap()
        .to_string();
    assert!(
        mermaid.contains(&format!(
            "{wds}->>L0: 0.000250s NKPU reply (DHCPv4) to 255.255.255.255"
        )),
        "{mermaid}"
    );
    // The broadcast reaches the DHCP server too.
    assert!(
        mermaid
            .lines()
            .filter(|l| l.contains("NKPU reply (DHCPv4) to 255.255.255.255"))
            .count()
            == 2,
        "{mermaid}"
    );
    for phase in 1..=9 {
        assert!(mermaid.contains(&format!("phase {phase}:")), "{mermaid}");
    }
    let html = &out["report.html"];
    assert!(html.contains("id=\"banner\">PASSED"));
    for link in [
        "corp.pcap",
        "wds-wds.log",
        "bitlocker-pc1.log",
        "transcript.txt",
    ] {
        assert!(html.contains(&format!("<a href=\"{link}\">")), "{link}");
    }
}

#[test]
fn dhcpv6_multicast_is_labelled_with_its_group() {
    let out = outputs("happy-path-ipv6");
    assert!(
        out["sequence.mmd"].contains("to ff02::1:2"),
        "{}",
        out["sequence.mmd"]
    );
}

#[test]
fn a_hosts_adapters_are_drawn_apart_and_timeouts_marked() {
    let out = outputs("multi-adapter-first-on-network-without-wds");
    let mermaid = &out["sequence.mmd"];
    assert!(mermaid.contains("    box pc1\n"), "{mermaid}");
    assert!(mermaid.contains("as pc1 (lab)") && mermaid.contains("as pc1 (corp)"));
    assert!(mermaid.contains("Note over L0: ⏱"), "{mermaid}");
}

#[test]
fn a_relay_is_a_lifeline_with_both_sides() {
    let out = outputs("dhcp-and-wds-across-a-relay");
    let mermaid = &out["sequence.mmd"];
    assert!(mermaid.contains("    box router\n"), "{mermaid}");
}

#[test]
fn a_storm_gets_a_summary_and_a_small_diagram() {
    let out = outputs("boot-storm-after-patch-reboot");
    let mermaid = &out["sequence.mmd"];
    assert!(mermaid.len() < 50_000, "{} characters", mermaid.len());
    assert!(mermaid.contains("3 of 1000 clients drawn"), "{mermaid}");
    // Each sampled client's sequence is whole: its DORA across the relay (the relayed frames
    // are neither from nor to it; they are its by xid and chaddr) and back to it.
    for kind in ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"] {
        let relayed = mermaid
            .lines()
            .filter(|l| l.ends_with(&format!("s {kind}")))
            .count();
        assert!(relayed >= 3, "{kind} relayed {relayed} times:\n{mermaid}");
    }
    for kind in ["DHCPOFFER", "DHCPACK"] {
        let delivered = mermaid.matches(&format!("s {kind} to ")).count();
        assert_eq!(delivered, 3, "{kind} to the sampled clients:\n{mermaid}");
    }
    let html = &out["report.html"];
    assert!(html.len() < 200_000, "{} bytes", html.len());
    assert!(html.contains("id=\"summary\""));
    assert!(html.contains("p50 ") && html.contains("p99 "));
    assert!(html.contains("requests in hand over time"));
    assert!(html.contains("1000 client(s) unlocked by Network"));
}

#[test]
fn the_key_chain_shows_every_key_with_its_provenance_and_both_sides_agree_on_ck() {
    let out = outputs("happy-path-ipv4");
    let html = &out["report.html"];
    let chain =
        &html[html.find("id=\"key-chains\"").unwrap()..html.find("id=\"packets\"").unwrap()];
    for key in [
        "intermediate key",
        "key protector",
        "session key SK",
        "CK and SK at the WDS",
        "reply",
        "network key CK",
        "combined key",
        "volume master key",
        "disk key (FVEK)",
    ] {
        assert!(
            chain.contains(&format!("<td>{key}</td>")),
            "no {key}\n{chain}"
        );
    }
    assert!(chain.contains("nulab&#39;s model") || chain.contains("nulab's model"));
    // CK as the client opened it (in brackets) is CK as the WDS decrypted it.
    let client_ck = chain.split("sha256:").find_map(|s| {
        let open = s.find('(')?;
        let close = s.find(')')?;
        (close > open && s[open + 1..close].contains('…')).then(|| s[open + 1..close].to_string())
    });
    let client_ck = client_ck.unwrap();
    assert!(
        chain.contains(&format!("CK {client_ck}, session key SK")),
        "{chain}"
    );
    let transcript = &out["transcript.txt"];
    assert!(
        transcript.contains("[phase 8] the combined key unwraps the volume master key (sha256:")
    );
}

#[test]
fn a_recovery_report_draws_the_failover_and_tables_the_database_and_audit() {
    let out = outputs("recovery-https-mp-down-fails-over-to-http");
    let html = &out["report.html"];
    assert!(html.contains("pc1: escrow timeline"));
    assert!(html.contains("aria-label=\"escrow attempts\""));
    assert!(html.contains("mp1.contoso.com (HTTPS)") && html.contains("mp2.contoso.com (HTTP)"));
    assert!(html.contains("<h3>Database: 0 record(s)</h3>"));
    let out = outputs("recovery-helpdesk-after-pcr-change-rotates-password");
    let html = &out["report.html"];
    let rows = html.matches("<tr><td>pc1</td><td>C</td>").count();
    assert!(
        html.contains(&format!("<h3>Database: {rows} record(s)</h3>")),
        "{rows}"
    );
    assert!(html.contains("<h3>Audit log: 2 entries</h3>"));
}

/// Every catalogue scenario's Mermaid file stays under Mermaid's default text limit (50,000
/// characters), so each one opens.
#[test]
fn every_mermaid_golden_is_under_mermaids_text_limit() {
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut checked = 0;
    for entry in std::fs::read_dir(&scenarios).unwrap() {
        let path = entry.unwrap().path().join("sequence.mmd");
        if let Ok(text) = std::fs::read_to_string(&path) {
            assert!(
                text.chars().count() < 50_000,
                "{}: {} characters",
                path.display(),
                text.chars().count()
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} Mermaid goldens found");
}
