//! The simulated TPM 2.0: deterministic, pure Rust, and faithful where BitLocker depends on it.
//!
//! - Randomness: an internal DRBG (ChaCha20) seeded once, at manufacture, from the injected RNG,
//!   like a TPM's own generator; its position is part of the saved state, so a TPM restored from
//!   a state file continues the same stream.
//! - Sealing: the secret and the authValue are encrypted with AES-256-CCM under a storage key
//!   derived from the TPM's storage primary seed; the PCR selection and the digest of their
//!   values (the TPM2_PolicyPCR composite, SHA-256 over the selected values in ascending order)
//!   travel in the clear as associated data, so any edit breaks the tag.
//! - Order of checks at unseal, as a real TPM does it: the blob must be ours; a PIN-protected
//!   blob is refused during lockout; then the PCR policy; then the PIN (a wrong one is counted).
//! - Dictionary-attack lockout: `failedTries` grows on every wrong PIN; at `maxTries` the TPM
//!   refuses PIN-protected secrets; one failure is forgotten per `recoveryTime` since the last
//!   failure (self-healing), or all at once by TPM2_DictionaryAttackLockReset.
//! - Reboot: PCRs return to zero; seeds, DRBG position and the failure counter are NV state.

use std::time::Duration;

use aes::Aes256;
use ccm::aead::{Aead, KeyInit, Payload};
use ccm::consts::{U12, U16};
use host_contract::rng::ParkedChaCha20;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    AuthValue, DictionaryAttackPolicy, LockoutStatus, PCR_COUNT, PcrIndex, PcrSelection, PcrValue,
    SealPolicy, SealedBlob, Tpm, TpmError,
};

type StorageCipher = ccm::Ccm<Aes256, U16, U12>;

/// First byte of every blob this TPM seals ('S'imulated).
const BLOB_TAG: u8 = b'S';
const BLOB_VERSION: u8 = 1;
/// tag, version, PCR bitmap (u32 LE), PCR composite digest, flags.
const BLOB_HEADER_LEN: usize = 1 + 1 + 4 + 32 + 1;
const NONCE_LEN: usize = 12;
const CCM_TAG_LEN: usize = 16;
const FLAG_AUTH: u8 = 1;

/// The simulated TPM. Build one with [`SimulatedTpm::manufacture`]; save it with
/// [`SimulatedTpm::state`] and bring it back with [`SimulatedTpm::from_state`].
pub struct SimulatedTpm {
    /// Parked between draws (56 bytes, not `ChaCha20Rng`'s 320): the same stream.
    drbg: ParkedChaCha20,
    storage_seed: Zeroizing<[u8; 32]>,
    owner_password: Zeroizing<[u8; 32]>,
    pcrs: PcrBank,
    dictionary_attack: DictionaryAttackPolicy,
    failed_tries: u32,
    /// When the self-healing timer last started: at the latest failure, then advanced by one
    /// `recovery_time` per failure forgotten.
    heal_anchor: Duration,
    boot_count: u32,
}

impl SimulatedTpm {
    /// A fresh TPM as it leaves the factory: its seeds come from `rng` (the simulation's seeded
    /// RNG), its PCRs are zero, and dictionary-attack protection uses `dictionary_attack`.
    pub fn manufacture(
        rng: &mut impl CryptoRngCore,
        dictionary_attack: DictionaryAttackPolicy,
    ) -> Self {
        let mut drbg_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(drbg_seed.as_mut());
        let mut drbg = ParkedChaCha20::from_seed(*drbg_seed);
        let mut storage_seed = Zeroizing::new([0u8; 32]);
        drbg.fill_bytes(storage_seed.as_mut());
        let mut owner_password = Zeroizing::new([0u8; 32]);
        drbg.fill_bytes(owner_password.as_mut());
        Self {
            drbg,
            storage_seed,
            owner_password,
            pcrs: PcrBank::default(),
            dictionary_attack,
            failed_tries: 0,
            heal_anchor: Duration::ZERO,
            boot_count: 1,
        }
    }

    /// `OwnerAuthFull` as Windows stores it in the registry and escrows it to AD or a recovery
    /// service: base64 of the SHA-1 hash of the owner password.
    pub fn owner_auth_full(&self) -> String {
        use base64::Engine as _;
        let digest = Sha1::digest(self.owner_password.as_ref());
        base64::engine::general_purpose::STANDARD.encode(digest)
    }

    /// How many times this TPM has started (1 after manufacture).
    pub fn boot_count(&self) -> u32 {
        self.boot_count
    }

