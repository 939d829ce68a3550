//! The recovery service, its management points and managed devices in a simulation: the
//! escrow scenarios of issue 7, deterministic for a seed, for the scenario runner.
//!
//! ```text
//!  RecoveryLab (one seed, one virtual clock)
//!  ├─ devices: SimulatedTpm, BitLocker volume, agent (EscrowRun + its shell), handler log
//!  ├─ SimDialer: host name → management point face (HTTPS, HTTP, down); each connection is a
//!  │  tokio in-memory duplex pipe carrying real TLS (rustls on both ends)
//!  ├─ management points: the same axum application as the HTTPS server (server::https_router),
//!  │  or the plain-HTTP face that answers 403.4
//!  └─ the recovery service: Store (SQLite WAL in a temporary folder) behind the GroupCommitter
//! ```
//!
//! What is deterministic, and why: every log line, record and audit line is stamped with the
//! virtual clock ([`SimClock`]), which only the lab moves (a round trip costs `rtt_ms`, a dead
//! management point `connect_timeout_ms`, a backoff moves the clock instead of sleeping); the
//! at-rest key, the GCM nonces and the tokens come from a ChaCha20 stream of the seed; the
//! certificates are Ed25519 from another stream ([`crate::pki`]); devices' TPMs and volumes from
//! a stream per device name. TLS itself draws rustls's own randomness (client random, key
//! shares), and hyper stamps a `Date` header: neither reaches any output of the lab. The
//! certificate verifier judges validity at the virtual time. Everything runs on one
//! current-thread tokio runtime, and the store's thread serves one request at a time because
//! the lab issues them one at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rustls::time_provider::TimeProvider;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::agent::shell::{
    AgentClock, AgentConfig, ClientCertificate, CycleError, Dialer, EscrowConnection,
    HelpdeskRefusal, client_tls_with, escrow_volume,
};
use crate::agent::{ContactFailure, LogLine, ManagementPoint, RetryPolicy, RunOutcome};
use crate::committer::CommitError;
use crate::pki::{PkiError, RootCa};
use crate::protected_volume::{ProtectedVolume, Rotation};
use crate::record::{DeviceId, KeyId, RecordError, VolumeId};
use crate::seal::{AtRestKey, Sealer};
use crate::server::{RecoveryService, ServeError, https_router, plain_http_router};
use crate::store::{
    AuditEntry, DeviceToken, HelpdeskRole, OperatorToken, RawRow, Store, StoreError, read_raw_rows,
};
use crate::wire::{RecoverBody, RecoverReply, RotationReason};

/// The `thread` attribute of the simulated handler-log lines (the real agent writes its
/// process ID; a fixed number keeps the lines identical run to run).
pub const HANDLER_LOG_THREAD: u32 = 4120;

/// 2021-04-05T08:00:00Z, the seed document's date: the default start of a lab's clock.
pub const DEFAULT_START_MS: i64 = 1_617_609_600_000;

/// The virtual clock: milliseconds since the Unix epoch, moved only by the lab.
#[derive(Debug, Clone)]
pub struct SimClock(Arc<AtomicI64>);

impl SimClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms.max(0), Ordering::SeqCst);
    }
    fn advance_to(&self, at_ms: i64) {
        self.0.fetch_max(at_ms, Ordering::SeqCst);
    }
}

impl AgentClock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now()
    }
    async fn wait_until(&self, at_ms: i64) {
        self.advance_to(at_ms);
    }
    fn tls_time(&self) -> Option<Arc<dyn TimeProvider>> {
        Some(Arc::new(self.clone()))
    }
}

impl TimeProvider for SimClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_millis(
            u64::try_from(self.now()).unwrap_or(0),
        )))
    }
}

/// What a management point offers the recovery service on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpFace {
    /// HTTPS on 443 (the management point, or its IIS website, HTTPS-enabled).
    Https,
    /// Plain HTTP on 80: the recovery service refuses it (403.4).
    Http,
    /// Switched off or unreachable: connections time out.
    Down,
}

/// Which roots a device trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Only the public CAs Windows ships (the lab's "Public Trust Root CA", which issues a
    /// management point's certificate when the site buys one: [`CertificateIssuer::Public`]),
    /// so a certificate from the organisation's CA is untrusted.
    PublicRootsOnly,
    /// The public roots and the organisation's root, added by Group Policy.
    OrganisationRoot,
}

/// Which CA issued a management point's server authentication certificate (the seed's two
/// ways to make clients trust it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateIssuer {
    /// The organisation's own PKI: clients trust it once Group Policy adds its root.
    #[default]
    Organisation,
    /// A public, globally trusted CA (DigiCert and the like): every Windows client trusts it
    /// with no configuration, because its root ships with Windows.
    Public,
    /// The site itself (enhanced HTTP): the site server's self-signed "SMS Issuing" root,
    /// which every client assigned to the site trusts with no PKI.
    Site,
}

impl CertificateIssuer {
    /// The issuer in words, for transcripts.
    pub fn describe(self) -> &'static str {
        match self {
            CertificateIssuer::Organisation => {
                "issued by the organisation's CA (Contoso Root CA): clients trust it once Group Policy adds that root"
            }
            CertificateIssuer::Public => {
                "issued by a public CA (Public Trust Root CA): clients trust it with no configuration, its root ships with Windows"
            }
            CertificateIssuer::Site => {
                "issued by the site (SMS Issuing): every client assigned to the site trusts it, no PKI involved"
            }
        }
    }
}

/// The seed's three ways to protect the recovery service on a management point, each with the
/// Configuration Manager version that brought it, what it asks of clients and what it
/// protects. The lab enforces the requirements (a client certificate for an HTTPS management
/// point, the issuer's root for the others); what each protects beyond the recovery service
/// is the management point's other client traffic, which the lab does not carry: it is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    /// The management point's client connections are HTTPS (1910 and later).
    HttpsManagementPoint,
    /// Only the IIS website hosting the recovery service is HTTPS, on a management point
    /// whose client connections stay HTTP (2002 and later).
    HttpsWebsite,
    /// The site uses enhanced HTTP (2103 and later).
    EnhancedHttp,
}

