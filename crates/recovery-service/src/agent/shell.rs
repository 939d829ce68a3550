//! The agent's tokio shell: dials a management point, runs real TLS (rustls, trusting only the
//! configured roots), speaks HTTP/1.1 with hyper, and feeds the outcome back to
//! [`EscrowRun`]. The [`Dialer`] is the one seam: TCP here, in-memory streams in the simulator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{
    ContactFailure, ContactResult, EscrowRun, LogLine, ManagementPoint, RetryPolicy, RunOutcome,
    Step,
};
use crate::record::EscrowRecord;
use crate::store::DeviceToken;
use crate::wire::{ESCROW_PATH, ErrorBody, EscrowBody, EscrowReply, SERVICE_PATH, WireRecord};

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
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn classify_io(e: std::io::Error) -> ContactFailure {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(c) => {
                ContactFailure::UntrustedCertificate(format!("{c:?}"))
            }
            other => ContactFailure::Tls(other.to_string()),
        };
    }
    ContactFailure::Unreachable(e.to_string())
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
        let req = Request::post(ESCROW_PATH)
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {}", token.0))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
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
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ContactFailure::Refused {
                status: status.as_u16(),
                error: "bad-reply".into(),
                detail: e.to_string(),
            })
        } else {
            let err: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            Err(ContactFailure::Refused {
                status: status.as_u16(),
                error: err.as_ref().map_or_else(String::new, |e| e.error.clone()),
                detail: err.map_or_else(
                    || String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                    |e| e.detail,
                ),
            })
        }
    }
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

/// Wall-clock milliseconds since the Unix epoch (the real shell's `now`).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Escrows `records` through the first management point that takes them.
pub async fn escrow<D: Dialer>(
    cfg: &AgentConfig,
    dialer: &D,
    records: &[EscrowRecord],
) -> Result<AgentReport, rustls::Error> {
    let tls = client_tls(&cfg.roots)?;
    let mut run = EscrowRun::new(&cfg.management_points, cfg.policy);
    loop {
        let now = now_ms();
        match run.poll(now) {
            Step::Finished => break,
            Step::WaitUntil(t) => {
                let ms = u64::try_from(t.saturating_sub(now)).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
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
                run.on_contact(now_ms(), result);
            }
        }
    }
    let log = run.log().to_vec();
    if let Some(path) = &cfg.log_file {
        append_log(path, &log);
    }
    let outcome = run.outcome().cloned().unwrap_or_else(|| {
        RunOutcome::Failed(super::EscrowFailure {
            attempts: Vec::new(),
            failed_over_to_http: false,
        })
    });
    Ok(AgentReport { outcome, log })
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
