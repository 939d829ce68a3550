//! The Group Policy settings and the certificate store that decide which protectors a volume
//! has, as the seed describes them:
//!
//! - "Require additional authentication at startup" with its TPM startup PIN option: whether a
//!   TPM-only protector or a TPM+PIN protector may be added;
//! - "Configure minimum PIN length for startup" ([`MinimumPinLength`]): a startup PIN has 4 to
//!   20 digits, and the policy raises the floor (to at most 20). The policy is checked when a
//!   PIN is set (`manage-bde -protectors -add -tpmandpin`), so a PIN set before the floor was
//!   raised keeps working. Not configured, nulab keeps BitLocker's absolute floor of 4 (the
//!   seed is silent on the default; later Windows releases ship a higher one);
//! - "Allow network unlock at startup", and the client's Network Unlock certificate store
//!   (FVE_NKP), which holds one certificate at a time;
//! - "The Network (Certificate Based) protector will be added only after a reboot, with the
//!   policy enabled and a valid certificate present in the FVE_NKP store", and "when this
//!   policy setting is updated to disabled on client computers, any Network Unlock key protector
//!   on the computer is deleted": [`apply_at_reboot`]. A Network Unlock client also needs "at
//!   least one TPM protector".
//! - "Alternatively, the BitLocker network unlock certificate policy can be deleted on the
//!   domain controller to accomplish the same task for an entire domain": Group Policy then
//!   empties every client's FVE_NKP store, and the reboot that finds the store empty deletes
//!   the protector, as a disabled "Allow network unlock at startup" does. (Before issue 19 an
//!   emptied store kept the protector, contrary to the seed.)

use nkpu::Thumbprint;
use rand_core::CryptoRngCore;
use rsa::RsaPublicKey;
use serde::Serialize;
use tpm::{PcrSelection, Tpm};

use crate::image::{Volume, VolumeError};
use crate::keys::VolumeKeys;
use crate::protector::{ProtectorDetail, ProtectorId, ProtectorKind};

/// The BitLocker Network Unlock application policy / EKU (the seed's `certreq` example).
pub use certificates::oid::NETWORK_UNLOCK as NETWORK_UNLOCK_OID;

/// The TPM startup PIN option of "Require additional authentication at startup".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartupPin {
    /// "Require startup PIN with TPM": TPM-only protectors are refused.
    Require,
    /// "Allow startup PIN with TPM" (also Windows' behaviour when the policy is not configured).
    #[default]
    Allow,
    /// "Do not allow startup PIN with TPM".
    DoNotAllow,
}

/// The client's BitLocker Group Policy, as far as protectors are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupPolicy {
    pub startup_pin: StartupPin,
    /// "Allow network unlock at startup".
    pub allow_network_unlock: bool,
}

/// The FVE registry values the seed's script for servers before Windows Server 2012 sets on
/// each client (`reg add "HKLM\\SOFTWARE\\Policies\\Microsoft\\FVE" /v NAME /t REG_DWORD /d VALUE`),
/// beside `certutil -f -grouppolicy -addstore FVE_NKP BitLocker-NetworkUnlock.cer`.
pub const PRE_2012_FVE_VALUES: [(&str, u32); 7] = [
    ("OSManageNKP", 1),
    ("UseAdvancedStartup", 1),
    ("UsePIN", 2),
    ("UseTPMPIN", 2),
    ("UseTPM", 2),
    ("UseTPMKey", 2),
    ("UseTPMKeyPIN", 2),
];

/// The `reg add` command that sets one FVE value, as the seed's script writes it.
pub fn fve_reg_add(name: &str, value: u32) -> String {
    format!(
        "reg add \"HKLM\\SOFTWARE\\Policies\\Microsoft\\FVE\" /v {name} /t REG_DWORD /d {value} /f"
    )
}

/// Why Group Policy refuses a protector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyRefusal {
    #[error("Group Policy requires a startup PIN with TPM: use a TPM And PIN protector")]
    PinRequired,
    #[error("Group Policy does not allow a startup PIN with TPM")]
    PinNotAllowed,
    #[error("Network Unlock protectors are added by Group Policy at reboot, not by hand")]
    NetworkUnlockByPolicyOnly,
}

