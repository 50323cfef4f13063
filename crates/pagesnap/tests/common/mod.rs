//! Helpers shared by the integration tests.
#![allow(dead_code)]

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
    let mut x = seed | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}