    /// The whole state, for a file that lets the CLI keep one TPM across invocations. It holds
    /// the TPM's seeds: treat it like the chip itself.
    pub fn state(&self) -> SimulatedTpmState {
        SimulatedTpmState {
            version: 1,
            drbg_seed: hex::encode(self.drbg.seed()),
            drbg_stream: self.drbg.stream(),
            drbg_word_pos: self.drbg.word_pos().to_string(),
            storage_seed: hex::encode(self.storage_seed.as_ref()),
            owner_password: hex::encode(self.owner_password.as_ref()),
            pcrs: (0..PCR_COUNT)
                .map(|i| hex::encode(self.pcrs.get(i).0))
                .collect(),
            dictionary_attack: self.dictionary_attack,
            failed_tries: self.failed_tries,
            heal_anchor: self.heal_anchor,
            boot_count: self.boot_count,
        }
    }

    pub fn from_state(state: &SimulatedTpmState) -> Result<Self, TpmError> {
        if state.version != 1 {
            return Err(TpmError::State(format!(
                "version {} (this build reads version 1)",
                state.version
            )));
        }
        let mut drbg = ChaCha20Rng::from_seed(hex32("drbg_seed", &state.drbg_seed)?);
        drbg.set_stream(state.drbg_stream);
        let word_pos: u128 = state
            .drbg_word_pos
            .parse()
            .map_err(|_| TpmError::State("drbg_word_pos is not a number".into()))?;
        drbg.set_word_pos(word_pos);
        let drbg = ParkedChaCha20::park(&drbg);
        if state.pcrs.len() != usize::from(PCR_COUNT) {
            return Err(TpmError::State(format!(
                "{} PCRs (a bank has 24)",
                state.pcrs.len()
            )));
        }
        let mut pcrs = PcrBank::default();
        for (index, text) in (0..PCR_COUNT).zip(&state.pcrs) {
            pcrs.set(index, PcrValue(hex32("pcrs", text)?));
        }
        Ok(Self {
            drbg,
            storage_seed: Zeroizing::new(hex32("storage_seed", &state.storage_seed)?),
            owner_password: Zeroizing::new(hex32("owner_password", &state.owner_password)?),
            pcrs,
            dictionary_attack: state.dictionary_attack,
            failed_tries: state.failed_tries,
            heal_anchor: state.heal_anchor,
            boot_count: state.boot_count,
        })
    }

    /// The state as pretty JSON (the CLI's state file).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.state()).expect("the state is plain data")
    }

    pub fn from_json(text: &str) -> Result<Self, TpmError> {
        let state: SimulatedTpmState =
            serde_json::from_str(text).map_err(|e| TpmError::State(e.to_string()))?;
        Self::from_state(&state)
    }

    fn storage_cipher(&self) -> StorageCipher {
        // The storage key is derived, not stored, like a primary key re-created from its seed.
        let mut hasher = Sha256::new();
        hasher.update(b"nulab simulated TPM storage key");
        hasher.update(self.storage_seed.as_ref());
        let key = Zeroizing::new(<[u8; 32]>::from(hasher.finalize()));
        StorageCipher::new(key.as_ref().into())
    }

    fn pcr_composite(&self, selection: PcrSelection) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for pcr in selection.iter() {
            hasher.update(self.pcrs.get(pcr.get()).0);
        }
        hasher.finalize().into()
    }

    /// Forgets one failure per whole `recovery_time` elapsed since the anchor.
    fn self_heal(&mut self, now: Duration) {
        let recovery = self.dictionary_attack.recovery_time;
        if self.failed_tries == 0 || recovery.is_zero() {
            return;
        }
        let elapsed = now.saturating_sub(self.heal_anchor);
        let periods = elapsed.as_nanos() / recovery.as_nanos();
        let forgotten = u32::try_from(periods)
            .unwrap_or(u32::MAX)
            .min(self.failed_tries);
        self.failed_tries -= forgotten;
        self.heal_anchor += recovery * forgotten;
    }

    fn locked_out(&self) -> bool {
        self.failed_tries >= self.dictionary_attack.max_tries
    }
}

impl Tpm for SimulatedTpm {
    fn pcr_read(&mut self, pcr: PcrIndex) -> Result<PcrValue, TpmError> {
        Ok(self.pcrs.get(pcr.get()))
    }

    fn pcr_extend(&mut self, pcr: PcrIndex, digest: &[u8; 32]) -> Result<(), TpmError> {
        let extended = self.pcrs.get(pcr.get()).extended(digest);
        self.pcrs.set(pcr.get(), extended);
        Ok(())
    }

