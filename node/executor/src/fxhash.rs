//! A fast, non-cryptographic hasher for the engine's maps.
//!
//! The engine hashes every declared key several times per transaction; SipHash (std's default)
//! would cost more than a cheap transaction itself. Keys come from the node's own transactions,
//! not from the network, so resistance to hash flooding is not needed here.

use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Multiplier of the Fx hash (rustc's), odd and with well-spread bits.
const SEED: u64 = 0x517c_c1b7_2722_0a95;
/// Multiplier of the final mix, so that high and middle bits depend on every input bit.
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Fx-style word hasher with a folded-multiply finish.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        let product = u128::from(self.hash) * u128::from(MIX);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

/// `BuildHasher` for maps keyed by transaction keys.
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// Hashes one key the way the engine's maps do.
pub fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}
