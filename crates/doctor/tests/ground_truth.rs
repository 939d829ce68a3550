//! Ground truth from the simulator: every catalogue scenario is run, doctor reads its WDS-side
//! capture(s), the WDS servers' `bde-network-unlock.ini` and certificates, and each client's
//! cause is checked against what the simulator knows happened (the boot outcome and the
//! provider's drop counters). Then a sweep of seeds over a lossy scenario, and the real Windows
//! captures.
//!
//! The map from what the simulator knows to the causes a WDS-side capture can support:
//!
//! - unlocked by Network Unlock: `unlocked` (for a client with several adapters, on one of
//!   them);
//! - Network Unlock skipped (firmware, the TPM, no protector) or DHCP failed: the client is in
//!   no WDS-side capture, or `no-unlock-request` / `no-dhcp`;
//! - "no reply": the provider's drop reasons name the cause (`unknown-certificate`,
//!   `subnet-denied`, `certificate-disabled`, `policy-invalid`, `malformed`; a stopped service,
//!   an unregistered provider, a removed store, a key that does not decrypt or an overloaded
//!   server are `no-reply`); with no drop at all, the requests or the replies were lost on the
//!   way (`request-not-reaching-wds`, `reply-lost`, or no request seen: `no-unlock-request`).
//!
//! A diagnosis is accepted when its cause, or one of the causes it says it cannot rule out
//! (`also_possible`), is in the accepted set: doctor must say so when the capture cannot tell.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use doctor::{Capture, Cause, GivenCertificate, Inputs, Report, TextFile};
use scenario::RunResult;
use volume::ProtectorKind;

fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = pcap_file::pcap::PcapReader::new(Cursor::new(bytes)).expect("a pcap");
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        frames.push(packet.expect("a whole packet").data.into_owned());
    }
    frames
}

/// Doctor's inputs for a run: the captures of the segments with a WDS server, the first WDS
/// server's policy and every certificate its store starts with.
fn inputs_of(loaded: &scenario::Loaded, result: &RunResult) -> Inputs {
    let s = &loaded.scenario;
    let wds_segments: BTreeSet<&str> = s.wds.iter().map(|w| w.segment.get_ref().as_str()).collect();
    let captures = result
        .segments
        .iter()
        .filter(|(name, _, _)| wds_segments.contains(name.as_str()))
        .map(|(name, _, capture)| Capture {
            name: format!("{name}.pcap"),
            frames: pcap_frames(&capture.copy_to(Vec::new()).expect("copied")),
        })
        .collect();
    let wds = s.wds.first();
    let policy = wds.and_then(|w| {
        let text = match (&w.policy, &w.policy_file) {
            (Some(text), _) => text.clone(),
            (None, Some(file)) => {
                String::from_utf8_lossy(&loaded.read_relative(file).expect("policy file"))
                    .into_owned()
            }
            (None, None) => return None,
        };
        Some(TextFile {
            file: "bde-network-unlock.ini".into(),
            text,
        })
    });
    let store: Option<Vec<String>> = wds.and_then(|w| {
        w.certificates
            .as_ref()
            .map(|names| names.iter().map(|n| n.get_ref().clone()).collect())
    });
    let certificates = s
        .certificates
        .iter()
        .filter(|c| {
            store
                .as_ref()
                .is_none_or(|names| names.contains(c.name.get_ref()))
        })
        .map(|c| {
            let bundle = match (&c.seed, &c.pfx) {
                (Some(seed), _) => scenario::world::generated_certificate(*seed),
                (None, Some(pfx)) => certificates::import::read(
                    &loaded.read_relative(pfx).expect("pfx"),
                    c.password.as_deref(),
                )
                .expect("the scenario's pfx"),
                (None, None) => panic!("a certificate without seed or pfx"),
            };
            GivenCertificate {
                file: format!("{}.pfx", c.name.get_ref()),
                thumbprint: bundle.thumbprint(),
                subject: bundle.certificate.subject().to_string(),
            }
        })
        .collect();
    Inputs {
        captures,
        policy,
        certificates: Some(certificates),
        ..Inputs::default()
    }
}

