//! The page store under pressure, through the public API only: frames carved
//! from several arenas, reused and grown again; arenas that an address-space
//! limit keeps from being mapped; background snapshots staging into lent
//! frames for regions that are not a multiple of the pagemap scan step; many
//! threads snapshotting into one store; and contents that share their whole
//! xxh3-128 hash (crafted collisions: xxh3 is not collision resistant against
//! someone who controls the bytes).
//!
//! Every snapshot is checked byte for byte against what the test wrote.
//! Risky cases run in a forked child with a deadline (`common::child`).

mod common;

use common::address_space::with_headroom;
use common::child::{self, assert_clean as in_child};
use common::generation::{assert_gen, assert_snap_gen, fill_all, fill_page, pg};
use common::headroom::{sweep, Contents};
use pagesnap::{Error, PageStore, Region, Snapshot, Tracking};
use std::time::Duration;

const MIB: usize = 1 << 20;

/// Once every snapshot and region of `store` is gone: it holds no page, and
/// every frame that held one at the peak (`peak` pages) is free again (the
/// store's never-used slots count as neither, so this is a lower bound).
fn assert_all_free(store: &PageStore, peak: u64, context: &str) {
    let st = store.stats();
    assert_eq!(st.unique_pages, 0, "{context}: pages left in the store");
    assert!(
        store.free_bytes() >= peak * pg() as u64,
        "{context}: {} bytes free of {} reserved, though {peak} pages were held at once \
         (frames neither held nor free: leaked)",
        store.free_bytes(),
        st.reserved_bytes
    );
}

/// Unique pages of `store` now, raised into `peak`.
fn sample(store: &PageStore, peak: &std::sync::atomic::AtomicU64) {
    peak.fetch_max(
        store.stats().unique_pages,
        std::sync::atomic::Ordering::Relaxed,
    );
}

// ---------------------------------------------------------------------------
// Arenas: growth past several, reuse, regrowth.
// ---------------------------------------------------------------------------

/// 1.1 GiB of distinct pages in one store: arenas of 16, 16, 32, 64, 128, 256
/// and then 512 slabs. Frames freed by a dropped snapshot are reused without
/// mapping more, the snapshots still held keep their bytes through the reuse
/// and the regrowth, a restore reads frames across all arenas, and once every
/// snapshot is gone the store holds nothing and every frame is free.
#[test]
fn frames_across_many_arenas_stay_exact_through_reuse_and_regrowth() {
    in_child("arenas", 150, || {
        let store = PageStore::new();
        let len_a = 320 * MIB;
        let pages_a = (len_a / pg()) as u64;
        let mut a = Region::builder(len_a).store(&store).build().unwrap();
        fill_all(a.as_mut_slice(), 1);
        let s1 = a.snapshot().unwrap();
        fill_all(a.as_mut_slice(), 2);
        let s2 = a.snapshot().unwrap();
        let st = store.stats();
        assert_eq!(st.unique_pages, 2 * pages_a, "two generations stored");
        assert!(st.reserved_bytes >= 2 * len_a as u64);
        assert_snap_gen(&s1, 1, "s1");
        assert_snap_gen(&s2, 2, "s2");

        let reserved = st.reserved_bytes;
        drop(s1);
        assert_eq!(store.stats().unique_pages, pages_a, "s1's pages freed");
        assert!(store.free_bytes() >= len_a as u64, "s1's frames are free");

        // Generation 3 takes s1's frames: nothing new is mapped, s2 is intact.
        fill_all(a.as_mut_slice(), 3);
        let s3 = a.snapshot().unwrap();
        assert_eq!(
            store.stats().reserved_bytes,
            reserved,
            "reuse mapped new frames though {} bytes were free",
            len_a
        );
        assert_snap_gen(&s2, 2, "s2 after reuse");
        assert_snap_gen(&s3, 3, "s3");

        // Regrowth past 512 slabs: the next arena is the largest (1 GiB).
        let len_b = 450 * MIB + 7 * pg();
        let mut b = Region::builder(len_b).store(&store).build().unwrap();
        fill_all(b.as_mut_slice(), 4);
        let s4 = b.snapshot().unwrap();
        let st = store.stats();
        assert_eq!(
            st.unique_pages,
            2 * pages_a + (len_b / pg()) as u64,
            "s2, s3 and s4"
        );
        assert_snap_gen(&s2, 2, "s2 after regrowth");
        assert_snap_gen(&s3, 3, "s3 after regrowth");
        assert_snap_gen(&s4, 4, "s4");

        // A restore reads frames from every arena.
        a.restore(&s2).unwrap();
        assert_gen(a.as_slice(), 2, "a restored to s2");
        a.restore(&s3).unwrap();
        assert_gen(a.as_slice(), 3, "a restored to s3");

        // Drop the oldest, rewrite both regions, snapshot, check again.
        drop(s2);
        fill_all(a.as_mut_slice(), 5);
        fill_all(b.as_mut_slice(), 6);
        let s5 = a.snapshot().unwrap();
        let s6 = b.snapshot().unwrap();
        assert_snap_gen(&s3, 3, "s3 at the end");
        assert_snap_gen(&s4, 4, "s4 at the end");
        assert_snap_gen(&s5, 5, "s5");
        assert_snap_gen(&s6, 6, "s6");

        let peak = store.stats().unique_pages;
        drop((s3, s4, s5, s6, a, b));
        assert_all_free(&store, peak, "arenas");
    });
}

