//! Key protectors: each holds its own wrapped copy of the volume master key and what is needed
//! to produce the key that unwraps it. Names are manage-bde's.
//!
//! Metadata entry layout (little-endian), one per protector:
//! `length u16 | kind u16 | id [16] | wrapped VMK | detail`, where a wrapped key is
//! `nonce [12] | length u16 | ciphertext‖tag`, and the detail is
//! - TPM, TPM And PIN: `PCR bitmap u32 | sealed blob (u16 length + bytes)`;
//! - Network (Certificate Based): `thumbprint [20] | key protector [256] | PCR bitmap u32 |
//!   sealed blob` (the blob holds the TPM intermediate key and the session key);
//! - Numerical Password: `salt [16] | stretch iterations u32 | recovery key wrapped under the VMK`
//!   (so an unlocked volume can show its password, as manage-bde does);
//! - External Key: nothing (the key is in the .BEK file).

use std::fmt;
use std::str::FromStr;

use nkpu::{KEY_PROTECTOR_LEN, KeyProtector, THUMBPRINT_LEN, Thumbprint};
use serde::Serialize;
use tpm::{PcrSelection, SealedBlob};

use crate::codec::{Reader, Truncated, put_blob, put_wrapped_key};
use crate::keys::WrappedKey;

/// A protector's GUID, as manage-bde prints it: `{8-4-4-4-12}` in upper-case hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtectorId(pub [u8; 16]);

impl ProtectorId {
    /// A random (version 4) GUID from the injected RNG.
    pub fn random(rng: &mut dyn rand_core::CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }
}

impl fmt::Display for ProtectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode_upper(self.0);
        write!(
            f,
            "{{{}-{}-{}-{}-{}}}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

impl fmt::Debug for ProtectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtectorId({self})")
    }
}

/// Why a protector ID string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a protector ID like {{0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9}}")]
pub struct ProtectorIdError(pub String);

impl FromStr for ProtectorId {
    type Err = ProtectorIdError;

    /// With or without braces, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProtectorIdError(s.to_owned());
        let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
        let groups: Vec<&str> = inner.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let bytes = hex::decode(groups.concat()).map_err(|_| bad())?;
        Ok(Self(
            <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| bad())?,
        ))
    }
}

impl Serialize for ProtectorId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The kinds of protector, with manage-bde's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectorKind {
    Tpm,
    TpmAndPin,
    NetworkUnlock,
    RecoveryPassword,
    StartupKey,
}

impl ProtectorKind {
    pub const ALL: [Self; 5] = [
        Self::Tpm,
        Self::TpmAndPin,
        Self::NetworkUnlock,
        Self::RecoveryPassword,
        Self::StartupKey,
    ];

    /// The heading manage-bde prints for this kind.
    pub fn manage_bde_name(self) -> &'static str {
        match self {
            Self::Tpm => "TPM",
            Self::TpmAndPin => "TPM And PIN",
            Self::NetworkUnlock => "Network (Certificate Based)",
            Self::RecoveryPassword => "Numerical Password",
            Self::StartupKey => "External Key",
        }
    }

    /// The CLI's name (`--with tpm-and-pin`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::TpmAndPin => "tpm-and-pin",
            Self::NetworkUnlock => "network-unlock",
            Self::RecoveryPassword => "recovery-password",
            Self::StartupKey => "startup-key",
        }
    }

    /// True for the protectors that hold a TPM-sealed key and so fail when PCRs change.
    pub fn uses_tpm(self) -> bool {
        matches!(self, Self::Tpm | Self::TpmAndPin | Self::NetworkUnlock)
    }

    fn code(self) -> u16 {
        match self {
            Self::Tpm => 1,
            Self::TpmAndPin => 2,
            Self::NetworkUnlock => 3,
            Self::RecoveryPassword => 4,
            Self::StartupKey => 5,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl FromStr for ProtectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.cli_name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.cli_name()).collect();
                format!("unknown protector `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// One protector as stored in the metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protector {
    pub id: ProtectorId,
    pub(crate) wrapped_vmk: WrappedKey,
    pub detail: ProtectorDetail,
}

/// What each kind of protector stores besides its wrapped VMK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtectorDetail {
    Tpm {
        pcrs: PcrSelection,
        sealed: SealedBlob,
    },
    TpmAndPin {
        pcrs: PcrSelection,
        sealed: SealedBlob,
    },
    /// The pre-computed key protector (RSA of CK ‖ SK under the certificate) goes on the wire
    /// at every boot; the sealed blob releases the TPM intermediate key and SK.
    NetworkUnlock {
        thumbprint: Thumbprint,
        /// Shared with the secrets a boot releases (see [`KeyProtector`]).
        key_protector: KeyProtector,
        pcrs: PcrSelection,
        sealed: SealedBlob,
    },
    RecoveryPassword {
        salt: [u8; 16],
        iterations: u32,
        key_under_vmk: WrappedKey,
    },
    StartupKey,
}

