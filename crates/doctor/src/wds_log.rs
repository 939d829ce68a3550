//! Reading the WDS debug log for one client: the provider logs each silent drop with the
//! datagram's source and the reason (`dropped a datagram from 10.0.4.100:68: subnet policy:
//! …`, as nulab's `wds-*.log` and the provider's log lines write it); the reason's words are
//! mapped back to a cause.

use std::net::{IpAddr, Ipv4Addr};

use crate::{Cause, TextFile};

/// The cause a drop reason stands for (the provider's `DropReason` texts).
fn cause_of(reason: &str) -> Cause {
    if reason.contains("no certificate with thumbprint") {
        Cause::UnknownCertificate
    } else if reason.contains("is DISABLED") {
        Cause::CertificateDisabled
    } else if reason.starts_with("subnet policy") {
        Cause::SubnetDenied
    } else if reason.contains("bde-network-unlock.ini is invalid") {
        Cause::PolicyInvalid
    } else if reason.starts_with("malformed request") {
        Cause::Malformed
    } else {
        Cause::NoReply
    }
}

/// The log's drop lines about a client at `client` (or relayed through `giaddr`), as
/// `file:line: text` with the cause each stands for; "not a Network Unlock message" lines (the
/// ordinary DHCP traffic) are left out.
pub fn drops_for(log: &TextFile, client: Option<IpAddr>, giaddr: Ipv4Addr) -> Vec<(String, Cause)> {
    let mut sources = Vec::new();
    if let Some(client) = client {
        sources.push(format!("from {client}:"));
        sources.push(format!("from [{client}]:"));
    }
    if !giaddr.is_unspecified() {
        sources.push(format!("from {giaddr}:"));
    }
    let mut found = Vec::new();
    for (index, line) in log.text.lines().enumerate() {
        let Some((_, rest)) = line.split_once("dropped a datagram ") else {
            continue;
        };
        if !sources.iter().any(|s| rest.starts_with(s.as_str())) {
            continue;
        }
        // `from ADDR:PORT: reason`.
        let reason = rest.split(": ").nth(1).map(str::trim).unwrap_or_default();
        if reason.starts_with("not a Network Unlock") {
            continue;
        }
        found.push((
            format!("{}:{}: {}", log.file, index + 1, line.trim()),
            cause_of(reason),
        ));
    }
    found
}

/// The command that turns the WDS debug log on (the seed's first way; Event Viewer's
/// Deployment-Services-Diagnostics > Debug > Enable Log is the other).
pub const ENABLE_DEBUG_LOG: &str =
    "wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true";

/// Whether the log holds any line of the Network Unlock provider (its phases, its drops, its
/// service and feature states: nulab's `wds-*.log` tags each `[BitLocker Network Unlock]`).
/// WDS's debug channel is off by default: a log exported before [`ENABLE_DEBUG_LOG`] has none
/// of them, and then says nothing of what the server saw.
pub fn has_network_unlock_lines(log: &TextFile) -> bool {
    log.text.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        [
            "network unlock",
            "networkunlock",
            "dropped a datagram",
            "[phase ",
        ]
        .iter()
        .any(|mark| line.contains(mark))
    })
}

/// The log's lines about the service's state (stopped, started, the provider unregistered, the
/// certificate store removed, the policy file), as `file:line: text`.
pub fn service_states(log: &TextFile) -> Vec<String> {
    const STATES: [&str; 6] = [
        "WDS service stopped",
        "WDS service started",
        "provider unregistered",
        "provider registered",
        "certificate store was removed",
        "subnet policy file",
    ];
    log.text
        .lines()
        .enumerate()
        .filter(|(_, line)| STATES.iter().any(|state| line.contains(state)))
        .map(|(index, line)| format!("{}:{}: {}", log.file, index + 1, line.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_drop_line_of_the_client_to_its_cause() {
        let log = TextFile {
            file: "wds.log".into(),
            text: "0.1s x Verbose: dropped a datagram from 0.0.0.0:68: not a Network Unlock message\n\
                   0.2s x Verbose: dropped a datagram from 10.0.4.100:68: subnet policy: the address is in none\n\
                   0.3s x Verbose: dropped a datagram from 10.0.4.7:68: the WDS service is stopped\n"
                .into(),
        };
        let client = Some(IpAddr::from([10, 0, 4, 100]));
        let drops = drops_for(&log, client, Ipv4Addr::UNSPECIFIED);
        assert_eq!(drops.len(), 1);
        assert!(drops[0].0.starts_with("wds.log:2: "));
        assert_eq!(drops[0].1, Cause::SubnetDenied);
        let other = drops_for(
            &log,
            Some(IpAddr::from([10, 0, 4, 7])),
            Ipv4Addr::UNSPECIFIED,
        );
        assert_eq!(other[0].1, Cause::NoReply);
        assert!(has_network_unlock_lines(&log));
    }

    #[test]
    fn a_log_without_the_providers_lines_is_told_apart() {
        let log = |text: &str| TextFile {
            file: "wds.log".into(),
            text: text.into(),
        };
        assert!(!has_network_unlock_lines(&log("")));
        assert!(!has_network_unlock_lines(&log(
            "10:00:01 [WDSServer] PXE: request from 00:15:5d:00:01:02\n10:00:02 [WDSTFTP] sent boot\\x64\\wdsnbp.com\n"
        )));
        assert!(has_network_unlock_lines(&log(
            "0.5s [WDSServer] [BitLocker Network Unlock] Information: the WDS service started\n"
        )));
        assert!(has_network_unlock_lines(&log(
            "[phase 4] Network Unlock request from 10.0.4.100 (xid 1) recognised\n"
        )));
    }
}
