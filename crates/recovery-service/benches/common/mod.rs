//! What the escrow benchmarks (`escrow_throughput`, `escrow_scale`, `attack`) share: the
//! record a benchmark device escrows, one recovery password of its volume C:.

use recovery_service::record::{DeviceId, EscrowRecord, KeyId, MaterialKind, RecordId, VolumeId};

/// A recovery password's 48 digits in BitLocker's form, the same for every record.
pub const MATERIAL: &[u8] = b"123456-234567-345678-456789-567890-678901-789012-890123";

/// Version 1 of the recovery password `key_id` of `device`'s volume C:.
pub fn recovery_password(device: &DeviceId, key_id: &str) -> EscrowRecord {
    EscrowRecord {
        id: RecordId {
            device: device.clone(),
            volume: VolumeId::new("C").expect("volume"),
            key_id: KeyId::new(key_id).expect("key id"),
            kind: MaterialKind::RecoveryPassword,
        },
        version: 1,
        material: MATERIAL.to_vec(),
        replaces: None,
    }
}