// ---------------------------------------------------------------------------
// Address-space limits.
// ---------------------------------------------------------------------------

/// A store of 128 slabs (arenas of 16, 16, 32 and 64, all full) whose next
/// arena (128 slabs, 256 MiB of address space) does not fit under the limit
/// while a slab does: a snapshot of 24 MiB of new pages still succeeds, one
/// slab at a time, exactly; the store maps about what it needs, not an arena.
/// Once the limit is gone the store grows by arenas again and every
/// snapshot keeps its bytes.
#[test]
fn when_an_arena_does_not_fit_a_slab_alone_is_mapped() {
    in_child("arena fallback", 60, || {
        let store = PageStore::new();
        // 256 MiB less 32 pages: ids 1..=65504, in reservations of 32,
        // fill exactly 128 slabs (id 0 is the zero page's).
        let mut big = Region::builder(256 * MIB - 32 * pg())
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        fill_all(big.as_mut_slice(), 1);
        let s1 = big.snapshot().unwrap();
        let reserved = store.stats().reserved_bytes;
        assert_eq!(reserved, 256 * MIB as u64, "setup: 128 slabs, arenas full");
        let mut small = Region::builder(24 * MIB)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        fill_all(small.as_mut_slice(), 2);
        let got = with_headroom(96 * MIB as u64, || small.snapshot());
        let s2 = got.unwrap_or_else(|e| {
            panic!("24 MiB of new pages under 96 MiB of headroom (a slab at a time): {e}")
        });
        let grew = store.stats().reserved_bytes - reserved;
        assert!(
            (24 * MIB as u64..=32 * MIB as u64).contains(&grew),
            "the store mapped {grew} bytes more for 24 MiB of pages"
        );
        assert_snap_gen(&s1, 1, "s1");
        assert_snap_gen(&s2, 2, "s2 (single slabs)");

        // Without the limit: arenas again, all exact.
        fill_all(big.as_mut_slice(), 3);
        let s3 = big.snapshot().unwrap();
        fill_all(small.as_mut_slice(), 4);
        let s4 = small.snapshot().unwrap();
        assert_snap_gen(&s1, 1, "s1 at the end");
        assert_snap_gen(&s2, 2, "s2 at the end");
        assert_snap_gen(&s3, 3, "s3");
        assert_snap_gen(&s4, 4, "s4");
        let peak = store.stats().unique_pages;
        drop((s1, s2, s3, s4, big, small));
        assert_all_free(&store, peak, "arena fallback");
    });
}

/// Snapshots (plain and background, by turns) under every address-space
/// headroom from none to 46 MiB, into one store that keeps every snapshot
/// taken (so each needs new frames: arenas, single slabs, or neither). Each
/// either succeeds exactly or fails with a typed error holding nothing;
/// after the limit goes, the next snapshot is exact; at the end every
/// snapshot kept is still exact and nothing leaked.
#[test]
fn every_address_space_headroom_gives_an_exact_snapshot_or_a_typed_error() {
    in_child("headroom sweep", 90, || {
        let store = PageStore::new();
        let len = 12 * MIB + 3 * pg();
        let pages = (len / pg()) as u64;
        // One thread: snapshot workers under the limit are the subject of
        // the tests above, not of this one.
        let mut region = Region::builder(len)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        let mut kept: Vec<(Snapshot, u64)> = Vec::new();
        let (mut ok, mut failed) = (0, 0);
        for (i, headroom) in (0..=46u64).step_by(2).enumerate() {
            let gen = 100 + i as u64;
            fill_all(region.as_mut_slice(), gen);
            let background = i % 2 == 1;
            let held = store.stats().unique_pages;
            let got = with_headroom(headroom * MIB as u64, || {
                if background {
                    region.background_snapshot().and_then(|bg| bg.wait())
                } else {
                    region.snapshot()
                }
            });
            let ctx = format!("headroom {headroom} MiB, background {background}");
            let snap = match got {
                Ok(snap) => {
                    ok += 1;
                    snap
                }
                Err(e) => {
                    failed += 1;
                    assert!(
                        matches!(e, Error::OutOfMemory { .. } | Error::Background { .. }),
                        "{ctx}: not a typed allocation error: {e:?}"
                    );
                    // The region held its last snapshot, nothing else is left.
                    assert_eq!(
                        store.stats().unique_pages,
                        held,
                        "{ctx}: a failed snapshot left pages in the store"
                    );
                    region
                        .snapshot()
                        .unwrap_or_else(|e| panic!("{ctx}: after: {e}"))
                }
            };
            assert_snap_gen(&snap, gen, &ctx);
            kept.push((snap, gen));
            assert_eq!(
                store.stats().unique_pages,
                pages * kept.len() as u64,
                "{ctx}: every kept snapshot's pages, once each"
            );
        }
        eprintln!("headroom sweep: {ok} succeeded under the limit, {failed} failed");
        for (snap, gen) in &kept {
            assert_snap_gen(snap, *gen, &format!("kept generation {gen}"));
        }
        let peak = store.stats().unique_pages;
        drop((kept, region));
        assert_all_free(&store, peak, "headroom sweep");
    });
}

