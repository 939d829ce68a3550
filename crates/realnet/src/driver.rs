//! The one driver: runs any [`Service`] of the host contract on a set of Linux interfaces.
//! `nulab server` (the unlock provider), `nulab client` (the boot), `nulab-dhcp-server` and
//! `nulab-dhcp-client` are each this driver plus a service.
//!
//! How it keeps the contract (`host_contract::stack`):
//!
//! - **Sockets.** [`HostStack::bind`] opens, per interface, one UDP socket per family bound to
//!   the device (`SO_BINDTODEVICE`, plus `SO_BROADCAST` on IPv4 and the configured multicast
//!   groups on IPv6), so that an address-less client can broadcast out of the right interface
//!   and a datagram's interface is known. A port can be mapped to another real port
//!   ([`DriverConfig::port_map`]: benches and tests run the provider off 67).
//! - **Serial callbacks, one clock.** One task owns the service: receive tasks (one per
//!   socket) feed it over a bounded queue; `now` is the monotonic time since the driver
//!   started, read once per callback.
//! - **Address changes before later datagrams (guarantee 1).** Sends go out in call order
//!   through one outbox: a datagram is written at once when nothing is queued before it,
//!   otherwise queued behind what is. [`HostStack::set_ipv4`] puts the address on the
//!   interface (`ip address replace`, or only records it in [`AddressMode::Record`]) at once
//!   when nothing is queued, otherwise as an entry of that same outbox, so every datagram sent
//!   after the call leaves after the address is in effect, and none sent before waits for it.
//! - **Timers (guarantee 3).** A heap ordered by deadline, then by the order they were set;
//!   each fires once the monotonic clock has reached its deadline.
//! - **Links (guarantee 5).** The driver queues nothing for a down link: a send the kernel
//!   refuses (`ENETDOWN`) is a lost datagram, as a failed `send_to` is.
//!
//! The decrypt pool's results come back through [`Driver::wake`]: a worker thread wakes the
//! driver with the job's token, and the driver calls [`Service::on_timer`] with it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use host_contract::{
    AdapterIndex, AdapterInfo, Bytes, Datagram, HostStack, HostTime, Ipv4Net, MacAddr, Service,
    StackError,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::interface::{InterfaceSocket, scoped};
use crate::{ShellError, adapter_facts};

/// The largest datagram read (DHCP and Network Unlock messages are at most a few hundred
/// bytes; a larger one is truncated and then dropped by the core as malformed).
const MAX_DATAGRAM: usize = 2048;
/// Received datagrams waiting for the service; beyond that the receive tasks wait (and the
/// kernel's socket buffer holds or drops), so memory stays bounded.
const INCOMING_QUEUE: usize = 256;
/// Datagrams and address changes waiting to leave; beyond that a send is a lost datagram.
const OUTBOX_LIMIT: usize = 1024;

/// What [`HostStack::set_ipv4`] does to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// Put the address on the interface with `ip address replace` (as a UEFI DHCP driver
    /// configures its IP4 protocol), and remove the old one.
    Configure,
    /// Only record it: [`HostStack::adapters`] shows it, the interface is left alone (a tool
    /// that shows what the firmware would get).
    Record,
}

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The interfaces, in the order the service sees them as adapters.
    pub interfaces: Vec<String>,
    /// The host's name as the service sees it (log lines).
    pub host_name: String,
    /// The seed of the service's randomness; `None`: from the OS.
    pub seed: Option<[u8; 32]>,
    pub addresses: AddressMode,
    /// Open IPv6 sockets too (on interfaces that have a link-local address).
    pub ipv6: bool,
    /// IPv6 multicast groups every IPv6 socket joins (a DHCPv6 server joins ff02::1:2).
    pub ipv6_groups: Vec<Ipv6Addr>,
    /// `(service port, real port)`: the service binds and sends from the first, the sockets
    /// use the second.
    pub port_map: Vec<(u16, u16)>,
    /// Interfaces whose DHCP the firmware has disabled (the adapter's `dhcp_enabled` fact;
    /// the kernel cannot tell).
    pub dhcp_disabled: Vec<String>,
    /// Interfaces the firmware has no UEFI network driver for.
    pub no_uefi_driver: Vec<String>,
}

