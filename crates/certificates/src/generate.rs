//! Making certificates the way the seed's `certreq` example does ("Create the Network Unlock
//! certificate"): an RSA-2048 key, the subject `CN=BitLocker Network Unlock certificate`, key
//! usage keyEncipherment (critical), EKU and application policy 1.3.6.1.4.1.311.67.1.1, signed
//! with SHA-512; self-signed, or issued by a [`CertificateAuthority`].
//!
//! Everything is a function of the request, the injected RNG and the dates: the RSA key
//! (`rsa` crate) and then the serial number are drawn from the RNG, the dates are parameters,
//! and RSA PKCS#1 v1.5 signatures are deterministic. With a seeded ChaCha20 RNG
//! ([`CertificateRequest::self_signed_from_seed`]) the same seed gives byte-identical DER.
//! rcgen writes the certificate (it marks key usage critical itself) and signs it through
//! aws-lc-rs with the imported key; the application-policies extension, which rcgen does not
//! know, is added as a custom extension encoded in `purposes`.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA512,
    PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey, SubjectPublicKeyInfo,
};
use rsa::pkcs8::EncodePublicKey;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::certificate::{Certificate, CertificateBundle, PrivateKey};
use crate::error::GenerateError;
use crate::oid;
use crate::purposes;

/// The subject of the seed's `certreq` and `New-SelfSignedCertificate` examples.
pub const DEFAULT_SUBJECT: &str = "CN=BitLocker Network Unlock certificate";
/// `KeyLength=2048` in the seed; the key protector on the wire is exactly 256 bytes.
pub const NETWORK_UNLOCK_KEY_BITS: usize = 2048;
/// The subject of the CA nulab makes for tests and the recovery service.
pub const DEFAULT_CA_SUBJECT: &str = "CN=nulab Lab Root CA";

/// Serial numbers are 16 random bytes, positive (RFC 5280 4.1.2.2: at most 20 octets).
const SERIAL_LEN: usize = 16;

/// When a certificate is valid. A parameter, never read from a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    pub fn new(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, GenerateError> {
        if not_after < not_before {
            return Err(GenerateError::Validity {
                not_before: not_before.to_string(),
                not_after: not_after.to_string(),
            });
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// From Unix times in seconds.
    pub fn from_unix(not_before: i64, not_after: i64) -> Result<Self, GenerateError> {
        let at =
            |secs| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| GenerateError::Time(secs));
        Self::new(at(not_before)?, at(not_after)?)
    }

    /// `years` (of 365 days) from `now_unix` seconds: what the CLI uses with the wall clock it
    /// reads. `New-SelfSignedCertificate` and `certreq` give self-signed certificates one year.
    pub fn years_from(now_unix: i64, years: u16) -> Result<Self, GenerateError> {
        let end = now_unix
            .checked_add(i64::from(years) * 365 * 86_400)
            .ok_or(GenerateError::Time(now_unix))?;
        Self::from_unix(now_unix, end)
    }

    /// The fixed dates of seeded fixtures: 2025-01-01T00:00:00Z to 2035-01-01T00:00:00Z, so a
    /// fixture's bytes never depend on when it was made and it stays valid for years.
    pub fn fixture() -> Self {
        Self::from_unix(1_735_689_600, 2_051_222_400).expect("fixed dates are in range and ordered")
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// What to put in a new certificate: the `[NewRequest]` and `[Extensions]` of a `certreq` inf.
///
/// [`CertificateRequest::network_unlock`] is the seed's example; the fields are public so that
/// tests and teaching scenarios can make deliberately unfit certificates (a 1024-bit key, no
/// Network Unlock purpose) and watch them being refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    /// `CN=...`, optionally followed by `, O=...`, `OU=`, `L=`, `S=`/`ST=`, `C=`, `DC=`; a bare
    /// string is taken as the common name.
    pub subject: String,
    pub key_bits: usize,
    pub validity: Validity,
    /// Add EKU and application policy 1.3.6.1.4.1.311.67.1.1.
    pub network_unlock_purpose: bool,
}