impl GroupPolicy {
    /// The policy the FVE registry values stand for: what Group Policy writes there on later
    /// servers, and what the seed's pre-2012 script writes by hand. `OSManageNKP` 1 is "Allow
    /// network unlock at startup"; `UseAdvancedStartup` 1 is "Require additional
    /// authentication at startup", whose TPM startup PIN option is `UseTPMPIN` (0 do not
    /// allow, 1 require, 2 allow); `UsePIN`, `UseTPM`, `UseTPMKey` and `UseTPMKeyPIN` are the
    /// policy's other startup options, 0 to 2 likewise (nulab's protectors need no more of
    /// them than to be valid). An unknown name or a value out of range is refused.
    pub fn from_fve_registry(values: &[(&str, u32)]) -> Result<Self, String> {
        let mut policy = GroupPolicy::default();
        let mut advanced_startup = false;
        let mut tpm_pin = None;
        for (name, value) in values {
            let option = |value: u32| {
                if value <= 2 {
                    Ok(value)
                } else {
                    Err(format!("FVE value {name} is {value}: 0, 1 or 2"))
                }
            };
            match *name {
                "OSManageNKP" | "UseAdvancedStartup" if *value > 1 => {
                    return Err(format!("FVE value {name} is {value}: 0 or 1"));
                }
                "OSManageNKP" => policy.allow_network_unlock = *value == 1,
                "UseAdvancedStartup" => advanced_startup = *value == 1,
                "UseTPMPIN" => tpm_pin = Some(option(*value)?),
                "UsePIN" | "UseTPM" | "UseTPMKey" | "UseTPMKeyPIN" => {
                    option(*value)?;
                }
                other => return Err(format!("unknown FVE value {other:?}")),
            }
        }
        if advanced_startup {
            policy.startup_pin = match tpm_pin {
                Some(0) => StartupPin::DoNotAllow,
                Some(1) => StartupPin::Require,
                _ => StartupPin::Allow,
            };
        }
        Ok(policy)
    }

    /// Whether an administrator may add a protector of `kind` by hand under this policy.
    pub fn permits(&self, kind: ProtectorKind) -> Result<(), PolicyRefusal> {
        match (kind, self.startup_pin) {
            (ProtectorKind::Tpm, StartupPin::Require) => Err(PolicyRefusal::PinRequired),
            (ProtectorKind::TpmAndPin, StartupPin::DoNotAllow) => Err(PolicyRefusal::PinNotAllowed),
            (ProtectorKind::NetworkUnlock, _) => Err(PolicyRefusal::NetworkUnlockByPolicyOnly),
            _ => Ok(()),
        }
    }
}

/// "Configure minimum PIN length for startup": the fewest digits a new startup PIN may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MinimumPinLength(u8);

/// Why a startup PIN is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinRefusal {
    NotDigits,
    TooShort { digits: usize, minimum: u8 },
    TooLong { digits: usize },
}

impl std::fmt::Display for PinRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: usize| format!("{n} digit{}", if n == 1 { "" } else { "s" });
        match self {
            Self::NotDigits => f.write_str("a startup PIN is digits only"),
            Self::TooShort { digits, minimum } if *minimum > MinimumPinLength::FLOOR => write!(
                f,
                "the PIN has {}; Group Policy \"Configure minimum PIN length for startup\" \
                 requires at least {minimum}",
                count(*digits)
            ),
            Self::TooShort { digits, minimum } => write!(
                f,
                "the PIN has {}; a startup PIN has at least {minimum}",
                count(*digits)
            ),
            Self::TooLong { digits } => write!(
                f,
                "the PIN has {}; a startup PIN has at most {}",
                count(*digits),
                MinimumPinLength::CEILING
            ),
        }
    }
}

impl MinimumPinLength {
    /// BitLocker's own floor: a startup PIN has at least 4 digits whatever the policy says.
    pub const FLOOR: u8 = 4;
    /// The longest startup PIN, and the highest floor the policy may set.
    pub const CEILING: u8 = 20;

    /// The policy set to `digits`: refused (with why) outside 4 to 20.
    pub fn new(digits: u8) -> Result<Self, String> {
        if (Self::FLOOR..=Self::CEILING).contains(&digits) {
            Ok(Self(digits))
        } else {
            Err(format!(
                "a minimum PIN length is {} to {} digits, not {digits}",
                Self::FLOOR,
                Self::CEILING
            ))
        }
    }

