//! The escrow database: SQLite in WAL mode with `synchronous=FULL`, schema migrations by
//! `user_version`, records keyed by (device, volume, key ID, kind) with an idempotent upsert
//! where the newer client version wins, device enrolment tokens, and helpdesk disclosure with
//! its audit record written in the same transaction.
//!
//! Durability is the store's contract: a method that returns `Ok` for an escrow has committed
//! it, and with `synchronous=FULL` a WAL commit is on disk before `COMMIT` returns, so a crash
//! (or `kill -9`) of the server after the acknowledgement cannot lose it. Disclosure fails
//! closed: the audit insert, the rotation mark and the read share one transaction, and the
//! material leaves this module only after that transaction committed.
//!
//! The store is synchronous and takes `now` (milliseconds since the Unix epoch) and its RNG
//! from the caller; [`crate::committer`] runs it on one thread and batches escrows into group
//! commits.

use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::record::{
    DeviceId, EscrowRecord, KeyId, KeyIdQuery, MaterialKind, RecordError, RecordId, VolumeId,
};
use crate::seal::{SealError, SealedMaterial, Sealer, Sealing};

/// An RNG the store can own across threads (nonces and enrolment tokens).
pub trait StoreRng: RngCore + CryptoRng + Send {}
impl<T: RngCore + CryptoRng + Send> StoreRng for T {}

/// The schema, one entry per `user_version`. Append, never edit: a database at version `n`
/// runs the entries after `n`.
const MIGRATIONS: &[&str] = &[
    // 1: devices, records, audit.
    "CREATE TABLE devices (
        device       TEXT PRIMARY KEY,
        token_sha256 BLOB NOT NULL UNIQUE,
        enrolled_at  INTEGER NOT NULL
     );
     CREATE TABLE records (
        device      TEXT NOT NULL,
        volume      TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        kind        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        sealing     INTEGER NOT NULL,
        nonce       BLOB NOT NULL,
        material    BLOB NOT NULL,
        escrowed_at INTEGER NOT NULL,
        PRIMARY KEY (device, volume, key_id, kind)
     ) WITHOUT ROWID;
     CREATE INDEX records_by_key_id ON records (key_id);
     CREATE TABLE audit (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        at       INTEGER NOT NULL,
        operator TEXT NOT NULL,
        role     TEXT NOT NULL,
        query    TEXT NOT NULL,
        key_id   TEXT,
        device   TEXT,
        volume   TEXT,
        kind     TEXT NOT NULL,
        reason   TEXT NOT NULL,
        outcome  TEXT NOT NULL
     );",
    // 2: rotation after disclosure, and retirement of a rotated password.
    "ALTER TABLE records ADD COLUMN rotation_requested_at INTEGER;
     ALTER TABLE records ADD COLUMN retired_at INTEGER;
     CREATE INDEX records_pending_rotation ON records (device)
        WHERE rotation_requested_at IS NOT NULL AND retired_at IS NULL;",
    // 3: helpdesk operator accounts (their tokens as SHA-256, like devices').
    "CREATE TABLE operators (
        operator     TEXT PRIMARY KEY,
        role         TEXT NOT NULL,
        token_sha256 BLOB NOT NULL UNIQUE,
        enrolled_at  INTEGER NOT NULL
     );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Longest helpdesk reason accepted.
pub const MAX_REASON_LEN: usize = 512;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database journal mode is {0:?}, not WAL")]
    NotWal(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("record {device}/{volume}/{key_id}/{kind}: {source}")]
    Seal {
        device: String,
        volume: String,
        key_id: String,
        kind: MaterialKind,
        source: SealError,
    },
    #[error("device {authenticated} may not write a record of device {claimed}")]
    NotYourRecord {
        authenticated: DeviceId,
        claimed: DeviceId,
    },
    #[error("no {kind} matches key ID {query}")]
    NotFound { query: String, kind: MaterialKind },
    #[error("key ID {query} matches {} keys ({}); give the whole key ID", candidates.len(),
        candidates.iter().map(KeyId::as_str).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<KeyId>,
    },
    #[error("role {0} may not disclose recovery information")]
    RoleNotAllowed(HelpdeskRole),
    #[error("a reason is required (1 to {MAX_REASON_LEN} printable characters)")]
    BadReason,
    #[error("the audit record could not be written, nothing disclosed: {0}")]
    Audit(rusqlite::Error),
    #[error("at-rest key: {0}")]
    KeyFile(String),
    #[error("row {0} in the database is malformed")]
    CorruptRow(String),
}

