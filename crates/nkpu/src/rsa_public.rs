//! The RSA-2048 public-key operation `m^e mod n` for the client's key protector: aws-lc's raw
//! operation (`RSA_public_encrypt` without padding, through aws-lc-sys), with this module's
//! fixed-size Montgomery arithmetic (32 limbs of 64 bits, CIOS multiplication, no allocation)
//! for a key aws-lc refuses.
//!
//! Why not the `rsa` crate: its `num-bigint-dig` modular exponentiation allocates at every step
//! and took about 190 µs a key protector, a fifth of a 10,000-client storm's CPU time (issue
//! 17); this module's arithmetic takes about 32 µs, aws-lc's about half that. aws-lc-rs's own
//! PKCS#1 v1.5 encryption draws the padding from its own RNG, and the simulator needs the
//! padding from its seeded RNG. Here the padding is drawn exactly as the `rsa` crate
//! draws it (`pkcs1_v15_pad`), so every ciphertext is byte for byte the one the `rsa` crate
//! gives for the same RNG (a test checks it against `rsa` on several keys and seeds, and both
//! arithmetics against each other), and the portable exponentiation is square-and-multiply over
//! the public exponent (for e = 65537, 16 Montgomery squarings, which compute each cross
//! product once, and 3 multiplications).
//!
//! The exponent and modulus are public; the message (CK ‖ SK) is secret, so the one
//! data-dependent step, the final subtraction of a Montgomery product, is a masked select
//! rather than a branch.

use rsa::traits::PublicKeyParts;

/// 2048 bits in 64-bit limbs.
const LIMBS: usize = 32;
/// Bytes of a 2048-bit number.
pub(crate) const BYTES: usize = LIMBS * 8;

/// A 2048-bit number, least significant limb first.
type Limbs = [u64; LIMBS];

/// Why the public key cannot be used by [`RsaPublicOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaPublicKeyError {
    /// The modulus is not exactly 2048 bits: the number of bits it has.
    ModulusBits(usize),
    /// The modulus is even (no Montgomery form) or the exponent is not odd and above 1.
    Unusable,
}

/// A public key made ready for repeated `m^e mod n`: the modulus in limbs, `-n⁻¹ mod 2⁶⁴` and
/// `R² mod n` with `R = 2²⁰⁴⁸`, and the same key in aws-lc, which computes it about twice as fast
/// (its assembly Montgomery multiplication) when it takes the key.
pub(crate) struct RsaPublicOp {
    n: Limbs,
    n0_inv: u64,
    r_squared: Limbs,
    /// The public exponent's bits, most significant first, without the leading 1.
    exponent: u64,
    aws_lc: Option<aws_lc::PublicKey>,
}

impl RsaPublicOp {
    /// Prepares an RSA-2048 public key.
    pub(crate) fn new(key: &rsa::RsaPublicKey) -> Result<Self, RsaPublicKeyError> {
        let bits = key.n().bits();
        if bits != 2048 {
            return Err(RsaPublicKeyError::ModulusBits(bits));
        }
        let n = limbs_from_be(&key.n().to_bytes_be()).ok_or(RsaPublicKeyError::Unusable)?;
        let e_bytes = key.e().to_bytes_be();
        if e_bytes.len() > 8 {
            return Err(RsaPublicKeyError::Unusable);
        }
        let exponent = e_bytes.iter().fold(0u64, |e, &b| (e << 8) | u64::from(b));
        if n[0] & 1 == 0 || exponent & 1 == 0 || exponent < 3 {
            return Err(RsaPublicKeyError::Unusable);
        }
        let n0_inv = neg_inverse_mod_2_64(n[0]);
        // R mod n = 2^2048 - n (n > 2^2047, so this is below n): the two's complement of n.
        let mut x = [0u64; LIMBS];
        let mut borrow = 0u64;
        for (xi, &ni) in x.iter_mut().zip(&n) {
            let (d, b1) = 0u64.overflowing_sub(ni);
            let (d, b2) = d.overflowing_sub(borrow);
            *xi = d;
            borrow = u64::from(b1 | b2);
        }
        // 2^64 · R mod n by 64 doublings, then five Montgomery squarings (a·R ↦ a²·R):
        // 2^64 → 2^128 → 2^256 → 2^512 → 2^1024 → 2^2048, giving 2^2048 · R = R² mod n.
        for _ in 0..64 {
            double_mod(&mut x, &n);
        }
        for _ in 0..5 {
            x = mont_sqr(&x, &n, n0_inv);
        }
        let aws_lc = aws_lc::PublicKey::new(&be_from_limbs(&n), exponent);
        Ok(Self {
            n,
            n0_inv,
            r_squared: x,
            exponent,
            aws_lc,
        })
    }

