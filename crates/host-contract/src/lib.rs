//! The host contract: what a sans-IO nulab service (the DHCP server and client, the Network
//! Unlock provider, the boot client) may ask of the host it runs on, and what it may rely on.
//! Two shells implement it: the deterministic simulator (`netsim`) for simulated hosts and the
//! real-socket shell (`realnet`) for Linux interfaces. A service written against this crate runs
//! unchanged in both.
//!
//! - [`Service`]: the three callbacks a host calls (start, datagram, timer).
//! - [`HostStack`]: the host's operations (now, adapters, bind, send, timers, set an address,
//!   randomness), with the ordering guarantees a service may rely on listed in [`stack`].
//! - [`Datagram`], [`AdapterInfo`], [`StackError`]: what flows across the contract.
//! - [`queue`]: the cores' output queues, which give their buffers back once drained.
//! - [`rng::ParkedChaCha20`]: a seeded ChaCha20 stream kept as its position between draws.
//! - [`HostTime`]: a host's clock (nanoseconds since the run or the shell started) and
//!   [`MacAddr`]: an adapter's link-layer address.
//!
//! This crate has no tokio, no simulator and no thread: it is types and traits only.

mod mac;
pub mod queue;
pub mod rng;
pub mod stack;
mod time;

pub use mac::{MacAddr, MacParseError};
pub use stack::{
    AdapterIndex, AdapterInfo, Datagram, HostStack, MAX_UDP_PAYLOAD, Service, StackError,
    check_send,
};
pub use time::HostTime;

/// Re-exported so services and both shells name the same payload type.
pub use bytes::Bytes;
pub use ipnet::{Ipv4Net, Ipv6Net};
