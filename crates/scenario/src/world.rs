//! Building the simulated world a scenario describes: segments, routers and relays, the DHCP
//! servers, the WDS servers (the Network Unlock provider with its certificate store and
//! `bde-network-unlock.ini`) and the client machines (a real encrypted volume, a simulated TPM,
//! protectors added by hand and by Group Policy at an earlier reboot).
//!
//! Everything random comes from the scenario's seed: certificates (unless read from a `.pfx`),
//! TPM seeds, volume keys, MAC addresses, transaction ids. A reference to something that does
//! not exist (a segment, a certificate, an action) is an error at its `file:line`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use boot_client::boot::{BootConfig, BootTrigger, ConsoleInput, Firmware, Keystrokes};
use boot_client::exchange::Transport;
use boot_client::service::{BootRecord, BootService, Machine};
use certificates::CertificateBundle;
use dhcp::service::DhcpServerService;
use dhcp::{Pool, Server, ServerConfig};
use netsim::{
    AdapterConfig, AdapterId, FaultEffect, FaultRule, HostId, Ipv4Net, NodeId, Probability,
    SegmentConfig, SegmentId, SimTime, Simulation,
};
use nkpu::{ProviderKey, Thumbprint};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use toml::Spanned;
use tpm::{DictionaryAttackPolicy, PcrIndex, PcrSelection, SimulatedTpm, Tpm};
use unlock_processor::{DecryptPool, ModelledCpu, ServerCpu};
use unlock_server::provider::Provider;
use unlock_server::service::UnlockService;
use volume::policy::{
    GroupPolicy, MinimumPinLength, NetworkUnlockCertificate, NetworkUnlockCertificateStore,
    PRE_2012_FVE_VALUES, PolicyResult, PolicySource, RebootOutcome, apply_at_reboot, fve_reg_add,
};
use volume::{ProtectorKind, Volume};

use crate::capture::SpilledCapture;
use crate::model::{ClientSpec, FaultSpec, Loaded, ScenarioError, TranscriptDetail, TriggerSpec};
use crate::wire::Names;

pub use dhcp::service::sim_time;

/// Recovery-password stretching in scenarios: BitLocker's real count (2^20 SHA-256 rounds) is
/// configurable in the volume crate; scenarios use fewer so a catalogue of boots stays fast.
pub const SCENARIO_STRETCH_ITERATIONS: u32 = 1024;

/// The PCR the protectors are sealed to (Secure Boot state), as Windows does on UEFI.
const SEALING_PCR: u8 = 7;

/// A certificate of the scenario.
pub struct NamedCertificate {
    pub name: String,
    pub bundle: CertificateBundle,
    pub key: Arc<ProviderKey>,
    /// The certificate as a client's FVE_NKP store judges it, parsed once for every client
    /// (a storm has thousands).
    pub network_unlock: Result<NetworkUnlockCertificate, volume::policy::CertificateError>,
}

impl NamedCertificate {
    pub fn thumbprint(&self) -> Thumbprint {
        self.bundle.thumbprint()
    }
}

/// A WDS server of the scenario.
pub struct WdsHost {
    pub name: String,
    pub host: HostId,
    pub address: Ipv4Addr,
    pub provider: Rc<RefCell<Provider>>,
}

/// A DHCP server of the scenario.
pub struct DhcpHost {
    pub name: String,
    pub host: HostId,
    pub address: Ipv4Addr,
    pub mac: [u8; 6],
    pub segment: String,
}

/// One client machine.
pub struct ClientMachine {
    pub name: String,
    /// The `[[client]]` it comes from (storms share one).
    pub group: String,
    pub record: Rc<RefCell<BootRecord>>,
    /// What happened before this boot (protectors added, Group Policy applied), for the
    /// transcript.
    pub setup: Vec<String>,
    pub boot_at: Duration,
    /// What its BitLocker management agent escrows, when it has one (`management_points`).
    /// Boxed, as `checks`: a storm holds 10,000 machines that have neither, and the two
    /// inline made each entry 968 bytes instead of about a hundred.
    pub escrow: Option<Box<EscrowSource>>,
    /// The troubleshooting checks' material, when the scenario asks for `client_checks`.
    pub checks: Option<Box<ClientChecks>>,
}

/// A client's BitLocker volume as its running Windows holds it, for the recovery lab: the
/// machine (whose volume the boot unlocks), the volume's keys (Windows runs with the volume
/// unlocked; kept from when BitLocker was enabled, since a boot may never get that far), and
/// the TPM's `OwnerAuthFull`.
pub struct EscrowSource {
    pub machine: Rc<RefCell<Machine>>,
    /// The volume as BitLocker left it when it was enabled: the lab's copy when the run ends
    /// with the boot still holding the machine's (at a prompt).
    pub enabled_volume: Volume,
    /// Taken by the recovery lab (the keys are not `Clone`, by design of the volume crate).
    pub keys: RefCell<Option<volume::VolumeKeys>>,
    pub owner_auth: String,
}

/// A segment and its name.
pub struct NamedSegment {
    pub name: String,
    pub id: SegmentId,
    pub subnet: Ipv4Net,
    /// Where the simulator writes the frames that cross it.
    pub capture: SpilledCapture,
}

/// A scheduled change to a server.
pub struct ScheduledEvent {
    pub at: Duration,
    pub host: String,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    StopWds,
    StartWds,
    InstallFeature,
    UninstallFeature,
    EnableDebugLog,
    DisableDebugLog,
    UnregisterProvider,
    RegisterProvider,
    RemoveCertificateStore,
    Crash,
    Restart,
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "stop-wds" => Action::StopWds,
            "start-wds" => Action::StartWds,
            "install-feature" => Action::InstallFeature,
            "enable-debug-log" => Action::EnableDebugLog,
            "disable-debug-log" => Action::DisableDebugLog,
            "uninstall-feature" => Action::UninstallFeature,
            "unregister-provider" => Action::UnregisterProvider,
            "register-provider" => Action::RegisterProvider,
            "remove-certificate-store" => Action::RemoveCertificateStore,
            "crash" => Action::Crash,
            "restart" => Action::Restart,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::StopWds => "the WDS service is stopped",
            Action::StartWds => "the WDS service is started",
            Action::EnableDebugLog => {
                "wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true"
            }
            Action::DisableDebugLog => {
                "wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:false"
            }
            Action::InstallFeature => {
                "Install-WindowsFeature BitLocker-NetworkUnlock: the feature is installed"
            }
            Action::UninstallFeature => {
                "Uninstall-WindowsFeature BitLocker-NetworkUnlock: the feature is removed"
            }
            Action::UnregisterProvider => "the Network Unlock provider is unregistered from WDS",
            Action::RegisterProvider => "the Network Unlock provider is registered with WDS",
            Action::RemoveCertificateStore => {
                "the FVE_NKP certificate store is removed from the server"
            }
            Action::Crash => "the server loses power",
            Action::Restart => "the server boots again",
        }
    }
}

/// The built world, ready to run.
pub struct World {
    pub sim: Simulation,
    pub certificates: Vec<NamedCertificate>,
    pub segments: Vec<NamedSegment>,
    pub dhcp_servers: Vec<DhcpHost>,
    pub wds: Vec<WdsHost>,
    pub clients: Vec<ClientMachine>,
    pub events: Vec<ScheduledEvent>,
    /// Lines describing the topology and faults, for the transcript's setup section.
    pub setup: Vec<String>,
    /// Host names by address and MAC, for naming packets.
    pub names: Names,
    /// The scenario's faults with their windows, for the timeline and the report.
    pub faults: Vec<FaultWindow>,
}

/// A fault of the scenario: what it does and to what, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// "30% packet loss on segment corp".
    pub description: String,
    /// What the timeline names it by (a segment, a host, an adapter, "network").
    pub scope: String,
    pub from: Duration,
    pub to: Duration,
}

/// A host (or router) of the world as faults name it: its name, the `[[client]]` it belongs
/// to (storm machines share one), its node, and its adapters (name, id, segment).
struct PlacedNode {
    name: String,
    group: String,
    node: NodeId,
    adapters: Vec<(String, Option<AdapterId>, SegmentId)>,
}

/// The world while it is built: the simulation, the transcript's setup lines and the names of
/// addresses, which every table adds to.
struct WorldInProgress<'a> {
    loaded: &'a Loaded,
    sim: Simulation,
    setup: Vec<String>,
    names: Names,
    nodes: Vec<PlacedNode>,
}

/// Builds the world of `loaded` with `seed`, one table of the scenario after the other.
pub fn build(loaded: &Loaded, seed: u64) -> Result<World, ScenarioError> {
    build_capturing_into(loaded, seed, None)
}

/// [`build`], with each segment's capture written into `captures` (the run's output
/// directory, [`SpilledCapture::create_in`]) rather than a temporary file.
pub fn build_capturing_into(
    loaded: &Loaded,
    seed: u64,
    captures: Option<&Path>,
) -> Result<World, ScenarioError> {
    let mut w = WorldInProgress {
        loaded,
        sim: Simulation::new(seed),
        setup: Vec::new(),
        names: Names::default(),
        nodes: Vec::new(),
    };
    let certificates = certificates(&mut w)?;
    let segments = segments(&mut w, captures)?;
    let router_addresses = routers(&mut w, &segments)?;
    let dhcp_servers = dhcp_servers(&mut w, &segments, &router_addresses)?;
    let wds = wds_servers(&mut w, &segments, &certificates, &dhcp_servers)?;
    let clients = clients(&mut w, seed, &segments, &certificates)?;
    wake_on_lan(&mut w, &wds)?;
    let events = events(loaded, &wds, &dhcp_servers)?;
    let faults = faults(&mut w, &segments)?;
    let WorldInProgress {
        sim, setup, names, ..
    } = w;
    Ok(World {
        sim,
        certificates,
        segments,
        dhcp_servers,
        wds,
        clients,
        events,
        setup,
        names,
        faults,
    })
}

