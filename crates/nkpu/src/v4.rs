//! Network Unlock over DHCPv4: the request Windows broadcasts and the provider's reply.
//!
//! Request (PROTOCOL.md, "DHCPv4 request"; what Windows sends, see the v4 capture): a BOOTREQUEST
//! **with no option 53** (the specification's "DHCPDISCOVER" is wrong), sent after the client
//! holds a lease, `ciaddr` = `yiaddr` = its address, `siaddr` = the DHCP server, repeating the
//! lease's options in ascending order, then option 60 `BITLOCKER`, option 43 (sub-option 1: the
//! 20-byte thumbprint, then sub-option 2: the first 128 bytes of the key protector; 152 bytes)
//! and option 125 (enterprise 311, data length 130, sub-option 1: the last 128 bytes of the key
//! protector; 135 bytes; the specification's worked example gives a wrong length).
//!
//! Reply: a BOOTREPLY copying `xid` and `chaddr` with only option 60 and option 43 holding
//! sub-option 2 of length 60 (option length 62), no option 53. Working servers omit the option
//! 125 the specification mentions, and Windows accepts that; the decoder tolerates it.
//!
//! Messages are built on dhcproto; decoding reads the fixed header through dhcproto and walks
//! the options strictly by hand (see [`crate::options`] for why).

use std::net::Ipv4Addr;

use dhcproto::{Decodable, v4 as dhcp};

use crate::options::{self, RawOption};
use crate::suboptions::{self, Width};
use crate::{
    DecodeError, ENTERPRISE_MICROSOFT, KeyProtector, KeyProtectorReply, Message, Thumbprint,
    VENDOR_CLASS,
};

/// Option 43, Vendor-Specific Information.
pub const OPT_VENDOR_INFO: u8 = 43;
/// Option 60, Vendor Class Identifier.
pub const OPT_VENDOR_CLASS: u8 = 60;
/// Option 125, V-I Vendor-Specific Information.
pub const OPT_VIVSO: u8 = 125;
const OPT_OVERLOAD: u8 = 52;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_RELAY_AGENT: u8 = 82;

/// Length of option 43 in a request: 2 + 20 + 2 + 128.
pub const REQUEST_OPT43_LEN: usize = 152;
/// Length of option 125 in a request: 4 + 1 + 2 + 128.
pub const REQUEST_OPT125_LEN: usize = 135;
/// Length of option 43 in a reply: 2 + 60.
pub const REPLY_OPT43_LEN: usize = 62;

/// The fixed BOOTP header (236 bytes) plus the magic cookie.
const OPTIONS_OFFSET: usize = 240;
use dhcp_wire::MAGIC_COOKIE;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;

/// An option of the client's lease that the request repeats (Windows repeats them, and a Kea-based
/// unlock server drops a request unless option 54 names itself and `ciaddr` lies in its pools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOption {
    code: u8,
    /// Exactly the data's length (a boxed slice, not a `Vec`): a storm's clients and the
    /// requests queued at the server each keep half a dozen.
    data: Box<[u8]>,
}

impl LeaseOption {
    /// `None` for the codes the Network Unlock payload owns (43, 60, 125), for 52 and 53 (which
    /// a Network Unlock message never carries), for 82 (relay agent information belongs to
    /// relays, and dhcproto moves it last), for pad and end, and for data that is empty
    /// (dhcproto writes nothing for an empty option, and a lease has none) or over 255 bytes.
    pub fn new(code: u8, data: Vec<u8>) -> Option<Self> {
        let reserved = matches!(
            code,
            0 | 255
                | OPT_VENDOR_INFO
                | OPT_VENDOR_CLASS
                | OPT_VIVSO
                | OPT_OVERLOAD
                | OPT_MESSAGE_TYPE
                | OPT_RELAY_AGENT
        );
        (!reserved && (1..=255).contains(&data.len())).then(|| Self {
            code,
            data: data.into_boxed_slice(),
        })
    }

    pub fn code(&self) -> u8 {
        self.code
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// The DHCPv4 Network Unlock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub xid: u32,
    pub secs: u16,
    pub hops: u8,
    /// Windows sets the broadcast flag.
    pub broadcast: bool,
    pub client_mac: [u8; 6],
    /// The client's leased address.
    pub ciaddr: Ipv4Addr,
    /// Windows repeats its leased address here too.
    pub yiaddr: Ipv4Addr,
    /// The DHCP server that granted the lease.
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The lease's options, repeated; encoded in ascending code order with the payload options.
    pub lease_options: Vec<LeaseOption>,
    pub thumbprint: Thumbprint,
    pub key_protector: KeyProtector,
}

/// The DHCPv4 Network Unlock reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub xid: u32,
    pub hops: u8,
    pub broadcast: bool,
    pub client_mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub reply: KeyProtectorReply,
}

