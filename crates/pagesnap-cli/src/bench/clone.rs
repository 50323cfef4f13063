//! `pagesnap bench clone`: starting regions from one snapshot, eagerly against
//! lazily.
//!
//! ```text
//!  eager: Region::builder(len).build() + restore(&S)   (every page copied in)
//!  lazy:  S.instantiate()                              (a private map of S's image)
//!  then, for each: touch k pages (read a word, write a word) · reset to S
//!  floor: memcpy of the k written pages alone (what any reset must at least do)
//!  RSS:   --clones clones live at once, each having written its k pages
//! ```
//! Eager's reset is `restore(&S)`; lazy's is `Region::reset`. The image of S is
//! written once, before the rounds (reported as `image_ms`), as the first
//! `instantiate` of a snapshot does; every timed lazy instantiate reuses it.

use super::args::{JsonArg, SeedArg, TrackingArg};
use super::dataset::{fill_page, stamp, Rng};
use super::progress;
use super::report::{ms, Target};
use super::stats::Summary;
use super::units::{human_bytes, ByteSize, Percent};
use crate::CmdResult;
use comfy_table::{presets, CellAlignment, Table};
use pagesnap::Region;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `pagesnap bench clone`.
#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    /// Region (and snapshot) size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Share of the pages each clone touches (reads, then writes).
    #[arg(long, default_value = "1%")]
    touch: Percent,
    /// Clones kept alive at once for the memory figure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    clones: u32,
    /// Timed rounds per method (medians are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    #[command(flatten)]
    tracking: TrackingArg,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

/// The medians of one method.
struct Outcome {
    method: &'static str,
    instantiate_ms: f64,
    touch_ms: f64,
    reset_ms: f64,
    /// Memory the live clones hold: their private (anonymous) pages, plus the
    /// image once for lazy clones.
    clones_rss_mb: f64,
    /// The process's Rss growth as `ps` shows it: an image page mapped in k
    /// clones counts k times, an image page no clone maps not at all.
    rss_delta_mb: f64,
    /// The process's Pss growth (image pages some clone maps count once).
    clones_pss_mb: f64,
    /// Whether the memory figure was extrapolated from fewer live clones.
    clones_measured: u32,
    floor_reset_ms: f64,
}

/// Reads one word and writes one word at the start of each page in `pages`.
#[inline(never)]
fn touch(mem: &mut [u8], pages: &[usize], page: usize, stamp: u64) -> u64 {
    let mut sum = 0u64;
    for &p in pages {
        let at = p * page;
        let word: [u8; 8] = mem[at..at + 8].try_into().expect("8 bytes");
        sum = sum.wrapping_add(u64::from_ne_bytes(std::hint::black_box(word)));
        mem[at..at + 8].copy_from_slice(&(stamp | p as u64).to_ne_bytes());
    }
    sum
}

fn median(samples: &[Duration]) -> f64 {
    Summary::of(samples).map_or(f64::NAN, |s| s.median_ms)
}

