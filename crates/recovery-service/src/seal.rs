//! Encryption of recovery material at rest ("Encrypt recovery data in the database").
//!
//! AES-256-GCM under a key kept in its own file, outside the database: someone who copies the
//! database file alone learns nothing. Each record's identity (device, volume, key ID, kind) and
//! version are the associated data, so a ciphertext copied into another row, or an older
//! ciphertext put back into the same row, fails to decrypt. Each write draws a fresh 96-bit
//! nonce from the injected RNG; with random nonces the GCM bound is 2^32 encryptions under one
//! key, far beyond what an escrow database sees (a rotation of the key file would be the answer).
//!
//! [`Sealer::Plaintext`] is the off mode for comparison; a store opened encrypted refuses
//! plaintext rows, because an attacker who can write the file could otherwise plant a recovery
//! password of their choosing.

use std::io::Write as _;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::record::RecordId;

/// How a row's material is stored (the `sealing` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Plaintext = 0,
    Aes256Gcm = 1,
}

impl Sealing {
    pub fn from_column(v: i64) -> Option<Self> {
        match v {
            0 => Some(Sealing::Plaintext),
            1 => Some(Sealing::Aes256Gcm),
            _ => None,
        }
    }
}

/// Why sealing, unsealing or the key file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("the record does not decrypt: tampered, moved from another record, or another key")]
    Authentication,
    #[error("the record is stored in plaintext but the store is encrypted (refused)")]
    PlaintextInEncryptedStore,
    #[error("the record is encrypted but the store was opened without a key")]
    EncryptedInPlaintextStore,
    #[error("the record's nonce is {0} bytes, not 12")]
    BadNonce(usize),
    #[error("unknown sealing mode {0}")]
    UnknownSealing(i64),
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} holds {len} bytes, not 32")]
    KeyFileLength { path: String, len: usize },
    #[error("encryption failed")]
    Encrypt,
}

/// The AES-256 key that protects recovery material, zeroised on drop.
pub struct AtRestKey(Zeroizing<[u8; 32]>);

impl AtRestKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// Reads a key file: exactly 32 raw bytes.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        })?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::KeyFileLength {
                path: path.display().to_string(),
                len: bytes.len(),
            })?;
        Ok(Self::from_bytes(arr))
    }

    /// Writes the key to a new file readable by its owner only; refuses to overwrite an
    /// existing key (that would orphan every record sealed under it).
    pub fn save_new(&self, path: &Path) -> Result<(), SealError> {
        let err = |source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(err)?;
        f.write_all(self.0.as_ref()).map_err(err)?;
        f.sync_all().map_err(err)
    }
}