/// `[[certificate]]`: each generated from its seed or read from its `.pfx`.
fn certificates(w: &mut WorldInProgress<'_>) -> Result<Vec<NamedCertificate>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut certificates = Vec::new();
    for spec in &s.certificates {
        let (bundle, origin) = match (&spec.seed, &spec.pfx) {
            (Some(cert_seed), None) if spec.application_policy => (
                generated_certificate(*cert_seed),
                format!("generated from seed {cert_seed}"),
            ),
            (Some(cert_seed), None) => {
                let request = certificates::CertificateRequest {
                    network_unlock_purpose: false,
                    ..certificates::CertificateRequest::network_unlock(
                        certificates::Validity::fixture(),
                    )
                };
                let bundle = request
                    .self_signed_from_seed(*cert_seed)
                    .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
                (
                    bundle,
                    format!(
                        "generated from seed {cert_seed} by a template without the BitLocker \
                         Network Unlock application policy"
                    ),
                )
            }
            (None, Some(pfx)) => {
                let bytes = loaded
                    .read_relative(pfx)
                    .map_err(|err| loaded.error_at(spec.name.span(), err))?;
                let bundle = certificates::import::read(&bytes, spec.password.as_deref()).map_err(
                    |err| loaded.error_at(spec.name.span(), format!("{}: {err}", pfx.display())),
                )?;
                (bundle, format!("read from {}", pfx.display()))
            }
            _ => {
                return Err(loaded.error_at(
                    spec.name.span(),
                    "a certificate needs exactly one of `seed` or `pfx`",
                ));
            }
        };
        let pkcs8 = bundle
            .private_key
            .as_ref()
            .ok_or_else(|| loaded.error_at(spec.name.span(), "the certificate has no private key"))?
            .to_pkcs8_der();
        let key = ProviderKey::from_pkcs8_der(&pkcs8)
            .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
        w.setup.push(format!(
            "certificate {}: thumbprint {}, RSA-{}, {origin}",
            spec.name.get_ref(),
            bundle.thumbprint(),
            bundle.certificate.key_bits(),
        ));
        // The seed's template, judged as `nulab cert show --template` does; said only when a
        // step was missed.
        let template = certificates::template::judge(&bundle, true);
        for step in template.missed() {
            w.setup.push(format!(
                "certificate {}: the seed's template step missed, {}: {}",
                spec.name.get_ref(),
                step.step,
                step.evidence
            ));
        }
        let network_unlock = NetworkUnlockCertificate::from_der(bundle.certificate.der());
        certificates.push(NamedCertificate {
            name: spec.name.get_ref().clone(),
            bundle,
            key: Arc::new(key),
            network_unlock,
        });
    }
    Ok(certificates)
}

/// `[[segment]]`: each with its subnet, latency and capture.
fn segments(
    w: &mut WorldInProgress<'_>,
    captures: Option<&Path>,
) -> Result<Vec<NamedSegment>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut segments = Vec::new();
    for spec in &s.segments {
        let subnet: Ipv4Net = parse_spanned(loaded, &spec.subnet, "an IPv4 subnet")?;
        let mut config = SegmentConfig::default().ipv4(subnet);
        if let Some(latency) = spec.latency {
            config = config.latency(latency);
        }
        let id = w.sim.add_segment(spec.name.get_ref(), config);
        let capture_error = |err: &dyn std::fmt::Display| {
            loaded.error_at(
                spec.name.span(),
                format!("cannot capture segment {}: {err}", spec.name.get_ref()),
            )
        };
        let (capture, writer) = match captures {
            Some(dir) => SpilledCapture::create_in(dir, spec.name.get_ref()),
            None => SpilledCapture::create(),
        }
        .map_err(|err| capture_error(&err))?;
        w.sim
            .capture_to(id, writer)
            .map_err(|err| capture_error(&err))?;
        w.setup.push(format!(
            "segment {}: {}",
            spec.name.get_ref(),
            subnet.trunc()
        ));
        segments.push(NamedSegment {
            name: spec.name.get_ref().clone(),
            id,
            subnet: subnet.trunc(),
            capture,
        });
    }
    Ok(segments)
}

/// `[[router]]`: interfaces and DHCP relays; the router's address on each segment, by segment
/// name (the default pools' router option).
fn routers(
    w: &mut WorldInProgress<'_>,
    segments: &[NamedSegment],
) -> Result<BTreeMap<String, Ipv4Addr>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut router_addresses: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for spec in &s.routers {
        let router = w.sim.add_router(spec.name.get_ref());
        let mut placed = PlacedNode {
            name: spec.name.get_ref().clone(),
            group: spec.name.get_ref().clone(),
            node: NodeId::Router(router),
            adapters: Vec::new(),
        };
        for interface in &spec.interfaces {
            let seg = find_segment(loaded, segments, &interface.segment)?;
            placed.adapters.push((seg.name.clone(), None, seg.id));
            let address: Ipv4Net = parse_spanned(loaded, &interface.address, "an address/prefix")?;
            let id = w
                .sim
                .add_router_interface(router, seg.id, address)
                .map_err(|err| loaded.error_at(interface.address.span(), err.to_string()))?;
            router_addresses.insert(seg.name.clone(), address.addr());
            w.names.by_ip.insert(
                IpAddr::V4(address.addr()),
                spec.name.get_ref().as_str().into(),
            );
            let mut line = format!(
                "router {} on {}: {}",
                spec.name.get_ref(),
                seg.name,
                address
            );
            if !interface.relay_to.is_empty() {
                let mut helpers = Vec::new();
                for helper in &interface.relay_to {
                    helpers.push(parse_spanned::<Ipv4Addr>(
                        loaded,
                        helper,
                        "an IPv4 address",
                    )?);
                }
                line.push_str(&format!(
                    ", DHCP relay to {}",
                    helpers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                w.sim
                    .set_relay(id, helpers)
                    .map_err(|err| loaded.error_at(interface.segment.span(), err.to_string()))?;
            }
            w.setup.push(line);
        }
        w.nodes.push(placed);
    }
    Ok(router_addresses)
}

/// `[[dhcp_server]]`: each with its pools (by default one per segment).
fn dhcp_servers(
    w: &mut WorldInProgress<'_>,
    segments: &[NamedSegment],
    router_addresses: &BTreeMap<String, Ipv4Addr>,
) -> Result<Vec<DhcpHost>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut dhcp_servers = Vec::new();
    for spec in &s.dhcp_servers {
        let (seg, host, address, mac) = place_server(
            loaded,
            &mut w.sim,
            segments,
            (&mut w.names, &mut w.nodes),
            (&spec.name, &spec.segment, &spec.address),
        )?;
        let pools = if spec.pools.is_empty() {
            segments
                .iter()
                .filter_map(|seg| {
                    default_pool(seg.subnet, router_addresses.get(&seg.name).copied())
                })
                .collect()
        } else {
            let mut pools = Vec::new();
            for pool in &spec.pools {
                let mut p = Pool::new(
                    parse_spanned(loaded, &pool.subnet, "an IPv4 subnet")?,
                    parse_spanned(loaded, &pool.first, "an IPv4 address")?,
                    parse_spanned(loaded, &pool.last, "an IPv4 address")?,
                );
                if let Some(router) = &pool.router {
                    p = p.router(parse_spanned(loaded, router, "an IPv4 address")?);
                }
                pools.push(p);
            }
            pools
        };
        w.setup.push(format!(
            "DHCP server {} at {} on {}: pools {}",
            spec.name.get_ref(),
            address.addr(),
            seg.name,
            pools
                .iter()
                .map(|p| format!("{}-{}", p.first, p.last))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let server = Rc::new(RefCell::new(Server::new(ServerConfig::new(
            vec![address],
            pools,
        ))));
        let shared = server.clone();
        w.sim
            .add_service(host, "dhcpd", move || {
                Box::new(DhcpServerService::discarding_events(shared.clone()))
            })
            .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
        w.names.by_ip.insert(
            IpAddr::V4(address.addr()),
            spec.name.get_ref().as_str().into(),
        );
        dhcp_servers.push(DhcpHost {
            name: spec.name.get_ref().clone(),
            host,
            address: address.addr(),
            mac,
            segment: seg.name.clone(),
        });
    }
    Ok(dhcp_servers)
}

/// `[[wds]]`: each with its Network Unlock provider, certificate store, policy and processor.
fn wds_servers(
    w: &mut WorldInProgress<'_>,
    segments: &[NamedSegment],
    certificates: &[NamedCertificate],
    dhcp_servers: &[DhcpHost],
) -> Result<Vec<WdsHost>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut wds = Vec::new();
    // One pool of decryption threads for every server that models its processor.
    let mut decrypt_pool: Option<std::sync::Arc<DecryptPool>> = None;
    for spec in &s.wds {
        let (seg, host, address, mac) = match &spec.same_server_as {
            None => place_server(
                loaded,
                &mut w.sim,
                segments,
                (&mut w.names, &mut w.nodes),
                (&spec.name, &spec.segment, &spec.address),
            )?,
            // The WDS role on the DHCP server's machine (the seed requires them apart).
            Some(name) => {
                let dhcp = dhcp_servers
                    .iter()
                    .find(|d| &d.name == name.get_ref())
                    .ok_or_else(|| {
                        loaded.error_at(name.span(), format!("no DHCP server {:?}", name.get_ref()))
                    })?;
                let net: Ipv4Net = parse_spanned(loaded, &spec.address, "an address/prefix")?;
                if net.addr() != dhcp.address || spec.segment.get_ref() != &dhcp.segment {
                    return Err(loaded.error_at(
                        spec.address.span(),
                        format!(
                            "a WDS server on DHCP server {}'s machine has its address {} on {}",
                            dhcp.name, dhcp.address, dhcp.segment
                        ),
                    ));
                }
                let seg = find_segment(loaded, segments, &spec.segment)?;
                w.setup.push(format!(
                    "WDS server {} runs on DHCP server {}'s machine: both listen on UDP 67 \
                     (the seed requires a DHCP server separate from the WDS server)",
                    spec.name.get_ref(),
                    dhcp.name
                ));
                (seg, dhcp.host, net, dhcp.mac)
            }
        };
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(&mac);
        let mut provider = Provider::new(duid);
        // WDS's default: the debug log is off unless the scenario enables it.
        provider.set_debug_log(Duration::ZERO, spec.debug_log);
        let held: Vec<&NamedCertificate> = match &spec.certificates {
            None => certificates.iter().collect(),
            Some(list) => {
                let mut held = Vec::new();
                for name in list {
                    held.push(certificate(loaded, certificates, name)?);
                }
                held
            }
        };
        for cert in &held {
            provider.add_certificate(cert.thumbprint(), cert.key.clone());
        }
        let policy_text = match (&spec.policy, &spec.policy_file) {
            (Some(text), None) => Some(text.clone()),
            (None, Some(file)) => {
                let bytes = loaded
                    .read_relative(file)
                    .map_err(|err| loaded.error_at(spec.name.span(), err))?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    loaded.error_at(
                        spec.name.span(),
                        format!("{}: not UTF-8 text", file.display()),
                    )
                })?)
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(
                    loaded.error_at(spec.name.span(), "give `policy` or `policy_file`, not both")
                );
            }
        };
        provider.load_policy(Duration::ZERO, policy_text.as_deref());
        if !spec.feature_installed {
            provider.set_feature_installed(Duration::ZERO, false);
        }
        if !spec.registered {
            provider.set_registered(Duration::ZERO, false);
        }
        let policy_summary = match &policy_text {
            None => "no bde-network-unlock.ini (every subnet allowed)".to_string(),
            Some(text) => {
                let lint = unlock_server::policy::lint(text);
                if lint.policy.is_none() {
                    format!(
                        "bde-network-unlock.ini is INVALID ({} error(s)): the provider will answer nothing",
                        lint.errors.len()
                    )
                } else {
                    format!(
                        "bde-network-unlock.ini with {} line(s)",
                        text.lines().count()
                    )
                }
            }
        };
        w.setup.push(format!(
            "WDS server {} at {} on {}: certificates {}; {}{}{}{}{}",
            spec.name.get_ref(),
            address.addr(),
            seg.name,
            if held.is_empty() {
                "none".to_string()
            } else {
                held.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            policy_summary,
            if spec.feature_installed {
                ""
            } else {
                "; BitLocker-NetworkUnlock feature NOT installed"
            },
            if spec.registered {
                ""
            } else {
                "; provider NOT registered"
            },
            if spec.running {
                ""
            } else {
                "; WDS service stopped"
            },
            if spec.debug_log {
                ""
            } else {
                "; WDS debug log off (the default: nothing is logged until it is enabled)"
            },
        ));
        let cpu = match (spec.decrypt_time, &spec.cores, spec.queue) {
            (Some(decrypt_time), cores, queue) => {
                let cores = cores.as_ref().map_or(4, |c| *c.get_ref());
                if cores == 0 {
                    let span = spec.cores.as_ref().map_or(spec.name.span(), |c| c.span());
                    return Err(loaded.error_at(span, "a server needs at least one core"));
                }
                w.setup.push(format!(
                    "WDS server {}: {cores} core(s), {} per private-key operation{}",
                    spec.name.get_ref(),
                    seconds(decrypt_time),
                    queue.map_or(String::new(), |q| format!(
                        ", at most {q} request(s) waiting"
                    ))
                ));
                Some(ServerCpu {
                    cores,
                    decrypt_time,
                    queue,
                })
            }
            (None, Some(cores), _) => {
                return Err(loaded.error_at(
                    cores.span(),
                    "`cores` models the server's processor: give `decrypt_time` too",
                ));
            }
            (None, None, Some(_)) => {
                return Err(loaded.error_at(
                    spec.name.span(),
                    "`queue` models the server's processor: give `decrypt_time` too",
                ));
            }
            (None, None, None) => None,
        };
        let provider = Rc::new(RefCell::new(provider));
        let shared = provider.clone();
        match cpu {
            Some(cpu) => {
                let pool = decrypt_pool
                    .get_or_insert_with(DecryptPool::per_core)
                    .clone();
                w.sim.add_service(host, "WDSServer", move || {
                    Box::new(UnlockService::with_processor(
                        shared.clone(),
                        Box::new(ModelledCpu::new(cpu, pool.clone())),
                    ))
                })
            }
            None => w.sim.add_service(host, "WDSServer", move || {
                Box::new(UnlockService::new(shared.clone()))
            }),
        }
        .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
        if !spec.running {
            w.sim
                .stop_service_at(SimTime::ZERO, host, "WDSServer")
                .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
            provider
                .borrow_mut()
                .set_service_running(Duration::ZERO, false);
        }
        w.names.by_ip.insert(
            IpAddr::V4(address.addr()),
            spec.name.get_ref().as_str().into(),
        );
        wds.push(WdsHost {
            name: spec.name.get_ref().clone(),
            host,
            address: address.addr(),
            provider,
        });
    }
    Ok(wds)
}

