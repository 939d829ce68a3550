//! Every way a Network Unlock message can be malformed, as one typed error.
//!
//! The unlock provider drops such a message silently on the wire (PROTOCOL.md) but counts and
//! logs it; [`DecodeError::reason`] is the stable label it counts under.

/// Why bytes are not a well-formed Network Unlock message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed part of the message needs.
    #[error("truncated {what}: needs {needed} bytes, has {available}")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("not a DHCP message: the magic cookie is {0}, not 63825363")]
    BadMagicCookie(String),
    #[error("unknown BOOTP op code {0} (1 is BOOTREQUEST, 2 is BOOTREPLY)")]
    UnknownOpcode(u8),
    #[error(
        "hardware address type {htype} of length {hlen}: Network Unlock runs over Ethernet (1, 6)"
    )]
    NotEthernet { htype: u8, hlen: u8 },
    /// DHCPv6 message types other than Information-Request (11) and Reply (7).
    #[error("DHCPv6 message type {0} is not used by Network Unlock (11 request, 7 reply)")]
    UnexpectedV6MessageType(u8),
    /// Windows sends its DHCPv4 request with no option 53 (the specification's "DHCPDISCOVER"
    /// is wrong), and working servers reply without one.
    #[error("a Network Unlock DHCPv4 message carries no option 53, this one says message type {0}")]
    HasMessageType(u8),
    #[error("option {code} declares {declared} bytes but only {available} remain")]
    OptionTruncated {
        code: u16,
        declared: usize,
        available: usize,
    },
    #[error("the DHCPv4 options do not end with option 255")]
    MissingEnd,
    #[error("option {code} appears more than once")]
    DuplicateOption { code: u16 },
    #[error("option 52 (overload) is not supported in Network Unlock messages")]
    OptionOverload,
    /// No vendor class at all: an ordinary DHCP message, not a Network Unlock one.
    #[error("no vendor class option: not a Network Unlock message")]
    MissingVendorClass,
    #[error("the vendor class is {0:?}, not \"BITLOCKER\"")]
    WrongVendorClass(String),
    #[error("option {code} is missing")]
    MissingOption { code: u16 },
    #[error("option {code} must be {expected} bytes, found {found}")]
    OptionLength {
        code: u16,
        expected: usize,
        found: usize,
    },
    #[error("option {option}: enterprise number {found}, expected 311 (Microsoft)")]
    WrongEnterprise { option: u16, found: u32 },
    #[error("option {option}: sub-option {found} where sub-option {expected} belongs")]
    SubOptionOrder {
        option: u16,
        expected: u16,
        found: u16,
    },
    #[error("option {option}: sub-option {sub} must be {expected} bytes, found {found}")]
    SubOptionLength {
        option: u16,
        sub: u16,
        expected: usize,
        found: usize,
    },
    #[error("option {option}: a sub-option runs past the end of the option")]
    SubOptionTruncated { option: u16 },
    #[error("option {option}: {count} bytes follow the last sub-option")]
    TrailingBytes { option: u16, count: usize },
    #[error("option {option}: the vendor data length says {declared}, the option holds {found}")]
    VendorDataLength {
        option: u16,
        declared: usize,
        found: usize,
    },
    /// Windows ignores a DHCPv6 reply without a server identifier.
    #[error("the DHCPv6 reply has no server identifier (option 2)")]
    MissingServerId,
}

impl DecodeError {
    /// A short, stable label for counters and debug logs (`drop.malformed.<reason>`).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::BadMagicCookie(_) => "bad-magic-cookie",
            DecodeError::UnknownOpcode(_) => "unknown-opcode",
            DecodeError::NotEthernet { .. } => "not-ethernet",
            DecodeError::UnexpectedV6MessageType(_) => "unexpected-message-type",
            DecodeError::HasMessageType(_) => "has-message-type",
            DecodeError::OptionTruncated { .. } => "option-truncated",
            DecodeError::MissingEnd => "missing-end",
            DecodeError::DuplicateOption { .. } => "duplicate-option",
            DecodeError::OptionOverload => "option-overload",
            DecodeError::MissingVendorClass => "not-network-unlock",
            DecodeError::WrongVendorClass(_) => "wrong-vendor-class",
            DecodeError::MissingOption { .. } => "missing-option",
            DecodeError::OptionLength { .. } => "option-length",
            DecodeError::WrongEnterprise { .. } => "wrong-enterprise",
            DecodeError::SubOptionOrder { .. } => "sub-option-order",
            DecodeError::SubOptionLength { .. } => "sub-option-length",
            DecodeError::SubOptionTruncated { .. } => "sub-option-truncated",
            DecodeError::TrailingBytes { .. } => "trailing-bytes",
            DecodeError::VendorDataLength { .. } => "vendor-data-length",
            DecodeError::MissingServerId => "missing-server-id",
        }
    }

    /// `true` when the message is simply not a Network Unlock message (an ordinary DHCP packet:
    /// no vendor class, or another one such as a PXE client's `PXEClient:Arch:00007`), which
    /// servers and clients ignore without calling it malformed.
    pub fn is_not_network_unlock(&self) -> bool {
        matches!(
            self,
            DecodeError::MissingVendorClass | DecodeError::WrongVendorClass(_)
        )
    }
}
