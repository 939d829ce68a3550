//! The real-socket shell: the host contract (`host_contract`) on real Linux interfaces, with
//! tokio and socket2. The simulator is the other shell; a service cannot tell them apart.
//!
//! [`driver`]: the one [`Driver`], which runs any `host_contract::Service` on a set of
//! interfaces. Each interface gets its own UDP socket per family, bound to `0.0.0.0:port` (or
//! `[::]:port`) and to the device (`SO_BINDTODEVICE`), with `SO_BROADCAST` and `SO_REUSEADDR`:
//! that is what lets a client without an address send to 255.255.255.255 out of the right
//! interface (with no address and no default route the kernel has no other way to pick one)
//! and hear the broadcast reply, and it is how the driver knows which interface a datagram
//! arrived on (a server needs it to pick a pool). An address a service sets is put on the
//! interface before any datagram it sends afterwards leaves.
//!
//! `now` for a service is the time since the driver started (tokio's monotonic clock); the
//! randomness is a ChaCha20 seeded from the OS, or from a seed to replay an exchange.
//!
//! Each program is the driver plus a service the simulator runs too:
//! [`run_client`] (`nulab-dhcp-client`: one DORA on one interface, prints the lease),
//! [`run_server`] (`nulab-dhcp-server`: serves a pool on one or more interfaces for a while),
//! [`wds`] (`nulab server`: the Network Unlock provider, its certificate files and policy file,
//! the one decrypt pool and SIGHUP reload) and [`boot`] (`nulab client`: one boot of a
//! BitLocker volume, driving `boot_client::boot::Boot`).

pub mod boot;
pub mod delay;
mod drive;
pub mod driver;
mod interface;
pub mod output;
pub mod wds;

pub use drive::{ServerReport, run_client, run_server, run_server_late};
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
    /// A socket could not be bound to its address; "Address already in use" names it.
    #[error(
        "interface {interface}: cannot bind UDP {address}: {}",
        bind_reason(source)
    )]
    Bind {
        interface: String,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a bind failed, with what to do when another program holds the address.
fn bind_reason(source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "{source} (another DHCP server or WDS provider holds it on this host: stop it first)"
        )
    } else {
        source.to_string()
    }
}
