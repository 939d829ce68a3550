//! The store's behaviour, modelled on what trusted secret stores test: ciphertext at rest,
//! tamper and row-swap detection, fresh nonces, newer-wins upserts, device isolation, migrations
//! and a fail-closed audit.

use super::*;
use crate::seal::AtRestKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const K1: &str = "8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB";
const K2: &str = "8F3B1C2D-AAAA-BBBB-CCCC-0123456789AC";
const K3: &str = "12345678-0000-1111-2222-333344445555";
const PW: &str = "123456-234567-345678-456789-567890-678901-789012-890123";

fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid device")
}

fn rid(device: &str, key: &str, kind: MaterialKind) -> RecordId {
    RecordId {
        device: dev(device),
        volume: VolumeId::new("C").expect("valid"),
        key_id: KeyId::new(key).expect("valid"),
        kind,
    }
}

fn rec(device: &str, key: &str, version: u64, material: &[u8]) -> EscrowRecord {
    EscrowRecord {
        id: rid(device, key, MaterialKind::RecoveryPassword),
        version,
        material: material.to_vec(),
        replaces: None,
    }
}

fn req(device: &str, records: Vec<EscrowRecord>) -> EscrowRequest {
    EscrowRequest {
        device: dev(device),
        records,
    }
}

fn helpdesk(query: &str) -> HelpdeskRequest {
    HelpdeskRequest {
        operator: "CONTOSO\\helpdesk1".into(),
        role: HelpdeskRole::Helpdesk,
        query: KeyIdQuery::new(query).expect("valid query"),
        kind: MaterialKind::RecoveryPassword,
        reason: "user locked out after BIOS update, ticket 4711".into(),
        device: None,
        volume: None,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    key: [u8; 32],
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            key: [7u8; 32],
        }
    }
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("escrow.sqlite")
    }
    fn open(&self, seed: u64) -> Store {
        Store::open(
            &self.db(),
            Sealer::encrypted(&AtRestKey::from_bytes(self.key)),
            Box::new(ChaCha20Rng::seed_from_u64(seed)),
        )
        .expect("open store")
    }
    fn open_plain(&self) -> Store {
        Store::open(
            &self.db(),
            Sealer::Plaintext,
            Box::new(ChaCha20Rng::seed_from_u64(99)),
        )
        .expect("open store")
    }
    fn raw(&self) -> Connection {
        Connection::open(self.db()).expect("raw connection")
    }
}

fn raw_material(conn: &Connection, key: &str) -> (Vec<u8>, Vec<u8>) {
    conn.query_row(
        "SELECT nonce, material FROM records WHERE key_id = ?1 AND kind = 'recovery-password'",
        [key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("row")
}

#[test]
fn opens_in_wal_with_full_sync_and_current_schema() {
    let f = Fixture::new();
    let s = f.open(1);
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(sync, 2, "synchronous=FULL");
    let v: i64 = s
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(v, SCHEMA_VERSION);
    drop(s);
    // Reopening runs no migration twice.
    let _again = f.open(2);
}

#[test]
fn migrates_a_version_one_database_and_refuses_a_newer_one() {
    let f = Fixture::new();
    {
        let c = f.raw();
        c.execute_batch(MIGRATIONS[0]).expect("v1");
        c.pragma_update(None, "user_version", 1).expect("pragma");
        c.execute(
            "INSERT INTO records VALUES ('PC1','C',?1,'key-package',1,0,x'',x'00',5)",
            [K1],
        )
        .expect("v1 row");
    }
    let s = f.open(1);
    assert_eq!(s.list_records().expect("list").len(), 1);
    assert!(
        s.pending_rotations(&dev("PC1"))
            .expect("v2 columns")
            .is_empty()
    );
    drop(s);
    f.raw()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("pragma");
    let err = Store::open(
        &f.db(),
        Sealer::Plaintext,
        Box::new(ChaCha20Rng::seed_from_u64(1)),
    )
    .err()
    .expect("too new");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }));
}

#[test]
fn stored_bytes_differ_from_the_plaintext() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1000)
        .expect("escrow");
    let (nonce, stored) = raw_material(&f.raw(), K1);
    assert_eq!(nonce.len(), 12);
    assert_ne!(stored, PW.as_bytes());
    assert!(!stored.windows(6).any(|w| w == b"123456"));
    // And the whole database file does not contain the password either.
    drop(s);
    let mut file = std::fs::read(f.db()).expect("db");
    if let Ok(wal) = std::fs::read(f.dir.path().join("escrow.sqlite-wal")) {
        file.extend(wal);
    }
    assert!(!file.windows(PW.len()).any(|w| w == PW.as_bytes()));
}

#[test]
fn off_mode_stores_plaintext_for_comparison() {
    let f = Fixture::new();
    let mut s = f.open_plain();
    assert_eq!(s.sealing(), Sealing::Plaintext);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1000)
        .expect("escrow");
    let (nonce, stored) = raw_material(&f.raw(), K1);
    assert!(nonce.is_empty());
    assert_eq!(stored, PW.as_bytes());
    let d = s
        .disclose(&helpdesk("8f3b1c2d-aaaa-bbbb-cccc-0123456789ab"), 2000)
        .expect("disclose");
    assert_eq!(d.material.as_slice(), PW.as_bytes());
    // An encrypted store refuses the plaintext row rather than trusting it.
    drop(s);
    let mut enc = f.open(3);
    let err = enc
        .disclose(&helpdesk(K1), 3000)
        .expect_err("plaintext refused");
    assert!(matches!(
        err,
        StoreError::Seal {
            source: SealError::PlaintextInEncryptedStore,
            ..
        }
    ));
}

