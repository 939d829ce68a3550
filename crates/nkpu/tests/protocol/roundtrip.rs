//! proptest: encode → decode round trips for requests and replies, v4 and v6; arbitrary bytes
//! and mutated valid messages never panic the decoders.

use std::net::Ipv4Addr;

use nkpu::{KeyProtector, KeyProtectorReply, Message, Thumbprint, v4, v6};
use proptest::prelude::*;

fn lease_option() -> impl Strategy<Value = v4::LeaseOption> {
    (1u8..=254, proptest::collection::vec(any::<u8>(), 0..16))
        .prop_filter_map("reserved code", |(code, data)| {
            v4::LeaseOption::new(code, data)
        })
}

/// Lease options as the encoder writes them: unique codes, ascending (dhcproto keeps options
/// in code order, as Windows does).
fn lease_options() -> impl Strategy<Value = Vec<v4::LeaseOption>> {
    proptest::collection::vec(lease_option(), 0..8).prop_map(|mut options| {
        options.sort_by_key(|o| o.code());
        options.dedup_by_key(|o| o.code());
        options
    })
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

prop_compose! {
    fn request_v4()(
        xid in any::<u32>(),
        secs in any::<u16>(),
        hops in any::<u8>(),
        broadcast in any::<bool>(),
        client_mac in any::<[u8; 6]>(),
        addrs in (ipv4(), ipv4(), ipv4(), ipv4()),
        lease_options in lease_options(),
        thumbprint in any::<[u8; 20]>(),
        kp in proptest::collection::vec(any::<u8>(), 256),
    ) -> v4::Request {
        v4::Request {
            xid, secs, hops, broadcast, client_mac,
            ciaddr: addrs.0, yiaddr: addrs.1, siaddr: addrs.2, giaddr: addrs.3,
            lease_options,
            thumbprint: Thumbprint::from_bytes(thumbprint),
            key_protector: KeyProtector::from_bytes(kp.try_into().unwrap()),
        }
    }
}

prop_compose! {
    fn reply_v4()(
        xid in any::<u32>(),
        hops in any::<u8>(),
        broadcast in any::<bool>(),
        client_mac in any::<[u8; 6]>(),
        addrs in (ipv4(), ipv4(), ipv4(), ipv4()),
        kpr in proptest::collection::vec(any::<u8>(), 60),
    ) -> v4::Reply {
        v4::Reply {
            xid, hops, broadcast, client_mac,
            ciaddr: addrs.0, yiaddr: addrs.1, siaddr: addrs.2, giaddr: addrs.3,
            reply: KeyProtectorReply::try_from(kpr.as_slice()).unwrap(),
        }
    }
}

prop_compose! {
    fn request_v6()(
        xid in any::<[u8; 3]>(),
        client_id in proptest::collection::vec(any::<u8>(), 0..40),
        elapsed in any::<u16>(),
        thumbprint in any::<[u8; 20]>(),
        kp in proptest::collection::vec(any::<u8>(), 256),
    ) -> v6::Request {
        v6::Request {
            xid, client_id, elapsed,
            thumbprint: Thumbprint::from_bytes(thumbprint),
            key_protector: KeyProtector::from_bytes(kp.try_into().unwrap()),
        }
    }
}

prop_compose! {
    fn reply_v6()(
        xid in any::<[u8; 3]>(),
        server_id in proptest::collection::vec(any::<u8>(), 0..40),
        client_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        kpr in proptest::collection::vec(any::<u8>(), 60),
    ) -> v6::Reply {
        v6::Reply {
            xid, server_id, client_id,
            reply: KeyProtectorReply::try_from(kpr.as_slice()).unwrap(),
        }
    }
}

proptest! {
    #[test]
    fn v4_request_round_trips(req in request_v4()) {
        let bytes = req.encode();
        prop_assert_eq!(v4::decode(&bytes), Ok(Message::V4Request(req)));
    }

    #[test]
    fn v4_reply_round_trips(reply in reply_v4()) {
        let bytes = reply.encode();
        prop_assert_eq!(v4::decode(&bytes), Ok(Message::V4Reply(reply)));
    }

    #[test]
    fn v6_request_round_trips(req in request_v6()) {
        let bytes = req.encode();
        prop_assert_eq!(v6::decode(&bytes), Ok(Message::V6Request(req)));
    }

    #[test]
    fn v6_reply_round_trips(reply in reply_v6()) {
        let bytes = reply.encode();
        prop_assert_eq!(v6::decode(&bytes), Ok(Message::V6Reply(reply)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = v4::decode(&bytes);
        let _ = v6::decode(&bytes);
    }

    /// Valid messages with a few bytes changed reach far deeper into the decoders than random
    /// bytes do.
    #[test]
    fn mutated_messages_never_panic(
        req in request_v4(),
        req6 in request_v6(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [req.encode(), req6.encode()] {
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            let _ = v4::decode(&bytes);
            let _ = v6::decode(&bytes);
            let cut = cut.index(bytes.len() + 1);
            let _ = v4::decode(&bytes[..cut]);
            let _ = v6::decode(&bytes[..cut]);
        }
    }
}
