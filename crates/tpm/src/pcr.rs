//! PCR indices, selections and values of the SHA-256 bank.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TpmError;

/// A PC client TPM has 24 PCRs per bank.
pub const PCR_COUNT: u8 = 24;

/// One PCR number, 0 to 23.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct PcrIndex(u8);

impl PcrIndex {
    pub fn new(index: u8) -> Result<Self, TpmError> {
        if index < PCR_COUNT {
            Ok(Self(index))
        } else {
            Err(TpmError::NoSuchPcr(index))
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for PcrIndex {
    type Error = TpmError;
    fn try_from(index: u8) -> Result<Self, TpmError> {
        Self::new(index)
    }
}

impl From<PcrIndex> for u8 {
    fn from(index: PcrIndex) -> u8 {
        index.0
    }
}

/// A set of PCRs, kept as the TPM's bitmap (bit n = PCR n), iterated in ascending order as
/// TPM2_PolicyPCR concatenates them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct PcrSelection(u32);

impl PcrSelection {
    pub const EMPTY: Self = Self(0);

    /// The PCRs BitLocker binds to when Secure Boot is used for integrity validation.
    pub const SECURE_BOOT: Self = Self((1 << 7) | (1 << 11));

    pub fn of(indices: &[u8]) -> Result<Self, TpmError> {
        let mut bits = 0u32;
        for &index in indices {
            bits |= 1 << PcrIndex::new(index)?.0;
        }
        Ok(Self(bits))
    }

    /// From the 24-bit bitmap stored in metadata; bits above 23 are refused.
    pub fn from_bitmap(bits: u32) -> Result<Self, TpmError> {
        if bits >> PCR_COUNT != 0 {
            return Err(TpmError::NoSuchPcr(
                u8::try_from(31 - bits.leading_zeros()).unwrap_or(u8::MAX),
            ));
        }
        Ok(Self(bits))
    }

    pub const fn bitmap(self) -> u32 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, pcr: PcrIndex) -> bool {
        self.0 & (1 << pcr.0) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = PcrIndex> {
        (0..PCR_COUNT)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(PcrIndex)
    }
}

impl fmt::Display for PcrSelection {
    /// `7, 11`: the way manage-bde prints a PCR validation profile.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for pcr in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{}", pcr.0)?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<Vec<u8>> for PcrSelection {
    type Error = TpmError;
    fn try_from(indices: Vec<u8>) -> Result<Self, TpmError> {
        Self::of(&indices)
    }
}

impl From<PcrSelection> for Vec<u8> {
    fn from(selection: PcrSelection) -> Vec<u8> {
        selection.iter().map(|p| p.0).collect()
    }
}

/// The value of one SHA-256 PCR.
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PcrValue(pub [u8; 32]);

impl PcrValue {
    /// PCR ← SHA-256(PCR ‖ digest).
    pub fn extended(&self, digest: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(digest);
        Self(hasher.finalize().into())
    }
}

impl fmt::Debug for PcrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrValue({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_selection_lists_and_prints_in_ascending_order() {
        let selection = PcrSelection::of(&[11, 7]).expect("valid PCRs");
        assert_eq!(selection, PcrSelection::SECURE_BOOT);
        assert_eq!(selection.to_string(), "7, 11");
        assert_eq!(Vec::<u8>::from(selection), vec![7, 11]);
        assert_eq!(PcrSelection::of(&[24]), Err(TpmError::NoSuchPcr(24)));
        assert_eq!(
            PcrSelection::from_bitmap(1 << 30),
            Err(TpmError::NoSuchPcr(30))
        );
    }

    #[test]
    fn extend_is_sha256_of_old_value_and_digest() {
        let extended = PcrValue::default().extended(&[1; 32]);
        let mut data = [0u8; 64];
        data[32..].fill(1);
        assert_eq!(extended.0, <[u8; 32]>::from(Sha256::digest(data)));
    }

    proptest! {
        #[test]
        fn any_bitmap_either_round_trips_or_is_refused(bits in any::<u32>()) {
            match PcrSelection::from_bitmap(bits) {
                Ok(selection) => {
                    prop_assert_eq!(selection.bitmap(), bits);
                    let listed: Vec<u8> = selection.into();
                    prop_assert_eq!(PcrSelection::of(&listed), Ok(selection));
                }
                Err(_) => prop_assert!(bits >> 24 != 0),
            }
        }
    }
}
