//! The client's side of escrow for one BitLocker volume: what an unlocked volume escrows (each
//! recovery password with its key ID, the key package of each, the TPM owner-auth hash) and
//! the rotation the service asks for after a helpdesk disclosure.
//!
//! The agent runs inside a running Windows, where the volume is unlocked; here that is a
//! [`volume::Volume`] with its [`volume::VolumeKeys`]. A recovery password's key ID is its
//! protector's GUID, as manage-bde and the recovery screen show it. The TPM owner-auth hash has
//! no protector: it is filed under the volume's GUID (nulab's choice; the helpdesk asks for it
//! by that ID and kind `tpm-owner-auth`).
//!
//! Versions: every record is escrowed at version 1. A recovery password never changes under its
//! key ID (a rotation makes a new protector, hence a new key ID), so a repeated escrow is an
//! idempotent `unchanged`; a rotated password arrives as a new record naming the one it
//! `replaces`, and the service retires the old one.

use rand_core::CryptoRngCore;
use volume::{ProtectorDetail, ProtectorId, ProtectorKind, Volume, VolumeKeys};

use crate::record::{DeviceId, EscrowRecord, KeyId, MaterialKind, RecordError, RecordId, VolumeId};
use crate::wire::RotationReason;

/// Why the volume's recovery information could not be read or rotated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectedVolumeError {
    #[error(transparent)]
    Volume(#[from] volume::VolumeError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the volume has no recovery password protector to escrow")]
    NoRecoveryPassword,
}

/// One rotation the agent carried out, and why the service asked for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub old: KeyId,
    pub new: KeyId,
    pub reason: RotationReason,
}

/// An unlocked BitLocker volume on a managed device.
pub struct ProtectedVolume {
    device: DeviceId,
    name: VolumeId,
    volume: Volume,
    keys: VolumeKeys,
    owner_auth: Option<String>,
}

fn key_id(id: ProtectorId) -> Result<KeyId, RecordError> {
    KeyId::new(id.to_string())
}

