//! The unlock provider's request processing, sans-IO: bytes, the sender's address and `now` in;
//! a reply to send, or a silent drop that is counted and logged, out.
//!
//! Processing order (PROTOCOL.md, "Server processing"):
//! 1. The WDS service must be running, the BitLocker-NetworkUnlock feature installed and its
//!    provider registered with WDS: three states of the server, each its own drop reason (the
//!    seed lists the feature and the running service as core requirements, and unregistering
//!    as the supported way to turn the unlock server off). A provider whose
//!    `bde-network-unlock.ini` is invalid answers nothing either.
//! 2. Anything that is not a Network Unlock request is ignored; anything malformed is dropped.
//! 3. The thumbprint must name a certificate in the provider's store.
//! 4. The subnet policy must allow the client's address.
//! 5. The key protector must decrypt to exactly 64 bytes.
//! 6. The reply: CK sealed under SK, sent back to the client.
//!
//! Every drop is silent on the wire, counted under a stable label ([`DropReason::label`]) and
//! logged at debug level, as the WDS debug log would.
//!
//! The log is the WDS debug log (the Microsoft-Windows-Deployment-Services-Diagnostics/Debug
//! channel). On a WDS server it is off until `wevtutil sl
//! Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true` turns it on
//! ([`Provider::set_debug_log`]): while it is off nothing is logged, at any level, and the
//! counters count as ever. [`Provider::new`] starts with it on, as a lab's provider (`nulab
//! server`, the tests) wants; the scenario runner turns it off unless a scenario enables it,
//! which is WDS's own default.
//!
//! Steps 1 to 4 are cheap; step 5, the RSA private-key operation, is nearly all the cost of a
//! request (about a millisecond). So that a shell can spread it over every core without a lock
//! around the provider, processing is split in three: [`Provider::classify`] (steps 1 to 4, on
//! the provider) yields a [`DecryptJob`] holding a shared `Arc<ProviderKey>`, which any thread
//! can [`DecryptJob::run`] (steps 5 and 6, touching nothing of the provider), and
//! [`Provider::complete`] counts and logs what came of it. A shell that cannot take a job (its
//! bounded queue is full) hands it back with [`Provider::shed`], counted as
//! [`DropReason::Overloaded`]. [`Provider::handle`] does all three in a row, for the simulator.
//! The provider itself never owns a thread. Which address the subnet policy checks is
//! not documented: nulab checks `ciaddr` for DHCPv4 (the address the client says it holds, equal
//! to the source in the capture; a relayed request's source is the relay) and falls back to the
//! source address when `ciaddr` is 0; for DHCPv6 it checks the source address.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nkpu::{DecodeError, KeyProtectorReply, Message, ProviderKey, Thumbprint, v4, v6};

use crate::policy::{self, Decision, Lint};

/// A datagram that reached the provider.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub source: SocketAddr,
    pub payload: &'a [u8],
}

/// A datagram the provider sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    ServiceStopped,
    /// The BitLocker-NetworkUnlock feature is not installed: WDS runs without a Network
    /// Unlock provider (Nkpprov.dll) to hand the request to.
    FeatureNotInstalled,
    ProviderUnregistered,
    /// The subnet policy file is invalid: the provider answers nobody.
    PolicyInvalid,
    /// An ordinary DHCP message (no `BITLOCKER` vendor class): not ours.
    NotNetworkUnlock,
    /// A reply, or something else a server never answers.
    NotARequest,
    Malformed(DecodeError),
    UnknownCertificate(Thumbprint),
    /// The certificate was in the store and has been removed (the seed: "seen as an error
    /// condition").
    CertificateRemoved(Thumbprint),
    SubnetDenied(String),
    CertificateDisabled(Thumbprint),
    Undecryptable,
    WrongPlaintextLength(usize),
    /// The shell's queue of requests waiting for the private-key operation was full: shed
    /// rather than queued without bound.
    Overloaded,
}

