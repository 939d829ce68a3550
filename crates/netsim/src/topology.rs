//! The things a simulated network is made of: segments (L2 broadcast domains carrying IPv4 and
//! IPv6 subnets), hosts with several adapters, routers with an interface on several segments,
//! and the identifiers a scenario uses to name them.
//!
//! Everything here is plain data held in `Vec`s indexed by id, so iteration order is the order
//! of creation: deterministic, and cheap to walk on every broadcast.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::stack::AdapterInfo;
use crate::wire::CapturedFrame;
use crate::{MacAddr, Service, SimTime};

/// A segment (L2 broadcast domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub(crate) u32);

/// A host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub(crate) u32);

/// A router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterId(pub(crate) u32);

/// One adapter of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdapterId {
    pub host: HostId,
    pub index: usize,
}

/// One interface of one router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceId {
    pub router: RouterId,
    pub index: usize,
}

/// Anything that sends and receives frames: the scope of a fault rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    Host(HostId),
    Router(RouterId),
}

impl From<HostId> for NodeId {
    fn from(h: HostId) -> NodeId {
        NodeId::Host(h)
    }
}

impl From<RouterId> for NodeId {
    fn from(r: RouterId) -> NodeId {
        NodeId::Router(r)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {}", self.0)
    }
}

/// Why the topology refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("no such host (id {0})")]
    NoSuchHost(u32),
    #[error("no such segment (id {0})")]
    NoSuchSegment(u32),
    #[error("no such router (id {0})")]
    NoSuchRouter(u32),
    #[error("host {host} has no adapter {index}")]
    NoSuchAdapter { host: String, index: usize },
    #[error("router {router} has no interface {index}")]
    NoSuchInterface { router: String, index: usize },
    #[error("host {host} has no service named {service}")]
    NoSuchService { host: String, service: String },
    #[error("host {host} already has a service named {service}")]
    DuplicateService { host: String, service: String },
}

/// How a segment is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
    /// Time from a frame leaving the sender to reaching every receiver (switch and wire).
    pub latency: Duration,
}

impl Default for SegmentConfig {
    /// No subnets, 50 µs of latency (a switched LAN).
    fn default() -> Self {
        SegmentConfig {
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            latency: Duration::from_micros(50),
        }
    }
}

impl SegmentConfig {
    /// Adds an IPv4 subnet carried on the segment.
    pub fn ipv4(mut self, net: Ipv4Net) -> Self {
        self.ipv4.push(net.trunc());
        self
    }

    /// Adds an IPv6 subnet carried on the segment.
    pub fn ipv6(mut self, net: Ipv6Net) -> Self {
        self.ipv6.push(net.trunc());
        self
    }

    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

/// How an adapter is set up. The default: DHCP-enabled, link up, UEFI driver present, no
/// address yet, MAC chosen by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterConfig {
    pub mac: Option<MacAddr>,
    /// A static address (kept across crashes; a leased address is not).
    pub ipv4: Option<Ipv4Net>,
    pub dhcp_enabled: bool,
    pub uefi_driver: bool,
    pub link_up: bool,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            mac: None,
            ipv4: None,
            dhcp_enabled: true,
            uefi_driver: true,
            link_up: true,
        }
    }
}

impl AdapterConfig {
    /// An adapter that obtains its address by DHCP.
    pub fn dhcp() -> Self {
        AdapterConfig::default()
    }

    /// An adapter with a static address, not configured for DHCP.
    pub fn static_ipv4(addr: Ipv4Net) -> Self {
        AdapterConfig {
            ipv4: Some(addr),
            dhcp_enabled: false,
            ..AdapterConfig::default()
        }
    }

    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    pub fn uefi_driver(mut self, present: bool) -> Self {
        self.uefi_driver = present;
        self
    }

    pub fn link_up(mut self, up: bool) -> Self {
        self.link_up = up;
        self
    }

    pub fn dhcp_enabled(mut self, enabled: bool) -> Self {
        self.dhcp_enabled = enabled;
        self
    }
}

/// Where a frame enters or leaves a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attachment {
    Host { host: u32, adapter: u32 },
    Router { router: u32, iface: u32 },
}

/// Where a segment's capture goes.
pub(crate) enum Capture {
    /// Kept in memory, for [`crate::Simulation::captured`].
    Frames(Vec<CapturedFrame>),
    /// Written as a pcap stream as the frames cross the segment.
    Stream(crate::wire::PcapStream),
}

pub(crate) struct Segment {
    pub name: Arc<str>,
    pub config: SegmentConfig,
    pub members: Vec<Attachment>,
    /// Frames seen on the segment, when it is being captured.
    pub capture: Option<Capture>,
    pub next_ip_id: u16,
}

impl Segment {
    /// The subnet whose directed broadcast address `dst` is, if any.
    pub fn directed_broadcast(&self, dst: Ipv4Addr) -> Option<Ipv4Net> {
        self.config
            .ipv4
            .iter()
            .copied()
            .find(|net| net.prefix_len() < 31 && net.broadcast() == dst)
    }

    pub fn carries(&self, dst: Ipv4Addr) -> bool {
        self.config.ipv4.iter().any(|net| net.contains(&dst))
    }
}

/// Where an adapter is plugged in, besides what its services see.
pub(crate) struct Wiring {
    pub segment: SegmentId,
    /// `host/adapter`, shared by every trace line about the adapter.
    pub label: Arc<str>,
    pub static_ipv4: Option<Ipv4Net>,
    /// When the link last went down, if it ever did.
    pub went_down_at: Option<SimTime>,
}

pub(crate) struct ServiceSlot {
    pub name: Arc<str>,
    pub factory: Box<dyn FnMut() -> Box<dyn Service>>,
    pub running: Option<Box<dyn Service>>,
    /// Whether it runs when the host is up (false after a scheduled stop).
    pub enabled: bool,
    /// Bumped whenever the running instance is dropped, so its pending timers go stale.
    pub generation: u32,
}

pub(crate) struct Host {
    pub name: Arc<str>,
    pub adapters: Vec<AdapterInfo>,
    pub wiring: Vec<Wiring>,
    pub services: Vec<ServiceSlot>,
    /// (port, index of the service that bound it): a handful per host, so a `Vec` beats a map.
    pub ports: Vec<(u16, u16)>,
    pub up: bool,
}

impl Host {
    pub fn port_owner(&self, port: u16) -> Option<usize> {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, s)| usize::from(*s))
    }
}

pub(crate) struct RouterInterface {
    pub segment: SegmentId,
    pub mac: MacAddr,
    pub addr: Ipv4Net,
    pub link_local: Ipv6Addr,
    pub label: Arc<str>,
    /// DHCP relay helper addresses; empty means the interface relays nothing.
    pub helpers: Vec<Ipv4Addr>,
}

pub(crate) struct Router {
    pub name: Arc<str>,
    pub interfaces: Vec<RouterInterface>,
    /// Static routes: (destination, next hop on a connected segment), tried in order after
    /// the connected subnets.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_host_is_small() {
        // The performance target: under 4 KiB per idle host besides its adapters. The struct
        // itself is the fixed part; an idle host's heap is its name, one service slot per
        // service and a few port entries (measured in benches/broadcast.rs).
        assert!(
            std::mem::size_of::<Host>() <= 160,
            "{}",
            std::mem::size_of::<Host>()
        );
        assert!(std::mem::size_of::<ServiceSlot>() <= 64);
    }
}
