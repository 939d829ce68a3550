//! The scenario file format: TOML read with serde, every table `deny_unknown_fields`, and every
//! mistake reported as `FILE:LINE:COLUMN: message` (a misspelt key, a segment that does not
//! exist, a duration that does not parse).
//!
//! A scenario reads like a story: what the network looks like (segments, routers and relays,
//! the DHCP server, the WDS servers with their certificates and `bde-network-unlock.ini`), which
//! machines boot and what their users do, what goes wrong and when, and what must come out.
//! Defaults keep the small ones short: a segment gets a DHCP pool unless it says otherwise, a
//! WDS server holds every certificate of the scenario, a client has TPM+PIN, a recovery
//! password and (Group Policy allowing) the Network Unlock protector for the first certificate.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::catalogue;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A one-line title ("The happy path over DHCPv4").
    pub title: String,
    /// What it teaches, in a few sentences; the transcript opens with it.
    #[serde(default)]
    pub teaches: String,
    /// The default seed (`--seed` overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time to run for.
    #[serde(default = "default_duration", with = "duration")]
    pub duration: Duration,
    /// "full" (every packet) or "summary" (outcomes only; for storms).
    #[serde(default)]
    pub transcript: TranscriptDetail,
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<CertificateSpec>,
    #[serde(default, rename = "segment")]
    pub segments: Vec<SegmentSpec>,
    #[serde(default, rename = "router")]
    pub routers: Vec<RouterSpec>,
    #[serde(default, rename = "dhcp_server")]
    pub dhcp_servers: Vec<DhcpServerSpec>,
    #[serde(default)]
    pub wds: Vec<WdsSpec>,
    /// The domain's Group Policy, as the domain controller holds it for every client.
    #[serde(default)]
    pub domain: DomainSpec,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientSpec>,
    #[serde(default, rename = "event")]
    pub events: Vec<EventSpec>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    #[serde(default, rename = "expect")]
    pub expectations: Vec<ClientExpectation>,
    #[serde(default, rename = "expect_server")]
    pub server_expectations: Vec<ServerExpectation>,
    #[serde(default, rename = "expect_packets")]
    pub packet_expectations: Vec<PacketExpectation>,
    /// The recovery service (issue 7); present, or implied by a `[[management_point]]`, it
    /// runs the escrow lab beside the boots.
    pub recovery: Option<RecoverySpec>,
    #[serde(default, rename = "management_point")]
    pub management_points: Vec<ManagementPointSpec>,
    #[serde(default)]
    pub helpdesk: Vec<HelpdeskSpec>,
    #[serde(default, rename = "expect_escrow")]
    pub escrow_expectations: Vec<EscrowExpectation>,
    pub expect_database: Option<DatabaseExpectation>,
    /// A scenario without any expectation is refused (it would always pass) unless it says so
    /// here: a demonstration rather than a test.
    #[serde(default)]
    pub expect_nothing: bool,
    /// Write, per client, the seed's client-side troubleshooting checks
    /// (`client-checks-NAME.txt`: `manage-bde -status`, `manage-bde -protectors -get`, the
    /// policy as GPRESULT shows it, the FVE_NKP store).
    #[serde(default)]
    pub client_checks: bool,
}

pub mod preflight;
pub mod recovery;

pub use recovery::{
    DatabaseExpectation, DatabaseMode, EscrowExpectation, FaceSpec, HelpdeskSpec,
    ManagementPointSpec, RecoverySpec, TrustSpec,
};

fn default_seed() -> u64 {
    1
}

fn default_duration() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TranscriptDetail {
    #[default]
    Full,
    Summary,
}

