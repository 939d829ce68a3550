//! The volume image and the manage-bde-like operations on it.
//!
//! Image layout (little-endian), sector size 512:
//! - sector 0, the header: `"-NLBFVE-" | version u16 = 1 | sector size u16 | volume id [16] |
//!   data sectors u64 | metadata length u32 | SHA-256(metadata) [32]`, zero-padded;
//! - sectors 1 to 128, the metadata area (64 KiB, as BitLocker reserves 64 KiB per metadata
//!   block): `"FVE-META" | version u16 | FVEK wrapped under the VMK | protector count u16 |
//!   entries` (see `protector.rs`), zero-padded;
//! - the data sectors, AES-256-XTS under the FVEK with the sector number as the tweak
//!   (IEEE 1619, as BitLocker has used since Windows 10 1511).
//!
//! Sector 0 of the data holds a small file-system header (`"NULABFS\0"` and the label) written
//! at creation; unlocking decrypts it and checks it, so "unlocked" means the data really
//! decrypted.

use std::path::Path;
use std::time::Duration;

use aes::Aes256;
use aes::cipher::KeyInit;
use nkpu::{ClientKey, KeyProtector, SessionKey, Thumbprint};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use tpm::{AuthValue, PcrSelection, SealPolicy, Tpm, TpmError};
use xts_mode::{Xts128, get_tweak_default};
use zeroize::Zeroizing;

use crate::codec::{Reader, Truncated, put_wrapped_key};
use crate::keys::{VolumeKeys, WrappedKey};
use crate::policy::NetworkUnlockCertificate;
use crate::protector::{EntryError, Protector, ProtectorDetail, ProtectorId, ProtectorKind};
use crate::recovery_password::RecoveryPassword;
use crate::startup_key::StartupKey;

/// Bytes per data sector (the XTS data unit).
pub const DATA_SECTOR_SIZE: usize = 512;
const HEADER_MAGIC: &[u8; 8] = b"-NLBFVE-";
const METADATA_MAGIC: &[u8; 8] = b"FVE-META";
const FORMAT_VERSION: u16 = 1;
const METADATA_AREA: usize = 64 * 1024;
const DATA_OFFSET: usize = DATA_SECTOR_SIZE + METADATA_AREA;
const FS_MAGIC: &[u8; 8] = b"NULABFS\0";
/// Large enough for a few kilobytes of teaching data, small enough to stay in memory.
const MAX_DATA_SECTORS: u64 = 1 << 21;

/// The volume's identity (BitLocker's volume GUID), in the header and every binding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct VolumeId(pub [u8; 16]);

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        ProtectorId(self.0).fmt(f)
    }
}

/// A BitLocker-style encrypted volume, held in memory; [`Volume::save`] and [`Volume::open`]
/// move it to and from an image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    id: VolumeId,
    wrapped_fvek: WrappedKey,
    protectors: Vec<Protector>,
    /// The encrypted data sectors, back to back.
    data: Vec<u8>,
}

/// How to unlock, for the protectors that unlock in one step. Network Unlock takes two (see
/// [`Volume::network_unlock_secrets`]).
pub enum UnlockWith<'a> {
    Tpm,
    TpmAndPin(&'a str),
    RecoveryPassword(&'a RecoveryPassword),
    StartupKey(&'a StartupKey),
}

impl UnlockWith<'_> {
    pub fn kind(&self) -> ProtectorKind {
        match self {
            Self::Tpm => ProtectorKind::Tpm,
            Self::TpmAndPin(_) => ProtectorKind::TpmAndPin,
            Self::RecoveryPassword(_) => ProtectorKind::RecoveryPassword,
            Self::StartupKey(_) => ProtectorKind::StartupKey,
        }
    }
}

/// What the boot client takes from the Network Unlock protector before it talks to the
/// network: the request's thumbprint and key protector, the session key to open the reply (from
/// the TPM), and the TPM intermediate key to combine with the network key.
pub struct NetworkUnlockSecrets {
    pub protector: ProtectorId,
    pub thumbprint: Thumbprint,
    pub key_protector: KeyProtector,
    pub session_key: SessionKey,
    tpm_key: Zeroizing<[u8; 32]>,
}

impl NetworkUnlockSecrets {
    /// The fingerprint ([`crate::fingerprint`]) of the intermediate key the TPM released.
    pub fn intermediate_key_fingerprint(&self) -> String {
        crate::keys::fingerprint(&self.tpm_key[..])
    }

    /// The fingerprint of the key that opens the Network Unlock protector once `network_key`
    /// is back: SHA-256 of the intermediate key and CK (nulab's model of the combination).
    pub fn combined_key_fingerprint(&self, network_key: &ClientKey) -> String {
        crate::keys::fingerprint(&network_unlock_key(&self.tpm_key, network_key)[..])
    }
}

impl std::fmt::Debug for NetworkUnlockSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NetworkUnlockSecrets({}, {})",
            self.protector, self.thumbprint
        )
    }
}

