//! Every malformation PROTOCOL.md names decodes to its own typed error, never a panic.

use std::net::Ipv4Addr;

use nkpu::{DecodeError, KeyProtector, KeyProtectorReply, Thumbprint, v4, v6};

fn request_v4() -> v4::Request {
    v4::Request::after_lease(
        0x1234_5678,
        [0x00, 0x16, 0x3e, 0x01, 0x11, 0x22],
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![v4::LeaseOption::new(1, vec![255, 255, 255, 0]).unwrap()],
        Thumbprint::from_bytes([0x4a; 20]),
        KeyProtector::from_bytes(core::array::from_fn(|i| i as u8)),
    )
}

/// The request's fixed header with `options` (code, body) written raw after it.
fn v4_with(options: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = request_v4().encode()[..240].to_vec();
    for (code, body) in options {
        bytes.push(*code);
        bytes.push(body.len() as u8);
        bytes.extend_from_slice(body);
    }
    bytes.push(255);
    bytes
}

fn opt43() -> Vec<u8> {
    let mut body = vec![1, 20];
    body.extend([0x4a; 20]);
    body.extend([2, 128]);
    body.extend([0x11; 128]);
    body
}

fn opt125() -> Vec<u8> {
    let mut body = vec![0, 0, 1, 0x37, 130, 1, 128];
    body.extend([0x22; 128]);
    body
}

fn good_options() -> Vec<(u8, Vec<u8>)> {
    vec![(43, opt43()), (60, b"BITLOCKER".to_vec()), (125, opt125())]
}

#[test]
fn the_hand_built_request_is_well_formed() {
    assert!(v4::decode(&v4_with(&good_options())).is_ok());
}

#[test]
fn v4_missing_or_wrong_vendor_class() {
    let mut options = good_options();
    options.retain(|(code, _)| *code != 60);
    let err = v4::decode(&v4_with(&options)).unwrap_err();
    assert_eq!(err, DecodeError::MissingVendorClass);
    assert!(err.is_not_network_unlock());

    let mut options = good_options();
    options[1].1 = b"MSFT 5.0".to_vec();
    let err = v4::decode(&v4_with(&options)).unwrap_err();
    assert_eq!(err, DecodeError::WrongVendorClass("MSFT 5.0".into()));
    assert!(
        err.is_not_network_unlock(),
        "a Windows DHCP client's vendor class"
    );
}

#[test]
fn v4_duplicated_options() {
    let mut options = good_options();
    options.push((43, opt43()));
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::DuplicateOption { code: 43 })
    );
}

#[test]
fn v4_option_53_is_not_part_of_the_protocol() {
    let mut options = good_options();
    options.insert(0, (53, vec![1]));
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::HasMessageType(1))
    );
}

#[test]
fn v4_sub_options_in_the_wrong_order() {
    let mut body = vec![2, 128];
    body.extend([0x11; 128]);
    body.extend([1, 20]);
    body.extend([0x4a; 20]);
    let mut options = good_options();
    options[0].1 = body;
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::SubOptionOrder {
            option: 43,
            expected: 1,
            found: 2
        })
    );
}

#[test]
fn v4_wrong_lengths() {
    // Thumbprint of 19 bytes.
    let mut options = good_options();
    options[0].1[1] = 19;
    options[0].1.remove(2);
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::SubOptionLength {
            option: 43,
            sub: 1,
            expected: 20,
            found: 19
        })
    );
    // A byte after the last sub-option.
    let mut options = good_options();
    options[0].1.push(0);
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::TrailingBytes {
            option: 43,
            count: 1
        })
    );
    // Option 125's data length disagrees with the option.
    let mut options = good_options();
    options[2].1[4] = 131;
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::VendorDataLength {
            option: 125,
            declared: 131,
            found: 130
        })
    );
    // Option 125 from another enterprise.
    let mut options = good_options();
    options[2].1[3] = 0x38;
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::WrongEnterprise {
            option: 125,
            found: 312
        })
    );
    // Option 125 missing.
    let mut options = good_options();
    options.pop();
    assert_eq!(
        v4::decode(&v4_with(&options)),
        Err(DecodeError::MissingOption { code: 125 })
    );
}

