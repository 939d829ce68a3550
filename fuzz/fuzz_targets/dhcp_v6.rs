//! Any datagram into both DHCPv6 cores: the Information-Request server, and the requester
//! waiting for its Reply (the input's transaction id, bytes 1..4, is replaced by the one it
//! sent, so that the fuzzer reaches the option parsing).
#![no_main]

use std::time::Duration;

use dhcp::Received;
use dhcp::v6::{InfoRequestConfig, InfoRequester, InfoServer, duid_ll};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let client_ll = "fe80::2".parse().expect("literal");
    let server_ll = "fe80::53".parse().expect("literal");
    let mut server = InfoServer::new(
        duid_ll([2, 0, 0, 0, 0, 0x53]),
        vec![server_ll],
        vec!["fd00::53".parse().expect("literal")],
    );
    server.handle(
        Duration::ZERO,
        Received {
            interface: 0,
            src: "[fe80::2]:546".parse().expect("literal"),
            dst: "[ff02::1:2]:547".parse().expect("literal"),
            payload: data,
        },
    );
    while server.poll_transmit().is_some() {}

    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut client = InfoRequester::new(
        InfoRequestConfig::default(),
        0,
        [2, 0, 0, 0, 0, 2],
        client_ll,
    );
    client.start(Duration::ZERO, &mut rng);
    let Some(request) = client.poll_transmit() else {
        return;
    };
    let mut reply = data.to_vec();
    if let (Some(xid), Some(sent)) = (reply.get_mut(1..4), request.payload.get(1..4)) {
        xid.copy_from_slice(sent);
    }
    client.handle(
        Duration::from_millis(5),
        Received {
            interface: 0,
            src: "[fe80::53]:547".parse().expect("literal"),
            dst: "[fe80::2]:546".parse().expect("literal"),
            payload: &reply,
        },
    );
    client.handle_timeout(Duration::from_secs(60), &mut rng);
});
