//! One Network Unlock exchange, sans-IO: from "the adapter holds an address" to "CK is back" or
//! "every transport failed, and why".
//!
//! Timers (PROTOCOL.md, "Client timers and selection"): DHCPv4 sends once and retransmits once,
//! 2 s apart, then waits 2 s more; DHCPv6 follows RFC 8415 §15 with IRT 2 s, MRC 2, MRT 4 s and
//! MRD 4 s (the ±10% randomisation comes from the injected RNG). When a transport's attempts run
//! out it has failed and the next transport in the configured order is tried; when the last one
//! fails, the exchange has failed and BitLocker moves to the next protector.
//!
//! During the wait the client may hear several replies; it keeps the first whose tag verifies
//! under SK and ignores the rest (another client's reply, a forgery, an ordinary DHCP packet).
//!
//! The driver calls [`UnlockExchange::poll_transmit`] until it returns `None`, sleeps until
//! [`UnlockExchange::poll_timeout`], and feeds [`UnlockExchange::handle_datagram`] and
//! [`UnlockExchange::handle_timeout`]; [`UnlockExchange::outcome`] says when it is over.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use nkpu::{ClientKey, KeyProtector, Message, SessionKey, Thumbprint, v4, v6};

/// A transport the request can travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    DhcpV4,
    DhcpV6,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::DhcpV4 => "DHCPv4",
            Transport::DhcpV6 => "DHCPv6",
        })
    }
}

/// The protocol's timers; the defaults are the ones PROTOCOL.md gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// DHCPv4: time between the request and its one retransmission, and after it.
    pub v4_interval: Duration,
    /// DHCPv4: how many times the request is sent in all.
    pub v4_sends: u32,
    /// DHCPv6 initial retransmission time (IRT).
    pub v6_irt: Duration,
    /// DHCPv6 maximum retransmission count (MRC).
    pub v6_mrc: u32,
    /// DHCPv6 maximum retransmission time (MRT).
    pub v6_mrt: Duration,
    /// DHCPv6 maximum retransmission duration (MRD).
    pub v6_mrd: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            v4_interval: Duration::from_secs(2),
            v4_sends: 2,
            v6_irt: Duration::from_secs(2),
            v6_mrc: 2,
            v6_mrt: Duration::from_secs(4),
            v6_mrd: Duration::from_secs(4),
        }
    }
}

/// What the client knows of its IPv4 lease (phase 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Lease {
    pub client_mac: [u8; 6],
    pub address: Ipv4Addr,
    pub dhcp_server: Ipv4Addr,
    /// The lease's options, which the request repeats.
    pub options: Vec<v4::LeaseOption>,
}

/// What the client needs for DHCPv6: its link-local address and DUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Link {
    pub link_local: Ipv6Addr,
    pub client_duid: Vec<u8>,
}

/// The secrets of the exchange: the pre-computed key protector and the session key inside it.
#[derive(Clone)]
pub struct Secrets {
    pub thumbprint: Thumbprint,
    pub key_protector: KeyProtector,
    pub session_key: SessionKey,
}

/// A datagram the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why one transport gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportFailure {
    /// The adapter has no address for this family (no lease, no link-local).
    NotAvailable,
    /// Every attempt went unanswered (or was answered only by replies that did not verify).
    NoValidReply { sends: u32, ignored_replies: u32 },
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportFailure::NotAvailable => f.write_str("no address for this transport"),
            TransportFailure::NoValidReply {
                sends,
                ignored_replies: 0,
            } => write!(f, "no reply to {sends} request(s)"),
            TransportFailure::NoValidReply {
                sends,
                ignored_replies,
            } => write!(
                f,
                "no valid reply to {sends} request(s) ({ignored_replies} reply(ies) ignored)"
            ),
        }
    }
}

/// How the exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// CK came back on this transport.
    Unlocked {
        transport: Transport,
        client_key: ClientKey,
        at: Duration,
    },
    /// Every transport failed, in the order tried.
    Failed(Vec<(Transport, TransportFailure)>),
}

/// Something worth a line in a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeEvent {
    Sent {
        at: Duration,
        transport: Transport,
        attempt: u32,
    },
    /// A datagram that was not the reply we wait for, and why.
    Ignored {
        at: Duration,
        /// `Box<str>`, not `String`: the largest variant sets the size of every event, and a
        /// storm keeps them all.
        why: Box<str>,
    },
    TransportFailed {
        at: Duration,
        transport: Transport,
        failure: TransportFailure,
    },
    Unlocked {
        at: Duration,
        transport: Transport,
    },
}