impl DropReason {
    /// Whether the request was recognised (phase 4, counted in hand) before it was dropped:
    /// shed from a full queue, or undecryptable at step 5. Every other reason drops it before.
    pub fn after_recognition(&self) -> bool {
        match self {
            DropReason::Overloaded
            | DropReason::Undecryptable
            | DropReason::WrongPlaintextLength(_) => true,
            DropReason::ServiceStopped
            | DropReason::FeatureNotInstalled
            | DropReason::ProviderUnregistered
            | DropReason::PolicyInvalid
            | DropReason::NotNetworkUnlock
            | DropReason::NotARequest
            | DropReason::Malformed(_)
            | DropReason::UnknownCertificate(_)
            | DropReason::CertificateRemoved(_)
            | DropReason::SubnetDenied(_)
            | DropReason::CertificateDisabled(_) => false,
        }
    }

    /// The counter this drop is counted under.
    pub fn label(&self) -> String {
        match self {
            DropReason::ServiceStopped => "service-stopped".into(),
            DropReason::FeatureNotInstalled => "feature-not-installed".into(),
            DropReason::ProviderUnregistered => "provider-unregistered".into(),
            DropReason::PolicyInvalid => "policy-invalid".into(),
            DropReason::NotNetworkUnlock => "not-network-unlock".into(),
            DropReason::NotARequest => "not-a-request".into(),
            DropReason::Malformed(err) => format!("malformed.{}", err.reason()),
            DropReason::UnknownCertificate(_) => "unknown-certificate".into(),
            DropReason::CertificateRemoved(_) => "certificate-removed".into(),
            DropReason::SubnetDenied(_) => "subnet-denied".into(),
            DropReason::CertificateDisabled(_) => "certificate-disabled".into(),
            DropReason::Undecryptable => "undecryptable".into(),
            DropReason::WrongPlaintextLength(_) => "bad-plaintext-length".into(),
            DropReason::Overloaded => "overloaded".into(),
        }
    }
}

/// The prefix of the counters of malformed requests: `drop.malformed.` and the decoder's reason
/// (`drop.malformed.option-truncated`...).
pub const MALFORMED_COUNTER_PREFIX: &str = "drop.malformed.";

/// Every counter the provider keeps, but the malformed ones (see
/// [`MALFORMED_COUNTER_PREFIX`]): `replied`, and `drop.` with the label of each other reason
/// it drops a request for. Kept beside [`DropReason`] so a new reason is listed where it is
/// made: the match below stops compiling until it is.
pub fn counter_names() -> Vec<String> {
    let thumbprint = nkpu::Thumbprint::of_der(&[]);
    let reasons = [
        DropReason::ServiceStopped,
        DropReason::FeatureNotInstalled,
        DropReason::ProviderUnregistered,
        DropReason::PolicyInvalid,
        DropReason::NotNetworkUnlock,
        DropReason::NotARequest,
        DropReason::UnknownCertificate(thumbprint),
        DropReason::CertificateRemoved(thumbprint),
        DropReason::SubnetDenied(String::new()),
        DropReason::CertificateDisabled(thumbprint),
        DropReason::Undecryptable,
        DropReason::WrongPlaintextLength(0),
        DropReason::Overloaded,
    ];
    for reason in &reasons {
        match reason {
            // Each variant but `Malformed` (whose counters carry the decoder's reason) must be
            // in `reasons` above.
            DropReason::ServiceStopped
            | DropReason::FeatureNotInstalled
            | DropReason::ProviderUnregistered
            | DropReason::PolicyInvalid
            | DropReason::NotNetworkUnlock
            | DropReason::NotARequest
            | DropReason::UnknownCertificate(_)
            | DropReason::CertificateRemoved(_)
            | DropReason::SubnetDenied(_)
            | DropReason::CertificateDisabled(_)
            | DropReason::Undecryptable
            | DropReason::WrongPlaintextLength(_)
            | DropReason::Overloaded
            | DropReason::Malformed(_) => {}
        }
    }
    std::iter::once("replied".to_string())
        .chain(reasons.iter().map(|r| format!("drop.{}", r.label())))
        .collect()
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::ServiceStopped => f.write_str("the WDS service is stopped"),
            DropReason::FeatureNotInstalled => f.write_str(
                "the BitLocker-NetworkUnlock feature is not installed: WDS has no Network Unlock \
                 provider",
            ),
            DropReason::ProviderUnregistered => {
                f.write_str("the Network Unlock provider is not registered with WDS")
            }
            DropReason::PolicyInvalid => f.write_str(
                "bde-network-unlock.ini is invalid: the provider has failed and answers nothing",
            ),
            DropReason::NotNetworkUnlock => f.write_str("not a Network Unlock message"),
            DropReason::NotARequest => f.write_str("not a Network Unlock request"),
            DropReason::Malformed(err) => write!(f, "malformed request: {err}"),
            DropReason::UnknownCertificate(t) => {
                write!(f, "no certificate with thumbprint {t} in the store")
            }
            DropReason::CertificateRemoved(t) => write!(
                f,
                "certificate {t} was removed from the FVE_NKP store (an error condition, not a \
                 supported way to turn Network Unlock off)"
            ),
            DropReason::SubnetDenied(why) => write!(f, "subnet policy: {why}"),
            DropReason::CertificateDisabled(t) => {
                write!(f, "certificate {t} is DISABLED in bde-network-unlock.ini")
            }
            DropReason::Undecryptable => {
                f.write_str("the key protector does not decrypt under the certificate's key")
            }
            DropReason::WrongPlaintextLength(n) => {
                write!(f, "the key protector decrypts to {n} bytes, not 64")
            }
            DropReason::Overloaded => f.write_str(
                "overloaded: every worker is busy and the queue of requests waiting for the \
                 private-key operation is full",
            ),
        }
    }
}

