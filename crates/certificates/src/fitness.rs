//! Whether a certificate can serve Network Unlock, with every reason when it cannot, and the
//! two validated types the protocol code takes: [`NetworkUnlockCertificate`] (the client's
//! `.cer`: a thumbprint and an RSA public key) and [`ProviderCertificate`] (the server's
//! `.pfx`: the same, plus the matching private key).
//!
//! The rules, and where they come from:
//! - RSA, exactly 2048 bits: the seed provisions "a 2048-bit RSA public/private key pair" and
//!   its template sets a minimum of 2048; the key protector on the wire is always 256 bytes
//!   (PROTOCOL.md), so a larger modulus cannot be carried either.
//! - EKU 1.3.6.1.4.1.311.67.1.1 (BitLocker Network Unlock), as the seed's examples add it.
//! - If a key-usage extension is present it must allow keyEncipherment: the key wraps the
//!   client's keys (RFC 5280 4.2.1.3).
//! - If Microsoft's application-policies extension is present it must name Network Unlock too:
//!   Windows reads it, when present, as a further restriction on the purposes.
//! - Server side: the private key is there and is the certificate's.
//!
//! Validity dates are shown, not judged: this crate reads no clock and the seed states no rule
//! about expiry.

use std::fmt;

use nkpu::Thumbprint;
use rsa::RsaPublicKey;
use zeroize::Zeroizing;

use crate::certificate::{Certificate, CertificateBundle, PrivateKey};
use crate::generate::NETWORK_UNLOCK_KEY_BITS;
use crate::oid;

/// One reason a certificate cannot serve Network Unlock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnfitReason {
    /// The public key is not RSA (`algorithm` names it).
    NotRsa {
        algorithm: String,
    },
    KeyTooSmall {
        bits: usize,
    },
    /// The key protector field is exactly 256 bytes: only a 2048-bit modulus fits.
    KeyTooLarge {
        bits: usize,
    },
    /// An RSA key the `rsa` crate cannot use (e.g. a malformed modulus).
    UnusableRsaKey,
    MissingNetworkUnlockEku,
    /// A key-usage extension that does not allow keyEncipherment.
    KeyEnciphermentNotAllowed,
    /// An application-policies extension that does not name Network Unlock.
    ApplicationPoliciesExcludeNetworkUnlock,
    /// Server side: the `.pfx` or PEM held no private key.
    MissingPrivateKey,
    /// The private key is not the certificate's.
    PrivateKeyMismatch,
}

impl UnfitReason {
    /// A stable label for JSON output and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotRsa { .. } => "not-rsa",
            Self::KeyTooSmall { .. } => "key-too-small",
            Self::KeyTooLarge { .. } => "key-too-large",
            Self::UnusableRsaKey => "unusable-rsa-key",
            Self::MissingNetworkUnlockEku => "missing-network-unlock-eku",
            Self::KeyEnciphermentNotAllowed => "key-encipherment-not-allowed",
            Self::ApplicationPoliciesExcludeNetworkUnlock => {
                "application-policies-exclude-network-unlock"
            }
            Self::MissingPrivateKey => "missing-private-key",
            Self::PrivateKeyMismatch => "private-key-mismatch",
        }
    }
}

impl fmt::Display for UnfitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRsa { algorithm } => {
                write!(f, "the key is {algorithm}, Network Unlock needs RSA")
            }
            Self::KeyTooSmall { bits } => write!(
                f,
                "the RSA key has {bits} bits, Network Unlock needs {NETWORK_UNLOCK_KEY_BITS}"
            ),
            Self::KeyTooLarge { bits } => write!(
                f,
                "the RSA key has {bits} bits, but the key protector on the wire holds exactly \
                 {NETWORK_UNLOCK_KEY_BITS}-bit RSA"
            ),
            Self::UnusableRsaKey => f.write_str("the RSA public key cannot be used"),
            Self::MissingNetworkUnlockEku => write!(
                f,
                "no BitLocker Network Unlock EKU ({})",
                oid::NETWORK_UNLOCK
            ),
            Self::KeyEnciphermentNotAllowed => {
                f.write_str("the key usage extension does not allow keyEncipherment")
            }
            Self::ApplicationPoliciesExcludeNetworkUnlock => write!(
                f,
                "the application policies extension does not name {}",
                oid::NETWORK_UNLOCK
            ),
            Self::MissingPrivateKey => f.write_str("no private key (the provider needs the .pfx)"),
            Self::PrivateKeyMismatch => {
                f.write_str("the private key does not match the certificate's public key")
            }
        }
    }
}

/// A certificate refused for Network Unlock, with every reason (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Unfit {
    reasons: Vec<UnfitReason>,
}

