//! The fixture both the criterion bench (`benches/server_path.rs`) and the rate probe
//! (`examples/server_rate.rs`) measure: the test provider key, a real request encrypted to it,
//! and the provider's whole per-request path.

use std::net::Ipv4Addr;

use nkpu::{
    ClientKey, KeyProtector, KeyProtectorReply, Message, ProviderKey, SessionKey, Thumbprint, v4,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;

/// The provider's key and an encoded DHCPv4 request whose key protector it can open.
pub fn provider_and_request() -> (ProviderKey, Vec<u8>) {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/test-a-rsa2048.pk8"
    ))
    .expect("test key fixture");
    let provider = ProviderKey::from_pkcs8_der(&der).expect("provider key");
    let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .expect("test key")
        .to_public_key();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let kp = KeyProtector::encrypt(
        &public,
        &ClientKey::random(&mut rng),
        &SessionKey::random(&mut rng),
        &mut rng,
    )
    .expect("RSA-2048 key");
    let request = v4::Request::after_lease(
        1,
        [2, 0, 0, 0, 0, 1],
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![],
        Thumbprint::from_bytes([0x4a; 20]),
        kp,
    )
    .encode();
    (provider, request)
}

/// The whole server path for one request: decode, decrypt, seal, encode.
pub fn serve(provider: &ProviderKey, request: &[u8]) -> Vec<u8> {
    let Ok(Message::V4Request(req)) = v4::decode(request) else {
        panic!("the bench request decodes")
    };
    let (ck, sk) = provider.decrypt(&req.key_protector).expect("decrypts");
    v4::Reply::answering(&req, KeyProtectorReply::seal(&sk, &ck)).encode()
}
