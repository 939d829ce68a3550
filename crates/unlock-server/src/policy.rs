//! The subnet policy file `bde-network-unlock.ini`, with every rule of the seed document.
//!
//! ```ini
//! [SUBNETS]
//! SUBNET1=10.185.250.0/24 ; a comment about this subrange could be here, after the semicolon
//! SUBNET3= 2001:4898:a:2::/64 ; an IPv6 subnet
//!
//! [2158a767e1c14e88e27a4c0aee111d2de2eafe60]
//! SUBNET1
//! ;SUBNET2
//! SUBNET3
//! ```
//!
//! - `[SUBNETS]` holds `name=CIDR` lines (IPv4 and IPv6, spaces allowed around `=`, `;` starts a
//!   comment anywhere on a line). `ENABLED` is not allowed as a subnet name.
//! - A section per certificate, named by its thumbprint without spaces (hex, any case). The names
//!   listed are the only subnets permitted for that certificate; an empty section permits every
//!   subnet; a certificate with no section is unrestricted; a `DISABLED` line disables the
//!   certificate; a subnet commented out with `;` is excluded.
//! - A corrupted or invalid file makes the provider fail and stop answering every request, as
//!   Windows does. [`lint`] reports every problem with its line number; a file with any error has
//!   no [`SubnetPolicy`].
//!
//! Choices where the seed is silent, made as an admin would want them and stated here: section
//! and subnet names and the `DISABLED` keyword are case-insensitive, as Windows INI files are; a
//! CIDR with host bits set (the seed's own `10.185.252.200/28`) means its network; a certificate
//! section naming a subnet that `[SUBNETS]` does not define makes the file invalid; `DISABLED`
//! wins over any subnet listed beside it; IPv6 link-local clients are always answered (MS-NKPU),
//! except for a `DISABLED` certificate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use nkpu::Thumbprint;
use serde::Serialize;

/// One problem found in the file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What the file allows for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateRule {
    /// A `DISABLED` line: the certificate unlocks nobody.
    Disabled,
    /// An empty section: every subnet.
    AnySubnet,
    /// Only these subnets (names as written in `[SUBNETS]`).
    Only(Vec<String>),
}

/// A valid subnet policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetPolicy {
    /// Upper-cased name → (name as written, network).
    subnets: BTreeMap<String, (String, IpNet)>,
    certificates: BTreeMap<Thumbprint, CertificateRule>,
}

/// The result of reading a policy file: the policy if it is valid, and every problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// `None` when there is any error: the provider stops answering.
    pub policy: Option<SubnetPolicy>,
    pub errors: Vec<Problem>,
    /// Things that are allowed but probably not what the admin meant.
    pub warnings: Vec<Problem>,
}

/// The provider's answer for one certificate and one client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(AllowReason),
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowReason {
    /// No policy file at all: every client with a known certificate is unlocked.
    NoPolicyFile,
    NoSectionForCertificate,
    EmptySection,
    InSubnet {
        name: String,
        network: IpNet,
    },
    Ipv6LinkLocal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    CertificateDisabled,
    NotInPermittedSubnets { permitted: Vec<String> },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow(reason) => write!(f, "allow: {reason}"),
            Decision::Deny(reason) => write!(f, "deny: {reason}"),
        }
    }
}

impl fmt::Display for AllowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowReason::NoPolicyFile => f.write_str("there is no subnet policy file"),
            AllowReason::NoSectionForCertificate => {
                f.write_str("the certificate has no section, so no subnet restriction applies")
            }
            AllowReason::EmptySection => f.write_str(
                "the certificate's section lists no subnet, so every subnet is permitted",
            ),
            AllowReason::InSubnet { name, network } => {
                write!(f, "the address is in permitted subnet {name} ({network})")
            }
            AllowReason::Ipv6LinkLocal => {
                f.write_str("IPv6 link-local clients are always answered")
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::CertificateDisabled => {
                f.write_str("the certificate's section has a DISABLED line")
            }
            DenyReason::NotInPermittedSubnets { permitted } => write!(
                f,
                "the address is in none of the subnets permitted for this certificate ({})",
                permitted.join(", ")
            ),
        }
    }
}

