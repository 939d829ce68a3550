//! Whole boots in the deterministic simulator, end to end: a DHCP server host, a WDS host with
//! the Network Unlock provider, and a client machine with two adapters, a real encrypted volume
//! (TPM+PIN, Network Unlock and recovery-password protectors) and a simulated TPM. The client
//! leases an address from the DHCP server, unlocks over the network, and falls back to the PIN
//! or the recovery password when the network cannot unlock it, saying why.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use boot_client::boot::{BootConfig, BootResult, ConsoleInput, Keystrokes, Prompt};
use boot_client::exchange::Transport;
use boot_client::service::{BootRecord, BootService, Machine};
use certificates::CertificateBundle;
use dhcp::service::DhcpServerService;
use dhcp::{Pool, Server, ServerConfig};
use netsim::{AdapterConfig, HostId, SegmentConfig, SegmentId, SimTime, Simulation};
use nkpu::ProviderKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tpm::{DictionaryAttackPolicy, PcrIndex, PcrSelection, SimulatedTpm, Tpm};
use unlock_server::provider::Provider;
use unlock_server::service::UnlockService;
use volume::policy::NetworkUnlockCertificate;
use volume::{ProtectorKind, RecoveryPassword, Volume};

const PIN: &str = "246810";

fn net(s: &str) -> netsim::Ipv4Net {
    s.parse().unwrap()
}

/// The Network Unlock certificate, generated once (RSA key generation is the slow part).
fn certificate() -> &'static CertificateBundle {
    static BUNDLE: OnceLock<CertificateBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| certificates::fixture::network_unlock(1))
}

fn provider_key() -> ProviderKey {
    let key = certificate().private_key.as_ref().unwrap();
    ProviderKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap()
}

/// A volume with TPM+PIN (PCR 7), Network Unlock and a recovery password, sealed to a fresh
/// simulated TPM whose PCR 7 holds a Secure Boot measurement.
fn machine(seed: u64) -> (Machine, RecoveryPassword) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut tpm = SimulatedTpm::manufacture(
        &mut ChaCha20Rng::seed_from_u64(seed + 1000),
        DictionaryAttackPolicy::default(),
    );
    let pcr7 = PcrIndex::new(7).unwrap();
    tpm.pcr_extend(pcr7, &[7; 32]).unwrap();
    let pcrs = PcrSelection::of(&[7]).unwrap();
    let (mut volume, keys) = Volume::create(64 * 1024, "OSDisk", &mut rng).unwrap();
    volume
        .add_tpm_and_pin_protector(&keys, &mut tpm, pcrs, PIN, &mut rng)
        .unwrap();
    let cert = NetworkUnlockCertificate::from_der(certificate().certificate.der()).unwrap();
    volume
        .add_network_unlock_protector(&keys, &mut tpm, pcrs, &cert, &mut rng)
        .unwrap();
    let (_, password) = volume
        .add_recovery_password_protector(&keys, None, 10, &mut rng)
        .unwrap();
    let tpm: Box<dyn Tpm> = Box::new(tpm);
    (
        Machine {
            volume: Some(volume),
            tpm: Some(tpm),
        },
        password,
    )
}

struct Lab {
    sim: Simulation,
    servers: SegmentId,
    wds: HostId,
    provider: Rc<RefCell<Provider>>,
    client: Option<HostId>,
    record: Rc<RefCell<BootRecord>>,
    machine: Rc<RefCell<Machine>>,
    password: RecoveryPassword,
}

