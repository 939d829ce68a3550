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
//! # Bounded resources whatever clients do
//!
//! A client holds at most what [`Limits`] allows: a TLS handshake, the headers of a request
//! (from its first byte), its body, and an idle keep-alive connection each have a time-out
//! (a watchdog per connection closes it); connections are counted per client address and in
//! total, and those over a limit are shed with a clear status (429 for one address, 503 for
//! the service) by a small, bounded shedding path. Every handler authenticates from the
//! headers before it reads a byte of the body, refuses a declared oversized body with 413
//! before hyper would send `100 Continue`, and reads the rest under a size limit and the body
//! time-out. Authentication and helpdesk look-ups read on the store's read connections
//! ([`StoreReader`]), never on the group-commit thread.
//!
//! [`Store::enrol_device`]: crate::store::Store::enrol_device
//! [`StoreReader`]: crate::store::StoreReader

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::committer::{CommitError, GroupCommitter};
use crate::record::{DeviceId, KeyIdQuery};
use crate::store::{HelpdeskRequest, Operator, StoreError, StoreReader};
use crate::wire::{
    AuditReply, ESCROW_PATH, ErrorBody, EscrowBody, EscrowReply, HELPDESK_AUDIT_PATH,
    HELPDESK_RECOVER_PATH, MAX_RECORDS_PER_REQUEST, RecoverBody, RecoverReply, SERVICE_PATH,
    WireError,
};

/// Largest request body accepted (the default of [`Limits::max_body`]).
pub const MAX_BODY: usize = 1024 * 1024;
/// A TLS handshake that takes longer is dropped (the default of
/// [`Limits::handshake_timeout`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection (it bounds a request head too: a longer one gets 431).
const READ_BUFFER: usize = 16 * 1024;
/// Connections over a limit being answered 429/503 at once; beyond it they are closed unread.
const MAX_SHEDDING: usize = 32;

/// What one client, and all of them together, may hold of the service. Every time-out closes
/// the connection; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// From the first byte of a request to its last header.
    pub header_timeout: Duration,
    /// For the whole body of a request, once its handler starts reading it.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in flight and no byte of a new one.
    pub idle_timeout: Duration,
    /// Open connections in total; more are shed with 503.
    pub max_connections: usize,
    /// Open connections from one client address; more are shed with 429.
    pub max_connections_per_address: usize,
    /// Largest request body; a larger declared one gets 413 before `100 Continue`.
    pub max_body: usize,
}

impl Limits {
    /// For the simulator, whose clients live on a virtual clock: the real time between two of
    /// their requests says nothing, so no header, body or idle time-out may close a connection
    /// (a day each, never reached); the handshake time-out is the default one.
    pub fn simulation() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        Self {
            header_timeout: DAY,
            body_timeout: DAY,
            idle_timeout: DAY,
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 64,
            max_body: MAX_BODY,
        }
    }
}

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

/// What the HTTPS handlers share.
#[derive(Clone)]
pub struct RecoveryService {
    pub committer: GroupCommitter,
    /// Read connections: authentication, helpdesk look-ups, the audit log.
    pub reader: Arc<StoreReader>,
    pub clock: Clock,
    pub limits: Limits,
    /// What starting this service did to records stored before "Encrypt recovery data in the
    /// database" was turned on, if it was just turned on for them
    /// ([`crate::store::Store::finish_turning_on_encryption`]).
    pub encryption_turned_on: Option<crate::store::EncryptionTurnedOn>,
}

impl RecoveryService {
    /// Opens read connections on `store`'s database and moves `store` onto its group-commit
    /// thread; `clock` stamps every record and audit line. Default [`Limits`]. An encrypted
    /// store opened for the first time re-encrypts what was stored in plaintext before.
    pub fn from_store(mut store: crate::store::Store, clock: Clock) -> Result<Self, ServeError> {
        let encryption_turned_on = store.finish_turning_on_encryption(clock())?;
        let reader = Arc::new(store.reader()?);
        let committer = GroupCommitter::spawn(store)?;
        Ok(Self {
            committer,
            reader,
            clock,
            limits: Limits::default(),
            encryption_turned_on,
        })
    }

    /// The same service with other limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
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
        self.committer.enrol(device, (self.clock)()).await
    }
}

fn refuse(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: error.into(),
            detail: detail.into(),
            candidates: Vec::new(),
            holders: Vec::new(),
        }),
    )
        .into_response()
}