impl DriverConfig {
    pub fn new(interfaces: Vec<String>) -> DriverConfig {
        DriverConfig {
            host_name: interfaces.join(","),
            interfaces,
            seed: None,
            addresses: AddressMode::Configure,
            ipv6: true,
            ipv6_groups: Vec::new(),
            port_map: Vec::new(),
            dhcp_disabled: Vec::new(),
            no_uefi_driver: Vec::new(),
        }
    }
}

/// What the driver did besides the service's own sends, for the caller to print or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellNote {
    /// The leased address was put on the interface.
    AddressConfigured { interface: String, address: String },
    /// It could not be; the service goes on (it was told `Ok`: a UEFI driver's failure to
    /// configure its IP4 protocol is not the boot's business).
    AddressNotConfigured { interface: String, why: String },
    /// A socket could not be opened on an interface (the port works on the others).
    SocketFailed { interface: String, why: String },
}

/// Wakes the driver with a token from another thread: the driver then calls the service's
/// [`Service::on_timer`] with it (the decrypt pool's results come back this way). One type
/// with the pool's.
pub use unlock_processor::Wake;

/// One port's sockets, per adapter.
struct PortSockets {
    v4: Vec<Option<Arc<UdpSocket>>>,
    v6: Vec<Option<Arc<UdpSocket>>>,
    receivers: Vec<tokio::task::AbortHandle>,
}

/// A datagram from a receive task.
struct Incoming {
    adapter: AdapterIndex,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// What waits to leave, in call order.
enum Outgoing {
    Datagram {
        socket: Arc<UdpSocket>,
        dst: SocketAddr,
        payload: Bytes,
    },
    Address {
        adapter: AdapterIndex,
        old: Option<Ipv4Net>,
        new: Option<Ipv4Net>,
    },
}

/// The host of one service on real interfaces; see the module documentation.
pub struct Driver {
    config: DriverConfig,
    epoch: Instant,
    now: HostTime,
    adapters: Vec<AdapterInfo>,
    ifindex: Vec<u32>,
    has_v6: Vec<bool>,
    ports: BTreeMap<u16, PortSockets>,
    incoming_tx: mpsc::Sender<Incoming>,
    incoming: mpsc::Receiver<Incoming>,
    wake_tx: mpsc::UnboundedSender<u64>,
    wakes: mpsc::UnboundedReceiver<u64>,
    timers: BinaryHeap<Reverse<(HostTime, u64, u64)>>,
    timer_seq: u64,
    outbox: VecDeque<Outgoing>,
    notes: Vec<ShellNote>,
    rng: ChaCha20Rng,
    received: u64,
}

impl Driver {
    /// Reads what the firmware would know of each interface (MAC and link from sysfs, IPv4
    /// address from `ip`, IPv6 link-local from `/proc/net/if_inet6`). Opens nothing yet: the
    /// service's `bind` does. Must be called inside a tokio runtime.
    pub fn new(config: DriverConfig) -> Result<Driver, ShellError> {
        let mut adapters = Vec::new();
        let mut ifindex = Vec::new();
        let mut has_v6 = Vec::new();
        for name in &config.interfaces {
            let facts = adapter_facts(name)?;
            let link_local = crate::boot::link_local(name);
            adapters.push(AdapterInfo {
                name: name.clone(),
                mac: MacAddr(facts.mac),
                ipv4: interface_ipv4(name),
                ipv6_link_local: link_local.unwrap_or(Ipv6Addr::UNSPECIFIED),
                link_up: facts.link_up,
                dhcp_enabled: facts.dhcp_enabled && !config.dhcp_disabled.contains(name),
                uefi_driver: facts.uefi_driver && !config.no_uefi_driver.contains(name),
            });
            ifindex.push(crate::wds::interface_index(name)?);
            has_v6.push(link_local.is_some());
        }
        let rng = match config.seed {
            Some(seed) => ChaCha20Rng::from_seed(seed),
            None => ChaCha20Rng::from_entropy(),
        };
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let (wake_tx, wakes) = mpsc::unbounded_channel();
        Ok(Driver {
            config,
            epoch: Instant::now(),
            now: HostTime::ZERO,
            adapters,
            ifindex,
            has_v6,
            ports: BTreeMap::new(),
            incoming_tx,
            incoming,
            wake_tx,
            wakes,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            outbox: VecDeque::new(),
            notes: Vec::new(),
            rng,
            received: 0,
        })
    }

