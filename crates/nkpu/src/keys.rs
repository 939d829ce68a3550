//! The 256-bit keys of the exchange and the certificate thumbprint that names the server's key.
//!
//! `ClientKey` (CK, the seed's "network key") and `SessionKey` (SK) are zeroized on drop and never
//! printed whole by `Debug`: a teaching view that wants them calls [`ClientKey::short`] or
//! [`ClientKey::to_hex`] on purpose.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of CK and SK in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a SHA-1 certificate thumbprint in bytes.
pub const THUMBPRINT_LEN: usize = 20;

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Draws a fresh key from `rng` (the simulator's seeded RNG, or the OS's in a shell).
            pub fn random(rng: &mut impl rand_core::CryptoRngCore) -> Self {
                let mut bytes = [0u8; KEY_LEN];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }

            /// The whole key in lowercase hex: for teaching views and the CLI, on purpose only.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first and last four bytes, for transcripts: `1a2b3c4d…5e6f7a8b`.
            pub fn short(&self) -> String {
                crate::keys::shorten(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self.short())
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = std::array::TryFromSliceError;
            fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
                Ok(Self(<[u8; KEY_LEN]>::try_from(bytes)?))
            }
        }
    };
}

secret_key!(
    /// CK: the 256-bit client key (the seed's "network key", an intermediate key). The server
    /// returns it sealed under the session key; the client combines it with the TPM-held key.
    ClientKey,
    "ClientKey"
);

secret_key!(
    /// SK: the 256-bit AES session key the client picks for the reply.
    SessionKey,
    "SessionKey"
);

/// `1a2b3c4d…5e6f7a8b`: enough of a key or blob to follow it through a transcript.
pub(crate) fn shorten(bytes: &[u8]) -> String {
    if bytes.len() <= 8 {
        return hex::encode(bytes);
    }
    format!(
        "{}…{}",
        hex::encode(&bytes[..4]),
        hex::encode(&bytes[bytes.len() - 4..])
    )
}

/// The SHA-1 thumbprint of a certificate's DER encoding, which names the Network Unlock
/// certificate on the wire (sub-option 1) and in `bde-network-unlock.ini` section headers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Thumbprint([u8; THUMBPRINT_LEN]);

impl Thumbprint {
    pub const fn from_bytes(bytes: [u8; THUMBPRINT_LEN]) -> Self {
        Self(bytes)
    }

    /// SHA-1 over the DER certificate, as Windows computes a certificate's thumbprint.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha1::digest(der).into())
    }

    pub fn as_bytes(&self) -> &[u8; THUMBPRINT_LEN] {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    /// Lowercase hex without spaces, the form `bde-network-unlock.ini` section headers use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // On the stack: a storm's WDS log writes a thumbprint on most of its lines.
        let mut text = [0u8; 40];
        hex::encode_to_slice(self.0, &mut text).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

/// Why a thumbprint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbprintError {
    /// The seed: "If spaces are included in the thumbprint, the subnet configuration fails
    /// because the thumbprint will not be recognized as valid."
    #[error("a thumbprint must not contain spaces (Windows does not recognise it)")]
    ContainsSpaces,
    #[error("a thumbprint is 40 hex digits, found {0} characters")]
    WrongLength(usize),
    #[error("a thumbprint is hex digits only, found {0:?}")]
    NotHex(char),
}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    /// 40 hex digits in any case, no spaces (as `bde-network-unlock.ini` requires).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().any(char::is_whitespace) {
            return Err(ThumbprintError::ContainsSpaces);
        }
        if let Some(bad) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(ThumbprintError::NotHex(bad));
        }
        if s.len() != THUMBPRINT_LEN * 2 {
            return Err(ThumbprintError::WrongLength(s.chars().count()));
        }
        let mut bytes = [0u8; THUMBPRINT_LEN];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ThumbprintError::WrongLength(s.len()))?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thumbprint_is_sha1_of_der() {
        // SHA-1("abc"), FIPS 180-2 appendix A.
        assert_eq!(
            Thumbprint::of_der(b"abc").to_string(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn thumbprint_parses_any_case_and_refuses_spaces() {
        let t: Thumbprint = "4AD038DA813176ACBD5CAAAE0FE3494B0D008159".parse().unwrap();
        assert_eq!(t.to_string(), "4ad038da813176acbd5caaae0fe3494b0d008159");
        assert_eq!(
            "4a d0 38 da 81 31 76 ac bd 5c aa ae 0f e3 49 4b 0d 00 81 59".parse::<Thumbprint>(),
            Err(ThumbprintError::ContainsSpaces)
        );
        assert_eq!(
            "4ad038".parse::<Thumbprint>(),
            Err(ThumbprintError::WrongLength(6))
        );
        assert_eq!(
            "zz".parse::<Thumbprint>(),
            Err(ThumbprintError::NotHex('z'))
        );
    }

    #[test]
    fn debug_never_prints_a_whole_key() {
        let ck = ClientKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{ck:?}"), "ClientKey(abababab…abababab)");
    }

    proptest! {
        #[test]
        fn thumbprint_display_parse_round_trip(bytes in any::<[u8; 20]>()) {
            let t = Thumbprint::from_bytes(bytes);
            prop_assert_eq!(t.to_string().parse::<Thumbprint>(), Ok(t));
        }

        #[test]
        fn thumbprint_parser_never_panics(s in ".{0,64}") {
            let _ = s.parse::<Thumbprint>();
        }
    }
}