/// What happened to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Replied {
        thumbprint: Thumbprint,
        client: IpAddr,
        transmit: Transmit,
    },
    Dropped(DropReason),
}

/// A line of the provider's log, in the spirit of the WDS debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: Duration,
    pub level: Level,
    pub message: LogMessage,
}

/// The provider's log lines in order, kept in blocks: a storm's log is the largest list of a
/// run (half a million lines at 100,000 clients), and one `Vec` would be copied whole (into
/// freshly faulted pages) each time it grew. Blocks grow to [`Log::LARGEST_BLOCK`] lines, so at
/// most one block's room is spare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    blocks: Vec<Vec<LogLine>>,
    len: usize,
}

impl Log {
    const FIRST_BLOCK: usize = 16;
    const LARGEST_BLOCK: usize = 4096;

    pub fn push(&mut self, line: LogLine) {
        match self.blocks.last_mut() {
            Some(block) if block.len() < block.capacity() => block.push(line),
            _ => {
                // As many lines as there are (doubling the log) up to the largest block.
                let room = self.len.clamp(Log::FIRST_BLOCK, Log::LARGEST_BLOCK);
                let mut block = Vec::with_capacity(room);
                block.push(line);
                self.blocks.push(block);
            }
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &LogLine> + Clone {
        self.blocks.iter().flatten()
    }

    pub fn last(&self) -> Option<&LogLine> {
        self.blocks.last().and_then(|block| block.last())
    }
}

impl<'a> IntoIterator for &'a Log {
    type Item = &'a LogLine;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<LogLine>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.blocks.iter().flatten()
    }
}

impl IntoIterator for Log {
    type Item = LogLine;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<LogLine>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.blocks.into_iter().flatten()
    }
}

impl FromIterator<LogLine> for Log {
    fn from_iter<I: IntoIterator<Item = LogLine>>(lines: I) -> Log {
        let mut log = Log::default();
        for line in lines {
            log.push(line);
        }
        log
    }
}

/// What a log line says: what happened, in the words [`fmt::Display`] writes when the line is
/// shown. Kept as facts rather than text because a storm's provider logs five lines a client
/// (two ignored DHCP messages and phases 4 to 6): 100,000 clients' lines as text would be
/// half a gigabyte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogMessage {
    /// A line of the shell or of a rare event, in words.
    Text(Box<str>),
    /// Phase 4: a request passed the cheap checks.
    Recognised {
        client: IpAddr,
        xid: Xid,
        thumbprint: Thumbprint,
    },
    /// Phase 5: the key protector decrypted (boxed: rare beside the others' sizes).
    Decrypted(Box<DecryptedKeys>),
    /// Phase 6: the reply went out.
    Replied {
        client: IpAddr,
        thumbprint: Thumbprint,
        destination: SocketAddr,
    },
    /// A datagram dropped, and why (boxed: most drops carry no data, some a whole string).
    Dropped {
        source: SocketAddr,
        reason: Box<DropReason>,
    },
}