    /// `m^e mod n` of a big-endian message below `n`, as 256 big-endian bytes. The caller
    /// guarantees `m < n` (a PKCS#1 v1.5 block starts with a zero byte, so it is).
    pub(crate) fn encrypt_raw(&self, message: &[u8; BYTES]) -> [u8; BYTES] {
        if let Some(out) = self.aws_lc.as_ref().and_then(|key| key.raw(message)) {
            return out;
        }
        self.encrypt_raw_portable(message)
    }

    /// [`Self::encrypt_raw`] in this module's own arithmetic.
    fn encrypt_raw_portable(&self, message: &[u8; BYTES]) -> [u8; BYTES] {
        let m = limbs_from_be_array(message);
        let m_mont = mont_mul(&m, &self.r_squared, &self.n, self.n0_inv);
        let mut acc = m_mont;
        let top = 63 - self.exponent.leading_zeros();
        for bit in (0..top).rev() {
            acc = mont_sqr(&acc, &self.n, self.n0_inv);
            if (self.exponent >> bit) & 1 == 1 {
                acc = mont_mul(&acc, &m_mont, &self.n, self.n0_inv);
            }
        }
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        let out = mont_mul(&acc, &one, &self.n, self.n0_inv);
        be_from_limbs(&out)
    }
}

/// The raw RSA public-key operation of aws-lc (`RSA_public_encrypt` with `RSA_NO_PADDING`):
/// the padding stays ours, drawn from the caller's RNG.
mod aws_lc {
    use super::BYTES;
    use aws_lc_sys as sys;

    /// An aws-lc `RSA` holding only a public key, owned (freed on drop).
    pub(super) struct PublicKey(std::ptr::NonNull<sys::RSA>);

    impl PublicKey {
        /// The key with modulus `n` (big-endian) and exponent `e`; `None` if aws-lc refuses it.
        pub(super) fn new(n: &[u8; BYTES], e: u64) -> Option<Self> {
            // SAFETY: BN_bin2bn reads exactly `n.len()` bytes from `n`, a live slice, and
            // returns a new BIGNUM (or null) that we own; BN_new likewise. RSA_new_public_key
            // only reads the two BIGNUMs (it copies them into the new RSA), so freeing them
            // afterwards is sound; BN_free accepts null. The returned RSA (or null) is ours.
            #[allow(unsafe_code)]
            let rsa = unsafe {
                let n_bn = sys::BN_bin2bn(n.as_ptr(), n.len(), std::ptr::null_mut());
                let e_bn = sys::BN_new();
                let rsa = if !n_bn.is_null() && !e_bn.is_null() && sys::BN_set_u64(e_bn, e) == 1 {
                    sys::RSA_new_public_key(n_bn, e_bn)
                } else {
                    std::ptr::null_mut()
                };
                sys::BN_free(n_bn);
                sys::BN_free(e_bn);
                rsa
            };
            std::ptr::NonNull::new(rsa).map(Self)
        }

