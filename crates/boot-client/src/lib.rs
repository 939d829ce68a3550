//! The client side of Network Unlock, as the Windows boot manager runs it in UEFI, sans-IO.
//!
//! - [`exchange`]: one Network Unlock exchange once the adapter holds an address: the request
//!   with its pre-computed key protector, the protocol's timers, a configurable transport order
//!   (DHCPv6, DHCPv4), and the first reply whose tag verifies.

pub mod exchange;
