//! Any datagram into the DHCPv4 server core (relay-aware, pools and leases), as it arrives from
//! a client on its link or from a relay: it may answer or drop, never panic. A second datagram
//! (the rest of the input after a 0xff 0xfe split) exercises the state the first one left.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcp::{Pool, Received, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;

fn server() -> Server {
    Server::new(ServerConfig::new(
        vec!["10.0.0.1/24".parse().expect("literal")],
        vec![
            Pool::new(
                "10.0.0.0/24".parse().expect("literal"),
                Ipv4Addr::new(10, 0, 0, 100),
                Ipv4Addr::new(10, 0, 0, 199),
            )
            .router(Ipv4Addr::new(10, 0, 0, 254)),
            Pool::new(
                "10.0.1.0/24".parse().expect("literal"),
                Ipv4Addr::new(10, 0, 1, 100),
                Ipv4Addr::new(10, 0, 1, 199),
            ),
        ],
    ))
}

fuzz_target!(|data: &[u8]| {
    let mut server = server();
    let (first, second) = match data.windows(2).position(|w| w == [0xff, 0xfe]) {
        Some(at) => (&data[..at], Some(&data[at + 2..])),
        None => (data, None),
    };
    for (i, payload) in [Some(first), second].into_iter().flatten().enumerate() {
        let relayed = payload
            .get(24..28)
            .is_some_and(|giaddr| giaddr != [0, 0, 0, 0]);
        let src = if relayed { "10.0.1.1:67" } else { "0.0.0.0:68" };
        server.handle(
            Duration::from_secs(i as u64),
            Received {
                interface: 0,
                src: src.parse().expect("literal"),
                dst: "255.255.255.255:67".parse().expect("literal"),
                payload,
            },
        );
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
    server.handle_timeout(Duration::from_secs(100_000));
});
