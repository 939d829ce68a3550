//! Raw walks over DHCP options, in wire order, for the two things dhcproto cannot give us.
//!
//! dhcproto keeps DHCPv4 options in a map keyed by code, so the order in which the server sent
//! them is lost, and the Network Unlock request must repeat the lease's options in that order
//! (`../shared/PROTOCOL.md`). And a Network Unlock request has no message type (v4) or carries
//! vendor options that dhcproto misreads (v6), so a server must recognise it *before* handing
//! the bytes to dhcproto, or it would count a well-formed request of another protocol as
//! malformed. The walks are the workspace's one reader of the DHCP wire format (`dhcp_wire`),
//! which nkpu's stricter ones use too.

#[cfg(test)]
use dhcp_wire::MAGIC_COOKIE;

/// One DHCPv4 option of a lease, as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOption {
    pub code: u8,
    pub data: Vec<u8>,
}

/// The options of a DHCPv4 message in wire order (pads skipped, stops at End), or `None` if
/// the message is too short, lacks the magic cookie, or an option runs past the end.
pub(crate) fn v4_options(message: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let walk = dhcp_wire::v4_message_options(message).ok()?;
    // One-byte codes: the walk read each from one byte.
    Some(
        walk.options
            .iter()
            .map(|o| (u8::try_from(o.code).unwrap_or(u8::MAX), o.data))
            .collect(),
    )
}

/// Whether dhcproto 0.15 can decode `message` without panicking. Its decoder indexes chaddr
/// by an unchecked hlen, and asserts (`debug_assert!`, or subtracts without checking) the
/// length of options 80, 81, 94 and 151-155; a repeated option is concatenated (RFC 3396)
/// before those checks, so a repeat of one of them is refused too. Anything refused here is a
/// malformed packet for us.
pub(crate) fn v4_safe_for_dhcproto(message: &[u8]) -> bool {
    if message.get(2).is_none_or(|&hlen| hlen > 16) {
        return false;
    }
    let Some(options) = v4_options(message) else {
        return false;
    };
    let length_ok = |code: u8, len: usize| match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    options.iter().enumerate().all(|(i, &(code, data))| {
        length_ok(code, data.len())
            && (length_ok(code, usize::MAX)
                || !options[..i].iter().any(|&(earlier, _)| earlier == code))
    })
}

/// Whether a DHCPv4 message carries vendor class `BITLOCKER` (option 60).
pub(crate) fn v4_is_network_unlock(message: &[u8]) -> bool {
    dhcp_wire::v4_is_network_unlock(message)
}

/// The options of a DHCPv6 client/server message (after the type and transaction id) in wire
/// order, or `None` if one runs past the end.
pub(crate) fn v6_options(message: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let options = dhcp_wire::v6_message_options(message).ok()?;
    Some(options.iter().map(|o| (o.code, o.data)).collect())
}

/// Whether dhcproto 0.15 can decode the DHCPv6 `message` without panicking: it subtracts
/// without checking from the length of options 13 (status code), 16 and 17 (vendor class and
/// options), and decodes the options nested in IA_NA, IA_TA, IA_PD, their addresses and
/// prefixes and relay messages (3, 4, 5, 9, 25, 26) the same way. Information-Request and
/// Reply carry none of the nested ones, so a message with any of them is refused whole.
/// Option 17's data after its enterprise number is decoded as options again, with the same
/// unchecked subtractions: its sub-options must be safe too. And dhcproto reads options 7, 8,
/// 12, 14, 19 and 20 by their fixed size whatever their length says, so a wrong length makes it
/// read the rest of the message out of step with the walk checked here: those must have their
/// fixed length. (Both found by the `dhcp_v6` fuzz target.)
pub(crate) fn v6_safe_for_dhcproto(message: &[u8]) -> bool {
    v6_options(message).is_some_and(|options| v6_options_safe(&options))
}

fn v6_options_safe(options: &[(u16, &[u8])]) -> bool {
    options.iter().all(|&(code, data)| match code {
        3 | 4 | 5 | 9 | 25 | 26 => false,
        13 => data.len() >= 2,
        16 => data.len() >= 4,
        7 | 19 => data.len() == 1,
        8 => data.len() == 2,
        12 => data.len() == 16,
        14 | 20 => data.is_empty(),
        17 => data.get(4..).is_some_and(|nested| {
            dhcp_wire::read_v6(nested).is_ok_and(|nested| {
                let nested: Vec<(u16, &[u8])> = nested.iter().map(|o| (o.code, o.data)).collect();
                v6_options_safe(&nested)
            })
        }),
        _ => true,
    })
}

