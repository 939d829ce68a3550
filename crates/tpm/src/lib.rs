//! The TPM 2.0 as BitLocker's boot manager uses it: one [`Tpm`] trait, two implementations.
//!
//! - [`SimulatedTpm`] (always built): a deterministic, pure-Rust TPM: a SHA-256 PCR bank, sealing
//!   a secret under a policy of PCR values and/or an authorization value (the PIN),
//!   dictionary-attack lockout, randomness from an internal DRBG seeded by the injected RNG, and
//!   a state that survives a simulated reboot and can be saved to a file.
//! - `RealTpm` (cargo feature `real-tpm`): a real TPM through tss-esapi 7.7, reached by a TCTI
//!   string (`swtpm:host=127.0.0.1,port=2321` or `device:/dev/tpmrm0`).
//!
//! The trait is sans-IO in spirit and synchronous: the caller passes `now` (time since the
//! simulation's epoch) wherever dictionary-attack recovery depends on time; the simulated TPM
//! never reads a clock, the real one has its own and ignores `now`.
//!
//! ```text
//!   seal(secret, {PCR 7, PIN}) ──▶ SealedBlob (stored in the volume metadata)
//!   unseal(blob, PIN, now)     ──▶ secret
//!                              ╰─▶ PolicyMismatch (a PCR changed: firmware update, other boot path)
//!                              ╰─▶ BadAuthorization { remaining } (wrong PIN, counted)
//!                              ╰─▶ Lockout (too many wrong PINs: wait for recovery, or reset)
//! ```

mod auth;
mod error;
mod pcr;
mod simulated;
pub mod swtpm;

#[cfg(feature = "real-tpm")]
mod real;

use std::time::Duration;

use zeroize::Zeroizing;

pub use auth::AuthValue;
pub use error::TpmError;
pub use pcr::{PCR_COUNT, PcrIndex, PcrSelection, PcrValue};
#[cfg(feature = "real-tpm")]
pub use real::RealTpm;
pub use simulated::{SimulatedTpm, SimulatedTpmState};

/// The largest secret a TPM 2.0 sealed-data object holds (MAX_SYM_DATA).
pub const MAX_SEALED_SECRET: usize = 128;

/// What must hold for a sealed secret to be released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealPolicy {
    /// The PCRs whose current values are bound into the policy (BitLocker with Secure Boot uses
    /// PCR 7 and 11). Empty: no PCR binding.
    pub pcrs: PcrSelection,
    /// The authorization value (the PIN) the unseal must present; `None`: no PIN.
    pub auth: Option<AuthValue>,
}

impl SealPolicy {
    /// Bound to the current values of `pcrs` only (BitLocker's "TPM" protector).
    pub fn pcrs(pcrs: PcrSelection) -> Self {
        Self { pcrs, auth: None }
    }

    /// Bound to the current values of `pcrs` and to a PIN ("TPM And PIN").
    pub fn pcrs_and_pin(pcrs: PcrSelection, auth: AuthValue) -> Self {
        Self {
            pcrs,
            auth: Some(auth),
        }
    }
}

/// What every implementation refuses before sealing: a secret larger than a sealed-data object
/// holds, and a policy that would protect nothing.
fn check_sealable(secret: &[u8], policy: &SealPolicy) -> Result<(), TpmError> {
    if secret.len() > MAX_SEALED_SECRET {
        return Err(TpmError::SecretTooLarge(secret.len()));
    }
    if policy.pcrs.is_empty() && policy.auth.is_none() {
        return Err(TpmError::EmptyPolicy);
    }
    Ok(())
}

/// A secret sealed by a TPM: opaque bytes the caller stores (in BitLocker, in the volume
/// metadata) and hands back to the same TPM to unseal. The first byte names the implementation
/// that made it, so the other one refuses it cleanly.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(Vec<u8>);

impl SealedBlob {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

/// The dictionary-attack parameters (TPM2_DictionaryAttackParameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DictionaryAttackPolicy {
    /// Authorization failures before lockout (`maxTries`).
    pub max_tries: u32,
    /// Time after which one failure is forgotten (`recoveryTime`).
    pub recovery_time: Duration,
}

impl Default for DictionaryAttackPolicy {
    /// Windows 10's provisioning values: 32 tries, one forgotten every 2 hours.
    fn default() -> Self {
        Self {
            max_tries: 32,
            recovery_time: Duration::from_secs(7200),
        }
    }
}

/// Where the dictionary-attack protection stands (TPM_PT_LOCKOUT_COUNTER and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LockoutStatus {
    /// Failures currently counted.
    pub failed_tries: u32,
    pub max_tries: u32,
    pub recovery_time: Duration,
    /// True when PIN-protected secrets are refused whatever the PIN.
    pub locked_out: bool,
}

/// The TPM as the boot client uses it. Both implementations pass one behavioural suite
/// (`tests/behaviour.rs`).
pub trait Tpm {
    /// The current value of one PCR of the SHA-256 bank.
    fn pcr_read(&mut self, pcr: PcrIndex) -> Result<PcrValue, TpmError>;

    /// PCR ← SHA-256(PCR ‖ digest), as firmware does when it measures a component.
    fn pcr_extend(&mut self, pcr: PcrIndex, digest: &[u8; 32]) -> Result<(), TpmError>;

    /// Seals `secret` (at most [`MAX_SEALED_SECRET`] bytes) to the current values of the
    /// policy's PCRs and to its authorization value.
    fn seal(&mut self, secret: &[u8], policy: &SealPolicy) -> Result<SealedBlob, TpmError>;

    /// Releases a sealed secret if the PCRs still hold their sealing-time values and `auth`
    /// matches. A wrong `auth` counts toward lockout; `now` drives lockout recovery in the
    /// simulated TPM.
    fn unseal(
        &mut self,
        blob: &SealedBlob,
        auth: Option<&AuthValue>,
        now: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError>;

    /// `len` random bytes from the TPM's generator.
    fn get_random(&mut self, len: usize) -> Result<Vec<u8>, TpmError>;

    /// Sets the dictionary-attack parameters (needs lockout authorization, which the provisioning
    /// owner holds) and clears the failure counter.
    fn set_dictionary_attack_policy(
        &mut self,
        policy: DictionaryAttackPolicy,
    ) -> Result<(), TpmError>;

    /// The failure counter and whether the TPM is locked out at `now`.
    fn lockout_status(&mut self, now: Duration) -> Result<LockoutStatus, TpmError>;

    /// TPM2_DictionaryAttackLockReset: the administrator clears the failure counter.
    fn reset_lockout(&mut self) -> Result<(), TpmError>;

    /// A reboot: TPM2_Startup(CLEAR) after a power cycle. PCRs return to zero; sealed blobs,
    /// the storage hierarchy and the failure counter survive.
    fn restart(&mut self, now: Duration) -> Result<(), TpmError>;
}