#[test]
fn one_flipped_byte_fails_the_read() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1000)
        .expect("escrow");
    let (_, mut stored) = raw_material(&f.raw(), K1);
    stored[3] ^= 0x20;
    f.raw()
        .execute(
            "UPDATE records SET material = ?1 WHERE key_id = ?2",
            params![stored, K1],
        )
        .expect("tamper");
    let err = s.disclose(&helpdesk(K1), 2000).expect_err("tampered");
    assert!(matches!(
        err,
        StoreError::Seal {
            source: SealError::Authentication,
            ..
        }
    ));
    // The failed attempt is in the audit log, and no rotation was requested.
    let log = s.audit_log().expect("audit");
    assert_eq!(
        log.last().map(|e| e.outcome.as_str()),
        Some("integrity-failure")
    );
    assert!(
        s.pending_rotations(&dev("PC1"))
            .expect("rotations")
            .is_empty()
    );
}

#[test]
fn a_ciphertext_moved_to_another_row_fails() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1000)
        .expect("escrow");
    s.escrow(
        &req("PC2", vec![rec("PC2", K3, 1, b"other password")]),
        1000,
    )
    .expect("escrow");
    // Move PC1's ciphertext and nonce into PC2's row.
    let (nonce, stored) = raw_material(&f.raw(), K1);
    f.raw()
        .execute(
            "UPDATE records SET nonce = ?1, material = ?2 WHERE key_id = ?3",
            params![nonce, stored, K3],
        )
        .expect("move");
    let err = s.disclose(&helpdesk(K3), 2000).expect_err("moved");
    assert!(matches!(
        err,
        StoreError::Seal {
            source: SealError::Authentication,
            ..
        }
    ));
    // Putting an older version's ciphertext back (rollback) fails too: the version is bound.
    s.escrow(&req("PC1", vec![rec("PC1", K1, 2, b"newer")]), 1500)
        .expect("newer");
    f.raw()
        .execute(
            "UPDATE records SET nonce = ?1, material = ?2 WHERE key_id = ?3",
            params![nonce, stored, K1],
        )
        .expect("rollback");
    assert!(s.disclose(&helpdesk(K1), 2000).is_err());
}

#[test]
fn the_same_plaintext_encrypts_differently_each_time() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1000)
        .expect("escrow");
    let a = raw_material(&f.raw(), K1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 2, PW.as_bytes())]), 1001)
        .expect("escrow");
    let b = raw_material(&f.raw(), K1);
    assert_ne!(a.0, b.0, "fresh nonce");
    assert_ne!(a.1, b.1);
}

#[test]
fn upsert_is_idempotent_and_the_newer_version_wins() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let r = |v, m: &[u8]| req("PC1", vec![rec("PC1", K1, v, m)]);
    let out = |receipt: EscrowReceipt| receipt.outcomes[0].1;
    assert_eq!(
        out(s.escrow(&r(5, b"five"), 1).expect("e")),
        EscrowOutcome::Inserted
    );
    assert_eq!(
        out(s.escrow(&r(5, b"five"), 2).expect("e")),
        EscrowOutcome::Unchanged
    );
    assert_eq!(
        out(s.escrow(&r(3, b"three"), 3).expect("e")),
        EscrowOutcome::Stale
    );
    let d = s.disclose(&helpdesk(K1), 4).expect("d");
    assert_eq!((d.version, d.material.as_slice()), (5, &b"five"[..]));
    assert_eq!(
        out(s.escrow(&r(9, b"nine"), 5).expect("e")),
        EscrowOutcome::Updated
    );
    let d = s.disclose(&helpdesk(K1), 6).expect("d");
    assert_eq!((d.version, d.material.as_slice()), (9, &b"nine"[..]));
    assert_eq!(s.list_records().expect("list").len(), 1);
}

#[test]
fn a_device_cannot_write_another_devices_record() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC2", vec![rec("PC2", K1, 1, b"genuine")]), 1)
        .expect("own record");
    let err = s
        .escrow(&req("PC1", vec![rec("PC2", K1, 2, b"forged")]), 2)
        .expect_err("foreign record");
    assert!(matches!(err, StoreError::NotYourRecord { .. }));
    let d = s.disclose(&helpdesk(K1), 3).expect("d");
    assert_eq!(d.material.as_slice(), b"genuine");
}