impl Request {
    /// A request as Windows builds it once it holds a lease for `client_addr` from `dhcp_server`.
    pub fn after_lease(
        xid: u32,
        client_mac: [u8; 6],
        client_addr: Ipv4Addr,
        dhcp_server: Ipv4Addr,
        lease_options: Vec<LeaseOption>,
        thumbprint: Thumbprint,
        key_protector: KeyProtector,
    ) -> Self {
        Self {
            xid,
            secs: 0,
            hops: 0,
            broadcast: true,
            client_mac,
            ciaddr: client_addr,
            yiaddr: client_addr,
            siaddr: dhcp_server,
            giaddr: Ipv4Addr::UNSPECIFIED,
            lease_options,
            thumbprint,
            key_protector,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut msg = header(
            BOOTREQUEST,
            self.xid,
            self.hops,
            self.broadcast,
            self.client_mac,
            [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr],
        );
        msg.set_secs(self.secs);
        let opts = msg.opts_mut();
        for option in &self.lease_options {
            insert_raw(opts, option.code, option.data.to_vec());
        }
        let mut vendor_info = Vec::with_capacity(REQUEST_OPT43_LEN);
        suboptions::write(&mut vendor_info, Width::One, 1, self.thumbprint.as_bytes());
        suboptions::write(
            &mut vendor_info,
            Width::One,
            2,
            self.key_protector.first_half(),
        );
        insert_raw(opts, OPT_VENDOR_INFO, vendor_info);
        insert_raw(opts, OPT_VENDOR_CLASS, VENDOR_CLASS.to_vec());
        let mut vivso = Vec::with_capacity(REQUEST_OPT125_LEN);
        vivso.extend_from_slice(&ENTERPRISE_MICROSOFT.to_be_bytes());
        vivso.push(130);
        suboptions::write(&mut vivso, Width::One, 1, self.key_protector.second_half());
        insert_raw(opts, OPT_VIVSO, vivso);
        to_bytes(&msg)
    }
}

impl Reply {
    /// The reply to `request`, copying its `xid`, `chaddr`, addresses and flags.
    pub fn answering(request: &Request, reply: KeyProtectorReply) -> Self {
        Self {
            xid: request.xid,
            hops: request.hops,
            broadcast: request.broadcast,
            client_mac: request.client_mac,
            ciaddr: request.ciaddr,
            yiaddr: request.yiaddr,
            siaddr: request.siaddr,
            giaddr: request.giaddr,
            reply,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut msg = header(
            BOOTREPLY,
            self.xid,
            self.hops,
            self.broadcast,
            self.client_mac,
            [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr],
        );
        let opts = msg.opts_mut();
        let mut vendor_info = Vec::with_capacity(REPLY_OPT43_LEN);
        suboptions::write(&mut vendor_info, Width::One, 2, self.reply.as_bytes());
        insert_raw(opts, OPT_VENDOR_INFO, vendor_info);
        insert_raw(opts, OPT_VENDOR_CLASS, VENDOR_CLASS.to_vec());
        to_bytes(&msg)
    }
}

fn header(
    op: u8,
    xid: u32,
    hops: u8,
    broadcast: bool,
    mac: [u8; 6],
    [ciaddr, yiaddr, siaddr, giaddr]: [Ipv4Addr; 4],
) -> dhcp::Message {
    let mut msg = dhcp::Message::new_with_id(xid, ciaddr, yiaddr, siaddr, giaddr, &mac);
    msg.set_opcode(if op == BOOTREPLY {
        dhcp::Opcode::BootReply
    } else {
        dhcp::Opcode::BootRequest
    });
    msg.set_hops(hops);
    let flags = dhcp::Flags::default();
    msg.set_flags(if broadcast {
        flags.set_broadcast()
    } else {
        flags
    });
    msg
}

/// Inserts an option with its bytes exactly as given. dhcproto keeps options in a BTreeMap, so
/// they are written in ascending code order, which is the order Windows uses.
fn insert_raw(opts: &mut dhcp::DhcpOptions, code: u8, data: Vec<u8>) {
    opts.insert(dhcp::DhcpOption::Unknown(dhcp::UnknownOption::new(
        code.into(),
        data,
    )));
}

fn to_bytes(msg: &dhcp::Message) -> Vec<u8> {
    dhcp_wire::encode_exact(msg)
        .expect("a Network Unlock message has no option over 255 bytes and always encodes")
}

/// Decodes a DHCPv4 payload (the UDP body) as a Network Unlock request or reply.
///
/// An ordinary DHCP message (no option 60) decodes to [`DecodeError::MissingVendorClass`]: servers
/// and clients ignore those ([`DecodeError::is_not_network_unlock`]).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() < OPTIONS_OFFSET {
        return Err(DecodeError::Truncated {
            what: "DHCPv4 header",
            needed: OPTIONS_OFFSET,
            available: bytes.len(),
        });
    }
    let cookie = &bytes[236..OPTIONS_OFFSET];
    if cookie != MAGIC_COOKIE {
        return Err(DecodeError::BadMagicCookie(hex::encode(cookie)));
    }
    let (op, htype, hlen) = (bytes[0], bytes[1], bytes[2]);
    if op != BOOTREQUEST && op != BOOTREPLY {
        return Err(DecodeError::UnknownOpcode(op));
    }
    if plainly_not_network_unlock(&bytes[OPTIONS_OFFSET..]) {
        return Err(DecodeError::MissingVendorClass);
    }
    let options = options::walk_v4(&bytes[OPTIONS_OFFSET..])?;
    options::no_duplicates(&options)?;
    if options::unique(&options, OPT_OVERLOAD.into())?.is_some() {
        return Err(DecodeError::OptionOverload);
    }
    // Whether this is a Network Unlock message at all comes first: an ordinary DHCP packet of
    // another link type is not ours, rather than malformed.
    check_vendor_class(&options)?;
    if htype != 1 || hlen != 6 {
        return Err(DecodeError::NotEthernet { htype, hlen });
    }
    // The fixed header's fields, once the message is known to be ours: an ordinary DHCP
    // message (most of what a client hears on a busy segment) is refused above without it.
    // dhcproto reads the 240 bytes checked above without fail; the error is kept for safety.
    let header = dhcp::Message::from_bytes(&bytes[..OPTIONS_OFFSET]).map_err(|_| {
        DecodeError::Truncated {
            what: "DHCPv4 header",
            needed: OPTIONS_OFFSET,
            available: bytes.len(),
        }
    })?;
    let mut client_mac = [0u8; 6];
    client_mac.copy_from_slice(&bytes[28..34]);
    if let Some(message_type) = options::unique(&options, OPT_MESSAGE_TYPE.into())? {
        return Err(DecodeError::HasMessageType(
            message_type.first().copied().unwrap_or(0),
        ));
    }
    let vendor_info = options::required(&options, OPT_VENDOR_INFO.into())?;

