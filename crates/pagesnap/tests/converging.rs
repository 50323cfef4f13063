//! Converging snapshots: rounds under writers that never stop, a finish at a
//! quiescent point that equals the region exactly, nothing lost when the
//! rounds are abandoned, saves, and failure paths.

mod common;

use pagesnap::{Error, PageStore, Region, Snapshot, Tracking};
use std::time::{Duration, Instant};

/// Rounds end on their own (bounded) while stampers keep writing; after the
/// writers stop, `finish` gives exactly the region, which becomes the sync point.
#[test]
fn finish_at_quiescence_equals_region_under_endless_writers() {
    for t in common::backends() {
        for (len, huge) in [(8 << 20, false), (6 << 20, true)] {
            let mut region = Region::builder(len)
                .tracking(t)
                .huge_pages(huge)
                .build()
                .unwrap();
            common::fill(region.as_mut_slice(), 7);
            let base = region.as_ptr() as usize;
            for cycle in 0..3 {
                let mut stampers = common::Stampers::start(base, len, 2);
                let conv = region.converging_snapshot().unwrap();
                let started = Instant::now();
                let converged = conv.wait_converged_timeout(Duration::from_secs(60));
                let rounds = conv.rounds();
                stampers.stop(); // the quiescent point
                assert!(converged, "{t}: rounds never stopped ({rounds} rounds)");
                let snap = conv.finish().unwrap();
                let ctx = format!("{t} huge={huge} cycle {cycle}");
                assert!(
                    snap.to_vec() == region.as_slice(),
                    "{ctx}: finish != region"
                );
                assert!(
                    region.last_snapshot().ptr_eq(&snap),
                    "{ctx}: not the sync point"
                );
                eprintln!("{ctx}: {rounds} rounds in {:?}", started.elapsed());
            }
            // Tracking stayed exact: nothing written after finish is missed.
            region.as_mut_slice()[len - 1] ^= 0xff;
            let next = region.snapshot().unwrap();
            assert!(
                next.to_vec() == region.as_slice(),
                "{t}: tracking missed writes"
            );
        }
    }
}

/// `finish` right away (the rounds cut short) is still exact.
#[test]
fn finish_before_rounds_end_is_exact() {
    for t in common::backends() {
        let len = 16 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 3);
        let before = region.snapshot().unwrap();
        let base = region.as_ptr() as usize;
        let mut stampers = common::Stampers::start(base, len, 2);
        stampers.wait_started(base);
        let conv = region.converging_snapshot().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        stampers.stop();
        let snap = conv.finish().unwrap();
        assert!(
            snap.to_vec() == region.as_slice(),
            "{t}: early finish != region"
        );
        assert_ne!(snap.digest(), before.digest());
    }
}

/// Dropping a converging snapshot without finish, while writers run: the
/// pages its rounds collected go back to the region; the next snapshot is exact.
#[test]
fn abandoned_rounds_lose_no_write() {
    for t in common::backends() {
        let len = 8 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 11);
        region.snapshot().unwrap();
        let base = region.as_ptr() as usize;
        let mut stampers = common::Stampers::start(base, len, 2);
        let conv = region.converging_snapshot().unwrap();
        conv.wait_converged_timeout(Duration::from_secs(60));
        drop(conv);
        stampers.stop();
        let snap = region.snapshot().unwrap();
        assert!(snap.to_vec() == region.as_slice(), "{t}: a write was lost");
        // A point-in-time snapshot after abandoned rounds sees their pages too.
        common::fill(region.as_mut_slice(), 12);
        let conv = region.converging_snapshot().unwrap();
        conv.wait_converged();
        drop(conv);
        let bg = region.background_snapshot().unwrap().wait().unwrap();
        assert!(
            bg.to_vec() == region.as_slice(),
            "{t}: background missed carried pages"
        );
        let snap = region.snapshot().unwrap();
        // And a converging snapshot from there.
        let again = region.converging_snapshot().unwrap().finish().unwrap();
        assert_eq!(again.digest(), snap.digest());
    }
}