/// Who asks for recovery information. Only helpdesk operators and administrators may disclose;
/// an auditor reads the audit log and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HelpdeskRole {
    Helpdesk,
    Administrator,
    Auditor,
}

impl HelpdeskRole {
    pub fn label(self) -> &'static str {
        match self {
            HelpdeskRole::Helpdesk => "helpdesk",
            HelpdeskRole::Administrator => "administrator",
            HelpdeskRole::Auditor => "auditor",
        }
    }
    pub fn may_disclose(self) -> bool {
        matches!(self, HelpdeskRole::Helpdesk | HelpdeskRole::Administrator)
    }
    /// May read the audit log (auditors and administrators).
    pub fn may_read_audit(self) -> bool {
        matches!(self, HelpdeskRole::Auditor | HelpdeskRole::Administrator)
    }
    pub fn from_label(s: &str) -> Option<Self> {
        [
            HelpdeskRole::Helpdesk,
            HelpdeskRole::Administrator,
            HelpdeskRole::Auditor,
        ]
        .into_iter()
        .find(|r| r.label() == s)
    }
}

impl std::str::FromStr for HelpdeskRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_label(s)
            .ok_or_else(|| format!("unknown role {s:?} (helpdesk, administrator or auditor)"))
    }
}

impl std::fmt::Display for HelpdeskRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A helpdesk request for recovery information.
#[derive(Debug, Clone)]
pub struct HelpdeskRequest {
    pub operator: String,
    pub role: HelpdeskRole,
    pub query: KeyIdQuery,
    pub kind: MaterialKind,
    pub reason: String,
}

/// Recovery information disclosed to the helpdesk (after its audit record committed).
#[derive(Debug)]
pub struct Disclosure {
    pub id: RecordId,
    pub version: u64,
    pub escrowed_at: i64,
    pub material: Zeroizing<Vec<u8>>,
    /// The audit record's sequence number.
    pub audit_seq: i64,
    /// The client will be told to rotate this recovery password at its next contact.
    pub rotation_requested: bool,
    /// When the client replaced this record after a rotation (it is kept, superseded, so that
    /// an old recovery screen can still be answered).
    pub retired_at: Option<i64>,
}

/// What an escrow did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EscrowOutcome {
    /// A new record.
    Inserted,
    /// A newer version replaced the stored one.
    Updated,
    /// The same version was already stored (a retry): nothing changed.
    Unchanged,
    /// The stored version is newer: nothing changed.
    Stale,
}

/// One authenticated client request: the device the token belongs to and its records.
#[derive(Debug, Clone)]
pub struct EscrowRequest {
    pub device: DeviceId,
    pub records: Vec<EscrowRecord>,
}

/// The acknowledgement of a committed escrow request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowReceipt {
    pub outcomes: Vec<(RecordId, EscrowOutcome)>,
    /// Recovery passwords of this device disclosed to the helpdesk and not yet replaced.
    pub rotate: Vec<(VolumeId, KeyId)>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub operator: String,
    pub role: String,
    pub query: String,
    pub key_id: Option<String>,
    pub device: Option<String>,
    pub volume: Option<String>,
    pub kind: String,
    pub reason: String,
    pub outcome: String,
}

/// A bearer token issued to a device at enrolment. Only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(pub String);

impl std::fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceToken(..)")
    }
}

/// A bearer token issued to a helpdesk operator account. Only its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken(pub String);

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(..)")
    }
}

/// An authenticated helpdesk operator account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: HelpdeskRole,
}

/// One stored row as it lies in the database file, material included as stored (ciphertext,
/// or plaintext in the comparison mode): what someone who copies the file sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RawRow {
    pub device: String,
    pub volume: String,
    pub key_id: String,
    pub kind: String,
    pub version: i64,
    /// 0 plaintext, 1 AES-256-GCM.
    pub sealing: i64,
    #[serde(serialize_with = "hex_bytes")]
    pub nonce: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub material: Vec<u8>,
    pub escrowed_at: i64,
    pub rotation_requested_at: Option<i64>,
    pub retired_at: Option<i64>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Reads every record row of the database at `path` as stored (read-only, no key needed), in