impl SubnetPolicy {
    /// Whether the provider answers a client at `addr` that used certificate `thumbprint`.
    pub fn decide(&self, thumbprint: &Thumbprint, addr: IpAddr) -> Decision {
        let rule = self.certificates.get(thumbprint);
        if rule == Some(&CertificateRule::Disabled) {
            return Decision::Deny(DenyReason::CertificateDisabled);
        }
        if let IpAddr::V6(v6) = addr
            && v6.is_unicast_link_local()
        {
            return Decision::Allow(AllowReason::Ipv6LinkLocal);
        }
        match rule {
            None => Decision::Allow(AllowReason::NoSectionForCertificate),
            Some(CertificateRule::AnySubnet) => Decision::Allow(AllowReason::EmptySection),
            Some(CertificateRule::Disabled) => Decision::Deny(DenyReason::CertificateDisabled),
            Some(CertificateRule::Only(names)) => {
                for name in names {
                    if let Some((written, network)) = self.subnets.get(&name.to_ascii_uppercase())
                        && network.contains(&addr)
                    {
                        return Decision::Allow(AllowReason::InSubnet {
                            name: written.clone(),
                            network: *network,
                        });
                    }
                }
                Decision::Deny(DenyReason::NotInPermittedSubnets {
                    permitted: names.clone(),
                })
            }
        }
    }

    /// The rule for a certificate, if the file has a section for it.
    pub fn rule(&self, thumbprint: &Thumbprint) -> Option<&CertificateRule> {
        self.certificates.get(thumbprint)
    }

    /// The subnets defined in `[SUBNETS]`, in name order.
    pub fn subnets(&self) -> impl Iterator<Item = (&str, IpNet)> {
        self.subnets
            .values()
            .map(|(name, net)| (name.as_str(), *net))
    }
}

/// The decision when there may be no file, or an invalid one.
pub fn decide(lint: Option<&Lint>, thumbprint: &Thumbprint, addr: IpAddr) -> Option<Decision> {
    match lint {
        None => Some(Decision::Allow(AllowReason::NoPolicyFile)),
        Some(Lint {
            policy: Some(policy),
            ..
        }) => Some(policy.decide(thumbprint, addr)),
        // An invalid file: the provider has stopped; there is no decision, only silence.
        Some(Lint { policy: None, .. }) => None,
    }
}

enum Section {
    None,
    Subnets,
    Certificate(Thumbprint),
    /// A section whose header was wrong: its lines are not checked again.
    Invalid,
}

