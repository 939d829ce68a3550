//! The BitLocker recovery password ("numerical password"): 48 digits in 8 groups of 6 that
//! encode a 128-bit recovery key, and the SHA-256 stretching that turns that key into the AES key
//! wrapping the volume master key.
//!
//! Format (Win32_EncryptableVolume::ProtectKeyWithNumericalPassword, and dislocker's
//! `src/accesses/rp/recovery_password.c`): group i is 11 × the i-th little-endian 16-bit word
//! of the key, so every group is divisible by 11 and below 11 × 65536 = 720896. The documented
//! check digit (x6 = −x1+x2−x3+x4−x5 mod 11) is not a separate rule: for a 6-digit number it is
//! exactly divisibility by 11, since 10 ≡ −1 (mod 11).
//!
//! Stretching (dislocker `src/accesses/stretch_key.c`, `bitlocker_chain_hash_t`; Kornblum, "Implementing
//! BitLocker Drive Encryption for Forensic Analysis"): an 88-byte structure
//! `{ last_sha256[32], init_sha256[32], salt[16], count: u64 LE }` with
//! `init_sha256 = SHA-256(key)` is hashed 0x100000 times, `last_sha256` taking each result and
//! `count` counting up from 0; the final `last_sha256` is the key. The count is a parameter here
//! so that scenarios and tests stay fast; [`BITLOCKER_STRETCH_ITERATIONS`] is Windows' value.

use std::fmt;
use std::str::FromStr;

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Windows' stretch count: 2^20 SHA-256 computations.
pub const BITLOCKER_STRETCH_ITERATIONS: u32 = 0x10_0000;

/// Groups of a recovery password.
pub const GROUPS: usize = 8;
/// Every group is 11 × a 16-bit word, so it is below this bound.
pub const GROUP_BOUND: u32 = 11 * 65_536;

/// A recovery password, held as its 128-bit recovery key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RecoveryPassword([u8; 16]);

/// Why a typed recovery password was refused. Each message names the group (counted from 1) so
/// a user can find the typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryPasswordError {
    #[error("a recovery password has 8 groups of 6 digits; this one has {0} groups")]
    GroupCount(usize),
    #[error("a recovery password has 48 digits; this one has {0}")]
    DigitCount(usize),
    #[error("group {group} ({text}) must be exactly 6 digits")]
    GroupLength { group: usize, text: String },
    #[error("group {group} ({text}) contains something other than digits")]
    NotDigits { group: usize, text: String },
    #[error("group {group} ({value:06}) is not divisible by 11")]
    NotDivisibleBy11 { group: usize, value: u32 },
    #[error("group {group} ({value:06}) is not below 720896 (11 × 65536)")]
    TooLarge { group: usize, value: u32 },
}

impl RecoveryPasswordError {
    /// The 1-based group at fault, when one is.
    pub fn group(&self) -> Option<usize> {
        match self {
            Self::GroupLength { group, .. }
            | Self::NotDigits { group, .. }
            | Self::NotDivisibleBy11 { group, .. }
            | Self::TooLarge { group, .. } => Some(*group),
            Self::GroupCount(_) | Self::DigitCount(_) => None,
        }
    }
}

impl RecoveryPassword {
    /// A fresh recovery key from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    pub const fn from_key(key: [u8; 16]) -> Self {
        Self(key)
    }

    /// The 128-bit recovery key the digits encode.
    pub fn key(&self) -> &[u8; 16] {
        &self.0
    }

    /// The eight 6-digit groups as numbers.
    pub fn groups(&self) -> [u32; GROUPS] {
        let mut groups = [0u32; GROUPS];
        for (group, word) in groups.iter_mut().zip(self.0.chunks_exact(2)) {
            *group = 11 * u32::from(u16::from_le_bytes([word[0], word[1]]));
        }
        groups
    }

    /// The 256-bit key that wraps the volume master key for this protector.
    pub fn stretch(&self, salt: &[u8; 16], iterations: u32) -> Zeroizing<[u8; 32]> {
        stretch_key(&Sha256::digest(self.0).into(), salt, iterations)
    }
}

