//! The DHCPv4 server as a [`netsim::Service`]: UDP 67 in front of [`Server`]. The scenario
//! runner and the end-to-end tests put it on the "DHCP server" host; the real-socket shell
//! (`realnet`) drives the same core with tokio.
//!
//! The [`Server`] is shared (`Rc<RefCell<_>>`) with whoever built the service, as a lease file
//! on disk outlives the process: a scenario reads its counters and leases after the run, and a
//! restarted service finds its leases again.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use netsim::{Bytes, Datagram, HostStack, Service, SimTime};

use crate::{Received, SERVER_PORT, Server};

/// `dhcp::Server` on UDP 67.
pub struct DhcpServerService {
    server: Rc<RefCell<Server>>,
}

impl DhcpServerService {
    pub fn new(server: Rc<RefCell<Server>>) -> Self {
        Self { server }
    }

    fn flush(&self, stack: &mut dyn HostStack) {
        let mut server = self.server.borrow_mut();
        while let Some(t) = server.poll_transmit() {
            // A refused send (adapter gone) is lost like any datagram; clients retransmit.
            let _ = stack.send(t.interface, t.src, t.dst, Bytes::from(t.payload));
        }
        if let Some(at) = server.poll_timeout() {
            stack.set_timer(sim_time(at), 0);
        }
    }
}

impl Service for DhcpServerService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        // Another service on port 67 (a WDS server on the same host) is a topology mistake
        // the scenario loader reports; here the server simply hears nothing.
        let _ = stack.bind(SERVER_PORT);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        let now = stack.now().since_start();
        self.server.borrow_mut().handle(
            now,
            Received {
                interface: d.adapter,
                src: d.src,
                dst: d.dst,
                payload: &d.payload,
            },
        );
        self.flush(stack);
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        let now = stack.now().since_start();
        self.server.borrow_mut().handle_timeout(now);
        self.flush(stack);
    }
}

/// A core's `now` (time since the simulation started) as a simulator instant.
pub fn sim_time(at: Duration) -> SimTime {
    SimTime::ZERO.saturating_add(at)
}
