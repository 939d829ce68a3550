//! The key protector reply (KPR): CK sealed under SK with AES-256-CCM.
//!
//! Plaintext: the fixed 12-byte header [`KPR_HEADER`] then CK (44 bytes). Nonce: 12 zero bytes;
//! no associated data; 16-byte tag. Wire order: **tag first**, then the 44 ciphertext bytes, 60
//! bytes in all (PROTOCOL.md, "The reply"). A zero nonce is safe here only because every SK is
//! fresh and used for exactly one reply.

use std::fmt;

use aes::Aes256;
use ccm::aead::{AeadInPlace, KeyInit, generic_array::GenericArray};
use ccm::consts::{U12, U16};

use crate::keys::{ClientKey, KEY_LEN, SessionKey, shorten};

/// The plaintext header, read as BitLocker's key-blob header (size 44, version 1, type 0x2006):
/// an inference from captures, not a published fact.
pub const KPR_HEADER: [u8; 12] = [
    0x2c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x20, 0x00, 0x00,
];

const TAG_LEN: usize = 16;
const PLAINTEXT_LEN: usize = KPR_HEADER.len() + KEY_LEN;

/// Length of the KPR on the wire: 16-byte tag + 44 ciphertext bytes.
pub const KPR_LEN: usize = TAG_LEN + PLAINTEXT_LEN;

type Aes256Ccm = ccm::Ccm<Aes256, U16, U12>;

/// The 60-byte key protector reply as it travels: tag ‖ ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyProtectorReply([u8; KPR_LEN]);

/// Why a reply could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The tag does not verify under this session key: a reply to another client, a corrupted
    /// packet, or a forgery. The client ignores it and keeps waiting.
    #[error("the reply's tag does not verify under this session key")]
    TagMismatch,
    /// The tag verified but the plaintext header is not the one Windows expects.
    #[error("the reply decrypts, but its header is {0}, not 2c000000 01000000 06200000")]
    UnexpectedHeader(String),
    #[error("a key protector reply is 60 bytes, found {0}")]
    WrongLength(usize),
}

