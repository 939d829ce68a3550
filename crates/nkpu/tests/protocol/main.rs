//! The protocol crate's integration tests: the real Windows captures, every malformation, round
//! trips, and a whole exchange through the real codec and crypto. One test binary, several
//! modules (faster links).

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod captures;
mod exchange;
mod malformed;
mod roundtrip;
mod tshark;

use std::path::PathBuf;

/// Bytes of a `.hex` fixture (plain hex, any whitespace).
pub fn hex_fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join("windows-captures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digits: String = text.split_whitespace().collect();
    hex::decode(digits).expect("fixture is hex")
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}