/// What the phase 5 line names: the client, the certificate, short forms of CK and SK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptedKeys {
    pub client: IpAddr,
    pub thumbprint: Thumbprint,
    pub network_key: String,
    pub session_key: String,
}

/// A request's transaction id as the log shows it: DHCPv4's 32 bits, DHCPv6's 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xid {
    V4(u32),
    V6([u8; 3]),
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Xid::V4(xid) => write!(f, "{xid:08x}"),
            Xid::V6([a, b, c]) => write!(f, "{a:02x}{b:02x}{c:02x}"),
        }
    }
}

impl LogMessage {
    /// The phase the line tells (4, 5 or 6), if it tells one.
    pub fn phase(&self) -> Option<u8> {
        match self {
            LogMessage::Recognised { .. } => Some(4),
            LogMessage::Decrypted(_) => Some(5),
            LogMessage::Replied { .. } => Some(6),
            LogMessage::Text(_) | LogMessage::Dropped { .. } => None,
        }
    }

    /// The addresses the line names (a [`LogMessage::Text`] names none of its own).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        let (first, second) = match self {
            LogMessage::Text(_) => (None, None),
            LogMessage::Recognised { client, .. } => (Some(*client), None),
            LogMessage::Decrypted(keys) => (Some(keys.client), None),
            LogMessage::Replied {
                client,
                destination,
                ..
            } => (Some(*client), Some(destination.ip())),
            LogMessage::Dropped { source, .. } => (Some(source.ip()), None),
        };
        first.into_iter().chain(second)
    }

    /// The reason, when the line tells a drop.
    pub fn drop_reason(&self) -> Option<&DropReason> {
        match self {
            LogMessage::Dropped { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for LogMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogMessage::Text(text) => f.write_str(text),
            LogMessage::Recognised {
                client,
                xid,
                thumbprint,
            } => write!(
                f,
                "[phase 4] Network Unlock request from {client} (xid {xid}) recognised: certificate {thumbprint} is in the store and the subnet policy allows the client"
            ),
            LogMessage::Decrypted(keys) => write!(
                f,
                "[phase 5] key protector from {} decrypted with the private key of certificate {}: network key CK {}, session key SK {}",
                keys.client, keys.thumbprint, keys.network_key, keys.session_key
            ),
            LogMessage::Replied {
                client,
                thumbprint,
                destination,
            } => write!(
                f,
                "[phase 6] Network Unlock request from {client} with certificate {thumbprint}: CK sealed under SK (AES-256-CCM, zero nonce, tag first), key returned to {destination}"
            ),
            LogMessage::Dropped { source, reason } => {
                write!(f, "dropped a datagram from {source}: {reason}")
            }
        }
    }
}

impl From<String> for LogMessage {
    fn from(text: String) -> Self {
        LogMessage::Text(text.into())
    }
}

impl From<&str> for LogMessage {
    fn from(text: &str) -> Self {
        LogMessage::Text(text.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Error,
}

/// The state of the subnet policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PolicyState {
    NoFile,
    Loaded(Lint),
}

/// The Network Unlock provider on a WDS server.
#[derive(Debug)]
pub struct Provider {
    certificates: BTreeMap<Thumbprint, Arc<ProviderKey>>,
    removed: BTreeSet<Thumbprint>,
    policy: PolicyState,
    service_running: bool,
    feature_installed: bool,
    registered: bool,
    /// DHCPv6 server identifier (a DUID) for replies.
    server_duid: Arc<[u8]>,
    counters: BTreeMap<String, u64>,
    /// The debug log channel is enabled: lines are recorded.
    debug_log: bool,
    log: Log,
}

impl Provider {
    /// A registered provider of an installed BitLocker-NetworkUnlock feature on a running WDS
    /// service, with no certificate and no policy file.
    pub fn new(server_duid: Vec<u8>) -> Self {
        Self {
            certificates: BTreeMap::new(),
            removed: BTreeSet::new(),
            policy: PolicyState::NoFile,
            service_running: true,
            feature_installed: true,
            registered: true,
            server_duid: server_duid.into(),
            counters: BTreeMap::new(),
            debug_log: true,
            log: Log::default(),
        }
    }

