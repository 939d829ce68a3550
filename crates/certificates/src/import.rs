//! Reading certificate files whatever their form: PEM (certificates, PKCS#8 and PKCS#1 RSA
//! keys), a DER `.cer`, or a PKCS#12 `.pfx`. The form is told from the bytes, not from the file
//! name, because admins rename files (`.crt`, `.p12`, `.der`).

use der::{Decode, Header, Reader, SliceReader, Tag};

use crate::certificate::{Certificate, CertificateBundle, PrivateKey};
use crate::error::ImportError;
use crate::pfx;

/// The forms a certificate file comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Pem,
    /// A DER certificate (`.cer`).
    Der,
    /// PKCS#12 (`.pfx`, `.p12`).
    Pfx,
}

/// Which form `bytes` are in: PEM when the text starts with `-----BEGIN`; otherwise DER, where
/// a PFX's outer SEQUENCE starts with its version INTEGER and a certificate's with the
/// tbsCertificate SEQUENCE.
pub fn detect_format(bytes: &[u8]) -> FileFormat {
    let text_start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &bytes[i..]);
    if text_start.starts_with(b"-----BEGIN") {
        return FileFormat::Pem;
    }
    let first_inner_tag = SliceReader::new(bytes).ok().and_then(|mut reader| {
        let outer = Header::decode(&mut reader).ok()?;
        (outer.tag == Tag::Sequence).then_some(())?;
        reader.peek_tag().ok()
    });
    if first_inner_tag == Some(Tag::Integer) {
        FileFormat::Pfx
    } else {
        FileFormat::Der
    }
}

/// Reads any certificate file. `password` is for a `.pfx` (ignored otherwise).
pub fn read(bytes: &[u8], password: Option<&str>) -> Result<CertificateBundle, ImportError> {
    match detect_format(bytes) {
        FileFormat::Pem => from_pem(bytes),
        FileFormat::Der => Ok(CertificateBundle::new(Certificate::from_der(bytes)?, None)),
        FileFormat::Pfx => pfx::from_pfx(bytes, password),
    }
}

/// Reads PEM text holding one or more certificates and at most one private key (PKCS#8
/// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), in any order and with any text between blocks
/// (such as the "Bag Attributes" lines `openssl pkcs12` prints). The certificate returned is
/// the key's, or the first.
pub fn from_pem(bytes: &[u8]) -> Result<CertificateBundle, ImportError> {
    let blocks = pem::parse_many(bytes).map_err(|e| ImportError::Pem(e.to_string()))?;
    let mut certificates = Vec::new();
    let mut private_key = None;
    for block in &blocks {
        let key = match block.tag() {
            "CERTIFICATE" => {
                certificates.push(Certificate::from_der(block.contents())?);
                continue;
            }
            "PRIVATE KEY" => PrivateKey::from_pkcs8_der(block.contents())?,
            "RSA PRIVATE KEY" => PrivateKey::from_pkcs1_der(block.contents())?,
            other => return Err(ImportError::UnsupportedPemBlock(other.to_owned())),
        };
        if private_key.replace(key).is_some() {
            return Err(ImportError::SeveralPrivateKeys);
        }
    }
    CertificateBundle::from_file_parts(certificates, private_key)
}

