//! The recovery service and the agent over real TLS on loopback: escrow, helpdesk recovery and
//! rotation, HTTP refused, device isolation, untrusted and organisation roots, the seed's
//! HTTPS-down-then-HTTP pitfall, and a crash test that `kill -9`s a real server process.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use recovery_service::agent::shell::{AgentConfig, EscrowConnection, TcpDialer, client_tls};
use recovery_service::agent::{ContactFailure, ManagementPoint, RetryPolicy, RunOutcome, Severity};
use recovery_service::record::{
    DeviceId, EscrowRecord, KeyId, KeyIdQuery, MaterialKind, RecordId, VolumeId,
};
use recovery_service::seal::{AtRestKey, Sealer};
use recovery_service::server::{Limits, RunningService, ServiceConfig, start};
use recovery_service::store::{DeviceToken, HelpdeskRequest, HelpdeskRole, Store};
use recovery_service::wire::{ESCROW_PATH, SERVICE_PATH};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A root CA and a server certificate it issued for `localhost`.
struct Pki {
    root: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    chain_pem: String,
    key_pem: String,
}

fn pki(org: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{org} Root CA"));
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mp1.contoso.com");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &*ca).expect("server cert");
    Pki {
        root: ca.der().clone(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

const K1: &str = "8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB";
const K2: &str = "0D15EA5E-0000-1111-2222-333344445555";
const PW: &[u8] = b"123456-234567-345678-456789-567890-678901-789012-890123";

fn record(device: &str, key: &str, version: u64, material: &[u8]) -> EscrowRecord {
    EscrowRecord {
        id: RecordId {
            device: DeviceId::new(device).expect("device"),
            volume: VolumeId::new("C").expect("volume"),
            key_id: KeyId::new(key).expect("key id"),
            kind: MaterialKind::RecoveryPassword,
        },
        version,
        material: material.to_vec(),
        replaces: None,
    }
}

fn helpdesk(query: &str) -> HelpdeskRequest {
    HelpdeskRequest {
        operator: "CONTOSO\\helpdesk1".into(),
        role: HelpdeskRole::Helpdesk,
        query: KeyIdQuery::new(query).expect("query"),
        kind: MaterialKind::RecoveryPassword,
        reason: "user locked out, ticket 4711".into(),
        device: None,
        volume: None,
    }
}

const FAST: RetryPolicy = RetryPolicy {
    attempts_per_mp: 2,
    first_backoff_ms: 20,
    max_backoff_ms: 40,
};

struct Lab {
    dir: tempfile::TempDir,
    running: RunningService,
    pki: Pki,
}

async fn lab(encrypted: bool) -> Lab {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("recovery.key");
    AtRestKey::from_bytes([42u8; 32])
        .save_new(&key_file)
        .expect("key file");
    let pki = pki("Contoso");
    let running = start(ServiceConfig {
        database: dir.path().join("escrow.sqlite"),
        key_file: encrypted.then_some(key_file),
        cert_chain: pki.chain.clone(),
        cert_key: pki.key.clone_key(),
        https: "127.0.0.1:0".parse().expect("addr"),
        http: Some("127.0.0.1:0".parse().expect("addr")),
        limits: Default::default(),
    })
    .await
    .expect("start service");
    Lab { dir, running, pki }
}

impl Lab {
    fn https_mp(&self) -> ManagementPoint {
        ManagementPoint::parse(&format!("https://localhost:{}", self.running.https.port()))
            .expect("mp")
    }
    fn http_mp(&self) -> ManagementPoint {
        let http = self.running.http.expect("http listener");
        ManagementPoint::parse(&format!("http://localhost:{}", http.port())).expect("mp")
    }
    async fn enrol(&self, device: &str) -> DeviceToken {
        self.running
            .service
            .enrol(DeviceId::new(device).expect("device"))
            .await
            .expect("enrol")
    }
    fn agent(&self, mps: Vec<ManagementPoint>, token: DeviceToken) -> AgentConfig {
        AgentConfig {
            client_certificate: None,
            management_points: mps,
            roots: vec![self.pki.root.clone()],
            token,
            policy: FAST,
            log_file: None,
        }
    }
}

/// A port on which nothing listens (an HTTPS management point that is down).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_when_bitlocker_is_enabled_then_helpdesk_recovery_rotates() {
    let lab = lab(true).await;
    let token = lab.enrol("PC0042").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("BitLockerManagementHandler.log");
    let mut cfg = lab.agent(vec![lab.https_mp()], token.clone());
    cfg.log_file = Some(log_path.clone());
    let report = recovery_service::agent::shell::escrow(
        &cfg,
        &TcpDialer::default(),
        &[record("PC0042", K1, 1, PW)],
    )
    .await
    .expect("tls config");
    let RunOutcome::Escrowed { reply, url } = &report.outcome else {
        panic!("escrow failed: {:?}", report.outcome);
    };
    assert!(url.starts_with("https://localhost:"));
    assert_eq!(reply.outcomes.len(), 1);
    let log = std::fs::read_to_string(&log_path).expect("log written");
    assert!(log.contains(&format!(
        "<![LOG[Checking for Recovery Service at https://localhost:{}/SMS_MP_MBAM/CoreService.svc]LOG]!>",
        lab.running.https.port()
    )));
    assert!(log.contains("component=\"BitLockerManagementHandler\""));

    // The helpdesk recovers it by its first eight characters; the read is audited.
    let svc = &lab.running.service;
    let d = svc
        .committer
        .disclose(helpdesk("8f3b1c2d"), 1_000)
        .await
        .expect("disclose");
    assert_eq!(d.material.as_slice(), PW);
    assert!(d.rotation_requested);
    let audit = svc.committer.audit_log().await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, "disclosed");

    // At its next contact the client learns it must rotate; it rotates and re-escrows.
    let report = recovery_service::agent::shell::escrow(
        &cfg,
        &TcpDialer::default(),
        &[record("PC0042", K1, 1, PW)],
    )
    .await
    .expect("tls");
    let RunOutcome::Escrowed { reply, .. } = &report.outcome else {
        panic!("escrow failed: {:?}", report.outcome);
    };
    assert_eq!(reply.rotate.len(), 1);
    assert_eq!(reply.rotate[0].key_id.as_str(), K1);
    assert!(
        report
            .log
            .iter()
            .any(|l| l.text.contains("requests rotation of recovery password"))
    );
    let mut rotated = record("PC0042", K2, 1, b"new-password");
    rotated.replaces = Some(KeyId::new(K1).expect("k"));
    let report = recovery_service::agent::shell::escrow(&cfg, &TcpDialer::default(), &[rotated])
        .await
        .expect("tls");
    let RunOutcome::Escrowed { reply, .. } = &report.outcome else {
        panic!("escrow failed: {:?}", report.outcome);
    };
    assert!(reply.rotate.is_empty(), "rotation done");
    let d = svc
        .committer
        .disclose(helpdesk("0D15EA5E"), 2_000)
        .await
        .expect("new password");
    assert_eq!(d.material.as_slice(), b"new-password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_mp_down_then_http_mp_escrow_fails_and_is_reported() {
    let lab = lab(true).await;
    let token = lab.enrol("PC0042").await;
    let down = ManagementPoint::parse(&format!("https://localhost:{}", dead_port())).expect("mp");
    // Configured HTTP first: the client still tries HTTPS first.
    let cfg = lab.agent(vec![lab.http_mp(), down], token);
    let report = recovery_service::agent::shell::escrow(
        &cfg,
        &TcpDialer::default(),
        &[record("PC0042", K1, 1, PW)],
    )
    .await
    .expect("tls");
    let RunOutcome::Failed(f) = &report.outcome else {
        panic!("must fail: {:?}", report.outcome);
    };
    assert!(f.failed_over_to_http);
    assert_eq!(f.attempts.len(), 3, "{f:?}");
    assert!(matches!(f.attempts[0].1, ContactFailure::Unreachable(_)));
    assert_eq!(
        f.attempts[2].1,
        ContactFailure::HttpsRequired { status: Some(403) }
    );
    let checks: Vec<&str> = report
        .log
        .iter()
        .filter(|l| l.text.starts_with("Checking for Recovery Service at "))
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(checks.len(), 3);
    assert!(checks[0].contains("https://"));
    assert!(checks[2].contains("http://"));
    let last = report.log.last().expect("log");
    assert_eq!(last.severity, Severity::Error);
    assert!(
        last.text
            .contains("failed over to an HTTP management point")
    );
    // Nothing reached the database.
    assert!(
        lab.running
            .service
            .committer
            .disclose(helpdesk(K1), 1)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_escrow_is_refused_by_the_service() {
    let lab = lab(true).await;
    let token = lab.enrol("PC0042").await;
    let http = lab.running.http.expect("http");
    let body = serde_json::to_string(&recovery_service::wire::EscrowBody {
        records: vec![recovery_service::wire::WireRecord::from_record(&record(
            "PC0042", K1, 1, PW,
        ))],
    })
    .expect("json");
    let request = format!(
        "POST /SMS_MP_MBAM/CoreService.svc/escrow HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token.0,
        body.len()
    );
    let response = raw_http(http, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("https-required"));
    assert!(
        lab.running
            .service
            .committer
            .disclose(helpdesk(K1), 1)
            .await
            .is_err()
    );
}

async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_write_another_devices_record_and_tokens_are_required() {
    let lab = lab(true).await;
    let a = lab.enrol("PC-A").await;
    let b = lab.enrol("PC-B").await;
    let tls = client_tls(std::slice::from_ref(&lab.pki.root)).expect("tls");
    let mut conn = EscrowConnection::connect(&TcpDialer::default(), &lab.https_mp(), tls)
        .await
        .expect("connect");
    conn.escrow(&b, &[record("PC-B", K1, 1, b"genuine")])
        .await
        .expect("own record");
    let err = conn
        .escrow(&a, &[record("PC-B", K1, 2, b"forged")])
        .await
        .expect_err("foreign record");
    assert!(
        matches!(&err, ContactFailure::Refused { status: 403, error, .. } if error == "not-your-record"),
        "{err:?}"
    );
    let err = conn
        .escrow(
            &DeviceToken("00".repeat(32)),
            &[record("PC-A", K2, 1, b"x")],
        )
        .await
        .expect_err("unknown token");
    assert!(matches!(err, ContactFailure::Refused { status: 401, .. }));
    let d = lab
        .running
        .service
        .committer
        .disclose(helpdesk(K1), 1)
        .await
        .expect("d");
    assert_eq!(d.material.as_slice(), b"genuine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_fails_clearly_and_the_organisation_root_fixes_it() {
    let lab = lab(true).await;
    let token = lab.enrol("PC0042").await;
    let public_ca = pki("Public Trust Services").root;
    let mut cfg = lab.agent(vec![lab.https_mp()], token);
    cfg.roots = vec![public_ca.clone()];
    let report = recovery_service::agent::shell::escrow(
        &cfg,
        &TcpDialer::default(),
        &[record("PC0042", K1, 1, PW)],
    )
    .await
    .expect("tls");
    let RunOutcome::Failed(f) = &report.outcome else {
        panic!("must fail: {:?}", report.outcome);
    };
    assert_eq!(
        f.attempts.len(),
        1,
        "an untrusted certificate is not retried"
    );
    assert!(
        matches!(&f.attempts[0].1, ContactFailure::UntrustedCertificate(w) if w.contains("UnknownIssuer")),
        "{f:?}"
    );
    assert!(report.log.iter().any(|l| l.text.contains("not trusted")));
    // Group Policy adds the organisation's root: now it works.
    cfg.roots.push(lab.pki.root.clone());
    let report = recovery_service::agent::shell::escrow(
        &cfg,
        &TcpDialer::default(),
        &[record("PC0042", K1, 1, PW)],
    )
    .await
    .expect("tls");
    assert!(matches!(report.outcome, RunOutcome::Escrowed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_versus_unencrypted_database() {
    for encrypted in [true, false] {
        let lab = lab(encrypted).await;
        let token = lab.enrol("PC0042").await;
        let cfg = lab.agent(vec![lab.https_mp()], token);
        let report = recovery_service::agent::shell::escrow(
            &cfg,
            &TcpDialer::default(),
            &[record("PC0042", K1, 1, PW)],
        )
        .await
        .expect("tls");
        assert!(matches!(report.outcome, RunOutcome::Escrowed { .. }));
        let db = rusqlite_raw(&lab.dir.path().join("escrow.sqlite"));
        assert_eq!(db == PW, !encrypted, "encrypted={encrypted}");
    }
}

fn rusqlite_raw(path: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(path).expect("open");
    c.query_row("SELECT material FROM records", [], |r| r.get(0))
        .expect("row")
}

/// `kill -9` of a real server process while escrows are in flight: every acknowledged escrow
/// is in the database after restart.
#[test]
fn an_acknowledged_escrow_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("escrow.sqlite");
    let key_file = dir.path().join("recovery.key");
    AtRestKey::from_bytes([9u8; 32])
        .save_new(&key_file)
        .expect("key");
    let pki = pki("Contoso");
    std::fs::write(dir.path().join("cert.pem"), &pki.chain_pem).expect("cert");
    std::fs::write(dir.path().join("key.pem"), &pki.key_pem).expect("key");
    let token = {
        let mut store = Store::open(
            &db,
            Sealer::encrypted(&AtRestKey::load(&key_file).expect("key")),
            Box::new(rand_core::OsRng),
        )
        .expect("store");
        store
            .enrol_device(&DeviceId::new("PC0042").expect("d"), 0)
            .expect("enrol")
    };
    let spawn = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recovery-escrowd"))
            .args(["--db".as_ref(), db.as_os_str()])
            .args(["--key-file".as_ref(), key_file.as_os_str()])
            .args(["--cert".as_ref(), dir.path().join("cert.pem").as_os_str()])
            .args([
                "--cert-key".as_ref(),
                dir.path().join("key.pem").as_os_str(),
            ])
            .args(["--https", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("https=")
            .expect("https= line")
            .parse()
            .expect("addr");
        (child, addr)
    };
    let (mut child, addr) = spawn();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked: Vec<String> = rt.block_on(async {
        let mp = ManagementPoint::parse(&format!("https://localhost:{}", addr.port())).expect("mp");
        let tls = client_tls(std::slice::from_ref(&pki.root)).expect("tls");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for worker in 0..8u32 {
            let (mp, tls, tx, token) = (mp.clone(), tls.clone(), tx.clone(), token.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = EscrowConnection::connect(&TcpDialer::default(), &mp, tls).await
                else {
                    return;
                };
                for i in 0..u32::MAX {
                    let key = format!("{worker:08X}-0000-0000-0000-{i:012X}");
                    let r = record("PC0042", &key, 1, format!("pw-{worker}-{i}").as_bytes());
                    match conn.escrow(&token, &[r]).await {
                        Ok(_) => {
                            if tx.send(key).is_err() {
                                return;
                            }
                        }
                        Err(_) => return, // the server died mid-request: not acknowledged
                    }
                }
            });
        }
        drop(tx);
        let mut acked = Vec::new();
        while acked.len() < 300 {
            match rx.recv().await {
                Some(k) => acked.push(k),
                None => break,
            }
        }
        // SIGKILL while the workers keep escrowing.
        child.kill().expect("kill -9");
        let _ = child.wait();
        while let Some(k) = rx.recv().await {
            acked.push(k);
        }
        acked
    });
    assert!(
        acked.len() >= 300,
        "only {} escrows acknowledged",
        acked.len()
    );
    // Restart on the same database and read every acknowledged record back over the service's
    // own store (the helpdesk path, audited).
    let (mut child, _addr) = spawn();
    let mut store = Store::open(
        &db,
        Sealer::encrypted(&AtRestKey::load(&key_file).expect("key")),
        Box::new(rand_core::OsRng),
    )
    .expect("store");
    for key in &acked {
        let d = store
            .disclose(&helpdesk(key), 1)
            .unwrap_or_else(|e| panic!("acknowledged escrow {key} lost: {e}"));
        assert!(d.material.starts_with(b"pw-"));
    }
    child.kill().expect("kill");
    let _ = child.wait();
}

mod helpdesk {
    //! Helpdesk retrieval over HTTPS: prefixes, ambiguity, roles, the audit trail, and the
    //! audit failing closed.

    use super::*;
    use recovery_service::agent::shell::HelpdeskRefusal;
    use recovery_service::store::OperatorToken;
    use recovery_service::wire::RecoverBody;

    const K1B: &str = "8F3B1C2D-AAAA-BBBB-CCCC-0123456789AC";

    fn ask(key_id: &str, role: Option<HelpdeskRole>) -> RecoverBody {
        RecoverBody {
            key_id: key_id.into(),
            kind: MaterialKind::RecoveryPassword,
            role,
            reason: "user locked out, ticket 4711".into(),
            device: None,
            volume: None,
        }
    }

    async fn connection(lab: &Lab) -> EscrowConnection {
        let tls = client_tls(std::slice::from_ref(&lab.pki.root)).expect("tls");
        EscrowConnection::connect(&TcpDialer::default(), &lab.https_mp(), tls)
            .await
            .expect("connect")
    }

    fn refused(r: Result<impl std::fmt::Debug, HelpdeskRefusal>) -> (u16, String, Vec<KeyId>) {
        match r {
            Err(HelpdeskRefusal::Refused {
                status,
                error,
                candidates,
                ..
            }) => (status, error, candidates),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn by_prefix_with_candidates_roles_and_an_audit_trail() {
        let lab = lab(true).await;
        let device = lab.enrol("PC-A").await;
        let svc = &lab.running.service;
        let helpdesk = svc
            .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
            .await
            .expect("operator");
        let auditor = svc
            .enrol_operator("CONTOSO\\auditor1", HelpdeskRole::Auditor)
            .await
            .expect("operator");
        let mut conn = connection(&lab).await;
        conn.escrow(
            &device,
            &[record("PC-A", K1, 1, PW), record("PC-A", K1B, 1, b"other")],
        )
        .await
        .expect("escrow");

        // Eight characters match two keys: the candidates come back, nothing is disclosed.
        let (status, error, candidates) =
            refused(conn.recover(&helpdesk, &ask("8f3b1c2d", None)).await);
        assert_eq!((status, error.as_str()), (409, "ambiguous"));
        assert_eq!(
            candidates,
            vec![KeyId::new(K1).expect("k"), KeyId::new(K1B).expect("k")]
        );
        // The whole ID answers.
        let reply = conn
            .recover(&helpdesk, &ask(K1, None))
            .await
            .expect("disclosed");
        assert_eq!(
            reply.text.as_deref(),
            Some(std::str::from_utf8(PW).expect("utf8"))
        );
        assert!(reply.rotation_requested);
        assert_eq!(reply.device.as_str(), "PC-A");
        // An auditor may not read keys; a helpdesk operator may not claim another role.
        let (status, error, _) = refused(conn.recover(&auditor, &ask(K1, None)).await);
        assert_eq!((status, error.as_str()), (403, "role-not-allowed"));
        let (status, error, _) = refused(
            conn.recover(&helpdesk, &ask(K1, Some(HelpdeskRole::Administrator)))
                .await,
        );
        assert_eq!((status, error.as_str()), (403, "role-not-held"));
        // Unknown, missing or device tokens are not operators.
        for token in ["00".repeat(32), device.0.clone()] {
            let (status, ..) = refused(conn.recover(&OperatorToken(token), &ask(K1, None)).await);
            assert_eq!(status, 401);
        }
        let (status, error, _) = refused(conn.recover(&helpdesk, &ask("8f3b", None)).await);
        assert_eq!((status, error.as_str()), (400, "bad-request"));
        let (status, ..) = refused(conn.recover(&helpdesk, &ask("0D15EA5E", None)).await);
        assert_eq!(status, 404);

        // Only auditors and administrators read the audit trail.
        let (status, ..) = refused(conn.audit_log(&helpdesk).await);
        assert_eq!(status, 403);
        let audit = conn.audit_log(&auditor).await.expect("audit").entries;
        let outcomes: Vec<&str> = audit.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "ambiguous",
                "disclosed",
                "refused-role",
                "refused-role-not-held",
                "not-found"
            ]
        );
        let disclosed = &audit[1];
        assert_eq!(disclosed.operator, "CONTOSO\\helpdesk1");
        assert_eq!(disclosed.key_id.as_deref(), Some(K1));
        assert_eq!(disclosed.reason, "user locked out, ticket 4711");
        assert!(disclosed.at > 1_600_000_000_000, "wall-clock milliseconds");

        // Plain HTTP never reaches the helpdesk.
        let http = lab.running.http.expect("http");
        let response = raw_http(
            http,
            format!(
                "POST /SMS_MP_MBAM/CoreService.svc/helpdesk/recover HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
                helpdesk.0
            )
            .as_bytes(),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
        assert!(response.contains("https-required"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_fails_closed_when_the_audit_cannot_be_written() {
        let lab = lab(true).await;
        let device = lab.enrol("PC-A").await;
        let helpdesk = lab
            .running
            .service
            .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
            .await
            .expect("operator");
        let mut conn = connection(&lab).await;
        conn.escrow(&device, &[record("PC-A", K1, 1, PW)])
            .await
            .expect("escrow");
        let raw = rusqlite::Connection::open(lab.dir.path().join("escrow.sqlite")).expect("db");
        raw.execute_batch(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END;",
        )
        .expect("trigger");
        let (status, error, _) = refused(conn.recover(&helpdesk, &ask("8F3B1C2D", None)).await);
        assert_eq!((status, error.as_str()), (503, "audit-unavailable"));
        // Nothing was marked: the device is not told to rotate.
        let reply = conn
            .escrow(&device, &[record("PC-A", K1, 1, PW)])
            .await
            .expect("escrow");
        assert!(reply.rotate.is_empty());
        raw.execute_batch("DROP TRIGGER audit_down").expect("drop");
        let reply = conn
            .recover(&helpdesk, &ask("8F3B1C2D", None))
            .await
            .expect("now it is audited and disclosed");
        assert_eq!(reply.audit_seq, 1);
    }
}

mod rotation {
    //! Rotation after disclosure, end to end over real TLS, from a real volume: the agent
    //! learns of the disclosure at its next contact, rotates the password on the volume and
    //! re-escrows; the old record is superseded.

    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use recovery_service::agent::shell::{WallClock, escrow_volume};
    use recovery_service::protected_volume::ProtectedVolume;
    use recovery_service::wire::RecoverBody;
    use volume::{RecoveryPassword, UnlockWith, Volume};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_disclosed_password_is_rotated_on_the_volume_and_re_escrowed() {
        let lab = lab(true).await;
        let token = lab.enrol("PC0042").await;
        let helpdesk = lab
            .running
            .service
            .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
            .await
            .expect("operator");
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let mut tpm = tpm::SimulatedTpm::manufacture(&mut rng, Default::default());
        let (mut vol, keys) = Volume::create(16 * 1024, "OS", &mut rng).expect("volume");
        vol.add_tpm_protector(&keys, &mut tpm, tpm::PcrSelection::SECURE_BOOT, &mut rng)
            .expect("tpm protector");
        let (old_id, old_pw) = vol
            .add_recovery_password_protector(&keys, None, 64, &mut rng)
            .expect("recovery password");
        let old_key = KeyId::new(old_id.to_string()).expect("key id");
        let mut pv = ProtectedVolume::new(
            DeviceId::new("PC0042").expect("d"),
            VolumeId::new("C").expect("v"),
            vol,
            keys,
            Some(tpm.owner_auth_full()),
        );
        let cfg = lab.agent(vec![lab.https_mp()], token);
        let dialer = TcpDialer::default();
        let first = escrow_volume(&cfg, &dialer, &WallClock, &mut pv, &mut rng)
            .await
            .expect("cycle");
        assert!(first.succeeded());
        assert!(first.rotations.is_empty() && first.re_escrow.is_none());

        // The helpdesk reads it by the first 8 characters, over HTTPS.
        let tls = client_tls(std::slice::from_ref(&lab.pki.root)).expect("tls");
        let mut conn = EscrowConnection::connect(&dialer, &lab.https_mp(), tls)
            .await
            .expect("connect");
        let ask = |key_id: &str| RecoverBody {
            key_id: key_id.into(),
            kind: MaterialKind::RecoveryPassword,
            role: None,
            reason: "locked out, ticket 99".into(),
            device: None,
            volume: None,
        };
        let disclosed = conn
            .recover(&helpdesk, &ask(old_key.short()))
            .await
            .expect("disclosed");
        assert_eq!(disclosed.text.as_deref(), Some(old_pw.to_string().as_str()));

        // Next contact: rotate and re-escrow.
        let second = escrow_volume(&cfg, &dialer, &WallClock, &mut pv, &mut rng)
            .await
            .expect("cycle");
        assert!(second.succeeded(), "{second:?}");
        assert_eq!(second.rotations.len(), 1);
        let new_key = second.rotations[0].new.clone();
        assert_eq!(second.rotations[0].old, old_key);
        assert!(
            second
                .log
                .iter()
                .any(|l| l.text.starts_with("Rotated recovery password"))
        );
        assert!(
            pv.volume()
                .unlock(
                    &UnlockWith::RecoveryPassword(&old_pw),
                    &mut tpm,
                    Default::default()
                )
                .is_err(),
            "the disclosed password no longer unlocks"
        );
        // The new password is escrowed and unlocks the volume; the old record is superseded.
        let fresh = conn
            .recover(&helpdesk, &ask(new_key.as_str()))
            .await
            .expect("new");
        let new_pw: RecoveryPassword = fresh.text.expect("text").parse().expect("password");
        assert!(
            pv.volume()
                .unlock(
                    &UnlockWith::RecoveryPassword(&new_pw),
                    &mut tpm,
                    Default::default()
                )
                .is_ok()
        );
        let old = conn
            .recover(&helpdesk, &ask(old_key.as_str()))
            .await
            .expect("old");
        assert!(old.retired_at.is_some(), "superseded");
        // A third contact: nothing more to rotate for the old key (the new one was read just
        // now, so the service asks for that one: the loop goes on only after a disclosure).
        let third = escrow_volume(&cfg, &dialer, &WallClock, &mut pv, &mut rng)
            .await
            .expect("cycle");
        assert!(third.rotations.iter().all(|r| r.old == new_key));
    }
}

mod cross_device {
    //! Issue 20, hole 1 over HTTPS, and every "cannot" of the authorization table
    //! (ARCHITECTURE.md) that needs the running service.

    use super::*;
    use recovery_service::agent::shell::HelpdeskRefusal;
    use recovery_service::store::OperatorToken;
    use recovery_service::wire::RecoverBody;

    fn ask(key_id: &str, device: Option<&str>) -> RecoverBody {
        RecoverBody {
            key_id: key_id.into(),
            kind: MaterialKind::RecoveryPassword,
            role: None,
            reason: "user locked out, ticket 4711".into(),
            device: device.map(|d| DeviceId::new(d).expect("device")),
            volume: None,
        }
    }

    async fn connection(lab: &Lab) -> EscrowConnection {
        let tls = client_tls(std::slice::from_ref(&lab.pki.root)).expect("tls");
        EscrowConnection::connect(&TcpDialer::default(), &lab.https_mp(), tls)
            .await
            .expect("connect")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_device_escrowing_a_key_id_never_blocks_its_recovery() {
        let lab = lab(true).await;
        let a = lab.enrol("PC-A").await;
        let b = lab.enrol("PC-B").await;
        let svc = &lab.running.service;
        let helpdesk = svc
            .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
            .await
            .expect("operator");
        let auditor = svc
            .enrol_operator("CONTOSO\\auditor1", HelpdeskRole::Auditor)
            .await
            .expect("operator");
        let mut conn = connection(&lab).await;
        conn.escrow(&a, &[record("PC-A", K1, 1, PW)])
            .await
            .expect("A escrows");
        // B escrows under its own name with A's key ID: accepted (flagged).
        conn.escrow(&b, &[record("PC-B", K1, 1, b"forged")])
            .await
            .expect("B's escrow is flagged, not refused");

        // The whole ID: both holders come back, each with its device, B flagged.
        match conn.recover(&helpdesk, &ask(K1, None)).await {
            Err(HelpdeskRefusal::Refused {
                status: 409,
                error,
                holders,
                ..
            }) => {
                assert_eq!(error, "held-by-several-devices");
                let shown: Vec<(&str, bool)> = holders
                    .iter()
                    .map(|h| (h.device.as_str(), h.shared_key_id_at.is_some()))
                    .collect();
                assert_eq!(shown, [("PC-A", false), ("PC-B", true)]);
            }
            other => panic!("expected the holders, got {other:?}"),
        }
        // The operator chooses A.
        let reply = conn
            .recover(&helpdesk, &ask(K1, Some("PC-A")))
            .await
            .expect("A's password");
        assert_eq!(reply.text.as_deref().map(str::as_bytes), Some(PW));
        assert_eq!(reply.device.as_str(), "PC-A");
        let audit = conn.audit_log(&auditor).await.expect("audit").entries;
        let lines: Vec<(&str, Option<&str>)> = audit
            .iter()
            .map(|e| (e.outcome.as_str(), e.chosen_device.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                ("held-by-several-devices", None),
                ("disclosed", Some("PC-A"))
            ]
        );
        // A learns of the rotation at its next contact; B does not.
        let reply = conn
            .escrow(&a, &[record("PC-A", K2, 1, b"other")])
            .await
            .expect("A");
        assert_eq!(reply.rotate.len(), 1);
        let reply = conn
            .escrow(&b, &[record("PC-B", K2, 1, b"other")])
            .await
            .expect("B");
        assert!(reply.rotate.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_act_only_as_what_they_were_issued_for() {
        let lab = lab(true).await;
        let device = lab.enrol("PC-A").await;
        let svc = &lab.running.service;
        let helpdesk = svc
            .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
            .await
            .expect("operator");
        let admin = svc
            .enrol_operator("CONTOSO\\admin1", HelpdeskRole::Administrator)
            .await
            .expect("operator");
        let auditor = svc
            .enrol_operator("CONTOSO\\auditor1", HelpdeskRole::Auditor)
            .await
            .expect("operator");
        let mut conn = connection(&lab).await;
        conn.escrow(&device, &[record("PC-A", K1, 1, PW)])
            .await
            .expect("escrow");
        // An operator token cannot escrow.
        for t in [&helpdesk, &admin, &auditor] {
            let err = conn
                .escrow(&DeviceToken(t.0.clone()), &[record("PC-A", K2, 1, b"x")])
                .await
                .expect_err("operator token");
            assert!(matches!(err, ContactFailure::Refused { status: 401, .. }));
        }
        // A device token cannot read the audit log, nor recover.
        let as_operator = OperatorToken(device.0.clone());
        assert!(matches!(
            conn.audit_log(&as_operator).await,
            Err(HelpdeskRefusal::Refused { status: 401, .. })
        ));
        assert!(matches!(
            conn.recover(&as_operator, &ask(K1, None)).await,
            Err(HelpdeskRefusal::Refused { status: 401, .. })
        ));
        // An administrator may disclose and read the audit log.
        conn.recover(&admin, &ask(K1, None)).await.expect("admin");
        assert_eq!(
            conn.audit_log(&admin).await.expect("audit").entries.len(),
            1
        );
    }

    /// Re-enrolment revokes the old token at once, even when it is done on the database by
    /// `nulab recovery enrol` while the service runs and the old token was just used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_re_enrolled_devices_old_token_cannot_escrow_while_the_service_runs() {
        let lab = lab(false).await;
        let old = lab.enrol("PC-A").await;
        let mut conn = connection(&lab).await;
        conn.escrow(&old, &[record("PC-A", K1, 1, PW)])
            .await
            .expect("old token works");
        let mut cli = Store::open(
            &lab.dir.path().join("escrow.sqlite"),
            Sealer::Plaintext,
            Box::new(rand_core::OsRng),
        )
        .expect("a second process's store");
        let new = cli
            .enrol_device(&DeviceId::new("PC-A").expect("d"), 5)
            .expect("re-enrol");
        let err = conn
            .escrow(&old, &[record("PC-A", K1, 2, b"stolen-token")])
            .await
            .expect_err("revoked");
        assert!(matches!(err, ContactFailure::Refused { status: 401, .. }));
        conn.escrow(&new, &[record("PC-A", K1, 2, PW)])
            .await
            .expect("new token works");
    }
}

mod bounded {
    //! Issue 20, hole 2: whatever a client does, it holds the service's memory and sockets
    //! only as long as the configured limits allow. Short time-outs keep these tests quick;
    //! each waits at most a few seconds for the behaviour and fails if it does not come.

    use super::*;
    use std::net::IpAddr;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::client::TlsStream;

    fn short() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(5), // a loaded CI machine still completes it
            header_timeout: Duration::from_millis(400),
            body_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(400),
            ..Limits::default()
        }
    }

    async fn lab_with(limits: Limits) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki("Contoso");
        let running = start(ServiceConfig {
            database: dir.path().join("escrow.sqlite"),
            key_file: None,
            cert_chain: pki.chain.clone(),
            cert_key: pki.key.clone_key(),
            https: "127.0.0.1:0".parse().expect("addr"),
            http: None,
            limits,
        })
        .await
        .expect("start service");
        Lab { dir, running, pki }
    }

    /// A TLS connection from `source` (any 127.0.0.0/8 address is loopback).
    async fn tls_from(lab: &Lab, source: &str) -> TlsStream<tokio::net::TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let source: IpAddr = source.parse().expect("source");
        socket.bind(SocketAddr::new(source, 0)).expect("bind");
        let tcp = socket.connect(lab.running.https).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(
            client_tls(std::slice::from_ref(&lab.pki.root)).expect("tls"),
        );
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await.expect("handshake")
    }

    /// Everything the server sends until it closes the connection, or `None` if it is still
    /// open after `wait`.
    async fn until_closed(
        s: &mut TlsStream<tokio::net::TcpStream>,
        wait: Duration,
    ) -> Option<String> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, s.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()), // EOF or reset
            Err(_) => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let lab = lab_with(short()).await;
        let mut idle = tls_from(&lab, "127.0.0.1").await;
        assert!(
            until_closed(&mut idle, Duration::from_secs(5))
                .await
                .is_some(),
            "an idle connection stayed open"
        );
        // Also after a request on a keep-alive connection.
        let mut kept = tls_from(&lab, "127.0.0.1").await;
        kept.write_all(
            format!("GET {SERVICE_PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .expect("probe");
        let seen = until_closed(&mut kept, Duration::from_secs(5))
            .await
            .expect("closed after the answer and the idle time-out");
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_tls_handshake_is_closed_after_the_handshake_timeout() {
        let lab = lab_with(Limits {
            handshake_timeout: Duration::from_millis(300),
            ..short()
        })
        .await;
        // TCP connected, and then not one byte of a ClientHello.
        let mut tcp = tokio::net::TcpStream::connect(lab.running.https)
            .await
            .expect("connect");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a connection without a handshake stayed open: {read:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_headers_are_closed_after_the_header_timeout() {
        let lab = lab_with(Limits {
            idle_timeout: Duration::from_secs(30), // the header time-out must do it
            ..short()
        })
        .await;
        let mut slow = tls_from(&lab, "127.0.0.1").await;
        let head = format!("POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
        slow.write_all(head.as_bytes()).await.expect("start");
        // One byte every 100 ms never completes the head; the connection must close.
        let closed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow.write_all(b"a").await.is_err() || slow.flush().await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                let read = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf));
                if matches!(read.await, Ok(Ok(0) | Err(_))) {
                    return;
                }
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), closed)
                .await
                .is_ok(),
            "a trickled request head kept its connection"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_token_with_a_big_body_is_refused_before_the_body_is_read() {
        let lab = lab_with(Limits {
            body_timeout: Duration::from_secs(30), // the refusal must not wait for the body
            ..short()
        })
        .await;
        let mut s = tls_from(&lab, "127.0.0.1").await;
        // Headers announcing 900 kB, a wrong token, and not one byte of the body.
        let head = format!(
            "POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n",
            "00".repeat(32)
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let seen = until_closed(&mut s, Duration::from_secs(5))
            .await
            .expect("answered and closed without the body");
        assert!(seen.starts_with("HTTP/1.1 401"), "{seen}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_body_gets_413_before_100_continue() {
        let lab = lab_with(short()).await;
        let token = lab.enrol("PC-A").await;
        let mut s = tls_from(&lab, "127.0.0.1").await;
        let head = format!(
            "POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            token.0,
            2 * 1024 * 1024
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let seen = until_closed(&mut s, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        assert!(seen.starts_with("HTTP/1.1 413"), "{seen}");
        assert!(!seen.contains("100 Continue"), "{seen}");
        // A body that lies about its length (chunked) is cut at the limit too.
        let mut s = tls_from(&lab, "127.0.0.1").await;
        let head = format!(
            "POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            token.0
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b'x'; 64 * 1024];
        let mut answered = false;
        for _ in 0..40 {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            if s.write_all(&framed).await.is_err() {
                answered = true;
                break;
            }
        }
        let seen = until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(
            answered
                || seen
                    .as_deref()
                    .is_some_and(|r| r.starts_with("HTTP/1.1 413")),
            "{seen:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_body_is_cut_at_the_body_timeout() {
        let lab = lab_with(short()).await;
        let token = lab.enrol("PC-A").await;
        let mut s = tls_from(&lab, "127.0.0.1").await;
        let head = format!(
            "POST {ESCROW_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            token.0
        );
        s.write_all(head.as_bytes()).await.expect("head");
        let seen = until_closed(&mut s, Duration::from_secs(5))
            .await
            .expect("closed");
        assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    }

    async fn probe(s: &mut TlsStream<tokio::net::TcpStream>) -> String {
        s.write_all(format!("GET {SERVICE_PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .expect("probe");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_limits_are_shed_with_a_clear_status() {
        let lab = lab_with(Limits {
            max_connections: 3,
            max_connections_per_address: 2,
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = tls_from(&lab, "127.0.0.1").await;
            assert!(probe(&mut s).await.starts_with("HTTP/1.1 200"));
            held.push(s);
        }
        let mut third = tls_from(&lab, "127.0.0.1").await;
        let seen = probe(&mut third).await;
        assert!(seen.starts_with("HTTP/1.1 429"), "{seen}");
        assert!(seen.contains("too-many-connections"), "{seen}");
        // Another address still gets in, until the total is reached.
        let mut other = tls_from(&lab, "127.0.0.2").await;
        assert!(probe(&mut other).await.starts_with("HTTP/1.1 200"));
        let mut fourth = tls_from(&lab, "127.0.0.3").await;
        let seen = probe(&mut fourth).await;
        assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
        assert!(
            seen.to_ascii_lowercase().contains("retry-after: 1"),
            "{seen}"
        );
        // Closing one frees its place.
        drop(held.pop());
        drop(other);
        let mut again = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut s = tls_from(&lab, "127.0.0.1").await;
            if probe(&mut s).await.starts_with("HTTP/1.1 200") {
                again = Some(s);
                break;
            }
        }
        assert!(again.is_some(), "a freed place was not reused");
    }
}

mod durability {
    //! `kill -9` with multi-record requests, over two rounds: a request's records commit
    //! together or not at all (no half-written batch after a kill), and every acknowledged
    //! record comes back, decrypted, with its exact value.

    use super::*;
    use std::collections::BTreeMap;

    const RECORDS_PER_REQUEST: usize = 4;
    const VOLUMES: [&str; RECORDS_PER_REQUEST] = ["C", "D", "E", "F"];

    fn key(worker: u32, request: u32, j: usize) -> String {
        format!("{worker:04X}{request:04X}-0000-0000-0000-{j:012X}")
    }

    fn material(round: u32, worker: u32, request: u32, j: usize) -> Vec<u8> {
        format!("pw-{round}-{worker}-{request}-{j}").into_bytes()
    }

    fn batch(round: u32, worker: u32, request: u32) -> Vec<EscrowRecord> {
        (0..RECORDS_PER_REQUEST)
            .map(|j| {
                let mut r = record(
                    "PC0042",
                    &key(worker, request, j),
                    1,
                    &material(round, worker, request, j),
                );
                r.id.volume = VolumeId::new(VOLUMES[j]).expect("volume");
                r
            })
            .collect()
    }

    #[test]
    fn multi_record_requests_survive_kill_9_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("escrow.sqlite");
        let key_file = dir.path().join("recovery.key");
        AtRestKey::from_bytes([9u8; 32])
            .save_new(&key_file)
            .expect("key");
        let pki = pki("Contoso");
        std::fs::write(dir.path().join("cert.pem"), &pki.chain_pem).expect("cert");
        std::fs::write(dir.path().join("key.pem"), &pki.key_pem).expect("key");
        let open_store = || {
            Store::open(
                &db,
                Sealer::encrypted(&AtRestKey::load(&key_file).expect("key")),
                Box::new(rand_core::OsRng),
            )
            .expect("store")
        };
        let token = open_store()
            .enrol_device(&DeviceId::new("PC0042").expect("d"), 0)
            .expect("enrol");
        let spawn = || {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recovery-escrowd"))
                .args(["--db".as_ref(), db.as_os_str()])
                .args(["--key-file".as_ref(), key_file.as_os_str()])
                .args(["--cert".as_ref(), dir.path().join("cert.pem").as_os_str()])
                .args([
                    "--cert-key".as_ref(),
                    dir.path().join("key.pem").as_os_str(),
                ])
                .args(["--https", "127.0.0.1:0"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn server");
            let mut line = String::new();
            let stdout = child.stdout.take().expect("stdout");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .expect("read");
            let addr: SocketAddr = line
                .trim()
                .strip_prefix("https=")
                .expect("https= line")
                .parse()
                .expect("addr");
            (child, addr)
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // (worker, request) -> the round whose values were acknowledged.
        let mut acked: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        for round in 0..2u32 {
            let (mut child, addr) = spawn();
            let got: Vec<(u32, u32)> = rt.block_on(async {
                let mp = ManagementPoint::parse(&format!("https://localhost:{}", addr.port()))
                    .expect("mp");
                let tls = client_tls(std::slice::from_ref(&pki.root)).expect("tls");
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for worker in 0..8u32 {
                    let (mp, tls, tx, token) = (mp.clone(), tls.clone(), tx.clone(), token.clone());
                    tokio::spawn(async move {
                        let dialer = TcpDialer::default();
                        let Ok(mut conn) = EscrowConnection::connect(&dialer, &mp, tls).await
                        else {
                            return;
                        };
                        // Round 1 rewrites round 0's identities with newer versions first.
                        for request in 0..u32::from(u16::MAX) {
                            let mut records = batch(round, worker, request);
                            for r in &mut records {
                                r.version = u64::from(round) + 1;
                            }
                            match conn.escrow(&token, &records).await {
                                Ok(_) => {
                                    if tx.send((worker, request)).is_err() {
                                        return;
                                    }
                                }
                                Err(_) => return, // killed mid-request: not acknowledged
                            }
                        }
                    });
                }
                drop(tx);
                let mut got = Vec::new();
                while got.len() < 60 {
                    match rx.recv().await {
                        Some(k) => got.push(k),
                        None => break,
                    }
                }
                child.kill().expect("kill -9");
                let _ = child.wait();
                while let Some(k) = rx.recv().await {
                    got.push(k);
                }
                got
            });
            assert!(
                got.len() >= 60,
                "round {round}: only {} acknowledged",
                got.len()
            );
            for k in got {
                acked.insert(k, round);
            }
        }

        // No half-written request: every request's records are all there or none is.
        let rows = recovery_service::store::read_raw_rows(&db).expect("raw rows");
        // A rewrite (round 1) is whole too: one version across a request's records.
        let mut per_request: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for row in &rows {
            per_request
                .entry(&row.key_id[..8])
                .or_default()
                .push(row.version);
        }
        for (request, versions) in &per_request {
            assert_eq!(
                versions.len(),
                RECORDS_PER_REQUEST,
                "request {request} is half-written"
            );
            assert!(
                versions.iter().all(|v| *v == versions[0]),
                "request {request} is half-rewritten: {versions:?}"
            );
        }
        // Every acknowledged record comes back with its exact value.
        let mut store = open_store();
        for (&(worker, request), &round) in &acked {
            for (j, volume) in VOLUMES.iter().enumerate() {
                let k = key(worker, request, j);
                let d = store
                    .disclose(&helpdesk(&k), 1)
                    .unwrap_or_else(|e| panic!("acknowledged record {k} lost: {e}"));
                // The acknowledged version, or a newer one of a later round that committed
                // before its acknowledgement was lost to the kill; exact either way.
                let stored_round = u32::try_from(d.version).expect("version") - 1;
                assert!(stored_round >= round, "{k}: older than acknowledged");
                assert_eq!(
                    d.material.as_slice(),
                    material(stored_round, worker, request, j),
                    "{k}"
                );
                assert_eq!(d.id.volume.as_str(), *volume);
            }
        }
    }
}

/// Issue 19: a database that ran unencrypted, then served encrypted. The service's start
/// re-encrypts the plaintext records once, and the device's next escrow is told to rotate its
/// recovery password because it was stored in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_an_unencrypted_database_encrypted_re_encrypts_and_asks_for_rotation() {
    use rand_core::SeedableRng as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("escrow.sqlite");
    let token = {
        let mut plain = Store::open(
            &db,
            Sealer::Plaintext,
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1)),
        )
        .expect("plaintext store");
        let device = DeviceId::new("PC1").expect("device");
        let token = plain.enrol_device(&device, 1).expect("enrol");
        plain
            .escrow(
                &recovery_service::store::EscrowRequest {
                    device,
                    records: vec![record("PC1", K1, 1, PW)],
                },
                2,
            )
            .expect("plaintext escrow");
        token
    };
    let key_file = dir.path().join("recovery.key");
    AtRestKey::from_bytes([42u8; 32])
        .save_new(&key_file)
        .expect("key file");
    let pki = pki("Contoso");
    let running = start(ServiceConfig {
        database: db.clone(),
        key_file: Some(key_file),
        cert_chain: pki.chain.clone(),
        cert_key: pki.key.clone_key(),
        https: "127.0.0.1:0".parse().expect("addr"),
        http: None,
        limits: Default::default(),
    })
    .await
    .expect("start service");
    let on = running
        .service
        .encryption_turned_on
        .expect("encryption was turned on");
    assert_eq!((on.resealed, on.rotations), (1, 1));
    let stored = recovery_service::store::read_raw_rows(&db).expect("rows");
    assert!(stored.iter().all(|r| r.sealing == 1), "{stored:?}");
    let mp =
        ManagementPoint::parse(&format!("https://localhost:{}", running.https.port())).expect("mp");
    let tls = client_tls(std::slice::from_ref(&pki.root)).expect("tls");
    let mut conn = EscrowConnection::connect(&TcpDialer::default(), &mp, tls)
        .await
        .expect("connect");
    let reply = conn
        .escrow(&token, &[record("PC1", K1, 1, PW)])
        .await
        .expect("escrow");
    assert_eq!(reply.rotate.len(), 1, "{reply:?}");
    assert_eq!(
        reply.rotate[0].reason,
        recovery_service::wire::RotationReason::StoredInPlaintext
    );
}
