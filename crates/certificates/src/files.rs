//! The only file I/O of the crate: thin `load_*`/`save_*` wrappers over the byte functions, whose
//! errors always name the file. `nulab cert new` and `nulab cert show` are built on these.

use std::io::Write;
use std::path::{Path, PathBuf};

use nkpu::Thumbprint;

use crate::certificate::{Certificate, CertificateBundle, PrivateKey};
use crate::error::FileError;
use crate::fitness::{NetworkUnlockCertificate, ProviderCertificate};
use crate::{import, pfx};

/// The file name the seed's example uses (`BitLocker-NetworkUnlock.cer` / `.pfx`).
pub const DEFAULT_FILE_NAME: &str = "BitLocker-NetworkUnlock";

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        // An unencrypted private key is readable by its owner only.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a certificate file in any form (PEM, DER `.cer`, `.pfx`); `password` opens a `.pfx`.
pub fn load_bundle(path: &Path, password: Option<&str>) -> Result<CertificateBundle, FileError> {
    import::read(&read(path)?, password).map_err(|source| FileError::Import {
        path: path.to_owned(),
        source,
    })
}

/// Reads the certificate of a file in any form (a `.pfx` with no password or an empty one).
pub fn load_certificate(path: &Path) -> Result<Certificate, FileError> {
    load_bundle(path, None).map(|b| b.certificate)
}

/// Reads a private key from a PEM file (PKCS#8 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKey, FileError> {
    import::private_key_from_pem(&read(path)?).map_err(|source| FileError::Import {
        path: path.to_owned(),
        source,
    })
}

/// Client side: the Network Unlock certificate a client holds, refused with every reason when
/// it is not fit.
pub fn load_network_unlock_certificate(path: &Path) -> Result<NetworkUnlockCertificate, FileError> {
    let certificate = load_certificate(path)?;
    NetworkUnlockCertificate::from_certificate(certificate).map_err(|source| FileError::Unfit {
        path: path.to_owned(),
        source,
    })
}

/// Server side: the provider's certificate and private key (a `.pfx`, or PEM with the key),
/// refused with every reason when unfit, the key missing or not the certificate's.
pub fn load_provider_certificate(
    path: &Path,
    password: Option<&str>,
) -> Result<ProviderCertificate, FileError> {
    let bundle = load_bundle(path, password)?;
    ProviderCertificate::from_bundle(bundle).map_err(|source| FileError::Unfit {
        path: path.to_owned(),
        source,
    })
}

/// Writes the DER certificate (`.cer`, "DER encoded binary X.509").
pub fn save_cer(path: &Path, certificate: &Certificate) -> Result<(), FileError> {
    write(path, certificate.der(), false)
}

/// Writes a `.pfx` protected by `password` (with the key when the bundle has one).
pub fn save_pfx(path: &Path, bundle: &CertificateBundle, password: &str) -> Result<(), FileError> {
    let bytes = pfx::to_pfx(bundle, password).map_err(|source| FileError::Export {
        path: path.to_owned(),
        source,
    })?;
    write(path, &bytes, false)
}

/// Writes PEM: the certificate, its chain, then the PKCS#8 key if any (mode 0600 then).
pub fn save_pem(path: &Path, bundle: &CertificateBundle) -> Result<(), FileError> {
    let mut text = zeroize::Zeroizing::new(bundle.certificate.to_pem());
    for c in &bundle.chain {
        text.push_str(&c.to_pem());
    }
    if let Some(key) = &bundle.private_key {
        text.push_str(&key.to_pkcs8_pem());
    }
    write(path, text.as_bytes(), bundle.private_key.is_some())
}

/// The two files `nulab cert new` writes, and the thumbprint it prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenCertificate {
    pub cer: PathBuf,
    pub pfx: PathBuf,
    pub thumbprint: Thumbprint,
}

/// Writes `DIR/NAME.cer` (for the clients' Group Policy) and `DIR/NAME.pfx` (for the WDS
/// server), as the seed's steps 8 and 9 export them.
pub fn save_cer_and_pfx(
    dir: &Path,
    name: &str,
    bundle: &CertificateBundle,
    password: &str,
) -> Result<WrittenCertificate, FileError> {
    let cer = dir.join(format!("{name}.cer"));
    let pfx = dir.join(format!("{name}.pfx"));
    save_cer(&cer, &bundle.certificate)?;
    save_pfx(&pfx, bundle, password)?;
    Ok(WrittenCertificate {
        cer,
        pfx,
        thumbprint: bundle.thumbprint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fitness::UnfitReason;
    use crate::{ImportError, fixture};

    #[test]
    fn cert_new_writes_cer_and_pfx_that_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = fixture::cached(1);
        let written = save_cer_and_pfx(dir.path(), DEFAULT_FILE_NAME, &bundle, "P").unwrap();
        assert_eq!(written.cer, dir.path().join("BitLocker-NetworkUnlock.cer"));
        assert_eq!(written.thumbprint, bundle.thumbprint());
        assert_eq!(
            std::fs::read(&written.cer).unwrap(),
            bundle.certificate.der()
        );

        let client = load_network_unlock_certificate(&written.cer).unwrap();
        assert_eq!(client.thumbprint(), written.thumbprint);
        let server = load_provider_certificate(&written.pfx, Some("P")).unwrap();
        assert_eq!(server.private_key(), bundle.private_key.as_ref().unwrap());
    }

    #[test]
    fn pem_with_a_key_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unlock.pem");
        let bundle = fixture::cached(1);
        save_pem(&path, &bundle).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        assert_eq!(load_bundle(&path, None).unwrap(), bundle);
        assert_eq!(
            load_private_key(&path).unwrap(),
            bundle.private_key.clone().unwrap()
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.cer");
        let err = load_certificate(&missing).unwrap_err();
        assert!(matches!(err, FileError::Io { .. }));
        assert!(err.to_string().contains("nope.cer"), "{err}");

        let cer = dir.path().join("only.cer");
        save_cer(&cer, &fixture::cached(1).certificate).unwrap();
        let err = load_provider_certificate(&cer, None).unwrap_err();
        assert_eq!(err.path(), cer);
        match &err {
            FileError::Unfit { source, .. } => {
                assert_eq!(source.reasons(), [UnfitReason::MissingPrivateKey]);
            }
            other => panic!("expected Unfit, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("only.cer: not fit for Network Unlock"),
            "{err}"
        );

        let pfx = dir.path().join("x.pfx");
        save_pfx(&pfx, &fixture::cached(1), "right").unwrap();
        let err = load_bundle(&pfx, Some("wrong")).unwrap_err();
        assert!(matches!(
            err,
            FileError::Import {
                source: ImportError::WrongPassword,
                ..
            }
        ));
        assert!(err.to_string().contains("x.pfx: wrong password"), "{err}");
    }
}