impl Protection {
    /// The first Configuration Manager version that offers it.
    pub fn since_version(self) -> u32 {
        match self {
            Protection::HttpsManagementPoint => 1910,
            Protection::HttpsWebsite => 2002,
            Protection::EnhancedHttp => 2103,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protection::HttpsManagementPoint => "management point on HTTPS",
            Protection::HttpsWebsite => "HTTPS IIS website on an HTTP management point",
            Protection::EnhancedHttp => "enhanced HTTP",
        }
    }

    /// What a client needs to escrow through it.
    pub fn requires(self) -> &'static str {
        match self {
            Protection::HttpsManagementPoint => {
                "a PKI client authentication certificate on every client, and trust in the root that issued the management point's certificate"
            }
            Protection::HttpsWebsite => {
                "trust in the root that issued the website's server authentication certificate (a public CA, or the organisation's root added by Group Policy); no client certificate"
            }
            Protection::EnhancedHttp => {
                "nothing beyond site assignment: the site issues the certificate and its clients trust the site; no PKI"
            }
        }
    }

    /// What travels encrypted.
    pub fn protects(self) -> &'static str {
        match self {
            Protection::HttpsManagementPoint => {
                "every client connection to the management point (policy, inventory, status) and the recovery service"
            }
            Protection::HttpsWebsite => {
                "the recovery service only: the management point's other client traffic stays HTTP"
            }
            Protection::EnhancedHttp => {
                "the recovery service and the site's sensitive client traffic, over the site-issued certificate"
            }
        }
    }
}

/// A lab's parameters.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub seed: u64,
    /// The virtual clock's start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// "Encrypt recovery data in the database" (on by default).
    pub encrypted: bool,
    /// Simulated time a successful connection costs (TCP, TLS 1.3 handshake, request and
    /// reply are modelled as 3 round trips).
    pub rtt_ms: i64,
    /// Simulated time a connection to a dead management point costs before it fails.
    pub connect_timeout_ms: i64,
    pub retry: RetryPolicy,
    /// Stretch iterations of simulated recovery passwords (Windows: 1,048,576; fewer here so
    /// that a scenario runs in milliseconds: the stretching is the same function).
    pub stretch_iterations: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start_ms: DEFAULT_START_MS,
            encrypted: true,
            rtt_ms: 2,
            connect_timeout_ms: 5_000,
            retry: RetryPolicy::default(),
            stretch_iterations: 1024,
        }
    }
}

/// Why the lab could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("volume: {0}")]
    Volume(#[from] volume::VolumeError),
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("no device {0:?} in the lab")]
    UnknownDevice(String),
    #[error("no management point {0:?} in the lab")]
    UnknownManagementPoint(String),
    #[error("no operator {0:?} in the lab")]
    UnknownOperator(String),
    #[error("device {0} has no BitLocker volume yet")]
    NoBitLocker(String),
    #[error("device {0}'s volume has no recovery password protector to escrow")]
    NoRecoveryPassword(String),
    #[error("no HTTPS management point for the helpdesk")]
    NoHttpsManagementPoint,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One line of the lab's transcript.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabEvent {
    pub at_ms: i64,
    /// The host it happened on (a device, a management point, `helpdesk`).
    pub host: String,
    pub text: String,
}

/// A connection to a simulated host: real TLS over an in-memory pipe.
#[derive(Clone)]
struct SimDialer {
    hosts: Arc<Mutex<BTreeMap<String, MpFace>>>,
    acceptors: Arc<Mutex<BTreeMap<String, TlsAcceptor>>>,
    https_app: axum::Router,
    clock: SimClock,
    rtt_ms: i64,
    connect_timeout_ms: i64,
}

/// Bytes a pipe buffers each way before the writer waits for the reader.
const PIPE_BUFFER: usize = 64 * 1024;

impl Dialer for SimDialer {
    type Stream = tokio::io::DuplexStream;
    async fn dial(&self, host: &str, port: u16) -> std::io::Result<Self::Stream> {
        let face = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied();
        let timed_out = || {
            self.clock.advance(self.connect_timeout_ms);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {host}:{port}"),
            ))
        };
        match (face, port) {
            (None | Some(MpFace::Down), _) => timed_out(),
            (Some(MpFace::Https), 443) => {
                let acceptor = self
                    .acceptors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(host)
                    .cloned();
                let Some(acceptor) = acceptor else {
                    return timed_out();
                };
                self.clock.advance(3 * self.rtt_ms);
                let (client, server) = tokio::io::duplex(PIPE_BUFFER);
                let app = self.https_app.clone();
                tokio::spawn(async move {
                    let limits = crate::server::Limits::simulation();
                    crate::server::serve_tls_connection_with(server, acceptor, app, &limits).await;
                });
                Ok(client)
            }
            (Some(MpFace::Http), 80) => {
                self.clock.advance(2 * self.rtt_ms);
                let (client, server) = tokio::io::duplex(PIPE_BUFFER);
                tokio::spawn(async move {
                    let limits = crate::server::Limits::simulation();
                    let app = plain_http_router();
                    crate::server::serve_http_connection_with(server, app, &limits).await;
                });
                Ok(client)
            }
            _ => {
                self.clock.advance(self.rtt_ms);
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("{host}:{port} refused the connection"),
                ))
            }
        }
    }
}

struct SimDevice {
    token: DeviceToken,
    client_certificate: Option<ClientCertificate>,
    policy: crate::agent::BitLockerPolicy,
    management_points: Vec<ManagementPoint>,
    trust: Trust,
    tpm: tpm::SimulatedTpm,
    volume: Option<ProtectedVolume>,
    rng: ChaCha20Rng,
    log: Vec<LogLine>,
}

/// BitLocker as it was just enabled on a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BitLockerEnabled {
    pub volume: String,
    pub key_id: KeyId,
    pub recovery_password: String,
}

