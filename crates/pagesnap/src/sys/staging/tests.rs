//! The staging pool, one writer at a time: staging, room, lent pages, retiring, warming.

use super::warm::WARM_AHEAD;
use super::*;
use crate::sys::page_size;

#[test]
fn a_writer_stages_a_pending_batch_once_and_the_copier_takes_it() {
    let page = page_size();
    let region = Mapping::anonymous(4 * page, Protection::ReadWrite, false).unwrap();
    region.copy_in(0, &vec![9u8; 2 * page]);
    region.protect(0, 2 * page, Protection::Read).unwrap();
    let pool = StagingPool::new(1, 2 * page, Protection::ReadWrite).unwrap();
    let batches = BatchStates::new(2, PENDING);
    let states = &batches.states;
    let at = (region.as_ptr() as usize, 4 * page, 2 * page);
    assert_eq!(pool.stage(&batches, 0, at, 0), Staged::Done);
    assert_eq!(states[0].load(Ordering::Acquire), STAGED);
    // Writable again: this write would fault into no handler otherwise.
    region.copy_in(0, &[1]);
    // The one slot is used: a second batch finds no room.
    assert_eq!(pool.stage(&batches, 1, at, 0), Staged::NoRoom);
    assert_eq!(states[1].load(Ordering::Acquire), PENDING);
    let filled = pool.take_filled().expect("a filled slot");
    assert_eq!(filled.batch(), 0);
    assert!(filled.bytes().unwrap()[..2 * page].iter().all(|&b| b == 9));
    assert!(pool.take_filled().is_none());
    drop(filled);
    // Freed: the staged batch is not claimed twice.
    assert_eq!(pool.stage(&batches, 0, at, 0), Staged::Taken);
    assert_eq!(pool.peak_bytes(), 2 * page);
}

/// `pages` pages, page `i` filled with `i + 1`, protected read-only as a
/// background snapshot's start leaves them.
fn numbered_region(pages: usize) -> Mapping {
    let page = page_size();
    let region = Mapping::anonymous(pages * page, Protection::ReadWrite, false).unwrap();
    for i in 0..pages {
        region.copy_in(i * page, &vec![i as u8 + 1; page]);
    }
    region.protect(0, pages * page, Protection::Read).unwrap();
    region
}

#[test]
fn a_writer_in_order_stages_the_waiting_batches_ahead_in_one_call() {
    let page = page_size();
    let region = numbered_region(8);
    let pool = StagingPool::new(8, page, Protection::ReadWrite).unwrap();
    let batches = BatchStates::new(8, PENDING);
    let states = &batches.states;
    // Batch 4 is with the copier: the run stops before it.
    states[4].store(COPYING, Ordering::Release);
    let at = (region.as_ptr() as usize, 8 * page, page);
    assert_eq!(pool.stage(&batches, 1, at, 5), Staged::Done);
    let got: Vec<u32> = states.iter().map(|s| s.load(Ordering::Acquire)).collect();
    assert_eq!(
        got,
        [PENDING, STAGED, STAGED, STAGED, COPYING, PENDING, PENDING, PENDING]
    );
    // All three writable again, and their copies are the bytes before.
    region.copy_in(page, &vec![0; 3 * page]);
    let mut seen = Vec::new();
    while let Some(slot) = pool.take_filled() {
        let b = slot.batch();
        assert!(slot.bytes().unwrap()[..page]
            .iter()
            .all(|&x| x == b as u8 + 1));
        seen.push(b);
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3]);
    // Batch 0 was not staged: still protected.
    assert_eq!(states[0].load(Ordering::Acquire), PENDING);
}

#[test]
fn warming_stays_a_window_ahead_of_the_slots_used() {
    let huge = crate::sys::mmap::HUGE_PAGE;
    let slot = 256 << 10;
    // 32 MiB of slots: warming stops 8 MiB ahead of use.
    let pool = StagingPool::new(128, slot, Protection::ReadWrite).unwrap();
    let mut steps = 0;
    while pool.warm_ahead() {
        steps += 1;
    }
    assert_eq!(steps, WARM_AHEAD / huge);
    // Writers take 40 slots (10 MiB): warming goes on to 18 MiB.
    let taken: Vec<usize> = (0..40).map(|_| pool.take().unwrap()).collect();
    while pool.warm_ahead() {
        steps += 1;
    }
    assert_eq!(steps, (40 * slot + WARM_AHEAD) / huge);
    for s in taken {
        pool.give(s);
    }
    // Never past the pool's end.
    let small = StagingPool::new(4, slot, Protection::ReadWrite).unwrap();
    let mut n = 0;
    while small.warm_ahead() {
        n += 1;
    }
    assert_eq!(n, 1);
}