#[test]
fn a_refused_request_in_a_group_rolls_back_alone() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let results = s
        .escrow_group(
            &[
                req("PC1", vec![rec("PC1", K1, 1, b"a")]),
                req(
                    "PC1",
                    vec![rec("PC1", K3, 1, b"b"), rec("PC2", K2, 1, b"x")],
                ),
                req("PC2", vec![rec("PC2", K2, 1, b"c")]),
            ],
            1,
        )
        .expect("group commit");
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::NotYourRecord { .. })));
    assert!(results[2].is_ok());
    let ids: Vec<String> = s
        .list_records()
        .expect("list")
        .into_iter()
        .map(|(id, _)| format!("{}/{}", id.device, id.key_id))
        .collect();
    assert_eq!(ids, vec![format!("PC1/{K1}"), format!("PC2/{K2}")]);
}

#[test]
fn records_outlive_the_store_and_need_the_key_file() {
    let f = Fixture::new();
    {
        let mut s = f.open(1);
        s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1)
            .expect("escrow");
    }
    let mut s = f.open(2);
    assert_eq!(
        s.disclose(&helpdesk(K1), 2).expect("d").material.as_slice(),
        PW.as_bytes()
    );
    drop(s);
    let mut wrong = Store::open(
        &f.db(),
        Sealer::encrypted(&AtRestKey::from_bytes([8u8; 32])),
        Box::new(ChaCha20Rng::seed_from_u64(3)),
    )
    .expect("open");
    assert!(wrong.disclose(&helpdesk(K1), 3).is_err());
}

#[test]
fn retrieval_by_eight_characters_or_the_whole_id_when_ambiguous() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K3, 1, b"unique")]), 1)
        .expect("escrow");
    let d = s.disclose(&helpdesk("12345678"), 2).expect("by prefix");
    assert_eq!(d.material.as_slice(), b"unique");
    assert_eq!(d.id.key_id.as_str(), K3);

    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, b"one")]), 3)
        .expect("escrow");
    s.escrow(&req("PC2", vec![rec("PC2", K2, 1, b"two")]), 3)
        .expect("escrow");
    match s.disclose(&helpdesk("8F3B1C2D"), 4) {
        Err(StoreError::Ambiguous { candidates, .. }) => {
            assert_eq!(
                candidates,
                vec![KeyId::new(K1).expect("k"), KeyId::new(K2).expect("k")]
            );
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    let d = s
        .disclose(&helpdesk(&format!("{{{K2}}}")), 5)
        .expect("whole ID");
    assert_eq!(d.material.as_slice(), b"two");
    assert!(matches!(
        s.disclose(&helpdesk("ABCDEF01"), 6),
        Err(StoreError::NotFound { .. })
    ));
    let outcomes: Vec<String> = s
        .audit_log()
        .expect("audit")
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        ["disclosed", "ambiguous", "disclosed", "not-found"]
    );
}

#[test]
fn every_read_is_audited_with_who_when_which_and_why() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1)
        .expect("escrow");
    let d = s
        .disclose(&helpdesk("8f3b1c2d"), 1_700_000_000_000)
        .expect("d");
    let log = s.audit_log().expect("audit");
    assert_eq!(log.len(), 1);
    let e = &log[0];
    assert_eq!(e.seq, d.audit_seq);
    assert_eq!(e.at, 1_700_000_000_000);
    assert_eq!(e.operator, "CONTOSO\\helpdesk1");
    assert_eq!(e.role, "helpdesk");
    assert_eq!(e.query, "8F3B1C2D");
    assert_eq!(e.key_id.as_deref(), Some(K1));
    assert_eq!(e.device.as_deref(), Some("PC1"));
    assert_eq!(e.reason, "user locked out after BIOS update, ticket 4711");
    assert_eq!(e.outcome, "disclosed");
}

#[test]
fn an_auditor_may_not_disclose_and_a_reason_is_required() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1)
        .expect("escrow");
    let mut r = helpdesk(K1);
    r.role = HelpdeskRole::Auditor;
    assert!(matches!(
        s.disclose(&r, 2),
        Err(StoreError::RoleNotAllowed(HelpdeskRole::Auditor))
    ));
    let mut r = helpdesk(K1);
    r.reason = String::new();
    assert!(matches!(s.disclose(&r, 3), Err(StoreError::BadReason)));
    r.reason = "line one\nforged audit line".into();
    assert!(matches!(s.disclose(&r, 3), Err(StoreError::BadReason)));
    let mut r = helpdesk(K1);
    r.operator = "bob\nalice".into();
    assert!(s.disclose(&r, 4).is_err());
    let outcomes: Vec<String> = s
        .audit_log()
        .expect("audit")
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["refused-role"]);
}

#[test]
fn the_audit_fails_closed() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1)
        .expect("escrow");
    // The audit table refuses writes (a full disk, a revoked permission, a broken trigger).
    f.raw()
        .execute_batch(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END;",
        )
        .expect("trigger");
    let err = s.disclose(&helpdesk(K1), 2).expect_err("must fail closed");
    assert!(matches!(err, StoreError::Audit(_)), "{err}");
    assert!(err.to_string().contains("nothing disclosed"));
    // Nothing changed: no rotation mark, no audit line.
    assert!(s.pending_rotations(&dev("PC1")).expect("rot").is_empty());
    f.raw()
        .execute_batch("DROP TRIGGER audit_down")
        .expect("drop trigger");
    assert!(s.audit_log().expect("audit").is_empty());
    assert!(s.disclose(&helpdesk(K1), 3).is_ok());
}