/// A Network Unlock certificate (with its private key), generated from a seed as the seed
/// document's `certreq` would make it, or read from a `.pfx`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub name: Spanned<String>,
    /// Generate deterministically from this seed.
    pub seed: Option<u64>,
    /// Or read this `.pfx` (relative to the scenario file).
    pub pfx: Option<PathBuf>,
    pub password: Option<String>,
    /// With `seed`: whether the template it was issued from added the BitLocker Network Unlock
    /// application policy (steps 10 to 14 of the seed's template); `false` makes a certificate
    /// that misses that step, which the client's FVE_NKP store refuses.
    #[serde(default = "yes")]
    pub application_policy: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub name: Spanned<String>,
    /// The IPv4 subnet ("10.0.4.0/24").
    pub subnet: Spanned<String>,
    /// One-way latency of the segment.
    #[serde(default, with = "opt_duration")]
    pub latency: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: Spanned<String>,
    #[serde(rename = "interface")]
    pub interfaces: Vec<RouterInterfaceSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterInterfaceSpec {
    pub segment: Spanned<String>,
    /// The router's address and prefix on that segment ("10.0.9.1/24").
    pub address: Spanned<String>,
    /// DHCP relay (IP helper) on this interface: where to forward client broadcasts.
    #[serde(default)]
    pub relay_to: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpServerSpec {
    pub name: Spanned<String>,
    pub segment: Spanned<String>,
    pub address: Spanned<String>,
    /// Pools; by default one per segment of the scenario (`.100` to `.199`, router `.1`).
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolSpec>,
    /// Which DHCP server runs on real kernels (`--backend netns`): nulab's own (default),
    /// dnsmasq or Kea. The simulator always runs nulab's server core.
    #[serde(default)]
    pub software: DhcpSoftware,
}

/// The client TPM of a real-kernel run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTpm {
    /// nulab's simulated TPM, its state in a file.
    #[default]
    Simulated,
    /// swtpm (Debian package swtpm), through the `real-tpm` feature.
    Swtpm,
}

/// The DHCP server program of a real-kernel run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpSoftware {
    /// `nulab-dhcp-server`: the simulator's server core on real interfaces.
    #[default]
    Nulab,
    /// dnsmasq (Debian package dnsmasq-base).
    Dnsmasq,
    /// ISC Kea's `kea-dhcp4` (Debian package kea-dhcp4-server).
    Kea,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub subnet: Spanned<String>,
    pub first: Spanned<String>,
    pub last: Spanned<String>,
    pub router: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WdsSpec {
    pub name: Spanned<String>,
    pub segment: Spanned<String>,
    pub address: Spanned<String>,
    /// The DHCP server whose machine this WDS server runs on (the seed requires them apart;
    /// this models what happens when they are not). Its `segment` and `address` are the DHCP
    /// server's.
    pub same_server_as: Option<Spanned<String>>,
    /// The provider's certificate store; by default every certificate of the scenario.
    pub certificates: Option<Vec<Spanned<String>>>,
    /// `bde-network-unlock.ini`, inline.
    pub policy: Option<String>,
    /// Or read from a file (relative to the scenario file).
    pub policy_file: Option<PathBuf>,
    /// The BitLocker-NetworkUnlock feature is installed (`Install-WindowsFeature
    /// BitLocker-NetworkUnlock`): without it WDS has no Network Unlock provider.
    #[serde(default = "yes")]
    pub feature_installed: bool,
    /// The Network Unlock provider is registered with WDS.
    #[serde(default = "yes")]
    pub registered: bool,
    /// The WDS service is running at the start.
    #[serde(default = "yes")]
    pub running: bool,
    /// The WDS debug log (Deployment-Services-Diagnostics/Debug) is enabled from the start.
    /// Off by default, as on a WDS server: nothing is logged until it is enabled (here, or by
    /// an `enable-debug-log` event); the counters count regardless.
    #[serde(default)]
    pub debug_log: bool,
    /// The server's processor: with `decrypt_time`, each private-key operation takes that long
    /// on one of `cores` (default 4) and requests wait for a free core; without it, a request
    /// is answered the instant it arrives.
    #[serde(default, with = "opt_duration")]
    pub decrypt_time: Option<Duration>,
    pub cores: Option<Spanned<u16>>,
    /// Requests that may wait for a core before more are shed (default: no bound).
    pub queue: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Where a client's Network Unlock policy comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySourceSpec {
    #[default]
    GroupPolicy,
    Registry,
}

/// Why a client starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerSpec {
    #[default]
    PowerOn,
    Restart,
    ResumeFromHibernation,
    WakeOnLan,
}

