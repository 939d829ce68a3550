//! One boot against a real network: `nulab client`'s engine. It drives the lead's sans-IO boot
//! core ([`boot_client::boot::Boot`]) over real interfaces and moves nothing but datagrams,
//! time and one piece of OS configuration.
//!
//! Sockets, per adapter in boot order: UDP 68 on IPv4 and, when the interface has an IPv6
//! link-local address, UDP 546 on IPv6, each bound to its device (`SO_BINDTODEVICE`, with
//! `SO_BROADCAST` on IPv4) so that an address-less client can broadcast its DHCPDISCOVER and its
//! Network Unlock request and hear the replies, and so the shell knows which adapter a
//! datagram came in on.
//!
//! The OS configuration: when the core reports a lease ([`BootEvent::Dhcp`] carrying
//! `ClientEvent::Bound`), the shell puts the address on the interface, as a UEFI DHCP driver
//! configures its IP4 protocol, with `ip address replace` (iproute2: one command instead of a
//! netlink library for one call). The exchange would work without it (Windows sets the
//! broadcast flag and the provider answers by broadcast), so a failure is reported as an event
//! line, not fatal.
//!
//! `now` for the core is the time since the boot started (tokio's monotonic clock); the seed of
//! the boot's RNG comes from the OS, or from the caller to replay a boot.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use boot_client::boot::{Boot, BootAdapter, BootConfig, BootEvent, BootOutcome};
use dhcp::ClientEvent;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tpm::Tpm;
use volume::Volume;

use crate::interface::scoped;
use crate::{InterfaceSocket, ShellError, adapter_facts, wds::interface_index};

const MAX_DATAGRAM: usize = 2048;
const CLIENT_V4_PORT: u16 = 68;
const CLIENT_V6_PORT: u16 = 546;

/// One adapter's sockets.
struct AdapterSockets {
    name: String,
    ifindex: u32,
    v4: Arc<UdpSocket>,
    v6: Option<Arc<UdpSocket>>,
}

/// What the shell reports besides the core's own events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellNote {
    /// The leased address was put on the interface.
    AddressConfigured { interface: String, address: String },
    /// It could not be; the exchange goes on (the reply comes by broadcast).
    AddressNotConfigured { interface: String, why: String },
}

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
    let mut adapters = Vec::new();
    for adapter in &config.adapters {
        let name = adapter.name.clone();
        let v4 = Arc::new(InterfaceSocket::open(&name, CLIENT_V4_PORT)?.socket);
        let ifindex = interface_index(&name)?;
        let v6 = match adapter.ipv6_link_local {
            Some(_) => Some(Arc::new(
                InterfaceSocket::open_v6(&name, CLIENT_V6_PORT, None)?.socket,
            )),
            None => None,
        };
        adapters.push(AdapterSockets {
            name,
            ifindex,
            v4,
            v6,
        });
    }
    // One receive task per socket, all feeding the loop below, which alone touches the core.
    let (tx, mut incoming) = mpsc::channel::<(usize, SocketAddr, SocketAddr, Vec<u8>)>(64);
    let mut receivers = tokio::task::JoinSet::new();
    for (index, adapter) in adapters.iter().enumerate() {
        let local_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_V4_PORT));
        let local_v6 = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            CLIENT_V6_PORT,
            0,
            0,
        ));
        for (socket, local) in [
            (Some(&adapter.v4), local_v4),
            (adapter.v6.as_ref(), local_v6),
        ] {
            let Some(socket) = socket else { continue };
            let socket = Arc::clone(socket);
            let tx = tx.clone();
            receivers.spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    match socket.recv_from(&mut buf).await {
                        Ok((len, source)) => {
                            if tx
                                .send((index, source, local, buf[..len].to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(_) => tokio::task::yield_now().await,
                    }
                }
            });
        }
    }
    drop(tx);

    let epoch = Instant::now();
    let mut boot = Boot::start(Duration::ZERO, config, volume, tpm, rng_seed);
    let run = async {
        loop {
            while let Some(t) = boot.poll_transmit() {
                let Some(adapter) = adapters.get(t.adapter) else {
                    continue;
                };
                let socket = match t.destination {
                    SocketAddr::V4(_) => Some(&adapter.v4),
                    SocketAddr::V6(_) => adapter.v6.as_ref(),
                };
                if let Some(socket) = socket {
                    // A failed send is a lost datagram: the core's timers cope with loss.
                    let _ = socket
                        .send_to(&t.payload, scoped(t.destination, adapter.ifindex))
                        .await;
                }
            }
            while let Some(event) = boot.poll_event() {
                if let BootEvent::Dhcp {
                    adapter,
                    event: ClientEvent::Bound(lease),
                    ..
                } = &event
                    && let Some(sockets) = adapters.get(*adapter)
                {
                    on_note(&configure_address(&sockets.name, lease.network()));
                }
                on_event(&event);
            }
            if let Some(outcome) = boot.outcome() {
                return outcome.clone();
            }
            tokio::select! {
                datagram = incoming.recv() => {
                    let Some((adapter, source, local, payload)) = datagram else {
                        // Every receive task ended: only timers can move the core now.
                        std::future::pending::<()>().await;
                        continue;
                    };
                    boot.handle_datagram(epoch.elapsed(), adapter, source, local, &payload);
                }
                () = sleep_until(epoch, boot.poll_timeout()) => {
                    boot.handle_timeout(epoch.elapsed());
                }
            }
        }
    };
    let outcome = tokio::time::timeout(limit, run).await;
    receivers.abort_all();
    let outcome = outcome.map_err(|_| ShellError::TimedOut(limit))?;
    let label = boot.keys().and_then(|keys| boot.volume().label(keys).ok());
    let (volume, tpm) = boot.into_parts();
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

async fn sleep_until(epoch: Instant, deadline: Option<Duration>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(epoch + at).await,
        None => std::future::pending().await,
    }
}

fn configure_address(interface: &str, network: ipnet::Ipv4Net) -> ShellNote {
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
