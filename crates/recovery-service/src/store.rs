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
    // 4: a key ID escrowed by a device while another device already held it is flagged (see
    // ARCHITECTURE.md: flagged, not refused); the device a helpdesk request names is audited;
    // the audit log is append-only even to SQL run through the store.
    "ALTER TABLE records ADD COLUMN shared_key_id_at INTEGER;
     ALTER TABLE audit ADD COLUMN chosen_device TEXT;
     ALTER TABLE audit ADD COLUMN chosen_volume TEXT;
     CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
     CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    // 5: when "Encrypt recovery data in the database" was turned on for this database, and
    // how many plaintext records it re-encrypted then (`Store::finish_turning_on_encryption`).
    "CREATE TABLE encryption (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        turned_on_at INTEGER NOT NULL,
        resealed     INTEGER NOT NULL,
        rotations    INTEGER NOT NULL
     );
     ALTER TABLE records ADD COLUMN rotation_because_plaintext INTEGER NOT NULL DEFAULT 0;",
    // 6: whether the checkpoint after that emptied the WAL (0 for a database migrated before
    // this was recorded: not known, so not claimed).
    "ALTER TABLE encryption ADD COLUMN wal_truncated INTEGER NOT NULL DEFAULT 0;",
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
    #[error("key ID {key_id} is held by {} devices ({}); choose one by device", holders.len(),
        holders.iter().map(KeyHolder::describe).collect::<Vec<_>>().join(", "))]
    HeldBySeveralDevices {
        key_id: KeyId,
        holders: Vec<KeyHolder>,
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
    #[error(
        "this database has encryption at rest turned on (since {turned_on_at}); it cannot be \
         opened unencrypted (give it its at-rest key file)"
    )]
    EncryptedOpenedPlaintext { turned_on_at: i64 },
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
    /// The device the operator chose, when the key ID is held by several devices.
    pub device: Option<DeviceId>,
    /// The volume the operator chose, when the device holds the key ID on several volumes.
    pub volume: Option<VolumeId>,
}

/// Most records a helpdesk look-up reads (a prefix shared by more keys is refused as ambiguous
/// with the first ones listed; naming the device narrows it).
pub const MAX_LOOKUP_ROWS: usize = 32;

/// One device holding a key ID, as the helpdesk is shown it when several do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyHolder {
    pub device: DeviceId,
    pub volume: VolumeId,
    pub escrowed_at: i64,
    /// When this device escrowed the key ID while another device already held it (the later
    /// escrow is the suspicious one); `None` for the first holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_key_id_at: Option<i64>,
}

impl KeyHolder {
    /// `PC-A/C` or `PC-B/C (escrowed while another device held it)`.
    pub fn describe(&self) -> String {
        match self.shared_key_id_at {
            None => format!("{}/{}", self.device, self.volume),
            Some(_) => format!(
                "{}/{} (escrowed while another device held it)",
                self.device, self.volume
            ),
        }
    }
}

/// What a helpdesk look-up found, before anything is audited or disclosed. Built on any
/// connection (the service uses its read connections); [`Store::finish_disclosure`] audits it
/// and opens the material on the writer.
#[derive(Debug)]
pub enum Lookup {
    NotFound,
    /// The prefix matches several key IDs.
    SeveralKeyIds(Vec<KeyId>),
    /// One key ID, held by several devices (or volumes): the operator must choose.
    HeldBySeveral(KeyId, Vec<KeyHolder>),
    /// Exactly one record.
    One(Box<FoundRecord>),
}

/// The one record a look-up found, still sealed.
#[derive(Debug)]
pub struct FoundRecord(StoredRow);

impl FoundRecord {
    pub fn id(&self) -> &RecordId {
        &self.0.id
    }
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
    /// Recovery passwords of this device disclosed to the helpdesk, or once stored in
    /// plaintext, and not yet replaced.
    pub rotate: Vec<(VolumeId, KeyId)>,
    /// Those of `rotate` marked because they were stored in plaintext before encryption was
    /// turned on (the others were disclosed).
    pub rotate_because_plaintext: Vec<KeyId>,
}

