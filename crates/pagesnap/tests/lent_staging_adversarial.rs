//! Background snapshots into a store that lends its free frames as staging
//! memory, at the edges: huge-page batches (512 pages a slot), a region whose
//! last batch is shorter than the others, and an explicit staging size.

mod common;

use pagesnap::{Region, Tracking};

/// The batch of a region up to 256 MiB without huge pages.
const BATCH: usize = 64 << 10;

/// Writes two generations of distinct pages over all of `region` (word 1 of
/// each page; word 0 is the stampers'), a snapshot after each: the first
/// one's frames are then free in the store. Returns the second generation.
fn free_a_region_of_frames(region: &mut Region, tag: u64) -> u64 {
    let page = pagesnap::page_size();
    for generation in 1..=2u64 {
        for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
            p[8..16].copy_from_slice(&(tag << 48 | generation << 32 | i as u64).to_ne_bytes());
        }
        drop(region.snapshot().unwrap());
    }
    tag << 48 | 2 << 32
}

/// Word 1 of every page of `bytes` is what `free_a_region_of_frames` wrote:
/// a staged page landed in its own place, not another page's frame.
fn assert_pages_in_place(bytes: &[u8], generation: u64, context: &str) {
    let page = pagesnap::page_size();
    for (i, p) in bytes.chunks_exact(page).enumerate() {
        let got = u64::from_ne_bytes(p[8..16].try_into().unwrap());
        assert_eq!(
            got,
            generation | i as u64,
            "{context}: page {i} holds another page's bytes"
        );
    }
}

/// `rounds` background snapshots under three stampers; each must be one
/// instant with every page in place. Returns the batches staged in all.
fn stamped_snapshots(region: &Region, rounds: usize, generation: u64, context: &str) -> u64 {
    let base = region.as_ptr() as usize;
    let mut stampers = common::Stampers::start(base, region.len(), 3);
    stampers.wait_started(base);
    let mut staged = 0;
    let mut results = Vec::new();
    for _ in 0..rounds {
        let r = region.background_snapshot().and_then(|bg| bg.wait_report());
        if let Ok((_, report)) = &r {
            staged += report.staged;
        }
        results.push(r.map(|(snap, _)| snap.to_vec()));
    }
    stampers.stop();
    for (round, bytes) in results.into_iter().enumerate() {
        let ctx = format!("{context} round {round}");
        let bytes = bytes.unwrap_or_else(|e| panic!("{ctx}: {e}"));
        stampers.assert_consistent(&bytes, &ctx);
        assert_pages_in_place(&bytes, generation, &ctx);
    }
    staged
}

/// [`stamped_snapshots`], six rounds at a time, until a writer staged a batch
/// (stampers starved of CPU by other tests may never fault in six short
/// rounds), at most five times; the batches staged.
fn stamped_until_staged(region: &Region, generation: u64, context: &str) -> u64 {
    let mut staged = 0;
    for _ in 0..5 {
        staged += stamped_snapshots(region, 6, generation, context);
        if staged > 0 {
            break;
        }
    }
    staged
}

/// Huge-page batches are 2 MiB: a lent slot is 512 frames, a whole slab's
/// worth, scattered over the free list. Every staged page lands in place.
#[test]
fn huge_page_batches_stage_into_lent_frames_in_place() {
    let len = 16 << 20;
    let mut region = Region::builder(len).huge_pages(true).build().unwrap();
    let generation = free_a_region_of_frames(&mut region, 1);
    let (_, report) = region.background_snapshot().unwrap().wait_report().unwrap();
    assert_eq!(report.staging_bytes, len as u64, "the whole region lent");
    let staged = stamped_until_staged(&region, generation, "huge");
    assert!(staged > 0, "huge: no writer ever staged a batch");
    let snap = region.snapshot().unwrap();
    assert!(
        snap.to_vec() == region.as_mut_slice(),
        "huge: tracking missed writes"
    );
}