/// DHCP server 10.0.4.2 and WDS 10.0.4.10 on "servers" (10.0.4.0/24); with `branch`, a router
/// relays from "branch" (10.0.9.0/24) to the listed helpers.
fn lab(seed: u64, branch_helpers: Option<Vec<Ipv4Addr>>) -> (Lab, SegmentId) {
    let mut sim = Simulation::new(seed);
    sim.enable_trace();
    let servers = sim.add_segment("servers", SegmentConfig::default().ipv4(net("10.0.4.0/24")));
    let dhcp_host = sim.add_host("dhcp");
    sim.add_adapter(
        dhcp_host,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.4.2/24")),
    )
    .unwrap();
    let pools = vec![
        Pool::new(
            net("10.0.4.0/24"),
            Ipv4Addr::new(10, 0, 4, 100),
            Ipv4Addr::new(10, 0, 4, 199),
        )
        .router(Ipv4Addr::new(10, 0, 4, 1)),
        Pool::new(
            net("10.0.9.0/24"),
            Ipv4Addr::new(10, 0, 9, 100),
            Ipv4Addr::new(10, 0, 9, 199),
        )
        .router(Ipv4Addr::new(10, 0, 9, 1)),
    ];
    let server = Rc::new(RefCell::new(Server::new(ServerConfig::new(
        vec![net("10.0.4.2/24")],
        pools,
    ))));
    sim.add_service(dhcp_host, "dhcpd", move || {
        Box::new(DhcpServerService::new(server.clone()))
    })
    .unwrap();

    let wds = sim.add_host("wds");
    sim.add_adapter(
        wds,
        "eth0",
        servers,
        AdapterConfig::static_ipv4(net("10.0.4.10/24")),
    )
    .unwrap();
    let mut provider = Provider::new(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0x10]);
    provider.add_certificate(certificate().thumbprint(), provider_key());
    let provider = Rc::new(RefCell::new(provider));
    let shared = provider.clone();
    sim.add_service(wds, "WDSServer", move || {
        Box::new(UnlockService::new(shared.clone()))
    })
    .unwrap();

    let client_segment = match branch_helpers {
        None => servers,
        Some(helpers) => {
            let branch =
                sim.add_segment("branch", SegmentConfig::default().ipv4(net("10.0.9.0/24")));
            let router = sim.add_router("router");
            let relay = sim
                .add_router_interface(router, branch, net("10.0.9.1/24"))
                .unwrap();
            sim.add_router_interface(router, servers, net("10.0.4.1/24"))
                .unwrap();
            sim.set_relay(relay, helpers).unwrap();
            branch
        }
    };
    let (machine, password) = machine(seed);
    (
        Lab {
            sim,
            servers,
            wds,
            provider,
            client: None,
            record: Rc::new(RefCell::new(BootRecord::default())),
            machine: Rc::new(RefCell::new(machine)),
            password,
        },
        client_segment,
    )
}

impl Lab {
    /// The client host with adapters `(name, segment, config)` in firmware order.
    fn client(&mut self, adapters: Vec<(&str, SegmentId, AdapterConfig)>, config: BootConfig) {
        let host = self.sim.add_host("client");
        for (name, segment, adapter) in adapters {
            self.sim.add_adapter(host, name, segment, adapter).unwrap();
        }
        let machine = self.machine.clone();
        let record = self.record.clone();
        self.sim
            .add_service(host, "bootmgr", move || {
                Box::new(BootService::new(
                    config.clone(),
                    machine.clone(),
                    record.clone(),
                ))
            })
            .unwrap();
        self.client = Some(host);
    }

    fn run(&mut self) -> BootResult {
        self.sim.run_until(SimTime::from_secs(120));
        let record = self.record.borrow();
        record
            .outcome
            .clone()
            .unwrap_or_else(|| panic!("no outcome\n{}", self.sim.trace_text()))
            .result
    }

    fn failures(&self) -> Vec<(ProtectorKind, String)> {
        let record = self.record.borrow();
        record
            .outcome
            .as_ref()
            .unwrap()
            .failures
            .iter()
            .map(|f| (f.protector, f.reason.clone()))
            .collect()
    }
}

fn pin_after(secs: u64) -> Vec<ConsoleInput> {
    vec![ConsoleInput {
        after: Duration::from_secs(secs),
        keys: Keystrokes::Pin(PIN.into()),
    }]
}

fn unlocked_by(result: &BootResult) -> Option<ProtectorKind> {
    match result {
        BootResult::Unlocked { protector, .. } => Some(*protector),
        _ => None,
    }
}

#[test]
fn two_adapters_on_one_segment_unlock_over_the_network() {
    let (mut lab, segment) = lab(1, None);
    lab.client(
        vec![
            ("eth0", segment, AdapterConfig::dhcp()),
            ("eth1", segment, AdapterConfig::dhcp()),
        ],
        BootConfig::default(),
    );
    let result = lab.run();
    assert_eq!(
        unlocked_by(&result),
        Some(ProtectorKind::NetworkUnlock),
        "{result:?}\n{}",
        lab.sim.trace_text()
    );
    assert!(lab.failures().is_empty(), "{:?}", lab.failures());
    assert_eq!(lab.record.borrow().label.as_deref(), Some("OSDisk"));
    assert_eq!(lab.provider.borrow().counter("replied"), 1);
    // The TPM is back in the machine for the next boot.
    assert!(lab.machine.borrow().tpm.is_some());
}

