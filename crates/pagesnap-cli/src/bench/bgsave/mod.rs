//! `pagesnap bench bgsave`: the seed benchmark (a consistent snapshot of a big
//! array while writer threads overwrite it), fork against pagesnap's two
//! background modes.
//!
//! ```text
//!  bench bgsave                      one fresh process per method × round:
//!  ── spawn `bench bgsave --one M` ─►  map + fill SIZE (data.rs); N writers wait
//!                                      t0  start (fork / background_* /
//!                                          converging_*)
//!                                      writers: each overwrites its chunk, once
//!                                      sampler: RSS of self (+ the fork child's USS)
//!                                      converging: rounds stop, then finish (pause)
//!                                      complete: child reaped / wait() returned
//!  ◄────────────── one JSON line        (pagesnap: snapshot verified word by word)
//!  medians per method → table, --json FILE
//! ```
//! A fresh process per round holds only the dataset, so fork copies no page
//! table but the dataset's, and no round inherits another's memory.
//!
//! The methods: `none` (writers alone), `fork` (fork(2), the child copies the
//! array out: fork.rs), `pagesnap` / `pagesnap-save` (point-in-time: the
//! snapshot holds the array as it was at the start; the pause is the start) and
//! `pagesnap-converge` / `pagesnap-converge-save` (converging: the snapshot holds
//! the array after the writers; the pause is `finish`): live.rs.

mod data;
mod fork;
mod live;
mod sampler;

use super::args::JsonArg;
use super::units::{human_bytes, ByteSize};
use crate::CmdResult;
use data::Data;
use serde_json::{json, Value};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const METHODS: [&str; 6] = [
    "none",
    "fork",
    "pagesnap",
    "pagesnap-save",
    "pagesnap-converge",
    "pagesnap-converge-save",
];

