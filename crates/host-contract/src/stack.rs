//! The interface between a sans-IO service and the host it runs on: the one contract that both
//! shells offer, the simulator (`crates/netsim`) and the real-socket shell (`crates/realnet`)
//! with tokio.
//!
//! A [`Service`] (a DHCP server or client, the unlock provider, the boot client) never
//! touches a socket or a clock: it reacts to [`Service::on_start`], [`Service::on_datagram`] and
//! [`Service::on_timer`], and acts through the [`HostStack`] it is handed, which offers:
//!
//! | operation | simulator | real-socket shell |
//! |-----------|-----------|-------------------|
//! | [`now`](HostStack::now) | virtual clock | monotonic time since the shell started |
//! | [`adapters`](HostStack::adapters) | the host's simulated adapters | the interfaces it was given |
//! | [`bind`](HostStack::bind) | registers the UDP port on the host | a UDP socket per interface and family, `SO_BINDTODEVICE` |
//! | [`send`](HostStack::send) | a frame on the adapter's segment | `send_to` on that interface's socket |
//! | [`set_timer`](HostStack::set_timer) | an event in the queue | a deadline in the driver's timer heap |
//! | [`set_ipv4`](HostStack::set_ipv4) | changes the adapter's address | `ip address replace` on the interface, before returning |
//! | [`rng`](HostStack::rng) | the run's seeded ChaCha20 | a ChaCha20 seeded from the OS (or a given seed) |
//!
//! A received [`Datagram`] says which adapter it arrived on, so a server with several adapters
//! can tell subnets apart and a client without an address can still receive a reply broadcast
//! to 255.255.255.255.
//!
//! Ports are per host and shared by IPv4 and IPv6 (a dual-stack socket), as one listening
//! socket per service on a real machine.
//!
//! # Ordering guarantees
//!
//! Callbacks are serial by construction (each takes `&mut self` and the stack): nothing happens
//! to a service between two calls but what its own calls asked for. Beyond that, a service may
//! rely on these, and on nothing else, in both shells (each shell has a test per guarantee,
//! named after it: `netsim`'s `tests/sim/contract.rs`, `realnet`'s `tests/contract.rs`):
//!
//! 1. **An address change is in effect for every datagram sent after it.** Once
//!    [`HostStack::set_ipv4`] has returned `Ok`, [`HostStack::adapters`] shows the new address
//!    and every datagram the service sends afterwards (in the same callback or a later one)
//!    leaves with the new address as its IPv4 source when it is sent from that address, and
//!    unicast to the new address reaches the service. Datagrams sent before the call are not
//!    held back for it. A service that learns a lease and wants to use it must therefore
//!    call `set_ipv4` *before* sending what the lease enables.
//! 2. **Sends leave in call order.** Two datagrams sent out of one adapter leave it in the
//!    order of the [`HostStack::send`] calls (the network may still reorder, lose or duplicate
//!    them: UDP promises nothing end to end).
//! 3. **Timers fire in deadline order, never early.** [`Service::on_timer`] is called at or
//!    after the deadline given to [`HostStack::set_timer`], never before it; timers with
//!    different deadlines fire in deadline order; timers with the same deadline fire in the
//!    order they were set. A deadline already past fires at once, after the current callback.
//! 4. **Time does not go backwards.** [`HostStack::now`] never decreases, and inside one
//!    callback it does not change.
//! 5. **A link that goes down does not hold datagrams.** A datagram sent before a link goes
//!    down is either delivered or lost, never delayed past the link coming back; one sent
//!    while the link is down is lost (not an error: [`HostStack::send`] returns `Ok`, as UDP
//!    does).
//! 6. **Nothing arrives on an unbound port.** Datagrams are delivered only to a port the
//!    service has bound with [`HostStack::bind`], from the moment `bind` returns until
//!    [`HostStack::unbind`].

use std::net::{Ipv6Addr, SocketAddr};

use bytes::Bytes;
use ipnet::Ipv4Net;
use rand_core::CryptoRngCore;

use crate::{HostTime, MacAddr};

/// Position of an adapter in its host's [`HostStack::adapters`] list.
pub type AdapterIndex = usize;

/// What a service can see of one of its host's network adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    /// The adapter's name on its host (`eth0`, `lom`).
    pub name: String,
    pub mac: MacAddr,
    /// The IPv4 address and prefix, if it has one (static, or leased and set by a DHCP client).
    pub ipv4: Option<Ipv4Net>,
    /// The fe80::/64 address (in the simulator, derived from the MAC by modified EUI-64);
    /// `::` when the adapter has no IPv6 (a real interface with IPv6 disabled).
    pub ipv6_link_local: Ipv6Addr,
    /// Whether the cable is plugged in (and the switch port up).
    pub link_up: bool,
    /// Whether the adapter is configured to obtain its address by DHCP (false for, say, a
    /// lights-out management port with a static address).
    pub dhcp_enabled: bool,
    /// Whether the UEFI firmware has a network driver for this adapter (the boot client can
    /// only use adapters that have one).
    pub uefi_driver: bool,
}