/// A refusal after which the connection closes (its body was not, or not wholly, read).
fn refuse_and_close(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let mut r = refuse(status, error, detail);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads a request body once its sender is authenticated: a declared length over the limit
/// is refused before a byte is read (so hyper never sends `100 Continue`), the rest is read
/// under the size limit and the body time-out.
async fn read_body(limits: &Limits, req: Request) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        refuse_and_close(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("a request body is at most {} bytes", limits.max_body),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    let body = http_body_util::Limited::new(req.into_body(), limits.max_body);
    match tokio::time::timeout(limits.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(refuse_and_close(
            StatusCode::BAD_REQUEST,
            "bad-request",
            e.to_string(),
        )),
        Err(_) => Err(refuse_and_close(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "the body did not arrive within {} ms",
                limits.body_timeout.as_millis()
            ),
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl RecoveryService {
    /// The device a token belongs to, read from the store each time on a read connection
    /// (an indexed look-up): a token revoked by re-enrolment, even by `nulab recovery enrol`
    /// while the service runs, stops working at once.
    fn device(&self, token: Option<&str>) -> Result<Option<DeviceId>, StoreError> {
        token.map_or(Ok(None), |t| self.reader.authenticate(t))
    }

    /// The operator account a token belongs to (read like [`Self::device`]).
    fn operator(&self, token: Option<&str>) -> Result<Option<Operator>, StoreError> {
        token.map_or(Ok(None), |t| self.reader.authenticate_operator(t))
    }
}

/// 401 for a missing or unknown operator token, 503 when the store cannot say.
fn operator_or_refusal(
    found: Result<Option<Operator>, StoreError>,
) -> Result<Operator, Box<Response>> {
    match found {
        Ok(Some(op)) => Ok(op),
        Ok(None) => Err(Box::new(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a helpdesk operator token is required",
        ))),
        Err(e) => Err(Box::new(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ))),
    }
}

/// The HTTPS application.
pub fn https_router(service: RecoveryService) -> Router {
    Router::new()
        .route(SERVICE_PATH, get(probe))
        .route(ESCROW_PATH, post(escrow))
        .route(HELPDESK_RECOVER_PATH, post(recover))
        .route(HELPDESK_AUDIT_PATH, get(audit))
        .with_state(service) // each handler reads its body itself, after authentication
}

async fn probe() -> &'static str {
    "nulab recovery service"
}

async fn escrow(State(svc): State<RecoveryService>, req: Request) -> Response {
    let device = match svc.device(bearer(req.headers())) {
        Ok(Some(d)) => d,
        Ok(None) => {
            // The body is left unread: hyper drains what already arrived and closes the
            // connection if more was announced.
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a device token issued at enrolment is required",
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
    };
    let body = match read_body(&svc.limits, req).await {
        Ok(b) => b,
        Err(r) => return r,
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
async fn recover(State(svc): State<RecoveryService>, req: Request) -> Response {
    let operator = match operator_or_refusal(svc.operator(bearer(req.headers()))) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let body = match read_body(&svc.limits, req).await {
        Ok(b) => b,
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
        device: parsed.device,
        volume: parsed.volume,
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
    // The look-up reads on a read connection; only the audit (and the rotation mark) goes to
    // the store thread, and the material leaves after that commit.
    let found = if req.role.may_disclose() {
        match svc.reader.lookup(&req) {
            Ok(f) => f,
            Err(e) => return store_refusal(CommitError::Store(e)),
        }
    } else {
        crate::store::Lookup::NotFound // refused on the role, audited, by finish_disclosure
    };
    match svc
        .committer
        .with_store(move |s| s.finish_disclosure(&req, found, now))
        .await
    {
        Ok(d) => (StatusCode::OK, Json(RecoverReply::from(&d))).into_response(),
        Err(e) => store_refusal(e),
    }
}

/// The audit log, for auditors and administrators.
async fn audit(State(svc): State<RecoveryService>, headers: HeaderMap) -> Response {
    let operator = match operator_or_refusal(svc.operator(bearer(&headers))) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if !operator.role.may_read_audit() {
        return refuse(
            StatusCode::FORBIDDEN,
            "role-not-allowed",
            format!("role {} may not read the audit log", operator.role),
        );
    }
    match svc.reader.audit_log() {
        Ok(entries) => (StatusCode::OK, Json(AuditReply { entries })).into_response(),
        Err(e) => store_refusal(CommitError::Store(e)),
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
                holders: Vec::new(),
            }),
        )
            .into_response(),
        StoreError::HeldBySeveralDevices { key_id, holders } => (
            StatusCode::CONFLICT,
            Json(ErrorBody {
                error: "held-by-several-devices".into(),
                detail,
                candidates: vec![key_id],
                holders,
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

/// A rustls server configuration that also requires every client to present a certificate
/// chaining to one of `client_roots` (an HTTPS management point: ConfigMgr clients present a
/// PKI client-authentication certificate), its validity judged at the time `time` gives. It
/// speaks TLS 1.2, as management points of that era do, where a client without a certificate
/// fails the handshake itself (under TLS 1.3 the refusal would arrive after the handshake and
/// read as a closed connection).
pub fn tls_config_requiring_client_certificates(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: &[CertificateDer<'static>],
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in client_roots {
        roots.add(r.clone())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ServeError::Pem(format!("client certificate verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
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
    let bytes =
        std::fs::read(path).map_err(|e| ServeError::Pem(format!("{}: {e}", path.display())))?;
    parse_pem_certificates(&path.display().to_string(), &bytes)
}

/// Every certificate of PEM text already read (a file, or standard input for the CLI's `-`);
/// `name` says where it came from in messages. Other blocks (a private key beside the chain)
/// are skipped.
pub fn parse_pem_certificates(
    name: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Pem(format!("{name}: {e}")))?;
    if certs.is_empty() {
        return Err(ServeError::Pem(format!("{name}: no CERTIFICATE block")));
    }
    Ok(certs)
}

/// The first private key of PEM text already read; `name` says where it came from.
pub fn parse_pem_private_key(name: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| ServeError::Pem(format!("{name}: {e}")))
}

/// Reads a PEM certificate chain and a PEM private key.
pub fn load_pem(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServeError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServeError::Pem(format!("{}: {e}", p.display())))
    };
    let certs = parse_pem_certificates(&chain.display().to_string(), &read(chain)?)?;
    let key = parse_pem_private_key(&key.display().to_string(), &read(key)?)?;
    Ok((certs, key))
}

/// Serves one connection: the TLS handshake, then HTTP/1.1 with keep-alive, under the
/// default [`Limits`]' time-outs.
pub async fn serve_tls_connection<S>(stream: S, acceptor: TlsAcceptor, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_tls_connection_with(stream, acceptor, app, &Limits::default()).await;
}

/// Serves one connection under `limits`' time-outs.
pub async fn serve_tls_connection_with<S>(
    stream: S,
    acceptor: TlsAcceptor,
    app: Router,
    limits: &Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(Ok(tls)) = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
    else {
        return; // a failed or slow handshake: the client sees the TLS alert or a closed socket
    };
    serve_http_connection_with(tls, app, limits).await;
}

/// Serves HTTP/1.1 on an already established stream (plain or TLS), default time-outs.
pub async fn serve_http_connection<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_http_connection_with(stream, app, &Limits::default()).await;
}

/// Where a connection is between requests, for its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight and no byte of a new one: the idle time-out runs.
    Idle,
    /// Bytes of a request arrived, its handler has not started: the header time-out runs.
    Head,
    /// A handler runs (it bounds its own body read).
    Handling,
}

/// A connection's phase and since when, shared by its reader, its service and its watchdog
/// (woken when a phase with an earlier deadline may begin).
struct Activity {
    phase: Mutex<(Phase, Instant)>,
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new((Phase::Idle, Instant::now())),
            changed: tokio::sync::Notify::new(),
        }
    }
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = (phase, Instant::now());
        self.changed.notify_one();
    }
    fn bytes_arrived(&self) {
        let mut s = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 == Phase::Idle {
            *s = (Phase::Head, Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }
    /// When the connection must close unless its phase changes first.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let (phase, since) = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Phase::Idle => Some(since + limits.idle_timeout),
            Phase::Head => Some(since + limits.header_timeout),
            Phase::Handling => None,
        }
    }
    /// Resolves when the current phase outlived its time-out.
    async fn expired(&self, limits: &Limits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some(d) if Instant::now() >= d => return,
                Some(d) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(d) => {}
                        () = changed => {}
                    }
                }
                // A handler bounds its own waits: the watchdog waits for the next phase.
                None => changed.await,
            }
        }
    }
}