impl ProtectedVolume {
    /// `name` is the volume as the device calls it (`C`); `owner_auth` the TPM's
    /// `OwnerAuthFull`, if the device has a TPM.
    pub fn new(
        device: DeviceId,
        name: VolumeId,
        volume: Volume,
        keys: VolumeKeys,
        owner_auth: Option<String>,
    ) -> Self {
        Self {
            device,
            name,
            volume,
            keys,
            owner_auth,
        }
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
    pub fn name(&self) -> &VolumeId {
        &self.name
    }

    /// The key IDs of the recovery password protectors, in metadata order.
    pub fn recovery_key_ids(&self) -> Result<Vec<KeyId>, ProtectedVolumeError> {
        self.volume
            .protectors()
            .iter()
            .filter(|p| p.kind() == ProtectorKind::RecoveryPassword)
            .map(|p| Ok(key_id(p.id)?))
            .collect()
    }

    fn record(&self, key: KeyId, kind: MaterialKind, material: Vec<u8>) -> EscrowRecord {
        EscrowRecord {
            id: RecordId {
                device: self.device.clone(),
                volume: self.name.clone(),
                key_id: key,
                kind,
            },
            version: 1,
            material,
            replaces: None,
        }
    }

    fn password_records(&self, id: ProtectorId) -> Result<Vec<EscrowRecord>, ProtectedVolumeError> {
        let password = self.volume.recovery_password(&self.keys, id)?;
        let package = self.volume.export_key_package(&self.keys, id)?;
        let key = key_id(id)?;
        Ok(vec![
            self.record(
                key.clone(),
                MaterialKind::RecoveryPassword,
                password.to_string().into_bytes(),
            ),
            self.record(
                key,
                MaterialKind::KeyPackage,
                package.to_json().into_bytes(),
            ),
        ])
    }

    /// Everything the volume escrows: each recovery password and its key package, then the TPM
    /// owner-auth hash.
    pub fn records(&self) -> Result<Vec<EscrowRecord>, ProtectedVolumeError> {
        let mut out = Vec::new();
        for p in self.volume.protectors() {
            if p.kind() == ProtectorKind::RecoveryPassword {
                out.extend(self.password_records(p.id)?);
            }
        }
        if out.is_empty() {
            return Err(ProtectedVolumeError::NoRecoveryPassword);
        }
        if let Some(auth) = &self.owner_auth {
            let vol = KeyId::new(self.volume.id().to_string())?;
            out.push(self.record(vol, MaterialKind::TpmOwnerAuth, auth.as_bytes().to_vec()));
        }
        Ok(out)
    }

    /// Rotates the disclosed recovery password `old` (a new protector with a fresh password,
    /// the old one removed, its stretch count kept) and returns the records to re-escrow: the
    /// new password and key package, naming `old` as what they replace. If `old` is no longer
    /// on the volume (rotated earlier, but the re-escrow did not get through), the current
    /// passwords are re-sent as its replacement.
    pub fn rotate(
        &mut self,
        old: &KeyId,
        reason: RotationReason,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Option<Rotation>, Vec<EscrowRecord>), ProtectedVolumeError> {
        let found = self
            .volume
            .protectors()
            .iter()
            .find_map(|p| match &p.detail {
                ProtectorDetail::RecoveryPassword { iterations, .. }
                    if key_id(p.id).as_ref() == Ok(old) =>
                {
                    Some((p.id, *iterations))
                }
                _ => None,
            });
        let (rotation, ids) = match found {
            Some((id, iterations)) => {
                let (new_id, _) = self
                    .volume
                    .rotate_recovery_password(&self.keys, id, iterations, rng)?;
                let rotation = Rotation {
                    old: old.clone(),
                    new: key_id(new_id)?,
                    reason,
                };
                (Some(rotation), vec![new_id])
            }
            None => (
                None,
                self.volume
                    .protectors()
                    .iter()
                    .filter(|p| p.kind() == ProtectorKind::RecoveryPassword)
                    .map(|p| p.id)
                    .collect(),
            ),
        };
        let mut records = Vec::new();
        for id in ids {
            records.extend(self.password_records(id)?);
        }
        if records.is_empty() {
            return Err(ProtectedVolumeError::NoRecoveryPassword);
        }
        for r in &mut records {
            r.replaces = Some(old.clone());
        }
        Ok((rotation, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use volume::{RecoveryPassword, UnlockWith};

    fn protected(seed: u64) -> (ProtectedVolume, tpm::SimulatedTpm) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let tpm = tpm::SimulatedTpm::manufacture(&mut rng, Default::default());
        let (mut vol, keys) = Volume::create(8192, "OS", &mut rng).expect("volume");
        vol.add_recovery_password_protector(&keys, None, 16, &mut rng)
            .expect("recovery password");
        let pv = ProtectedVolume::new(
            DeviceId::new("PC0042").expect("d"),
            VolumeId::new("C").expect("v"),
            vol,
            keys,
            Some(tpm.owner_auth_full()),
        );
        (pv, tpm)
    }

    #[test]
    fn escrows_password_key_package_and_owner_auth() {
        let (pv, tpm) = protected(1);
        let records = pv.records().expect("records");
        let kinds: Vec<MaterialKind> = records.iter().map(|r| r.id.kind).collect();
        assert_eq!(
            kinds,
            [
                MaterialKind::RecoveryPassword,
                MaterialKind::KeyPackage,
                MaterialKind::TpmOwnerAuth
            ]
        );
        let pw: RecoveryPassword = std::str::from_utf8(&records[0].material)
            .expect("utf8")
            .parse()
            .expect("a real recovery password");
        // The escrowed password really unlocks the volume, and the package opens with it.
        let mut tpm = tpm;
        assert!(
            pv.volume()
                .unlock(
                    &UnlockWith::RecoveryPassword(&pw),
                    &mut tpm,
                    Default::default()
                )
                .is_ok()
        );
        let package =
            volume::KeyPackage::from_json(std::str::from_utf8(&records[1].material).expect("utf8"))
                .expect("package");
        assert!(package.open(&pw).is_ok());
        assert_eq!(records[2].material, tpm.owner_auth_full().as_bytes());
        assert_eq!(records[0].id.key_id, records[1].id.key_id);
    }

    #[test]
    fn rotation_replaces_the_disclosed_password() {
        let (mut pv, mut tpm) = protected(2);
        let before = pv.records().expect("records");
        let old = before[0].id.key_id.clone();
        let old_pw: RecoveryPassword = std::str::from_utf8(&before[0].material)
            .expect("utf8")
            .parse()
            .expect("pw");
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (rotation, records) = pv
            .rotate(&old, RotationReason::Disclosed, &mut rng)
            .expect("rotate");
        let rotation = rotation.expect("rotated");
        assert_eq!(rotation.old, old);
        assert_ne!(rotation.new, old);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.replaces.as_ref() == Some(&old)));
        assert!(records.iter().all(|r| r.id.key_id == rotation.new));
        assert_eq!(
            pv.recovery_key_ids().expect("ids"),
            vec![rotation.new.clone()]
        );
        // The old password no longer unlocks; the new one does.
        assert!(
            pv.volume()
                .unlock(
                    &UnlockWith::RecoveryPassword(&old_pw),
                    &mut tpm,
                    Default::default()
                )
                .is_err()
        );
        let new_pw: RecoveryPassword = std::str::from_utf8(&records[0].material)
            .expect("utf8")
            .parse()
            .expect("pw");
        assert!(
            pv.volume()
                .unlock(
                    &UnlockWith::RecoveryPassword(&new_pw),
                    &mut tpm,
                    Default::default()
                )
                .is_ok()
        );
        // Asked again for the same (gone) key: the current password is re-sent as its
        // replacement, nothing rotates twice.
        let (again, records) = pv
            .rotate(&old, RotationReason::Disclosed, &mut rng)
            .expect("again");
        assert!(again.is_none());
        assert_eq!(records[0].id.key_id, rotation.new);
        assert_eq!(records[0].replaces.as_ref(), Some(&old));
    }
}