/// Fills `region` with a new generation, takes a snapshot with `take` under
/// a headroom growing 16 KiB a step over 16 MiB (past what a thread and the
/// tables ask to find free): each must hold the generation, or fail with an
/// error `allowed` accepts, after which a plain snapshot does.
fn sweep_headroom(
    what: &str,
    region: &mut Region,
    take: impl FnMut(&mut Region) -> Result<Snapshot, Error>,
    allowed: impl Fn(&Error) -> bool,
) {
    let contents = Contents {
        fill: |r: &mut Region, gen| fill_all(r.as_mut_slice(), gen),
        check: assert_snap_gen,
    };
    let headrooms = (0..1024u64).map(|step| step * 16384);
    sweep(what, region, headrooms, contents, take, allowed);
}

/// Invariant 8 (allocation failure is an error) where the last memory goes
/// to a snapshot's worker threads: frames reserved beforehand, the headroom
/// swept in 16 KiB steps over the few MiB a worker's stack takes. Somewhere a
/// worker's stack fits but the signal stack the Rust runtime maps for each
/// new thread does not: the runtime then panics in the new thread before
/// any code of pagesnap runs, which aborts the process. Every snapshot must
/// instead succeed exactly or fail with a typed error.
#[test]
fn snapshot_workers_under_a_tight_address_space_limit_never_abort_the_process() {
    in_child("worker threads under RLIMIT_AS", 60, || {
        let store = PageStore::new();
        // 4 MiB: 1024 pages, two parts of 512 (a worker thread where there
        // are two cores).
        let len = 4 * MIB;
        store.reserve(4 * len).unwrap();
        let mut region = Region::builder(len).store(&store).build().unwrap();
        fill_all(region.as_mut_slice(), 1);
        drop(region.snapshot().unwrap());
        sweep_headroom("worker", &mut region, Region::snapshot, |e| {
            matches!(e, Error::OutOfMemory { .. })
        });
    });
}

/// The same for a background snapshot, whose copier is a thread of its own
/// started under the limit (a region of one thread: no snapshot workers).
#[test]
fn background_copier_under_a_tight_address_space_limit_never_aborts_the_process() {
    in_child("copier thread under RLIMIT_AS", 60, || {
        let store = PageStore::new();
        let len = 4 * MIB;
        store.reserve(4 * len).unwrap();
        let mut region = Region::builder(len)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        fill_all(region.as_mut_slice(), 1);
        drop(region.snapshot().unwrap());
        let take = |r: &mut Region| r.background_snapshot().and_then(|bg| bg.wait());
        sweep_headroom("copier", &mut region, take, |e| {
            matches!(e, Error::OutOfMemory { .. } | Error::Background { .. })
        });
    });
}

