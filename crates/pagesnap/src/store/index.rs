//! The content index: hash ─► frame id, in 64 shards with a lock each, so
//! threads inserting different pages rarely wait for each other.
//!
//! A shard's table holds frame ids only (4 bytes a bucket, and a control
//! byte): a frame's key, the low 64 bits of its xxh3-128 ([`key`]), is read from
//! its slot in the frame table when a probe needs it (`key_of`). The index is
//! most of a store's metadata, and a map holding the key beside the id took 16
//! bytes a bucket; the extra read is one the hit pays anyway, since a hit is
//! confirmed by the frame's bytes. Contents that share a key (whose hashes
//! collide, which crafted pages can do on purpose) are each indexed, and told
//! apart by those bytes, so each is still stored once — up to
//! [`MAX_SAME_KEY`] of them: past that a content is stored but not indexed, so
//! that crafted collisions cannot make every probe compare pages without end
//! (only dedup is lost for them, never bytes). `hashbrown`'s
//! `HashTable` is the map that lets a table find its keys this way.
//!
//! A shard's lock also orders a frame's last release against a concurrent hit on
//! it: both happen under the lock of the shard its hash falls in, so a frame is
//! never found after its last holder let it go. Every key a table reads was
//! written (by `publish`) under the same shard's lock.

use super::frames::FrameId;
use hashbrown::HashTable;
use std::hash::Hasher;
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

/// A page hash's key in its shard's table: its low 64 bits (the shard is
/// chosen by the top bits), used as the table's hash as it is.
pub(super) fn key(hash: u128) -> u64 {
    hash as u64
}

/// Most contents indexed under one key.
pub(super) const MAX_SAME_KEY: usize = 8;

/// Shards, chosen by the top bits of the hash (the tables use the low bits).
const SHARD_BITS: u32 = 6;

pub(super) struct Index {
    shards: Box<[Mutex<HashTable<FrameId>>]>,
}

/// One locked shard. `key_of` gives an indexed frame's key (from its slot).
pub(super) struct Shard<'a> {
    table: MutexGuard<'a, HashTable<FrameId>>,
}

/// The index could not grow (allocation failed); it holds this many entries.
#[derive(Debug)]
pub(super) struct Full(pub(super) usize);

impl Shard<'_> {
    /// The frame indexed under `key` for which `is` holds, if any (several
    /// frames may share a key: contents that collide on 64 bits).
    pub(super) fn find(&self, key: u64, mut is: impl FnMut(FrameId) -> bool) -> Option<FrameId> {
        self.table.find(key, |&id| is(id)).copied()
    }

    /// Makes room for one more entry, so that [`insert`](Self::insert) cannot
    /// fail to allocate.
    pub(super) fn reserve_one(&mut self, key_of: impl Fn(FrameId) -> u64) -> Result<(), Full> {
        let len = self.table.len();
        self.table
            .try_reserve(1, |&id| key_of(id))
            .map_err(|_| Full(len))
    }

    /// Indexes `id` under `key` (beside any other frame with that key: the
    /// caller found none with its bytes, under this same lock).
    pub(super) fn insert(&mut self, key: u64, id: FrameId, key_of: impl Fn(FrameId) -> u64) {
        self.table.insert_unique(key, id, |&id| key_of(id));
    }

    /// Removes `id`, indexed under `key`, if it is there.
    pub(super) fn remove(&mut self, key: u64, id: FrameId) {
        if let Ok(entry) = self.table.find_entry(key, |&x| x == id) {
            entry.remove();
        }
    }
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            shards: (0..1 << SHARD_BITS)
                .map(|_| Mutex::new(HashTable::new()))
                .collect(),
        }
    }

    /// Locks the shard `hash` falls in. A panic under the lock cannot leave a
    /// table unsafe to use, so poisoning is ignored.
    pub(super) fn shard(&self, hash: u128) -> Shard<'_> {
        let i = (hash >> (128 - SHARD_BITS)) as usize;
        Shard {
            table: self.shards[i].lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Bytes the tables take: their buckets (an id and a control byte each; a
    /// table of capacity `c` has the power of two at or above `c × 8/7`).
    pub(super) fn bytes(&self) -> u64 {
        let bucket = std::mem::size_of::<FrameId>() + 1;
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