struct Attempt {
    transport: Transport,
    sends: u32,
    ignored: u32,
    started: Duration,
    /// When to retransmit or give up.
    deadline: Duration,
    /// The last retransmission timeout (DHCPv6).
    rt: Duration,
    xid: u32,
}

/// One Network Unlock exchange.
pub struct UnlockExchange {
    order: Vec<Transport>,
    next_transport: usize,
    timers: Timers,
    v4: Option<V4Lease>,
    v6: Option<V6Link>,
    secrets: Secrets,
    rng: Box<dyn rand_core::RngCore + Send>,
    current: Option<Attempt>,
    failures: Vec<(Transport, TransportFailure)>,
    outcome: Option<ExchangeOutcome>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ExchangeEvent>,
}

impl UnlockExchange {
    /// An exchange that starts at `now` with the first transport of `order`.
    pub fn start(
        now: Duration,
        order: Vec<Transport>,
        timers: Timers,
        v4: Option<V4Lease>,
        v6: Option<V6Link>,
        secrets: Secrets,
        rng: Box<dyn rand_core::RngCore + Send>,
    ) -> Self {
        let mut exchange = Self {
            order,
            next_transport: 0,
            timers,
            v4,
            v6,
            secrets,
            rng,
            current: None,
            failures: Vec::new(),
            outcome: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        exchange.next_attempt(now);
        exchange
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        host_contract::queue::pop_releasing(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<ExchangeEvent> {
        host_contract::queue::pop_releasing(&mut self.events)
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.current.as_ref().map(|a| a.deadline)
    }

    pub fn outcome(&self) -> Option<&ExchangeOutcome> {
        self.outcome.as_ref()
    }

    pub fn handle_timeout(&mut self, now: Duration) {
        let Some(attempt) = &self.current else {
            return;
        };
        if now < attempt.deadline {
            return;
        }
        let retransmit = match attempt.transport {
            Transport::DhcpV4 => attempt.sends < self.timers.v4_sends,
            Transport::DhcpV6 => {
                attempt.sends <= self.timers.v6_mrc && now < attempt.started + self.timers.v6_mrd
            }
        };
        if retransmit {
            self.send(now);
        } else {
            self.fail_current(now);
        }
    }

    /// A datagram that arrived on the client's port (68 or 546). Whether the exchange took it
    /// (an event or its outcome); false for ordinary DHCP traffic, dropped unseen.
    pub fn handle_datagram(&mut self, now: Duration, payload: &[u8]) -> bool {
        let Some(attempt) = &mut self.current else {
            return false;
        };
        let decoded = match attempt.transport {
            Transport::DhcpV4 => v4::decode(payload),
            Transport::DhcpV6 => v6::decode(payload),
        };
        let reply = match decoded {
            Ok(Message::V4Reply(r)) if r.xid == attempt.xid => r.reply,
            Ok(Message::V6Reply(r)) if xid24(r.xid) == attempt.xid & 0x00ff_ffff => r.reply,
            Ok(Message::V4Reply(_) | Message::V6Reply(_)) => {
                self.ignore(now, "a Network Unlock reply for another transaction".into());
                return true;
            }
            Ok(_) => {
                self.ignore(now, "a Network Unlock request, not a reply".into());
                return true;
            }
            Err(err) if err.is_not_network_unlock() => {
                // Ordinary DHCP traffic on the segment is harmless and not worth counting.
                return false;
            }
            Err(err) => {
                self.ignore(now, format!("malformed: {err}"));
                return true;
            }
        };
        match reply.open(&self.secrets.session_key) {
            Ok(client_key) => {
                let transport = attempt.transport;
                self.current = None;
                self.events
                    .push_back(ExchangeEvent::Unlocked { at: now, transport });
                self.outcome = Some(ExchangeOutcome::Unlocked {
                    transport,
                    client_key,
                    at: now,
                });
            }
            Err(err) => self.ignore(now, err.to_string()),
        }
        true
    }

    fn ignore(&mut self, now: Duration, why: String) {
        if let Some(attempt) = &mut self.current {
            attempt.ignored += 1;
        }
        self.events.push_back(ExchangeEvent::Ignored {
            at: now,
            why: why.into(),
        });
    }

    fn next_attempt(&mut self, now: Duration) {
        while let Some(&transport) = self.order.get(self.next_transport) {
            self.next_transport += 1;
            let available = match transport {
                Transport::DhcpV4 => self.v4.is_some(),
                Transport::DhcpV6 => self.v6.is_some(),
            };
            if !available {
                self.record_failure(now, transport, TransportFailure::NotAvailable);
                continue;
            }
            self.current = Some(Attempt {
                transport,
                sends: 0,
                ignored: 0,
                started: now,
                deadline: now,
                rt: Duration::ZERO,
                xid: self.rng.next_u32(),
            });
            self.send(now);
            return;
        }
        self.current = None;
        self.outcome = Some(ExchangeOutcome::Failed(self.failures.clone()));
    }

    fn record_failure(&mut self, now: Duration, transport: Transport, failure: TransportFailure) {
        self.events.push_back(ExchangeEvent::TransportFailed {
            at: now,
            transport,
            failure: failure.clone(),
        });
        self.failures.push((transport, failure));
    }

    fn fail_current(&mut self, now: Duration) {
        if let Some(attempt) = self.current.take() {
            self.record_failure(
                now,
                attempt.transport,
                TransportFailure::NoValidReply {
                    sends: attempt.sends,
                    ignored_replies: attempt.ignored,
                },
            );
        }
        self.next_attempt(now);
    }

    /// Sends (or resends) the current attempt's request and sets its next deadline.
    fn send(&mut self, now: Duration) {
        let jitter = self.jitter();
        let Some(attempt) = &mut self.current else {
            return;
        };
        attempt.sends += 1;
        let transmit = match attempt.transport {
            Transport::DhcpV4 => {
                let Some(lease) = &self.v4 else { return };
                attempt.deadline = now + self.timers.v4_interval;
                let mut request = v4::Request::after_lease(
                    attempt.xid,
                    lease.client_mac,
                    lease.address,
                    lease.dhcp_server,
                    lease.options.clone(),
                    self.secrets.thumbprint,
                    self.secrets.key_protector.clone(),
                );
                request.secs = u16::try_from((now - attempt.started).as_secs()).unwrap_or(u16::MAX);
                Transmit {
                    transport: Transport::DhcpV4,
                    source: SocketAddrV4::new(lease.address, 68).into(),
                    destination: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67).into(),
                    payload: request.encode(),
                }
            }
            Transport::DhcpV6 => {
                let Some(link) = &self.v6 else { return };
                // RFC 8415 §15: RT = IRT ± 10% first, then 2·RT ± 10%, capped at MRT ± 10%,
                // and never past MRD from the first send.
                let rt = if attempt.sends == 1 {
                    scale(self.timers.v6_irt, jitter)
                } else {
                    let doubled = scale(attempt.rt * 2, jitter);
                    if doubled > self.timers.v6_mrt {
                        scale(self.timers.v6_mrt, jitter)
                    } else {
                        doubled
                    }
                };
                attempt.rt = rt;
                attempt.deadline = (now + rt).min(attempt.started + self.timers.v6_mrd);
                let elapsed_cs = (now - attempt.started).as_millis() / 10;
                let request = v6::Request {
                    xid: xid24_bytes(attempt.xid),
                    client_id: link.client_duid.clone(),
                    elapsed: u16::try_from(elapsed_cs).unwrap_or(u16::MAX),
                    thumbprint: self.secrets.thumbprint,
                    key_protector: self.secrets.key_protector.clone(),
                };
                Transmit {
                    transport: Transport::DhcpV6,
                    source: SocketAddrV6::new(link.link_local, 546, 0, 0).into(),
                    destination: SocketAddrV6::new(
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2),
                        547,
                        0,
                        0,
                    )
                    .into(),
                    payload: request.encode(),
                }
            }
        };
        self.events.push_back(ExchangeEvent::Sent {
            at: now,
            transport: attempt.transport,
            attempt: attempt.sends,
        });
        self.transmits.push_back(transmit);
    }

    /// RAND in [-0.1, +0.1] as thousandths: -100..=100.
    fn jitter(&mut self) -> i64 {
        i64::from(self.rng.next_u32() % 201) - 100
    }
}

/// `d · (1 + jitter/1000)`.
fn scale(d: Duration, jitter_thousandths: i64) -> Duration {
    let nanos = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    let scaled = nanos + nanos * i128::from(jitter_thousandths) / 1000;
    Duration::from_nanos(u64::try_from(scaled.max(0)).unwrap_or(u64::MAX))
}

fn xid24(bytes: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

fn xid24_bytes(xid: u32) -> [u8; 3] {
    let [_, a, b, c] = xid.to_be_bytes();
    [a, b, c]
}