    pub fn digits(self) -> u8 {
        self.0
    }

    /// Whether `pin` may be set as a startup PIN under this policy.
    pub fn check(self, pin: &str) -> Result<(), PinRefusal> {
        if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinRefusal::NotDigits);
        }
        let digits = pin.len();
        if digits > usize::from(Self::CEILING) {
            return Err(PinRefusal::TooLong { digits });
        }
        if digits < usize::from(self.0) {
            return Err(PinRefusal::TooShort {
                digits,
                minimum: self.0,
            });
        }
        Ok(())
    }
}

impl Default for MinimumPinLength {
    /// Not configured: BitLocker's floor of 4.
    fn default() -> Self {
        Self(Self::FLOOR)
    }
}

/// A certificate fit for Network Unlock, as the FVE_NKP store holds it: the certificates
/// crate's [`certificates::NetworkUnlockCertificate`] (RSA-2048, the Network Unlock EKU,
/// keyEncipherment when key usage is present, application policies naming Network Unlock when
/// present), so the client's store and the server's provider judge a certificate by one rule.
/// This wrapper only adds [`from_der`](Self::from_der) for callers holding bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkUnlockCertificate(certificates::NetworkUnlockCertificate);

/// Why a certificate is not valid for Network Unlock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The bytes are not one DER X.509 certificate.
    #[error(transparent)]
    Parse(#[from] certificates::ImportError),
    /// A certificate, but not fit for Network Unlock; every reason is listed.
    #[error(transparent)]
    Unfit(#[from] certificates::Unfit),
}

impl NetworkUnlockCertificate {
    /// Parses a DER certificate (a `.cer`) and checks its fitness.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let certificate = certificates::Certificate::from_der(der)?;
        Ok(Self(
            certificates::NetworkUnlockCertificate::from_certificate(certificate)?,
        ))
    }

    /// The certificates crate's validated form, for code that speaks it.
    pub fn checked(&self) -> &certificates::NetworkUnlockCertificate {
        &self.0
    }

    pub fn der(&self) -> &[u8] {
        self.0.der()
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.0.thumbprint()
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        self.0.public_key()
    }
}

impl From<certificates::NetworkUnlockCertificate> for NetworkUnlockCertificate {
    fn from(checked: certificates::NetworkUnlockCertificate) -> Self {
        Self(checked)
    }
}

impl TryFrom<certificates::Certificate> for NetworkUnlockCertificate {
    type Error = CertificateError;

    fn try_from(certificate: certificates::Certificate) -> Result<Self, CertificateError> {
        Ok(Self(
            certificates::NetworkUnlockCertificate::from_certificate(certificate)?,
        ))
    }
}

/// The client's FVE_NKP store: one Network Unlock certificate at a time, deployed by Group
/// Policy ("Add Network Unlock Certificate") or `certutil -addstore FVE_NKP`.
#[derive(Clone, Debug, Default)]
pub struct NetworkUnlockCertificateStore {
    certificate: Option<NetworkUnlockCertificate>,
}

impl NetworkUnlockCertificateStore {
    /// Installs `certificate`, replacing the previous one (returned).
    pub fn install(
        &mut self,
        certificate: NetworkUnlockCertificate,
    ) -> Option<NetworkUnlockCertificate> {
        self.certificate.replace(certificate)
    }

    pub fn remove(&mut self) -> Option<NetworkUnlockCertificate> {
        self.certificate.take()
    }

    pub fn certificate(&self) -> Option<&NetworkUnlockCertificate> {
        self.certificate.as_ref()
    }

    /// The store as `reg query` shows it on the client (the seed's troubleshooting check of
    /// "the registry key HKEY_LOCAL_MACHINE\\Software\\Policies\\Microsoft\\SystemCertificates\\FVE_NKP"):
    /// a subkey per certificate, named by its thumbprint in upper case.
    pub fn registry_text(&self) -> String {
        let key = "HKEY_LOCAL_MACHINE\\Software\\Policies\\Microsoft\\SystemCertificates\\FVE_NKP\\Certificates";
        match &self.certificate {
            None => format!("{key}\n    (no certificate)\n"),
            Some(certificate) => format!(
                "{key}\n{key}\\{}\n",
                certificate.thumbprint().to_string().to_uppercase()
            ),
        }
    }
}