impl CertificateRequest {
    /// The seed's `certreq` example, valid for `validity`.
    pub fn network_unlock(validity: Validity) -> Self {
        Self {
            subject: DEFAULT_SUBJECT.to_owned(),
            key_bits: NETWORK_UNLOCK_KEY_BITS,
            validity,
            network_unlock_purpose: true,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// A new key and a self-signed certificate, drawing randomness from `rng`.
    pub fn self_signed(
        &self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<CertificateBundle, GenerateError> {
        let (key, params) = self.key_and_params(rng)?;
        let signer = signing_key(&key)?;
        let cert = params
            .self_signed(&signer)
            .map_err(|e| GenerateError::Signing(e.to_string()))?;
        bundle(cert.der(), key)
    }

    /// [`Self::self_signed`] with the RNG seeded from `seed`: same seed, same DER.
    pub fn self_signed_from_seed(&self, seed: u64) -> Result<CertificateBundle, GenerateError> {
        self.self_signed(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    /// A new key and a certificate issued (signed with SHA-512) by `ca`.
    pub fn issued_by(
        &self,
        ca: &CertificateAuthority,
        rng: &mut impl CryptoRngCore,
    ) -> Result<CertificateBundle, GenerateError> {
        let (key, mut params) = self.key_and_params(rng)?;
        params.use_authority_key_identifier_extension = true;
        let cert = ca.sign(&params, &key)?;
        let mut issued = bundle(cert.as_ref(), key)?;
        issued.chain.push(ca.certificate().clone());
        Ok(issued)
    }

    /// [`Self::issued_by`] with the RNG seeded from `seed`.
    pub fn issued_by_from_seed(
        &self,
        ca: &CertificateAuthority,
        seed: u64,
    ) -> Result<CertificateBundle, GenerateError> {
        self.issued_by(ca, &mut ChaCha20Rng::seed_from_u64(seed))
    }

    /// Draws the key, then the serial, from `rng` (in that order: it fixes the bytes a seed
    /// gives), and fills in rcgen's parameters.
    fn key_and_params(
        &self,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(PrivateKey, CertificateParams), GenerateError> {
        let key = generate_key(self.key_bits, rng)?;
        let mut params = base_params(&self.subject, &self.validity, rng)?;
        params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        if self.network_unlock_purpose {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
                oid::NETWORK_UNLOCK_ARCS.to_vec(),
            )];
            let policies = purposes::encode_application_policies(&[oid::NETWORK_UNLOCK])
                .expect("the Network Unlock OID is a valid OID");
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    oid::APPLICATION_POLICIES_ARCS,
                    policies,
                ));
        }
        Ok((key, params))
    }
}

/// A certificate authority: a CA certificate and its key. nulab makes one for tests and for the
/// recovery service's TLS; Network Unlock itself only needs the leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateAuthority {
    certificate: Certificate,
    key: PrivateKey,
}

impl CertificateAuthority {
    /// A new RSA-2048 root CA (key usage keyCertSign and cRLSign, basic constraints CA).
    pub fn generate(
        subject: &str,
        validity: Validity,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, GenerateError> {
        let key = generate_key(NETWORK_UNLOCK_KEY_BITS, rng)?;
        let mut params = base_params(subject, &validity, rng)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let signer = signing_key(&key)?;
        let cert = params
            .self_signed(&signer)
            .map_err(|e| GenerateError::Signing(e.to_string()))?;
        let certificate = Certificate::from_der(cert.der()).map_err(|e| {
            GenerateError::Signing(format!("rcgen wrote an unreadable certificate: {e}"))
        })?;
        Ok(Self { certificate, key })
    }

    /// [`Self::generate`] with the RNG seeded from `seed`.
    pub fn from_seed(subject: &str, validity: Validity, seed: u64) -> Result<Self, GenerateError> {
        Self::generate(subject, validity, &mut ChaCha20Rng::seed_from_u64(seed))
    }

    /// A CA loaded from files (its certificate and key); the key must match.
    pub fn from_parts(certificate: Certificate, key: PrivateKey) -> Result<Self, GenerateError> {
        if !key.matches(&certificate) {
            return Err(GenerateError::IssuerKeyMismatch);
        }
        Ok(Self { certificate, key })
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The CA as a bundle (certificate and key), e.g. to save it as a `.pfx`.
    pub fn to_bundle(&self) -> CertificateBundle {
        CertificateBundle::new(self.certificate.clone(), Some(self.key.clone()))
    }

    fn sign(
        &self,
        params: &CertificateParams,
        subject_key: &PrivateKey,
    ) -> Result<CertificateDer<'static>, GenerateError> {
        let signer = signing_key(&self.key)?;
        // The issuer name is taken from the CA certificate's own bytes, so it matches the CA's
        // subject exactly whether the CA was generated here or loaded from a file.
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(self.certificate.der()), signer)
                .map_err(|e| GenerateError::Signing(e.to_string()))?;
        // The subject key only needs its public half here, so keys aws-lc-rs would not sign
        // with (1024 bits, for tests of unfit certificates) can still be certified.
        let spki = subject_key
            .public_key()
            .to_public_key_der()
            .map_err(|e| GenerateError::Signing(e.to_string()))?;
        let public = SubjectPublicKeyInfo::from_der(spki.as_bytes())
            .map_err(|e| GenerateError::Signing(e.to_string()))?;
        let cert = params
            .signed_by(&public, &issuer)
            .map_err(|e| GenerateError::Signing(e.to_string()))?;
        Ok(cert.der().clone())
    }
}

fn generate_key(bits: usize, rng: &mut impl CryptoRngCore) -> Result<PrivateKey, GenerateError> {
    if !(1024..=4096).contains(&bits) || !bits.is_multiple_of(8) {
        return Err(GenerateError::KeySize(bits));
    }
    seeded_key::rsa_private_key(rng, bits)
        .map(PrivateKey::from_rsa)
        .map_err(|e| GenerateError::KeyGeneration(e.to_string()))
}

/// `RsaPrivateKey::new(rng, bits)` of the `rsa` crate, the same draws from `rng` and the same
/// key, with less work. Each prime candidate is first divided by the primes below 8,192, and
/// one with such a factor is passed over without the crate's Miller-Rabin and Lucas tests
/// (about half of the candidates that reach them; they would refuse it, being composite, so
/// the search stops at the same prime). A candidate left is then put to one Miller-Rabin round
/// to base 2 in aws-lc's arithmetic (the round the crate's test starts with, several times
/// faster): nearly all are composite and refused there. The few that pass (the primes) get
/// Baillie-PSW, that base-2 round and a strong Lucas test (num-bigint-dig's
/// `probably_prime(p, 0)`), rather than the crate's 20 further rounds to pseudo-random bases:
/// no composite is known to pass Baillie-PSW, and these candidates are random, not crafted.
/// Both tests accept exactly the primes, so the search stops where the crate's does. Seeded
/// generation (the lab's certificates, a scenario's `seed = N`) took about 140 ms a key, most
/// of a small scenario's run; it now takes about 60 ms (perf, an RSA-2048 key). The candidates and every
/// other step are the crate's (rsa 0.9's `generate_multi_prime_key_with_exp` with two primes,
/// num-bigint-dig 0.8's `gen_prime`); a test compares the keys with the crate's on several
/// seeds and sizes.
mod seeded_key {
    use num_bigint_dig::BigUint;
    use num_bigint_dig::prime::probably_prime;
    use rand_core::CryptoRngCore;
    use rsa::RsaPrivateKey;

