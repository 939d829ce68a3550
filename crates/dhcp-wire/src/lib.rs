//! The one reader of the DHCP wire format, used by every crate that reads DHCP bytes: the
//! Network Unlock codec (`nkpu`, which adds strictness), the DHCP cores (`dhcp`, which needs
//! the options in wire order and guards before dhcproto), the simulator's relay (`netsim`, the
//! fixed header and the cookie) and the scenario runner's capture listing. It knows the
//! format, never what to do with a message.
//!
//! - [`MAGIC_COOKIE`], [`V4_OPTIONS_AT`]: where a DHCPv4 message's options start.
//! - [`read_v4`] / [`v4_message_options`]: DHCPv4 options (one-byte code and length) in wire
//!   order, pads skipped, up to End or the end of the bytes ([`V4Options::ended`] says which);
//!   [`walk_v4`] the same one at a time, without listing them.
//! - [`read_v6`] / [`v6_message_options`]: DHCPv6 options (two-byte code and length).
//! - [`NETWORK_UNLOCK_VENDOR_CLASS`], [`v4_is_network_unlock`], [`v6_is_network_unlock`]: the
//!   vendor class (`BITLOCKER`) that marks a Network Unlock request.
//! - [`summarise`]: one line naming a UDP datagram (`DHCPv4 DISCOVER xid=0x0000abcd (Network
//!   Unlock)`), the summariser the simulator's trace is given.
//! - [`encode_exact`]: a dhcproto message's bytes in a list of exactly their length, the
//!   encoder every crate that sends DHCP uses.
//!
//! Nothing here panics on bytes from the wire (proptest below).

use std::cell::RefCell;
use std::net::SocketAddr;

use dhcproto::{Encodable, Encoder};

/// `message` encoded into a list of exactly its length. dhcproto's `to_vec` starts at 512
/// bytes and grows by doubling, so a 300-byte DHCPDISCOVER kept 512 and a 600-byte Network
/// Unlock request 1,024 (grown once on the way), and a sender cut them back with another copy;
/// a storm holds thousands in flight. This encodes into one buffer per thread, kept between
/// calls, and copies out the bytes.
pub fn encode_exact<T: Encodable>(message: &T) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1500));
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            message.encode(&mut Encoder::new(&mut scratch))?;
            Ok(scratch.as_slice().to_vec())
        }
        // Only if an encoder called back in here: no shared buffer then.
        Err(_) => message.to_vec(),
    })
}

/// The DHCP magic cookie that follows the fixed BOOTP header (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The length of the fixed BOOTP header, where the magic cookie starts.
pub const BOOTP_HEADER_LEN: usize = 236;
/// Where a DHCPv4 message's options start: the fixed header and the magic cookie.
pub const V4_OPTIONS_AT: usize = BOOTP_HEADER_LEN + MAGIC_COOKIE.len();
/// The vendor class (DHCPv4 option 60, DHCPv6 option 16's class datum) of a Network Unlock
/// request.
pub const NETWORK_UNLOCK_VENDOR_CLASS: &[u8; 9] = b"BITLOCKER";

/// One option as it stood on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    pub code: u16,
    pub data: &'a [u8],
}

/// Why options could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An option's header or data runs past the end of the bytes.
    #[error("option {code} declares {declared} bytes, {available} remain")]
    OptionTruncated {
        code: u16,
        declared: usize,
        available: usize,
    },
    /// Shorter than the fixed header and the cookie, or the cookie is wrong.
    #[error("not a DHCPv4 message: too short or no magic cookie")]
    NotDhcpV4,
    /// Shorter than a DHCPv6 message's type and transaction id.
    #[error("not a DHCPv6 message: shorter than 4 bytes")]
    NotDhcpV6,
}

/// DHCPv4 options in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Options<'a> {
    pub options: Vec<RawOption<'a>>,
    /// Whether the walk stopped at an End option (255), rather than at the end of the bytes.
    pub ended: bool,
}