/// `[domain]`: what the domain controller's Group Policy does to every client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// The BitLocker Network Unlock certificate policy ("Add Network Unlock Certificate"):
    /// `"deployed"` (default) or `"deleted"` after the clients got their protectors, which the
    /// seed says removes the protectors across the domain.
    #[serde(default)]
    pub certificate_policy: CertificatePolicy,
    /// "Configure minimum PIN length for startup" (4 to 20 digits): a TPM+PIN protector whose
    /// PIN is shorter is refused when BitLocker is enabled. Not configured: 4.
    pub minimum_pin_length: Option<Spanned<u8>>,
}

/// The state of the domain's Network Unlock certificate policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificatePolicy {
    #[default]
    Deployed,
    Deleted,
}

/// A client machine (or, with `count`, that many identical ones: a boot storm).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: Spanned<String>,
    /// How many machines of this kind boot (names get `-0001`, `-0002`... when over 1).
    #[serde(default = "one")]
    pub count: u32,
    /// When they power on (with `trigger = "wake-on-lan"`: when the magic packet is sent).
    #[serde(default, with = "opt_duration")]
    pub boot_at: Option<Duration>,
    /// Why they start: `"power-on"` (default), `"restart"`, `"resume-from-hibernation"` or
    /// `"wake-on-lan"` (asleep until a magic packet for one of its adapters arrives; the packet
    /// is sent at `boot_at` by `wake_from`).
    #[serde(default)]
    pub trigger: TriggerSpec,
    /// The server (WDS or DHCP) that sends the Wake-on-LAN magic packet, on its own segment;
    /// by default the first WDS server.
    pub wake_from: Option<Spanned<String>>,
    /// Network adapters in firmware enumeration order.
    #[serde(rename = "adapter")]
    pub adapters: Vec<AdapterSpec>,
    #[serde(default)]
    pub firmware: FirmwareSpec,
    /// Protectors added by hand when BitLocker was enabled (Network Unlock comes from Group
    /// Policy, see `allow_network_unlock`).
    #[serde(default = "default_protectors")]
    pub protectors: Vec<Spanned<String>>,
    /// Group Policy "Allow network unlock at startup". `false` here means it was disabled after
    /// the protector had been added: the reboot that applied it deleted the protector.
    #[serde(default = "yes")]
    pub allow_network_unlock: bool,
    /// Where the Network Unlock settings and certificate come from: `"group-policy"` (a GPO,
    /// Windows Server 2012 and later; default) or `"registry"`, the seed's path for earlier
    /// servers (`certutil -f -grouppolicy -addstore FVE_NKP` and the FVE registry values).
    #[serde(default)]
    pub policy_source: PolicySourceSpec,
    /// The certificate Group Policy put in the client's FVE_NKP store (by default the first
    /// certificate of the scenario); "none" for an empty store.
    pub certificate: Option<Spanned<String>>,
    /// A later Group Policy update with a new certificate (rotation).
    pub new_certificate: Option<Spanned<String>>,
    /// Whether that update reached the client before this boot.
    #[serde(default = "yes")]
    pub new_certificate_applied: bool,
    /// The TPM+PIN protector's PIN.
    #[serde(default = "default_pin")]
    pub pin: String,
    /// A firmware update measured into PCR 7 after the protectors were sealed.
    #[serde(default)]
    pub pcr_change: bool,
    /// Transport order of the unlock request ("v4", "v6").
    #[serde(default = "default_order")]
    pub order: Vec<Spanned<String>>,
    /// What the person at the console types, in order; empty: nobody is there.
    #[serde(default)]
    pub console: Vec<ConsoleSpec>,
    /// The site's management points this client's BitLocker management agent knows, as the
    /// admin lists them (the agent tries the HTTPS ones first); empty: no agent.
    #[serde(default)]
    pub management_points: Vec<Spanned<String>>,
    /// Which roots the agent trusts for a management point's certificate.
    #[serde(default)]
    pub trust: TrustSpec,
    /// The TPM a real-kernel run (`--backend netns`) boots the client on: the simulated one
    /// (default) or swtpm, a real TPM 2.0. The simulator always uses its simulated TPM.
    #[serde(default)]
    pub tpm: ClientTpm,
}

fn one() -> u32 {
    1
}

