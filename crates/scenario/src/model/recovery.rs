//! The recovery-escrow part of the scenario file format (issue 7): the recovery service, the
//! site's management points, the helpdesk's requests and what must come out. The tables are
//! `deny_unknown_fields` like the rest of the format, names are `Spanned` so that a reference
//! to something that does not exist is reported at its `FILE:LINE:COLUMN`, and every key has a
//! default that keeps a small scenario short (an encrypted database, a 90-minute agent check,
//! the organisation's root on every client, the helpdesk asking by the first 8 characters of
//! the client's recovery key ID).

use std::time::Duration;

use recovery_service::store::HelpdeskRole;
use serde::Deserialize;
use toml::Spanned;
use volume::ProtectorKind;

use super::{EventSpec, Loaded, Scenario, ScenarioError};

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
    #[serde(default = "default_check_every", with = "super::duration")]
    pub check_every: Duration,
    /// With `database = "unencrypted"`: the time "Encrypt recovery data in the database" is
    /// turned on, after records were stored in plaintext (the seed says to turn it on before
    /// the first policy deployment).
    #[serde(default, with = "optional_duration")]
    pub encrypt_at: Option<Spanned<Duration>>,
    /// `[[recovery.policy]]`: the BitLocker management policies deployed. None listed: every
    /// client with an agent is targeted by one with a Client Management rule.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicySpec>,
    /// The Configuration Manager version of the site (`2103`); a protection newer than it is
    /// refused. Absent: no check.
    pub site_version: Option<Spanned<u32>>,
    /// Clients the organisation's PKI enrolled for a client authentication certificate (what
    /// an HTTPS management point asks for).
    #[serde(default)]
    pub client_certificates: Vec<Spanned<String>>,
}

/// `[[recovery.policy]]`: a BitLocker management policy and the clients it targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    /// Its Client Management page configures BitLocker Management Services (the rule that
    /// makes clients escrow to the recovery service).
    pub client_management: bool,
    /// The clients (with `management_points`) it is deployed to.
    pub targets: Vec<Spanned<String>>,
}

impl RecoverySpec {
    /// The policy a client is targeted with, in the recovery service crate's terms.
    pub fn policy_of(&self, client: &str) -> recovery_service::agent::BitLockerPolicy {
        use recovery_service::agent::BitLockerPolicy;
        if self.policies.is_empty() {
            return BitLockerPolicy::WithClientManagement;
        }
        let targeting = self
            .policies
            .iter()
            .filter(|p| p.targets.iter().any(|t| t.get_ref() == client));
        let mut policy = BitLockerPolicy::NotTargeted;
        for p in targeting {
            if p.client_management {
                return BitLockerPolicy::WithClientManagement;
            }
            policy = BitLockerPolicy::WithoutClientManagement;
        }
        policy
    }
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            database: DatabaseMode::default(),
            check_every: default_check_every(),
            encrypt_at: None,
            policies: Vec::new(),
            site_version: None,
            client_certificates: Vec::new(),
        }
    }
}

/// An optional duration in the format's one grammar, with its place in the file.
mod optional_duration {
    use std::time::Duration;

    use serde::Deserialize as _;
    use toml::Spanned;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Spanned<Duration>>, D::Error> {
        let text = Option::<Spanned<String>>::deserialize(d)?;
        text.map(|t| {
            let span = t.span();
            humantime::parse_duration(t.get_ref())
                .map(|v| Spanned::new(span, v))
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{:?} is not a duration like 90s, 500ms or 2m ({e})",
                        t.get_ref()
                    ))
                })
        })
        .transpose()
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
    /// Who issued its server authentication certificate: `organisation-ca` (the default: the
    /// organisation's PKI, trusted once Group Policy adds its root) or `public-ca` (a public
    /// CA whose root ships with Windows, trusted with no configuration).
    pub certificate: Option<CertificateSpec>,
    /// How the recovery service is protected, the seed's three ways:
    /// `https-management-point` (1910: the management point's client connections are HTTPS;
    /// clients need a PKI client certificate), `https-website` (2002: only the IIS website is
    /// HTTPS on an HTTP management point) or `enhanced-http` (2103: the site issues the
    /// certificate). Absent: an HTTPS website or management point, as before.
    pub protection: Option<Spanned<ProtectionSpec>>,
}

/// `[[management_point]] protection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionSpec {
    HttpsManagementPoint,
    HttpsWebsite,
    EnhancedHttp,
}

impl ProtectionSpec {
    pub fn protection(self) -> recovery_service::sim::Protection {
        use recovery_service::sim::Protection;
        match self {
            ProtectionSpec::HttpsManagementPoint => Protection::HttpsManagementPoint,
            ProtectionSpec::HttpsWebsite => Protection::HttpsWebsite,
            ProtectionSpec::EnhancedHttp => Protection::EnhancedHttp,
        }
    }
}

/// `[[management_point]] certificate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateSpec {
    OrganisationCa,
    PublicCa,
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
    #[serde(with = "super::duration")]
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