#[test]
fn a_disclosed_password_is_rotated_and_retired() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 1)
        .expect("escrow");
    let d = s.disclose(&helpdesk(K1), 2).expect("d");
    assert!(d.rotation_requested);
    let pending = vec![(VolumeId::new("C").expect("v"), KeyId::new(K1).expect("k"))];
    assert_eq!(s.pending_rotations(&dev("PC1")).expect("rot"), pending);
    // Any escrow from the device learns of the rotation...
    let receipt = s
        .escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 3)
        .expect("escrow");
    assert_eq!(receipt.rotate, pending);
    // ...and the new password that replaces it clears it.
    let mut new = rec("PC1", K3, 1, b"new password");
    new.replaces = Some(KeyId::new(K1).expect("k"));
    let receipt = s.escrow(&req("PC1", vec![new]), 4).expect("escrow");
    assert!(receipt.rotate.is_empty());
    // A second disclosure of a key package does not ask for rotation.
    let mut pkg = rec("PC1", K3, 1, b"package");
    pkg.id.kind = MaterialKind::KeyPackage;
    s.escrow(&req("PC1", vec![pkg]), 5).expect("escrow");
    let mut r = helpdesk(K3);
    r.kind = MaterialKind::KeyPackage;
    assert!(!s.disclose(&r, 6).expect("d").rotation_requested);
}

#[test]
fn enrolment_tokens_authenticate_and_re_enrolment_revokes() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let t1 = s.enrol_device(&dev("PC1"), 1).expect("enrol");
    assert_eq!(s.authenticate(&t1.0).expect("auth"), Some(dev("PC1")));
    assert_eq!(s.authenticate("nonsense").expect("auth"), None);
    let t2 = s.enrol_device(&dev("PC1"), 2).expect("re-enrol");
    assert_ne!(t1, t2);
    assert_eq!(s.authenticate(&t1.0).expect("auth"), None);
    assert_eq!(
        s.device_tokens().expect("tokens"),
        vec![(token_digest(&t2.0), dev("PC1"))]
    );
    // Only the digest is stored.
    let stored: Vec<u8> = f
        .raw()
        .query_row("SELECT token_sha256 FROM devices", [], |r| r.get(0))
        .expect("row");
    assert_ne!(stored, t2.0.as_bytes());
}

#[test]
fn operator_accounts_authenticate_with_their_role_and_re_issue_revokes() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let t1 = s
        .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk, 1)
        .expect("enrol");
    let op = s
        .authenticate_operator(&t1.0)
        .expect("auth")
        .expect("known");
    assert_eq!(op.name, "CONTOSO\\helpdesk1");
    assert_eq!(op.role, HelpdeskRole::Helpdesk);
    let t2 = s
        .enrol_operator("CONTOSO\\helpdesk1", HelpdeskRole::Administrator, 2)
        .expect("re-issue");
    assert_eq!(s.authenticate_operator(&t1.0).expect("auth"), None);
    assert_eq!(
        s.authenticate_operator(&t2.0)
            .expect("auth")
            .map(|o| o.role),
        Some(HelpdeskRole::Administrator)
    );
    // A device token is not an operator token.
    let d = s.enrol_device(&dev("PC1"), 3).expect("device");
    assert_eq!(s.authenticate_operator(&d.0).expect("auth"), None);
    assert!(
        s.enrol_operator("evil\nname", HelpdeskRole::Helpdesk, 4)
            .is_err()
    );
    assert_eq!("auditor".parse::<HelpdeskRole>(), Ok(HelpdeskRole::Auditor));
    assert!("root".parse::<HelpdeskRole>().is_err());
}

#[test]
fn a_refusal_before_the_store_is_audited_and_fails_closed() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let seq = s
        .audit_refusal(&helpdesk(K1), "refused-role-not-held", 5)
        .expect("audited");
    let log = s.audit_log().expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].seq, log[0].at), (seq, 5));
    assert_eq!(log[0].outcome, "refused-role-not-held");
    let mut bad = helpdesk(K1);
    bad.reason = "forged\nline".into();
    assert!(matches!(
        s.audit_refusal(&bad, "x", 6),
        Err(StoreError::BadReason)
    ));
    f.raw()
        .execute_batch(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END;",
        )
        .expect("trigger");
    assert!(matches!(
        s.audit_refusal(&helpdesk(K1), "x", 7),
        Err(StoreError::Audit(_))
    ));
}

