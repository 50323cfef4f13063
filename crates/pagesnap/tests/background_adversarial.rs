//! Adversarial tests of point-in-time background snapshots and saves, and of
//! converging snapshots, used the way real programs use them: many writer
//! threads (more than the handler's sleep table lists), tiny regions, huge
//! pages, small staging pools, stores lending free frames, kernel-mode writes,
//! handles dropped mid-flight, calls on the region while work is in flight,
//! and fork() in the middle of it all.
//!
//! Every case runs in a forked child with a deadline (`common::child`), so a
//! hang fails the test instead of blocking the suite. The child reports why it
//! failed on stderr with one `write(2)` (the test harness's capture of
//! `eprintln!` does not reach the parent).
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use common::kernel_source::Source;
use common::rng::XorShift;
use pagesnap::{Error, PageStore, Region, Snapshot, Tracking};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The batch of a region up to 256 MiB without huge pages.
const BATCH: usize = 64 << 10;
const HUGE: usize = 2 << 20;

fn page() -> usize {
    pagesnap::page_size()
}

/// Runs `f` in a forked child with a deadline; the child's failure message
/// (an `Err` or a panic) is written to stderr. Asserts that the child exited 0.
fn in_child(name: &str, secs: u64, f: impl FnOnce() -> Result<(), String>) {
    let _serial = child::serial();
    let started = Instant::now();
    let outcome = child::run(Duration::from_secs(secs), || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        match r {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                child::say(&format!("[{name}] FAILED: {msg}\n"));
                1
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                child::say(&format!("[{name}] PANICKED: {msg}\n"));
                101
            }
        }
    });
    assert_eq!(
        outcome,
        Outcome::Exited(0),
        "{name}: child ended {outcome:?} after {:?} (see stderr)",
        started.elapsed()
    );
}

/// Prints from a child (one write(2), no lock).
fn note(msg: String) {
    child::say(&(msg + "\n"));
}

/// Every backend that can take a background snapshot here (all but those
/// missing), printing why a missing one is skipped.
fn backends() -> Vec<Tracking> {
    common::backends()
}

/// Where two byte strings first differ, for messages.
fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), 0, 0));
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|i| (i, a[i], b[i]))
}

fn expect_same(got: &[u8], want: &[u8], ctx: &str) -> Result<(), String> {
    match first_diff(got, want) {
        None => Ok(()),
        Some((i, g, w)) => {
            let pages = got
                .chunks(page())
                .zip(want.chunks(page()))
                .filter(|(a, b)| a != b)
                .count();
            Err(format!(
                "{ctx}: differs at byte {i:#x} (page {}, batch@64K {}): got {g:#x}, want {w:#x}; {pages} pages differ",
                i / page(),
                i / BATCH
            ))
        }
    }
}

/// A cheap checksum of bytes (FNV-1a over u64 words).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in bytes.chunks_exact(8) {
        h ^= u64::from_ne_bytes(w.try_into().unwrap());
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Fills every page of the region with distinct data for `generation`: word
/// `k` of page `p` is `generation << 40 | p << 9 | k` (for the first 64 words;
/// the rest stays as it was).
fn fill_generation(region: &mut Region, generation: u64) {
    let page = page();
    for (p, chunk) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        for k in 0..64 {
            let v = generation << 40 | (p as u64) << 9 | k as u64;
            chunk[k * 8..k * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
    }
}

/// What writer `w` of `writers` does on write `i` of round `round`: the page
/// it picks and the word of that page it owns (word 64 + w: distinct per
/// writer, never racing another writer on a word).
#[derive(Clone, Copy)]
enum Pick {
    /// A random page of the whole region.
    Random,
    /// A random page of batch `w % batches` (each writer keeps to its own
    /// batch while there are enough batches).
    OwnBatch,
    /// A random page of batch 0 (every writer in one batch).
    SameBatch,
    /// Pages in address order from a random start (a sequential writer).
    Sequential,
}

struct Round {
    /// Writer threads.
    writers: usize,
    /// Writes per writer.
    writes: usize,
    pick: Pick,
    /// Bytes per batch of the region (to pick within a batch).
    batch: usize,
}

/// Runs `round.writers` writer threads (named `adv-w…`), released all at once
/// right after `start` returns, and joins them. Returns what `start` returned.
fn with_writers<T>(
    base: usize,
    len: usize,
    round: &Round,
    seed: u64,
    start: impl FnOnce() -> T,
) -> T {
    let barrier = Arc::new(Barrier::new(round.writers + 1));
    let pages = len / page();
    let handles: Vec<_> = (0..round.writers)
        .map(|w| {
            let barrier = barrier.clone();
            let (writes, pick, batch) = (round.writes, round.pick, round.batch);
            std::thread::Builder::new()
                .name(format!("adv-w{w}"))
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut rng =
                        XorShift((seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
                    let batches = len.div_ceil(batch);
                    let per_batch = (batch / page()).max(1);
                    let word = 64 + w % 448;
                    let mut seq = rng.below(pages);
                    barrier.wait();
                    for i in 0..writes {
                        let p = match pick {
                            Pick::Random => rng.below(pages),
                            Pick::OwnBatch => {
                                let b = w % batches;
                                (b * per_batch + rng.below(per_batch)).min(pages - 1)
                            }
                            Pick::SameBatch => rng.below(per_batch.min(pages)),
                            Pick::Sequential => {
                                seq = (seq + 1) % pages;
                                seq
                            }
                        };
                        let v = seed << 32 | (w as u64) << 20 | i as u64 | 1;
                        common::write_u64(base, p * page() + word * 8, v);
                    }
                })
                .unwrap()
        })
        .collect();
    let r = start();
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    r
}

/// One exact round: the region's bytes now are the instant; a background
/// snapshot starts, writers write during it, and the snapshot must equal the
/// instant byte for byte; afterwards the next snapshot equals the region.
/// Returns (faults, staged) of the background snapshot.
fn exact_round(
    region: &mut Region,
    round: &Round,
    seed: u64,
    ctx: &str,
) -> Result<(u64, u64), String> {
    let instant = region.as_slice().to_vec();
    let (base, len) = (region.as_ptr() as usize, region.len());
    let bg = with_writers(base, len, round, seed, || region.background_snapshot())
        .map_err(|e| format!("{ctx}: start: {e}"))?;
    let (snap, report) = bg.wait_report().map_err(|e| format!("{ctx}: wait: {e}"))?;
    expect_same(
        &snap.to_vec(),
        &instant,
        &format!("{ctx}: background snapshot"),
    )?;
    let next = region
        .snapshot()
        .map_err(|e| format!("{ctx}: snapshot: {e}"))?;
    expect_same(
        &next.to_vec(),
        region.as_slice(),
        &format!("{ctx}: next snapshot"),
    )?;
    Ok((report.faults, report.staged))
}

/// How many threads named `adv-w…` sleep in futex(2) right now.
fn futex_sleepers() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let p = e.path();
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.starts_with("adv-w"))
                && std::fs::read_to_string(p.join("syscall")).is_ok_and(|s| s.starts_with("202 "))
        })
        .count()
}

