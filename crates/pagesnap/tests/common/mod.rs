//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod address_space;
pub mod child;
pub mod generation;
pub mod headroom;
pub mod kernel_source;
pub mod oracle;
pub mod rng;

use pagesnap::{probe, Tracking};

/// Every concrete backend this machine has; prints why each missing one is skipped.
pub fn backends() -> Vec<Tracking> {
    let caps = probe();
    Tracking::ALL
        .into_iter()
        .filter(|&t| {
            let b = caps.backend(t).expect("every backend is probed");
            if !b.available {
                eprintln!("skipping {t}: {}", b.reason);
            }
            b.available
        })
        .collect()
}

/// A deterministic byte stream (xorshift) for test data.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut x = rng::XorShift(seed | 1);
    for b in buf {
        *b = x.next_u64() as u8;
    }
}

/// Writes one u64 at `base + at` from a writer thread.
pub fn write_u64(base: usize, at: usize, v: u64) {
    // SAFETY: callers pass an 8-aligned offset inside a live region that outlives
    // the writer threads (they are joined before the region is dropped), and each
    // u64 has a single writer.
    unsafe { ((base + at) as *mut u64).write_volatile(v) };
}

/// Reads one u64 at `base + at` while writer threads may be writing it.
pub fn read_u64(base: usize, at: usize) -> u64 {
    // SAFETY: callers pass an 8-aligned offset inside a live region; a volatile
    // aligned u64 read never tears on x86-64 and only observes a writer's store.
    unsafe { ((base + at) as *const u64).read_volatile() }
}

impl Stampers {
    /// Blocks until every writer has stamped its first page at least once, so
    /// a test's window surely holds writes however loaded the machine is.
    pub fn wait_started(&self, base: usize) {
        let page = pagesnap::page_size();
        for w in 0..self.writers {
            let at = w * self.chunk_pages * page;
            while !(1..1 << 32).contains(&read_u64(base, at)) {
                std::thread::yield_now();
            }
        }
    }
}

/// Writer threads that each stamp a round number into every page of their own
/// chunk of a region, in address order, round after round, until stopped.
pub struct Stampers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Number of writers; writer `w` owns pages `w * chunk_pages ..`.
    pub writers: usize,
    /// Pages per writer.
    pub chunk_pages: usize,
}

impl Stampers {
    /// Starts `writers` stampers over the `len` bytes at `base`.
    pub fn start(base: usize, len: usize, writers: usize) -> Stampers {
        use std::sync::atomic::{AtomicBool, Ordering};
        let page = pagesnap::page_size();
        let chunk_pages = len / page / writers;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let handles = (0..writers)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut round = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for p in 0..chunk_pages {
                            write_u64(base, (w * chunk_pages + p) * page, round);
                        }
                        round += 1;
                    }
                })
            })
            .collect();
        Stampers {
            stop,
            handles,
            writers,
            chunk_pages,
        }
    }

    /// Stops and joins the writers (before any assertion: a panic must not unmap
    /// the region under them).
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in self.handles.drain(..) {
            h.join().unwrap();
        }
    }

    /// Asserts `bytes` is a point-in-time copy of the stamped region: for each
    /// writer one boundary at most, pages before it one round ahead of those after.
    pub fn assert_consistent(&self, bytes: &[u8], context: &str) {
        let page = pagesnap::page_size();
        for w in 0..self.writers {
            let rounds: Vec<u64> = (0..self.chunk_pages)
                .map(|p| {
                    let at = (w * self.chunk_pages + p) * page;
                    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
                })
                .collect();
            let steps: Vec<_> = rounds.windows(2).filter(|x| x[0] != x[1]).collect();
            assert!(
                steps.len() <= 1,
                "{context}: writer {w} shows {} boundaries: {:?}",
                steps.len(),
                &rounds[..rounds.len().min(8)]
            );
            if let Some(x) = steps.first() {
                assert_eq!(x[0], x[1] + 1, "{context}: a boundary steps by one round");
            }
        }
    }
}