fn default_protectors() -> Vec<Spanned<String>> {
    ["tpm-and-pin", "recovery-password"]
        .into_iter()
        .map(|s| Spanned::new(0..0, s.to_string()))
        .collect()
}

fn default_pin() -> String {
    "246810".into()
}

fn default_order() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "v4".to_string())]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSpec {
    /// A name for the transcript (by default `eth0`, `eth1`...).
    pub name: Option<String>,
    pub segment: Spanned<String>,
    /// Configured for DHCP (default). `false` with `address`: a management port.
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// A static address ("10.0.4.250/24").
    pub address: Option<Spanned<String>>,
    /// Cable plugged in.
    #[serde(default = "yes")]
    pub link: bool,
    /// The firmware has a UEFI driver for it.
    #[serde(default = "yes")]
    pub uefi_driver: bool,
}

/// The client's firmware: the seed's Network Unlock prerequisites, one setting each (issue 19),
/// so each missing one is its own failure reason. Written as a table
/// (`firmware = { version = "2.3.0" }`, `{ network_stack = false }`, `{ csm = true }`,
/// `{ dhcp_driver = false }`, `{ mode = "bios" }`; what is not given is as Network Unlock
/// needs it) or as one of the shorthands `"uefi"`, `"uefi-csm"`, `"bios"`,
/// `"uefi-no-dhcp-driver"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSpec {
    /// UEFI native mode; `false` is legacy BIOS.
    pub uefi: bool,
    /// The UEFI specification version ("2.3.1").
    pub version: UefiVersion,
    /// The Compatibility Support Module is enabled.
    pub csm: bool,
    /// The network stack is enabled in the BIOS setup.
    pub network_stack: bool,
    /// The firmware has a DHCP-capable network driver.
    pub dhcp_driver: bool,
}

pub use boot_client::boot::UefiVersion;

impl Default for FirmwareSpec {
    /// UEFI 2.3.1 native mode, no CSM, network stack on, with a DHCP driver.
    fn default() -> Self {
        Self {
            uefi: true,
            version: UefiVersion::MINIMUM,
            csm: false,
            network_stack: true,
            dhcp_driver: true,
        }
    }
}

impl FirmwareSpec {
    /// The settings a shorthand stands for.
    fn shorthand(name: &str) -> Option<Self> {
        let uefi = Self::default();
        Some(match name {
            "uefi" => uefi,
            "uefi-csm" => Self { csm: true, ..uefi },
            "bios" => Self {
                uefi: false,
                ..uefi
            },
            "uefi-no-dhcp-driver" => Self {
                dhcp_driver: false,
                ..uefi
            },
            _ => return None,
        })
    }
}

/// The table form of [`FirmwareSpec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareTable {
    #[serde(default)]
    mode: Option<String>,
    version: Option<String>,
    #[serde(default)]
    csm: bool,
    #[serde(default = "yes")]
    network_stack: bool,
    #[serde(default = "yes")]
    dhcp_driver: bool,
}