/// a stable order.
pub fn read_raw_rows(path: &Path) -> Result<Vec<RawRow>, StoreError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT device, volume, key_id, kind, version, sealing, nonce, material, escrowed_at,
                rotation_requested_at, retired_at
         FROM records ORDER BY device, volume, key_id, kind",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RawRow {
            device: r.get(0)?,
            volume: r.get(1)?,
            key_id: r.get(2)?,
            kind: r.get(3)?,
            version: r.get(4)?,
            sealing: r.get(5)?,
            nonce: r.get(6)?,
            material: r.get(7)?,
            escrowed_at: r.get(8)?,
            rotation_requested_at: r.get(9)?,
            retired_at: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The SHA-256 of a token as stored and compared.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The escrow database.
pub struct Store {
    conn: Connection,
    sealer: Sealer,
    rng: Box<dyn StoreRng>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL with
    /// `synchronous=FULL` and runs the migrations it lacks.
    pub fn open(path: &Path, sealer: Sealer, rng: Box<dyn StoreRng>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::from_connection(conn, sealer, rng)
    }

    /// Opens the store as the CLI and the service do: encrypted under the key in `key_file`,
    /// or in the unencrypted comparison mode when it is `None`; nonces and tokens from the
    /// operating system's RNG.
    pub fn open_with_key_file(db: &Path, key_file: Option<&Path>) -> Result<Self, StoreError> {
        let sealer = match key_file {
            Some(p) => Sealer::encrypted(
                &crate::seal::AtRestKey::load(p).map_err(|e| StoreError::KeyFile(e.to_string()))?,
            ),
            None => Sealer::Plaintext,
        };
        Self::open(db, sealer, Box::new(rand_core::OsRng))
    }

