//! One behavioural suite, written once, that every [`Tpm`] implementation must pass: the
//! simulated TPM always, and a real TPM (swtpm, started per check on a free port) when the
//! `real-tpm` feature is on.
//!
//! Time: the suite keeps a `now` for the simulated TPM and, for a real TPM, also sleeps, since a
//! real TPM heals from lockout on its own clock.

use std::time::Duration;

#[cfg(feature = "real-tpm")]
mod swtpm;

use tpm::{
    AuthValue, DictionaryAttackPolicy, PcrIndex, PcrSelection, PcrValue, SealPolicy, SealedBlob,
    Tpm, TpmError,
};

/// The simulation clock of one check; for a real TPM, waiting really waits.
struct Clock {
    now: Duration,
    real: bool,
}

impl Clock {
    fn wait(&mut self, d: Duration) {
        if self.real {
            std::thread::sleep(d);
        }
        self.now += d;
    }
}

fn pcr(index: u8) -> PcrIndex {
    PcrIndex::new(index).expect("a valid PCR")
}

/// Sets the dictionary-attack parameters for one check (which also clears the counter).
fn limit_tries<T: Tpm>(tpm: &mut T, max_tries: u32, recovery_time: Duration) {
    tpm.set_dictionary_attack_policy(DictionaryAttackPolicy {
        max_tries,
        recovery_time,
    })
    .expect("DA parameters");
}

/// Seals `secret` to the current PCR 7 and `pin`: BitLocker's "TPM And PIN".
fn seal_to_pcr7_and_pin<T: Tpm>(tpm: &mut T, secret: &[u8], pin: &AuthValue) -> SealedBlob {
    tpm.seal(
        secret,
        &SealPolicy::pcrs_and_pin(PcrSelection::of(&[7]).expect("pcr"), pin.clone()),
    )
    .expect("seal")
}

fn clock(real_time: bool) -> Clock {
    Clock {
        now: Duration::from_secs(1000),
        real: real_time,
    }
}

/// Sealing, unsealing and their failures, on fresh TPMs from `make`. `real_time`: the TPM has
/// its own clock.
pub fn behavioural_suite<T: Tpm>(mut make: impl FnMut() -> T, real_time: bool) {
    pcrs_extend_as_sha256_chains(&mut make());
    seal_under_pcr7_and_pin_then_unseal(&mut make(), &mut clock(real_time));
    an_extended_pcr_is_a_policy_failure(&mut make(), &mut clock(real_time));
    pcr_only_sealing_needs_no_pin(&mut make(), &mut clock(real_time));
    a_restart_resets_pcrs_and_keeps_sealed_secrets(&mut make(), &mut clock(real_time));
    random_bytes_and_limits(&mut make());
}

/// Dictionary-attack counting, lockout, self-healing and reset, on fresh TPMs from `make`.
/// Against a real TPM this needs the lockout counter read fresh on every query (tss-esapi caches
/// TPM properties per context; see `read_lockout_properties` in `src/real.rs`) and a storage
/// primary with `noDA` (otherwise a locked-out TPM refuses to seal or load anything).
pub fn dictionary_attack_suite<T: Tpm>(mut make: impl FnMut() -> T, real_time: bool) {
    every_wrong_pin_is_counted(&mut make(), &mut clock(real_time));
    lockout_after_max_tries_then_recovery(&mut make(), &mut clock(real_time));
    lockout_reset_by_the_administrator(&mut make(), &mut clock(real_time));
}

fn pcrs_extend_as_sha256_chains<T: Tpm>(tpm: &mut T) {
    let before = tpm.pcr_read(pcr(7)).expect("read PCR 7");
    assert_eq!(before, PcrValue::default(), "PCR 7 starts at zero");
    tpm.pcr_extend(pcr(7), &[0xab; 32]).expect("extend");
    let after = tpm.pcr_read(pcr(7)).expect("read PCR 7");
    assert_eq!(after, before.extended(&[0xab; 32]));
    assert_eq!(
        tpm.pcr_read(pcr(8)).expect("read PCR 8"),
        PcrValue::default(),
        "only PCR 7 changed"
    );
}