impl<'de> Deserialize<'de> for FirmwareSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FirmwareSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"uefi\", \"uefi-csm\", \"bios\", \"uefi-no-dhcp-driver\" or a table \
                     (mode, version, csm, network_stack, dhcp_driver)",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FirmwareSpec, E> {
                FirmwareSpec::shorthand(text).ok_or_else(|| {
                    E::custom(format!(
                        "unknown firmware {text:?} (uefi, uefi-csm, bios, uefi-no-dhcp-driver, \
                         or a table of settings)"
                    ))
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FirmwareSpec, A::Error> {
                use serde::de::Error;
                let table =
                    FirmwareTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let uefi = match table.mode.as_deref() {
                    None | Some("uefi") => true,
                    Some("bios") => false,
                    Some(other) => {
                        return Err(A::Error::custom(format!(
                            "unknown firmware mode {other:?} (uefi, bios)"
                        )));
                    }
                };
                let version = match &table.version {
                    None => UefiVersion::MINIMUM,
                    Some(text) => text.parse().map_err(A::Error::custom)?,
                };
                Ok(FirmwareSpec {
                    uefi,
                    version,
                    csm: table.csm,
                    network_stack: table.network_stack,
                    dhcp_driver: table.dhcp_driver,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSpec {
    /// Typed this long after the prompt appears.
    #[serde(with = "duration")]
    pub after: Duration,
    pub pin: Option<String>,
    /// Esc at the PIN prompt, then a recovery password: "correct" for the volume's own, or the
    /// 48 digits.
    pub recovery_password: Option<String>,
}

/// Something that happens to a server at a time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    #[serde(with = "duration")]
    pub at: Duration,
    /// The host (a WDS or DHCP server name).
    pub host: Spanned<String>,
    pub action: Spanned<String>,
}

/// A fault over a time window (`from`, by default the start; `to`, by default the end), with
/// one effect and one scope. The effect is one of `loss`, `latency` (with `jitter`),
/// `duplicate`, `corrupt`, `partition`, `link = "down"` (an adapter's link, up again at `to`),
/// or, with `dhcp_server`, `delay` (it answers that late) or `silent = true` (it answers
/// nothing). The scope of `loss`, `latency`, `duplicate` and `corrupt` is a `segment`, a
/// `host` (the frames it sends and receives), a `sender` and/or a `receiver` (one direction),
/// or an `adapter` (`"host/adapter"`); with none, every segment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub segment: Option<Spanned<String>>,
    /// A host (a client, a WDS, DHCP server or router): both directions.
    pub host: Option<Spanned<String>>,
    /// Only the frames this host sends.
    pub sender: Option<Spanned<String>>,
    /// Only the frames this host receives.
    pub receiver: Option<Spanned<String>>,
    /// `"host/adapter"` ("pc1/eth0"): the frames that adapter sends and receives, or its link.
    pub adapter: Option<Spanned<String>>,
    /// Packet loss, "30%".
    pub loss: Option<Spanned<String>>,
    /// A delay added to each frame ("2500ms"), plus a uniform draw up to `jitter`.
    pub latency: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    /// The share of frames delivered twice, "100%".
    pub duplicate: Option<Spanned<String>>,
    /// The share of frames with one byte of the payload changed, "100%".
    pub corrupt: Option<Spanned<String>>,
    /// Two hosts or two segments that cannot reach each other (`one_way`: only the first
    /// cannot reach the second).
    pub partition: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub one_way: bool,
    /// `"down"`: the adapter's link is down over the window.
    pub link: Option<Spanned<String>>,
    /// A DHCP server that answers late (`delay`) or not at all (`silent`).
    pub dhcp_server: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    #[serde(default)]
    pub silent: bool,
    #[serde(default, with = "opt_duration")]
    pub from: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub to: Option<Duration>,
}

/// What must come out for a client (every machine of it, for a storm).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientExpectation {
    pub client: Spanned<String>,
    /// "network-unlock", "tpm-and-pin", "recovery-password", "tpm", "startup-key".
    pub unlocked_by: Option<Spanned<String>>,
    /// "pin" or "recovery-password": the machine waits there.
    pub waiting_at: Option<Spanned<String>>,
    /// Unlocked no later than this.
    #[serde(default, with = "opt_duration")]
    pub unlocked_within: Option<Duration>,
    /// The earlier protectors' failures, in order: "network-unlock: words of the reason".
    pub failures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerExpectation {
    pub wds: Spanned<String>,
    /// Counter values ("replied", "drop.subnet-denied"...).
    #[serde(default)]
    pub counters: std::collections::BTreeMap<Spanned<String>, u64>,
    /// Substrings that must appear in its log.
    #[serde(default)]
    pub log_contains: Vec<String>,
    /// Substrings that must not appear in its log (what was not logged while the debug log
    /// was off).
    #[serde(default)]
    pub log_lacks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketExpectation {
    pub segment: Spanned<String>,
    pub nkpu_requests: Option<u64>,
    pub nkpu_replies: Option<u64>,
    pub dhcp_messages: Option<u64>,
}

/// A mistake in a scenario file, with where it is (`FILE:LINE:COLUMN: message`; `FILE: message`
/// when it is about the whole file, line 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", located_message(self))]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn located_message(err: &ScenarioError) -> String {
    if err.line == 0 {
        format!("{}: {}", err.file, err.message)
    } else {
        format!("{}:{}:{}: {}", err.file, err.line, err.column, err.message)
    }
}

/// A scenario and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    /// The file, or for a catalogue entry its path in the source tree (`scenarios/NAME.toml`).
    pub path: PathBuf,
    pub text: String,
    pub scenario: Scenario,
    origin: Origin,
}

/// Where a scenario's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File,
    /// The catalogue inside the binary ([`crate::catalogue`]).
    Catalogue,
}

impl Loaded {
    /// A `file:line:column: message` error for a span of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ScenarioError {
        located(&self.path, &self.text, span.start, message.into())
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Whether it is an entry of the catalogue inside the binary rather than a file.
    pub fn from_catalogue(&self) -> bool {
        self.origin == Origin::Catalogue
    }

    /// What the command line names it by: the catalogue name, or the file's path.
    pub fn argument(&self) -> String {
        match self.origin {
            Origin::Catalogue => self.name.clone(),
            Origin::File => self.path.display().to_string(),
        }
    }

    /// A file the scenario names (`policy_file`, `pfx`), relative to the scenario: read from
    /// beside the file, or from the catalogue inside the binary. The error says which file.
    pub fn read_relative(&self, relative: &Path) -> Result<Vec<u8>, String> {
        let path = self.base_dir().join(relative);
        match self.origin {
            Origin::File => {
                std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))
            }
            Origin::Catalogue => catalogue::file(relative)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("{}: not in the catalogue", path.display())),
        }
    }
}

