//! `pagesnap bench memory`: what many live snapshots cost in memory.
//!
//! One region, `--snapshots` snapshots all kept alive, a fresh random set of pages
//! written before each. Reports the store's own accounting ([`pagesnap::StoreStats`])
//! against the bytes written, plus the process's resident growth as a cross-check
//! of that accounting (it includes allocator overhead the stats cannot see).

use super::args::{JsonArg, SeedArg, TrackingArg};
use super::dataset::{dirty, stamp, Rng};
use super::progress;
use super::report::Target;
use super::stats::Summary;
use super::units::{human_bytes, ByteSize, Percent};
use crate::CmdResult;
use pagesnap::Region;
use serde_json::json;
use std::process::ExitCode;
use std::time::Instant;

/// What the store may hold beyond the page contents and still meet the target:
/// one slab (a 2 MiB huge page) of allocation granularity.
const SLAB_ALLOWANCE: u64 = 2 << 20;

/// Options of `pagesnap bench memory`.
#[derive(clap::Args, Debug)]
pub struct MemoryArgs {
    /// Region size.
    #[arg(long, default_value = "256MiB")]
    size: ByteSize,
    /// Snapshots to take (all kept alive).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    snapshots: u32,
    /// Share of the pages written before each snapshot.
    #[arg(long, default_value = "1%")]
    dirty: Percent,
    #[command(flatten)]
    tracking: TrackingArg,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: MemoryArgs) -> CmdResult {
    let page = pagesnap::page_size();
    let mut region = Region::builder(args.size.0)
        .tracking(args.tracking.get())
        .build()?;
    let (len, store) = (region.len(), region.store().clone());
    let npages = len / page;
    let k = args.dirty.of(npages);
    let n = args.snapshots as usize;
    let seed = args.seed.get();
    let kernel = &pagesnap::probe().kernel;
    println!(
        "pagesnap bench memory: {} region ({}), {n} snapshots kept alive, {k} dirty pages ({}) \
         before each, seed {seed}, kernel {kernel}",
        human_bytes(len as u64),
        region.tracking(),
        args.dirty
    );

    let rss_before = resident_bytes();
    let mut rng = Rng::new(seed);
    let mut touched = vec![false; npages];
    let mut snaps = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut dirty_total = 0u64;
    let pb = progress::bar(n as u64, "snapshots");
    for i in 0..n {
        let pages = rng.choose(npages, k);
        pages.iter().for_each(|&p| touched[p] = true);
        dirty(region.as_mut_slice(), &pages, page, stamp(i, 0));
        let t = Instant::now();
        snaps.push(region.snapshot()?);
        times.push(t.elapsed());
        dirty_total += (k * page) as u64;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let stats = store.stats();
    let region_resident = (touched.iter().filter(|t| **t).count() * page) as u64;
    let rss_growth = resident_bytes()
        .zip(rss_before)
        .map(|(after, before)| after.saturating_sub(before).saturating_sub(region_resident));
    let snapshot_ms = Summary::of(&times).map_or(0.0, |s| s.median_ms);

    let content = stats.unique_pages * stats.page_size;
    let targets = [
        Target {
            goal: "stored_bytes ≤ 1.02 × unique_pages × page (+ one slab)".into(),
            ratio: (content > 0).then(|| stats.stored_bytes as f64 / content as f64),
            limit: 1.02 + SLAB_ALLOWANCE as f64 / content.max(1) as f64,
            at_most: true,
        },
        Target {
            goal: "metadata_bytes ≤ 10 % of dirty_bytes_total".into(),
            ratio: Some(stats.metadata_bytes as f64 / dirty_total as f64),
            limit: 0.10,
            at_most: true,
        },
    ];
    let line = |k: &str, v: String| println!("  {k:<22} {v}");
    line("unique_pages", stats.unique_pages.to_string());
    line(
        "stored_bytes",
        format!(
            "{} ({})",
            stats.stored_bytes,
            human_bytes(stats.stored_bytes)
        ),
    );
    line(
        "metadata_bytes",
        format!(
            "{} ({}), {} table nodes",
            stats.metadata_bytes,
            human_bytes(stats.metadata_bytes),
            stats.table_nodes
        ),
    );
    line(
        "dirty_bytes_total",
        format!("{dirty_total} ({})", human_bytes(dirty_total)),
    );
    if let Some(g) = rss_growth {
        line(
            "resident growth",
            format!(
                "{} (process RSS growth less the region's own pages)",
                human_bytes(g)
            ),
        );
    }
    line("snapshot median", format!("{snapshot_ms:.3} ms"));
    println!("Targets:");
    for t in &targets {
        println!("  {}", t.line());
    }

    if args.json.path().is_some() {
        let doc = json!({
            "size_bytes": len,
            "page_size": stats.page_size,
            "snapshots": n,
            "dirty_pages": k,
            "tracking": region.tracking().name(),
            "seed": seed,
            "kernel": kernel,
            "unique_pages": stats.unique_pages,
            "stored_bytes": stats.stored_bytes,
            "metadata_bytes": stats.metadata_bytes,
            "table_nodes": stats.table_nodes,
            "dirty_bytes_total": dirty_total,
            "rss_growth_bytes": rss_growth,
            "snapshot_median_ms": snapshot_ms,
            "targets": targets.iter().map(Target::json).collect::<Vec<_>>(),
        });
        args.json.write(&doc)?;
    }
    drop(snaps);
    Ok(ExitCode::SUCCESS)
}

/// Resident set size of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * pagesnap::page_size() as u64)
}