/// Each client's MACs, from the Ethernet source of the frames the simulator names as sent by it.
fn macs_by_client(result: &RunResult) -> BTreeMap<String, BTreeSet<String>> {
    let clients: BTreeSet<&str> = result.clients.iter().map(|c| c.name.as_str()).collect();
    let mut macs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, packets, capture) in &result.segments {
        let frames = pcap_frames(&capture.copy_to(Vec::new()).expect("copied"));
        assert_eq!(frames.len(), packets.len(), "one decoded packet per frame");
        for (packet, frame) in packets.iter().zip(&frames) {
            if clients.contains(&*packet.from) {
                let mac: [u8; 6] = frame[6..12].try_into().expect("an Ethernet frame");
                macs.entry(packet.from.to_string())
                    .or_default()
                    .insert(doctor::format_mac(&mac));
            }
        }
    }
    macs
}

/// The causes a WDS-side capture may support for what the simulator knows about a client that
/// did not unlock by Network Unlock.
fn accepted_for_failure(
    loaded: &scenario::Loaded,
    result: &RunResult,
    reason: Option<&str>,
) -> BTreeSet<Cause> {
    let mut accepted = BTreeSet::new();
    let Some(reason) = reason else {
        // Network Unlock never ran (no protector): nothing was sent.
        accepted.insert(Cause::NoUnlockRequest);
        return accepted;
    };
    if reason.contains("DHCP failed") || reason.contains("no DHCP offer") {
        accepted.insert(Cause::NoDhcp);
    }
    if reason.contains("no reply to") {
        let mut drops = 0;
        for server in &result.servers {
            for (label, count) in &server.counters {
                let Some(label) = label.strip_prefix("drop.") else {
                    continue;
                };
                if label == "not-network-unlock" || *count == 0 {
                    continue;
                }
                drops += count;
                accepted.insert(match label {
                    "unknown-certificate" => Cause::UnknownCertificate,
                    "subnet-denied" => Cause::SubnetDenied,
                    "certificate-disabled" => Cause::CertificateDisabled,
                    "policy-invalid" => Cause::PolicyInvalid,
                    l if l.starts_with("malformed") => Cause::Malformed,
                    _ => Cause::NoReply,
                });
            }
        }
        // A service that is not listening (stopped, unregistered, crashed, store removed)
        // counts nothing: the scenario's state and events say so.
        let server_down = loaded
            .scenario
            .wds
            .iter()
            .any(|w| !w.running || !w.registered)
            || result.events.iter().any(|e| {
                [
                    "is stopped",
                    "unregistered",
                    "store is removed",
                    "loses power",
                ]
                .iter()
                .any(|what| e.what.contains(what))
            });
        if server_down {
            accepted.insert(Cause::NoReply);
        }
        // Requests or replies lost on the way (faults, a relay that does not forward).
        if drops == 0 || !result.faults.is_empty() {
            accepted.extend([
                Cause::RequestNotReachingWds,
                Cause::ReplyLost,
                Cause::NoUnlockRequest,
            ]);
        }
    }
    if accepted.is_empty() {
        // Skipped before the network (firmware, TPM): no request.
        accepted.insert(Cause::NoUnlockRequest);
    }
    accepted
}

#[derive(Default)]
struct Tally {
    clients: usize,
    exact: usize,
    open: usize,
    absent: usize,
    /// Clients that did not unlock by Network Unlock.
    failed: usize,
    /// Exact causes when the WDS debug log is given too.
    exact_with_log: usize,
    /// Clients whose reply verified under the run's key log.
    verified: usize,
}

