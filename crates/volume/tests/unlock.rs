//! Unlocking a real encrypted image with each protector; a firmware update (a PCR change) makes
//! the TPM-based protectors fail while the recovery password still works; Group Policy adds and
//! deletes the Network Unlock protector; the full Network Unlock loop against the provider's
//! RSA key from nkpu.

use std::time::Duration;

use certificates::UnfitReason;
use nkpu::{KeyProtectorReply, ProviderKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};
use tpm::{DictionaryAttackPolicy, PcrIndex, PcrSelection, SimulatedTpm, Tpm, TpmError};
use volume::policy::{
    CertificateError, GroupPolicy, NetworkUnlockCertificate, NetworkUnlockCertificateStore,
    RebootOutcome, StartupPin, apply_at_reboot,
};
use volume::{
    ProtectorKind, RecoveryPassword, StartupKey, UnlockError, UnlockWith, Volume, VolumeKeys,
};

/// Small, so tests stay fast; the real count is tested for its timing in the benchmark note.
const ITERATIONS: u32 = 16;
const NOW: Duration = Duration::from_secs(60);

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn tpm() -> SimulatedTpm {
    let mut tpm = SimulatedTpm::manufacture(&mut rng(100), DictionaryAttackPolicy::default());
    // Firmware measured Secure Boot state into PCR 7 during this boot.
    tpm.pcr_extend(PcrIndex::new(7).expect("pcr"), &[0x77; 32])
        .expect("extend");
    tpm
}

/// How an unlock attempt ends, without the keys.
fn attempt(
    volume: &Volume,
    with: &UnlockWith<'_>,
    tpm: &mut SimulatedTpm,
) -> Result<(), UnlockError> {
    volume.unlock(with, tpm, NOW).map(|_| ())
}

fn provider_key_der(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixture(&format!("keys/{name}"))).expect("test key fixture")
}

fn network_unlock_certificate(key_file: &str, with_usage: bool) -> Vec<u8> {
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &provider_key_der(key_file).as_slice().into(),
        &PKCS_RSA_SHA256,
    )
    .expect("RSA key");
    let mut params =
        CertificateParams::new(vec!["BitLocker Network Unlock".into()]).expect("params");
    if with_usage {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![
            1, 3, 6, 1, 4, 1, 311, 67, 1, 1,
        ])];
    }
    params
        .self_signed(&key)
        .expect("self-signed")
        .der()
        .to_vec()
}

struct Lab {
    volume: Volume,
    keys: VolumeKeys,
    tpm: SimulatedTpm,
    password: RecoveryPassword,
    startup_key: StartupKey,
}

fn lab() -> Lab {
    let mut rng = rng(1);
    let mut tpm = tpm();
    let (mut volume, keys) = Volume::create(64 * 1024, "OS", &mut rng).expect("create");
    volume
        .add_tpm_and_pin_protector(
            &keys,
            &mut tpm,
            PcrSelection::SECURE_BOOT,
            "246810",
            &mut rng,
        )
        .expect("TPM and PIN");
    let (_, password) = volume
        .add_recovery_password_protector(&keys, None, ITERATIONS, &mut rng)
        .expect("recovery password");
    let startup_key = volume
        .add_startup_key_protector(&keys, &mut rng)
        .expect("startup key");
    Lab {
        volume,
        keys,
        tpm,
        password,
        startup_key,
    }
}

