//! Why a TPM operation failed. Policy mismatch, bad authorization and lockout are distinct
//! variants because the boot client reacts differently to each: a changed PCR sends the user to
//! recovery, a wrong PIN asks again, a lockout says to wait.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// TPM_RC_POLICY_FAIL: a PCR named in the policy no longer holds its sealing-time value.
    #[error("the PCR values differ from those the secret was sealed to (TPM_RC_POLICY_FAIL)")]
    PolicyMismatch,
    /// TPM_RC_AUTH_FAIL: the authorization value (PIN) is wrong; the failure was counted.
    #[error("wrong PIN (TPM_RC_AUTH_FAIL); {remaining} tries left before lockout")]
    BadAuthorization { remaining: u32 },
    /// TPM_RC_LOCKOUT: too many wrong PINs; the TPM forgets one every `recovery_time`.
    #[error(
        "the TPM is locked out after too many wrong PINs (TPM_RC_LOCKOUT); one failure is forgotten every {recovery_time:?}"
    )]
    Lockout { recovery_time: Duration },
    /// The blob is damaged, truncated, or was sealed by another TPM.
    #[error("the sealed blob is not valid for this TPM: {0}")]
    InvalidBlob(&'static str),
    #[error("PCR {0} does not exist (the bank has PCRs 0 to 23)")]
    NoSuchPcr(u8),
    #[error("the secret is {0} bytes; a TPM seals at most 128")]
    SecretTooLarge(usize),
    #[error("a sealing policy needs at least one PCR or a PIN")]
    EmptyPolicy,
    #[error("this TPM cannot be power-cycled from here")]
    RestartUnsupported,
    /// A real TPM answered with an error this crate does not map (text of the response code).
    #[error("the TPM reported an error: {0}")]
    Device(String),
    /// A saved simulated-TPM state could not be read back.
    #[error("simulated TPM state is invalid: {0}")]
    State(String),
}