impl Unfit {
    pub fn reasons(&self) -> &[UnfitReason] {
        &self.reasons
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not fit for Network Unlock: ")?;
        for (i, reason) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}

/// Every reason `certificate` cannot be a Network Unlock certificate (empty when it can).
pub fn certificate_unfit_reasons(certificate: &Certificate) -> Vec<UnfitReason> {
    let mut reasons = Vec::new();
    let bits = certificate.key_bits();
    if certificate.key_algorithm() != "RSA" {
        reasons.push(UnfitReason::NotRsa {
            algorithm: certificate.key_algorithm().to_owned(),
        });
    } else if certificate.rsa_public_key().is_none() {
        reasons.push(UnfitReason::UnusableRsaKey);
    } else if bits < NETWORK_UNLOCK_KEY_BITS {
        reasons.push(UnfitReason::KeyTooSmall { bits });
    } else if bits > NETWORK_UNLOCK_KEY_BITS {
        reasons.push(UnfitReason::KeyTooLarge { bits });
    }
    if !certificate.has_extended_key_usage(oid::NETWORK_UNLOCK) {
        reasons.push(UnfitReason::MissingNetworkUnlockEku);
    }
    if certificate
        .key_usage()
        .is_some_and(|ku| !ku.allows("keyEncipherment"))
    {
        reasons.push(UnfitReason::KeyEnciphermentNotAllowed);
    }
    if certificate.facts().application_policies.is_some()
        && !certificate
            .application_policies()
            .iter()
            .any(|p| p == oid::NETWORK_UNLOCK)
    {
        reasons.push(UnfitReason::ApplicationPoliciesExcludeNetworkUnlock);
    }
    reasons
}

/// Every reason `bundle` cannot serve the provider: the certificate's reasons, then the key's.
pub fn provider_unfit_reasons(bundle: &CertificateBundle) -> Vec<UnfitReason> {
    let mut reasons = certificate_unfit_reasons(&bundle.certificate);
    match &bundle.private_key {
        None => reasons.push(UnfitReason::MissingPrivateKey),
        Some(key) if !key.matches(&bundle.certificate) => {
            reasons.push(UnfitReason::PrivateKeyMismatch);
        }
        Some(_) => {}
    }
    reasons
}

fn refuse_unless_empty(reasons: Vec<UnfitReason>) -> Result<(), Unfit> {
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Unfit { reasons })
    }
}

/// A certificate fit for Network Unlock: what a client holds (the `FVE_NKP` store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkUnlockCertificate {
    certificate: Certificate,
    public_key: RsaPublicKey,
}

impl NetworkUnlockCertificate {
    pub fn from_certificate(certificate: Certificate) -> Result<Self, Unfit> {
        refuse_unless_empty(certificate_unfit_reasons(&certificate))?;
        let public_key = certificate
            .rsa_public_key()
            .cloned()
            .expect("a fit certificate has a usable RSA key");
        Ok(Self {
            certificate,
            public_key,
        })
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    pub fn der(&self) -> &[u8] {
        self.certificate.der()
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.certificate.thumbprint()
    }

    /// The RSA-2048 public key the client encrypts its key protector with.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public_key
    }
}

/// A certificate and its private key fit for the WDS Network Unlock provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderCertificate {
    certificate: NetworkUnlockCertificate,
    private_key: PrivateKey,
}

impl ProviderCertificate {
    pub fn from_bundle(bundle: CertificateBundle) -> Result<Self, Unfit> {
        refuse_unless_empty(provider_unfit_reasons(&bundle))?;
        let private_key = bundle
            .private_key
            .expect("a fit provider bundle has a private key");
        let certificate = NetworkUnlockCertificate::from_certificate(bundle.certificate)?;
        Ok(Self {
            certificate,
            private_key,
        })
    }

    pub fn certificate(&self) -> &NetworkUnlockCertificate {
        &self.certificate
    }

    pub fn der(&self) -> &[u8] {
        self.certificate.der()
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.certificate.thumbprint()
    }

    pub fn private_key(&self) -> &PrivateKey {
        &self.private_key
    }

