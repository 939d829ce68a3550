//! The certificate and private-key values every other module passes around: a [`Certificate`]
//! is DER bytes that parsed as X.509 when it was made, with the facts nulab needs read out once;
//! a [`PrivateKey`] is an RSA private key; a [`CertificateBundle`] is what a `.pfx` holds (a
//! certificate, perhaps its key, perhaps more certificates of the chain).

use std::fmt;

use nkpu::Thumbprint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::error::ImportError;
use crate::oid;
use crate::purposes;

/// An X.509 certificate: its exact DER bytes (what the thumbprint is computed over) and the
/// fields nulab reads, parsed once when the value is made.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    facts: CertificateFacts,
    /// SHA-1 of `der`, taken once: a storm's 10,000 clients each ask for it.
    thumbprint: Thumbprint,
}

/// What nulab reads out of a certificate. Purpose lists keep the certificate's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertificateFacts {
    pub subject: String,
    pub issuer: String,
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub signature_algorithm: String,
    /// Dotted OID of the SubjectPublicKeyInfo algorithm.
    pub key_algorithm_oid: String,
    /// Key size in bits as x509-parser measures it (modulus bits for RSA); 0 when unknown.
    pub key_bits: usize,
    /// The RSA public key, when the key is RSA and the `rsa` crate accepts it.
    pub rsa_public_key: Option<RsaPublicKey>,
    pub key_usage: Option<KeyUsage>,
    /// `None` when the certificate has no EKU extension (which means "any purpose" to X.509).
    pub extended_key_usages: Option<Vec<String>>,
    pub application_policies: Option<Vec<String>>,
    pub is_ca: bool,
}

/// The key-usage extension: which usages it grants and whether it is marked critical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUsage {
    pub critical: bool,
    /// RFC 5280 names, in bit order (`keyEncipherment`, `digitalSignature`, ...).
    pub usages: Vec<&'static str>,
}

impl KeyUsage {
    pub fn allows(&self, usage: &str) -> bool {
        self.usages.contains(&usage)
    }
}

impl Certificate {
    /// Parses one DER certificate; trailing bytes are refused, because the thumbprint is taken
    /// over exactly the certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, ImportError> {
        let (rest, x509) = X509Certificate::from_der(der)
            .map_err(|e| ImportError::NotACertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ImportError::TrailingBytes(rest.len()));
        }
        let facts = CertificateFacts::read(&x509)?;
        Ok(Self {
            der: der.to_vec(),
            facts,
            thumbprint: Thumbprint::of_der(der),
        })
    }

    /// The DER encoding: the `.cer` file, and what the thumbprint is computed over.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-1 over the DER, as Windows computes a thumbprint.
    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// The RSA public key, for client-side encryption of the key protector; `None` when the
    /// key is not RSA.
    pub fn rsa_public_key(&self) -> Option<&RsaPublicKey> {
        self.facts.rsa_public_key.as_ref()
    }

    pub fn subject(&self) -> &str {
        &self.facts.subject
    }

    pub fn issuer(&self) -> &str {
        &self.facts.issuer
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.facts.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.facts.not_after
    }

    /// The serial number's big-endian bytes.
    pub fn serial(&self) -> &[u8] {
        &self.facts.serial
    }

    /// Key size in bits (the modulus length for RSA).
    pub fn key_bits(&self) -> usize {
        self.facts.key_bits
    }

    /// `RSA`, `EC`, ... or the dotted OID when nulab has no name for it.
    pub fn key_algorithm(&self) -> &str {
        oid::algorithm_name(&self.facts.key_algorithm_oid).unwrap_or(&self.facts.key_algorithm_oid)
    }

    pub fn key_usage(&self) -> Option<&KeyUsage> {
        self.facts.key_usage.as_ref()
    }

    /// The EKU OIDs in the certificate's order; empty when there is no EKU extension.
    pub fn extended_key_usages(&self) -> &[String] {
        self.facts
            .extended_key_usages
            .as_deref()
            .unwrap_or_default()
    }

    /// The application-policy OIDs (Microsoft extension 1.3.6.1.4.1.311.21.10), if present.
    pub fn application_policies(&self) -> &[String] {
        self.facts
            .application_policies
            .as_deref()
            .unwrap_or_default()
    }

    pub fn has_extended_key_usage(&self, oid: &str) -> bool {
        self.extended_key_usages().iter().any(|o| o == oid)
    }

    /// Whether basic constraints say this is a CA certificate.
    pub fn is_ca(&self) -> bool {
        self.facts.is_ca
    }

    /// Whether issuer and subject names are the same (self-issued, as a self-signed
    /// certificate is).
    pub fn is_self_issued(&self) -> bool {
        self.facts.subject == self.facts.issuer
    }

    pub(crate) fn facts(&self) -> &CertificateFacts {
        &self.facts
    }

    /// The PEM form (`-----BEGIN CERTIFICATE-----`).
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.facts.subject)
            .field("thumbprint", &self.thumbprint())
            .finish()
    }
}

