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

/// The benchmark's folder, on the build's own disk (not tmpfs, so that fsync costs what it
/// costs), and in it the at-rest key file.
pub struct BenchDir {
    pub dir: tempfile::TempDir,
    pub key_file: std::path::PathBuf,
}

pub fn bench_dir() -> BenchDir {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let key_file = dir.path().join("recovery.key");
    recovery_service::seal::AtRestKey::from_bytes([1u8; 32])
        .save_new(&key_file)
        .expect("key");
    BenchDir { dir, key_file }
}

/// A lab CA (the clients' trust) and the `localhost` certificate and key it issued (the
/// server's).
pub struct LocalhostPki {
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

pub fn localhost_pki() -> LocalhostPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("k")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &*ca)
        .expect("cert");
    LocalhostPki {
        ca_der: ca.der().clone(),
        cert,
        key,
    }
}
