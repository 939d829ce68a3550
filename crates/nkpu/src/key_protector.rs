//! The key protector (KP): RSAES-PKCS1-v1_5 encryption of CK ‖ SK under the Network Unlock
//! certificate's 2048-bit public key.
//!
//! Client side: [`KeyProtector::encrypt`] pads with an injected RNG, so the simulator's seeded
//! RNG gives the same bytes every run, and exponentiates in `rsa_public` (the bytes the `rsa`
//! crate would give, about 13 times faster: a 2048-bit encryption with its padding, median of
//! 9 timed rounds of 5,000). Server side: [`ProviderKey`] holds the
//! private key in aws-lc-rs, whose decryption is about 7 times faster than the `rsa` crate's
//! (and constant-time, where `rsa` 0.9 is not: RUSTSEC-2023-0071, the Marvin attack; `rsa` is
//! only ever used here for public-key operations and seeded key generation).
//!
//! The decryption accepts exactly 64 bytes of plaintext and nothing else (PROTOCOL.md, server
//! processing step 4).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroize;

use crate::keys::{ClientKey, KEY_LEN, SessionKey, shorten};
use crate::rsa_public::{self, RsaPublicKeyError, RsaPublicOp};

/// A key protector is always 256 bytes: one RSA-2048 block.
pub const KEY_PROTECTOR_LEN: usize = 256;

/// The only RSA modulus size Network Unlock uses.
const RSA_BITS: usize = 2048;

/// KP: the 256-byte RSA ciphertext of CK ‖ SK. No nonce or timestamp is inside, so a client may
/// pre-compute it (boot firmware may be unable to do RSA).
///
/// Shared, not copied: the volume's protector, the TPM's released secrets, the exchange and
/// each request it encodes hold one block (a clone counts a reference; a storm keeps 100,000).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyProtector(Arc<[u8; KEY_PROTECTOR_LEN]>);

/// Why a key protector could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProtectorError {
    #[error("the Network Unlock key must be RSA-2048, this one is {0} bits")]
    WrongKeySize(usize),
    #[error("the private key was rejected: {0}")]
    KeyRejected(String),
    #[error("RSA encryption failed: {0}")]
    Encrypt(String),
    /// Bad padding, a ciphertext out of range, or a key that does not match: the server cannot
    /// tell these apart, and must not try to (PROTOCOL.md: a careful server keeps time and log
    /// independent of the reason).
    #[error("the key protector does not decrypt under this key")]
    Undecryptable,
    #[error("the key protector decrypts to {0} bytes, Network Unlock needs exactly 64")]
    WrongPlaintextLength(usize),
}

impl KeyProtector {
    pub fn from_bytes(bytes: [u8; KEY_PROTECTOR_LEN]) -> Self {
        Self(Arc::new(bytes))
    }

