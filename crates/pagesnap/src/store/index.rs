//! The content index: hash ─► frame id, in 64 shards with a lock each, so
//! threads inserting different pages rarely wait for each other.
//!
//! A map is keyed by the low 64 bits of a page's xxh3-128 ([`key`]): a bucket
//! of 16 bytes where the whole hash made one of 32 (a `u128` is 16-aligned),
//! and the index is most of a store's metadata. Two contents that share a key
//! are told apart by their bytes (`frames.rs`), as for the whole hash.
//!
//! A shard's lock also orders a frame's last release against a concurrent hit on
//! it: both happen under the lock of the shard its hash falls in, so a frame is
//! never found after its last holder let it go.

use super::frames::FrameId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};

/// The keys are already uniformly distributed hashes: use their low bits as is.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

pub(super) type Map = HashMap<u64, FrameId, BuildHasherDefault<IdentityHasher>>;

/// A page hash's key in its shard's map: its low 64 bits (the shard is
/// chosen by the top bits).
pub(super) fn key(hash: u128) -> u64 {
    hash as u64
}

/// Shards, chosen by the top bits of the hash (the maps use the low bits).
const SHARD_BITS: u32 = 6;

pub(super) struct Index {
    shards: Box<[Mutex<Map>]>,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            shards: (0..1 << SHARD_BITS)
                .map(|_| Mutex::new(Map::default()))
                .collect(),
        }
    }

    /// Locks the shard `hash` falls in. A panic under the lock cannot leave a map
    /// unsafe to use, so poisoning is ignored.
    pub(super) fn shard(&self, hash: u128) -> MutexGuard<'_, Map> {
        let i = (hash >> (128 - SHARD_BITS)) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the maps take: their buckets (a key, an id and a control byte
    /// each; a map of capacity `c` has the power of two at or above `c × 8/7`).
    pub(super) fn bytes(&self) -> u64 {
        let bucket = std::mem::size_of::<(u64, FrameId)>() + 1;
        self.shards
            .iter()
            .map(|s| {
                let cap = s.lock().unwrap_or_else(|e| e.into_inner()).capacity();
                let buckets = match cap {
                    0 => 0,
                    1..=7 => cap + 1,
                    _ => (cap * 8 / 7).next_power_of_two(),
                };
                (buckets * bucket) as u64
            })
            .sum()
    }
}