        /// `m^e mod n` of a big-endian block of the modulus' size, or `None` if aws-lc refuses
        /// it (a block not below `n`).
        pub(super) fn raw(&self, message: &[u8; BYTES]) -> Option<[u8; BYTES]> {
            let mut out = [0u8; BYTES];
            // SAFETY: `self.0` is a live RSA (owned, freed only on drop) whose modulus has
            // BYTES bytes (RsaPublicOp::new checked 2048 bits), so with RSA_NO_PADDING aws-lc
            // reads exactly BYTES bytes from `message` and writes at most RSA_size = BYTES
            // bytes to `out`, both live arrays of BYTES bytes. The RSA is not shared across
            // threads (the type is neither Send nor Sync).
            #[allow(unsafe_code)]
            let written = unsafe {
                sys::RSA_public_encrypt(
                    BYTES,
                    message.as_ptr(),
                    out.as_mut_ptr(),
                    self.0.as_ptr(),
                    sys::RSA_NO_PADDING,
                )
            };
            (usize::try_from(written).ok() == Some(BYTES)).then_some(out)
        }
    }

    impl Drop for PublicKey {
        fn drop(&mut self) {
            // SAFETY: the RSA is ours (from RSA_new_public_key) and freed once, here.
            #[allow(unsafe_code)]
            unsafe {
                sys::RSA_free(self.0.as_ptr());
            }
        }
    }
}

