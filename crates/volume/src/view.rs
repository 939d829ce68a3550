//! What a teacher or the CLI sees: the volume as `manage-bde -status` and its protector list
//! as `manage-bde -protectors -get` print them, serializable views for `--json`, and the key
//! package a recovery service escrows.
//!
//! Key package (JSON, `"format": "nulab-key-package/1"`): the volume and protector IDs, the
//! recovery password's salt and stretch count, the VMK wrapped under the stretched recovery key
//! and the FVEK wrapped under the VMK (nonce and ciphertext‖tag in hex). With the recovery
//! password it yields the volume's keys even if the image's metadata is damaged, which is what
//! BitLocker's key package is for.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::image::{Volume, VolumeError, VolumeId, fvek_aad, vmk_aad};
use crate::keys::{NONCE_LEN, VolumeKeys, WrappedKey};
use crate::protector::{ProtectorDetail, ProtectorId, ProtectorKind};
use crate::recovery_password::RecoveryPassword;

/// One protector, for `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProtectorView {
    pub id: ProtectorId,
    /// The CLI's name (`tpm-and-pin`).
    pub kind: ProtectorKind,
    /// manage-bde's heading ("TPM And PIN").
    pub type_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcr_validation_profile: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_thumbprint: Option<String>,
    /// Shown only when the volume is unlocked, as manage-bde does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stretch_iterations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_key_file_name: Option<String>,
}

impl Volume {
    /// The protectors as views; with `keys`, recovery passwords are included.
    pub fn protector_views(&self, keys: Option<&VolumeKeys>) -> Vec<ProtectorView> {
        self.protectors()
            .iter()
            .map(|p| {
                let kind = p.kind();
                let mut view = ProtectorView {
                    id: p.id,
                    kind,
                    type_name: kind.manage_bde_name(),
                    pcr_validation_profile: None,
                    certificate_thumbprint: None,
                    password: None,
                    stretch_iterations: None,
                    external_key_file_name: None,
                };
                match &p.detail {
                    ProtectorDetail::Tpm { pcrs, .. } | ProtectorDetail::TpmAndPin { pcrs, .. } => {
                        view.pcr_validation_profile = Some((*pcrs).into());
                    }
                    ProtectorDetail::NetworkUnlock {
                        thumbprint, pcrs, ..
                    } => {
                        view.certificate_thumbprint = Some(thumbprint.to_string());
                        view.pcr_validation_profile = Some((*pcrs).into());
                    }
                    ProtectorDetail::RecoveryPassword { iterations, .. } => {
                        view.stretch_iterations = Some(*iterations);
                        view.password = keys
                            .and_then(|k| self.recovery_password(k, p.id).ok())
                            .map(|pw| pw.to_string());
                    }
                    ProtectorDetail::StartupKey => {
                        view.external_key_file_name =
                            Some(format!("{}.BEK", p.id).replace(['{', '}'], ""));
                    }
                }
                view
            })
            .collect()
    }

    /// The protector list laid out like `manage-bde -protectors -get C:`. `name` stands where
    /// manage-bde prints the drive letter (the CLI passes the image path).
    pub fn protectors_table(&self, name: &str, keys: Option<&VolumeKeys>) -> String {
        let mut out = String::new();
        let label = keys.and_then(|k| self.label(k).ok()).unwrap_or_default();
        out.push_str(&format!("Volume {name} [{label}]\nAll Key Protectors\n"));
        let views = self.protector_views(keys);
        if views.is_empty() {
            out.push_str("\n    (none)\n");
        }
        for view in views {
            out.push_str(&format!(
                "\n    {}:\n      ID: {}\n",
                view.type_name, view.id
            ));
            if let Some(thumbprint) = &view.certificate_thumbprint {
                out.push_str(&format!("      Certificate Thumbprint: {thumbprint}\n"));
            }
            if let Some(pcrs) = &view.pcr_validation_profile {
                let list: Vec<String> = pcrs.iter().map(u8::to_string).collect();
                out.push_str(&format!(
                    "      PCR Validation Profile:\n        {}\n",
                    list.join(", ")
                ));
                if pcrs.contains(&7) {
                    out.push_str("        (Uses Secure Boot for integrity validation)\n");
                }
            }
            if view.kind == ProtectorKind::RecoveryPassword {
                let password = view
                    .password
                    .as_deref()
                    .unwrap_or("(hidden while the volume is locked)");
                out.push_str(&format!("      Password:\n        {password}\n"));
            }
            if let Some(file) = &view.external_key_file_name {
                out.push_str(&format!("      External Key File Name:\n        {file}\n"));
            }
        }
        out
    }

    /// The volume laid out like `manage-bde -status C:` (the troubleshooting section's "output
    /// of the BitLocker status on the volume"). `label` is the volume label when the volume is
    /// unlocked (`None`: locked, as the boot left it); nulab's volumes are fully encrypted with
    /// XTS-AES 256 and protection is on while a protector is there.
    pub fn status_text(&self, name: &str, label: Option<&str>) -> String {
        let mut out = String::new();
        out.push_str(&format!("Volume {name} [{}]\n", label.unwrap_or("")));
        out.push_str("[OS Volume]\n\n");
        let size = self.data_sectors() * crate::image::DATA_SECTOR_SIZE as u64;
        let rows = [
            ("Size", format!("{size} bytes")),
            ("BitLocker Version", "2.0".to_string()),
            ("Conversion Status", "Fully Encrypted".to_string()),
            ("Percentage Encrypted", "100.0%".to_string()),
            ("Encryption Method", "XTS-AES 256".to_string()),
            (
                "Protection Status",
                if self.protectors().is_empty() {
                    "Protection Off".to_string()
                } else {
                    "Protection On".to_string()
                },
            ),
            (
                "Lock Status",
                if label.is_some() {
                    "Unlocked"
                } else {
                    "Locked"
                }
                .to_string(),
            ),
            ("Identification Field", "None".to_string()),
        ];
        for (key, value) in rows {
            out.push_str(&format!("    {:<22}{value}\n", format!("{key}:")));
        }
        out.push_str("    Key Protectors:\n");
        if self.protectors().is_empty() {
            out.push_str("        None Found\n");
        }
        for protector in self.protectors() {
            out.push_str(&format!("        {}\n", protector.kind().manage_bde_name()));
        }
        out
    }

