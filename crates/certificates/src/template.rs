//! The seed's certificate template for Network Unlock ("Create the certificate template for
//! Network Unlock", certtmpl.msc), judged against a certificate: each template step that
//! leaves a mark in what it issues, met or missed, and which step to redo when missed.
//!
//! The steps judged, and what each leaves in a certificate (or its `.pfx`):
//! - step 5, **purpose Encryption**: an encryption-only key usage. A template whose purpose is
//!   Signature, or Signature and encryption, issues certificates whose key usage also grants
//!   `digitalSignature` or `nonRepudiation`;
//! - step 5, **allow private key to be exported**: only an exportable key reaches a `.pfx`. A
//!   `.pfx` with its key shows the step was taken; a `.pfx` without one shows it was not; a
//!   `.cer` holds no key, so the step cannot be judged from it (said so, not guessed);
//! - step 6, **minimum key size 2048**: the RSA key has at least 2048 bits (the template's rule;
//!   Network Unlock's own fitness, [`crate::fitness`], also refuses larger keys);
//! - steps 10 to 14, **the BitLocker Network Unlock application policy**
//!   (1.3.6.1.4.1.311.67.1.1) in the application policies (or, for a certificate without that
//!   extension, the EKU), and step 11's removal of Client Authentication, Encrypting File
//!   System and Secure Email, which the duplicated User template carries;
//! - step 15, **key usage keyEncipherment, critical**.
//!
//! The other steps (compatibility, names, providers, subject, issuance requirements,
//! permissions) leave nothing in the certificate that tells them apart, so they are not judged.

use std::fmt;

use serde::Serialize;

use crate::certificate::CertificateBundle;
use crate::generate::NETWORK_UNLOCK_KEY_BITS;
use crate::oid;

/// The purposes the User template carries that step 11 removes.
const USER_TEMPLATE_PURPOSES: [&str; 3] = [
    "1.3.6.1.5.5.7.3.2",      // Client Authentication
    "1.3.6.1.4.1.311.10.3.4", // Encrypting File System
    "1.3.6.1.5.5.7.3.4",      // Secure Email
];

/// One template step as the certificate shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateStep {
    /// A stable label (`purpose-encryption`, `private-key-exportable`, `minimum-key-size`,
    /// `application-policy`, `key-encipherment-critical`).
    pub code: &'static str,
    /// Where it is in the seed's steps ("step 5: Request Handling, Purpose").
    pub step: &'static str,
    pub verdict: Verdict,
    /// What the certificate shows.
    pub evidence: String,
}

/// Whether the certificate shows the step was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Met,
    Missed,
    /// The file holds nothing that tells (a `.cer` and the exportable-key step).
    CannotTell,
}

/// The template's steps judged against one certificate, in the seed's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateJudgement {
    /// No step judged is missed.
    pub followed: bool,
    pub steps: Vec<TemplateStep>,
}

impl TemplateJudgement {
    /// The steps missed.
    pub fn missed(&self) -> impl Iterator<Item = &TemplateStep> {
        self.steps.iter().filter(|s| s.verdict == Verdict::Missed)
    }
}

