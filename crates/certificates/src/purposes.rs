//! The DER of the two purpose-list extensions: extended key usage (a SEQUENCE OF OID) and
//! Microsoft's application policies (a SEQUENCE OF SEQUENCE { policyIdentifier OID,
//! qualifiers OPTIONAL }, the certificate-policies syntax of RFC 5280 4.2.1.4).
//!
//! rcgen writes the EKU itself but knows nothing of application policies, and x509-parser
//! folds EKUs into flags (losing their order); both lists are read here with the `der` crate so
//! that `nulab cert show` lists OIDs exactly as the certificate carries them.

use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode, Sequence};

/// One entry of the application-policies extension (`PolicyInformation`).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PolicyInformation {
    policy_identifier: ObjectIdentifier,
    /// Windows never writes qualifiers for application policies; they are accepted and ignored.
    #[asn1(optional = "true")]
    policy_qualifiers: Option<Any>,
}

/// The DER value (the extension's OCTET STRING contents) of an application-policies extension
/// naming `oids`, as `certreq` writes it for `1.3.6.1.4.1.311.21.10 = "{text}OID=..."`.
pub(crate) fn encode_application_policies(oids: &[&str]) -> Result<Vec<u8>, der::Error> {
    let policies = oids
        .iter()
        .map(|oid| {
            Ok(PolicyInformation {
                policy_identifier: oid_from_dotted(oid)?,
                policy_qualifiers: None,
            })
        })
        .collect::<Result<Vec<_>, der::Error>>()?;
    policies.to_der()
}

/// An OID from its dotted form. Encoded here rather than by `ObjectIdentifier::new`: const-oid
/// 0.9.6 drops a leading base-128 digit of 1 (it writes arc 128 as `80 00` and 16384 as
/// `80 80 00`); its decoder is right, so the bytes are checked by decoding them.
fn oid_from_dotted(dotted: &str) -> Result<ObjectIdentifier, der::Error> {
    let malformed = || der::Error::from(der::ErrorKind::OidMalformed);
    let arcs = dotted
        .split('.')
        .map(|a| a.parse::<u32>().map_err(|_| malformed()))
        .collect::<Result<Vec<_>, _>>()?;
    let [first, second, rest @ ..] = arcs.as_slice() else {
        return Err(malformed());
    };
    if *first > 2 || (*first < 2 && *second >= 40) {
        return Err(malformed());
    }
    let mut bytes = Vec::new();
    for arc in std::iter::once(first * 40 + second).chain(rest.iter().copied()) {
        let digits = (0..5)
            .rev()
            .map(|i| ((arc >> (7 * i)) & 0x7f) as u8)
            .skip_while(|d| *d == 0)
            .collect::<Vec<_>>();
        match digits.split_last() {
            None => bytes.push(0),
            Some((last, high)) => {
                bytes.extend(high.iter().map(|d| d | 0x80));
                bytes.push(*last);
            }
        }
    }
    ObjectIdentifier::from_bytes(&bytes).map_err(|_| malformed())
}

/// The OIDs of an application-policies extension value, in order.
pub(crate) fn decode_application_policies(value: &[u8]) -> Result<Vec<String>, der::Error> {
    let policies = Vec::<PolicyInformation>::from_der(value)?;
    Ok(policies
        .iter()
        .map(|p| p.policy_identifier.to_string())
        .collect())
}

/// The OIDs of an extended-key-usage extension value, in order.
pub(crate) fn decode_extended_key_usage(value: &[u8]) -> Result<Vec<String>, der::Error> {
    let oids = Vec::<ObjectIdentifier>::from_der(value)?;
    Ok(oids.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oid::NETWORK_UNLOCK;
    use proptest::prelude::*;

    #[test]
    fn application_policies_are_a_sequence_of_policy_information() {
        let der = encode_application_policies(&[NETWORK_UNLOCK]).unwrap();
        // SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.311.67.1.1 } }
        assert_eq!(
            hex::encode(&der),
            "300e300c060a2b0601040182374301 01".replace(' ', "")
        );
        assert_eq!(decode_application_policies(&der).unwrap(), [NETWORK_UNLOCK]);
    }

    #[test]
    fn arcs_with_a_leading_digit_of_one_are_encoded_right() {
        let der = encode_application_policies(&["1.0.128", "1.0.16384"]).unwrap();
        assert!(
            hex::encode(&der).contains("0603288100"),
            "{}",
            hex::encode(&der)
        );
        assert_eq!(
            decode_application_policies(&der).unwrap(),
            ["1.0.128", "1.0.16384"]
        );
        assert!(encode_application_policies(&["3.1"]).is_err());
        assert!(encode_application_policies(&["1.40.1"]).is_err());
        assert!(encode_application_policies(&["1.x"]).is_err());
    }

    #[test]
    fn extended_key_usage_keeps_order() {
        let der = vec![
            ObjectIdentifier::new("1.3.6.1.5.5.7.3.2").unwrap(),
            ObjectIdentifier::new(NETWORK_UNLOCK).unwrap(),
        ]
        .to_der()
        .unwrap();
        assert_eq!(
            decode_extended_key_usage(&der).unwrap(),
            ["1.3.6.1.5.5.7.3.2", NETWORK_UNLOCK]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_application_policies(&bytes);
            let _ = decode_extended_key_usage(&bytes);
        }

        #[test]
        fn application_policies_round_trip(arcs in proptest::collection::vec(
            (0u32..3, 0u32..40, proptest::collection::vec(0u32..1 << 28, 1..6)), 0..5)) {
            // const-oid wants at least three arcs, each under 2^28 (four base-128 digits).
            let oids: Vec<String> = arcs
                .iter()
                .map(|(a, b, rest)| {
                    let mut s = format!("{a}.{b}");
                    for r in rest {
                        s.push_str(&format!(".{r}"));
                    }
                    s
                })
                .collect();
            let refs: Vec<&str> = oids.iter().map(String::as_str).collect();
            let der = encode_application_policies(&refs).unwrap();
            prop_assert_eq!(decode_application_policies(&der).unwrap(), oids);
        }
    }
}
