//! Developer's loupe: write 1 % of 1 GiB (distinct contents per page), snapshot,
//! restore, many times, for profiling:
//! `perf record cargo run --release --example snapshot_loop -- [threads] [rounds]`.
use pagesnap::Region;
use std::time::{Duration, Instant};
fn main() -> Result<(), pagesnap::Error> {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap_or(0));
    let threads = args.next().unwrap_or(0);
    let rounds = args.next().unwrap_or(100).max(1);
    let page = pagesnap::page_size();
    let pages = 262144;
    let mut region = Region::builder(pages * page).threads(threads).build()?;
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        p[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    let base = region.snapshot()?;
    let mut x = 88172645463325252u64;
    let (mut write_t, mut snap_t, mut restore_t) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let t = Instant::now();
        for _ in 0..pages / 100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize % pages) * page + 8;
            region.as_mut_slice()[at..at + 8].copy_from_slice(&(x ^ round as u64).to_le_bytes());
        }
        write_t += t.elapsed();
        let t = Instant::now();
        let s = region.snapshot()?;
        snap_t += t.elapsed();
        let t = Instant::now();
        region.restore(&base)?;
        restore_t += t.elapsed();
        drop(s);
    }
    let n = rounds as u32;
    println!(
        "threads {threads}: write avg {:?}, snapshot avg {:?}, restore avg {:?}",
        write_t / n,
        snap_t / n,
        restore_t / n
    );
    Ok(())
}
