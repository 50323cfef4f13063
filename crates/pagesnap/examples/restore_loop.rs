//! Developer's loupe: many backtracking restores (write 1 %, snapshot, restore) of
//! 1 GiB, for profiling: `perf record cargo run --release --example restore_loop`.
use pagesnap::Region;
use std::time::{Duration, Instant};
fn main() -> Result<(), pagesnap::Error> {
    let page = pagesnap::page_size();
    let pages = 262144;
    let mut region = Region::builder(pages * page).build()?;
    region.as_mut_slice().fill(1);
    let base = region.snapshot()?;
    let mut x = 88172645463325252u64;
    let (mut snap_t, mut restore_t) = (Duration::ZERO, Duration::ZERO);
    let rounds = 300;
    for round in 0..rounds {
        for _ in 0..pages / 100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            region.as_mut_slice()[(x as usize % pages) * page] = round as u8 + 2;
        }
        let t = Instant::now();
        let _s = region.snapshot()?;
        snap_t += t.elapsed();
        let t = Instant::now();
        region.restore(&base)?;
        restore_t += t.elapsed();
    }
    println!(
        "snapshot avg {:?}, restore avg {:?}",
        snap_t / rounds,
        restore_t / rounds
    );
    Ok(())
}
