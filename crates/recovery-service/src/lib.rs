//! Recovery-key escrow: the safety net under every failed unlock (issue 7).
//!
//! ConfigMgr clients back up BitLocker recovery information (recovery passwords with their key
//! ID, key packages, TPM owner-auth hashes) to a recovery service on a management point, over
//! HTTPS only; the helpdesk reads it back when a user is locked out. This crate is that
//! service, its database and the client agent:
//!
//! ```text
//!  agent (sans-IO EscrowRun: MP order,      recovery service (axum over rustls)
//!  retries, failover, handler log)          ┌────────────────────────────────────┐
//!        │ shell: rustls + hyper            │ token → device; a device writes    │
//!        └──── HTTPS POST escrow ──────────▶│ only its own records               │
//!                                           │        │                           │
//!  plain HTTP ───────────▶ 403.4            │ GroupCommitter (one thread,        │
//!                                           │ group commit, ack after COMMIT)    │
//!  helpdesk ── HTTPS: key ID, role, reason ▶│ Store: SQLite WAL synchronous=FULL │
//!        ◀── material after audit commit ── │ AES-256-GCM, identity as AAD       │
//!                                           └────────────────────────────────────┘
//! ```
//!
//! - [`record`]: identities (device, volume, key ID, kind), versions, validation.
//! - [`seal`]: encryption at rest under a key file kept outside the database.
//! - [`store`]: the database, migrations, upsert (newer wins), disclosure with audit, rotation;
//!   its read connections ([`store::StoreReader`]) for authentication and helpdesk look-ups (a
//!   range on the key-ID index) beside the writer.
//! - [`committer`]: the store's writer on its own thread with group commit.
//! - [`wire`]: the HTTP API's paths and JSON bodies.
//! - [`server`]: the HTTPS application, the plain-HTTP refusal, TLS, start-up; why device
//!   tokens rather than mutual TLS; the limits that bound what any client can hold.
//! - [`agent`]: the client's decisions (sans-IO) and [`agent::shell`], its tokio shell
//!   (escrow, the rotate-and-re-escrow cycle, the helpdesk's client calls).
//! - [`protected_volume`]: what an unlocked BitLocker volume escrows, and its rotation.
//! - [`pki`]: deterministic server-authentication certificates for management points.
//! - [`sim`]: the service, management points and devices in a deterministic simulation: the
//!   issue's scenarios for the scenario runner.
//!
//! The crate never acknowledges an escrow before it is durable, never discloses a key without
//! a durable audit record, refuses plain HTTP for escrow (both sides: the service refuses it,
//! the agent never sends material over it), and never lets one device's escrow stand between
//! the helpdesk and another device's key (a key ID held by several devices is disclosed by
//! device).

pub mod agent;
pub mod committer;
pub mod pki;
pub mod protected_volume;
pub mod record;
pub mod seal;
pub mod server;
pub mod sim;
pub mod store;
pub mod wire;