/// Reads DHCPv4 options (one-byte code and length) from `bytes` (the options field): pads (0)
/// are skipped, the walk stops at End (255) or at the end of the bytes. Errors on an option
/// that runs past the end.
pub fn read_v4(bytes: &[u8]) -> Result<V4Options<'_>, WireError> {
    let mut walk = walk_v4(bytes);
    let mut options = Vec::with_capacity(16);
    for option in &mut walk {
        options.push(option?);
    }
    Ok(V4Options {
        options,
        ended: walk.ended(),
    })
}

/// [`read_v4`] one option at a time, listing nothing: for a reader that decides from a single
/// pass (a message that is plainly not Network Unlock).
pub fn walk_v4(bytes: &[u8]) -> V4Walk<'_> {
    V4Walk {
        bytes,
        ended: false,
    }
}

/// The options of a DHCPv4 options field in wire order ([`walk_v4`]): pads skipped; after End
/// (then [`V4Walk::ended`]) or the end of the bytes, nothing more; an option that runs past the
/// end is an error, and the last item.
#[derive(Debug, Clone)]
pub struct V4Walk<'a> {
    bytes: &'a [u8],
    ended: bool,
}

impl V4Walk<'_> {
    /// Whether the walk stopped at an End option (255), rather than at the end of the bytes.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl<'a> Iterator for V4Walk<'a> {
    type Item = Result<RawOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, rest) = self.bytes.split_first()?;
            match code {
                0 => self.bytes = rest,
                255 => {
                    self.bytes = &[];
                    self.ended = true;
                    return None;
                }
                _ => {
                    // Whatever comes of this option, the walk ends with an error or goes on
                    // past it.
                    self.bytes = &[];
                    let Some((&len, rest)) = rest.split_first() else {
                        return Some(Err(WireError::OptionTruncated {
                            code: code.into(),
                            declared: 1,
                            available: 0,
                        }));
                    };
                    let len = usize::from(len);
                    if rest.len() < len {
                        return Some(Err(WireError::OptionTruncated {
                            code: code.into(),
                            declared: len,
                            available: rest.len(),
                        }));
                    }
                    let (data, rest) = rest.split_at(len);
                    self.bytes = rest;
                    return Some(Ok(RawOption {
                        code: code.into(),
                        data,
                    }));
                }
            }
        }
    }
}

/// The options of a whole DHCPv4 `message`, after checking its length and magic cookie.
pub fn v4_message_options(message: &[u8]) -> Result<V4Options<'_>, WireError> {
    if message.get(BOOTP_HEADER_LEN..V4_OPTIONS_AT) != Some(&MAGIC_COOKIE[..]) {
        return Err(WireError::NotDhcpV4);
    }
    read_v4(&message[V4_OPTIONS_AT..])
}

/// Reads DHCPv6 options (two-byte code and length) to the end of `bytes`.
pub fn read_v6(mut bytes: &[u8]) -> Result<Vec<RawOption<'_>>, WireError> {
    let mut options = Vec::with_capacity(8);
    while !bytes.is_empty() {
        let Some((head, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(WireError::OptionTruncated {
                code: bytes.first().map_or(0, |&b| u16::from(b) << 8),
                declared: 4,
                available: bytes.len(),
            });
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if rest.len() < len {
            return Err(WireError::OptionTruncated {
                code,
                declared: len,
                available: rest.len(),
            });
        }
        let (data, rest) = rest.split_at(len);
        options.push(RawOption { code, data });
        bytes = rest;
    }
    Ok(options)
}

/// The options of a whole DHCPv6 client/server `message` (after its type and transaction id).
pub fn v6_message_options(message: &[u8]) -> Result<Vec<RawOption<'_>>, WireError> {
    read_v6(message.get(4..).ok_or(WireError::NotDhcpV6)?)
}