/// Over lent pages a writer's copy lands page by page where the lender
/// said and a drained slot is never handed out again; then the pool's own
/// slots serve, reused; pages outside the lender's mappings are refused.
#[test]
fn a_pool_over_lent_pages_copies_into_them_once() {
    let page = page_size();
    let region = Mapping::anonymous(4 * page, Protection::ReadWrite, false).unwrap();
    region.copy_in(0, &vec![3u8; 2 * page]);
    region.copy_in(2 * page, &vec![4u8; 2 * page]);
    region.protect(0, 4 * page, Protection::Read).unwrap();
    let lender = Arc::new(Mapping::anonymous(8 * page, Protection::ReadWrite, false).unwrap());
    let at = |i: usize| lender.as_ptr() as usize + i * page;
    let rw = Protection::ReadWrite;
    // Two slots of two pages, scattered over the lender's memory.
    let pages = vec![at(5), at(1), at(7), at(2)];
    let outside = vec![at(5), at(1), at(7), at(8)];
    let keep = || vec![lender.clone()];
    assert!(StagingPool::lent(keep(), outside, page, 2 * page, 0, rw).is_err());
    let pool = StagingPool::lent(keep(), pages, page, 2 * page, 1, rw).unwrap();
    assert_eq!(pool.bytes(), 6 * page);
    let batches = BatchStates::new(2, PENDING);
    let span = (region.as_ptr() as usize, 4 * page, 2 * page);
    assert_eq!(pool.stage(&batches, 0, span, 0), Staged::Done);
    let filled = pool.take_filled().expect("a filled slot");
    assert_eq!((filled.batch(), filled.slot()), (0, 0));
    assert!(filled.bytes().is_none(), "lent pages stay with the lender");
    drop(filled);
    let byte = |i: usize| lender.range(i * page, page)[0];
    assert_eq!((byte(5), byte(1)), (3, 3));
    assert_eq!(pool.stage(&batches, 1, span, 0), Staged::Done);
    assert_eq!(pool.take_filled().map(|f| f.slot()), Some(1));
    assert_eq!((byte(7), byte(2)), (4, 4));
    // No lent slot is free any more: none to retire.
    assert_eq!(pool.retire_lent(0), None);
    // Both lent slots used once: the pool's own slot takes the next, and
    // is used again once drained.
    for round in 0..2 {
        let more = BatchStates::new(2, PENDING);
        assert_eq!(pool.stage(&more, round, span, 0), Staged::Done);
        let filled = pool.take_filled().expect("a filled own slot");
        assert_eq!(filled.slot(), 2);
        let bytes = filled.bytes().expect("own memory");
        assert!(bytes[..2 * page].iter().all(|&x| x == 3 + round as u8));
    }
}

/// Retiring takes free lent slots from the top, never an own slot, never
/// one a writer holds, and a retired slot is never handed out.
#[test]
fn retiring_takes_free_lent_slots_only() {
    let page = page_size();
    let lender = Arc::new(Mapping::anonymous(70 * page, Protection::ReadWrite, false).unwrap());
    let pages: Vec<usize> = (0..70)
        .map(|i| lender.as_ptr() as usize + i * page)
        .collect();
    let rw = Protection::ReadWrite;
    // 70 lent slots of one page (two words of the free mask), 2 own.
    let pool = StagingPool::lent(vec![lender.clone()], pages, page, page, 2, rw).unwrap();
    let writer = pool.take().unwrap();
    assert_eq!(writer, 0);
    // Only the slots past the 10 still needed.
    let retired: Vec<usize> = std::iter::from_fn(|| pool.retire_lent(10)).collect();
    assert_eq!(retired.len(), 59);
    let rest: Vec<usize> = std::iter::from_fn(|| pool.retire_lent(0)).collect();
    assert_eq!(rest.len(), 10);
    let retired = [retired, rest].concat();
    assert_eq!(retired[0], 69, "highest first");
    assert!(!retired.contains(&0), "a slot a writer holds");
    assert!(retired.iter().all(|&s| s < 70), "an own slot");
    // Writers now get the own slots only.
    assert_eq!(
        (pool.take(), pool.take(), pool.take()),
        (Some(70), Some(71), None)
    );
}

