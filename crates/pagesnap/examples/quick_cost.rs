//! Quick look at snapshot / restore cost at one size and dirty fraction, beside the
//! dirty-copy floor: `cargo run --release --example quick_cost -- [MiB] [dirty‰] [backend]`.
//! (`pagesnap bench` is the real benchmark; this is a developer's loupe.)

use pagesnap::{Region, Tracking};
use std::time::Instant;

fn main() -> Result<(), pagesnap::Error> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let permille: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let tracking: Tracking = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(Tracking::Auto);
    let page = pagesnap::page_size();
    let pages = mib * 256;
    let n = pages * permille / 1000;
    let mut region = Region::builder(mib << 20).tracking(tracking).build()?;
    println!("{} MiB, {n} dirty pages, {}", mib, region.tracking());
    region.as_mut_slice().fill(1);
    let t = Instant::now();
    let base = region.snapshot()?;
    println!("first full snapshot: {:?}", t.elapsed());
    let mut floor_buf = vec![0u8; n * page];
    let mut x = 88172645463325252u64;
    for round in 0..5 {
        let dirty: Vec<usize> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as usize) % pages
            })
            .collect();
        let t = Instant::now();
        for &p in &dirty {
            region.as_mut_slice()[p * page] = round as u8 + 2;
        }
        let write = t.elapsed();
        let t = Instant::now();
        let s = region.snapshot()?;
        let snap = t.elapsed();
        let t = Instant::now();
        region.restore(&base)?;
        let restore = t.elapsed();
        let t = Instant::now();
        for (i, &p) in dirty.iter().enumerate() {
            floor_buf[i * page..(i + 1) * page]
                .copy_from_slice(&region.as_slice()[p * page..(p + 1) * page]);
        }
        let floor = t.elapsed();
        std::hint::black_box(&floor_buf);
        drop(s);
        println!("write {write:?}  snapshot {snap:?}  restore {restore:?}  floor copy {floor:?}");
    }
    Ok(())
}
