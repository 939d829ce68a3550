//! The recovery-escrow part of the scenario file format (issue 7): the recovery service, the
//! site's management points, the helpdesk's requests and what must come out. The tables are
//! `deny_unknown_fields` like the rest of the format, names are `Spanned` so that a reference
//! to something that does not exist is reported at its `FILE:LINE:COLUMN`, and every key has a
//! default that keeps a small scenario short (an encrypted database, a 90-minute agent check,
//! the organisation's root on every client, the helpdesk asking by the first 8 characters of
//! the client's recovery key ID).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// `[recovery]`: the recovery service on the management points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySpec {
    /// "Encrypt recovery data in the database" (`encrypted`, the default) or `unencrypted`,
    /// the comparison mode.
    #[serde(default)]
    pub database: DatabaseMode,
    /// How often a running client's BitLocker management agent checks in after Windows has
    /// started (ConfigMgr's default status check is every 90 minutes).
    #[serde(default = "default_check_every", with = "crate::model::duration")]
    pub check_every: Duration,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            database: DatabaseMode::default(),
            check_every: default_check_every(),
        }
    }
}

fn default_check_every() -> Duration {
    Duration::from_secs(90 * 60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseMode {
    #[default]
    Encrypted,
    Unencrypted,
}

/// `[[management_point]]`: a management point hosting the recovery service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementPointSpec {
    /// Its DNS name, which is also its name in the scenario (`mp1.contoso.com`).
    pub name: Spanned<String>,
    /// What the recovery service's website offers at the start.
    pub face: FaceSpec,
}

/// `https`: HTTPS-enabled (the IIS website or the whole management point); `http`: HTTP only,
/// the recovery service answers 403.4; `down`: an HTTPS point that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaceSpec {
    Https,
    Http,
    Down,
}

/// Which roots a client trusts for the management point's server certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustSpec {
    /// Only the public CAs Windows ships: the organisation's certificate is not trusted.
    PublicRoots,
    /// The organisation's root too, added by Group Policy (most PKIs do this).
    #[default]
    OrganisationRoot,
}

/// `[[helpdesk]]`: at a time, an operator asks the recovery service for a client's recovery
/// password, with a reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelpdeskSpec {
    #[serde(with = "crate::model::duration")]
    pub at: Duration,
    /// The operator's account (`CONTOSO\\helpdesk1`); created with `role` at the start.
    pub operator: String,
    /// `helpdesk` (default), `administrator` or `auditor` (who may read the audit, not keys).
    pub role: Option<Spanned<String>>,
    /// The client whose recovery password is asked for.
    pub client: Spanned<String>,
    /// Why (the audit records it).
    pub reason: String,
    /// What the operator types as the key ID; by default the first 8 characters of the
    /// client's recovery key ID at that time, as the recovery screen shows it.
    pub key_id: Option<String>,
}

/// `[[expect_escrow]]`: what must come out of a client's agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowExpectation {
    pub client: Spanned<String>,
    /// Whether the client's last escrow cycle got its recovery information into the service.
    pub escrowed: Option<bool>,
    /// Words of the reason one of its failed cycles gave.
    pub reason_contains: Option<String>,
    /// Substrings that must appear in its `BitLockerManagementHandler.log`.
    #[serde(default)]
    pub handler_log_contains: Vec<String>,
    /// A password the helpdesk disclosed was rotated and the new one re-escrowed; the old one
    /// no longer unlocks the volume.
    pub rotated: Option<bool>,
    /// What the helpdesk disclosed for this client unlocks its volume.
    pub disclosed_unlocks: Option<bool>,
}

/// `[expect_database]`: what the recovery service's database holds at the end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseExpectation {
    /// Recovery passwords are readable in the database file as they are (`true`), or only as
    /// AES-256-GCM ciphertext (`false`).
    pub plaintext: Option<bool>,
    /// How many records (rows) it holds, retired ones included.
    pub records: Option<u64>,
    /// The audit log's outcomes, oldest first (`disclosed`, `refused-role`...).
    pub audit: Option<Vec<String>>,
}
