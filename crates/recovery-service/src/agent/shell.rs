//! The agent's tokio shell: dials a management point, runs real TLS (rustls, trusting only the
//! configured roots), speaks HTTP/1.1 with hyper, and feeds the outcome back to
//! [`EscrowRun`]. The [`Dialer`] is the one seam: TCP here, in-memory streams in the simulator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, http};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::time_provider::TimeProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{
    ContactFailure, ContactResult, EscrowRun, LogLine, ManagementPoint, RetryPolicy, RunOutcome,
    Step,
};
use crate::protected_volume::{ProtectedVolume, ProtectedVolumeError, Rotation};
use crate::record::{EscrowRecord, KeyId};
use crate::store::{DeviceToken, KeyHolder, OperatorToken};
use crate::wire::{
    AuditReply, ESCROW_PATH, ErrorBody, EscrowBody, EscrowReply, HELPDESK_AUDIT_PATH,
    HELPDESK_RECOVER_PATH, RecoverBody, RecoverReply, SERVICE_PATH, WireRecord,
};

/// Opens a byte stream to a management point.
pub trait Dialer: Send + Sync {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// TCP with a connect timeout.
#[derive(Debug, Clone, Copy)]
pub struct TcpDialer {
    pub connect_timeout: Duration,
}

impl Default for TcpDialer {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Dialer for TcpDialer {
    type Stream = TcpStream;
    async fn dial(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        let s = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// The roots the client trusts: the public CAs its operating system ships, plus the
/// organisation's root when policy adds it. Nothing else: no "accept any certificate" mode.
pub fn client_tls(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_tls_at(roots, None)
}

/// [`client_tls`] judging certificate validity at the time `time` gives (the simulator's
/// clock), or the system's when `None`.
pub fn client_tls_at(
    roots: &[CertificateDer<'static>],
    time: Option<Arc<dyn TimeProvider>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_tls_with(roots, time, None)
}

/// A device's PKI client-authentication certificate (an HTTPS management point asks for it).
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// [`client_tls_at`] presenting `client` when the server asks for a certificate.
pub fn client_tls_with(
    roots: &[CertificateDer<'static>],
    time: Option<Arc<dyn TimeProvider>>,
    client: Option<&ClientCertificate>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match time {
        Some(t) => rustls::ClientConfig::builder_with_details(provider, t),
        None => rustls::ClientConfig::builder_with_provider(provider),
    };
    let builder = builder
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store);
    let mut cfg = match client {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn classify_io(e: std::io::Error) -> ContactFailure {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => classify_tls(tls),
        None => ContactFailure::Unreachable(e.to_string()),
    }
}

/// A TLS failure by its rustls error value.
fn classify_tls(tls: &rustls::Error) -> ContactFailure {
    match tls {
        rustls::Error::InvalidCertificate(c) => {
            ContactFailure::UntrustedCertificate(format!("{c:?}"))
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            ContactFailure::ClientCertificateRequired(tls.to_string())
        }
        other => ContactFailure::Tls(other.to_string()),
    }
}

/// One keep-alive HTTPS connection to a recovery service (the agent uses one per contact; the
/// benchmark reuses it).
pub struct EscrowConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl EscrowConnection {
    /// Dials and completes the TLS handshake against the configured roots.
    pub async fn connect<D: Dialer>(
        dialer: &D,
        mp: &ManagementPoint,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ContactFailure> {
        let stream = dialer
            .dial(mp.host(), mp.port())
            .await
            .map_err(|e| ContactFailure::Unreachable(e.to_string()))?;
        let name = ServerName::try_from(mp.host().to_owned())
            .map_err(|e| ContactFailure::Tls(format!("server name {}: {e}", mp.host())))?;
        let tls: TlsStream<D::Stream> = TlsConnector::from(tls)
            .connect(name, stream)
            .await
            .map_err(classify_io)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ContactFailure::Unreachable(e.to_string()))?;
        tokio::spawn(conn); // drives the connection; ends when the sender is dropped
        Ok(Self {
            sender,
            authority: format!("{}:{}", mp.host(), mp.port()),
        })
    }

    /// One request and its whole reply.
    async fn call(
        &mut self,
        method: http::Method,
        path: &str,
        bearer: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Bytes), ContactFailure> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {bearer}"));
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ContactFailure::Tls(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| ContactFailure::Unreachable(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| ContactFailure::Unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ContactFailure::Unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Escrows records and waits for the service's acknowledgement (sent after its commit).
    pub async fn escrow(
        &mut self,
        token: &DeviceToken,
        records: &[EscrowRecord],
    ) -> Result<EscrowReply, ContactFailure> {
        let body = EscrowBody {
            records: records.iter().map(WireRecord::from_record).collect(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| ContactFailure::Tls(e.to_string()))?;
        let (status, bytes) = self
            .call(http::Method::POST, ESCROW_PATH, &token.0, Some(json))
            .await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ContactFailure::Refused {
                status: status.as_u16(),
                error: "bad-reply".into(),
                detail: e.to_string(),
            })
        } else {
            Err(refusal(status, &bytes).0)
        }
    }

    /// Helpdesk retrieval (audited by the service before it answers).
    pub async fn recover(
        &mut self,
        token: &OperatorToken,
        body: &RecoverBody,
    ) -> Result<RecoverReply, HelpdeskRefusal> {
        let json = serde_json::to_vec(body)
            .map_err(|e| HelpdeskRefusal::Contact(ContactFailure::Tls(e.to_string())))?;
        let (status, bytes) = self
            .call(
                http::Method::POST,
                HELPDESK_RECOVER_PATH,
                &token.0,
                Some(json),
            )
            .await
            .map_err(HelpdeskRefusal::Contact)?;
        helpdesk_reply(status, &bytes)
    }

    /// The audit log (auditors and administrators).
    pub async fn audit_log(
        &mut self,
        token: &OperatorToken,
    ) -> Result<AuditReply, HelpdeskRefusal> {
        let (status, bytes) = self
            .call(http::Method::GET, HELPDESK_AUDIT_PATH, &token.0, None)
            .await
            .map_err(HelpdeskRefusal::Contact)?;
        helpdesk_reply(status, &bytes)
    }
}

fn refusal(
    status: http::StatusCode,
    bytes: &[u8],
) -> (ContactFailure, (Vec<KeyId>, Vec<KeyHolder>)) {
    let err: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
    let candidates = err
        .as_ref()
        .map(|e| (e.candidates.clone(), e.holders.clone()))
        .unwrap_or_default();
    (
        ContactFailure::Refused {
            status: status.as_u16(),
            error: err.as_ref().map_or_else(String::new, |e| e.error.clone()),
            detail: err.map_or_else(
                || String::from_utf8_lossy(bytes).chars().take(200).collect(),
                |e| e.detail,
            ),
        },
        candidates,
    )
}

fn helpdesk_reply<T: serde::de::DeserializeOwned>(
    status: http::StatusCode,
    bytes: &[u8],
) -> Result<T, HelpdeskRefusal> {
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| {
            HelpdeskRefusal::Contact(ContactFailure::Refused {
                status: status.as_u16(),
                error: "bad-reply".into(),
                detail: e.to_string(),
            })
        });
    }
    match refusal(status, bytes) {
        (
            ContactFailure::Refused {
                status,
                error,
                detail,
            },
            (candidates, holders),
        ) => Err(HelpdeskRefusal::Refused {
            status,
            error,
            detail,
            candidates,
            holders,
        }),
        (other, _) => Err(HelpdeskRefusal::Contact(other)),
    }
}

/// Why a helpdesk request got no recovery information.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelpdeskRefusal {
    #[error("{0}")]
    Contact(ContactFailure),
    /// The service answered with an error; `candidates` lists the whole key IDs when the
    /// prefix was ambiguous (`error` is then `ambiguous`), `holders` the devices holding a key
    /// ID held by several (`error` is then `held-by-several-devices`).
    #[error("the service refused ({status} {error}): {detail}")]
    Refused {
        status: u16,
        error: String,
        detail: String,
        candidates: Vec<KeyId>,
        holders: Vec<KeyHolder>,
    },
}

/// Probes a plain-HTTP management point's recovery service (a GET carrying no material) to
/// report what it says; the agent never escrows over HTTP.
pub async fn probe_plain_http<D: Dialer>(dialer: &D, mp: &ManagementPoint) -> ContactFailure {
    let attempt = async {
        let stream = dialer.dial(mp.host(), mp.port()).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = Request::get(SERVICE_PATH)
            .header(HOST, format!("{}:{}", mp.host(), mp.port()))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().as_u16())
    };
    ContactFailure::HttpsRequired {
        status: tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten(),
    }
}

/// What the agent is configured with.
pub struct AgentConfig {
    pub management_points: Vec<ManagementPoint>,
    pub roots: Vec<CertificateDer<'static>>,
    /// The device's PKI client-authentication certificate, if it has one.
    pub client_certificate: Option<ClientCertificate>,
    pub token: DeviceToken,
    pub policy: RetryPolicy,
    /// Where `BitLockerManagementHandler.log` is appended, if anywhere.
    pub log_file: Option<PathBuf>,
}

/// What one run did.
#[derive(Debug)]
pub struct AgentReport {
    pub outcome: RunOutcome,
    pub log: Vec<LogLine>,
}

/// The agent's time: `now` in milliseconds since the Unix epoch, and waiting for a backoff.
/// The wall clock and tokio's timer for real; the virtual clock in the simulator, where waiting
/// moves the clock instead of sleeping.
pub trait AgentClock: Send + Sync {
    fn now_ms(&self) -> i64;
    fn wait_until(&self, at_ms: i64) -> impl Future<Output = ()> + Send;
    /// The time the TLS client judges certificate validity by (`None`: the system's).
    fn tls_time(&self) -> Option<Arc<dyn TimeProvider>> {
        None
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl AgentClock for WallClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
    async fn wait_until(&self, at_ms: i64) {
        let ms = u64::try_from(at_ms.saturating_sub(self.now_ms())).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Escrows `records` through the first management point that takes them (wall clock), and
/// appends the run's lines to the configured log file.
pub async fn escrow<D: Dialer>(
    cfg: &AgentConfig,
    dialer: &D,
    records: &[EscrowRecord],
) -> Result<AgentReport, rustls::Error> {
    let report = escrow_at(cfg, dialer, &WallClock, records).await?;
    if let Some(path) = &cfg.log_file {
        append_log(path, &report.log);
    }
    Ok(report)
}

/// One escrow run on `clock` (the log file is the caller's business).
pub async fn escrow_at<D: Dialer, C: AgentClock>(
    cfg: &AgentConfig,
    dialer: &D,
    clock: &C,
    records: &[EscrowRecord],
) -> Result<AgentReport, rustls::Error> {
    let tls = client_tls_with(
        &cfg.roots,
        clock.tls_time(),
        cfg.client_certificate.as_ref(),
    )?;
    let mut run = EscrowRun::new(&cfg.management_points, cfg.policy);
    loop {
        let now = clock.now_ms();
        match run.poll(now) {
            Step::Finished => break,
            Step::WaitUntil(t) => clock.wait_until(t).await,
            Step::Contact {
                mp, send_material, ..
            } => {
                let result = if send_material {
                    match EscrowConnection::connect(dialer, &mp, tls.clone()).await {
                        Ok(mut c) => match c.escrow(&cfg.token, records).await {
                            Ok(reply) => ContactResult::Escrowed(reply),
                            Err(f) => ContactResult::Failed(f),
                        },
                        Err(f) => ContactResult::Failed(f),
                    }
                } else {
                    ContactResult::Failed(probe_plain_http(dialer, &mp).await)
                };
                run.on_contact(clock.now_ms(), result);
            }
        }
    }
    let log = run.log().to_vec();
    let outcome = run.outcome().cloned().unwrap_or_else(|| {
        RunOutcome::Failed(super::EscrowFailure {
            attempts: Vec::new(),
            failed_over_to_http: false,
        })
    });
    Ok(AgentReport { outcome, log })
}

/// Why an escrow cycle for a volume could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CycleError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Volume(#[from] ProtectedVolumeError),
}

/// What one escrow cycle of a volume did.
#[derive(Debug)]
pub struct VolumeEscrowReport {
    /// The first run's outcome (the escrow of what the volume holds).
    pub outcome: RunOutcome,
    /// Rotations carried out because the service asked for them.
    pub rotations: Vec<Rotation>,
    /// The re-escrow of the rotated passwords, if there was one.
    pub re_escrow: Option<RunOutcome>,
    /// Every handler-log line of the cycle, in order.
    pub log: Vec<LogLine>,
}

impl VolumeEscrowReport {
    /// Escrowed, and every requested rotation re-escrowed.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, RunOutcome::Escrowed { .. })
            && self
                .re_escrow
                .as_ref()
                .is_none_or(|o| matches!(o, RunOutcome::Escrowed { .. }))
    }
}

/// The agent's cycle for one volume: escrow what it holds; if the service says a recovery
/// password was disclosed, rotate it on the volume and re-escrow the new one (which names the
/// old one it replaces, so that the service retires it).
pub async fn escrow_volume<D: Dialer, C: AgentClock>(
    cfg: &AgentConfig,
    dialer: &D,
    clock: &C,
    volume: &mut ProtectedVolume,
    rng: &mut dyn rand_core::CryptoRngCore,
) -> Result<VolumeEscrowReport, CycleError> {
    let records = volume.records()?;
    let first = escrow_at(cfg, dialer, clock, &records).await?;
    let mut log = first.log;
    let mut rotations = Vec::new();
    let mut re_records = Vec::new();
    if let RunOutcome::Escrowed { reply, .. } = &first.outcome {
        let name = volume.name().clone();
        for r in reply.rotate.iter().filter(|r| r.volume == name) {
            let (rotation, records) = volume.rotate(&r.key_id, r.reason, rng)?;
            let text = match &rotation {
                Some(rot) => format!(
                    "Rotated recovery password {} on volume {}: new key ID {}",
                    rot.old,
                    volume.name(),
                    rot.new
                ),
                None => format!(
                    "Recovery password {} is no longer on volume {}: re-escrowing the current one",
                    r.key_id,
                    volume.name()
                ),
            };
            log.push(LogLine {
                at_ms: clock.now_ms(),
                severity: super::Severity::Info,
                text,
            });
            rotations.extend(rotation);
            re_records.extend(records);
        }
    }
    let re_escrow = if re_records.is_empty() {
        None
    } else {
        let second = escrow_at(cfg, dialer, clock, &re_records).await?;
        log.extend(second.log);
        Some(second.outcome)
    };
    if let Some(path) = &cfg.log_file {
        append_log(path, &log);
    }
    Ok(VolumeEscrowReport {
        outcome: first.outcome,
        rotations,
        re_escrow,
        log,
    })
}

fn append_log(path: &std::path::Path, lines: &[LogLine]) {
    use std::io::Write as _;
    // The log is a diagnostic: failing to write it must not fail the escrow.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        for l in lines {
            let _ = writeln!(f, "{}", l.to_cmtrace(std::process::id()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: the refusal for want of a client certificate is the TLS alert's value
    /// (inside the I/O error tokio-rustls returns), not a word in the error's text.
    #[test]
    fn a_certificate_required_alert_is_its_own_failure() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert!(matches!(
            classify_io(io(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            ))),
            ContactFailure::ClientCertificateRequired(_)
        ));
        assert!(matches!(
            classify_io(io(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            ))),
            ContactFailure::Tls(_)
        ));
        // Text that merely mentions it is another TLS failure.
        assert!(matches!(
            classify_io(io(rustls::Error::General("CertificateRequired".into()))),
            ContactFailure::Tls(_)
        ));
        assert!(matches!(
            classify_io(std::io::Error::other("CertificateRequired")),
            ContactFailure::Unreachable(_)
        ));
    }
}