/// "Encrypt recovery data in the database" turned on for a database that already held
/// records in plaintext (the seed: turn it on before deploying the first policy; turning it on
/// later leaves the earlier rows readable). What nulab did about them, once, when it first
/// opened the database encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EncryptionTurnedOn {
    pub at: i64,
    /// Plaintext records re-encrypted under the at-rest key.
    pub resealed: usize,
    /// Of those, current recovery passwords marked for rotation: every copy of the database
    /// file made while they were plaintext (a backup, a copy on a share) still reads them.
    pub rotations: usize,
    /// Whether the checkpoint after the re-encryption copied every page into the database
    /// file and emptied the WAL: only then does the file no longer hold the plaintext. A
    /// reader that held an older snapshot past the busy timeout leaves it partial (the
    /// plaintext pages stay until SQLite overwrites them).
    pub wal_truncated: bool,
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
    /// The device the operator named (a key ID held by several devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_volume: Option<String>,
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
    path: std::path::PathBuf,
    sealer: Sealer,
    rng: Box<dyn StoreRng>,
    /// SQLite's busy timeout on `conn`, and how long a checkpoint is retried.
    busy_timeout: std::time::Duration,
}

/// The busy timeout of the store's write connection.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Read-only connections to the store's database, beside the writer: WAL lets them read the
/// last committed state while the group-commit thread writes, so authentication, helpdesk
/// look-ups and the audit log never queue behind (or hold back) escrow commits. Every method
/// is a short indexed read; a connection is taken from a small pool, opened on demand.
pub struct StoreReader {
    path: std::path::PathBuf,
    pool: std::sync::Mutex<Vec<Connection>>,
}

/// Idle read connections a [`StoreReader`] keeps.
const READ_POOL: usize = 4;