pub fn run(args: CloneArgs) -> CmdResult {
    let page = pagesnap::page_size();
    let mut src = Region::builder(args.size.0)
        .tracking(args.tracking.get())
        .build()?;
    let (len, tracking, store) = (src.len(), src.tracking(), src.store().clone());
    let npages = len / page;
    let k = args.touch.of(npages);
    let seed = args.seed.get();
    let kernel = &pagesnap::probe().kernel;
    println!(
        "pagesnap bench clone: {} snapshot ({tracking}), {k} pages ({}) touched per clone, \
         {} clones live, {} rounds, seed {seed}, kernel {kernel}",
        human_bytes(len as u64),
        args.touch,
        args.clones,
        args.rounds
    );
    for (i, p) in src.as_mut_slice().chunks_exact_mut(page).enumerate() {
        fill_page(i, p);
    }
    let snap = src.snapshot()?;
    drop(src);
    let builder = || Region::builder(len).tracking(tracking).store(&store);

    let t = Instant::now();
    drop(snap.instantiate_with(builder())?);
    let image_ms = t.elapsed().as_secs_f64() * 1e3;
    let image_bytes = snap.image_bytes();
    println!(
        "  image: {} written once in {image_ms:.1} ms",
        human_bytes(image_bytes)
    );

    let mut rng = Rng::new(seed);
    let rounds = args.rounds as usize;
    let pb = progress::bar(2 * rounds as u64, "rounds");
    let (mut eager, mut lazy) = (Times::default(), Times::default());
    let mut floor = Vec::with_capacity(rounds);
    let scratch = vec![0x33u8; k * page];
    for r in 0..rounds {
        let pages = rng.choose(npages, k);

        let t = Instant::now();
        let mut region = builder().build()?;
        region.restore(&snap)?;
        eager.instantiate.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(touch(region.as_mut_slice(), &pages, page, stamp(r, 1)));
        eager.touch.push(t.elapsed());
        let t = Instant::now();
        region.restore(&snap)?;
        eager.reset.push(t.elapsed());
        // The floor: the written pages copied back, into this pre-faulted region.
        let mem = region.as_mut_slice();
        let t = Instant::now();
        for (i, &p) in pages.iter().enumerate() {
            mem[p * page..(p + 1) * page].copy_from_slice(&scratch[i * page..(i + 1) * page]);
        }
        floor.push(t.elapsed());
        std::hint::black_box(&mem[..]);
        drop(region);
        pb.inc(1);

        let t = Instant::now();
        let mut clone = snap.instantiate_with(builder())?;
        lazy.instantiate.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(touch(clone.as_mut_slice(), &pages, page, stamp(r, 2)));
        lazy.touch.push(t.elapsed());
        let t = Instant::now();
        clone.reset()?;
        lazy.reset.push(t.elapsed());
        drop(clone);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let floor_ms = median(&floor);

    let n = args.clones as usize;
    let lazy_mem = live_clones(n, n, &mut rng, npages, k, page, || {
        Ok(snap.instantiate_with(builder())?)
    })?;
    // N eager clones hold N full copies: measure as many as fit in memory and
    // scale up (the figure is linear in the count).
    let fit = available_bytes().map_or(n, |avail| {
        ((avail.saturating_sub(2 << 30) / (len as u64 + (len as u64 >> 4))) as usize).clamp(1, n)
    });
    let eager_mem = live_clones(n, fit, &mut rng, npages, k, page, || {
        let mut region = builder().build()?;
        region.restore(&snap)?;
        Ok(region)
    })?;

    let mb = |b: f64| b / (1 << 20) as f64;
    let results = [
        Outcome {
            method: "eager",
            instantiate_ms: median(&eager.instantiate),
            touch_ms: median(&eager.touch),
            reset_ms: median(&eager.reset),
            clones_rss_mb: mb(eager_mem.anon),
            rss_delta_mb: mb(eager_mem.rss),
            clones_pss_mb: mb(eager_mem.pss),
            clones_measured: fit as u32,
            floor_reset_ms: floor_ms,
        },
        Outcome {
            method: "lazy",
            instantiate_ms: median(&lazy.instantiate),
            touch_ms: median(&lazy.touch),
            reset_ms: median(&lazy.reset),
            // The image is memory the clones stand on, though no RSS shows the
            // part of it no clone maps: count it once.
            clones_rss_mb: mb(lazy_mem.anon + image_bytes as f64),
            rss_delta_mb: mb(lazy_mem.rss),
            clones_pss_mb: mb(lazy_mem.pss),
            clones_measured: n as u32,
            floor_reset_ms: floor_ms,
        },
    ];

    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN).set_header(vec![
        "method",
        "instantiate ms",
        "touch ms",
        "reset ms",
        "floor reset ms",
        &format!("{n} clones MiB"),
        "Rss growth MiB",
        "Pss growth MiB",
    ]);
    for r in &results {
        let extrapolated = if r.clones_measured < n as u32 {
            format!(" (from {})", r.clones_measured)
        } else {
            String::new()
        };
        t.add_row(vec![
            r.method.to_string(),
            ms(r.instantiate_ms),
            ms(r.touch_ms),
            ms(r.reset_ms),
            ms(r.floor_reset_ms),
            format!("{:.0}{extrapolated}", r.clones_rss_mb),
            format!("{:.0}{extrapolated}", r.rss_delta_mb),
            format!("{:.0}{extrapolated}", r.clones_pss_mb),
        ]);
    }
    for i in 1..8 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{t}");
    println!(
        "  clones MiB: private pages of the live clones, plus lazy's image ({}) once; \
         Rss growth: as ps shows it (image pages counted per clone mapping them, \
         unmapped ones not at all); Pss growth: mapped image pages counted once",
        human_bytes(image_bytes)
    );

    let (e, l) = (&results[0], &results[1]);
    let targets = [
        Target {
            goal: "lazy instantiate+touch ≥ 20× faster than eager".into(),
            ratio: Some((e.instantiate_ms + e.touch_ms) / (l.instantiate_ms + l.touch_ms)),
            limit: 20.0,
            at_most: false,
        },
        Target {
            goal: format!("{n} lazy clones' memory ≤ 1.3 × region size"),
            ratio: Some(l.clones_rss_mb * (1 << 20) as f64 / len as f64),
            limit: 1.3,
            at_most: true,
        },
        Target {
            goal: "lazy reset ≤ 3× floor".into(),
            ratio: Some(l.reset_ms / floor_ms),
            limit: 3.0,
            at_most: true,
        },
    ];
    println!("Targets:");
    for t in &targets {
        println!("  {}", t.line());
    }

    if args.json.path().is_some() {
        let doc = json!({
            "size_bytes": len,
            "page_size": page,
            "touch_pages": k,
            "clones": n,
            "rounds": rounds,
            "tracking": tracking.name(),
            "seed": seed,
            "kernel": kernel,
            "image_ms": image_ms,
            "image_bytes": image_bytes,
            "results": results.iter().map(|r| json!({
                "method": r.method,
                "instantiate_ms": r.instantiate_ms,
                "touch_ms": r.touch_ms,
                "reset_ms": r.reset_ms,
                "clones_rss_mb": r.clones_rss_mb,
                "rss_delta_mb": r.rss_delta_mb,
                "clones_pss_mb": r.clones_pss_mb,
                "clones_measured": r.clones_measured,
                "floor_reset_ms": r.floor_reset_ms,
            })).collect::<Vec<_>>(),
            "targets": targets.iter().map(Target::json).collect::<Vec<_>>(),
        });
        args.json.write(&doc)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Times {
    instantiate: Vec<Duration>,
    touch: Vec<Duration>,
    reset: Vec<Duration>,
}

/// Memory growth while clones are live, in bytes, scaled to `want` clones.
struct Memory {
    rss: f64,
    pss: f64,
    anon: f64,
}

/// Makes `live` clones with `make`, each touching its own `k` pages, and reads the
/// process's Rss and Pss growth while all are live, scaled to `want` clones.
fn live_clones(
    want: usize,
    live: usize,
    rng: &mut Rng,
    npages: usize,
    k: usize,
    page: usize,
    make: impl Fn() -> Result<Region, Box<dyn std::error::Error>>,
) -> Result<Memory, Box<dyn std::error::Error>> {
    let before = rollup()?;
    let mut clones = Vec::with_capacity(live);
    for i in 0..live {
        let mut c = make()?;
        let pages = rng.choose(npages, k);
        std::hint::black_box(touch(c.as_mut_slice(), &pages, page, stamp(i, 3)));
        clones.push(c);
    }
    let after = rollup()?;
    drop(clones);
    let scale = want as f64 / live as f64;
    let grew = |a: u64, b: u64| a.saturating_sub(b) as f64 * scale;
    Ok(Memory {
        rss: grew(after.0, before.0),
        pss: grew(after.1, before.1),
        anon: grew(after.2, before.2),
    })
}

/// (Rss, Pss, Anonymous) of this process in bytes, from `/proc/self/smaps_rollup`.
fn rollup() -> Result<(u64, u64, u64), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup")
        .map_err(|e| format!("reading /proc/self/smaps_rollup: {e}"))?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    match (field("Rss:"), field("Pss:"), field("Anonymous:")) {
        (Some(r), Some(p), Some(a)) => Ok((r, p, a)),
        _ => Err("no Rss/Pss/Anonymous in /proc/self/smaps_rollup".into()),
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line["MemAvailable:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