    /// PKCS#8 DER of the private key, for `nkpu::ProviderKey::from_pkcs8_der` (aws-lc-rs).
    pub fn private_key_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.private_key.to_pkcs8_der()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::generate::{CertificateRequest, Validity};
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256};

    fn request() -> CertificateRequest {
        CertificateRequest::network_unlock(Validity::fixture())
    }

    fn reasons_of(result: Result<impl fmt::Debug, Unfit>) -> Vec<UnfitReason> {
        result.unwrap_err().reasons().to_vec()
    }

    #[test]
    fn the_seed_certificate_is_fit_on_both_sides() {
        let bundle = fixture::cached(1);
        let client =
            NetworkUnlockCertificate::from_certificate(bundle.certificate.clone()).unwrap();
        let key = bundle.private_key.clone().unwrap();
        assert_eq!(*client.public_key(), key.public_key());
        assert_eq!(
            client.thumbprint(),
            Thumbprint::of_der(bundle.certificate.der())
        );
        let server = ProviderCertificate::from_bundle(bundle.clone()).unwrap();
        assert_eq!(server.thumbprint(), client.thumbprint());
        assert_eq!(
            PrivateKey::from_pkcs8_der(&server.private_key_pkcs8_der()).unwrap(),
            key
        );
    }

    #[test]
    fn a_1024_bit_key_is_refused() {
        let mut req = request();
        req.key_bits = 1024;
        let bundle = req.self_signed_from_seed(5).unwrap();
        assert_eq!(bundle.certificate.key_bits(), 1024);
        assert_eq!(
            reasons_of(NetworkUnlockCertificate::from_certificate(
                bundle.certificate
            )),
            [UnfitReason::KeyTooSmall { bits: 1024 }]
        );
    }

    #[test]
    fn a_3072_bit_key_does_not_fit_the_key_protector() {
        let mut req = request();
        req.key_bits = 3072;
        let bundle = req.self_signed_from_seed(5).unwrap();
        assert_eq!(
            reasons_of(NetworkUnlockCertificate::from_certificate(
                bundle.certificate
            )),
            [UnfitReason::KeyTooLarge { bits: 3072 }]
        );
    }

    #[test]
    fn a_missing_eku_is_refused() {
        let mut req = request();
        req.network_unlock_purpose = false;
        let bundle = req.self_signed_from_seed(5).unwrap();
        assert!(bundle.certificate.extended_key_usages().is_empty());
        assert_eq!(
            reasons_of(ProviderCertificate::from_bundle(bundle)),
            [UnfitReason::MissingNetworkUnlockEku]
        );
    }

    #[test]
    fn every_reason_is_given_at_once() {
        let mut req = request();
        req.key_bits = 1024;
        req.network_unlock_purpose = false;
        let mut bundle = req.self_signed_from_seed(5).unwrap();
        bundle.private_key = None;
        let unfit = ProviderCertificate::from_bundle(bundle).unwrap_err();
        assert_eq!(
            unfit.reasons(),
            [
                UnfitReason::KeyTooSmall { bits: 1024 },
                UnfitReason::MissingNetworkUnlockEku,
                UnfitReason::MissingPrivateKey
            ]
        );
        let text = unfit.to_string();
        assert!(
            text.contains("1024 bits") && text.contains("no private key"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_private_key_is_refused_on_the_server_only() {
        let mut bundle = fixture::cached(1);
        bundle.private_key = None;
        assert!(NetworkUnlockCertificate::from_certificate(bundle.certificate.clone()).is_ok());
        assert_eq!(
            reasons_of(ProviderCertificate::from_bundle(bundle)),
            [UnfitReason::MissingPrivateKey]
        );
    }

    #[test]
    fn a_mismatched_private_key_is_refused() {
        let mut bundle = fixture::cached(1);
        bundle.private_key = fixture::cached(2).private_key;
        assert_eq!(
            reasons_of(ProviderCertificate::from_bundle(bundle)),
            [UnfitReason::PrivateKeyMismatch]
        );
    }

    #[test]
    fn a_non_rsa_key_is_refused() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
            oid::NETWORK_UNLOCK_ARCS.to_vec(),
        )];
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let cert = Certificate::from_der(&der).unwrap();
        assert_eq!(
            reasons_of(NetworkUnlockCertificate::from_certificate(cert)),
            [UnfitReason::NotRsa {
                algorithm: "EC".to_owned()
            }]
        );
    }

    #[test]
    fn key_usage_without_key_encipherment_is_refused() {
        let (ca, _) = fixture::ca_issued(3, 4);
        // A CA certificate: keyCertSign but no keyEncipherment, and no Network Unlock EKU.
        assert_eq!(
            certificate_unfit_reasons(ca.certificate()),
            [
                UnfitReason::MissingNetworkUnlockEku,
                UnfitReason::KeyEnciphermentNotAllowed
            ]
        );
    }

    #[test]
    fn codes_are_stable_labels() {
        assert_eq!(UnfitReason::KeyTooSmall { bits: 1 }.code(), "key-too-small");
        assert_eq!(UnfitReason::MissingPrivateKey.code(), "missing-private-key");
    }
}