/// Samples [`futex_sleepers`] until `stop`; returns the most seen at once.
fn sample_sleepers(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            most = most.max(futex_sleepers());
            std::thread::sleep(Duration::from_micros(200));
        }
        most
    })
}

// ───────────── 1. More than 64 sleepers; tiny regions; one batch ─────────────

/// 100 writers and no staging pool: every writer that touches a batch not yet
/// copied sleeps on its futex, far more than the 64 the sleep table lists.
/// No hang, and every snapshot is the region at its instant, byte for byte.
#[test]
fn more_sleepers_than_the_sleep_table_lists() {
    in_child("more_sleepers", 60, || {
        for t in backends() {
            let len = 32 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .staging(0)
                .build()
                .map_err(|e| e.to_string())?;
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_sleepers(stop.clone());
            let mut faults = 0;
            for (r, pick) in [Pick::Random, Pick::OwnBatch, Pick::Sequential, Pick::Random]
                .into_iter()
                .enumerate()
            {
                // Every page written since the sync point: every batch needs a copy.
                fill_generation(&mut region, r as u64 + 1);
                let round = Round {
                    writers: 100,
                    writes: 30,
                    pick,
                    batch: BATCH,
                };
                let (f, staged) =
                    exact_round(&mut region, &round, r as u64 + 7, &format!("{t} round {r}"))?;
                if staged != 0 {
                    return Err(format!("{t}: {staged} staged without a pool"));
                }
                faults += f;
            }
            stop.store(true, Ordering::Relaxed);
            let most = sampler.join().unwrap();
            note(format!(
                "{t}: {faults} batches waited for; at most {most} writers in futex at once"
            ));
        }
        Ok(())
    });
}

/// As above with a one-batch pool (writers stage until it is full, then
/// sleep) and 100 writers all in one batch, or each in its own.
#[test]
fn more_sleepers_with_a_one_batch_pool_and_one_hot_batch() {
    in_child("one_batch_pool", 60, || {
        for t in backends() {
            let len = 16 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .staging(BATCH)
                .build()
                .map_err(|e| e.to_string())?;
            for (r, pick) in [
                Pick::SameBatch,
                Pick::OwnBatch,
                Pick::Random,
                Pick::SameBatch,
            ]
            .into_iter()
            .enumerate()
            {
                fill_generation(&mut region, r as u64 + 11);
                let round = Round {
                    writers: 100,
                    writes: 20,
                    pick,
                    batch: BATCH,
                };
                exact_round(
                    &mut region,
                    &round,
                    r as u64 + 100,
                    &format!("{t} round {r}"),
                )?;
            }
        }
        Ok(())
    });
}

/// Tiny regions: one batch (64 KiB), a three-page region (its one batch is
/// shorter than 64 KiB), and a region of 3 batches plus one page; 100 writers
/// each, with no pool, a one-batch pool and the default.
#[test]
fn tiny_regions_with_a_hundred_writers() {
    in_child("tiny_regions", 90, || {
        for t in backends() {
            for len in [BATCH, 3 * page(), 3 * BATCH + page()] {
                for staging in [Some(0), Some(BATCH), None] {
                    let mut b = Region::builder(len).tracking(t);
                    if let Some(s) = staging {
                        b = b.staging(s);
                    }
                    let mut region = b.build().map_err(|e| e.to_string())?;
                    for r in 0..3u64 {
                        fill_generation(&mut region, r + 1);
                        let round = Round {
                            writers: 100,
                            writes: 10,
                            pick: Pick::Random,
                            batch: BATCH.min(len),
                        };
                        let ctx = format!("{t} len={len} staging={staging:?} round {r}");
                        exact_round(&mut region, &round, r + 1000, &ctx)?;
                    }
                }
            }
        }
        Ok(())
    });
}

/// Many background snapshots started back to back under continuous writers
/// (stampers and 80 random writers in no pool): a writer woken at the end of
/// one snapshot may find its batch protected again by the next.
#[test]
fn back_to_back_snapshots_under_many_sleepers() {
    in_child("back_to_back", 60, || {
        for t in backends() {
            let len = 8 << 20;
            let region = Region::builder(len)
                .tracking(t)
                .staging(0)
                .build()
                .map_err(|e| e.to_string())?;
            let base = region.as_ptr() as usize;
            let mut stampers = common::Stampers::start(base, len, 3);
            stampers.wait_started(base);
            let stop = Arc::new(AtomicBool::new(false));
            let pages = len / page();
            // Random writers that only touch word 100+ (stampers own word 0).
            let randoms: Vec<_> = (0..80)
                .map(|w| {
                    let stop = stop.clone();
                    std::thread::Builder::new()
                        .name(format!("adv-w{w}"))
                        .stack_size(64 << 10)
                        .spawn(move || {
                            let mut rng = XorShift(w as u64 * 31 + 5);
                            let mut i = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                let p = rng.below(pages);
                                common::write_u64(base, p * page() + (100 + w) * 8, i);
                                i += 1;
                            }
                        })
                        .unwrap()
                })
                .collect();
            let mut results = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut n = 0;
            while Instant::now() < deadline && n < 40 {
                let r = region.background_snapshot().and_then(|bg| bg.wait());
                results.push(r.map(|s| s.to_vec()));
                n += 1;
            }
            stop.store(true, Ordering::Relaxed);
            for h in randoms {
                h.join().unwrap();
            }
            stampers.stop();
            for (i, r) in results.into_iter().enumerate() {
                let bytes = r.map_err(|e| format!("{t} snapshot {i}: {e}"))?;
                stampers.assert_consistent(&bytes, &format!("{t} snapshot {i}"));
            }
            note(format!("{t}: {n} back-to-back snapshots"));
        }
        Ok(())
    });
}

