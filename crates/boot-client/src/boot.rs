//! One whole boot of a BitLocker-protected machine, as the Windows boot manager runs it, sans-IO:
//! from "which protectors does this volume have" to "unlocked, by this protector, after these
//! others failed for these reasons" (or "waiting at the PIN prompt").
//!
//! The order, following the seed document and what the boot manager shows:
//!
//! 1. **Phase 1.** Read the protectors. A Network Unlock protector is tried first when the
//!    firmware can run it (UEFI native mode, version 2.3.1 or later, no CSM, the network stack
//!    enabled in the BIOS setup, a DHCP-capable network driver: one setting each); otherwise
//!    the reason it was skipped, for the first setting missing, is recorded. The TPM releases
//!    the Network Unlock secrets (the session key and the local intermediate key) only while
//!    the PCRs hold their sealing-time values.
//! 2. **Phase 2, adapter by adapter, in firmware order.** The UEFI DHCP driver gets an IPv4
//!    lease ([`dhcp::Client`]). Enumeration *stops* at the first adapter whose DHCP fails for any
//!    reason (no DHCP, unplugged, no driver, no offer): the seed's rule, which is why a
//!    management port without DHCP as first adapter defeats Network Unlock. An adapter that
//!    gets a lease but no verified unlock reply does not stop enumeration: nulab moves on to
//!    the next adapter (the seed is silent here; ARCHITECTURE.md records the decision and why).
//! 3. **Phases 3 to 6** on an adapter with a lease: one [`UnlockExchange`] with the protocol's
//!    timers and transport order.
//! 4. **Phases 7 and 8**: the network key and the TPM's intermediate key unwrap the volume
//!    master key ([`Volume::unlock_with_network_key`]); the data really decrypts.
//! 5. **Fallback**, when Network Unlock did not unlock: a TPM-only protector, a startup key on
//!    a USB stick, then the TPM+PIN prompt, then the recovery-password prompt. Who sits at the
//!    console is a script of [`ConsoleInput`]s (a PIN typed 5 s after the prompt appears, the
//!    Esc key and a recovery password, or nobody: the machine waits at the prompt for ever).
//!    A PCR change or a TPM lockout sends the user from the PIN prompt to recovery, as
//!    BitLocker does.
//!
//! The driver (the simulator or the real-socket shell) calls [`Boot::poll_transmit`] until it
//! returns `None`, sleeps until [`Boot::poll_timeout`], feeds [`Boot::handle_datagram`] (with
//! the adapter it arrived on) and [`Boot::handle_timeout`], and reads [`Boot::poll_event`] for
//! its transcript (a [`BootEvent::Dhcp`] carrying `ClientEvent::Bound` is the shell's cue to
//! configure the address on a real interface). [`Boot::outcome`] is set once nothing more can
//! happen without new input.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcp::{AdapterFacts, Client, ClientConfig, ClientEvent, Lease, Received};
use host_contract::rng::ParkedChaCha20;
use nkpu::{ClientKey, Thumbprint};
use rand_core::RngCore;
use tpm::{Tpm, TpmError};
use volume::{
    NetworkUnlockSecrets, ProtectorKind, RecoveryPassword, StartupKey, UnlockError, UnlockWith,
    Volume, VolumeKeys,
};

use crate::exchange::{
    ExchangeEvent, ExchangeOutcome, Secrets, Timers, Transport, TransportFailure, UnlockExchange,
    V4Lease, V6Link,
};

/// What the firmware can do: the seed's prerequisites for Network Unlock, one setting each,
/// so that each missing one is its own failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    /// UEFI native mode (not legacy BIOS).
    pub uefi_native: bool,
    /// The UEFI specification version the firmware implements; the seed asks for 2.3.1 or later.
    pub uefi_version: UefiVersion,
    /// A Compatibility Support Module is enabled ("Legacy mode", "Compatibility mode").
    pub csm_enabled: bool,
    /// The network stack is enabled in the BIOS setup (the seed: "confirm that the network
    /// stack has been enabled in the BIOS before starting the computer").
    pub network_stack: bool,
    /// The firmware has a DHCP-capable network driver.
    pub dhcp_driver: bool,
}

/// A UEFI specification version ("2.3.1").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UefiVersion {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl UefiVersion {
    /// The earliest version the seed accepts: "firmware version 2.3.1".
    pub const MINIMUM: UefiVersion = UefiVersion {
        major: 2,
        minor: 3,
        patch: 1,
    };

    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for UefiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for UefiVersion {
    type Err = String;

    /// "2.3.1", or "2.4" (patch 0).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a UEFI version (such as \"2.3.1\")");
        let parts: Vec<&str> = text.trim().split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let mut numbers = [0u8; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = part.parse().map_err(|_| bad())?;
        }
        Ok(Self::new(numbers[0], numbers[1], numbers[2]))
    }
}

impl Default for Firmware {
    /// UEFI 2.3.1 in native mode, network stack on, with a DHCP driver: what Network Unlock
    /// needs.
    fn default() -> Self {
        Self {
            uefi_native: true,
            uefi_version: UefiVersion::MINIMUM,
            csm_enabled: false,
            network_stack: true,
            dhcp_driver: true,
        }
    }
}