#[test]
fn unlocks_across_a_relay_that_forwards_to_dhcp_and_wds() {
    let (mut lab, branch) = lab(
        2,
        Some(vec![
            Ipv4Addr::new(10, 0, 4, 2),
            Ipv4Addr::new(10, 0, 4, 10),
        ]),
    );
    lab.client(
        vec![("eth0", branch, AdapterConfig::dhcp())],
        BootConfig::default(),
    );
    let result = lab.run();
    assert_eq!(
        unlocked_by(&result),
        Some(ProtectorKind::NetworkUnlock),
        "{result:?}\n{}",
        lab.sim.trace_text()
    );
}

#[test]
fn a_relay_to_the_dhcp_server_only_leases_but_falls_back_to_the_pin() {
    let (mut lab, branch) = lab(3, Some(vec![Ipv4Addr::new(10, 0, 4, 2)]));
    lab.client(
        vec![("eth0", branch, AdapterConfig::dhcp())],
        BootConfig {
            console: pin_after(5),
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::TpmAndPin));
    let failures = lab.failures();
    assert_eq!(failures[0].0, ProtectorKind::NetworkUnlock);
    assert!(
        failures[0].1.contains("DHCPv4: no reply to 2 request(s)"),
        "{failures:?}"
    );
}

#[test]
fn wds_stopped_falls_back_to_the_pin_typed_after_five_seconds() {
    let (mut lab, segment) = lab(4, None);
    let wds = lab.wds;
    lab.sim
        .stop_service_at(SimTime::ZERO, wds, "WDSServer")
        .unwrap();
    lab.client(
        vec![("eth0", segment, AdapterConfig::dhcp())],
        BootConfig {
            console: pin_after(5),
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    let BootResult::Unlocked { protector, at } = result else {
        panic!("{result:?}");
    };
    assert_eq!(protector, ProtectorKind::TpmAndPin);
    // DORA, then two requests 2 s apart and 2 s of waiting, then 5 s at the prompt.
    assert!(at >= Duration::from_secs(9), "{at:?}");
    assert_eq!(lab.failures()[0].0, ProtectorKind::NetworkUnlock);
    assert_eq!(lab.record.borrow().label.as_deref(), Some("OSDisk"));
}

#[test]
fn a_certificate_restricted_to_another_subnet_is_refused_and_the_pin_unlocks() {
    let (mut lab, segment) = lab(5, None);
    let thumbprint = certificate().thumbprint();
    let ini = format!("[SUBNETS]\nBRANCH=10.0.9.0/24\n\n[{thumbprint}]\nBRANCH\n");
    lab.provider
        .borrow_mut()
        .load_policy(Duration::ZERO, Some(&ini));
    lab.client(
        vec![("eth0", segment, AdapterConfig::dhcp())],
        BootConfig {
            console: pin_after(3),
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::TpmAndPin));
    assert_eq!(lab.provider.borrow().counter("replied"), 0);
    let refused: u64 = lab
        .provider
        .borrow()
        .counters()
        .iter()
        .filter(|(label, _)| label.contains("subnet"))
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(refused, 2, "{:?}", lab.provider.borrow().counters());
}

#[test]
fn a_management_port_without_dhcp_first_stops_enumeration() {
    let (mut lab, segment) = lab(6, None);
    lab.client(
        vec![
            (
                "lom",
                segment,
                AdapterConfig::static_ipv4(net("10.0.4.250/24")),
            ),
            ("eth0", segment, AdapterConfig::dhcp()),
        ],
        BootConfig {
            console: pin_after(2),
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::TpmAndPin));
    let failures = lab.failures();
    assert!(
        failures[0].1.contains("adapter 1 (lom)") && failures[0].1.contains("enumeration stops"),
        "{failures:?}"
    );
    assert_eq!(lab.provider.borrow().counter("replied"), 0);
}

#[test]
fn a_first_adapter_on_a_network_without_wds_moves_on_to_the_second() {
    let (mut lab, segment) = lab(7, None);
    // A second DHCP-only network for the first adapter.
    let isolated = lab.sim.add_segment(
        "isolated",
        SegmentConfig::default().ipv4(net("192.168.50.0/24")),
    );
    let dhcp2 = lab.sim.add_host("dhcp2");
    lab.sim
        .add_adapter(
            dhcp2,
            "eth0",
            isolated,
            AdapterConfig::static_ipv4(net("192.168.50.2/24")),
        )
        .unwrap();
    let server = Rc::new(RefCell::new(Server::new(ServerConfig::new(
        vec![net("192.168.50.2/24")],
        vec![Pool::new(
            net("192.168.50.0/24"),
            Ipv4Addr::new(192, 168, 50, 100),
            Ipv4Addr::new(192, 168, 50, 199),
        )],
    ))));
    lab.sim
        .add_service(dhcp2, "dhcpd", move || {
            Box::new(DhcpServerService::new(server.clone()))
        })
        .unwrap();
    lab.client(
        vec![
            ("eth0", isolated, AdapterConfig::dhcp()),
            ("eth1", segment, AdapterConfig::dhcp()),
        ],
        BootConfig::default(),
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::NetworkUnlock));
    let events = &lab.record.borrow().events;
    assert!(
        events.iter().any(|e| matches!(
            e,
            boot_client::boot::BootEvent::NoUnlockOnAdapter { adapter: 0, .. }
        )),
        "{events:?}"
    );
}

#[test]
fn nobody_at_the_console_leaves_the_machine_waiting_for_the_pin() {
    let (mut lab, segment) = lab(8, None);
    let wds = lab.wds;
    lab.sim.crash_at(SimTime::ZERO, wds).unwrap();
    lab.client(
        vec![("eth0", segment, AdapterConfig::dhcp())],
        BootConfig::default(),
    );
    let result = lab.run();
    assert!(
        matches!(
            result,
            BootResult::Waiting {
                prompt: Prompt::Pin,
                ..
            }
        ),
        "{result:?}"
    );
    assert!(lab.record.borrow().label.is_none());
}

#[test]
fn a_pcr_change_sends_the_user_to_recovery_and_the_password_unlocks() {
    let (mut lab, segment) = lab(9, None);
    {
        // A firmware update measured into PCR 7.
        let mut machine = lab.machine.borrow_mut();
        let tpm = machine.tpm.as_mut().unwrap();
        tpm.pcr_extend(PcrIndex::new(7).unwrap(), &[0xf1; 32])
            .unwrap();
    }
    let password = lab.password.to_string();
    lab.client(
        vec![("eth0", segment, AdapterConfig::dhcp())],
        BootConfig {
            console: vec![
                ConsoleInput {
                    after: Duration::from_secs(4),
                    keys: Keystrokes::Pin(PIN.into()),
                },
                ConsoleInput {
                    after: Duration::from_secs(30),
                    keys: Keystrokes::RecoveryPassword(password),
                },
            ],
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::RecoveryPassword));
    let failures = lab.failures();
    let kinds: Vec<_> = failures.iter().map(|f| f.0).collect();
    assert_eq!(
        kinds,
        [ProtectorKind::NetworkUnlock, ProtectorKind::TpmAndPin],
        "{failures:?}"
    );
    assert!(failures[0].1.contains("PCRs differ"), "{failures:?}");
    assert!(failures[1].1.contains("PCRs differ"), "{failures:?}");
    // Network Unlock never sent a request: the TPM refused before the network was touched.
    assert_eq!(lab.provider.borrow().counter("replied"), 0);
}

#[test]
fn csm_firmware_skips_network_unlock_with_the_reason() {
    let (mut lab, segment) = lab(10, None);
    let mut config = BootConfig {
        console: pin_after(1),
        ..BootConfig::default()
    };
    config.firmware.csm_enabled = true;
    lab.client(vec![("eth0", segment, AdapterConfig::dhcp())], config);
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::TpmAndPin));
    assert!(lab.failures()[0].1.contains("Compatibility Support Module"));
    assert_eq!(lab.record.borrow().sent, 0, "no packet leaves a CSM boot");
}

#[test]
fn ipv6_first_unlocks_over_dhcpv6() {
    let (mut lab, segment) = lab(11, None);
    lab.client(
        vec![("eth0", segment, AdapterConfig::dhcp())],
        BootConfig {
            order: vec![Transport::DhcpV6, Transport::DhcpV4],
            ..BootConfig::default()
        },
    );
    let result = lab.run();
    assert_eq!(unlocked_by(&result), Some(ProtectorKind::NetworkUnlock));
    let events = &lab.record.borrow().events;
    assert!(
        events.iter().any(|e| matches!(
            e,
            boot_client::boot::BootEvent::Exchange {
                event: boot_client::exchange::ExchangeEvent::Unlocked {
                    transport: Transport::DhcpV6,
                    ..
                },
                ..
            }
        )),
        "{events:?}"
    );
    let _ = lab.servers;
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = || {
        let (mut lab, segment) = lab(12, None);
        lab.client(
            vec![("eth0", segment, AdapterConfig::dhcp())],
            BootConfig::default(),
        );
        lab.run();
        lab.sim.trace_text()
    };
    assert_eq!(run(), run());
}
