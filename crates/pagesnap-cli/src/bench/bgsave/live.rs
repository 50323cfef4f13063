//! The pagesnap methods of `bench bgsave`: point-in-time (`pagesnap`,
//! `pagesnap-save`: the pause is the start) and converging (`pagesnap-converge`,
//! `pagesnap-converge-save`: rounds run while the writers write; once they
//! are done — the program's quiescent point — and the rounds have stopped,
//! `finish` is the pause).

use super::data::{expected_after, verify, writers, Data};
use super::sampler::{rss, Sampler};
use super::{ms, Round};
use pagesnap::{PageStore, Region, Snapshot};
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// What a round does before its instant, untimed.
#[derive(Clone, Copy)]
pub struct Prepare {
    /// Take one point-in-time background snapshot and drop it.
    pub steady: bool,
    /// Reserve store memory for the whole array (store methods).
    pub reserve: bool,
}

/// One round of a pagesnap method.
pub fn round(
    method: &str,
    data: Data,
    len: usize,
    nwriters: usize,
    huge: bool,
    staging: Option<usize>,
    prepare: Prepare,
) -> Result<Round, Box<dyn std::error::Error>> {
    let page = pagesnap::page_size();
    let go = Arc::new(Barrier::new(nwriters + 1));
    let mut builder = Region::builder(len).huge_pages(huge);
    if let Some(bytes) = staging {
        builder = builder.staging(bytes);
    }
    let mut region = builder.build()?;
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        data.fill(i * page, p);
    }
    let base = region.as_ptr() as usize;
    let ws = writers(base, len, nwriters, &go);
    let file =
        std::env::temp_dir().join(format!("pagesnap-bench-bgsave-{}.snap", std::process::id()));
    // Reserved memory is the method's: counted in its extra memory, from
    // before the reservation. (The save methods keep nothing in the store.)
    let store_method = matches!(method, "pagesnap" | "pagesnap-converge");
    let reserved_from = (prepare.reserve && store_method).then(rss);
    if reserved_from.is_some() {
        region.store().reserve(len)?;
    }
    if prepare.steady && !method.starts_with("pagesnap-converge") {
        // A program's earlier point-in-time snapshot, dropped: its memory is
        // the store's to reuse. (It does not move the sync point, so the
        // measured one copies as much.)
        drop(region.background_snapshot()?.wait()?);
    }
    let baseline = reserved_from.unwrap_or_else(rss);
    let sampler = Sampler::start(Arc::new(AtomicI32::new(0)));
    let run_writers =
        |ws: Vec<std::thread::JoinHandle<()>>| -> Result<f64, Box<dyn std::error::Error>> {
            let tw = Instant::now();
            go.wait();
            for w in ws {
                w.join().map_err(|_| "writer panicked")?;
            }
            Ok(ms(tw.elapsed()))
        };
    let t0 = Instant::now();
    let (pause, writers_ms, snap, faults, staged, rounds, point_in_time);
    match method {
        "pagesnap" | "pagesnap-save" => {
            point_in_time = true;
            rounds = None;
            if method == "pagesnap" {
                let bg = region.background_snapshot()?;
                pause = t0.elapsed();
                writers_ms = run_writers(ws)?;
                let (s, report) = bg.wait_report()?;
                (snap, faults, staged) = (Some(s), Some(report.faults), Some(report.staged));
            } else {
                let bg = region.background_save(&file)?;
                pause = t0.elapsed();
                writers_ms = run_writers(ws)?;
                let report = bg.wait()?;
                (snap, faults, staged) = (None, Some(report.faults), Some(report.staged));
            }
        }
        "pagesnap-converge" | "pagesnap-converge-save" => {
            point_in_time = false;
            (faults, staged) = (None, None);
            if method == "pagesnap-converge" {
                let conv = region.converging_snapshot()?;
                writers_ms = run_writers(ws)?;
                conv.wait_converged();
                rounds = Some(conv.rounds());
                let tp = Instant::now();
                let s = conv.finish()?;
                pause = tp.elapsed();
                snap = Some(s);
            } else {
                let conv = region.converging_save(&file)?;
                writers_ms = run_writers(ws)?;
                conv.wait_converged();
                rounds = Some(conv.rounds());
                let tp = Instant::now();
                let saving = conv.finish()?;
                pause = tp.elapsed();
                saving.wait()?;
                snap = None;
            }
        }
        m => return Err(format!("unknown method {m:?}").into()),
    }
    let complete = t0.elapsed();
    let peak = sampler.peak();
    let snap = match snap {
        Some(s) => s,
        None => {
            let s = Snapshot::load(&file, &PageStore::new())?;
            std::fs::remove_file(&file)?;
            s
        }
    };
    let verified = if point_in_time {
        verify(&snap, |at| data.before(at))?
    } else {
        verify(&snap, |at| expected_after(data, len, nwriters, at))?
    };
    Ok(Round {
        pause_ms: ms(pause),
        writers_ms,
        complete_ms: ms(complete),
        extra_rss_mb: peak.saturating_sub(baseline) as f64 / (1 << 20) as f64,
        verified: Some(verified),
        faults,
        staged,
        rounds,
    })
}