fn seal_under_pcr7_and_pin_then_unseal<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    tpm.pcr_extend(pcr(7), &[1; 32])
        .expect("measure secure boot");
    let pin = AuthValue::from_pin("246810");
    let secret = [0x5a; 32];
    let blob = seal_to_pcr7_and_pin(tpm, &secret, &pin);
    let released = tpm.unseal(&blob, Some(&pin), clock.now).expect("unseal");
    assert_eq!(released.as_slice(), &secret);
    assert!(
        !blob.as_bytes().windows(32).any(|w| w == secret),
        "the secret is not in the clear"
    );
}

fn every_wrong_pin_is_counted<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    limit_tries(tpm, 5, Duration::from_secs(3600));
    let pin = AuthValue::from_pin("246810");
    let blob = seal_to_pcr7_and_pin(tpm, b"volume key half", &pin);
    assert_eq!(
        tpm.unseal(&blob, Some(&AuthValue::from_pin("000000")), clock.now),
        Err(TpmError::BadAuthorization { remaining: 4 })
    );
    assert_eq!(
        tpm.unseal(&blob, None, clock.now),
        Err(TpmError::BadAuthorization { remaining: 3 }),
        "no PIN at all is a wrong PIN"
    );
    let status = tpm.lockout_status(clock.now).expect("status");
    assert_eq!((status.failed_tries, status.locked_out), (2, false));
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now)
            .expect("right PIN")
            .as_slice(),
        b"volume key half"
    );
}

fn an_extended_pcr_is_a_policy_failure<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    let pin = AuthValue::from_pin("1234");
    let blob = seal_to_pcr7_and_pin(tpm, &[7; 32], &pin);
    // A firmware update measures something new into PCR 7.
    tpm.pcr_extend(pcr(7), &[0xee; 32]).expect("extend");
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now),
        Err(TpmError::PolicyMismatch)
    );
    let status = tpm.lockout_status(clock.now).expect("status");
    assert_eq!(
        status.failed_tries, 0,
        "a policy failure is not a PIN failure"
    );
}

fn pcr_only_sealing_needs_no_pin<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    tpm.pcr_extend(pcr(11), &[3; 32]).expect("extend");
    let blob = tpm
        .seal(&[9; 48], &SealPolicy::pcrs(PcrSelection::SECURE_BOOT))
        .expect("seal");
    assert_eq!(
        tpm.unseal(&blob, None, clock.now)
            .expect("unseal")
            .as_slice(),
        &[9; 48]
    );
    tpm.pcr_extend(pcr(11), &[4; 32]).expect("extend");
    assert_eq!(
        tpm.unseal(&blob, None, clock.now),
        Err(TpmError::PolicyMismatch)
    );
}

fn lock_out<T: Tpm>(tpm: &mut T, clock: &Clock, blob: &SealedBlob, max_tries: u32) {
    for attempt in 1..=max_tries {
        assert_eq!(
            tpm.unseal(blob, Some(&AuthValue::from_pin("9999")), clock.now),
            Err(TpmError::BadAuthorization {
                remaining: max_tries - attempt
            })
        );
    }
}

fn lockout_after_max_tries_then_recovery<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    let recovery_time = Duration::from_secs(2);
    limit_tries(tpm, 3, recovery_time);
    let pin = AuthValue::from_pin("135790");
    let blob = seal_to_pcr7_and_pin(tpm, &[1; 32], &pin);
    lock_out(tpm, clock, &blob, 3);
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now),
        Err(TpmError::Lockout { recovery_time }),
        "even the right PIN is refused during lockout"
    );
    let status = tpm.lockout_status(clock.now).expect("status");
    assert!(status.locked_out);
    assert_eq!(status.failed_tries, 3);
    // A PCR-only secret does not use an authValue: lockout does not apply to it.
    let pcr_only = tpm
        .seal(
            &[2; 32],
            &SealPolicy::pcrs(PcrSelection::of(&[7]).expect("pcr")),
        )
        .expect("seal");
    assert!(tpm.unseal(&pcr_only, None, clock.now).is_ok());
    // One recovery period forgets one failure: below maxTries again.
    clock.wait(recovery_time + Duration::from_millis(700));
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now)
            .expect("recovered")
            .as_slice(),
        &[1; 32]
    );
    let status = tpm.lockout_status(clock.now).expect("status");
    assert!(!status.locked_out);
    assert!(status.failed_tries < 3);
}

