//! What is escrowed: the identity of a record (device, volume, key ID, kind), its version and its
//! opaque material, and the validation every identifier passes before it reaches the store or
//! the wire.
//!
//! The material's formats belong to the volume crate (recovery password, key package, TPM
//! owner-auth hash); here it is opaque bytes with a [`MaterialKind`], so the escrow path depends
//! on nothing but this crate. Identifiers are validated strictly (length and alphabet) because
//! they become SQL parameters, associated data and audit lines: a device name that could carry a
//! newline would forge audit records.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest device or volume identifier accepted (a NetBIOS/DNS name or a volume GUID path fits).
pub const MAX_NAME_LEN: usize = 128;
/// Largest escrowed material accepted (a BitLocker key package is a few hundred bytes).
pub const MAX_MATERIAL_LEN: usize = 16 * 1024;
/// The number of key-ID characters the self-service portal asks for.
pub const KEY_ID_PREFIX_LEN: usize = 8;

/// Why an identifier or a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} contains the character {found:?}, outside [A-Za-z0-9._-]")]
    BadCharacter { what: &'static str, found: char },
    #[error("key ID {0:?} is not a GUID (8-4-4-4-12 hexadecimal digits, braces optional)")]
    BadKeyId(String),
    #[error(
        "key ID query {0:?} must be at least 8 hexadecimal digits of a key ID (dashes allowed)"
    )]
    BadKeyIdQuery(String),
    #[error("unknown material kind {0:?}")]
    UnknownKind(String),
    #[error("material is {len} bytes, more than {max}")]
    MaterialTooLong { len: usize, max: usize },
    #[error("version {0} is larger than the store can hold (2^63 - 1)")]
    VersionTooLarge(u64),
}

fn validate_name(what: &'static str, s: &str) -> Result<(), RecordError> {
    if s.is_empty() {
        return Err(RecordError::Empty { what });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(RecordError::TooLong {
            what,
            max: MAX_NAME_LEN,
        });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(RecordError::BadCharacter { what, found });
    }
    Ok(())
}

/// A device's name as enrolled (the ConfigMgr client's machine name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn new(s: impl Into<String>) -> Result<Self, RecordError> {
        let s = s.into();
        validate_name("device ID", &s)?;
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A volume's identity on its device (a drive letter such as `C` or a volume GUID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeId(String);