    if op == BOOTREPLY {
        let [kpr] = suboptions::read_exact(
            OPT_VENDOR_INFO.into(),
            Width::One,
            vendor_info,
            [(2, crate::KPR_LEN)],
        )?;
        let reply = KeyProtectorReply::try_from(kpr).expect("length checked by read_exact");
        return Ok(Message::V4Reply(Reply {
            xid: header.xid(),
            hops: header.hops(),
            broadcast: header.flags().broadcast(),
            client_mac,
            ciaddr: header.ciaddr(),
            yiaddr: header.yiaddr(),
            siaddr: header.siaddr(),
            giaddr: header.giaddr(),
            reply,
        }));
    }

    let [thumbprint, first_half] = suboptions::read_exact(
        OPT_VENDOR_INFO.into(),
        Width::One,
        vendor_info,
        [(1, 20), (2, 128)],
    )?;
    let vivso = options::required(&options, OPT_VIVSO.into())?;
    let second_half = read_vivso(vivso)?;
    let mut lease_options: Vec<LeaseOption> = options
        .iter()
        .filter_map(|o| {
            let code = u8::try_from(o.code).ok()?;
            LeaseOption::new(code, o.data.to_vec())
        })
        .collect();
    // A request waits in the server's queue: no spare capacity.
    lease_options.shrink_to_fit();
    Ok(Message::V4Request(Request {
        xid: header.xid(),
        secs: header.secs(),
        hops: header.hops(),
        broadcast: header.flags().broadcast(),
        client_mac,
        ciaddr: header.ciaddr(),
        yiaddr: header.yiaddr(),
        siaddr: header.siaddr(),
        giaddr: header.giaddr(),
        lease_options,
        thumbprint: Thumbprint::from_bytes(
            thumbprint.try_into().expect("length checked by read_exact"),
        ),
        key_protector: KeyProtector::from_halves(
            first_half.try_into().expect("length checked by read_exact"),
            second_half,
        ),
    }))
}

