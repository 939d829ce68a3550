//! The recovery service on a management point: an axum application served over rustls, and a
//! plain-HTTP listener that refuses escrow.
//!
//! # Client authentication: a device token issued at enrolment
//!
//! Each device receives a random 256-bit bearer token when it enrols ([`Store::enrol_device`]);
//! the service stores only its SHA-256 and maps it to the device ID, and a request may write
//! only records whose device is the token's device. We chose tokens over mutual TLS with device
//! certificates because the seed's own point is that the recovery service must work when only
//! the IIS website is HTTPS-enabled (ConfigMgr 2002 and later) or the site uses enhanced HTTP,
//! both of which exist precisely so that clients need no PKI client certificate; ConfigMgr
//! itself authenticates such clients with tokens it issues. The token travels only inside TLS
//! (the plain listener never reads it), re-enrolment revokes the old token, and a stolen token
//! lets its thief write that one device's records but never read any.
//!
//! Connections are generic over `AsyncRead + AsyncWrite`, so the same code serves TCP sockets
//! and, in the simulator, in-memory streams; TLS is real in both.
//!
//! [`Store::enrol_device`]: crate::store::Store::enrol_device

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::committer::{CommitError, GroupCommitter};
use crate::record::DeviceId;
use crate::store::{StoreError, token_digest};
use crate::wire::{
    ESCROW_PATH, ErrorBody, EscrowBody, EscrowReply, MAX_RECORDS_PER_REQUEST, SERVICE_PATH,
    WireError,
};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// A TLS handshake that takes longer is dropped (slow-loris protection).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate or key: {0}")]
    Pem(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The source of `now` (milliseconds since the Unix epoch): the wall clock for a real server,
/// the virtual clock in a simulation.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock, for real servers.
pub fn wall_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// Token digests of enrolled devices, kept in memory so that authentication does not queue
/// behind the store thread.
#[derive(Clone, Default)]
pub struct DeviceRegistry(Arc<RwLock<BTreeMap<[u8; 32], DeviceId>>>);

impl DeviceRegistry {
    pub fn from_digests(entries: Vec<([u8; 32], DeviceId)>) -> Self {
        Self(Arc::new(RwLock::new(entries.into_iter().collect())))
    }
    /// Replaces the device's previous token (re-enrolment revokes it).
    pub fn insert(&self, digest: [u8; 32], device: DeviceId) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, d| *d != device);
        map.insert(digest, device);
    }
    pub fn device_for(&self, token: &str) -> Option<DeviceId> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&token_digest(token)).cloned()
    }
}

/// What the HTTPS handlers share.
#[derive(Clone)]
pub struct RecoveryService {
    pub committer: GroupCommitter,
    pub devices: DeviceRegistry,
    pub clock: Clock,
}

impl RecoveryService {
    /// Enrols a device through the running service and returns its token.
    pub async fn enrol(&self, device: DeviceId) -> Result<crate::store::DeviceToken, CommitError> {
        let token = self.committer.enrol(device.clone(), (self.clock)()).await?;
        self.devices.insert(token_digest(&token.0), device);
        Ok(token)
    }
}

fn refuse(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: error.into(),
            detail: detail.into(),
        }),
    )
        .into_response()
}

/// The HTTPS application.
pub fn https_router(service: RecoveryService) -> Router {
    Router::new()
        .route(SERVICE_PATH, get(probe))
        .route(ESCROW_PATH, post(escrow))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(service)
}

async fn probe() -> &'static str {
    "nulab recovery service"
}

async fn escrow(
    State(svc): State<RecoveryService>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(device) = token.and_then(|t| svc.devices.device_for(t)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a device token issued at enrolment is required",
        );
    };
    let parsed: EscrowBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    let records = match to_records(parsed) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    if let Some(foreign) = records.iter().find(|r| r.id.device != device) {
        return refuse(
            StatusCode::FORBIDDEN,
            "not-your-record",
            format!(
                "device {device} may not write a record of device {}",
                foreign.id.device
            ),
        );
    }
    let req = crate::store::EscrowRequest { device, records };
    match svc.committer.escrow(req, (svc.clock)()).await {
        Ok(receipt) => (StatusCode::OK, Json(EscrowReply::from(receipt))).into_response(),
        Err(CommitError::Store(StoreError::NotYourRecord { .. })) => refuse(
            StatusCode::FORBIDDEN,
            "not-your-record",
            "a device may write only its own records",
        ),
        Err(CommitError::Store(StoreError::Record(e))) => {
            refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string())
        }
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-durable",
            format!("the escrow was not stored: {e}"),
        ),
    }
}

