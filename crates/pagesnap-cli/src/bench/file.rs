//! `pagesnap bench file`: snapshot files against plain `write(2)`/`read(2)` of the
//! same bytes, to the same directory, in the same run.
//!
//! ```text
//!  region (--size, --content) ─ snapshot A ─ dirty --dirty of the pages ─ snapshot B
//!  per round:  write(2)+fsync of A's bytes   vs  A.save          (full.snap)
//!              read(2) of them               vs  Snapshot::load  (fresh store)
//!              write(2)+fsync of dirty bytes vs  B.save_delta(A) (delta.snap)
//!              read(2) of them               vs  Snapshot::load_delta
//! ```
//! Medians over `--rounds`; `full.snap` and `delta.snap` are left in `--dir` for
//! `pagesnap inspect` / `pagesnap verify`.

use crate::bench::args::JsonArg;
use crate::bench::dataset::Rng;
use crate::bench::units::{ByteSize, Percent};
use crate::CmdResult;
use pagesnap::{PageStore, Region, Snapshot};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `pagesnap bench file [--size 1GiB] [--dirty 1%] [--json FILE] [--dir DIR]`.
#[derive(clap::Args)]
pub struct FileArgs {
    /// Region size (B, KiB, MiB, GiB).
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Share of the pages written between the two snapshots (for the delta).
    #[arg(long, default_value = "1%")]
    dirty: Percent,
    /// Page contents: `random` (incompressible) or `mixed` (half random, half zeros).
    #[arg(long, default_value = "random", value_parser = ["random", "mixed"])]
    content: String,
    /// Rounds; figures are medians.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// Directory to write in (default: a new one under the temporary directory);
    /// `full.snap` and `delta.snap` are left there.
    #[arg(long, visible_alias = "keep")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    json: JsonArg,
}

/// Random (incompressible) bytes, or half random and half zeros when `mixed`.
fn fill_page(rng: &mut Rng, page: &mut [u8], mixed: bool) {
    let random = if mixed { page.len() / 2 } else { page.len() };
    for c in page[..random].chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes()[..c.len()]);
    }
    page[random..].fill(0);
}

/// write(2) of `bytes` into a new file, then fsync: (time to write, time with fsync).
fn plain_write(path: &Path, bytes: &[u8]) -> std::io::Result<(Duration, Duration)> {
    let _ = std::fs::remove_file(path);
    let t = Instant::now();
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    let written = t.elapsed();
    f.sync_all()?;
    drop(f);
    Ok((written, t.elapsed()))
}