fn check_vendor_class(options: &[RawOption<'_>]) -> Result<(), DecodeError> {
    match options::unique(options, OPT_VENDOR_CLASS.into())? {
        None => Err(DecodeError::MissingVendorClass),
        Some(class) if class == VENDOR_CLASS => Ok(()),
        Some(class) => Err(DecodeError::WrongVendorClass(
            String::from_utf8_lossy(class).into_owned(),
        )),
    }
}

/// Whether `options` (a DHCPv4 options field) is well formed up to its End, holds no option
/// twice, and has neither an overload (52) nor a vendor class (60): then [`decode`] can only say
/// [`DecodeError::MissingVendorClass`], and says it without listing the options. Most of what a
/// client or a WDS server hears on a busy segment is such an ordinary DHCP message. Anything
/// else (a vendor class, or a fault the full walk names) takes the full walk.
fn plainly_not_network_unlock(options: &[u8]) -> bool {
    let mut seen = [false; 256];
    let mut walk = dhcp_wire::walk_v4(options);
    for option in &mut walk {
        let Ok(option) = option else {
            return false;
        };
        let Some(slot) = seen.get_mut(usize::from(option.code)) else {
            return false;
        };
        if *slot || option.code == OPT_VENDOR_CLASS.into() || option.code == OPT_OVERLOAD.into() {
            return false;
        }
        *slot = true;
    }
    // Without an End, the full walk names the fault.
    walk.ended()
}

/// Option 125: enterprise 311, data length 130, sub-option 1 of 128 bytes.
fn read_vivso(vivso: &[u8]) -> Result<&[u8; 128], DecodeError> {
    let code = OPT_VIVSO.into();
    let Some((enterprise, rest)) = vivso.split_first_chunk::<4>() else {
        return Err(DecodeError::OptionLength {
            code,
            expected: REQUEST_OPT125_LEN,
            found: vivso.len(),
        });
    };
    let enterprise = u32::from_be_bytes(*enterprise);
    if enterprise != ENTERPRISE_MICROSOFT {
        return Err(DecodeError::WrongEnterprise {
            option: code,
            found: enterprise,
        });
    }
    let Some((&declared, data)) = rest.split_first() else {
        return Err(DecodeError::OptionLength {
            code,
            expected: REQUEST_OPT125_LEN,
            found: vivso.len(),
        });
    };
    if usize::from(declared) != data.len() {
        return Err(DecodeError::VendorDataLength {
            option: code,
            declared: declared.into(),
            found: data.len(),
        });
    }
    let [second_half] = suboptions::read_exact(code, Width::One, data, [(1, 128)])?;
    Ok(second_half
        .try_into()
        .expect("length checked by read_exact"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the full walk says of an options field, as far as `decode` goes before the vendor
    /// class is known to be there.
    fn full_walk(options: &[u8]) -> Result<(), DecodeError> {
        let walked = options::walk_v4(options)?;
        options::no_duplicates(&walked)?;
        if options::unique(&walked, OPT_OVERLOAD.into())?.is_some() {
            return Err(DecodeError::OptionOverload);
        }
        check_vendor_class(&walked)
    }

    /// Options fields that are often well formed: option headers with fitting lengths, pads,
    /// an End or not, now and then a code that repeats or a vendor class.
    fn options_field() -> impl Strategy<Value = Vec<u8>> {
        let option = (
            prop_oneof![Just(0u8), Just(53), Just(60), Just(52), any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..6),
        )
            .prop_map(|(code, data)| match code {
                0 | 255 => vec![code],
                _ => {
                    let mut o = vec![code, data.len() as u8];
                    o.extend(data);
                    o
                }
            });
        (
            proptest::collection::vec(option, 0..8),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(options, end, tail)| {
                let mut field: Vec<u8> = options.concat();
                if end {
                    field.push(255);
                }
                field.extend(tail);
                field
            })
    }

    proptest! {
        /// The shortcut says "not Network Unlock" only where the full walk says exactly that.
        #[test]
        fn the_shortcut_agrees_with_the_full_walk(field in options_field()) {
            if plainly_not_network_unlock(&field) {
                prop_assert_eq!(full_walk(&field), Err(DecodeError::MissingVendorClass));
            }
        }

        #[test]
        fn the_shortcut_agrees_on_arbitrary_bytes(field in proptest::collection::vec(any::<u8>(), 0..80)) {
            if plainly_not_network_unlock(&field) {
                prop_assert_eq!(full_walk(&field), Err(DecodeError::MissingVendorClass));
            }
        }
    }

    #[test]
    fn the_shortcut_takes_ordinary_dhcp_and_leaves_the_rest() {
        // DHCPDISCOVER with a parameter list, then End.
        assert!(plainly_not_network_unlock(&[53, 1, 1, 55, 2, 1, 3, 255]));
        // A vendor class, an overload, a duplicate, no End, a truncated option: the full walk.
        for field in [
            &[
                60, 9, b'B', b'I', b'T', b'L', b'O', b'C', b'K', b'E', b'R', 255,
            ][..],
            &[52, 1, 3, 255],
            &[53, 1, 1, 53, 1, 3, 255],
            &[53, 1, 1],
            &[53, 4, 1, 255],
        ] {
            assert!(!plainly_not_network_unlock(field), "{field:?}");
        }
    }
}