/// The same for the converging modes, whose round thread (and, for a save,
/// the thread that completes the file) start under the limit: each `finish`
/// gives the region as it is then, or a typed error after which a plain
/// snapshot is exact; the process never aborts.
#[test]
fn converging_threads_under_a_tight_address_space_limit_never_abort_the_process() {
    in_child("converging threads under RLIMIT_AS", 90, || {
        let dir = std::env::temp_dir().join(format!("pagesnap-as-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.snap");
        let store = PageStore::new();
        let len = 4 * MIB;
        store.reserve(4 * len).unwrap();
        let mut region = Region::builder(len)
            .store(&store)
            .threads(1)
            .build()
            .unwrap();
        fill_all(region.as_mut_slice(), 1);
        drop(region.snapshot().unwrap());
        let (mut ok, mut failed) = (0, 0);
        for step in 0..512u64 {
            let gen = 10 + step;
            fill_all(region.as_mut_slice(), gen);
            let save = step % 2 == 1;
            let got = with_headroom(step * 32768, || -> Result<Option<Snapshot>, Error> {
                if save {
                    let c = region.converging_save(&path)?;
                    c.wait_converged();
                    c.finish()?.wait()?;
                    Ok(None)
                } else {
                    let c = region.converging_snapshot()?;
                    c.wait_converged();
                    c.finish().map(Some)
                }
            });
            let context = format!("headroom {} KiB, save {save}", step * 32);
            match got {
                Ok(Some(snap)) => {
                    ok += 1;
                    assert_snap_gen(&snap, gen, &context);
                }
                Ok(None) => {
                    ok += 1;
                    let back = Snapshot::load(&path, &PageStore::new()).unwrap();
                    assert_snap_gen(&back, gen, &context);
                }
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("{context}: {e}");
                    }
                    assert_snap_gen(&region.snapshot().unwrap(), gen, &context);
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        eprintln!("converging sweep: {ok} succeeded under the limit, {failed} failed");
        assert!(ok > 0 && failed > 0, "the sweep crossed the limit");
    });
}

// ---------------------------------------------------------------------------
// Lent staging and scan steps.
// ---------------------------------------------------------------------------

/// Two generations of distinct pages (word 1 of each page names it), a
/// snapshot after each: the first one's frames are then free in the store.
/// Returns the second generation's tag.
fn free_a_region_of_frames(region: &mut Region, tag: u64) -> u64 {
    for generation in 1..=2u64 {
        for (i, p) in region.as_mut_slice().chunks_exact_mut(pg()).enumerate() {
            p[8..16].copy_from_slice(&(tag << 48 | generation << 32 | i as u64).to_ne_bytes());
        }
        drop(region.snapshot().unwrap());
    }
    tag << 48 | 2 << 32
}

/// Word 1 of every page is what `free_a_region_of_frames` wrote there.
fn assert_pages_in_place(bytes: &[u8], generation: u64, context: &str) {
    for (i, p) in bytes.chunks_exact(pg()).enumerate() {
        let got = u64::from_ne_bytes(p[8..16].try_into().unwrap());
        assert_eq!(
            got,
            generation | i as u64,
            "{context}: page {i} holds another page's bytes"
        );
    }
}

/// Background snapshots of regions that are not a multiple of the 64 MiB scan
/// step (65 MiB + 3 pages, 130 MiB, with and without huge pages), into a store
/// whose free frames (spread over several arenas) are lent as staging, while
/// three writers stamp rounds into every page: each snapshot is one instant
/// with every page in its place, and a plain snapshot afterwards equals the
/// region (tracking missed nothing across step edges).
#[test]
fn background_snapshots_of_uneven_regions_stage_into_lent_frames_exactly() {
    in_child("lent uneven", 120, || {
        for (len, huge) in [
            (65 * MIB + 3 * pg(), false),
            (130 * MIB, true),
            (65 * MIB + 3 * pg(), true),
        ] {
            let store = PageStore::new();
            let mut region = Region::builder(len)
                .store(&store)
                .huge_pages(huge)
                .build()
                .unwrap();
            let ctx = format!("{} bytes, huge {huge}", len);
            let generation = free_a_region_of_frames(&mut region, 7);
            let base = region.as_ptr() as usize;
            let mut staged = 0;
            for attempt in 0..4 {
                let mut stampers = common::Stampers::start(base, len, 3);
                stampers.wait_started(base);
                let mut results = Vec::new();
                for _ in 0..3 {
                    let r = region.background_snapshot().and_then(|bg| bg.wait_report());
                    if let Ok((_, report)) = &r {
                        staged += report.staged;
                    }
                    results.push(r.map(|(s, _)| s.to_vec()));
                }
                stampers.stop();
                for (round, bytes) in results.into_iter().enumerate() {
                    let c = format!("{ctx} attempt {attempt} round {round}");
                    let bytes = bytes.unwrap_or_else(|e| panic!("{c}: {e}"));
                    stampers.assert_consistent(&bytes, &c);
                    assert_pages_in_place(&bytes, generation, &c);
                }
                if staged > 0 {
                    break;
                }
            }
            eprintln!("{ctx}: {staged} batches staged");
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "{ctx}: a snapshot after the background ones misses writes"
            );
            let peak = store.stats().unique_pages;
            drop((snap, region));
            assert_all_free(&store, peak, &ctx);
        }
    });
}

/// Writes `v` into the first word of page `p` of both the region and its oracle.
fn put(region: &mut Region, oracle: &mut [u8], p: usize, v: u64) {
    let at = p * pg();
    region.as_mut_slice()[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    oracle[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Pages written at and around every 64 MiB step edge, at the region's ends,
/// and then so many scattered pages that one scan call's result vector fills
/// (which moves where the next call starts, off the step grid), for lengths
/// that are not multiples of the step, with and without huge pages: every
/// snapshot equals the oracle, and once everything is dropped the store
/// holds nothing (a page collected twice and stored twice would leak).
#[test]
fn pages_written_across_scan_step_edges_are_all_collected() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let page = pg();
    let step = 64 * MIB / page;
    for (len, huge) in [
        (65 * MIB + 3 * page, false),
        (130 * MIB, false),
        (130 * MIB + page, true),
        (192 * MIB + 5 * page, true),
    ] {
        let store = PageStore::new();
        let mut region = Region::builder(len)
            .store(&store)
            .huge_pages(huge)
            .build()
            .unwrap();
        let ctx = format!("{len} bytes, huge {huge}, {}", region.tracking());
        let pages = len / page;
        let mut oracle = vec![0u8; len];
        let mut snaps = Vec::new();
        // Round 1: edges and ends.
        let mut edges = vec![0, 1, pages - 2, pages - 1];
        for k in 1..=pages / step {
            for d in [-2isize, -1, 0, 1] {
                let p = (k * step) as isize + d;
                if (0..pages as isize).contains(&p) {
                    edges.push(p as usize);
                }
            }
        }
        edges.sort_unstable();
        edges.dedup();
        for &p in &edges {
            put(&mut region, &mut oracle, p, 0x1000_0000 | p as u64);
        }
        let s = region.snapshot().unwrap();
        assert!(s.to_vec() == oracle, "{ctx}: edges");
        snaps.push(s);
        // Round 2: every other page (over 1024 result ranges a step).
        for p in (0..pages).step_by(2) {
            put(&mut region, &mut oracle, p, 0x2000_0000 | p as u64);
        }
        let s = region.snapshot().unwrap();
        assert!(s.to_vec() == oracle, "{ctx}: every other page");
        snaps.push(s);
        // Round 3: every third page from 1, and the edges again.
        for p in (1..pages).step_by(3).chain(edges.iter().copied()) {
            put(&mut region, &mut oracle, p, 0x3000_0000 | p as u64);
        }
        let s = region.snapshot().unwrap();
        assert!(s.to_vec() == oracle, "{ctx}: every third page");
        snaps.push(s);
        // Round 4: the edges alone, now that every chunk of the region is
        // tracked (few ranges: the calls go by the step grid).
        for &p in &edges {
            put(&mut region, &mut oracle, p, 0x4000_0000 | p as u64);
        }
        let s = region.snapshot().unwrap();
        assert!(s.to_vec() == oracle, "{ctx}: edges again");
        assert_eq!(s.changed_pages(&snaps[2]), Some(edges.len()), "{ctx}");
        snaps.push(s);
        // Round 5: nothing written.
        let s = region.snapshot().unwrap();
        assert!(s.to_vec() == oracle, "{ctx}: no writes");
        assert_eq!(s.changed_pages(&snaps[3]), Some(0), "{ctx}");
        snaps.push(s);
        let peak = store.stats().unique_pages;
        drop((snaps, region));
        assert_all_free(&store, peak, &ctx);
    }
}

/// A converging snapshot of a 130 MiB + 1 page region (rounds of scans across
/// step edges while writers stamp every page), finished once they stop,
/// equals the region; so does a plain snapshot after it.
#[test]
fn a_converging_snapshot_of_an_uneven_region_under_writers_is_exact() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let len = 130 * MIB + pg();
    let store = PageStore::new();
    let mut region = Region::builder(len).store(&store).build().unwrap();
    free_a_region_of_frames(&mut region, 9);
    let base = region.as_ptr() as usize;
    let mut stampers = common::Stampers::start(base, len, 2);
    stampers.wait_started(base);
    let conv = region.converging_snapshot().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stampers.stop();
    conv.wait_converged();
    let snap = conv.finish().unwrap();
    assert!(
        snap.to_vec() == region.as_slice(),
        "the converged snapshot is not the quiescent region"
    );
    let again = region.snapshot().unwrap();
    assert_eq!(again.digest(), snap.digest());
}

// ---------------------------------------------------------------------------
// Many threads, one store.
// ---------------------------------------------------------------------------

/// Four threads, each with its own region of one shared store, snapshot in
/// rounds: pages from a pool of contents shared by all threads (equal pages
/// inserted at once by several threads), pages of their own, zero pages and,
/// every other round, a whole rewrite (the store grows across arenas while
/// others insert). They drop snapshots as they go (frames freed while others
/// insert and reuse them) and keep some, each with an oracle copy; every
/// snapshot is checked when taken and at the end, a kept one restored.
#[test]
fn threads_snapshotting_their_own_regions_into_one_store_stay_exact() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let store = PageStore::new();
    let peak = std::sync::atomic::AtomicU64::new(0);
    let threads = 4u64;
    let len = 24 * MIB + 5 * pg();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, peak) = (&store, &peak);
            s.spawn(move || {
                let page = pg();
                let pages = len / page;
                let mut region = Region::builder(len).store(store).build().unwrap();
                let mut oracle = vec![0u8; len];
                let mut rng = common::rng::XorShift(0x5eed ^ ((t + 1) * 0x1234_5678));
                let mut kept: Vec<(Snapshot, Vec<u8>)> = Vec::new();
                for round in 0..8u64 {
                    if round % 2 == 0 {
                        fill_all(&mut oracle, (t << 20) | round);
                    } else {
                        for _ in 0..pages / 2 {
                            let p = (rng.next_u64() % pages as u64) as usize;
                            let b = &mut oracle[p * page..][..page];
                            match rng.next_u64() % 4 {
                                0 => b.fill(0),
                                1 => fill_page(b, 1 << 30, p % 97),
                                2 => fill_page(b, 1 << 31, (rng.next_u64() % 300) as usize),
                                _ => fill_page(b, (t << 20) | round, p),
                            }
                        }
                    }
                    region.as_mut_slice().copy_from_slice(&oracle);
                    let snap = region.snapshot().unwrap();
                    sample(store, peak);
                    assert!(
                        snap.to_vec() == oracle,
                        "thread {t} round {round}: snapshot differs"
                    );
                    if rng.next_u64() % 3 == 0 || kept.len() < 2 {
                        kept.push((snap, oracle.clone()));
                    }
                    if kept.len() > 2 {
                        let i = (rng.next_u64() % kept.len() as u64) as usize;
                        kept.swap_remove(i);
                    }
                }
                for (i, (snap, bytes)) in kept.iter().enumerate() {
                    assert!(snap.to_vec() == *bytes, "thread {t}: kept {i} differs");
                }
                let (snap, bytes) = &kept[0];
                region.restore(snap).unwrap();
                assert!(region.as_slice() == &bytes[..], "thread {t}: restore");
            });
        }
    });
    assert_all_free(&store, peak.into_inner(), "threads");
}