fn to_records(body: EscrowBody) -> Result<Vec<crate::record::EscrowRecord>, WireError> {
    if body.records.is_empty() {
        return Err(WireError::NoRecords);
    }
    if body.records.len() > MAX_RECORDS_PER_REQUEST {
        return Err(WireError::TooManyRecords(body.records.len()));
    }
    body.records.into_iter().map(|r| r.into_record()).collect()
}

/// The plain-HTTP face of a management point: every request under the recovery service's path
/// is refused the way IIS refuses a site that requires SSL (403.4), before any body is read, so
/// that key material sent by a careless client is never processed.
pub fn plain_http_router() -> Router {
    async fn https_required() -> Response {
        refuse(
            StatusCode::FORBIDDEN,
            "https-required",
            "403.4 SSL required: the recovery service accepts escrow over HTTPS only",
        )
    }
    Router::new()
        .route(SERVICE_PATH, axum::routing::any(https_required))
        .route(ESCROW_PATH, axum::routing::any(https_required))
        .layer(DefaultBodyLimit::max(0))
}

/// A rustls server configuration from a certificate chain and its key.
pub fn tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Reads a PEM certificate chain and a PEM private key.
pub fn load_pem(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(chain)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Pem(format!("{}: {e}", chain.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Pem(format!("{}: {e}", key.display())))?;
    Ok((certs, key))
}

/// Serves one connection: the TLS handshake, then HTTP/1.1 with keep-alive.
pub async fn serve_tls_connection<S>(stream: S, acceptor: TlsAcceptor, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
        return; // a failed or slow handshake: the client sees the TLS alert or a closed socket
    };
    serve_http_connection(tls, app).await;
}

/// Serves HTTP/1.1 on an already established stream (plain or TLS).
pub async fn serve_http_connection<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await; // a connection error concerns that client only
}

/// Accepts HTTPS connections forever.
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // EMFILE and the like
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_tls_connection(stream, acceptor.clone(), app.clone()));
    }
}

/// Accepts plain-HTTP connections forever (they are refused escrow).
pub async fn serve_plain_http(listener: TcpListener) {
    let app = plain_http_router();
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(serve_http_connection(stream, app.clone()));
    }
}

/// Everything a recovery service needs to start.
pub struct ServiceConfig {
    pub database: std::path::PathBuf,
    /// The at-rest key file; `None` is the unencrypted comparison mode.
    pub key_file: Option<std::path::PathBuf>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub cert_key: PrivateKeyDer<'static>,
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
}

/// A started service: its bound addresses and its shared state.
pub struct RunningService {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub service: RecoveryService,
}

/// Opens the store, binds the listeners and spawns them on the current tokio runtime.
pub async fn start(cfg: ServiceConfig) -> Result<RunningService, ServeError> {
    let store = crate::store::Store::open_with_key_file(&cfg.database, cfg.key_file.as_deref())?;
    let devices = DeviceRegistry::from_digests(store.device_tokens()?);
    let committer = GroupCommitter::spawn(store)?;
    let service = RecoveryService {
        committer,
        devices,
        clock: wall_clock(),
    };
    let tls = tls_config(cfg.cert_chain, cfg.cert_key)?;
    let https = TcpListener::bind(cfg.https).await?;
    let https_addr = https.local_addr()?;
    tokio::spawn(serve_https(https, tls, https_router(service.clone())));
    let http_addr = match cfg.http {
        Some(a) => {
            let l = TcpListener::bind(a).await?;
            let addr = l.local_addr()?;
            tokio::spawn(serve_plain_http(l));
            Some(addr)
        }
        None => None,
    };
    Ok(RunningService {
        https: https_addr,
        http: http_addr,
        service,
    })
}
