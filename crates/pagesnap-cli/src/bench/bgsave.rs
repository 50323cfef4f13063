//! # Safety
//!
//! `pagesnap bench bgsave`: the seed benchmark (a consistent snapshot of a big
//! array while writer threads overwrite it), fork against pagesnap.
//!
//! ```text
//!  bench bgsave                      one fresh process per method × round:
//!  ── spawn `bench bgsave --one M` ─►  map + fill SIZE with 123; N writers wait
//!                                      t0  snapshot start (fork / background_*)  t1
//!                                      writers: each its tid over its chunk, once
//!                                      sampler: RSS of self (+ the fork child's USS)
//!                                      complete: child reaped / wait() returned
//!  ◄────────────── one JSON line        (pagesnap: snapshot checked, all 123)
//!  medians per method → table, --json FILE
//! ```
//! A fresh process per round holds only the dataset, so fork copies no page
//! table but the dataset's, and no round inherits another's memory.
//!
//! The only unsafe code is the `fork` method and the writers' raw stores. The
//! child of `fork(2)` (forked while the other threads wait on an atomic) calls
//! only `mmap`, `memcpy`, `munmap` and `_exit`, as the seed's child does.
#![allow(unsafe_code)]

use super::buffer::Buffer;
use super::units::{human_bytes, ByteSize};
use crate::CmdResult;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The seed's fill value.
const FILL: u8 = 123;
/// The seed's copy batch (the fork child's).
const BATCH: usize = 2 << 20;
const METHODS: [&str; 4] = ["none", "fork", "pagesnap", "pagesnap-save"];

/// `pagesnap bench bgsave`.
#[derive(clap::Args)]
pub struct BgsaveArgs {
    /// Array size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Writer threads; each overwrites a contiguous chunk once.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Rounds per method (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Write the medians as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Map the array with transparent huge pages.
    #[arg(long)]
    huge_pages: bool,
    /// Methods to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = METHODS.map(String::from))]
    methods: Vec<String>,
    /// Internal: run one round of this method here and print it as JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

pub fn run(args: BgsaveArgs) -> CmdResult {
    if let Some(m) = &args.one {
        let r = round(m, args.size.0, args.writers, args.huge_pages)?;
        println!("{r}");
        return Ok(ExitCode::SUCCESS);
    }
    for m in &args.methods {
        if !METHODS.contains(&m.as_str()) {
            return Err(format!("unknown method {m:?} (one of {METHODS:?})").into());
        }
    }
    let exe = std::env::current_exe()?;
    eprintln!(
        "bench bgsave: {} array, {} writers, {} rounds{}",
        human_bytes(args.size.0 as u64),
        args.writers,
        args.rounds,
        if args.huge_pages { ", huge pages" } else { "" }
    );
    let mut results = Vec::new();
    for m in &args.methods {
        let mut rounds: Vec<Value> = Vec::new();
        for i in 0..args.rounds {
            let mut cmd = Command::new(&exe);
            cmd.args(["bench", "bgsave", "--one", m, "--size"])
                .arg(args.size.0.to_string())
                .args(["--writers", &args.writers.to_string()]);
            if args.huge_pages {
                cmd.arg("--huge-pages");
            }
            let out = cmd.stderr(Stdio::inherit()).output()?;
            if !out.status.success() {
                return Err(format!("{m} round {i} failed: {}", out.status).into());
            }
            let v: Value = serde_json::from_slice(&out.stdout)?;
            eprintln!("  {m:<13} round {i}: {v}");
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
            r["faults"] = json!(med("faults"));
        }
        results.push(r);
    }
    print_table(&results);
    let doc = json!({
        "size_bytes": args.size.0,
        "writers": args.writers,
        "rounds": args.rounds,
        "huge_pages": args.huge_pages,
        "results": results,
    });
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
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
        "{:<14} {:>10} {:>11} {:>9} {:>12} {:>14} {:>9}",
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
            "{:<14} {:>10.2} {:>11.1} {:>9} {:>12.1} {:>14.1} {:>9}",
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

/// Resident bytes of this process, from `/proc/self/statm` (O(1): reading
/// `smaps_rollup` of our own 1 GiB would walk its page tables under the mmap
/// lock and stall the very mprotect and fault paths being measured).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * pagesnap::page_size() as u64)
}

/// Bytes only `pid` holds (private clean + dirty, from its `smaps_rollup`; walks
/// the child's page tables, not ours); 0 once it is gone.
fn uss(pid: i32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("Private_Clean:")
                .or_else(|| l.strip_prefix("Private_Dirty:"))
        })
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Samples the memory of this process (RSS: shared pages counted once) plus
/// what only `child` holds (when non-zero), every 2 ms until stopped; the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(child: Arc<AtomicI32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                let c = child.load(Ordering::Acquire);
                let now = rss() + if c > 0 { uss(c) } else { 0 };
                peak = peak.max(now);
                if s.load(Ordering::Acquire) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Sampler { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or(0)
    }
}