// ---------------------------------------------------------------------------
// Contents with one hash.
// ---------------------------------------------------------------------------

/// The low 32 bits of the first two 64-bit words of xxh3's default secret
/// (little-endian), which stripes 0 and 1 of a long input meet in lane 0.
const SECRET_LO: [u64; 2] = [0x396c_feb8, 0x2c81_017c];

/// Member `k` (≥ 1) of a family of pages that all hash alike under xxh3-128.
///
/// xxh3 adds each 64-bit input word `v` to one accumulator and the product
/// of the two halves of `v ^ secret` to another. A word whose low half
/// equals the secret's adds a product of zero, so only `v` itself counts:
/// word 0 (stripe 0) and word 8 (stripe 1, same block, same accumulator)
/// with high halves `k` and `C - k` add the same sum for every `k`, and the
/// accumulators, hence the whole 128-bit hash, do not depend on `k`. The
/// rest of the page is a pattern of `tag`.
fn colliding(tag: u64, k: u32) -> Vec<u8> {
    assert!(k >= 1);
    let mut p = vec![0u8; pg()];
    fill_page(&mut p, 0xc011, tag as usize);
    let c: u32 = 0xf000_0000;
    let w0 = (u64::from(k) << 32) | SECRET_LO[0];
    let w8 = (u64::from(c.wrapping_sub(k)) << 32) | SECRET_LO[1];
    p[0..8].copy_from_slice(&w0.to_le_bytes());
    p[64..72].copy_from_slice(&w8.to_le_bytes());
    p
}