    /// The primes `gen_prime` sieves with (3 to 53) and their product, as in num-bigint-dig.
    const SMALL_PRIMES: [u64; 15] = [3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53];
    const SMALL_PRIMES_PRODUCT: u64 = 16_294_579_238_595_022_365;
    /// The extra trial division's primes are those from 59 up to this bound.
    const TRIAL_BOUND: u64 = 8_192;

    /// The primes from 59 below [`TRIAL_BOUND`], grouped so that each group's product is below
    /// 2³²: the candidate is reduced once per group, then by each prime in 32-bit arithmetic.
    struct TrialDivisors {
        groups: Vec<(u64, Vec<u64>)>,
    }

    impl TrialDivisors {
        fn new() -> Self {
            let bound = TRIAL_BOUND as usize;
            let mut composite = vec![false; bound];
            let mut groups: Vec<(u64, Vec<u64>)> = Vec::new();
            for i in 2..bound {
                if composite[i] {
                    continue;
                }
                for multiple in (i * i..bound).step_by(i) {
                    composite[multiple] = true;
                }
                let prime = i as u64;
                if prime <= 53 {
                    continue;
                }
                match groups.last_mut() {
                    Some((product, members)) if *product * prime < 1 << 32 => {
                        *product *= prime;
                        members.push(prime);
                    }
                    _ => groups.push((prime, vec![prime])),
                }
            }
            Self { groups }
        }