    /// Adds a certificate's private key to the store (importing a `.pfx`). Keys are shared, so
    /// a simulated server that restarts reloads them without parsing them again.
    pub fn add_certificate(&mut self, thumbprint: Thumbprint, key: impl Into<Arc<ProviderKey>>) {
        self.removed.remove(&thumbprint);
        self.certificates.insert(thumbprint, key.into());
    }

    /// Removes a certificate from the store; requests for it are then dropped and logged as the
    /// error condition the seed calls it.
    pub fn remove_certificate(&mut self, thumbprint: &Thumbprint) -> bool {
        let held = self.certificates.remove(thumbprint).is_some();
        if held {
            self.removed.insert(*thumbprint);
        }
        held
    }

    /// Removes the whole FVE_NKP store.
    pub fn remove_certificate_store(&mut self) {
        let all: Vec<Thumbprint> = self.certificates.keys().copied().collect();
        for thumbprint in all {
            self.remove_certificate(&thumbprint);
        }
    }

    pub fn thumbprints(&self) -> impl Iterator<Item = &Thumbprint> {
        self.certificates.keys()
    }

    /// Loads `bde-network-unlock.ini` (or removes it with `None`). An invalid file makes the
    /// provider fail: it logs why and answers nothing until a valid file is loaded.
    pub fn load_policy(&mut self, now: Duration, text: Option<&str>) {
        match text {
            None => {
                self.policy = PolicyState::NoFile;
                self.log(
                    now,
                    Level::Info,
                    "no subnet policy file: no subnet restrictions".into(),
                );
            }
            Some(text) => {
                let lint = policy::lint(text);
                if lint.policy.is_some() {
                    self.log(now, Level::Info, "subnet policy file loaded".into());
                } else {
                    for problem in &lint.errors {
                        self.log(
                            now,
                            Level::Error,
                            format!("bde-network-unlock.ini {problem}").into(),
                        );
                    }
                    self.log(
                        now,
                        Level::Error,
                        "the subnet policy file is corrupted or invalid: the Network Unlock \
                         provider has failed and will not respond to requests"
                            .into(),
                    );
                }
                self.policy = PolicyState::Loaded(lint);
            }
        }
    }

    /// The policy file exists but cannot be read as text (not UTF-8, a read error): as
    /// corrupted as a file with a bad line, so the provider fails the same way.
    pub fn policy_unreadable(&mut self, now: Duration, why: String) {
        let problem = policy::Problem {
            line: 0,
            message: format!("cannot be read: {why}"),
        };
        self.log(
            now,
            Level::Error,
            format!("bde-network-unlock.ini {why}").into(),
        );
        self.log(
            now,
            Level::Error,
            "the subnet policy file is corrupted or invalid: the Network Unlock provider has \
             failed and will not respond to requests"
                .into(),
        );
        self.policy = PolicyState::Loaded(Lint {
            policy: None,
            errors: vec![problem],
            warnings: Vec::new(),
        });
    }

    pub fn set_service_running(&mut self, now: Duration, running: bool) {
        self.service_running = running;
        let what = if running { "started" } else { "stopped" };
        self.log(now, Level::Info, format!("WDS service {what}").into());
    }

    /// `Install-WindowsFeature BitLocker-NetworkUnlock` (or its removal): without the feature
    /// there is no provider for WDS to hand requests to.
    pub fn set_feature_installed(&mut self, now: Duration, installed: bool) {
        self.feature_installed = installed;
        let what = if installed {
            "installed"
        } else {
            "NOT installed"
        };
        self.log(
            now,
            Level::Info,
            format!("the BitLocker-NetworkUnlock feature is {what}").into(),
        );
    }

    /// `wevtutil sl Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true` (or
    /// `/e:false`): from now on the log records (or drops) every line. Turning it on logs that
    /// it was turned on, turning it off logs nothing; setting the state it already has does
    /// nothing.
    pub fn set_debug_log(&mut self, now: Duration, enabled: bool) {
        if self.debug_log == enabled {
            return;
        }
        if enabled {
            self.debug_log = true;
            self.log(
                now,
                Level::Info,
                "the WDS debug log is enabled (wevtutil sl \
                 Microsoft-Windows-Deployment-Services-Diagnostics/Debug /e:true): nothing \
                 before this line was logged"
                    .into(),
            );
        } else {
            // A disabled channel writes nothing, not even that it was disabled.
            self.debug_log = false;
        }
    }

