//! A BitLocker-style encrypted volume and its key hierarchy, on a real encrypted image.
//!
//! ```text
//!  protectors (metadata)                     VMK            FVEK              data sectors
//!  TPM ─────────── TPM-sealed key ──┐
//!  TPM And PIN ─── TPM-sealed key ──┤
//!  Network ─ SHA-256(TPM key ‖ CK) ─┼─wraps─▶ VMK ─wraps─▶ FVEK ─AES-256-XTS─▶ sectors
//!  Numerical Password ─ stretch ────┤
//!  External Key (.BEK) ─────────────┘
//! ```
//!
//! - [`recovery_password`]: the 48-digit recovery password and BitLocker's key stretching.
//! - [`Volume`]: the image (header, metadata, encrypted sectors), manage-bde-like operations and
//!   unlocking with each protector.
//! - [`policy`]: the Group Policy settings and the FVE_NKP certificate store that decide which
//!   protectors exist.
//! - [`view`]: what `manage-bde -protectors -get` prints, and serializable views for `--json`.
//!
//! Model, not Windows' algorithm: the Network Unlock protector's key is
//! `SHA-256(tpm_intermediate_key ‖ network_key)` (ARCHITECTURE.md, "Models of what is not
//! public"). This crate knows nothing of networks: it receives the network key as bytes.

mod codec;
mod image;
mod keys;
pub mod policy;
mod protector;
pub mod recovery_password;
mod startup_key;
pub mod view;

pub use image::{
    DATA_SECTOR_SIZE, NetworkUnlockSecrets, UnlockError, UnlockWith, Volume, VolumeError, VolumeId,
};
pub use keys::{VolumeKeys, WrappedKey, fingerprint};
pub use protector::{Protector, ProtectorDetail, ProtectorId, ProtectorKind};
pub use recovery_password::{
    BITLOCKER_STRETCH_ITERATIONS, RecoveryPassword, RecoveryPasswordError,
};
pub use startup_key::{StartupKey, StartupKeyError};
pub use view::{KeyPackage, ProtectorView};
