//! `pagesnap bench` without a subcommand: every method side by side on the same
//! dirty pages, interleaved round by round (A B C A B C …) after a warm-up.
//!
//! ```text
//!  setup: each method maps and fills its own copy of the dataset (pre-faulted)
//!  round r (warm-up rounds first, not recorded):
//!     pages ← k distinct random pages (seeded; a fresh set each round)
//!     for each method: write pages · snapshot · restore to before the writes
//!  report: median / min / max per method × op, ratios, the targets
//!  cases: every --dirty fraction (same datasets), then again with huge pages
//!         (--huge-pages), as rows of one table
//! ```

use super::args::{JsonArg, SeedArg};
use super::dataset::{stamp, Rng};
use super::methods::{Floor, Fork, Memcpy, Method, Op, Timings, Tracked, UffdRaw};
use super::report::{self, Row};
use super::stats::Summary;
use super::units::{human_bytes, ByteSize, Percent};
use super::{plot, progress};
use crate::CmdResult;
use pagesnap::{PageStore, Tracking};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

/// Options of the main benchmark.
#[derive(clap::Args, Debug)]
pub struct MainArgs {
    /// Region size (B, KiB, MiB, GiB).
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Share of the pages written each round; a list (0.1%,1%,10%,100%) sweeps.
    #[arg(long, default_value = "1%", value_delimiter = ',')]
    dirty: Vec<Percent>,
    /// Threads pagesnap may use for a snapshot or restore (0: every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Measured rounds (after the warm-up).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Unrecorded rounds run first.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Which pagesnap backends to run: all, uffd-wp, soft-dirty, mprotect, compare
    /// (or auto). Baselines always run.
    #[arg(long, default_value = "all")]
    tracking: Backends,
    /// Measure regions with transparent huge pages too, as more rows of the table.
    #[arg(long)]
    huge_pages: bool,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
    /// Draw the medians as grouped bars to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `--tracking`: every backend, or one.
#[derive(Clone, Copy, Debug)]
enum Backends {
    All,
    One(Tracking),
}

impl FromStr for Backends {
    type Err = String;
    fn from_str(s: &str) -> Result<Backends, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Backends::All);
        }
        s.parse::<Tracking>()
            .map(Backends::One)
            .map_err(|e| format!("{e} (or all)"))
    }
}