#[test]
fn v4_truncated_anywhere() {
    let full = request_v4().encode();
    for cut in 0..full.len() {
        let err = v4::decode(&full[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. }
                    | DecodeError::OptionTruncated { .. }
                    | DecodeError::MissingEnd
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn v4_header_problems() {
    let mut bytes = request_v4().encode();
    bytes[236] = 0;
    assert!(matches!(
        v4::decode(&bytes),
        Err(DecodeError::BadMagicCookie(_))
    ));
    let mut bytes = request_v4().encode();
    bytes[0] = 3;
    assert_eq!(v4::decode(&bytes), Err(DecodeError::UnknownOpcode(3)));
    let mut bytes = request_v4().encode();
    bytes[2] = 17;
    assert_eq!(
        v4::decode(&bytes),
        Err(DecodeError::NotEthernet { htype: 1, hlen: 17 })
    );
}

#[test]
fn v4_reply_with_a_wrong_length_is_refused() {
    let request = request_v4();
    let reply = v4::Reply::answering(&request, KeyProtectorReply::from_bytes([7; 60]));
    let mut bytes = reply.encode();
    // Options: 43 (62) then 60 (9). Shorten sub-option 2 to 59 bytes.
    let at = 240;
    assert_eq!(bytes[at], 43);
    bytes[at + 1] = 61;
    bytes[at + 3] = 59;
    bytes.remove(at + 4);
    assert_eq!(
        v4::decode(&bytes),
        Err(DecodeError::SubOptionLength {
            option: 43,
            sub: 2,
            expected: 60,
            found: 59
        })
    );
}

fn request_v6() -> v6::Request {
    v6::Request {
        xid: [0x45, 0xd4, 0x95],
        client_id: vec![0, 4, 1, 2, 3],
        elapsed: 300,
        thumbprint: Thumbprint::from_bytes([0x4a; 20]),
        key_protector: KeyProtector::from_bytes([0x33; 256]),
    }
}

#[test]
fn v6_missing_or_wrong_vendor_class() {
    let bytes = request_v6().encode();
    // Option 16 is the 4th option: 4 + (4+5) + (4+2) + (4+4) = 27.
    let at = 27;
    assert_eq!(&bytes[at..at + 2], &[0, 16]);
    let mut without = bytes[..at].to_vec();
    without.extend_from_slice(&bytes[at + 4 + 15..]);
    assert_eq!(v6::decode(&without), Err(DecodeError::MissingVendorClass));

    let mut wrong = bytes.clone();
    wrong[at + 4 + 6] = b'b';
    assert_eq!(
        v6::decode(&wrong),
        Err(DecodeError::WrongVendorClass("bITLOCKER".into()))
    );
    // dhcproto 0.15's mistake: option 16 with the wrong length.
    let mut bad_len = bytes.clone();
    bad_len[at + 3] = 14;
    assert!(v6::decode(&bad_len).is_err());
}

#[test]
fn v6_duplicated_and_truncated_options() {
    let bytes = request_v6().encode();
    let mut doubled = bytes.clone();
    doubled.extend_from_slice(&bytes[4..4 + 4 + 5]);
    assert_eq!(
        v6::decode(&doubled),
        Err(DecodeError::DuplicateOption { code: 1 })
    );
    for cut in 0..bytes.len() {
        assert!(v6::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn v6_sub_option_order_and_lengths() {
    let bytes = request_v6().encode();
    // Option 17 starts after option 16: 27 + 4 + 15 = 46; sub-options after 4 + 4 bytes.
    let sub1 = 46 + 4 + 4;
    assert_eq!(&bytes[sub1..sub1 + 4], &[0, 1, 0, 20]);
    let mut swapped = bytes.clone();
    swapped[sub1 + 1] = 2;
    assert_eq!(
        v6::decode(&swapped),
        Err(DecodeError::SubOptionOrder {
            option: 17,
            expected: 1,
            found: 2
        })
    );
    let mut other_enterprise = bytes.clone();
    other_enterprise[46 + 4 + 3] = 0x38;
    assert_eq!(
        v6::decode(&other_enterprise),
        Err(DecodeError::WrongEnterprise {
            option: 17,
            found: 312
        })
    );
}

#[test]
fn v6_reply_without_server_id_is_refused() {
    let request = request_v6();
    let reply = v6::Reply::answering(
        &request,
        vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6],
        KeyProtectorReply::from_bytes([9; 60]),
    );
    let bytes = reply.encode();
    assert!(v6::decode(&bytes).is_ok());
    // Drop option 2 (after option 1 of 4 + 5 bytes).
    let at = 4 + 4 + 5;
    assert_eq!(&bytes[at..at + 2], &[0, 2]);
    let mut without = bytes[..at].to_vec();
    without.extend_from_slice(&bytes[at + 4 + 10..]);
    assert_eq!(v6::decode(&without), Err(DecodeError::MissingServerId));
}

#[test]
fn v6_other_message_types_are_not_network_unlock() {
    let mut bytes = request_v6().encode();
    bytes[0] = 1; // Solicit
    assert_eq!(
        v6::decode(&bytes),
        Err(DecodeError::UnexpectedV6MessageType(1))
    );
}

#[test]
fn every_error_has_a_reason_label() {
    let errors = [
        v4::decode(&[]).unwrap_err(),
        v6::decode(&[11, 0, 0, 0]).unwrap_err(),
    ];
    for err in errors {
        assert!(!err.reason().is_empty());
        assert!(!err.to_string().is_empty());
    }
}