/// A second background start while converging is refused, and the flag is
/// released afterwards.
#[test]
fn busy_while_converging() {
    let mut region = Region::builder(4 << 20).build().unwrap();
    let conv = region.converging_snapshot().unwrap();
    conv.wait_converged();
    conv.finish().unwrap();
    let bg = region.background_snapshot().unwrap();
    bg.wait().unwrap();
    region.converging_snapshot().unwrap().finish().unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pagesnap-conv-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The save variant writes the finish instant's snapshot; the sync point stays
/// and tracking still covers every write since it.
#[test]
fn converging_save_writes_the_finish_instant() {
    let dir = temp_dir("save");
    for t in common::backends() {
        let len = 8 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 5);
        let sync = region.snapshot().unwrap();
        let stored = region.store().stats().unique_pages;
        let base = region.as_ptr() as usize;
        let mut stampers = common::Stampers::start(base, len, 2);
        let path = dir.join(format!("{t}.snap"));
        let conv = region.converging_save(&path).unwrap();
        conv.wait_converged_timeout(Duration::from_secs(60));
        stampers.stop();
        let saving = conv.finish().unwrap();
        let expect = region.as_slice().to_vec();
        // The rounds wrote into the file, not the store.
        assert_eq!(
            region.store().stats().unique_pages,
            stored,
            "{t}: the save's pages entered the store"
        );
        // Writers may go on while the file is written.
        region.as_mut_slice()[0] ^= 1;
        let report = saving.wait().unwrap();
        let back = Snapshot::load(&path, &PageStore::new()).unwrap();
        assert_eq!(back.digest(), report.digest);
        assert!(back.to_vec() == expect, "{t}: file != region at finish");
        assert!(
            region.last_snapshot().ptr_eq(&sync),
            "{t}: sync point moved"
        );
        let next = region.snapshot().unwrap();
        assert!(
            next.to_vec() == region.as_slice(),
            "{t}: tracking missed writes"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A save finished at once: the rounds are cut short, so the remainder is
/// larger than the buffer `finish` holds in memory and part of it goes to the
/// file in the pause; the file still holds exactly the region.
#[test]
fn converging_save_finished_at_once_with_a_large_remainder() {
    let dir = temp_dir("large");
    for t in common::backends() {
        let len = 48 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 21);
        let path = dir.join(format!("{t}.snap"));
        let report = region
            .converging_save(&path)
            .unwrap()
            .finish()
            .unwrap()
            .wait()
            .unwrap();
        let back = Snapshot::load(&path, &PageStore::new()).unwrap();
        assert_eq!(back.digest(), report.digest);
        assert!(back.to_vec() == region.as_slice(), "{t}: file != region");
        assert_eq!(back.digest(), region.snapshot().unwrap().digest());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A converging save dropped before `finish` (the program gave up, or
/// panicked) leaves nothing at the target nor beside it, and loses no write.
#[test]
fn abandoned_converging_save_leaves_no_file() {
    let dir = temp_dir("abandon");
    for t in common::backends() {
        let len = 8 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 9);
        let path = dir.join(format!("{t}.snap"));
        let base = region.as_ptr() as usize;
        let mut stampers = common::Stampers::start(base, len, 1);
        let conv = region.converging_save(&path).unwrap();
        conv.wait_converged_timeout(Duration::from_secs(60));
        if t != Tracking::Compare {
            assert!(conv.progress().copied > 0, "{t}: no round copied");
        }
        drop(conv);
        stampers.stop();
        assert!(!path.exists(), "{t}: a file at the target");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "{t}: a temporary file was left");
        let snap = region.snapshot().unwrap();
        assert!(snap.to_vec() == region.as_slice(), "{t}: a write was lost");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An unwritable target fails before any round; the region is free again.
#[test]
fn converging_save_to_unwritable_target_fails_cleanly() {
    let mut region = Region::builder(4 << 20).build().unwrap();
    let err = region
        .converging_save("/proc/pagesnap-no/such.snap")
        .err()
        .expect("an unwritable target fails");
    assert!(matches!(err, Error::File { .. }), "{err}");
    region.as_mut_slice()[0] = 1;
    let snap = region.converging_snapshot().unwrap().finish().unwrap();
    assert_eq!(snap.to_vec()[0], 1);
}

/// Compare and soft-dirty decide what to copy at finish; check a few edits.
#[test]
fn finish_copies_only_what_changed() {
    for t in common::backends() {
        let mut region = Region::builder(2 << 20).tracking(t).build().unwrap();
        region.as_mut_slice()[100] = 1;
        let conv = region.converging_snapshot().unwrap();
        conv.wait_converged();
        let p = conv.progress();
        assert!(p.converged);
        if t != Tracking::Compare {
            assert!(p.rounds >= 1, "{t}: no round ran");
        }
        let snap = conv.finish().unwrap();
        assert_eq!(snap.to_vec()[100], 1);
        assert_eq!(snap.nonzero_pages(), 1);
    }
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_THREAD is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// A converging save's `finish` copies a remainder the size of the rounds into
/// memory the round thread faulted in beforehand: fresh memory faulted in
/// inside the pause costs more than the copy (four times on these VMs).
#[test]
fn converging_save_finish_copies_into_memory_faulted_in_before() {
    let dir = temp_dir("warm");
    let len = 4 << 20;
    let page = pagesnap::page_size();
    let pages = len / page;
    if !common::backends().contains(&Tracking::UffdWp) {
        eprintln!("skipped: no userfaultfd write-protect tracking here");
        return;
    }
    let mut region = Region::builder(len)
        .tracking(Tracking::UffdWp)
        .build()
        .unwrap();
    common::fill(region.as_mut_slice(), 4);
    region.snapshot().unwrap();
    let base = region.as_ptr() as usize;
    let path = dir.join("warm.snap");
    // A writer going through every page again and again (under uffd-wp its
    // writes never fault): the third round sees the whole region, unless the
    // writer was not scheduled then, so try until it did.
    let mut checked = false;
    for attempt in 0..20 {
        let mut stampers = common::Stampers::start(base, len, 1);
        std::thread::sleep(Duration::from_millis(20));
        let conv = region.converging_save(&path).unwrap();
        assert!(conv.wait_converged_timeout(Duration::from_secs(60)));
        stampers.stop();
        let p = conv.progress();
        // Rounds 0 and 1 copy at most every page; round 2 copied the rest.
        let sized = p.rounds == 3 && p.copied >= (2 * pages + pages * 7 / 8) as u64;
        // Written again after the rounds: the remainder is every page.
        (0..pages).for_each(|p| common::write_u64(base, p * page, 7));
        let before = thread_minor_faults();
        let saving = conv.finish().unwrap();
        let faults = thread_minor_faults() - before;
        let report = saving.wait().unwrap();
        let back = Snapshot::load(&path, &PageStore::new()).unwrap();
        assert_eq!(back.digest(), report.digest);
        assert!(back.to_vec() == region.as_slice(), "file != region");
        eprintln!("attempt {attempt}: {p:?}, {faults} minor faults in finish");
        if sized {
            assert!(
                faults < pages as i64 / 8,
                "finish faulted in {faults} pages (a remainder of {pages})"
            );
            checked = true;
            break;
        }
    }
    assert!(
        checked,
        "in 20 tries the writer never wrote through a round"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
