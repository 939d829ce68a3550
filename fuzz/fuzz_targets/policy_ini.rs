//! Any text as `bde-network-unlock.ini` into the subnet policy's linter (every problem with its
//! line), then a decision for the capture's thumbprint and a few addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unlock_server::policy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lint = policy::lint(&text);
    let thumbprint = "4ad038da813176acbd5caaae0fe3494b0d008159"
        .parse()
        .expect("literal");
    for ip in ["10.0.4.110", "192.168.1.1", "fe80::1", "2001:db8::7"] {
        let _ = policy::decide(Some(&lint), &thumbprint, ip.parse().expect("literal"));
    }
});