pub fn run(args: MainArgs) -> CmdResult {
    let caps = pagesnap::probe();
    let page = pagesnap::page_size();
    let len = args
        .size
        .0
        .checked_next_multiple_of(page)
        .ok_or("--size too large")?;
    let npages = len / page;
    let kmax = args.dirty.iter().map(|d| d.of(npages)).max().unwrap_or(1);
    let seed = args.seed.get();
    let (warmup, rounds) = (args.warmup as usize, args.rounds as usize);
    let fractions: Vec<String> = args.dirty.iter().map(|d| d.to_string()).collect();
    println!(
        "pagesnap bench: {} region ({npages} pages of {page} B), dirty {} per round, \
         {rounds} rounds after {warmup} warm-up, huge pages: {}, threads: {}, seed {seed}, kernel {}",
        human_bytes(len as u64),
        fractions.join(", "),
        if args.huge_pages { "also" } else { "no" },
        match args.threads {
            0 => "all cores".to_string(),
            n => n.to_string(),
        },
        caps.kernel,
    );

    let wanted: Vec<Tracking> = match args.tracking {
        Backends::All => Tracking::ALL.to_vec(),
        Backends::One(Tracking::Auto) => vec![caps.auto],
        Backends::One(t) => vec![t],
    };
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut backends = Vec::new();
    for t in wanted {
        match caps.backend(t) {
            Some(b) if !b.available => skipped.push((t.name().into(), b.reason.clone())),
            _ => backends.push(t),
        }
    }

    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    let multi = args.dirty.len() > 1 || args.huge_pages;
    let pages_kinds: &[bool] = if args.huge_pages {
        &[false, true]
    } else {
        &[false]
    };
    for &huge in pages_kinds {
        let mut methods = setup(len, kmax, huge, args.threads, &backends, &mut skipped)?;
        for &d in &args.dirty {
            let k = d.of(npages);
            let case = format!("{d} {}", if huge { "THP" } else { "4K" });
            let pb = progress::bar(((warmup + rounds) * methods.len()) as u64, "rounds");
            let mut samples: Vec<Vec<Timings>> = vec![Vec::new(); methods.len()];
            for r in 0..warmup + rounds {
                let pages = rng.choose(npages, k);
                let label = if r < warmup {
                    "warm-up".to_string()
                } else {
                    format!("round {}", r - warmup + 1)
                };
                for (mi, m) in methods.iter_mut().enumerate() {
                    pb.set_message(format!("{case} {label}: {}", m.name()));
                    let t = m.round(&pages, stamp(r, mi))?;
                    if r >= warmup {
                        samples[mi].push(t);
                    }
                    pb.inc(1);
                }
            }
            pb.finish_and_clear();
            for (m, s) in methods.iter().zip(&samples) {
                for &op in m.ops() {
                    let d: Vec<_> = s.iter().filter_map(|t| t.get(op)).collect();
                    if let Some(summary) = Summary::of(&d) {
                        rows.push(Row {
                            case: if multi { case.clone() } else { String::new() },
                            method: m.name().to_string(),
                            op: op.name(),
                            summary,
                            samples_ms: d.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
                        });
                    }
                }
            }
            cases.push((if multi { case } else { String::new() }, d, k, huge));
        }
    }
    for (name, why) in &skipped {
        println!("skipped {name}: {why}");
    }

    println!();
    println!("{}", report::table(&rows, &report::MAIN_COLUMNS));
    println!();
    println!("Targets (stated for 1 GiB, 4 KiB pages):");
    let mut targets = Vec::new();
    for (case, d, _, huge) in &cases {
        if *huge {
            continue;
        }
        let mine: Vec<Row> = rows.iter().filter(|r| &r.case == case).cloned().collect();
        for mut t in report::main_targets(&mine, d.0) {
            if multi {
                t.goal = format!("{case}: {}", t.goal);
            }
            println!("  {}", t.line());
            targets.push(t);
        }
    }
    let (first_d, first_k) = (args.dirty[0], args.dirty[0].of(npages));
    let huge = args.huge_pages;

    if args.json.path().is_some() {
        let doc = json!({
            "size_bytes": len,
            "page_size": page,
            "dirty_pages": first_k,
            "rounds": rounds,
            "huge_pages": huge,
            "kernel": caps.kernel,
            "warmup_rounds": warmup,
            "seed": seed,
            "dirty_percent": first_d.0,
            "threads": args.threads,
            "cases": cases.iter().map(|(case, d, k, huge)| json!({
                "case": case, "dirty_percent": d.0, "dirty_pages": k, "huge_pages": huge,
            })).collect::<Vec<_>>(),
            "skipped": skipped.iter().map(|(m, r)| json!({"method": m, "reason": r})).collect::<Vec<_>>(),
            "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "targets": targets.iter().map(report::Target::json).collect::<Vec<_>>(),
        });
        args.json.write(&doc)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "pagesnap bench: {}, dirty {}, median of {rounds} rounds, kernel {}",
            human_bytes(len as u64),
            fractions.join(", "),
            caps.kernel
        );
        let ops: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        // One bar series per method and case.
        let series: Vec<Row> = rows
            .iter()
            .map(|r| Row {
                method: format!("{} {}", r.method, r.case).trim_end().to_string(),
                ..r.clone()
            })
            .collect();
        plot::svg(path, &title, &ops, &series)
            .map_err(|e| format!("drawing {}: {e}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every method, set up for `len` bytes (huge pages or not), with a floor for up
/// to `kmax` dirty pages. Backends that fail to set up are added to `skipped`.
fn setup(
    len: usize,
    kmax: usize,
    huge: bool,
    threads: usize,
    backends: &[Tracking],
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<Box<dyn Method>>, Box<dyn std::error::Error>> {
    let mut skip = |name: &str, why: String| {
        if !skipped.iter().any(|(n, _)| n == name) {
            skipped.push((name.into(), why));
        }
    };
    // One store for all backends: their datasets start equal, so it holds the initial
    // dataset once. Each round restores to that first snapshot and drops the new one, so
    // the store does not grow and every method's new frames reuse freed memory.
    let store = PageStore::new();
    let setup = progress::bar(backends.len() as u64 + 4, "setup");
    let mut methods: Vec<Box<dyn Method>> = Vec::new();
    let step = |what: String| {
        setup.set_message(what);
        setup.inc(1);
    };
    for &t in backends {
        step(format!(
            "{t}: map, fill {}, first snapshot",
            human_bytes(len as u64)
        ));
        match Tracked::new(len, t, huge, &store, threads) {
            Ok(m) => methods.push(Box::new(m)),
            Err(e) => skip(t.name(), pagesnap::error::chain(e.as_ref())),
        }
    }
    if methods.iter().any(|m| m.name() == Tracking::UffdWp.name()) {
        step("uffd-raw: map, fill, arm by hand".into());
        match UffdRaw::new(len, huge) {
            Ok(m) => methods.push(Box::new(m)),
            Err(e) => skip("uffd-raw", pagesnap::error::chain(e.as_ref())),
        }
    }
    step("floor: map and fill".into());
    methods.push(Box::new(Floor::new(len, kmax, huge)?));
    step("memcpy: map and fill 3 buffers".into());
    methods.push(Box::new(Memcpy::new(len, huge)?));
    step("fork: start the helper process".into());
    methods.push(Box::new(Fork::new(len, huge)?));
    setup.finish_and_clear();
    Ok(methods)
}