/// BitLocker's chain hash over the 88-byte structure (see the module comment).
pub fn stretch_key(
    initial_hash: &[u8; 32],
    salt: &[u8; 16],
    iterations: u32,
) -> Zeroizing<[u8; 32]> {
    let mut block = Zeroizing::new([0u8; 88]);
    block[32..64].copy_from_slice(initial_hash);
    block[64..80].copy_from_slice(salt);
    for count in 0..u64::from(iterations) {
        block[80..88].copy_from_slice(&count.to_le_bytes());
        let digest: [u8; 32] = Sha256::digest(block.as_ref()).into();
        block[..32].copy_from_slice(&digest);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&block[..32]);
    key
}

impl fmt::Display for RecoveryPassword {
    /// `xxxxxx-xxxxxx-…`, 8 groups joined by hyphens, as manage-bde prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups().iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{group:06}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RecoveryPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryPassword(..)")
    }
}

impl FromStr for RecoveryPassword {
    type Err = RecoveryPasswordError;

    /// Accepts the groups separated by hyphens or spaces (as Windows does), or 48 digits in a
    /// row; surrounding whitespace is ignored.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        let separated = input.contains(['-', ' ']);
        let groups: Vec<&str> = if separated {
            input.split(['-', ' ']).filter(|g| !g.is_empty()).collect()
        } else {
            let digits = input.chars().count();
            if digits != 6 * GROUPS {
                return Err(RecoveryPasswordError::DigitCount(digits));
            }
            // 48 characters, all ASCII or caught below as not digits: split on char boundaries.
            let mut groups = Vec::with_capacity(GROUPS);
            let mut rest = input;
            while !rest.is_empty() {
                let end = rest.char_indices().nth(6).map_or(rest.len(), |(i, _)| i);
                let (group, tail) = rest.split_at(end);
                groups.push(group);
                rest = tail;
            }
            groups
        };
        if groups.len() != GROUPS {
            return Err(RecoveryPasswordError::GroupCount(groups.len()));
        }
        let mut key = [0u8; 16];
        for (index, (text, word)) in groups.iter().zip(key.chunks_exact_mut(2)).enumerate() {
            let group = index + 1;
            if !text.chars().all(|c| c.is_ascii_digit()) {
                return Err(RecoveryPasswordError::NotDigits {
                    group,
                    text: (*text).to_owned(),
                });
            }
            if text.len() != 6 {
                return Err(RecoveryPasswordError::GroupLength {
                    group,
                    text: (*text).to_owned(),
                });
            }
            let value: u32 = text.parse().map_err(|_| RecoveryPasswordError::NotDigits {
                group,
                text: (*text).to_owned(),
            })?;
            if !value.is_multiple_of(11) {
                return Err(RecoveryPasswordError::NotDivisibleBy11 { group, value });
            }
            if value >= GROUP_BOUND {
                return Err(RecoveryPasswordError::TooLarge { group, value });
            }
            let half = u16::try_from(value / 11).expect("below 720896, so value / 11 < 65536");
            word.copy_from_slice(&half.to_le_bytes());
        }
        Ok(Self(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_are_eleven_times_little_endian_words() {
        let mut key = [0u8; 16];
        key[0] = 0x01; // word 0 = 1
        key[2] = 0xff; // word 1 = 0xffff
        key[3] = 0xff;
        let password = RecoveryPassword::from_key(key);
        assert_eq!(
            password.to_string(),
            "000011-720885-000000-000000-000000-000000-000000-000000"
        );
        let parsed: RecoveryPassword = "000011 720885 000000 000000 000000 000000 000000 000000"
            .parse()
            .expect("spaces separate groups");
        assert_eq!(parsed, password);
        let parsed: RecoveryPassword = "000011720885000000000000000000000000000000000000"
            .parse()
            .expect("no separators at all");
        assert_eq!(parsed, password);
    }

    #[test]
    fn errors_name_the_group() {
        let err = "000011-720885-123456-000000-000000-000000-000000-000000"
            .parse::<RecoveryPassword>()
            .expect_err("123456 is not a multiple of 11");
        assert_eq!(err.to_string(), "group 3 (123456) is not divisible by 11");
        assert_eq!(err.group(), Some(3));
        let err = "000000-000000-000000-000000-000000-000000-000000-720896"
            .parse::<RecoveryPassword>()
            .expect_err("too large");
        assert_eq!(
            err,
            RecoveryPasswordError::TooLarge {
                group: 8,
                value: 720_896
            }
        );
        assert!(matches!(
            "000000-00000-000000-000000-000000-000000-000000-000000".parse::<RecoveryPassword>(),
            Err(RecoveryPasswordError::GroupLength { group: 2, .. })
        ));
        assert!(matches!(
            "000000-000000-0000a0-000000-000000-000000-000000-000000".parse::<RecoveryPassword>(),
            Err(RecoveryPasswordError::NotDigits { group: 3, .. })
        ));
        assert_eq!(
            "000000-000000".parse::<RecoveryPassword>(),
            Err(RecoveryPasswordError::GroupCount(2))
        );
        assert_eq!(
            "12345".parse::<RecoveryPassword>(),
            Err(RecoveryPasswordError::DigitCount(5))
        );
    }

    #[test]
    fn stretching_follows_the_88_byte_chain() {
        // One iteration computed by hand: SHA-256(zeros[32] ‖ SHA-256(key) ‖ salt ‖ 0u64).
        let password = RecoveryPassword::from_key([7; 16]);
        let salt = [9u8; 16];
        let mut block = Vec::new();
        block.extend_from_slice(&[0u8; 32]);
        block.extend_from_slice(&Sha256::digest([7u8; 16]));
        block.extend_from_slice(&salt);
        block.extend_from_slice(&0u64.to_le_bytes());
        let once: [u8; 32] = Sha256::digest(&block).into();
        assert_eq!(*password.stretch(&salt, 1), once);
        // Two iterations: the previous hash first, the count now 1.
        block[..32].copy_from_slice(&once);
        block[80..].copy_from_slice(&1u64.to_le_bytes());
        let twice: [u8; 32] = Sha256::digest(&block).into();
        assert_eq!(*password.stretch(&salt, 2), twice);
        assert_ne!(*password.stretch(&[0; 16], 2), twice, "the salt matters");
    }

    proptest! {
        #[test]
        fn every_key_round_trips_through_its_digits(key in any::<[u8; 16]>()) {
            let password = RecoveryPassword::from_key(key);
            let text = password.to_string();
            prop_assert_eq!(text.len(), 55);
            prop_assert_eq!(text.parse::<RecoveryPassword>(), Ok(password.clone()));
            prop_assert_eq!(text.replace('-', "").parse::<RecoveryPassword>(), Ok(password));
        }

        #[test]
        fn every_invalid_group_is_rejected_by_number(
            key in any::<[u8; 16]>(),
            group in 0usize..8,
            value in 0u32..1_000_000,
        ) {
            prop_assume!(value % 11 != 0 || value >= GROUP_BOUND);
            let mut groups: Vec<String> = RecoveryPassword::from_key(key)
                .groups()
                .iter()
                .map(|g| format!("{g:06}"))
                .collect();
            groups[group] = format!("{value:06}");
            let err = groups.join("-").parse::<RecoveryPassword>().expect_err("invalid group");
            prop_assert_eq!(err.group(), Some(group + 1));
            let expected = if value % 11 != 0 {
                RecoveryPasswordError::NotDivisibleBy11 { group: group + 1, value }
            } else {
                RecoveryPasswordError::TooLarge { group: group + 1, value }
            };
            prop_assert_eq!(err, expected);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<RecoveryPassword>();
        }

        #[test]
        fn digit_soup_never_panics(text in "[0-9 -]{0,70}") {
            if let Ok(password) = text.parse::<RecoveryPassword>() {
                prop_assert_eq!(password.to_string().parse::<RecoveryPassword>(), Ok(password));
            }
        }
    }
}