    fn from_connection(
        mut conn: Connection,
        sealer: Sealer,
        rng: Box<dyn StoreRng>,
    ) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        // FULL: the WAL is synced at every commit, so a commit survives power loss, not only a
        // process crash (NORMAL would lose the last commits on power loss).
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(Self { conn, sealer, rng })
    }

    pub fn sealing(&self) -> Sealing {
        self.sealer.sealing()
    }

    /// Enrols (or re-enrols) a device and returns its new token; an older token stops working.
    pub fn enrol_device(&mut self, device: &DeviceId, now: i64) -> Result<DeviceToken, StoreError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(raw.as_mut());
        let token = DeviceToken(hex::encode(raw.as_ref()));
        self.conn.execute(
            "INSERT INTO devices (device, token_sha256, enrolled_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(device) DO UPDATE SET token_sha256 = excluded.token_sha256,
                                               enrolled_at = excluded.enrolled_at",
            params![device.as_str(), &token_digest(&token.0)[..], now],
        )?;
        Ok(token)
    }

    /// Every enrolled device's token digest (the server keeps them in memory).
    pub fn device_tokens(&self) -> Result<Vec<([u8; 32], DeviceId)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT token_sha256, device FROM devices ORDER BY device")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (digest, device) = row?;
            let digest: [u8; 32] = digest
                .try_into()
                .map_err(|_| StoreError::CorruptRow(format!("devices/{device}")))?;
            out.push((digest, DeviceId::new(device)?));
        }
        Ok(out)
    }

    /// The device a token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<DeviceId>, StoreError> {
        let device: Option<String> = self
            .conn
            .query_row(
                "SELECT device FROM devices WHERE token_sha256 = ?1",
                params![&token_digest(token)[..]],
                |r| r.get(0),
            )
            .optional()?;
        Ok(device.map(DeviceId::new).transpose()?)
    }

    /// Creates (or re-issues) a helpdesk operator account with its role and returns its new
    /// token; an older token of the account stops working.
    pub fn enrol_operator(
        &mut self,
        operator: &str,
        role: HelpdeskRole,
        now: i64,
    ) -> Result<OperatorToken, StoreError> {
        validate_operator(operator)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(raw.as_mut());
        let token = OperatorToken(hex::encode(raw.as_ref()));
        self.conn.execute(
            "INSERT INTO operators (operator, role, token_sha256, enrolled_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(operator) DO UPDATE SET role = excluded.role,
                token_sha256 = excluded.token_sha256, enrolled_at = excluded.enrolled_at",
            params![operator, role.label(), &token_digest(&token.0)[..], now],
        )?;
        Ok(token)
    }

    /// The operator account a token belongs to, if any.
    pub fn authenticate_operator(&self, token: &str) -> Result<Option<Operator>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT operator, role FROM operators WHERE token_sha256 = ?1",
                params![&token_digest(token)[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(name, role)| {
            let role = HelpdeskRole::from_label(&role)
                .ok_or_else(|| StoreError::CorruptRow(format!("operators/{name}")))?;
            Ok(Operator { name, role })
        })
        .transpose()
    }

    /// Audits a helpdesk request refused before the store was asked (the operator claimed a
    /// role the account does not hold, for instance). Fails if the audit write fails.
    pub fn audit_refusal(
        &mut self,
        req: &HelpdeskRequest,
        outcome: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        validate_helpdesk_request(req)?;
        let tx = self.conn.transaction()?;
        let seq = audit_in(&tx, req, None, outcome, now)?;
        tx.commit().map_err(StoreError::Audit)?;
        Ok(seq)
    }

    /// Escrows one request in its own transaction.
    pub fn escrow(&mut self, req: &EscrowRequest, now: i64) -> Result<EscrowReceipt, StoreError> {
        let mut results = self.escrow_group(std::slice::from_ref(req), now)?;
        results.pop().unwrap_or_else(|| {
            Err(StoreError::CorruptRow(
                "escrow group returned no result".into(),
            ))
        })
    }

    /// Group commit: every request in its own savepoint (a refused request rolls back alone),
    /// all in one transaction, one fsync. The outer `Err` means the commit failed and nothing
    /// of the group is durable; the inner results are valid only once the commit succeeded,
    /// which is when this returns `Ok`.
    pub fn escrow_group(
        &mut self,
        requests: &[EscrowRequest],
        now: i64,
    ) -> Result<Vec<Result<EscrowReceipt, StoreError>>, StoreError> {
        let mut tx = self.conn.transaction()?;
        let mut results = Vec::with_capacity(requests.len());
        for req in requests {
            let mut sp = tx.savepoint()?;
            let r = escrow_in(&sp, &self.sealer, self.rng.as_mut(), req, now);
            if r.is_ok() {
                sp.commit()?;
            } else {
                sp.rollback()?;
                sp.finish()?;
            }
            results.push(r);
        }
        tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
        tx.commit()?;
        Ok(results)
    }

    /// Recovery passwords of `device` disclosed and not yet replaced.
    pub fn pending_rotations(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<(VolumeId, KeyId)>, StoreError> {
        pending_rotations_in(&self.conn, device)
    }

    /// Helpdesk retrieval by key ID (the first eight characters, or the whole ID when those are
    /// ambiguous). Every attempt is audited, refused ones too; a disclosure's audit record, and
    /// the rotation mark of a disclosed recovery password, commit before the material is
    /// returned, and if the audit write fails nothing is returned.
    pub fn disclose(&mut self, req: &HelpdeskRequest, now: i64) -> Result<Disclosure, StoreError> {
        validate_helpdesk_request(req)?;
        let tx = self.conn.transaction()?;
        let audit = |tx: &Transaction<'_>, id: Option<&RecordId>, outcome: &str| {
            audit_in(tx, req, id, outcome, now)
        };
        if !req.role.may_disclose() {
            audit(&tx, None, "refused-role")?;
            tx.commit().map_err(StoreError::Audit)?;
            return Err(StoreError::RoleNotAllowed(req.role));
        }
        let candidates = find_by_key_id(&tx, &req.query, req.kind)?;
        let mut distinct: Vec<KeyId> = candidates.iter().map(|c| c.id.key_id.clone()).collect();
        distinct.dedup();
        if candidates.is_empty() {
            audit(&tx, None, "not-found")?;
            tx.commit().map_err(StoreError::Audit)?;
            return Err(StoreError::NotFound {
                query: req.query.as_str().to_owned(),
                kind: req.kind,
            });
        }
        if candidates.len() > 1 {
            audit(&tx, None, "ambiguous")?;
            tx.commit().map_err(StoreError::Audit)?;
            return Err(StoreError::Ambiguous {
                query: req.query.as_str().to_owned(),
                candidates: distinct,
            });
        }
        let row = candidates
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::CorruptRow("candidate vanished".into()))?;
        let material = match self.sealer.open(&row.id, row.version, &row.sealed) {
            Ok(m) => m,
            Err(source) => {
                audit(&tx, Some(&row.id), "integrity-failure")?;
                tx.commit().map_err(StoreError::Audit)?;
                return Err(seal_error(&row.id, source));
            }
        };
        let audit_seq = audit(&tx, Some(&row.id), "disclosed")?;
        let rotation_requested = row.id.kind == MaterialKind::RecoveryPassword;
        if rotation_requested {
            tx.execute(
                "UPDATE records SET rotation_requested_at = ?5
                 WHERE device = ?1 AND volume = ?2 AND key_id = ?3 AND kind = ?4
                   AND rotation_requested_at IS NULL",
                params![
                    row.id.device.as_str(),
                    row.id.volume.as_str(),
                    row.id.key_id.as_str(),
                    row.id.kind.label(),
                    now
                ],
            )?;
        }
        tx.commit().map_err(StoreError::Audit)?;
        Ok(Disclosure {
            id: row.id,
            version: row.version,
            escrowed_at: row.escrowed_at,
            material,
            audit_seq,
            rotation_requested,
            retired_at: row.retired_at,
        })
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, operator, role, query, key_id, device, volume, kind, reason, outcome
             FROM audit ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                operator: r.get(2)?,
                role: r.get(3)?,
                query: r.get(4)?,
                key_id: r.get(5)?,
                device: r.get(6)?,
                volume: r.get(7)?,
                kind: r.get(8)?,
                reason: r.get(9)?,
                outcome: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The identities and versions of every record (no material), for listings.
    pub fn list_records(&self) -> Result<Vec<(RecordId, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device, volume, key_id, kind, version FROM records
             ORDER BY device, volume, key_id, kind",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, v, k, kind, ver) = row?;
            out.push((
                record_id(d, v, k, &kind)?,
                u64::try_from(ver).map_err(|_| StoreError::CorruptRow("version".into()))?,
            ));
        }
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// The operator and the reason become audit lines: they must not be able to forge one.
fn validate_helpdesk_request(req: &HelpdeskRequest) -> Result<(), StoreError> {
    validate_operator(&req.operator)?;
    if req.reason.is_empty()
        || req.reason.len() > MAX_REASON_LEN
        || req.reason.chars().any(char::is_control)
    {
        return Err(StoreError::BadReason);
    }
    Ok(())
}