/// A single batch takes the lowest free lent slot, else the highest own one
/// (the small-page half); a run takes the lowest free slots (lent, then the
/// huge-page half). Only runs move the mark that warming follows.
#[test]
fn single_batches_take_lent_slots_then_the_top_and_runs_the_bottom() {
    let page = page_size();
    let rw = Protection::ReadWrite;
    let own = StagingPool::new(8, page, rw).unwrap();
    assert_eq!((own.take_single(), own.take_single()), (Some(7), Some(6)));
    assert_eq!(own.high.load(Ordering::Relaxed), 0);
    assert_eq!((own.take(), own.take()), (Some(0), Some(1)));
    assert_eq!(own.high.load(Ordering::Relaxed), 2);
    own.give(7);
    assert_eq!(own.take_single(), Some(7), "the top slot is reused first");
    // Singles go on downwards, runs upwards, until they meet.
    let rest: Vec<_> = std::iter::from_fn(|| own.take_single()).collect();
    assert_eq!(rest, [5, 4, 3, 2]);
    assert_eq!(own.take(), None);

    let lender = Arc::new(Mapping::anonymous(3 * page, rw, false).unwrap());
    let pages = (0..3)
        .map(|i| lender.as_ptr() as usize + i * page)
        .collect();
    let lent = StagingPool::lent(vec![lender.clone()], pages, page, page, 4, rw).unwrap();
    assert_eq!(lent.take_single(), Some(0), "lent first");
    assert_eq!(lent.take(), Some(1));
    assert_eq!(lent.take_single(), Some(2));
    assert_eq!(lent.take_single(), Some(6), "then the top of its own");
    assert_eq!(lent.take(), Some(3));
}

/// Lent slots that are new memory (never touched) go to runs first; a single
/// batch takes them only once the warm lent slots and the pool's own are all
/// in use, the highest first (a copier's stagings fill them from the bottom).
#[test]
fn single_batches_take_untouched_lent_slots_last() {
    let page = page_size();
    let rw = Protection::ReadWrite;
    let lender = Arc::new(Mapping::anonymous(4 * page, rw, false).unwrap());
    let pages = (0..4)
        .map(|i| lender.as_ptr() as usize + i * page)
        .collect();
    // Lent slots 0 and 1 warm, 2 and 3 untouched; own slots 4 and 5.
    let pool = StagingPool::lent(vec![lender.clone()], pages, page, page, 2, rw)
        .unwrap()
        .lent_untouched_from(2);
    assert_eq!(pool.take_single(), Some(0), "a warm lent slot first");
    assert_eq!(pool.take(), Some(1));
    assert_eq!(pool.take_single(), Some(5), "then the top of its own");
    assert_eq!(pool.take_single(), Some(4));
    assert_eq!(
        pool.take_single(),
        Some(3),
        "untouched lent slots last, from the top"
    );
    pool.give(5);
    assert_eq!(pool.take(), Some(5), "runs take their own before untouched");
    assert_eq!(pool.take(), Some(2), "then the lowest untouched");
    assert_eq!(pool.take_single(), None);
}

/// Staging one batch (nothing ahead) uses a single slot; staging a run, the
/// lowest ones.
#[test]
fn a_writer_stages_one_batch_at_the_top_and_a_run_at_the_bottom() {
    let page = page_size();
    let region = Mapping::anonymous(8 * page, Protection::ReadWrite, false).unwrap();
    region.protect(0, 8 * page, Protection::Read).unwrap();
    let pool = StagingPool::new(8, page, Protection::ReadWrite).unwrap();
    let batches = BatchStates::new(8, PENDING);
    let at = (region.as_ptr() as usize, 8 * page, page);
    assert_eq!(pool.stage(&batches, 5, at, 0), Staged::Done);
    assert_eq!(pool.stage(&batches, 1, at, 2), Staged::Done);
    let mut held: Vec<(usize, usize)> = std::iter::from_fn(|| pool.take_filled())
        .map(|f| (f.batch(), f.slot()))
        .collect();
    held.sort_unstable();
    assert_eq!(held, [(1, 0), (2, 1), (3, 2), (5, 7)]);
}

