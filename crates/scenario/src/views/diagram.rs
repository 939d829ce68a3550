//! The sequence diagram both drawings share (the report's SVG and the Mermaid file): one
//! lifeline per host, split into one lane per segment the host has an adapter on (a client's
//! two adapters, a relay's two sides are drawn apart); a broadcast or multicast frame drawn as
//! its delivery to every other host seen on that segment (labelled with its group address,
//! `255.255.255.255` or DHCPv6's `ff02::1:2`); the phases as notes on the lane of the
//! component that logged them (the boot client's events, the provider's own log); drops and
//! time-outs as marks. Which hosts are on a segment is read from the capture: a host that
//! never sent on a segment is not drawn on it. Large runs draw only a few sampled clients
//! ([`Diagram::build`] takes the clients to draw and their frames); the rest is the summary's.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use boot_client::boot::BootEvent;
use boot_client::exchange::ExchangeEvent;
use dhcp::ClientEvent;
use unlock_server::provider::{DropReason, LogMessage};
use volume::ProtectorKind;

use crate::run::RunResult;
use crate::wire::{Packet, PacketKind};

/// A lane: a host's adapter on a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub host: String,
    pub segment: String,
}

impl Lane {
    pub fn label(&self) -> String {
        format!("{} ({})", self.host, self.segment)
    }
}

/// What a mark on the diagram is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkKind {
    /// A frame from one lane to one or more lanes; `group` is the group address of a
    /// broadcast or multicast.
    Frame {
        to: Vec<usize>,
        group: Option<String>,
        unlock: bool,
    },
    /// A phase or fallback note.
    Note,
    /// A silent drop by a server.
    Drop,
    /// A time-out or a failure on a client.
    Timeout,
}

/// One mark, at a time, from a lane.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at: Duration,
    pub lane: usize,
    pub kind: MarkKind,
    pub text: String,
}

/// The lanes and the marks in time order.
#[derive(Debug, Default)]
pub struct Diagram {
    pub lanes: Vec<Lane>,
    pub marks: Vec<Mark>,
}