/// Whether the scenario has a recovery service.
pub fn present(s: &Scenario) -> bool {
    s.recovery.is_some() || !s.management_points.is_empty()
}

/// An `[[event]]` the recovery lab applies rather than the network simulation: it names a
/// management point, or is a trust change on a client with an agent.
pub fn is_recovery_event(s: &Scenario, event: &EventSpec) -> bool {
    let host = event.host.get_ref();
    s.management_points.iter().any(|m| m.name.get_ref() == host)
        || (event.action.get_ref().starts_with("trust-")
            && s.clients
                .iter()
                .any(|c| c.name.get_ref() == host && !c.management_points.is_empty()))
}

/// What an event does in the recovery lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabAction {
    Face(FaceSpec),
    Trust(TrustSpec),
}

pub fn lab_action(s: &Scenario, event: &EventSpec) -> Option<LabAction> {
    let host = event.host.get_ref();
    let is_mp = s.management_points.iter().any(|m| m.name.get_ref() == host);
    Some(match (is_mp, event.action.get_ref().as_str()) {
        (true, "https") => LabAction::Face(FaceSpec::Https),
        (true, "http") => LabAction::Face(FaceSpec::Http),
        (true, "down") => LabAction::Face(FaceSpec::Down),
        (false, "trust-organisation-root") => LabAction::Trust(TrustSpec::OrganisationRoot),
        (false, "trust-public-roots") => LabAction::Trust(TrustSpec::PublicRoots),
        _ => return None,
    })
}

