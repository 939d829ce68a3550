//! nulab's deterministic network simulator: a virtual clock, one seed, L2 segments carrying
//! IPv4 and IPv6 subnets, hosts with several adapters, routers with DHCP relays, UDP broadcast
//! and unicast, faults, a readable trace and a pcap per segment.
//!
//! ```text
//!   segment "lan" 10.0.1.0/24                      segment "servers" 10.0.0.0/24
//!   ┌──────────────┐   broadcast    ┌────────────────────┐   unicast    ┌─────────────┐
//!   │ client-1     │ ─────────────▶ │ router-1           │ ───────────▶ │ dhcp-server │
//!   │  eth0 (DHCP) │ ◀───────────── │  relay, giaddr     │ ◀─────────── │  eth0       │
//!   │  lom (static)│                │  helpers: [server] │              └─────────────┘
//!   └──────────────┘                └────────────────────┘
//! ```
//!
//! Hosts run sans-IO [`Service`]s that act through a [`HostStack`]: the `host-contract` crate's
//! contract, which the real-socket shell implements too, so a DHCP server or the unlock
//! provider runs unchanged in both. The simulator keeps every ordering guarantee the contract
//! states (`tests/sim/contract.rs` checks each).
//! A [`Simulation`] is one event loop: the clock jumps to the next event, events at the same
//! instant run in scheduling order, and every random choice (loss, jitter, corruption, the
//! services' own randomness) comes from one ChaCha20 seeded by a `u64`. The same seed gives the
//! same [`TraceEvent`]s and the same pcap bytes.
//!
//! ```
//! use netsim::{AdapterConfig, Datagram, HostStack, SegmentConfig, Service, SimTime, Simulation};
//! use std::net::SocketAddr;
//!
//! struct Shout;
//! impl Service for Shout {
//!     fn on_start(&mut self, stack: &mut dyn HostStack) {
//!         let src: SocketAddr = "0.0.0.0:9000".parse().expect("literal");
//!         let dst: SocketAddr = "255.255.255.255:9000".parse().expect("literal");
//!         stack.send(0, src, dst, bytes::Bytes::from_static(b"hello")).expect("adapter 0");
//!     }
//!     fn on_datagram(&mut self, _: &mut dyn HostStack, _: Datagram) {}
//!     fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
//! }
//! struct Listen;
//! impl Service for Listen {
//!     fn on_start(&mut self, stack: &mut dyn HostStack) { stack.bind(9000).expect("free port"); }
//!     fn on_datagram(&mut self, _: &mut dyn HostStack, _: Datagram) {}
//!     fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
//! }
//!
//! let mut sim = Simulation::new(42);
//! sim.enable_trace();
//! let lan = sim.add_segment("lan", SegmentConfig::default().ipv4("10.0.0.0/24".parse()?));
//! let a = sim.add_host("a");
//! let b = sim.add_host("b");
//! sim.add_adapter(a, "eth0", lan, AdapterConfig::dhcp())?;
//! sim.add_adapter(b, "eth0", lan, AdapterConfig::static_ipv4("10.0.0.2/24".parse()?))?;
//! sim.add_service(b, "listen", || Box::new(Listen))?;
//! sim.add_service(a, "shout", || Box::new(Shout))?;
//! sim.run_until(SimTime::from_secs(1));
//! assert_eq!(sim.stats().delivered, 1);
//! assert!(sim.trace_text().contains("b/eth0 received 0.0.0.0:9000 -> 255.255.255.255:9000 UDP, 5 bytes"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`stack`] (the service contract, from the `host-contract` crate), `topology` (segments, hosts, adapters, routers),
//! `sim` (the event loop and delivery), `queue` (its events in order: lanes for frames
//! arriving a fixed latency after they were sent, a heap for the rest), `router` (forwarding
//! and the DHCP relay), [`fault`]
//! (the rule chain), [`trace`] (events and their text), [`wire`] (Ethernet/IP/UDP framing and
//! pcap), [`bootp`] (the DHCPv4 header fields a relay rewrites).
//!
//! Memory: an idle host costs its `Host` struct (`size_of` checked in a unit test), its name,
//! one slot per service (two boxes) and a few port entries, far under the 4 KiB target; the
//! `broadcast` bench prints the measured figure.

pub mod bootp;
pub mod fault;
mod queue;
mod router;
mod sim;
mod topology;
pub mod trace;
pub mod wire;

pub use fault::{FaultEffect, FaultRule, Probability};
/// The contract's clock, which the simulator drives: simulated time since the run started.
pub use host_contract::HostTime as SimTime;
/// The contract's module path, kept for `netsim::stack::...` users.
pub use host_contract::stack;
/// The host contract, implemented here for simulated hosts (re-exported so that services and
/// the scenario runner keep naming `netsim::Service`, `netsim::HostStack`, ...).
pub use host_contract::{
    AdapterIndex, AdapterInfo, Datagram, HostStack, MacAddr, MacParseError, Service, StackError,
};
pub use sim::{Simulation, Stats};
pub use topology::{
    AdapterConfig, AdapterId, HostId, InterfaceId, NodeId, RouterId, SegmentConfig, SegmentId,
    TopologyError,
};
pub use trace::{DropReason, FaultAction, TraceEvent, TraceKind};
pub use wire::{CaptureError, CapturedFrame, PcapStream};

/// Re-exported so services and the real-socket shell name the same types.
pub use host_contract::{Bytes, Ipv4Net, Ipv6Net};
