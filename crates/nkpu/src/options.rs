//! Strict, allocation-light walkers over raw DHCPv4 and DHCPv6 options, and the names of the
//! options a Network Unlock exchange carries. The walk itself is the workspace's one reader of
//! the DHCP wire format (`dhcp_wire`); this module adds the strictness Network Unlock needs (a
//! missing End is an error; duplicates are found) and the typed [`DecodeError`]s.
//!
//! Written by hand because the decoders we build on are lenient where Network Unlock must be
//! strict: dhcproto's DHCPv4 decoder stops silently at a malformed option and keeps only the
//! last of duplicated options, and its DHCPv6 decoder sorts options and misreads option 17's
//! sub-options. A server that drops malformed requests needs to *see* truncation, duplicates and
//! order; a capture reader needs every option as it was on the wire.

use crate::DecodeError;

/// One option as it stood on the wire.
pub use dhcp_wire::RawOption;

fn decode_error(error: dhcp_wire::WireError) -> DecodeError {
    match error {
        dhcp_wire::WireError::OptionTruncated {
            code,
            declared,
            available,
        } => DecodeError::OptionTruncated {
            code,
            declared,
            available,
        },
        // The walkers below are given the options field, never a whole message.
        _ => DecodeError::MissingEnd,
    }
}

/// Walks DHCPv4 options (one-byte code and length) up to option 255. Pads (0) are skipped.
/// Errors on an option that runs past the buffer and on a missing End.
pub fn walk_v4(bytes: &[u8]) -> Result<Vec<RawOption<'_>>, DecodeError> {
    let walk = dhcp_wire::read_v4(bytes).map_err(decode_error)?;
    if !walk.ended {
        return Err(DecodeError::MissingEnd);
    }
    Ok(walk.options)
}

/// Walks DHCPv6 options (two-byte code and length) to the end of the buffer.
pub fn walk_v6(bytes: &[u8]) -> Result<Vec<RawOption<'_>>, DecodeError> {
    dhcp_wire::read_v6(bytes).map_err(decode_error)
}

/// The one option with `code`, if present; an error if it appears twice.
pub fn unique<'a>(options: &[RawOption<'a>], code: u16) -> Result<Option<&'a [u8]>, DecodeError> {
    let mut found = options.iter().filter(|o| o.code == code);
    let first = found.next().map(|o| o.data);
    if found.next().is_some() {
        return Err(DecodeError::DuplicateOption { code });
    }
    Ok(first)
}

/// Like [`unique`], but the option must be there.
pub fn required<'a>(options: &[RawOption<'a>], code: u16) -> Result<&'a [u8], DecodeError> {
    unique(options, code)?.ok_or(DecodeError::MissingOption { code })
}

/// Fails on the first option code that appears twice.
pub fn no_duplicates(options: &[RawOption<'_>]) -> Result<(), DecodeError> {
    let mut seen = [false; 256];
    let mut seen_wide = Vec::new();
    for option in options {
        let slot = match usize::from(option.code) {
            small if small < seen.len() => &mut seen[small],
            _ if seen_wide.contains(&option.code) => {
                return Err(DecodeError::DuplicateOption { code: option.code });
            }
            _ => {
                seen_wide.push(option.code);
                continue;
            }
        };
        if *slot {
            return Err(DecodeError::DuplicateOption { code: option.code });
        }
        *slot = true;
    }
    Ok(())
}

/// The name of a DHCPv4 option, for capture listings.
pub fn v4_name(code: u16) -> &'static str {
    match code {
        1 => "Subnet Mask",
        3 => "Router",
        6 => "Domain Name Server",
        12 => "Host Name",
        15 => "Domain Name",
        28 => "Broadcast Address",
        43 => "Vendor-Specific Information",
        50 => "Requested IP Address",
        51 => "IP Address Lease Time",
        52 => "Option Overload",
        53 => "DHCP Message Type",
        54 => "Server Identifier",
        55 => "Parameter Request List",
        57 => "Maximum DHCP Message Size",
        58 => "Renewal Time (T1)",
        59 => "Rebinding Time (T2)",
        60 => "Vendor Class Identifier",
        61 => "Client Identifier",
        82 => "Relay Agent Information",
        93 => "Client System Architecture",
        94 => "Client Network Device Interface",
        97 => "Client Machine Identifier",
        124 => "V-I Vendor Class",
        125 => "V-I Vendor-Specific Information",
        _ => "Unknown",
    }
}

/// The name of a DHCPv6 option, for capture listings.
pub fn v6_name(code: u16) -> &'static str {
    match code {
        1 => "Client Identifier",
        2 => "Server Identifier",
        3 => "Identity Association for Non-temporary Addresses",
        6 => "Option Request",
        8 => "Elapsed Time",
        13 => "Status Code",
        16 => "Vendor Class",
        17 => "Vendor-specific Information",
        23 => "DNS Recursive Name Server",
        24 => "Domain Search List",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v4_walk_skips_pads_and_stops_at_end() {
        let opts = walk_v4(&[0, 1, 2, 0xaa, 0xbb, 0, 255, 9, 9]).unwrap();
        assert_eq!(
            opts,
            vec![RawOption {
                code: 1,
                data: &[0xaa, 0xbb]
            }]
        );
    }

    #[test]
    fn v4_walk_reports_truncation_and_missing_end() {
        assert_eq!(
            walk_v4(&[60, 9, b'B']),
            Err(DecodeError::OptionTruncated {
                code: 60,
                declared: 9,
                available: 1
            })
        );
        assert_eq!(walk_v4(&[1, 0]), Err(DecodeError::MissingEnd));
        assert!(matches!(
            walk_v4(&[1]),
            Err(DecodeError::OptionTruncated { code: 1, .. })
        ));
    }

    #[test]
    fn duplicates_are_found() {
        let opts = walk_v4(&[60, 1, b'x', 60, 1, b'y', 255]).unwrap();
        assert_eq!(
            unique(&opts, 60),
            Err(DecodeError::DuplicateOption { code: 60 })
        );
        assert_eq!(
            no_duplicates(&opts),
            Err(DecodeError::DuplicateOption { code: 60 })
        );
        let v6 = walk_v6(&[0x01, 0x00, 0, 0, 0x01, 0x00, 0, 0]).unwrap();
        assert_eq!(
            no_duplicates(&v6),
            Err(DecodeError::DuplicateOption { code: 256 })
        );
    }

    #[test]
    fn v6_walk_reads_two_byte_headers() {
        let opts = walk_v6(&[0, 8, 0, 2, 1, 44, 0, 6, 0, 0]).unwrap();
        assert_eq!(opts.len(), 2);
        assert_eq!(opts[0].data, &[1, 44]);
        assert!(matches!(
            walk_v6(&[0, 8, 0, 9, 1]),
            Err(DecodeError::OptionTruncated { code: 8, .. })
        ));
    }

    proptest! {
        #[test]
        fn walkers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = walk_v4(&bytes).map(|o| no_duplicates(&o));
            let _ = walk_v6(&bytes).map(|o| no_duplicates(&o));
        }
    }
}
