//! Each client's key chain for the report: every key with a short fingerprint (`sha256:` and 4
//! bytes, [`volume::fingerprint`]) and where it came from, all as the components computed
//! them during the run, never rebuilt afterwards: what the TPM released (the intermediate
//! key, the key protector, SK) and what the volume unwrapped (VMK, disk key) from the boot
//! client's events; CK and SK as the WDS decrypted them from the provider's phase 5 log line;
//! the reply from the captured frame.

use std::fmt::Write as _;
use std::net::IpAddr;

use boot_client::boot::{BootEvent, Released};
use unlock_server::provider::LogMessage;

use crate::run::{ClientResult, RunResult};
use crate::text::esc;
use crate::wire::PacketKind;
use crate::world::seconds;

/// One row: the key, its value or fingerprint, where it came from.
struct Row {
    key: &'static str,
    value: String,
    from: String,
}

fn rows(result: &RunResult, client: &ClientResult) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |key, value: String, from: String| rows.push(Row { key, value, from });
    for event in &client.events {
        match event {
            BootEvent::NetworkUnlockReady {
                at,
                thumbprint,
                released,
            } => {
                let Released {
                    intermediate_key,
                    key_protector,
                    session_key,
                    ..
                } = &**released;
                push(
                    "certificate",
                    thumbprint.to_string(),
                    "the client's FVE_NKP store (Group Policy)".into(),
                );
                push(
                    "intermediate key",
                    intermediate_key.to_string(),
                    format!(
                        "released by the TPM at {} (phase 1, PCR 7 as sealed)",
                        seconds(*at)
                    ),
                );
                push(
                    "key protector",
                    key_protector.to_string(),
                    "released by the TPM (phase 1): RSA-OAEP of CK ‖ SK under the certificate, computed at enable time".into(),
                );
                push(
                    "session key SK",
                    session_key.to_string(),
                    "released by the TPM (phase 1)".into(),
                );
            }
            BootEvent::KeysCombined {
                at,
                network_key,
                network_key_fingerprint,
                combined_key,
            } => {
                push(
                    "network key CK",
                    format!("{network_key_fingerprint} ({network_key})"),
                    format!(
                        "opened by the boot client from the reply under SK at {} (phase 6)",
                        seconds(*at)
                    ),
                );
                push(
                    "combined key",
                    combined_key.to_string(),
                    "SHA-256 of the intermediate key and CK (phase 7): nulab's model, not Windows' undocumented combination".into(),
                );
            }
            BootEvent::Unlocked {
                at,
                protector,
                volume_master_key,
                disk_key,
            } => {
                push(
                    "volume master key",
                    volume_master_key.to_string(),
                    format!(
                        "unwrapped by the volume with the {} protector at {} (phase 8)",
                        protector.manage_bde_name(),
                        seconds(*at)
                    ),
                );
                push(
                    "disk key (FVEK)",
                    disk_key.to_string(),
                    "unwrapped under the VMK; decrypts sector 0 (phase 8)".into(),
                );
            }
            _ => {}
        }
    }
    // The server's side: its phase 5 line for this client's address, and the reply frame.
    let addresses: Vec<IpAddr> = result
        .packets()
        .filter(|p| *p.from == *client.name && p.is_unlock_request())
        .map(|p| p.src.ip())
        .collect();
    for server in &result.servers {
        if let Some((line, keys)) = server.log.iter().find_map(|l| match &l.message {
            LogMessage::Decrypted(keys) if addresses.contains(&keys.client) => Some((l, keys)),
            _ => None,
        }) {
            push(
                "CK and SK at the WDS",
                format!(
                    "CK {}, session key SK {}",
                    keys.network_key, keys.session_key
                ),
                format!(
                    "RSA-decrypted from the key protector by {} at {} (phase 5, its log)",
                    server.name,
                    seconds(line.at)
                ),
            );
        }
    }
    let xids: Vec<u32> = result
        .packets()
        .filter(|p| *p.from == *client.name)
        .filter_map(|p| match &p.kind {
            PacketKind::UnlockRequest { xid, .. } => Some(*xid),
            _ => None,
        })
        .collect();
    if let Some((packet, reply)) = result.packets().find_map(|p| match &p.kind {
        PacketKind::UnlockReply { xid, reply, .. } if xids.contains(xid) => Some((p, reply)),
        _ => None,
    }) {
        push(
            "reply",
            volume::fingerprint(reply.as_bytes()),
            format!(
                "CK sealed under SK by {} (AES-256-CCM, 60 bytes), captured on {} at {} (phase 6)",
                packet.from,
                packet.segment,
                seconds(packet.at)
            ),
        );
    }
    // In the order of the phases: the server's rows (5, 6) before the client opens the reply.
    const ORDER: [&str; 11] = [
        "certificate",
        "intermediate key",
        "key protector",
        "session key SK",
        "CK and SK at the WDS",
        "reply",
        "network key CK",
        "combined key",
        "volume master key",
        "disk key (FVEK)",
        "",
    ];
    rows.sort_by_key(|row| ORDER.iter().position(|k| *k == row.key));
    rows
}

/// The report's key chain section for `clients`.
pub fn html<'a>(result: &RunResult, clients: impl Iterator<Item = &'a ClientResult>) -> String {
    let mut out = String::from(
        "<h2 id=\"key-chains\">Key chains</h2>\n<p>Fingerprints are <code>sha256:</code> and the first 4 bytes of a key's SHA-256; CK and SK also appear shortened (first and last 4 bytes), as in the logs.</p>\n",
    );
    for client in clients {
        let rows = rows(result, client);
        let _ = writeln!(out, "<h3>{}</h3>", esc(&client.name));
        if rows.is_empty() {
            out.push_str("<p>No Network Unlock key was released for this client.</p>\n");
            continue;
        }
        out.push_str(
            "<table><tr><th>key</th><th>fingerprint</th><th>where it came from</th></tr>\n",
        );
        for row in rows {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                row.key,
                esc(&row.value),
                esc(&row.from)
            );
        }
        out.push_str("</table>\n");
    }
    out
}
