//! The real-socket shell: nulab's sans-IO DHCP cores ([`dhcp::Client`], [`dhcp::Server`]) on
//! real Linux interfaces, with tokio and socket2. The simulator is the other shell; the cores
//! cannot tell them apart.
//!
//! Each interface gets its own UDP socket bound to `0.0.0.0:port` and to the device
//! (`SO_BINDTODEVICE`), with `SO_BROADCAST` and `SO_REUSEADDR`: that is what lets a client
//! without an address send to 255.255.255.255 out of the right interface (with no address and
//! no default route the kernel has no other way to pick one) and hear the broadcast reply,
//! and it is how the shell knows which interface a datagram arrived on (the core needs it to
//! pick a pool). The loop is the one every sans-IO shell runs: send what the core wants sent,
//! wait for a datagram or the core's next timeout, feed it in, repeat.
//!
//! `now` for the cores is the time since the shell started (tokio's monotonic clock); the
//! randomness is a ChaCha20 seeded from the OS, or from `--seed` to replay an exchange.
//!
//! Binaries: `nulab-dhcp-client` (one DORA on one interface, prints the lease) and
//! `nulab-dhcp-server` (serves a pool on one or more interfaces for a while).
//!
//! [`wds`]: the Network Unlock provider on real interfaces (`nulab server`), with its receive
//! loop, its bounded pool of decrypt workers (one per core) and SIGHUP reload.
//! [`boot`]: one boot of a BitLocker volume over real interfaces (`nulab client`), driving
//! `boot_client::boot::Boot`.

pub mod boot;
mod drive;
pub mod driver;
mod interface;
pub mod wds;

pub use drive::{ServerReport, run_client, run_server};
pub use driver::{AddressMode, Driver, DriverConfig, ShellNote};
pub use interface::{InterfaceSocket, adapter_facts};

/// Why the shell could not run a core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    #[error("interface {interface}: {what}: {source}")]
    Interface {
        interface: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the DHCP client gave up: {0}")]
    Dhcp(#[from] dhcp::Failure),
    #[error("no outcome within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for signals: {0}")]
    Signal(std::io::Error),
    #[error("certificate store: {0}")]
    Certificates(String),
    #[error("no socket could be opened on {0}")]
    NoSocket(String),
}
