//! The provider as a [`netsim::Service`]: the WDS server's UDP 67 and 547 listeners in front of
//! [`Provider`]. The same service runs in the simulator and, through the real-socket shell that
//! offers the same [`HostStack`], on a real network.
//!
//! The [`Provider`] is shared (`Rc<RefCell<_>>`) with whoever built the service, so a scenario
//! reads its counters and log after the run; a crash or a stopped WDS service drops the
//! listener (nothing answers), while the certificate store and the policy file, which live on
//! disk on a real server, survive it.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use netsim::{Bytes, Datagram, HostStack, Service};

use crate::provider::{Outcome, Provider, Received};

/// The DHCPv4 server port the provider listens on.
pub const DHCPV4_SERVER_PORT: u16 = 67;
/// The DHCPv6 server port the provider listens on.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// The WDS server's Network Unlock listener.
pub struct UnlockService {
    provider: Rc<RefCell<Provider>>,
}

impl UnlockService {
    pub fn new(provider: Rc<RefCell<Provider>>) -> Self {
        Self { provider }
    }
}

impl Service for UnlockService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let now = stack.now().since_start();
        let mut provider = self.provider.borrow_mut();
        for port in [DHCPV4_SERVER_PORT, DHCPV6_SERVER_PORT] {
            if let Err(err) = stack.bind(port) {
                provider.note_error(now, format!("cannot listen on UDP {port}: {err}"));
            }
        }
        provider.note_info(
            now,
            format!("WDS service listening on {}", stack.host_name()),
        );
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        let now = stack.now().since_start();
        let outcome = self.provider.borrow_mut().handle(
            now,
            Received {
                source: datagram.src,
                payload: &datagram.payload,
            },
        );
        let Outcome::Replied { transmit, .. } = outcome else {
            return;
        };
        let Some(adapter) = stack.adapters().get(datagram.adapter) else {
            return;
        };
        // Answer from the address the request reached, on the same adapter.
        let source = match transmit.destination {
            SocketAddr::V4(_) => adapter
                .ipv4
                .map(|net| SocketAddr::new(IpAddr::V4(net.addr()), DHCPV4_SERVER_PORT)),
            SocketAddr::V6(_) => Some(SocketAddr::new(
                IpAddr::V6(adapter.ipv6_link_local),
                DHCPV6_SERVER_PORT,
            )),
        };
        let Some(source) = source else {
            self.provider.borrow_mut().note_error(
                now,
                format!(
                    "adapter {} has no IPv4 address to answer from",
                    adapter.name
                ),
            );
            return;
        };
        if let Err(err) = stack.send(
            datagram.adapter,
            source,
            transmit.destination,
            Bytes::from(transmit.payload),
        ) {
            self.provider
                .borrow_mut()
                .note_error(now, format!("cannot send the reply: {err}"));
        }
    }

    fn on_timer(&mut self, _: &mut dyn HostStack, _: u64) {}
}
