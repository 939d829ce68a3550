//! `nulab demo`: it decodes the real Windows 10 capture shipped with nulab, runs one whole
//! Network Unlock exchange (phases 2 to 6 of the seed) through the real codec and the real
//! crypto, printing every step, then boots a machine in the simulator (the catalogue's
//! `happy-path-ipv4` with the demo's seed) and narrates phases 1 to 9 with the values each
//! component logged: the TPM's release, the DHCP lease, the request, the provider's own phase
//! 4 to 6 lines with CK and SK, the reply verifying, the combined key, the volume master key
//! and disk key, and Windows reading the decrypted sector 0.
//!
//! `--json` prints one object instead of the narration (schema [`DemoReport`]): the capture's
//! packets and the computed request and reply as `nulab packet decode --json` shows them, the
//! certificate, the two keys, and whether the reply opened.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nkpu::{ClientKey, KeyProtector, KeyProtectorReply, Message, ProviderKey, SessionKey, v4};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use crate::output::{self, outln};
use crate::{packet_input, packet_view};

/// The real DHCPv4 Network Unlock request of a Windows 10 client (fixtures/windows-captures).
const WINDOWS_CAPTURE: &[u8] =
    include_bytes!("../../../fixtures/windows-captures/windows10-nkpu-request-v4.pcap");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed for the certificate and every key of the exchange (same seed, same bytes)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the computed request and reply as a pcap for Wireshark
    #[arg(long)]
    pcap: Option<std::path::PathBuf>,
    /// Replace an existing --pcap file
    #[arg(long)]
    force: bool,
    /// One JSON object (capture, certificate, keys, request, reply) instead of the narration
    #[arg(long)]
    json: bool,
}

/// What `nulab demo --json` prints.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub seed: u64,
    /// The packets of the real Windows capture.
    pub capture: Vec<packet_view::PacketView>,
    pub certificate: CertificateFacts,
    /// CK and SK in hex, as the client picked them.
    pub client_key: String,
    pub session_key: String,
    pub request: packet_view::PacketView,
    pub reply: packet_view::PacketView,
    /// The reply opened with SK to CK (always true unless nulab is broken).
    pub reply_opened: bool,
    /// The pcap written, if `--pcap` was given.
    pub pcap: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CertificateFacts {
    pub subject: String,
    pub key_bits: usize,
    pub thumbprint: String,
}

