//! Network Unlock over DHCPv6: Information-Request and Reply.
//!
//! Request (PROTOCOL.md, "DHCPv6 request"; see the v6 capture): message type 11 with, in this
//! order, client id (1), elapsed time (8), option request (6) for 16 and 17, vendor class (16:
//! enterprise 311, a 2-byte length 9, `BITLOCKER`; 15 bytes) and vendor options (17: enterprise
//! 311, then sub-options with **2-byte** codes and lengths: 1 = 20-byte thumbprint, 2 = 256-byte
//! key protector; 288 bytes).
//!
//! Reply: message type 7 with a server identifier (2; Windows ignores a reply without one), the
//! vendor class (16) and vendor options (17) holding sub-option 2 of length 60 (68 bytes).
//!
//! Encoded and decoded wholly by hand, not on dhcproto: dhcproto 0.15 writes a wrong length for
//! option 16, parses option 17's sub-codes 2 and 3 as standard DHCPv6 options, and sorts options
//! by code, while Windows sends 8 before 6. A DHCPv6 message is a 4-byte header and plain TLVs,
//! so the hand-written codec is small.

use crate::options::{self, RawOption};
use crate::suboptions::{self, Width};
use crate::{
    DecodeError, ENTERPRISE_MICROSOFT, KeyProtector, KeyProtectorReply, Message, Thumbprint,
    VENDOR_CLASS,
};

/// DHCPv6 message type Information-Request.
pub const INFORMATION_REQUEST: u8 = 11;
/// DHCPv6 message type Reply.
pub const REPLY: u8 = 7;

pub const OPT_CLIENT_ID: u16 = 1;
pub const OPT_SERVER_ID: u16 = 2;
pub const OPT_ORO: u16 = 6;
pub const OPT_ELAPSED_TIME: u16 = 8;
pub const OPT_VENDOR_CLASS: u16 = 16;
pub const OPT_VENDOR_OPTS: u16 = 17;

/// Length of option 16: 4 + 2 + 9.
pub const VENDOR_CLASS_LEN: usize = 15;
/// Length of option 17 in a request: 4 + (4 + 20) + (4 + 256).
pub const REQUEST_OPT17_LEN: usize = 288;
/// Length of option 17 in a reply: 4 + (4 + 60).
pub const REPLY_OPT17_LEN: usize = 68;

/// The DHCPv6 Network Unlock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub xid: [u8; 3],
    /// The client's DUID (Windows sends DUID type 4, UUID-based).
    pub client_id: Vec<u8>,
    /// Elapsed time in hundredths of a second (0 when the option is absent).
    pub elapsed: u16,
    pub thumbprint: Thumbprint,
    pub key_protector: KeyProtector,
}

/// The DHCPv6 Network Unlock reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub xid: [u8; 3],
    /// The server's DUID; required, Windows ignores a reply without one.
    pub server_id: Vec<u8>,
    /// The client's DUID, echoed when the server knows it.
    pub client_id: Option<Vec<u8>>,
    pub reply: KeyProtectorReply,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 4 + self.client_id.len() + 6 + 8 + 19 + 292);
        out.push(INFORMATION_REQUEST);
        out.extend_from_slice(&self.xid);
        put_option(&mut out, OPT_CLIENT_ID, &self.client_id);
        put_option(&mut out, OPT_ELAPSED_TIME, &self.elapsed.to_be_bytes());
        put_option(&mut out, OPT_ORO, &[0, 16, 0, 17]);
        put_option(&mut out, OPT_VENDOR_CLASS, &vendor_class());
        let mut vendor = Vec::with_capacity(REQUEST_OPT17_LEN);
        vendor.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
        suboptions::write(&mut vendor, Width::Two, 1, self.thumbprint.as_bytes());
        suboptions::write(&mut vendor, Width::Two, 2, self.key_protector.as_bytes());
        put_option(&mut out, OPT_VENDOR_OPTS, &vendor);
        out
    }
}