/// Judges `bundle` (a `.cer` holds a certificate alone; a `.pfx` also what became of its key)
/// against the seed's template. `from_pfx` says whether the file was a `.pfx`, where a missing
/// private key means it was not exportable.
pub fn judge(bundle: &CertificateBundle, from_pfx: bool) -> TemplateJudgement {
    let cert = &bundle.certificate;
    let mut steps = Vec::new();

    let key_usage = cert.key_usage();
    let signing: Vec<&str> = key_usage
        .map(|ku| {
            ku.usages
                .iter()
                .copied()
                .filter(|u| matches!(*u, "digitalSignature" | "nonRepudiation"))
                .collect()
        })
        .unwrap_or_default();
    steps.push(TemplateStep {
        code: "purpose-encryption",
        step: "step 5: Request Handling, Purpose \"Encryption\"",
        verdict: if key_usage.is_some() && signing.is_empty() {
            Verdict::Met
        } else {
            Verdict::Missed
        },
        evidence: match key_usage {
            None => "no key usage extension: the purpose is not restricted to encryption".into(),
            Some(_) if signing.is_empty() => "the key usage grants no signing usage".into(),
            Some(_) => format!(
                "the key usage also grants {}: a Signature purpose",
                signing.join(", ")
            ),
        },
    });

    steps.push(match (&bundle.private_key, from_pfx) {
        (Some(_), _) => TemplateStep {
            code: "private-key-exportable",
            step: "step 5: Request Handling, \"Allow private key to be exported\"",
            verdict: Verdict::Met,
            evidence: "the file holds the private key: it was exported".into(),
        },
        (None, true) => TemplateStep {
            code: "private-key-exportable",
            step: "step 5: Request Handling, \"Allow private key to be exported\"",
            verdict: Verdict::Missed,
            evidence: "the .pfx holds no private key: the key could not be exported, and the \
                       WDS server needs it"
                .into(),
        },
        (None, false) => TemplateStep {
            code: "private-key-exportable",
            step: "step 5: Request Handling, \"Allow private key to be exported\"",
            verdict: Verdict::CannotTell,
            evidence: "a certificate alone (.cer) holds no key: judge the .pfx".into(),
        },
    });

    let bits = cert.key_bits();
    let rsa = cert.key_algorithm() == "RSA";
    steps.push(TemplateStep {
        code: "minimum-key-size",
        step: "step 6: Cryptography, \"Minimum key size\" 2048",
        verdict: if rsa && bits >= NETWORK_UNLOCK_KEY_BITS {
            Verdict::Met
        } else {
            Verdict::Missed
        },
        evidence: format!("{} key of {bits} bits", cert.key_algorithm()),
    });

    let policies = cert.application_policies();
    let has_policies = cert.facts().application_policies.is_some();
    let listed = if has_policies {
        policies
    } else {
        cert.extended_key_usages()
    };
    let names_network_unlock = listed.iter().any(|p| p == oid::NETWORK_UNLOCK);
    let leftovers: Vec<&str> = USER_TEMPLATE_PURPOSES
        .iter()
        .copied()
        .filter(|o| {
            policies.iter().any(|p| p == o) || cert.extended_key_usages().iter().any(|p| p == o)
        })
        .collect();
    steps.push(TemplateStep {
        code: "application-policy",
        step: "steps 10 to 14: Extensions, Application Policies: the User template's removed, \
               \"BitLocker Network Unlock\" (1.3.6.1.4.1.311.67.1.1) added",
        verdict: if names_network_unlock && leftovers.is_empty() {
            Verdict::Met
        } else {
            Verdict::Missed
        },
        evidence: if !names_network_unlock && has_policies {
            format!(
                "the application policies do not name {}",
                oid::NETWORK_UNLOCK
            )
        } else if !names_network_unlock {
            format!(
                "no application policies extension, and the EKU does not name {}",
                oid::NETWORK_UNLOCK
            )
        } else if !leftovers.is_empty() {
            format!(
                "the User template's {} were not removed (step 11)",
                leftovers
                    .iter()
                    .map(|o| oid::purpose_name(o).unwrap_or(o))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if has_policies {
            "the application policies name BitLocker Network Unlock alone".into()
        } else {
            "the EKU names BitLocker Network Unlock alone".into()
        },
    });

    steps.push(TemplateStep {
        code: "key-encipherment-critical",
        step: "step 15: Extensions, Key Usage \"key encipherment\", \"Make this extension \
               critical\"",
        verdict: match key_usage {
            Some(ku) if ku.allows("keyEncipherment") && ku.critical => Verdict::Met,
            _ => Verdict::Missed,
        },
        evidence: match key_usage {
            None => "no key usage extension".into(),
            Some(ku) if !ku.allows("keyEncipherment") => {
                format!(
                    "the key usage grants {} but not keyEncipherment",
                    ku.usages.join(", ")
                )
            }
            Some(ku) if !ku.critical => {
                "the key usage grants keyEncipherment but is not marked critical".into()
            }
            Some(_) => "critical key usage with keyEncipherment".into(),
        },
    });

    TemplateJudgement {
        followed: steps.iter().all(|s| s.verdict != Verdict::Missed),
        steps,
    }
}

impl fmt::Display for TemplateJudgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "The seed's Network Unlock certificate template:")?;
        for step in &self.steps {
            let mark = match step.verdict {
                Verdict::Met => "ok",
                Verdict::Missed => "MISSED",
                Verdict::CannotTell => "?",
            };
            writeln!(f, "  [{mark}] {}: {}", step.step, step.evidence)?;
        }
        if self.followed {
            writeln!(f, "Every step the certificate can show was followed.")
        } else {
            writeln!(
                f,
                "Redo the template's {} and issue the certificate again.",
                self.missed()
                    .map(|s| s.step.split(':').next().unwrap_or(s.step))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::generate::{CertificateRequest, Validity};

    fn verdicts(judgement: &TemplateJudgement) -> Vec<(&'static str, Verdict)> {
        judgement
            .steps
            .iter()
            .map(|s| (s.code, s.verdict))
            .collect()
    }

    #[test]
    fn the_seed_certificate_follows_the_template() {
        let pfx = fixture::cached(1).clone();
        let judged = judge(&pfx, true);
        assert!(judged.followed, "{judged}");
        assert!(judged.steps.iter().all(|s| s.verdict == Verdict::Met));
        assert_eq!(judged.steps.len(), 5);
        let cer = CertificateBundle::new(pfx.certificate.clone(), None);
        let judged = judge(&cer, false);
        assert!(
            judged.followed,
            "a .cer cannot show the export step: {judged}"
        );
        assert_eq!(
            verdicts(&judged)[1],
            ("private-key-exportable", Verdict::CannotTell)
        );
        assert!(judged.to_string().contains("[?] step 5"), "{judged}");
    }

    #[test]
    fn a_pfx_without_its_key_missed_the_export_step() {
        let bundle = CertificateBundle::new(fixture::cached(1).certificate.clone(), None);
        let judged = judge(&bundle, true);
        assert!(!judged.followed);
        let missed: Vec<&str> = judged.missed().map(|s| s.code).collect();
        assert_eq!(missed, ["private-key-exportable"]);
        assert!(
            judged.to_string().contains("Redo the template's step 5"),
            "{judged}"
        );
    }

    #[test]
    fn a_small_key_without_the_network_unlock_policy_names_both_steps() {
        let request = CertificateRequest {
            key_bits: 1024,
            network_unlock_purpose: false,
            ..CertificateRequest::network_unlock(Validity::fixture())
        };
        let bundle = request.self_signed_from_seed(5).expect("generated");
        let judged = judge(&bundle, true);
        let missed: Vec<&str> = judged.missed().map(|s| s.code).collect();
        assert_eq!(missed, ["minimum-key-size", "application-policy"]);
        let text = judged.to_string();
        assert!(text.contains("RSA key of 1024 bits"), "{text}");
        assert!(
            text.contains("and the EKU does not name 1.3.6.1.4.1.311.67.1.1"),
            "{text}"
        );
    }

    #[test]
    fn a_signing_ca_certificate_misses_the_purpose_and_key_usage_steps() {
        let ca =
            crate::generate::CertificateAuthority::from_seed("CN=Lab CA", Validity::fixture(), 3)
                .expect("a CA");
        let judged = judge(&ca.to_bundle(), true);
        let missed: Vec<&str> = judged.missed().map(|s| s.code).collect();
        assert_eq!(
            missed,
            [
                "purpose-encryption",
                "application-policy",
                "key-encipherment-critical"
            ]
        );
        assert!(
            judged.steps[0].evidence.contains("digitalSignature"),
            "{judged}"
        );
    }
}
