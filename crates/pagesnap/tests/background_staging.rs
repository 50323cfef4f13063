//! Background snapshots where writers copy the batches they touch into the
//! staging pool themselves (from the SIGSEGV handler) instead of waiting for
//! the copier: the snapshot stays exact at the instant, into the store and to
//! a file, with a pool large enough never to fill and with one too small.

mod common;

use pagesnap::{PageStore, Region, Snapshot};

/// The batch of a region up to 256 MiB without huge pages: the unit a writer
/// copies and unprotects.
const BATCH: usize = 64 << 10;

/// Takes `rounds` background snapshots (into the store, and to a file every
/// other round) of a region that three stampers keep overwriting, checks each
/// is one instant, and returns (batches staged, batches waited for) in all.
fn stamped_rounds(region: &Region, rounds: usize, context: &str) -> (u64, u64) {
    // One folder per call: the tests of this file run at once.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pagesnap-staging-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = region.as_ptr() as usize;
    let mut stampers = common::Stampers::start(base, region.len(), 3);
    stampers.wait_started(base);
    let (mut staged, mut faults) = (0, 0);
    let mut waited = std::time::Duration::ZERO;
    let mut peak_fits = true;
    let mut results = Vec::new();
    for round in 0..rounds {
        if round % 2 == 0 {
            let r = region.background_snapshot().and_then(|bg| bg.wait_report());
            if let Ok((_, report)) = &r {
                peak_fits &= report.staging_peak_bytes <= report.staging_bytes;
                waited += report.writers_waited;
                (staged, faults) = (staged + report.staged, faults + report.faults);
            }
            results.push(r.map(|(snap, _)| snap.to_vec()));
        } else {
            let path = dir.join(format!("{round}.snap"));
            let r = region.background_save(&path).and_then(|bg| bg.wait());
            if let Ok(report) = &r {
                peak_fits &= report.staging_peak_bytes <= report.staging_bytes;
                waited += report.writers_waited;
                (staged, faults) = (staged + report.staged, faults + report.faults);
            }
            results.push(
                r.and_then(|_| Snapshot::load(&path, &PageStore::new()))
                    .map(|s| s.to_vec()),
            );
        }
    }
    // Stop the writers before any assertion can unwind past them.
    stampers.stop();
    assert!(
        peak_fits,
        "{context}: more staged at once than the pool holds"
    );
    // Writers that staged or waited spent time doing it. (Per round, a writer
    // may still be leaving the handler when the report is taken; over all the
    // rounds its time shows.)
    assert!(
        staged + faults == 0 || waited > std::time::Duration::ZERO,
        "{context}: {staged} staged, {faults} waited for, no time counted"
    );
    for (round, bytes) in results.into_iter().enumerate() {
        let bytes = bytes.unwrap_or_else(|e| panic!("{context} round {round}: {e}"));
        stampers.assert_consistent(&bytes, &format!("{context} round {round}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    (staged, faults)
}

/// Writers run into batches the copier has not reached, over and over: they
/// stage them and go on, and every snapshot is still the region at its instant;
/// tracking stays exact for the next snapshot.
#[test]
fn writers_staging_their_batches_keep_each_snapshot_exact() {
    for t in common::backends() {
        let len = 24 << 20;
        let mut region = Region::builder(len)
            .tracking(t)
            .staging(len)
            .build()
            .unwrap();
        let (staged, _) = stamped_rounds(&region, 8, &format!("{t} staging"));
        assert!(staged > 0, "{t}: no writer ever staged a batch");
        let snap = region.snapshot().unwrap();
        assert!(
            snap.to_vec() == region.as_mut_slice(),
            "{t}: tracking missed writes after staged background snapshots"
        );
    }
}

/// A pool of one batch, and none at all: writers that find no room wait for
/// the copier as before, and the snapshots are just as exact.
#[test]
fn a_full_or_missing_staging_pool_makes_writers_wait() {
    for t in common::backends() {
        for staging in [BATCH, 0] {
            let len = 16 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .staging(staging)
                .build()
                .unwrap();
            let (staged, faults) = stamped_rounds(&region, 6, &format!("{t} pool={staging}"));
            if staging == 0 {
                assert_eq!(staged, 0, "{t}: staged without a pool");
            }
            assert!(staged + faults > 0, "{t}: writers never met the snapshot");
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_mut_slice(),
                "{t}: tracking missed writes"
            );
        }
    }
}

/// The pool's size is what the report says, and a quiet region uses none of it.
#[test]
fn staging_is_reported() {
    let region = Region::builder(8 << 20)
        .staging(2 * BATCH + 1000)
        .build()
        .unwrap();
    let (_, report) = region.background_snapshot().unwrap().wait_report().unwrap();
    // Rounded down to whole batches.
    assert_eq!(report.staging_bytes, 2 * BATCH as u64);
    assert_eq!((report.staged, report.staging_peak_bytes), (0, 0));
}

/// Writes `generation` into the second word of each page of the first
/// `written` bytes (distinct per page; the first word is the stampers').
fn write_generation(region: &mut Region, written: usize, generation: u64) {
    let page = pagesnap::page_size();
    let pages = region.as_mut_slice()[..written].chunks_exact_mut(page);
    for (i, p) in pages.enumerate() {
        p[8..16].copy_from_slice(&(generation << 32 | i as u64).to_ne_bytes());
    }
}

/// A store that holds free frames (memory of snapshots dropped since) lends
/// them as the staging pool: writers copy their batch straight into store
/// memory, the snapshot keeps it where it lies, and every snapshot is still
/// the region at its instant. With frames for the whole region the pool is
/// all lent; with frames for a quarter, the pool's own half region follows.
#[test]
fn a_store_with_free_frames_lends_them_as_staging() {
    for t in common::backends() {
        for (quarters, staging) in [(4, 4), (1, 3)] {
            let len = 16 << 20;
            let page = pagesnap::page_size();
            let mut region = Region::builder(len).tracking(t).build().unwrap();
            // Two generations of distinct pages over `quarters` of the region:
            // once the second is the sync point, the first one's frames are
            // free. (Past the first word, which the stampers own.)
            let written = len / 4 * quarters;
            for generation in 1..=2u64 {
                write_generation(&mut region, written, generation);
                drop(region.snapshot().unwrap());
            }
            // The store may hold more free frames than the pages dropped: slots
            // a snapshot reserved and did not use (soft-dirty reports whole huge
            // pages as written, and their unchanged pages are deduplicated), and
            // the tail of its last slab. Lending never passes the region's size.
            let before = region.store().stats();
            let spare = before.reserved_bytes - before.stored_bytes;
            let (_, report) = region.background_snapshot().unwrap().wait_report().unwrap();
            let want = (len / 4 * staging) as u64;
            let own = (len / 4 * (staging - quarters)) as u64;
            // Pages reported written at the instant (none, unless the kernel
            // marks a whole huge page soft-dirty when it collapses one) get
            // new store frames lent: a batch's worth per batch's worth of
            // written pages, rounded up.
            let per = (BATCH / page) as u64;
            let new = report.pages.div_ceil(per) * BATCH as u64;
            let most = own + spare.min(len as u64) + new;
            assert!(
                (want..=most.max(want)).contains(&report.staging_bytes),
                "{t}, {quarters}/4 free: {} bytes of staging, not the store's free \
                 frames and its own pool ({want} to {most}; {} pages written at the instant)",
                report.staging_bytes,
                report.pages
            );
            let unique = region.store().stats().unique_pages;
            let context = format!("{t} lent {quarters}/4");
            let (staged, _) = stamped_rounds(&region, 6, &context);
            assert!(staged > 0, "{context}: no writer ever staged a batch");
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_mut_slice(),
                "{context}: tracking missed writes after lent staging"
            );
            // Frames lent and not kept went back: the store holds what the
            // snapshots alive hold, no more than one more region of pages.
            drop(snap);
            let after = region.store().stats().unique_pages;
            assert!(
                after <= unique + (len / page) as u64,
                "{context}: {after} pages held after lent staging, {unique} before"
            );
        }
    }
}

/// A region much larger than what was written since the sync point, over a
/// store holding free frames: the batches the copier saves itself take the
/// frames lent and not needed (the store maps no fresh memory), though most
/// of the region's batches have nothing to save.
#[test]
fn batches_the_copier_saves_take_lent_frames_not_fresh_memory() {
    for t in common::backends() {
        let len = 64 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        // Three generations over the first 4 MiB: after the second snapshot,
        // the first one's frames are free; the third is what the background
        // snapshot saves, 64 batches of the region's 1024.
        let written = 4 << 20;
        for generation in 1..=3u64 {
            write_generation(&mut region, written, generation);
            if generation < 3 {
                drop(region.snapshot().unwrap());
            }
        }
        let before = region.store().stats();
        let (snap, report) = region.background_snapshot().unwrap().wait_report().unwrap();
        let after = region.store().stats();
        assert_eq!(report.staged, 0, "{t}: no writer ran");
        assert!(
            snap.to_vec() == region.as_mut_slice(),
            "{t}: the snapshot is not the region"
        );
        assert!(
            after.reserved_bytes <= before.reserved_bytes,
            "{t}: the store mapped {} more bytes for {written} bytes of pages while \
             {} bytes of its frames were free",
            after.reserved_bytes - before.reserved_bytes,
            before.reserved_bytes - before.stored_bytes
        );
    }
}

/// Several regions over one store take their first background snapshots at
/// once, each with a writer going through it in order: their copiers lend new
/// frames from the same store side by side (huge pages too, whose one-batch
/// slots fill a whole slab). Every snapshot is its region's instant, and
/// once all are dropped the store holds nothing.
///
/// Each writer starts in the middle of its region (its copier goes from the
/// start) and wraps round; since copiers may still get everywhere first, the
/// case is tried again, a few times, until some writer staged.
#[test]
fn regions_sharing_a_store_stage_into_new_frames_at_once() {
    for huge in [false, true] {
        let staged = (1..=8).find(|_| regions_sharing_a_store(huge) > 0);
        assert!(
            staged.is_some(),
            "huge={huge}: no writer staged in 8 attempts: nothing lent was used"
        );
    }
}

/// One attempt of the case above: the batches writers staged.
fn regions_sharing_a_store(huge: bool) -> u64 {
    {
        let store = PageStore::new();
        let len = 16 << 20;
        let mut regions: Vec<Region> = (0..3)
            .map(|_| {
                Region::builder(len)
                    .store(&store)
                    .huge_pages(huge)
                    .build()
                    .unwrap()
            })
            .collect();
        for (i, r) in regions.iter_mut().enumerate() {
            write_generation(r, len, 10 + i as u64);
        }
        let befores: Vec<Vec<u8>> = regions.iter().map(|r| r.as_slice().to_vec()).collect();
        let page = pagesnap::page_size();
        let snaps: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = regions
                .iter()
                .map(|r| {
                    let base = r.as_ptr() as usize;
                    s.spawn(move || {
                        let bg = r.background_snapshot().unwrap();
                        let pages = len / page;
                        for p in (pages / 2..pages).chain(0..pages / 2) {
                            common::write_u64(base, p * page + 24, 7);
                        }
                        bg.wait_report().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let staged: u64 = snaps.iter().map(|(_, r)| r.staged).sum();
        eprintln!("huge={huge}: {staged} batches staged");
        let snaps: Vec<Snapshot> = snaps.into_iter().map(|(s, _)| s).collect();
        for (i, (snap, before)) in snaps.iter().zip(&befores).enumerate() {
            assert!(
                snap.to_vec() == *before,
                "huge={huge}: region {i}'s snapshot is not its instant"
            );
        }
        drop(snaps);
        drop(regions);
        assert_eq!(
            store.stats().unique_pages,
            0,
            "huge={huge}: pages left held"
        );
        staged
    }
}

/// A store that reserved memory for the region (`PageStore::reserve`) before
/// its first background snapshot lends that memory as staging, as it lends
/// the frames of dropped snapshots: a writer going through the whole region
/// stages into reserved frames, the copier saves into them too, and the
/// store maps no new memory for the snapshot, which is the region at its
/// instant.
///
/// The writer starts in the middle (the copier goes from the start) and wraps
/// round; since the copier may still get everywhere first, the case is tried
/// again, a few times, until the writer staged.
#[test]
fn a_first_snapshot_into_a_reserved_store_maps_no_new_memory() {
    for t in common::backends() {
        let staged = (1..=8).any(|attempt| reserved_first_snapshot(t, attempt));
        assert!(staged, "{t}: the writer never staged in 8 attempts");
    }
}

/// One attempt: false if the writer staged nothing.
fn reserved_first_snapshot(t: pagesnap::Tracking, attempt: u32) -> bool {
    let len = 64 << 20;
    let page = pagesnap::page_size();
    let store = PageStore::new();
    store.reserve(len).unwrap();
    assert!(store.free_bytes() >= len as u64);
    let mut region = Region::builder(len)
        .tracking(t)
        .store(&store)
        .build()
        .unwrap();
    write_generation(&mut region, len, 1);
    let before = region.as_slice().to_vec();
    let reserved = store.stats().reserved_bytes;
    let base = region.as_ptr() as usize;
    // The writer is ready before the instant, and goes at once after it: it
    // spins rather than sleeps (waking a sleeper took long enough, on two
    // loaded cores, for the copier to get everywhere first 8 times running).
    let go = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let go = go.clone();
        std::thread::spawn(move || {
            while !go.load(std::sync::atomic::Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let pages = len / page;
            for p in (pages / 2..pages).chain(0..pages / 2) {
                common::write_u64(base, p * page + 16, 2);
            }
        })
    };
    let bg = region.background_snapshot().unwrap();
    go.store(true, std::sync::atomic::Ordering::Release);
    writer.join().unwrap();
    let (snap, report) = bg.wait_report().unwrap();
    assert!(
        snap.to_vec() == before,
        "{t}: the snapshot is not the region at its instant"
    );
    let after = store.stats();
    assert_eq!(
        after.reserved_bytes, reserved,
        "{t}, attempt {attempt}: the store mapped more memory for a snapshot that \
         fits in what it reserved ({} batches staged)",
        report.staged
    );
    assert_eq!(after.stored_bytes, len as u64, "{t}: distinct pages");
    report.staged > 0
}

/// Another thread reserves store memory, again and again, while background
/// snapshots and saves of a region over that store run beside writers (the
/// reserve then maps without faulting in: that would hold up the writers).
/// Every snapshot is still one instant, tracking stays exact, and the
/// memory reserved is there for the store's next pages.
#[test]
fn reserving_beside_background_snapshots_keeps_them_exact() {
    for t in common::backends() {
        let len = 8 << 20;
        let store = PageStore::new();
        let region = Region::builder(len)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reserver = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut want = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    want = (want + (1 << 20)) % (64 << 20);
                    store.reserve(want).unwrap();
                }
            })
        };
        let context = format!("{t}, reserving beside");
        stamped_rounds(&region, 6, &context);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reserver.join().unwrap();
        let mut region = region;
        let snap = region.snapshot().unwrap();
        assert!(
            snap.to_vec() == region.as_mut_slice(),
            "{context}: tracking missed writes"
        );
        store.reserve(32 << 20).unwrap();
        let reserved = store.stats().reserved_bytes;
        let mut other = Region::builder(16 << 20).store(&store).build().unwrap();
        write_generation(&mut other, 16 << 20, 9);
        let copy = other.snapshot().unwrap();
        assert!(
            copy.to_vec() == other.as_slice(),
            "{context}: second region"
        );
        assert_eq!(
            store.stats().reserved_bytes,
            reserved,
            "{context}: 16 MiB of new pages mapped more than 32 MiB reserved"
        );
    }
}