/// Checks `report` against `result`; returns the problems found.
fn check(
    loaded: &scenario::Loaded,
    result: &RunResult,
    report: &Report,
    tally: &mut Tally,
) -> Vec<String> {
    let name = &loaded.name;
    let by_mac: BTreeMap<&str, &doctor::ClientDiagnosis> =
        report.clients.iter().map(|c| (c.mac.as_str(), c)).collect();
    let macs = macs_by_client(result);
    let mut problems = Vec::new();
    for client in &result.clients {
        tally.clients += 1;
        let outcome = client.outcome.as_ref();
        let unlocked = outcome.and_then(|o| o.unlocked_by()) == Some(ProtectorKind::NetworkUnlock);
        let diagnoses: Vec<&doctor::ClientDiagnosis> = macs
            .get(&client.name)
            .into_iter()
            .flatten()
            .filter_map(|mac| by_mac.get(mac.as_str()).copied())
            .collect();
        let shows = |d: &doctor::ClientDiagnosis, accepted: &BTreeSet<Cause>| {
            accepted.contains(&d.cause) || d.also_possible.iter().any(|c| accepted.contains(c))
        };
        if unlocked {
            let want = BTreeSet::from([Cause::Unlocked]);
            match diagnoses.iter().find(|d| shows(d, &want)) {
                Some(d) if d.cause == Cause::Unlocked => tally.exact += 1,
                Some(d) => {
                    tally.open += 1;
                    eprintln!(
                        "{name}: {} ({}) unlocked; doctor says {}, leaving open {:?}",
                        client.name, d.mac, d.cause, d.also_possible
                    );
                }
                None => problems.push(format!(
                    "{name}: {} unlocked by Network Unlock, doctor says {:?}",
                    client.name,
                    diagnoses
                        .iter()
                        .map(|d| (&d.mac, d.cause))
                        .collect::<Vec<_>>()
                )),
            }
            continue;
        }
        tally.failed += 1;
        let reason = outcome.and_then(|o| {
            o.failures
                .iter()
                .find(|f| f.protector == ProtectorKind::NetworkUnlock)
                .map(|f| f.reason.as_str())
        });
        let accepted = accepted_for_failure(loaded, result, reason);
        if diagnoses.is_empty() {
            // Nothing of this client reached the WDS-side capture.
            tally.absent += 1;
            let sent_nothing = reason.is_none_or(|r| !r.contains("no reply to"));
            let lost = accepted.contains(&Cause::RequestNotReachingWds);
            if !(sent_nothing || lost || accepted.contains(&Cause::NoDhcp)) {
                problems.push(format!(
                    "{name}: {} is in no WDS-side capture, yet the simulator says {reason:?}",
                    client.name
                ));
            }
            continue;
        }
        for d in diagnoses {
            if accepted.contains(&d.cause) {
                tally.exact += 1;
            } else if shows(d, &accepted) {
                tally.open += 1;
                eprintln!(
                    "{name}: {} ({}): doctor says {}, leaving open {:?}; the simulator: {reason:?}",
                    client.name, d.mac, d.cause, d.also_possible
                );
            } else {
                problems.push(format!(
                    "{name}: {} ({}) failed with {reason:?}; accepted {accepted:?}; doctor says {} \
                     (also possible {:?}): {:#?}",
                    client.name, d.mac, d.cause, d.also_possible, d.evidence
                ));
            }
        }
    }
    problems
}

fn run_and_check(loaded: &scenario::Loaded, seed: Option<u64>, tally: &mut Tally) -> Vec<String> {
    let result = scenario::run(loaded, seed).expect("the scenario runs");
    let mut inputs = inputs_of(loaded, &result);
    let mut problems = check(loaded, &result, &doctor::diagnose(&inputs), tally);
    // With the WDS debug log too: it must not lead doctor astray.
    if let Some(server) = result.servers.first() {
        inputs.wds_log = Some(TextFile {
            file: format!("wds-{}.log", server.name),
            text: scenario::views::wds_log(&result, &server.name),
        });
        let mut with_log = Tally::default();
        problems.extend(
            check(loaded, &result, &doctor::diagnose(&inputs), &mut with_log)
                .into_iter()
                .map(|p| format!("with the WDS log: {p}")),
        );
        tally.exact_with_log += with_log.exact;
    }
    // With the key log the run wrote (each client's NKPU_SESSION line): a reply that
    // verifies is still judged by what the client did after it.
    let key_log = scenario::views::key_log(&result);
    inputs.keylog = Some(doctor::KeyLog::parse("nkpu-keys.log", &key_log).expect("valid key log"));
    let report = doctor::diagnose(&inputs);
    tally.verified += report
        .clients
        .iter()
        .filter(|c| c.evidence.iter().any(|e| e.contains("tag verifies")))
        .count();
    problems.extend(
        check(loaded, &result, &report, &mut Tally::default())
            .into_iter()
            .map(|p| format!("with the key log: {p}")),
    );
    problems
}