/// What one escrow cycle of a device did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EscrowSummary {
    pub escrowed: bool,
    /// Where it was escrowed, if it was.
    pub url: Option<String>,
    /// It failed after failing over to an HTTP management point (the seed's pitfall).
    pub failed_over_to_http: bool,
    /// Every failed contact: (URL, why).
    pub failures: Vec<(String, String)>,
    /// The first failure was an untrusted server certificate.
    pub untrusted_certificate: bool,
    /// An HTTPS management point refused the handshake for want of a client certificate.
    pub client_certificate_required: bool,
    /// Rotations the service asked for: old and new key ID, and the service's reason.
    pub rotations: Vec<Rotation>,
    pub re_escrowed: Option<bool>,
    /// What the service acknowledged, in its reply's order: (kind, key ID, outcome such as
    /// `created` or `unchanged`); empty when the escrow failed.
    pub acknowledged: Vec<(String, KeyId, String)>,
    /// What it acknowledged of the re-escrow after a rotation, in the same form; empty when
    /// nothing was rotated or the re-escrow failed.
    pub re_acknowledged: Vec<(String, KeyId, String)>,
    /// The agent contacted the recovery service at all (its BitLocker management policy has a
    /// Client Management rule: [`crate::agent::BitLockerPolicy`]).
    pub contacted: bool,
}

/// What an escrow's reply acknowledged, as (kind, key ID, outcome); empty when it failed or
/// did not run.
fn acknowledged_by(outcome: Option<&RunOutcome>) -> Vec<(String, KeyId, String)> {
    match outcome {
        Some(RunOutcome::Escrowed { reply, .. }) => reply
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.kind.to_string(),
                    o.key_id.clone(),
                    format!("{:?}", o.outcome).to_lowercase(),
                )
            })
            .collect(),
        Some(RunOutcome::Failed(_)) | None => Vec::new(),
    }
}

/// The rows of one database as stored, for the encrypted-versus-unencrypted view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseView {
    pub label: String,
    pub encrypted: bool,
    pub rows: Vec<RawRow>,
}

/// A lab: one recovery service, its management points, devices and helpdesk operators.
pub struct RecoveryLab {
    cfg: LabConfig,
    rt: tokio::runtime::Runtime,
    clock: SimClock,
    db_path: PathBuf,
    service: RecoveryService,
    dialer: SimDialer,
    org_ca: RootCa,
    public_ca: RootCa,
    /// Enhanced HTTP's "SMS Issuing" root (its own stream: the other certificates are as
    /// they were before it existed).
    site_ca: RootCa,
    pki_rng: ChaCha20Rng,
    devices: BTreeMap<String, SimDevice>,
    operators: BTreeMap<String, OperatorToken>,
    events: Vec<LabEvent>,
    // Last, so that it is removed after the store's connection closed.
    _dir: tempfile::TempDir,
}

/// A ChaCha20 stream of the seed, one per purpose, so that adding a device does not change
/// another's keys or the service's nonces.
fn stream(seed: u64, purpose: &str) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let d = Sha256::digest(purpose.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&d[..8]);
    rng.set_stream(u64::from_be_bytes(n));
    rng
}

impl RecoveryLab {
    pub fn new(cfg: LabConfig) -> Result<Self, SimError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let clock = SimClock::new(cfg.start_ms);
        let dir = tempfile::tempdir()?;
        let db_path = dir.path().join("escrow.sqlite");
        let mut store_rng = stream(cfg.seed, "recovery-service/store");
        let sealer = if cfg.encrypted {
            Sealer::encrypted(&AtRestKey::generate(&mut store_rng))
        } else {
            Sealer::Plaintext
        };
        let store = Store::open(&db_path, sealer, Box::new(store_rng))?;
        let clock_for_service = clock.clone();
        let service =
            RecoveryService::from_store(store, Arc::new(move || clock_for_service.now()))?
                .with_limits(crate::server::Limits::simulation());
        let mut pki_rng = stream(cfg.seed, "recovery-service/pki");
        let org_ca = RootCa::generate("Contoso Root CA", &mut pki_rng)?;
        let public_ca = RootCa::generate("Public Trust Root CA", &mut pki_rng)?;
        let site_ca = RootCa::generate(
            "SMS Issuing",
            &mut stream(cfg.seed, "recovery-service/site-pki"),
        )?;
        let dialer = SimDialer {
            hosts: Arc::default(),
            acceptors: Arc::default(),
            https_app: https_router(service.clone()),
            clock: clock.clone(),
            rtt_ms: cfg.rtt_ms,
            connect_timeout_ms: cfg.connect_timeout_ms,
        };
        Ok(Self {
            cfg,
            rt,
            clock,
            db_path,
            service,
            dialer,
            org_ca,
            public_ca,
            site_ca,
            pki_rng,
            devices: BTreeMap::new(),
            operators: BTreeMap::new(),
            events: Vec::new(),
            _dir: dir,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now()
    }

    pub fn advance(&mut self, ms: i64) {
        self.clock.advance(ms);
    }

    /// The transcript so far.
    pub fn events(&self) -> &[LabEvent] {
        &self.events
    }

    pub fn encrypted(&self) -> bool {
        self.cfg.encrypted
    }

    /// The organisation's root certificate (what Group Policy adds to clients).
    pub fn organisation_root(&self) -> &CertificateDer<'static> {
        self.org_ca.der()
    }

    fn event(&mut self, host: &str, text: String) {
        self.events.push(LabEvent {
            at_ms: self.clock.now(),
            host: host.to_owned(),
            text,
        });
    }

    /// Adds a management point `host` (a DNS name) and returns its recovery service URL base
    /// (`https://host` or `http://host`). An HTTPS point gets a certificate from the
    /// organisation's CA; a point added `Down` is an HTTPS point that does not answer.
    pub fn add_management_point(&mut self, host: &str, face: MpFace) -> Result<String, SimError> {
        self.add_management_point_issued(host, face, CertificateIssuer::Organisation)
    }

    /// [`Self::add_management_point`] with a certificate from `issuer`.
    pub fn add_management_point_issued(
        &mut self,
        host: &str,
        face: MpFace,
        issuer: CertificateIssuer,
    ) -> Result<String, SimError> {
        self.add_management_point_protected(host, face, issuer, None)
    }