/// read(2) of a whole file into a new buffer.
fn plain_read(path: &Path) -> std::io::Result<Duration> {
    let t = Instant::now();
    let v = std::fs::read(path)?;
    let d = t.elapsed();
    drop(v);
    Ok(d)
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    let n = v.len();
    let d = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark.
pub fn run(args: FileArgs) -> CmdResult {
    let ps = pagesnap::page_size();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pagesnap-bench-file-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let mixed = args.content == "mixed";
    let rounds = args.rounds.max(1);

    let mut region = Region::builder(args.size.0).build()?;
    let len = region.len();
    let pages = len / ps;
    let mut rng = Rng::new(0x243f_6a88_85a3_08d3);
    for page in region.as_mut_slice().chunks_mut(ps) {
        fill_page(&mut rng, page, mixed);
    }
    let a = region.snapshot()?;
    let full_bytes = region.as_slice().to_vec();
    let dirty_pages = args.dirty.of(pages);
    let mut chosen = vec![false; pages];
    let mut dirty_bytes = Vec::with_capacity(dirty_pages * ps);
    let mut n = 0;
    while n < dirty_pages {
        let p = (rng.next_u64() % pages as u64) as usize;
        if !std::mem::replace(&mut chosen[p], true) {
            let page = &mut region.as_mut_slice()[p * ps..(p + 1) * ps];
            fill_page(&mut rng, page, mixed);
            dirty_bytes.extend_from_slice(page);
            n += 1;
        }
    }
    let b = region.snapshot()?;
    drop(region);

    let full = dir.join("full.snap");
    let delta = dir.join("delta.snap");
    let plain = dir.join("plain.bin");
    let plain_dirty = dir.join("plain-dirty.bin");
    let mut t: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut time = |name, d| t.entry(name).or_default().push(d);
    let (mut full_report, mut delta_report) = (None, None);
    eprintln!(
        "bench file: {} MiB region, {dirty_pages} dirty pages, {} content, {rounds} rounds, in {}",
        len >> 20,
        args.content,
        dir.display()
    );
    for round in 0..rounds {
        // Both sides create a new file (the old one is unlinked untimed), and
        // which goes first alternates, so writeback of one does not tax the other.
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let (w, ws) = plain_write(&plain, &full_bytes)?;
                time("write", w);
                time("write+fsync", ws);
            } else {
                let _ = std::fs::remove_file(&full);
                let s = Instant::now();
                full_report = Some(a.save(&full)?);
                time("save", s.elapsed());
            }
        }

        time("read", plain_read(&plain)?);
        let store = PageStore::new();
        let s = Instant::now();
        let loaded = Snapshot::load(&full, &store)?;
        time("load", s.elapsed());
        assert_eq!(loaded.digest(), a.digest());
        drop(loaded);

        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let (w, ws) = plain_write(&plain_dirty, &dirty_bytes)?;
                time("write dirty", w);
                time("write+fsync dirty", ws);
            } else {
                let _ = std::fs::remove_file(&delta);
                let s = Instant::now();
                delta_report = Some(b.save_delta(&delta, &a)?);
                time("save_delta", s.elapsed());
            }
        }

        time("read dirty", plain_read(&plain_dirty)?);
        let parent = Snapshot::load(&full, &store)?;
        let s = Instant::now();
        let child = Snapshot::load_delta(&delta, &parent)?;
        time("load_delta", s.elapsed());
        assert_eq!(child.digest(), b.digest());
    }
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_file(&plain_dirty);
    let full_report = full_report.expect("at least one round");
    let delta_report = delta_report.expect("at least one round");

    let m: BTreeMap<&str, f64> = t.iter_mut().map(|(k, v)| (*k, median(v))).collect();
    let ratio = |a: &str, b: &str| m[a] / m[b];
    let dirty_len = (dirty_pages * ps) as f64;
    let delta_size_ratio = delta_report.uncompressed_bytes as f64 / dirty_len;
    let rows = [
        ("save", "write+fsync", "write"),
        ("load", "read", ""),
        ("save_delta", "write+fsync dirty", "write dirty"),
        ("load_delta", "read dirty", ""),
    ];
    println!(
        "{:<11} {:>10}  {:<18} {:>10}  {:>6}",
        "op", "median ms", "plain", "median ms", "ratio"
    );
    for (op, base, nosync) in rows {
        println!(
            "{op:<11} {:>10.1}  {base:<18} {:>10.1}  {:>5.2}×",
            m[op],
            m[base],
            ratio(op, base)
        );
        if !nosync.is_empty() {
            println!(
                "{:<11} {:>10}  {nosync:<18} {:>10.1}  {:>5.2}×  (no fsync in the plain write)",
                "",
                "",
                m[nosync],
                ratio(op, nosync)
            );
        }
    }
    println!(
        "full file  {} bytes for {} bytes of region ({} of {} pages compressed)",
        full_report.bytes, len, full_report.compressed_pages, full_report.stored_pages
    );
    println!(
        "delta file {} bytes ({} uncompressed) for {} dirty bytes: {:.3}× the dirty bytes before compression",
        delta_report.bytes, delta_report.uncompressed_bytes, dirty_len, delta_size_ratio
    );
    let bar = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "bars: save ≤ 2× write+fsync: {}; load ≤ 2× read: {}; delta ≤ 1.2× dirty bytes: {}",
        bar(ratio("save", "write+fsync") <= 2.0),
        bar(ratio("load", "read") <= 2.0),
        bar(delta_size_ratio <= 1.2)
    );
    println!("files left: {} {}", full.display(), delta.display());

    if args.json.path().is_some() {
        let times: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let doc = serde_json::json!({
            "region_bytes": len,
            "page_size": ps,
            "dirty_pages": dirty_pages,
            "content": args.content,
            "rounds": rounds,
            "median_ms": times,
            "ratios": {
                "save_vs_write_fsync": ratio("save", "write+fsync"),
                "save_vs_write": ratio("save", "write"),
                "load_vs_read": ratio("load", "read"),
                "save_delta_vs_write_fsync_dirty": ratio("save_delta", "write+fsync dirty"),
                "load_delta_vs_read_dirty": ratio("load_delta", "read dirty"),
                "delta_uncompressed_vs_dirty_bytes": delta_size_ratio,
            },
            "full_file_bytes": full_report.bytes,
            "delta_file_bytes": delta_report.bytes,
            "delta_uncompressed_bytes": delta_report.uncompressed_bytes,
            "files": [full.display().to_string(), delta.display().to_string()],
        });
        args.json.write(&doc)?;
    }
    Ok(ExitCode::SUCCESS)
}