    /// Builds the KP from its two halves as DHCPv4 carries them (option 43 sub-option 2, then
    /// option 125 sub-option 1).
    pub fn from_halves(first: &[u8; 128], second: &[u8; 128]) -> Self {
        let mut bytes = [0u8; KEY_PROTECTOR_LEN];
        bytes[..128].copy_from_slice(first);
        bytes[128..].copy_from_slice(second);
        Self::from_bytes(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_PROTECTOR_LEN] {
        &self.0
    }

    /// The first 128 bytes (DHCPv4 option 43, sub-option 2).
    pub fn first_half(&self) -> &[u8] {
        &self.0[..128]
    }

    /// The last 128 bytes (DHCPv4 option 125, sub-option 1).
    pub fn second_half(&self) -> &[u8] {
        &self.0[128..]
    }

    /// RSAES-PKCS1-v1_5(public key, CK ‖ SK). The padding's random bytes come from `rng`,
    /// drawn as the `rsa` crate draws them, so the bytes are the ones `rsa` would give
    /// (`rsa_public`); the exponentiation is `rsa_public`'s fixed-size Montgomery arithmetic,
    /// with the key's precomputed form kept per thread for the next call with the same key.
    pub fn encrypt(
        public_key: &rsa::RsaPublicKey,
        client_key: &ClientKey,
        session_key: &SessionKey,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<Self, KeyProtectorError> {
        let bits = public_key.n().bits();
        if bits != RSA_BITS {
            return Err(KeyProtectorError::WrongKeySize(bits));
        }
        let mut plaintext = [0u8; 2 * KEY_LEN];
        plaintext[..KEY_LEN].copy_from_slice(client_key.as_bytes());
        plaintext[KEY_LEN..].copy_from_slice(session_key.as_bytes());
        let block = rsa_public::pkcs1_v15_pad(&plaintext, rng);
        plaintext.zeroize();
        let Some(mut block) = block else {
            return Err(KeyProtectorError::Encrypt("message too long".into()));
        };
        let result = with_public_op(public_key, |op| op.encrypt_raw(&block));
        block.zeroize();
        match result {
            Ok(bytes) => Ok(Self::from_bytes(bytes)),
            Err(RsaPublicKeyError::ModulusBits(bits)) => Err(KeyProtectorError::WrongKeySize(bits)),
            Err(RsaPublicKeyError::Unusable) => Err(KeyProtectorError::Encrypt(
                "the public key's modulus or exponent is unusable".into(),
            )),
        }
    }
}

thread_local! {
    /// The last public key this thread encrypted to, made ready (every client of a run
    /// encrypts to the same certificate). A pure function of the key: it changes no output.
    static LAST_PUBLIC_KEY: RefCell<Option<(rsa::RsaPublicKey, RsaPublicOp)>> =
        const { RefCell::new(None) };
}

/// Runs `f` on `key`'s prepared form, from this thread's cache when it holds the same key.
fn with_public_op<T>(
    key: &rsa::RsaPublicKey,
    f: impl FnOnce(&RsaPublicOp) -> T,
) -> Result<T, RsaPublicKeyError> {
    LAST_PUBLIC_KEY.with(|cell| {
        let mut cached = cell.borrow_mut();
        match cached.as_ref() {
            Some((k, op)) if k == key => Ok(f(op)),
            _ => {
                let op = RsaPublicOp::new(key)?;
                let out = f(&op);
                *cached = Some((key.clone(), op));
                Ok(out)
            }
        }
    })
}

impl fmt::Debug for KeyProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyProtector({})", shorten(&self.0[..]))
    }
}

/// The unlock provider's RSA private key, in aws-lc-rs.
pub struct ProviderKey {
    key: Pkcs1PrivateDecryptingKey,
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderKey")
            .field("bits", &self.key.key_size_bits())
            .finish_non_exhaustive()
    }
}

impl ProviderKey {
    /// Loads an RSA-2048 private key from PKCS#8 DER (what a `.pfx` holds).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyProtectorError> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| {
            // aws-lc refuses small keys without saying how small: say it.
            match modulus_bits(der) {
                Some(bits) if bits != RSA_BITS => KeyProtectorError::WrongKeySize(bits),
                _ => KeyProtectorError::KeyRejected(e.to_string()),
            }
        })?;
        let bits = key.key_size_bits();
        if bits != RSA_BITS {
            return Err(KeyProtectorError::WrongKeySize(bits));
        }
        let key = Pkcs1PrivateDecryptingKey::new(key)
            .map_err(|e| KeyProtectorError::KeyRejected(e.to_string()))?;
        Ok(Self { key })
    }

    /// Decrypts a KP and splits it into CK and SK. Anything but exactly 64 bytes of plaintext is
    /// refused.
    pub fn decrypt(
        &self,
        protector: &KeyProtector,
    ) -> Result<(ClientKey, SessionKey), KeyProtectorError> {
        let mut buffer = [0u8; KEY_PROTECTOR_LEN];
        let result = match self.key.decrypt(protector.as_bytes(), &mut buffer) {
            Ok(plaintext) if plaintext.len() == 2 * KEY_LEN => {
                let (ck, sk) = plaintext.split_at(KEY_LEN);
                Ok((
                    ClientKey::try_from(ck).expect("split at KEY_LEN of 2*KEY_LEN bytes"),
                    SessionKey::try_from(sk).expect("split at KEY_LEN of 2*KEY_LEN bytes"),
                ))
            }
            Ok(plaintext) => Err(KeyProtectorError::WrongPlaintextLength(plaintext.len())),
            Err(_) => Err(KeyProtectorError::Undecryptable),
        };
        buffer.zeroize();
        result
    }
}