    /// [`Self::add_management_point_issued`] protected one of the seed's three ways: an HTTPS
    /// management point also requires a client certificate from the organisation's PKI;
    /// enhanced HTTP's certificate is the site's whatever `issuer` says.
    pub fn add_management_point_protected(
        &mut self,
        host: &str,
        face: MpFace,
        issuer: CertificateIssuer,
        protection: Option<Protection>,
    ) -> Result<String, SimError> {
        let issuer = if protection == Some(Protection::EnhancedHttp) {
            CertificateIssuer::Site
        } else {
            issuer
        };
        let ca = match issuer {
            CertificateIssuer::Organisation => &self.org_ca,
            CertificateIssuer::Public => &self.public_ca,
            CertificateIssuer::Site => &self.site_ca,
        };
        let identity = ca.issue_server(&[host.to_owned()], &mut self.pki_rng)?;
        let tls = if protection == Some(Protection::HttpsManagementPoint) {
            crate::server::tls_config_requiring_client_certificates(
                identity.chain,
                identity.key,
                std::slice::from_ref(self.org_ca.der()),
                Arc::new(self.clock.clone()),
            )?
        } else {
            crate::server::tls_config(identity.chain, identity.key)?
        };
        self.dialer
            .acceptors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), TlsAcceptor::from(tls));
        self.dialer
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), face);
        let scheme = if face == MpFace::Http {
            "http"
        } else {
            "https"
        };
        self.event(
            host,
            format!("management point up: recovery service over {face:?}"),
        );
        Ok(format!("{scheme}://{host}"))
    }

    /// Switches a management point's face (takes it down, brings it back, or changes it).
    pub fn set_management_point(&mut self, host: &str, face: MpFace) -> Result<(), SimError> {
        let mut hosts = self.dialer.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let slot = hosts
            .get_mut(host)
            .ok_or_else(|| SimError::UnknownManagementPoint(host.to_owned()))?;
        *slot = face;
        drop(hosts);
        self.event(host, format!("management point now {face:?}"));
        Ok(())
    }

    /// Adds a managed device that knows the management points `mp_urls` (in the site's order)
    /// and trusts `trust`; it is enrolled with the recovery service (its token).
    pub fn add_device(
        &mut self,
        name: &str,
        mp_urls: &[String],
        trust: Trust,
    ) -> Result<(), SimError> {
        let device = DeviceId::new(name)?;
        let management_points = mp_urls
            .iter()
            .map(|u| {
                ManagementPoint::parse(u)
                    .map_err(|_| SimError::UnknownManagementPoint(u.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let token = self.rt.block_on(self.service.enrol(device))?;
        let mut rng = stream(self.cfg.seed, &format!("device/{name}"));
        let tpm = tpm::SimulatedTpm::manufacture(&mut rng, Default::default());
        self.devices.insert(
            name.to_owned(),
            SimDevice {
                token,
                client_certificate: None,
                policy: crate::agent::BitLockerPolicy::default(),
                management_points,
                trust,
                tpm,
                volume: None,
                rng,
                log: Vec::new(),
            },
        );
        self.event(
            name,
            format!("device enrolled with the recovery service; trusts {trust:?}"),
        );
        Ok(())
    }

    /// The BitLocker management policy the device is targeted with (by default one with a
    /// Client Management rule): only then does its agent contact the recovery service.
    pub fn set_policy(
        &mut self,
        device: &str,
        policy: crate::agent::BitLockerPolicy,
    ) -> Result<(), SimError> {
        self.device_mut(device)?.policy = policy;
        self.event(device, format!("BitLocker management policy: {policy:?}"));
        Ok(())
    }

    /// The organisation's PKI enrols the device for a client-authentication certificate (what
    /// an HTTPS management point asks every client for).
    pub fn issue_client_certificate(&mut self, device: &str) -> Result<(), SimError> {
        let identity = self.org_ca.issue_client(device, &mut self.pki_rng)?;
        self.device_mut(device)?.client_certificate = Some(ClientCertificate {
            chain: identity.chain,
            key: Arc::new(identity.key),
        });
        self.event(
            device,
            "PKI client authentication certificate enrolled".into(),
        );
        Ok(())
    }

    /// Group Policy changes which roots the device trusts.
    pub fn set_trust(&mut self, device: &str, trust: Trust) -> Result<(), SimError> {
        self.device_mut(device)?.trust = trust;
        self.event(device, format!("trusted roots now {trust:?}"));
        Ok(())
    }

    fn device_mut(&mut self, name: &str) -> Result<&mut SimDevice, SimError> {
        self.devices
            .get_mut(name)
            .ok_or_else(|| SimError::UnknownDevice(name.to_owned()))
    }

    /// Enables BitLocker on the device's volume `C`: a new encrypted volume with a TPM
    /// protector and a recovery password protector.
    pub fn enable_bitlocker(&mut self, device: &str) -> Result<BitLockerEnabled, SimError> {
        let iterations = self.cfg.stretch_iterations;
        let dev = self.device_mut(device)?;
        let (mut vol, keys) = volume::Volume::create(64 * 1024, "OS", &mut dev.rng)?;
        vol.add_tpm_protector(
            &keys,
            &mut dev.tpm,
            tpm::PcrSelection::SECURE_BOOT,
            &mut dev.rng,
        )?;
        let (id, password) =
            vol.add_recovery_password_protector(&keys, None, iterations, &mut dev.rng)?;
        let key_id = KeyId::new(id.to_string())?;
        let owner_auth = dev.tpm.owner_auth_full();
        dev.volume = Some(ProtectedVolume::new(
            DeviceId::new(device)?,
            VolumeId::new("C")?,
            vol,
            keys,
            Some(owner_auth),
        ));
        let enabled = BitLockerEnabled {
            volume: "C".into(),
            key_id: key_id.clone(),
            recovery_password: password.to_string(),
        };
        self.event(
            device,
            format!(
                "BitLocker enabled on C: protectors TPM and Numerical Password (key ID {key_id})"
            ),
        );
        Ok(enabled)
    }

    /// BitLocker was enabled on the device elsewhere (the scenario runner's client machine):
    /// the agent escrows that volume, unlocked with `keys` as in a running Windows, so that the
    /// recovery password in the service is the one the machine's recovery screen accepts.
    /// `owner_auth` is the machine's TPM `OwnerAuthFull`, if it has a TPM.
    pub fn adopt_bitlocker(
        &mut self,
        device: &str,
        vol: volume::Volume,
        keys: volume::VolumeKeys,
        owner_auth: Option<String>,
    ) -> Result<BitLockerEnabled, SimError> {
        let id = vol
            .protectors()
            .iter()
            .find(|p| p.kind() == volume::ProtectorKind::RecoveryPassword)
            .map(|p| p.id)
            .ok_or_else(|| SimError::NoRecoveryPassword(device.to_owned()))?;
        let password = vol.recovery_password(&keys, id)?;
        let key_id = KeyId::new(id.to_string())?;
        let dev = self.device_mut(device)?;
        dev.volume = Some(ProtectedVolume::new(
            DeviceId::new(device)?,
            VolumeId::new("C")?,
            vol,
            keys,
            owner_auth,
        ));
        self.event(
            device,
            format!("BitLocker volume C adopted for escrow (recovery key ID {key_id})"),
        );
        Ok(BitLockerEnabled {
            volume: "C".into(),
            key_id,
            recovery_password: password.to_string(),
        })
    }

    /// The key IDs of the device's recovery passwords now (they change when one is rotated).
    pub fn recovery_key_ids(&self, device: &str) -> Result<Vec<KeyId>, SimError> {
        let dev = self
            .devices
            .get(device)
            .ok_or_else(|| SimError::UnknownDevice(device.to_owned()))?;
        let pv = dev
            .volume
            .as_ref()
            .ok_or_else(|| SimError::NoBitLocker(device.to_owned()))?;
        pv.recovery_key_ids().map_err(|e| match e {
            crate::protected_volume::ProtectedVolumeError::Volume(v) => SimError::Volume(v),
            crate::protected_volume::ProtectedVolumeError::Record(r) => SimError::Record(r),
            _ => SimError::NoRecoveryPassword(device.to_owned()),
        })
    }

    fn agent_config(&self, dev: &SimDevice) -> AgentConfig {
        // Every managed client trusts the public roots and its site's (enhanced HTTP), and the
        // organisation's root where Group Policy added it.
        let mut roots = vec![self.public_ca.der().clone(), self.site_ca.der().clone()];
        if dev.trust == Trust::OrganisationRoot {
            roots.push(self.org_ca.der().clone());
        }
        AgentConfig {
            management_points: dev.management_points.clone(),
            roots,
            client_certificate: dev.client_certificate.clone(),
            token: dev.token.clone(),
            policy: self.cfg.retry,
            log_file: None,
        }
    }

    /// The device's agent runs one escrow cycle: escrow, and rotate and re-escrow what the
    /// service says was disclosed.
    pub fn escrow(&mut self, device: &str) -> Result<EscrowSummary, SimError> {
        let mut dev = self
            .devices
            .remove(device)
            .ok_or_else(|| SimError::UnknownDevice(device.to_owned()))?;
        let result = self.escrow_device(device, &mut dev);
        self.devices.insert(device.to_owned(), dev);
        result
    }

    fn escrow_device(
        &mut self,
        name: &str,
        dev: &mut SimDevice,
    ) -> Result<EscrowSummary, SimError> {
        let cfg = self.agent_config(dev);
        let Some(volume) = dev.volume.as_mut() else {
            return Err(SimError::NoBitLocker(name.to_owned()));
        };
        if !dev.policy.contacts_recovery_service() {
            dev.log.extend(dev.policy.idle_log_line(self.clock.now()));
            self.event(
                name,
                format!(
                    "the agent does not contact the recovery service: {}",
                    dev.policy.describe()
                ),
            );
            return Ok(EscrowSummary {
                escrowed: false,
                url: None,
                failed_over_to_http: false,
                failures: Vec::new(),
                untrusted_certificate: false,
                client_certificate_required: false,
                rotations: Vec::new(),
                re_escrowed: None,
                acknowledged: Vec::new(),
                re_acknowledged: Vec::new(),
                contacted: false,
            });
        }
        let report = self.rt.block_on(escrow_volume(
            &cfg,
            &self.dialer,
            &self.clock,
            volume,
            &mut dev.rng,
        ))?;
        dev.log.extend(report.log.iter().cloned());
        let (escrowed, url, failed_over_to_http, failures) = match &report.outcome {
            RunOutcome::Escrowed { url, .. } => (true, Some(url.clone()), false, Vec::new()),
            RunOutcome::Failed(f) => (false, None, f.failed_over_to_http, f.attempts.clone()),
        };
        let acknowledged = acknowledged_by(Some(&report.outcome));
        let re_acknowledged = acknowledged_by(report.re_escrow.as_ref());
        let summary = EscrowSummary {
            contacted: true,
            acknowledged,
            re_acknowledged,
            escrowed,
            url,
            failed_over_to_http,
            untrusted_certificate: matches!(
                failures.first(),
                Some((_, ContactFailure::UntrustedCertificate(_)))
            ),
            client_certificate_required: failures
                .iter()
                .any(|(_, f)| matches!(f, ContactFailure::ClientCertificateRequired(_))),
            failures: failures
                .iter()
                .map(|(u, f)| (u.clone(), f.to_string()))
                .collect(),
            rotations: report.rotations.clone(),
            re_escrowed: report
                .re_escrow
                .as_ref()
                .map(|o| matches!(o, RunOutcome::Escrowed { .. })),
        };
        let text = match (&report.outcome, &summary.url) {
            (RunOutcome::Escrowed { reply, .. }, Some(url)) => format!(
                "escrowed {} record(s) to {url}: {}",
                reply.outcomes.len(),
                reply
                    .outcomes
                    .iter()
                    .map(|o| format!(
                        "{} {} {}",
                        o.kind,
                        o.key_id,
                        format!("{:?}", o.outcome).to_lowercase()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (RunOutcome::Failed(f), _) => format!("escrow failed and was reported: {f}"),
            _ => "escrow finished".into(),
        };
        self.event(name, text);
        for Rotation { old, new, reason } in &summary.rotations {
            self.event(
                name,
                format!(
                    "rotated {} recovery password {old} → {new}",
                    match reason {
                        RotationReason::Disclosed => "disclosed",
                        RotationReason::StoredInPlaintext => "once plaintext",
                    }
                ),
            );
        }
        if let Some(ok) = summary.re_escrowed {
            self.event(
                name,
                if ok {
                    "re-escrowed the rotated recovery password".into()
                } else {
                    "re-escrow of the rotated recovery password failed".into()
                },
            );
        }
        Ok(summary)
    }

    /// "Encrypt recovery data in the database" is turned on while the service runs on an
    /// unencrypted database: a new at-rest key (from the seed), the plaintext records
    /// re-encrypted and their recovery passwords marked for rotation
    /// ([`Store::turn_on_encryption`]).
    pub fn turn_on_database_encryption(
        &mut self,
    ) -> Result<Option<crate::store::EncryptionTurnedOn>, SimError> {
        let key = AtRestKey::generate(&mut stream(self.cfg.seed, "recovery-service/turned-on"));
        let sealer = Sealer::encrypted(&key);
        let now = self.clock.now();
        let turned_on = self.rt.block_on(
            self.service
                .committer
                .with_store(move |s| s.turn_on_encryption(sealer, now)),
        )?;
        self.cfg.encrypted = true;
        if let Some(on) = turned_on {
            self.event(
                "recovery-service",
                format!(
                    "database encryption turned on: {} plaintext record(s) re-encrypted, {} recovery password(s) marked for rotation",
                    on.resealed, on.rotations
                ),
            );
        }
        Ok(turned_on)
    }

    /// Creates a helpdesk operator account with its role.
    pub fn add_operator(&mut self, name: &str, role: HelpdeskRole) -> Result<(), SimError> {
        let token = self.rt.block_on(self.service.enrol_operator(name, role))?;
        self.operators.insert(name.to_owned(), token);
        self.event(
            "helpdesk",
            format!("operator {name} created with role {role}"),
        );
        Ok(())
    }

    /// The helpdesk asks for recovery information over HTTPS (the first HTTPS management point
    /// that is up), trusting the organisation's root and the public ones. `Ok(Err(_))` is a refusal by the service
    /// (ambiguous prefix, role, not found, audit down), which is part of a scenario.
    pub fn helpdesk_recover(
        &mut self,
        operator: &str,
        body: RecoverBody,
    ) -> Result<Result<RecoverReply, HelpdeskRefusal>, SimError> {
        let token = self
            .operators
            .get(operator)
            .cloned()
            .ok_or_else(|| SimError::UnknownOperator(operator.to_owned()))?;
        let host = self
            .dialer
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, f)| **f == MpFace::Https)
            .map(|(h, _)| h.clone())
            .ok_or(SimError::NoHttpsManagementPoint)?;
        let mp = ManagementPoint::parse(&format!("https://{host}"))
            .map_err(|_| SimError::UnknownManagementPoint(host.clone()))?;
        // The helpdesk's workstation is the organisation's: it trusts the public roots and the
        // organisation's root, whichever issued the management point's certificate.
        // An HTTPS management point asks for a client certificate: the helpdesk's workstation,
        // the organisation's own, has one (its own stream, so nothing else's keys move).
        let workstation = self.org_ca.issue_client(
            "helpdesk workstation",
            &mut stream(self.cfg.seed, "recovery-service/helpdesk-pki"),
        )?;
        let tls = client_tls_with(
            &[
                self.org_ca.der().clone(),
                self.public_ca.der().clone(),
                self.site_ca.der().clone(),
            ],
            self.clock.tls_time(),
            Some(&ClientCertificate {
                chain: workstation.chain,
                key: Arc::new(workstation.key),
            }),
        )?;
        let query = body.key_id.clone();
        let answer = self.rt.block_on(async {
            let mut conn = EscrowConnection::connect(&self.dialer, &mp, tls)
                .await
                .map_err(HelpdeskRefusal::Contact)?;
            conn.recover(&token, &body).await
        });
        let text = match &answer {
            Ok(r) => format!(
                "{operator} recovered {} {} of {}/{} (\"{}\", audit #{}){}",
                r.kind,
                r.key_id,
                r.device,
                r.volume,
                body.reason,
                r.audit_seq,
                if r.rotation_requested {
                    "; rotation requested"
                } else {
                    ""
                }
            ),
            Err(e) => format!("{operator} asked for {query}: refused: {e}"),
        };
        self.event("helpdesk", text);
        Ok(answer)
    }

    /// Types a recovery password at the device's recovery screen: does it unlock volume C?
    pub fn unlock_with_recovery_password(
        &mut self,
        device: &str,
        password: &str,
    ) -> Result<bool, SimError> {
        let dev = self.device_mut(device)?;
        let Some(pv) = dev.volume.as_ref() else {
            return Err(SimError::NoBitLocker(device.to_owned()));
        };
        let unlocked = match password.parse::<volume::RecoveryPassword>() {
            Ok(pw) => pv
                .volume()
                .unlock(
                    &volume::UnlockWith::RecoveryPassword(&pw),
                    &mut dev.tpm,
                    Duration::ZERO,
                )
                .is_ok(),
            Err(_) => false,
        };
        self.event(
            device,
            format!(
                "recovery screen: the recovery password {}",
                if unlocked {
                    "unlocks volume C"
                } else {
                    "does not unlock volume C"
                }
            ),
        );
        Ok(unlocked)
    }

    /// The device's `BitLockerManagementHandler.log`, in CMTrace format.
    pub fn handler_log(&self, device: &str) -> Result<Vec<String>, SimError> {
        let dev = self
            .devices
            .get(device)
            .ok_or_else(|| SimError::UnknownDevice(device.to_owned()))?;
        Ok(dev
            .log
            .iter()
            .map(|l| l.to_cmtrace(HANDLER_LOG_THREAD))
            .collect())
    }

    /// The device's handler-log lines as structured values.
    pub fn handler_log_lines(&self, device: &str) -> Result<&[LogLine], SimError> {
        self.devices
            .get(device)
            .map(|d| d.log.as_slice())
            .ok_or_else(|| SimError::UnknownDevice(device.to_owned()))
    }

    /// Every record row as the database file holds it.
    pub fn stored_rows(&self) -> Result<Vec<RawRow>, SimError> {
        Ok(read_raw_rows(&self.db_path)?)
    }

    /// The database as a labelled view.
    pub fn database_view(&self) -> Result<DatabaseView, SimError> {
        Ok(DatabaseView {
            label: if self.cfg.encrypted {
                "database (encrypted at rest)".into()
            } else {
                "database (unencrypted, for comparison)".into()
            },
            encrypted: self.cfg.encrypted,
            rows: self.stored_rows()?,
        })
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, SimError> {
        Ok(self.rt.block_on(self.service.committer.audit_log())?)
    }
}

/// The issue's scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    EscrowWhenBitLockerEnabled,
    HttpsDownFailoverToHttp,
    UntrustedCertificate,
    OrganisationRootAdded,
    HelpdeskRecoveryRotates,
    EncryptedVersusUnencrypted,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::EscrowWhenBitLockerEnabled,
        Scenario::HttpsDownFailoverToHttp,
        Scenario::UntrustedCertificate,
        Scenario::OrganisationRootAdded,
        Scenario::HelpdeskRecoveryRotates,
        Scenario::EncryptedVersusUnencrypted,
    ];

    /// The stable name a scenario file uses.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::EscrowWhenBitLockerEnabled => "escrow-when-bitlocker-enabled",
            Scenario::HttpsDownFailoverToHttp => "https-mp-down-failover-to-http",
            Scenario::UntrustedCertificate => "untrusted-server-certificate",
            Scenario::OrganisationRootAdded => "organisation-root-added",
            Scenario::HelpdeskRecoveryRotates => "helpdesk-recovery-rotates",
            Scenario::EncryptedVersusUnencrypted => "encrypted-versus-unencrypted-database",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One thing a scenario expects, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expectation {
    pub what: String,
    pub held: bool,
}

/// Everything a scenario run produced, deterministic for its seed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub events: Vec<LabEvent>,
    /// The device's `BitLockerManagementHandler.log` (CMTrace lines).
    pub handler_log: Vec<String>,
    pub databases: Vec<DatabaseView>,
    pub audit: Vec<AuditEntry>,
    pub expectations: Vec<Expectation>,
}

impl ScenarioReport {
    pub fn all_held(&self) -> bool {
        self.expectations.iter().all(|e| e.held)
    }
}

const DEVICE: &str = "PC0042";
const MP1: &str = "mp1.contoso.com";
const MP2: &str = "mp2.contoso.com";

struct Run {
    lab: RecoveryLab,
    expectations: Vec<Expectation>,
    extra_databases: Vec<DatabaseView>,
}

impl Run {
    fn new(seed: u64, encrypted: bool) -> Result<Self, SimError> {
        Ok(Self {
            lab: RecoveryLab::new(LabConfig {
                seed,
                encrypted,
                ..LabConfig::default()
            })?,
            expectations: Vec::new(),
            extra_databases: Vec::new(),
        })
    }
    fn expect(&mut self, what: &str, held: bool) {
        self.expectations.push(Expectation {
            what: what.to_owned(),
            held,
        });
    }
    fn finish(self, scenario: Scenario, seed: u64) -> Result<ScenarioReport, SimError> {
        let mut databases = vec![self.lab.database_view()?];
        databases.extend(self.extra_databases);
        Ok(ScenarioReport {
            scenario: scenario.name(),
            seed,
            events: self.lab.events().to_vec(),
            handler_log: self.lab.handler_log(DEVICE).unwrap_or_default(),
            databases,
            audit: self.lab.audit_log()?,
            expectations: self.expectations,
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs one of the issue's scenarios with `seed`.
pub fn run(scenario: Scenario, seed: u64) -> Result<ScenarioReport, SimError> {
    let mut r = Run::new(seed, true)?;
    match scenario {
        Scenario::EscrowWhenBitLockerEnabled => {
            let mp = r.lab.add_management_point(MP1, MpFace::Https)?;
            r.lab.add_device(DEVICE, &[mp], Trust::OrganisationRoot)?;
            let enabled = r.lab.enable_bitlocker(DEVICE)?;
            let s = r.lab.escrow(DEVICE)?;
            r.expect(
                "the recovery information is escrowed over HTTPS",
                s.escrowed,
            );
            let rows = r.lab.stored_rows()?;
            r.expect(
                "three records: recovery password, key package, TPM owner-auth hash",
                rows.len() == 3,
            );
            r.expect(
                "the stored bytes are not the recovery password",
                !rows
                    .iter()
                    .any(|row| contains(&row.material, enabled.recovery_password.as_bytes())),
            );
            let log = r.lab.handler_log(DEVICE)?;
            r.expect(
                "the handler log shows Checking for Recovery Service at https://mp1.contoso.com",
                log.iter().any(|l| {
                    l.contains("Checking for Recovery Service at https://mp1.contoso.com/")
                }),
            );
        }
        Scenario::HttpsDownFailoverToHttp => {
            let https = r.lab.add_management_point(MP1, MpFace::Https)?;
            let http = r.lab.add_management_point(MP2, MpFace::Http)?;
            r.lab.set_management_point(MP1, MpFace::Down)?;
            r.lab
                .add_device(DEVICE, &[http, https], Trust::OrganisationRoot)?;
            r.lab.enable_bitlocker(DEVICE)?;
            let s = r.lab.escrow(DEVICE)?;
            r.expect("escrow fails", !s.escrowed);
            r.expect(
                "the failure is reported as a failover to an HTTP management point",
                s.failed_over_to_http,
            );
            r.expect(
                "the HTTPS management point was tried first, with retries",
                s.failures
                    .first()
                    .is_some_and(|(u, _)| u.starts_with("https://"))
                    && s.failures.len() == r.lab.cfg.retry.attempts_per_mp as usize + 1,
            );
            r.expect(
                "nothing reached the database",
                r.lab.stored_rows()?.is_empty(),
            );
        }
        Scenario::UntrustedCertificate | Scenario::OrganisationRootAdded => {
            let mp = r.lab.add_management_point(MP1, MpFace::Https)?;
            r.lab.add_device(DEVICE, &[mp], Trust::PublicRootsOnly)?;
            r.lab.enable_bitlocker(DEVICE)?;
            let s = r.lab.escrow(DEVICE)?;
            r.expect("escrow fails", !s.escrowed);
            r.expect(
                "clearly: the server certificate is not trusted (UnknownIssuer), not retried",
                s.untrusted_certificate
                    && s.failures.len() == 1
                    && s.failures[0].1.contains("UnknownIssuer"),
            );
            if scenario == Scenario::OrganisationRootAdded {
                r.lab.advance(60 * 60 * 1000);
                r.lab.set_trust(DEVICE, Trust::OrganisationRoot)?;
                let s = r.lab.escrow(DEVICE)?;
                r.expect("with the organisation's root, escrow works", s.escrowed);
                r.expect("three records stored", r.lab.stored_rows()?.len() == 3);
            }
        }
        Scenario::HelpdeskRecoveryRotates => helpdesk_recovery(&mut r)?,
        Scenario::EncryptedVersusUnencrypted => {
            let mut plain = Run::new(seed, false)?;
            let mut passwords = Vec::new();
            for run in [&mut r, &mut plain] {
                let mp = run.lab.add_management_point(MP1, MpFace::Https)?;
                run.lab.add_device(DEVICE, &[mp], Trust::OrganisationRoot)?;
                passwords.push(run.lab.enable_bitlocker(DEVICE)?.recovery_password);
                let escrowed = run.lab.escrow(DEVICE)?.escrowed;
                run.expect("escrowed", escrowed);
            }
            let enc = r.lab.stored_rows()?;
            let clear = plain.lab.stored_rows()?;
            let pw = passwords[0].as_bytes();
            r.expect(
                "same seed, same recovery password on both devices",
                passwords[0] == passwords[1],
            );
            r.expect(
                "the unencrypted database holds the recovery password as is",
                clear.iter().any(|row| row.material == pw),
            );
            r.expect(
                "the encrypted database does not (AES-256-GCM, 12-byte nonce, 16-byte tag)",
                !enc.iter().any(|row| contains(&row.material, pw))
                    && enc
                        .iter()
                        .all(|row| row.sealing == 1 && row.nonce.len() == 12),
            );
            r.expect(
                "the stored bytes differ row by row",
                enc.len() == clear.len()
                    && enc
                        .iter()
                        .zip(&clear)
                        .all(|(a, b)| a.material != b.material),
            );
            r.extra_databases.push(plain.lab.database_view()?);
        }
    }
    r.finish(scenario, seed)
}

fn helpdesk_recovery(r: &mut Run) -> Result<(), SimError> {
    let mp = r.lab.add_management_point(MP1, MpFace::Https)?;
    r.lab.add_device(DEVICE, &[mp], Trust::OrganisationRoot)?;
    r.lab
        .add_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)?;
    let enabled = r.lab.enable_bitlocker(DEVICE)?;
    let first = r.lab.escrow(DEVICE)?;
    r.expect("escrowed", first.escrowed);
    // A day later the user is at the recovery screen and reads out the key ID.
    r.lab.advance(24 * 60 * 60 * 1000);
    let body = RecoverBody {
        key_id: enabled.key_id.short().to_owned(),
        kind: crate::record::MaterialKind::RecoveryPassword,
        role: None,
        reason: "user locked out after a firmware update, ticket 4711".into(),
        device: None,
        volume: None,
    };
    let answer = r.lab.helpdesk_recover("CONTOSO\\helpdesk1", body)?;
    let disclosed = answer.as_ref().ok().and_then(|a| a.text.clone());
    r.expect(
        "the helpdesk gets the recovery password by the key ID's first 8 characters",
        disclosed.as_deref() == Some(enabled.recovery_password.as_str()),
    );
    r.expect(
        "the disclosure is marked for rotation",
        answer.as_ref().is_ok_and(|a| a.rotation_requested),
    );
    let unlocked = match &disclosed {
        Some(pw) => r.lab.unlock_with_recovery_password(DEVICE, pw)?,
        None => false,
    };
    r.expect("the disclosed password unlocks the volume", unlocked);
    // At its next contact the agent learns of the disclosure, rotates and re-escrows.
    r.lab.advance(15 * 60 * 1000);
    let next = r.lab.escrow(DEVICE)?;
    let rotated = next.rotations.first().cloned();
    r.expect(
        "the agent rotated the disclosed password and re-escrowed the new one",
        rotated.as_ref().is_some_and(|rot| {
            rot.old == enabled.key_id && rot.reason == RotationReason::Disclosed
        }) && next.re_escrowed == Some(true),
    );
    if let Some(pw) = &disclosed {
        let still = r.lab.unlock_with_recovery_password(DEVICE, pw)?;
        r.expect(
            "the disclosed password no longer unlocks the volume",
            !still,
        );
    }
    let rows = r.lab.stored_rows()?;
    r.expect(
        "the old records are superseded (retired), the new ones current",
        rows.iter()
            .filter(|row| row.key_id == enabled.key_id.as_str())
            .all(|row| row.retired_at.is_some())
            && rotated.as_ref().is_some_and(|rot| {
                rows.iter()
                    .any(|row| row.key_id == rot.new.as_str() && row.retired_at.is_none())
            }),
    );
    if let Some(Rotation { new, .. }) = &rotated {
        r.lab.advance(60 * 1000);
        let body = RecoverBody {
            key_id: new.as_str().to_owned(),
            kind: crate::record::MaterialKind::RecoveryPassword,
            role: None,
            reason: "verify the rotated password was escrowed, ticket 4711".into(),
            device: None,
            volume: None,
        };
        let answer = r.lab.helpdesk_recover("CONTOSO\\helpdesk1", body)?;
        let pw = answer.as_ref().ok().and_then(|a| a.text.clone());
        let unlocks = match &pw {
            Some(pw) => r.lab.unlock_with_recovery_password(DEVICE, pw)?,
            None => false,
        };
        r.expect("the re-escrowed password unlocks the volume", unlocks);
    }
    r.expect(
        "every read is audited (who, when, which key, why)",
        r.lab
            .audit_log()?
            .iter()
            .filter(|a| a.outcome == "disclosed")
            .count()
            == 2,
    );
    Ok(())
}

#[cfg(test)]
mod tests;