/// The construction works: one hash, different bytes (else the tests below
/// test nothing).
#[test]
fn crafted_pages_share_one_xxh3_128() {
    for tag in 0..4 {
        let h = xxhash_rust::xxh3::xxh3_128(&colliding(tag, 1));
        for k in 2..20 {
            let p = colliding(tag, k);
            assert_ne!(p, colliding(tag, 1));
            assert_eq!(xxhash_rust::xxh3::xxh3_128(&p), h, "tag {tag} k {k}");
        }
        assert_ne!(
            xxhash_rust::xxh3::xxh3_128(&colliding(tag + 100, 1)),
            h,
            "tags hash apart"
        );
    }
}

/// Fills `bytes` with members of colliding families: page `p` is family
/// `p % families`, member `pick(p)` (0: a zero page).
fn fill_colliding(bytes: &mut [u8], families: u64, pick: impl Fn(usize) -> u32) {
    for (p, b) in bytes.chunks_exact_mut(pg()).enumerate() {
        match pick(p) {
            0 => b.fill(0),
            k => b.copy_from_slice(&colliding(p as u64 % families, k)),
        }
    }
}

/// Pages that share a whole hash (so the same index key) are kept apart by
/// their bytes: snapshots, restores and a save/load round trip give back
/// exactly what was written, and dropping everything frees every frame,
/// indexed or not.
#[test]
fn contents_sharing_a_hash_are_kept_apart_byte_for_byte() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let len = 4 * MIB + 3 * pg();
    let store = PageStore::new();
    let mut region = Region::builder(len).store(&store).build().unwrap();
    fill_colliding(region.as_mut_slice(), 5, |p| (p / 5 % 4) as u32);
    let a_bytes = region.as_slice().to_vec();
    let a = region.snapshot().unwrap();
    assert!(a.to_vec() == a_bytes, "first snapshot");
    // Other members of the same families in every page.
    fill_colliding(region.as_mut_slice(), 5, |p| (p / 5 % 4) as u32 + 4);
    let b_bytes = region.as_slice().to_vec();
    let b = region.snapshot().unwrap();
    assert!(b.to_vec() == b_bytes, "second snapshot");
    assert!(a.to_vec() == a_bytes, "first snapshot after the second");
    region.restore(&a).unwrap();
    assert!(region.as_slice() == &a_bytes[..], "restore of the first");
    region.restore(&b).unwrap();
    assert!(region.as_slice() == &b_bytes[..], "restore of the second");

    let dir = std::env::temp_dir().join(format!("pagesnap-adv-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("colliding.snap");
    a.save(&path).unwrap();
    let fresh = PageStore::new();
    assert!(
        Snapshot::load(&path, &fresh).unwrap().to_vec() == a_bytes,
        "loaded into a fresh store"
    );
    // Into the store that holds b's members of the same families.
    assert!(
        Snapshot::load(&path, &store).unwrap().to_vec() == a_bytes,
        "loaded into the store that holds colliding pages"
    );
    // A background save of b, loaded into the store holding a's members.
    let bg = region.background_save(dir.join("bg.snap")).unwrap();
    bg.wait().unwrap();
    assert!(
        Snapshot::load(dir.join("bg.snap"), &store)
            .unwrap()
            .to_vec()
            == b_bytes,
        "background save"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let peak = store.stats().unique_pages;
    drop((a, b, region));
    assert_all_free(&store, peak, "colliding contents");
}

/// Threads inserting different members of the same families (one index key,
/// different bytes) into one store at once, dropping snapshots as they go:
/// every snapshot is what its thread wrote, and nothing leaks.
#[test]
fn colliding_contents_from_many_threads_stay_apart() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let store = PageStore::new();
    let peak = std::sync::atomic::AtomicU64::new(0);
    let len = 2 * MIB + pg();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (store, peak) = (&store, &peak);
            s.spawn(move || {
                let mut region = Region::builder(len).store(store).build().unwrap();
                let mut kept = Vec::new();
                for round in 0..12u32 {
                    // Thread t, round r: member 1 + (t + r + p) % 9 of family p % 3.
                    fill_colliding(region.as_mut_slice(), 3, |p| 1 + (t + round + p as u32) % 9);
                    let bytes = region.as_slice().to_vec();
                    let snap = region.snapshot().unwrap();
                    sample(store, peak);
                    assert!(snap.to_vec() == bytes, "thread {t} round {round}");
                    kept.push((snap, bytes));
                    if round % 3 != 0 {
                        kept.remove(0);
                    }
                }
                for (i, (snap, bytes)) in kept.iter().enumerate() {
                    assert!(snap.to_vec() == *bytes, "thread {t}: kept {i}");
                }
            });
        }
    });
    assert_all_free(&store, peak.into_inner(), "colliding threads");
}