/// Checks the recovery sections' references when the file is read, so that a misspelt
/// management point or client is reported at its `FILE:LINE:COLUMN` before anything runs.
pub fn check_references(loaded: &Loaded) -> Result<(), ScenarioError> {
    let s = &loaded.scenario;
    let mut seen: Vec<&Spanned<String>> = Vec::new();
    for mp in &s.management_points {
        let name = mp.name.get_ref();
        if name.is_empty() || name.contains(['/', ':', ' ']) {
            return Err(loaded.error_at(
                mp.name.span(),
                format!("{name:?} is not a management point's DNS name"),
            ));
        }
        let taken = seen.iter().any(|n| n.get_ref() == name)
            || s.routers.iter().any(|r| r.name.get_ref() == name)
            || s.dhcp_servers.iter().any(|d| d.name.get_ref() == name)
            || s.wds.iter().any(|w| w.name.get_ref() == name)
            || s.clients.iter().any(|c| c.name.get_ref() == name);
        if taken {
            return Err(loaded.error_at(mp.name.span(), format!("two hosts are called {name:?}")));
        }
        seen.push(&mp.name);
    }
    for client in &s.clients {
        if client.management_points.is_empty() {
            continue;
        }
        for mp in &client.management_points {
            if !seen.iter().any(|n| n.get_ref() == mp.get_ref()) {
                return Err(
                    loaded.error_at(mp.span(), format!("no management point {:?}", mp.get_ref()))
                );
            }
        }
        if client.count != 1 {
            return Err(loaded.error_at(
                client.name.span(),
                "a client with a BitLocker management agent (`management_points`) is one \
                 machine (`count = 1`)",
            ));
        }
        let has_password = client
            .protectors
            .iter()
            .any(|p| p.get_ref().parse::<ProtectorKind>() == Ok(ProtectorKind::RecoveryPassword));
        if !has_password {
            return Err(loaded.error_at(
                client.name.span(),
                "the agent escrows the recovery password: add \"recovery-password\" to \
                 `protectors`",
            ));
        }
    }
    let agent = |name: &Spanned<String>| -> Result<(), ScenarioError> {
        let found = s
            .clients
            .iter()
            .any(|c| c.name.get_ref() == name.get_ref() && !c.management_points.is_empty());
        if found {
            Ok(())
        } else {
            Err(loaded.error_at(
                name.span(),
                format!(
                    "no client {:?} with a BitLocker management agent (`management_points`)",
                    name.get_ref()
                ),
            ))
        }
    };
    for request in &s.helpdesk {
        agent(&request.client)?;
        if let Some(role) = &request.role {
            role.get_ref()
                .parse::<HelpdeskRole>()
                .map_err(|err| loaded.error_at(role.span(), err))?;
        }
    }
    for expect in &s.escrow_expectations {
        agent(&expect.client)?;
    }
    for policy in s.recovery.iter().flat_map(|r| &r.policies) {
        for target in &policy.targets {
            agent(target)?;
        }
    }
    for client in s.recovery.iter().flat_map(|r| &r.client_certificates) {
        agent(client)?;
    }
    let site_version = s.recovery.as_ref().and_then(|r| r.site_version.as_ref());
    if let Some(version) = site_version
        && *version.get_ref() < 1910
    {
        return Err(loaded.error_at(
            version.span(),
            "BitLocker management in Configuration Manager starts with version 1910",
        ));
    }
    for mp in &s.management_points {
        let Some(protection) = &mp.protection else {
            continue;
        };
        let p = protection.get_ref().protection();
        if mp.face == FaceSpec::Http {
            return Err(loaded.error_at(
                protection.span(),
                "a management point with `face = \"http\"` has no HTTPS at all: give it \
                 `face = \"https\"` (or \"down\") to protect it",
            ));
        }
        if p == recovery_service::sim::Protection::EnhancedHttp && mp.certificate.is_some() {
            return Err(loaded.error_at(
                protection.span(),
                "with enhanced HTTP the site issues the certificate: remove `certificate`",
            ));
        }
        if let Some(version) = site_version
            && *version.get_ref() < p.since_version()
        {
            return Err(loaded.error_at(
                protection.span(),
                format!(
                    "{} needs Configuration Manager {} or later; the site is version {}",
                    p.name(),
                    p.since_version(),
                    version.get_ref()
                ),
            ));
        }
    }
    for event in &s.events {
        if is_recovery_event(s, event) && lab_action(s, event).is_none() {
            return Err(loaded.error_at(
                event.action.span(),
                format!(
                    "unknown action {:?} (a management point: https, http, down; a client with \
                     an agent: trust-organisation-root, trust-public-roots)",
                    event.action.get_ref()
                ),
            ));
        }
    }
    if let Some(recovery) = &s.recovery
        && let Some(at) = &recovery.encrypt_at
        && recovery.database != DatabaseMode::Unencrypted
    {
        return Err(loaded.error_at(
            at.span(),
            "`encrypt_at` turns encryption on for a database that started unencrypted: add \
             database = \"unencrypted\"",
        ));
    }
    let has_lab_parts = !s.helpdesk.is_empty()
        || !s.escrow_expectations.is_empty()
        || s.expect_database.is_some()
        || s.clients.iter().any(|c| !c.management_points.is_empty());
    if has_lab_parts && s.management_points.is_empty() {
        return Err(loaded.error_at(
            0..0,
            "recovery escrow needs at least one [[management_point]]",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use recovery_service::agent::BitLockerPolicy;

    #[test]
    fn a_client_talks_to_the_service_only_under_a_policy_with_client_management() {
        let none: RecoverySpec = toml::from_str("").expect("empty");
        assert_eq!(none.policy_of("pc1"), BitLockerPolicy::WithClientManagement);
        let spec: RecoverySpec = toml::from_str(
            "[[policy]]\nname = \"a\"\nclient_management = false\ntargets = [\"pc1\", \"pc2\"]\n\
             [[policy]]\nname = \"b\"\nclient_management = true\ntargets = [\"pc2\"]\n",
        )
        .expect("policies");
        assert_eq!(
            spec.policy_of("pc1"),
            BitLockerPolicy::WithoutClientManagement
        );
        assert_eq!(spec.policy_of("pc2"), BitLockerPolicy::WithClientManagement);
        assert_eq!(spec.policy_of("pc3"), BitLockerPolicy::NotTargeted);
    }

    fn scenario(recovery: &str, mp: &str) -> String {
        format!(
            "title = \"t\"\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n\
             [recovery]\n{recovery}\n[[management_point]]\nname = \"mp1.contoso.com\"\n{mp}\n\
             [[client]]\nname = \"pc1\"\nprotectors = [\"tpm\", \"recovery-password\"]\n\
             management_points = [\"mp1.contoso.com\"]\n[[client.adapter]]\nsegment = \"corp\"\n\
             [[expect_escrow]]\nclient = \"pc1\"\nescrowed = true\n"
        )
    }

    fn error_of(text: String) -> String {
        match super::super::parse(std::path::Path::new("t.toml"), text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_protection_newer_than_the_site_is_refused_at_its_line() {
        let ok = error_of(scenario(
            "site_version = 2103",
            "face = \"https\"\nprotection = \"enhanced-http\"",
        ));
        assert_eq!(ok, "");
        let old = error_of(scenario(
            "site_version = 2002",
            "face = \"https\"\nprotection = \"enhanced-http\"",
        ));
        assert!(
            old.starts_with("t.toml:10:") && old.contains("needs Configuration Manager 2103"),
            "{old}"
        );
        let website = error_of(scenario(
            "site_version = 1910",
            "face = \"https\"\nprotection = \"https-website\"",
        ));
        assert!(website.contains("2002 or later"), "{website}");
        let http = error_of(scenario(
            "",
            "face = \"http\"\nprotection = \"https-website\"",
        ));
        assert!(http.contains("no HTTPS at all"), "{http}");
        let site_cert = error_of(scenario(
            "",
            "face = \"https\"\ncertificate = \"public-ca\"\nprotection = \"enhanced-http\"",
        ));
        assert!(
            site_cert.contains("the site issues the certificate"),
            "{site_cert}"
        );
        let later = error_of(scenario("encrypt_at = \"1m\"", "face = \"https\""));
        assert!(later.contains("database = \"unencrypted\""), "{later}");
    }
}