    /// A handle that wakes this driver's service with a token, from any thread. Unbounded in
    /// type only: a wake comes from a job that went through a bounded queue.
    pub fn wake(&self) -> Wake {
        let tx = self.wake_tx.clone();
        Arc::new(move |token| {
            let _ = tx.send(token);
        })
    }

    /// Time since the driver started.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Datagrams received on every socket.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sockets open now, over every port, interface and family.
    pub fn open_sockets(&self) -> usize {
        self.ports
            .values()
            .map(|p| p.v4.iter().chain(&p.v6).filter(|s| s.is_some()).count())
            .sum()
    }

    /// What the driver did since the last call (addresses configured, sockets that failed).
    pub fn take_notes(&mut self) -> Vec<ShellNote> {
        std::mem::take(&mut self.notes)
    }

    /// Starts `service` (its `on_start`) and sends what it sent.
    pub async fn start(&mut self, service: &mut dyn Service) {
        self.now = self.clock();
        service.on_start(self);
        self.flush().await;
    }

    /// Runs `service` until `stop` resolves or `after` (called after every callback) says
    /// break. Datagrams, due timers and wakes are handed to it one callback at a time.
    pub async fn run_until(
        &mut self,
        service: &mut dyn Service,
        stop: impl Future<Output = ()>,
        mut after: impl FnMut(&mut Driver) -> ControlFlow<()>,
    ) {
        tokio::pin!(stop);
        loop {
            if after(self).is_break() {
                return;
            }
            let deadline = self.timers.peek().map(|Reverse((at, _, _))| *at);
            // Biased, in this order: a stop; then finished work (wakes) and due timers before
            // new datagrams, so that under a flood results are delivered and nothing waits
            // without bound behind the incoming queue.
            tokio::select! {
                biased;
                () = &mut stop => return,
                Some(token) = self.wakes.recv() => {
                    self.now = self.clock();
                    service.on_timer(self, token);
                }
                () = sleep_until(self.epoch, deadline) => {
                    self.now = self.clock();
                    if let Some(Reverse((at, _, token))) = self.timers.peek().copied()
                        && at <= self.now
                    {
                        self.timers.pop();
                        service.on_timer(self, token);
                    }
                }
                incoming = self.incoming.recv() => {
                    // The driver holds a sender itself, so the queue never closes.
                    let Some(incoming) = incoming else { return };
                    self.received += 1;
                    // Received before an unbind and still queued: the port is gone
                    // (guarantee 6), so is the datagram.
                    if !self.ports.contains_key(&incoming.dst.port()) {
                        continue;
                    }
                    self.now = self.clock();
                    service.on_datagram(self, Datagram {
                        adapter: incoming.adapter,
                        src: incoming.src,
                        dst: incoming.dst,
                        payload: Bytes::from(incoming.payload),
                    });
                }
            }
            self.flush().await;
        }
    }

    /// Handles wakes only (no datagram, no timer) until `pending` says none is outstanding or
    /// `limit` passes: a server that stops finishes the jobs its workers hold.
    pub async fn finish_wakes(
        &mut self,
        service: &mut dyn Service,
        mut pending: impl FnMut() -> bool,
        limit: Duration,
    ) {
        let end = tokio::time::Instant::now() + limit;
        while pending() {
            tokio::select! {
                Some(token) = self.wakes.recv() => {
                    self.now = self.clock();
                    service.on_timer(self, token);
                    self.flush().await;
                }
                () = tokio::time::sleep_until(end) => return,
            }
        }
    }

    fn clock(&self) -> HostTime {
        // Monotonic, and never behind what a callback has already seen.
        HostTime::ZERO
            .saturating_add(self.epoch.elapsed())
            .max(self.now)
    }

    fn real_port(&self, port: u16) -> u16 {
        self.config
            .port_map
            .iter()
            .find(|(service, _)| *service == port)
            .map_or(port, |(_, real)| *real)
    }