/// Where a client's Network Unlock settings came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySource {
    /// A Group Policy Object from a domain controller (Windows Server 2012 and later).
    #[default]
    GroupPolicy,
    /// The seed's path for earlier servers: `certutil -f -grouppolicy -addstore FVE_NKP` and
    /// the FVE registry values, set on each client.
    Registry,
}

/// What GPRESULT shows a troubleshooter of a client's BitLocker Network Unlock policy, as the
/// client received it: the settings, the certificate policy, any policy the domain holds that
/// has not reached the client, and whether the client rebooted since the last one (the seed's
/// checks "whether group policy is reaching the clients properly" and "whether the clients
/// were rebooted after applying the policy"). Recorded as policy reaches the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyResult {
    /// The settings as last received, and where from; `None` before any.
    received: Option<(GroupPolicy, PolicySource)>,
    /// The certificate the certificate policy put in FVE_NKP.
    certificate: Option<Thumbprint>,
    /// Policies the domain holds that have not reached this client.
    not_received: Vec<String>,
    rebooted_since: bool,
}

impl PolicyResult {
    /// The client received `policy` (and the certificate policy's `certificate`, if any).
    pub fn received(
        &mut self,
        policy: GroupPolicy,
        source: PolicySource,
        certificate: Option<Thumbprint>,
    ) {
        self.received = Some((policy, source));
        self.certificate = certificate;
        self.rebooted_since = false;
    }

    /// The client rebooted: what it received is now in effect.
    pub fn rebooted(&mut self) {
        self.rebooted_since = true;
    }

    /// A policy the domain holds that has not reached this client.
    pub fn not_received(&mut self, what: String) {
        self.not_received.push(what);
    }

    pub fn rebooted_since(&self) -> bool {
        self.rebooted_since
    }

    /// The BitLocker part of `gpresult /scope computer /v`, as nulab lays it out.
    pub fn gpresult_text(&self, computer: &str) -> String {
        let mut out = format!("COMPUTER SETTINGS\n-----------------\n    {computer}\n\n");
        let Some((policy, source)) = &self.received else {
            out.push_str("    No BitLocker policy has reached this computer.\n");
            return out;
        };
        out.push_str(match source {
            PolicySource::GroupPolicy => {
                "    Applied Group Policy Objects\n        BitLocker Network Unlock\n\n"
            }
            PolicySource::Registry => {
                "    Applied Group Policy Objects\n        (none: the settings are registry values \
                 under HKLM\\SOFTWARE\\Policies\\Microsoft\\FVE, set with reg add)\n\n"
            }
        });
        out.push_str(
            "    Administrative Templates\\Windows Components\\BitLocker Drive Encryption\\Operating System Drives\n",
        );
        out.push_str(&format!(
            "        Allow network unlock at startup: {}\n",
            if policy.allow_network_unlock {
                "Enabled"
            } else {
                "Disabled"
            }
        ));
        out.push_str(&format!(
            "        Require additional authentication at startup: Enabled ({})\n",
            match policy.startup_pin {
                StartupPin::Require => "Require startup PIN with TPM",
                StartupPin::Allow => "Allow startup PIN with TPM",
                StartupPin::DoNotAllow => "Do not allow startup PIN with TPM",
            }
        ));
        out.push_str(
            "    Public Key Policies\\BitLocker Drive Encryption Network Unlock Certificate\n",
        );
        match &self.certificate {
            Some(thumbprint) => out.push_str(&format!("        {thumbprint}\n")),
            None => out.push_str("        (no certificate)\n"),
        }
        for what in &self.not_received {
            out.push_str(&format!("\n    NOT received by this computer: {what}\n"));
        }
        out.push_str(&format!(
            "\n    Rebooted since the last policy was applied: {}\n",
            if self.rebooted_since {
                "yes (the protectors reflect it)"
            } else {
                "NO (a Network Unlock protector is added or removed only at a reboot)"
            }
        ));
        out
    }
}