impl Diagram {
    /// The diagram of `result`, drawing the frames and notes of the clients in `drawn` (all of
    /// them for a small run) and of every other host; `packets` are the frames
    /// [`kept_positions`] keeps for `drawn`.
    pub fn build(result: &RunResult, drawn: &BTreeSet<String>, packets: &[&Packet]) -> Diagram {
        let clients: BTreeSet<&str> = result.clients.iter().map(|c| c.name.as_str()).collect();
        let sampled = drawn.len() < clients.len();
        // Addresses the drawn clients sent from, to tell which server lines are theirs.
        let mut drawn_addresses: BTreeSet<IpAddr> = BTreeSet::new();
        let mut diagram = Diagram::default();
        for p in packets {
            diagram.lane(&p.from, &p.segment);
            if clients.contains(&*p.from) && !p.src.ip().is_unspecified() {
                drawn_addresses.insert(p.src.ip());
            }
        }
        for p in packets {
            if &*p.to != "broadcast" {
                diagram.lane(&p.to, &p.segment);
            }
        }
        for client in result.clients.iter().filter(|c| drawn.contains(&c.name)) {
            if !diagram.lanes.iter().any(|l| l.host == client.name) {
                diagram.lane(&client.name, "no traffic");
            }
        }
        for p in packets {
            let from = diagram.lane(&p.from, &p.segment);
            let group = is_group(p.dst.ip()).then(|| p.dst.ip().to_string());
            let to: Vec<usize> = if group.is_some() {
                (0..diagram.lanes.len())
                    .filter(|&i| {
                        let lane = &diagram.lanes[i];
                        *lane.segment == *p.segment && *lane.host != *p.from
                    })
                    .collect()
            } else {
                vec![diagram.lane(&p.to, &p.segment)]
            };
            diagram.marks.push(Mark {
                at: p.at,
                lane: from,
                kind: MarkKind::Frame {
                    to,
                    group,
                    unlock: p.is_unlock_request() || p.is_unlock_reply(),
                },
                text: short_summary(p),
            });
        }
        for client in result.clients.iter().filter(|c| drawn.contains(&c.name)) {
            let lanes: Vec<usize> = (0..diagram.lanes.len())
                .filter(|&i| diagram.lanes[i].host == client.name)
                .collect();
            let lane_of = |adapter: Option<usize>| {
                adapter
                    .and_then(|a| lanes.get(a))
                    .or(lanes.first())
                    .copied()
                    .unwrap_or(0)
            };
            for event in &client.events {
                // A sampled run's clients share segments with hundreds of others, whose
                // broadcast replies each client ignores: noise, not their story.
                if sampled
                    && matches!(
                        event,
                        BootEvent::Exchange {
                            event: ExchangeEvent::Ignored { .. },
                            ..
                        }
                    )
                {
                    continue;
                }
                if let Some((kind, text, adapter)) = client_mark(event) {
                    diagram.marks.push(Mark {
                        at: event.at(),
                        lane: lane_of(adapter),
                        kind,
                        text,
                    });
                }
            }
            if let Some(boot_client::boot::BootResult::Unlocked { at, .. }) =
                client.outcome.as_ref().map(|o| &o.result)
            {
                diagram.marks.push(Mark {
                    at: *at,
                    lane: lane_of(None),
                    kind: MarkKind::Note,
                    text: "phase 9: Windows continues the boot".into(),
                });
            }
        }
        let drawn_texts: Vec<String> = drawn_addresses.iter().map(IpAddr::to_string).collect();
        for server in &result.servers {
            let Some(lane) = diagram.lanes.iter().position(|l| l.host == server.name) else {
                continue;
            };
            for line in &server.log {
                let theirs = drawn.len() == clients.len()
                    || match &line.message {
                        LogMessage::Text(text) => drawn_texts.iter().any(|a| mentions(text, a)),
                        message => message
                            .addresses()
                            .any(|address| drawn_addresses.contains(&address)),
                    };
                if !theirs {
                    continue;
                }
                let (kind, text) = match (line.message.phase(), line.message.drop_reason()) {
                    (Some(phase), _) => {
                        let what = match phase {
                            4 => "request recognised",
                            5 => "key protector RSA-decrypted",
                            _ => "CK sealed under SK, replied",
                        };
                        (MarkKind::Note, format!("phase {phase}: {what}"))
                    }
                    // Every ordinary DHCP frame the WDS sees: not worth a mark.
                    (None, Some(DropReason::NotNetworkUnlock)) => continue,
                    (None, Some(reason)) => (MarkKind::Drop, format!("dropped: {reason}")),
                    (None, None) => (MarkKind::Note, line.message.to_string()),
                };
                diagram.marks.push(Mark {
                    at: line.at,
                    lane,
                    kind,
                    text,
                });
            }
        }
        for event in &result.events {
            if let Some(lane) = diagram.lanes.iter().position(|l| l.host == event.host) {
                diagram.marks.push(Mark {
                    at: event.at,
                    lane,
                    kind: MarkKind::Note,
                    text: format!("event: {}", event.what),
                });
            }
        }
        // At one instant, what a component logged comes before the frame it sent then (a
        // client is bound, then sends; a server decrypts, then replies); the sort is stable.
        diagram
            .marks
            .sort_by_key(|m| (m.at, matches!(m.kind, MarkKind::Frame { .. })));
        diagram
    }

    /// The lane of `host` on `segment`, added after the host's other lanes if new.
    fn lane(&mut self, host: &str, segment: &str) -> usize {
        if let Some(i) = self
            .lanes
            .iter()
            .position(|l| l.host == host && l.segment == segment)
        {
            return i;
        }
        let lane = Lane {
            host: host.to_string(),
            segment: segment.to_string(),
        };
        match self.lanes.iter().rposition(|l| l.host == host) {
            Some(last) => {
                self.lanes.insert(last + 1, lane);
                for mark in &mut self.marks {
                    shift(mark, last + 1);
                }
                last + 1
            }
            None => {
                self.lanes.push(lane);
                self.lanes.len() - 1
            }
        }
    }

