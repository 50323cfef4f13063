//! Micro-benchmarks of the hot paths, through the public API only.
//!
//! ```text
//!  collect/idle            snapshot() with nothing written: the tracker's scan alone
//!  snapshot/dirty-16       16 random pages written, then snapshot()
//!  insert/unique-256       256 pages of never-seen contents: hash + frame copy each
//!  insert/dedup-hit-256    256 pages whose contents the store holds: hash + compare
//!  restore/256             restore() between two snapshots differing in 256 pages
//!  drop/256                dropping the only handle on a snapshot with 256 own pages
//! ```
//! The region is 64 MiB and uses `Tracking::Auto` (set `PAGESNAP_TRACKING` to time
//! another backend). Only the snapshot or restore call is timed, never the writes.
//! Side-by-side figures against fork and memcpy come from `pagesnap bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pagesnap::{Region, Snapshot};
use std::hint::black_box;
use std::time::{Duration, Instant};

const REGION: usize = 64 << 20;

/// A region with every page written (non-zero, unique) and snapshotted once.
fn filled_region() -> Region {
    let mut region = Region::builder(REGION).build().expect("region");
    let page = pagesnap::page_size();
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        p.fill(0x5a);
        p[..8].copy_from_slice(&(i as u64 | 1 << 63).to_ne_bytes());
    }
    region.snapshot().expect("first snapshot");
    region
}

/// `n` page indices spread over the region, different for each `round`.
fn pages(n: usize, round: u64) -> Vec<usize> {
    let total = REGION / pagesnap::page_size();
    let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out: Vec<usize> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % total as u64) as usize
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Writes `value` into the first word of each page of `pages`.
fn stamp(region: &mut Region, pages: &[usize], value: u64) {
    let page = pagesnap::page_size();
    let bytes = region.as_mut_slice();
    for &p in pages {
        bytes[p * page..p * page + 8].copy_from_slice(&(value ^ p as u64).to_ne_bytes());
    }
}

/// Times `snapshot()` after `write` ran (untimed) before each one.
fn time_snapshots(
    region: &mut Region,
    iters: u64,
    mut write: impl FnMut(&mut Region, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut last: Option<Snapshot> = None;
    for i in 0..iters {
        write(region, i);
        let t = Instant::now();
        let snap = region.snapshot().expect("snapshot");
        total += t.elapsed();
        // The previous snapshot is released outside the timing.
        last = Some(black_box(snap));
    }
    drop(last);
    total
}

fn snapshots(c: &mut Criterion) {
    let mut region = filled_region();
    let mut g = c.benchmark_group("snapshot");
    g.bench_function("collect/idle", |b| {
        b.iter_custom(|iters| time_snapshots(&mut region, iters, |_, _| {}))
    });
    let mut round = 0u64;
    g.bench_function("dirty-16", |b| {
        b.iter_custom(|iters| {
            time_snapshots(&mut region, iters, |r, _| {
                round += 1;
                stamp(r, &pages(16, round), round << 32);
            })
        })
    });
    g.finish();
}

fn inserts(c: &mut Criterion) {
    let mut region = filled_region();
    let set = pages(256, 7);
    let mut g = c.benchmark_group("insert");
    let mut round = 1u64 << 40;
    g.bench_function(BenchmarkId::new("unique", set.len()), |b| {
        b.iter_custom(|iters| {
            time_snapshots(&mut region, iters, |r, _| {
                round += 1;
                stamp(r, &set, round << 16);
            })
        })
    });
    // Two contents, A and B, each held by a live snapshot: every later snapshot of
    // the same pages finds its frames already stored (a dedup hit per page).
    stamp(&mut region, &set, 0xA);
    let _a = region.snapshot().expect("snapshot");
    stamp(&mut region, &set, 0xB);
    let _b = region.snapshot().expect("snapshot");
    g.bench_function(BenchmarkId::new("dedup-hit", set.len()), |b| {
        b.iter_custom(|iters| {
            time_snapshots(&mut region, iters, |r, i| {
                stamp(r, &set, if i % 2 == 0 { 0xA } else { 0xB });
            })
        })
    });
    g.finish();
}

fn restores(c: &mut Criterion) {
    let mut region = filled_region();
    let set = pages(256, 11);
    let a = region.snapshot().expect("snapshot");
    stamp(&mut region, &set, 0xC);
    let b_snap = region.snapshot().expect("snapshot");
    c.bench_function("restore/256", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                let to = if i % 2 == 0 { &a } else { &b_snap };
                region.restore(to).expect("restore");
            }
            t.elapsed()
        })
    });
}

fn drops(c: &mut Criterion) {
    let mut region = filled_region();
    let set = pages(256, 13);
    let base = region.snapshot().expect("snapshot");
    let mut round = 1u64 << 48;
    c.bench_function("drop/256", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                stamp(&mut region, &set, round << 16);
                let snap = region.snapshot().expect("snapshot");
                // The region's sync point is the only other holder: move it back to
                // `base` so dropping `snap` frees its 256 frames and its leaves.
                region.restore(&base).expect("restore");
                let t = Instant::now();
                drop(black_box(snap));
                total += t.elapsed();
            }
            total
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = snapshots, inserts, restores, drops
}
criterion_main!(benches);