    /// The key package for the recovery-password protector `id`.
    pub fn export_key_package(
        &self,
        keys: &VolumeKeys,
        id: ProtectorId,
    ) -> Result<KeyPackage, VolumeError> {
        // Reading the password back proves `keys` belong to this volume.
        self.recovery_password(keys, id)?;
        let protector = self
            .protectors()
            .iter()
            .find(|p| p.id == id)
            .ok_or(VolumeError::NoSuchProtector(id))?;
        let ProtectorDetail::RecoveryPassword {
            salt, iterations, ..
        } = &protector.detail
        else {
            return Err(VolumeError::WrongKind(id, "Numerical Password"));
        };
        Ok(KeyPackage {
            format: KEY_PACKAGE_FORMAT.to_owned(),
            volume_id: self.id().to_string(),
            protector_id: id.to_string(),
            salt: hex::encode(salt),
            stretch_iterations: *iterations,
            wrapped_vmk: HexWrappedKey::from(&protector.wrapped_vmk),
            wrapped_fvek: HexWrappedKey::from(self.wrapped_fvek()),
        })
    }
}

pub const KEY_PACKAGE_FORMAT: &str = "nulab-key-package/1";

/// The escrowed key package (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackage {
    pub format: String,
    pub volume_id: String,
    pub protector_id: String,
    pub salt: String,
    pub stretch_iterations: u32,
    pub wrapped_vmk: HexWrappedKey,
    pub wrapped_fvek: HexWrappedKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HexWrappedKey {
    pub nonce: String,
    pub ciphertext: String,
}

impl From<&WrappedKey> for HexWrappedKey {
    fn from(key: &WrappedKey) -> Self {
        Self {
            nonce: hex::encode(key.nonce),
            ciphertext: hex::encode(&key.ciphertext),
        }
    }
}

/// Why a key package could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPackageError {
    #[error("unknown key package format `{0}`")]
    Format(String),
    #[error("field `{0}` is malformed")]
    Field(&'static str),
    #[error("the recovery password does not open this key package")]
    WrongPassword,
}

impl HexWrappedKey {
    fn parse(&self, field: &'static str) -> Result<WrappedKey, KeyPackageError> {
        let nonce = hex::decode(&self.nonce).map_err(|_| KeyPackageError::Field(field))?;
        Ok(WrappedKey {
            nonce: <[u8; NONCE_LEN]>::try_from(nonce.as_slice())
                .map_err(|_| KeyPackageError::Field(field))?,
            ciphertext: hex::decode(&self.ciphertext).map_err(|_| KeyPackageError::Field(field))?,
        })
    }
}

impl KeyPackage {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data")
    }

    pub fn from_json(text: &str) -> Result<Self, KeyPackageError> {
        let package: Self =
            serde_json::from_str(text).map_err(|_| KeyPackageError::Field("json"))?;
        if package.format != KEY_PACKAGE_FORMAT {
            return Err(KeyPackageError::Format(package.format));
        }
        Ok(package)
    }

    /// The volume's keys, from the recovery password alone.
    pub fn open(&self, password: &RecoveryPassword) -> Result<VolumeKeys, KeyPackageError> {
        let volume_id: ProtectorId = self
            .volume_id
            .parse()
            .map_err(|_| KeyPackageError::Field("volume_id"))?;
        let volume_id = VolumeId(volume_id.0);
        let protector_id: ProtectorId = self
            .protector_id
            .parse()
            .map_err(|_| KeyPackageError::Field("protector_id"))?;
        let salt = hex::decode(&self.salt).map_err(|_| KeyPackageError::Field("salt"))?;
        let salt =
            <[u8; 16]>::try_from(salt.as_slice()).map_err(|_| KeyPackageError::Field("salt"))?;
        let stretched = password.stretch(&salt, self.stretch_iterations);
        let vmk = self
            .wrapped_vmk
            .parse("wrapped_vmk")?
            .open_32(
                &stretched,
                &vmk_aad(volume_id, protector_id, ProtectorKind::RecoveryPassword),
            )
            .ok_or(KeyPackageError::WrongPassword)?;
        let fvek_plain = self
            .wrapped_fvek
            .parse("wrapped_fvek")?
            .open(&vmk, &fvek_aad(volume_id))
            .ok_or(KeyPackageError::Field("wrapped_fvek"))?;
        let mut fvek = Zeroizing::new([0u8; 64]);
        if fvek_plain.len() != 64 {
            return Err(KeyPackageError::Field("wrapped_fvek"));
        }
        fvek.copy_from_slice(&fvek_plain);
        Ok(VolumeKeys { vmk, fvek })
    }
}