/// A region five pages past whole batches (of 64 KiB, and of 2 MiB with huge
/// pages): its last batch (and slot) is short; the slot's other frames go
/// back unused.
#[test]
fn a_short_last_batch_stages_into_lent_frames_in_place() {
    let page = pagesnap::page_size();
    let cases = common::backends().into_iter().map(|t| (t, false));
    for (t, huge) in cases.chain([(Tracking::Auto, true)]) {
        let len = (16 << 20) + 5 * page;
        let mut region = Region::builder(len)
            .tracking(t)
            .huge_pages(huge)
            .build()
            .unwrap();
        let generation = free_a_region_of_frames(&mut region, 2);
        let context = format!("{t} huge={huge} short last batch");
        let staged = stamped_until_staged(&region, generation, &context);
        assert!(staged > 0, "{context}: no writer ever staged a batch");
        let snap = region.snapshot().unwrap();
        assert!(
            snap.to_vec() == region.as_mut_slice(),
            "{context}: tracking missed writes"
        );
        // The tail pages (the short batch) are the region's, exactly.
        let tail = len - 5 * page;
        assert!(snap.to_vec()[tail..] == region.as_mut_slice()[tail..]);
    }
}

/// Writes one word into each of the last `n` batches of `region`, from the
/// last backwards (away from the copier, which goes in address order); after
/// a write that staged its batch, waits (a second at most) until the copier
/// has saved the staged copy, draining the pool.
fn write_backwards_during_background(region: &Region, n: usize) -> (u64, u64) {
    let base = region.as_ptr() as usize;
    let batches = region.len() / BATCH;
    let bg = region.background_snapshot().unwrap();
    // The copier publishes the pool once it has the dirty pages (and counted
    // them): before that, a writer waits.
    while bg.progress().total == 0 {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    for b in (batches - n..batches).rev() {
        let before = bg.progress();
        common::write_u64(base, b * BATCH + 16, b as u64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        // Staged (not waited for) and not yet saved by the copier: wait.
        loop {
            let now = bg.progress();
            if now.staged != before.staged
                || now.faults != before.faults
                || std::time::Instant::now() >= deadline
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    let (_, report) = bg.wait_report().unwrap();
    (report.staged, report.faults)
}

/// An explicit staging size is a pool that writers reuse as the copier drains
/// it ("only when it is full does the writer wait"). With the store's free
/// frames lent for it, each lent slot is used once: a one-batch pool serves
/// one batch and then writers wait for the copier for the rest of the
/// snapshot, though the copier drained the slot long ago.
#[test]
fn an_explicit_staging_size_is_reused_when_the_store_lends_frames() {
    let len = 32 << 20;
    let t = Tracking::Auto;
    // Baseline: a fresh store (no free frames), the pool's own one slot.
    let mut own = Region::builder(len)
        .tracking(t)
        .staging(BATCH)
        .build()
        .unwrap();
    // Nothing snapshot yet: not even the spare slots of a snapshot are free.
    own.as_mut_slice().fill(2);
    let (own_staged, _) = write_backwards_during_background(&own, 32);
    // The same with a store that has free frames for the whole region. The
    // copier goes up from the bottom while the writer comes down from the
    // top: on a loaded machine the copier may save every batch before the
    // writer's second write (nothing staged or waited for after the first),
    // which says nothing about reuse: tried again, a few times at most.
    let mut attempt = 0;
    let (lent_staged, lent_faults) = loop {
        attempt += 1;
        let mut lent = Region::builder(len)
            .tracking(t)
            .staging(BATCH)
            .build()
            .unwrap();
        free_a_region_of_frames(&mut lent, 3);
        for (i, p) in lent
            .as_mut_slice()
            .chunks_exact_mut(pagesnap::page_size())
            .enumerate()
        {
            p[24..32].copy_from_slice(&(i as u64).to_ne_bytes());
        }
        let (staged, faults) = write_backwards_during_background(&lent, 32);
        if staged > 1 || faults > 0 || attempt == 8 {
            break (staged, faults);
        }
        eprintln!("attempt {attempt}: the copier saved every batch before the second write");
    };
    eprintln!("own pool: {own_staged} staged; lent: {lent_staged} staged, {lent_faults} waited");
    assert!(own_staged > 1, "baseline: the one own slot was reused");
    assert!(
        lent_staged > 1,
        "a one-batch staging pool over lent frames staged {lent_staged} batch(es) \
         and then made writers wait ({lent_faults} times): its slot was never reused"
    );
}

/// After a background snapshot over lent frames the store holds exactly the
/// distinct pages of the snapshots alive: none of the lent frames counted
/// twice, none left out.
#[test]
fn the_store_counts_exactly_what_a_lent_snapshot_holds() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        let len = 16 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        let generation = free_a_region_of_frames(&mut region, 4);
        // The sync point the region still holds: the second generation.
        let mut sync_point = vec![0u8; len];
        for (i, p) in sync_point.chunks_exact_mut(page).enumerate() {
            p[8..16].copy_from_slice(&(generation | i as u64).to_ne_bytes());
        }
        let base = region.as_ptr() as usize;
        let mut stampers = common::Stampers::start(base, len, 3);
        stampers.wait_started(base);
        let r = region.background_snapshot().and_then(|bg| bg.wait_report());
        stampers.stop();
        let (snap, report) = r.unwrap();
        let context = format!("{t}: {} staged", report.staged);
        // Alive: `snap` and the sync point.
        let bytes = snap.to_vec();
        let distinct: std::collections::HashSet<&[u8]> = bytes
            .chunks_exact(page)
            .chain(sync_point.chunks_exact(page))
            .filter(|p| p.iter().any(|&b| b != 0))
            .collect();
        let stats = region.store().stats();
        assert_eq!(
            stats.unique_pages,
            distinct.len() as u64,
            "{context}: pages counted"
        );
        drop(snap);
    }
}

/// A store with a region of free frames needs no new memory for a snapshot of
/// that region, whoever copies its batches: the copier's own copies (batches
/// no writer touched) must go to free frames too, not to fresh slabs while the
/// free frames sit lent to a pool nobody stages into.
#[test]
fn a_quiet_background_snapshot_reuses_the_free_frames() {
    let len = 16 << 20;
    let mut region = Region::builder(len).build().unwrap();
    free_a_region_of_frames(&mut region, 5);
    // Every page changed since the sync point, and no writer during the copy.
    free_a_region_of_frames_once(&mut region, 5 << 48 | 3 << 32);
    let before = region.store().stats();
    let (snap, report) = region.background_snapshot().unwrap().wait_report().unwrap();
    let after = region.store().stats();
    assert_eq!(report.staged, 0, "no writer");
    assert_eq!(
        after.unique_pages,
        before.unique_pages + (len / pagesnap::page_size()) as u64
    );
    assert!(
        after.reserved_bytes <= before.reserved_bytes + (2 << 20),
        "the store grew by {} MiB for a snapshot of a {} MiB region while it held \
         {} MiB of free frames",
        (after.reserved_bytes - before.reserved_bytes) >> 20,
        len >> 20,
        (before.reserved_bytes - before.stored_bytes) >> 20,
    );
    drop(snap);
}

/// Writes `generation | i` into word 1 of each page `i` (no snapshot).
fn free_a_region_of_frames_once(region: &mut Region, generation: u64) {
    let page = pagesnap::page_size();
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        p[8..16].copy_from_slice(&(generation | i as u64).to_ne_bytes());
    }
}

/// A child forked while a background snapshot stages into lent frames writes
/// the whole region (its own copy) and exits; the parent's writers stage into
/// the lent frames meanwhile, and the parent's snapshot is its instant, every
/// page in place.
#[test]
fn a_child_forked_during_lent_staging_leaves_the_parent_exact() {
    let _serial = common::child::serial();
    let page = pagesnap::page_size();
    for t in common::backends() {
        let len = 16 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        let generation = free_a_region_of_frames(&mut region, 6);
        let instant = region.as_slice().to_vec();
        let base = region.as_ptr() as usize;
        let bg = region.background_snapshot().unwrap();
        let outcome = common::child::run(std::time::Duration::from_secs(20), || {
            for at in (0..len).step_by(page) {
                common::write_u64(base, at + 8, 0xc41d);
            }
            0
        });
        // The parent's writers, from the top down (away from the copier).
        for at in (0..len).step_by(page).rev() {
            common::write_u64(base, at, 0xdad);
        }
        let (snap, report) = bg.wait_report().unwrap();
        let context = format!("{t}: {} staged", report.staged);
        assert_eq!(
            outcome,
            common::child::Outcome::Exited(0),
            "{context}: the child"
        );
        let bytes = snap.to_vec();
        assert_pages_in_place(&bytes, generation, &context);
        assert!(bytes == instant, "{context}: not the instant");
    }
}

/// Two regions of one store take background snapshots at once, each under
/// its own stampers: the store's free frames are lent to both (whoever asks
/// first gets them), given back and reused beside each other, and each
/// snapshot is its region's instant with every page in place.
#[test]
fn two_regions_of_one_store_lend_and_give_back_side_by_side() {
    let len = 8 << 20;
    let store = pagesnap::PageStore::new();
    let mut regions: Vec<Region> = (0..2)
        .map(|_| Region::builder(len).store(&store).build().unwrap())
        .collect();
    let generations: Vec<u64> = regions
        .iter_mut()
        .enumerate()
        .map(|(i, r)| free_a_region_of_frames(r, 7 + i as u64))
        .collect();
    std::thread::scope(|s| {
        for (i, (r, &generation)) in regions.iter().zip(&generations).enumerate() {
            s.spawn(move || {
                let staged = stamped_until_staged(r, generation, &format!("region {i}"));
                assert!(staged > 0, "region {i}: no writer ever staged a batch");
            });
        }
    });
    for (i, r) in regions.iter_mut().enumerate() {
        let snap = r.snapshot().unwrap();
        assert!(
            snap.to_vec() == r.as_mut_slice(),
            "region {i}: tracking missed writes"
        );
    }
}

/// Batches written through (which the copier stages into lent frames) beside
/// batches with one page written (which it copies itself, handing spare lent
/// slots back), while a writer rewrites every page from the top down: every
/// page of the snapshot is its page at the instant, and tracking stays exact.
#[test]
fn dense_and_sparse_batches_side_by_side_into_lent_frames() {
    let page = pagesnap::page_size();
    let per = BATCH / page;
    for t in common::backends() {
        let len = 8 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        let old = free_a_region_of_frames(&mut region, 5);
        let mut expect: Vec<u64> = (0..len / page).map(|i| old | i as u64).collect();
        for round in 0..4u64 {
            let new = 5 << 48 | (3 + round) << 32;
            for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
                // Even batches through, odd ones at one page only.
                if (i / per) % 2 == 0 || i % per == round as usize {
                    expect[i] = new | i as u64;
                    p[8..16].copy_from_slice(&expect[i].to_ne_bytes());
                }
            }
            let base = region.as_ptr() as usize;
            let bg = region.background_snapshot().unwrap();
            let writer = std::thread::spawn(move || {
                for p in (0..len / page).rev() {
                    common::write_u64(base, p * page + 16, round + 1);
                }
            });
            writer.join().unwrap();
            let (snap, report) = bg.wait_report().unwrap();
            let bytes = snap.to_vec();
            let context = format!("{t} round {round}: {} staged", report.staged);
            for (i, p) in bytes.chunks_exact(page).enumerate() {
                let word = |w: usize| u64::from_ne_bytes(p[8 * w..8 * w + 8].try_into().unwrap());
                assert_eq!(word(1), expect[i], "{context}: page {i} misplaced");
                assert_eq!(word(2), round, "{context}: page {i} not at the instant");
            }
            let now = region.snapshot().unwrap();
            assert!(
                now.to_vec() == region.as_mut_slice(),
                "{context}: tracking missed writes"
            );
        }
    }
}
