//! `nulab reply seal|open`: the key protector reply by hand, for checking a server or a capture.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use nkpu::{ClientKey, KeyProtectorReply, SessionKey};

use crate::output::outln;

#[derive(Debug, Subcommand)]
pub enum ReplyCommand {
    /// Seal a client key under a session key; prints the 60-byte reply (tag first) in hex
    Seal {
        /// SK, 32 bytes in hex
        #[arg(long)]
        session_key: String,
        /// CK, 32 bytes in hex
        #[arg(long)]
        client_key: String,
        #[arg(long)]
        json: bool,
    },
    /// Open a reply with the session key; prints the client key, or fails if the tag does not
    /// verify
    Open {
        /// SK, 32 bytes in hex
        #[arg(long)]
        session_key: String,
        /// The 60-byte reply in hex (or the 62-byte body of option 43, starting 023c)
        blob: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ReplyCommand) -> Result<ExitCode> {
    match cmd {
        ReplyCommand::Seal {
            session_key,
            client_key,
            json,
        } => {
            let sk = SessionKey::from_bytes(key32("--session-key", &session_key)?);
            let ck = ClientKey::from_bytes(key32("--client-key", &client_key)?);
            let reply = hex::encode(KeyProtectorReply::seal(&sk, &ck).as_bytes());
            if json {
                outln!("{}", serde_json::json!({ "reply": reply }))?;
            } else {
                outln!("{reply}")?;
            }
        }
        ReplyCommand::Open {
            session_key,
            blob,
            json,
        } => {
            let sk = SessionKey::from_bytes(key32("--session-key", &session_key)?);
            let bytes = hex_arg("BLOB", &blob)?;
            // Accept the option-43 body as a capture shows it: sub-option 2, length 60.
            let body = match bytes.as_slice() {
                [2, 60, rest @ ..] if rest.len() == nkpu::KPR_LEN => rest,
                other => other,
            };
            let reply = KeyProtectorReply::try_from(body)?;
            let ck = reply.open(&sk)?;
            if json {
                outln!("{}", serde_json::json!({ "client_key": ck.to_hex() }))?;
            } else {
                outln!("{}", ck.to_hex())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hex_arg(name: &str, text: &str) -> Result<Vec<u8>> {
    let compact: String = text
        .split(|c: char| c.is_whitespace() || c == ':')
        .collect();
    hex::decode(&compact).with_context(|| format!("{name} is not hex"))
}

fn key32(name: &str, text: &str) -> Result<[u8; 32]> {
    let bytes = hex_arg(name, text)?;
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(key) => Ok(key),
        Err(_) => bail!(
            "{name} must be 32 bytes (64 hex digits), got {}",
            bytes.len()
        ),
    }
}