impl Firmware {
    /// Why Network Unlock cannot run on this firmware, if it cannot: the first prerequisite
    /// missing, in the order the firmware would meet them (mode, version, CSM, the network
    /// stack, the DHCP driver).
    pub fn network_unlock_blocker(&self) -> Option<String> {
        if !self.uefi_native {
            Some("the firmware boots in legacy BIOS mode, not UEFI native mode".into())
        } else if self.uefi_version < UefiVersion::MINIMUM {
            Some(format!(
                "the UEFI firmware implements version {}, older than the {} Network Unlock needs",
                self.uefi_version,
                UefiVersion::MINIMUM
            ))
        } else if self.csm_enabled {
            Some("the UEFI firmware has a Compatibility Support Module (CSM) enabled".into())
        } else if !self.network_stack {
            Some("the network stack is disabled in the BIOS setup".into())
        } else if !self.dhcp_driver {
            Some("the UEFI firmware has no DHCP-capable network driver".into())
        } else {
            None
        }
    }
}

/// Why the machine is starting: the seed names a reboot, a resume from hibernation and Wake on
/// LAN as the moments a TPM+PIN machine needs its PIN, which is why Network Unlock exists. The
/// boot manager's pre-boot authentication is the same for each (hibernation keeps memory on
/// the encrypted volume, so resuming unlocks it as a boot does); the trigger says why nobody
/// may be at the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BootTrigger {
    /// Powered on (or a scenario's boot that says no more).
    #[default]
    PowerOn,
    /// A restart, such as the one after a patch.
    Restart,
    /// Resuming from hibernation (S4).
    ResumeFromHibernation,
    /// A Wake-on-LAN magic packet reached an adapter ([`magic_packet`]).
    WakeOnLan,
}

impl fmt::Display for BootTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootTrigger::PowerOn => "powered on",
            BootTrigger::Restart => "restarting",
            BootTrigger::ResumeFromHibernation => "resuming from hibernation",
            BootTrigger::WakeOnLan => "woken by a Wake-on-LAN magic packet",
        })
    }
}

/// The UDP port a Wake-on-LAN magic packet is sent to (the discard port, by convention).
pub const WAKE_ON_LAN_PORT: u16 = 9;

/// A Wake-on-LAN magic packet for `mac`: six 0xFF bytes, then the MAC sixteen times.
pub fn magic_packet(mac: [u8; 6]) -> Vec<u8> {
    let mut packet = vec![0xff; 6];
    for _ in 0..16 {
        packet.extend_from_slice(&mac);
    }
    packet
}

/// The MAC a magic packet wakes, if `payload` holds one: the six 0xFF bytes followed by one MAC
/// sixteen times, anywhere in the payload (as NICs look for it). Never panics.
pub fn magic_packet_target(payload: &[u8]) -> Option<[u8; 6]> {
    const LEN: usize = 6 + 16 * 6;
    payload.windows(LEN).find_map(|window| {
        let (sync, macs) = window.split_at(6);
        if sync.iter().any(|b| *b != 0xff) {
            return None;
        }
        let mac: [u8; 6] = macs.get(..6)?.try_into().ok()?;
        macs.chunks_exact(6)
            .all(|chunk| chunk == mac)
            .then_some(mac)
    })
}

/// One network adapter, in the firmware's enumeration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAdapter {
    /// A name for transcripts ("onboard", "eth1").
    pub name: String,
    /// Link, DHCP configuration, UEFI driver, MAC.
    pub facts: AdapterFacts,
    /// The adapter's IPv6 link-local address, when IPv6 runs on it (DHCPv6 transport).
    pub ipv6_link_local: Option<Ipv6Addr>,
}

/// What someone at the console types.
#[derive(Clone, PartialEq, Eq)]
pub enum Keystrokes {
    /// A PIN at the TPM+PIN prompt.
    Pin(String),
    /// Esc at the PIN prompt (if it is showing), then a recovery password.
    RecoveryPassword(String),
}

impl fmt::Debug for Keystrokes {
    /// Never prints what was typed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pin(_) => f.write_str("Pin(..)"),
            Self::RecoveryPassword(_) => f.write_str("RecoveryPassword(..)"),
        }
    }
}

/// One scripted input: typed `after` the prompt it answers appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInput {
    pub after: Duration,
    pub keys: Keystrokes,
}

/// What [`BootEvent::NetworkUnlockReady`] tells of the secrets the TPM released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Fingerprints ([`volume::fingerprint`]) of what the TPM released: the intermediate key,
    /// the pre-computed key protector and the session key SK.
    pub intermediate_key: Box<str>,
    pub key_protector: Box<str>,
    pub session_key: Box<str>,
    /// The exchange's line for a Network Unlock key log (`NKPU_SESSION`, thumbprint, the key
    /// protector's first 16 bytes, SK in hex; the format of `nulab doctor`'s key log), as
    /// `SSLKEYLOGFILE` lets Wireshark read TLS. A lab's client writes it; Windows does not.
    pub key_log: Box<str>,
}

/// Everything about the machine and its user that is not the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub firmware: Firmware,
    /// The interfaces a real shell opens, in firmware order (`nulab client`'s). A boot runs on
    /// its host's adapters as the host reports them ([`crate::service::BootService`] reads them
    /// at start), so a simulated machine leaves this empty.
    pub adapters: Vec<BootAdapter>,
    /// Transport order of the unlock exchange.
    pub order: Vec<Transport>,
    pub timers: Timers,
    pub dhcp: ClientConfig,
    /// The person at the console, in order; empty means nobody is there.
    pub console: Vec<ConsoleInput>,
    /// A USB stick holding a startup key, if one is plugged in.
    pub startup_key: Option<StartupKey>,
    /// Why the machine is starting.
    pub trigger: BootTrigger,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            firmware: Firmware::default(),
            adapters: Vec::new(),
            order: vec![Transport::DhcpV4],
            timers: Timers::default(),
            dhcp: ClientConfig::default(),
            console: Vec::new(),
            startup_key: None,
            trigger: BootTrigger::PowerOn,
        }
    }
}