/// A copier stages into lent slots only, untouched ones first, a run in one
/// call; its copies wait while the pool's own filled slots are taken first.
#[test]
fn a_copier_stages_runs_into_lent_slots_only() {
    let page = page_size();
    let region = numbered_region(4);
    let lender = Arc::new(Mapping::anonymous(4 * page, Protection::ReadWrite, false).unwrap());
    let pages: Vec<usize> = (0..3)
        .map(|i| lender.as_ptr() as usize + (i + 1) * page)
        .collect();
    let rw = Protection::ReadWrite;
    // Three lent slots of one page (the last untouched), one of its own.
    let pool = StagingPool::lent(vec![lender.clone()], pages, page, page, 1, rw)
        .unwrap()
        .lent_untouched_from(2);
    assert!(pool.has_lent());
    let batches = BatchStates::new(4, PENDING);
    let states = &batches.states;
    // A writer's single batch: a warm lent slot (0).
    let at = (region.as_ptr() as usize, 4 * page, page);
    assert_eq!(pool.stage(&batches, 3, at, 0), Staged::Done);
    // The copier's run of two: the untouched slot (2), then the warm one (1).
    assert_eq!(pool.stage_lent(&batches, 0, (&region, page), 1), 2);
    let got: Vec<u32> = states.iter().map(|s| s.load(Ordering::Acquire)).collect();
    // Left COPIED to the handler: no writer takes them for a run's start.
    assert_eq!(got, [COPIED, COPIED, PENDING, STAGED]);
    // No lent slot left: the copier stages nothing, and leaves the batch.
    assert_eq!(pool.stage_lent(&batches, 2, (&region, page), 0), 0);
    assert_eq!(states[2].load(Ordering::Acquire), PENDING);
    // None of its own is filled; a writer's next batch goes there.
    assert!(pool.take_filled_own().is_none());
    assert_eq!(pool.stage(&batches, 2, at, 0), Staged::Done);
    let own = pool.take_filled_own().expect("the own slot");
    assert_eq!((own.slot(), own.batch()), (3, 2));
    drop(own);
    let mut lent: Vec<(usize, usize)> = std::iter::from_fn(|| pool.take_filled())
        .map(|f| (f.slot(), f.batch()))
        .collect();
    lent.sort_unstable();
    assert_eq!(lent, [(0, 3), (1, 1), (2, 0)]);
    let byte = |slot: usize| lender.range((slot + 1) * page, page)[0];
    assert_eq!((byte(0), byte(1), byte(2)), (4, 2, 1));
    // A region that is not the batches' is refused.
    let other = Mapping::anonymous(8 * page, Protection::ReadWrite, false).unwrap();
    assert_eq!(pool.stage_lent(&batches, 0, (&other, page), 0), 0);
}

/// The copier faults in untouched lent slots from the top down, a window
/// ahead of the lowest one single batches took, passing over slots in use;
/// single batches take those warm ones before the pool's own and before
/// untouched ones.
#[test]
fn the_copier_warms_untouched_lent_slots_from_the_top() {
    let page = page_size();
    let rw = Protection::ReadWrite;
    // Slots of a quarter of the window: four of them fill it.
    let slot = WARM_AHEAD / 4;
    let per = slot / page;
    let lent_slots = 8;
    let lender = Arc::new(Mapping::anonymous(lent_slots * slot, rw, false).unwrap());
    let pages = (0..lent_slots * per)
        .map(|i| lender.as_ptr() as usize + i * page)
        .collect();
    // Slot 0 warm (free frames), 1..8 untouched; one slot of its own.
    let pool = StagingPool::lent(vec![lender.clone()], pages, page, slot, 1, rw)
        .unwrap()
        .lent_untouched_from(1);
    // Slot 6 is in use (a copier's staging): passed over, not touched.
    assert_eq!(pool.pick(0, 1 << 6, false), Some(6));
    let resident = |s: usize| all_resident(&lender, s * slot, slot);
    assert!(!resident(7));
    let mut warmed = 0;
    while pool.warm_top() {
        warmed += 1;
    }
    // Down to four slots below the top (the window), slot 6 passed over.
    assert_eq!(warmed, 4);
    assert_eq!(pool.warm_top.load(Ordering::Relaxed), 4);
    assert!(resident(7) && resident(5) && resident(4));
    assert!(!resident(6) && !resident(3));
    // Singles: the warm free-frame slot first, then the warmed ones from
    // the top, then the pool's own, then untouched from the top.
    assert_eq!(pool.take_single(), Some(0));
    assert_eq!(pool.take_single(), Some(7));
    // Taking from the top moves the window down.
    assert!(pool.warm_top());
    assert_eq!(pool.warm_top.load(Ordering::Relaxed), 3);
    assert_eq!(pool.take_single(), Some(5));
    assert_eq!(pool.take_single(), Some(4));
    assert_eq!(pool.take_single(), Some(3));
    assert_eq!(pool.take_single(), Some(8), "then its own");
    assert_eq!(pool.take_single(), Some(2), "then untouched, from the top");
}

