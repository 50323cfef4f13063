//! A steady loop of write · snapshot · restore over distinct data, for a profiler
//! to watch (`perf record`): `cargo run --release --example snapshot_loop --
//! [MiB] [dirty‰] [seconds] [threads]`. It prints the median of each step at the
//! end. (`pagesnap bench` is the real benchmark; this keeps a profile free of
//! the baselines' set-up.)

use pagesnap::{Region, Tracking};
use std::time::{Duration, Instant};

fn main() -> Result<(), pagesnap::Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (mib, permille, secs, threads) = (arg(1, 1024), arg(2, 10), arg(3, 10), arg(4, 0));
    let page = pagesnap::page_size();
    let pages = (mib << 20) / page;
    let n = pages * permille / 1000;
    let mut region = Region::builder(mib << 20)
        .tracking(Tracking::Auto)
        .threads(threads)
        .build()?;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Every page different: a counter and noise in each 8-byte word.
    for (i, w) in region.as_mut_slice().chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&((i as u64) ^ (next() << 20)).to_le_bytes());
    }
    let base = region.snapshot()?;
    println!("{mib} MiB, {n} dirty pages a round, {}", region.tracking());
    let (mut write, mut snap, mut restore) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs as u64) {
        let dirty: Vec<usize> = (0..n).map(|_| next() as usize % pages).collect();
        let t = Instant::now();
        for &p in &dirty {
            let v = next();
            region.as_mut_slice()[p * page..p * page + 8].copy_from_slice(&v.to_le_bytes());
        }
        write.push(t.elapsed());
        let t = Instant::now();
        let s = region.snapshot()?;
        snap.push(t.elapsed());
        let t = Instant::now();
        region.restore(&base)?;
        restore.push(t.elapsed());
        drop(s);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "{} rounds: write {:?}  snapshot {:?}  restore {:?} (medians)",
        snap.len(),
        median(&mut write),
        median(&mut snap),
        median(&mut restore)
    );
    Ok(())
}