/// Reads and parses a scenario file (syntax and unknown keys; references are checked when
/// the world is built).
pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|err| ScenarioError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {err}"),
    })?;
    parse(path, text)
}

/// Parses scenario text that came from `path`.
pub fn parse(path: &Path, text: String) -> Result<Loaded, ScenarioError> {
    parse_from(path, text, Origin::File)
}

/// Loads a scenario of the catalogue inside the binary.
pub fn load_catalogue(name: &str) -> Result<Loaded, ScenarioError> {
    let text = catalogue::text(name).ok_or_else(|| unknown_scenario(name))?;
    parse_catalogue(name, text.to_string())
}

/// Every scenario of the catalogue, loaded, in name order.
pub fn load_whole_catalogue() -> Result<Vec<Loaded>, ScenarioError> {
    catalogue::names().into_iter().map(load_catalogue).collect()
}

/// Loads what `arg` names on a command line: the file at that path when there is one, else
/// the catalogue entry (`NAME`, `NAME.toml` or `scenarios/NAME.toml`), else an error that
/// lists the catalogue.
pub fn resolve(arg: &str) -> Result<Loaded, ScenarioError> {
    let path = Path::new(arg);
    if path.is_file() {
        return load(path);
    }
    match catalogue::name_of(arg) {
        Some(name) => load_catalogue(name),
        None => Err(unknown_scenario(arg)),
    }
}

fn unknown_scenario(arg: &str) -> ScenarioError {
    ScenarioError {
        file: arg.to_string(),
        line: 0,
        column: 0,
        message: format!(
            "no such file, and no scenario of that name in the catalogue; the catalogue has: {}",
            catalogue::names().join(", ")
        ),
    }
}

/// Parses the text of the catalogue entry `name`.
fn parse_catalogue(name: &str, text: String) -> Result<Loaded, ScenarioError> {
    let path = Path::new(catalogue::FOLDER).join(format!("{name}.toml"));
    parse_from(&path, text, Origin::Catalogue)
}