/// Why a volume image could not be read or an operation refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("not a nulab volume image (no -NLBFVE- signature)")]
    Signature,
    #[error("image format version {0} (this build reads version 1)")]
    Version(u16),
    #[error("the image is truncated in the {0}")]
    Truncated(&'static str),
    #[error("the metadata does not match its checksum in the header (damaged image)")]
    MetadataChecksum,
    #[error("metadata protector entry {index}: {error}")]
    Entry { index: usize, error: EntryError },
    #[error("a volume has between 1 and {MAX_DATA_SECTORS} data sectors; asked for {0}")]
    Size(u64),
    #[error("sector {sector} is beyond the volume's {sectors} data sectors")]
    NoSuchSector { sector: u64, sectors: u64 },
    #[error("a sector is {DATA_SECTOR_SIZE} bytes; got {0}")]
    SectorLength(usize),
    #[error("the metadata would exceed its 64 KiB area")]
    MetadataFull,
    #[error("no protector {0} on this volume")]
    NoSuchProtector(ProtectorId),
    #[error("protector {0} is not a {1}")]
    WrongKind(ProtectorId, &'static str),
    #[error("the key does not belong to this volume")]
    ForeignKeys,
    #[error("TPM: {0}")]
    Tpm(#[from] TpmError),
    #[error("the Network Unlock certificate's key is unusable: {0}")]
    KeyProtector(#[from] nkpu::KeyProtectorError),
    #[error("{path}: {error}")]
    File { path: String, error: std::io::Error },
}

/// Why an unlock attempt failed. The boot client shows this and falls back to the next
/// protector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnlockError {
    #[error("the volume has no {} protector", .0.manage_bde_name())]
    NoProtector(ProtectorKind),
    /// The TPM refused to release its key: PCRs changed (recovery mode), wrong PIN, lockout.
    #[error("{} protector: {error}", .kind.manage_bde_name())]
    Tpm {
        kind: ProtectorKind,
        error: TpmError,
    },
    /// The key was formed but does not unwrap the VMK: wrong password, wrong startup key, wrong
    /// network key.
    #[error("{} protector: the key does not unwrap the volume master key", .0.manage_bde_name())]
    WrongKey(ProtectorKind),
    #[error("the startup key belongs to another volume or protector")]
    ForeignStartupKey,
    #[error("the volume data does not decrypt (damaged image)")]
    DataDoesNotDecrypt,
}

impl Volume {
    /// A new encrypted volume of `size_bytes` (rounded up to whole sectors) with fresh VMK and
    /// FVEK and no protectors yet; its data is empty but for the file-system header.
    pub fn create(
        size_bytes: u64,
        label: &str,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Self, VolumeKeys), VolumeError> {
        let sectors = size_bytes.div_ceil(DATA_SECTOR_SIZE as u64);
        if sectors == 0 || sectors > MAX_DATA_SECTORS {
            return Err(VolumeError::Size(sectors));
        }
        let id = VolumeId(ProtectorId::random(rng).0);
        let mut keys = VolumeKeys {
            vmk: Zeroizing::new([0u8; 32]),
            fvek: Zeroizing::new([0u8; 64]),
        };
        rng.fill_bytes(keys.vmk.as_mut());
        rng.fill_bytes(keys.fvek.as_mut());
        let wrapped_fvek = WrappedKey::seal(&keys.vmk, keys.fvek.as_ref(), &fvek_aad(id), rng);
        let len = usize::try_from(sectors).expect("at most 2^21 sectors") * DATA_SECTOR_SIZE;
        let mut volume = Self {
            id,
            wrapped_fvek,
            protectors: Vec::new(),
            data: vec![0u8; len],
        };
        let cipher = xts(&keys);
        for (index, sector) in volume.data.chunks_exact_mut(DATA_SECTOR_SIZE).enumerate() {
            if index == 0 {
                sector[..8].copy_from_slice(FS_MAGIC);
                let label = label.as_bytes();
                let n = label.len().min(DATA_SECTOR_SIZE - 8);
                sector[8..8 + n].copy_from_slice(&label[..n]);
            }
            cipher.encrypt_sector(sector, get_tweak_default(index as u128));
        }
        Ok((volume, keys))
    }

    pub fn id(&self) -> VolumeId {
        self.id
    }

    /// The protectors in metadata order (the order they were added).
    pub fn protectors(&self) -> &[Protector] {
        &self.protectors
    }

    pub fn data_sectors(&self) -> u64 {
        (self.data.len() / DATA_SECTOR_SIZE) as u64
    }

    /// The first protector of `kind`, if any.
    pub fn protector_of(&self, kind: ProtectorKind) -> Option<&Protector> {
        self.protectors.iter().find(|p| p.kind() == kind)
    }

    fn check_keys(&self, keys: &VolumeKeys) -> Result<(), VolumeError> {
        match self.wrapped_fvek.open(&keys.vmk, &fvek_aad(self.id)) {
            Some(fvek) if fvek.as_slice() == keys.fvek.as_slice() => Ok(()),
            _ => Err(VolumeError::ForeignKeys),
        }
    }

    fn push(
        &mut self,
        keys: &VolumeKeys,
        id: ProtectorId,
        protector_key: &[u8; 32],
        detail: ProtectorDetail,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<ProtectorId, VolumeError> {
        let mut protector = Protector {
            id,
            wrapped_vmk: WrappedKey {
                nonce: [0; 12],
                ciphertext: Vec::new(),
            },
            detail,
        };
        let aad = vmk_aad(self.id, id, protector.kind());
        protector.wrapped_vmk = WrappedKey::seal(protector_key, keys.vmk.as_ref(), &aad, rng);
        // Grown by one, not doubled: a volume holds two or three protectors for its life, and a
        // storm holds 100,000 volumes.
        self.protectors.reserve_exact(1);
        self.protectors.push(protector);
        if self.metadata().len() > METADATA_AREA {
            self.protectors.pop();
            return Err(VolumeError::MetadataFull);
        }
        Ok(id)
    }

    /// Replaces any TPM-family protector: BitLocker keeps one of TPM, TPM And PIN, ... at a time.
    fn remove_tpm_family(&mut self) {
        self.protectors
            .retain(|p| !matches!(p.kind(), ProtectorKind::Tpm | ProtectorKind::TpmAndPin));
    }

    /// `manage-bde -protectors -add -tpm`: a key sealed to the current values of `pcrs`.
    pub fn add_tpm_protector(
        &mut self,
        keys: &VolumeKeys,
        tpm: &mut dyn Tpm,
        pcrs: PcrSelection,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<ProtectorId, VolumeError> {
        self.check_keys(keys)?;
        let key = random_key(rng);
        let sealed = tpm.seal(key.as_ref(), &SealPolicy::pcrs(pcrs))?;
        self.remove_tpm_family();
        let id = ProtectorId::random(rng);
        self.push(keys, id, &key, ProtectorDetail::Tpm { pcrs, sealed }, rng)
    }

    /// `manage-bde -protectors -add -tpmandpin PIN`: sealed to `pcrs` and the PIN.
    pub fn add_tpm_and_pin_protector(
        &mut self,
        keys: &VolumeKeys,
        tpm: &mut dyn Tpm,
        pcrs: PcrSelection,
        pin: &str,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<ProtectorId, VolumeError> {
        self.check_keys(keys)?;
        let key = random_key(rng);
        let sealed = tpm.seal(
            key.as_ref(),
            &SealPolicy::pcrs_and_pin(pcrs, AuthValue::from_pin(pin)),
        )?;
        self.remove_tpm_family();
        let id = ProtectorId::random(rng);
        self.push(
            keys,
            id,
            &key,
            ProtectorDetail::TpmAndPin { pcrs, sealed },
            rng,
        )
    }

    /// The Network (Certificate Based) protector, which Windows adds at reboot when Group
    /// Policy allows it (see [`crate::policy::apply_at_reboot`]).
    ///
    /// Model: a fresh TPM intermediate key (sealed with the session key to `pcrs`, no PIN) and a
    /// fresh network key CK; the VMK is wrapped under `SHA-256(tpm_key ‖ CK)`; CK is kept only
    /// inside the key protector, RSA-encrypted to the certificate, so only the server can
    /// release it.
    pub fn add_network_unlock_protector(
        &mut self,
        keys: &VolumeKeys,
        tpm: &mut dyn Tpm,
        pcrs: PcrSelection,
        certificate: &NetworkUnlockCertificate,
        mut rng: &mut dyn CryptoRngCore,
    ) -> Result<ProtectorId, VolumeError> {
        self.check_keys(keys)?;
        let tpm_key = random_key(rng);
        let network_key = ClientKey::random(&mut rng);
        let session_key = SessionKey::random(&mut rng);
        let key_protector = KeyProtector::encrypt(
            certificate.public_key(),
            &network_key,
            &session_key,
            &mut rng,
        )?;
        let mut sealed_secret = Zeroizing::new([0u8; 64]);
        sealed_secret[..32].copy_from_slice(tpm_key.as_ref());
        sealed_secret[32..].copy_from_slice(session_key.as_bytes());
        let sealed = tpm.seal(sealed_secret.as_ref(), &SealPolicy::pcrs(pcrs))?;
        self.protectors
            .retain(|p| p.kind() != ProtectorKind::NetworkUnlock);
        let id = ProtectorId::random(rng);
        let unlock_key = network_unlock_key(&tpm_key, &network_key);
        let detail = ProtectorDetail::NetworkUnlock {
            thumbprint: certificate.thumbprint(),
            key_protector,
            pcrs,
            sealed,
        };
        self.push(keys, id, &unlock_key, detail, rng)
    }

    /// `manage-bde -protectors -add -recoverypassword [PW]`: a given or fresh recovery password,
    /// stretched `iterations` times ([`crate::BITLOCKER_STRETCH_ITERATIONS`] on Windows).
    pub fn add_recovery_password_protector(
        &mut self,
        keys: &VolumeKeys,
        password: Option<RecoveryPassword>,
        iterations: u32,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(ProtectorId, RecoveryPassword), VolumeError> {
        self.check_keys(keys)?;
        let password = password.unwrap_or_else(|| RecoveryPassword::generate(&mut &mut *rng));
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let id = ProtectorId::random(rng);
        let key_under_vmk = WrappedKey::seal(
            &keys.vmk,
            password.key(),
            &recovery_key_aad(self.id, id),
            rng,
        );
        let stretched = password.stretch(&salt, iterations);
        let detail = ProtectorDetail::RecoveryPassword {
            salt,
            iterations,
            key_under_vmk,
        };
        self.push(keys, id, &stretched, detail, rng)?;
        Ok((id, password))
    }

    /// `manage-bde -protectors -add -startupkey`: returns the key to write to a .BEK file.
    pub fn add_startup_key_protector(
        &mut self,
        keys: &VolumeKeys,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<StartupKey, VolumeError> {
        self.check_keys(keys)?;
        let id = ProtectorId::random(rng);
        let startup_key = StartupKey::generate(self.id, id, rng);
        self.push(keys, id, &startup_key.key, ProtectorDetail::StartupKey, rng)?;
        Ok(startup_key)
    }

    /// `manage-bde -protectors -delete -id ID`.
    pub fn remove_protector(&mut self, id: ProtectorId) -> Result<Protector, VolumeError> {
        let index = self
            .protectors
            .iter()
            .position(|p| p.id == id)
            .ok_or(VolumeError::NoSuchProtector(id))?;
        Ok(self.protectors.remove(index))
    }

    /// Rotates a recovery password: the old protector goes, a new one with a fresh password
    /// comes (what Windows does after a password was used, and what escrow then re-uploads).
    pub fn rotate_recovery_password(
        &mut self,
        keys: &VolumeKeys,
        old: ProtectorId,
        iterations: u32,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(ProtectorId, RecoveryPassword), VolumeError> {
        self.check_keys(keys)?;
        self.recovery_protector(old)?;
        let added = self.add_recovery_password_protector(keys, None, iterations, rng)?;
        self.remove_protector(old)?;
        Ok(added)
    }

    fn recovery_protector(
        &self,
        id: ProtectorId,
    ) -> Result<(&Protector, [u8; 16], u32, &WrappedKey), VolumeError> {
        let protector = self
            .protectors
            .iter()
            .find(|p| p.id == id)
            .ok_or(VolumeError::NoSuchProtector(id))?;
        match &protector.detail {
            ProtectorDetail::RecoveryPassword {
                salt,
                iterations,
                key_under_vmk,
            } => Ok((protector, *salt, *iterations, key_under_vmk)),
            _ => Err(VolumeError::WrongKind(id, "Numerical Password")),
        }
    }

    /// The recovery password of an unlocked volume (manage-bde shows it), read back from its
    /// copy under the VMK.
    pub fn recovery_password(
        &self,
        keys: &VolumeKeys,
        id: ProtectorId,
    ) -> Result<RecoveryPassword, VolumeError> {
        let (_, _, _, key_under_vmk) = self.recovery_protector(id)?;
        let key = key_under_vmk
            .open(&keys.vmk, &recovery_key_aad(self.id, id))
            .ok_or(VolumeError::ForeignKeys)?;
        let key = <[u8; 16]>::try_from(key.as_slice()).map_err(|_| VolumeError::ForeignKeys)?;
        Ok(RecoveryPassword::from_key(key))
    }

    /// Unlocks with the first protector of the chosen kind (every one of that kind is tried for
    /// recovery passwords and startup keys, as the user does not say which).
    pub fn unlock(
        &self,
        with: &UnlockWith<'_>,
        tpm: &mut dyn Tpm,
        now: Duration,
    ) -> Result<VolumeKeys, UnlockError> {
        let kind = with.kind();
        let candidates: Vec<&Protector> = self
            .protectors
            .iter()
            .filter(|p| p.kind() == kind)
            .collect();
        if candidates.is_empty() {
            return Err(UnlockError::NoProtector(kind));
        }
        let tpm_error = |error| UnlockError::Tpm { kind, error };
        for protector in candidates {
            let key: Zeroizing<[u8; 32]> = match (&protector.detail, with) {
                (ProtectorDetail::Tpm { sealed, .. }, UnlockWith::Tpm) => {
                    to_key(&tpm.unseal(sealed, None, now).map_err(tpm_error)?)
                        .ok_or(UnlockError::WrongKey(kind))?
                }
                (ProtectorDetail::TpmAndPin { sealed, .. }, UnlockWith::TpmAndPin(pin)) => {
                    let auth = AuthValue::from_pin(pin);
                    to_key(&tpm.unseal(sealed, Some(&auth), now).map_err(tpm_error)?)
                        .ok_or(UnlockError::WrongKey(kind))?
                }
                (
                    ProtectorDetail::RecoveryPassword {
                        salt, iterations, ..
                    },
                    UnlockWith::RecoveryPassword(password),
                ) => password.stretch(salt, *iterations),
                (ProtectorDetail::StartupKey, UnlockWith::StartupKey(startup_key)) => {
                    if startup_key.volume != self.id || startup_key.protector != protector.id {
                        continue;
                    }
                    Zeroizing::new(startup_key.key)
                }
                _ => continue,
            };
            if let Some(keys) = self.open_with(protector, &key) {
                return self.verified(keys);
            }
        }
        Err(match with {
            UnlockWith::StartupKey(_) => UnlockError::ForeignStartupKey,
            _ => UnlockError::WrongKey(kind),
        })
    }

    /// Network Unlock, step one (boot manager, before the DHCP exchange): the TPM releases the
    /// intermediate key and the session key if the PCRs are as sealed.
    pub fn network_unlock_secrets(
        &self,
        tpm: &mut dyn Tpm,
        now: Duration,
    ) -> Result<NetworkUnlockSecrets, UnlockError> {
        let kind = ProtectorKind::NetworkUnlock;
        let protector = self
            .protector_of(kind)
            .ok_or(UnlockError::NoProtector(kind))?;
        let ProtectorDetail::NetworkUnlock {
            thumbprint,
            key_protector,
            sealed,
            ..
        } = &protector.detail
        else {
            return Err(UnlockError::NoProtector(kind));
        };
        let released = tpm
            .unseal(sealed, None, now)
            .map_err(|error| UnlockError::Tpm { kind, error })?;
        if released.len() != 64 {
            return Err(UnlockError::WrongKey(kind));
        }
        let mut tpm_key = Zeroizing::new([0u8; 32]);
        tpm_key.copy_from_slice(&released[..32]);
        let session_key =
            SessionKey::try_from(&released[32..]).map_err(|_| UnlockError::WrongKey(kind))?;
        Ok(NetworkUnlockSecrets {
            protector: protector.id,
            thumbprint: *thumbprint,
            key_protector: key_protector.clone(),
            session_key,
            tpm_key,
        })
    }

    /// Network Unlock, step two (phases 7 and 8): the network key the server returned,
    /// combined with the TPM intermediate key, unwraps the VMK.
    pub fn unlock_with_network_key(
        &self,
        secrets: &NetworkUnlockSecrets,
        network_key: &ClientKey,
    ) -> Result<VolumeKeys, UnlockError> {
        let kind = ProtectorKind::NetworkUnlock;
        let protector = self
            .protectors
            .iter()
            .find(|p| p.id == secrets.protector)
            .ok_or(UnlockError::NoProtector(kind))?;
        let key = network_unlock_key(&secrets.tpm_key, network_key);
        let keys = self
            .open_with(protector, &key)
            .ok_or(UnlockError::WrongKey(kind))?;
        self.verified(keys)
    }

    fn open_with(&self, protector: &Protector, key: &[u8; 32]) -> Option<VolumeKeys> {
        let vmk = protector
            .wrapped_vmk
            .open_32(key, &vmk_aad(self.id, protector.id, protector.kind()))?;
        let fvek_plain = self.wrapped_fvek.open(&vmk, &fvek_aad(self.id))?;
        let mut fvek = Zeroizing::new([0u8; 64]);
        fvek.copy_from_slice(fvek_plain.get(..64).filter(|_| fvek_plain.len() == 64)?);
        Some(VolumeKeys { vmk, fvek })
    }

    /// Decrypts the start of data sector 0 and checks the file-system header: proof that the
    /// keys really decrypt the data.
    fn verified(&self, keys: VolumeKeys) -> Result<VolumeKeys, UnlockError> {
        match self.read_sector_start(&keys, 0, FS_MAGIC.len()) {
            Ok(start) if start.starts_with(FS_MAGIC) => Ok(keys),
            _ => Err(UnlockError::DataDoesNotDecrypt),
        }
    }

    /// The volume label written at creation, read from decrypted sector 0.
    pub fn label(&self, keys: &VolumeKeys) -> Result<String, VolumeError> {
        // Labels are short: the first 64 bytes usually hold the header, the label and its end.
        let mut sector = self.read_sector_start(keys, 0, 64)?;
        if !sector[FS_MAGIC.len()..].contains(&0) {
            sector = self.read_sector(keys, 0)?;
        }
        let text = &sector[FS_MAGIC.len()..];
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        Ok(String::from_utf8_lossy(&text[..end]).into_owned())
    }

    /// Decrypts one data sector.
    pub fn read_sector(&self, keys: &VolumeKeys, sector: u64) -> Result<Vec<u8>, VolumeError> {
        self.read_sector_start(keys, sector, DATA_SECTOR_SIZE)
    }

    /// The first `len` bytes of a decrypted data sector, rounded up to whole AES blocks:
    /// XTS deciphers each 16-byte block with the sector's tweak times α to the block's index,
    /// so the first blocks decrypted alone are exactly the first blocks of the whole sector
    /// (a sector is a whole number of blocks, so no ciphertext stealing moves bytes between
    /// them). Unlocking checks 8 bytes; decrypting 512 for them was a storm's main AES cost.
    fn read_sector_start(
        &self,
        keys: &VolumeKeys,
        sector: u64,
        len: usize,
    ) -> Result<Vec<u8>, VolumeError> {
        let range = self.sector_range(sector)?;
        let len = len.div_ceil(16).clamp(1, DATA_SECTOR_SIZE / 16) * 16;
        let mut plain = self.data[range.start..range.start + len].to_vec();
        xts(keys).decrypt_sector(&mut plain, get_tweak_default(u128::from(sector)));
        Ok(plain)
    }

    /// Encrypts and stores one data sector.
    pub fn write_sector(
        &mut self,
        keys: &VolumeKeys,
        sector: u64,
        plaintext: &[u8],
    ) -> Result<(), VolumeError> {
        self.check_keys(keys)?;
        if plaintext.len() != DATA_SECTOR_SIZE {
            return Err(VolumeError::SectorLength(plaintext.len()));
        }
        let range = self.sector_range(sector)?;
        let stored = &mut self.data[range];
        stored.copy_from_slice(plaintext);
        xts(keys).encrypt_sector(stored, get_tweak_default(u128::from(sector)));
        Ok(())
    }

    /// The raw (encrypted) bytes of a data sector, as a disk reader without keys sees them.
    pub fn raw_sector(&self, sector: u64) -> Result<&[u8], VolumeError> {
        let range = self.sector_range(sector)?;
        Ok(&self.data[range])
    }

    fn sector_range(&self, sector: u64) -> Result<std::ops::Range<usize>, VolumeError> {
        let sectors = self.data_sectors();
        if sector >= sectors {
            return Err(VolumeError::NoSuchSector { sector, sectors });
        }
        let start = usize::try_from(sector).expect("below the sector count") * DATA_SECTOR_SIZE;
        Ok(start..start + DATA_SECTOR_SIZE)
    }

    fn metadata(&self) -> Vec<u8> {
        // Room for the usual two or three protectors without growing.
        let mut out = Vec::with_capacity(2048);
        out.extend_from_slice(METADATA_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        put_wrapped_key(&mut out, &self.wrapped_fvek);
        let count = u16::try_from(self.protectors.len()).expect("the 64 KiB area bounds the count");
        out.extend_from_slice(&count.to_le_bytes());
        for protector in &self.protectors {
            protector.encode(&mut out);
        }
        out
    }

    /// The whole image file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let metadata = self.metadata();
        let mut out = Vec::with_capacity(DATA_OFFSET + self.data.len());
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(DATA_SECTOR_SIZE as u16).to_le_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.data_sectors().to_le_bytes());
        let len = u32::try_from(metadata.len()).expect("metadata fits its 64 KiB area");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&metadata));
        out.resize(DATA_SECTOR_SIZE, 0);
        out.extend_from_slice(&metadata);
        out.resize(DATA_OFFSET, 0);
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads an image file's bytes. Never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VolumeError> {
        let t = |e: Truncated| VolumeError::Truncated(e.0);
        let mut r = Reader::new(bytes);
        expect_magic_and_version(&mut r, HEADER_MAGIC, "header")?;
        let sector_size = r.u16("header").map_err(t)?;
        if usize::from(sector_size) != DATA_SECTOR_SIZE {
            return Err(VolumeError::SectorLength(usize::from(sector_size)));
        }
        let id = VolumeId(r.array("header").map_err(t)?);
        let sectors = r.u64("header").map_err(t)?;
        if sectors == 0 || sectors > MAX_DATA_SECTORS {
            return Err(VolumeError::Size(sectors));
        }
        let metadata_len = r.u32("header").map_err(t)? as usize;
        let checksum: [u8; 32] = r.array("header").map_err(t)?;
        if metadata_len > METADATA_AREA {
            return Err(VolumeError::MetadataChecksum);
        }
        let metadata = bytes
            .get(DATA_SECTOR_SIZE..DATA_SECTOR_SIZE + metadata_len)
            .ok_or(VolumeError::Truncated("metadata"))?;
        if <[u8; 32]>::from(Sha256::digest(metadata)) != checksum {
            return Err(VolumeError::MetadataChecksum);
        }
        let data_len = usize::try_from(sectors).expect("at most 2^21") * DATA_SECTOR_SIZE;
        let data = bytes
            .get(DATA_OFFSET..DATA_OFFSET + data_len)
            .ok_or(VolumeError::Truncated("data sectors"))?
            .to_vec();
        let mut m = Reader::new(metadata);
        expect_magic_and_version(&mut m, METADATA_MAGIC, "metadata")?;
        let wrapped_fvek = m.wrapped_key("wrapped FVEK").map_err(t)?;
        let count = m.u16("metadata").map_err(t)?;
        let mut protectors = Vec::with_capacity(usize::from(count).min(64));
        for index in 0..usize::from(count) {
            protectors.push(
                Protector::decode(&mut m).map_err(|error| VolumeError::Entry { index, error })?,
            );
        }
        Ok(Self {
            id,
            wrapped_fvek,
            protectors,
            data,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), VolumeError> {
        std::fs::write(path, self.to_bytes()).map_err(|error| VolumeError::File {
            path: path.display().to_string(),
            error,
        })
    }

    pub fn open(path: &Path) -> Result<Self, VolumeError> {
        let bytes = std::fs::read(path).map_err(|error| VolumeError::File {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_bytes(&bytes)
    }

    pub(crate) fn wrapped_fvek(&self) -> &WrappedKey {
        &self.wrapped_fvek
    }
}

/// The Network Unlock protector's key. Model, not Windows' algorithm (ARCHITECTURE.md, "Models
/// of what is not public"): `SHA-256(tpm_intermediate_key ‖ network_key)`.
pub(crate) fn network_unlock_key(
    tpm_key: &[u8; 32],
    network_key: &ClientKey,
) -> Zeroizing<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(tpm_key);
    hasher.update(network_key.as_bytes());
    Zeroizing::new(hasher.finalize().into())
}

/// The signature and format version that open both the header and the metadata.
fn expect_magic_and_version(
    r: &mut Reader<'_>,
    magic: &[u8; 8],
    part: &'static str,
) -> Result<(), VolumeError> {
    let t = |e: Truncated| VolumeError::Truncated(e.0);
    if r.take(8, part).map_err(t)? != magic {
        return Err(VolumeError::Signature);
    }
    let version = r.u16(part).map_err(t)?;
    if version != FORMAT_VERSION {
        return Err(VolumeError::Version(version));
    }
    Ok(())
}

fn random_key(rng: &mut dyn CryptoRngCore) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    key
}

fn to_key(bytes: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(bytes.get(..32).filter(|_| bytes.len() == 32)?);
    Some(key)
}

fn xts(keys: &VolumeKeys) -> Xts128<Aes256> {
    let (k1, k2) = keys.fvek.split_at(32);
    Xts128::new(
        Aes256::new_from_slice(k1).expect("32-byte AES-256 key"),
        Aes256::new_from_slice(k2).expect("32-byte AES-256 key"),
    )
}

pub(crate) fn fvek_aad(id: VolumeId) -> Vec<u8> {
    [b"FVEK".as_slice(), &id.0].concat()
}

pub(crate) fn vmk_aad(id: VolumeId, protector: ProtectorId, kind: ProtectorKind) -> Vec<u8> {
    [
        b"VMK".as_slice(),
        &id.0,
        &protector.0,
        kind.cli_name().as_bytes(),
    ]
    .concat()
}

fn recovery_key_aad(id: VolumeId, protector: ProtectorId) -> Vec<u8> {
    [b"RKEY".as_slice(), &id.0, &protector.0].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    fn image() -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (mut volume, keys) = Volume::create(1024, "T", &mut rng).expect("create");
        volume
            .add_recovery_password_protector(&keys, None, 1, &mut rng)
            .expect("rp");
        volume
            .add_startup_key_protector(&keys, &mut rng)
            .expect("sk");
        volume.to_bytes()
    }

    #[test]
    fn a_short_or_foreign_file_is_refused_with_a_reason() {
        assert!(matches!(
            Volume::from_bytes(b""),
            Err(VolumeError::Truncated("header"))
        ));
        assert!(matches!(
            Volume::from_bytes(&[0u8; 600]),
            Err(VolumeError::Signature)
        ));
        let bytes = image();
        assert!(matches!(
            Volume::from_bytes(&bytes[..bytes.len() - 1]),
            Err(VolumeError::Truncated("data sectors"))
        ));
    }

    #[test]
    fn labels_read_whole_whether_they_end_in_the_first_blocks_or_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for label in [
            "",
            "T",
            &"L".repeat(55),
            &"M".repeat(56),
            &"N".repeat(300),
            &"O".repeat(600),
        ] {
            let (volume, keys) = Volume::create(1024, label, &mut rng).expect("create");
            let kept = &label[..label.len().min(DATA_SECTOR_SIZE - FS_MAGIC.len())];
            assert_eq!(volume.label(&keys).expect("label"), kept);
        }
    }

    proptest! {
        #[test]
        fn a_sectors_first_blocks_decrypt_alone_to_its_plaintexts_start(
            seed in any::<u64>(),
            sector in 0u64..3,
            len in 0usize..600,
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (mut volume, keys) = Volume::create(3 * 512, "label", &mut rng).expect("create");
            let mut plain = [0u8; DATA_SECTOR_SIZE];
            rng.fill_bytes(&mut plain);
            // Encrypted whole by the crate's XTS, decrypted in part.
            volume.write_sector(&keys, sector, &plain).expect("write");
            let start = volume.read_sector_start(&keys, sector, len).expect("start");
            prop_assert_eq!(start.len(), len.div_ceil(16).clamp(1, 32) * 16);
            prop_assert_eq!(&plain[..start.len()], &start[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Volume::from_bytes(&bytes);
        }

        #[test]
        fn damaged_metadata_never_panics(index in 0usize..2000, value in any::<u8>()) {
            // Damage a metadata byte and fix the checksum, so the entry decoder sees it.
            let mut bytes = image();
            let len = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]) as usize;
            let at = DATA_SECTOR_SIZE + index % len;
            bytes[at] = value;
            let digest: [u8; 32] = Sha256::digest(&bytes[DATA_SECTOR_SIZE..DATA_SECTOR_SIZE + len]).into();
            bytes[40..72].copy_from_slice(&digest);
            let _ = Volume::from_bytes(&bytes);
        }
    }
}
