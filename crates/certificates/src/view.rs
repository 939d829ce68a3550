//! The one view of a certificate that `nulab cert show` prints, as text ([`fmt::Display`]) or
//! JSON (`serde`): every field is read from the certificate's bytes, and the verdict on Network
//! Unlock lists every reason it is not fit.

use std::fmt;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::certificate::{Certificate, CertificateBundle};
use crate::fitness::{UnfitReason, certificate_unfit_reasons};
use crate::oid;

/// Everything `nulab cert show` says about a certificate (and its key, if the file had one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateView {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex, no spaces.
    pub serial_number: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub signature_algorithm: String,
    pub public_key: PublicKeyView,
    pub key_usage: Option<KeyUsageView>,
    pub extended_key_usages: Vec<PurposeView>,
    pub application_policies: Vec<PurposeView>,
    pub is_ca: bool,
    pub self_issued: bool,
    /// SHA-1 of the DER, lowercase hex without spaces (the `bde-network-unlock.ini` form).
    pub thumbprint: String,
    pub private_key: Option<PrivateKeyView>,
    /// Certificates that came with it (a `.pfx` or PEM chain): subject and thumbprint.
    pub chain: Vec<ChainEntryView>,
    pub network_unlock: FitnessView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicKeyView {
    pub algorithm: String,
    pub bits: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyUsageView {
    pub critical: bool,
    pub usages: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PurposeView {
    pub oid: String,
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrivateKeyView {
    pub algorithm: String,
    pub bits: usize,
    pub matches_certificate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainEntryView {
    pub subject: String,
    pub thumbprint: String,
}

/// Whether the certificate can serve Network Unlock. With a private key, the key is judged too;
/// without one, the certificate is judged as a client would (a `.cer` has no key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FitnessView {
    pub fit: bool,
    pub reasons: Vec<ReasonView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonView {
    /// Stable label (`key-too-small`, `missing-network-unlock-eku`, ...).
    pub code: String,
    pub message: String,
}

impl From<&UnfitReason> for ReasonView {
    fn from(reason: &UnfitReason) -> Self {
        Self {
            code: reason.code().to_owned(),
            message: reason.to_string(),
        }
    }
}

fn purposes(oids: &[String]) -> Vec<PurposeView> {
    oids.iter()
        .map(|o| PurposeView {
            oid: o.clone(),
            name: oid::purpose_name(o).map(str::to_owned),
        })
        .collect()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("{} (not RFC 3339 representable)", t))
}

impl CertificateView {
    /// The view of a certificate alone (as read from a `.cer`).
    pub fn of_certificate(certificate: &Certificate) -> Self {
        Self::of_bundle(&CertificateBundle::new(certificate.clone(), None))
    }

    /// The view of what a file held: certificate, key if any, chain.
    pub fn of_bundle(bundle: &CertificateBundle) -> Self {
        let cert = &bundle.certificate;
        let facts = cert.facts();
        let mut reasons = certificate_unfit_reasons(cert);
        let private_key = bundle.private_key.as_ref().map(|key| {
            let matches_certificate = key.matches(cert);
            if !matches_certificate {
                reasons.push(UnfitReason::PrivateKeyMismatch);
            }
            PrivateKeyView {
                algorithm: "RSA".to_owned(),
                bits: key.bits(),
                matches_certificate,
            }
        });
        Self {
            subject: facts.subject.clone(),
            issuer: facts.issuer.clone(),
            serial_number: hex::encode(&facts.serial),
            not_before: rfc3339(facts.not_before),
            not_after: rfc3339(facts.not_after),
            signature_algorithm: facts.signature_algorithm.clone(),
            public_key: PublicKeyView {
                algorithm: cert.key_algorithm().to_owned(),
                bits: facts.key_bits,
            },
            key_usage: facts.key_usage.as_ref().map(|ku| KeyUsageView {
                critical: ku.critical,
                usages: ku.usages.iter().map(|u| (*u).to_owned()).collect(),
            }),
            extended_key_usages: purposes(cert.extended_key_usages()),
            application_policies: purposes(cert.application_policies()),
            is_ca: facts.is_ca,
            self_issued: cert.is_self_issued(),
            thumbprint: cert.thumbprint().to_string(),
            private_key,
            chain: bundle
                .chain
                .iter()
                .map(|c| ChainEntryView {
                    subject: c.subject().to_owned(),
                    thumbprint: c.thumbprint().to_string(),
                })
                .collect(),
            network_unlock: FitnessView {
                fit: reasons.is_empty(),
                reasons: reasons.iter().map(ReasonView::from).collect(),
            },
        }
    }
}

fn write_purposes(f: &mut fmt::Formatter<'_>, label: &str, list: &[PurposeView]) -> fmt::Result {
    if list.is_empty() {
        return writeln!(f, "{label:<22}(none)");
    }
    for (i, p) in list.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        match &p.name {
            Some(name) => writeln!(f, "{label:<22}{} ({name})", p.oid)?,
            None => writeln!(f, "{label:<22}{}", p.oid)?,
        }
    }
    Ok(())
}

impl fmt::Display for CertificateView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<22}{}", "Subject:", self.subject)?;
        writeln!(f, "{:<22}{}", "Issuer:", self.issuer)?;
        writeln!(f, "{:<22}{}", "Serial number:", self.serial_number)?;
        writeln!(f, "{:<22}{}", "Not before:", self.not_before)?;
        writeln!(f, "{:<22}{}", "Not after:", self.not_after)?;
        writeln!(f, "{:<22}{}", "Signature:", self.signature_algorithm)?;
        writeln!(
            f,
            "{:<22}{} {} bits",
            "Public key:", self.public_key.algorithm, self.public_key.bits
        )?;
        match &self.key_usage {
            Some(ku) => writeln!(
                f,
                "{:<22}{}{}",
                "Key usage:",
                if ku.critical { "critical, " } else { "" },
                ku.usages.join(", ")
            )?,
            None => writeln!(f, "{:<22}(none)", "Key usage:")?,
        }
        write_purposes(f, "Extended key usage:", &self.extended_key_usages)?;
        write_purposes(f, "Application policies:", &self.application_policies)?;
        if self.is_ca {
            writeln!(f, "{:<22}yes", "CA:")?;
        }
        writeln!(f, "{:<22}{}", "Thumbprint (SHA-1):", self.thumbprint)?;
        match &self.private_key {
            Some(key) => writeln!(
                f,
                "{:<22}{} {} bits, {}",
                "Private key:",
                key.algorithm,
                key.bits,
                if key.matches_certificate {
                    "matches the certificate"
                } else {
                    "does NOT match the certificate"
                }
            )?,
            None => writeln!(f, "{:<22}(none)", "Private key:")?,
        }
        for c in &self.chain {
            writeln!(f, "{:<22}{} ({})", "Chain:", c.subject, c.thumbprint)?;
        }
        if self.network_unlock.fit {
            write!(f, "{:<22}fit", "Network Unlock:")
        } else {
            write!(f, "{:<22}NOT fit", "Network Unlock:")?;
            for r in &self.network_unlock.reasons {
                write!(f, "\n{:<22}- {}", "", r.message)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::generate::{CertificateRequest, Validity};

    #[test]
    fn the_seed_certificate_is_shown_fit_with_every_field() {
        let bundle = fixture::cached(1);
        let view = CertificateView::of_bundle(&bundle);
        assert_eq!(view.subject, "CN=BitLocker Network Unlock certificate");
        assert_eq!(view.issuer, view.subject);
        assert_eq!(view.not_before, "2025-01-01T00:00:00Z");
        assert_eq!(view.not_after, "2035-01-01T00:00:00Z");
        assert_eq!(view.signature_algorithm, "sha512WithRSAEncryption");
        assert_eq!(
            view.public_key,
            PublicKeyView {
                algorithm: "RSA".to_owned(),
                bits: 2048
            }
        );
        assert_eq!(
            view.key_usage,
            Some(KeyUsageView {
                critical: true,
                usages: vec!["keyEncipherment".to_owned()]
            })
        );
        let nu = PurposeView {
            oid: "1.3.6.1.4.1.311.67.1.1".to_owned(),
            name: Some("BitLocker Network Unlock".to_owned()),
        };
        assert_eq!(view.extended_key_usages, std::slice::from_ref(&nu));
        assert_eq!(view.application_policies, [nu]);
        assert_eq!(view.thumbprint, bundle.thumbprint().to_string());
        assert_eq!(view.thumbprint.len(), 40);
        assert_eq!(
            view.private_key.as_ref().map(|k| k.matches_certificate),
            Some(true)
        );
        assert!(view.network_unlock.fit && view.network_unlock.reasons.is_empty());

        let text = view.to_string();
        assert!(
            text.contains("Key usage:            critical, keyEncipherment"),
            "{text}"
        );
        assert!(
            text.contains("1.3.6.1.4.1.311.67.1.1 (BitLocker Network Unlock)"),
            "{text}"
        );
        assert!(text.ends_with("Network Unlock:       fit"), "{text}");
    }

    #[test]
    fn json_has_stable_names() {
        let view = CertificateView::of_certificate(&fixture::cached(1).certificate);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["public_key"]["bits"], 2048);
        assert_eq!(json["key_usage"]["critical"], true);
        assert_eq!(
            json["extended_key_usages"][0]["name"],
            "BitLocker Network Unlock"
        );
        assert_eq!(json["thumbprint"], view.thumbprint.as_str());
        assert_eq!(json["private_key"], serde_json::Value::Null);
        assert_eq!(json["network_unlock"]["fit"], true);
    }

    #[test]
    fn an_unfit_certificate_lists_every_reason() {
        let mut req = CertificateRequest::network_unlock(Validity::fixture());
        req.key_bits = 1024;
        req.network_unlock_purpose = false;
        let mut bundle = req.self_signed_from_seed(8).unwrap();
        bundle.private_key = fixture::cached(1).private_key;
        let view = CertificateView::of_bundle(&bundle);
        let codes: Vec<&str> = view
            .network_unlock
            .reasons
            .iter()
            .map(|r| r.code.as_str())
            .collect();
        assert_eq!(
            codes,
            [
                "key-too-small",
                "missing-network-unlock-eku",
                "private-key-mismatch"
            ]
        );
        assert!(!view.network_unlock.fit);
        assert!(view.extended_key_usages.is_empty());
        let text = view.to_string();
        assert!(text.contains("NOT fit"), "{text}");
        assert!(text.contains("does NOT match the certificate"), "{text}");
        assert!(
            text.contains("1024 bits, Network Unlock needs 2048"),
            "{text}"
        );
    }
}
