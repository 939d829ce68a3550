//! The startup key ("External Key"): a 256-bit key on a USB stick, in a `.BEK` file.
//!
//! nulab's .BEK layout (a model: Windows' .BEK is a full BitLocker metadata block; nulab keeps
//! only what unlocking needs): `"NLB-BEK1" | volume id [16] | protector id [16] | key [32]`,
//! 72 bytes. Windows names the file after the protector ID; so does [`StartupKey::file_name`].

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codec::Reader;
use crate::image::VolumeId;
use crate::protector::ProtectorId;

const MAGIC: &[u8; 8] = b"NLB-BEK1";
const FILE_LEN: usize = 8 + 16 + 16 + 32;

#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct StartupKey {
    #[zeroize(skip)]
    pub volume: VolumeId,
    #[zeroize(skip)]
    pub protector: ProtectorId,
    pub(crate) key: [u8; 32],
}

/// Why a .BEK file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartupKeyError {
    #[error("a startup key file is {FILE_LEN} bytes; this one is {0}")]
    Length(usize),
    #[error("not a nulab startup key file (no NLB-BEK1 signature)")]
    Signature,
}

impl StartupKey {
    pub(crate) fn generate(
        volume: VolumeId,
        protector: ProtectorId,
        rng: &mut dyn CryptoRngCore,
    ) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self {
            volume,
            protector,
            key,
        }
    }

    /// `{GUID}.BEK`, the name Windows gives the file.
    pub fn file_name(&self) -> String {
        format!("{}.BEK", self.protector).replace(['{', '}'], "")
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FILE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.volume.0);
        out.extend_from_slice(&self.protector.0);
        out.extend_from_slice(&self.key);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StartupKeyError> {
        if bytes.len() != FILE_LEN {
            return Err(StartupKeyError::Length(bytes.len()));
        }
        let fields = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(StartupKeyError::Signature)?;
        // The length was checked: these reads cannot run short.
        let short = |_| StartupKeyError::Length(bytes.len());
        let mut r = Reader::new(fields);
        Ok(Self {
            volume: VolumeId(r.array("volume id").map_err(short)?),
            protector: ProtectorId(r.array("protector id").map_err(short)?),
            key: r.array("key").map_err(short)?,
        })
    }
}

impl std::fmt::Debug for StartupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StartupKey({})", self.protector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bek_files_round_trip(volume in any::<[u8; 16]>(), protector in any::<[u8; 16]>(), key in any::<[u8; 32]>()) {
            let original = StartupKey { volume: VolumeId(volume), protector: ProtectorId(protector), key };
            prop_assert_eq!(StartupKey::from_bytes(&original.to_bytes()), Ok(original));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = StartupKey::from_bytes(&bytes);
        }
    }
}
