//! The boot client as a [`Service`] of the host contract: a machine powering on, with its
//! firmware's UEFI DHCP client and the boot manager on UDP 68 and 546. Written once: the
//! simulator runs it on a simulated host, `nulab client` on real interfaces through
//! `realnet`'s driver.
//!
//! The machine's lasting parts (the encrypted volume and the TPM, whose PCRs and lockout
//! counter outlive one boot) sit in a shared [`Machine`] that the service takes at start and
//! gives back when the boot is over, so a scenario can reboot a machine or read its TPM after
//! the run. What the boot did is appended to a shared [`BootRecord`] with simulated times.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use dhcp::ClientEvent;
use dhcp::service::host_time;
use host_contract::{Bytes, Datagram, HostStack, HostTime, Service};
use tpm::Tpm;
use volume::Volume;

use crate::boot::{Boot, BootAdapter, BootConfig, BootEvent, BootOutcome};

/// The events a boot that unlocks over the network records (protectors found, secrets
/// released, DORA, the exchange, unlocked).
const EVENTS_OF_A_NETWORK_UNLOCK: usize = 10;

/// What lasts across boots: the disk and the TPM.
pub struct Machine {
    /// `None` while a boot holds it (moved, not copied: a storm's 10,000 disks are not
    /// duplicated).
    pub volume: Option<Volume>,
    /// `None` while a boot holds it.
    pub tpm: Option<Box<dyn Tpm>>,
}

/// What one boot did, for the transcript and the expectations.
#[derive(Debug, Default)]
pub struct BootRecord {
    pub events: Vec<BootEvent>,
    /// Boxed: set once, at the end (a storm keeps 100,000 records from the start).
    pub outcome: Option<Box<BootOutcome>>,
    /// The volume label read from decrypted sector 0: proof the data decrypts.
    pub label: Option<String>,
    /// Datagrams the client sent.
    pub sent: u64,
}

/// The boot manager on a simulated host. The adapters come from the host's simulated
/// adapters (MAC, link, DHCP configuration, UEFI driver), in the host's order.
pub struct BootService {
    /// Until the instance starts and hands it to the boot; shared with whoever made the
    /// service (a simulated host's factory keeps one configuration for every restart, and a
    /// storm holds 100,000 hosts).
    config: Option<Arc<BootConfig>>,
    machine: Rc<RefCell<Machine>>,
    record: Rc<RefCell<BootRecord>>,
    /// Boxed, so a machine that has finished booting gives its boot's memory back (a storm
    /// keeps 10,000 services to the end of the run).
    boot: Option<Box<Boot>>,
    armed: Option<HostTime>,
}

impl BootService {
    /// The boot runs on the host's adapters (read at start), not on `config.adapters`; the
    /// rest is used as given.
    pub fn new(
        config: impl Into<Arc<BootConfig>>,
        machine: Rc<RefCell<Machine>>,
        record: Rc<RefCell<BootRecord>>,
    ) -> Self {
        Self {
            config: Some(config.into()),
            machine,
            record,
            boot: None,
            armed: None,
        }
    }

    fn flush(&mut self, stack: &mut dyn HostStack) {
        let Some(boot) = self.boot.as_mut() else {
            return;
        };
        let mut record = self.record.borrow_mut();
        // Events first: a lease's address goes on the adapter before anything the lease
        // enables is sent, so the first Network Unlock request leaves from the leased address
        // (the contract applies an address to every datagram sent after `set_ipv4`; sending
        // first made the real shell's first request leave from 0.0.0.0).
        while let Some(event) = boot.poll_event() {
            if let BootEvent::Dhcp { adapter, event, .. } = &event
                && let ClientEvent::Bound(lease) = event
            {
                let _ = stack.set_ipv4(*adapter, Some(lease.network()));
            }
            if record.events.capacity() == 0 {
                // A boot that unlocks over the network records ten events: room for them at
                // once, not grown from four to eight to sixteen and cut back to ten.
                record.events.reserve_exact(EVENTS_OF_A_NETWORK_UNLOCK);
            }
            record.events.push(event);
        }
        while let Some(mut t) = boot.poll_transmit() {
            record.sent += 1;
            // The datagram's exact length: an encoder's grown buffer (a kilobyte for a
            // 600-byte unlock request) would otherwise travel with it, and a storm's 100,000
            // requests are in flight at once.
            t.payload.shrink_to_fit();
            // A refused send (link down) is lost like any datagram; the timers cope.
            let _ = stack.send(t.adapter, t.source, t.destination, Bytes::from(t.payload));
        }
        if let Some(outcome) = boot.outcome() {
            record.outcome = Some(Box::new(outcome.clone()));
            // The record outlives the boot (to the end of the run): no spare capacity.
            record.events.shrink_to_fit();
            record.label = boot.keys().and_then(|keys| boot.volume().label(keys).ok());
            drop(record);
            if let Some(boot) = self.boot.take() {
                let (volume, tpm) = boot.into_parts();
                let mut machine = self.machine.borrow_mut();
                machine.volume = Some(volume);
                machine.tpm = Some(tpm);
            }
            return;
        }
        if let Some(at) = boot.poll_timeout().map(host_time)
            && self.armed != Some(at)
        {
            self.armed = Some(at);
            stack.set_timer(at, 0);
        }
    }
}

impl Service for BootService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let now = stack.now().since_start();
        let _ = stack.bind(dhcp::CLIENT_PORT);
        let _ = stack.bind(dhcp::V6_CLIENT_PORT);
        // An instance starts once (a restart is a new instance).
        let Some(config) = self.config.take() else {
            return;
        };
        let adapters = stack
            .adapters()
            .iter()
            .map(|a| BootAdapter {
                name: a.name.clone(),
                facts: dhcp::AdapterFacts {
                    mac: a.mac.octets(),
                    link_up: a.link_up,
                    dhcp_enabled: a.dhcp_enabled,
                    uefi_driver: a.uefi_driver,
                },
                // `::` is an adapter without IPv6: no DHCPv6 transport on it.
                ipv6_link_local: Some(a.ipv6_link_local).filter(|ll| !ll.is_unspecified()),
            })
            .collect();
        let (volume, tpm) = {
            let mut machine = self.machine.borrow_mut();
            match (machine.volume.take(), machine.tpm.take()) {
                (Some(volume), Some(tpm)) => (volume, tpm),
                (volume, tpm) => {
                    // The previous boot still holds the disk and the TPM: a service restarted
                    // mid-boot. The machine is powered on once per boot; nothing to do.
                    machine.volume = volume;
                    machine.tpm = tpm;
                    return;
                }
            }
        };
        let mut seed = [0u8; 32];
        stack.rng().fill_bytes(&mut seed);
        self.boot = Some(Box::new(Boot::start(
            now, config, adapters, volume, tpm, seed,
        )));
        self.flush(stack);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
        let now = stack.now().since_start();
        let Some(boot) = self.boot.as_mut() else {
            return;
        };
        // Most datagrams of a busy segment are other clients' broadcasts, dropped unseen:
        // nothing to flush then (a storm's clients receive two million of them).
        if boot.handle_datagram(now, d.adapter, d.src, d.dst, &d.payload) {
            self.flush(stack);
        }
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, _: u64) {
        let now = stack.now().since_start();
        self.armed = None;
        if let Some(boot) = self.boot.as_mut() {
            boot.handle_timeout(now);
        }
        self.flush(stack);
    }
}