    /// Whether the debug log is recording.
    pub fn debug_log_enabled(&self) -> bool {
        self.debug_log
    }

    pub fn set_registered(&mut self, now: Duration, registered: bool) {
        self.registered = registered;
        let what = if registered {
            "registered"
        } else {
            "unregistered"
        };
        self.log(
            now,
            Level::Info,
            format!("Network Unlock provider {what}").into(),
        );
    }

    /// Counters by label (`replied`, `drop.<reason>`), in label order.
    pub fn counters(&self) -> &BTreeMap<String, u64> {
        &self.counters
    }

    pub fn counter(&self, label: &str) -> u64 {
        self.counters.get(label).copied().unwrap_or(0)
    }

    /// Everything logged so far.
    pub fn log_lines(&self) -> &Log {
        &self.log
    }

    /// Logs an error of the shell around the provider (a port it cannot bind, a send that
    /// failed).
    pub fn note_error(&mut self, at: Duration, message: String) {
        self.log(at, Level::Error, message.into());
    }

    /// Logs an event of the shell around the provider.
    pub fn note_info(&mut self, at: Duration, message: String) {
        self.log(at, Level::Info, message.into());
    }

    fn log(&mut self, at: Duration, level: Level, message: LogMessage) {
        if !self.debug_log {
            return;
        }
        self.log.push(LogLine { at, level, message });
    }

    fn count(&mut self, label: String) {
        *self.counters.entry(label).or_insert(0) += 1;
    }

    /// Processes one datagram received on port 67 (DHCPv4) or 547 (DHCPv6), all steps in a
    /// row on this thread.
    pub fn handle(&mut self, now: Duration, datagram: Received<'_>) -> Outcome {
        match self.classify(now, datagram) {
            Classified::Dropped(reason) => Outcome::Dropped(reason),
            Classified::Decrypt(job) => {
                let done = job.run();
                self.complete(now, done)
            }
        }
    }

    /// The cheap steps (service state, policy file, decoding, thumbprint, subnet policy): a
    /// drop, already counted and logged, or a job for the private-key operation.
    pub fn classify(&mut self, now: Duration, datagram: Received<'_>) -> Classified {
        match self.check(datagram) {
            Ok(job) => {
                self.log(
                    now,
                    Level::Debug,
                    LogMessage::Recognised {
                        client: job.client,
                        xid: job.xid(),
                        thumbprint: job.thumbprint,
                    },
                );
                Classified::Decrypt(job)
            }
            Err(reason) => {
                self.record_drop(now, datagram.source, &reason);
                Classified::Dropped(reason)
            }
        }
    }

    /// Counts and logs a job that a worker ran.
    pub fn complete(&mut self, now: Duration, done: Decrypted) -> Outcome {
        match done.result {
            Ok(transmit) => {
                self.count("replied".into());
                if let Some((ck, sk)) = done.keys {
                    self.log(
                        now,
                        Level::Debug,
                        LogMessage::Decrypted(Box::new(DecryptedKeys {
                            client: done.client,
                            thumbprint: done.thumbprint,
                            network_key: ck,
                            session_key: sk,
                        })),
                    );
                }
                self.log(
                    now,
                    Level::Info,
                    LogMessage::Replied {
                        client: done.client,
                        thumbprint: done.thumbprint,
                        destination: transmit.destination,
                    },
                );
                Outcome::Replied {
                    thumbprint: done.thumbprint,
                    client: done.client,
                    transmit,
                }
            }
            Err(reason) => {
                self.record_drop(now, done.source, &reason);
                Outcome::Dropped(reason)
            }
        }
    }

    /// Counts and logs a job the shell could not queue: [`DropReason::Overloaded`]. The shell
    /// drops the job.
    pub fn shed(&mut self, now: Duration, job: &DecryptJob) -> Outcome {
        let reason = DropReason::Overloaded;
        self.record_drop(now, job.source, &reason);
        Outcome::Dropped(reason)
    }