fn parse_from(path: &Path, text: String, origin: Origin) -> Result<Loaded, ScenarioError> {
    let scenario: Scenario = toml::from_str(&text).map_err(|err| {
        let at = err.span().map_or(0, |span| span.start);
        located(path, &text, at, err.message().to_string())
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let loaded = Loaded {
        name,
        path: path.to_owned(),
        text,
        scenario,
        origin,
    };
    check_names(&loaded)?;
    recovery::check_references(&loaded)?;
    preflight::check(&loaded)?;
    Ok(loaded)
}

/// Names are unique within their kind, and hosts share one namespace.
fn check_names(loaded: &Loaded) -> Result<(), ScenarioError> {
    let s = &loaded.scenario;
    let unique = |mut names: Vec<&Spanned<String>>, what: &str| -> Result<(), ScenarioError> {
        // In file order, so the error points at the second of two equal names.
        names.sort_by_key(|name| name.span().start);
        let mut seen = BTreeSet::new();
        for name in names {
            if name.get_ref().is_empty() {
                return Err(loaded.error_at(name.span(), format!("a {what} needs a name")));
            }
            if !seen.insert(name.get_ref().clone()) {
                return Err(loaded.error_at(
                    name.span(),
                    format!("two {what}s are called {:?}", name.get_ref()),
                ));
            }
        }
        Ok(())
    };
    unique(
        s.certificates.iter().map(|c| &c.name).collect(),
        "certificate",
    )?;
    unique(s.segments.iter().map(|c| &c.name).collect(), "segment")?;
    unique(
        s.routers
            .iter()
            .map(|r| &r.name)
            .chain(s.dhcp_servers.iter().map(|d| &d.name))
            .chain(s.wds.iter().map(|w| &w.name))
            .chain(s.clients.iter().map(|c| &c.name))
            .collect(),
        "host",
    )?;
    Ok(())
}

fn located(path: &Path, text: &str, at: usize, message: String) -> ScenarioError {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ScenarioError {
        file: path.display().to_string(),
        line,
        column,
        message,
    }
}

impl fmt::Display for FirmwareSpec {
    /// The shorthand's words when the settings are a shorthand's, else each setting that is
    /// not as Network Unlock needs it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = [
            ("uefi", "UEFI native"),
            ("uefi-csm", "UEFI with CSM"),
            ("bios", "legacy BIOS"),
            ("uefi-no-dhcp-driver", "UEFI without a DHCP driver"),
        ];
        for (shorthand, words) in named {
            if FirmwareSpec::shorthand(shorthand).as_ref() == Some(self) {
                return f.write_str(words);
            }
        }
        if !self.uefi {
            f.write_str("legacy BIOS")?;
        } else {
            write!(f, "UEFI {}", self.version)?;
            f.write_str(if self.csm { " with CSM" } else { " native" })?;
        }
        let mut missing = Vec::new();
        if !self.network_stack {
            missing.push("network stack disabled in the BIOS setup");
        }
        if !self.dhcp_driver {
            missing.push("no DHCP driver");
        }
        if !missing.is_empty() {
            write!(f, " ({})", missing.join(", "))?;
        }
        Ok(())
    }
}