fn validate_operator(operator: &str) -> Result<(), StoreError> {
    // An operator is an account name such as CONTOSO\helpdesk1 or helpdesk1@contoso.com.
    let ok = !operator.is_empty()
        && operator.len() <= 128
        && operator
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '\\' | '@'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Record(RecordError::BadCharacter {
            what: "operator",
            found: operator
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '\\' | '@')))
                .unwrap_or(' '),
        }))
    }
}

fn seal_error(id: &RecordId, source: SealError) -> StoreError {
    StoreError::Seal {
        device: id.device.to_string(),
        volume: id.volume.to_string(),
        key_id: id.key_id.to_string(),
        kind: id.kind,
        source,
    }
}

fn record_id(
    device: String,
    volume: String,
    key: String,
    kind: &str,
) -> Result<RecordId, StoreError> {
    Ok(RecordId {
        device: DeviceId::new(device)?,
        volume: VolumeId::new(volume)?,
        key_id: KeyId::new(key)?,
        kind: MaterialKind::from_label(kind)?,
    })
}

fn escrow_in(
    tx: &Connection,
    sealer: &Sealer,
    rng: &mut dyn StoreRng,
    req: &EscrowRequest,
    now: i64,
) -> Result<EscrowReceipt, StoreError> {
    let mut outcomes = Vec::with_capacity(req.records.len());
    for rec in &req.records {
        rec.validate()?;
        if rec.id.device != req.device {
            return Err(StoreError::NotYourRecord {
                authenticated: req.device.clone(),
                claimed: rec.id.device.clone(),
            });
        }
        let id = &rec.id;
        let stored: Option<i64> = tx
            .prepare_cached(
                "SELECT version FROM records
                 WHERE device = ?1 AND volume = ?2 AND key_id = ?3 AND kind = ?4",
            )?
            .query_row(
                params![
                    id.device.as_str(),
                    id.volume.as_str(),
                    id.key_id.as_str(),
                    id.kind.label()
                ],
                |r| r.get(0),
            )
            .optional()?;
        let version = rec.version as i64; // validate() bounded it to i64::MAX
        let outcome = match stored {
            None => EscrowOutcome::Inserted,
            Some(v) if v < version => EscrowOutcome::Updated,
            Some(v) if v == version => EscrowOutcome::Unchanged,
            Some(_) => EscrowOutcome::Stale,
        };
        if matches!(outcome, EscrowOutcome::Inserted | EscrowOutcome::Updated) {
            let sealed = sealer
                .seal(id, rec.version, &rec.material, rng)
                .map_err(|e| seal_error(id, e))?;
            tx.prepare_cached(
                "INSERT INTO records (device, volume, key_id, kind, version, sealing, nonce,
                                      material, escrowed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (device, volume, key_id, kind) DO UPDATE SET
                    version = excluded.version, sealing = excluded.sealing,
                    nonce = excluded.nonce, material = excluded.material,
                    escrowed_at = excluded.escrowed_at
                 WHERE excluded.version > records.version",
            )?
            .execute(params![
                id.device.as_str(),
                id.volume.as_str(),
                id.key_id.as_str(),
                id.kind.label(),
                version,
                sealed.sealing as i64,
                sealed.nonce,
                sealed.bytes,
                now
            ])?;
        }
        if let (Some(old), MaterialKind::RecoveryPassword) = (&rec.replaces, id.kind) {
            tx.prepare_cached(
                // The key package of the replaced password opens only with that password:
                // it is superseded with it.
                "UPDATE records SET retired_at = ?4
                 WHERE device = ?1 AND volume = ?2 AND key_id = ?3
                   AND kind IN ('recovery-password', 'key-package')
                   AND retired_at IS NULL AND key_id <> ?5",
            )?
            .execute(params![
                id.device.as_str(),
                id.volume.as_str(),
                old.as_str(),
                now,
                id.key_id.as_str()
            ])?;
        }
        outcomes.push((id.clone(), outcome));
    }
    Ok(EscrowReceipt {
        outcomes,
        rotate: pending_rotations_in(tx, &req.device)?,
    })
}

