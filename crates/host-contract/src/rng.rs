//! A seeded ChaCha20 stream parked between uses. `rand_chacha`'s `ChaCha20Rng` carries a
//! 256-byte block buffer for its whole life; a simulated TPM, a boot and an unlock exchange each
//! hold one and draw from it a handful of times. [`ParkedChaCha20`] keeps only the stream's
//! position (seed, stream, word position: 56 bytes) and rebuilds the generator at that position
//! for each draw. The draws are exactly `ChaCha20Rng`'s (its output is a function of the word
//! position, which every draw reads back), so a seeded run replays byte for byte; a draw costs
//! one ChaCha block computation more. A 100,000-client storm holds three per client.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{CryptoRng, Error, RngCore, SeedableRng};

/// A `ChaCha20Rng` stream kept as its position; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedChaCha20 {
    seed: [u8; 32],
    stream: u64,
    word_pos: u128,
}

impl ParkedChaCha20 {
    /// The stream `ChaCha20Rng::from_seed(seed)` gives.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed,
            stream: 0,
            word_pos: 0,
        }
    }

    /// Parks `rng` where it stands.
    pub fn park(rng: &ChaCha20Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// The generator at the parked position.
    pub fn unpark(&self) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }

    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    pub fn stream(&self) -> u64 {
        self.stream
    }

    pub fn word_pos(&self) -> u128 {
        self.word_pos
    }

    fn draw<R>(&mut self, f: impl FnOnce(&mut ChaCha20Rng) -> R) -> R {
        let mut rng = self.unpark();
        let out = f(&mut rng);
        self.word_pos = rng.get_word_pos();
        out
    }
}

impl RngCore for ParkedChaCha20 {
    fn next_u32(&mut self) -> u32 {
        self.draw(|rng| rng.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        self.draw(|rng| rng.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.draw(|rng| rng.fill_bytes(dest));
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.draw(|rng| rng.try_fill_bytes(dest))
    }
}

/// As `ChaCha20Rng` is: the same stream.
impl CryptoRng for ParkedChaCha20 {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, Strategy, any, prop_assert_eq, prop_oneof, proptest};

    #[derive(Debug, Clone)]
    enum Draw {
        U32,
        U64,
        Bytes(usize),
    }

    fn draw() -> impl Strategy<Value = Draw> {
        prop_oneof![
            Just(Draw::U32),
            Just(Draw::U64),
            (0usize..300).prop_map(Draw::Bytes),
        ]
    }

    proptest! {
        /// Any mix of draws, across block boundaries and with partly used words, gives what
        /// `ChaCha20Rng` gives, and parking anywhere resumes the same stream.
        #[test]
        fn parked_draws_are_chacha20rng_draws(
            seed in any::<[u8; 32]>(),
            stream in any::<u64>(),
            draws in proptest::collection::vec(draw(), 0..60),
        ) {
            let mut reference = ChaCha20Rng::from_seed(seed);
            reference.set_stream(stream);
            let mut parked = ParkedChaCha20::park(&reference);
            for d in draws {
                match d {
                    Draw::U32 => prop_assert_eq!(parked.next_u32(), reference.next_u32()),
                    Draw::U64 => prop_assert_eq!(parked.next_u64(), reference.next_u64()),
                    Draw::Bytes(n) => {
                        let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                        parked.fill_bytes(&mut a);
                        reference.fill_bytes(&mut b);
                        prop_assert_eq!(a, b);
                    }
                }
                prop_assert_eq!(&parked, &ParkedChaCha20::park(&reference));
            }
        }
    }

    #[test]
    fn from_seed_is_chacha20rng_from_seed() {
        let mut parked = ParkedChaCha20::from_seed([7; 32]);
        let mut reference = ChaCha20Rng::from_seed([7; 32]);
        assert_eq!(parked.next_u64(), reference.next_u64());
        assert!(
            std::mem::size_of::<ParkedChaCha20>() <= 64,
            "parked is small"
        );
    }
}