/// The copier faults in the pool's own slots by writing them, not with
/// `MADV_POPULATE_WRITE` (which holds the process's mmap lock): free slots
/// are touched and stay free, a slot in use is passed over.
#[test]
fn the_copier_warms_its_own_slots_by_touching_the_free_ones() {
    let slot = 512 << 10;
    let slots = 2 * WARM_AHEAD / slot;
    let pool = StagingPool::new(slots, slot, Protection::ReadWrite).unwrap();
    let own = pool.mem.own.as_ref().expect("own memory");
    let resident = |s: usize| all_resident(own, s * slot, slot);
    // The upper half is in small pages: a slot there faults alone. One of
    // them is in use (a writer copying into it).
    let busy = slots / 2 + 2;
    assert_eq!(pool.pick(busy / 64, 1 << (busy % 64), false), Some(busy));
    assert!((0..slots).all(|s| !resident(s)));
    // Writers take every slot but the busy one and give them back: the
    // window follows their use to the pool's end.
    let taken: Vec<usize> = std::iter::from_fn(|| pool.take()).collect();
    assert_eq!(taken.len(), slots - 1);
    for &s in &taken {
        pool.give(s);
    }
    while pool.warm_ahead() {}
    for s in 0..slots {
        assert_eq!(resident(s), s != busy, "slot {s}");
    }
    // Every slot warming touched is free again.
    let again: Vec<usize> = std::iter::from_fn(|| pool.take()).collect();
    assert_eq!(again.len(), slots - 1);
    assert!(!again.contains(&busy));
}

/// A copier's run takes its lent slots and faults them in before it claims
/// any batch, and gives back the slots of batches it could not claim.
#[test]
fn a_copiers_run_faults_its_slots_in_first_and_gives_back_the_unused() {
    let page = page_size();
    let region = numbered_region(4);
    let lender = Arc::new(Mapping::anonymous(4 * page, Protection::ReadWrite, false).unwrap());
    let pages: Vec<usize> = (0..4)
        .map(|i| lender.as_ptr() as usize + i * page)
        .collect();
    let rw = Protection::ReadWrite;
    // Four lent slots of one page, all new memory nobody touched.
    let pool = StagingPool::lent(vec![lender.clone()], pages, page, page, 0, rw)
        .unwrap()
        .lent_untouched_from(0);
    assert!(!all_resident(&lender, 0, 4 * page));
    let batches = BatchStates::new(4, PENDING);
    // A writer holds batch 1: the copier's run from 0 stops there.
    assert!(claim(&batches.states[1]));
    assert_eq!(pool.stage_lent(&batches, 0, (&region, page), 3), 1);
    // All four slots were faulted in, but only one is used.
    assert!(all_resident(&lender, 0, 4 * page));
    let states: Vec<u32> = batches
        .states
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .collect();
    assert_eq!(states, [COPIED, COPYING, PENDING, PENDING]);
    // The other three are free again: a run of two, then one more.
    assert_eq!(pool.stage_lent(&batches, 2, (&region, page), 1), 2);
    assert_eq!(
        pool.stage(
            &BatchStates::new(4, PENDING),
            0,
            (region.as_ptr() as usize, 4 * page, page),
            0
        ),
        Staged::Done
    );
    assert_eq!(std::iter::from_fn(|| pool.take_filled()).count(), 4);
}

/// Whether every page of `map`'s `[at, at + len)` is resident.
fn all_resident(map: &Mapping, at: usize, len: usize) -> bool {
    let mut v = vec![0u8; len.div_ceil(page_size())];
    assert!(at + len <= map.len());
    // SAFETY: the range lies inside the live mapping (checked above); mincore
    // only reads its pages' residency, a byte each into `v`.
    let r = unsafe {
        libc::mincore(
            map.as_ptr().add(at) as *mut libc::c_void,
            len,
            v.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    v.iter().all(|&b| b & 1 == 1)
}