/// `[[client]]`: every machine of each (a storm's histories made on every core).
fn clients(
    w: &mut WorldInProgress<'_>,
    seed: u64,
    segments: &[NamedSegment],
    certificates: &[NamedCertificate],
) -> Result<Vec<ClientMachine>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    if s.domain.minimum_pin_length.is_some() {
        w.setup.push(format!(
            "domain: Group Policy \"Configure minimum PIN length for startup\" is {} digits",
            minimum_pin_length(loaded)?.digits()
        ));
    }
    // Every machine's entry, to the end of the run: exactly as many as there are.
    let total = s.clients.iter().fold(0usize, |sum, spec| {
        sum.saturating_add(usize::try_from(spec.count).unwrap_or(usize::MAX))
    });
    let mut clients = Vec::new();
    clients.try_reserve_exact(total).map_err(|_| {
        loaded.error_at(
            0..0,
            format!("{total} clients need more memory than this machine can give"),
        )
    })?;
    // Every machine's history in one pass over every core (a storm has a `[[client]]` per
    // branch: a pass per group started and ended two threads a hundred times).
    let jobs: Vec<(&ClientSpec, u64)> = s
        .clients
        .iter()
        .enumerate()
        .flat_map(|(group_index, spec)| {
            (0..spec.count).map(move |instance| (spec, machine_seed(seed, group_index, instance)))
        })
        .collect();
    let mut histories = machine_histories(loaded, &jobs, certificates)?
        .into_iter()
        .flatten();
    drop(jobs);
    for spec in &s.clients {
        let group = histories
            .by_ref()
            .take(usize::try_from(spec.count).unwrap_or(usize::MAX));
        let mut shared_config = None;
        for (instance, history) in (1..).zip(group) {
            let name = if spec.count == 1 {
                spec.name.get_ref().clone()
            } else {
                format!("{}-{:04}", spec.name.get_ref(), instance)
            };
            let client = build_client(
                loaded,
                &mut w.sim,
                spec,
                name,
                history,
                segments,
                (&mut w.names, &mut w.nodes, &mut shared_config),
            )?;
            clients.push(client);
        }
        let setup_line = format!(
            "client {}{}: {} firmware, adapters {}",
            spec.name.get_ref(),
            if spec.count > 1 {
                format!(" ×{}", spec.count)
            } else {
                String::new()
            },
            spec.firmware,
            spec.adapters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut d = format!(
                        "{} on {}",
                        a.name.clone().unwrap_or_else(|| format!("eth{i}")),
                        a.segment.get_ref()
                    );
                    if !a.dhcp {
                        d.push_str(" (no DHCP)");
                    }
                    if !a.link {
                        d.push_str(" (unplugged)");
                    }
                    if !a.uefi_driver {
                        d.push_str(" (no UEFI driver)");
                    }
                    d
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        w.setup.push(setup_line);
    }
    Ok(clients)
}

/// For each `[[client]]` woken by Wake on LAN, its magic packets: sent at its `boot_at` by its
/// `wake_from` WDS server (by default the first), one per machine's adapter.
fn wake_on_lan(w: &mut WorldInProgress<'_>, wds: &[WdsHost]) -> Result<(), ScenarioError> {
    let loaded = w.loaded;
    for spec in &loaded.scenario.clients {
        if spec.trigger != TriggerSpec::WakeOnLan {
            if let Some(from) = &spec.wake_from {
                return Err(loaded.error_at(
                    from.span(),
                    "`wake_from` is for a client with trigger = \"wake-on-lan\"",
                ));
            }
            continue;
        }
        let sender = match &spec.wake_from {
            Some(name) => wds
                .iter()
                .find(|s| &s.name == name.get_ref())
                .ok_or_else(|| {
                    loaded.error_at(
                        name.span(),
                        format!(
                            "no WDS server {:?} to send the magic packet",
                            name.get_ref()
                        ),
                    )
                })?,
            None => wds.first().ok_or_else(|| {
                loaded.error_at(
                    spec.name.span(),
                    "Wake on LAN needs a WDS server to send the magic packet (wake_from)",
                )
            })?,
        };
        let targets: Vec<[u8; 6]> = w
            .nodes
            .iter()
            .filter(|n| &n.group == spec.name.get_ref())
            .flat_map(|n| n.adapters.iter().filter_map(|(_, id, _)| *id))
            .filter_map(|id| w.sim.adapter(id).map(|a| a.mac.0))
            .collect();
        let at = sim_time(spec.boot_at.unwrap_or_default());
        let source = sender.address;
        w.sim
            .add_service(
                sender.host,
                &format!("wol-{}", spec.name.get_ref()),
                move || {
                    Box::new(crate::wake::MagicPacketSender {
                        at,
                        source,
                        targets: targets.clone(),
                    })
                },
            )
            .map_err(|err| loaded.error_at(spec.name.span(), err.to_string()))?;
        w.setup.push(format!(
            "client {}: asleep; {} sends a Wake-on-LAN magic packet for each of its adapters \
             at {}",
            spec.name.get_ref(),
            sender.name,
            seconds(spec.boot_at.unwrap_or_default())
        ));
    }
    Ok(())
}

/// The seed of machine `instance` of the `group_index`-th `[[client]]` in a run with `seed`.
fn machine_seed(seed: u64, group_index: usize, instance: u32) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(((group_index as u64) << 32) | u64::from(instance))
}

/// A client machine as the world prepares it before its boot (BitLocker enabled, Group Policy
/// applied, PCRs measured), for a shell that boots it elsewhere: `kernel-lab` writes the
/// volume image and the TPM state and runs `nulab client` on them. The same machine the
/// simulator boots for the same scenario and seed.
pub struct PreparedMachine {
    pub name: String,
    /// The index of its `[[client]]` in the scenario.
    pub group_index: usize,
    pub tpm: SimulatedTpm,
    pub volume: Volume,
    /// The recovery password BitLocker made, which a console input `recovery_password =
    /// "correct"` types (`None` without that protector).
    pub recovery_password: Option<volume::RecoveryPassword>,
}

/// Every client machine of `loaded` with `seed`, as [`build`] prepares them.
pub fn prepared_machines(
    loaded: &Loaded,
    seed: u64,
    certificates: &[NamedCertificate],
) -> Result<Vec<PreparedMachine>, ScenarioError> {
    let mut machines = Vec::new();
    for (group_index, spec) in loaded.scenario.clients.iter().enumerate() {
        for instance in 0..spec.count {
            let history = machine_history(
                loaded,
                spec,
                machine_seed(seed, group_index, instance),
                certificates,
            )?;
            let name = if spec.count == 1 {
                spec.name.get_ref().clone()
            } else {
                format!("{}-{:04}", spec.name.get_ref(), instance + 1)
            };
            machines.push(PreparedMachine {
                name,
                group_index,
                tpm: history.tpm,
                volume: history.volume,
                recovery_password: history.recovery_password,
            });
        }
    }
    Ok(machines)
}