/// Whether a DHCPv6 message carries a vendor class (option 16) whose data is `BITLOCKER`.
pub(crate) fn v6_is_network_unlock(message: &[u8]) -> bool {
    dhcp_wire::v6_is_network_unlock(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4_message(options: &[u8]) -> Vec<u8> {
        let mut message = vec![0u8; 236];
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(options);
        message
    }

    #[test]
    fn v4_options_keep_wire_order_and_skip_pads() {
        let message = v4_message(&[54, 4, 10, 0, 0, 1, 0, 0, 1, 4, 255, 255, 255, 0, 255, 3]);
        let options = v4_options(&message).expect("well formed");
        assert_eq!(
            options,
            vec![(54, &[10, 0, 0, 1][..]), (1, &[255, 255, 255, 0][..])]
        );
    }

    #[test]
    fn v4_option_past_the_end_is_refused() {
        assert_eq!(v4_options(&v4_message(&[54, 4, 10, 0])), None);
        assert_eq!(v4_options(&[0u8; 100]), None);
        let mut no_cookie = v4_message(&[255]);
        no_cookie[236] = 0;
        assert_eq!(v4_options(&no_cookie), None);
    }

    #[test]
    fn vendor_class_bitlocker_is_recognised_in_both_families() {
        let mut v4 = vec![60, 9];
        v4.extend_from_slice(crate::NETWORK_UNLOCK_VENDOR_CLASS);
        v4.push(255);
        assert!(v4_is_network_unlock(&v4_message(&v4)));
        assert!(!v4_is_network_unlock(&v4_message(&[
            60, 3, b'P', b'X', b'E', 255
        ])));

        let mut v6 = vec![11, 1, 2, 3, 0, 16, 0, 15, 0, 0, 1, 0x37, 0, 9];
        v6.extend_from_slice(crate::NETWORK_UNLOCK_VENDOR_CLASS);
        assert!(v6_is_network_unlock(&v6));
        assert!(!v6_is_network_unlock(&v6[..v6.len() - 1]));
    }

    #[test]
    fn options_dhcproto_would_assert_on_are_refused() {
        let mut header = v4_message(&[]);
        header[2] = 6;
        let with = |options: &[u8]| [&header[..], options].concat();
        assert!(v4_safe_for_dhcproto(&with(&[152, 4, 0, 0, 0, 1, 255])));
        assert!(!v4_safe_for_dhcproto(&with(&[152, 2, 0, 0, 255])));
        assert!(!v4_safe_for_dhcproto(&with(&[
            152, 4, 0, 0, 0, 1, 152, 4, 0, 0, 0, 1, 255
        ])));
        assert!(!v4_safe_for_dhcproto(&with(&[80, 1, 0, 255])));
        assert!(!v4_safe_for_dhcproto(&with(&[151, 0, 255])));
        assert!(v4_safe_for_dhcproto(&with(&[
            12, 1, b'a', 12, 1, b'b', 255
        ])));
        // Option 17 whose nested options hold an option 17 too short for its enterprise number
        // (the fuzzer's find: dhcproto computes `len - 4` for it and panics).
        let info = |options: &[u8]| [&[11, 1, 2, 3][..], options].concat();
        let nested_short = [0, 17, 0, 10, 0, 0, 1, 55, 0, 17, 0, 2, 0, 0];
        assert!(!v6_safe_for_dhcproto(&info(&nested_short)));
        let nested_fine = [0, 17, 0, 12, 0, 0, 1, 55, 0, 1, 0, 4, 1, 2, 3, 4];
        assert!(v6_safe_for_dhcproto(&info(&nested_fine)));
        // Option 20 (Reconfigure Accept) with two bytes: dhcproto skips none of them, reads
        // `00 10 00 00` as an empty option 16 and subtracts 4 from its length.
        let reconf_accept_with_data = [0, 20, 0, 2, 0, 16, 0, 0];
        assert!(!v6_safe_for_dhcproto(&info(&reconf_accept_with_data)));
        assert!(v6_safe_for_dhcproto(&info(&[
            0, 20, 0, 0, 0, 8, 0, 2, 0, 0
        ])));
        assert!(!v6_safe_for_dhcproto(&info(&[0, 8, 0, 1, 0])));
        let mut long_hlen = with(&[255]);
        long_hlen[2] = 17;
        assert!(!v4_safe_for_dhcproto(&long_hlen));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = v4_options(&bytes);
            let _ = v6_options(&bytes);
            if v6_safe_for_dhcproto(&bytes) {
                let _ = <dhcproto::v6::Message as dhcproto::Decodable>::decode(
                    &mut dhcproto::Decoder::new(&bytes),
                );
            }
            let _ = v4_is_network_unlock(&bytes);
            if v4_safe_for_dhcproto(&bytes) {
                let _ = <dhcproto::v4::Message as dhcproto::Decodable>::decode(
                    &mut dhcproto::Decoder::new(&bytes),
                )
                .map(|m| m.chaddr().len());
            }
            let _ = v6_is_network_unlock(&bytes);
        }
    }
}
