//! PKCS#12 (`.pfx`) files, through p12-keystore: written with PBES2 (PBKDF2-HMAC-SHA-256,
//! AES-256-CBC) and an HMAC-SHA-256 MAC, which OpenSSL 3 and current Windows read; read in any
//! form p12-keystore supports (including the legacy 3DES/RC2 files older Windows writes).
//!
//! One deliberate exception to this crate's purity: p12-keystore draws its salts and IVs from
//! the operating system's RNG and offers no way to inject one, so the bytes of a `.pfx` differ
//! between runs (its contents do not). Nothing in a simulation compares `.pfx` bytes; the
//! `.cer`, the key and the thumbprint are deterministic.

use p12_keystore::{
    Certificate as P12Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm,
    Pkcs12Archive, PrivateKeyChain,
};

use crate::certificate::{Certificate, CertificateBundle, PrivateKey};
use crate::error::{ExportError, ImportError};
use crate::oid;

/// PBKDF2 and MAC iterations: OpenSSL 3's `pkcs12 -export` default.
const ITERATIONS: u32 = 2048;

/// Writes `bundle` as a `.pfx` protected by `password`: the certificate and its chain, and the
/// private key when the bundle has one (Windows' "Yes, export the private key").
pub fn to_pfx(bundle: &CertificateBundle, password: &str) -> Result<Vec<u8>, ExportError> {
    let p12 = |e: p12_keystore::error::Error| ExportError::Pfx(e.to_string());
    let mut certs = vec![P12Certificate::from_der(bundle.certificate.der()).map_err(p12)?];
    for extra in &bundle.chain {
        certs.push(P12Certificate::from_der(extra.der()).map_err(p12)?);
    }
    let alias = friendly_name(&bundle.certificate);
    let mut store = KeyStore::new();
    match &bundle.private_key {
        Some(key) => {
            let pkcs8 = key.to_pkcs8_der();
            let key = p12_keystore::PrivateKey::from_der(&pkcs8).map_err(p12)?;
            // The local key ID links key and certificate; the thumbprint is stable and unique.
            let local_key_id = bundle.thumbprint().as_bytes().to_vec();
            store.add_entry(
                &alias,
                KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
            );
        }
        None => {
            for (i, cert) in certs.into_iter().enumerate() {
                let name = if i == 0 {
                    alias.clone()
                } else {
                    format!("{alias} #{i}")
                };
                store.add_entry(&name, KeyStoreEntry::Certificate(cert));
            }
        }
    }
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(p12)
}

/// Reads a `.pfx`. The certificate returned is the one the private key belongs to (matched by
/// public key, not by the optional local key ID), or the first when there is no key; the other
/// certificates become the chain. `password: None` tries the empty password, which Windows
/// uses for "no password".
pub fn from_pfx(bytes: &[u8], password: Option<&str>) -> Result<CertificateBundle, ImportError> {
    let archive = match Pkcs12Archive::from_pkcs12(bytes, password.unwrap_or("")) {
        Ok(archive) => archive,
        Err(e) => return Err(import_error(&e, password.is_none())),
    };
    let certificates = archive
        .certs
        .iter()
        .map(|bag| Certificate::from_der(bag.cert.as_der()))
        .collect::<Result<Vec<_>, _>>()?;
    let private_key = match archive.keys.as_slice() {
        [] => None,
        [bag, ..] => {
            let algorithm = bag.key.oid().to_string();
            if algorithm != oid::RSA_ENCRYPTION {
                return Err(ImportError::NotRsaPrivateKey(algorithm));
            }
            Some(PrivateKey::from_pkcs8_der(bag.key.as_der())?)
        }
    };
    CertificateBundle::from_file_parts(certificates, private_key)
}

fn import_error(e: &p12_keystore::error::Error, no_password_given: bool) -> ImportError {
    use p12_keystore::error::Error as P12;
    match e {
        // A failed MAC, or (for a MAC-less file) a padding error after decryption: both mean
        // the password did not derive the right keys.
        P12::MacError(_) | P12::UnpadError if no_password_given => ImportError::PasswordRequired,
        P12::MacError(_) | P12::UnpadError => ImportError::WrongPassword,
        other => ImportError::Pfx(other.to_string()),
    }
}

/// The friendly name Windows shows for an entry: the subject's common name when it has one.
fn friendly_name(certificate: &Certificate) -> String {
    let subject = certificate.subject();
    subject
        .split(", ")
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap_or(subject)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use proptest::prelude::*;

    #[test]
    fn pfx_round_trip_keeps_certificate_and_key() {
        let bundle = fixture::cached(1);
        let pfx = to_pfx(&bundle, "P@ssw0rd").unwrap();
        let back = from_pfx(&pfx, Some("P@ssw0rd")).unwrap();
        assert_eq!(back.certificate.der(), bundle.certificate.der());
        assert_eq!(back.private_key, bundle.private_key);
        assert!(back.chain.is_empty());
    }

    #[test]
    fn wrong_or_missing_password_is_a_clear_error() {
        let pfx = to_pfx(&fixture::cached(1), "right").unwrap();
        assert_eq!(
            from_pfx(&pfx, Some("wrong")),
            Err(ImportError::WrongPassword)
        );
        assert_eq!(from_pfx(&pfx, None), Err(ImportError::PasswordRequired));
    }

    #[test]
    fn empty_password_opens_with_none() {
        let bundle = fixture::cached(1);
        let pfx = to_pfx(&bundle, "").unwrap();
        assert_eq!(
            from_pfx(&pfx, None).unwrap().certificate,
            bundle.certificate
        );
    }

    #[test]
    fn certificate_only_pfx_has_no_key() {
        let mut bundle = fixture::cached(1);
        bundle.private_key = None;
        let pfx = to_pfx(&bundle, "pw").unwrap();
        let back = from_pfx(&pfx, Some("pw")).unwrap();
        assert_eq!(back.certificate, bundle.certificate);
        assert_eq!(back.private_key, None);
    }

    #[test]
    fn chain_comes_back_with_the_leaf_first() {
        let (ca, leaf) = fixture::ca_issued(3, 4);
        let pfx = to_pfx(&leaf, "pw").unwrap();
        let back = from_pfx(&pfx, Some("pw")).unwrap();
        assert_eq!(back.certificate, leaf.certificate);
        assert_eq!(back.chain, [ca.certificate().clone()]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_pfx(&bytes, Some("pw"));
            let _ = from_pfx(&bytes, None);
        }
    }

    #[test]
    fn damaged_pfx_never_panics() {
        // Byte flips and truncations of a real file reach far deeper than random bytes.
        let pfx = to_pfx(&fixture::cached(1), "pw").unwrap();
        for i in (0..pfx.len()).step_by(7) {
            let mut damaged = pfx.clone();
            damaged[i] ^= 0x5a;
            let _ = from_pfx(&damaged, Some("pw"));
            let _ = from_pfx(&pfx[..i], Some("pw"));
        }
    }
}