/// The modulus size of an RSA key in PKCS#8 DER, read without validating the key.
fn modulus_bits(pkcs8_der: &[u8]) -> Option<usize> {
    use rsa::pkcs1::der::Decode;
    let info = rsa::pkcs8::PrivateKeyInfo::from_der(pkcs8_der).ok()?;
    let key = rsa::pkcs1::RsaPrivateKey::from_der(info.private_key).ok()?;
    let modulus = key.modulus.as_bytes();
    let leading_zero_bits = modulus.first()?.leading_zeros() as usize;
    Some(modulus.len() * 8 - leading_zero_bits)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use rsa::pkcs8::DecodePrivateKey;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/keys/");
        std::fs::read(format!("{path}{name}")).expect("test key fixture")
    }

    /// The usual test provider key, with its public half for the client side.
    pub(crate) fn test_key() -> (ProviderKey, rsa::RsaPublicKey) {
        let der = fixture("test-a-rsa2048.pk8");
        let private = rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap();
        (
            ProviderKey::from_pkcs8_der(&der).unwrap(),
            private.to_public_key(),
        )
    }

    #[test]
    fn encrypt_then_decrypt_returns_both_keys() {
        let (provider, public) = test_key();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let ck = ClientKey::random(&mut rng);
        let sk = SessionKey::random(&mut rng);
        let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
        let (ck2, sk2) = provider.decrypt(&kp).unwrap();
        assert_eq!(ck, ck2);
        assert_eq!(sk, sk2);
    }

    #[test]
    fn encryption_is_deterministic_under_a_seeded_rng_and_random_across_seeds() {
        let (_, public) = test_key();
        let ck = ClientKey::from_bytes([1; 32]);
        let sk = SessionKey::from_bytes([2; 32]);
        let kp = |seed| {
            KeyProtector::encrypt(&public, &ck, &sk, &mut ChaCha20Rng::seed_from_u64(seed)).unwrap()
        };
        assert_eq!(kp(1), kp(1));
        assert_ne!(kp(1), kp(2));
    }

    #[test]
    fn the_wrong_key_cannot_decrypt() {
        let (_, public) = test_key();
        let other = ProviderKey::from_pkcs8_der(&fixture("test-b-rsa2048.pk8")).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let kp = KeyProtector::encrypt(
            &public,
            &ClientKey::from_bytes([1; 32]),
            &SessionKey::from_bytes([2; 32]),
            &mut rng,
        )
        .unwrap();
        assert!(other.decrypt(&kp).is_err());
    }

    #[test]
    fn plaintext_of_another_length_is_refused() {
        let (provider, public) = test_key();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        for len in [0usize, 32, 63, 65, 100] {
            let msg = vec![0x5a; len];
            let ct = public
                .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, &msg)
                .unwrap();
            let kp = KeyProtector::from_bytes(ct.try_into().unwrap());
            assert_eq!(
                provider.decrypt(&kp).unwrap_err(),
                KeyProtectorError::WrongPlaintextLength(len)
            );
        }
    }

    #[test]
    fn garbage_is_undecryptable() {
        let (provider, _) = test_key();
        assert_eq!(
            provider.decrypt(&KeyProtector::from_bytes([0xff; 256])),
            Err(KeyProtectorError::Undecryptable)
        );
        assert_eq!(
            provider.decrypt(&KeyProtector::from_bytes([0x00; 256])),
            Err(KeyProtectorError::Undecryptable)
        );
    }

    #[test]
    fn only_rsa_2048_keys_are_accepted() {
        let small = fixture("test-rsa1024.pk8");
        assert_eq!(
            ProviderKey::from_pkcs8_der(&small).unwrap_err(),
            KeyProtectorError::WrongKeySize(1024)
        );
        let public = rsa::RsaPrivateKey::from_pkcs8_der(&small)
            .unwrap()
            .to_public_key();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        assert_eq!(
            KeyProtector::encrypt(
                &public,
                &ClientKey::from_bytes([0; 32]),
                &SessionKey::from_bytes([0; 32]),
                &mut rng
            )
            .unwrap_err(),
            KeyProtectorError::WrongKeySize(1024)
        );
        assert!(matches!(
            ProviderKey::from_pkcs8_der(b"not a key"),
            Err(KeyProtectorError::KeyRejected(_))
        ));
    }
}
