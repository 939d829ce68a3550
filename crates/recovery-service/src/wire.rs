//! The recovery service's HTTP API: paths and the JSON bodies the agent and the service
//! exchange. Material travels base64-encoded inside the TLS session; the service decodes and
//! validates everything into [`crate::record`] types before the store sees it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::record::{DeviceId, EscrowRecord, KeyId, MaterialKind, RecordError, RecordId, VolumeId};
use crate::store::{AuditEntry, Disclosure, EscrowOutcome, EscrowReceipt, HelpdeskRole, KeyHolder};

/// The recovery service's URL path on a management point, as ConfigMgr installs it.
pub const SERVICE_PATH: &str = "/SMS_MP_MBAM/CoreService.svc";
/// Where an agent escrows.
pub const ESCROW_PATH: &str = "/SMS_MP_MBAM/CoreService.svc/escrow";
/// Where a helpdesk operator asks for recovery information (by key ID, with a reason).
pub const HELPDESK_RECOVER_PATH: &str = "/SMS_MP_MBAM/CoreService.svc/helpdesk/recover";
/// Where an auditor or administrator reads the audit log.
pub const HELPDESK_AUDIT_PATH: &str = "/SMS_MP_MBAM/CoreService.svc/helpdesk/audit";
/// Most records in one escrow request.
pub const MAX_RECORDS_PER_REQUEST: usize = 64;

/// One record on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub device: DeviceId,
    pub volume: VolumeId,
    pub key_id: KeyId,
    pub kind: MaterialKind,
    pub version: u64,
    /// Base64 (standard alphabet, padded).
    pub material: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<KeyId>,
}

impl WireRecord {
    pub fn from_record(r: &EscrowRecord) -> Self {
        Self {
            device: r.id.device.clone(),
            volume: r.id.volume.clone(),
            key_id: r.id.key_id.clone(),
            kind: r.id.kind,
            version: r.version,
            material: B64.encode(&r.material),
            replaces: r.replaces.clone(),
        }
    }

    pub fn into_record(self) -> Result<EscrowRecord, WireError> {
        let material = B64
            .decode(self.material.as_bytes())
            .map_err(|_| WireError::BadBase64)?;
        let rec = EscrowRecord {
            id: RecordId {
                device: self.device,
                volume: self.volume,
                key_id: self.key_id,
                kind: self.kind,
            },
            version: self.version,
            material,
            replaces: self.replaces,
        };
        rec.validate()?;
        Ok(rec)
    }
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("material is not base64")]
    BadBase64,
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{0} records in one request, at most {MAX_RECORDS_PER_REQUEST}")]
    TooManyRecords(usize),
    #[error("an escrow request without records")]
    NoRecords,
}

/// `POST ESCROW_PATH` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowBody {
    pub records: Vec<WireRecord>,
}

/// One record's outcome in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOutcome {
    pub volume: VolumeId,
    pub key_id: KeyId,
    pub kind: MaterialKind,
    pub outcome: EscrowOutcome,
}

/// A recovery password the helpdesk disclosed (or that was stored in plaintext before
/// database encryption was turned on): the client rotates it and re-escrows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRotation {
    pub volume: VolumeId,
    pub key_id: KeyId,
    /// Why, when it is not a disclosure (absent: disclosed to the helpdesk).
    #[serde(default, skip_serializing_if = "RotationReason::is_disclosed")]
    pub reason: RotationReason,
}

/// Why the service asks for a rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotationReason {
    /// The helpdesk disclosed it.
    #[default]
    Disclosed,
    /// It was stored in plaintext before "Encrypt recovery data in the database" was turned
    /// on, so copies of the database made then read it.
    StoredInPlaintext,
}

impl RotationReason {
    pub fn is_disclosed(&self) -> bool {
        *self == RotationReason::Disclosed
    }
    /// The handler log's words.
    pub fn describe(self) -> &'static str {
        match self {
            RotationReason::Disclosed => "it was disclosed to the helpdesk",
            RotationReason::StoredInPlaintext => {
                "it was stored in plaintext before database encryption was turned on"
            }
        }
    }
}

/// `POST ESCROW_PATH` reply (status 200, sent only after the commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowReply {
    pub outcomes: Vec<WireOutcome>,
    pub rotate: Vec<WireRotation>,
}

impl From<EscrowReceipt> for EscrowReply {
    fn from(r: EscrowReceipt) -> Self {
        Self {
            outcomes: r
                .outcomes
                .into_iter()
                .map(|(id, outcome)| WireOutcome {
                    volume: id.volume,
                    key_id: id.key_id,
                    kind: id.kind,
                    outcome,
                })
                .collect(),
            rotate: r
                .rotate
                .into_iter()
                .map(|(volume, key_id)| WireRotation {
                    reason: if r.rotate_because_plaintext.contains(&key_id) {
                        RotationReason::StoredInPlaintext
                    } else {
                        RotationReason::Disclosed
                    },
                    volume,
                    key_id,
                })
                .collect(),
        }
    }
}

/// Every refusal's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable label (`https-required`, `unauthenticated`, `not-your-record`, `ambiguous`,
    /// ...).
    pub error: String,
    pub detail: String,
    /// For `ambiguous`: the whole key IDs the prefix matched (the operator picks one and asks
    /// again with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<KeyId>,
    /// For `held-by-several-devices`: every device (and volume) holding the key ID, the ones
    /// that escrowed it while another device held it flagged (the operator asks again naming
    /// the device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<KeyHolder>,
}