/// What a reboot did to the Network Unlock protector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RebootOutcome {
    Added {
        id: ProtectorId,
    },
    /// The FVE_NKP certificate changed: the old protector went, one for the new certificate came.
    Replaced {
        removed: ProtectorId,
        added: ProtectorId,
    },
    Removed {
        id: ProtectorId,
    },
    Kept {
        id: ProtectorId,
    },
    /// Nothing to add, and why.
    NotAdded {
        reason: &'static str,
    },
}

/// Applies Group Policy to the Network Unlock protector at a reboot, as Windows does once the
/// volume is unlocked and policy refreshed. New protectors seal their TPM key to `pcrs`.
pub fn apply_at_reboot(
    policy: &GroupPolicy,
    store: &NetworkUnlockCertificateStore,
    volume: &mut Volume,
    keys: &VolumeKeys,
    tpm: &mut dyn Tpm,
    pcrs: PcrSelection,
    rng: &mut dyn CryptoRngCore,
) -> Result<RebootOutcome, VolumeError> {
    let existing = volume
        .protector_of(ProtectorKind::NetworkUnlock)
        .map(|p| match &p.detail {
            ProtectorDetail::NetworkUnlock { thumbprint, .. } => (p.id, Some(*thumbprint)),
            _ => (p.id, None),
        });
    if !policy.allow_network_unlock {
        return Ok(match existing {
            Some((id, _)) => {
                volume.remove_protector(id)?;
                RebootOutcome::Removed { id }
            }
            None => RebootOutcome::NotAdded {
                reason: "\"Allow network unlock at startup\" is not enabled",
            },
        });
    }
    let Some(certificate) = store.certificate() else {
        return Ok(match existing {
            // The certificate policy was deleted: the same task as disabling the policy.
            Some((id, _)) => {
                volume.remove_protector(id)?;
                RebootOutcome::Removed { id }
            }
            None => RebootOutcome::NotAdded {
                reason: "no certificate in the FVE_NKP store",
            },
        });
    };
    let has_tpm_protector = volume
        .protectors()
        .iter()
        .any(|p| matches!(p.kind(), ProtectorKind::Tpm | ProtectorKind::TpmAndPin));
    if !has_tpm_protector {
        return Ok(RebootOutcome::NotAdded {
            reason: "Network Unlock needs a TPM protector on the volume",
        });
    }
    match existing {
        Some((id, Some(thumbprint))) if thumbprint == certificate.thumbprint() => {
            Ok(RebootOutcome::Kept { id })
        }
        Some((removed, _)) => {
            let added = volume.add_network_unlock_protector(keys, tpm, pcrs, certificate, rng)?;
            Ok(RebootOutcome::Replaced { removed, added })
        }
        None => {
            let id = volume.add_network_unlock_protector(keys, tpm, pcrs, certificate, rng)?;
            Ok(RebootOutcome::Added { id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_option_decides_tpm_protectors() {
        let require = GroupPolicy {
            startup_pin: StartupPin::Require,
            allow_network_unlock: false,
        };
        assert_eq!(
            require.permits(ProtectorKind::Tpm),
            Err(PolicyRefusal::PinRequired)
        );
        assert_eq!(require.permits(ProtectorKind::TpmAndPin), Ok(()));
        let forbid = GroupPolicy {
            startup_pin: StartupPin::DoNotAllow,
            allow_network_unlock: true,
        };
        assert_eq!(
            forbid.permits(ProtectorKind::TpmAndPin),
            Err(PolicyRefusal::PinNotAllowed)
        );
        assert_eq!(forbid.permits(ProtectorKind::Tpm), Ok(()));
        assert_eq!(
            forbid.permits(ProtectorKind::NetworkUnlock),
            Err(PolicyRefusal::NetworkUnlockByPolicyOnly)
        );
        assert_eq!(
            GroupPolicy::default().permits(ProtectorKind::RecoveryPassword),
            Ok(())
        );
    }

    #[test]
    fn a_startup_pin_has_4_to_20_digits_and_the_policy_raises_the_floor() {
        let default = MinimumPinLength::default();
        assert_eq!(default.check("1234"), Ok(()));
        assert_eq!(
            default.check("123"),
            Err(PinRefusal::TooShort {
                digits: 3,
                minimum: 4
            })
        );
        assert_eq!(default.check(&"1".repeat(20)), Ok(()));
        assert_eq!(
            default.check(&"1".repeat(21)),
            Err(PinRefusal::TooLong { digits: 21 })
        );
        assert_eq!(default.check("12a4"), Err(PinRefusal::NotDigits));
        assert_eq!(default.check(""), Err(PinRefusal::NotDigits));
        let eight = MinimumPinLength::new(8).expect("in range");
        assert!(eight.check("246810").is_err());
        assert_eq!(eight.check("24681012"), Ok(()));
        assert!(
            eight
                .check("246810")
                .map_err(|e| e.to_string())
                .unwrap_err()
                .contains("at least 8")
        );
        assert!(MinimumPinLength::new(3).is_err());
        assert!(MinimumPinLength::new(21).is_err());
        assert_eq!(
            MinimumPinLength::new(20).map(MinimumPinLength::digits),
            Ok(20)
        );
    }

    #[test]
    fn gpresult_says_what_arrived_and_whether_the_client_rebooted_since() {
        let mut result = PolicyResult::default();
        assert!(result.gpresult_text("PC1").contains("No BitLocker policy"));
        let thumbprint = Thumbprint::of_der(b"certificate");
        let enabled = GroupPolicy {
            allow_network_unlock: true,
            ..GroupPolicy::default()
        };
        result.received(enabled, PolicySource::GroupPolicy, Some(thumbprint));
        let text = result.gpresult_text("PC1");
        assert!(
            text.contains("Allow network unlock at startup: Enabled"),
            "{text}"
        );
        assert!(text.contains(&thumbprint.to_string()), "{text}");
        assert!(
            text.contains("Rebooted since the last policy was applied: NO"),
            "{text}"
        );
        result.rebooted();
        result.not_received("the GPO with certificate nu-2027".into());
        let text = result.gpresult_text("PC1");
        assert!(text.contains("applied: yes"), "{text}");
        assert!(
            text.contains("NOT received by this computer: the GPO"),
            "{text}"
        );
        result.received(GroupPolicy::default(), PolicySource::Registry, None);
        let text = result.gpresult_text("PC1");
        assert!(text.contains("registry values"), "{text}");
        assert!(
            text.contains("Disabled") && text.contains("(no certificate)"),
            "{text}"
        );
    }

    #[test]
    fn the_fve_nkp_store_reads_as_its_registry_key() {
        let mut store = NetworkUnlockCertificateStore::default();
        assert!(store.registry_text().contains("(no certificate)"));
        let bundle = certificates::fixture::network_unlock(1);
        let certificate = NetworkUnlockCertificate::from_der(bundle.certificate.der())
            .expect("the seed's certificate is fit");
        let upper = certificate.thumbprint().to_string().to_uppercase();
        store.install(certificate);
        let text = store.registry_text();
        assert!(
            text.contains(&format!("FVE_NKP\\Certificates\\{upper}")),
            "{text}"
        );
    }

    #[test]
    fn the_pre_2012_registry_values_mean_the_group_policy_settings() {
        let policy = GroupPolicy::from_fve_registry(&PRE_2012_FVE_VALUES).expect("the seed's");
        assert_eq!(
            policy,
            GroupPolicy {
                startup_pin: StartupPin::Allow,
                allow_network_unlock: true,
            }
        );
        let require = GroupPolicy::from_fve_registry(&[
            ("UseAdvancedStartup", 1),
            ("UseTPMPIN", 1),
            ("OSManageNKP", 0),
        ])
        .expect("valid");
        assert_eq!(require.startup_pin, StartupPin::Require);
        assert!(!require.allow_network_unlock);
        assert!(GroupPolicy::from_fve_registry(&[("UseTPM", 3)]).is_err());
        assert!(GroupPolicy::from_fve_registry(&[("OSManageNKP", 2)]).is_err());
        assert!(GroupPolicy::from_fve_registry(&[("UseNKP", 1)]).is_err());
        assert!(fve_reg_add("OSManageNKP", 1).ends_with("/v OSManageNKP /t REG_DWORD /d 1 /f"));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            NetworkUnlockCertificate::from_der(b"not a certificate"),
            Err(CertificateError::Parse(_))
        ));
    }
}