#[test]
fn every_catalogue_scenario_agrees_with_the_simulator() {
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for loaded in scenario::load_whole_catalogue().expect("the catalogue loads") {
        if loaded.scenario.wds.is_empty() {
            continue;
        }
        problems.extend(run_and_check(&loaded, None, &mut tally));
    }
    eprintln!(
        "{} clients: {} exact ({} with the WDS log), {} among the causes doctor leaves open, {} \
         in no WDS-side capture; {} replies verified under the run's key log",
        tally.clients, tally.exact, tally.exact_with_log, tally.open, tally.absent, tally.verified
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The run's key log matched the captured requests and verified their replies.
    assert!(
        tally.verified * 2 >= tally.clients,
        "{} verified",
        tally.verified
    );
    // Most diagnoses must be exact, not merely left open.
    assert!(
        tally.exact * 10 >= tally.clients * 8,
        "too few exact causes"
    );
}

#[test]
fn a_seed_sweep_with_loss_agrees_with_the_simulator() {
    // 10% of frame deliveries lost: most boots unlock after a retransmission or two, about one
    // in 25 falls back to the PIN (requests or replies lost on both attempts).
    let loaded = scenario::load_catalogue("reliability-under-loss").expect("catalogue");
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for seed in 1..=200 {
        problems.extend(run_and_check(&loaded, Some(seed), &mut tally));
    }
    eprintln!(
        "sweep: {} clients: {} exact, {} open, {} absent",
        tally.clients, tally.exact, tally.open, tally.absent
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(tally.clients, 200);
    // The sweep saw failures and boots that needed a retransmission, not only happy paths.
    assert!(tally.failed > 0, "no seed failed: the sweep tests nothing");
}

fn windows_capture(name: &str) -> Capture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/windows-captures")
        .join(name);
    let bytes = std::fs::read(&path).expect("the fixture");
    Capture {
        name: name.into(),
        frames: pcap_frames(&bytes),
    }
}

#[test]
fn the_real_windows_captures_are_unanswered_requests() {
    for (file, family) in [
        ("windows10-nkpu-request-v4.pcap", "dhcpv4"),
        ("windows10-nkpu-request-v6.pcap", "dhcpv6"),
    ] {
        let report = doctor::diagnose(&Inputs {
            captures: vec![windows_capture(file)],
            ..Inputs::default()
        });
        assert_eq!(report.clients.len(), 1, "{file}");
        let client = &report.clients[0];
        assert_eq!(client.cause, Cause::NoReply, "{file}");
        assert!(
            client.evidence[0].starts_with(&format!("{file}:1: unlock request sent ({family}")),
            "{:?}",
            client.evidence
        );
        assert!(client.evidence[0].contains("4ad038da813176acbd5caaae0fe3494b0d008159"));
        // Without the server's files, doctor names what would settle it.
        assert!(client.also_possible.contains(&Cause::UnknownCertificate));
        assert!(client.also_possible.contains(&Cause::SubnetDenied));
        assert!(client.settle_with.iter().any(|s| s.starts_with("--cert")));
        assert!(client.settle_with.iter().any(|s| s.starts_with("--policy")));
        assert!(!report.all_unlocked());
    }
    // With a server certificate that is not the client's, the cause is settled.
    let report = doctor::diagnose(&Inputs {
        captures: vec![windows_capture("windows10-nkpu-request-v4.pcap")],
        certificates: Some(vec![GivenCertificate {
            file: "other.cer".into(),
            thumbprint: nkpu::Thumbprint::from_bytes([0xab; 20]),
            subject: "CN=other".into(),
        }]),
        ..Inputs::default()
    });
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::UnknownCertificate);
    assert_eq!(client.address.as_deref(), Some("10.0.4.110"));
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e.contains("abababab") && e.contains("other.cer"))
    );
}

