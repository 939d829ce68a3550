//! The reader's behaviour on well-formed, truncated and arbitrary bytes.

use super::*;
use dhcproto::Encodable;
use proptest::prelude::*;

fn v4_message(options: &[u8]) -> Vec<u8> {
    let mut message = vec![0u8; BOOTP_HEADER_LEN];
    message[0] = 1;
    message.extend_from_slice(&MAGIC_COOKIE);
    message.extend_from_slice(options);
    message
}

#[test]
fn v4_walk_skips_pads_and_stops_at_end() {
    let walk = read_v4(&[0, 1, 2, 0xaa, 0xbb, 0, 255, 9, 9]).expect("well formed");
    assert_eq!(
        walk.options,
        vec![RawOption {
            code: 1,
            data: &[0xaa, 0xbb]
        }]
    );
    assert!(walk.ended);
    let open = read_v4(&[1, 1, 7]).expect("well formed");
    assert!(!open.ended, "no End: the bytes ran out");
}

#[test]
fn the_walk_goes_one_option_at_a_time_and_stops_for_good() {
    let mut walk = walk_v4(&[0, 1, 1, 7, 255, 2, 1, 9]);
    assert_eq!(
        walk.next(),
        Some(Ok(RawOption {
            code: 1,
            data: &[7]
        }))
    );
    assert_eq!(walk.next(), None);
    assert!(walk.ended(), "stopped at End");
    assert_eq!(walk.next(), None, "nothing after End");
    // A truncated option is the last item.
    let mut walk = walk_v4(&[1, 1, 7, 2, 5, 0]);
    assert_eq!(
        walk.next(),
        Some(Ok(RawOption {
            code: 1,
            data: &[7]
        }))
    );
    assert!(matches!(
        walk.next(),
        Some(Err(WireError::OptionTruncated { code: 2, .. }))
    ));
    assert_eq!(walk.next(), None);
    assert!(!walk.ended());
}

#[test]
fn v4_walk_reports_truncation() {
    assert_eq!(
        read_v4(&[60, 9, b'B']),
        Err(WireError::OptionTruncated {
            code: 60,
            declared: 9,
            available: 1
        })
    );
    assert!(matches!(
        read_v4(&[1]),
        Err(WireError::OptionTruncated { code: 1, .. })
    ));
}

#[test]
fn a_v4_message_needs_its_cookie() {
    let message = v4_message(&[53, 1, 1, 255]);
    assert_eq!(v4_message_options(&message).expect("ok").options.len(), 1);
    let mut wrong = message.clone();
    wrong[BOOTP_HEADER_LEN] = 0;
    assert_eq!(v4_message_options(&wrong), Err(WireError::NotDhcpV4));
    assert_eq!(
        v4_message_options(&message[..200]),
        Err(WireError::NotDhcpV4)
    );
}

#[test]
fn v6_walk_reads_two_byte_headers() {
    let opts = read_v6(&[0, 8, 0, 2, 1, 44, 0, 6, 0, 0]).expect("well formed");
    assert_eq!(opts.len(), 2);
    assert_eq!(opts[0].data, &[1, 44]);
    assert!(matches!(
        read_v6(&[0, 8, 0, 9, 1]),
        Err(WireError::OptionTruncated { code: 8, .. })
    ));
    assert_eq!(v6_message_options(&[11, 1]), Err(WireError::NotDhcpV6));
}

#[test]
fn network_unlock_requests_are_recognised_in_both_families() {
    let mut v4 = vec![60, 9];
    v4.extend_from_slice(NETWORK_UNLOCK_VENDOR_CLASS);
    v4.push(255);
    assert!(v4_is_network_unlock(&v4_message(&v4)));
    assert!(!v4_is_network_unlock(&v4_message(&[
        60, 3, b'M', b'S', b'F', 255
    ])));
    let mut v6 = vec![11, 0, 0, 1, 0, 16, 0, 15, 0, 0, 1, 0x37, 0, 9];
    v6.extend_from_slice(NETWORK_UNLOCK_VENDOR_CLASS);
    assert!(v6_is_network_unlock(&v6));
    assert!(!v6_is_network_unlock(&v6[..v6.len() - 1]));
}