    /// The hosts in lane order, each with its lanes.
    pub fn hosts(&self) -> Vec<(String, Vec<usize>)> {
        let mut hosts: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            match hosts.last_mut() {
                Some((host, lanes)) if *host == lane.host => lanes.push(i),
                _ => hosts.push((lane.host.clone(), vec![i])),
            }
        }
        hosts
    }
}

fn shift(mark: &mut Mark, from: usize) {
    if mark.lane >= from {
        mark.lane += 1;
    }
    if let MarkKind::Frame { to, .. } = &mut mark.kind {
        for lane in to {
            if *lane >= from {
                *lane += 1;
            }
        }
    }
}

/// The frames drawn, as positions in `result.segments` (segment, then packet) in time order:
/// all of them when every client is drawn; else those a drawn client sent or was sent, the
/// relayed Network Unlock requests and replies of its transactions, and the relayed DHCPv4
/// frames of its DORA exchanges (by xid and chaddr).
pub fn kept_positions(result: &RunResult, drawn: &BTreeSet<String>) -> Vec<(usize, usize)> {
    let all = drawn.len() >= result.clients.len();
    // Whether a drawn client sent or was sent each packet, asked once per packet (a storm's
    // hundred thousand packets against the drawn names).
    let mine: Vec<bool> = result
        .packets()
        .map(|p| drawn.contains(&*p.from) || drawn.contains(&*p.to))
        .collect();
    let own = || {
        result
            .packets()
            .zip(&mine)
            .filter(|(_, m)| **m)
            .map(|(p, _)| p)
    };
    let xids: BTreeSet<u32> = own()
        .filter_map(|p| match &p.kind {
            PacketKind::UnlockRequest { xid, .. } => Some(*xid),
            _ => None,
        })
        .collect();
    // A relayed DORA frame is neither from nor to its client: its exchange (xid and chaddr,
    // both, since a storm's clients may draw the same xid) is one the client's own frames hold.
    let exchanges: BTreeSet<(u32, [u8; 6])> = own().filter_map(Packet::dhcp4_exchange).collect();
    let positions = result
        .segments
        .iter()
        .enumerate()
        .flat_map(|(segment, (_, packets, _))| (0..packets.len()).map(move |i| (segment, i)));
    let mut packets: Vec<(&Packet, (usize, usize))> = result
        .packets()
        .zip(positions)
        .zip(&mine)
        .filter(|((p, _), mine)| {
            all || **mine
                || match &p.kind {
                    PacketKind::UnlockRequest { xid, .. } | PacketKind::UnlockReply { xid, .. } => {
                        xids.contains(xid)
                    }
                    PacketKind::Dhcp4 { xid, chaddr, .. } => exchanges.contains(&(*xid, *chaddr)),
                    _ => false,
                }
        })
        .map(|(kept, _)| kept)
        .collect();
    packets.sort_by_key(|(p, _)| p.at);
    packets.into_iter().map(|(_, position)| position).collect()
}

/// Whether a log line names `address`, an IP address as text (not merely a longer address it
/// is a prefix of: an occurrence followed by a space, a colon or a closing bracket). Every
/// occurrence is tried, overlapping ones too, without allocating: a storm's summary asks this of
/// every WDS log line for every drawn address.
fn mentions(message: &str, address: &str) -> bool {
    let mut from = 0;
    while let Some(at) = message.get(from..).and_then(|rest| rest.find(address)) {
        let end = from + at + address.len();
        if matches!(message.as_bytes().get(end), Some(b' ' | b':' | b']' | b')')) {
            return true;
        }
        // The occurrence starts with an ASCII character (addresses are ASCII), so one byte
        // on is a character boundary.
        from += at + 1;
    }
    false
}