// ───────────── 2. Huge pages, small staging, lent frames, generations ─────────────

/// Generations of distinct data over the whole region; before each
/// background snapshot the previous generation's snapshot is dropped (its
/// frames are free: the store lends them as staging), some older snapshots
/// are kept. Writers write during each background snapshot. Each snapshot
/// must be its instant byte for byte, and every kept snapshot must still hold
/// its bytes at the end (lent frames must never be frames a snapshot holds).
fn generations(
    t: Tracking,
    huge: bool,
    staging: Option<usize>,
    len: usize,
    writers: usize,
) -> Result<(), String> {
    let store = PageStore::new();
    let mut b = Region::builder(len)
        .tracking(t)
        .huge_pages(huge)
        .store(&store);
    if let Some(s) = staging {
        b = b.staging(s);
    }
    let mut region = b.build().map_err(|e| e.to_string())?;
    let batch = if huge { HUGE } else { BATCH };
    let mut kept: Vec<(Snapshot, u64, String)> = Vec::new();
    let mut previous: Option<Snapshot> = None;
    let (mut staged, mut faults, mut lent_rounds) = (0, 0, 0);
    for g in 1..=6u64 {
        fill_generation(&mut region, g);
        // A sync point for this generation; the one before goes (freeing frames).
        let sync = region.snapshot().map_err(|e| e.to_string())?;
        drop(previous.take());
        // Dirty every page again (another generation), so every batch needs a copy.
        fill_generation(&mut region, g + 100);
        let instant = region.as_slice().to_vec();
        let ctx = format!("{t} huge={huge} staging={staging:?} gen {g}");
        let round = Round {
            writers,
            writes: 200,
            pick: if g % 2 == 0 {
                Pick::Sequential
            } else {
                Pick::Random
            },
            batch,
        };
        let (base, rlen) = (region.as_ptr() as usize, region.len());
        let bg = with_writers(base, rlen, &round, g * 77, || region.background_snapshot())
            .map_err(|e| format!("{ctx}: start: {e}"))?;
        let (snap, report) = bg.wait_report().map_err(|e| format!("{ctx}: wait: {e}"))?;
        staged += report.staged;
        faults += report.faults;
        if report.staging_bytes as usize > staging.unwrap_or(usize::MAX) {
            lent_rounds += 1;
        }
        expect_same(&snap.to_vec(), &instant, &ctx)?;
        if g % 2 == 1 {
            kept.push((snap.clone(), checksum(&instant), ctx.clone()));
        }
        let next = region.snapshot().map_err(|e| e.to_string())?;
        expect_same(&next.to_vec(), region.as_slice(), &format!("{ctx}: next"))?;
        previous = Some(sync);
        drop(snap);
    }
    for (snap, sum, ctx) in &kept {
        if checksum(&snap.to_vec()) != *sum {
            return Err(format!("{ctx}: a kept snapshot changed afterwards"));
        }
    }
    note(format!(
        "{t} huge={huge} staging={staging:?}: staged {staged}, waited {faults}, pool bigger than asked in {lent_rounds} rounds"
    ));
    // Everything dropped: the store holds nothing.
    drop(kept);
    drop(previous);
    drop(region);
    let s = store.stats();
    if s.unique_pages != 0 {
        return Err(format!(
            "{t} huge={huge} staging={staging:?}: {} pages still held after everything was dropped",
            s.unique_pages
        ));
    }
    Ok(())
}

#[test]
fn huge_pages_with_a_small_pool_over_generations() {
    in_child("huge_small_pool", 90, || {
        for t in backends() {
            // One huge-page batch of staging: the pool runs out at once.
            generations(t, true, Some(HUGE), 32 << 20, 4)?;
            // Less than a batch: no pool at all.
            generations(t, true, Some(BATCH), 16 << 20, 4)?;
        }
        Ok(())
    });
}

#[test]
fn lent_frames_over_generations() {
    in_child("lent_generations", 90, || {
        for t in backends() {
            // Default staging: the store lends its free frames.
            generations(t, false, None, 16 << 20, 6)?;
            generations(t, true, None, 16 << 20, 6)?;
            // Asked-for small staging with lent frames present.
            generations(t, false, Some(2 * BATCH), 16 << 20, 6)?;
        }
        Ok(())
    });
}

