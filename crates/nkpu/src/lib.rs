//! The Network Unlock wire protocol (MS-NKPU), as real Windows clients speak it.
//!
//! ```text
//!  client (UEFI boot manager)                          unlock provider (WDS server)
//!  ─────────────────────────                           ────────────────────────────
//!  CK (network key), SK (session key), 32 bytes each
//!  KP = RSAES-PKCS1-v1_5(cert public key, CK ‖ SK)     256 bytes
//!  Request { thumbprint, KP }  ── DHCPv4 or DHCPv6 ──▶  thumbprint → certificate → private key
//!                                                       CK ‖ SK = RSA-decrypt(KP), exactly 64 bytes
//!                              ◀── DHCPv4 or DHCPv6 ──  Reply { KPR = tag ‖ AES-256-CCM(SK, hdr ‖ CK) }
//!  CK = open(SK, KPR)
//! ```
//!
//! - [`v4`] and [`v6`] encode and decode the request and reply carried in DHCPv4 and DHCPv6
//!   (`../shared/PROTOCOL.md`; where the published specification is wrong, the code says so).
//! - [`KeyProtector`] is the RSA part: the client side encrypts with an injected RNG
//!   (deterministic in the simulator; the padding as the `rsa` crate draws it, the
//!   exponentiation in fixed-size Montgomery arithmetic); the server side ([`ProviderKey`]) decrypts
//!   with aws-lc-rs, about 7 times faster, and accepts exactly 64 bytes of plaintext.
//! - [`KeyProtectorReply`] is the AES-256-CCM reply: seal on the server, open on the client.
//! - [`Thumbprint`] is the SHA-1 of the certificate's DER, which names the certificate on the
//!   wire.
//!
//! The crate is sans-IO: no sockets, no clock, no ambient randomness. Nothing in it panics on
//! input bytes; every malformation decodes to a typed [`DecodeError`].

mod error;
pub mod frame;
mod key_protector;
mod keys;
pub mod options;
mod reply;
mod rsa_public;
mod suboptions;
pub mod v4;
pub mod v6;

pub use error::DecodeError;
pub use key_protector::{KEY_PROTECTOR_LEN, KeyProtector, KeyProtectorError, ProviderKey};
pub use keys::{ClientKey, KEY_LEN, SessionKey, THUMBPRINT_LEN, Thumbprint, ThumbprintError};
pub use reply::{KPR_HEADER, KPR_LEN, KeyProtectorReply, ReplyError};

/// The vendor class that marks every Network Unlock message (DHCPv4 option 60, DHCPv6 option 16).
pub const VENDOR_CLASS: &[u8; 9] = dhcp_wire::NETWORK_UNLOCK_VENDOR_CLASS;

/// Microsoft's IANA enterprise number, carried in DHCPv4 option 125 and DHCPv6 options 16 and 17.
pub const ENTERPRISE_MICROSOFT: u32 = 311;

/// A decoded Network Unlock message of either family: what a capture reader or a test wants
/// when it does not know in advance what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    V4Request(v4::Request),
    V4Reply(v4::Reply),
    V6Request(v6::Request),
    V6Reply(v6::Reply),
}

impl Message {
    /// The certificate thumbprint, for requests (replies do not carry one).
    pub fn thumbprint(&self) -> Option<&Thumbprint> {
        match self {
            Message::V4Request(r) => Some(&r.thumbprint),
            Message::V6Request(r) => Some(&r.thumbprint),
            Message::V4Reply(_) | Message::V6Reply(_) => None,
        }
    }

    /// The key protector, for requests.
    pub fn key_protector(&self) -> Option<&KeyProtector> {
        match self {
            Message::V4Request(r) => Some(&r.key_protector),
            Message::V6Request(r) => Some(&r.key_protector),
            Message::V4Reply(_) | Message::V6Reply(_) => None,
        }
    }

    /// The key protector reply, for replies.
    pub fn reply(&self) -> Option<&KeyProtectorReply> {
        match self {
            Message::V4Reply(r) => Some(&r.reply),
            Message::V6Reply(r) => Some(&r.reply),
            Message::V4Request(_) | Message::V6Request(_) => None,
        }
    }

    /// `true` for requests, `false` for replies.
    pub fn is_request(&self) -> bool {
        matches!(self, Message::V4Request(_) | Message::V6Request(_))
    }
}