    /// Writes out the outbox in order: datagrams with `send_to`, address changes with `ip`.
    async fn flush(&mut self) {
        while let Some(next) = self.outbox.pop_front() {
            match next {
                Outgoing::Datagram {
                    socket,
                    dst,
                    payload,
                } => {
                    // A failed send is a lost datagram: the services' timers cope with loss.
                    let _ = socket.send_to(&payload, dst).await;
                }
                Outgoing::Address { adapter, old, new } => self.apply_address(adapter, old, new),
            }
        }
    }

    fn apply_address(&mut self, adapter: AdapterIndex, old: Option<Ipv4Net>, new: Option<Ipv4Net>) {
        if self.config.addresses == AddressMode::Record {
            return;
        }
        let Some(name) = self.adapters.get(adapter).map(|a| a.name.clone()) else {
            return;
        };
        if let Some(new) = new {
            self.notes.push(configure_address(&name, new));
        }
        if let Some(old) = old
            && Some(old) != new
        {
            // The old lease's address goes; a failure leaves a stale address, which is harmless
            // for the next datagrams (they leave from the new one) and is not reported.
            let _ = std::process::Command::new("ip")
                .args(["address", "del", &old.to_string(), "dev", &name])
                .output();
        }
    }

    /// Opens `port`'s sockets on every interface; what failed is noted.
    fn open_port(&mut self, port: u16) -> Result<PortSockets, StackError> {
        let real_port = self.real_port(port);
        let mut sockets = PortSockets {
            v4: Vec::new(),
            v6: Vec::new(),
            receivers: Vec::new(),
        };
        let mut failures = Vec::new();
        for (index, adapter) in self.adapters.iter().enumerate() {
            let v4 = match InterfaceSocket::open(&adapter.name, real_port) {
                Ok(s) => Some(Arc::new(s.socket)),
                Err(err) => {
                    failures.push((adapter.name.clone(), err.to_string()));
                    None
                }
            };
            let v6 = if self.config.ipv6 && self.has_v6[index] {
                let group = self
                    .config
                    .ipv6_groups
                    .first()
                    .map(|g| (*g, self.ifindex[index]));
                match InterfaceSocket::open_v6(&adapter.name, real_port, group) {
                    Ok(s) => {
                        for extra in self.config.ipv6_groups.iter().skip(1) {
                            let _ = s.socket.join_multicast_v6(extra, self.ifindex[index]);
                        }
                        Some(Arc::new(s.socket))
                    }
                    Err(err) => {
                        failures.push((adapter.name.clone(), err.to_string()));
                        None
                    }
                }
            } else {
                None
            };
            sockets.v4.push(v4);
            sockets.v6.push(v6);
        }
        for (name, why) in &failures {
            self.notes.push(ShellNote::SocketFailed {
                interface: name.clone(),
                why: why.clone(),
            });
        }
        let opened = sockets.v4.iter().chain(&sockets.v6).any(Option::is_some);
        if !opened {
            let why = failures
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(StackError::Unavailable(format!("UDP {real_port}: {why}")));
        }
        let local_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        let local_v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
        for adapter in 0..self.adapters.len() {
            for (socket, local) in [
                (sockets.v4[adapter].clone(), local_v4),
                (sockets.v6[adapter].clone(), local_v6),
            ] {
                let Some(socket) = socket else { continue };
                let tx = self.incoming_tx.clone();
                let task = tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        match socket.recv_from(&mut buf).await {
                            Ok((len, src)) => {
                                let incoming = Incoming {
                                    adapter,
                                    src,
                                    dst: local,
                                    payload: buf[..len].to_vec(),
                                };
                                if tx.send(incoming).await.is_err() {
                                    return;
                                }
                            }
                            // An ICMP error reported on the socket, say: not fatal.
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                });
                sockets.receivers.push(task.abort_handle());
            }
        }
        Ok(sockets)
    }

    /// The socket to send from: the one bound to `port` on `adapter` in `dst`'s family, else
    /// any socket of that adapter and family.
    fn socket_for(&self, adapter: AdapterIndex, port: u16, v6: bool) -> Option<Arc<UdpSocket>> {
        let pick = |p: &PortSockets| {
            let list = if v6 { &p.v6 } else { &p.v4 };
            list.get(adapter).cloned().flatten()
        };
        self.ports
            .get(&port)
            .and_then(pick)
            .or_else(|| self.ports.values().find_map(pick))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for port in self.ports.values() {
            for task in &port.receivers {
                task.abort();
            }
        }
    }
}