/// A stream that tells its connection's [`Activity`] when request bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP/1.1 on an established stream under `limits`: the watchdog closes it when the
/// headers of a request or an idle keep-alive outlive their time-out.
pub async fn serve_http_connection_with<S>(stream: S, app: Router, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let in_service = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        in_service.set(Phase::Handling);
        let mut app = app.clone();
        let activity = in_service.clone();
        async move {
            let response =
                tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await;
            activity.set(Phase::Idle);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(READ_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {} // a connection error concerns that client only
        () = activity.expired(limits) => {} // dropping the connection closes it
    }
}

/// Open connections, per client address and in total.
#[derive(Clone)]
pub struct ConnectionGate {
    limits: Limits,
    counts: Arc<Mutex<(usize, BTreeMap<IpAddr, usize>)>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Its address holds [`Limits::max_connections_per_address`] already (429).
    TooManyFromAddress,
    /// The service holds [`Limits::max_connections`] already (503).
    TooMany,
}

/// An admitted connection's place; dropping it frees the place.
pub struct ConnectionPermit {
    gate: ConnectionGate,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.0 = c.0.saturating_sub(1);
        if let Some(n) = c.1.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.1.remove(&self.address);
            }
        }
    }
}

impl ConnectionGate {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Admits a connection from `address`, or says why not.
    pub fn admit(&self, address: IpAddr) -> Result<ConnectionPermit, Shed> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = c.1.get(&address).copied().unwrap_or(0);
        if from_address >= self.limits.max_connections_per_address {
            return Err(Shed::TooManyFromAddress);
        }
        if c.0 >= self.limits.max_connections {
            return Err(Shed::TooMany);
        }
        c.0 += 1;
        c.1.insert(address, from_address + 1);
        Ok(ConnectionPermit {
            gate: self.clone(),
            address,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// Answers the one request of a connection over a limit with 429 or 503 and closes it, all
/// within the handshake and header time-outs.
async fn shed<S>(stream: S, acceptor: Option<TlsAcceptor>, why: Shed, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (status, error, detail) = match why {
        Shed::TooManyFromAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-connections",
            "this address holds as many connections as one client may; retry later",
        ),
        Shed::TooMany => (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the service holds as many connections as it may; retry later",
        ),
    };
    let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let mut r = refuse_and_close(status, error, detail);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    let answer = async move {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(false).max_buf_size(READ_BUFFER);
        match acceptor {
            Some(a) => {
                if let Ok(tls) = a.accept(stream).await {
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                }
            }
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
        }
    };
    let _ = tokio::time::timeout(limits.handshake_timeout + limits.header_timeout, answer).await;
}

/// Accepts connections forever: admitted ones are served under `limits`, the others shed.
async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
) {
    let gate = ConnectionGate::new(limits.clone());
    let shedding = Arc::new(tokio::sync::Semaphore::new(MAX_SHEDDING));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // EMFILE and the like
            continue;
        };
        let _ = stream.set_nodelay(true);
        match gate.admit(peer.ip()) {
            Ok(permit) => {
                let (acceptor, app, limits) = (acceptor.clone(), app.clone(), limits.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => serve_tls_connection_with(stream, a, app, &limits).await,
                        None => serve_http_connection_with(stream, app, &limits).await,
                    }
                    drop(permit);
                });
            }
            Err(why) => {
                // Beyond the shedding bound the socket is closed unread.
                if let Ok(slot) = shedding.clone().try_acquire_owned() {
                    let (acceptor, limits) = (acceptor.clone(), limits.clone());
                    tokio::spawn(async move {
                        shed(stream, acceptor, why, limits).await;
                        drop(slot);
                    });
                }
            }
        }
    }
}

/// Accepts HTTPS connections forever, under the default [`Limits`].
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    serve_https_with(listener, tls, app, Limits::default()).await;
}

/// Accepts HTTPS connections forever, under `limits`.
pub async fn serve_https_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
) {
    accept_loop(listener, Some(TlsAcceptor::from(tls)), app, limits).await;
}

/// Accepts plain-HTTP connections forever (they are refused escrow), under `limits`.
pub async fn serve_plain_http(listener: TcpListener, limits: Limits) {
    accept_loop(listener, None, plain_http_router(), limits).await;
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
    /// Time-outs and connection limits.
    pub limits: Limits,
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
    let service = RecoveryService::from_store(store, wall_clock())?.with_limits(cfg.limits.clone());
    let tls = tls_config(cfg.cert_chain, cfg.cert_key)?;
    let https = TcpListener::bind(cfg.https).await?;
    let https_addr = https.local_addr()?;
    tokio::spawn(serve_https_with(
        https,
        tls,
        https_router(service.clone()),
        cfg.limits.clone(),
    ));
    let http_addr = match cfg.http {
        Some(a) => {
            let l = TcpListener::bind(a).await?;
            let addr = l.local_addr()?;
            tokio::spawn(serve_plain_http(l, cfg.limits));
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