/// Reads and checks a policy file, reporting every problem with its line number.
pub fn lint(text: &str) -> Lint {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut policy = SubnetPolicy::default();
    // Certificate sections as written: thumbprint → (header line, entries with their lines).
    let mut sections: BTreeMap<Thumbprint, (usize, Vec<(usize, String)>)> = BTreeMap::new();
    let mut seen_subnets_section = false;
    let mut section = Section::None;
    let mut error = |line: usize, message: String| errors.push(Problem { line, message });

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.contains('\0')
            || raw
                .chars()
                .any(|c| c.is_control() && c != '\t' && c != '\r')
        {
            error(
                line,
                "the line holds control characters: the file is corrupted".into(),
            );
            continue;
        }
        let content = raw.split(';').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                error(
                    line,
                    format!("section header {content:?} has no closing ']'"),
                );
                section = Section::Invalid;
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("SUBNETS") {
                if seen_subnets_section {
                    error(line, "a second [SUBNETS] section".into());
                }
                seen_subnets_section = true;
                section = Section::Subnets;
                continue;
            }
            match name.parse::<Thumbprint>() {
                Ok(thumbprint) => match sections.entry(thumbprint) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        error(
                            line,
                            format!("a second section for certificate {thumbprint}"),
                        );
                        section = Section::Invalid;
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert((line, Vec::new()));
                        section = Section::Certificate(thumbprint);
                    }
                },
                Err(nkpu::ThumbprintError::ContainsSpaces) => {
                    error(
                        line,
                        format!(
                            "section [{name}]: a certificate thumbprint must be written without \
                             spaces ({}), or Windows does not recognise it",
                            name.split_whitespace()
                                .collect::<String>()
                                .to_ascii_lowercase()
                        ),
                    );
                    section = Section::Invalid;
                }
                Err(err) => {
                    error(
                        line,
                        format!(
                            "section [{name}] is neither [SUBNETS] nor a certificate thumbprint: {err}"
                        ),
                    );
                    section = Section::Invalid;
                }
            }
            continue;
        }
        match &section {
            Section::None => error(
                line,
                format!("{content:?} stands before any section ([SUBNETS] or a thumbprint)"),
            ),
            Section::Invalid => {}
            Section::Subnets => {
                let Some((name, cidr)) = content.split_once('=') else {
                    error(
                        line,
                        format!("{content:?} in [SUBNETS] is not a name=CIDR line"),
                    );
                    continue;
                };
                let (name, cidr) = (name.trim(), cidr.trim());
                if name.is_empty() {
                    error(line, format!("subnet {cidr:?} has no name"));
                    continue;
                }
                if name.eq_ignore_ascii_case("ENABLED") {
                    error(line, "\"ENABLED\" is not allowed as a subnet name".into());
                    continue;
                }
                if name.eq_ignore_ascii_case("DISABLED") {
                    error(
                        line,
                        "\"DISABLED\" is a keyword of certificate sections, not a subnet name"
                            .into(),
                    );
                    continue;
                }
                if name.chars().any(char::is_whitespace) {
                    error(line, format!("subnet name {name:?} contains spaces"));
                    continue;
                }
                let network = match parse_cidr(cidr) {
                    Ok(network) => network,
                    Err(message) => {
                        error(line, format!("subnet {name}: {message}"));
                        continue;
                    }
                };
                if network.addr() != network.network() {
                    warnings.push(Problem {
                        line,
                        message: format!(
                            "subnet {name}: {cidr} has host bits set; it means {}",
                            network.trunc()
                        ),
                    });
                }
                let key = name.to_ascii_uppercase();
                if policy.subnets.contains_key(&key) {
                    error(line, format!("subnet {name} is defined twice"));
                    continue;
                }
                policy
                    .subnets
                    .insert(key, (name.to_owned(), network.trunc()));
            }
            Section::Certificate(thumbprint) => {
                if content.contains('=') {
                    error(
                        line,
                        format!(
                            "{content:?}: a certificate section lists subnet names, one per line; \
                             define subnets in [SUBNETS]"
                        ),
                    );
                    continue;
                }
                if let Some((_, entries)) = sections.get_mut(thumbprint) {
                    entries.push((line, content.to_owned()));
                }
            }
        }
    }

    for (thumbprint, (header_line, entries)) in sections {
        let disabled = entries
            .iter()
            .any(|(_, e)| e.eq_ignore_ascii_case("DISABLED"));
        let mut names = Vec::new();
        for (line, entry) in &entries {
            if entry.eq_ignore_ascii_case("DISABLED") {
                continue;
            }
            match policy.subnets.get(&entry.to_ascii_uppercase()) {
                Some((written, _)) => names.push(written.clone()),
                None => error(
                    *line,
                    format!("certificate {thumbprint}: subnet {entry} is not defined in [SUBNETS]"),
                ),
            }
        }
        if disabled && !names.is_empty() {
            warnings.push(Problem {
                line: header_line,
                message: format!(
                    "certificate {thumbprint} is DISABLED; the subnets listed beside it do not matter"
                ),
            });
        }
        let rule = if disabled {
            CertificateRule::Disabled
        } else if names.is_empty() {
            CertificateRule::AnySubnet
        } else {
            CertificateRule::Only(names)
        };
        policy.certificates.insert(thumbprint, rule);
    }

    errors.sort_by_key(|p| p.line);
    warnings.sort_by_key(|p| p.line);
    Lint {
        policy: errors.is_empty().then_some(policy),
        errors,
        warnings,
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if text.is_empty() {
        return Err("no CIDR after '='".into());
    }
    if !text.contains('/') {
        return Err(format!(
            "{text:?} has no prefix length (write it as a CIDR, e.g. 10.0.0.0/24)"
        ));
    }
    text.parse::<IpNet>()
        .map_err(|_| format!("{text:?} is not a CIDR address or range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED_EXAMPLE: &str = "\
[SUBNETS]
SUBNET1=10.185.250.0/24 ; a comment about this subrange could be here, after the semicolon
SUBNET2=10.185.252.200/28 
SUBNET3= 2001:4898:a:2::/64 ; an IPv6 subnet
SUBNET4=2001:4898:a:3::/64; in production, the admin would likely give more useful names, like BUILDING9-EXCEPT-RECEP.

[2158a767e1c14e88e27a4c0aee111d2de2eafe60]
;Comments could be added here to indicate when the cert was issued, which Group Policy should get it, and so on.
;This list shows this cert is allowed to unlock clients only on the SUBNET1 and SUBNET3 subnets. In this example, SUBNET2 is commented out.
SUBNET1
;SUBNET2
SUBNET3
";

    fn thumb(s: &str) -> Thumbprint {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CERT: &str = "2158a767e1c14e88e27a4c0aee111d2de2eafe60";

    #[test]
    fn the_seed_example_is_valid_and_restricts_its_certificate() {
        let lint = lint(SEED_EXAMPLE);
        assert_eq!(lint.errors, vec![]);
        let policy = lint.policy.unwrap();
        assert_eq!(policy.subnets().count(), 4);
        let cert = thumb(CERT);
        assert!(matches!(
            policy.decide(&cert, ip("10.185.250.7")),
            Decision::Allow(AllowReason::InSubnet { ref name, .. }) if name == "SUBNET1"
        ));
        assert!(matches!(
            policy.decide(&cert, ip("2001:4898:a:2::99")),
            Decision::Allow(AllowReason::InSubnet { ref name, .. }) if name == "SUBNET3"
        ));
        // SUBNET2 is commented out of the section: excluded.
        assert!(matches!(
            policy.decide(&cert, ip("10.185.252.195")),
            Decision::Deny(DenyReason::NotInPermittedSubnets { .. })
        ));
        // A certificate with no section is unrestricted.
        assert_eq!(
            policy.decide(&thumb(&"ab".repeat(20)), ip("192.0.2.1")),
            Decision::Allow(AllowReason::NoSectionForCertificate)
        );
        // The seed's 10.185.252.200/28 has host bits set: a warning, not an error.
        assert_eq!(lint.warnings.len(), 1);
        assert_eq!(lint.warnings[0].line, 3);
    }

    #[test]
    fn empty_section_permits_every_subnet_and_disabled_permits_none() {
        let text = format!(
            "[SUBNETS]\nA=10.0.0.0/8\n[{CERT}]\n[{}]\nA\nDISABLED\n",
            "cd".repeat(20)
        );
        let lint = lint(&text);
        let policy = lint.policy.unwrap();
        assert_eq!(
            policy.decide(&thumb(CERT), ip("192.0.2.1")),
            Decision::Allow(AllowReason::EmptySection)
        );
        assert_eq!(
            policy.decide(&thumb(&"cd".repeat(20)), ip("10.1.1.1")),
            Decision::Deny(DenyReason::CertificateDisabled)
        );
        assert_eq!(
            policy.decide(&thumb(&"cd".repeat(20)), ip("fe80::1")),
            Decision::Deny(DenyReason::CertificateDisabled)
        );
        assert_eq!(lint.warnings.len(), 1, "DISABLED beside a subnet");
    }

    #[test]
    fn ipv6_link_local_clients_are_always_answered() {
        let text = format!("[SUBNETS]\nA=10.0.0.0/8\n[{CERT}]\nA\n");
        let policy = lint(&text).policy.unwrap();
        assert_eq!(
            policy.decide(&thumb(CERT), ip("fe80::216:3eff:fe01:1122")),
            Decision::Allow(AllowReason::Ipv6LinkLocal)
        );
        assert!(matches!(
            policy.decide(&thumb(CERT), ip("2001:db8::1")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn thumbprints_any_case_but_never_with_spaces() {
        let upper = format!("[{}]\n", CERT.to_ascii_uppercase());
        assert!(lint(&upper).policy.unwrap().rule(&thumb(CERT)).is_some());
        let spaced = "[21 58 a7 67 e1 c1 4e 88 e2 7a 4c 0a ee 11 1d 2d e2 ea fe 60]\n";
        let lint = lint(spaced);
        assert!(lint.policy.is_none());
        assert_eq!(lint.errors[0].line, 1);
        assert!(
            lint.errors[0].message.contains("without spaces"),
            "{}",
            lint.errors[0]
        );
    }

    #[test]
    fn enabled_is_not_a_subnet_name() {
        let lint = lint("[SUBNETS]\nENABLED=10.0.0.0/8\n");
        assert!(lint.policy.is_none());
        assert_eq!(lint.errors[0].line, 2);
        assert!(lint.errors[0].message.contains("ENABLED"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
stray line
[SUBNETS]
A=10.0.0.0/33
B=not-an-address/8
C
A=10.0.0.0/8
A=10.1.0.0/16
[nonsense]
x
[0123456789012345678901234567890123456789]
UNDEFINED
X=1.2.3.4/32
[SUBNETS
";
        let lint = lint(text);
        let lines: Vec<usize> = lint.errors.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            vec![1, 3, 4, 5, 7, 8, 11, 12, 13],
            "{:#?}",
            lint.errors
        );
        assert!(lint.policy.is_none());
    }

    #[test]
    fn corrupted_bytes_make_the_file_invalid() {
        let lint = lint("[SUBNETS]\nA=10.0.0.0/8\n\u{1}\u{2}garbage\n");
        assert!(lint.policy.is_none());
        assert_eq!(lint.errors[0].line, 3);
    }

    #[test]
    fn no_file_allows_and_an_invalid_file_stops_the_provider() {
        let cert = thumb(CERT);
        assert_eq!(
            decide(None, &cert, ip("10.0.0.1")),
            Some(Decision::Allow(AllowReason::NoPolicyFile))
        );
        let invalid = lint("[SUBNETS]\nENABLED=10.0.0.0/8\n");
        assert_eq!(decide(Some(&invalid), &cert, ip("10.0.0.1")), None);
    }

    proptest! {
        #[test]
        fn lint_never_panics(text in "\\PC{0,400}") {
            let _ = lint(&text);
        }

        #[test]
        fn lint_never_panics_on_ini_shaped_text(lines in proptest::collection::vec(
            prop_oneof![
                Just("[SUBNETS]".to_owned()),
                "[0-9a-fA-F ]{0,44}".prop_map(|t| format!("[{t}]")),
                "[A-Za-z0-9]{0,6} ?= ?[0-9a-f.:/]{0,20}( ;.*)?",
                "[A-Za-z;]{0,8}",
            ], 0..12)) {
            let text = lines.join("\n");
            let lint = lint(&text);
            if let Some(policy) = lint.policy {
                let _ = policy.decide(&thumb(CERT), ip("10.0.0.1"));
            }
        }
    }
}