/// Reads a private key alone from PEM (PKCS#8 or PKCS#1), e.g. a `key.pem` beside a `.cer`.
pub fn private_key_from_pem(bytes: &[u8]) -> Result<PrivateKey, ImportError> {
    let blocks = pem::parse_many(bytes).map_err(|e| ImportError::Pem(e.to_string()))?;
    let mut keys = blocks.iter().filter_map(|block| match block.tag() {
        "PRIVATE KEY" => Some(PrivateKey::from_pkcs8_der(block.contents())),
        "RSA PRIVATE KEY" => Some(PrivateKey::from_pkcs1_der(block.contents())),
        _ => None,
    });
    let key = keys
        .next()
        .ok_or_else(|| ImportError::Pem("no PRIVATE KEY or RSA PRIVATE KEY block".to_owned()))??;
    if keys.next().is_some() {
        return Err(ImportError::SeveralPrivateKeys);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use proptest::prelude::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;

    #[test]
    fn formats_are_told_from_the_bytes() {
        let bundle = fixture::cached(1);
        assert_eq!(detect_format(bundle.certificate.der()), FileFormat::Der);
        assert_eq!(
            detect_format(bundle.certificate.to_pem().as_bytes()),
            FileFormat::Pem
        );
        let pfx = pfx::to_pfx(&bundle, "pw").unwrap();
        assert_eq!(detect_format(&pfx), FileFormat::Pfx);
    }

    #[test]
    fn der_and_pem_round_trip() {
        let bundle = fixture::cached(1);
        let der = read(bundle.certificate.der(), None).unwrap();
        assert_eq!(der.certificate, bundle.certificate);
        assert_eq!(der.private_key, None);

        let key = bundle.private_key.clone().unwrap();
        let text = format!(
            "{}{}",
            key.to_pkcs8_pem().as_str(),
            bundle.certificate.to_pem()
        );
        let pem = read(text.as_bytes(), None).unwrap();
        assert_eq!(pem.certificate, bundle.certificate);
        assert_eq!(pem.private_key.as_ref(), Some(&key));
    }

    #[test]
    fn pkcs1_keys_are_read_too() {
        let bundle = fixture::cached(1);
        let key = bundle.private_key.clone().unwrap();
        let pkcs1 = key.rsa().to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(private_key_from_pem(pkcs1.as_bytes()).unwrap(), key);
        let text = format!("{}\n{}", bundle.certificate.to_pem(), pkcs1.as_str());
        assert_eq!(from_pem(text.as_bytes()).unwrap().private_key, Some(key));
    }

    #[test]
    fn leaf_is_the_certificate_of_the_key_whatever_the_order() {
        let (ca, leaf) = fixture::ca_issued(3, 4);
        let key = leaf.private_key.clone().unwrap();
        let text = format!(
            "{}{}{}",
            ca.certificate().to_pem(),
            leaf.certificate.to_pem(),
            key.to_pkcs8_pem().as_str()
        );
        let read = from_pem(text.as_bytes()).unwrap();
        assert_eq!(read.certificate, leaf.certificate);
        assert_eq!(read.chain, [ca.certificate().clone()]);
    }

    #[test]
    fn unsupported_and_empty_pem_are_refused() {
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            from_pem(encrypted.as_bytes()),
            Err(ImportError::UnsupportedPemBlock(
                "ENCRYPTED PRIVATE KEY".to_owned()
            ))
        );
        let key = fixture::cached(1).private_key.unwrap();
        assert_eq!(
            from_pem(key.to_pkcs8_pem().as_bytes()),
            Err(ImportError::NoCertificate)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&bytes, Some("pw"));
            let _ = from_pem(&bytes);
            let _ = private_key_from_pem(&bytes);
        }

        #[test]
        fn arbitrary_pem_text_never_panics(body in "[A-Za-z0-9+/=\n]{0,300}", tag in "(CERTIFICATE|PRIVATE KEY|RSA PRIVATE KEY|X)") {
            let text = format!("-----BEGIN {tag}-----\n{body}\n-----END {tag}-----\n");
            let _ = read(text.as_bytes(), None);
        }

        #[test]
        fn damaged_certificates_never_panic(index in any::<prop::sample::Index>(), flip in 1u8..=255, cut in any::<prop::sample::Index>()) {
            let der = fixture::cached(1).certificate.der().to_vec();
            let mut damaged = der.clone();
            let i = index.index(damaged.len());
            damaged[i] ^= flip;
            let _ = read(&damaged, None);
            let _ = read(&der[..cut.index(der.len())], None);
        }
    }
}