    /// Hands over the log lines written since the last call (a long-running shell writes them
    /// out and must not keep them all in memory).
    pub fn take_log(&mut self) -> Log {
        std::mem::take(&mut self.log)
    }

    fn record_drop(&mut self, now: Duration, source: SocketAddr, reason: &DropReason) {
        self.count(format!("drop.{}", reason.label()));
        let level = match reason {
            DropReason::CertificateRemoved(_) | DropReason::PolicyInvalid => Level::Error,
            _ => Level::Debug,
        };
        self.log(
            now,
            level,
            LogMessage::Dropped {
                source,
                reason: Box::new(reason.clone()),
            },
        );
    }

    fn check(&self, datagram: Received<'_>) -> Result<Box<DecryptJob>, DropReason> {
        if !self.service_running {
            return Err(DropReason::ServiceStopped);
        }
        if !self.feature_installed {
            return Err(DropReason::FeatureNotInstalled);
        }
        if !self.registered {
            return Err(DropReason::ProviderUnregistered);
        }
        let lint = match &self.policy {
            PolicyState::NoFile => None,
            PolicyState::Loaded(lint) if lint.policy.is_none() => {
                return Err(DropReason::PolicyInvalid);
            }
            PolicyState::Loaded(lint) => Some(lint),
        };
        let message = if datagram.source.is_ipv4() {
            v4::decode(datagram.payload)
        } else {
            v6::decode(datagram.payload)
        };
        let message = message.map_err(|err| {
            if err.is_not_network_unlock() {
                DropReason::NotNetworkUnlock
            } else {
                DropReason::Malformed(err)
            }
        })?;
        let (thumbprint, client, request) = match message {
            Message::V4Request(r) => {
                let client = if r.ciaddr == Ipv4Addr::UNSPECIFIED {
                    datagram.source.ip()
                } else {
                    IpAddr::V4(r.ciaddr)
                };
                (r.thumbprint, client, JobRequest::V4(r))
            }
            Message::V6Request(r) => (
                r.thumbprint,
                datagram.source.ip(),
                JobRequest::V6(r, self.server_duid.clone()),
            ),
            Message::V4Reply(_) | Message::V6Reply(_) => return Err(DropReason::NotARequest),
        };
        let Some(key) = self.certificates.get(&thumbprint) else {
            return Err(if self.removed.contains(&thumbprint) {
                DropReason::CertificateRemoved(thumbprint)
            } else {
                DropReason::UnknownCertificate(thumbprint)
            });
        };
        match policy::decide(lint, &thumbprint, client) {
            Some(Decision::Allow(_)) => {}
            Some(Decision::Deny(policy::DenyReason::CertificateDisabled)) => {
                return Err(DropReason::CertificateDisabled(thumbprint));
            }
            Some(Decision::Deny(why)) => return Err(DropReason::SubnetDenied(why.to_string())),
            None => return Err(DropReason::PolicyInvalid),
        }
        Ok(Box::new(DecryptJob {
            source: datagram.source,
            thumbprint,
            client,
            key: Arc::clone(key),
            request,
        }))
    }
}

/// What [`Provider::classify`] made of a datagram.
#[derive(Debug)]
pub enum Classified {
    /// Dropped by a cheap check; already counted and logged.
    Dropped(DropReason),
    /// Passed every cheap check: the private-key operation is next.
    /// Boxed: a job carries the whole decoded request, and travels through the shell's queue.
    Decrypt(Box<DecryptJob>),
}

/// The request as the reply needs it.
#[derive(Debug)]
enum JobRequest {
    V4(v4::Request),
    /// With the server's DUID for the reply.
    V6(v6::Request, Arc<[u8]>),
}

/// A request waiting for the private-key operation: everything steps 5 and 6 need, and
/// nothing of the provider, so it can run on any thread. The key is shared, never copied.
#[derive(Debug)]
pub struct DecryptJob {
    source: SocketAddr,
    thumbprint: Thumbprint,
    client: IpAddr,
    key: Arc<ProviderKey>,
    request: JobRequest,
}

impl DecryptJob {
    /// The sender of the request.
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// The request's transaction id, for the log.
    fn xid(&self) -> Xid {
        match &self.request {
            JobRequest::V4(r) => Xid::V4(r.xid),
            JobRequest::V6(r, _) => Xid::V6(r.xid),
        }
    }