#[test]
fn every_protector_unlocks_and_the_data_really_decrypts() {
    let Lab {
        mut volume,
        keys,
        mut tpm,
        password,
        startup_key,
    } = lab();
    let mut plaintext = vec![0u8; 512];
    plaintext[..23].copy_from_slice(b"the payroll spreadsheet");
    volume.write_sector(&keys, 3, &plaintext).expect("write");
    assert_ne!(
        volume.raw_sector(3).expect("raw"),
        plaintext.as_slice(),
        "stored encrypted"
    );

    for with in [
        UnlockWith::TpmAndPin("246810"),
        UnlockWith::RecoveryPassword(&password),
        UnlockWith::StartupKey(&startup_key),
    ] {
        let unlocked = volume.unlock(&with, &mut tpm, NOW).expect("unlock");
        assert_eq!(volume.read_sector(&unlocked, 3).expect("read"), plaintext);
        assert_eq!(volume.label(&unlocked).expect("label"), "OS");
    }

    // TPM only replaces TPM And PIN (one TPM-family protector at a time).
    volume
        .add_tpm_protector(&keys, &mut tpm, PcrSelection::SECURE_BOOT, &mut rng(2))
        .expect("TPM");
    assert!(volume.protector_of(ProtectorKind::TpmAndPin).is_none());
    let unlocked = volume.unlock(&UnlockWith::Tpm, &mut tpm, NOW).expect("TPM");
    assert_eq!(volume.read_sector(&unlocked, 3).expect("read"), plaintext);
}

#[test]
fn wrong_secrets_fail_authentication_not_into_garbage() {
    let Lab {
        volume, mut tpm, ..
    } = lab();
    let other = RecoveryPassword::generate(&mut rng(9));
    assert_eq!(
        attempt(&volume, &UnlockWith::RecoveryPassword(&other), &mut tpm),
        Err(UnlockError::WrongKey(ProtectorKind::RecoveryPassword))
    );
    assert_eq!(
        attempt(&volume, &UnlockWith::TpmAndPin("000000"), &mut tpm),
        Err(UnlockError::Tpm {
            kind: ProtectorKind::TpmAndPin,
            error: TpmError::BadAuthorization { remaining: 31 }
        })
    );
    let (_, other_volume_keys) = Volume::create(4096, "other", &mut rng(10)).expect("create");
    assert!(
        volume
            .read_sector(&other_volume_keys, 0)
            .is_ok_and(|s| !s.starts_with(b"NULABFS"))
    );
    assert!(matches!(
        volume.unlock(&UnlockWith::Tpm, &mut tpm, NOW),
        Err(UnlockError::NoProtector(ProtectorKind::Tpm))
    ));
}

#[test]
fn a_firmware_update_breaks_tpm_protectors_but_not_the_recovery_password() {
    let Lab {
        volume,
        mut tpm,
        password,
        ..
    } = lab();
    // Reboot into updated firmware: PCR 7 measures something else.
    tpm.restart(NOW).expect("reboot");
    tpm.pcr_extend(PcrIndex::new(7).expect("pcr"), &[0x78; 32])
        .expect("extend");
    assert_eq!(
        attempt(&volume, &UnlockWith::TpmAndPin("246810"), &mut tpm),
        Err(UnlockError::Tpm {
            kind: ProtectorKind::TpmAndPin,
            error: TpmError::PolicyMismatch
        })
    );
    let unlocked = volume
        .unlock(&UnlockWith::RecoveryPassword(&password), &mut tpm, NOW)
        .expect("the recovery password still works");
    assert_eq!(volume.label(&unlocked).expect("label"), "OS");
}

#[test]
fn the_image_file_round_trips_and_unlocks_after_reopening() {
    let Lab {
        volume,
        mut tpm,
        password,
        ..
    } = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("os.img");
    volume.save(&path).expect("save");
    let reopened = Volume::open(&path).expect("open");
    assert_eq!(reopened, volume);
    assert!(
        reopened
            .unlock(&UnlockWith::RecoveryPassword(&password), &mut tpm, NOW)
            .is_ok()
    );
    let mut bytes = volume.to_bytes();
    bytes[600] ^= 1;
    assert!(matches!(
        Volume::from_bytes(&bytes),
        Err(volume::VolumeError::MetadataChecksum)
    ));
}