impl StoreReader {
    /// Opens a reader on the database at `path` (created and migrated by [`Store::open`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let reader = Self {
            path: path.to_owned(),
            pool: std::sync::Mutex::new(Vec::new()),
        };
        let conn = reader.connect()?;
        reader.put(conn);
        Ok(reader)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A reader never writes, whatever SQL it is handed.
        conn.pragma_update(None, "query_only", true)?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let r = f(&conn);
        self.put(conn);
        r
    }

    /// The device a token belongs to, if any (re-enrolment revokes at once, even while a
    /// service runs: nothing is cached).
    pub fn authenticate(&self, token: &str) -> Result<Option<DeviceId>, StoreError> {
        self.with(|c| authenticate_in(c, token))
    }

    /// The operator account a token belongs to, if any.
    pub fn authenticate_operator(&self, token: &str) -> Result<Option<Operator>, StoreError> {
        self.with(|c| authenticate_operator_in(c, token))
    }

    /// What a helpdesk request names ([`Store::finish_disclosure`] audits and discloses it).
    pub fn lookup(&self, req: &HelpdeskRequest) -> Result<Lookup, StoreError> {
        self.with(|c| lookup_in(c, req))
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(audit_log_in)
    }

    /// SQLite's plan for a helpdesk look-up (`EXPLAIN QUERY PLAN`), one line per step: the
    /// tests check that it searches the key-ID index rather than scanning.
    pub fn lookup_plan(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {LOOKUP_SQL}"))?;
            let rows = stmt.query_map(
                params![
                    "8F3B1C2D",
                    "8F3B1C2E",
                    "recovery-password",
                    None::<String>,
                    None::<String>,
                    1
                ],
                |r| r.get::<_, String>(3),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL with
    /// `synchronous=FULL` and runs the migrations it lacks.
    pub fn open(path: &Path, sealer: Sealer, rng: Box<dyn StoreRng>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::from_connection(conn, path, sealer, rng)
    }

    /// A reader on this store's database (its own connections, see [`StoreReader`]).
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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
        path: &Path,
        sealer: Sealer,
        rng: Box<dyn StoreRng>,
    ) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        // FULL: the WAL is synced at every commit, so a commit survives power loss, not only a
        // process crash (NORMAL would lose the last commits on power loss).
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        if sealer.sealing() == Sealing::Plaintext {
            // Records an unencrypted run wrote here would never be re-encrypted (the migration
            // runs once) and the encrypted runs would refuse them as tampering.
            let turned_on_at: Option<i64> = conn
                .query_row("SELECT turned_on_at FROM encryption", [], |r| r.get(0))
                .optional()?;
            if let Some(turned_on_at) = turned_on_at {
                return Err(StoreError::EncryptedOpenedPlaintext { turned_on_at });
            }
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            sealer,
            rng,
            busy_timeout: BUSY_TIMEOUT,
        })
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
        authenticate_in(&self.conn, token)
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
        authenticate_operator_in(&self.conn, token)
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
        let tx = write_transaction(&mut self.conn)?;
        let seq = audit_in(&tx, req, None, outcome, now)?;
        tx.commit().map_err(StoreError::Audit)?;
        Ok(seq)
    }

    /// Switches a store that runs unencrypted to `sealer` (encrypted) and re-encrypts its
    /// plaintext records: [`Store::finish_turning_on_encryption`]. Refused if the store is
    /// already encrypted (its key is not replaced here).
    pub fn turn_on_encryption(
        &mut self,
        sealer: Sealer,
        now: i64,
    ) -> Result<Option<EncryptionTurnedOn>, StoreError> {
        if self.sealer.sealing() != Sealing::Plaintext {
            return Err(StoreError::KeyFile(
                "the store is already encrypted; its at-rest key is not replaced".into(),
            ));
        }
        // The store keeps its plaintext sealer until the migration has committed: if it
        // fails, the store goes on as it was instead of sealing under a key nothing recorded.
        let turned_on = turn_on_encryption_in(
            &mut self.conn,
            &sealer,
            self.rng.as_mut(),
            self.busy_timeout,
            now,
        )?;
        self.sealer = sealer;
        Ok(turned_on)
    }

    /// Runs once, the first time the database is opened encrypted (the service calls it at
    /// start): every record still stored in plaintext, from the time encryption was off, is
    /// re-encrypted in one transaction, with SQLite's `secure_delete` on so that the freed
    /// plaintext is overwritten, and the WAL is then checkpointed and truncated, so the
    /// database file no longer holds it, if no reader holds an older snapshot past the busy
    /// timeout ([`EncryptionTurnedOn::wal_truncated`] says which). Copies made before cannot be reached, so each current
    /// recovery password among those rows is marked for rotation, exactly as a disclosure is:
    /// the agent rotates it at its next escrow and the plaintext in the copies stops unlocking
    /// anything. (Key packages and TPM owner-auth hashes cannot be rotated by the agent: they
    /// stay as exposed as those copies.) The time and counts are recorded; after that, a
    /// plaintext row is refused again, as before, rather than trusted. `None` when the store is
    /// unencrypted or this already ran.
    pub fn finish_turning_on_encryption(
        &mut self,
        now: i64,
    ) -> Result<Option<EncryptionTurnedOn>, StoreError> {
        if self.sealer.sealing() == Sealing::Plaintext {
            return Ok(None);
        }
        turn_on_encryption_in(
            &mut self.conn,
            &self.sealer,
            self.rng.as_mut(),
            self.busy_timeout,
            now,
        )
    }

    /// When encryption was turned on for this database, if it has been.
    pub fn encryption_turned_on(&self) -> Result<Option<EncryptionTurnedOn>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT turned_on_at, resealed, rotations, wal_truncated FROM encryption",
                [],
                |r| {
                    Ok(EncryptionTurnedOn {
                        at: r.get(0)?,
                        resealed: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        rotations: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        wal_truncated: r.get(3)?,
                    })
                },
            )
            .optional()?)
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
        let mut tx = write_transaction(&mut self.conn)?;
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
    /// ambiguous; the device too when the key ID is held by several). Every attempt is audited,
    /// refused ones too; a disclosure's audit record, and the rotation mark of a disclosed
    /// recovery password, commit before the material is returned, and if the audit write fails
    /// nothing is returned. The look-up runs on this store's own connection; the service runs
    /// it on a [`StoreReader`] and calls [`Store::finish_disclosure`] on the writer.
    pub fn disclose(&mut self, req: &HelpdeskRequest, now: i64) -> Result<Disclosure, StoreError> {
        validate_helpdesk_request(req)?;
        let found = if req.role.may_disclose() {
            lookup_in(&self.conn, req)?
        } else {
            Lookup::NotFound // not looked at: refused below on the role
        };
        self.finish_disclosure(req, found, now)
    }

    /// Audits a look-up's result and, for exactly one record, opens it, marks a recovery
    /// password for rotation and returns it, all in one transaction that commits before the
    /// material leaves. Refuses (audited) a role that may not disclose whatever `found` says.
    pub fn finish_disclosure(
        &mut self,
        req: &HelpdeskRequest,
        found: Lookup,
        now: i64,
    ) -> Result<Disclosure, StoreError> {
        validate_helpdesk_request(req)?;
        let tx = write_transaction(&mut self.conn)?;
        let audit = |tx: &Transaction<'_>, id: Option<&RecordId>, outcome: &str| {
            audit_in(tx, req, id, outcome, now)
        };
        let refuse = |tx: Transaction<'_>, outcome: &str, e: StoreError| {
            audit(&tx, None, outcome)?;
            tx.commit().map_err(StoreError::Audit)?;
            Err(e)
        };
        if !req.role.may_disclose() {
            return refuse(tx, "refused-role", StoreError::RoleNotAllowed(req.role));
        }
        let row = match found {
            Lookup::NotFound => {
                let e = StoreError::NotFound {
                    query: req.query.as_str().to_owned(),
                    kind: req.kind,
                };
                return refuse(tx, "not-found", e);
            }
            Lookup::SeveralKeyIds(candidates) => {
                let e = StoreError::Ambiguous {
                    query: req.query.as_str().to_owned(),
                    candidates,
                };
                return refuse(tx, "ambiguous", e);
            }
            Lookup::HeldBySeveral(key_id, holders) => {
                let e = StoreError::HeldBySeveralDevices { key_id, holders };
                return refuse(tx, "held-by-several-devices", e);
            }
            Lookup::One(row) => row.0,
        };
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
        audit_log_in(&self.conn)
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