/// `[[event]]`s the simulation applies to a WDS or DHCP server (the recovery lab applies the
/// others), in time order.
fn events(
    loaded: &Loaded,
    wds: &[WdsHost],
    dhcp_servers: &[DhcpHost],
) -> Result<Vec<ScheduledEvent>, ScenarioError> {
    let s = &loaded.scenario;
    let mut events = Vec::new();
    for spec in &s.events {
        if crate::model::recovery::is_recovery_event(s, spec) {
            continue; // the recovery lab applies it (`recovery::run`)
        }
        let action = Action::parse(spec.action.get_ref()).ok_or_else(|| {
            loaded.error_at(
                spec.action.span(),
                format!(
                    "unknown action {:?} (stop-wds, start-wds, install-feature, \
                     uninstall-feature, enable-debug-log, disable-debug-log, \
                     unregister-provider, register-provider, remove-certificate-store, crash, \
                     restart)",
                    spec.action.get_ref()
                ),
            )
        })?;
        let known = wds.iter().any(|w| &w.name == spec.host.get_ref())
            || dhcp_servers.iter().any(|d| &d.name == spec.host.get_ref());
        if !known {
            return Err(loaded.error_at(
                spec.host.span(),
                format!("no server {:?}", spec.host.get_ref()),
            ));
        }
        let is_wds = wds.iter().any(|w| &w.name == spec.host.get_ref());
        if !is_wds && !matches!(action, Action::Crash | Action::Restart) {
            return Err(loaded.error_at(
                spec.action.span(),
                format!("{:?} is not a WDS server", spec.host.get_ref()),
            ));
        }
        events.push(ScheduledEvent {
            at: spec.at,
            host: spec.host.get_ref().clone(),
            action,
        });
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}

/// `[[fault]]`: each fault's rules (or link events) added to the simulation over its window,
/// described in the setup and returned for the timeline.
fn faults(
    w: &mut WorldInProgress<'_>,
    segments: &[NamedSegment],
) -> Result<Vec<FaultWindow>, ScenarioError> {
    let loaded = w.loaded;
    let s = &loaded.scenario;
    let mut windows = Vec::new();
    for spec in &s.faults {
        let window = fault(w, segments, spec)?;
        w.setup.push(format!(
            "fault: {}, from {} to {}",
            window.description,
            seconds(window.from),
            seconds(window.to)
        ));
        windows.push(window);
    }
    Ok(windows)
}

/// The kinds of fault, by the key that makes a `[[fault]]` one of them.
const FAULT_KINDS: &str = "loss, latency, duplicate, corrupt, partition, link = \"down\", or dhcp_server with delay or silent";

/// One `[[fault]]`, checked and added.
fn fault(
    w: &mut WorldInProgress<'_>,
    segments: &[NamedSegment],
    spec: &FaultSpec,
) -> Result<FaultWindow, ScenarioError> {
    let loaded = w.loaded;
    let anchor = fault_anchor(spec);
    let err = |span: std::ops::Range<usize>, message: String| loaded.error_at(span, message);
    let from = spec.from.unwrap_or_default();
    let to = spec.to.unwrap_or(loaded.scenario.duration);
    if from >= to {
        return Err(err(
            anchor.clone(),
            format!(
                "the fault ends ({}) before it begins ({})",
                seconds(to),
                seconds(from)
            ),
        ));
    }
    let kinds: Vec<(&str, std::ops::Range<usize>)> = [
        ("loss", spec.loss.as_ref().map(Spanned::span)),
        ("latency", spec.latency.as_ref().map(Spanned::span)),
        ("duplicate", spec.duplicate.as_ref().map(Spanned::span)),
        ("corrupt", spec.corrupt.as_ref().map(Spanned::span)),
        ("partition", spec.partition.as_ref().map(Spanned::span)),
        ("link", spec.link.as_ref().map(Spanned::span)),
        ("dhcp_server", spec.dhcp_server.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(key, span)| span.map(|span| (key, span)))
    .collect();
    let (kind, kind_span) = match kinds.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(err(
                anchor,
                format!("a fault needs one effect: {FAULT_KINDS}"),
            ));
        }
        [_, (second, span), ..] => {
            return Err(err(
                span.clone(),
                format!(
                    "a fault has one effect, and this one also has `{}`: give `{second}` its own [[fault]]",
                    kinds[0].0
                ),
            ));
        }
    };
    if let (Some(jitter), None) = (&spec.jitter, &spec.latency) {
        return Err(err(jitter.span(), "`jitter` goes with `latency`".into()));
    }
    if spec.dhcp_server.is_none() {
        if let Some(delay) = &spec.delay {
            return Err(err(
                delay.span(),
                "`delay` is a DHCP server's (`dhcp_server`); a network delay is `latency`".into(),
            ));
        }
        if spec.silent {
            return Err(err(
                anchor,
                "`silent` is a DHCP server's (`dhcp_server`)".into(),
            ));
        }
    }
    if spec.one_way && spec.partition.is_none() {
        return Err(err(anchor, "`one_way` goes with `partition`".into()));
    }
    let scoped = [
        &spec.segment,
        &spec.host,
        &spec.sender,
        &spec.receiver,
        &spec.adapter,
    ]
    .into_iter()
    .flatten()
    .next();
    let window = |description: String, scope: String| FaultWindow {
        description,
        scope,
        from,
        to,
    };
    let during = |rule: FaultRule| rule.during(sim_time(from), sim_time(to));
    match kind {
        "partition" => {
            if let Some(extra) = scoped {
                return Err(err(
                    extra.span(),
                    "a partition is between the two it names: it takes no other scope".into(),
                ));
            }
            let Some(sides) = &spec.partition else {
                return Err(err(kind_span, "a partition needs two sides".into()));
            };
            let [a, b] = sides.get_ref().as_slice() else {
                return Err(err(
                    kind_span,
                    "a partition names two hosts or two segments: [\"a\", \"b\"]".into(),
                ));
            };
            let segment_of =
                |name: &Spanned<String>| segments.iter().find(|s| &s.name == name.get_ref());
            let (rules, what) = match (segment_of(a), segment_of(b)) {
                (Some(sa), Some(sb)) => {
                    // Segments meet at routers: a router with a leg on each stops forwarding
                    // between them (the frames it puts on the far segment are blocked).
                    let routers: Vec<NodeId> = w
                        .nodes
                        .iter()
                        .filter(|n| {
                            matches!(n.node, NodeId::Router(_))
                                && n.adapters.iter().any(|(_, _, s)| *s == sa.id)
                                && n.adapters.iter().any(|(_, _, s)| *s == sb.id)
                        })
                        .map(|n| n.node)
                        .collect();
                    if routers.is_empty() {
                        return Err(err(
                            kind_span,
                            format!(
                                "no router joins segments {} and {}: they cannot reach each other anyway",
                                sa.name, sb.name
                            ),
                        ));
                    }
                    let mut rules = Vec::new();
                    for router in routers {
                        rules.push(
                            FaultRule::new(FaultEffect::Block)
                                .from(router)
                                .on_segment(sb.id),
                        );
                        if !spec.one_way {
                            rules.push(
                                FaultRule::new(FaultEffect::Block)
                                    .from(router)
                                    .on_segment(sa.id),
                            );
                        }
                    }
                    (rules, format!("segments {} and {}", sa.name, sb.name))
                }
                (None, None) => {
                    let na = host_nodes(loaded, &w.nodes, a)?;
                    let nb = host_nodes(loaded, &w.nodes, b)?;
                    let mut rules = Vec::new();
                    for x in &na {
                        for y in &nb {
                            rules.push(FaultRule::partition_one_way(*x, *y));
                            if !spec.one_way {
                                rules.push(FaultRule::partition_one_way(*y, *x));
                            }
                        }
                    }
                    (rules, format!("{} and {}", a.get_ref(), b.get_ref()))
                }
                _ => {
                    return Err(err(
                        kind_span,
                        "a partition is between two hosts or two segments, not one of each".into(),
                    ));
                }
            };
            for rule in rules {
                w.sim.add_fault(during(rule));
            }
            let description = if spec.one_way {
                format!(
                    "one-way partition: nothing from {} reaches {}",
                    a.get_ref(),
                    b.get_ref()
                )
            } else {
                format!("partition between {what}")
            };
            Ok(window(
                description,
                format!("{}|{}", a.get_ref(), b.get_ref()),
            ))
        }
        "link" => {
            let Some(state) = &spec.link else {
                return Err(err(kind_span, "a link fault needs `link`".into()));
            };
            if state.get_ref() != "down" {
                return Err(err(
                    state.span(),
                    format!(
                        "link is \"down\" (up again at `to`), not {:?}",
                        state.get_ref()
                    ),
                ));
            }
            let Some(adapter) = &spec.adapter else {
                return Err(err(
                    kind_span,
                    "a link fault names its `adapter` (\"host/adapter\")".into(),
                ));
            };
            if let Some(extra) = [&spec.segment, &spec.host, &spec.sender, &spec.receiver]
                .into_iter()
                .flatten()
                .next()
            {
                return Err(err(
                    extra.span(),
                    "a link fault is scoped to its `adapter` only".into(),
                ));
            }
            let found = adapter_ids(loaded, &w.nodes, adapter)?;
            for (id, _, _) in &found {
                let Some(id) = id else { continue };
                w.sim
                    .link_down_at(sim_time(from), *id)
                    .map_err(|e| err(adapter.span(), e.to_string()))?;
                if to < loaded.scenario.duration {
                    w.sim
                        .link_up_at(sim_time(to), *id)
                        .map_err(|e| err(adapter.span(), e.to_string()))?;
                }
            }
            Ok(window(
                format!("the link of {} is down", adapter.get_ref()),
                adapter.get_ref().clone(),
            ))
        }
        "dhcp_server" => {
            let Some(server) = &spec.dhcp_server else {
                return Err(err(
                    kind_span,
                    "a DHCP server fault names its server".into(),
                ));
            };
            if let Some(extra) = scoped {
                return Err(err(
                    extra.span(),
                    "a DHCP server fault is scoped to its `dhcp_server` only".into(),
                ));
            }
            let known = loaded
                .scenario
                .dhcp_servers
                .iter()
                .any(|d| d.name.get_ref() == server.get_ref());
            if !known {
                return Err(err(
                    server.span(),
                    format!("no DHCP server {:?}", server.get_ref()),
                ));
            }
            let nodes = host_nodes(loaded, &w.nodes, server)?;
            let (effect, description) = match (&spec.delay, spec.silent) {
                (Some(delay), false) => {
                    let delay = parse_duration(loaded, delay)?;
                    (
                        FaultEffect::Latency {
                            base: delay,
                            jitter: Duration::ZERO,
                        },
                        format!(
                            "DHCP server {} answers {} late",
                            server.get_ref(),
                            seconds(delay)
                        ),
                    )
                }
                (None, true) => (
                    FaultEffect::Block,
                    format!("DHCP server {} answers nothing", server.get_ref()),
                ),
                (Some(delay), true) => {
                    return Err(err(
                        delay.span(),
                        "a DHCP server is `silent` or answers with a `delay`, not both".into(),
                    ));
                }
                (None, false) => {
                    return Err(err(
                        kind_span,
                        "say how the DHCP server fails: `delay = \"3s\"` or `silent = true`".into(),
                    ));
                }
            };
            for node in nodes {
                w.sim
                    .add_fault(during(FaultRule::new(effect.clone()).from(node)));
            }
            Ok(window(description, server.get_ref().clone()))
        }
        _ => {
            let (effect, what) = match kind {
                "loss" => {
                    let p = percent(loaded, spec.loss.as_ref(), &kind_span)?;
                    (FaultEffect::Loss(p), format!("{p} packet loss"))
                }
                "duplicate" => {
                    let p = percent(loaded, spec.duplicate.as_ref(), &kind_span)?;
                    (FaultEffect::Duplicate(p), format!("duplication {p}"))
                }
                "corrupt" => {
                    let p = percent(loaded, spec.corrupt.as_ref(), &kind_span)?;
                    (FaultEffect::Corrupt(p), format!("corruption {p}"))
                }
                _ => {
                    let Some(latency) = &spec.latency else {
                        return Err(err(kind_span, "a latency fault needs `latency`".into()));
                    };
                    let base = parse_duration(loaded, latency)?;
                    let jitter = match &spec.jitter {
                        Some(j) => parse_duration(loaded, j)?,
                        None => Duration::ZERO,
                    };
                    let what = if jitter.is_zero() {
                        format!("latency {}", seconds(base))
                    } else {
                        format!(
                            "latency {} + up to {} jitter",
                            seconds(base),
                            seconds(jitter)
                        )
                    };
                    (FaultEffect::Latency { base, jitter }, what)
                }
            };
            let (rules, scope, on) = scope_rules(loaded, segments, &w.nodes, spec, &effect)?;
            for rule in rules {
                w.sim.add_fault(during(rule));
            }
            Ok(window(format!("{what} {on}"), scope))
        }
    }
}