#[test]
fn group_policy_adds_network_unlock_at_reboot_and_deletes_it_when_disabled() {
    let Lab {
        mut volume,
        keys,
        mut tpm,
        ..
    } = lab();
    let mut rng = rng(3);
    let mut store = NetworkUnlockCertificateStore::default();
    let mut policy = GroupPolicy {
        startup_pin: StartupPin::Require,
        allow_network_unlock: true,
    };
    let pcrs = PcrSelection::SECURE_BOOT;
    let mut reboot =
        |policy: &GroupPolicy, store: &NetworkUnlockCertificateStore, volume: &mut Volume| {
            apply_at_reboot(policy, store, volume, &keys, &mut tpm, pcrs, &mut rng).expect("reboot")
        };
    assert!(matches!(
        reboot(&policy, &store, &mut volume),
        RebootOutcome::NotAdded { reason } if reason.contains("FVE_NKP")
    ));
    let certificate =
        NetworkUnlockCertificate::from_der(&network_unlock_certificate("test-a-rsa2048.pk8", true))
            .expect("a valid Network Unlock certificate");
    store.install(certificate.clone());
    let RebootOutcome::Added { id } = reboot(&policy, &store, &mut volume) else {
        panic!("the protector appears after a reboot with policy and certificate");
    };
    assert!(
        matches!(reboot(&policy, &store, &mut volume), RebootOutcome::Kept { id: kept } if kept == id)
    );
    let table = volume.protectors_table("C:", None);
    assert!(table.contains("Network (Certificate Based):"), "{table}");
    assert!(table.contains(&format!(
        "Certificate Thumbprint: {}",
        certificate.thumbprint()
    )));

    // A new certificate replaces the protector; disabling the policy deletes it.
    store.install(
        NetworkUnlockCertificate::from_der(&network_unlock_certificate("test-b-rsa2048.pk8", true))
            .expect("valid"),
    );
    assert!(
        matches!(reboot(&policy, &store, &mut volume), RebootOutcome::Replaced { removed, .. } if removed == id)
    );
    // Deleting the certificate policy on the domain controller empties FVE_NKP: the reboot
    // deletes the protector, as disabling the policy does (issue 19).
    let held = store.remove().expect("a certificate is held");
    assert!(matches!(
        reboot(&policy, &store, &mut volume),
        RebootOutcome::Removed { .. }
    ));
    assert!(volume.protector_of(ProtectorKind::NetworkUnlock).is_none());
    store.install(held);
    assert!(matches!(
        reboot(&policy, &store, &mut volume),
        RebootOutcome::Added { .. }
    ));
    policy.allow_network_unlock = false;
    assert!(matches!(
        reboot(&policy, &store, &mut volume),
        RebootOutcome::Removed { .. }
    ));
    assert!(volume.protector_of(ProtectorKind::NetworkUnlock).is_none());
}

#[test]
fn a_certificate_without_the_network_unlock_usage_is_not_valid() {
    let refused = NetworkUnlockCertificate::from_der(&network_unlock_certificate(
        "test-a-rsa2048.pk8",
        false,
    ));
    let Err(CertificateError::Unfit(unfit)) = refused else {
        panic!("refused as unfit, not {refused:?}");
    };
    assert_eq!(unfit.reasons(), [UnfitReason::MissingNetworkUnlockEku]);
    // The CLI wraps this error with anyhow's context: it must travel as a boxed error.
    let boxed: Box<dyn std::error::Error + Send + Sync> = CertificateError::Unfit(unfit).into();
    assert!(
        boxed.to_string().contains("1.3.6.1.4.1.311.67.1.1"),
        "{boxed}"
    );
}

/// The store applies the certificates crate's whole rule, not only key size and EKU: a key
/// usage that forbids keyEncipherment (the key wraps the client's keys) is refused too.
#[test]
fn a_certificate_whose_key_usage_forbids_key_encipherment_is_not_valid() {
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &provider_key_der("test-a-rsa2048.pk8").as_slice().into(),
        &PKCS_RSA_SHA256,
    )
    .expect("RSA key");
    let mut params =
        CertificateParams::new(vec!["BitLocker Network Unlock".into()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![
        1, 3, 6, 1, 4, 1, 311, 67, 1, 1,
    ])];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let der = params
        .self_signed(&key)
        .expect("self-signed")
        .der()
        .to_vec();
    let refused = NetworkUnlockCertificate::from_der(&der);
    let Err(CertificateError::Unfit(unfit)) = refused else {
        panic!("refused as unfit, not {refused:?}");
    };
    assert_eq!(unfit.reasons(), [UnfitReason::KeyEnciphermentNotAllowed]);
}