/// `pagesnap bench bgsave`.
#[derive(clap::Args)]
pub struct BgsaveArgs {
    /// Array size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Writer threads; each overwrites a contiguous chunk once.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    writers: usize,
    /// Rounds per method (medians are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// What the array holds: `distinct` (every page different and
    /// incompressible) or `seed` (every byte 123).
    #[arg(long, value_enum, default_value_t = Data::Distinct)]
    data: Data,
    #[command(flatten)]
    json: JsonArg,
    /// Map the array with transparent huge pages.
    #[arg(long)]
    huge_pages: bool,
    /// Staging memory of the point-in-time methods, where writers copy the
    /// parts they are about to overwrite (default: the library's; for
    /// `pagesnap-save` an eighth of the array, for `pagesnap` the store's
    /// free frames where it has them, else half the array).
    #[arg(long)]
    staging: Option<ByteSize>,
    /// Measure the second snapshot of each process, as a program that
    /// snapshots periodically does: the point-in-time methods first take one
    /// background snapshot of the array and drop it (untimed), so the store
    /// holds free memory. Without it every round is a process's first
    /// snapshot. (The converging methods move the sync point: not changed.)
    #[arg(long)]
    steady: bool,
    /// Reserve store memory for the whole array before the round, as a program
    /// that calls `PageStore::reserve` at start-up does (untimed, but counted
    /// in the extra memory): the store methods' first snapshot then takes no
    /// fresh memory. The save methods keep nothing in the store: unchanged.
    #[arg(long)]
    reserve: bool,
    /// Methods to run, comma-separated: none, fork, pagesnap, pagesnap-save,
    /// pagesnap-converge, pagesnap-converge-save.
    #[arg(long, value_delimiter = ',', default_values_t = METHODS.map(String::from))]
    methods: Vec<String>,
    /// Internal: run one round of this method here and print it as JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

/// What one round measured.
pub struct Round {
    pub pause_ms: f64,
    pub writers_ms: f64,
    pub complete_ms: f64,
    pub extra_rss_mb: f64,
    /// Whether the snapshot held exactly what it should (pagesnap methods).
    pub verified: Option<bool>,
    /// Batches writers waited for (point-in-time methods).
    pub faults: Option<u64>,
    /// Batches writers copied into staging memory themselves (point-in-time).
    pub staged: Option<u64>,
    /// Copy rounds before finish (converging methods).
    pub rounds: Option<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(args: BgsaveArgs) -> CmdResult {
    if args.writers == 0 {
        return Err("--writers must be at least 1".into());
    }
    if let Some(m) = &args.one {
        let r = one(m, &args)?;
        let mut v = json!({
            "method": m,
            "pause_ms": r.pause_ms,
            "writers_ms": r.writers_ms,
            "complete_ms": r.complete_ms,
            "extra_rss_mb": r.extra_rss_mb,
        });
        if let Some(x) = r.verified {
            v["verified"] = json!(x);
        }
        if let Some(x) = r.faults {
            v["faults"] = json!(x);
        }
        if let Some(x) = r.staged {
            v["staged"] = json!(x);
        }
        if let Some(x) = r.rounds {
            v["rounds"] = json!(x);
        }
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    for m in &args.methods {
        if !METHODS.contains(&m.as_str()) {
            return Err(format!("unknown method {m:?} (one of {})", METHODS.join(", ")).into());
        }
    }
    let exe = std::env::current_exe()?;
    eprintln!(
        "bench bgsave: {} array of {} data, {} writers, {} rounds{}{}{}",
        human_bytes(args.size.0 as u64),
        args.data.name(),
        args.writers,
        args.rounds,
        if args.huge_pages { ", huge pages" } else { "" },
        if args.steady { ", steady" } else { "" },
        if args.reserve { ", store reserved" } else { "" }
    );
    let mut results = Vec::new();
    for m in &args.methods {
        let mut rounds: Vec<Value> = Vec::new();
        for i in 0..args.rounds {
            let mut cmd = Command::new(&exe);
            cmd.args(["bench", "bgsave", "--one", m, "--size"])
                .arg(args.size.0.to_string())
                .args(["--writers", &args.writers.to_string()])
                .args(["--data", args.data.name()]);
            if args.huge_pages {
                cmd.arg("--huge-pages");
            }
            if let Some(s) = args.staging {
                cmd.args(["--staging", &s.0.to_string()]);
            }
            if args.steady {
                cmd.arg("--steady");
            }
            if args.reserve {
                cmd.arg("--reserve");
            }
            let out = cmd.stderr(Stdio::inherit()).output()?;
            if !out.status.success() {
                return Err(format!("{m} round {i} failed: {}", out.status).into());
            }
            let v: Value = serde_json::from_slice(&out.stdout)?;
            eprintln!("  {m:<22} round {i}: {v}");
            rounds.push(v);
        }
        let med = |k: &str| median(rounds.iter().filter_map(|r| r[k].as_f64()).collect());
        let mut r = json!({
            "method": m,
            "pause_ms": med("pause_ms"),
            "writers_ms": med("writers_ms"),
            "complete_ms": med("complete_ms"),
            "extra_rss_mb": med("extra_rss_mb"),
        });
        if m.starts_with("pagesnap") {
            r["verified"] = json!(rounds.iter().all(|x| x["verified"] == json!(true)));
        }
        for k in ["faults", "staged", "rounds"] {
            if rounds.iter().any(|x| x.get(k).is_some()) {
                r[k] = json!(med(k));
            }
        }
        results.push(r);
    }
    print_table(&results);
    let doc = json!({
        "size_bytes": args.size.0,
        "data": args.data.name(),
        "writers": args.writers,
        "rounds": args.rounds,
        "huge_pages": args.huge_pages,
        "steady": args.steady,
        "reserve": args.reserve,
        "results": results,
    });
    if let Some(path) = args.json.path() {
        args.json.write(&doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One round of `method`, in this process.
fn one(method: &str, args: &BgsaveArgs) -> Result<Round, Box<dyn std::error::Error>> {
    let len = args.size.0.next_multiple_of(pagesnap::page_size());
    let (n, huge, data) = (args.writers, args.huge_pages, args.data);
    match method {
        "none" | "fork" => fork::round(method == "fork", data, len, n, huge),
        m => live::round(
            m,
            data,
            len,
            n,
            huge,
            args.staging.map(|s| s.0),
            live::Prepare {
                steady: args.steady,
                reserve: args.reserve,
            },
        ),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(results: &[Value]) {
    let none = results
        .iter()
        .find(|r| r["method"] == "none")
        .and_then(|r| r["writers_ms"].as_f64());
    println!(
        "{:<23} {:>10} {:>11} {:>9} {:>12} {:>14} {:>9}",
        "method", "pause ms", "writers ms", "vs none", "complete ms", "extra RSS MiB", "verified"
    );
    for r in results {
        let w = r["writers_ms"].as_f64().unwrap_or(f64::NAN);
        let ratio = none.map_or("-".into(), |n| format!("{:.2}×", w / n));
        let verified = match r.get("verified") {
            Some(Value::Bool(b)) => b.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<23} {:>10.2} {:>11.1} {:>9} {:>12.1} {:>14.1} {:>9}",
            r["method"].as_str().unwrap_or("?"),
            r["pause_ms"].as_f64().unwrap_or(f64::NAN),
            w,
            ratio,
            r["complete_ms"].as_f64().unwrap_or(f64::NAN),
            r["extra_rss_mb"].as_f64().unwrap_or(f64::NAN),
            verified,
        );
    }
}
