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
use crate::record::{DeviceId, KeyIdQuery};
use crate::store::{HelpdeskRequest, Operator, StoreError, token_digest};
use crate::wire::{
    AuditReply, ESCROW_PATH, ErrorBody, EscrowBody, EscrowReply, HELPDESK_AUDIT_PATH,
    HELPDESK_RECOVER_PATH, MAX_RECORDS_PER_REQUEST, RecoverBody, RecoverReply, SERVICE_PATH,
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
    /// Moves `store` onto its group-commit thread and loads the enrolled devices' token
    /// digests; `clock` stamps every record and audit line.
    pub fn from_store(store: crate::store::Store, clock: Clock) -> Result<Self, ServeError> {
        let devices = DeviceRegistry::from_digests(store.device_tokens()?);
        let committer = GroupCommitter::spawn(store)?;
        Ok(Self {
            committer,
            devices,
            clock,
        })
    }

    /// Creates (or re-issues) a helpdesk operator account and returns its token.
    pub async fn enrol_operator(
        &self,
        operator: &str,
        role: crate::store::HelpdeskRole,
    ) -> Result<crate::store::OperatorToken, CommitError> {
        let now = (self.clock)();
        let operator = operator.to_owned();
        self.committer
            .with_store(move |s| s.enrol_operator(&operator, role, now))
            .await
    }

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
            candidates: Vec::new(),
        }),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl RecoveryService {
    /// The device a token belongs to: from memory, else from the store (a device enrolled by
    /// `nulab recovery enrol` while the service runs), which then caches it.
    async fn device(&self, token: Option<&str>) -> Option<DeviceId> {
        let token = token?;
        if let Some(d) = self.devices.device_for(token) {
            return Some(d);
        }
        let owned = token.to_owned();
        let found = self
            .committer
            .with_store(move |s| s.authenticate(&owned))
            .await
            .ok()
            .flatten()?;
        self.devices.insert(token_digest(token), found.clone());
        Some(found)
    }

    async fn operator(&self, token: Option<&str>) -> Result<Operator, Response> {
        let unauthenticated = || {
            refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a helpdesk operator token is required",
            )
        };
        let token = token.ok_or_else(unauthenticated)?.to_owned();
        match self
            .committer
            .with_store(move |s| s.authenticate_operator(&token))
            .await
        {
            Ok(Some(op)) => Ok(op),
            Ok(None) => Err(unauthenticated()),
            Err(e) => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )),
        }
    }
}

/// The HTTPS application.
pub fn https_router(service: RecoveryService) -> Router {
    Router::new()
        .route(SERVICE_PATH, get(probe))
        .route(ESCROW_PATH, post(escrow))
        .route(HELPDESK_RECOVER_PATH, post(recover))
        .route(HELPDESK_AUDIT_PATH, get(audit))
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
    let Some(device) = svc.device(bearer(&headers)).await else {
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

/// Helpdesk retrieval: the operator's account and role, the key ID (eight characters or the
/// whole ID) and a reason; the material leaves only after its audit record committed, and a
/// failed audit write refuses the read (503).
async fn recover(
    State(svc): State<RecoveryService>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let operator = match svc.operator(bearer(&headers)).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let parsed: RecoverBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    let query = match KeyIdQuery::new(&parsed.key_id) {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad-request", e.to_string()),
    };
    let role = parsed.role.unwrap_or(operator.role);
    let req = HelpdeskRequest {
        operator: operator.name,
        role,
        query,
        kind: parsed.kind,
        reason: parsed.reason,
    };
    let now = (svc.clock)();
    if role != operator.role {
        let held = operator.role;
        return match svc
            .committer
            .with_store(move |s| s.audit_refusal(&req, "refused-role-not-held", now))
            .await
        {
            Ok(_) => refuse(
                StatusCode::FORBIDDEN,
                "role-not-held",
                format!("the account holds the role {held}, not {role}"),
            ),
            Err(e) => store_refusal(e),
        };
    }
    match svc.committer.disclose(req, now).await {
        Ok(d) => (StatusCode::OK, Json(RecoverReply::from(&d))).into_response(),
        Err(e) => store_refusal(e),
    }
}

/// The audit log, for auditors and administrators.
async fn audit(State(svc): State<RecoveryService>, headers: HeaderMap) -> Response {
    let operator = match svc.operator(bearer(&headers)).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if !operator.role.may_read_audit() {
        return refuse(
            StatusCode::FORBIDDEN,
            "role-not-allowed",
            format!("role {} may not read the audit log", operator.role),
        );
    }
    match svc.committer.audit_log().await {
        Ok(entries) => (StatusCode::OK, Json(AuditReply { entries })).into_response(),
        Err(e) => store_refusal(e),
    }
}

/// How a store refusal of a helpdesk request reads on the wire.
fn store_refusal(e: CommitError) -> Response {
    let CommitError::Store(e) = e else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        );
    };
    let detail = e.to_string();
    match e {
        StoreError::Ambiguous { candidates, .. } => (
            StatusCode::CONFLICT,
            Json(ErrorBody {
                error: "ambiguous".into(),
                detail,
                candidates,
            }),
        )
            .into_response(),
        StoreError::NotFound { .. } => refuse(StatusCode::NOT_FOUND, "not-found", detail),
        StoreError::RoleNotAllowed(_) => refuse(StatusCode::FORBIDDEN, "role-not-allowed", detail),
        StoreError::BadReason | StoreError::Record(_) => {
            refuse(StatusCode::BAD_REQUEST, "bad-request", detail)
        }
        StoreError::Audit(_) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", detail)
        }
        StoreError::Seal { .. } => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity-failure",
            detail,
        ),
        _ => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail),
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
        .route(HELPDESK_RECOVER_PATH, axum::routing::any(https_required))
        .route(HELPDESK_AUDIT_PATH, axum::routing::any(https_required))
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

/// Reads every certificate of a PEM file (a chain, or the roots a client trusts).
pub fn load_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Pem(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Pem(format!(
            "{}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
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
    let service = RecoveryService::from_store(store, wall_clock())?;
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