/// The key log settles what a server-side capture cannot: the session key the client chose
/// (recovered here with the server's private key, as a lab would log it) verifies the reply's
/// tag; a wrong key makes it `reply-rejected`.
#[test]
fn the_key_log_verifies_a_reply_or_shows_it_rejected() {
    let loaded = scenario::load_catalogue("happy-path-ipv4").expect("catalogue");
    let result = scenario::run(&loaded, None).expect("runs");
    let mut inputs = inputs_of(&loaded, &result);
    let bundle = scenario::world::generated_certificate(1);
    let key = nkpu::ProviderKey::from_pkcs8_der(
        &bundle
            .private_key
            .as_ref()
            .expect("a private key")
            .to_pkcs8_der(),
    )
    .expect("RSA-2048");
    let clients = doctor::traffic::follow(&inputs.captures);
    let (thumbprint, protector) = clients
        .values()
        .flatten()
        .find_map(|e| match &e.seen {
            doctor::traffic::Seen::Request {
                thumbprint,
                key_protector,
                ..
            } => Some((*thumbprint, key_protector.as_ref().clone())),
            _ => None,
        })
        .expect("a request in the capture");
    let (_, session_key) = key.decrypt(&protector).expect("decrypts");
    let line = doctor::KeyLog::line_for(&thumbprint, protector.as_bytes(), &session_key);
    inputs.keylog = Some(doctor::KeyLog::parse("keys.log", &line).expect("valid"));
    let report = doctor::diagnose(&inputs);
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::Unlocked);
    assert!(client.also_possible.is_empty());
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e.contains("tag verifies under the session key of keys.log:1")),
        "{:?}",
        client.evidence
    );

    let wrong = nkpu::SessionKey::from_bytes([0x5a; 32]);
    let line = doctor::KeyLog::line_for(&thumbprint, protector.as_bytes(), &wrong);
    inputs.keylog = Some(doctor::KeyLog::parse("keys.log", &line).expect("valid"));
    let report = doctor::diagnose(&inputs);
    assert_eq!(report.clients[0].cause, Cause::ReplyRejected);
    assert!(!report.all_unlocked());
}

/// Captures from both sides of a relay: the client's segment and the server's.
fn all_segments(loaded: &scenario::Loaded, result: &RunResult) -> Inputs {
    let mut inputs = inputs_of(loaded, result);
    inputs.captures = result
        .segments
        .iter()
        .map(|(name, _, capture)| Capture {
            name: format!("{name}.pcap"),
            frames: pcap_frames(&capture.copy_to(Vec::new()).expect("copied")),
        })
        .collect();
    inputs
}

#[test]
fn captures_on_both_sides_of_a_relay_show_where_the_request_stops() {
    let loaded = scenario::load_catalogue("relay-forwards-to-dhcp-only").expect("catalogue");
    let result = scenario::run(&loaded, None).expect("runs");
    let inputs = all_segments(&loaded, &result);
    assert!(inputs.captures.len() >= 2);
    let report = doctor::diagnose(&inputs);
    assert_eq!(report.clients.len(), 1, "{report:#?}");
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::RequestNotReachingWds, "{client:#?}");
    assert!(
        client.evidence.iter().any(|e| e.contains("helper list")),
        "{client:#?}"
    );

    let loaded = scenario::load_catalogue("dhcp-and-wds-across-a-relay").expect("catalogue");
    let result = scenario::run(&loaded, None).expect("runs");
    let report = doctor::diagnose(&all_segments(&loaded, &result));
    assert!(report.all_unlocked(), "{report:#?}");
    assert!(
        report.clients[0]
            .evidence
            .iter()
            .any(|e| e.contains("relayed by")),
        "{report:#?}"
    );
}

/// The happy path's capture, cut down: its DORA, and frame 5 (the unlock request) when asked.
fn happy_path_frames(keep_request: bool) -> Vec<Vec<u8>> {
    let loaded = scenario::load_catalogue("happy-path-ipv4").expect("catalogue");
    let result = scenario::run(&loaded, None).expect("runs");
    let inputs = inputs_of(&loaded, &result);
    let frames = &inputs.captures[0].frames;
    assert_eq!(frames.len(), 6, "DORA, request, reply");
    frames[..if keep_request { 5 } else { 4 }].to_vec()
}

#[test]
fn a_lease_without_a_request_is_settled_by_the_protector_list() {
    let capture = Capture {
        name: "corp.pcap".into(),
        frames: happy_path_frames(false),
    };
    let report = doctor::diagnose(&Inputs {
        captures: vec![capture.clone()],
        ..Inputs::default()
    });
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::NoUnlockRequest);
    assert_eq!(client.address.as_deref(), Some("10.0.4.100"));
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e == "corp.pcap:4: DHCPACK 10.0.4.100")
    );
    assert_eq!(client.also_possible, vec![Cause::RequestNotReachingWds]);
    assert!(
        client
            .settle_with
            .iter()
            .any(|s| s.starts_with("--protectors"))
    );

    // manage-bde's list without the Network (Certificate Based) protector settles it.
    let protectors = TextFile {
        file: "protectors.txt".into(),
        text: "Volume C: []\nAll Key Protectors\n\n    TPM And PIN:\n      ID: {1234}\n".into(),
    };
    let report = doctor::diagnose(&Inputs {
        captures: vec![capture],
        protectors: Some(protectors),
        ..Inputs::default()
    });
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::NoUnlockRequest);
    assert!(client.also_possible.is_empty(), "{client:#?}");
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e.starts_with("protectors.txt: no Network (Certificate Based) protector"))
    );
}

