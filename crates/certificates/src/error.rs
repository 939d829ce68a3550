//! The crate's error types, one per kind of operation, so that a caller matches on what can
//! actually go wrong there: reading bytes ([`ImportError`]), making a certificate
//! ([`GenerateError`]), writing a `.pfx` ([`ExportError`]) and files ([`FileError`], which always
//! names the file). Fitness for Network Unlock has its own type, [`crate::Unfit`].

use std::path::PathBuf;

/// Why bytes could not be read as a certificate, key or `.pfx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("not a DER X.509 certificate: {0}")]
    NotACertificate(String),
    #[error("{0} bytes follow the DER certificate")]
    TrailingBytes(usize),
    #[error("the certificate's {extension} extension is malformed: {reason}")]
    BadExtension { extension: String, reason: String },
    #[error("not a usable RSA private key: {0}")]
    PrivateKey(String),
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error(
        "PEM block `{0}` is not supported (expected CERTIFICATE, PRIVATE KEY or RSA PRIVATE KEY)"
    )]
    UnsupportedPemBlock(String),
    #[error("the PEM holds more than one private key")]
    SeveralPrivateKeys,
    #[error("the file holds no certificate")]
    NoCertificate,
    #[error("the .pfx is password-protected: give its password")]
    PasswordRequired,
    #[error("wrong password for the .pfx (its integrity check failed)")]
    WrongPassword,
    #[error("not a readable PKCS#12 (.pfx) file: {0}")]
    Pfx(String),
    #[error("the private key in the .pfx is not RSA (algorithm {0})")]
    NotRsaPrivateKey(String),
}

/// Why a certificate could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    #[error("subject {subject:?}: {reason}")]
    Subject { subject: String, reason: String },
    #[error("RSA key size {0} bits is not supported (nulab makes 1024..=4096-bit keys)")]
    KeySize(usize),
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    #[error("not after ({not_after}) is before not before ({not_before})")]
    Validity {
        not_before: String,
        not_after: String,
    },
    #[error("a Unix time of {0} seconds is out of range")]
    Time(i64),
    #[error("the issuer's private key does not match the issuer certificate")]
    IssuerKeyMismatch,
    #[error("signing the certificate failed: {0}")]
    Signing(String),
}

/// Why a `.pfx` could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("writing the PKCS#12 file failed: {0}")]
    Pfx(String),
}

/// A file helper's error: always names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Import { path: PathBuf, source: ImportError },
    #[error("{}: {source}", path.display())]
    Export { path: PathBuf, source: ExportError },
    #[error("{}: {source}", path.display())]
    Unfit {
        path: PathBuf,
        source: crate::fitness::Unfit,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::Import { path, .. }
            | Self::Export { path, .. }
            | Self::Unfit { path, .. } => path,
        }
    }
}
