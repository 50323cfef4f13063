//! # Safety
//!
//! The dataset of `bench bgsave` and its writers. `distinct`: every 8-byte word
//! a different pseudo-random value, so every page differs and lz4 gains nothing
//! (as with real data); `seed`: the seed's fill of 123 everywhere. Writers
//! overwrite their chunk once with values that also differ per word. Either way
//! the expected contents of any word before and after the writers are known, so
//! a snapshot is verified in full. The only unsafe code is the writers' raw
//! stores, into the array that outlives them.
#![allow(unsafe_code)]

use std::sync::{Arc, Barrier};

/// The seed's fill value.
pub const FILL: u8 = 123;

/// What the array holds before the snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Data {
    /// Every page different and incompressible.
    Distinct,
    /// The seed's fill: every byte 123.
    Seed,
}

impl Data {
    pub fn name(self) -> &'static str {
        match self {
            Data::Distinct => "distinct",
            Data::Seed => "seed",
        }
    }

    /// The word at byte offset `at` (8-aligned) before the writers.
    pub fn before(self, at: usize) -> u64 {
        match self {
            Data::Distinct => mix(at as u64),
            Data::Seed => u64::from_ne_bytes([FILL; 8]),
        }
    }

    /// Fills `page`, which starts at byte offset `at`.
    pub fn fill(self, at: usize, page: &mut [u8]) {
        for (i, w) in page.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&self.before(at + i * 8).to_ne_bytes());
        }
    }
}

/// What writer `tid` stores at byte offset `at`.
pub fn after(tid: usize, at: usize) -> u64 {
    mix(at as u64 ^ (0x5bd1_e995 << 32)) ^ tid as u64
}

/// splitmix64: cheap, and no two nearby inputs give related outputs.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes per writer's chunk (the tail past `n` chunks is not written).
pub fn chunk(len: usize, n: usize) -> usize {
    len / n / 8 * 8
}

/// The word at `at` once every writer is done.
pub fn expected_after(data: Data, len: usize, n: usize, at: usize) -> u64 {
    let c = chunk(len, n);
    if at < c * n {
        after(at / c, at)
    } else {
        data.before(at)
    }
}

/// Writer threads asleep on `go` (n + 1 parties: the last is the timer); each
/// then writes its values over its chunk, once.
pub fn writers(
    base: usize,
    len: usize,
    n: usize,
    go: &Arc<Barrier>,
) -> Vec<std::thread::JoinHandle<()>> {
    let c = chunk(len, n);
    (0..n)
        .map(|tid| {
            let go = go.clone();
            // Named, so that a profile can tell the writers from the copier.
            let spawned = std::thread::Builder::new().name("bgsave-writer".into());
            let spawned = spawned.spawn(move || {
                go.wait();
                for at in (tid * c..(tid + 1) * c).step_by(8) {
                    // SAFETY: inside the array, which outlives the writers (they
                    // are joined first); 8-aligned; one writer per word.
                    unsafe { ((base + at) as *mut u64).write_volatile(after(tid, at)) };
                }
            });
            // As `std::thread::spawn` does: a writer that cannot start ends the run.
            spawned.expect("failed to spawn a writer thread")
        })
        .collect()
}

/// Whether `snap` holds exactly `want(at)` at every word.
pub fn verify(
    snap: &pagesnap::Snapshot,
    want: impl Fn(usize) -> u64,
) -> Result<bool, pagesnap::Error> {
    const STEP: usize = 2 << 20;
    let len = snap.len();
    let mut buf = vec![0u8; STEP];
    for off in (0..len).step_by(STEP) {
        let n = STEP.min(len - off);
        snap.read(off, &mut buf[..n])?;
        for (i, w) in buf[..n].chunks_exact(8).enumerate() {
            if u64::from_ne_bytes(w.try_into().expect("8 bytes")) != want(off + i * 8) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
