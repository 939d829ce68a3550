//! Link-layer and IPv6 link-local addressing: MAC addresses, the EUI-64 link-local address every
//! adapter derives from its MAC, and the multicast MAC mappings that a capture shows.
//!
//! IPv4 interface addresses and subnets are `ipnet::Ipv4Net` (address plus prefix), so that
//! "which subnet is this address in" has one implementation, not one per crate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`, the destination of every broadcast frame.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The six bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// A locally administered unicast address (`02:xx:...`), as the simulator gives adapters
    /// that were not given a MAC: bit 1 of the first byte set (local), bit 0 clear (unicast).
    pub fn local_from(bytes: [u8; 5]) -> MacAddr {
        let [a, b, c, d, e] = bytes;
        MacAddr([0x02, a, b, c, d, e])
    }

    /// The IPv6 link-local address (fe80::/64) derived from this MAC by modified EUI-64
    /// (RFC 4291 appendix A): flip the universal/local bit and insert `ff:fe` in the middle.
    pub fn ipv6_link_local(self) -> Ipv6Addr {
        let m = self.0;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }

    /// The destination MAC of a multicast or broadcast IP destination, or `None` for unicast
    /// (whose MAC is the receiver's). IPv4 multicast maps to `01:00:5e` plus the low 23 bits
    /// (RFC 1112), IPv6 multicast to `33:33` plus the low 32 bits (RFC 2464).
    pub fn for_group(dst: IpAddr) -> Option<MacAddr> {
        match dst {
            IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => Some(MacAddr::BROADCAST),
            IpAddr::V4(v4) if v4.is_multicast() => {
                let o = v4.octets();
                Some(MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
            }
            IpAddr::V6(v6) if v6.is_multicast() => {
                let o = v6.octets();
                Some(MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]))
            }
            _ => None,
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacParseError {
    #[error("a MAC address has six parts separated by ':' or '-', found {0}")]
    PartCount(usize),
    #[error("`{0}` is not a two-digit hexadecimal byte")]
    Byte(String),
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (Windows' `ipconfig` form).
    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(MacParseError::PartCount(parts.len()));
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(MacParseError::Byte((*part).to_owned()));
            }
            *slot = u8::from_str_radix(part, 16)
                .map_err(|_| MacParseError::Byte((*part).to_owned()))?;
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_local_is_modified_eui64() {
        // RFC 4291 appendix A's example shape: 00:11:22:33:44:55 -> fe80::211:22ff:fe33:4455.
        let mac: MacAddr = "00:11:22:33:44:55".parse().expect("valid MAC");
        assert_eq!(
            mac.ipv6_link_local(),
            "fe80::211:22ff:fe33:4455"
                .parse::<Ipv6Addr>()
                .expect("valid v6")
        );
    }

    #[test]
    fn group_macs_follow_the_rfcs() {
        let v4: IpAddr = "224.0.0.251".parse().expect("ip");
        assert_eq!(
            MacAddr::for_group(v4).map(|m| m.to_string()),
            Some("01:00:5e:00:00:fb".into())
        );
        let v6: IpAddr = "ff02::1:2".parse().expect("ip");
        assert_eq!(
            MacAddr::for_group(v6).map(|m| m.to_string()),
            Some("33:33:00:01:00:02".into())
        );
        let bcast = IpAddr::V4(Ipv4Addr::BROADCAST);
        assert_eq!(MacAddr::for_group(bcast), Some(MacAddr::BROADCAST));
        let unicast: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(MacAddr::for_group(unicast), None);
    }

    #[test]
    fn rejects_malformed_macs() {
        assert_eq!(
            "00:11:22".parse::<MacAddr>(),
            Err(MacParseError::PartCount(3))
        );
        assert!(matches!(
            "00:11:22:33:44:zz".parse::<MacAddr>(),
            Err(MacParseError::Byte(_))
        ));
        assert!(matches!(
            "00:11:22:33:44:5".parse::<MacAddr>(),
            Err(MacParseError::Byte(_))
        ));
        assert_eq!(
            "00-11-22-33-44-55".parse::<MacAddr>(),
            Ok(MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55]))
        );
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = MacAddr(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = text.parse::<MacAddr>();
        }
    }
}