        /// Whether one of the divisors divides the big-endian number (which is above all of
        /// them: the candidates have at least 512 bits).
        fn divides(&self, be: &[u8]) -> bool {
            self.groups.iter().any(|(product, members)| {
                let rest = remainder(be, *product);
                members.iter().any(|&p| rest.is_multiple_of(p))
            })
        }
    }

    /// A big-endian number modulo `m < 2³²`, 32 bits at a time.
    fn remainder(be: &[u8], m: u64) -> u64 {
        let (head, words) = be.split_at(be.len() % 4);
        let r = head.iter().fold(0u64, |r, &b| (r << 8) | u64::from(b)) % m;
        words.chunks_exact(4).fold(r, |r, w| {
            let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            ((r << 32) | u64::from(word)) % m
        })
    }

    pub(super) fn rsa_private_key(
        rng: &mut (impl CryptoRngCore + ?Sized),
        bit_size: usize,
    ) -> rsa::Result<RsaPrivateKey> {
        let divisors = TrialDivisors::new();
        let exponent = BigUint::from(65_537u32);
        loop {
            let p = gen_prime(rng, bit_size / 2, &divisors);
            let q = gen_prime(rng, bit_size - p.bits(), &divisors);
            if p == q || (&p * &q).bits() != bit_size {
                continue;
            }
            match RsaPrivateKey::from_primes(vec![p, q], exponent.clone()) {
                // The crate draws again when e divides (p - 1)(q - 1): no private exponent.
                Err(rsa::Error::InvalidPrime) => continue,
                other => return other,
            }
        }
    }

    /// num-bigint-dig 0.8's `RandPrime::gen_prime` for `bit_size` of at least 512, with the
    /// trial division before its `probably_prime(p, 20)`.
    fn gen_prime(
        rng: &mut (impl CryptoRngCore + ?Sized),
        bit_size: usize,
        divisors: &TrialDivisors,
    ) -> BigUint {
        let b = match bit_size % 8 {
            0 => 8,
            b => b,
        };
        let len = bit_size.div_ceil(8);
        let mut bytes = vec![0u8; len];
        loop {
            rng.fill_bytes(&mut bytes);
            bytes[0] &= ((1u32 << b) - 1) as u8;
            if b >= 2 {
                bytes[0] |= 3u8.wrapping_shl(b as u32 - 2);
            } else {
                bytes[0] |= 1;
                if len > 1 {
                    bytes[1] |= 0x80;
                }
            }
            bytes[len - 1] |= 1;
            let mut p = BigUint::from_bytes_be(&bytes);
            let rem = remainder_u64(&bytes, SMALL_PRIMES_PRODUCT);
            let delta = (0..1u64 << 20).step_by(2).find(|delta| {
                let m = rem + delta;
                SMALL_PRIMES
                    .iter()
                    .all(|&prime| !m.is_multiple_of(prime) || (bit_size <= 6 && m == prime))
            });
            if let Some(delta) = delta
                && delta > 0
            {
                p += BigUint::from(delta);
            }
            if p.bits() != bit_size {
                continue;
            }
            let be = p.to_bytes_be();
            if divisors.divides(&be) {
                continue;
            }
            let accepted = match base_two::strong_probable_prime(&be) {
                // Almost every candidate that gets here is composite, and base 2 refuses it.
                Some(false) => false,
                // Baillie-PSW: base 2 again and a strong Lucas test.
                Some(true) => probably_prime(&p, 0),
                // aws-lc could not allocate: the crate's own test, as before.
                None => probably_prime(&p, 20),
            };
            if accepted {
                return p;
            }
        }
    }