/// The associated data of a record: a domain label, then each identity field and the version,
/// length-prefixed so that no two identities encode alike ("ab"+"c" differs from "a"+"bc").
pub fn associated_data(id: &RecordId, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    for field in [
        "nulab-recovery-record-v1",
        id.device.as_str(),
        id.volume.as_str(),
        id.key_id.as_str(),
        id.kind.label(),
    ] {
        aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// What the store writes into a row's `sealing`, `nonce` and `material` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedMaterial {
    pub sealing: Sealing,
    pub nonce: Vec<u8>,
    pub bytes: Vec<u8>,
}

/// Encryption at rest, on (the default) or off.
pub enum Sealer {
    Plaintext,
    Aes256Gcm(Box<Aes256Gcm>),
}

impl Sealer {
    pub fn encrypted(key: &AtRestKey) -> Self {
        Sealer::Aes256Gcm(Box::new(Aes256Gcm::new(key.0.as_ref().into())))
    }

    pub fn sealing(&self) -> Sealing {
        match self {
            Sealer::Plaintext => Sealing::Plaintext,
            Sealer::Aes256Gcm(_) => Sealing::Aes256Gcm,
        }
    }

    pub fn seal(
        &self,
        id: &RecordId,
        version: u64,
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng + ?Sized),
    ) -> Result<SealedMaterial, SealError> {
        match self {
            Sealer::Plaintext => Ok(SealedMaterial {
                sealing: Sealing::Plaintext,
                nonce: Vec::new(),
                bytes: plaintext.to_vec(),
            }),
            Sealer::Aes256Gcm(cipher) => {
                let mut nonce = [0u8; 12];
                rng.fill_bytes(&mut nonce);
                let aad = associated_data(id, version);
                let bytes = cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: plaintext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| SealError::Encrypt)?;
                Ok(SealedMaterial {
                    sealing: Sealing::Aes256Gcm,
                    nonce: nonce.to_vec(),
                    bytes,
                })
            }
        }
    }

    pub fn open(
        &self,
        id: &RecordId,
        version: u64,
        stored: &SealedMaterial,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        match (self, stored.sealing) {
            (Sealer::Plaintext, Sealing::Plaintext) => Ok(Zeroizing::new(stored.bytes.clone())),
            (Sealer::Plaintext, Sealing::Aes256Gcm) => Err(SealError::EncryptedInPlaintextStore),
            (Sealer::Aes256Gcm(_), Sealing::Plaintext) => Err(SealError::PlaintextInEncryptedStore),
            (Sealer::Aes256Gcm(cipher), Sealing::Aes256Gcm) => {
                if stored.nonce.len() != 12 {
                    return Err(SealError::BadNonce(stored.nonce.len()));
                }
                let aad = associated_data(id, version);
                cipher
                    .decrypt(
                        Nonce::from_slice(&stored.nonce),
                        Payload {
                            msg: &stored.bytes,
                            aad: &aad,
                        },
                    )
                    .map(Zeroizing::new)
                    .map_err(|_| SealError::Authentication)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceId, KeyId, MaterialKind, VolumeId};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn id(device: &str, key: &str) -> RecordId {
        RecordId {
            device: DeviceId::new(device).expect("valid"),
            volume: VolumeId::new("C").expect("valid"),
            key_id: KeyId::new(key).expect("valid"),
            kind: MaterialKind::RecoveryPassword,
        }
    }

    const K1: &str = "11111111-2222-3333-4444-555555555555";
    const PW: &[u8] = b"123456-234567-345678-456789-567890-678901-789012-890123";

    fn sealer(rng: &mut ChaCha20Rng) -> Sealer {
        Sealer::encrypted(&AtRestKey::generate(rng))
    }

    #[test]
    fn round_trip_and_ciphertext_differs_from_plaintext() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = sealer(&mut rng);
        let sealed = s.seal(&id("PC1", K1), 1, PW, &mut rng).expect("seal");
        assert_ne!(sealed.bytes, PW);
        assert!(!sealed.bytes.windows(6).any(|w| w == &PW[..6]));
        assert_eq!(sealed.bytes.len(), PW.len() + 16);
        let back = s.open(&id("PC1", K1), 1, &sealed).expect("open");
        assert_eq!(back.as_slice(), PW);
    }

    #[test]
    fn every_flipped_bit_fails() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let s = sealer(&mut rng);
        let sealed = s.seal(&id("PC1", K1), 1, PW, &mut rng).expect("seal");
        for i in 0..sealed.bytes.len() {
            let mut t = sealed.clone();
            t.bytes[i] ^= 0x01;
            assert!(matches!(
                s.open(&id("PC1", K1), 1, &t),
                Err(SealError::Authentication)
            ));
        }
        for i in 0..12 {
            let mut t = sealed.clone();
            t.nonce[i] ^= 0x80;
            assert!(s.open(&id("PC1", K1), 1, &t).is_err());
        }
    }

    #[test]
    fn identity_and_version_are_bound() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let s = sealer(&mut rng);
        let sealed = s.seal(&id("PC1", K1), 5, PW, &mut rng).expect("seal");
        assert!(s.open(&id("PC2", K1), 5, &sealed).is_err());
        assert!(
            s.open(
                &id("PC1", "11111111-2222-3333-4444-555555555556"),
                5,
                &sealed
            )
            .is_err()
        );
        let mut other_kind = id("PC1", K1);
        other_kind.kind = MaterialKind::KeyPackage;
        assert!(s.open(&other_kind, 5, &sealed).is_err());
        assert!(s.open(&id("PC1", K1), 4, &sealed).is_err());
    }

    #[test]
    fn same_plaintext_encrypts_differently() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let s = sealer(&mut rng);
        let a = s.seal(&id("PC1", K1), 1, PW, &mut rng).expect("seal");
        let b = s.seal(&id("PC1", K1), 1, PW, &mut rng).expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.bytes, b.bytes);
    }

    #[test]
    fn another_key_fails_and_modes_do_not_mix() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let s1 = sealer(&mut rng);
        let s2 = sealer(&mut rng);
        let sealed = s1.seal(&id("PC1", K1), 1, PW, &mut rng).expect("seal");
        assert!(matches!(
            s2.open(&id("PC1", K1), 1, &sealed),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            Sealer::Plaintext.open(&id("PC1", K1), 1, &sealed),
            Err(SealError::EncryptedInPlaintextStore)
        ));
        let plain = Sealer::Plaintext
            .seal(&id("PC1", K1), 1, PW, &mut rng)
            .expect("seal");
        assert_eq!(plain.bytes, PW);
        assert!(matches!(
            s1.open(&id("PC1", K1), 1, &plain),
            Err(SealError::PlaintextInEncryptedStore)
        ));
    }

    #[test]
    fn key_file_round_trips_and_refuses_overwrite_and_bad_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("recovery.key");
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let k = AtRestKey::generate(&mut rng);
        k.save_new(&p).expect("save");
        assert!(k.save_new(&p).is_err());
        let s = Sealer::encrypted(&AtRestKey::load(&p).expect("load"));
        let sealed = Sealer::encrypted(&k)
            .seal(&id("PC1", K1), 1, PW, &mut rng)
            .expect("seal");
        assert_eq!(
            s.open(&id("PC1", K1), 1, &sealed).expect("open").as_slice(),
            PW
        );
        let short = dir.path().join("short.key");
        std::fs::write(&short, [0u8; 31]).expect("write");
        assert!(matches!(
            AtRestKey::load(&short),
            Err(SealError::KeyFileLength { len: 31, .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_stored_bytes_never_panic(nonce in proptest::collection::vec(any::<u8>(), 0..20),
                                              bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let s = sealer(&mut rng);
            let stored = SealedMaterial { sealing: Sealing::Aes256Gcm, nonce, bytes };
            prop_assert!(s.open(&id("PC1", K1), 1, &stored).is_err());
        }
    }
}