/// The store holds each content once (invariant 4; the README: equal pages
/// stored once), also when another content has its hash: ten pages of one
/// content beside one of another with the same hash are two frames.
#[test]
fn a_content_that_shares_its_hash_is_still_stored_once() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let store = PageStore::new();
    let mut region = Region::builder(MIB).store(&store).build().unwrap();
    // Page 0: member 1 (indexed first); pages 1..=10: member 2, the same bytes.
    fill_colliding(region.as_mut_slice(), 1, |p| match p {
        0 => 1,
        1..=10 => 2,
        _ => 0,
    });
    let snap = region.snapshot().unwrap();
    assert!(snap.to_vec() == region.as_slice());
    assert_eq!(
        store.stats().unique_pages,
        2,
        "two distinct contents, stored as {} frames",
        store.stats().unique_pages
    );
}

/// Invariant 1 with compare tracking: after a snapshot, with no write in
/// between, the region's bytes equal the snapshot's. A write that changes a
/// page into another with the same xxh3-128 is a write all the same.
#[test]
fn compare_tracking_sees_a_write_that_keeps_the_page_hash() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let mut region = Region::builder(MIB)
        .tracking(Tracking::Compare)
        .build()
        .unwrap();
    region.as_mut_slice()[..pg()].copy_from_slice(&colliding(1, 1));
    let first = region.snapshot().unwrap();
    region.as_mut_slice()[..pg()].copy_from_slice(&colliding(1, 2));
    let second = region.snapshot().unwrap();
    assert!(
        second.to_vec() == region.as_slice(),
        "the snapshot holds the page as it was before the write (compare tracking missed it)"
    );
    region.restore(&first).unwrap();
    assert!(
        region.as_slice()[..pg()] == colliding(1, 1)[..],
        "restore left the written page as it was"
    );
}