    /// Steps 5 and 6: decrypt the key protector, seal the reply, encode it.
    pub fn run(self) -> Decrypted {
        let mut keys = None;
        let key_protector = match &self.request {
            JobRequest::V4(r) => &r.key_protector,
            JobRequest::V6(r, _) => &r.key_protector,
        };
        let result = self
            .key
            .decrypt(key_protector)
            .map_err(|err| match err {
                nkpu::KeyProtectorError::WrongPlaintextLength(n) => {
                    DropReason::WrongPlaintextLength(n)
                }
                _ => DropReason::Undecryptable,
            })
            .map(|(ck, sk)| {
                keys = Some((ck.short(), sk.short()));
                let sealed = KeyProtectorReply::seal(&sk, &ck);
                match &self.request {
                    JobRequest::V4(request) => Transmit {
                        destination: v4_destination(request),
                        payload: v4::Reply::answering(request, sealed).encode(),
                    },
                    JobRequest::V6(request, duid) => Transmit {
                        destination: SocketAddr::new(self.source.ip(), 546),
                        payload: v6::Reply::answering(request, duid.to_vec(), sealed).encode(),
                    },
                }
            });
        Decrypted {
            source: self.source,
            thumbprint: self.thumbprint,
            client: self.client,
            keys,
            result,
        }
    }
}

/// What came of a [`DecryptJob`], for [`Provider::complete`].
#[derive(Debug)]
pub struct Decrypted {
    source: SocketAddr,
    thumbprint: Thumbprint,
    client: IpAddr,
    /// Short forms of CK and SK as this job decrypted them, for the phase 5 log line.
    keys: Option<(String, String)>,
    result: Result<Transmit, DropReason>,
}

impl Decrypted {
    /// The sender of the request.
    pub fn source(&self) -> SocketAddr {
        self.source
    }
}

/// Where a DHCPv4 reply goes: through the relay when there was one (`giaddr`), else broadcast
/// when the client asked for it (Windows does; broadcast is the safe choice), else to `ciaddr`.
fn v4_destination(request: &v4::Request) -> SocketAddr {
    if request.giaddr != Ipv4Addr::UNSPECIFIED {
        SocketAddr::new(request.giaddr.into(), 67)
    } else if request.broadcast || request.ciaddr == Ipv4Addr::UNSPECIFIED {
        SocketAddr::new(Ipv4Addr::BROADCAST.into(), 68)
    } else {
        SocketAddr::new(request.ciaddr.into(), 68)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(i: usize) -> LogLine {
        LogLine {
            at: Duration::from_millis(i as u64),
            level: Level::Info,
            message: LogMessage::Text(format!("line {i}").into()),
        }
    }

    proptest! {
        /// Any number of lines comes back in order, whole, by reference and by value, and the
        /// room kept spare is at most one block's.
        #[test]
        fn a_log_keeps_its_lines_in_order(n in 0usize..10_000) {
            let log: Log = (0..n).map(line).collect();
            prop_assert_eq!(log.len(), n);
            prop_assert_eq!(log.is_empty(), n == 0);
            let last = n.checked_sub(1).map(line);
            prop_assert_eq!(log.last(), last.as_ref());
            let lines: Vec<LogLine> = (0..n).map(line).collect();
            prop_assert!(log.iter().eq(lines.iter()));
            prop_assert!(log.iter().rev().map(|l| l.at).eq((0..n).rev().map(|i| line(i).at)));
            let room: usize = log.blocks.iter().map(Vec::capacity).sum();
            prop_assert!(room - n < Log::LARGEST_BLOCK, "{} for {}", room, n);
            prop_assert!(log.into_iter().eq((0..n).map(line)));
        }
    }

    #[test]
    fn a_long_log_spares_less_than_a_block() {
        let n = 3 * Log::LARGEST_BLOCK + 5;
        let log: Log = (0..n).map(line).collect();
        let room: usize = log.blocks.iter().map(Vec::capacity).sum();
        assert!(room - n < Log::LARGEST_BLOCK, "{room} for {n}");
        assert!(
            log.blocks
                .iter()
                .all(|b| b.capacity() <= Log::LARGEST_BLOCK)
        );
    }
}