/// Durations as humans write them: "5s", "200ms", "1m 30s".
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|err| serde::de::Error::custom(format!("{text:?} is not a duration: {err}")))
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|err| serde::de::Error::custom(format!("{text:?} is not a duration: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Loaded, ScenarioError> {
        parse(Path::new("t.toml"), text.to_string())
    }

    #[test]
    fn a_short_scenario_takes_its_defaults() {
        let loaded = parse_str(
            "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n\
             [[client]]\nname = \"pc\"\n[[client.adapter]]\nsegment = \"corp\"\n",
        )
        .expect("parses");
        let client = &loaded.scenario.clients[0];
        assert_eq!(client.count, 1);
        assert!(client.allow_network_unlock);
        assert_eq!(client.protectors.len(), 2);
        assert_eq!(loaded.scenario.duration, Duration::from_secs(120));
        assert_eq!(loaded.name, "t");
    }

    #[test]
    fn firmware_is_a_shorthand_or_one_setting_each() {
        let client = |firmware: &str| {
            parse_str(&format!(
                "title = \"t\"\nexpect_nothing = true\n[[client]]\nname = \"pc\"\n\
                 firmware = {firmware}\n[[client.adapter]]\nsegment = \"corp\"\n"
            ))
            .map(|loaded| loaded.scenario.clients[0].firmware.clone())
        };
        assert_eq!(client("\"uefi\""), Ok(FirmwareSpec::default()));
        let csm = client("\"uefi-csm\"").expect("shorthand");
        assert!(csm.csm && csm.uefi && csm.network_stack && csm.dhcp_driver);
        assert_eq!(csm.to_string(), "UEFI with CSM");
        let old = client("{ version = \"2.3.0\" }").expect("table");
        assert_eq!(old.version, UefiVersion::new(2, 3, 0));
        assert_eq!(old.to_string(), "UEFI 2.3.0 native");
        let stack = client("{ network_stack = false }").expect("table");
        assert!(!stack.network_stack && stack.dhcp_driver);
        assert_eq!(
            stack.to_string(),
            "UEFI 2.3.1 native (network stack disabled in the BIOS setup)"
        );
        assert_eq!(client("{ mode = \"bios\" }").map(|f| f.uefi), Ok(false));
        for bad in [
            "\"uefi-2\"",
            "{ mode = \"efi\" }",
            "{ version = \"two\" }",
            "{ stack = false }",
        ] {
            let err = client(bad).expect_err(bad);
            assert_eq!(err.line, 5, "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_name_lists_the_catalogue() {
        let err = resolve("no-such-scenario").expect_err("unknown");
        assert!(err.message.contains("happy-path-ipv4"), "{err}");
        assert!(err.to_string().starts_with("no-such-scenario: "), "{err}");
    }

    #[test]
    fn every_catalogue_entry_loads_from_inside_the_binary() {
        let all = load_whole_catalogue().expect("the catalogue loads");
        assert_eq!(all.len(), catalogue::names().len());
        assert!(all.iter().all(Loaded::from_catalogue));
        let one = resolve("happy-path-ipv4").expect("by name");
        assert_eq!(one.argument(), "happy-path-ipv4");
        assert_eq!(one.path, Path::new("scenarios/happy-path-ipv4.toml"));
    }

    #[test]
    fn a_catalogue_scenario_reads_its_files_from_inside_the_binary_only() {
        let loaded = parse_catalogue("x", "title = \"t\"\nexpect_nothing = true\n".to_string())
            .expect("parses");
        assert!(loaded.from_catalogue());
        let err = loaded
            .read_relative(Path::new("policies/no-such.ini"))
            .expect_err("not embedded");
        assert_eq!(err, "scenarios/policies/no-such.ini: not in the catalogue");
        let on_disk = parse_str("title = \"t\"\nexpect_nothing = true\n").expect("parses");
        assert!(
            on_disk
                .read_relative(Path::new("no-such.ini"))
                .expect_err("no file")
                .starts_with("no-such.ini: "),
        );
    }

    #[test]
    fn a_scenario_that_expects_nothing_is_refused_unless_it_says_so() {
        let text = "title = \"t\"\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n";
        let err = parse_str(text).expect_err("expects nothing");
        assert!(err.message.contains("expect_nothing = true"), "{err}");
        assert_eq!((err.line, err.column), (1, 1), "{err}");
        parse_str(&format!("expect_nothing = true\n{text}")).expect("said so");
    }

    #[test]
    fn an_unknown_key_is_reported_with_file_and_line() {
        let err = parse_str("title = \"t\"\n[[segment]]\nname = \"corp\"\nsubnett = \"x\"\n")
            .expect_err("unknown key");
        assert_eq!((err.file.as_str(), err.line), ("t.toml", 4), "{err}");
        assert!(err.message.contains("subnett"), "{err}");
        assert!(err.to_string().starts_with("t.toml:4:"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_the_line() {
        let err = parse_str("title = \"t\"\nduration = \"soon\"\n").expect_err("bad duration");
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("soon"), "{err}");
    }

    #[test]
    fn duplicate_host_names_are_refused_where_the_second_is() {
        let err = parse_str(
            "title = \"t\"\n[[wds]]\nname = \"a\"\nsegment = \"s\"\naddress = \"1.2.3.4/24\"\n\
             [[dhcp_server]]\nname = \"a\"\nsegment = \"s\"\naddress = \"1.2.3.5/24\"\n",
        )
        .expect_err("duplicate");
        assert!(err.message.contains("two hosts"), "{err}");
        assert_eq!(err.line, 7, "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str(&text);
        }

        #[test]
        fn errors_point_inside_the_file(junk in "[a-z =\\[\\]\"\n]{0,80}") {
            if let Err(err) = parse_str(&format!("title = \"t\"\n{junk}")) {
                proptest::prop_assert!(err.line >= 1);
                proptest::prop_assert!(err.line <= junk.matches('\n').count() + 2);
            }
        }
    }
}