/// Every write transaction of the store starts `BEGIN IMMEDIATE`: it takes SQLite's write
/// lock at `BEGIN`, where the busy timeout applies. A deferred transaction whose first
/// statement reads (an escrow's version check) takes the lock only at its first write, and
/// if another connection holds it at that instant SQLite answers `SQLITE_BUSY` at once,
/// without the busy handler: the whole group commit failed that way (`escrow_scale`),
/// because a read connection that finds the WAL-index header being rewritten by a commit
/// re-reads it under the write lock, for a moment, as SQLite's readers do.
fn write_transaction(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
}

/// [`Store::finish_turning_on_encryption`] under `sealer`, which need not be the store's
/// yet. The check that it already ran is made inside the write transaction, so two writers
/// cannot both run it.
fn turn_on_encryption_in(
    conn: &mut Connection,
    sealer: &Sealer,
    rng: &mut dyn StoreRng,
    checkpoint_wait: std::time::Duration,
    now: i64,
) -> Result<Option<EncryptionTurnedOn>, StoreError> {
    conn.pragma_update(None, "secure_delete", true)?;
    let resealed = reseal_plaintext_rows(conn, sealer, rng, now);
    conn.pragma_update(None, "secure_delete", false)?;
    let Some((resealed, rotations)) = resealed? else {
        return Ok(None);
    };
    // Out of the WAL too: copy the re-encrypted pages into the database file and empty the
    // log. A reader that holds an older snapshot makes this a partial checkpoint: what it
    // found is recorded, not assumed.
    let wal_truncated = checkpoint_truncate(conn, checkpoint_wait)?;
    conn.execute(
        "UPDATE encryption SET wal_truncated = ?1",
        params![wal_truncated],
    )?;
    Ok(Some(EncryptionTurnedOn {
        at: now,
        resealed,
        rotations,
        wal_truncated,
    }))
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, retried for `wait` while readers keep it from
/// finishing: whether every WAL frame reached the database file and the log was emptied
/// (SQLite's result row: `busy` 0 and as many frames checkpointed as the log holds).
fn checkpoint_truncate(conn: &Connection, wait: std::time::Duration) -> Result<bool, StoreError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let row = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        let done = match row {
            Ok((busy, log, checkpointed)) => busy == 0 && log == checkpointed,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        if done {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Re-encrypts every plaintext row under `sealer` and records that it ran, in one `IMMEDIATE`
/// transaction: `(resealed, rotations)`, or `None` when the `encryption` row already exists.
fn reseal_plaintext_rows(
    conn: &mut Connection,
    sealer: &Sealer,
    rng: &mut dyn StoreRng,
    now: i64,
) -> Result<Option<(usize, usize)>, StoreError> {
    let tx = write_transaction(conn)?;
    let done: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM encryption)", [], |r| r.get(0))?;
    if done {
        return Ok(None);
    }
    type PlainRow = (String, String, String, String, i64, Zeroizing<Vec<u8>>);
    let rows: Vec<PlainRow> = {
        let mut stmt = tx.prepare(
            "SELECT device, volume, key_id, kind, version, material FROM records
             WHERE sealing = 0 ORDER BY device, volume, key_id, kind",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(5)?),
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let resealed = rows.len();
    let mut rotations = 0;
    for (device, volume, key_id, kind, version, material) in rows {
        let id = record_id(device, volume, key_id, &kind)?;
        let version_u64 = u64::try_from(version).map_err(|_| {
            StoreError::CorruptRow(format!("{}/{}/{}", id.device, id.volume, id.key_id))
        })?;
        let sealed = sealer
            .seal(&id, version_u64, &material, rng)
            .map_err(|e| seal_error(&id, e))?;
        drop(material);
        let (device, volume, key_id) = (id.device.as_str(), id.volume.as_str(), id.key_id.as_str());
        tx.execute(
            "UPDATE records SET sealing = ?5, nonce = ?6, material = ?7
             WHERE device = ?1 AND volume = ?2 AND key_id = ?3 AND kind = ?4",
            params![
                device,
                volume,
                key_id,
                kind,
                sealed.sealing as i64,
                sealed.nonce,
                sealed.bytes
            ],
        )?;
        rotations += tx.execute(
            "UPDATE records SET rotation_requested_at = ?5, rotation_because_plaintext = 1
             WHERE device = ?1 AND volume = ?2 AND key_id = ?3 AND kind = ?4
               AND kind = 'recovery-password' AND retired_at IS NULL
               AND rotation_requested_at IS NULL",
            params![device, volume, key_id, kind, now],
        )?;
    }
    tx.execute(
        "INSERT INTO encryption (id, turned_on_at, resealed, rotations) VALUES (1, ?1, ?2, ?3)",
        params![now, resealed as i64, rotations as i64],
    )?;
    tx.commit()?;
    Ok(Some((resealed, rotations)))
}

fn authenticate_in(conn: &Connection, token: &str) -> Result<Option<DeviceId>, StoreError> {
    let device: Option<String> = conn
        .prepare_cached("SELECT device FROM devices WHERE token_sha256 = ?1")?
        .query_row(params![&token_digest(token)[..]], |r| r.get(0))
        .optional()?;
    Ok(device.map(DeviceId::new).transpose()?)
}

fn authenticate_operator_in(
    conn: &Connection,
    token: &str,
) -> Result<Option<Operator>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT operator, role FROM operators WHERE token_sha256 = ?1")?
        .query_row(params![&token_digest(token)[..]], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(name, role)| {
        let role = HelpdeskRole::from_label(&role)
            .ok_or_else(|| StoreError::CorruptRow(format!("operators/{name}")))?;
        Ok(Operator { name, role })
    })
    .transpose()
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
            // Flag, never refuse, a key ID another device already holds (ARCHITECTURE.md).
            let shared_at = if outcome == EscrowOutcome::Inserted {
                tx.prepare_cached(
                    "SELECT 1 FROM records INDEXED BY records_by_key_id
                     WHERE key_id = ?1 AND device <> ?2 LIMIT 1",
                )?
                .exists(params![id.key_id.as_str(), id.device.as_str()])?
                .then_some(now)
            } else {
                None
            };
            tx.prepare_cached(
                "INSERT INTO records (device, volume, key_id, kind, version, sealing, nonce,
                                      material, escrowed_at, shared_key_id_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
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
                now,
                shared_at
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
    let rotate = pending_rotations_in(tx, &req.device)?;
    let mut rotate_because_plaintext = Vec::new();
    for (volume, key_id) in &rotate {
        let plaintext: bool = tx
            .prepare_cached(
                "SELECT rotation_because_plaintext FROM records
                 WHERE device = ?1 AND volume = ?2 AND key_id = ?3 AND kind = 'recovery-password'",
            )?
            .query_row(
                params![req.device.as_str(), volume.as_str(), key_id.as_str()],
                |r| r.get(0),
            )?;
        if plaintext {
            rotate_because_plaintext.push(key_id.clone());
        }
    }
    Ok(EscrowReceipt {
        outcomes,
        rotate,
        rotate_because_plaintext,
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

#[derive(Debug)]
struct StoredRow {
    id: RecordId,
    version: u64,
    escrowed_at: i64,
    retired_at: Option<i64>,
    shared_key_id_at: Option<i64>,
    sealed: SealedMaterial,
}

/// The exclusive upper bound of the key IDs that start with `prefix`: its last character
/// incremented. Key IDs and queries are ASCII (hex digits and dashes, KeyIdQuery), compared
/// byte by byte (SQLite's BINARY collation), so `prefix <= key_id < successor` is exactly
/// "starts with", and the key-ID index answers it as a range.
fn prefix_successor(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last = last.saturating_add(1);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The SQL of a helpdesk look-up: a range on the key-ID index, never a scan.
const LOOKUP_SQL: &str = "SELECT device, volume, key_id, kind, version, sealing, nonce, material,
        escrowed_at, retired_at, shared_key_id_at
     FROM records INDEXED BY records_by_key_id
     WHERE key_id >= ?1 AND key_id < ?2 AND kind = ?3
       AND (?4 IS NULL OR device = ?4) AND (?5 IS NULL OR volume = ?5)
     ORDER BY key_id, device, volume
     LIMIT ?6";

/// Finds what a helpdesk request names, reading only (no audit): on any connection.
pub(crate) fn lookup_in(conn: &Connection, req: &HelpdeskRequest) -> Result<Lookup, StoreError> {
    let rows = find_by_key_id(conn, req)?;
    let mut key_ids: Vec<KeyId> = rows.iter().map(|c| c.id.key_id.clone()).collect();
    key_ids.dedup(); // sorted by key ID
    if key_ids.len() > 1 {
        return Ok(Lookup::SeveralKeyIds(key_ids));
    }
    let mut rows = rows.into_iter();
    match (rows.next(), rows.len()) {
        (None, _) => Ok(Lookup::NotFound),
        (Some(one), 0) => Ok(Lookup::One(Box::new(FoundRecord(one)))),
        (Some(first), _) => {
            let key_id = first.id.key_id.clone();
            let holders = std::iter::once(first)
                .chain(rows)
                .map(|r| KeyHolder {
                    device: r.id.device,
                    volume: r.id.volume,
                    escrowed_at: r.escrowed_at,
                    shared_key_id_at: r.shared_key_id_at,
                })
                .collect();
            Ok(Lookup::HeldBySeveral(key_id, holders))
        }
    }
}

fn find_by_key_id(conn: &Connection, req: &HelpdeskRequest) -> Result<Vec<StoredRow>, StoreError> {
    let query = req.query.as_str();
    let mut stmt = conn.prepare_cached(LOOKUP_SQL)?;
    let rows = stmt.query_map(
        params![
            query,
            prefix_successor(query),
            req.kind.label(),
            req.device.as_ref().map(DeviceId::as_str),
            req.volume.as_ref().map(VolumeId::as_str),
            MAX_LOOKUP_ROWS as i64
        ],
        |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ),
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<i64>>(10)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let ((d, v, k, kd), version, sealing, nonce, bytes, escrowed_at, retired_at, shared) = row?;
        let id = record_id(d, v, k, &kd)?;
        let sealing = Sealing::from_column(sealing)
            .ok_or_else(|| seal_error(&id, SealError::UnknownSealing(sealing)))?;
        out.push(StoredRow {
            version: u64::try_from(version)
                .map_err(|_| StoreError::CorruptRow(format!("version of {}", id.key_id)))?,
            id,
            escrowed_at,
            retired_at,
            shared_key_id_at: shared,
            sealed: SealedMaterial {
                sealing,
                nonce,
                bytes,
            },
        });
    }
    Ok(out)
}

fn audit_log_in(conn: &Connection) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, operator, role, query, key_id, device, volume, kind, reason, outcome,
                chosen_device, chosen_volume
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
            chosen_device: r.get(11)?,
            chosen_volume: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
                            outcome, chosen_device, chosen_volume)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
            outcome,
            req.device.as_ref().map(DeviceId::as_str),
            req.volume.as_ref().map(VolumeId::as_str)
        ],
    )
    .map_err(StoreError::Audit)?;
    Ok(tx.last_insert_rowid())
}

#[cfg(test)]
mod tests;
