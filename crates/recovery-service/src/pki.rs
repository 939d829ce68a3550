//! Server-authentication certificates for management points: a root CA and the certificates it
//! issues, deterministic from a seed, for the simulator's management points and for
//! `nulab recovery serve` when no certificate is given.
//!
//! The certificates crate makes Network Unlock certificates (RSA-2048 with the Network Unlock
//! EKU), which a TLS server must not use; these are ordinary server-authentication
//! certificates, so they are made here. Keys are Ed25519 drawn from the injected RNG: Ed25519
//! signatures are deterministic (RFC 8032), so the same seed gives the same DER, and key
//! generation costs microseconds where RSA would cost seconds per simulated host. Validity
//! dates are fixed parameters (2020 to 2040), never the clock; the verifier judges them against
//! the time its caller gives it (simulated time in the simulator).

use rand_core::{CryptoRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7): SEQUENCE, version 0, the
/// id-Ed25519 algorithm, and the 32-byte seed as an OCTET STRING inside an OCTET STRING.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn ed25519_key(rng: &mut (impl RngCore + CryptoRng)) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    der.extend_from_slice(&seed);
    let key = KeyPair::try_from(der.as_slice())?;
    Ok((key, der))
}

fn serial(rng: &mut (impl RngCore + CryptoRng)) -> SerialNumber {
    let mut s = [0u8; 16];
    rng.fill_bytes(&mut s);
    s[0] &= 0x7f; // a positive INTEGER
    s[0] |= 0x01; // and no leading zero to strip
    SerialNumber::from_slice(&s)
}

fn fixed_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
}

/// A root certification authority (an organisation's, or a stand-in for a public one).
pub struct RootCa {
    name: String,
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its private key, ready for [`crate::server::tls_config`].
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub chain_pem: String,
    pub key_pem: String,
}

impl RootCa {
    /// A self-signed root named `common_name`, its key and serial from `rng`.
    pub fn generate(
        common_name: &str,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, PkiError> {
        let (key, _) = ed25519_key(rng)?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.serial_number = Some(serial(rng));
        fixed_validity(&mut params);
        let cert = params.self_signed(&key)?;
        let issuer = Issuer::new(params, key);
        Ok(Self {
            name: common_name.to_owned(),
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server-authentication certificate for `hosts` (DNS names or IP addresses), the first
    /// being its common name.
    pub fn issue_server(
        &self,
        hosts: &[String],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ServerIdentity, PkiError> {
        self.issue(
            hosts.first().map(String::as_str),
            hosts.to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
            rng,
        )
    }

    /// A client-authentication certificate for a device (`name`, its common name), as a PKI's
    /// autoenrolment gives ConfigMgr clients that talk to an HTTPS management point.
    pub fn issue_client(
        &self,
        name: &str,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ServerIdentity, PkiError> {
        self.issue(
            Some(name),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            rng,
        )
    }

    /// An end-entity certificate signed by this root: a fresh key, then a serial, from `rng`;
    /// `common_name`, the subject alternative names `alt_names` and one extended key usage.
    fn issue(
        &self,
        common_name: Option<&str>,
        alt_names: Vec<String>,
        purpose: ExtendedKeyUsagePurpose,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ServerIdentity, PkiError> {
        let (key, key_der) = ed25519_key(rng)?;
        let mut params = CertificateParams::new(alt_names)?;
        let mut dn = DistinguishedName::new();
        if let Some(name) = common_name {
            dn.push(DnType::CommonName, name);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial(rng));
        fixed_validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn chain(seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ca = RootCa::generate("Contoso Root CA", &mut rng).expect("ca");
        let id = ca
            .issue_server(&["mp1.contoso.com".into()], &mut rng)
            .expect("server");
        (ca.der().to_vec(), id.chain[0].to_vec())
    }

    #[test]
    fn same_seed_same_der_and_another_seed_differs() {
        assert_eq!(chain(1), chain(1));
        assert_ne!(chain(1).1, chain(2).1);
    }

    #[test]
    fn the_chain_verifies_against_its_root_only() {
        use rustls::client::danger::ServerCertVerifier as _;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let ca = RootCa::generate("Contoso Root CA", &mut rng).expect("ca");
        let other = RootCa::generate("Public Trust Root", &mut rng).expect("ca");
        let id = ca
            .issue_server(&["mp1.contoso.com".into()], &mut rng)
            .expect("server");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verify = |root: &CertificateDer<'static>| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).expect("root");
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider.clone(),
            )
            .build()
            .expect("verifier");
            let name = rustls_pki_types::ServerName::try_from("mp1.contoso.com").expect("name");
            // 2021-04-05, inside the fixed validity.
            let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_617_580_800,
            ));
            v.verify_server_cert(&id.chain[0], &[], &name, &[], now)
        };
        assert!(verify(ca.der()).is_ok());
        assert!(verify(other.der()).is_err());
    }

    /// A client certificate (one issue function with the server's) verifies as a client's
    /// against its root only, and is not a server certificate.
    #[test]
    fn a_client_certificate_verifies_as_a_client_against_its_root_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let ca = RootCa::generate("Contoso Root CA", &mut rng).expect("ca");
        let other = RootCa::generate("Public Trust Root", &mut rng).expect("ca");
        let id = ca.issue_client("PC1", &mut rng).expect("client");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_617_580_800,
        ));
        let verify = |root: &CertificateDer<'static>| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).expect("root");
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider.clone(),
            )
            .build()
            .expect("verifier");
            v.verify_client_cert(&id.chain[0], &[], now)
        };
        assert!(verify(ca.der()).is_ok());
        assert!(verify(other.der()).is_err());
        // Not usable as a server certificate (no ServerAuth usage, no name).
        use rustls::client::danger::ServerCertVerifier as _;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .expect("verifier");
        let name = rustls_pki_types::ServerName::try_from("PC1").expect("name");
        assert!(
            server
                .verify_server_cert(&id.chain[0], &[], &name, &[], now)
                .is_err()
        );
    }
}
