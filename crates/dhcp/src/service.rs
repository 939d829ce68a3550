//! The DHCPv4 server as a [`Service`] of the host contract: UDP 67 in front of [`Server`],
//! written once and run unchanged by both shells. The scenario runner and the end-to-end tests
//! put it on the simulator's "DHCP server" host; `nulab-dhcp-server` runs it on real
//! interfaces with `realnet`'s driver.
//!
//! The [`Server`] is shared (`Rc<RefCell<_>>`) with whoever built the service, as a lease file
//! on disk outlives the process: a scenario reads its counters and leases after the run, and a
//! restarted service finds its leases again.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use host_contract::{Bytes, Datagram, HostStack, HostTime, Service};

use crate::{Received, SERVER_PORT, Server};

/// `dhcp::Server` on UDP 67.
pub struct DhcpServerService {
    server: Rc<RefCell<Server>>,
    /// The deadline a timer is already set for: one timer per deadline, not one per datagram
    /// (a long-running server would otherwise pile up timers for the same lease expiry).
    armed: Option<HostTime>,
    /// Whether the server's events are dropped as they come (no one reads them).
    discard_events: bool,
}

impl DhcpServerService {
    /// A service whose server's events ([`Server::poll_event`]) are left for the builder to
    /// read, as `nulab-dhcp-server` logs them.
    pub fn new(server: Rc<RefCell<Server>>) -> Self {
        Self {
            server,
            armed: None,
            discard_events: false,
        }
    }

    /// A service for a shell with no reader of the server's events (the scenario runner: the
    /// capture and the counters tell what the server did). Left unread they pile up: one a
    /// Network Unlock request the server ignores, 100,000 in a 100,000-client storm.
    pub fn discarding_events(server: Rc<RefCell<Server>>) -> Self {
        Self {
            discard_events: true,
            ..Self::new(server)
        }
    }

    fn flush(&mut self, stack: &mut dyn HostStack) {
        let mut server = self.server.borrow_mut();
        while let Some(t) = server.poll_transmit() {
            // A refused send (adapter gone) is lost like any datagram; clients retransmit.
            let _ = stack.send(t.interface, t.src, t.dst, Bytes::from(t.payload));
        }
        if self.discard_events {
            while server.poll_event().is_some() {}
        }
        if let Some(at) = server.poll_timeout().map(host_time)
            && self.armed != Some(at)
        {
            self.armed = Some(at);
            stack.set_timer(at, 0);
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
        self.armed = None;
        self.server.borrow_mut().handle_timeout(now);
        self.flush(stack);
    }
}

/// A core's `now` (time since the run or the shell started) as a host instant.
pub fn host_time(at: Duration) -> HostTime {
    HostTime::ZERO.saturating_add(at)
}

/// The old name of [`host_time`], kept for the scenario runner.
pub use self::host_time as sim_time;

/// What a [`DhcpClientService`] did, shared with whoever started it.
#[derive(Debug, Default)]
pub struct ClientRecord {
    /// Every event of the client, in order.
    pub events: Vec<crate::ClientEvent>,
    /// The lease, once bound.
    pub lease: Option<crate::Lease>,
    /// Why there is none, once the client gave up.
    pub failure: Option<crate::Failure>,
}

/// `dhcp::Client` on UDP 68 of one adapter: one DORA as UEFI firmware runs it. On a lease it
/// sets the adapter's address (before anything else it sends, as the contract asks) and
/// records the lease; `nulab-dhcp-client` runs it on a real interface.
pub struct DhcpClientService {
    config: crate::ClientConfig,
    adapter: usize,
    client: Option<crate::Client>,
    record: Rc<RefCell<ClientRecord>>,
    armed: Option<HostTime>,
}

impl DhcpClientService {
    pub fn new(
        config: crate::ClientConfig,
        adapter: usize,
        record: Rc<RefCell<ClientRecord>>,
    ) -> Self {
        Self {
            config,
            adapter,
            client: None,
            record,
            armed: None,
        }
    }

    fn flush(&mut self, stack: &mut dyn HostStack) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        // Events first: a lease's address is in effect before what the lease enables leaves.
        let mut record = self.record.borrow_mut();
        while let Some(event) = client.poll_event() {
            match &event {
                crate::ClientEvent::Bound(lease) => {
                    let _ = stack.set_ipv4(self.adapter, Some(lease.network()));
                    record.lease = Some((**lease).clone());
                }
                crate::ClientEvent::Failed(failure) => record.failure = Some(failure.clone()),
                _ => {}
            }
            record.events.push(event);
        }
        while let Some(t) = client.poll_transmit() {
            let _ = stack.send(t.interface, t.src, t.dst, Bytes::from(t.payload));
        }
        if let Some(at) = client.poll_timeout().map(host_time)
            && self.armed != Some(at)
        {
            self.armed = Some(at);
            stack.set_timer(at, 0);
        }
    }
}

impl Service for DhcpClientService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let now = stack.now().since_start();
        let _ = stack.bind(crate::CLIENT_PORT);
        let Some(adapter) = stack.adapters().get(self.adapter) else {
            return;
        };
        let facts = crate::AdapterFacts {
            mac: adapter.mac.octets(),
            link_up: adapter.link_up,
            dhcp_enabled: adapter.dhcp_enabled,
            uefi_driver: adapter.uefi_driver,
        };
        let mut client = crate::Client::new(self.config.clone(), facts, self.adapter);
        client.start(now, stack.rng());
        self.client = Some(client);
        self.flush(stack);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        let now = stack.now().since_start();
        if let Some(client) = self.client.as_mut() {
            let received = Received {
                interface: d.adapter,
                src: d.src,
                dst: d.dst,
                payload: &d.payload,
            };
            client.handle(now, received, stack.rng());
        }
        self.flush(stack);
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        let now = stack.now().since_start();
        self.armed = None;
        if let Some(client) = self.client.as_mut() {
            client.handle_timeout(now, stack.rng());
        }
        self.flush(stack);
    }
}