    /// One Miller-Rabin round to base 2 with aws-lc's Montgomery exponentiation (its assembly,
    /// several times faster than num-bigint-dig's), the first step of the crate's test.
    pub(super) mod base_two {
        use aws_lc_sys as sys;

        /// A BIGNUM, BN_CTX or BN_MONT_CTX that this module owns and frees once.
        struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

        impl<T> Owned<T> {
            fn new(ptr: *mut T, free: unsafe extern "C" fn(*mut T)) -> Option<Self> {
                (!ptr.is_null()).then_some(Self(ptr, free))
            }
        }

        impl<T> Drop for Owned<T> {
            fn drop(&mut self) {
                // SAFETY: the pointer is non-null (`new`), came from the aws-lc allocator that
                // `free` belongs to, is owned by this value alone and is freed only here.
                #[allow(unsafe_code)]
                unsafe {
                    (self.1)(self.0)
                }
            }
        }

        /// Whether the odd big-endian number `n` (above 3) is a strong probable prime to base 2:
        /// with `n - 1 = d * 2^s`, `2^d = 1` or `2^(d * 2^r) = n - 1` for some `r < s` (mod n).
        /// None if aws-lc fails (an allocation).
        pub(in super::super) fn strong_probable_prime(n: &[u8]) -> Option<bool> {
            // SAFETY: every pointer handed to aws-lc is a live, non-null object of the right
            // type that this function owns (`Owned`, freed on every return path after its last
            // use); `n` is a live slice read for exactly its length. aws-lc's functions here
            // only read their inputs and write their documented outputs, and return 0 (turned
            // into None) on failure. Nothing is shared with another thread.
            #[allow(unsafe_code)]
            unsafe {
                let new_bn = || Owned::new(sys::BN_new(), sys::BN_free);
                let ctx = Owned::new(sys::BN_CTX_new(), sys::BN_CTX_free)?;
                let n_bn = Owned::new(
                    sys::BN_bin2bn(n.as_ptr(), n.len(), std::ptr::null_mut()),
                    sys::BN_free,
                )?;
                let n_minus_1 = Owned::new(sys::BN_dup(n_bn.0), sys::BN_free)?;
                (sys::BN_sub_word(n_minus_1.0, 1) == 1).then_some(())?;
                let s = sys::BN_count_low_zero_bits(n_minus_1.0);
                let d = new_bn()?;
                (sys::BN_rshift(d.0, n_minus_1.0, s) == 1).then_some(())?;
                let two = new_bn()?;
                (sys::BN_set_word(two.0, 2) == 1).then_some(())?;
                let mont = Owned::new(
                    sys::BN_MONT_CTX_new_for_modulus(n_bn.0, ctx.0),
                    sys::BN_MONT_CTX_free,
                )?;
                let x = new_bn()?;
                (sys::BN_mod_exp_mont(x.0, two.0, d.0, n_bn.0, ctx.0, mont.0) == 1).then_some(())?;
                if sys::BN_is_one(x.0) == 1 || sys::BN_cmp(x.0, n_minus_1.0) == 0 {
                    return Some(true);
                }
                for _ in 1..s {
                    (sys::BN_mod_sqr(x.0, x.0, n_bn.0, ctx.0) == 1).then_some(())?;
                    if sys::BN_cmp(x.0, n_minus_1.0) == 0 {
                        return Some(true);
                    }
                    if sys::BN_is_one(x.0) == 1 {
                        return Some(false);
                    }
                }
                Some(false)
            }
        }
    }

