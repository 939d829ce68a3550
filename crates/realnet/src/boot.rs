//! One boot against a real network: `nulab client`'s engine. It is the one [`Driver`] plus
//! the boot service the simulator runs too (`boot_client::service::BootService`, driving the
//! sans-IO boot core [`boot_client::boot::Boot`]).
//!
//! Sockets, per adapter in boot order: UDP 68 on IPv4 and, when the interface has an IPv6
//! link-local address, UDP 546 on IPv6, each bound to its device, so that an address-less
//! client can broadcast its DHCPDISCOVER and its Network Unlock request and hear the replies,
//! and so the shell knows which adapter a datagram came in on.
//!
//! The OS configuration: when the core reports a lease, the service sets the adapter's address
//! through the contract, which the driver applies with `ip address replace` before any
//! datagram sent after it leaves, as a UEFI DHCP driver configures its IP4 protocol: the first
//! Network Unlock request leaves from the leased address, so a server that answers unicast to
//! the request's source (both open-source providers do) is heard on the first attempt. A
//! failure to configure is reported as a [`ShellNote`], not fatal (the provider may still
//! answer by broadcast).
//!
//! `now` for the core is the time since the boot started (tokio's monotonic clock); the seed
//! of the boot's RNG comes from the OS, or from the caller to replay a boot.

use std::cell::RefCell;
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use boot_client::boot::{BootAdapter, BootConfig, BootEvent, BootOutcome};
use boot_client::service::{BootRecord, BootService, Machine};
use tpm::Tpm;
use volume::Volume;

pub use crate::driver::ShellNote;
use crate::driver::{AddressMode, Driver, DriverConfig};
use crate::{ShellError, adapter_facts};
/// What a boot's DHCP client did ([`BootEvent::Dhcp`]'s event), for callers describing events.
pub use dhcp::ClientEvent;

/// The adapters as the firmware would report them, in boot order: MAC and link state from
/// sysfs, the IPv6 link-local address from `/proc/net/if_inet6`.
pub fn boot_adapters(interfaces: &[String]) -> Result<Vec<BootAdapter>, ShellError> {
    interfaces
        .iter()
        .map(|name| {
            Ok(BootAdapter {
                name: name.clone(),
                facts: adapter_facts(name)?,
                ipv6_link_local: link_local(name),
            })
        })
        .collect()
}

/// The interface's IPv6 link-local address, if it has one.
pub fn link_local(interface: &str) -> Option<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    parse_if_inet6(&table, interface)
}

/// `/proc/net/if_inet6`: address (32 hex digits), index, prefix length, scope, flags, name.
fn parse_if_inet6(table: &str, interface: &str) -> Option<Ipv6Addr> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, _, scope, _, name] = fields.as_slice() else {
            return None;
        };
        if *name != interface || *scope != "20" || hex.len() != 32 {
            return None;
        }
        let bits = u128::from_str_radix(hex, 16).ok()?;
        Some(Ipv6Addr::from(bits))
    })
}