impl CertificateFacts {
    fn read(x509: &X509Certificate<'_>) -> Result<Self, ImportError> {
        let bad = |what: &str, e: &dyn fmt::Display| ImportError::BadExtension {
            extension: what.to_owned(),
            reason: e.to_string(),
        };
        let spki = x509.public_key();
        let key_algorithm_oid = spki.algorithm.algorithm.to_id_string();
        let key_bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        let rsa_public_key = if key_algorithm_oid == oid::RSA_ENCRYPTION {
            RsaPublicKey::from_public_key_der(spki.raw).ok()
        } else {
            None
        };
        let key_usage = x509
            .key_usage()
            .map_err(|e| bad("key usage", &e))?
            .map(|ext| KeyUsage {
                critical: ext.critical,
                usages: key_usage_names(ext.value.flags),
            });
        let mut extended_key_usages = None;
        let mut application_policies = None;
        for ext in x509.extensions() {
            match ext.oid.to_id_string().as_str() {
                oid::EXTENDED_KEY_USAGE => {
                    extended_key_usages = Some(
                        purposes::decode_extended_key_usage(ext.value)
                            .map_err(|e| bad("extended key usage", &e))?,
                    );
                }
                oid::APPLICATION_POLICIES => {
                    application_policies = Some(
                        purposes::decode_application_policies(ext.value)
                            .map_err(|e| bad("application policies", &e))?,
                    );
                }
                _ => {}
            }
        }
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| bad("basic constraints", &e))?
            .is_some_and(|bc| bc.value.ca);
        let signature_oid = x509.signature_algorithm.algorithm.to_id_string();
        Ok(Self {
            subject: x509.subject().to_string(),
            issuer: x509.issuer().to_string(),
            serial: x509.raw_serial().to_vec(),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            signature_algorithm: oid::algorithm_name(&signature_oid)
                .map_or(signature_oid, str::to_owned),
            key_algorithm_oid,
            key_bits,
            rsa_public_key,
            key_usage,
            extended_key_usages,
            application_policies,
            is_ca,
        })
    }
}

/// RFC 5280 names of the key-usage bits that are set, in bit order.
fn key_usage_names(flags: u16) -> Vec<&'static str> {
    // x509-parser numbers bits from the first one of the BIT STRING (digitalSignature = bit 0).
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// An RSA private key (the `.pfx`'s key, the provider's decryption key).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(RsaPrivateKey);

impl PrivateKey {
    pub fn from_rsa(key: RsaPrivateKey) -> Self {
        Self(key)
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` holding an RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ImportError> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(Self)
            .map_err(|e| ImportError::PrivateKey(e.to_string()))
    }

    /// Reads a PKCS#1 `RSAPrivateKey` (`-----BEGIN RSA PRIVATE KEY-----`).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, ImportError> {
        RsaPrivateKey::from_pkcs1_der(der)
            .map(Self)
            .map_err(|e| ImportError::PrivateKey(e.to_string()))
    }

    /// PKCS#8 DER, zeroized on drop: what the server loads into aws-lc-rs
    /// (`nkpu::ProviderKey::from_pkcs8_der`).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self
            .0
            .to_pkcs8_der()
            .expect("a valid RSA key always encodes as PKCS#8");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// The PKCS#8 PEM form (`-----BEGIN PRIVATE KEY-----`), zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let der = self.to_pkcs8_der();
        Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())))
    }

    pub fn public_key(&self) -> RsaPublicKey {
        self.0.to_public_key()
    }

    pub fn bits(&self) -> usize {
        self.0.n().bits()
    }

    pub fn rsa(&self) -> &RsaPrivateKey {
        &self.0
    }

    /// Whether this key is the private half of `certificate`'s public key.
    pub fn matches(&self, certificate: &Certificate) -> bool {
        certificate
            .rsa_public_key()
            .is_some_and(|public| *public == self.public_key())
    }
}

impl fmt::Debug for PrivateKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(RSA-{})", self.bits())
    }
}

/// A certificate with, perhaps, its private key and more certificates (the chain a `.pfx`
/// carries). What generation returns and what the importers read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateBundle {
    pub certificate: Certificate,
    pub private_key: Option<PrivateKey>,
    /// Other certificates found beside it (issuers), in file order.
    pub chain: Vec<Certificate>,
}

impl CertificateBundle {
    pub fn new(certificate: Certificate, private_key: Option<PrivateKey>) -> Self {
        Self {
            certificate,
            private_key,
            chain: Vec::new(),
        }
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.certificate.thumbprint()
    }

    /// The bundle a file held: the certificate is the one the private key belongs to (or the
    /// first, when there is no key or it matches none), the others are its chain in file order.
    pub(crate) fn from_file_parts(
        mut certificates: Vec<Certificate>,
        private_key: Option<PrivateKey>,
    ) -> Result<Self, crate::error::ImportError> {
        if certificates.is_empty() {
            return Err(crate::error::ImportError::NoCertificate);
        }
        let leaf = private_key
            .as_ref()
            .and_then(|key| certificates.iter().position(|c| key.matches(c)))
            .unwrap_or(0);
        let certificate = certificates.remove(leaf);
        Ok(Self {
            certificate,
            private_key,
            chain: certificates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_usage_bits_are_named_in_rfc_order() {
        assert_eq!(key_usage_names(1 << 2), ["keyEncipherment"]);
        assert_eq!(
            key_usage_names(1 | 1 << 5),
            ["digitalSignature", "keyCertSign"]
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let bundle = crate::fixture::cached(1);
        let mut der = bundle.certificate.der().to_vec();
        der.push(0);
        assert_eq!(
            Certificate::from_der(&der),
            Err(ImportError::TrailingBytes(1))
        );
    }

    #[test]
    fn private_key_debug_hides_the_key() {
        let bundle = crate::fixture::cached(1);
        let key = bundle.private_key.unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(RSA-2048)");
    }

    proptest! {
        #[test]
        fn arbitrary_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Certificate::from_der(&bytes);
            let _ = PrivateKey::from_pkcs8_der(&bytes);
            let _ = PrivateKey::from_pkcs1_der(&bytes);
        }
    }
}