#[test]
fn a_replacement_retires_the_old_password_and_its_key_package() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let mut pkg = rec("PC1", K1, 1, b"package");
    pkg.id.kind = MaterialKind::KeyPackage;
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes()), pkg]), 1)
        .expect("escrow");
    let mut new = rec("PC1", K3, 1, b"new password");
    new.replaces = Some(KeyId::new(K1).expect("k"));
    s.escrow(&req("PC1", vec![new]), 2).expect("escrow");
    let rows = read_raw_rows(&f.db()).expect("rows");
    let retired: Vec<(&str, &str, Option<i64>)> = rows
        .iter()
        .map(|r| (r.key_id.as_str(), r.kind.as_str(), r.retired_at))
        .collect();
    assert_eq!(
        retired,
        [
            (K3, "recovery-password", None),
            (K1, "key-package", Some(2)),
            (K1, "recovery-password", Some(2)),
        ]
    );
    // The superseded password is still answerable, and says it is superseded.
    let d = s.disclose(&helpdesk(K1), 3).expect("old");
    assert_eq!(d.retired_at, Some(2));
    assert_eq!(d.material.as_slice(), PW.as_bytes());
    // A replacement from another device cannot retire this device's records.
    let mut foreign = rec("PC2", K2, 1, b"x");
    foreign.replaces = Some(KeyId::new(K3).expect("k"));
    s.escrow(&req("PC2", vec![foreign]), 4).expect("escrow");
    assert!(
        read_raw_rows(&f.db())
            .expect("rows")
            .iter()
            .any(|r| r.key_id == K3 && r.retired_at.is_none())
    );
}

fn choosing(query: &str, device: &str) -> HelpdeskRequest {
    HelpdeskRequest {
        device: Some(dev(device)),
        ..helpdesk(query)
    }
}

/// Issue 20, hole 1: device B escrows a record under its own name with device A's key ID
/// (key IDs are not secret: the recovery screen shows them). A's password must stay
/// recoverable: the helpdesk is shown both devices and chooses by device.
#[test]
fn another_devices_escrow_of_the_same_key_id_never_blocks_recovery() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC-A", vec![rec("PC-A", K1, 1, b"a-password")]), 10)
        .expect("escrow A");
    // Flagged, not refused: B's escrow is stored and marked.
    let receipt = s
        .escrow(&req("PC-B", vec![rec("PC-B", K1, 1, b"forged")]), 20)
        .expect("escrow B");
    assert_eq!(receipt.outcomes[0].1, EscrowOutcome::Inserted);
    for query in [K1, &K1[..8]] {
        match s.disclose(&helpdesk(query), 30) {
            Err(StoreError::HeldBySeveralDevices { key_id, holders }) => {
                assert_eq!(key_id.as_str(), K1);
                let shown: Vec<(&str, Option<i64>)> = holders
                    .iter()
                    .map(|h| (h.device.as_str(), h.shared_key_id_at))
                    .collect();
                assert_eq!(shown, [("PC-A", None), ("PC-B", Some(20))]);
            }
            other => panic!("expected the holders, got {other:?}"),
        }
    }
    let d = s
        .disclose(&choosing(K1, "PC-A"), 40)
        .expect("A's by device");
    assert_eq!(d.material.as_slice(), b"a-password");
    assert_eq!(d.id.device.as_str(), "PC-A");
    // Only A's record is marked for rotation.
    assert_eq!(s.pending_rotations(&dev("PC-A")).expect("a").len(), 1);
    assert!(s.pending_rotations(&dev("PC-B")).expect("b").is_empty());
    let d = s
        .disclose(&choosing(&K1[..8], "PC-B"), 50)
        .expect("B's too, by device and prefix");
    assert_eq!(d.material.as_slice(), b"forged");
    assert!(matches!(
        s.disclose(&choosing(K1, "PC-C"), 60),
        Err(StoreError::NotFound { .. })
    ));
    // The request, the choice and the disclosure are audited.
    let audit = s.audit_log().expect("audit");
    let lines: Vec<(&str, Option<&str>, Option<&str>)> = audit
        .iter()
        .map(|a| {
            (
                a.outcome.as_str(),
                a.chosen_device.as_deref(),
                a.device.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("held-by-several-devices", None, None),
            ("held-by-several-devices", None, None),
            ("disclosed", Some("PC-A"), Some("PC-A")),
            ("disclosed", Some("PC-B"), Some("PC-B")),
            ("not-found", Some("PC-C"), None),
        ]
    );
}

#[test]
fn one_devices_own_kinds_and_re_escrows_are_not_flagged() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let mut package = rec("PC-A", K1, 1, b"package");
    package.id.kind = MaterialKind::KeyPackage;
    s.escrow(&req("PC-A", vec![rec("PC-A", K1, 1, b"pw"), package]), 1)
        .expect("escrow");
    s.escrow(&req("PC-A", vec![rec("PC-A", K1, 2, b"pw2")]), 2)
        .expect("newer");
    let flagged: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM records WHERE shared_key_id_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(flagged, 0);
    let d = s.disclose(&helpdesk(K1), 3).expect("one holder");
    assert_eq!(d.material.as_slice(), b"pw2");
}

