//! Wake on LAN in the simulator: a sleeping machine whose adapters listen for a magic packet,
//! and the server that sends one. The seed names Wake on LAN as one of the moments a TPM+PIN
//! machine needs its PIN, so a woken machine boots unattended through Network Unlock.
//!
//! [`Sleeping`] wraps the machine's boot service: until a datagram on UDP 9 carries a magic
//! packet for one of the host's MACs (`boot_client::boot::magic_packet_target`), it only
//! listens; then the boot starts, at the moment the packet arrived. A packet lost on the way
//! (a fault) leaves the machine asleep. Real NICs listen below IP, for any frame; nulab's
//! listens on the broadcast UDP port the senders of the seed's era use, which is what the
//! simulator delivers.
//!
//! [`MagicPacketSender`] sends one magic packet per target MAC, broadcast to UDP 9 on its
//! first adapter, at a time.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use boot_client::boot::{WAKE_ON_LAN_PORT, magic_packet, magic_packet_target};
use netsim::{Bytes, Datagram, HostStack, Service, SimTime as HostTime};

/// A machine asleep until a magic packet for one of its MACs arrives; then `boot`.
pub struct Sleeping<S> {
    boot: S,
    awake: bool,
}

impl<S: Service> Sleeping<S> {
    pub fn new(boot: S) -> Self {
        Self { boot, awake: false }
    }
}

impl<S: Service> Service for Sleeping<S> {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        if self.awake {
            return self.boot.on_start(stack);
        }
        // A failed bind leaves the machine asleep for ever, as a NIC without Wake on LAN would.
        let _ = stack.bind(WAKE_ON_LAN_PORT);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        if self.awake {
            return self.boot.on_datagram(stack, datagram);
        }
        let Some(target) = magic_packet_target(&datagram.payload) else {
            return;
        };
        if datagram.dst.port() == WAKE_ON_LAN_PORT
            && stack.adapters().iter().any(|a| a.mac.octets() == target)
        {
            self.awake = true;
            stack.unbind(WAKE_ON_LAN_PORT);
            self.boot.on_start(stack);
        }
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        if self.awake {
            self.boot.on_timer(stack, token);
        }
    }
}

/// The port the sender sends from.
const SENDER_PORT: u16 = 40_009;

/// Sends a magic packet for each MAC at `at`, broadcast from `source` on the first adapter.
pub struct MagicPacketSender {
    pub at: HostTime,
    pub source: Ipv4Addr,
    pub targets: Vec<[u8; 6]>,
}

impl Service for MagicPacketSender {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        if stack.bind(SENDER_PORT).is_ok() {
            stack.set_timer(self.at, 0);
        }
    }

    fn on_datagram(&mut self, _stack: &mut dyn HostStack, _datagram: Datagram) {}

    fn on_timer(&mut self, stack: &mut dyn HostStack, _token: u64) {
        let source = SocketAddr::V4(SocketAddrV4::new(self.source, SENDER_PORT));
        let destination = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, WAKE_ON_LAN_PORT));
        for mac in &self.targets {
            // A refused send (link down) is a lost packet: the machine stays asleep.
            let _ = stack.send(0, source, destination, Bytes::from(magic_packet(*mac)));
        }
    }
}