fn lockout_reset_by_the_administrator<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    limit_tries(tpm, 2, Duration::from_secs(86_400));
    let pin = AuthValue::from_pin("112233");
    let blob = seal_to_pcr7_and_pin(tpm, &[3; 16], &pin);
    lock_out(tpm, clock, &blob, 2);
    assert!(matches!(
        tpm.unseal(&blob, Some(&pin), clock.now),
        Err(TpmError::Lockout { .. })
    ));
    tpm.reset_lockout().expect("lockout reset");
    assert_eq!(
        tpm.lockout_status(clock.now).expect("status").failed_tries,
        0
    );
    assert!(tpm.unseal(&blob, Some(&pin), clock.now).is_ok());
}

fn a_restart_resets_pcrs_and_keeps_sealed_secrets<T: Tpm>(tpm: &mut T, clock: &mut Clock) {
    limit_tries(tpm, 10, Duration::from_secs(86_400));
    // Sealed against the zero value of PCR 7 (before any measurement of this boot).
    let pin = AuthValue::from_pin("7777");
    let blob = seal_to_pcr7_and_pin(tpm, &[4; 32], &pin);
    assert!(
        tpm.unseal(&blob, Some(&AuthValue::from_pin("0")), clock.now)
            .is_err()
    );
    tpm.pcr_extend(pcr(7), &[5; 32]).expect("extend");
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now),
        Err(TpmError::PolicyMismatch)
    );
    match tpm.restart(clock.now) {
        Err(TpmError::RestartUnsupported) => return,
        other => other.expect("restart"),
    }
    assert_eq!(
        tpm.pcr_read(pcr(7)).expect("read"),
        PcrValue::default(),
        "PCRs reset"
    );
    assert_eq!(
        tpm.unseal(&blob, Some(&pin), clock.now)
            .expect("unseal after reboot")
            .as_slice(),
        &[4; 32]
    );
    assert_eq!(
        tpm.lockout_status(clock.now).expect("status").failed_tries,
        1,
        "the failure counter is non-volatile"
    );
}

fn random_bytes_and_limits<T: Tpm>(tpm: &mut T) {
    let a = tpm.get_random(64).expect("random");
    let b = tpm.get_random(64).expect("random");
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    assert_eq!(
        tpm.seal(&[0; 129], &SealPolicy::pcrs(PcrSelection::SECURE_BOOT)),
        Err(TpmError::SecretTooLarge(129))
    );
    assert_eq!(
        tpm.seal(&[0; 8], &SealPolicy::pcrs(PcrSelection::EMPTY)),
        Err(TpmError::EmptyPolicy)
    );
}

/// Runs `suite` on fresh simulated TPMs, each manufactured from the seed after the last one's.
fn on_simulated(first_seed: u64, suite: fn(&mut dyn FnMut() -> tpm::SimulatedTpm)) {
    use rand_core::SeedableRng as _;
    let mut seed = first_seed;
    suite(&mut || {
        seed += 1;
        tpm::SimulatedTpm::manufacture(
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(seed),
            DictionaryAttackPolicy::default(),
        )
    });
}

#[test]
fn the_simulated_tpm_passes_the_suite() {
    on_simulated(0, |make| behavioural_suite(make, false));
}

#[test]
fn the_simulated_tpm_passes_the_dictionary_attack_suite() {
    on_simulated(100, |make| dictionary_attack_suite(make, false));
}

/// Runs `suite` on fresh swtpm instances, each on its own ports and state directory, stopped
/// when the suite is over.
#[cfg(feature = "real-tpm")]
fn on_swtpm(suite: fn(&mut dyn FnMut() -> tpm::RealTpm)) {
    if !testkit::require_tool("swtpm") {
        return;
    }
    let mut servers = Vec::new();
    suite(&mut || {
        let server = swtpm::Swtpm::start();
        let tpm = tpm::RealTpm::connect(&server.tcti(), Some(server.control_address()))
            .expect("connect to swtpm");
        servers.push(server);
        tpm
    });
}

#[cfg(feature = "real-tpm")]
#[test]
fn swtpm_passes_the_suite() {
    on_swtpm(|make| behavioural_suite(make, true));
}

#[cfg(feature = "real-tpm")]
#[test]
fn swtpm_passes_the_dictionary_attack_suite() {
    on_swtpm(|make| dictionary_attack_suite(make, true));
}