fn recovery_password_kind() -> MaterialKind {
    MaterialKind::RecoveryPassword
}

/// `POST HELPDESK_RECOVER_PATH` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverBody {
    /// The first eight characters of the key ID, or the whole ID.
    pub key_id: String,
    #[serde(default = "recovery_password_kind")]
    pub kind: MaterialKind,
    /// The role the operator acts in; it must be the account's role. Absent: the account's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<HelpdeskRole>,
    pub reason: String,
    /// The device whose record is meant, when the key ID is held by several devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// The volume, when that device holds the key ID on several volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeId>,
}

/// `POST HELPDESK_RECOVER_PATH` reply (sent after the audit record committed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverReply {
    pub device: DeviceId,
    pub volume: VolumeId,
    pub key_id: KeyId,
    pub kind: MaterialKind,
    pub version: u64,
    pub escrowed_at: i64,
    /// Base64 of the material.
    pub material: String,
    /// The material as text when it is UTF-8 (a recovery password, a key package's JSON, an
    /// owner-auth hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub audit_seq: i64,
    pub rotation_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
}

impl From<&Disclosure> for RecoverReply {
    fn from(d: &Disclosure) -> Self {
        Self {
            device: d.id.device.clone(),
            volume: d.id.volume.clone(),
            key_id: d.id.key_id.clone(),
            kind: d.id.kind,
            version: d.version,
            escrowed_at: d.escrowed_at,
            material: B64.encode(d.material.as_slice()),
            text: std::str::from_utf8(&d.material).ok().map(str::to_owned),
            audit_seq: d.audit_seq,
            rotation_requested: d.rotation_requested,
            retired_at: d.retired_at,
        }
    }
}

/// `GET HELPDESK_AUDIT_PATH` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReply {
    pub entries: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_through_json() {
        let rec = EscrowRecord {
            id: RecordId {
                device: DeviceId::new("PC1").expect("v"),
                volume: VolumeId::new("C").expect("v"),
                key_id: KeyId::new("8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB").expect("v"),
                kind: MaterialKind::KeyPackage,
            },
            version: 7,
            material: vec![0, 1, 2, 255],
            replaces: None,
        };
        let json = serde_json::to_string(&EscrowBody {
            records: vec![WireRecord::from_record(&rec)],
        })
        .expect("json");
        assert!(json.contains("\"kind\":\"key-package\""));
        let body: EscrowBody = serde_json::from_str(&json).expect("parse");
        let back = body.records.into_iter().next().expect("one").into_record();
        assert_eq!(back.expect("valid"), rec);
    }

    #[test]
    fn helpdesk_bodies_round_trip_and_default_to_recovery_passwords() {
        let body: RecoverBody =
            serde_json::from_str(r#"{"key_id":"8f3b1c2d","reason":"ticket 1"}"#).expect("parse");
        assert_eq!(body.kind, MaterialKind::RecoveryPassword);
        assert_eq!(body.role, None);
        let body = RecoverBody {
            role: Some(HelpdeskRole::Administrator),
            ..body
        };
        let json = serde_json::to_string(&body).expect("json");
        assert!(json.contains("\"role\":\"administrator\""));
        assert_eq!(
            serde_json::from_str::<RecoverBody>(&json).expect("back"),
            body
        );
        let err = ErrorBody {
            error: "ambiguous".into(),
            detail: "two".into(),
            candidates: vec![KeyId::new("8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB").expect("k")],
            holders: vec![KeyHolder {
                device: DeviceId::new("PC-B").expect("d"),
                volume: VolumeId::new("C").expect("v"),
                escrowed_at: 5,
                shared_key_id_at: Some(5),
            }],
        };
        let json = serde_json::to_string(&err).expect("json");
        assert_eq!(serde_json::from_str::<ErrorBody>(&json).expect("back"), err);
        let plain: ErrorBody =
            serde_json::from_str(r#"{"error":"x","detail":"y"}"#).expect("no candidates");
        assert!(plain.candidates.is_empty());
    }

    #[test]
    fn bad_fields_are_refused_at_parse_time() {
        let bad_id = r#"{"records":[{"device":"PC1","volume":"C","key_id":"nope","kind":"key-package","version":1,"material":""}]}"#;
        assert!(serde_json::from_str::<EscrowBody>(bad_id).is_err());
        let bad_device = r#"{"records":[{"device":"PC\n1","volume":"C","key_id":"8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB","kind":"key-package","version":1,"material":""}]}"#;
        assert!(serde_json::from_str::<EscrowBody>(bad_device).is_err());
        let bad_b64 = r#"{"device":"PC1","volume":"C","key_id":"8F3B1C2D-AAAA-BBBB-CCCC-0123456789AB","kind":"key-package","version":1,"material":"!!"}"#;
        let r: WireRecord = serde_json::from_str(bad_b64).expect("parses");
        assert!(matches!(r.into_record(), Err(WireError::BadBase64)));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(body) = serde_json::from_slice::<EscrowBody>(&bytes) {
                for r in body.records { let _ = r.into_record(); }
            }
            let _ = serde_json::from_slice::<EscrowReply>(&bytes);
            let _ = serde_json::from_slice::<RecoverBody>(&bytes);
            let _ = serde_json::from_slice::<RecoverReply>(&bytes);
            let _ = serde_json::from_slice::<ErrorBody>(&bytes);
        }
    }
}
