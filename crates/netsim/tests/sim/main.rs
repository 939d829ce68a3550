//! Integration tests of the simulator, one binary with a module per area (faster to link).
//! They drive tiny test services (a probe that logs, echoes and sends on a script, and a BOOTP
//! responder), never the DHCP state machines, which live in `crates/dhcp`.

mod contract;
mod delivery;
mod determinism;
mod faults;
mod lifecycle;
mod pcap;
mod relay;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use netsim::{Bytes, Datagram, HostStack, Ipv4Net, Service, SimTime};

/// What a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub at: SimTime,
    pub host: String,
    pub adapter: usize,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Shared between a probe's instances and the test that reads it.
#[derive(Debug, Clone, Default)]
pub struct Log(Rc<RefCell<Vec<Got>>>);

impl Log {
    pub fn all(&self) -> Vec<Got> {
        self.0.borrow().clone()
    }
    /// How many datagrams arrived (tests compare counts, so no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.0.borrow().iter().map(|g| g.payload.clone()).collect()
    }
}

/// One scripted transmission: at `at`, out of `adapter`, from `src` to `dst`.
#[derive(Debug, Clone)]
pub struct Send {
    pub at: SimTime,
    pub adapter: usize,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// A test service: binds `ports`, logs every datagram, answers `pong:<payload>` to the sender
/// when `echo` is set (and the datagram is not itself a pong), sends its script, and can give
/// itself an address on start.
#[derive(Clone, Default)]
pub struct Probe {
    pub log: Log,
    pub ports: Vec<u16>,
    pub echo: bool,
    pub script: Vec<Send>,
    pub assign: Option<(usize, Ipv4Net)>,
    pub starts: Rc<Cell<u32>>,
    /// Random numbers drawn from the stack at start, to check that they are seeded.
    pub drawn: Rc<RefCell<Vec<u64>>>,
}

impl Probe {
    pub fn listening(ports: &[u16]) -> Probe {
        Probe {
            ports: ports.to_vec(),
            ..Probe::default()
        }
    }

    pub fn echoing(ports: &[u16]) -> Probe {
        Probe {
            echo: true,
            ..Probe::listening(ports)
        }
    }

    pub fn sending(mut self, at: SimTime, src: &str, dst: &str, payload: &[u8]) -> Probe {
        self.script.push(Send {
            at,
            adapter: 0,
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            payload: payload.to_vec(),
        });
        self
    }

    pub fn on_adapter(mut self, adapter: usize) -> Probe {
        if let Some(last) = self.script.last_mut() {
            last.adapter = adapter;
        }
        self
    }

    pub fn install(&self) -> impl FnMut() -> Box<dyn Service> + 'static {
        let probe = self.clone();
        move || Box::new(probe.clone())
    }
}

impl Service for Probe {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        self.starts.set(self.starts.get() + 1);
        self.drawn.borrow_mut().push(stack.rng().next_u64());
        if let Some((adapter, addr)) = self.assign {
            stack.set_ipv4(adapter, Some(addr)).expect("adapter exists");
        }
        for port in &self.ports {
            stack.bind(*port).expect("port free");
        }
        for (i, send) in self.script.iter().enumerate() {
            stack.set_timer(send.at, i as u64);
        }
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        self.log.0.borrow_mut().push(Got {
            at: stack.now(),
            host: stack.host_name().to_owned(),
            adapter: d.adapter,
            src: d.src,
            dst: d.dst,
            payload: d.payload.to_vec(),
        });
        if self.echo && !d.payload.starts_with(b"pong:") {
            let ip = match d.dst.ip() {
                IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST || v4.is_multicast() => stack
                    .adapters()[d.adapter]
                    .ipv4
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |n| IpAddr::V4(n.addr())),
                IpAddr::V6(v6) if v6.is_multicast() => {
                    IpAddr::V6(stack.adapters()[d.adapter].ipv6_link_local)
                }
                ip => ip,
            };
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&d.payload);
            let src = SocketAddr::new(ip, d.dst.port());
            // A sender without an address can only hear a broadcast (as a DHCP client).
            let dst = if d.src.ip().is_unspecified() {
                SocketAddr::from((Ipv4Addr::BROADCAST, d.src.port()))
            } else {
                d.src
            };
            stack
                .send(d.adapter, src, dst, Bytes::from(reply))
                .expect("valid reply");
        }
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        if let Some(send) = self.script.get(token as usize) {
            let payload = Bytes::from(send.payload.clone());
            stack
                .send(send.adapter, send.src, send.dst, payload)
                .expect("valid script");
        }
    }
}

pub fn net(text: &str) -> Ipv4Net {
    text.parse().expect("test subnet")
}

pub fn secs(s: u64) -> SimTime {
    SimTime::from_secs(s)
}

pub fn millis(ms: u64) -> SimTime {
    SimTime::from_millis(ms)
}
