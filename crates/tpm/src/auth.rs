//! The authorization value a PIN becomes before it reaches the TPM.
//!
//! Model (stated, not Windows' exact derivation): the TPM authValue for "TPM And PIN" is
//! SHA-256 of the PIN encoded as UTF-16LE, the way BitLocker hashes user-typed secrets before it
//! uses them. Windows additionally stretches the PIN; nulab does not, so a PIN guess costs one
//! TPM round trip, which is exactly what dictionary-attack lockout is there to limit.

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AuthValue([u8; 32]);

impl AuthValue {
    /// The authValue for a startup PIN typed at the pre-boot screen.
    pub fn from_pin(pin: &str) -> Self {
        let mut hasher = Sha256::new();
        for unit in pin.encode_utf16() {
            hasher.update(unit.to_le_bytes());
        }
        Self(hasher.finalize().into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for AuthValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthValue(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_hashes_as_utf16le() {
        // SHA-256 of "1\0" "2\0" "3\0" "4\0".
        let expected: [u8; 32] = Sha256::digest(b"1\x002\x003\x004\x00").into();
        assert_eq!(AuthValue::from_pin("1234").as_bytes(), &expected);
        assert_ne!(AuthValue::from_pin("1234"), AuthValue::from_pin("1235"));
    }
}