/// Whether a DHCPv4 message carries vendor class `BITLOCKER` (option 60).
pub fn v4_is_network_unlock(message: &[u8]) -> bool {
    v4_message_options(message).is_ok_and(|o| {
        o.options
            .iter()
            .any(|o| o.code == 60 && o.data == NETWORK_UNLOCK_VENDOR_CLASS)
    })
}

/// Whether a DHCPv6 message carries a vendor class (option 16) whose data is `BITLOCKER`
/// (after the 4-byte enterprise number and the 2-byte length of the one class datum).
pub fn v6_is_network_unlock(message: &[u8]) -> bool {
    v6_message_options(message).is_ok_and(|options| {
        options
            .iter()
            .any(|o| o.code == 16 && o.data.get(6..) == Some(&NETWORK_UNLOCK_VENDOR_CLASS[..]))
    })
}

/// A short description of a UDP payload: DHCPv4 and DHCPv6 messages by type (noting Network
/// Unlock's `BITLOCKER` vendor class), anything else as `UDP`. The simulator's trace calls
/// the summariser its caller gives it; this is the one the scenario runner gives.
pub fn summarise(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> String {
    let ports = (src.port(), dst.port());
    if matches!(ports, (68, 67) | (67, 68) | (67, 67)) {
        return summarise_dhcpv4(payload);
    }
    if matches!(ports, (546, 547) | (547, 546) | (547, 547)) {
        return summarise_dhcpv6(payload);
    }
    "UDP".to_owned()
}

/// Read by hand, not with dhcproto: dhcproto 0.15's v4 option decoder `debug_assert!`s the
/// length of some options (80 rapid commit, 94 client network interface, ...), so arbitrary
/// bytes panic it in debug builds, and a summary must never panic on a corrupted packet.
/// Only the fixed header, option 53 (message type) and option 60 (vendor class) are needed.
fn summarise_dhcpv4(payload: &[u8]) -> String {
    const TYPES: [&str; 18] = [
        "DISCOVER",
        "OFFER",
        "REQUEST",
        "DECLINE",
        "ACK",
        "NAK",
        "RELEASE",
        "INFORM",
        "FORCERENEW",
        "LEASEQUERY",
        "LEASEUNASSIGNED",
        "LEASEUNKNOWN",
        "LEASEACTIVE",
        "BULKLEASEQUERY",
        "LEASEQUERYDONE",
        "ACTIVELEASEQUERY",
        "LEASEQUERYSTATUS",
        "TLS",
    ];
    const BOOTREPLY: u8 = 2;
    let Ok(walk) = v4_message_options(payload) else {
        return "DHCPv4 (malformed)".to_owned();
    };
    let mut kind = None;
    let mut unlock = false;
    for option in &walk.options {
        match (option.code, option.data) {
            (53, [t]) => kind = Some(*t),
            (60, class) if class == NETWORK_UNLOCK_VENDOR_CLASS => unlock = true,
            _ => {}
        }
    }
    let kind = match kind {
        Some(t) => TYPES
            .get(usize::from(t).wrapping_sub(1))
            .map_or_else(|| format!("type {t}"), |name| (*name).to_owned()),
        None if payload[0] == BOOTREPLY => "BOOTREPLY".to_owned(),
        None => "BOOTREQUEST".to_owned(),
    };
    let xid = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let unlock = if unlock { " (Network Unlock)" } else { "" };
    format!("DHCPv4 {kind} xid=0x{xid:08x}{unlock}")
}

fn summarise_dhcpv6(payload: &[u8]) -> String {
    use dhcproto::Decodable;
    use dhcproto::v6::Message;
    match Message::decode(&mut dhcproto::Decoder::new(payload)) {
        Ok(msg) => {
            let kind = format!("{:?}", msg.msg_type()).to_uppercase();
            let xid = msg.xid();
            format!(
                "DHCPv6 {kind} xid=0x{:02x}{:02x}{:02x}",
                xid[0], xid[1], xid[2]
            )
        }
        Err(_) => "DHCPv6 (malformed)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
