//! A seeded random number generator for tests that pick moments and steps at random, so a
//! failure replays from its seed.
//!
//! Included with `#[path = "common/rng.rs"] mod rng;` by the tests that need it.

#![allow(dead_code)]

/// xorshift64*: reproducible from the seed (any but 0), good enough to pick moments.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `below` (not 0).
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}