/// Writer threads asleep on `go` (n + 1 parties: the last is the timer); each
/// then writes its tid over its chunk.
fn writers(
    base: usize,
    len: usize,
    n: usize,
    go: &Arc<Barrier>,
) -> Vec<std::thread::JoinHandle<()>> {
    let chunk = len / n / 8 * 8;
    (0..n)
        .map(|tid| {
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                for at in (tid * chunk..(tid + 1) * chunk).step_by(8) {
                    // SAFETY: inside the array, which outlives the writers (they
                    // are joined first); 8-aligned; one writer per word.
                    unsafe { ((base + at) as *mut u64).write_volatile(tid as u64) };
                }
            })
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

enum Started {
    Snapshot(pagesnap::Background),
    Save(pagesnap::BackgroundSave),
}

/// One round of `method`, in this process.
fn round(
    method: &str,
    len: usize,
    nwriters: usize,
    huge: bool,
) -> Result<Value, Box<dyn std::error::Error>> {
    let page = pagesnap::page_size();
    let len = len.next_multiple_of(page);
    let go = Arc::new(Barrier::new(nwriters + 1));
    match method {
        "none" | "fork" => {
            let mut data = Buffer::new(len, huge, |_, p| p.fill(FILL))?;
            let base = data.as_mut_slice().as_mut_ptr() as usize;
            let ws = writers(base, len, nwriters, &go);
            let child_pid = Arc::new(AtomicI32::new(0));
            let baseline = rss();
            let sampler = Sampler::start(child_pid.clone());
            let t0 = Instant::now();
            let pid = if method == "fork" {
                // SAFETY: see the module doc: the child only copies and exits.
                let pid = unsafe { libc::fork() };
                if pid < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                if pid == 0 {
                    child_copy(base, len);
                }
                pid
            } else {
                0
            };
            let pause = t0.elapsed();
            child_pid.store(pid, Ordering::Release);
            let reaper = (pid > 0).then(|| {
                std::thread::spawn(move || {
                    let mut status = 0;
                    // SAFETY: reaping our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    t0.elapsed()
                })
            });
            let tw = Instant::now();
            go.wait();
            for w in ws {
                w.join().map_err(|_| "writer panicked")?;
            }
            let writers_t = tw.elapsed();
            let complete = match reaper {
                Some(r) => r.join().map_err(|_| "reaper panicked")?,
                None => t0.elapsed(),
            };
            let peak = sampler.peak();
            drop(data);
            Ok(json!({
                "method": method,
                "pause_ms": ms(pause),
                "writers_ms": ms(writers_t),
                "complete_ms": ms(complete),
                "extra_rss_mb": peak.saturating_sub(baseline) as f64 / (1 << 20) as f64,
            }))
        }
        "pagesnap" | "pagesnap-save" => {
            let mut region = pagesnap::Region::builder(len).huge_pages(huge).build()?;
            region.as_mut_slice().fill(FILL);
            let base = region.as_ptr() as usize;
            let ws = writers(base, len, nwriters, &go);
            let dir = std::env::temp_dir();
            let file = dir.join(format!("pagesnap-bench-bgsave-{}.snap", std::process::id()));
            let baseline = rss();
            let sampler = Sampler::start(Arc::new(AtomicI32::new(0)));
            let t0 = Instant::now();
            let started = if method == "pagesnap" {
                Started::Snapshot(region.background_snapshot()?)
            } else {
                Started::Save(region.background_save(&file)?)
            };
            let pause = t0.elapsed();
            let tw = Instant::now();
            go.wait();
            for w in ws {
                w.join().map_err(|_| "writer panicked")?;
            }
            let writers_t = tw.elapsed();
            let (snap, faults) = match started {
                Started::Snapshot(bg) => {
                    let (snap, report) = bg.wait_report()?;
                    (Some(snap), report.faults)
                }
                Started::Save(bg) => (None, bg.wait()?.faults),
            };
            let complete = t0.elapsed();
            let peak = sampler.peak();
            let snap = match snap {
                Some(s) => s,
                None => {
                    let s = pagesnap::Snapshot::load(&file, &pagesnap::PageStore::new())?;
                    std::fs::remove_file(&file)?;
                    s
                }
            };
            let mut buf = vec![0u8; BATCH];
            let mut verified = true;
            for off in (0..len).step_by(BATCH) {
                let n = BATCH.min(len - off);
                snap.read(off, &mut buf[..n])?;
                verified &= buf[..n].iter().all(|&b| b == FILL);
            }
            Ok(json!({
                "method": method,
                "pause_ms": ms(pause),
                "writers_ms": ms(writers_t),
                "complete_ms": ms(complete),
                "extra_rss_mb": peak.saturating_sub(baseline) as f64 / (1 << 20) as f64,
                "verified": verified,
                "faults": faults,
            }))
        }
        m => Err(format!("unknown method {m:?}").into()),
    }
}

/// The fork child, as in the seed: copy the array into a fresh buffer in 2 MiB
/// batches, unmapping each source batch once copied, then exit.
fn child_copy(base: usize, len: usize) -> ! {
    // SAFETY: async-signal-safe calls only; `base..base + len` is the array this
    // process inherited, and the buffer is a fresh mapping of `len` bytes.
    unsafe {
        let dst = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if dst == libc::MAP_FAILED {
            libc::_exit(1);
        }
        let mut off = 0;
        while off < len {
            let n = BATCH.min(len - off);
            libc::memcpy(
                (dst as usize + off) as *mut libc::c_void,
                (base + off) as *const libc::c_void,
                n,
            );
            libc::munmap((base + off) as *mut libc::c_void, n);
            off += n;
        }
        libc::_exit(0)
    }
}