/// The rules of a loss, latency, duplication or corruption fault over its scope, what the
/// timeline names the scope by, and the scope in words ("on segment corp").
fn scope_rules(
    loaded: &Loaded,
    segments: &[NamedSegment],
    nodes: &[PlacedNode],
    spec: &FaultSpec,
    effect: &FaultEffect,
) -> Result<(Vec<FaultRule>, String, String), ScenarioError> {
    let rule = || FaultRule::new(effect.clone());
    let segment = match &spec.segment {
        Some(name) => Some(find_segment(loaded, segments, name)?),
        None => None,
    };
    let on_segment = |mut rule: FaultRule| {
        if let Some(seg) = segment {
            rule = rule.on_segment(seg.id);
        }
        rule
    };
    let seg_words = segment.map_or(String::new(), |s| format!(" on segment {}", s.name));
    if let Some(adapter) = &spec.adapter {
        if let Some(extra) = [&spec.segment, &spec.host, &spec.sender, &spec.receiver]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(loaded.error_at(
                extra.span(),
                "a fault scoped to an `adapter` takes no other scope",
            ));
        }
        let mut rules = Vec::new();
        for (_, node, seg) in adapter_ids(loaded, nodes, adapter)? {
            rules.push(rule().from(node).on_segment(seg));
            rules.push(rule().to(node).on_segment(seg));
        }
        return Ok((
            rules,
            adapter.get_ref().clone(),
            format!("on frames to and from {}", adapter.get_ref()),
        ));
    }
    if let Some(host) = &spec.host {
        if let Some(extra) = [&spec.sender, &spec.receiver].into_iter().flatten().next() {
            return Err(loaded.error_at(
                extra.span(),
                "`host` is both directions: give `host`, or `sender` and/or `receiver`",
            ));
        }
        let mut rules = Vec::new();
        for node in host_nodes(loaded, nodes, host)? {
            rules.push(on_segment(rule().from(node)));
            rules.push(on_segment(rule().to(node)));
        }
        return Ok((
            rules,
            host.get_ref().clone(),
            format!("on frames to and from {}{seg_words}", host.get_ref()),
        ));
    }
    let senders = match &spec.sender {
        Some(name) => Some(host_nodes(loaded, nodes, name)?),
        None => None,
    };
    let receivers = match &spec.receiver {
        Some(name) => Some(host_nodes(loaded, nodes, name)?),
        None => None,
    };
    let name = |n: &Option<Spanned<String>>| n.as_ref().map(|n| n.get_ref().clone());
    let (rules, scope, words) = match (senders, receivers) {
        (None, None) => (
            vec![on_segment(rule())],
            segment.map_or("network".to_string(), |s| s.name.clone()),
            match segment {
                Some(s) => format!("on segment {}", s.name),
                None => "on every segment".to_string(),
            },
        ),
        (Some(senders), None) => (
            senders
                .iter()
                .map(|n| on_segment(rule().from(*n)))
                .collect(),
            name(&spec.sender).unwrap_or_default(),
            format!(
                "on frames {} sends{seg_words}",
                name(&spec.sender).unwrap_or_default()
            ),
        ),
        (None, Some(receivers)) => (
            receivers
                .iter()
                .map(|n| on_segment(rule().to(*n)))
                .collect(),
            name(&spec.receiver).unwrap_or_default(),
            format!(
                "on frames {} receives{seg_words}",
                name(&spec.receiver).unwrap_or_default()
            ),
        ),
        (Some(senders), Some(receivers)) => {
            let mut rules = Vec::new();
            for s in &senders {
                for r in &receivers {
                    rules.push(on_segment(rule().from(*s).to(*r)));
                }
            }
            let (s, r) = (
                name(&spec.sender).unwrap_or_default(),
                name(&spec.receiver).unwrap_or_default(),
            );
            (
                rules,
                format!("{s}|{r}"),
                format!("on frames from {s} to {r}{seg_words}"),
            )
        }
    };
    Ok((rules, scope, words))
}

/// The nodes a fault's host name means: that host or router, or every machine of a
/// `[[client]]` with `count`.
fn host_nodes(
    loaded: &Loaded,
    nodes: &[PlacedNode],
    name: &Spanned<String>,
) -> Result<Vec<NodeId>, ScenarioError> {
    let exact: Vec<NodeId> = nodes
        .iter()
        .filter(|n| &n.name == name.get_ref())
        .map(|n| n.node)
        .collect();
    let found = if exact.is_empty() {
        nodes
            .iter()
            .filter(|n| &n.group == name.get_ref())
            .map(|n| n.node)
            .collect()
    } else {
        exact
    };
    if found.is_empty() {
        return Err(loaded.error_at(
            name.span(),
            format!("no host {:?} (a client, server or router)", name.get_ref()),
        ));
    }
    Ok(found)
}

/// The adapters `"host/adapter"` names (one per machine of a storm): id, node, segment.
fn adapter_ids(
    loaded: &Loaded,
    nodes: &[PlacedNode],
    name: &Spanned<String>,
) -> Result<Vec<(Option<AdapterId>, NodeId, SegmentId)>, ScenarioError> {
    let Some((host, adapter)) = name.get_ref().split_once('/') else {
        return Err(loaded.error_at(
            name.span(),
            format!(
                "an adapter is \"host/adapter\" (\"pc1/eth0\"), not {:?}",
                name.get_ref()
            ),
        ));
    };
    let host_span = Spanned::new(name.span(), host.to_string());
    let hosts = host_nodes(loaded, nodes, &host_span)?;
    let found: Vec<_> = nodes
        .iter()
        .filter(|n| hosts.contains(&n.node))
        .filter_map(|n| {
            n.adapters
                .iter()
                .find(|(a, _, _)| a == adapter)
                .map(|(_, id, seg)| (*id, n.node, *seg))
        })
        .collect();
    if found.is_empty() {
        return Err(loaded.error_at(name.span(), format!("{host} has no adapter {adapter:?}")));
    }
    Ok(found)
}

/// A percentage of a fault ("30%").
fn percent(
    loaded: &Loaded,
    value: Option<&Spanned<String>>,
    span: &std::ops::Range<usize>,
) -> Result<Probability, ScenarioError> {
    let value = value.ok_or_else(|| loaded.error_at(span.clone(), "a percentage is missing"))?;
    parse_percent(value.get_ref())
        .map(Probability::per_million)
        .ok_or_else(|| {
            loaded.error_at(
                value.span(),
                format!("{:?} is not a percentage like \"30%\"", value.get_ref()),
            )
        })
}

fn parse_duration(loaded: &Loaded, value: &Spanned<String>) -> Result<Duration, ScenarioError> {
    humantime::parse_duration(value.get_ref()).map_err(|e| {
        loaded.error_at(
            value.span(),
            format!("{:?} is not a duration: {e}", value.get_ref()),
        )
    })
}

/// Where a fault's whole-table errors point: its first key that has a place.
fn fault_anchor(spec: &FaultSpec) -> std::ops::Range<usize> {
    [
        spec.segment.as_ref().map(Spanned::span),
        spec.host.as_ref().map(Spanned::span),
        spec.sender.as_ref().map(Spanned::span),
        spec.receiver.as_ref().map(Spanned::span),
        spec.adapter.as_ref().map(Spanned::span),
        spec.loss.as_ref().map(Spanned::span),
        spec.latency.as_ref().map(Spanned::span),
        spec.duplicate.as_ref().map(Spanned::span),
        spec.corrupt.as_ref().map(Spanned::span),
        spec.partition.as_ref().map(Spanned::span),
        spec.link.as_ref().map(Spanned::span),
        spec.dhcp_server.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|span| span.start)
    .unwrap_or(0..0)
}

/// A machine's TPM and volume after the history its scenario gives it (BitLocker enabled,
/// Group Policy applied at earlier reboots, a firmware update): everything about a client that
/// is pure computation on its own seed, so a storm's clients are made on every core at once.
struct MachineHistory {
    tpm: SimulatedTpm,
    volume: Volume,
    /// The keys BitLocker made when it was enabled, for a client whose agent escrows them
    /// (`None` otherwise: a storm's machines do not keep them).
    keys: Option<volume::VolumeKeys>,
    recovery_password: Option<volume::RecoveryPassword>,
    setup: Vec<String>,
    checks: Option<ClientChecks>,
}

