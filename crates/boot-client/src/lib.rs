//! The client side of Network Unlock, as the Windows boot manager runs it in UEFI, sans-IO.
//!
//! - [`boot`]: the whole boot: protectors, firmware prerequisites, adapter enumeration with
//!   the UEFI DHCP client, the exchange, the key combination and the fallbacks to TPM+PIN and
//!   the recovery password, with an outcome that says why each protector failed.
//! - [`service`]: the boot as a simulator service, with the machine's lasting parts (volume,
//!   TPM) shared with the scenario.
//! - [`exchange`]: one Network Unlock exchange once the adapter holds an address: the request
//!   with its pre-computed key protector, the protocol's timers, a configurable transport order
//!   (DHCPv6, DHCPv4), and the first reply whose tag verifies.
//! - [`narration`]: the boot's events told as sentences with the seed's phases, the one
//!   wording of the simulator's transcript and of `nulab client`.

pub mod boot;
pub mod exchange;
pub mod narration;
pub mod service;
