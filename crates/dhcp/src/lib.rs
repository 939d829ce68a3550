//! Sans-IO DHCP for nulab: the relay-aware DHCPv4 [`server`] with pools and leases, the
//! UEFI-firmware-style DHCPv4 [`client`] (DORA with exponential backoff), and the little of
//! DHCPv6 that the Network Unlock path needs ([`v6`]: Information-Request and Reply).
//!
//! ```text
//!   shell (simulator or real sockets)            core (this crate)
//!   ──────────────────────────────────           ───────────────────────────────────────
//!   datagram + receiving interface + now ──────▶ handle(now, Received)
//!   timer fired at now                   ──────▶ handle_timeout(now)
//!   send on interface, src -> dst        ◀────── poll_transmit() -> Transmit
//!   sleep until                          ◀────── poll_timeout() -> Option<Duration>
//!   log, apply the address               ◀────── poll_event()
//! ```
//!
//! Nothing here opens a socket, reads a clock or draws ambient randomness: `now` is a
//! [`Duration`](std::time::Duration) since the shell's epoch (the simulator's virtual clock
//! and a tokio `Instant` taken at start both map to it), and the client's transaction ids and
//! backoff jitter come from an injected [`rand_core::RngCore`]. Malformed input is dropped and
//! counted by reason; nothing panics on bytes from the wire.

pub mod client;
mod raw;
pub mod server;
pub mod service;
pub mod v6;

use std::net::SocketAddr;

pub use client::{AdapterFacts, Client, ClientConfig, ClientEvent, Failure, Lease};
pub use raw::LeaseOption;
pub use server::{DropReason, Pool, Server, ServerConfig, ServerCounters, ServerEvent};

/// The DHCPv4 server (and relay) port.
pub const SERVER_PORT: u16 = 67;
/// The DHCPv4 client port.
pub const CLIENT_PORT: u16 = 68;
/// The DHCPv6 client port.
pub const V6_CLIENT_PORT: u16 = 546;
/// The DHCPv6 server and relay port.
pub const V6_SERVER_PORT: u16 = 547;

/// The vendor class (DHCPv4 option 60, DHCPv6 option 16) of a Network Unlock request.
pub const NETWORK_UNLOCK_VENDOR_CLASS: &[u8] = dhcp_wire::NETWORK_UNLOCK_VENDOR_CLASS;

/// Index of one of the host's interfaces, as the shell numbers them (the simulator's adapter
/// index, the real shell's position in its interface list).
pub type Interface = usize;

/// A datagram handed to a core by its shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The interface it arrived on: a server tells subnets apart by it, and a client without
    /// an address hears broadcasts on it.
    pub interface: Interface,
    pub src: SocketAddr,
    /// As sent: 255.255.255.255, a multicast group or a unicast address.
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// A datagram a core asks its shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The interface to send it out of (a broadcast goes on that link only).
    pub interface: Interface,
    /// `0.0.0.0:68` for a client without an address.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod exchange_tests;