/// Digests are xxh3-128, not a cryptographic hash, as `Digest`'s documentation
/// says: two snapshots one crafted page apart share a digest, while the
/// snapshots themselves stay apart (the store compares bytes). Should digests
/// ever move to a collision-resistant hash, this test and that paragraph change
/// together.
#[test]
fn crafted_collisions_share_a_digest_as_documented_but_not_their_bytes() {
    // No test of this binary may be inside pagesnap when another forks.
    let _serial = child::serial();
    let store = PageStore::new();
    let mut region = Region::builder(MIB).store(&store).build().unwrap();
    region.as_mut_slice()[..pg()].copy_from_slice(&colliding(3, 1));
    let a = region.snapshot().unwrap();
    region.as_mut_slice()[..pg()].copy_from_slice(&colliding(3, 2));
    let b = region.snapshot().unwrap();
    assert_eq!(a.changed_pages(&b), Some(1));
    assert_eq!(&a.to_vec()[..pg()], &colliding(3, 1)[..]);
    assert_eq!(&b.to_vec()[..pg()], &colliding(3, 2)[..]);
    assert_eq!(
        a.digest(),
        b.digest(),
        "the documented limit of a fast hash"
    );
}

/// Background snapshots of two regions of one store at once (one with huge
/// pages), each lending the store's free frames as staging while two writers
/// stamp each region, beside a third thread whose plain snapshots come and go
/// (frames freed and reserved meanwhile): each snapshot is one instant with
/// every page its own region's, never a frame lent to the other.
#[test]
fn concurrent_background_snapshots_into_one_store_keep_their_frames_apart() {
    in_child("concurrent lent", 120, || {
        let store = PageStore::new();
        let specs = [(40 * MIB + 3 * pg(), false, 11u64), (24 * MIB, true, 12)];
        let mut regions: Vec<(Region, u64)> = specs
            .iter()
            .map(|&(len, huge, tag)| {
                let mut r = Region::builder(len)
                    .store(&store)
                    .huge_pages(huge)
                    .build()
                    .unwrap();
                let generation = free_a_region_of_frames(&mut r, tag);
                (r, generation)
            })
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let (store, stop) = (&store, &stop);
            s.spawn(move || {
                let mut c = Region::builder(8 * MIB).store(store).build().unwrap();
                let mut gen = 1000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    gen += 1;
                    fill_all(c.as_mut_slice(), gen);
                    let snap = c.snapshot().unwrap();
                    assert_snap_gen(&snap, gen, "churn");
                }
            });
            let workers: Vec<_> = regions
                .iter()
                .map(|(region, generation)| {
                    s.spawn(move || {
                        let base = region.as_ptr() as usize;
                        let ctx = format!("{} bytes, huge {}", region.len(), region.huge_pages());
                        let mut stampers = common::Stampers::start(base, region.len(), 2);
                        stampers.wait_started(base);
                        let results: Vec<_> = (0..3)
                            .map(|_| {
                                region
                                    .background_snapshot()
                                    .and_then(|bg| bg.wait())
                                    .map(|snap| snap.to_vec())
                            })
                            .collect();
                        stampers.stop();
                        for (round, bytes) in results.into_iter().enumerate() {
                            let c = format!("{ctx} round {round}");
                            let bytes = bytes.unwrap_or_else(|e| panic!("{c}: {e}"));
                            stampers.assert_consistent(&bytes, &c);
                            assert_pages_in_place(&bytes, *generation, &c);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        for (region, _) in &mut regions {
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "after the background ones"
            );
        }
        let peak = store.stats().unique_pages;
        drop(regions);
        assert_all_free(&store, peak, "concurrent lent");
    });
}

#[test]
fn a_reservation_beyond_the_memory_available_is_refused_before_anything_is_mapped() {
    // Under an address-space cap (so that a regression fails on `mmap`
    // instead of faulting in the machine's memory until the OOM killer comes).
    in_child("reserve_beyond_memory", 60, || {
        let store = PageStore::new();
        store.reserve(4 << 20).unwrap();
        let before = store.stats();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let swap_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("SwapTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let beyond = ((total_kb + swap_kb) * 1024 + (1 << 30)) as usize;
        with_headroom(256 << 20, || {
            for bytes in [usize::MAX, usize::MAX - 4095, 1 << 50, beyond] {
                let err = store.reserve(bytes).unwrap_err();
                assert!(
                    matches!(
                        err,
                        pagesnap::StoreError::Unavailable { .. }
                            | pagesnap::StoreError::Full { .. }
                    ),
                    "reserve({bytes}): {err}"
                );
                assert_eq!(
                    store.stats(),
                    before,
                    "reserve({bytes}) mapped memory: {err}"
                );
                let as_error = Error::from(err);
                assert!(matches!(as_error, Error::OutOfMemory { .. }), "{as_error}");
            }
        });
        // What fits is still reserved.
        store.reserve(8 << 20).unwrap();
        assert!(store.stats().reserved_bytes >= 8 << 20);
    });
}
