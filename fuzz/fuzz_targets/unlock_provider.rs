//! Any datagram into the Network Unlock provider core (the WDS provider), from a DHCPv4 or a
//! DHCPv6 client (the first input byte picks which): it replies or drops and counts, never
//! panics. The provider holds a certificate under the Windows capture's thumbprint, so a request
//! shaped like the capture goes on to the RSA decryption (which fails: the key is another one),
//! and a subnet policy is loaded, so the policy check runs too.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nkpu::{ProviderKey, Thumbprint};
use unlock_server::provider::{Provider, Received};

const KEY: &[u8] = include_bytes!("../../fixtures/keys/test-a-rsa2048.pk8");
const CAPTURE_THUMBPRINT: &str = "4ad038da813176acbd5caaae0fe3494b0d008159";
const POLICY: &str = "[CertificateThumbprint]\n\
4ad038da813176acbd5caaae0fe3494b0d008159\n\
[Subnets]\n\
Lab=10.0.4.0/24\n\
Six=fe80::/64\n";

fn key() -> std::sync::Arc<ProviderKey> {
    static KEY_ONCE: OnceLock<std::sync::Arc<ProviderKey>> = OnceLock::new();
    KEY_ONCE
        .get_or_init(|| std::sync::Arc::new(ProviderKey::from_pkcs8_der(KEY).expect("fixture key")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let mut provider = Provider::new(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0x98]);
    let thumbprint: Thumbprint = CAPTURE_THUMBPRINT.parse().expect("literal");
    provider.add_certificate(thumbprint, key());
    if selector & 2 == 0 {
        provider.load_policy(Duration::ZERO, Some(POLICY));
    }
    let source = if selector & 1 == 0 {
        "10.0.4.110:68"
    } else {
        "[fe80::1]:546"
    };
    let _ = provider.handle(
        Duration::from_millis(1),
        Received {
            source: source.parse().expect("literal"),
            payload,
        },
    );
    let _ = provider.take_log();
});