fn is_group(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// A frame's label on an arrow.
pub fn short_summary(packet: &Packet) -> String {
    match &packet.kind {
        PacketKind::UnlockRequest { family, .. } => format!("NKPU request ({family})"),
        PacketKind::UnlockReply { family, .. } => format!("NKPU reply ({family})"),
        PacketKind::Dhcp6(kind) => match kind {
            1 => "SOLICIT".into(),
            2 => "ADVERTISE".into(),
            3 => "REQUEST".into(),
            7 => "REPLY".into(),
            11 => "INFORMATION-REQUEST".into(),
            12 => "RELAY-FORW".into(),
            13 => "RELAY-REPL".into(),
            other => format!("DHCPv6 type {other}"),
        },
        _ => packet.summary(),
    }
}

/// A client event as a mark: its kind, its text, and the adapter (0-based) it happened on.
fn client_mark(event: &BootEvent) -> Option<(MarkKind, String, Option<usize>)> {
    let note = |text: String| Some((MarkKind::Note, text, None));
    match event {
        BootEvent::ProtectorsFound { .. } => note("phase 1: protectors found".into()),
        BootEvent::NetworkUnlockReady { .. } => {
            note("phase 1: TPM releases key protector and SK".into())
        }
        BootEvent::NetworkUnlockSkipped { reason, .. } => {
            note(format!("phase 1: Network Unlock skipped ({reason})"))
        }
        BootEvent::Dhcp { adapter, event, .. } => match event {
            ClientEvent::Bound(lease) => Some((
                MarkKind::Note,
                format!("phase 2: bound to {}", lease.network()),
                Some(*adapter),
            )),
            ClientEvent::Failed(failure) => Some((
                MarkKind::Timeout,
                format!("DHCP fails: {failure}"),
                Some(*adapter),
            )),
            _ => None,
        },
        BootEvent::EnumerationStopped { reason, .. } => {
            Some((MarkKind::Timeout, reason.clone(), None))
        }
        BootEvent::Exchange { adapter, event, .. } => match event {
            ExchangeEvent::Sent {
                attempt, transport, ..
            } => Some((
                MarkKind::Note,
                format!("phase 3: request over {transport} (attempt {attempt})"),
                Some(*adapter),
            )),
            ExchangeEvent::Ignored { why, .. } => Some((
                MarkKind::Drop,
                format!("ignores a reply: {why}"),
                Some(*adapter),
            )),
            ExchangeEvent::TransportFailed {
                transport, failure, ..
            } => Some((
                MarkKind::Timeout,
                format!("{transport} gives up: {failure}"),
                Some(*adapter),
            )),
            ExchangeEvent::Unlocked { .. } => Some((
                MarkKind::Note,
                "phase 6: reply verifies under SK".into(),
                Some(*adapter),
            )),
        },
        BootEvent::NoUnlockOnAdapter { reason, .. } => {
            Some((MarkKind::Timeout, format!("no unlock here: {reason}"), None))
        }
        BootEvent::KeysCombined { .. } => {
            note("phase 7: CK combined with the TPM's intermediate key".into())
        }
        BootEvent::ProtectorFailed(failure) => Some((
            MarkKind::Timeout,
            format!(
                "{} fails: {}",
                failure.protector.manage_bde_name(),
                failure.reason
            ),
            None,
        )),
        BootEvent::PromptShown { prompt, .. } => note(format!("fallback: shows {prompt}")),
        BootEvent::Typed { prompt, what, .. } => note(format!("user types {what} at {prompt}")),
        BootEvent::Unlocked { protector, .. } => {
            note(if *protector == ProtectorKind::NetworkUnlock {
                "phase 8: combined key unwraps the VMK".into()
            } else {
                format!("unlocked by {}", protector.manage_bde_name())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_line_mentions_an_address_followed_by_a_separator() {
        assert!(mentions("request from 10.1.0.7: ok", "10.1.0.7"));
        assert!(mentions("[10.1.0.7] ok", "10.1.0.7"));
        assert!(mentions("(10.1.0.7)", "10.1.0.7"));
        assert!(mentions("from 10.1.0.7 to", "10.1.0.7"));
        // A longer address it is a prefix of, or the address at the very end: not named.
        assert!(!mentions("from 10.1.0.70 to", "10.1.0.7"));
        assert!(!mentions("from 10.1.0.7", "10.1.0.7"));
        assert!(!mentions("nothing here", "10.1.0.7"));
        // An occurrence overlapping an earlier one that is not followed by a separator.
        assert!(mentions("x 10.0.0.10.0.0.10 y", "10.0.0.10"));
        assert!(mentions("é 10.1.0.70 10.1.0.7:", "10.1.0.7"));
    }
}