/// The histories of the machines `jobs` names (each `[[client]]` and machine seed), in order,
/// made on every core: a thread per core, each taking a contiguous share. Handed back as the
/// shares' lists, in order, not gathered into one (a storm's histories hold a TPM and a volume
/// each: gathering copied ten megabytes at 10,000 machines and held both copies at once).
fn machine_histories(
    loaded: &Loaded,
    jobs: &[(&ClientSpec, u64)],
    certificates: &[NamedCertificate],
) -> Result<Vec<Vec<MachineHistory>>, ScenarioError> {
    // Below this, the threads cost more than they save.
    const PARALLEL_FROM: usize = 32;
    // Pushed into a list of the share's size: collecting through `Result` loses the length,
    // and the list was grown by copying it again and again.
    let share = |part: &[(&ClientSpec, u64)]| {
        let mut histories = Vec::with_capacity(part.len());
        for (spec, seed) in part {
            histories.push(machine_history(loaded, spec, *seed, certificates)?);
        }
        Ok::<_, ScenarioError>(histories)
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if jobs.len() < PARALLEL_FROM || threads == 1 {
        return Ok(vec![share(jobs)?]);
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(move || share(part)))
            .collect();
        let mut shares = Vec::with_capacity(workers.len());
        for worker in workers {
            match worker.join() {
                Ok(part) => shares.push(part?),
                // A panic in a worker is a bug: let it surface as one.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(shares)
    })
}

fn machine_history(
    loaded: &Loaded,
    spec: &ClientSpec,
    machine_seed: u64,
    certificates: &[NamedCertificate],
) -> Result<MachineHistory, ScenarioError> {
    let mut rng = ChaCha20Rng::seed_from_u64(machine_seed);
    let mut tpm = SimulatedTpm::manufacture(&mut rng, DictionaryAttackPolicy::default());
    let history = history_on(loaded, spec, &mut rng, &mut tpm, certificates)?;
    Ok(MachineHistory {
        tpm,
        volume: history.volume,
        keys: history.keys,
        recovery_password: history.recovery_password,
        setup: history.setup,
        checks: history.checks,
    })
}

/// A machine's history without its TPM: what [`history_on`] makes on whichever TPM it is given.
struct History {
    volume: Volume,
    keys: Option<volume::VolumeKeys>,
    recovery_password: Option<volume::RecoveryPassword>,
    setup: Vec<String>,
    checks: Option<ClientChecks>,
}

/// What the seed's troubleshooting section has an admin check on a client, as its history left
/// it (kept when the scenario asks for `client_checks`): the volume (for `manage-bde -status`
/// and `-protectors -get`), the policy as GPRESULT shows it, and the FVE_NKP store.
#[derive(Clone, Debug)]
pub struct ClientChecks {
    pub volume: Volume,
    pub policy: PolicyResult,
    pub store: NetworkUnlockCertificateStore,
}

/// The volume of the `group_index`-th `[[client]]`'s first machine in a run with `seed`, with
/// its history (BitLocker enabled, Group Policy applied, PCR 7 measured) made on `tpm`: a real
/// TPM (swtpm) for a real-kernel run whose client boots on it. The same steps, in the same
/// order and from the same seed, as the simulated machine's.
pub fn prepare_volume_on(
    loaded: &Loaded,
    group_index: usize,
    seed: u64,
    certificates: &[NamedCertificate],
    tpm: &mut dyn Tpm,
) -> Result<Volume, ScenarioError> {
    let Some(spec) = loaded.scenario.clients.get(group_index) else {
        return Err(loaded.error_at(0..0, format!("no [[client]] number {group_index}")));
    };
    let mut rng = ChaCha20Rng::seed_from_u64(machine_seed(seed, group_index, 0));
    // The simulated TPM the simulator's machine is manufactured with draws from the same RNG
    // first; drawing it here too keeps every later draw (volume keys, protectors) the same.
    let _unused = SimulatedTpm::manufacture(&mut rng, DictionaryAttackPolicy::default());
    Ok(history_on(loaded, spec, &mut rng, tpm, certificates)?.volume)
}

fn history_on(
    loaded: &Loaded,
    spec: &ClientSpec,
    rng: &mut ChaCha20Rng,
    tpm: &mut dyn Tpm,
    certificates: &[NamedCertificate],
) -> Result<History, ScenarioError> {
    let at = |span: std::ops::Range<usize>, message: String| loaded.error_at(span, message);
    let pcr = PcrIndex::new(SEALING_PCR).expect("PCR 7 exists");
    let pcrs = PcrSelection::of(&[SEALING_PCR]).expect("PCR 7 exists");
    tpm.pcr_extend(pcr, &measurement("Secure Boot policy: PK, KEK, db, dbx"))
        .map_err(|err| at(spec.name.span(), err.to_string()))?;
    // One data sector: enough to prove the keys decrypt, small enough for a storm of 100,000.
    let (mut volume, keys) = Volume::create(volume::DATA_SECTOR_SIZE as u64, "OSDisk", rng)
        .map_err(|err| at(spec.name.span(), err.to_string()))?;
    let mut setup = Vec::new();
    let mut recovery_password = None;
    let volume_err = |err: volume::VolumeError| at(spec.name.span(), err.to_string());
    let minimum_pin_length = minimum_pin_length(loaded)?;
    for protector in &spec.protectors {
        match protector.get_ref().parse::<ProtectorKind>() {
            Ok(ProtectorKind::TpmAndPin) => {
                if let Err(refusal) = minimum_pin_length.check(&spec.pin) {
                    setup.push(format!(
                        "manage-bde -protectors -add -tpmandpin is refused: {refusal}; the \
                         volume gets no TPM And PIN protector"
                    ));
                    continue;
                }
                volume
                    .add_tpm_and_pin_protector(&keys, tpm, pcrs, &spec.pin, rng)
                    .map_err(volume_err)?;
            }
            Ok(ProtectorKind::Tpm) => {
                volume
                    .add_tpm_protector(&keys, tpm, pcrs, rng)
                    .map_err(volume_err)?;
            }
            Ok(ProtectorKind::RecoveryPassword) => {
                let (_, password) = volume
                    .add_recovery_password_protector(&keys, None, SCENARIO_STRETCH_ITERATIONS, rng)
                    .map_err(volume_err)?;
                recovery_password = Some(password);
            }
            _ => {
                return Err(at(
                    protector.span(),
                    format!(
                        "unknown protector {:?} (tpm-and-pin, tpm, recovery-password; \
                         Network Unlock comes from Group Policy)",
                        protector.get_ref()
                    ),
                ));
            }
        }
    }
    setup.push(format!(
        "BitLocker enabled with {}",
        volume
            .protectors()
            .iter()
            .map(|p| p.kind().manage_bde_name())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Group Policy at an earlier reboot: the FVE_NKP store and "Allow network unlock".
    let first = match &spec.certificate {
        Some(name) if name.get_ref() == "none" => None,
        Some(name) => Some(certificate(loaded, certificates, name)?),
        None => certificates.first(),
    };
    let mut store = NetworkUnlockCertificateStore::default();
    if let Some(cert) = first
        && let Some(unfit) = deliver_to_fve_nkp(&mut store, cert)
    {
        setup.push(format!(
            "Group Policy delivers certificate {} to FVE_NKP, but it is not valid: {unfit}",
            cert.name
        ));
    }
    // Where the settings come from: a GPO, or (the seed's path before Windows Server 2012)
    // certutil and the FVE registry values, which mean the same settings.
    let (enabled, source) = match spec.policy_source {
        crate::model::PolicySourceSpec::GroupPolicy => (
            GroupPolicy {
                allow_network_unlock: true,
                ..GroupPolicy::default()
            },
            PolicySource::GroupPolicy,
        ),
        crate::model::PolicySourceSpec::Registry => {
            if let Some(cert) = first {
                setup.push(format!(
                    "certutil -f -grouppolicy -addstore FVE_NKP {}.cer",
                    cert.name
                ));
            }
            for (name, value) in PRE_2012_FVE_VALUES {
                setup.push(fve_reg_add(name, value));
            }
            let policy = GroupPolicy::from_fve_registry(&PRE_2012_FVE_VALUES)
                .map_err(|why| at(spec.name.span(), why))?;
            (policy, PolicySource::Registry)
        }
    };
    let policy_words = match source {
        PolicySource::GroupPolicy => "\"Allow network unlock at startup\" enabled",
        PolicySource::Registry => {
            "OSManageNKP = 1 (\"Allow network unlock at startup\" enabled, from the registry)"
        }
    };
    let mut policy_result = PolicyResult::default();
    // Policy reaches the client, then the reboot applies it (GPRESULT's record follows both).
    let reboot = |policy: &GroupPolicy,
                  store: &NetworkUnlockCertificateStore,
                  volume: &mut Volume,
                  tpm: &mut dyn Tpm,
                  rng: &mut ChaCha20Rng,
                  policy_result: &mut PolicyResult|
     -> Result<RebootOutcome, ScenarioError> {
        policy_result.received(
            *policy,
            source,
            store
                .certificate()
                .map(NetworkUnlockCertificate::thumbprint),
        );
        let outcome =
            apply_at_reboot(policy, store, volume, &keys, tpm, pcrs, rng).map_err(volume_err)?;
        policy_result.rebooted();
        Ok(outcome)
    };
    let outcome = reboot(&enabled, &store, &mut volume, tpm, rng, &mut policy_result)?;
    setup.push(format!(
        "reboot with {policy_words}{}: {}",
        first.filter(|_| store.certificate().is_some()).map_or(
            " and an empty FVE_NKP store".to_string(),
            |c| format!(" and certificate {} in FVE_NKP", c.name)
        ),
        describe_reboot(&outcome)
    ));
    if let Some(new) = &spec.new_certificate {
        let cert = certificate(loaded, certificates, new)?;
        if spec.new_certificate_applied {
            let unfit = deliver_to_fve_nkp(&mut store, cert);
            let outcome = reboot(&enabled, &store, &mut volume, tpm, rng, &mut policy_result)?;
            setup.push(match unfit {
                None => format!(
                    "Group Policy delivers certificate {}; reboot: {}",
                    cert.name,
                    describe_reboot(&outcome)
                ),
                Some(unfit) => format!(
                    "Group Policy delivers certificate {} to FVE_NKP, but it is not valid \
                     ({unfit}), so the store counts as empty; reboot: {}",
                    cert.name,
                    describe_reboot(&outcome)
                ),
            });
        } else {
            setup.push(format!(
                "Group Policy with certificate {} has NOT reached this client",
                cert.name
            ));
            policy_result.not_received(format!(
                "the Network Unlock certificate policy with certificate {} ({})",
                cert.name,
                cert.thumbprint()
            ));
        }
    }
    if loaded.scenario.domain.certificate_policy == crate::model::CertificatePolicy::Deleted {
        store.remove();
        let outcome = reboot(&enabled, &store, &mut volume, tpm, rng, &mut policy_result)?;
        setup.push(format!(
            "the Network Unlock certificate policy is deleted on the domain controller: Group \
             Policy empties FVE_NKP; reboot: {}",
            describe_reboot(&outcome)
        ));
    }
    if !spec.allow_network_unlock {
        let disabled = GroupPolicy::default();
        let outcome = reboot(&disabled, &store, &mut volume, tpm, rng, &mut policy_result)?;
        setup.push(format!(
            "\"Allow network unlock at startup\" set to disabled; reboot: {}",
            describe_reboot(&outcome)
        ));
    }
    if spec.pcr_change {
        tpm.pcr_extend(pcr, &measurement("firmware update"))
            .map_err(|err| at(spec.name.span(), err.to_string()))?;
        setup.push("a firmware update changes PCR 7 after the protectors were sealed".into());
    }
    let checks = loaded.scenario.client_checks.then(|| ClientChecks {
        volume: volume.clone(),
        policy: policy_result,
        store,
    });
    Ok(History {
        volume,
        keys: (!spec.management_points.is_empty()).then_some(keys),
        recovery_password,
        setup,
        checks,
    })
}

/// The domain's "Configure minimum PIN length for startup", refused at its line outside 4 to 20.
fn minimum_pin_length(loaded: &Loaded) -> Result<MinimumPinLength, ScenarioError> {
    match &loaded.scenario.domain.minimum_pin_length {
        None => Ok(MinimumPinLength::default()),
        Some(digits) => MinimumPinLength::new(*digits.get_ref())
            .map_err(|why| loaded.error_at(digits.span(), why)),
    }
}

fn build_client(
    loaded: &Loaded,
    sim: &mut Simulation,
    spec: &ClientSpec,
    name: String,
    history: MachineHistory,
    segments: &[NamedSegment],
    // The run's names and nodes, and the configuration of the group's previous machine.
    (names, nodes, shared_config): (
        &mut Names,
        &mut Vec<PlacedNode>,
        &mut Option<Arc<BootConfig>>,
    ),
) -> Result<ClientMachine, ScenarioError> {
    let at = |span: std::ops::Range<usize>, message: String| loaded.error_at(span, message);
    let host = sim.add_host(&name);
    let mut placed = PlacedNode {
        name: name.clone(),
        group: spec.name.get_ref().clone(),
        node: NodeId::Host(host),
        adapters: Vec::new(),
    };
    if spec.adapters.is_empty() {
        return Err(at(
            spec.name.span(),
            "a client needs at least one [[client.adapter]]".into(),
        ));
    }
    for (i, adapter) in spec.adapters.iter().enumerate() {
        let seg = find_segment(loaded, segments, &adapter.segment)?;
        let mut config = match &adapter.address {
            Some(address) => {
                AdapterConfig::static_ipv4(parse_spanned(loaded, address, "an address/prefix")?)
            }
            None => AdapterConfig::dhcp(),
        };
        config = config
            .dhcp_enabled(adapter.dhcp)
            .link_up(adapter.link)
            .uefi_driver(adapter.uefi_driver);
        let adapter_name = adapter.name.clone().unwrap_or_else(|| format!("eth{i}"));
        let id = sim
            .add_adapter(host, &adapter_name, seg.id, config)
            .map_err(|err| at(adapter.segment.span(), err.to_string()))?;
        if let Some(info) = sim.adapter(id) {
            names.by_mac.insert(info.mac.0, name.as_str().into());
        }
        placed.adapters.push((adapter_name, Some(id), seg.id));
    }
    nodes.push(placed);

    let MachineHistory {
        tpm,
        volume,
        keys,
        recovery_password,
        setup,
        checks,
    } = history;
    // Only a full transcript prints a machine's own setup lines: a summary's run (a storm's
    // 100,000 machines) does not keep them.
    let setup = if loaded.scenario.transcript == TranscriptDetail::Full {
        setup
    } else {
        Vec::new()
    };

    let mut order = Vec::new();
    for transport in &spec.order {
        order.push(match transport.get_ref().as_str() {
            "v4" | "dhcpv4" => Transport::DhcpV4,
            "v6" | "dhcpv6" => Transport::DhcpV6,
            other => {
                return Err(at(
                    transport.span(),
                    format!("unknown transport {other:?} (v4, v6)"),
                ));
            }
        });
    }
    let mut console = Vec::new();
    for input in &spec.console {
        let keys = match (&input.pin, &input.recovery_password) {
            (Some(pin), None) => Keystrokes::Pin(pin.clone()),
            (None, Some(text)) if text == "correct" => Keystrokes::RecoveryPassword(
                recovery_password
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            (None, Some(text)) => Keystrokes::RecoveryPassword(text.clone()),
            _ => {
                return Err(at(
                    spec.name.span(),
                    "each console input has one of `pin` or `recovery_password`".into(),
                ));
            }
        };
        console.push(ConsoleInput {
            after: input.after,
            keys,
        });
    }
    let firmware = Firmware {
        uefi_native: spec.firmware.uefi,
        uefi_version: spec.firmware.version,
        csm_enabled: spec.firmware.csm,
        network_stack: spec.firmware.network_stack,
        dhcp_driver: spec.firmware.dhcp_driver,
    };
    let trigger = match spec.trigger {
        TriggerSpec::PowerOn => BootTrigger::PowerOn,
        TriggerSpec::Restart => BootTrigger::Restart,
        TriggerSpec::ResumeFromHibernation => BootTrigger::ResumeFromHibernation,
        TriggerSpec::WakeOnLan => BootTrigger::WakeOnLan,
    };
    let config = BootConfig {
        firmware,
        order,
        console,
        trigger,
        ..BootConfig::default()
    };
    // One configuration for every start of this machine, and for the machines before it that
    // boot alike: a group's machines differ only where a console types a machine's own recovery
    // password, and a storm's 100,000 do not each keep a copy.
    let config = match shared_config.take() {
        Some(shared) if *shared == config => shared,
        _ => Arc::new(config),
    };
    *shared_config = Some(Arc::clone(&config));
    let owner_auth = (!spec.management_points.is_empty()).then(|| tpm.owner_auth_full());
    // Only a client with an agent keeps a second copy of its disk.
    let enabled_volume = owner_auth.as_ref().map(|_| volume.clone());
    let tpm: Box<dyn Tpm> = Box::new(tpm);
    let machine = Rc::new(RefCell::new(Machine {
        volume: Some(volume),
        tpm: Some(tpm),
    }));
    let escrow = owner_auth
        .zip(enabled_volume)
        .map(|(owner_auth, enabled_volume)| EscrowSource {
            machine: machine.clone(),
            enabled_volume,
            keys: RefCell::new(keys),
            owner_auth,
        });
    let record = Rc::new(RefCell::new(BootRecord::default()));
    let boot_at = spec.boot_at.unwrap_or_default();
    let shared_record = record.clone();
    let asleep = trigger == BootTrigger::WakeOnLan;
    sim.add_service(host, "bootmgr", move || {
        let boot = BootService::new(Arc::clone(&config), machine.clone(), shared_record.clone());
        if asleep {
            // Asleep until a magic packet for it arrives (`wake_on_lan` sends it at boot_at).
            Box::new(crate::wake::Sleeping::new(boot))
        } else {
            Box::new(boot)
        }
    })
    .map_err(|err| at(spec.name.span(), err.to_string()))?;
    if boot_at > Duration::ZERO && !asleep {
        // Powered off until `boot_at`.
        sim.stop_service_at(SimTime::ZERO, host, "bootmgr")
            .and_then(|()| sim.start_service_at(sim_time(boot_at), host, "bootmgr"))
            .map_err(|err| at(spec.name.span(), err.to_string()))?;
    }
    Ok(ClientMachine {
        name,
        group: spec.name.get_ref().clone(),
        record,
        setup,
        boot_at,
        escrow: escrow.map(Box::new),
        checks: checks.map(Box::new),
    })
}

/// A server host (DHCP or WDS) named `name`, with one adapter at the static `address` on
/// `segment`: its segment, host, address and MAC (named for the packet views).
fn place_server<'a>(
    loaded: &Loaded,
    sim: &mut Simulation,
    segments: &'a [NamedSegment],
    (names, nodes): (&mut Names, &mut Vec<PlacedNode>),
    (name, segment, address): (&Spanned<String>, &Spanned<String>, &Spanned<String>),
) -> Result<(&'a NamedSegment, HostId, Ipv4Net, [u8; 6]), ScenarioError> {
    let seg = find_segment(loaded, segments, segment)?;
    let net: Ipv4Net = parse_spanned(loaded, address, "an address/prefix")?;
    let host = sim.add_host(name.get_ref());
    let adapter = sim
        .add_adapter(host, "eth0", seg.id, AdapterConfig::static_ipv4(net))
        .map_err(|err| loaded.error_at(address.span(), err.to_string()))?;
    let mac = sim.adapter(adapter).map_or([0; 6], |a| a.mac.0);
    names.by_mac.insert(mac, name.get_ref().as_str().into());
    nodes.push(PlacedNode {
        name: name.get_ref().clone(),
        group: name.get_ref().clone(),
        node: NodeId::Host(host),
        adapters: vec![("eth0".into(), Some(adapter), seg.id)],
    });
    Ok((seg, host, net, mac))
}

/// Group Policy puts `cert` in the client's FVE_NKP store. The seed adds the protector only
/// with "a valid certificate present in the FVE_NKP store", so an unfit certificate counts as
/// none: the store is left empty and the reason is returned (for the first certificate and a
/// new one alike).
fn deliver_to_fve_nkp(
    store: &mut NetworkUnlockCertificateStore,
    cert: &NamedCertificate,
) -> Option<String> {
    match &cert.network_unlock {
        Ok(valid) => {
            store.install(valid.clone());
            None
        }
        Err(unfit) => {
            store.remove();
            Some(unfit.to_string())
        }
    }
}

fn describe_reboot(outcome: &RebootOutcome) -> String {
    match outcome {
        RebootOutcome::Added { .. } => "the Network (Certificate Based) protector is added".into(),
        RebootOutcome::Replaced { .. } => {
            "the Network (Certificate Based) protector is replaced by one for the new certificate"
                .into()
        }
        RebootOutcome::Removed { .. } => {
            "the Network (Certificate Based) protector is deleted".into()
        }
        RebootOutcome::Kept { .. } => "the Network (Certificate Based) protector is kept".into(),
        RebootOutcome::NotAdded { reason } => format!("no Network Unlock protector ({reason})"),
    }
}

fn find_segment<'a>(
    loaded: &Loaded,
    segments: &'a [NamedSegment],
    name: &Spanned<String>,
) -> Result<&'a NamedSegment, ScenarioError> {
    by_name(loaded, segments, name, "segment", |s| &s.name)
}

fn certificate<'a>(
    loaded: &Loaded,
    certificates: &'a [NamedCertificate],
    name: &Spanned<String>,
) -> Result<&'a NamedCertificate, ScenarioError> {
    by_name(loaded, certificates, name, "certificate", |c| &c.name)
}