    fn seal(&mut self, secret: &[u8], policy: &SealPolicy) -> Result<SealedBlob, TpmError> {
        crate::check_sealable(secret, policy)?;
        let mut blob =
            Vec::with_capacity(BLOB_HEADER_LEN + NONCE_LEN + 32 + secret.len() + CCM_TAG_LEN);
        blob.push(BLOB_TAG);
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&policy.pcrs.bitmap().to_le_bytes());
        blob.extend_from_slice(&self.pcr_composite(policy.pcrs));
        blob.push(if policy.auth.is_some() { FLAG_AUTH } else { 0 });
        let mut nonce = [0u8; NONCE_LEN];
        self.drbg.fill_bytes(&mut nonce);
        let mut plaintext = Zeroizing::new(Vec::with_capacity(32 + secret.len()));
        plaintext.extend_from_slice(policy.auth.as_ref().map_or(&[0u8; 32], |a| a.as_bytes()));
        plaintext.extend_from_slice(secret);
        let ciphertext = self
            .storage_cipher()
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plaintext,
                    aad: &blob,
                },
            )
            .map_err(|_| TpmError::Device("AES-CCM refused the sealed data".into()))?;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(SealedBlob::from_bytes(blob))
    }

    fn unseal(
        &mut self,
        blob: &SealedBlob,
        auth: Option<&AuthValue>,
        now: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let bytes = blob.as_bytes();
        if bytes.len() < BLOB_HEADER_LEN + NONCE_LEN + 32 + CCM_TAG_LEN {
            return Err(TpmError::InvalidBlob("too short"));
        }
        let (header, rest) = bytes.split_at(BLOB_HEADER_LEN);
        if header[0] != BLOB_TAG {
            return Err(TpmError::InvalidBlob("sealed by another kind of TPM"));
        }
        if header[1] != BLOB_VERSION {
            return Err(TpmError::InvalidBlob("unknown version"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plaintext = Zeroizing::new(
            self.storage_cipher()
                .decrypt(
                    nonce.into(),
                    Payload {
                        msg: ciphertext,
                        aad: header,
                    },
                )
                .map_err(|_| TpmError::InvalidBlob("integrity check failed (another TPM?)"))?,
        );
        // The header is authenticated: from here on its fields are the sealer's.
        let bitmap = u32::from_le_bytes([header[2], header[3], header[4], header[5]]);
        let pcrs = PcrSelection::from_bitmap(bitmap)
            .map_err(|_| TpmError::InvalidBlob("PCR selection out of range"))?;
        let needs_auth = header[38] & FLAG_AUTH != 0;
        if needs_auth {
            self.self_heal(now);
            if self.locked_out() {
                return Err(TpmError::Lockout {
                    recovery_time: self.dictionary_attack.recovery_time,
                });
            }
        }
        if self.pcr_composite(pcrs) != header[6..38] {
            return Err(TpmError::PolicyMismatch);
        }
        let (sealed_auth, secret) = plaintext.split_at(32);
        if needs_auth {
            let presented = auth.map_or(&[0u8; 32], |a| a.as_bytes());
            if !constant_time_eq(presented, sealed_auth) {
                self.failed_tries = self.failed_tries.saturating_add(1);
                self.heal_anchor = now;
                return Err(TpmError::BadAuthorization {
                    remaining: self
                        .dictionary_attack
                        .max_tries
                        .saturating_sub(self.failed_tries),
                });
            }
        }
        Ok(Zeroizing::new(secret.to_vec()))
    }

    fn get_random(&mut self, len: usize) -> Result<Vec<u8>, TpmError> {
        let mut bytes = vec![0u8; len];
        self.drbg.fill_bytes(&mut bytes);
        Ok(bytes)
    }

    fn set_dictionary_attack_policy(
        &mut self,
        policy: DictionaryAttackPolicy,
    ) -> Result<(), TpmError> {
        self.dictionary_attack = policy;
        self.failed_tries = 0;
        Ok(())
    }

    fn lockout_status(&mut self, now: Duration) -> Result<LockoutStatus, TpmError> {
        self.self_heal(now);
        Ok(LockoutStatus {
            failed_tries: self.failed_tries,
            max_tries: self.dictionary_attack.max_tries,
            recovery_time: self.dictionary_attack.recovery_time,
            locked_out: self.locked_out(),
        })
    }

    fn reset_lockout(&mut self) -> Result<(), TpmError> {
        self.failed_tries = 0;
        Ok(())
    }

    fn restart(&mut self, _now: Duration) -> Result<(), TpmError> {
        self.pcrs = PcrBank::default();
        self.boot_count = self.boot_count.saturating_add(1);
        Ok(())
    }
}

/// The SHA-256 bank: only the PCRs that are not zero are stored (a booted machine extends two
/// or three of 24; the whole bank inline was 768 bytes of each of a storm's 100,000 TPMs).
#[derive(Clone, Debug, Default)]
struct PcrBank(Vec<(u8, PcrValue)>);

impl PcrBank {
    fn get(&self, index: u8) -> PcrValue {
        self.0
            .iter()
            .find(|(i, _)| *i == index)
            .map_or_else(PcrValue::default, |(_, value)| *value)
    }

    fn set(&mut self, index: u8, value: PcrValue) {
        match self.0.iter_mut().find(|(i, _)| *i == index) {
            Some((_, slot)) => *slot = value,
            None if value == PcrValue::default() => {}
            None => self.0.push((index, value)),
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a PIN guess was right.
fn constant_time_eq(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex32(field: &str, text: &str) -> Result<[u8; 32], TpmError> {
    let bytes = hex::decode(text).map_err(|e| TpmError::State(format!("{field}: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| TpmError::State(format!("{field}: {} bytes, expected 32", bytes.len())))
}

/// The saved form of a [`SimulatedTpm`] (JSON). The DRBG position is a decimal string because
/// it is a u128, which JSON numbers cannot carry exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedTpmState {
    pub version: u32,
    pub drbg_seed: String,
    pub drbg_stream: u64,
    pub drbg_word_pos: String,
    pub storage_seed: String,
    pub owner_password: String,
    pub pcrs: Vec<String>,
    pub dictionary_attack: DictionaryAttackPolicy,
    pub failed_tries: u32,
    pub heal_anchor: Duration,
    pub boot_count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;

    fn tpm(seed: u64) -> SimulatedTpm {
        SimulatedTpm::manufacture(
            &mut ChaCha20Rng::seed_from_u64(seed),
            DictionaryAttackPolicy::default(),
        )
    }

    #[test]
    fn the_same_seed_makes_the_same_tpm() {
        let (mut a, mut b) = (tpm(1), tpm(1));
        assert_eq!(a.get_random(16), b.get_random(16));
        assert_eq!(a.owner_auth_full(), b.owner_auth_full());
        assert_ne!(tpm(1).owner_auth_full(), tpm(2).owner_auth_full());
        // base64 of a 20-byte SHA-1: 28 characters ending in one '='.
        assert_eq!(a.owner_auth_full().len(), 28);
        assert!(a.owner_auth_full().ends_with('='));
    }

    #[test]
    fn the_state_file_restores_the_same_tpm_mid_stream() {
        let mut original = tpm(3);
        original.get_random(5).expect("random");
        original
            .pcr_extend(PcrIndex::new(7).expect("pcr"), &[9; 32])
            .expect("extend");
        let blob = original
            .seal(b"secret", &SealPolicy::pcrs(PcrSelection::SECURE_BOOT))
            .expect("seal");
        let mut restored = SimulatedTpm::from_json(&original.to_json()).expect("restore");
        assert_eq!(restored.get_random(32), original.get_random(32));
        assert_eq!(
            restored
                .unseal(&blob, None, Duration::ZERO)
                .expect("unseal")
                .as_slice(),
            b"secret"
        );
        assert_eq!(restored.owner_auth_full(), original.owner_auth_full());
    }

    #[test]
    fn a_bad_state_file_is_an_error() {
        let good = tpm(4).state();
        let mut short_seed = good.clone();
        short_seed.storage_seed = "abcd".into();
        assert!(matches!(
            SimulatedTpm::from_state(&short_seed),
            Err(TpmError::State(_))
        ));
        let mut few_pcrs = good.clone();
        few_pcrs.pcrs.pop();
        assert!(matches!(
            SimulatedTpm::from_state(&few_pcrs),
            Err(TpmError::State(_))
        ));
        assert!(SimulatedTpm::from_json("{").is_err());
    }

    #[test]
    fn another_tpm_cannot_unseal() {
        let blob = tpm(5)
            .seal(b"k", &SealPolicy::pcrs(PcrSelection::SECURE_BOOT))
            .expect("seal");
        assert!(matches!(
            tpm(6).unseal(&blob, None, Duration::ZERO),
            Err(TpmError::InvalidBlob(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_blobs_never_panic_and_never_unseal(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut tpm = tpm(7);
            let result = tpm.unseal(&SealedBlob::from_bytes(bytes), None, Duration::ZERO);
            prop_assert!(matches!(result, Err(TpmError::InvalidBlob(_))));
        }

        #[test]
        fn a_flipped_bit_is_always_detected(index in 0usize..90, bit in 0u8..8) {
            let mut tpm = tpm(8);
            let blob = tpm.seal(&[5u8; 16], &SealPolicy::pcrs(PcrSelection::SECURE_BOOT)).expect("seal");
            let mut bytes = blob.into_bytes();
            let index = index % bytes.len();
            bytes[index] ^= 1 << bit;
            let result = tpm.unseal(&SealedBlob::from_bytes(bytes), None, Duration::ZERO);
            prop_assert!(matches!(result, Err(TpmError::InvalidBlob(_))));
        }
    }
}