#[test]
fn names_dhcp_messages_and_network_unlock() {
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    let mut msg = Message::default();
    msg.set_xid(0xabcd);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let plain = msg.to_vec().expect("encode");
    let (c, s) = (
        "0.0.0.0:68".parse().expect("a"),
        "255.255.255.255:67".parse().expect("a"),
    );
    assert_eq!(summarise(c, s, &plain), "DHCPv4 DISCOVER xid=0x0000abcd");
    msg.opts_mut()
        .insert(DhcpOption::ClassIdentifier(b"BITLOCKER".to_vec()));
    let unlock = msg.to_vec().expect("encode");
    assert_eq!(
        summarise(c, s, &unlock),
        "DHCPv4 DISCOVER xid=0x0000abcd (Network Unlock)"
    );
    assert_eq!(summarise(c, s, b"junk"), "DHCPv4 (malformed)");
    assert_eq!(summarise(s, "10.0.0.1:9".parse().expect("a"), b"x"), "UDP");
}

#[test]
fn names_dhcpv6_messages() {
    use dhcproto::v6::{Message, MessageType};
    let msg = Message::new_with_id(MessageType::InformationRequest, [1, 2, 3]);
    let bytes = msg.to_vec().expect("encode");
    let (c, s) = (
        "[fe80::1]:546".parse().expect("a"),
        "[ff02::1:2]:547".parse().expect("a"),
    );
    assert_eq!(
        summarise(c, s, &bytes),
        "DHCPv6 INFORMATIONREQUEST xid=0x010203"
    );
}

proptest! {
    #[test]
    fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = read_v4(&bytes);
        let _ = read_v6(&bytes);
        let _ = v4_is_network_unlock(&bytes);
        let _ = v6_is_network_unlock(&bytes);
    }

    #[test]
    fn summarising_arbitrary_bytes_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..700),
        v6 in any::<bool>(),
    ) {
        let (c, s): (SocketAddr, SocketAddr) = if v6 {
            ("[fe80::1]:546".parse().expect("a"), "[ff02::1:2]:547".parse().expect("a"))
        } else {
            ("0.0.0.0:68".parse().expect("a"), "255.255.255.255:67".parse().expect("a"))
        };
        let mut payload = payload;
        if !v6 && payload.len() >= V4_OPTIONS_AT {
            // A valid magic cookie, so the option walk runs on arbitrary options.
            payload[BOOTP_HEADER_LEN..V4_OPTIONS_AT].copy_from_slice(&MAGIC_COOKIE);
        }
        let text = summarise(c, s, &payload);
        prop_assert!(text.starts_with("DHCP"));
    }
}

proptest! {
    /// The exact encoding is dhcproto's, byte for byte, in a list with no spare room, for
    /// messages of any size (the thread's buffer is reused across them).
    #[test]
    fn an_exact_encoding_is_dhcprotos_without_spare_room(
        xid in any::<u32>(),
        chaddr in any::<[u8; 6]>(),
        options in proptest::collection::vec(
            (224u8..=254, proptest::collection::vec(any::<u8>(), 0..=255)),
            0..8,
        ),
        v6_xid in any::<[u8; 3]>(),
    ) {
        use dhcproto::v4;
        let mut message = v4::Message::default();
        message.set_xid(xid).set_chaddr(&chaddr);
        message.opts_mut().insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
        for (code, data) in options {
            message
                .opts_mut()
                .insert(v4::DhcpOption::Unknown(v4::UnknownOption::new(code.into(), data)));
        }
        let exact = encode_exact(&message).expect("encodes");
        prop_assert_eq!(&exact, &message.to_vec().expect("encodes"));
        prop_assert_eq!(exact.len(), exact.capacity());

        let mut v6 = dhcproto::v6::Message::new(dhcproto::v6::MessageType::InformationRequest);
        v6.set_xid(v6_xid);
        let exact = encode_exact(&v6).expect("encodes");
        prop_assert_eq!(&exact, &v6.to_vec().expect("encodes"));
        prop_assert_eq!(exact.len(), exact.capacity());
    }
}
