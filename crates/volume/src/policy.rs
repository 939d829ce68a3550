//! The Group Policy settings and the certificate store that decide which protectors a volume
//! has, as the seed describes them:
//!
//! - "Require additional authentication at startup" with its TPM startup PIN option: whether a
//!   TPM-only protector or a TPM+PIN protector may be added;
//! - "Allow network unlock at startup", and the client's Network Unlock certificate store
//!   (FVE_NKP), which holds one certificate at a time;
//! - "The Network (Certificate Based) protector will be added only after a reboot, with the
//!   policy enabled and a valid certificate present in the FVE_NKP store", and "when this
//!   policy setting is updated to disabled on client computers, any Network Unlock key protector
//!   on the computer is deleted": [`apply_at_reboot`]. A Network Unlock client also needs "at
//!   least one TPM protector".

use nkpu::Thumbprint;
use rand_core::CryptoRngCore;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use tpm::{PcrSelection, Tpm};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::image::{Volume, VolumeError};
use crate::keys::VolumeKeys;
use crate::protector::{ProtectorDetail, ProtectorId, ProtectorKind};

/// The BitLocker Network Unlock application policy / EKU (the seed's `certreq` example).
pub const NETWORK_UNLOCK_OID: &str = "1.3.6.1.4.1.311.67.1.1";

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

/// A certificate fit for Network Unlock: an X.509 certificate with an RSA-2048 key and the
/// Network Unlock OID among its extended key usages.
#[derive(Clone, Debug)]
pub struct NetworkUnlockCertificate {
    der: Vec<u8>,
    thumbprint: Thumbprint,
    public_key: RsaPublicKey,
}

/// Why a certificate is not valid for Network Unlock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    #[error("the public key is not RSA: {0}")]
    NotRsa(String),
    #[error("the key is {0} bits; Network Unlock needs RSA-2048")]
    KeySize(usize),
    #[error("the certificate lacks the Network Unlock extended key usage ({NETWORK_UNLOCK_OID})")]
    NoNetworkUnlockUsage,
}

impl NetworkUnlockCertificate {
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertificateError::Parse(e.to_string()))?;
        let public_key = RsaPublicKey::from_public_key_der(cert.public_key().raw)
            .map_err(|e| CertificateError::NotRsa(e.to_string()))?;
        let bits = public_key.n().bits();
        if bits != 2048 {
            return Err(CertificateError::KeySize(bits));
        }
        let has_usage = cert.extended_key_usage().ok().flatten().is_some_and(|eku| {
            eku.value
                .other
                .iter()
                .any(|oid| oid.to_id_string() == NETWORK_UNLOCK_OID)
        });
        if !has_usage {
            return Err(CertificateError::NoNetworkUnlockUsage);
        }
        Ok(Self {
            der: der.to_vec(),
            thumbprint: Thumbprint::of_der(der),
            public_key,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public_key
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
            Some((id, _)) => RebootOutcome::Kept { id },
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
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            NetworkUnlockCertificate::from_der(b"not a certificate"),
            Err(CertificateError::Parse(_))
        ));
    }
}
