//! The simulation: one event loop over a virtual clock, one seeded RNG, and the delivery of
//! frames on segments.
//!
//! Events wait in a binary heap ordered by (time, sequence number): the clock jumps to the
//! earliest, and events at the same instant run in the order they were scheduled, so a run
//! depends only on the topology, the services and the seed. Services act through a
//! [`HostStack`] whose requests (send, timer, address change) are queued and applied when the
//! callback returns; a sent frame reaches its segment's receivers after the segment's latency.
//!
//! A broadcast is one event however many hosts hear it: receivers are walked in the order they
//! were attached and served at once, unless a fault delays or duplicates a copy, which then
//! gets an event of its own. Payloads are shared (`Bytes`), never copied per receiver, except
//! for a copy that a fault corrupts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipnet::Ipv4Net;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};

use crate::fault::{self, Fate, FaultRule};
use crate::queue::EventQueue;
use crate::stack::{AdapterIndex, AdapterInfo, Datagram, HostStack, Service, StackError};
use crate::topology::{
    AdapterConfig, AdapterId, Attachment, Capture, Host, HostId, InterfaceId, NodeId, Router,
    RouterId, RouterInterface, Segment, SegmentConfig, SegmentId, ServiceSlot, TopologyError,
    Wiring,
};
use crate::trace::{DropReason, FaultAction, TraceEvent, TraceKind};
use crate::wire::{self, CaptureError, CapturedFrame};
use crate::{MacAddr, SimTime};

/// The default IPv4 TTL of a host's datagrams (Linux's).
pub(crate) const DEFAULT_TTL: u8 = 64;

/// Counters over a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Datagrams put on a segment by services, routers and relays.
    pub sent: u64,
    /// Datagrams handed to a service.
    pub delivered: u64,
    /// Deliveries that did not happen (fault, link or host down, no listener, no route).
    pub dropped: u64,
    /// Events processed.
    pub events: u64,
}

/// A datagram on a segment.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub from: NodeId,
    pub sender: Attachment,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ttl: u8,
    pub payload: Bytes,
    /// When it was put on its link (the last hop's send): a receiver whose link went down
    /// since then does not get it, even if the link is back up when it arrives.
    pub sent_at: SimTime,
}

/// Who on a segment a frame is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Everyone but the sender; for a directed broadcast, only adapters in that subnet.
    Group {
        directed: Option<Ipv4Net>,
    },
    One(Attachment),
}

/// What the event queue holds. Frames are boxed: most queued events are timers, and a storm queues a hundred thousand of
/// them, each as large as the largest variant.
enum Event {
    Boot(u32),
    Arrive {
        segment: u32,
        target: Target,
        frame: Box<Frame>,
    },
    /// A delivery that a fault delayed or duplicated: the fault chain has already run.
    Deliver {
        segment: u32,
        to: Attachment,
        unicast: bool,
        frame: Box<Frame>,
    },
    Timer {
        host: u32,
        service: u16,
        generation: u32,
        token: u64,
    },
    Control(Control),
}

enum Control {
    Link { host: u32, adapter: u32, up: bool },
    Crash(u32),
    Restart(u32),
    StopService { host: u32, service: usize },
    StartService { host: u32, service: usize },
}

/// What a service asked its stack for during one callback.
pub(crate) enum Action {
    Send {
        host: u32,
        adapter: usize,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    },
    Timer {
        host: u32,
        service: u16,
        generation: u32,
        at: SimTime,
        token: u64,
    },
    Readdress {
        host: u32,
        adapter: usize,
        old: Option<Ipv4Net>,
        new: Option<Ipv4Net>,
    },
}

/// The simulator's [`HostStack`]: a view of one host for the duration of one callback.
struct SimStack<'a> {
    now: SimTime,
    host: u32,
    service: u16,
    generation: u32,
    name: &'a str,
    adapters: &'a mut Vec<AdapterInfo>,
    ports: &'a mut Vec<(u16, u16)>,
    rng: &'a mut ChaCha20Rng,
    outbox: &'a mut Vec<Action>,
}

impl HostStack for SimStack<'_> {
    fn now(&self) -> SimTime {
        self.now
    }

    fn host_name(&self) -> &str {
        self.name
    }

    fn adapters(&self) -> &[AdapterInfo] {
        self.adapters
    }

    fn bind(&mut self, port: u16) -> Result<(), StackError> {
        match self.ports.iter().find(|(p, _)| *p == port) {
            Some((_, owner)) if *owner == self.service => Ok(()),
            Some(_) => Err(StackError::PortInUse(port)),
            None => {
                self.ports.push((port, self.service));
                Ok(())
            }
        }
    }

    fn unbind(&mut self, port: u16) {
        let service = self.service;
        self.ports.retain(|(p, s)| !(*p == port && *s == service));
    }

    fn send(
        &mut self,
        adapter: AdapterIndex,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    ) -> Result<(), StackError> {
        host_contract::check_send(self.adapters.len(), adapter, src, dst, payload.len())?;
        self.outbox.push(Action::Send {
            host: self.host,
            adapter,
            src,
            dst,
            payload,
        });
        Ok(())
    }

    fn set_timer(&mut self, at: SimTime, token: u64) {
        self.outbox.push(Action::Timer {
            host: self.host,
            service: self.service,
            generation: self.generation,
            at,
            token,
        });
    }

    fn set_ipv4(&mut self, adapter: AdapterIndex, addr: Option<Ipv4Net>) -> Result<(), StackError> {
        let info = self
            .adapters
            .get_mut(adapter)
            .ok_or(StackError::NoSuchAdapter(adapter))?;
        let old = std::mem::replace(&mut info.ipv4, addr);
        self.outbox.push(Action::Readdress {
            host: self.host,
            adapter,
            old,
            new: addr,
        });
        Ok(())
    }

    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        self.rng
    }
}

