//! Deterministic certificates for tests, simulations and `nulab cert new --seed N`: the seed's
//! `certreq` example with fixed dates ([`Validity::fixture`]), so a seed names the same bytes
//! on every machine and every day.

use crate::certificate::CertificateBundle;
use crate::generate::{CertificateAuthority, CertificateRequest, DEFAULT_CA_SUBJECT, Validity};

/// The seed's self-signed Network Unlock certificate and key, from `seed`.
pub fn network_unlock(seed: u64) -> CertificateBundle {
    CertificateRequest::network_unlock(Validity::fixture())
        .self_signed_from_seed(seed)
        .expect("the seed's request with fixed dates always generates")
}

/// A lab root CA from `ca_seed`, and a Network Unlock certificate it issued from `leaf_seed`
/// (whose chain holds the CA certificate).
pub fn ca_issued(ca_seed: u64, leaf_seed: u64) -> (CertificateAuthority, CertificateBundle) {
    let ca = CertificateAuthority::from_seed(DEFAULT_CA_SUBJECT, Validity::fixture(), ca_seed)
        .expect("a CA with fixed dates always generates");
    let leaf = CertificateRequest::network_unlock(Validity::fixture())
        .issued_by_from_seed(&ca, leaf_seed)
        .expect("the seed's request with fixed dates always generates");
    (ca, leaf)
}

/// [`network_unlock`], generated once per seed per test binary: RSA key generation dominates
/// test time.
#[cfg(test)]
pub(crate) fn cached(seed: u64) -> CertificateBundle {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<BTreeMap<u64, CertificateBundle>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(seed)
        .or_insert_with(|| network_unlock(seed))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_der_different_seed_different_der() {
        let a = network_unlock(42);
        let b = network_unlock(42);
        let c = network_unlock(43);
        assert_eq!(a.certificate.der(), b.certificate.der());
        assert_eq!(a.private_key, b.private_key);
        assert_ne!(a.certificate.der(), c.certificate.der());
        assert_ne!(a.certificate.serial(), c.certificate.serial());
        assert_ne!(a.private_key, c.private_key);
    }

    #[test]
    fn seed_1_names_the_same_certificate_on_every_machine() {
        // Pinned on purpose: if this changes, every fixture, thumbprint in a policy file and
        // recorded scenario changes with it (e.g. after an `rsa` key-generation change).
        assert_eq!(
            cached(1).thumbprint().to_string(),
            "f0f0685c46b9486d6de55b7a46f3a384ccd361a3"
        );
    }

    #[test]
    fn ca_issued_is_deterministic_too() {
        let (ca1, leaf1) = ca_issued(1, 2);
        let (ca2, leaf2) = ca_issued(1, 2);
        assert_eq!(ca1.certificate().der(), ca2.certificate().der());
        assert_eq!(leaf1.certificate.der(), leaf2.certificate.der());
        assert_eq!(leaf1.certificate.issuer(), ca1.certificate().subject());
        assert_ne!(leaf1.certificate.issuer(), leaf1.certificate.subject());
    }
}