impl Reply {
    /// The reply to `request` from the server whose DUID is `server_id`.
    pub fn answering(request: &Request, server_id: Vec<u8>, reply: KeyProtectorReply) -> Self {
        Self {
            xid: request.xid,
            server_id,
            client_id: Some(request.client_id.clone()),
            reply,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(REPLY);
        out.extend_from_slice(&self.xid);
        if let Some(client_id) = &self.client_id {
            put_option(&mut out, OPT_CLIENT_ID, client_id);
        }
        put_option(&mut out, OPT_SERVER_ID, &self.server_id);
        put_option(&mut out, OPT_VENDOR_CLASS, &vendor_class());
        let mut vendor = Vec::with_capacity(REPLY_OPT17_LEN);
        vendor.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
        suboptions::write(&mut vendor, Width::Two, 2, self.reply.as_bytes());
        put_option(&mut out, OPT_VENDOR_OPTS, &vendor);
        out
    }
}

/// Option 16's body: enterprise 311, then one vendor-class-data item of 9 bytes.
fn vendor_class() -> [u8; VENDOR_CLASS_LEN] {
    let mut body = [0u8; VENDOR_CLASS_LEN];
    body[..4].copy_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
    body[4..6].copy_from_slice(&(VENDOR_CLASS.len() as u16).to_be_bytes());
    body[6..].copy_from_slice(VENDOR_CLASS);
    body
}

fn put_option(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    let len = u16::try_from(body.len()).expect("DHCPv6 options here are far below 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

/// Decodes a DHCPv6 payload (the UDP body) as a Network Unlock request or reply.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some((&[msg_type, x0, x1, x2], rest)) = bytes.split_first_chunk::<4>() else {
        return Err(DecodeError::Truncated {
            what: "DHCPv6 header",
            needed: 4,
            available: bytes.len(),
        });
    };
    let xid = [x0, x1, x2];
    if msg_type != INFORMATION_REQUEST && msg_type != REPLY {
        return Err(DecodeError::UnexpectedV6MessageType(msg_type));
    }
    let options = options::walk_v6(rest)?;
    options::no_duplicates(&options)?;
    check_vendor_class(&options)?;
    let vendor = options::required(&options, OPT_VENDOR_OPTS)?;
    let sub_options = enterprise_data(OPT_VENDOR_OPTS, vendor)?;
    let client_id = options::unique(&options, OPT_CLIENT_ID)?.map(<[u8]>::to_vec);

    if msg_type == REPLY {
        let server_id = options::unique(&options, OPT_SERVER_ID)?
            .ok_or(DecodeError::MissingServerId)?
            .to_vec();
        let [kpr] = suboptions::read_exact(
            OPT_VENDOR_OPTS,
            Width::Two,
            sub_options,
            [(2, crate::KPR_LEN)],
        )?;
        return Ok(Message::V6Reply(Reply {
            xid,
            server_id,
            client_id,
            reply: KeyProtectorReply::try_from(kpr).expect("length checked by read_exact"),
        }));
    }

    let [thumbprint, key_protector] = suboptions::read_exact(
        OPT_VENDOR_OPTS,
        Width::Two,
        sub_options,
        [(1, 20), (2, 256)],
    )?;
    let elapsed = match options::unique(&options, OPT_ELAPSED_TIME)? {
        None => 0,
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        Some(other) => {
            return Err(DecodeError::OptionLength {
                code: OPT_ELAPSED_TIME,
                expected: 2,
                found: other.len(),
            });
        }
    };
    Ok(Message::V6Request(Request {
        xid,
        client_id: client_id.ok_or(DecodeError::MissingOption {
            code: OPT_CLIENT_ID,
        })?,
        elapsed,
        thumbprint: Thumbprint::from_bytes(
            thumbprint.try_into().expect("length checked by read_exact"),
        ),
        key_protector: KeyProtector::from_bytes(
            key_protector
                .try_into()
                .expect("length checked by read_exact"),
        ),
    }))
}

fn check_vendor_class(options: &[RawOption<'_>]) -> Result<(), DecodeError> {
    let class =
        options::unique(options, OPT_VENDOR_CLASS)?.ok_or(DecodeError::MissingVendorClass)?;
    // One vendor-class-data item: a 2-byte length, then that many bytes, nothing after.
    let item = match enterprise_data(OPT_VENDOR_CLASS, class)? {
        [hi, lo, item @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == item.len() => item,
        _ => {
            return Err(DecodeError::OptionLength {
                code: OPT_VENDOR_CLASS,
                expected: VENDOR_CLASS_LEN,
                found: class.len(),
            });
        }
    };
    if item != VENDOR_CLASS {
        return Err(DecodeError::WrongVendorClass(
            String::from_utf8_lossy(item).into_owned(),
        ));
    }
    Ok(())
}

/// Checks the leading enterprise number of option 16 or 17 and returns what follows it.
fn enterprise_data(option: u16, body: &[u8]) -> Result<&[u8], DecodeError> {
    let Some((enterprise, rest)) = body.split_first_chunk::<4>() else {
        return Err(DecodeError::OptionLength {
            code: option,
            expected: 4,
            found: body.len(),
        });
    };
    let enterprise = u32::from_be_bytes(*enterprise);
    if enterprise != ENTERPRISE_MICROSOFT {
        return Err(DecodeError::WrongEnterprise {
            option,
            found: enterprise,
        });
    }
    Ok(rest)
}