/// A deterministic simulated network. See the crate documentation for an example.
pub struct Simulation {
    seed: u64,
    now: SimTime,
    queue: EventQueue<Event>,
    rng: ChaCha20Rng,
    pub(crate) segments: Vec<Segment>,
    pub(crate) hosts: Vec<Host>,
    pub(crate) routers: Vec<Router>,
    /// Per segment: IPv4 address to the attachment holding it (ARP, in effect).
    pub(crate) ipv4_index: Vec<std::collections::BTreeMap<Ipv4Addr, Attachment>>,
    faults: Vec<FaultRule>,
    trace: Option<Vec<TraceEvent>>,
    summariser: crate::trace::Summariser,
    stats: Stats,
    outbox: Vec<Action>,
    next_mac: u32,
    /// Hosts `0..booted_hosts` have had their boot scheduled (hosts are only ever appended, so
    /// one cursor replaces a per-host flag that every step had to scan: 10,000 hosts made that
    /// scan the simulator's main cost).
    booted_hosts: usize,
}

impl Simulation {
    /// An empty network whose every random choice derives from `seed`.
    pub fn new(seed: u64) -> Simulation {
        Simulation {
            seed,
            now: SimTime::ZERO,
            queue: EventQueue::default(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            segments: Vec::new(),
            hosts: Vec::new(),
            routers: Vec::new(),
            ipv4_index: Vec::new(),
            faults: Vec::new(),
            trace: None,
            summariser: crate::trace::udp_only,
            stats: Stats::default(),
            outbox: Vec::new(),
            next_mac: 0,
            booted_hosts: 0,
        }
    }

    /// The seed this run was created with (print it when a test fails, to replay the run).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current simulated time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Record a [`TraceEvent`] for everything that happens from now on.
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// The trace so far (empty unless [`Simulation::enable_trace`] was called).
    pub fn trace(&self) -> &[TraceEvent] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// The trace as text, one event per line.
    pub fn trace_text(&self) -> String {
        self.trace_text_with(self.summariser)
    }

    /// The trace as text, with datagrams named by `summarise` (`dhcp_wire::summarise` names
    /// DHCP messages).
    pub fn trace_text_with(&self, summarise: crate::trace::Summariser) -> String {
        let mut out = String::new();
        for event in self.trace() {
            out.push_str(&event.display(summarise).to_string());
            out.push('\n');
        }
        out
    }

    /// How [`Simulation::trace_text`] names datagrams (by default `UDP`: the simulator reads
    /// no payload; the caller knows its protocols).
    pub fn set_summariser(&mut self, summarise: crate::trace::Summariser) {
        self.summariser = summarise;
    }

    // ---- topology -------------------------------------------------------------------------

    pub fn add_segment(&mut self, name: &str, config: SegmentConfig) -> SegmentId {
        let id = SegmentId(index_u32(self.segments.len()));
        self.segments.push(Segment {
            name: name.into(),
            config,
            members: Vec::new(),
            capture: None,
            next_ip_id: 1,
        });
        self.ipv4_index.push(std::collections::BTreeMap::new());
        id
    }

    pub fn add_host(&mut self, name: &str) -> HostId {
        let id = HostId(index_u32(self.hosts.len()));
        self.hosts.push(Host {
            name: name.into(),
            adapters: Vec::new(),
            wiring: Vec::new(),
            services: Vec::new(),
            ports: Vec::new(),
            up: true,
        });
        id
    }

    /// Plugs a new adapter of `host` into `segment`.
    pub fn add_adapter(
        &mut self,
        host: HostId,
        name: &str,
        segment: SegmentId,
        config: AdapterConfig,
    ) -> Result<AdapterId, TopologyError> {
        self.segment(segment)?;
        let mac = config.mac.unwrap_or_else(|| self.fresh_mac());
        let h = self.host_mut(host)?;
        let index = h.adapters.len();
        let label: Arc<str> = format!("{}/{name}", h.name).into();
        // A host's lists grow by one, not to Vec's first capacity of four: a host has one or
        // two adapters and services, and a storm has 100,000 hosts.
        h.adapters.reserve_exact(1);
        h.wiring.reserve_exact(1);
        h.adapters.push(AdapterInfo {
            name: name.to_owned(),
            mac,
            ipv4: config.ipv4,
            ipv6_link_local: mac.ipv6_link_local(),
            link_up: config.link_up,
            dhcp_enabled: config.dhcp_enabled,
            uefi_driver: config.uefi_driver,
        });
        h.wiring.push(Wiring {
            segment,
            label,
            static_ipv4: config.ipv4,
            went_down_at: None,
        });
        let att = Attachment::Host {
            host: host.0,
            adapter: index_u32(index),
        };
        self.segments[seg_index(segment)].members.push(att);
        if let Some(addr) = config.ipv4 {
            self.ipv4_index[seg_index(segment)].insert(addr.addr(), att);
        }
        Ok(AdapterId { host, index })
    }

    /// Installs a service on `host`: `factory` builds a fresh instance at every (re)start.
    /// Services start, in the order they were added, when the simulation first runs (or at
    /// once, if the host is already running).
    pub fn add_service(
        &mut self,
        host: HostId,
        name: &str,
        factory: impl FnMut() -> Box<dyn Service> + 'static,
    ) -> Result<(), TopologyError> {
        let booted = (host.0 as usize) < self.booted_hosts;
        let h = self.host_mut(host)?;
        if h.services.iter().any(|s| &*s.name == name) {
            return Err(TopologyError::DuplicateService {
                host: h.name.to_string(),
                service: name.to_owned(),
            });
        }
        let service = h.services.len();
        h.services.reserve_exact(1);
        h.services.push(ServiceSlot {
            name: name.into(),
            factory: Box::new(factory),
            running: None,
            enabled: true,
            generation: 0,
        });
        if booted {
            let now = self.now;
            self.schedule(
                now,
                Event::Control(Control::StartService {
                    host: host.0,
                    service,
                }),
            );
        }
        Ok(())
    }

    pub fn add_router(&mut self, name: &str) -> RouterId {
        let id = RouterId(index_u32(self.routers.len()));
        self.routers.push(Router {
            name: name.into(),
            interfaces: Vec::new(),
            routes: Vec::new(),
        });
        id
    }

    /// Gives `router` an interface on `segment` with address `addr` (e.g. 10.0.1.1/24).
    pub fn add_router_interface(
        &mut self,
        router: RouterId,
        segment: SegmentId,
        addr: Ipv4Net,
    ) -> Result<InterfaceId, TopologyError> {
        let seg_name = self.segment(segment)?.name.clone();
        let mac = self.fresh_mac();
        let r = self.router_mut(router)?;
        let index = r.interfaces.len();
        let label: Arc<str> = format!("{}/{}", r.name, seg_name).into();
        r.interfaces.push(RouterInterface {
            segment,
            mac,
            addr,
            link_local: mac.ipv6_link_local(),
            label,
            helpers: Vec::new(),
        });
        let att = Attachment::Router {
            router: router.0,
            iface: index_u32(index),
        };
        self.segments[seg_index(segment)].members.push(att);
        self.ipv4_index[seg_index(segment)].insert(addr.addr(), att);
        Ok(InterfaceId { router, index })
    }

    /// Makes `iface` a DHCP relay agent forwarding to `helpers` (an `ip helper-address` list);
    /// an empty list turns relaying off. A scenario models "the relay forwards to the DHCP
    /// server but not to WDS" by leaving the WDS server out.
    pub fn set_relay(
        &mut self,
        iface: InterfaceId,
        helpers: Vec<Ipv4Addr>,
    ) -> Result<(), TopologyError> {
        let r = self.router_mut(iface.router)?;
        let name = r.name.to_string();
        let i = r
            .interfaces
            .get_mut(iface.index)
            .ok_or(TopologyError::NoSuchInterface {
                router: name,
                index: iface.index,
            })?;
        i.helpers = helpers;
        Ok(())
    }

    /// Adds a static route on `router`: `dest` is reached through `via`, an address on one of
    /// its connected segments.
    pub fn add_route(
        &mut self,
        router: RouterId,
        dest: Ipv4Net,
        via: Ipv4Addr,
    ) -> Result<(), TopologyError> {
        self.router_mut(router)?.routes.push((dest, via));
        Ok(())
    }

    /// Appends a rule to the fault chain; returns its index (shown in drop reasons).
    pub fn add_fault(&mut self, rule: FaultRule) -> usize {
        self.faults.push(rule);
        self.faults.len() - 1
    }

    /// Starts recording the frames that cross `segment`, for [`Simulation::pcap`].
    pub fn capture(&mut self, segment: SegmentId) -> Result<(), TopologyError> {
        self.segment(segment)?;
        self.segments[seg_index(segment)]
            .capture
            .get_or_insert_with(|| Capture::Frames(Vec::new()));
        Ok(())
    }

    /// Starts writing the frames that cross `segment` to `out` as a pcap stream, as they cross
    /// it: a long or large run keeps none of them in memory. [`Simulation::finish_capture`]
    /// flushes it and reports the first write error.
    pub fn capture_to(
        &mut self,
        segment: SegmentId,
        out: Box<dyn std::io::Write>,
    ) -> Result<(), CaptureError> {
        let seg = self
            .segments
            .get_mut(seg_index(segment))
            .ok_or(CaptureError::NoSuchSegment)?;
        seg.capture = Some(Capture::Stream(wire::PcapStream::new(out)?));
        Ok(())
    }

    /// Ends the capture of `segment`: a stream is flushed (its first error, if any, comes back
    /// here), frames kept in memory are dropped. How many frames the capture holds (a reader
    /// of the stream can size its buffers from it).
    pub fn finish_capture(&mut self, segment: SegmentId) -> Result<usize, CaptureError> {
        let seg = self
            .segments
            .get_mut(seg_index(segment))
            .ok_or(CaptureError::NoSuchSegment)?;
        match seg.capture.take() {
            Some(Capture::Stream(stream)) => stream.finish(),
            Some(Capture::Frames(frames)) => Ok(frames.len()),
            None => Err(CaptureError::NotCaptured),
        }
    }

    /// The frames captured in memory on `segment` so far (a streamed capture is the
    /// writer's).
    pub fn captured(&self, segment: SegmentId) -> Result<&[CapturedFrame], CaptureError> {
        let seg = self
            .segments
            .get(seg_index(segment))
            .ok_or(CaptureError::NoSuchSegment)?;
        match &seg.capture {
            Some(Capture::Frames(frames)) => Ok(frames),
            Some(Capture::Stream(_)) | None => Err(CaptureError::NotCaptured),
        }
    }

    /// The capture of `segment` as a pcap file.
    pub fn pcap(&self, segment: SegmentId) -> Result<Vec<u8>, CaptureError> {
        wire::pcap_bytes(self.captured(segment)?)
    }

    /// Writes the capture of `segment` to `path`.
    pub fn write_pcap(&self, segment: SegmentId, path: &Path) -> Result<(), CaptureError> {
        std::fs::write(path, self.pcap(segment)?)?;
        Ok(())
    }

    /// The name a segment was given.
    pub fn segment_name(&self, segment: SegmentId) -> Option<&str> {
        self.segments.get(seg_index(segment)).map(|s| &*s.name)
    }

    /// What the adapter looks like now (its address after a DHCP client set it, its link).
    pub fn adapter(&self, id: AdapterId) -> Option<&AdapterInfo> {
        self.hosts.get(host_index(id.host))?.adapters.get(id.index)
    }

    /// Bytes an idle host occupies besides its adapters: its struct, its name, its service
    /// slots with their factories and running instances, and its port table (capacities, not
    /// lengths). The performance target is under 4 KiB.
    pub fn host_footprint(&self, host: HostId) -> Option<usize> {
        let h = self.hosts.get(host_index(host))?;
        let slots: usize = h
            .services
            .iter()
            .map(|s| {
                s.name.len()
                    + std::mem::size_of_val(&*s.factory)
                    + s.running
                        .as_ref()
                        .map_or(0, |r| std::mem::size_of_val(&**r))
            })
            .sum();
        Some(
            std::mem::size_of::<Host>()
                + h.name.len()
                + h.services.capacity() * std::mem::size_of::<ServiceSlot>()
                + slots
                + h.ports.capacity() * std::mem::size_of::<(u16, u16)>(),
        )
    }

    pub fn host_is_up(&self, host: HostId) -> bool {
        self.hosts.get(host_index(host)).is_some_and(|h| h.up)
    }

    /// Whether the named service of `host` is running now.
    pub fn service_is_running(&self, host: HostId, name: &str) -> bool {
        self.hosts
            .get(host_index(host))
            .and_then(|h| h.services.iter().find(|s| &*s.name == name))
            .is_some_and(|s| s.running.is_some())
    }

    // ---- scheduled failures ---------------------------------------------------------------

    /// Unplugs the adapter's cable at `at`.
    pub fn link_down_at(&mut self, at: SimTime, adapter: AdapterId) -> Result<(), TopologyError> {
        self.schedule_link(at, adapter, false)
    }

    /// Plugs the adapter's cable back in at `at`.
    pub fn link_up_at(&mut self, at: SimTime, adapter: AdapterId) -> Result<(), TopologyError> {
        self.schedule_link(at, adapter, true)
    }

    /// Crashes `host` at `at`: its services' state, timers, bound ports and leased addresses
    /// are lost; static addresses stay.
    pub fn crash_at(&mut self, at: SimTime, host: HostId) -> Result<(), TopologyError> {
        self.host_mut(host)?;
        self.schedule(at, Event::Control(Control::Crash(host.0)));
        Ok(())
    }

    /// Boots a crashed `host` at `at`: fresh service instances, `on_start` again.
    pub fn restart_at(&mut self, at: SimTime, host: HostId) -> Result<(), TopologyError> {
        self.host_mut(host)?;
        self.schedule(at, Event::Control(Control::Restart(host.0)));
        Ok(())
    }

    /// Stops the named service at `at` (its state is dropped; it stays stopped across host
    /// restarts until started again).
    pub fn stop_service_at(
        &mut self,
        at: SimTime,
        host: HostId,
        name: &str,
    ) -> Result<(), TopologyError> {
        let service = self.service_index(host, name)?;
        self.schedule(
            at,
            Event::Control(Control::StopService {
                host: host.0,
                service,
            }),
        );
        Ok(())
    }

    /// Starts the named service again at `at`, as a fresh instance.
    pub fn start_service_at(
        &mut self,
        at: SimTime,
        host: HostId,
        name: &str,
    ) -> Result<(), TopologyError> {
        let service = self.service_index(host, name)?;
        self.schedule(
            at,
            Event::Control(Control::StartService {
                host: host.0,
                service,
            }),
        );
        Ok(())
    }

    // ---- running --------------------------------------------------------------------------

    /// Processes every event up to and including `end`, then sets the clock to `end`.
    /// With services that set timers forever, this is the way to bound a run.
    pub fn run_until(&mut self, end: SimTime) {
        self.boot_pending();
        while self.queue.peek_time().is_some_and(|time| time <= end) {
            self.step();
        }
        if self.now < end {
            self.now = end;
        }
        self.queue.shrink_slack();
    }

    /// Runs for `duration` of simulated time from now.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Processes the next event, if any; returns whether there was one.
    pub fn step(&mut self) -> bool {
        self.boot_pending();
        let Some((time, event)) = self.queue.pop() else {
            return false;
        };
        self.now = time;
        self.stats.events += 1;
        self.handle(event);
        true
    }

    /// The time of the next pending event.
    pub fn next_event_time(&self) -> Option<SimTime> {
        self.queue.peek_time()
    }

    fn boot_pending(&mut self) {
        while self.booted_hosts < self.hosts.len() {
            let index = self.booted_hosts;
            self.booted_hosts += 1;
            let now = self.now;
            self.queue
                .push_after(now, Duration::ZERO, Event::Boot(index_u32(index)));
        }
    }

    fn schedule(&mut self, at: SimTime, event: Event) {
        self.queue.push(at.max(self.now), event);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Boot(host) => {
                let h = &self.hosts[host as usize];
                if h.up {
                    let name = h.name.clone();
                    self.record(|| TraceKind::HostStarted { host: name });
                    self.start_enabled_services(host);
                }
            }
            Event::Arrive {
                segment,
                target,
                frame,
            } => self.arrive(segment, target, &frame),
            Event::Deliver {
                segment,
                to,
                unicast,
                frame,
            } => {
                self.receive(segment, to, &frame, unicast, false);
            }
            Event::Timer {
                host,
                service,
                generation,
                token,
            } => {
                let h = &self.hosts[host as usize];
                let slot = &h.services[usize::from(service)];
                if h.up && slot.generation == generation && slot.running.is_some() {
                    self.call_service(host, usize::from(service), |s, stack| {
                        s.on_timer(stack, token)
                    });
                }
            }
            Event::Control(control) => self.control(control),
        }
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Link { host, adapter, up } => {
                let h = &mut self.hosts[host as usize];
                let a = adapter as usize;
                h.adapters[a].link_up = up;
                if !up {
                    h.wiring[a].went_down_at = Some(self.now);
                }
                let at = h.wiring[a].label.clone();
                self.record(|| TraceKind::LinkChanged { at, up });
            }
            Control::Crash(host) => {
                if !self.hosts[host as usize].up {
                    return;
                }
                self.hosts[host as usize].up = false;
                for service in 0..self.hosts[host as usize].services.len() {
                    self.drop_instance(host, service);
                }
                self.hosts[host as usize].ports.clear();
                let name = self.hosts[host as usize].name.clone();
                self.record(|| TraceKind::HostCrashed { host: name });
                // A leased address does not survive a reboot; a static one does.
                for adapter in 0..self.hosts[host as usize].adapters.len() {
                    let h = &mut self.hosts[host as usize];
                    let keep = h.wiring[adapter].static_ipv4;
                    let old = std::mem::replace(&mut h.adapters[adapter].ipv4, keep);
                    if old != keep {
                        self.readdress(host, adapter, old, keep);
                    }
                }
            }
            Control::Restart(host) => {
                if self.hosts[host as usize].up {
                    return;
                }
                self.hosts[host as usize].up = true;
                let name = self.hosts[host as usize].name.clone();
                self.record(|| TraceKind::HostStarted { host: name });
                self.start_enabled_services(host);
            }
            Control::StopService { host, service } => {
                let slot = &mut self.hosts[host as usize].services[service];
                slot.enabled = false;
                if slot.running.is_some() {
                    self.drop_instance(host, service);
                    let h = &self.hosts[host as usize];
                    let (name, svc) = (h.name.clone(), h.services[service].name.clone());
                    self.record(|| TraceKind::ServiceStopped {
                        host: name,
                        service: svc,
                    });
                }
            }
            Control::StartService { host, service } => {
                let h = &mut self.hosts[host as usize];
                h.services[service].enabled = true;
                if h.up && h.services[service].running.is_none() {
                    self.start_instance(host, service);
                }
            }
        }
    }

    fn start_enabled_services(&mut self, host: u32) {
        for service in 0..self.hosts[host as usize].services.len() {
            let slot = &self.hosts[host as usize].services[service];
            if slot.enabled && slot.running.is_none() {
                self.start_instance(host, service);
            }
        }
    }

    fn start_instance(&mut self, host: u32, service: usize) {
        let h = &mut self.hosts[host as usize];
        let slot = &mut h.services[service];
        slot.running = Some((slot.factory)());
        let (name, svc) = (h.name.clone(), slot.name.clone());
        self.record(|| TraceKind::ServiceStarted {
            host: name,
            service: svc,
        });
        self.call_service(host, service, |s, stack| s.on_start(stack));
    }

    /// Drops the running instance: its state is lost, its timers go stale, its ports close.
    fn drop_instance(&mut self, host: u32, service: usize) {
        let h = &mut self.hosts[host as usize];
        let slot = &mut h.services[service];
        slot.running = None;
        slot.generation = slot.generation.wrapping_add(1);
        let owner = u16::try_from(service).unwrap_or(u16::MAX);
        h.ports.retain(|(_, s)| *s != owner);
    }

    /// Runs one callback of one service with a stack for its host, then applies what it asked.
    fn call_service(
        &mut self,
        host: u32,
        service: usize,
        callback: impl FnOnce(&mut dyn Service, &mut dyn HostStack),
    ) {
        let now = self.now;
        let h = &mut self.hosts[host as usize];
        let slot = &mut h.services[service];
        let generation = slot.generation;
        let Some(instance) = slot.running.as_mut() else {
            return;
        };
        let mut stack = SimStack {
            now,
            host,
            service: u16::try_from(service).unwrap_or(u16::MAX),
            generation,
            name: &h.name,
            adapters: &mut h.adapters,
            ports: &mut h.ports,
            rng: &mut self.rng,
            outbox: &mut self.outbox,
        };
        callback(instance.as_mut(), &mut stack);
        if !self.outbox.is_empty() {
            let mut actions = std::mem::take(&mut self.outbox);
            for action in actions.drain(..) {
                self.apply(action);
            }
            self.outbox = actions;
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Send {
                host,
                adapter,
                src,
                dst,
                payload,
            } => {
                self.send_from_host(host, adapter, src, dst, payload);
            }
            Action::Timer {
                host,
                service,
                generation,
                at,
                token,
            } => {
                self.schedule(
                    at,
                    Event::Timer {
                        host,
                        service,
                        generation,
                        token,
                    },
                );
            }
            Action::Readdress {
                host,
                adapter,
                old,
                new,
            } => self.readdress(host, adapter, old, new),
        }
    }

    fn readdress(&mut self, host: u32, adapter: usize, old: Option<Ipv4Net>, new: Option<Ipv4Net>) {
        let wiring = &self.hosts[host as usize].wiring[adapter];
        let segment = seg_index(wiring.segment);
        let att = Attachment::Host {
            host,
            adapter: index_u32(adapter),
        };
        let index = &mut self.ipv4_index[segment];
        if let Some(old) = old
            && index.get(&old.addr()) == Some(&att)
        {
            index.remove(&old.addr());
        }
        if let Some(new) = new {
            index.insert(new.addr(), att);
        }
        let at = wiring.label.clone();
        self.record(|| TraceKind::AddressChanged { at, addr: new });
    }

    // ---- sending --------------------------------------------------------------------------

    fn send_from_host(
        &mut self,
        host: u32,
        adapter: usize,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    ) {
        let h = &self.hosts[host as usize];
        let info = &h.adapters[adapter];
        let segment = h.wiring[adapter].segment;
        let sender = Attachment::Host {
            host,
            adapter: index_u32(adapter),
        };
        if !info.link_up {
            let len = payload.len();
            self.note_drop(sender, src, dst, len, |_| DropReason::LinkDown);
            return;
        }
        let src_mac = info.mac;
        if self.trace.is_some() {
            let at = h.wiring[adapter].label.clone();
            let payload = payload.clone();
            self.record(|| TraceKind::Sent {
                at,
                src,
                dst,
                payload,
            });
        }
        let frame = Frame {
            from: NodeId::Host(HostId(host)),
            sender,
            src_mac,
            dst_mac: MacAddr::BROADCAST,
            src,
            dst,
            ttl: DEFAULT_TTL,
            payload,
            sent_at: self.now,
        };
        self.route_from_segment(segment, frame);
    }

    /// Sends a host's frame: on its own segment, or to the first router attached to it (the
    /// default gateway) when the destination is off-link.
    fn route_from_segment(&mut self, segment: SegmentId, mut frame: Frame) {
        let seg = &self.segments[seg_index(segment)];
        let target = match frame.dst.ip() {
            IpAddr::V4(dst) if crate::sim::is_group_v4(dst) => {
                Some(Target::Group { directed: None })
            }
            IpAddr::V4(dst) => {
                if let Some(net) = seg.directed_broadcast(dst) {
                    frame.dst_mac = MacAddr::BROADCAST;
                    Some(Target::Group {
                        directed: Some(net),
                    })
                } else if let Some(att) = self.ipv4_index[seg_index(segment)].get(&dst) {
                    Some(Target::One(*att))
                } else if seg.carries(dst) {
                    return self.note_drop(
                        frame.sender,
                        frame.src,
                        frame.dst,
                        frame.payload.len(),
                        |_| DropReason::Unreachable,
                    );
                } else {
                    // Off-link: the default gateway is the first router on the segment.
                    seg.members
                        .iter()
                        .find(|m| matches!(m, Attachment::Router { .. }))
                        .map(|gateway| Target::One(*gateway))
                }
            }
            IpAddr::V6(dst) if dst.is_multicast() => Some(Target::Group { directed: None }),
            IpAddr::V6(dst) => seg
                .members
                .iter()
                .find(|m| self.link_local(**m) == Some(dst))
                .map(|att| Target::One(*att)),
        };
        let Some(target) = target else {
            return self.note_drop(
                frame.sender,
                frame.src,
                frame.dst,
                frame.payload.len(),
                |_| DropReason::NoRoute,
            );
        };
        if let Target::One(to @ Attachment::Host { host, .. }) = target
            && matches!(frame.sender, Attachment::Host { host: from, .. } if from == host)
        {
            // To one of the host's own addresses: loopback, never on the wire or in a capture.
            self.stats.sent += 1;
            let now = self.now;
            let event = Event::Deliver {
                segment: segment.0,
                to,
                unicast: true,
                frame: Box::new(frame),
            };
            return self.schedule(now, event);
        }
        frame.dst_mac = match target {
            Target::One(att) => self.mac_of(att),
            Target::Group { directed: Some(_) } => MacAddr::BROADCAST,
            Target::Group { directed: None } => {
                MacAddr::for_group(frame.dst.ip()).unwrap_or(MacAddr::BROADCAST)
            }
        };
        self.put_on_segment(segment, target, frame);
    }

    /// Records the frame in the segment's capture and schedules its arrival.
    pub(crate) fn put_on_segment(&mut self, segment: SegmentId, target: Target, frame: Frame) {
        self.stats.sent += 1;
        let now = self.now;
        let seg = &mut self.segments[seg_index(segment)];
        if let Some(capture) = seg.capture.as_mut() {
            let ip_id = seg.next_ip_id;
            seg.next_ip_id = seg.next_ip_id.wrapping_add(1);
            let captured = CapturedFrame {
                time: now,
                src_mac: frame.src_mac,
                dst_mac: frame.dst_mac,
                src: frame.src,
                dst: frame.dst,
                ttl: frame.ttl,
                ip_id,
                payload: frame.payload.clone(),
            };
            match capture {
                Capture::Frames(frames) => frames.push(CapturedFrame {
                    // A copy of exactly the payload's length: the sender's buffer may be
                    // larger (an encoder's grown `Vec`), and the capture keeps it to the end.
                    payload: Bytes::copy_from_slice(&captured.payload),
                    ..captured
                }),
                Capture::Stream(stream) => stream.record_frame(&captured),
            }
        }
        // A segment's frames arrive in the order they were sent: the queue's lane for its
        // latency keeps them so.
        let latency = seg.config.latency;
        self.queue.push_after(
            now,
            latency,
            Event::Arrive {
                segment: segment.0,
                target,
                frame: Box::new(frame),
            },
        );
    }

    // ---- receiving ------------------------------------------------------------------------

    fn arrive(&mut self, segment: u32, target: Target, frame: &Frame) {
        match target {
            Target::One(att) => {
                self.receive(segment, att, frame, true, true);
            }
            Target::Group { directed } => {
                let mut heard = false;
                let members = self.segments[segment as usize].members.len();
                for i in 0..members {
                    let att = self.segments[segment as usize].members[i];
                    if att == frame.sender {
                        continue;
                    }
                    if let Some(net) = directed
                        && !self.ipv4_of(att).is_some_and(|a| net.contains(&a.addr()))
                    {
                        continue;
                    }
                    heard |= self.receive(segment, att, frame, false, true);
                }
                if !heard {
                    self.note_drop(
                        frame.sender,
                        frame.src,
                        frame.dst,
                        frame.payload.len(),
                        |_| DropReason::NoListener,
                    );
                }
            }
        }
    }

    /// Hands `frame` to one attachment, running the fault chain first if `faults`. Returns
    /// whether someone took it (a listening service, a router, or a fault's later delivery).
    fn receive(
        &mut self,
        segment: u32,
        att: Attachment,
        frame: &Frame,
        unicast: bool,
        faults: bool,
    ) -> bool {
        let (to, service) = match att {
            Attachment::Host { host, adapter } => {
                let h = &self.hosts[host as usize];
                let reason = if !h.up {
                    Some(DropReason::HostDown)
                } else if !h.adapters[adapter as usize].link_up
                    || h.wiring[adapter as usize]
                        .went_down_at
                        .is_some_and(|down| down >= frame.sent_at)
                {
                    // Down now, or down at some point since the frame was sent: a link that
                    // goes down holds nothing for when it comes back (the contract's
                    // guarantee 6).
                    Some(DropReason::LinkDown)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.note_drop(att, frame.src, frame.dst, frame.payload.len(), |_| reason);
                    return false;
                }
                let Some(service) = h.port_owner(frame.dst.port()) else {
                    if unicast {
                        self.note_drop(att, frame.src, frame.dst, frame.payload.len(), |_| {
                            DropReason::NoListener
                        });
                    }
                    return false;
                };
                (NodeId::Host(HostId(host)), Some(service))
            }
            Attachment::Router { router, iface } => {
                // A router takes unicast addressed to it; of group traffic, only what its relay
                // agent handles. Other broadcasts are not its business: no fault draw, no trace.
                if !unicast && !self.relays(router, iface as usize, frame) {
                    return false;
                }
                (NodeId::Router(RouterId(router)), None)
            }
        };
        if faults && !self.faults.is_empty() {
            let fate = fault::decide(
                &self.faults,
                self.now,
                SegmentId(segment),
                frame.from,
                to,
                &mut self.rng,
            );
            if !fate.is_plain() {
                return self.apply_fate(segment, att, frame, unicast, fate);
            }
        }
        match (att, service) {
            (Attachment::Host { host, adapter }, Some(service)) => {
                self.deliver(host, adapter as usize, service, frame);
            }
            (Attachment::Router { router, iface }, _) => {
                self.router_receive(router, iface as usize, frame)
            }
            (Attachment::Host { .. }, None) => return false,
        }
        true
    }

    fn apply_fate(
        &mut self,
        segment: u32,
        att: Attachment,
        frame: &Frame,
        unicast: bool,
        fate: Fate,
    ) -> bool {
        if let Some(blocked) = fate.blocked {
            self.note_drop(att, frame.src, frame.dst, frame.payload.len(), |sim| {
                DropReason::Fault {
                    rule: blocked.rule,
                    description: sim.faults[blocked.rule].to_string(),
                }
            });
            return false;
        }
        let mut frame = frame.clone();
        if let Some(draw) = fate.corrupt
            && !frame.payload.is_empty()
        {
            let len = frame.payload.len() as u64;
            let offset = usize::try_from(draw % len).unwrap_or(0);
            let mut bytes = frame.payload.to_vec();
            // XOR with a non-zero value, so the byte always changes.
            bytes[offset] ^= 1 + ((draw >> 32) % 255) as u8;
            frame.payload = Bytes::from(bytes);
            self.note_fault(att, &frame, FaultAction::Corrupted { offset });
        }
        if fate.delay.is_zero() && !fate.duplicate {
            return self.receive(segment, att, &frame, unicast, false);
        }
        if !fate.delay.is_zero() {
            self.note_fault(att, &frame, FaultAction::Delayed(fate.delay));
        }
        let at = self.now + fate.delay;
        if fate.duplicate {
            self.note_fault(att, &frame, FaultAction::Duplicated);
            self.schedule(
                at,
                Event::Deliver {
                    segment,
                    to: att,
                    unicast,
                    frame: Box::new(frame.clone()),
                },
            );
        }
        self.schedule(
            at,
            Event::Deliver {
                segment,
                to: att,
                unicast,
                frame: Box::new(frame),
            },
        );
        true
    }

    fn deliver(&mut self, host: u32, adapter: usize, service: usize, frame: &Frame) {
        self.stats.delivered += 1;
        if self.trace.is_some() {
            let at = self.hosts[host as usize].wiring[adapter].label.clone();
            let (src, dst, payload) = (frame.src, frame.dst, frame.payload.clone());
            self.record(|| TraceKind::Received {
                at,
                src,
                dst,
                payload,
            });
        }
        let datagram = Datagram {
            adapter,
            src: frame.src,
            dst: frame.dst,
            payload: frame.payload.clone(),
        };
        self.call_service(host, service, |s, stack| s.on_datagram(stack, datagram));
    }

    // ---- bookkeeping ----------------------------------------------------------------------

    pub(crate) fn record(&mut self, kind: impl FnOnce() -> TraceKind) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(TraceEvent {
                time: self.now,
                kind: kind(),
            });
        }
    }

    pub(crate) fn note_drop(
        &mut self,
        at: Attachment,
        src: SocketAddr,
        dst: SocketAddr,
        len: usize,
        reason: impl FnOnce(&Simulation) -> DropReason,
    ) {
        self.stats.dropped += 1;
        if self.trace.is_some() {
            let reason = reason(self);
            let at = self.label(at);
            self.record(|| TraceKind::Dropped {
                at,
                src,
                dst,
                len,
                reason,
            });
        }
    }

    fn note_fault(&mut self, at: Attachment, frame: &Frame, fault: FaultAction) {
        if self.trace.is_some() {
            let at = self.label(at);
            let (src, dst) = (frame.src, frame.dst);
            self.record(|| TraceKind::Faulted {
                at,
                src,
                dst,
                fault,
            });
        }
    }

    pub(crate) fn label(&self, att: Attachment) -> Arc<str> {
        match att {
            Attachment::Host { host, adapter } => self.hosts[host as usize].wiring
                [adapter as usize]
                .label
                .clone(),
            Attachment::Router { router, iface } => self.routers[router as usize].interfaces
                [iface as usize]
                .label
                .clone(),
        }
    }

    pub(crate) fn mac_of(&self, att: Attachment) -> MacAddr {
        match att {
            Attachment::Host { host, adapter } => {
                self.hosts[host as usize].adapters[adapter as usize].mac
            }
            Attachment::Router { router, iface } => {
                self.routers[router as usize].interfaces[iface as usize].mac
            }
        }
    }

    fn ipv4_of(&self, att: Attachment) -> Option<Ipv4Net> {
        match att {
            Attachment::Host { host, adapter } => {
                self.hosts[host as usize].adapters[adapter as usize].ipv4
            }
            Attachment::Router { router, iface } => {
                Some(self.routers[router as usize].interfaces[iface as usize].addr)
            }
        }
    }

    fn link_local(&self, att: Attachment) -> Option<std::net::Ipv6Addr> {
        match att {
            Attachment::Host { host, adapter } => {
                Some(self.hosts[host as usize].adapters[adapter as usize].ipv6_link_local)
            }
            Attachment::Router { router, iface } => {
                Some(self.routers[router as usize].interfaces[iface as usize].link_local)
            }
        }
    }

    /// The next simulator-assigned MAC: locally administered, numbered in creation order, so
    /// that adding a host does not consume randomness and shift every later draw.
    fn fresh_mac(&mut self) -> MacAddr {
        self.next_mac += 1;
        let [_, b, c, d] = self.next_mac.to_be_bytes();
        MacAddr::local_from([0, 0, b, c, d])
    }

    fn segment(&self, id: SegmentId) -> Result<&Segment, TopologyError> {
        self.segments
            .get(seg_index(id))
            .ok_or(TopologyError::NoSuchSegment(id.0))
    }

    fn host_mut(&mut self, id: HostId) -> Result<&mut Host, TopologyError> {
        self.hosts
            .get_mut(host_index(id))
            .ok_or(TopologyError::NoSuchHost(id.0))
    }

    fn router_mut(&mut self, id: RouterId) -> Result<&mut Router, TopologyError> {
        self.routers
            .get_mut(id.0 as usize)
            .ok_or(TopologyError::NoSuchRouter(id.0))
    }

    fn service_index(&mut self, host: HostId, name: &str) -> Result<usize, TopologyError> {
        let h = self.host_mut(host)?;
        h.services
            .iter()
            .position(|s| &*s.name == name)
            .ok_or_else(|| TopologyError::NoSuchService {
                host: h.name.to_string(),
                service: name.to_owned(),
            })
    }

    fn schedule_link(
        &mut self,
        at: SimTime,
        adapter: AdapterId,
        up: bool,
    ) -> Result<(), TopologyError> {
        let h = self.host_mut(adapter.host)?;
        if adapter.index >= h.adapters.len() {
            return Err(TopologyError::NoSuchAdapter {
                host: h.name.to_string(),
                index: adapter.index,
            });
        }
        let control = Control::Link {
            host: adapter.host.0,
            adapter: index_u32(adapter.index),
            up,
        };
        self.schedule(at, Event::Control(control));
        Ok(())
    }
}

pub(crate) fn seg_index(id: SegmentId) -> usize {
    id.0 as usize
}

fn host_index(id: HostId) -> usize {
    id.0 as usize
}

/// Ids are `u32` to keep attachments and events small; four billion of anything is beyond any
/// simulation this crate runs.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 segments, hosts, routers and adapters")
}

/// Whether `dst` is delivered to every adapter of a segment rather than to one.
pub(crate) fn is_group_v4(dst: Ipv4Addr) -> bool {
    dst == Ipv4Addr::BROADCAST || dst.is_multicast()
}