#[test]
fn a_request_that_breaks_the_wire_format_is_malformed_with_its_rule() {
    let mut frames = happy_path_frames(true);
    let request = &mut frames[4];
    // Option 43's first sub-option (the thumbprint) declares 19 bytes instead of 20.
    let at = request
        .windows(4)
        .position(|w| w == [43, 152, 1, 20])
        .expect("option 43 with the thumbprint sub-option");
    request[at + 3] = 19;
    let report = doctor::diagnose(&Inputs {
        captures: vec![Capture {
            name: "corp.pcap".into(),
            frames,
        }],
        ..Inputs::default()
    });
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::Malformed, "{client:#?}");
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e.starts_with("corp.pcap:5: malformed Network Unlock request (rule ")),
        "{client:#?}"
    );
}

/// A run of `wds-service-stopped`, and doctor's inputs from its capture alone (no policy, no
/// certificates).
fn stopped_service_capture() -> (Inputs, RunResult) {
    let loaded = scenario::load_catalogue("wds-service-stopped").expect("catalogue");
    let result = scenario::run(&loaded, None).expect("runs");
    let mut inputs = inputs_of(&loaded, &result);
    inputs.policy = None;
    inputs.certificates = None;
    (inputs, result)
}

#[test]
fn the_wds_debug_log_settles_a_stopped_service() {
    let (mut inputs, result) = stopped_service_capture();
    let report = doctor::diagnose(&inputs);
    assert_eq!(report.clients[0].cause, Cause::NoReply);
    assert!(
        report.clients[0]
            .also_possible
            .contains(&Cause::SubnetDenied)
    );
    inputs.wds_log = Some(TextFile {
        file: "wds-wds.log".into(),
        text: scenario::views::wds_log(&result, "wds"),
    });
    let report = doctor::diagnose(&inputs);
    let client = &report.clients[0];
    assert_eq!(client.cause, Cause::NoReply);
    assert!(
        client
            .also_possible
            .iter()
            .all(|c| *c == Cause::RequestNotReachingWds),
        "{client:#?}"
    );
    assert!(
        client
            .evidence
            .iter()
            .any(|e| e.starts_with("wds-wds.log:") && e.ends_with("WDS service stopped")),
        "{client:#?}"
    );
}

#[test]
fn a_wds_log_without_network_unlock_lines_is_the_debug_log_left_off() {
    let (mut inputs, _) = stopped_service_capture();
    // As WDS exports its debug channel before `wevtutil ... /e:true`: nothing, or other
    // components' lines only.
    for text in [
        "",
        "10:00:01 [WDSServer] PXE: request from 00:15:5d:00:01:02\n",
    ] {
        inputs.wds_log = Some(TextFile {
            file: "wds-debug.log".into(),
            text: text.into(),
        });
        let report = doctor::diagnose(&inputs);
        let client = &report.clients[0];
        assert_eq!(client.cause, Cause::NoReply);
        let said = client
            .evidence
            .iter()
            .find(|e| e.starts_with("wds-debug.log: not one Network Unlock line"))
            .unwrap_or_else(|| panic!("the empty log is named: {client:#?}"));
        assert!(said.contains("off by default"), "{said}");
        assert!(
            said.contains(
                "wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true"
            ),
            "{said}"
        );
        // Not "the provider did not process them": the server-side causes stay open.
        assert!(
            !client
                .evidence
                .iter()
                .any(|e| e.contains("did not process")),
            "{client:#?}"
        );
        assert!(
            client.also_possible.contains(&Cause::SubnetDenied),
            "{client:#?}"
        );
        assert!(
            client.settle_with.iter().any(|s| s.contains("/e:true")),
            "{client:#?}"
        );
    }
}