/// A prompt the boot manager shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prompt {
    /// "Enter the PIN to unlock this drive".
    Pin,
    /// "BitLocker recovery: enter the recovery key for this drive".
    RecoveryPassword,
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prompt::Pin => "the TPM+PIN prompt",
            Prompt::RecoveryPassword => "the BitLocker recovery screen",
        })
    }
}

/// A datagram the boot client sends, and the adapter it leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTransmit {
    pub adapter: usize,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// A protector that was tried (or skipped) and did not unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectorFailure {
    pub at: Duration,
    pub protector: ProtectorKind,
    pub reason: String,
}

/// Where the boot ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootResult {
    /// The volume is unlocked; Windows continues to boot (phase 9).
    Unlocked {
        protector: ProtectorKind,
        at: Duration,
    },
    /// The machine shows a prompt and nobody (or nobody any more) types at it.
    Waiting { prompt: Prompt, since: Duration },
    /// No protector is left that could unlock: the machine cannot boot this volume.
    Stuck { at: Duration },
}

/// The outcome: the result, and why each earlier protector failed, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutcome {
    pub result: BootResult,
    pub failures: Vec<ProtectorFailure>,
}

impl BootOutcome {
    /// The protector that unlocked, if any.
    pub fn unlocked_by(&self) -> Option<ProtectorKind> {
        match self.result {
            BootResult::Unlocked { protector, .. } => Some(protector),
            _ => None,
        }
    }
}

/// Something worth a line in a transcript, with the seed's phase where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    /// Phase 1: the protectors in the volume's metadata, and why the machine is starting.
    ProtectorsFound {
        at: Duration,
        protectors: Vec<ProtectorKind>,
        trigger: BootTrigger,
    },
    /// Phase 1: the TPM released the Network Unlock secrets; the request is ready.
    NetworkUnlockReady {
        at: Duration,
        thumbprint: Thumbprint,
        /// Boxed: the largest payload would set the size of every event (a storm keeps ten a
        /// client).
        released: Box<Released>,
    },
    /// Network Unlock is not tried, and why.
    NetworkUnlockSkipped { at: Duration, reason: String },
    /// Phase 2: what the UEFI DHCP client on an adapter did.
    Dhcp {
        at: Duration,
        adapter: usize,
        event: ClientEvent,
    },
    /// Phase 2: enumeration stopped at this adapter, whose DHCP failed.
    EnumerationStopped {
        at: Duration,
        adapter: usize,
        reason: String,
    },
    /// Phases 3 and 6: the exchange on an adapter.
    Exchange {
        at: Duration,
        adapter: usize,
        event: ExchangeEvent,
    },
    /// The adapter had a lease but no verified unlock reply came; the next adapter is tried.
    NoUnlockOnAdapter {
        at: Duration,
        adapter: usize,
        reason: String,
    },
    /// Phase 7: the network key came back and is combined with the TPM's intermediate key.
    KeysCombined {
        at: Duration,
        network_key: Box<str>,
        /// Fingerprints of CK and of the key it combines into with the intermediate key
        /// (nulab's model of the combination).
        network_key_fingerprint: Box<str>,
        combined_key: Box<str>,
    },
    /// A protector failed or was skipped.
    ProtectorFailed(ProtectorFailure),
    /// A prompt appeared.
    PromptShown { at: Duration, prompt: Prompt },
    /// Someone typed at a prompt (what they typed is not shown).
    Typed {
        at: Duration,
        prompt: Prompt,
        what: &'static str,
    },
    /// Phase 8: the volume master key is unwrapped and the data decrypts.
    Unlocked {
        at: Duration,
        protector: ProtectorKind,
        /// Fingerprints of the volume master key and the disk key (FVEK) it unwrapped.
        volume_master_key: Box<str>,
        disk_key: Box<str>,
    },
}

impl BootEvent {
    /// When it happened.
    pub fn at(&self) -> Duration {
        match self {
            BootEvent::ProtectorsFound { at, .. }
            | BootEvent::NetworkUnlockReady { at, .. }
            | BootEvent::NetworkUnlockSkipped { at, .. }
            | BootEvent::Dhcp { at, .. }
            | BootEvent::EnumerationStopped { at, .. }
            | BootEvent::Exchange { at, .. }
            | BootEvent::NoUnlockOnAdapter { at, .. }
            | BootEvent::KeysCombined { at, .. }
            | BootEvent::PromptShown { at, .. }
            | BootEvent::Typed { at, .. }
            | BootEvent::Unlocked { at, .. } => *at,
            BootEvent::ProtectorFailed(failure) => failure.at,
        }
    }
}

enum Stage {
    /// Phase 2 on an adapter.
    Dhcp {
        adapter: usize,
        client: Box<Client>,
    },
    /// Phases 3 to 6 on an adapter.
    Exchange {
        adapter: usize,
        exchange: Box<UnlockExchange>,
    },
    /// A prompt is showing; the next scripted input is due at `due`.
    Prompt {
        prompt: Prompt,
        since: Duration,
        due: Option<Duration>,
    },
    Done,
}