/// Issue 20, hole 3: the prefix look-up is a range on the key-ID index, not a scan.
#[test]
fn the_helpdesk_look_up_searches_the_key_id_index() {
    let f = Fixture::new();
    let s = f.open(1);
    let plan = s.reader().expect("reader").lookup_plan().expect("plan");
    assert!(
        plan.iter()
            .any(|l| l
                .contains("SEARCH records USING INDEX records_by_key_id (key_id>? AND key_id<?)")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{plan:?}");
}

#[test]
fn the_range_look_up_finds_exactly_the_prefix() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let keys = [
        "8F3B1C2C-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "8F3B1C2D-0000-0000-0000-000000000000",
        "8F3B1C2D-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "8F3B1C2E-0000-0000-0000-000000000000",
    ];
    let records = keys
        .iter()
        .map(|k| rec("PC1", k, 1, k.as_bytes()))
        .collect();
    s.escrow(&req("PC1", records), 1).expect("escrow");
    let reader = s.reader().expect("reader");
    match reader.lookup(&helpdesk("8f3b1c2d")).expect("lookup") {
        Lookup::SeveralKeyIds(ids) => {
            let ids: Vec<&str> = ids.iter().map(KeyId::as_str).collect();
            assert_eq!(ids, &keys[1..3]);
        }
        other => panic!("{other:?}"),
    }
    for k in keys {
        match reader.lookup(&helpdesk(k)).expect("lookup") {
            Lookup::One(found) => assert_eq!(found.id().key_id.as_str(), k),
            other => panic!("{k}: {other:?}"),
        }
    }
    assert!(matches!(
        reader.lookup(&helpdesk("8F3B1C2D-1")).expect("lookup"),
        Lookup::NotFound
    ));
}

proptest::proptest! {
    /// `prefix <= key < successor(prefix)` is "starts with" over the key-ID alphabet.
    #[test]
    fn the_range_is_exactly_starts_with(
        prefix in "[0-9A-F-]{1,36}",
        key in "[0-9A-F-]{0,40}",
    ) {
        let inside = key.as_str() >= prefix.as_str()
            && key.as_str() < prefix_successor(&prefix).as_str();
        proptest::prop_assert_eq!(inside, key.starts_with(&prefix));
    }
}

/// Reads run on their own connection: a look-up answers while the writer holds a write
/// transaction open (WAL), so a helpdesk read never waits for, nor holds back, a commit.
#[test]
fn a_reader_answers_while_the_writer_holds_a_transaction() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K3, 1, b"x")]), 1)
        .expect("escrow");
    let reader = s.reader().expect("reader");
    let tx = s
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("write lock");
    tx.execute("DELETE FROM records", []).expect("uncommitted");
    assert!(matches!(
        reader
            .lookup(&helpdesk(K3))
            .expect("read beside the writer"),
        Lookup::One(_)
    ));
    drop(tx); // rolled back
    // A reader never writes.
    reader
        .with(|c| {
            assert!(c.execute("DELETE FROM records", []).is_err());
            Ok(())
        })
        .expect("reader");
}

#[test]
fn a_reader_sees_re_enrolment_at_once() {
    let f = Fixture::new();
    let mut s = f.open(1);
    let reader = s.reader().expect("reader");
    let old = s.enrol_device(&dev("PC1"), 1).expect("enrol");
    assert_eq!(reader.authenticate(&old.0).expect("auth"), Some(dev("PC1")));
    let new = s.enrol_device(&dev("PC1"), 2).expect("re-enrol");
    assert_eq!(reader.authenticate(&old.0).expect("auth"), None);
    assert_eq!(reader.authenticate(&new.0).expect("auth"), Some(dev("PC1")));
    let op = s
        .enrol_operator("CONTOSO\\auditor1", HelpdeskRole::Auditor, 3)
        .expect("operator");
    assert_eq!(
        reader.authenticate_operator(&op.0).expect("auth"),
        Some(Operator {
            name: "CONTOSO\\auditor1".into(),
            role: HelpdeskRole::Auditor
        })
    );
    // A device token is not an operator token, nor the reverse.
    assert_eq!(reader.authenticate_operator(&new.0).expect("auth"), None);
    assert_eq!(reader.authenticate(&op.0).expect("auth"), None);
}

/// Nobody alters or removes an audit line, even with SQL on the database file.
#[test]
fn the_audit_log_is_append_only() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K3, 1, b"x")]), 1)
        .expect("escrow");
    s.disclose(&helpdesk(K3), 2).expect("disclose");
    let raw = f.raw();
    let update = raw.execute("UPDATE audit SET operator = 'nobody'", []);
    assert!(
        update.is_err_and(|e| e.to_string().contains("append-only")),
        "update allowed"
    );
    assert!(raw.execute("DELETE FROM audit", []).is_err());
    assert_eq!(
        s.audit_log().expect("audit")[0].operator,
        "CONTOSO\\helpdesk1"
    );
}

/// A device cannot clear, or learn of, another device's rotation mark.
#[test]
fn a_device_cannot_touch_another_devices_rotation_mark() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC-A", vec![rec("PC-A", K1, 1, b"a")]), 1)
        .expect("escrow");
    s.disclose(&helpdesk(K1), 2).expect("disclosed");
    let mut replacing = rec("PC-B", K2, 1, b"b");
    replacing.replaces = Some(KeyId::new(K1).expect("k"));
    let receipt = s
        .escrow(&req("PC-B", vec![replacing]), 3)
        .expect("B escrows its own");
    assert!(receipt.rotate.is_empty(), "B is not told of A's rotation");
    assert_eq!(
        s.pending_rotations(&dev("PC-A")).expect("a"),
        vec![(VolumeId::new("C").expect("v"), KeyId::new(K1).expect("k"))]
    );
    let d = s.disclose(&helpdesk(K1), 4).expect("again");
    assert_eq!(d.retired_at, None, "A's record is not retired by B");
}