/// The item of `items` called `name`, or an error at the reference's line.
fn by_name<'a, T>(
    loaded: &Loaded,
    items: &'a [T],
    name: &Spanned<String>,
    what: &str,
    name_of: impl Fn(&T) -> &String,
) -> Result<&'a T, ScenarioError> {
    items
        .iter()
        .find(|item| name_of(item) == name.get_ref())
        .ok_or_else(|| loaded.error_at(name.span(), format!("no {what} {:?}", name.get_ref())))
}

/// A Network Unlock certificate from a seed, generated once per process (RSA key generation is
/// the slow part and the catalogue reuses a few seeds).
pub fn generated_certificate(seed: u64) -> CertificateBundle {
    static CACHE: OnceLock<Mutex<BTreeMap<u64, CertificateBundle>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(bundle) = cache.lock().ok().and_then(|c| c.get(&seed).cloned()) {
        return bundle;
    }
    let bundle = certificates::fixture::network_unlock(seed);
    if let Ok(mut c) = cache.lock() {
        c.insert(seed, bundle.clone());
    }
    bundle
}

/// The default pool of a segment: `.100` to `.199` of its subnet (when it is big enough), with
/// the router's address on the segment as option 3.
fn default_pool(subnet: Ipv4Net, router: Option<Ipv4Addr>) -> Option<Pool> {
    if subnet.prefix_len() > 24 {
        return None;
    }
    let base = u32::from(subnet.network());
    let pool = Pool::new(
        subnet,
        Ipv4Addr::from(base + 100),
        Ipv4Addr::from(base + 199),
    );
    Some(match router {
        Some(router) => pool.router(router),
        None => pool,
    })
}

fn parse_spanned<T: std::str::FromStr>(
    loaded: &Loaded,
    value: &Spanned<String>,
    what: &str,
) -> Result<T, ScenarioError> {
    value
        .get_ref()
        .parse()
        .map_err(|_| loaded.error_at(value.span(), format!("{:?} is not {what}", value.get_ref())))
}

/// "30%" → 300,000 per million.
fn parse_percent(text: &str) -> Option<u32> {
    let number: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (0.0..=100.0)
        .contains(&number)
        .then(|| (number * 10_000.0).round() as u32)
}