/// The same with background saves to a file, loaded back and compared.
#[test]
fn background_saves_with_small_pools_and_huge_pages() {
    in_child("bg_save_small_pool", 90, || {
        let dir = std::env::temp_dir().join(format!("pagesnap-adv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for t in backends() {
            for (huge, staging) in [
                (true, Some(HUGE)),
                (false, Some(BATCH)),
                (false, Some(0)),
                (true, None),
            ] {
                let len = 16 << 20;
                let mut b = Region::builder(len).tracking(t).huge_pages(huge);
                if let Some(s) = staging {
                    b = b.staging(s);
                }
                let mut region = b.build().map_err(|e| e.to_string())?;
                for g in 1..=3u64 {
                    fill_generation(&mut region, g);
                    if g == 2 {
                        drop(region.snapshot().map_err(|e| e.to_string())?);
                        fill_generation(&mut region, g + 50);
                    }
                    let instant = region.as_slice().to_vec();
                    let ctx = format!("{t} huge={huge} staging={staging:?} save {g}");
                    let path = dir.join(format!("{t}-{huge}-{g}.snap"));
                    let round = Round {
                        writers: 70,
                        writes: 30,
                        pick: Pick::Random,
                        batch: if huge { HUGE } else { BATCH },
                    };
                    let (base, rlen) = (region.as_ptr() as usize, region.len());
                    let bg = with_writers(base, rlen, &round, g, || region.background_save(&path))
                        .map_err(|e| format!("{ctx}: start: {e}"))?;
                    let report = bg.wait().map_err(|e| format!("{ctx}: wait: {e}"))?;
                    let back = Snapshot::load(&path, &PageStore::new())
                        .map_err(|e| format!("{ctx}: load: {e}"))?;
                    if back.digest() != report.digest {
                        return Err(format!("{ctx}: digest of the file differs from the report"));
                    }
                    expect_same(&back.to_vec(), &instant, &ctx)?;
                    let next = region.snapshot().map_err(|e| e.to_string())?;
                    expect_same(&next.to_vec(), region.as_slice(), &format!("{ctx}: next"))?;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    });
}

// ───────────── 3. Kernel-mode writes ─────────────

/// Kernel-mode writes of one page each into random pages while writers stage
/// or wait, during a background snapshot (and a save): a read that succeeds
/// lands after the instant (never in the snapshot); one that fails must fail
/// with EFAULT and leave its data in the pipe, to be read once the batch is
/// copied. Afterwards every read into the region must succeed (no protection
/// is left behind), and the next snapshot must equal the region (tracking saw
/// the kernel's writes). Backends whose protection always refuses kernel
/// writes (mprotect) are skipped.
fn kernel_writes_case(
    t: Tracking,
    huge: bool,
    staging: Option<usize>,
    lend: bool,
    save: bool,
    socket: bool,
) -> Result<(u64, u64, u64), String> {
    let len = 16 << 20;
    let store = PageStore::new();
    let mut b = Region::builder(len)
        .tracking(t)
        .huge_pages(huge)
        .store(&store);
    if let Some(s) = staging {
        b = b.staging(s);
    }
    let mut region = b.build().map_err(|e| e.to_string())?;
    let ctx =
        format!("{t} huge={huge} staging={staging:?} lend={lend} save={save} socket={socket}");
    if lend {
        fill_generation(&mut region, 900);
        drop(region.snapshot().map_err(|e| e.to_string())?);
    }
    fill_generation(&mut region, 901);
    region.snapshot().map_err(|e| e.to_string())?;
    fill_generation(&mut region, 902);
    let instant = region.as_slice().to_vec();
    // One source per read: a failed read leaves its bytes in its own source.
    let srcs: Vec<Source> = (0..24).map(|_| Source::new(socket)).collect();
    let src = Source::new(socket);
    let (base, pages) = (region.as_ptr() as usize, len / page());
    let dir = std::env::temp_dir().join(format!("pagesnap-adv-kw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("kw.snap");
    enum Bg {
        Snap(pagesnap::Background),
        Save(pagesnap::BackgroundSave),
    }
    let round = Round {
        writers: 8,
        writes: 300,
        pick: Pick::Random,
        batch: if huge { HUGE } else { BATCH },
    };
    let mut rng = XorShift(0x5eed ^ huge as u64 ^ (save as u64) << 3);
    let mut reads: Vec<(usize, u8, Result<usize, i32>)> = Vec::new();
    let _ = &src;
    let bg = with_writers(base, len, &round, 3, || {
        let bg = if save {
            region.background_save(&path).map(Bg::Save)
        } else {
            region.background_snapshot().map(Bg::Snap)
        };
        // Kernel writes right away, while the copier and writers are busy.
        for (i, s) in srcs.iter().enumerate() {
            let p = rng.below(pages);
            let byte = 0x40 + i as u8;
            // Spread over the copy: some land in batches not yet copied,
            // some in staged or copied ones.
            std::thread::sleep(Duration::from_micros(150 * i as u64));
            s.put(&vec![byte; 256]);
            let r = s.read_into(base + p * page() + 1024, 256);
            reads.push((p, byte, r));
        }
        bg
    })
    .map_err(|e| format!("{ctx}: start: {e}"))?;
    let snap_bytes = match bg {
        Bg::Snap(bg) => bg.wait().map_err(|e| format!("{ctx}: wait: {e}"))?.to_vec(),
        Bg::Save(bg) => {
            bg.wait().map_err(|e| format!("{ctx}: wait: {e}"))?;
            Snapshot::load(&path, &PageStore::new())
                .map_err(|e| format!("{ctx}: load: {e}"))?
                .to_vec()
        }
    };
    expect_same(&snap_bytes, &instant, &format!("{ctx}: background"))?;
    // What each page's bytes 1024..1280 must hold: the reads that landed
    // during the snapshot, in order, then the ones redone after it (an
    // EFAULT read in full, the rest of a short one), in order — a read redone
    // after the snapshot lands after a later read that succeeded during it.
    let mut expected: std::collections::HashMap<usize, [u8; 256]> =
        std::collections::HashMap::new();
    for (p, byte, r) in &reads {
        let landed = match r {
            Ok(n) => *n,
            Err(_) => 0,
        };
        expected.entry(*p).or_insert([0; 256])[..landed].fill(*byte);
    }
    let (mut ok, mut efault, mut short) = (0, 0, 0);
    for (i, (p, byte, r)) in reads.iter().enumerate() {
        let src = &srcs[i];
        let at = base + p * page() + 1024;
        let redone = match r {
            Ok(256) => {
                ok += 1;
                256
            }
            Ok(n) => {
                short += 1;
                // The rest is still in the source: read it now.
                let rest = src.read_into(at + n, 256 - n);
                if rest != Ok(256 - n) {
                    return Err(format!("{ctx}: short read of {n} then {rest:?}"));
                }
                *n
            }
            Err(libc::EFAULT) => {
                efault += 1;
                let again = src.read_into(at, 256);
                if again != Ok(256) {
                    return Err(format!(
                        "{ctx}: read into page {p} failed with EFAULT during the snapshot and {again:?} after it"
                    ));
                }
                0
            }
            Err(e) => return Err(format!("{ctx}: read failed with errno {e}")),
        };
        if let Some(want) = expected.get_mut(p) {
            want[redone..].fill(*byte);
        }
    }
    for (p, want) in &expected {
        let got = &region.as_slice()[p * page() + 1024..p * page() + 1280];
        // Every read covers all 256 bytes, during the snapshot or after it.
        if got != want {
            return Err(format!(
                "{ctx}: page {p} does not hold the bytes read into it"
            ));
        }
    }
    // No protection left behind: a kernel write into every batch works now.
    let step = if huge { HUGE } else { BATCH };
    for at in (0..len).step_by(step) {
        src.put(&[0x77; 8]);
        let r = src.read_into(base + at + 2048, 8);
        if r != Ok(8) {
            return Err(format!(
                "{ctx}: read into offset {at:#x} after the snapshot: {r:?}"
            ));
        }
    }
    let next = region.snapshot().map_err(|e| e.to_string())?;
    expect_same(
        &next.to_vec(),
        region.as_slice(),
        &format!("{ctx}: next snapshot"),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((ok, efault, short))
}

#[test]
fn kernel_writes_into_staging_heavy_background_work() {
    in_child("kernel_writes", 120, || {
        for t in backends() {
            if t == Tracking::Mprotect {
                note(format!(
                    "skipping {t}: its read-only pages refuse kernel writes by design"
                ));
                continue;
            }
            let cases = [
                (false, Some(BATCH), false),
                (false, Some(0), false),
                (true, Some(HUGE), false),
                (true, None, true),
                (false, None, true),
                (false, Some(BATCH), true),
            ];
            for (i, (huge, staging, lend)) in cases.into_iter().enumerate() {
                for save in [false, true] {
                    if save && lend {
                        continue;
                    }
                    let socket = i % 2 == 1;
                    let (ok, efault, short) =
                        kernel_writes_case(t, huge, staging, lend, save, socket)?;
                    note(format!(
                        "{t} huge={huge} staging={staging:?} lend={lend} save={save} socket={socket}: {ok} ok, {efault} EFAULT, {short} short"
                    ));
                }
            }
        }
        Ok(())
    });
}

/// Kernel-mode writes during a converging snapshot while 60 writers run: all
/// succeed (nothing is protected beyond tracking) and `finish` has them.
#[test]
fn kernel_writes_during_converging_with_many_writers() {
    in_child("kernel_converging", 60, || {
        for t in backends() {
            if t == Tracking::Mprotect {
                continue;
            }
            for huge in [false, true] {
                let len = 16 << 20;
                let mut region = Region::builder(len)
                    .tracking(t)
                    .huge_pages(huge)
                    .build()
                    .map_err(|e| e.to_string())?;
                fill_generation(&mut region, 1);
                region.snapshot().map_err(|e| e.to_string())?;
                let (base, pages) = (region.as_ptr() as usize, len / page());
                let src = Source::new(huge);
                let round = Round {
                    writers: 60,
                    writes: 200,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                let mut rng = XorShift(99);
                let ctx = format!("{t} huge={huge}");
                let conv = region
                    .converging_snapshot()
                    .map_err(|e| format!("{ctx}: {e}"))?;
                let mut fails = Vec::new();
                with_writers(base, len, &round, 5, || {
                    for i in 0..32u8 {
                        let p = rng.below(pages);
                        src.put(&[i + 1; 512]);
                        let r = src.read_into(base + p * page() + 2048, 512);
                        if r != Ok(512) {
                            fails.push((p, r));
                        }
                    }
                });
                let snap = conv.finish().map_err(|e| format!("{ctx}: finish: {e}"))?;
                if !fails.is_empty() {
                    return Err(format!(
                        "{ctx}: kernel writes failed during converging: {fails:?}"
                    ));
                }
                expect_same(&snap.to_vec(), region.as_slice(), &format!("{ctx}: finish"))?;
            }
        }
        Ok(())
    });
}

// ───────────── 4. Dropping things and calling the region mid-flight ─────────────

/// The handle dropped at once while 100 writers (no pool) sleep on batches:
/// the drop finishes the copy, every writer goes on, nothing is lost for the
/// next snapshot, and the next background snapshot is exact.
#[test]
fn dropping_the_handle_while_writers_sleep() {
    in_child("drop_handle", 60, || {
        for t in backends() {
            let len = 16 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .staging(0)
                .build()
                .map_err(|e| e.to_string())?;
            for r in 0..3u64 {
                fill_generation(&mut region, r + 1);
                let round = Round {
                    writers: 100,
                    writes: 20,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                let (base, rlen) = (region.as_ptr() as usize, region.len());
                with_writers(base, rlen, &round, r + 40, || {
                    let bg = region.background_snapshot().unwrap();
                    // Let the writers fault and sleep first, sometimes.
                    if r == 1 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    drop(bg);
                });
                let next = region.snapshot().map_err(|e| e.to_string())?;
                expect_same(
                    &next.to_vec(),
                    region.as_slice(),
                    &format!("{t} round {r}: after drop"),
                )?;
                fill_generation(&mut region, r + 50);
                let round = Round {
                    writers: 20,
                    writes: 20,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                exact_round(&mut region, &round, r + 60, &format!("{t} round {r}: next"))?;
            }
        }
        Ok(())
    });
}

/// Whether the address range is still mapped (in /proc/self/maps).
fn mapped(addr: usize, len: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let mut it = range.split('-');
        let lo = usize::from_str_radix(it.next().unwrap_or("0"), 16).unwrap_or(0);
        let hi = usize::from_str_radix(it.next().unwrap_or("0"), 16).unwrap_or(0);
        lo < addr + len && addr < hi
    })
}

/// The region (and the caller's store handle) dropped while its background
/// snapshot copies: the snapshot is still the instant, and once it is done the
/// region's memory is unmapped and, the snapshot dropped, the store is empty.
#[test]
fn dropping_the_region_while_its_background_snapshot_copies() {
    in_child("drop_region", 60, || {
        for t in backends() {
            for (huge, staging) in [(false, None), (true, Some(0)), (false, Some(BATCH))] {
                let len = 32 << 20;
                let store = PageStore::new();
                let mut b = Region::builder(len)
                    .tracking(t)
                    .huge_pages(huge)
                    .store(&store);
                if let Some(s) = staging {
                    b = b.staging(s);
                }
                let mut region = b.build().map_err(|e| e.to_string())?;
                fill_generation(&mut region, 3);
                let kept = region.snapshot().map_err(|e| e.to_string())?;
                fill_generation(&mut region, 4);
                let instant = region.as_slice().to_vec();
                let (addr, rlen) = (region.as_ptr() as usize, region.len());
                let bg = region.background_snapshot().map_err(|e| e.to_string())?;
                drop(region);
                let weak_store = store.clone();
                drop(store);
                let ctx = format!("{t} huge={huge} staging={staging:?}");
                let snap = bg.wait().map_err(|e| format!("{ctx}: wait: {e}"))?;
                expect_same(
                    &snap.to_vec(),
                    &instant,
                    &format!("{ctx}: after the region dropped"),
                )?;
                if mapped(addr, rlen) {
                    return Err(format!(
                        "{ctx}: the region's memory is still mapped after the copy"
                    ));
                }
                drop(snap);
                drop(kept);
                let s = weak_store.stats();
                if s.unique_pages != 0 {
                    return Err(format!(
                        "{ctx}: {} pages held after all dropped",
                        s.unique_pages
                    ));
                }
                // A new region in the freed range works, background and all.
                let mut again = Region::builder(rlen)
                    .tracking(t)
                    .at(addr)
                    .build()
                    .map_err(|e| format!("{ctx}: rebuild at the old address: {e}"))?;
                fill_generation(&mut again, 5);
                let round = Round {
                    writers: 10,
                    writes: 50,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                exact_round(
                    &mut again,
                    &round,
                    9,
                    &format!("{ctx}: new region at the old address"),
                )?;
            }
        }
        Ok(())
    });
}

/// A region dropped while a converging snapshot runs is refused at compile
/// time (the `Converging` borrows it); dropping the `Converging` itself while
/// 60 writers run must lose no write.
#[test]
fn dropping_a_converging_snapshot_under_many_writers() {
    in_child("drop_converging", 60, || {
        for t in backends() {
            for huge in [false, true] {
                let len = 16 << 20;
                let mut region = Region::builder(len)
                    .tracking(t)
                    .huge_pages(huge)
                    .build()
                    .map_err(|e| e.to_string())?;
                fill_generation(&mut region, 1);
                region.snapshot().map_err(|e| e.to_string())?;
                fill_generation(&mut region, 2);
                let (base, rlen) = (region.as_ptr() as usize, region.len());
                let round = Round {
                    writers: 60,
                    writes: 300,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                {
                    let conv = region.converging_snapshot().map_err(|e| e.to_string())?;
                    with_writers(base, rlen, &round, 8, || {
                        std::thread::sleep(Duration::from_millis(1));
                    });
                    drop(conv);
                }
                let next = region.snapshot().map_err(|e| e.to_string())?;
                expect_same(
                    &next.to_vec(),
                    region.as_slice(),
                    &format!("{t} huge={huge}: after drop"),
                )?;
                // And a finished one after the drop is exact too.
                fill_generation(&mut region, 3);
                let conv = region.converging_snapshot().map_err(|e| e.to_string())?;
                with_writers(base, rlen, &round, 9, || ());
                let snap = conv.finish().map_err(|e| e.to_string())?;
                expect_same(
                    &snap.to_vec(),
                    region.as_slice(),
                    &format!("{t} huge={huge}: finish"),
                )?;
            }
        }
        Ok(())
    });
}

/// While a background snapshot copies (writers having written during it and
/// stopped): `converging_snapshot`, `background_snapshot` and
/// `background_save` are refused with `BackgroundBusy`; `snapshot` is exact;
/// `restore`, `verify` and `release_sync_point` wait for the copy; and the
/// background snapshot is still its instant.
#[test]
fn calls_on_the_region_while_a_background_snapshot_copies() {
    in_child("calls_mid_flight", 90, || {
        for t in backends() {
            for call in 0..5 {
                let len = 32 << 20;
                let mut region = Region::builder(len)
                    .tracking(t)
                    .staging(0)
                    .build()
                    .map_err(|e| e.to_string())?;
                fill_generation(&mut region, 1);
                let s1 = region.snapshot().map_err(|e| e.to_string())?;
                let s1_bytes = s1.to_vec();
                fill_generation(&mut region, 2);
                let instant = region.as_slice().to_vec();
                let ctx = format!("{t} call {call}");
                let round = Round {
                    writers: 30,
                    writes: 20,
                    pick: Pick::Random,
                    batch: BATCH,
                };
                let (base, rlen) = (region.as_ptr() as usize, region.len());
                let bg = with_writers(base, rlen, &round, 1, || region.background_snapshot())
                    .map_err(|e| format!("{ctx}: start: {e}"))?;
                let in_flight = !bg.is_finished();
                match call {
                    0 => {
                        let busy = region.background_snapshot().map(drop);
                        let dir = std::env::temp_dir()
                            .join(format!("pagesnap-adv-busy-{}", std::process::id()));
                        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                        let save = region.background_save(dir.join("x.snap")).map(drop);
                        // Still copying after both calls: it was copying during them,
                        // so both must have been refused.
                        let running = in_flight && !bg.is_finished();
                        let left: Vec<_> = std::fs::read_dir(&dir)
                            .map_err(|e| e.to_string())?
                            .filter_map(|e| e.ok().map(|e| e.file_name()))
                            .collect();
                        let _ = std::fs::remove_dir_all(&dir);
                        if !left.is_empty() && matches!(save, Err(Error::BackgroundBusy)) {
                            return Err(format!("{ctx}: a refused save left {left:?}"));
                        }
                        if !matches!(busy, Err(Error::BackgroundBusy)) && running {
                            return Err(format!("{ctx}: second background_snapshot: {busy:?}"));
                        }
                        if !matches!(save, Err(Error::BackgroundBusy)) && running {
                            return Err(format!("{ctx}: background_save beside it: {save:?}"));
                        }
                        let conv = region.converging_snapshot().map(drop);
                        if in_flight
                            && !bg.is_finished()
                            && !matches!(conv, Err(Error::BackgroundBusy))
                        {
                            // Allowed only if the copy finished meanwhile.
                            note(format!(
                                "{ctx}: converging_snapshot beside a copy: {conv:?}"
                            ));
                        }
                    }
                    1 => {
                        let s = region
                            .snapshot()
                            .map_err(|e| format!("{ctx}: snapshot: {e}"))?;
                        expect_same(
                            &s.to_vec(),
                            region.as_slice(),
                            &format!("{ctx}: snapshot mid-flight"),
                        )?;
                    }
                    2 => {
                        region
                            .restore(&s1)
                            .map_err(|e| format!("{ctx}: restore: {e}"))?;
                        if !bg.is_finished() {
                            return Err(format!("{ctx}: restore returned while the copy ran"));
                        }
                        expect_same(region.as_slice(), &s1_bytes, &format!("{ctx}: restored"))?;
                    }
                    3 => {
                        let v = region.verify().map_err(|e| format!("{ctx}: verify: {e}"))?;
                        let _ = v;
                    }
                    _ => {
                        region
                            .release_sync_point()
                            .map_err(|e| format!("{ctx}: release_sync_point: {e}"))?;
                    }
                }
                let snap = bg.wait().map_err(|e| format!("{ctx}: wait: {e}"))?;
                expect_same(&snap.to_vec(), &instant, &format!("{ctx}: background"))?;
                let next = region.snapshot().map_err(|e| e.to_string())?;
                expect_same(&next.to_vec(), region.as_slice(), &format!("{ctx}: next"))?;
                if !in_flight {
                    note(format!("{ctx}: the copy was done before the call"));
                }
            }
        }
        Ok(())
    });
}

/// The region shared by reference between threads: four threads start
/// background snapshots at once, again and again, while stampers write. Each
/// start either succeeds (and its snapshot is one instant) or is refused with
/// `BackgroundBusy`; nothing hangs.
#[test]
fn concurrent_background_starts_from_many_threads() {
    in_child("concurrent_starts", 60, || {
        for t in backends() {
            let len = 8 << 20;
            let region = Arc::new(
                Region::builder(len)
                    .tracking(t)
                    .staging(BATCH)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
            let base = region.as_ptr() as usize;
            let mut stampers = common::Stampers::start(base, len, 3);
            stampers.wait_started(base);
            let ok = Arc::new(AtomicUsize::new(0));
            let starters: Vec<_> = (0..4)
                .map(|i| {
                    let (region, ok) = (region.clone(), ok.clone());
                    std::thread::spawn(move || {
                        let mut out = Vec::new();
                        for _ in 0..15 {
                            let r = if i % 2 == 0 {
                                region
                                    .background_snapshot()
                                    .and_then(|bg| bg.wait())
                                    .map(|s| s.to_vec())
                            } else {
                                let path = std::env::temp_dir().join(format!(
                                    "pagesnap-adv-cs-{}-{i}.snap",
                                    std::process::id()
                                ));
                                let r = region
                                    .background_save(&path)
                                    .and_then(|bg| bg.wait())
                                    .and_then(|_| Snapshot::load(&path, &PageStore::new()))
                                    .map(|s| s.to_vec());
                                let _ = std::fs::remove_file(&path);
                                r
                            };
                            match r {
                                Ok(bytes) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    out.push(Ok(bytes));
                                }
                                Err(Error::BackgroundBusy) => {}
                                Err(e) => out.push(Err(e.to_string())),
                            }
                        }
                        out
                    })
                })
                .collect();
            let results: Vec<_> = starters
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            stampers.stop();
            for (i, r) in results.into_iter().enumerate() {
                let bytes = r.map_err(|e| format!("{t}: start {i}: {e}"))?;
                stampers.assert_consistent(&bytes, &format!("{t}: concurrent start {i}"));
            }
            let mut region = Arc::try_unwrap(region).map_err(|_| "region still shared")?;
            let next = region.snapshot().map_err(|e| e.to_string())?;
            expect_same(&next.to_vec(), region.as_slice(), &format!("{t}: next"))?;
            note(format!(
                "{t}: {} concurrent starts succeeded",
                ok.load(Ordering::Relaxed)
            ));
        }
        Ok(())
    });
}

// ───────────── 5. fork() in the middle of a background snapshot ─────────────

/// fork() while a background snapshot copies and 40 writers (some asleep in
/// the handler, some staging) run in the parent: the child writes every page
/// of the inherited region (the parent's copy of it must not change), its
/// calls are refused, dropping the inherited handle does not hang, and it
/// exits; the parent's snapshot is its instant and its tracking stays exact.
#[test]
fn fork_mid_background_with_writers_running() {
    in_child("fork_mid_background", 120, || {
        let _ = child::serial; // nested: this child is alone in its process
        for t in backends() {
            for (huge, staging, lend) in [
                (false, Some(0), false),
                (false, Some(BATCH), false),
                (true, Some(HUGE), false),
                (false, None, true),
            ] {
                let len = 16 << 20;
                let store = PageStore::new();
                let mut b = Region::builder(len)
                    .tracking(t)
                    .huge_pages(huge)
                    .store(&store);
                if let Some(s) = staging {
                    b = b.staging(s);
                }
                let mut region = b.build().map_err(|e| e.to_string())?;
                if lend {
                    fill_generation(&mut region, 70);
                    drop(region.snapshot().map_err(|e| e.to_string())?);
                }
                fill_generation(&mut region, 71);
                let s0 = region.snapshot().map_err(|e| e.to_string())?;
                fill_generation(&mut region, 72);
                let instant = region.as_slice().to_vec();
                let ctx = format!("{t} huge={huge} staging={staging:?} lend={lend}");
                let (base, rlen) = (region.as_ptr() as usize, region.len());
                let round = Round {
                    writers: 40,
                    writes: 400,
                    pick: Pick::Random,
                    batch: if huge { HUGE } else { BATCH },
                };
                let mut copying = false;
                let (bg, outcome) = with_writers(base, rlen, &round, 17, || {
                    let mut bg = Some(region.background_snapshot().unwrap());
                    std::thread::sleep(Duration::from_micros(300));
                    copying = !bg.as_ref().unwrap().is_finished();
                    let region_ref = &region;
                    let outcome = child::run(Duration::from_secs(10), || {
                        // The child: write every page of its copy, word 1.
                        for p in 0..rlen / page() {
                            common::write_u64(base, p * page() + 8, 0xc41d);
                        }
                        // Refused, not hung.
                        if !matches!(
                            region_ref.background_snapshot().map(drop),
                            Err(Error::ForkedChild { .. })
                        ) {
                            return 10;
                        }
                        let _ = bg.as_ref().unwrap().progress();
                        if !matches!(bg.take().unwrap().wait(), Err(Error::ForkedChild { .. })) {
                            return 20;
                        }
                        // Its own region works fully.
                        let Ok(mut own) = Region::builder(1 << 20).tracking(t).build() else {
                            return 30;
                        };
                        own.as_mut_slice().fill(5);
                        let Ok(obg) = own.background_snapshot() else {
                            return 40;
                        };
                        own.as_mut_slice()[0] = 6;
                        match obg.wait() {
                            Ok(s) if s.to_vec().iter().all(|&b| b == 5) => 0,
                            _ => 50,
                        }
                    });
                    (bg, outcome)
                });
                let snap = bg
                    .unwrap()
                    .wait()
                    .map_err(|e| format!("{ctx}: wait: {e}"))?;
                if outcome != Outcome::Exited(0) {
                    return Err(format!(
                        "{ctx}: grandchild {outcome:?} (copying at fork: {copying})"
                    ));
                }
                expect_same(&snap.to_vec(), &instant, &format!("{ctx}: background"))?;
                // The child's writes never reached the parent.
                for p in 0..rlen / page() {
                    if common::read_u64(base, p * page() + 8) == 0xc41d {
                        return Err(format!(
                            "{ctx}: the child's write shows in the parent's page {p}"
                        ));
                    }
                }
                let next = region.snapshot().map_err(|e| e.to_string())?;
                expect_same(&next.to_vec(), region.as_slice(), &format!("{ctx}: next"))?;
                region.restore(&s0).map_err(|e| e.to_string())?;
                expect_same(region.as_slice(), &s0.to_vec(), &format!("{ctx}: restore"))?;
                if !copying {
                    note(format!(
                        "{ctx}: the copy was done at the fork; case not exercised"
                    ));
                }
            }
        }
        Ok(())
    });
}

/// Back-to-back background snapshots under writers that write two words in
/// turn, `A[w] = i` then `B[w] = i`, i = 1, 2, …, with A and B in batches far
/// apart. In any point-in-time copy, `A[w]` is `B[w]` or `B[w] + 1`.
/// (Under the mprotect tracker a batch saved by one snapshot stays read-only,
/// so every first write after it faults into the tracker's path, which makes
/// the page writable: if the next snapshot protects the region between the
/// handler's look at the batch state and that `mprotect`, the page is left
/// writable under the new snapshot.)
fn pairs_case(t: Tracking, staging: Option<usize>, secs: u64) -> Result<usize, String> {
    pairs_in_regions(t, staging, secs, usize::MAX)
}

/// [`pairs_case`] over fresh regions, each taking `per_region` snapshots
/// under its own writers: with 1, every snapshot is a region's first, started
/// while the writers make their first writes (under the mprotect tracker,
/// faults that lift protection before the region has any background state).
fn pairs_in_regions(
    t: Tracking,
    staging: Option<usize>,
    secs: u64,
    per_region: usize,
) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut bad = Vec::new();
    let mut n = 0;
    while Instant::now() < deadline && bad.len() <= 5 {
        pairs_in_one_region(t, staging, deadline, per_region, &mut n, &mut bad)?;
    }
    if !bad.is_empty() {
        return Err(format!(
            "{t} staging={staging:?}: not point-in-time after {n} snapshots: {}",
            bad.join("; ")
        ));
    }
    Ok(n)
}

fn pairs_in_one_region(
    t: Tracking,
    staging: Option<usize>,
    deadline: Instant,
    per_region: usize,
    n: &mut usize,
    bad: &mut Vec<String>,
) -> Result<(), String> {
    let len = 8 << 20;
    let mut b = Region::builder(len).tracking(t);
    if let Some(s) = staging {
        b = b.staging(s);
    }
    let region = b.build().map_err(|e| e.to_string())?;
    let base = region.as_ptr() as usize;
    let pages = len / page();
    let writers = 24;
    // A[w] at page 3w; B[w][j] (RINGS of them, in batches of their own) in
    // the second half.
    const RINGS: usize = 4;
    let a_at = |w: usize| w * 3 * page();
    let b_at = move |w: usize, j: usize| (pages / 2 + (w + j * writers) * 3) * page();
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, go) = (stop.clone(), go.clone());
            std::thread::Builder::new()
                .name(format!("adv-w{w}"))
                .stack_size(64 << 10)
                .spawn(move || {
                    go.wait();
                    let mut i = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        common::write_u64(base, a_at(w), i);
                        for j in 0..RINGS {
                            common::write_u64(base, b_at(w, j), i);
                        }
                        i += 1;
                    }
                })
                .unwrap()
        })
        .collect();
    // The first snapshot starts while the writers make their first writes.
    go.wait();
    let mut taken = 0;
    while taken < per_region && Instant::now() < deadline && bad.len() <= 5 {
        match region.background_snapshot().and_then(|bg| bg.wait()) {
            Ok(snap) => {
                let v = snap.to_vec();
                let at = |o: usize| u64::from_ne_bytes(v[o..o + 8].try_into().unwrap());
                for w in 0..writers {
                    let av = at(a_at(w));
                    for j in 0..RINGS {
                        let bv = at(b_at(w, j));
                        if av != bv && av != bv + 1 {
                            bad.push(format!("snapshot {n}: writer {w}: A={av} B{j}={bv}"));
                        }
                    }
                }
            }
            Err(e) => bad.push(format!("snapshot {n}: {e}")),
        }
        *n += 1;
        taken += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    Ok(())
}

#[test]
fn back_to_back_snapshots_keep_pairs_in_step() {
    in_child("pairs", 60, || {
        for t in backends() {
            if t == Tracking::Mprotect {
                note(format!(
                    "{t}: see mprotect_back_to_back_snapshots_keep_pairs_in_step"
                ));
                continue;
            }
            for staging in [Some(0), None] {
                let n = pairs_case(t, staging, 4)?;
                note(format!("{t} staging={staging:?}: {n} snapshots in step"));
            }
        }
        Ok(())
    });
}

/// The case above under the mprotect tracker, whose faults lift protection
/// page by page: a lift decided just before a snapshot's start must not land
/// after its protection.
#[test]
fn mprotect_back_to_back_snapshots_keep_pairs_in_step() {
    in_child("pairs_mprotect", 60, || {
        if !backends().contains(&Tracking::Mprotect) {
            note("skipping: no mprotect tracker here".into());
            return Ok(());
        }
        for staging in [Some(0), None] {
            let n = pairs_case(Tracking::Mprotect, staging, 6)?;
            note(format!(
                "mprotect staging={staging:?}: {n} snapshots in step"
            ));
        }
        Ok(())
    });
}

/// Each snapshot the first of a fresh region, started while its writers make
/// their first writes: under the mprotect tracker those faults lift
/// protection before the region has any background state, and a lift
/// landing after the snapshot's protection would leave a page it has not
/// copied writable.
#[test]
fn first_snapshots_of_fresh_regions_keep_pairs_in_step() {
    in_child("pairs_first", 60, || {
        for t in backends() {
            let n = pairs_in_regions(t, Some(0), 5, 1)?;
            note(format!("{t}: {n} first snapshots in step"));
        }
        Ok(())
    });
}