/// `escrow_scale` saw a group commit refused `database is locked` while read connections came
/// and went beside the writer: a reader that finds the WAL-index header mid-rewrite re-reads it
/// holding SQLite's write lock for a moment, and a deferred transaction that meets that lock at
/// its first write fails at once, the busy timeout unused. Another connection holds the lock
/// here, for longer and deterministically: every kind of write waits for it and succeeds.
#[test]
fn a_write_lock_held_for_a_moment_elsewhere_delays_a_write_and_never_fails_it() {
    let f = Fixture::new();
    let mut s = f.open(1);
    s.escrow(&req("PC1", vec![rec("PC1", K3, 1, b"x")]), 1)
        .expect("escrow");
    // Holds the write lock on a connection of its own for 300 ms, then runs `write`.
    let while_held = |s: &mut Store, write: &dyn Fn(&mut Store) -> Result<(), StoreError>| {
        let other = f.raw();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
            held_tx.send(()).expect("send");
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("ROLLBACK").expect("release");
        });
        held_rx.recv().expect("held");
        let r = write(s);
        holder.join().expect("holder");
        r
    };
    while_held(&mut s, &|s| {
        s.escrow(&req("PC1", vec![rec("PC1", K1, 1, b"y")]), 2)
            .map(|_| ())
    })
    .expect("an escrow group waits for the lock instead of failing");
    while_held(&mut s, &|s| s.disclose(&helpdesk(K3), 3).map(|_| ()))
        .expect("a disclosure's audit waits for the lock");
    let mut refused = helpdesk(K3);
    refused.role = HelpdeskRole::Auditor;
    while_held(&mut s, &|s| {
        s.audit_refusal(&refused, "refused-role", 4).map(|_| ())
    })
    .expect("an audited refusal waits for the lock");
    assert_eq!(s.audit_log().expect("audit").len(), 2);
}

/// Issue 19: "Encrypt recovery data in the database" turned on after records were stored in
/// plaintext. The first encrypted open re-encrypts them (the file no longer holds the
/// plaintext), marks the current recovery password for rotation (copies made before still
/// read it), records it once, and from then on refuses a plaintext row as before.
#[test]
fn turning_encryption_on_later_re_encrypts_the_plaintext_rows_once() {
    let f = Fixture::new();
    {
        let mut plain = f.open_plain();
        assert_eq!(plain.finish_turning_on_encryption(10).expect("noop"), None);
        let mut package = rec("PC1", K1, 1, b"key package of PC1");
        package.id.kind = MaterialKind::KeyPackage;
        plain
            .escrow(
                &req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes()), package]),
                100,
            )
            .expect("escrow");
    }
    let file_holds = |needle: &[u8]| {
        ["escrow.sqlite", "escrow.sqlite-wal"].iter().any(|name| {
            std::fs::read(f.dir.path().join(name))
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    };
    assert!(
        file_holds(PW.as_bytes()),
        "the plaintext is in the file before"
    );

    let mut s = f.open(2);
    let turned_on = s
        .finish_turning_on_encryption(5000)
        .expect("turn on")
        .expect("it ran");
    assert_eq!(
        turned_on,
        EncryptionTurnedOn {
            at: 5000,
            resealed: 2,
            rotations: 1,
            wal_truncated: true,
        }
    );
    assert_eq!(s.encryption_turned_on().expect("read"), Some(turned_on));
    assert!(
        !file_holds(PW.as_bytes()),
        "the recovery password is gone from the database file and its WAL"
    );
    let raw = read_raw_rows(&f.db()).expect("rows");
    assert!(raw.iter().all(|r| r.sealing == 1), "{raw:?}");
    assert_eq!(
        s.pending_rotations(&dev("PC1")).expect("rotations"),
        vec![(VolumeId::new("C").expect("v"), KeyId::new(K1).expect("k"))]
    );
    let d = s.disclose(&helpdesk(K1), 6000).expect("disclose");
    assert_eq!(d.material.as_slice(), PW.as_bytes());

    // Once only: a plaintext row written into the file afterwards is refused, not trusted.
    drop(s);
    let mut again = f.open(3);
    assert_eq!(
        again.finish_turning_on_encryption(7000).expect("noop"),
        None
    );
    f.raw()
        .execute(
            "INSERT INTO records (device, volume, key_id, kind, version, sealing, nonce,
                                  material, escrowed_at)
             VALUES ('PC2', 'C', ?1, 'recovery-password', 1, 0, x'', ?2, 1)",
            params![K3, PW.as_bytes()],
        )
        .expect("planted row");
    assert!(matches!(
        again.disclose(&helpdesk(K3), 8000),
        Err(StoreError::Seal {
            source: SealError::PlaintextInEncryptedStore,
            ..
        })
    ));
}