impl VolumeId {
    pub fn new(s: impl Into<String>) -> Result<Self, RecordError> {
        let s = s.into();
        validate_name("volume ID", &s)?;
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key protector ID: a GUID, kept in the canonical form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`
/// (upper case, no braces) so that `{8f3b...}` and `8F3B...` name the same record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn new(s: impl AsRef<str>) -> Result<Self, RecordError> {
        let raw = s.as_ref();
        let trimmed = raw
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or(raw);
        let groups: Vec<&str> = trimmed.split('-').collect();
        let shape_ok = groups.len() == 5
            && groups
                .iter()
                .zip([8usize, 4, 4, 4, 12])
                .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
        if !shape_ok {
            return Err(RecordError::BadKeyId(raw.chars().take(64).collect()));
        }
        Ok(Self(trimmed.to_ascii_uppercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first eight characters, as the self-service portal and the helpdesk ask for them.
    pub fn short(&self) -> &str {
        &self.0[..KEY_ID_PREFIX_LEN]
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = RecordError;
            fn try_from(s: String) -> Result<Self, RecordError> {
                <$t>::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    };
}
string_conversions!(DeviceId);
string_conversions!(VolumeId);
string_conversions!(KeyId);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a helpdesk operator types: at least the first eight characters of a key ID, or the whole
/// ID (braces and case ignored). Normalised to upper case without braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdQuery(String);

impl KeyIdQuery {
    pub fn new(s: impl AsRef<str>) -> Result<Self, RecordError> {
        let raw = s.as_ref();
        let t = raw.trim_start_matches('{').trim_end_matches('}');
        let hex_digits = t.chars().filter(|c| c.is_ascii_hexdigit()).count();
        let ok = t.len() <= 36
            && hex_digits >= KEY_ID_PREFIX_LEN
            && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            return Err(RecordError::BadKeyIdQuery(raw.chars().take(64).collect()));
        }
        Ok(Self(t.to_ascii_uppercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn matches(&self, id: &KeyId) -> bool {
        id.as_str().starts_with(&self.0)
    }
}

/// The three kinds of recovery information the ConfigMgr client escrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaterialKind {
    /// The 48-digit recovery password of one key protector.
    RecoveryPassword,
    /// The key package (a copy of the volume's key material that repairs damaged metadata).
    KeyPackage,
    /// The hash of the TPM owner authorization.
    TpmOwnerAuth,
}

impl MaterialKind {
    pub const ALL: [MaterialKind; 3] = [
        MaterialKind::RecoveryPassword,
        MaterialKind::KeyPackage,
        MaterialKind::TpmOwnerAuth,
    ];
    /// The stable label used in the database, the associated data and the wire.
    pub fn label(self) -> &'static str {
        match self {
            MaterialKind::RecoveryPassword => "recovery-password",
            MaterialKind::KeyPackage => "key-package",
            MaterialKind::TpmOwnerAuth => "tpm-owner-auth",
        }
    }
    pub fn from_label(s: &str) -> Result<Self, RecordError> {
        Self::ALL
            .into_iter()
            .find(|k| k.label() == s)
            .ok_or_else(|| RecordError::UnknownKind(s.chars().take(32).collect()))
    }
}

impl fmt::Display for MaterialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The identity of one escrowed record. A recovery password and its key package share a key
/// ID, so the kind is part of the identity: the key (device, volume, key ID) holds one
/// record per kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordId {
    pub device: DeviceId,
    pub volume: VolumeId,
    pub key_id: KeyId,
    pub kind: MaterialKind,
}

/// One escrow as the client sends it. `version` is supplied by the client and increases each
/// time the client re-escrows the same identity (a counter or the key's creation time in
/// milliseconds); the newer version wins, a replay of the same version is acknowledged without
/// change, an older one is acknowledged as stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowRecord {
    pub id: RecordId,
    pub version: u64,
    pub material: Vec<u8>,
    /// The key ID this recovery password replaces after a rotation (clears the rotation flag
    /// on the old record).
    pub replaces: Option<KeyId>,
}

impl EscrowRecord {
    /// Checks the limits the store relies on.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.material.len() > MAX_MATERIAL_LEN {
            return Err(RecordError::MaterialTooLong {
                len: self.material.len(),
                max: MAX_MATERIAL_LEN,
            });
        }
        if self.version > i64::MAX as u64 {
            return Err(RecordError::VersionTooLarge(self.version));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_ids_are_canonical() {
        let a = KeyId::new("{8f3b1c2d-aaaa-bbbb-cccc-0123456789ab}").expect("valid");
        let b = KeyId::new("8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.short(), "8F3B1C2D");
        assert!(KeyId::new("8F3B1C2D").is_err());
        assert!(KeyId::new("8F3B1C2D-AAAA-BBBB-CCCC-0123456789AG").is_err());
        assert!(KeyId::new("").is_err());
    }

    #[test]
    fn queries_need_eight_hex_digits() {
        assert!(KeyIdQuery::new("8f3b1c2d").is_ok());
        assert!(KeyIdQuery::new("8f3b1c2").is_err());
        assert!(KeyIdQuery::new("8f3b1c2d-%").is_err());
        let q = KeyIdQuery::new("{8f3b1c2d-aaaa").expect("valid");
        assert!(q.matches(&KeyId::new("8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB").expect("valid")));
        assert!(!q.matches(&KeyId::new("8F3B1C2D-AAAB-BBBB-CCCC-0123456789AB").expect("valid")));
    }

    #[test]
    fn names_refuse_control_characters() {
        assert!(DeviceId::new("PC-0042.contoso").is_ok());
        assert_eq!(
            DeviceId::new("PC\n2"),
            Err(RecordError::BadCharacter {
                what: "device ID",
                found: '\n'
            })
        );
        assert!(VolumeId::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(VolumeId::new("").is_err());
    }

    #[test]
    fn kinds_round_trip_their_labels() {
        for k in MaterialKind::ALL {
            assert_eq!(MaterialKind::from_label(k.label()), Ok(k));
        }
        assert!(MaterialKind::from_label("password").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let _ = KeyId::new(&s);
            let _ = KeyIdQuery::new(&s);
            let _ = DeviceId::new(s.clone());
            let _ = MaterialKind::from_label(&s);
        }

        #[test]
        fn valid_key_ids_round_trip(bytes in proptest::array::uniform16(any::<u8>())) {
            let h = hex::encode(bytes);
            let s = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
            let id = KeyId::new(&s).expect("valid");
            prop_assert_eq!(KeyId::new(id.as_str()).expect("canonical"), id.clone());
            let json = serde_json::to_string(&id).expect("serialise");
            let back: KeyId = serde_json::from_str(&json).expect("parse");
            prop_assert_eq!(back, id);
        }
    }
}