/// `-n⁻¹ mod 2⁶⁴` for odd `n` (Newton's iteration doubles the correct bits each step).
fn neg_inverse_mod_2_64(n: u64) -> u64 {
    let mut inv = 1u64;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(n.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// `x = 2x mod n` for `x < n`.
fn double_mod(x: &mut Limbs, n: &Limbs) {
    let mut carry = 0u64;
    for xi in x.iter_mut() {
        let next = *xi >> 63;
        *xi = (*xi << 1) | carry;
        carry = next;
    }
    subtract_if_at_least(x, carry, n);
}

/// Montgomery product `a · b · R⁻¹ mod n` (coarsely integrated operand scanning), for
/// `a, b < n`; the result is below `n`.
fn mont_mul(a: &Limbs, b: &Limbs, n: &Limbs, n0_inv: u64) -> Limbs {
    // t holds LIMBS + 2 limbs: the running sum is below 2n < 2^2049.
    let mut t = [0u64; LIMBS + 2];
    for &ai in a {
        let mut carry = 0u64;
        for (tj, &bj) in t.iter_mut().zip(b) {
            let s = u128::from(*tj) + u128::from(ai) * u128::from(bj) + u128::from(carry);
            *tj = s as u64;
            carry = (s >> 64) as u64;
        }
        let s = u128::from(t[LIMBS]) + u128::from(carry);
        t[LIMBS] = s as u64;
        t[LIMBS + 1] = (s >> 64) as u64;

        let m = t[0].wrapping_mul(n0_inv);
        let s = u128::from(t[0]) + u128::from(m) * u128::from(n[0]);
        let mut carry = (s >> 64) as u64;
        for j in 1..LIMBS {
            let s = u128::from(t[j]) + u128::from(m) * u128::from(n[j]) + u128::from(carry);
            t[j - 1] = s as u64;
            carry = (s >> 64) as u64;
        }
        let s = u128::from(t[LIMBS]) + u128::from(carry);
        t[LIMBS - 1] = s as u64;
        t[LIMBS] = t[LIMBS + 1] + (s >> 64) as u64;
    }
    let mut out = [0u64; LIMBS];
    out.copy_from_slice(&t[..LIMBS]);
    subtract_if_at_least(&mut out, t[LIMBS], n);
    out
}

/// Montgomery square `a² · R⁻¹ mod n` for `a < n`, the result below `n`: the product's cross
/// terms once and doubled (528 limb products instead of 1,024), then Montgomery reduction.
fn mont_sqr(a: &Limbs, n: &Limbs, n0_inv: u64) -> Limbs {
    let mut t = [0u64; 2 * LIMBS];
    // Cross terms a_i · a_j for i < j.
    for i in 0..LIMBS {
        let mut carry = 0u64;
        for j in i + 1..LIMBS {
            let s = u128::from(t[i + j]) + u128::from(a[i]) * u128::from(a[j]) + u128::from(carry);
            t[i + j] = s as u64;
            carry = (s >> 64) as u64;
        }
        t[i + LIMBS] = carry;
    }
    // Doubled, plus the squares a_i² on the diagonal.
    let mut shifted_out = 0u64;
    for limb in t.iter_mut() {
        let next = *limb >> 63;
        *limb = (*limb << 1) | shifted_out;
        shifted_out = next;
    }
    let mut carry = 0u64;
    for i in 0..LIMBS {
        let square = u128::from(a[i]) * u128::from(a[i]);
        let s = u128::from(t[2 * i]) + (square & u128::from(u64::MAX)) + u128::from(carry);
        t[2 * i] = s as u64;
        let s = u128::from(t[2 * i + 1]) + (square >> 64) + (s >> 64);
        t[2 * i + 1] = s as u64;
        carry = (s >> 64) as u64;
    }
    // Reduction: each step clears limb i; `top` carries into the limb above the step's window.
    let mut top = 0u64;
    for i in 0..LIMBS {
        let m = t[i].wrapping_mul(n0_inv);
        let mut carry = 0u64;
        for j in 0..LIMBS {
            let s = u128::from(t[i + j]) + u128::from(m) * u128::from(n[j]) + u128::from(carry);
            t[i + j] = s as u64;
            carry = (s >> 64) as u64;
        }
        let s = u128::from(t[i + LIMBS]) + u128::from(carry) + u128::from(top);
        t[i + LIMBS] = s as u64;
        top = (s >> 64) as u64;
    }
    let mut out = [0u64; LIMBS];
    out.copy_from_slice(&t[LIMBS..]);
    subtract_if_at_least(&mut out, top, n);
    out
}

/// `x = x - n` when the number `high · 2²⁰⁴⁸ + x` is at least `n` (it is below `2n`), by a
/// masked select: no branch on the value.
fn subtract_if_at_least(x: &mut Limbs, high: u64, n: &Limbs) {
    let mut diff = [0u64; LIMBS];
    let mut borrow = 0u64;
    for ((d, &xi), &ni) in diff.iter_mut().zip(x.iter()).zip(n) {
        let (v, b1) = xi.overflowing_sub(ni);
        let (v, b2) = v.overflowing_sub(borrow);
        *d = v;
        borrow = u64::from(b1 | b2);
    }
    // Keep the difference unless it borrowed past the high limb (then x < n).
    let (_, borrowed) = high.overflowing_sub(borrow);
    let keep_x = 0u64.wrapping_sub(u64::from(borrowed));
    for (xi, d) in x.iter_mut().zip(diff) {
        *xi = (*xi & keep_x) | (d & !keep_x);
    }
}

/// Up to 256 big-endian bytes as limbs; `None` if longer.
fn limbs_from_be(bytes: &[u8]) -> Option<Limbs> {
    if bytes.len() > BYTES {
        return None;
    }
    let mut padded = [0u8; BYTES];
    padded[BYTES - bytes.len()..].copy_from_slice(bytes);
    Some(limbs_from_be_array(&padded))
}

fn limbs_from_be_array(bytes: &[u8; BYTES]) -> Limbs {
    let mut limbs = [0u64; LIMBS];
    for (i, chunk) in bytes.rchunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        limbs[i] = u64::from_be_bytes(word);
    }
    limbs
}

fn be_from_limbs(limbs: &Limbs) -> [u8; BYTES] {
    let mut bytes = [0u8; BYTES];
    for (chunk, limb) in bytes.rchunks_exact_mut(8).zip(limbs) {
        chunk.copy_from_slice(&limb.to_be_bytes());
    }
    bytes
}

/// EME-PKCS1-v1_5 encoding of `message` for a 256-byte modulus, `00 02 PS 00 M`, with the
/// non-zero padding bytes PS drawn from `rng` exactly as the `rsa` crate 0.9 draws them: one
/// fill of the whole PS, then each zero byte redrawn alone until it is not zero. `None` if the
/// message leaves fewer than 8 padding bytes.
pub(crate) fn pkcs1_v15_pad(
    message: &[u8],
    rng: &mut impl rand_core::CryptoRngCore,
) -> Option<[u8; BYTES]> {
    if message.len() + 11 > BYTES {
        return None;
    }
    let mut block = [0u8; BYTES];
    block[1] = 2;
    let padding_end = BYTES - message.len() - 1;
    let padding = &mut block[2..padding_end];
    rng.fill_bytes(padding);
    for byte in padding.iter_mut() {
        while *byte == 0 {
            rng.fill_bytes(std::slice::from_mut(byte));
        }
    }
    block[BYTES - message.len()..].copy_from_slice(message);
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use rsa::pkcs8::DecodePrivateKey;

    fn fixture_public(name: &str) -> rsa::RsaPublicKey {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/keys/");
        let der = std::fs::read(format!("{path}{name}")).expect("test key fixture");
        rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .expect("fixture key")
            .to_public_key()
    }

    /// The same bytes as the `rsa` crate's PKCS#1 v1.5 encryption, RNG draws included.
    fn ours(key: &rsa::RsaPublicKey, message: &[u8], seed: u64) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let block = pkcs1_v15_pad(message, &mut rng).expect("short message");
        let op = RsaPublicOp::new(key).expect("2048-bit key");
        let out = op.encrypt_raw(&block);
        // aws-lc takes every key these tests use, and its result is the portable arithmetic's.
        assert!(op.aws_lc.is_some(), "aws-lc refused the key");
        assert_eq!(out, op.encrypt_raw_portable(&block));
        // The RNG is left where the rsa crate leaves it.
        let mut tail = out.to_vec();
        tail.extend_from_slice(&rng.next_u64().to_le_bytes());
        tail
    }

    fn theirs(key: &rsa::RsaPublicKey, message: &[u8], seed: u64) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut out = key
            .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, message)
            .expect("rsa crate encrypts");
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
        out
    }

    #[test]
    fn matches_the_rsa_crate_on_the_fixture_keys() {
        for name in ["test-a-rsa2048.pk8", "test-b-rsa2048.pk8"] {
            let key = fixture_public(name);
            for seed in 0..40 {
                let message: Vec<u8> = (0..64)
                    .map(|i| (i as u8).wrapping_mul(seed as u8))
                    .collect();
                assert_eq!(
                    ours(&key, &message, seed),
                    theirs(&key, &message, seed),
                    "{name} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn matches_the_rsa_crate_with_other_exponents() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        for e in [3u64, 17, 65537, 0x1_0000_0001] {
            let key = rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &rsa::BigUint::from(e))
                .expect("key generation")
                .to_public_key();
            assert_eq!(
                ours(&key, &[7; 64], e),
                theirs(&key, &[7; 64], e),
                "e = {e}"
            );
        }
    }

    #[test]
    fn refuses_other_sizes_and_messages_too_long() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/keys/test-rsa1024.pk8"
        );
        let der = std::fs::read(path).expect("fixture");
        let small = rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .expect("fixture key")
            .to_public_key();
        assert_eq!(
            RsaPublicOp::new(&small).err(),
            Some(RsaPublicKeyError::ModulusBits(1024))
        );
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!(pkcs1_v15_pad(&[0; 245], &mut rng).is_some());
        assert!(pkcs1_v15_pad(&[0; 246], &mut rng).is_none());
    }

    #[test]
    fn the_inverse_is_an_inverse() {
        for n in [1u64, 3, 0xffff_ffff_ffff_ffff, 0x1234_5678_9abc_def1] {
            assert_eq!(n.wrapping_mul(neg_inverse_mod_2_64(n)), u64::MAX, "{n:#x}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_message_and_seed_match_the_rsa_crate(
            message in proptest::collection::vec(any::<u8>(), 0..=245),
            seed in any::<u64>(),
        ) {
            let key = fixture_public("test-a-rsa2048.pk8");
            prop_assert_eq!(ours(&key, &message, seed), theirs(&key, &message, seed));
        }
    }
}
