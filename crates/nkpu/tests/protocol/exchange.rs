//! A whole Network Unlock exchange through the real codec and crypto: the client encrypts and
//! encodes, the server decodes, decrypts (aws-lc-rs), seals and encodes, the client decodes and
//! opens. What the README's demo shows, as a test.

use std::net::Ipv4Addr;

use nkpu::{
    ClientKey, KeyProtector, KeyProtectorReply, Message, ProviderKey, SessionKey, Thumbprint, v4,
    v6,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs8::DecodePrivateKey;

fn provider() -> (ProviderKey, rsa::RsaPublicKey) {
    let der = std::fs::read(crate::fixtures().join("keys/test-a-rsa2048.pk8")).unwrap();
    (
        ProviderKey::from_pkcs8_der(&der).unwrap(),
        rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .unwrap()
            .to_public_key(),
    )
}

#[test]
fn v4_exchange_returns_the_client_key() {
    let (server_key, public) = provider();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
    let thumbprint = Thumbprint::from_bytes([0x4a; 20]);
    let request = v4::Request::after_lease(
        7,
        [2, 0, 0, 0, 0, 1],
        Ipv4Addr::new(10, 0, 4, 110),
        Ipv4Addr::new(10, 0, 4, 97),
        vec![],
        thumbprint,
        kp,
    );

    // Server side.
    let Message::V4Request(received) = v4::decode(&request.encode()).unwrap() else {
        panic!("not a request")
    };
    assert_eq!(received.thumbprint, thumbprint);
    let (server_ck, server_sk) = server_key.decrypt(&received.key_protector).unwrap();
    let reply = v4::Reply::answering(&received, KeyProtectorReply::seal(&server_sk, &server_ck));

    // Client side.
    let Message::V4Reply(answer) = v4::decode(&reply.encode()).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(answer.xid, 7);
    assert_eq!(answer.reply.open(&sk).unwrap(), ck);
    // Another client's session key cannot open it.
    assert!(answer.reply.open(&SessionKey::from_bytes([0; 32])).is_err());
}

#[test]
fn v6_exchange_returns_the_client_key() {
    let (server_key, public) = provider();
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    let ck = ClientKey::random(&mut rng);
    let sk = SessionKey::random(&mut rng);
    let request = v6::Request {
        xid: [1, 2, 3],
        client_id: vec![0, 4, 9, 9],
        elapsed: 0,
        thumbprint: Thumbprint::from_bytes([1; 20]),
        key_protector: KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap(),
    };
    let Message::V6Request(received) = v6::decode(&request.encode()).unwrap() else {
        panic!("not a request")
    };
    let (server_ck, server_sk) = server_key.decrypt(&received.key_protector).unwrap();
    let reply = v6::Reply::answering(
        &received,
        vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 2],
        KeyProtectorReply::seal(&server_sk, &server_ck),
    );
    let Message::V6Reply(answer) = v6::decode(&reply.encode()).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(answer.client_id.as_deref(), Some(&[0, 4, 9, 9][..]));
    assert_eq!(answer.reply.open(&sk).unwrap(), ck);
}
