//! The object identifiers a Network Unlock certificate carries, and the names `nulab cert show`
//! prints for them. One table, so the generator, the parser and the view cannot disagree.

/// The Network Unlock purpose: the EKU and application policy the seed's `certreq` example adds.
pub const NETWORK_UNLOCK: &str = "1.3.6.1.4.1.311.67.1.1";
/// Extended key usage (RFC 5280 4.2.1.12).
pub const EXTENDED_KEY_USAGE: &str = "2.5.29.37";
/// Microsoft's application-policies extension (`szOID_APPLICATION_CERT_POLICIES`): Windows adds
/// it beside the EKU; its value has the syntax of certificate policies.
pub const APPLICATION_POLICIES: &str = "1.3.6.1.4.1.311.21.10";
/// `rsaEncryption`, the SubjectPublicKeyInfo algorithm of an RSA key.
pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// Arc form of [`NETWORK_UNLOCK`], as rcgen takes OIDs.
pub(crate) const NETWORK_UNLOCK_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 67, 1, 1];
/// Arc form of [`APPLICATION_POLICIES`].
pub(crate) const APPLICATION_POLICIES_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 21, 10];

/// A readable name for a purpose OID (EKU or application policy), where nulab knows one.
pub fn purpose_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        NETWORK_UNLOCK => "BitLocker Network Unlock",
        "2.5.29.37.0" => "Any Purpose",
        "1.3.6.1.5.5.7.3.1" => "Server Authentication",
        "1.3.6.1.5.5.7.3.2" => "Client Authentication",
        "1.3.6.1.5.5.7.3.3" => "Code Signing",
        "1.3.6.1.5.5.7.3.4" => "Secure Email",
        "1.3.6.1.5.5.7.3.8" => "Time Stamping",
        "1.3.6.1.5.5.7.3.9" => "OCSP Signing",
        "1.3.6.1.4.1.311.10.3.4" => "Encrypting File System",
        "1.3.6.1.4.1.311.67.1.2" => "BitLocker Data Recovery Agent",
        _ => return None,
    })
}

/// A readable name for a public-key or signature algorithm OID.
pub(crate) fn algorithm_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        RSA_ENCRYPTION => "RSA",
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.112" => "Ed25519",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_forms_match_the_dotted_forms() {
        let dotted = |arcs: &[u64]| {
            arcs.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".")
        };
        assert_eq!(dotted(NETWORK_UNLOCK_ARCS), NETWORK_UNLOCK);
        assert_eq!(dotted(APPLICATION_POLICIES_ARCS), APPLICATION_POLICIES);
    }

    #[test]
    fn network_unlock_has_its_windows_name() {
        assert_eq!(
            purpose_name(NETWORK_UNLOCK),
            Some("BitLocker Network Unlock")
        );
        assert_eq!(purpose_name("1.2.3"), None);
    }
}