impl Protector {
    pub fn kind(&self) -> ProtectorKind {
        match self.detail {
            ProtectorDetail::Tpm { .. } => ProtectorKind::Tpm,
            ProtectorDetail::TpmAndPin { .. } => ProtectorKind::TpmAndPin,
            ProtectorDetail::NetworkUnlock { .. } => ProtectorKind::NetworkUnlock,
            ProtectorDetail::RecoveryPassword { .. } => ProtectorKind::RecoveryPassword,
            ProtectorDetail::StartupKey => ProtectorKind::StartupKey,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // The entry is a blob: its length, then the body, written in place and the length
        // filled in after (no body buffer of its own: a storm encodes 40,000 entries).
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        let body = out;
        body.extend_from_slice(&self.kind().code().to_le_bytes());
        body.extend_from_slice(&self.id.0);
        put_wrapped_key(body, &self.wrapped_vmk);
        match &self.detail {
            ProtectorDetail::Tpm { pcrs, sealed } | ProtectorDetail::TpmAndPin { pcrs, sealed } => {
                body.extend_from_slice(&pcrs.bitmap().to_le_bytes());
                put_blob(body, sealed.as_bytes());
            }
            ProtectorDetail::NetworkUnlock {
                thumbprint,
                key_protector,
                pcrs,
                sealed,
            } => {
                body.extend_from_slice(thumbprint.as_bytes());
                body.extend_from_slice(key_protector.as_bytes());
                body.extend_from_slice(&pcrs.bitmap().to_le_bytes());
                put_blob(body, sealed.as_bytes());
            }
            ProtectorDetail::RecoveryPassword {
                salt,
                iterations,
                key_under_vmk,
            } => {
                body.extend_from_slice(salt);
                body.extend_from_slice(&iterations.to_le_bytes());
                put_wrapped_key(body, key_under_vmk);
            }
            ProtectorDetail::StartupKey => {}
        }
        let len =
            u16::try_from(body.len() - start - 2).expect("metadata blobs are far below 64 KiB");
        body[start..start + 2].copy_from_slice(&len.to_le_bytes());
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, EntryError> {
        let body = reader.blob("protector entry")?;
        let mut r = Reader::new(body);
        let code = r.u16("protector kind")?;
        let kind = ProtectorKind::from_code(code).ok_or(EntryError::UnknownKind(code))?;
        let id = ProtectorId(r.array("protector id")?);
        let wrapped_vmk = r.wrapped_key("wrapped VMK")?;
        let pcrs = |r: &mut Reader<'_>| {
            PcrSelection::from_bitmap(r.u32("PCR selection")?).map_err(|_| EntryError::PcrSelection)
        };
        let detail = match kind {
            ProtectorKind::Tpm | ProtectorKind::TpmAndPin => {
                let pcrs = pcrs(&mut r)?;
                let sealed = SealedBlob::from_bytes(r.blob("sealed blob")?.to_vec());
                if kind == ProtectorKind::Tpm {
                    ProtectorDetail::Tpm { pcrs, sealed }
                } else {
                    ProtectorDetail::TpmAndPin { pcrs, sealed }
                }
            }
            ProtectorKind::NetworkUnlock => ProtectorDetail::NetworkUnlock {
                thumbprint: Thumbprint::from_bytes(r.array::<THUMBPRINT_LEN>("thumbprint")?),
                key_protector: KeyProtector::from_bytes(
                    r.array::<KEY_PROTECTOR_LEN>("key protector")?,
                ),
                pcrs: pcrs(&mut r)?,
                sealed: SealedBlob::from_bytes(r.blob("sealed blob")?.to_vec()),
            },
            ProtectorKind::RecoveryPassword => ProtectorDetail::RecoveryPassword {
                salt: r.array("salt")?,
                iterations: r.u32("iterations")?,
                key_under_vmk: r.wrapped_key("recovery key")?,
            },
            ProtectorKind::StartupKey => ProtectorDetail::StartupKey,
        };
        if r.remaining() != 0 {
            return Err(EntryError::TrailingBytes(r.remaining()));
        }
        Ok(Self {
            id,
            wrapped_vmk,
            detail,
        })
    }
}

/// Why one metadata entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    #[error("truncated in the {0}")]
    Truncated(&'static str),
    #[error("unknown protector kind {0}")]
    UnknownKind(u16),
    #[error("PCR selection names PCRs above 23")]
    PcrSelection,
    #[error("{0} bytes left over after the entry")]
    TrailingBytes(usize),
}

impl From<Truncated> for EntryError {
    fn from(t: Truncated) -> Self {
        Self::Truncated(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_like_manage_bde() {
        let id = ProtectorId([
            0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x40, 0x61, 0x82, 0x73, 0x94, 0xa5, 0xb6, 0xc7,
            0xd8, 0xe9,
        ]);
        assert_eq!(id.to_string(), "{0A1B2C3D-4E5F-4061-8273-94A5B6C7D8E9}");
        assert_eq!("0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9".parse(), Ok(id));
        assert!("{0A1B2C3D-4E5F-4061-8273}".parse::<ProtectorId>().is_err());
        assert!(
            "{0A1B2C3D-4E5F-4061-8273-94A5B6C7D8EG}"
                .parse::<ProtectorId>()
                .is_err()
        );
    }

    #[test]
    fn kinds_parse_from_their_cli_names() {
        for kind in ProtectorKind::ALL {
            assert_eq!(kind.cli_name().parse(), Ok(kind));
        }
        assert!("tpm-only".parse::<ProtectorKind>().is_err());
    }
}