/// The computed exchange: its narration and its facts.
struct Exchange {
    narration: Vec<String>,
    certificate: CertificateFacts,
    client_key: String,
    session_key: String,
    request: Vec<u8>,
    reply: Vec<u8>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if let Some(path) = &args.pcap {
        crate::args::refuse_overwrite(path, args.force)?;
    }
    let capture = capture_views()?;
    let exchange = exchange(args.seed)?;
    if let Some(path) = &args.pcap {
        write_pcap(path, exchange.request.clone(), exchange.reply.clone())?;
    }
    if args.json {
        let report = DemoReport {
            seed: args.seed,
            capture,
            certificate: exchange.certificate,
            client_key: exchange.client_key,
            session_key: exchange.session_key,
            request: packet_view::view(1, "computed", &exchange.request)?,
            reply: packet_view::view(2, "computed", &exchange.reply)?,
            reply_opened: true,
            pcap: args.pcap.map(|p| p.display().to_string()),
        };
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("═══ 1. A real Network Unlock request, captured from a Windows 10 client ═══\n")?;
    for view in &capture {
        outln!("{}", view.to_text())?;
    }
    for line in &exchange.narration {
        outln!("{line}")?;
    }
    outln!(
        "\n═══ 3. A whole boot in the simulator: phases 1 to 9, as each component logged them ═══\n"
    )?;
    for line in boot_phases(args.seed)? {
        outln!("{line}")?;
    }
    if let Some(path) = &args.pcap {
        outln!(
            "Wrote the request and reply to {} (open it in Wireshark).",
            path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The two computed datagrams as Ethernet frames on the client's segment, with simulated
/// timestamps (the same seed gives the same file).
fn write_pcap(path: &std::path::Path, request: Vec<u8>, reply: Vec<u8>) -> Result<()> {
    use netsim::wire::{self, CapturedFrame};
    use netsim::{Bytes, MacAddr, SimTime};
    let frame = |time, src_mac, src: &str, dst: &str, payload| -> Result<CapturedFrame> {
        Ok(CapturedFrame {
            time,
            src_mac: MacAddr(src_mac),
            dst_mac: MacAddr([0xff; 6]),
            src: src.parse().context("demo address")?,
            dst: dst.parse().context("demo address")?,
            ttl: 128,
            ip_id: 1,
            payload: Bytes::from(payload),
        })
    };
    let frames = [
        frame(
            SimTime::ZERO,
            CLIENT_MAC,
            "10.0.4.110:68",
            "255.255.255.255:67",
            request,
        )?,
        frame(
            SimTime::from_millis(1),
            WDS_MAC,
            "10.0.4.98:67",
            "255.255.255.255:68",
            reply,
        )?,
    ];
    let bytes = wire::pcap_bytes(&frames).context("framing the pcap")?;
    crate::args::create_parent(path)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The phase lines of the transcript of `happy-path-ipv4` run with `seed`: the boot client's
/// events and the provider's own log, nothing recomputed.
fn boot_phases(seed: u64) -> Result<Vec<String>> {
    let loaded = scenario::load_catalogue("happy-path-ipv4").context("the demo's scenario")?;
    let result = scenario::run(&loaded, Some(seed)).context("running the demo's boot")?;
    let lines: Vec<String> = scenario::views::transcript(&result)
        .lines()
        .filter(|line| line.contains("[phase "))
        .map(str::to_string)
        .collect();
    for phase in 1..=9 {
        if !lines
            .iter()
            .any(|l| l.contains(&format!("[phase {phase}]")))
        {
            bail!("the demo's boot logged no phase {phase}");
        }
    }
    Ok(lines)
}

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
const WDS_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x98];

fn capture_views() -> Result<Vec<packet_view::PacketView>> {
    let (_, packets) =
        packet_input::read_packets("windows10-nkpu-request-v4.pcap", WINDOWS_CAPTURE)?;
    let mut views = Vec::new();
    for (i, packet) in packets.iter().enumerate() {
        views.push(packet_view::view(i + 1, &packet.origin, &packet.bytes)?);
    }
    Ok(views)
}

fn exchange(seed: u64) -> Result<Exchange> {
    let mut narration = Vec::new();
    macro_rules! say {
        ($($arg:tt)*) => {
            narration.push(format!($($arg)*))
        };
    }
    say!("═══ 2. One unlock exchange, computed now with real RSA-2048 and AES-256-CCM ═══\n");
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let bundle = certificates::fixture::network_unlock(seed);
    let server_cert = certificates::ProviderCertificate::from_bundle(bundle)
        .context("the generated certificate is fit for the provider")?;
    let client_cert = server_cert.certificate();
    let thumbprint = server_cert.thumbprint();
    say!(
        "The WDS server holds a Network Unlock certificate ({}, RSA-{}), thumbprint {}",
        client_cert.certificate().subject(),
        client_cert.certificate().key_bits(),
        thumbprint
    );
    say!("Group Policy gave the client the same certificate, without its private key.\n");

    // Phase 3: the client builds its request.
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let kp = KeyProtector::encrypt(client_cert.public_key(), &ck, &sk, &mut rng)?;
    let request = v4::Request::after_lease(
        0x6567_aa00 ^ (seed as u32),
        CLIENT_MAC,
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![
            v4::LeaseOption::new(1, vec![255, 255, 255, 0]).context("lease option")?,
            v4::LeaseOption::new(3, vec![10, 0, 4, 1]).context("lease option")?,
            v4::LeaseOption::new(51, 86400u32.to_be_bytes().to_vec()).context("lease option")?,
            v4::LeaseOption::new(54, vec![10, 0, 4, 97]).context("lease option")?,
        ],
        thumbprint,
        kp,
    );
    let request_bytes = request.encode();
    say!("[phase 2] the UEFI DHCP driver holds a lease: 10.0.4.110 from 10.0.4.97");
    say!(
        "[phase 3] the client picks CK (network key) {} and SK (session key) {}",
        ck.short(),
        sk.short()
    );
    say!(
        "          KP = RSA-2048-PKCS1(cert, CK‖SK) = {:?}; request broadcast: {} bytes",
        request.key_protector,
        request_bytes.len()
    );

    // Phases 4 to 6: the provider.
    let Message::V4Request(received) = v4::decode(&request_bytes)? else {
        bail!("the encoded request decoded as something else");
    };
    say!(
        "[phase 4] the provider recognises vendor class BITLOCKER and thumbprint {}",
        received.thumbprint
    );
    let provider = ProviderKey::from_pkcs8_der(&server_cert.private_key_pkcs8_der())?;
    let (server_ck, server_sk) = provider.decrypt(&received.key_protector)?;
    say!(
        "[phase 5] it decrypts KP with the private key (aws-lc-rs): CK {} SK {}",
        server_ck.short(),
        server_sk.short()
    );
    let reply = v4::Reply::answering(&received, KeyProtectorReply::seal(&server_sk, &server_ck));
    let reply_bytes = reply.encode();
    say!(
        "[phase 6] it returns CK sealed under SK: KPR = tag‖AES-256-CCM = {:?}; reply: {} bytes",
        reply.reply,
        reply_bytes.len()
    );

    // Back on the client.
    let Message::V4Reply(answer) = v4::decode(&reply_bytes)? else {
        bail!("the encoded reply decoded as something else");
    };
    let opened = answer.reply.open(&sk)?;
    if opened != ck {
        bail!("the reply opened to a different key");
    }
    say!(
        "[phase 6] the client opens the reply with SK: the tag verifies, CK {} is back",
        opened.short()
    );
    let wrong = answer.reply.open(&SessionKey::from_bytes([0; 32]));
    say!(
        "          (with any other session key: {})",
        wrong
            .err()
            .map_or_else(|| "opened?!".to_owned(), |e| e.to_string())
    );
    say!("\nThe request and reply, as nulab packet decode shows them:\n");
    for (i, bytes) in [&request_bytes, &reply_bytes].into_iter().enumerate() {
        say!("{}", packet_view::view(i + 1, "computed", bytes)?.to_text());
    }
    say!(
        "Phases 1, 7, 8 and 9 (the TPM's release; CK combined with the TPM-held key, SHA-256 in\n\
         nulab's model, to unwrap the volume master key) belong to the boot client: part 3 runs them."
    );
    Ok(Exchange {
        narration,
        certificate: CertificateFacts {
            subject: client_cert.certificate().subject().to_string(),
            key_bits: client_cert.certificate().key_bits() as usize,
            thumbprint: thumbprint.to_string(),
        },
        client_key: ck.to_hex(),
        session_key: sk.to_hex(),
        request: request_bytes,
        reply: reply_bytes,
    })
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn the_demo_boot_narrates_phases_1_to_9_and_ck_is_the_same_on_both_sides() {
        let lines = boot_phases(1).expect("the demo's boot");
        let ck_of = |phase: &str| {
            let line = lines
                .iter()
                .find(|l| l.contains(phase))
                .expect("phase line");
            let at = line.find("CK ").expect("a CK") + 3;
            line[at..]
                .split([',', ' '])
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(ck_of("[phase 5]"), ck_of("[phase 7]"));
        assert!(ck_of("[phase 5]").contains('…'));
    }
}