/// A running unencrypted store is switched on (the scenario's event): the same migration.
#[test]
fn a_running_store_turns_encryption_on() {
    let f = Fixture::new();
    let mut s = f.open_plain();
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 100)
        .expect("escrow");
    let key = Sealer::encrypted(&AtRestKey::from_bytes(f.key));
    let on = s.turn_on_encryption(key, 200).expect("on").expect("ran");
    assert_eq!((on.resealed, on.rotations), (1, 1));
    assert_eq!(s.sealing(), Sealing::Aes256Gcm);
    s.escrow(&req("PC1", vec![rec("PC1", K2, 1, PW.as_bytes())]), 300)
        .expect("escrow after");
    assert!(
        read_raw_rows(&f.db())
            .expect("rows")
            .iter()
            .all(|r| r.sealing == 1)
    );
    let again = Sealer::encrypted(&AtRestKey::from_bytes([9u8; 32]));
    assert!(
        s.turn_on_encryption(again, 400).is_err(),
        "the key is not replaced"
    );
}

/// Review finding: the migration runs once per database, so a database with encryption turned
/// on is not opened unencrypted again (what that run wrote would never be re-encrypted, and
/// the encrypted runs would then refuse it as tampering).
#[test]
fn a_database_with_encryption_turned_on_is_not_opened_unencrypted() {
    let f = Fixture::new();
    {
        let mut s = f.open(1);
        let on = s.finish_turning_on_encryption(500).expect("turn on");
        assert!(on.is_some());
    }
    match Store::open(
        &f.db(),
        Sealer::Plaintext,
        Box::new(ChaCha20Rng::seed_from_u64(2)),
    ) {
        Err(e @ StoreError::EncryptedOpenedPlaintext { turned_on_at: 500 }) => {
            assert!(e.to_string().contains("at-rest key"), "{e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("an encrypted database opened unencrypted"),
    }
    // Encrypted, it still opens.
    drop(f.open(3));
}

/// Review finding: a store switched on while running keeps its plaintext sealer when the
/// migration fails (here: the write lock is held elsewhere), instead of sealing from then on
/// under a key the database never recorded.
#[test]
fn a_failed_turn_on_leaves_the_store_unencrypted() {
    let f = Fixture::new();
    let mut s = f.open_plain();
    s.escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 100)
        .expect("escrow");
    s.conn
        .busy_timeout(std::time::Duration::from_millis(50))
        .expect("timeout");
    let other = f.raw();
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the lock");
    let key = Sealer::encrypted(&AtRestKey::from_bytes(f.key));
    assert!(s.turn_on_encryption(key, 200).is_err(), "the lock is held");
    assert_eq!(s.sealing(), Sealing::Plaintext);
    other.execute_batch("ROLLBACK").expect("release");
    let key = Sealer::encrypted(&AtRestKey::from_bytes(f.key));
    let on = s.turn_on_encryption(key, 300).expect("on").expect("ran");
    assert_eq!((on.resealed, on.rotations), (1, 1));
    assert_eq!(s.sealing(), Sealing::Aes256Gcm);
}

/// Review finding: "the file no longer holds them" is what the checkpoint found, not a claim.
/// A reader holding a snapshot from before the re-encryption keeps the checkpoint partial: the
/// result says so (and the plaintext is indeed still in the file); released within the wait,
/// the checkpoint is retried and completes.
#[test]
fn a_reader_holding_a_snapshot_leaves_the_wal_untruncated_and_it_is_recorded() {
    let plaintext_store = |f: &Fixture| {
        let mut plain = f.open_plain();
        plain
            .escrow(&req("PC1", vec![rec("PC1", K1, 1, PW.as_bytes())]), 100)
            .expect("escrow");
    };
    let short = std::time::Duration::from_millis(200);
    let file_holds = |f: &Fixture, needle: &[u8]| {
        ["escrow.sqlite", "escrow.sqlite-wal"].iter().any(|name| {
            std::fs::read(f.dir.path().join(name))
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    };

    let f = Fixture::new();
    plaintext_store(&f);
    let mut s = f.open(2);
    s.conn.busy_timeout(short).expect("timeout");
    s.busy_timeout = short;
    let reader = f.raw();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM records;")
        .expect("a snapshot from before");
    let on = s
        .finish_turning_on_encryption(5000)
        .expect("turn on")
        .expect("ran");
    assert!(!on.wal_truncated, "{on:?}");
    assert_eq!(s.encryption_turned_on().expect("read"), Some(on));
    assert!(
        file_holds(&f, PW.as_bytes()),
        "the partial checkpoint left the plaintext in the file, as recorded"
    );
    reader.execute_batch("COMMIT").expect("end");

    // Released within the wait: retried until it completes.
    let f = Fixture::new();
    plaintext_store(&f);
    let mut s = f.open(3);
    s.conn.busy_timeout(short).expect("timeout");
    s.busy_timeout = std::time::Duration::from_secs(5);
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let db = f.db();
    let holder = std::thread::spawn(move || {
        let reader = Connection::open(db).expect("reader");
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM records;")
            .expect("snapshot");
        held_tx.send(()).expect("held");
        std::thread::sleep(std::time::Duration::from_millis(600));
        reader.execute_batch("COMMIT").expect("end");
    });
    held_rx.recv().expect("held");
    let on = s
        .finish_turning_on_encryption(5000)
        .expect("turn on")
        .expect("ran");
    holder.join().expect("holder");
    assert!(on.wal_truncated, "{on:?}");
    assert!(!file_holds(&f, PW.as_bytes()));
}
