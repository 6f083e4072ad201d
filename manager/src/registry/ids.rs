//! Object ids: a keyed permutation of a per-registry counter.
//!
//! An id must never name two objects: not two of one run (a client holding the id of a
//! deleted object must get `UnknownObjectError`, never reach the object created after it), and
//! not, as far as can be helped, an object of another run at the same address (a client that
//! outlived its manager's restart) or of another manager. A counter alone gives the first and
//! fails the others: every run hands out 1, 2, 3... So each registry draws a random key when it
//! starts, and the `n`th id is `n` put through a permutation chosen by that key: ids of one run
//! never repeat (a permutation is one-to-one), and two runs' ids are unrelated.
//!
//! Ids stay below 2^53 so that every MessagePack library reads them exactly, JavaScript's
//! numbers included, and above 0, which some clients read as "no object".
//!
//! The permutation is a balanced Feistel network over 54 bits (two halves of 27), whose round
//! function is a 64-bit integer mix of the half and a round key; values that land at or above
//! the largest id are put through it again ("cycle walking") until they land below, which keeps
//! it a permutation of the smaller range and takes two passes on average. It runs once per
//! `create`, never on a call.
//!
//! It is not cryptography: ids are not secrets (the authkey is what keeps strangers out), only
//! numbers no other run is likely to have handed out.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A map keyed by object id, for the per-connection tables every call consults (the id cache,
/// the references held). The default SipHash costs about a hundred instructions a lookup to
/// resist keys chosen by an attacker; an id in these tables is one the registry handed out (a
/// call names an id, but only ids of live objects are ever inserted), and ids are a keyed
/// permutation no client can steer, so a multiply is as good a hash and much cheaper.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: one multiply (Fibonacci hashing) of the id.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; any other input is still hashed, byte by byte.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The largest id: 2^53 - 1, the largest integer every MessagePack reader holds exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Bits in each half of the Feistel network: 2 * 27 = 54 covers the 53-bit range.
const HALF_BITS: u32 = 27;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;

/// Feistel rounds. Four already mix every input bit into every output bit; six leave margin
/// for a round function that is a fast mix rather than a pseudo-random function.
const ROUNDS: usize = 6;

/// The random key of one registry: a 64-bit key per Feistel round.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdKey([u64; ROUNDS]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is not a secret, but nothing needs to see it either.
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// A key from the operating system's random source.
    pub fn random() -> std::io::Result<IdKey> {
        let mut bytes = [0u8; 8 * ROUNDS];
        getrandom::fill(&mut bytes)
            .map_err(|e| std::io::Error::other(format!("no randomness for object ids: {e}")))?;
        let mut key = [0u64; ROUNDS];
        for (k, chunk) in key.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *k = u64::from_le_bytes(word);
        }
        Ok(IdKey(key))
    }

    /// A key derived from `seed`, for tests that want the same ids every run.
    pub fn from_seed(seed: u64) -> IdKey {
        let mut state = seed;
        let mut key = [0u64; ROUNDS];
        for k in &mut key {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *k = mix(state);
        }
        IdKey(key)
    }

    /// The id of the `n`th object (counting from 0): a number in `1..=MAX_ID`, a different one
    /// for every `n < MAX_ID`. `None` when `n` is past the last id.
    pub fn id(&self, n: u64) -> Option<u64> {
        if n >= MAX_ID {
            return None;
        }
        // `x` walks the cycle of the 54-bit permutation that holds `n` until it is back in
        // `0..MAX_ID`; it gets there because `n` itself is in that range.
        let mut x = n;
        loop {
            x = self.feistel(x);
            if x < MAX_ID {
                return Some(x + 1);
            }
        }
    }

    /// One pass of the Feistel network over 54 bits: a permutation of `0..2^54`.
    fn feistel(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & HALF_MASK);
        for &k in &self.0 {
            let next = left ^ (mix(right ^ k) & HALF_MASK);
            left = right;
            right = next;
        }
        (left << HALF_BITS) | right
    }
}

/// A 64-bit mix (the finaliser of SplitMix64): every input bit flips about half the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hands out the ids of one registry, each once.
#[derive(Debug)]
pub struct IdSequence {
    key: IdKey,
    /// How many ids have been handed out: the counter the next id is drawn from.
    next: AtomicU64,
}

impl IdSequence {
    /// A sequence under `key`, from its first id.
    pub fn new(key: IdKey) -> IdSequence {
        IdSequence {
            key,
            next: AtomicU64::new(0),
        }
    }

    /// The next id, with its place in the order of creation (ids themselves are in no
    /// order); `None` once all 2^53 - 1 have been handed out (at a million creates a second,
    /// after 285 years).
    pub fn next(&self) -> Option<(u64, u64)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.key.id(n).map(|id| (n, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const N: u64 = 1_000_000;

    #[test]
    fn a_million_ids_never_repeat_and_stay_in_range() {
        let key = IdKey::from_seed(1);
        let mut seen = HashSet::with_capacity(N as usize);
        for n in 0..N {
            let id = key.id(n).expect("in range");
            assert!((1..=MAX_ID).contains(&id), "id {id} of counter {n}");
            assert!(seen.insert(id), "id {id} repeated at counter {n}");
        }
    }

    #[test]
    fn the_last_counters_are_in_range_and_past_them_there_is_none() {
        let key = IdKey::from_seed(2);
        for n in MAX_ID - 1000..MAX_ID {
            let id = key.id(n).expect("in range");
            assert!((1..=MAX_ID).contains(&id));
        }
        assert_eq!(key.id(MAX_ID), None);
        assert_eq!(key.id(u64::MAX), None);
    }

    #[test]
    fn two_keys_give_unrelated_sequences() {
        let (a, b) = (IdKey::from_seed(3), IdKey::from_seed(4));
        let first: HashSet<u64> = (0..10_000).filter_map(|n| a.id(n)).collect();
        let shared = (0..10_000)
            .filter_map(|n| b.id(n))
            .filter(|id| first.contains(id))
            .count();
        // 10,000 ids of 2^53 - 1 each: a shared one has odds of about 1 in 90 million.
        assert_eq!(shared, 0);
        assert_ne!(a.id(0), b.id(0));
    }

    #[test]
    fn random_keys_differ() {
        let a = IdKey::random().expect("randomness");
        let b = IdKey::random().expect("randomness");
        assert_ne!(a, b);
    }

    #[test]
    fn a_sequence_numbers_its_ids_in_order() {
        let ids = IdSequence::new(IdKey::from_seed(5));
        assert_eq!(
            ids.next(),
            Some((0, IdKey::from_seed(5).id(0).expect("in range")))
        );
        assert_eq!(
            ids.next(),
            Some((1, IdKey::from_seed(5).id(1).expect("in range")))
        );
    }
}