/// A UDP datagram delivered to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The adapter it arrived on.
    pub adapter: AdapterIndex,
    pub src: SocketAddr,
    /// As sent: a broadcast or multicast destination stays one, so a service can tell.
    pub dst: SocketAddr,
    /// Shared, not copied, between the receivers of a broadcast.
    pub payload: Bytes,
}

/// Why a service's request to its stack was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    #[error("the host has no adapter {0}")]
    NoSuchAdapter(AdapterIndex),
    #[error("UDP port {0} is already bound by another service on this host")]
    PortInUse(u16),
    #[error("source {src} and destination {dst} are not of the same address family")]
    FamilyMismatch { src: SocketAddr, dst: SocketAddr },
    #[error("the payload of {0} bytes does not fit in one UDP datagram")]
    TooLarge(usize),
    /// The host could not do it (a real shell that cannot open a socket says why).
    #[error("{0}")]
    Unavailable(String),
}

/// The largest UDP payload (65,535 minus the IPv4 and UDP headers).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// What every shell refuses in [`HostStack::send`], whatever it sends on: an adapter the host
/// does not have (of `adapters`), a source and destination of different families, a payload
/// larger than one UDP datagram.
pub fn check_send(
    adapters: usize,
    adapter: AdapterIndex,
    src: SocketAddr,
    dst: SocketAddr,
    payload_len: usize,
) -> Result<(), StackError> {
    if adapter >= adapters {
        return Err(StackError::NoSuchAdapter(adapter));
    }
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(StackError::FamilyMismatch { src, dst });
    }
    if payload_len > MAX_UDP_PAYLOAD {
        return Err(StackError::TooLarge(payload_len));
    }
    Ok(())
}

/// The host's network stack as a service sees it; see the module documentation for how each
/// shell implements it.
pub trait HostStack {
    /// The current time.
    fn now(&self) -> HostTime;
    /// The host's name (for log lines).
    fn host_name(&self) -> &str;
    /// The host's adapters, in a fixed order; [`AdapterIndex`] indexes this slice.
    fn adapters(&self) -> &[AdapterInfo];
    /// Receive UDP datagrams sent to `port` on any of the host's adapters (unicast to one of
    /// its addresses, broadcast, or multicast).
    fn bind(&mut self, port: u16) -> Result<(), StackError>;
    /// Stop receiving on `port` (nothing happens if this service did not bind it).
    fn unbind(&mut self, port: u16);
    /// Send `payload` out of `adapter` from `src` to `dst`. `src` may be `0.0.0.0` (a DHCP
    /// client without an address). `dst` may be unicast, `255.255.255.255`, a subnet's
    /// broadcast address or a link-local multicast group (`ff02::1:2`). Delivery is not
    /// guaranteed, as with UDP: a lost datagram is not an error.
    fn send(
        &mut self,
        adapter: AdapterIndex,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    ) -> Result<(), StackError>;
    /// Call [`Service::on_timer`] with `token` at `at` (or at once, after the current callback,
    /// if `at` has passed), in deadline order (guarantee 3 above). Timers cannot be cancelled: a service ignores tokens it no longer expects (put a generation
    /// number in the token).
    fn set_timer(&mut self, at: HostTime, token: u64);
    /// Set or clear the adapter's IPv4 address (a DHCP client applying or losing its lease).
    /// In effect, on return, for every datagram sent afterwards (guarantee 1 above).
    fn set_ipv4(&mut self, adapter: AdapterIndex, addr: Option<Ipv4Net>) -> Result<(), StackError>;
    /// The source of every random choice the service makes (transaction ids, nonces, keys).
    fn rng(&mut self) -> &mut dyn CryptoRngCore;
}

/// A sans-IO application running on a host. A crash or a stop drops the value (its state is
/// lost); a restart builds a fresh one and calls [`Service::on_start`] again.
pub trait Service {
    /// The service starts (host boot, restart or service start): bind ports, set timers, send.
    fn on_start(&mut self, stack: &mut dyn HostStack);
    /// A datagram arrived on a port this service bound.
    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram);
    /// A timer set with [`HostStack::set_timer`] fired.
    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64);
}

#[cfg(test)]
mod send_checks {
    use super::*;

    #[test]
    fn every_shell_refuses_the_same_sends() {
        let v4: SocketAddr = "10.0.4.1:68".parse().expect("v4");
        let v6: SocketAddr = "[fe80::1]:546".parse().expect("v6");
        assert_eq!(check_send(2, 1, v4, v4, MAX_UDP_PAYLOAD), Ok(()));
        assert_eq!(
            check_send(2, 2, v4, v4, 10),
            Err(StackError::NoSuchAdapter(2))
        );
        assert_eq!(
            check_send(2, 0, v4, v6, 10),
            Err(StackError::FamilyMismatch { src: v4, dst: v6 })
        );
        assert_eq!(
            check_send(2, 0, v6, v6, MAX_UDP_PAYLOAD + 1),
            Err(StackError::TooLarge(MAX_UDP_PAYLOAD + 1))
        );
    }
}