fn pending_rotations_in(
    conn: &Connection,
    device: &DeviceId,
) -> Result<Vec<(VolumeId, KeyId)>, StoreError> {
    // Without statistics the planner walks the primary key over every record of the device
    // (thousands for a long-lived one, on every escrow); the partial index holds only the
    // pending rotations.
    let mut stmt = conn.prepare_cached(
        "SELECT volume, key_id FROM records INDEXED BY records_pending_rotation
         WHERE device = ?1 AND kind = 'recovery-password'
           AND rotation_requested_at IS NOT NULL AND retired_at IS NULL
         ORDER BY volume, key_id",
    )?;
    let rows = stmt.query_map(params![device.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (v, k) = row?;
        out.push((VolumeId::new(v)?, KeyId::new(k)?));
    }
    Ok(out)
}

struct StoredRow {
    id: RecordId,
    version: u64,
    escrowed_at: i64,
    retired_at: Option<i64>,
    sealed: SealedMaterial,
}

fn find_by_key_id(
    tx: &Transaction<'_>,
    query: &KeyIdQuery,
    kind: MaterialKind,
) -> Result<Vec<StoredRow>, StoreError> {
    // The query holds only hex digits and dashes (KeyIdQuery), so a prefix comparison with
    // substr is exact; LIKE would treat `_` and `%` specially and ignore case.
    let mut stmt = tx.prepare(
        "SELECT device, volume, key_id, kind, version, sealing, nonce, material, escrowed_at,
                retired_at
         FROM records WHERE substr(key_id, 1, ?1) = ?2 AND kind = ?3
         ORDER BY key_id, device, volume",
    )?;
    let rows = stmt.query_map(
        params![query.as_str().len() as i64, query.as_str(), kind.label()],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<i64>>(9)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (d, v, k, kd, version, sealing, nonce, bytes, escrowed_at, retired_at) = row?;
        let id = record_id(d, v, k, &kd)?;
        let sealing = Sealing::from_column(sealing)
            .ok_or_else(|| seal_error(&id, SealError::UnknownSealing(sealing)))?;
        out.push(StoredRow {
            version: u64::try_from(version)
                .map_err(|_| StoreError::CorruptRow(format!("version of {}", id.key_id)))?,
            id,
            escrowed_at,
            retired_at,
            sealed: SealedMaterial {
                sealing,
                nonce,
                bytes,
            },
        });
    }
    Ok(out)
}

fn audit_in(
    tx: &Transaction<'_>,
    req: &HelpdeskRequest,
    id: Option<&RecordId>,
    outcome: &str,
    now: i64,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO audit (at, operator, role, query, key_id, device, volume, kind, reason,
                            outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            now,
            req.operator,
            req.role.label(),
            req.query.as_str(),
            id.map(|i| i.key_id.as_str()),
            id.map(|i| i.device.as_str()),
            id.map(|i| i.volume.as_str()),
            req.kind.label(),
            req.reason,
            outcome
        ],
    )
    .map_err(StoreError::Audit)?;
    Ok(tx.last_insert_rowid())
}

#[cfg(test)]
mod tests;
