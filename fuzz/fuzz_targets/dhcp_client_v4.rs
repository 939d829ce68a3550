//! Any datagram into the DHCPv4 client core (the UEFI firmware's DORA), after it has sent its
//! Discover. The input's transaction id (bytes 4..8) is replaced by the client's own so that the
//! fuzzer reaches past the xid check into option parsing, offers and acks.
#![no_main]

use std::time::Duration;

use dhcp::{AdapterFacts, Client, ClientConfig, Received};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut client = Client::new(
        ClientConfig::default(),
        AdapterFacts::ready([2, 0, 0, 0, 0, 1]),
        0,
    );
    client.start(Duration::ZERO, &mut rng);
    while client.poll_transmit().is_some() {}
    // Several replies in a row (an offer, then an ack), split on 0xff 0xfe.
    for (i, part) in split(data).into_iter().enumerate() {
        let mut payload = part.to_vec();
        if let Some(xid) = payload.get_mut(4..8) {
            xid.copy_from_slice(&client.xid().to_be_bytes());
        }
        client.handle(
            Duration::from_millis(10 * i as u64),
            Received {
                interface: 0,
                src: "10.0.0.1:67".parse().expect("literal"),
                dst: "255.255.255.255:68".parse().expect("literal"),
                payload: &payload,
            },
            &mut rng,
        );
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
    }
    client.handle_timeout(Duration::from_secs(100_000), &mut rng);
});

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xff, 0xfe]) {
        parts.push(&rest[..at]);
        rest = &rest[at + 2..];
        if parts.len() == 4 {
            break;
        }
    }
    parts.push(rest);
    parts
}