/// One boot.
pub struct Boot {
    /// Shared with whoever starts the machine again (a simulated host's service factory): a
    /// storm's 100,000 boots do not each copy it.
    config: Arc<BootConfig>,
    /// The machine's adapters as its host has them, in firmware order.
    adapters: Vec<BootAdapter>,
    volume: Volume,
    tpm: Box<dyn Tpm>,
    /// Parked between draws (56 bytes, not `ChaCha20Rng`'s 320): the same stream.
    rng: ParkedChaCha20,
    network_secrets: Option<NetworkUnlockSecrets>,
    /// The reasons the Network Unlock attempt failed so far, adapter by adapter.
    network_failures: Vec<String>,
    stage: Stage,
    console: VecDeque<ConsoleInput>,
    failures: Vec<ProtectorFailure>,
    /// Boxed: set once, at the end, and 96 bytes a boot would carry all along.
    keys: Option<Box<VolumeKeys>>,
    outcome: Option<BootOutcome>,
    transmits: VecDeque<BootTransmit>,
    events: VecDeque<BootEvent>,
}

impl Boot {
    /// Powers on at `now` with `adapters` (the host's, in firmware order): reads the protectors
    /// and starts on the first one that applies.
    /// `rng_seed` drives every random choice of the boot (DHCP and unlock transaction ids,
    /// jitter), so a simulated boot replays exactly.
    pub fn start(
        now: Duration,
        config: Arc<BootConfig>,
        adapters: Vec<BootAdapter>,
        volume: Volume,
        tpm: Box<dyn Tpm>,
        rng_seed: [u8; 32],
    ) -> Boot {
        let console = config.console.iter().cloned().collect();
        let mut boot = Boot {
            config,
            adapters,
            volume,
            tpm,
            rng: ParkedChaCha20::from_seed(rng_seed),
            network_secrets: None,
            network_failures: Vec::new(),
            stage: Stage::Done,
            console,
            failures: Vec::new(),
            keys: None,
            outcome: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        boot.detect(now);
        boot
    }

    pub fn poll_transmit(&mut self) -> Option<BootTransmit> {
        self.pump();
        host_contract::queue::pop_releasing(&mut self.transmits)
    }

    pub fn poll_event(&mut self) -> Option<BootEvent> {
        self.pump();
        host_contract::queue::pop_releasing(&mut self.events)
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.stage {
            Stage::Dhcp { client, .. } => client.poll_timeout(),
            Stage::Exchange { exchange, .. } => exchange.poll_timeout(),
            Stage::Prompt { due, .. } => *due,
            Stage::Done => None,
        }
    }

    /// Set once nothing more happens without new input: unlocked, stuck, or waiting at a
    /// prompt with no scripted input left.
    pub fn outcome(&self) -> Option<&BootOutcome> {
        self.outcome.as_ref()
    }

    /// The volume's keys once it is unlocked.
    pub fn keys(&self) -> Option<&VolumeKeys> {
        self.keys.as_deref()
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// Gives back the volume and the TPM (whose state, such as its lockout counter, carries
    /// over to the next boot).
    pub fn into_parts(self) -> (Volume, Box<dyn Tpm>) {
        (self.volume, self.tpm)
    }

    pub fn handle_timeout(&mut self, now: Duration) {
        match &mut self.stage {
            Stage::Dhcp { client, .. } => client.handle_timeout(now, &mut self.rng),
            Stage::Exchange { exchange, .. } => exchange.handle_timeout(now),
            Stage::Prompt { due, .. } => {
                if due.is_some_and(|due| now >= due) {
                    self.type_next(now);
                }
            }
            Stage::Done => {}
        }
        self.advance(now);
    }

    /// A datagram for the client's ports (68, 546) that arrived on `adapter`. Whether the boot
    /// took it; false when it was dropped unseen (another client's offers and acks, ordinary
    /// DHCP traffic during the exchange): then the boot has nothing new to poll.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        adapter: usize,
        source: SocketAddr,
        destination: SocketAddr,
        payload: &[u8],
    ) -> bool {
        let taken = match &mut self.stage {
            Stage::Dhcp {
                adapter: current,
                client,
            } if *current == adapter => client.handle(
                now,
                Received {
                    interface: adapter,
                    src: source,
                    dst: destination,
                    payload,
                },
                &mut self.rng,
            ),
            Stage::Exchange {
                adapter: current,
                exchange,
            } if *current == adapter => exchange.handle_datagram(now, payload),
            _ => false,
        };
        // A datagram dropped unseen changed nothing: every entry point ends with `advance`,
        // so there is nothing new to move into the boot's queues.
        if taken {
            self.advance(now);
        }
        taken
    }

    /// Moves what the current sub-machine produced into the boot's queues.
    fn pump(&mut self) {
        match &mut self.stage {
            Stage::Dhcp { adapter, client } => {
                while let Some(t) = client.poll_transmit() {
                    self.transmits.push_back(BootTransmit {
                        adapter: *adapter,
                        source: t.src,
                        destination: t.dst,
                        payload: t.payload,
                    });
                }
            }
            Stage::Exchange { adapter, exchange } => {
                while let Some(t) = exchange.poll_transmit() {
                    self.transmits.push_back(BootTransmit {
                        adapter: *adapter,
                        source: t.source,
                        destination: t.destination,
                        payload: t.payload,
                    });
                }
            }
            Stage::Prompt { .. } | Stage::Done => {}
        }
    }

    /// Phase 1.
    fn detect(&mut self, now: Duration) {
        let protectors: Vec<ProtectorKind> =
            self.volume.protectors().iter().map(|p| p.kind()).collect();
        self.events.push_back(BootEvent::ProtectorsFound {
            at: now,
            protectors: protectors.clone(),
            trigger: self.config.trigger,
        });
        if !protectors.contains(&ProtectorKind::NetworkUnlock) {
            return self.local_protectors(now);
        }
        let skip = if let Some(blocker) = self.config.firmware.network_unlock_blocker() {
            Some(blocker)
        } else if self.adapters.is_empty() {
            Some("the machine has no network adapter".to_string())
        } else {
            None
        };
        if let Some(reason) = skip {
            self.events.push_back(BootEvent::NetworkUnlockSkipped {
                at: now,
                reason: reason.clone(),
            });
            self.fail(now, ProtectorKind::NetworkUnlock, reason);
            return self.local_protectors(now);
        }
        match self.volume.network_unlock_secrets(self.tpm.as_mut(), now) {
            Ok(secrets) => {
                self.events.push_back(BootEvent::NetworkUnlockReady {
                    at: now,
                    thumbprint: secrets.thumbprint,
                    released: Box::new(Released {
                        intermediate_key: secrets.intermediate_key_fingerprint().into(),
                        key_protector: volume::fingerprint(secrets.key_protector.as_bytes()).into(),
                        session_key: volume::fingerprint(secrets.session_key.as_bytes()).into(),
                        key_log: format!(
                            "NKPU_SESSION {} {} {}",
                            secrets.thumbprint,
                            hex::encode(&secrets.key_protector.as_bytes()[..16]),
                            secrets.session_key.to_hex()
                        )
                        .into(),
                    }),
                });
                self.network_secrets = Some(secrets);
                self.start_dhcp(now, 0);
            }
            Err(err) => {
                self.fail(now, ProtectorKind::NetworkUnlock, unlock_reason(&err));
                self.local_protectors(now);
            }
        }
    }

    fn start_dhcp(&mut self, now: Duration, adapter: usize) {
        let Some(config) = self.adapters.get(adapter) else {
            return self.network_unlock_failed(now);
        };
        let mut client = Box::new(Client::new(self.config.dhcp.clone(), config.facts, adapter));
        client.start(now, &mut self.rng);
        self.stage = Stage::Dhcp { adapter, client };
        self.advance(now);
    }

    /// Runs the stage machine forward after any input.
    fn advance(&mut self, now: Duration) {
        self.pump();
        match &mut self.stage {
            Stage::Dhcp { adapter, client } => {
                let adapter = *adapter;
                let mut bound = None;
                let mut failed = None;
                while let Some(event) = client.poll_event() {
                    match &event {
                        ClientEvent::Bound(lease) => bound = Some((**lease).clone()),
                        ClientEvent::Failed(failure) => failed = Some(failure.to_string()),
                        _ => {}
                    }
                    self.events.push_back(BootEvent::Dhcp {
                        at: now,
                        adapter,
                        event,
                    });
                }
                if let Some(lease) = bound {
                    self.start_exchange(now, adapter, lease);
                } else if let Some(reason) = failed {
                    let reason = format!(
                        "adapter {} ({}): DHCP failed: {reason}; enumeration stops here",
                        adapter + 1,
                        self.adapter_name(adapter)
                    );
                    self.events.push_back(BootEvent::EnumerationStopped {
                        at: now,
                        adapter,
                        reason: reason.clone(),
                    });
                    self.network_failures.push(reason);
                    self.network_unlock_failed(now);
                }
            }
            Stage::Exchange { adapter, exchange } => {
                let adapter = *adapter;
                while let Some(event) = exchange.poll_event() {
                    self.events.push_back(BootEvent::Exchange {
                        at: now,
                        adapter,
                        event,
                    });
                }
                match exchange.outcome().cloned() {
                    Some(ExchangeOutcome::Unlocked { client_key, .. }) => {
                        self.combine(now, &client_key)
                    }
                    Some(ExchangeOutcome::Failed(failures)) => {
                        let reason = format!(
                            "adapter {} ({}): {}",
                            adapter + 1,
                            self.adapter_name(adapter),
                            describe_transport_failures(&failures)
                        );
                        self.events.push_back(BootEvent::NoUnlockOnAdapter {
                            at: now,
                            adapter,
                            reason: reason.clone(),
                        });
                        self.network_failures.push(reason);
                        self.start_dhcp(now, adapter + 1);
                    }
                    None => {}
                }
            }
            Stage::Prompt { .. } | Stage::Done => {}
        }
    }

    fn start_exchange(&mut self, now: Duration, adapter: usize, lease: Lease) {
        let Some(secrets) = &self.network_secrets else {
            return self.network_unlock_failed(now);
        };
        let config = &self.adapters[adapter];
        let mut options: Vec<_> = lease
            .options
            .iter()
            .filter_map(|o| nkpu::v4::LeaseOption::new(o.code, o.data.clone()))
            .collect();
        // Kept for the exchange's life: no spare capacity.
        options.shrink_to_fit();
        let v4 = V4Lease {
            client_mac: config.facts.mac,
            address: lease.address,
            dhcp_server: lease.server_id,
            options,
        };
        let v6 = config.ipv6_link_local.map(|link_local| V6Link {
            link_local,
            client_duid: duid_ll(config.facts.mac),
        });
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let exchange = UnlockExchange::start(
            now,
            self.config.order.clone(),
            self.config.timers.clone(),
            Some(v4),
            v6,
            Secrets {
                thumbprint: secrets.thumbprint,
                key_protector: secrets.key_protector.clone(),
                session_key: secrets.session_key.clone(),
            },
            Box::new(ParkedChaCha20::from_seed(seed)),
        );
        self.stage = Stage::Exchange {
            adapter,
            exchange: Box::new(exchange),
        };
        self.advance(now);
    }

    /// Phases 7 and 8.
    fn combine(&mut self, now: Duration, client_key: &ClientKey) {
        self.events.push_back(BootEvent::KeysCombined {
            at: now,
            network_key: client_key.short().into(),
            network_key_fingerprint: volume::fingerprint(client_key.as_bytes()).into(),
            combined_key: self
                .network_secrets
                .as_ref()
                .map(|secrets| secrets.combined_key_fingerprint(client_key))
                .unwrap_or_default()
                .into(),
        });
        let result = match &self.network_secrets {
            Some(secrets) => self.volume.unlock_with_network_key(secrets, client_key),
            None => Err(UnlockError::NoProtector(ProtectorKind::NetworkUnlock)),
        };
        match result {
            Ok(keys) => self.unlocked(now, ProtectorKind::NetworkUnlock, keys),
            Err(err) => {
                self.network_failures.push(unlock_reason(&err));
                self.network_unlock_failed(now);
            }
        }
    }

    fn network_unlock_failed(&mut self, now: Duration) {
        let reason = if self.network_failures.is_empty() {
            "no adapter to try".to_string()
        } else {
            self.network_failures.join("; ")
        };
        self.fail(now, ProtectorKind::NetworkUnlock, reason);
        self.local_protectors(now);
    }

    /// The protectors that need no network, in the boot manager's order.
    fn local_protectors(&mut self, now: Duration) {
        self.stage = Stage::Done;
        if self.has(ProtectorKind::Tpm) {
            match self.volume.unlock(&UnlockWith::Tpm, self.tpm.as_mut(), now) {
                Ok(keys) => return self.unlocked(now, ProtectorKind::Tpm, keys),
                Err(err) => self.fail(now, ProtectorKind::Tpm, unlock_reason(&err)),
            }
        }
        if self.has(ProtectorKind::StartupKey) {
            match self.config.startup_key.clone() {
                Some(key) => {
                    match self
                        .volume
                        .unlock(&UnlockWith::StartupKey(&key), self.tpm.as_mut(), now)
                    {
                        Ok(keys) => return self.unlocked(now, ProtectorKind::StartupKey, keys),
                        Err(err) => self.fail(now, ProtectorKind::StartupKey, unlock_reason(&err)),
                    }
                }
                None => self.fail(
                    now,
                    ProtectorKind::StartupKey,
                    "no USB startup key is plugged in".into(),
                ),
            }
        }
        if self.has(ProtectorKind::TpmAndPin) {
            return self.show(now, Prompt::Pin);
        }
        self.recovery(now);
    }

    fn recovery(&mut self, now: Duration) {
        if self.has(ProtectorKind::RecoveryPassword) {
            self.show(now, Prompt::RecoveryPassword);
        } else {
            self.stage = Stage::Done;
            self.outcome = Some(BootOutcome {
                result: BootResult::Stuck { at: now },
                failures: self.failures.clone(),
            });
        }
    }

    fn show(&mut self, now: Duration, prompt: Prompt) {
        self.events
            .push_back(BootEvent::PromptShown { at: now, prompt });
        self.wait_at(now, prompt, now);
    }

    /// Waits at `prompt` (showing since `since`) for the next scripted input, typed `after` it
    /// from `now`.
    fn wait_at(&mut self, now: Duration, prompt: Prompt, since: Duration) {
        let due = self.console.front().map(|input| now + input.after);
        self.stage = Stage::Prompt { prompt, since, due };
        if due.is_none() {
            self.outcome = Some(BootOutcome {
                result: BootResult::Waiting { prompt, since },
                failures: self.failures.clone(),
            });
        }
    }

    fn type_next(&mut self, now: Duration) {
        let Stage::Prompt { prompt, since, .. } = self.stage else {
            return;
        };
        let Some(input) = self.console.pop_front() else {
            return self.wait_at(now, prompt, since);
        };
        match (prompt, input.keys) {
            (Prompt::Pin, Keystrokes::Pin(pin)) => {
                self.typed(now, prompt, "a PIN");
                match self
                    .volume
                    .unlock(&UnlockWith::TpmAndPin(&pin), self.tpm.as_mut(), now)
                {
                    Ok(keys) => self.unlocked(now, ProtectorKind::TpmAndPin, keys),
                    Err(err) => {
                        let to_recovery = matches!(
                            err,
                            UnlockError::Tpm {
                                error: TpmError::PolicyMismatch | TpmError::Lockout { .. },
                                ..
                            }
                        );
                        self.fail(now, ProtectorKind::TpmAndPin, unlock_reason(&err));
                        if to_recovery {
                            self.recovery(now);
                        } else {
                            self.wait_at(now, Prompt::Pin, since);
                        }
                    }
                }
            }
            (Prompt::Pin, keys @ Keystrokes::RecoveryPassword(_)) => {
                self.typed(now, prompt, "Esc (BitLocker recovery)");
                self.fail(
                    now,
                    ProtectorKind::TpmAndPin,
                    "the user pressed Esc for recovery".into(),
                );
                // The password is typed at the recovery screen straight away.
                self.console.push_front(ConsoleInput {
                    after: Duration::ZERO,
                    keys,
                });
                self.recovery(now);
            }
            (Prompt::RecoveryPassword, Keystrokes::RecoveryPassword(text)) => {
                self.typed(now, prompt, "a recovery password");
                let result = text
                    .parse::<RecoveryPassword>()
                    .map_err(|err| format!("the typed recovery password is invalid: {err}"))
                    .and_then(|password| {
                        self.volume
                            .unlock(
                                &UnlockWith::RecoveryPassword(&password),
                                self.tpm.as_mut(),
                                now,
                            )
                            .map_err(|err| unlock_reason(&err))
                    });
                match result {
                    Ok(keys) => self.unlocked(now, ProtectorKind::RecoveryPassword, keys),
                    Err(reason) => {
                        self.fail(now, ProtectorKind::RecoveryPassword, reason);
                        self.wait_at(now, prompt, since);
                    }
                }
            }
            (Prompt::RecoveryPassword, Keystrokes::Pin(_)) => {
                self.typed(now, prompt, "a PIN");
                self.fail(
                    now,
                    ProtectorKind::RecoveryPassword,
                    "a PIN typed at the recovery screen is not a recovery password".into(),
                );
                self.wait_at(now, prompt, since);
            }
        }
    }

    fn typed(&mut self, now: Duration, prompt: Prompt, what: &'static str) {
        self.events.push_back(BootEvent::Typed {
            at: now,
            prompt,
            what,
        });
    }

    fn unlocked(&mut self, now: Duration, protector: ProtectorKind, keys: VolumeKeys) {
        let (volume_master_key, disk_key) = keys.fingerprints();
        self.keys = Some(Box::new(keys));
        self.stage = Stage::Done;
        self.events.push_back(BootEvent::Unlocked {
            at: now,
            protector,
            volume_master_key: volume_master_key.into(),
            disk_key: disk_key.into(),
        });
        self.outcome = Some(BootOutcome {
            result: BootResult::Unlocked { protector, at: now },
            failures: self.failures.clone(),
        });
    }

    fn fail(&mut self, now: Duration, protector: ProtectorKind, reason: String) {
        let failure = ProtectorFailure {
            at: now,
            protector,
            reason,
        };
        self.events
            .push_back(BootEvent::ProtectorFailed(failure.clone()));
        self.failures.push(failure);
    }

    fn has(&self, kind: ProtectorKind) -> bool {
        self.volume.protector_of(kind).is_some()
    }

    fn adapter_name(&self, adapter: usize) -> &str {
        self.adapters.get(adapter).map_or("?", |a| a.name.as_str())
    }
}

/// The reason an unlock failed, in the words a transcript uses.
fn unlock_reason(err: &UnlockError) -> String {
    match err {
        UnlockError::Tpm {
            error: TpmError::PolicyMismatch,
            ..
        } => "the TPM refused: the PCRs differ from those the key was sealed to (boot \
              components changed)"
            .into(),
        UnlockError::Tpm { error, .. } => format!("the TPM refused: {error}"),
        other => other.to_string(),
    }
}

fn describe_transport_failures(failures: &[(Transport, TransportFailure)]) -> String {
    if failures.is_empty() {
        return "no transport configured".into();
    }
    failures
        .iter()
        .map(|(transport, failure)| format!("{transport}: {failure}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// DUID-LL (RFC 8415 §11.4): type 3, hardware type 1 (Ethernet), the MAC. What UEFI firmware
/// without a stored DUID uses.
fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    duid
}

#[cfg(test)]
mod tests {
    //! The console logic without a network: a volume with TPM+PIN and a recovery password.

    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use tpm::{DictionaryAttackPolicy, PcrSelection, SimulatedTpm};

    const PIN: &str = "135790";

    fn boot(console: Vec<ConsoleInput>, max_tries: u32) -> (Boot, RecoveryPassword) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut tpm = SimulatedTpm::manufacture(
            &mut rng,
            DictionaryAttackPolicy {
                max_tries,
                recovery_time: Duration::from_secs(7200),
            },
        );
        let (mut volume, keys) = Volume::create(8192, "T", &mut rng).expect("create");
        let pcrs = PcrSelection::of(&[7]).expect("pcr 7");
        volume
            .add_tpm_and_pin_protector(&keys, &mut tpm, pcrs, PIN, &mut rng)
            .expect("pin");
        let (_, password) = volume
            .add_recovery_password_protector(&keys, None, 1, &mut rng)
            .expect("password");
        let config = BootConfig {
            console,
            ..BootConfig::default()
        };
        (
            Boot::start(
                Duration::ZERO,
                Arc::new(config),
                Vec::new(),
                volume,
                Box::new(tpm),
                [3; 32],
            ),
            password,
        )
    }

    fn typed(after: u64, keys: Keystrokes) -> ConsoleInput {
        ConsoleInput {
            after: Duration::from_secs(after),
            keys,
        }
    }

    /// Runs the boot's timers to the end.
    fn finish(boot: &mut Boot) -> BootOutcome {
        while boot.outcome().is_none() {
            let at = boot
                .poll_timeout()
                .expect("a boot without outcome has a timer");
            boot.handle_timeout(at);
        }
        boot.outcome().cloned().expect("outcome")
    }

    #[test]
    fn without_network_unlock_the_pin_prompt_comes_first() {
        let (mut b, _) = boot(vec![typed(5, Keystrokes::Pin(PIN.into()))], 32);
        let outcome = finish(&mut b);
        assert_eq!(
            outcome.result,
            BootResult::Unlocked {
                protector: ProtectorKind::TpmAndPin,
                at: Duration::from_secs(5)
            }
        );
        assert!(outcome.failures.is_empty());
        assert!(b.keys().is_some());
    }

    #[test]
    fn a_wrong_pin_is_counted_and_the_prompt_stays() {
        let (mut b, _) = boot(
            vec![
                typed(2, Keystrokes::Pin("000000".into())),
                typed(3, Keystrokes::Pin(PIN.into())),
            ],
            32,
        );
        let outcome = finish(&mut b);
        assert_eq!(outcome.unlocked_by(), Some(ProtectorKind::TpmAndPin));
        assert_eq!(outcome.failures.len(), 1);
        assert!(
            outcome.failures[0].reason.contains("wrong PIN"),
            "{outcome:?}"
        );
        assert!(
            matches!(outcome.result, BootResult::Unlocked { at, .. } if at == Duration::from_secs(5))
        );
    }

    /// The recovery password [`boot`] gives its volume (the same seed each time).
    fn b_password() -> RecoveryPassword {
        boot(Vec::new(), 32).1
    }

    #[test]
    fn lockout_sends_the_user_to_recovery() {
        let password = b_password();
        let (mut b, _) = boot(
            vec![
                typed(1, Keystrokes::Pin("1".into())),
                typed(1, Keystrokes::Pin("2".into())),
                typed(1, Keystrokes::Pin(PIN.into())),
                typed(10, Keystrokes::RecoveryPassword(password.to_string())),
            ],
            2,
        );
        let outcome = finish(&mut b);
        // Two wrong PINs lock the TPM out: the right PIN is refused, recovery follows.
        let reasons: Vec<&str> = outcome.failures.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[2].contains("locked out"), "{reasons:?}");
        assert_eq!(outcome.unlocked_by(), Some(ProtectorKind::RecoveryPassword));
    }

    #[test]
    fn esc_then_a_recovery_password_unlocks_and_a_bad_group_is_named() {
        let password = b_password();
        let mut bad = password.to_string();
        // Group 3 (1-based) becomes 000001, not divisible by 11.
        bad.replace_range(14..20, "000001");
        let (mut b, _) = boot(
            vec![
                typed(3, Keystrokes::RecoveryPassword(bad)),
                typed(20, Keystrokes::RecoveryPassword(password.to_string())),
            ],
            32,
        );
        let outcome = finish(&mut b);
        assert_eq!(outcome.unlocked_by(), Some(ProtectorKind::RecoveryPassword));
        let reasons: Vec<(ProtectorKind, &str)> = outcome
            .failures
            .iter()
            .map(|f| (f.protector, f.reason.as_str()))
            .collect();
        assert_eq!(reasons[0].0, ProtectorKind::TpmAndPin);
        assert!(reasons[0].1.contains("Esc"));
        assert_eq!(reasons[1].0, ProtectorKind::RecoveryPassword);
        assert!(reasons[1].1.contains("group 3"), "{reasons:?}");
    }

    #[test]
    fn nobody_at_the_console_waits_at_the_pin_prompt() {
        let (b, _) = boot(Vec::new(), 32);
        let outcome = b.outcome().expect("waiting is an outcome");
        assert_eq!(
            outcome.result,
            BootResult::Waiting {
                prompt: Prompt::Pin,
                since: Duration::ZERO
            }
        );
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn firmware_prerequisites_name_what_is_missing() {
        assert_eq!(Firmware::default().network_unlock_blocker(), None);
        let reason = |firmware: Firmware| firmware.network_unlock_blocker().unwrap_or_default();
        let cases = [
            (
                Firmware {
                    uefi_native: false,
                    ..Firmware::default()
                },
                "legacy BIOS",
            ),
            (
                Firmware {
                    uefi_version: UefiVersion::new(2, 3, 0),
                    ..Firmware::default()
                },
                "version 2.3.0, older than the 2.3.1",
            ),
            (
                Firmware {
                    csm_enabled: true,
                    ..Firmware::default()
                },
                "Compatibility Support Module",
            ),
            (
                Firmware {
                    network_stack: false,
                    ..Firmware::default()
                },
                "network stack is disabled",
            ),
            (
                Firmware {
                    dhcp_driver: false,
                    ..Firmware::default()
                },
                "no DHCP-capable network driver",
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (firmware, words) in cases {
            let why = reason(firmware);
            assert!(why.contains(words), "{why}");
            assert!(seen.insert(why), "each setting has its own reason");
        }
        let newer = Firmware {
            uefi_version: UefiVersion::new(2, 7, 0),
            ..Firmware::default()
        };
        assert_eq!(newer.network_unlock_blocker(), None);
    }

    #[test]
    fn a_magic_packet_wakes_its_mac_only() {
        let mac = [0x02, 0, 0, 0, 0, 0x10];
        let packet = magic_packet(mac);
        assert_eq!(packet.len(), 102);
        assert_eq!(magic_packet_target(&packet), Some(mac));
        let mut padded = vec![0u8; 4];
        padded.extend_from_slice(&packet);
        assert_eq!(magic_packet_target(&padded), Some(mac), "found anywhere");
        let mut broken = packet.clone();
        broken[50] ^= 1;
        assert_eq!(magic_packet_target(&broken), None);
        assert_eq!(magic_packet_target(&packet[..101]), None);
        assert_eq!(magic_packet_target(&[]), None);
    }

    #[test]
    fn uefi_versions_parse_and_order() {
        assert_eq!("2.3.1".parse::<UefiVersion>(), Ok(UefiVersion::MINIMUM));
        assert_eq!("2.4".parse::<UefiVersion>(), Ok(UefiVersion::new(2, 4, 0)));
        assert!(UefiVersion::new(2, 3, 0) < UefiVersion::MINIMUM);
        assert!(UefiVersion::new(2, 10, 0) > UefiVersion::MINIMUM);
        for bad in ["", "2", "2.x", "2.3.1.4", "300.1"] {
            assert!(bad.parse::<UefiVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn duid_ll_is_type_3_ethernet_and_the_mac() {
        assert_eq!(duid_ll([1, 2, 3, 4, 5, 6]), [0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
    }
}
