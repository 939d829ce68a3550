//! `nulab packet decode`'s whole input path: format detection (pcap, pcapng, hex dumps in every
//! style, raw bytes), splitting into packets, locating DHCP in each (Ethernet, IP or bare) and
//! building the view that is printed (text and JSON). The nulab crate is a binary, so its two
//! modules are compiled in here from their files.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/nulab/src/packet_input.rs"]
mod packet_input;
#[allow(dead_code)]
#[path = "../../crates/nulab/src/packet_view.rs"]
mod packet_view;

fuzz_target!(|data: &[u8]| {
    let Ok((_, packets)) = packet_input::read_packets("fuzz", data) else {
        return;
    };
    for (i, packet) in packets.iter().enumerate() {
        if let Ok(view) = packet_view::view(i + 1, &packet.origin, &packet.bytes) {
            let _ = view.to_text();
            let _ = serde_json::to_string(&view).expect("a view always serializes");
        }
    }
});
