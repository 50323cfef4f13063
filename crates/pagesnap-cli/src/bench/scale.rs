//! `pagesnap bench scale`: does a snapshot cost follow what is used, or what is
//! reserved?
//!
//! ```text
//!  sparse: Region of --reserve (16 GiB), only the first --use (1 GiB) written
//!          (with --spread: the same number of pages, evenly spread over it)
//!  dense:  Region of exactly --use
//!  each round: two passes, sparse-then-dense and dense-then-sparse; in each, the
//!              same fresh random pages (within --use) are written in both regions,
//!              then each is snapshotted, timed (after a warm-up round)
//! ```

use super::args::{JsonArg, SeedArg, TrackingArg};
use super::dataset::{dirty, fill_page, stamp, Rng};
use super::progress;
use super::report::{self, Row};
use super::stats::Summary;
use super::units::{human_bytes, ByteSize, Percent};
use crate::CmdResult;
use pagesnap::{PageStore, Region, Snapshot};
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `pagesnap bench scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Size of the sparse region.
    #[arg(long, default_value = "16GiB")]
    reserve: ByteSize,
    /// Bytes in use (written) in both regions; the dense region's size.
    #[arg(long = "use", default_value = "1GiB")]
    used: ByteSize,
    /// Spread the sparse region's used pages evenly over it (one page every
    /// reserve/use pages) instead of packing them at its start.
    #[arg(long)]
    spread: bool,
    /// Share of the used pages written before each snapshot.
    #[arg(long, default_value = "1%")]
    dirty: Percent,
    /// Measured rounds (after one warm-up round), each timing two snapshots per side.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    #[command(flatten)]
    tracking: TrackingArg,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

/// One side of the comparison: its region, its last snapshot, and its timings.
struct Side {
    name: &'static str,
    region: Region,
    last: Snapshot,
    arm: Duration,
    first_snapshot: Duration,
    /// Region pages from one used page to the next (1: packed).
    stride: usize,
    samples: Vec<Duration>,
}

impl Side {
    fn new(
        name: &'static str,
        len: usize,
        used: usize,
        stride: usize,
        args: &ScaleArgs,
        store: &PageStore,
    ) -> pagesnap::Result<Side> {
        let t = Instant::now();
        let mut region = Region::builder(len)
            .tracking(args.tracking.get())
            .store(store)
            .build()?;
        let arm = t.elapsed();
        let page = pagesnap::page_size();
        let bytes = region.as_mut_slice();
        for i in 0..used / page {
            let at = i * stride * page;
            fill_page(i, &mut bytes[at..at + page]);
        }
        let t = Instant::now();
        let last = region.snapshot()?;
        Ok(Side {
            name,
            region,
            last,
            arm,
            first_snapshot: t.elapsed(),
            stride,
            samples: Vec::new(),
        })
    }
}

pub fn run(args: ScaleArgs) -> CmdResult {
    let page = pagesnap::page_size();
    let used = args.used.0.next_multiple_of(page);
    if args.reserve.0 < used {
        return Err("--reserve must be at least --use".into());
    }
    let npages = used / page;
    let k = args.dirty.of(npages);
    let seed = args.seed.get();
    let rounds = args.rounds as usize;
    let kernel = &pagesnap::probe().kernel;
    // One store per side: with a shared one, a page rewritten in one region keeps the
    // other's frame alive, the store grows every round, and whichever side snapshots
    // second lands its new frames in fresh heap memory (a first-touch fault each).
    let setup = progress::bar(2, "setup");
    setup.set_message(format!(
        "sparse: {} region",
        human_bytes(args.reserve.0 as u64)
    ));
    let stride = if args.spread {
        (args.reserve.0 / page / npages.max(1)).max(1)
    } else {
        1
    };
    let sparse = Side::new(
        "sparse",
        args.reserve.0,
        used,
        stride,
        &args,
        &PageStore::new(),
    )?;
    setup.inc(1);
    setup.set_message(format!("dense: {} region", human_bytes(used as u64)));
    let dense = Side::new("dense", used, used, 1, &args, &PageStore::new())?;
    setup.finish_and_clear();
    println!(
        "pagesnap bench scale: {} reserved vs {} region, {} used in both ({}), {k} dirty pages \
         ({}) per snapshot, {rounds} rounds of 2 passes (opposite orders) after 1 warm-up, {}, \
         seed {seed}, kernel {kernel}",
        human_bytes(sparse.region.len() as u64),
        human_bytes(dense.region.len() as u64),
        human_bytes(used as u64),
        if stride > 1 {
            format!("one page in {stride} of the sparse region")
        } else {
            "packed at the start of the sparse region".to_string()
        },
        args.dirty,
        sparse.region.tracking(),
    );

    let mut sides = [sparse, dense];
    let mut rng = Rng::new(seed);
    // Each round is two passes in opposite orders, each on a fresh set of pages, so
    // every side is timed as often first as second (order effects cancel).
    let pb = progress::bar((rounds + 1) as u64, "rounds");
    for r in 0..=rounds {
        for pass in 0..2 {
            let pages = rng.choose(npages, k);
            let order = if pass == 0 { [0, 1] } else { [1, 0] };
            for si in order {
                let side = &mut sides[si];
                let at: Vec<usize> = pages.iter().map(|&p| p * side.stride).collect();
                dirty(
                    side.region.as_mut_slice(),
                    &at,
                    page,
                    stamp(2 * r + pass, si),
                );
                let t = Instant::now();
                let snap = side.region.snapshot()?;
                let took = t.elapsed();
                // The previous snapshot is released outside the timing.
                side.last = snap;
                if r > 0 {
                    side.samples.push(took);
                }
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();

    let rows: Vec<Row> = sides
        .iter()
        .filter_map(|s| {
            Some(Row {
                case: String::new(),
                method: s.name.into(),
                op: "snapshot",
                summary: Summary::of(&s.samples)?,
                samples_ms: s.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
            })
        })
        .collect();
    let versus = [report::Versus {
        header: "cost vs dense",
        base: "dense",
        speedup: false,
    }];
    println!("{}", report::table(&rows, &versus));
    for s in &sides {
        println!(
            "  {:<6} arm (build) {:>9.3} ms, first snapshot of {} {:>9.3} ms",
            s.name,
            s.arm.as_secs_f64() * 1e3,
            human_bytes(used as u64),
            s.first_snapshot.as_secs_f64() * 1e3
        );
    }
    let target = report::target(
        &rows,
        "scale: sparse snapshot ≤ 1.5× dense snapshot",
        ("sparse", "snapshot"),
        ("dense", "snapshot"),
        1.5,
        true,
    );
    println!("Target:\n  {}", target.line());

    if args.json.path().is_some() {
        let doc = json!({
            "reserve_bytes": sides[0].region.len(),
            "use_bytes": used,
            "spread_stride_pages": stride,
            "page_size": page,
            "dirty_pages": k,
            "rounds": rounds,
            "samples_per_method": 2 * rounds,
            "tracking": sides[0].region.tracking().name(),
            "seed": seed,
            "kernel": kernel,
            "arm_ms": {"sparse": sides[0].arm.as_secs_f64() * 1e3, "dense": sides[1].arm.as_secs_f64() * 1e3},
            "first_snapshot_ms": {"sparse": sides[0].first_snapshot.as_secs_f64() * 1e3, "dense": sides[1].first_snapshot.as_secs_f64() * 1e3},
            "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "targets": [target.json()],
        });
        args.json.write(&doc)?;
    }
    Ok(ExitCode::SUCCESS)
}