impl HostStack for Driver {
    fn now(&self) -> HostTime {
        self.now
    }

    fn host_name(&self) -> &str {
        &self.config.host_name
    }

    fn adapters(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    fn bind(&mut self, port: u16) -> Result<(), StackError> {
        if self.ports.contains_key(&port) {
            return Ok(());
        }
        let sockets = self.open_port(port)?;
        self.ports.insert(port, sockets);
        Ok(())
    }

    fn unbind(&mut self, port: u16) {
        if let Some(sockets) = self.ports.remove(&port) {
            for task in sockets.receivers {
                task.abort();
            }
        }
    }

    fn send(
        &mut self,
        adapter: AdapterIndex,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    ) -> Result<(), StackError> {
        host_contract::check_send(self.adapters.len(), adapter, src, dst, payload.len())?;
        // No socket on that adapter and family: lost, as on a host without that stack.
        let Some(socket) = self.socket_for(adapter, src.port(), dst.is_ipv6()) else {
            return Ok(());
        };
        let dst = scoped(dst, self.ifindex[adapter]);
        if self.outbox.is_empty() {
            match socket.try_send_to(&payload, dst) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                // Sent, or refused (link down, no route): a lost datagram either way.
                _ => return Ok(()),
            }
        }
        if self.outbox.len() < OUTBOX_LIMIT {
            self.outbox.push_back(Outgoing::Datagram {
                socket,
                dst,
                payload,
            });
        }
        Ok(())
    }

    fn set_timer(&mut self, at: HostTime, token: u64) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, token)));
    }

    fn set_ipv4(&mut self, adapter: AdapterIndex, addr: Option<Ipv4Net>) -> Result<(), StackError> {
        let info = self
            .adapters
            .get_mut(adapter)
            .ok_or(StackError::NoSuchAdapter(adapter))?;
        let old = std::mem::replace(&mut info.ipv4, addr);
        if self.outbox.is_empty() {
            self.apply_address(adapter, old, addr);
        } else {
            // Behind the datagrams sent before the call, ahead of every one sent after it.
            self.outbox.push_back(Outgoing::Address {
                adapter,
                old,
                new: addr,
            });
        }
        Ok(())
    }

    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        &mut self.rng
    }
}

/// Sleep until `deadline` (time since `epoch`), or forever if there is none.
async fn sleep_until(epoch: Instant, deadline: Option<HostTime>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(epoch + at.since_start()).await,
        None => std::future::pending().await,
    }
}

fn configure_address(interface: &str, network: Ipv4Net) -> ShellNote {
    let address = network.to_string();
    let result = std::process::Command::new("ip")
        .args(["address", "replace", &address, "dev", interface])
        .output();
    match result {
        Ok(out) if out.status.success() => ShellNote::AddressConfigured {
            interface: interface.to_owned(),
            address,
        },
        Ok(out) => ShellNote::AddressNotConfigured {
            interface: interface.to_owned(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        },
        Err(err) => ShellNote::AddressNotConfigured {
            interface: interface.to_owned(),
            why: format!("cannot run `ip`: {err}"),
        },
    }
}

/// The interface's first IPv4 address and prefix (`ip -o -4 address show dev NAME`), if any.
fn interface_ipv4(interface: &str) -> Option<Ipv4Net> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "address", "show", "dev", interface])
        .output()
        .ok()?;
    parse_ip_o_4(&String::from_utf8_lossy(&out.stdout))
}

/// `2: eth0    inet 192.168.77.1/24 brd ... scope global eth0\ ...`: the first `inet` field.
fn parse_ip_o_4(text: &str) -> Option<Ipv4Net> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_from_ip_o_4() {
        let text = "2: cli0    inet 192.168.77.50/24 brd 192.168.77.255 scope global cli0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_ip_o_4(text),
            Some("192.168.77.50/24".parse().expect("net"))
        );
        assert_eq!(parse_ip_o_4(""), None);
        assert_eq!(parse_ip_o_4("2: x inet garbage"), None);
    }
}