#[test]
fn bytes_that_are_not_one_certificate_are_a_parse_error() {
    let der = network_unlock_certificate("test-a-rsa2048.pk8", true);
    for bad in [
        &der[..der.len() - 1],
        &[&der[..], &[0]].concat()[..],
        b"".as_slice(),
    ] {
        assert!(matches!(
            NetworkUnlockCertificate::from_der(bad),
            Err(CertificateError::Parse(_))
        ));
    }
}

/// A certificate the certificates crate generated and validated goes into the store as it is,
/// and is the same as the one parsed from its DER.
#[test]
fn the_certificates_crate_form_converts_both_ways() {
    let bundle = certificates::fixture::network_unlock(7);
    let from_der = NetworkUnlockCertificate::from_der(bundle.certificate.der()).expect("fit");
    let converted = NetworkUnlockCertificate::try_from(bundle.certificate.clone()).expect("fit");
    assert_eq!(from_der, converted);
    assert_eq!(converted.thumbprint(), bundle.certificate.thumbprint());
    let checked =
        certificates::NetworkUnlockCertificate::from_certificate(bundle.certificate).expect("fit");
    assert_eq!(NetworkUnlockCertificate::from(checked.clone()), converted);
    assert_eq!(converted.checked(), &checked);
    assert_eq!(converted.der(), checked.der());
    assert_eq!(converted.public_key(), checked.public_key());
}

#[test]
fn network_unlock_end_to_end_with_the_provider_key() {
    let Lab {
        mut volume,
        keys,
        mut tpm,
        password,
        ..
    } = lab();
    let certificate =
        NetworkUnlockCertificate::from_der(&network_unlock_certificate("test-a-rsa2048.pk8", true))
            .expect("valid");
    volume
        .add_network_unlock_protector(
            &keys,
            &mut tpm,
            PcrSelection::SECURE_BOOT,
            &certificate,
            &mut rng(4),
        )
        .expect("network unlock");

    // Boot: the TPM releases its half and the session key; the request goes out.
    let secrets = volume
        .network_unlock_secrets(&mut tpm, NOW)
        .expect("TPM releases");
    assert_eq!(secrets.thumbprint, certificate.thumbprint());
    // The WDS provider decrypts the key protector and seals CK under SK.
    let provider =
        ProviderKey::from_pkcs8_der(&provider_key_der("test-a-rsa2048.pk8")).expect("key");
    let (network_key, session_key) = provider.decrypt(&secrets.key_protector).expect("decrypt");
    let reply = KeyProtectorReply::seal(&session_key, &network_key);
    // Phases 7 and 8: the client opens the reply and combines CK with the TPM key.
    let returned = reply.open(&secrets.session_key).expect("the reply opens");
    let unlocked = volume
        .unlock_with_network_key(&secrets, &returned)
        .expect("unlock");
    assert_eq!(volume.label(&unlocked).expect("label"), "OS");

    // A wrong network key fails; a PCR change stops the TPM from releasing its half.
    let wrong = nkpu::ClientKey::from_bytes([1; 32]);
    assert_eq!(
        volume.unlock_with_network_key(&secrets, &wrong).map(|_| ()),
        Err(UnlockError::WrongKey(ProtectorKind::NetworkUnlock))
    );
    tpm.pcr_extend(PcrIndex::new(11).expect("pcr"), &[1; 32])
        .expect("extend");
    assert!(matches!(
        volume.network_unlock_secrets(&mut tpm, NOW),
        Err(UnlockError::Tpm {
            error: TpmError::PolicyMismatch,
            ..
        })
    ));
    assert!(
        volume
            .unlock(&UnlockWith::RecoveryPassword(&password), &mut tpm, NOW)
            .is_ok()
    );
}

