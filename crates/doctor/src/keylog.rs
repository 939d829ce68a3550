//! The Network Unlock key log: the session keys of unlock exchanges, written by a client (or a
//! lab) so that a capture's replies can be checked, as `SSLKEYLOGFILE` lets Wireshark read TLS.
//!
//! The format, one exchange per line (blank lines and lines starting with `#` are ignored):
//!
//! ```text
//! NKPU_SESSION <thumbprint> <key protector prefix> <session key>
//! ```
//!
//! - `thumbprint`: the 40 hex digits of the certificate's SHA-1 thumbprint the request names;
//! - `key protector prefix`: the first 16 bytes of the request's 256-byte key protector, 32 hex
//!   digits (enough to tell exchanges apart: it is RSA output);
//! - `session key`: SK, the 32-byte AES-256-CCM key the client chose, 64 hex digits.
//!
//! Hex is case-insensitive. A line that breaks these rules is refused with its line number.

use nkpu::{SessionKey, Thumbprint};

/// How many bytes of the key protector a key log line carries.
pub const KEY_PROTECTOR_PREFIX_LEN: usize = 16;

/// The line label.
pub const LABEL: &str = "NKPU_SESSION";

/// One exchange's session key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogEntry {
    /// 1-based line in the file.
    pub line: usize,
    pub thumbprint: Thumbprint,
    pub key_protector_prefix: [u8; KEY_PROTECTOR_PREFIX_LEN],
    pub session_key: SessionKey,
}

/// A parsed key log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyLog {
    /// The file name, for evidence lines.
    pub file: String,
    pub entries: Vec<KeyLogEntry>,
}

/// A line the key log format refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for KeyLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for KeyLogError {}

impl KeyLog {
    /// Parses `text` (named `file` in errors and evidence).
    pub fn parse(file: &str, text: &str) -> Result<KeyLog, KeyLogError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let refuse = |message: String| KeyLogError {
                file: file.to_string(),
                line,
                message,
            };
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [label, thumbprint, prefix, key] = fields[..] else {
                return Err(refuse(format!(
                    "expected `{LABEL} <thumbprint> <key protector prefix> <session key>`, found {} field(s)",
                    fields.len()
                )));
            };
            if label != LABEL {
                return Err(refuse(format!(
                    "unknown label {label:?} (expected {LABEL})"
                )));
            }
            let thumbprint: [u8; 20] = hex_array(thumbprint)
                .ok_or_else(|| refuse("the thumbprint is not 40 hex digits".into()))?;
            let key_protector_prefix: [u8; KEY_PROTECTOR_PREFIX_LEN] = hex_array(prefix)
                .ok_or_else(|| {
                    refuse("the key protector prefix is not 32 hex digits (16 bytes)".into())
                })?;
            let session_key: [u8; 32] = hex_array(key)
                .ok_or_else(|| refuse("the session key is not 64 hex digits (32 bytes)".into()))?;
            entries.push(KeyLogEntry {
                line,
                thumbprint: Thumbprint::from_bytes(thumbprint),
                key_protector_prefix,
                session_key: SessionKey::from_bytes(session_key),
            });
        }
        Ok(KeyLog {
            file: file.to_string(),
            entries,
        })
    }

    /// The entry for a request with this thumbprint and key protector, if the log has it.
    pub fn find(&self, thumbprint: &Thumbprint, key_protector: &[u8]) -> Option<&KeyLogEntry> {
        self.entries.iter().find(|e| {
            &e.thumbprint == thumbprint
                && key_protector.get(..KEY_PROTECTOR_PREFIX_LEN)
                    == Some(&e.key_protector_prefix[..])
        })
    }

    /// The line for one exchange, as a client writes it.
    pub fn line_for(
        thumbprint: &Thumbprint,
        key_protector: &[u8],
        session_key: &SessionKey,
    ) -> String {
        let prefix = key_protector
            .get(..KEY_PROTECTOR_PREFIX_LEN)
            .unwrap_or(key_protector);
        format!(
            "{LABEL} {thumbprint} {} {}",
            hex::encode(prefix),
            session_key.to_hex()
        )
    }
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_line_and_refuses_bad_ones_with_their_line() {
        let thumbprint = Thumbprint::from_bytes([7; 20]);
        let kp = [9u8; 256];
        let sk = SessionKey::from_bytes([3; 32]);
        let text = format!(
            "# a comment\n\n{}\n",
            KeyLog::line_for(&thumbprint, &kp, &sk)
        );
        let log = KeyLog::parse("keys.log", &text).expect("valid");
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.entries[0].line, 3);
        assert!(log.find(&thumbprint, &kp).is_some());
        assert!(log.find(&thumbprint, &[8u8; 256]).is_none());

        let err = KeyLog::parse("keys.log", "NKPU_SESSION abc").expect_err("too few fields");
        assert_eq!(err.line, 1);
        assert!(err.to_string().starts_with("keys.log:1: expected"));
        let bad_key = format!(
            "\nNKPU_SESSION {} {} 00ff",
            thumbprint,
            hex::encode([9u8; 16])
        );
        let err = KeyLog::parse("k", &bad_key).expect_err("short key");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("session key"));
        let err = KeyLog::parse("k", "CLIENT_RANDOM a b c").expect_err("label");
        assert!(err.message.contains("unknown label"));
    }
}