    /// A big-endian number modulo any `m` (in 128-bit arithmetic).
    fn remainder_u64(be: &[u8], m: u64) -> u64 {
        let m = u128::from(m);
        be.iter()
            .fold(0u128, |r, &b| ((r << 8) | u128::from(b)) % m) as u64
    }
}

/// What signs certificates with RSA PKCS#1 v1.5 and SHA-512 (`HashAlgorithm=sha512`).
enum RsaSha512Signer {
    /// aws-lc-rs through rcgen: constant-time and fast, for keys of 2048 bits and more.
    AwsLc(KeyPair),
    /// The `rsa` crate, for keys aws-lc-rs refuses as too small: nulab still makes such
    /// certificates so that tests and lessons can watch them being refused. PKCS#1 v1.5 is
    /// deterministic, so both give the same bytes (tested below).
    Small {
        key: Box<rsa::pkcs1v15::SigningKey<sha2::Sha512>>,
        /// PKCS#1 `RSAPublicKey`, what rcgen puts in the SubjectPublicKeyInfo bit string.
        public_der: Vec<u8>,
    },
}

impl PublicKeyData for RsaSha512Signer {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::AwsLc(pair) => pair.der_bytes(),
            Self::Small { public_der, .. } => public_der,
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_RSA_SHA512
    }
}

impl SigningKey for RsaSha512Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::AwsLc(pair) => pair.sign(msg),
            Self::Small { key, .. } => {
                use rsa::signature::{SignatureEncoding, Signer};
                Ok(key.sign(msg).to_vec())
            }
        }
    }
}

fn signing_key(key: &PrivateKey) -> Result<RsaSha512Signer, GenerateError> {
    if key.bits() < NETWORK_UNLOCK_KEY_BITS {
        let public_der = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&key.public_key())
            .map_err(|e| GenerateError::Signing(e.to_string()))?
            .into_vec();
        return Ok(RsaSha512Signer::Small {
            key: Box::new(rsa::pkcs1v15::SigningKey::new(key.rsa().clone())),
            public_der,
        });
    }
    let pkcs8 = key.to_pkcs8_der();
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_RSA_SHA512,
    )
    .map(RsaSha512Signer::AwsLc)
    .map_err(|e| {
        GenerateError::Signing(format!("aws-lc-rs refused the RSA-{} key: {e}", key.bits()))
    })
}

