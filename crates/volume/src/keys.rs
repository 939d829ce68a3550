//! The key hierarchy: the full-volume encryption key (FVEK, AES-256-XTS, 64 bytes) encrypts the
//! data sectors; the volume master key (VMK, 256 bits) wraps the FVEK; every protector holds its
//! own copy of the VMK wrapped under a key only that protector can produce.
//!
//! Wrapping is AES-256-CCM with a 12-byte nonce and a 16-byte tag, as BitLocker wraps its keys
//! (its "AES-CCM encrypted key" metadata entries). The associated data binds each wrapped key to
//! its volume and protector, so an entry copied from another volume or slot fails to unwrap. A
//! wrong key fails the tag: it never yields a plausible-looking VMK.

use aes::Aes256;
use ccm::aead::{Aead, KeyInit, Payload};
use ccm::consts::{U12, U16};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

type KeyWrapCipher = ccm::Ccm<Aes256, U16, U12>;

pub(crate) const NONCE_LEN: usize = 12;
#[cfg(test)]
const TAG_LEN: usize = 16;

/// An unlocked volume's keys: what a successful protector yields. Adding protectors, reading
/// data and exporting key packages need them, as on Windows they need an unlocked volume.
pub struct VolumeKeys {
    pub(crate) vmk: Zeroizing<[u8; 32]>,
    pub(crate) fvek: Zeroizing<[u8; 64]>,
}

/// A short fingerprint of a key for teaching views: `sha256:` and the first 4 bytes of its
/// SHA-256 in hex. It names a key without showing any of its bytes.
pub fn fingerprint(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    // Written into one string of its final length (a boot shows half a dozen of these).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(15);
    text.push_str("sha256:");
    for byte in &digest[..4] {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

impl VolumeKeys {
    /// Fingerprints of the volume master key and the disk key (FVEK), for teaching views.
    pub fn fingerprints(&self) -> (String, String) {
        (fingerprint(&self.vmk[..]), fingerprint(&self.fvek[..]))
    }
}

impl std::fmt::Debug for VolumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKeys(..)")
    }
}

/// A key encrypted under another with AES-256-CCM: nonce, then ciphertext with the tag last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: Vec<u8>,
}

impl WrappedKey {
    pub(crate) fn seal(
        key: &[u8; 32],
        plaintext: &[u8],
        aad: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext = KeyWrapCipher::new(key.into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-CCM encrypts any key-sized message");
        Self { nonce, ciphertext }
    }

    /// The plaintext, or `None` when the key (or the binding) is wrong.
    pub(crate) fn open(&self, key: &[u8; 32], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        KeyWrapCipher::new(key.into())
            .decrypt(
                (&self.nonce).into(),
                Payload {
                    msg: &self.ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    pub(crate) fn open_32(&self, key: &[u8; 32], aad: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let plain = self.open(key, aad)?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(plain.get(..32).filter(|_| plain.len() == 32)?);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn a_fingerprint_is_the_first_four_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ..., FIPS 180-2 appendix B.
        assert_eq!(fingerprint(b"abc"), "sha256:ba7816bf");
        // SHA-256("") = e3b0c442 98fc1c14 ...
        assert_eq!(fingerprint(b""), "sha256:e3b0c442");
    }

    #[test]
    fn a_wrong_key_or_binding_fails_authentication() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let wrapped = WrappedKey::seal(&[1; 32], &[42; 32], b"slot 1", &mut rng);
        assert_eq!(wrapped.ciphertext.len(), 32 + TAG_LEN);
        assert_eq!(
            wrapped.open_32(&[1; 32], b"slot 1").as_deref(),
            Some(&[42; 32])
        );
        assert!(wrapped.open(&[2; 32], b"slot 1").is_none());
        assert!(wrapped.open(&[1; 32], b"slot 2").is_none());
    }
}