/// A measurement as firmware extends it: the SHA-256 of what was measured.
fn measurement(what: &str) -> [u8; 32] {
    Sha256::digest(what.as_bytes()).into()
}

/// Seconds with microsecond precision, for the transcript (a switched LAN answers in tens of
/// microseconds).
pub fn seconds(at: Duration) -> String {
    Seconds(at).to_string()
}

/// [`seconds`] written straight into a formatter (a storm's WDS log writes one a line).
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}s", self.0.as_secs(), self.0.subsec_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_text(text: &str) -> Result<World, ScenarioError> {
        let loaded = crate::model::parse(std::path::Path::new("cpu.toml"), text.to_string())?;
        build(&loaded, 1)
    }

    const SERVER: &str = "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n\
        [[wds]]\nname = \"wds\"\nsegment = \"corp\"\naddress = \"10.0.4.10/24\"\n";

    #[test]
    fn an_unfit_new_certificate_counts_as_none_as_the_first_one_does() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scenarios/cert-rotation-gpo-applied.toml"
        ))
        .expect("catalogue scenario");
        // The new certificate is issued from a template that skipped steps 10 to 14.
        let unfit = text.replacen(
            "name = \"nu-2027\"\n",
            "name = \"nu-2027\"\napplication_policy = false\n",
            1,
        );
        assert_ne!(unfit, text, "the scenario names nu-2027");
        let world = build_text(&unfit).expect("an unfit new certificate is no scenario error");
        assert!(
            world.clients[0].setup.iter().any(|l| l
                .contains("certificate nu-2027 to FVE_NKP, but it is not valid")
                && l.contains("the store counts as empty; reboot: ")),
            "{:#?}",
            world.clients[0].setup
        );
    }

    #[test]
    fn wake_from_and_same_server_as_are_checked_at_their_lines() {
        let client = "[[client]]\nname = \"pc\"\nwake_from = \"wds\"\n\
                      [[client.adapter]]\nsegment = \"corp\"\n";
        let err = build_text(&format!("{SERVER}{client}"))
            .err()
            .expect("not a woken client");
        assert!(err.message.contains("wake-on-lan"), "{err}");
        assert_eq!(err.line, 12, "{err}");
        let woken = client.replace("wake_from = \"wds\"", "trigger = \"wake-on-lan\"");
        let world = build_text(&format!("{SERVER}{woken}")).expect("woken by the WDS server");
        assert!(
            world
                .setup
                .iter()
                .any(|l| l.contains("wds sends a Wake-on-LAN magic packet")),
            "{:?}",
            world.setup
        );
        let dhcp =
            "[[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\naddress = \"10.0.4.2/24\"\n";
        let shared = format!(
            "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\n\
             subnet = \"10.0.4.0/24\"\n{dhcp}[[wds]]\nname = \"wds\"\nsame_server_as = \"dhcp\"\n\
             segment = \"corp\"\naddress = \"10.0.4.2/24\"\n"
        );
        let world = build_text(&shared).expect("one machine");
        assert_eq!(world.wds[0].host, world.dhcp_servers[0].host);
        let elsewhere = shared.replace("same_server_as = \"dhcp\"", "same_server_as = \"dhcp2\"");
        let err = build_text(&elsewhere).err().expect("no such DHCP server");
        assert!(err.message.contains("no DHCP server \"dhcp2\""), "{err}");
    }

    #[test]
    fn a_minimum_pin_length_outside_4_to_20_is_refused_at_its_line() {
        for digits in [3, 21] {
            let err = build_text(&format!(
                "{SERVER}[domain]\nminimum_pin_length = {digits}\n"
            ))
            .err()
            .expect("out of range");
            assert_eq!(err.line, 11, "{err}");
            assert!(err.message.contains("4 to 20"), "{err}");
        }
        let world =
            build_text(&format!("{SERVER}[domain]\nminimum_pin_length = 20\n")).expect("in range");
        assert!(world.setup.iter().any(|l| l.contains("is 20 digits")));
    }

    #[test]
    fn a_modelled_processor_is_described_and_its_mistakes_are_located() {
        let world = build_text(&format!(
            "{SERVER}cores = 8\ndecrypt_time = \"1ms\"\nqueue = 64\n"
        ))
        .expect("a valid processor");
        assert!(world.setup.iter().any(|line| line
            == "WDS server wds: 8 core(s), 0.001000s per private-key operation, at most 64 request(s) waiting"));
        let err = build_text(&format!("{SERVER}cores = 0\ndecrypt_time = \"1ms\"\n"))
            .err()
            .expect("no cores");
        assert_eq!((err.line, err.column), (10, 9), "{err}");
        assert!(err.message.contains("at least one core"), "{err}");
        let err = build_text(&format!("{SERVER}cores = 8\n"))
            .err()
            .expect("no time");
        assert_eq!(err.line, 10, "{err}");
        assert!(err.message.contains("give `decrypt_time` too"), "{err}");
    }

    const NETWORK: &str = "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n\
        [[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\naddress = \"10.0.4.2/24\"\n\
        [[wds]]\nname = \"wds\"\nsegment = \"corp\"\naddress = \"10.0.4.10/24\"\n\
        [[client]]\nname = \"pc1\"\n[[client.adapter]]\nsegment = \"corp\"\n";

    /// The error of a scenario with `fault` as its last table, and the line it is on (the
    /// table starts at line 18).
    fn fault_error(fault: &str) -> ScenarioError {
        build_text(&format!("{NETWORK}[[fault]]\n{fault}"))
            .err()
            .expect("a bad fault")
    }

    #[test]
    fn every_fault_kind_builds_and_is_described() {
        let faults = [
            (
                "segment = \"corp\"\nloss = \"30%\"\nfrom = \"1s\"\nto = \"2s\"\n",
                "30% packet loss on segment corp",
            ),
            (
                "sender = \"wds\"\nlatency = \"2500ms\"\njitter = \"10ms\"\n",
                "latency 2.500000s + up to 0.010000s jitter on frames wds sends",
            ),
            (
                "receiver = \"pc1\"\nduplicate = \"100%\"\n",
                "duplication 100% on frames pc1 receives",
            ),
            (
                "host = \"wds\"\ncorrupt = \"5%\"\n",
                "corruption 5% on frames to and from wds",
            ),
            (
                "adapter = \"pc1/eth0\"\nloss = \"1%\"\n",
                "1% packet loss on frames to and from pc1/eth0",
            ),
            (
                "partition = [\"wds\", \"pc1\"]\none_way = true\n",
                "one-way partition: nothing from wds reaches pc1",
            ),
            (
                "partition = [\"pc1\", \"wds\"]\n",
                "partition between pc1 and wds",
            ),
            (
                "adapter = \"pc1/eth0\"\nlink = \"down\"\nto = \"40s\"\n",
                "the link of pc1/eth0 is down",
            ),
            (
                "dhcp_server = \"dhcp\"\ndelay = \"5s\"\n",
                "DHCP server dhcp answers 5.000000s late",
            ),
            (
                "dhcp_server = \"dhcp\"\nsilent = true\n",
                "DHCP server dhcp answers nothing",
            ),
        ];
        for (fault, description) in faults {
            let world = build_text(&format!("{NETWORK}[[fault]]\n{fault}"))
                .unwrap_or_else(|err| panic!("{fault}: {err}"));
            assert_eq!(world.faults.len(), 1, "{fault}");
            assert_eq!(world.faults[0].description, description, "{fault}");
            assert!(
                world
                    .setup
                    .iter()
                    .any(|l| l.starts_with(&format!("fault: {description}, from "))),
                "{:?}",
                world.setup
            );
        }
    }

    #[test]
    fn bad_faults_are_refused_at_their_line_and_column() {
        let cases = [
            ("loss = \"30\"\n", (19, 8), "not a percentage"),
            ("segment = \"corp\"\n", (19, 11), "needs one effect"),
            (
                "loss = \"3%\"\ncorrupt = \"1%\"\n",
                (20, 11),
                "give `corrupt` its own",
            ),
            (
                "host = \"nobody\"\nloss = \"3%\"\n",
                (19, 8),
                "no host \"nobody\"",
            ),
            (
                "adapter = \"pc1\"\nloss = \"3%\"\n",
                (19, 11),
                "\"host/adapter\"",
            ),
            (
                "adapter = \"pc1/eth7\"\nlink = \"down\"\n",
                (19, 11),
                "no adapter \"eth7\"",
            ),
            (
                "adapter = \"pc1/eth0\"\nlink = \"flapping\"\n",
                (20, 8),
                "link is \"down\"",
            ),
            (
                "jitter = \"1ms\"\nloss = \"1%\"\n",
                (19, 10),
                "`jitter` goes with `latency`",
            ),
            ("latency = \"soon\"\n", (19, 11), "not a duration"),
            (
                "loss = \"1%\"\ndelay = \"1s\"\n",
                (20, 9),
                "a network delay is `latency`",
            ),
            (
                "dhcp_server = \"wds\"\nsilent = true\n",
                (19, 15),
                "no DHCP server \"wds\"",
            ),
            ("dhcp_server = \"dhcp\"\n", (19, 15), "`silent = true`"),
            (
                "partition = [\"pc1\"]\n",
                (19, 13),
                "two hosts or two segments",
            ),
            (
                "partition = [\"pc1\", \"corp\"]\n",
                (19, 13),
                "not one of each",
            ),
            (
                "partition = [\"pc1\", \"wds\"]\nhost = \"wds\"\n",
                (20, 8),
                "no other scope",
            ),
            (
                "loss = \"1%\"\nfrom = \"5s\"\nto = \"1s\"\n",
                (19, 8),
                "ends (1.000000s) before it begins",
            ),
        ];
        for (fault, (line, column), words) in cases {
            let err = fault_error(fault);
            assert_eq!((err.line, err.column), (line, column), "{fault}: {err}");
            assert!(err.message.contains(words), "{fault}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("cpu.toml:{line}:{column}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn percentages_parse_to_per_million() {
        assert_eq!(parse_percent("30%"), Some(300_000));
        assert_eq!(parse_percent("0.5 %"), Some(5_000));
        assert_eq!(parse_percent("100%"), Some(1_000_000));
        assert_eq!(parse_percent("101%"), None);
        assert_eq!(parse_percent("30"), None);
    }

    #[test]
    fn the_default_pool_is_100_to_199_with_the_router() {
        let pool = default_pool(
            "10.0.9.0/24".parse().expect("net"),
            Some(Ipv4Addr::new(10, 0, 9, 1)),
        )
        .expect("a /24 has a pool");
        assert_eq!(
            (pool.first, pool.last),
            (Ipv4Addr::new(10, 0, 9, 100), Ipv4Addr::new(10, 0, 9, 199))
        );
        assert_eq!(pool.router, Some(Ipv4Addr::new(10, 0, 9, 1)));
        assert!(default_pool("10.0.9.0/25".parse().expect("net"), None).is_none());
    }
}