fn base_params(
    subject: &str,
    validity: &Validity,
    rng: &mut impl CryptoRngCore,
) -> Result<CertificateParams, GenerateError> {
    let mut serial = [0u8; SERIAL_LEN];
    rng.fill_bytes(&mut serial);
    // Positive and of full length: the top bit clear and the top byte not zero.
    serial[0] = (serial[0] & 0x7f).max(1);
    let mut params = CertificateParams::default();
    params.distinguished_name = parse_subject(subject)?;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// Reads a subject such as `CN=BitLocker Network Unlock certificate, O=Contoso`. Values may not
/// contain commas (no escaping): nulab's certificates do not need them.
pub(crate) fn parse_subject(subject: &str) -> Result<DistinguishedName, GenerateError> {
    let err = |reason: &str| GenerateError::Subject {
        subject: subject.to_owned(),
        reason: reason.to_owned(),
    };
    let mut dn = DistinguishedName::new();
    if !subject.contains('=') {
        let cn = subject.trim();
        if cn.is_empty() {
            return Err(err("the subject is empty"));
        }
        dn.push(DnType::CommonName, cn);
        return Ok(dn);
    }
    for part in subject.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| err(&format!("`{}` is not KEY=value", part.trim())))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(err(&format!("`{}` has an empty value", key.trim())));
        }
        let ty = match key.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "L" => DnType::LocalityName,
            "S" | "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            "DC" => DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
            other => return Err(err(&format!("unknown attribute `{other}`"))),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn bundle(der: &[u8], key: PrivateKey) -> Result<CertificateBundle, GenerateError> {
    let certificate = Certificate::from_der(der).map_err(|e| {
        GenerateError::Signing(format!("rcgen wrote an unreadable certificate: {e}"))
    })?;
    Ok(CertificateBundle::new(certificate, Some(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn the_seed_certreq_example_is_what_is_generated() {
        let bundle = fixture::cached(1);
        let cert = &bundle.certificate;
        assert_eq!(cert.subject(), DEFAULT_SUBJECT);
        assert!(cert.is_self_issued());
        assert_eq!(cert.key_algorithm(), "RSA");
        assert_eq!(cert.key_bits(), 2048);
        let ku = cert.key_usage().unwrap();
        assert!(ku.critical);
        assert_eq!(ku.usages, ["keyEncipherment"]);
        assert_eq!(cert.extended_key_usages(), [oid::NETWORK_UNLOCK]);
        assert_eq!(cert.application_policies(), [oid::NETWORK_UNLOCK]);
        assert_eq!(cert.facts().signature_algorithm, "sha512WithRSAEncryption");
        assert!(!cert.is_ca());
        assert_eq!(cert.not_before(), Validity::fixture().not_before());
        assert_eq!(cert.not_after(), Validity::fixture().not_after());
        assert_eq!(cert.serial().len(), SERIAL_LEN);
        assert!(cert.serial()[0] & 0x80 == 0 && cert.serial()[0] != 0);
        assert!(bundle.private_key.as_ref().unwrap().matches(cert));
    }

    #[test]
    fn the_seeded_key_search_gives_the_rsa_crates_key_and_leaves_the_rng_where_it_does() {
        use rand_chacha::ChaCha20Rng;
        use rand_core::RngCore;
        // 2048 (the Network Unlock size), 1024, and 1032 (516-bit primes: a partial top byte).
        let cases = [(2048, 0..3), (1024, 0..8), (1032, 0..3)];
        for (bits, seeds) in cases {
            for seed in seeds {
                let mut ours_rng = ChaCha20Rng::seed_from_u64(seed);
                let mut theirs_rng = ChaCha20Rng::seed_from_u64(seed);
                let ours = seeded_key::rsa_private_key(&mut ours_rng, bits).unwrap();
                let theirs = rsa::RsaPrivateKey::new(&mut theirs_rng, bits).unwrap();
                assert_eq!(ours, theirs, "{bits} bits, seed {seed}");
                assert_eq!(ours_rng.next_u64(), theirs_rng.next_u64());
            }
        }
    }

    #[test]
    fn the_base_two_round_tells_primes_from_composites_as_miller_rabin_does() {
        use num_bigint_dig::BigUint;
        let test = |n: u64| {
            seeded_key::base_two::strong_probable_prime(&BigUint::from(n).to_bytes_be())
                .expect("aws-lc")
        };
        // Primes pass, whatever the power of two in n - 1.
        for prime in [
            5u64,
            7,
            13,
            17,
            97,
            65_537,
            1_000_000_007,
            2_305_843_009_213_693_951,
        ] {
            assert!(test(prime), "{prime} is prime");
        }
        // Composites fail, Carmichael numbers among them...
        for composite in [9u64, 15, 21, 561, 1105, 1729, 65_535, 1_000_000_007 * 3] {
            assert!(!test(composite), "{composite} is composite");
        }
        // ...except the strong pseudoprimes to base 2, which is why a candidate that passes
        // still gets the Lucas test.
        for pseudoprime in [2047u64, 3277, 4033, 4681, 8321] {
            assert!(
                test(pseudoprime),
                "{pseudoprime} is a strong pseudoprime to base 2"
            );
        }
    }

    #[test]
    fn the_rng_drives_everything() {
        use rand_chacha::ChaCha20Rng;
        let request = CertificateRequest::network_unlock(Validity::fixture());
        let from_rng = request
            .self_signed(&mut ChaCha20Rng::seed_from_u64(1))
            .unwrap();
        assert_eq!(from_rng, fixture::cached(1));
    }

    #[test]
    fn both_signers_give_the_same_signature() {
        let key = fixture::cached(1).private_key.unwrap();
        let aws = signing_key(&key).unwrap();
        assert!(matches!(aws, RsaSha512Signer::AwsLc(_)));
        let small = RsaSha512Signer::Small {
            key: Box::new(rsa::pkcs1v15::SigningKey::new(key.rsa().clone())),
            public_der: rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&key.public_key())
                .unwrap()
                .into_vec(),
        };
        assert_eq!(aws.der_bytes(), small.der_bytes());
        assert_eq!(aws.sign(b"tbs").unwrap(), small.sign(b"tbs").unwrap());
    }

    #[test]
    fn subjects_are_parsed_or_refused() {
        let dn = |s| {
            let mut params = CertificateParams::default();
            params.distinguished_name = parse_subject(s).unwrap();
            params.distinguished_name.iter().count()
        };
        assert_eq!(
            dn("BitLocker Network Unlock Certificate for Contoso domain"),
            1
        );
        assert_eq!(dn("CN=Unlock, O=Contoso, OU=IT, C=US, DC=contoso"), 5);
        for bad in ["", "CN=", "CN=x, XX=y", "CN=x, y"] {
            assert!(
                matches!(parse_subject(bad), Err(GenerateError::Subject { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_custom_subject_reaches_the_certificate() {
        let mut req = CertificateRequest::network_unlock(Validity::fixture())
            .with_subject("CN=Unlock, O=Contoso");
        req.key_bits = 1024;
        let bundle = req.self_signed_from_seed(9).unwrap();
        assert_eq!(bundle.certificate.subject(), "CN=Unlock, O=Contoso");
    }

    #[test]
    fn validity_and_key_size_are_checked() {
        assert!(matches!(
            Validity::from_unix(10, 5),
            Err(GenerateError::Validity { .. })
        ));
        assert_eq!(
            Validity::from_unix(i64::MAX, i64::MAX),
            Err(GenerateError::Time(i64::MAX))
        );
        let year = Validity::years_from(1_700_000_000, 1).unwrap();
        assert_eq!((year.not_after() - year.not_before()).whole_days(), 365);
        let mut req = CertificateRequest::network_unlock(Validity::fixture());
        req.key_bits = 512;
        assert_eq!(
            req.self_signed_from_seed(1),
            Err(GenerateError::KeySize(512))
        );
    }

    #[test]
    fn a_ca_issues_with_its_name_and_key_identifier() {
        let (ca, leaf) = fixture::ca_issued(3, 4);
        assert!(ca.certificate().is_ca());
        assert!(ca.certificate().is_self_issued());
        assert_eq!(leaf.certificate.issuer(), DEFAULT_CA_SUBJECT);
        assert_eq!(leaf.chain, [ca.certificate().clone()]);
        assert!(
            leaf.private_key
                .as_ref()
                .unwrap()
                .matches(&leaf.certificate)
        );
        // A CA reloaded from its parts issues the same bytes.
        let reloaded =
            CertificateAuthority::from_parts(ca.certificate().clone(), ca.private_key().clone())
                .unwrap();
        let again = CertificateRequest::network_unlock(Validity::fixture())
            .issued_by_from_seed(&reloaded, 4)
            .unwrap();
        assert_eq!(again.certificate.der(), leaf.certificate.der());
        assert_eq!(
            CertificateAuthority::from_parts(ca.certificate().clone(), leaf.private_key.unwrap()),
            Err(GenerateError::IssuerKeyMismatch)
        );
    }
}