#[test]
fn manage_bde_operations_list_remove_rotate_and_export() {
    let Lab {
        mut volume,
        keys,
        mut tpm,
        password,
        ..
    } = lab();
    let id = volume
        .protector_of(ProtectorKind::RecoveryPassword)
        .expect("present")
        .id;
    let table = volume.protectors_table("C:", Some(&keys));
    assert!(
        table.starts_with("Volume C: [OS]\nAll Key Protectors\n"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "    Numerical Password:\n      ID: {id}\n      Password:\n        {password}\n"
        )),
        "{table}"
    );
    assert!(table.contains("    TPM And PIN:\n"));
    assert!(table.contains("      PCR Validation Profile:\n        7, 11\n"));
    let locked = volume.protectors_table("C:", None);
    assert!(
        !locked.contains(&password.to_string()),
        "hidden while locked"
    );

    // The key package opens with the password alone, even without the image.
    let package = volume.export_key_package(&keys, id).expect("export");
    let package = volume::KeyPackage::from_json(&package.to_json()).expect("json round trip");
    let from_package = package.open(&password).expect("opens");
    assert_eq!(volume.label(&from_package).expect("label"), "OS");
    assert!(package.open(&RecoveryPassword::from_key([0; 16])).is_err());

    // Rotation: the old password stops working, the new one works.
    let (new_id, new_password) = volume
        .rotate_recovery_password(&keys, id, ITERATIONS, &mut rng(5))
        .expect("rotate");
    assert_ne!(new_id, id);
    assert_eq!(
        attempt(&volume, &UnlockWith::RecoveryPassword(&password), &mut tpm),
        Err(UnlockError::WrongKey(ProtectorKind::RecoveryPassword))
    );
    assert!(
        volume
            .unlock(&UnlockWith::RecoveryPassword(&new_password), &mut tpm, NOW)
            .is_ok()
    );
    assert_eq!(
        volume.recovery_password(&keys, new_id).expect("shown"),
        new_password
    );

    let removed = volume.remove_protector(new_id).expect("remove");
    assert_eq!(removed.kind(), ProtectorKind::RecoveryPassword);
    assert!(volume.remove_protector(new_id).is_err());
    let json = serde_json::to_value(volume.protector_views(None)).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(2));
}

#[test]
fn the_same_seed_builds_the_same_image() {
    let build = || {
        let mut rng = rng(42);
        let mut tpm = tpm();
        let (mut volume, keys) = Volume::create(8192, "OS", &mut rng).expect("create");
        volume
            .add_tpm_protector(&keys, &mut tpm, PcrSelection::SECURE_BOOT, &mut rng)
            .expect("tpm");
        volume
            .add_recovery_password_protector(&keys, None, ITERATIONS, &mut rng)
            .expect("rp");
        volume.to_bytes()
    };
    assert_eq!(build(), build());
}

/// The image format does not move: a volume with a protector of each family stored in the
/// metadata (TPM and PIN, Network Unlock, recovery password, startup key) from fixed seeds
/// and a fixed certificate has these bytes (their SHA-256, taken from the encoder before it
/// wrote entries in place).
#[test]
fn the_image_bytes_of_every_protector_kind_are_fixed() {
    use sha2::{Digest, Sha256};
    let Lab {
        mut volume,
        keys,
        mut tpm,
        ..
    } = lab();
    let mut store = NetworkUnlockCertificateStore::default();
    store.install(
        NetworkUnlockCertificate::from_der(&network_unlock_certificate("test-a-rsa2048.pk8", true))
            .expect("a valid Network Unlock certificate"),
    );
    let policy = GroupPolicy {
        startup_pin: StartupPin::Require,
        allow_network_unlock: true,
    };
    let outcome = apply_at_reboot(
        &policy,
        &store,
        &mut volume,
        &keys,
        &mut tpm,
        PcrSelection::SECURE_BOOT,
        &mut rng(5),
    )
    .expect("reboot");
    assert!(matches!(outcome, RebootOutcome::Added { .. }));
    let digest = hex::encode(Sha256::digest(volume.to_bytes()));
    assert_eq!(
        digest,
        "5a2b8f5c116555b43f87c8bae199f1641b355134d50b860369a18a1844b20a60"
    );
}
