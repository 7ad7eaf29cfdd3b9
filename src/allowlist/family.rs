//! One address family's networks for `table`: (prefix length, network bits)
//! → expiry, and the prefix lengths present, longest first. A lookup is one
//! hash probe per length present; real allowlists hold few (/32 logins, some
//! /24s, /64s for IPv6), where a bit-by-bit trie walk costs up to 128 steps.
//!
//! Memory is the point of this layout (a million entries per node):
//!
//! - keys are packed (`(u8, u32)` is 8 bytes; IPv6 is `(u8, u64, u64)`,
//!   24 bytes, where `(u8, u128)` would be 32 with u128's alignment);
//! - the map is split into `SHARDS` copy-on-write shards. The follower changes
//!   its working table and publishes a clone for request handlers: a clone
//!   shares every shard, and a change copies only the shard it touches
//!   (`Arc::make_mut`), so a node holds one copy of its entries, not two.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};

use super::expiry::{live, ExpiresAt};

/// Shards per family: a change copies 1/SHARDS of the table when a reader
/// still holds the published one (≈ 140 kB at a million entries).
const SHARDS: usize = 256;

/// An address as bits, masked to a prefix length, and its packed map key.
pub(super) trait Bits: Copy + Eq {
    const WIDTH: u8;
    type Key: Copy + Eq + Hash;
    fn masked(self, len: u8) -> Self;
    /// The key of the network of `len` bits holding `self`.
    fn key(self, len: u8) -> Self::Key;
    /// The network bits and length of a key.
    fn unkey(key: Self::Key) -> (Self, u8);
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    type Key = (u8, u32);
    fn masked(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
    fn key(self, len: u8) -> (u8, u32) {
        (len, self.masked(len))
    }
    fn unkey((len, bits): (u8, u32)) -> (u32, u8) {
        (bits, len)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    type Key = (u8, u64, u64);
    fn masked(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
    fn key(self, len: u8) -> (u8, u64, u64) {
        let m = self.masked(len);
        (len, (m >> 64) as u64, m as u64)
    }
    fn unkey((len, hi, lo): (u8, u64, u64)) -> (u128, u8) {
        (((hi as u128) << 64) | lo as u128, len)
    }
}

#[derive(Clone)]
pub(super) struct Family<B: Bits> {
    /// Empty until the first insert; then `SHARDS` maps.
    shards: Vec<Arc<FxHashMap<B::Key, ExpiresAt>>>,
    len: usize,
    /// `counts[len]`: how many networks of that length.
    counts: Vec<u32>,
    lengths: Vec<u8>,
}

impl<B: Bits> Default for Family<B> {
    fn default() -> Self {
        Family {
            shards: Vec::new(),
            len: 0,
            counts: Vec::new(),
            lengths: Vec::new(),
        }
    }
}

/// Which shard holds a key. Not the map's own hash: hashbrown takes its tag
/// from the hash's top bits, which would then be alike within a shard.
fn shard_of<K: Hash>(key: &K) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    (h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SHARDS
}

impl<B: Bits> Family<B> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Size an empty family for about `n` networks at once: growing a shard
    /// copies it, and the allocator keeps the outgrown copies (measured: a
    /// third more RSS at a million entries).
    pub(super) fn reserve(&mut self, n: usize) {
        if self.shards.is_empty() && n > 0 {
            let each = n.div_ceil(SHARDS) + n.div_ceil(SHARDS) / 16 + 1;
            self.shards = (0..SHARDS)
                .map(|_| {
                    Arc::new(FxHashMap::with_capacity_and_hasher(
                        each,
                        Default::default(),
                    ))
                })
                .collect();
        }
    }

    pub(super) fn insert(&mut self, bits: B, len: u8, expires_at: ExpiresAt) {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Arc::default()).collect();
        }
        let key = bits.key(len);
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        match shard.get_mut(&key) {
            // Unchanged: do not copy a shared shard for nothing.
            Some(e) if *e == expires_at => {}
            Some(e) => *e = expires_at,
            None => {
                shard.insert(key, expires_at);
                self.len += 1;
                self.count(len, true);
            }
        }
    }

    pub(super) fn remove(&mut self, bits: B, len: u8) {
        let key = bits.key(len);
        let i = shard_of(&key);
        // Only copy a shared shard that holds the key.
        if !self.shards.get(i).is_some_and(|s| s.contains_key(&key)) {
            return;
        }
        Arc::make_mut(&mut self.shards[i]).remove(&key);
        self.len -= 1;
        self.count(len, false);
    }

    fn count(&mut self, len: u8, up: bool) {
        if self.counts.is_empty() {
            self.counts = vec![0; B::WIDTH as usize + 1];
        }
        let c = &mut self.counts[len as usize];
        *c = if up { *c + 1 } else { *c - 1 };
        if (up && *c == 1) || (!up && *c == 0) {
            self.lengths = (0..=B::WIDTH)
                .rev()
                .filter(|&l| self.counts[l as usize] > 0)
                .collect();
        }
    }

    /// The longest live network holding `addr`: its length and expiry.
    pub(super) fn longest(&self, addr: B, now_ms: u64) -> Option<(u8, ExpiresAt)> {
        self.lengths.iter().find_map(|&len| {
            let key = addr.key(len);
            let e = *self.shards[shard_of(&key)].get(&key)?;
            live(e, now_ms).then_some((len, e))
        })
    }

    /// Every network (bits, length) with its expiry, unordered.
    pub(super) fn iter(&self) -> impl Iterator<Item = (B, u8, ExpiresAt)> + '_ {
        self.shards.iter().flat_map(|s| {
            s.iter().map(|(&k, &e)| {
                let (bits, len) = B::unkey(k);
                (bits, len, e)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_shares_its_shards_until_one_changes() {
        let mut a: Family<u32> = Family::default();
        for i in 0..10_000u32 {
            a.insert(i << 8, 24, 0);
        }
        let b = a.clone();
        let shared = |a: &Family<u32>, b: &Family<u32>| {
            a.shards
                .iter()
                .zip(&b.shards)
                .filter(|(x, y)| Arc::ptr_eq(x, y))
                .count()
        };
        assert_eq!(shared(&a, &b), SHARDS);
        a.insert(7 << 8, 24, 5);
        a.remove(9 << 8, 24);
        assert!(
            shared(&a, &b) >= SHARDS - 2,
            "only touched shards are copied"
        );
        assert_eq!((a.len(), b.len()), (9_999, 10_000));
        assert_eq!(
            b.longest(7 << 8, 1),
            Some((24, 0)),
            "the clone is unchanged"
        );
        assert_eq!(a.longest(7 << 8, 1), Some((24, 5)));
    }

    #[test]
    fn ipv6_keys_round_trip() {
        let bits: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
        let (back, len) = u128::unkey(bits.key(64));
        assert_eq!((back, len), (0x2001_0db8_0000_0000_0000_0000_0000_0000, 64));
        assert_eq!(std::mem::size_of::<<u128 as Bits>::Key>(), 24);
        assert_eq!(std::mem::size_of::<<u32 as Bits>::Key>(), 8);
    }
}