impl KeyProtectorReply {
    pub const fn from_bytes(bytes: [u8; KPR_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KPR_LEN] {
        &self.0
    }

    /// Seals CK under SK: what the unlock provider sends back.
    pub fn seal(session_key: &SessionKey, client_key: &ClientKey) -> Self {
        let cipher = Aes256Ccm::new(GenericArray::from_slice(session_key.as_bytes()));
        let mut wire = [0u8; KPR_LEN];
        let (tag_out, body) = wire.split_at_mut(TAG_LEN);
        body[..KPR_HEADER.len()].copy_from_slice(&KPR_HEADER);
        body[KPR_HEADER.len()..].copy_from_slice(client_key.as_bytes());
        let tag = cipher
            .encrypt_in_place_detached(&GenericArray::default(), &[], body)
            .expect("AES-CCM accepts a 44-byte message");
        tag_out.copy_from_slice(&tag);
        Self(wire)
    }

    /// Opens the reply with SK and returns CK; fails if the tag does not verify.
    pub fn open(&self, session_key: &SessionKey) -> Result<ClientKey, ReplyError> {
        let cipher = Aes256Ccm::new(GenericArray::from_slice(session_key.as_bytes()));
        let mut body = [0u8; PLAINTEXT_LEN];
        body.copy_from_slice(&self.0[TAG_LEN..]);
        let tag = GenericArray::from_slice(&self.0[..TAG_LEN]);
        cipher
            .decrypt_in_place_detached(&GenericArray::default(), &[], &mut body, tag)
            .map_err(|_| ReplyError::TagMismatch)?;
        let (header, key) = body.split_at(KPR_HEADER.len());
        if header != KPR_HEADER {
            return Err(ReplyError::UnexpectedHeader(hex::encode(header)));
        }
        Ok(ClientKey::try_from(key).expect("44-byte plaintext minus a 12-byte header"))
    }
}

impl TryFrom<&[u8]> for KeyProtectorReply {
    type Error = ReplyError;
    fn try_from(bytes: &[u8]) -> Result<Self, ReplyError> {
        <[u8; KPR_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ReplyError::WrongLength(bytes.len()))
    }
}

impl fmt::Debug for KeyProtectorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyProtectorReply({})", shorten(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_then_open_returns_the_client_key() {
        let sk = SessionKey::from_bytes([7; 32]);
        let ck = ClientKey::from_bytes([9; 32]);
        let kpr = KeyProtectorReply::seal(&sk, &ck);
        assert_eq!(kpr.open(&sk).unwrap(), ck);
    }

    /// An independent check of the construction: RFC 3610 CCM computed here from raw AES blocks
    /// (not through the `ccm` crate) must give the same tag and ciphertext, tag first.
    #[test]
    fn matches_rfc3610_ccm_computed_from_raw_aes_blocks() {
        let sk = SessionKey::from_bytes(core::array::from_fn(|i| i as u8));
        let ck = ClientKey::from_bytes(core::array::from_fn(|i| 0xa0 ^ i as u8));
        let kpr = KeyProtectorReply::seal(&sk, &ck);
        let expected = ccm_by_hand(
            sk.as_bytes(),
            &[KPR_HEADER.as_slice(), ck.as_bytes()].concat(),
        );
        assert_eq!(kpr.as_bytes().as_slice(), expected.as_slice());
    }

    /// RFC 3610 CCM with M = 16, L = 3 (nonce 12 bytes), no associated data, from raw AES
    /// blocks: returns tag ‖ ciphertext.
    fn ccm_by_hand(key: &[u8; 32], msg: &[u8]) -> Vec<u8> {
        use aes::cipher::{BlockEncrypt, KeyInit as _};
        let aes = Aes256::new(GenericArray::from_slice(key));
        let enc = |block: [u8; 16]| {
            let mut b = GenericArray::from(block);
            aes.encrypt_block(&mut b);
            <[u8; 16]>::from(b)
        };
        // B0: flags = 8*((M-2)/2) + (L-1) = 8*7 + 2 = 0x3a, nonce 0*12, length in 3 bytes.
        let mut b0 = [0u8; 16];
        b0[0] = 0x3a;
        b0[15] = msg.len() as u8;
        let mut x = enc(b0);
        for chunk in msg.chunks(16) {
            for (i, byte) in chunk.iter().enumerate() {
                x[i] ^= byte;
            }
            x = enc(x);
        }
        let ctr = |i: u8| {
            let mut a = [0u8; 16];
            a[0] = 0x02; // L - 1
            a[15] = i;
            enc(a)
        };
        let s0 = ctr(0);
        let tag: Vec<u8> = x.iter().zip(s0).map(|(a, b)| a ^ b).collect();
        let mut ct = Vec::new();
        for (n, chunk) in msg.chunks(16).enumerate() {
            let s = ctr(n as u8 + 1);
            ct.extend(chunk.iter().zip(s).map(|(a, b)| a ^ b));
        }
        [tag, ct].concat()
    }

    #[test]
    fn a_wrong_session_key_or_a_flipped_bit_fails_the_tag() {
        let sk = SessionKey::from_bytes([7; 32]);
        let ck = ClientKey::from_bytes([9; 32]);
        let kpr = KeyProtectorReply::seal(&sk, &ck);
        assert_eq!(
            kpr.open(&SessionKey::from_bytes([8; 32])),
            Err(ReplyError::TagMismatch)
        );
        for i in 0..KPR_LEN {
            let mut bytes = *kpr.as_bytes();
            bytes[i] ^= 0x01;
            assert_eq!(
                KeyProtectorReply::from_bytes(bytes).open(&sk),
                Err(ReplyError::TagMismatch),
                "flipped byte {i}"
            );
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert_eq!(
            KeyProtectorReply::try_from([0u8; 59].as_slice()),
            Err(ReplyError::WrongLength(59))
        );
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(sk in any::<[u8; 32]>(), ck in any::<[u8; 32]>()) {
            let sk = SessionKey::from_bytes(sk);
            let ck = ClientKey::from_bytes(ck);
            prop_assert_eq!(KeyProtectorReply::seal(&sk, &ck).open(&sk), Ok(ck));
        }

        #[test]
        fn open_never_panics(sk in any::<[u8; 32]>(), bytes in proptest::collection::vec(any::<u8>(), 60)) {
            let kpr = KeyProtectorReply::try_from(bytes.as_slice()).unwrap();
            let _ = kpr.open(&SessionKey::from_bytes(sk));
        }
    }
}
