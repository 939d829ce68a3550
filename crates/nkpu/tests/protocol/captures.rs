//! The real Windows 10 captures decode to exactly the fields their README lists, and nkpu's
//! encoder reproduces them byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nkpu::frame::{self, Family, Outer};
use nkpu::{Message, v4, v6};

use crate::hex_fixture;

const THUMBPRINT: &str = "4ad038da813176acbd5caaae0fe3494b0d008159";

#[test]
fn v4_request_capture_decodes_to_the_documented_fields() {
    let frame_bytes = hex_fixture("windows10-nkpu-request-v4.frame.hex");
    let found = frame::locate(&frame_bytes).unwrap();
    assert_eq!(found.family, Family::V4);
    assert_eq!(found.outer, Outer::Ethernet);
    let (src, dst) = found.udp.unwrap();
    assert_eq!(src.port(), 68);
    assert_eq!(dst.port(), 67);
    assert_eq!(dst.ip(), IpAddr::V4(Ipv4Addr::BROADCAST));

    let Message::V4Request(req) = frame::decode(&found).unwrap() else {
        panic!("not a v4 request")
    };
    assert!(req.broadcast, "broadcast flag set");
    assert_eq!(req.ciaddr, Ipv4Addr::new(10, 0, 4, 110));
    assert_eq!(req.yiaddr, Ipv4Addr::new(10, 0, 4, 110));
    assert_eq!(req.siaddr, Ipv4Addr::new(10, 0, 4, 97));
    assert_eq!(req.giaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(req.thumbprint.to_string(), THUMBPRINT);
    let kp = req.key_protector.as_bytes();
    assert_eq!(hex::encode(&kp[..8]), "542851c212ff0699");
    assert_eq!(hex::encode(&kp[248..]), "f871c375f9c86459");
    let lease_codes: Vec<u8> = req.lease_options.iter().map(|o| o.code()).collect();
    assert_eq!(lease_codes, [1, 3, 6, 15, 28, 51, 54, 58, 59]);

    // The options on the wire, in order, with the lengths PROTOCOL.md gives.
    let options = nkpu::options::walk_v4(&found.payload[240..]).unwrap();
    let codes: Vec<u16> = options.iter().map(|o| o.code).collect();
    assert_eq!(codes, [1, 3, 6, 15, 28, 43, 51, 54, 58, 59, 60, 125]);
    let len = |code| options.iter().find(|o| o.code == code).unwrap().data.len();
    assert_eq!(len(43), 152);
    assert_eq!(len(125), 135);
    assert_eq!(len(60), 9);
    assert!(options.iter().all(|o| o.code != 53), "no option 53");
}

#[test]
fn v4_request_capture_re_encodes_byte_for_byte() {
    let frame_bytes = hex_fixture("windows10-nkpu-request-v4.frame.hex");
    let found = frame::locate(&frame_bytes).unwrap();
    let Message::V4Request(req) = frame::decode(&found).unwrap() else {
        panic!("not a v4 request")
    };
    assert_eq!(req.encode(), found.payload);
}

#[test]
fn v6_request_capture_decodes_to_the_documented_fields() {
    let frame_bytes = hex_fixture("windows10-nkpu-request-v6.frame.hex");
    let found = frame::locate(&frame_bytes).unwrap();
    assert_eq!(found.family, Family::V6);
    let (src, dst) = found.udp.unwrap();
    assert_eq!((src.port(), dst.port()), (546, 547));
    assert_eq!(
        dst.ip(),
        IpAddr::V6("ff02::1:2".parse::<Ipv6Addr>().unwrap())
    );

    let Message::V6Request(req) = frame::decode(&found).unwrap() else {
        panic!("not a v6 request")
    };
    assert_eq!(hex::encode(req.xid), "45d495");
    assert_eq!(&req.client_id[..2], &[0, 4], "DUID type 4");
    assert_eq!(req.thumbprint.to_string(), THUMBPRINT);

    let options = nkpu::options::walk_v6(&found.payload[4..]).unwrap();
    let codes: Vec<u16> = options.iter().map(|o| o.code).collect();
    assert_eq!(codes, [1, 8, 6, 16, 17]);
    let oro = options.iter().find(|o| o.code == 6).unwrap().data;
    assert_eq!(oro, &[0, 16, 0, 17]);
    let len = |code| options.iter().find(|o| o.code == code).unwrap().data.len();
    assert_eq!(len(16), v6::VENDOR_CLASS_LEN);
    assert_eq!(len(17), v6::REQUEST_OPT17_LEN);
}

#[test]
fn v6_request_capture_re_encodes_byte_for_byte() {
    let frame_bytes = hex_fixture("windows10-nkpu-request-v6.frame.hex");
    let found = frame::locate(&frame_bytes).unwrap();
    let Message::V6Request(req) = frame::decode(&found).unwrap() else {
        panic!("not a v6 request")
    };
    assert_eq!(req.encode(), found.payload);
}

#[test]
fn the_pcap_files_hold_the_same_frames_as_the_hex_files() {
    for name in ["windows10-nkpu-request-v4", "windows10-nkpu-request-v6"] {
        let pcap =
            std::fs::read(crate::fixtures().join(format!("windows-captures/{name}.pcap"))).unwrap();
        let frame_bytes = hex_fixture(&format!("{name}.frame.hex"));
        // Classic pcap: 24-byte global header, 16-byte record header, then the frame.
        assert_eq!(&pcap[40..], frame_bytes.as_slice(), "{name}");
    }
}

#[test]
fn reply_option43_sample_is_a_well_formed_sub_option_2() {
    let body = hex_fixture("reply-option43-payload-sample.hex");
    assert_eq!(body.len(), v4::REPLY_OPT43_LEN);
    assert_eq!(&body[..2], &[2, 60]);
    // Wrapped in a reply, it decodes; its session key is not public, so it cannot be opened.
    let reply = v4::Reply {
        xid: 1,
        hops: 0,
        broadcast: true,
        client_mac: [0; 6],
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        reply: nkpu::KeyProtectorReply::try_from(&body[2..]).unwrap(),
    };
    let encoded = reply.encode();
    let options = nkpu::options::walk_v4(&encoded[240..]).unwrap();
    assert_eq!(
        options.iter().find(|o| o.code == 43).unwrap().data,
        body.as_slice()
    );
    assert_eq!(v4::decode(&encoded).unwrap(), Message::V4Reply(reply));
}