/// Boots `volume` with `tpm` over the adapters of `config` (named by `BootAdapter::name`),
/// until the core has an outcome or `limit` passes. Calls `on_event` for every core event and
/// `on_note` for what the shell itself did. Returns the outcome, the volume label read through
/// the unlocked keys (the proof that the data really decrypts), and the volume and TPM, whose
/// state (the TPM's failure counter) the caller may save.
pub async fn run_boot(
    config: BootConfig,
    volume: Volume,
    tpm: Box<dyn Tpm>,
    rng_seed: [u8; 32],
    limit: Duration,
    mut on_event: impl FnMut(&BootEvent),
    mut on_note: impl FnMut(&ShellNote),
) -> Result<BootEnd, ShellError> {
    let interfaces: Vec<String> = config.adapters.iter().map(|a| a.name.clone()).collect();
    let mut driver_config = DriverConfig::new(interfaces.clone());
    driver_config.seed = Some(rng_seed);
    driver_config.addresses = AddressMode::Configure;
    for adapter in &config.adapters {
        if !adapter.facts.dhcp_enabled {
            driver_config.dhcp_disabled.push(adapter.name.clone());
        }
        if !adapter.facts.uefi_driver {
            driver_config.no_uefi_driver.push(adapter.name.clone());
        }
    }
    let mut driver = Driver::new(driver_config)?;
    let machine = Rc::new(RefCell::new(Machine {
        volume: Some(volume),
        tpm: Some(tpm),
    }));
    let record = Rc::new(RefCell::new(BootRecord::default()));
    let mut service = BootService::new(config, Rc::clone(&machine), Rc::clone(&record));
    let mut reported = 0;
    let mut report = |driver: &mut Driver| {
        for note in driver.take_notes() {
            on_note(&note);
        }
        let record = record.borrow();
        for event in &record.events[reported..] {
            on_event(event);
        }
        reported = record.events.len();
        if record.outcome.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    driver.start(&mut service).await;
    if driver.open_sockets() == 0 {
        return Err(crate::drive::no_socket(&mut driver, &interfaces.join(",")));
    }
    if report(&mut driver).is_continue() {
        driver
            .run_until(&mut service, tokio::time::sleep(limit), &mut report)
            .await;
    }
    drop(service);
    let (outcome, label) = {
        let mut record = record.borrow_mut();
        let Some(outcome) = record.outcome.take() else {
            return Err(ShellError::TimedOut(limit));
        };
        (*outcome, record.label.take())
    };
    let mut machine = machine.borrow_mut();
    let (Some(volume), Some(tpm)) = (machine.volume.take(), machine.tpm.take()) else {
        return Err(ShellError::TimedOut(limit));
    };
    Ok(BootEnd {
        outcome,
        label,
        volume,
        tpm,
    })
}

/// How a boot ended.
pub struct BootEnd {
    pub outcome: BootOutcome,
    /// The volume label, read by decrypting the volume with the keys the boot obtained.
    pub label: Option<String>,
    pub volume: Volume,
    pub tpm: Box<dyn Tpm>,
}

/// A TPM shared between the boot (which owns a `Box<dyn Tpm>`) and the caller, who saves its
/// state afterwards: the boot core hands back only the trait object, which cannot be turned
/// back into the simulated TPM it was.
pub struct SharedTpm<T>(pub Rc<RefCell<T>>);

impl<T: Tpm> Tpm for SharedTpm<T> {
    fn pcr_read(&mut self, pcr: tpm::PcrIndex) -> Result<tpm::PcrValue, tpm::TpmError> {
        self.0.borrow_mut().pcr_read(pcr)
    }
    fn pcr_extend(&mut self, pcr: tpm::PcrIndex, digest: &[u8; 32]) -> Result<(), tpm::TpmError> {
        self.0.borrow_mut().pcr_extend(pcr, digest)
    }
    fn seal(
        &mut self,
        secret: &[u8],
        policy: &tpm::SealPolicy,
    ) -> Result<tpm::SealedBlob, tpm::TpmError> {
        self.0.borrow_mut().seal(secret, policy)
    }
    fn unseal(
        &mut self,
        blob: &tpm::SealedBlob,
        auth: Option<&tpm::AuthValue>,
        now: Duration,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, tpm::TpmError> {
        self.0.borrow_mut().unseal(blob, auth, now)
    }
    fn get_random(&mut self, len: usize) -> Result<Vec<u8>, tpm::TpmError> {
        self.0.borrow_mut().get_random(len)
    }
    fn set_dictionary_attack_policy(
        &mut self,
        policy: tpm::DictionaryAttackPolicy,
    ) -> Result<(), tpm::TpmError> {
        self.0.borrow_mut().set_dictionary_attack_policy(policy)
    }
    fn lockout_status(&mut self, now: Duration) -> Result<tpm::LockoutStatus, tpm::TpmError> {
        self.0.borrow_mut().lockout_status(now)
    }
    fn reset_lockout(&mut self) -> Result<(), tpm::TpmError> {
        self.0.borrow_mut().reset_lockout()
    }
    fn restart(&mut self, now: Duration) -> Result<(), tpm::TpmError> {
        self.0.borrow_mut().restart(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_link_local_address_from_if_inet6() {
        let table = "\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 03 40 20 80     cli0
20010db8000000000000000000000001 03 40 00 80     cli0
";
        assert_eq!(
            parse_if_inet6(table, "cli0"),
            Some("fe80::1".parse().expect("address"))
        );
        assert_eq!(
            parse_if_inet6(table, "lo"),
            None,
            "loopback is not link scope"
        );
        assert_eq!(parse_if_inet6(table, "eth9"), None);
        assert_eq!(parse_if_inet6("garbage\n", "cli0"), None);
    }
}
