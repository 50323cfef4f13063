//! Pages the program discards (`madvise(MADV_DONTNEED)`) while a background
//! snapshot runs. The converging modes copy what the region holds at
//! `finish`, so their snapshots equal the region then. A point-in-time
//! snapshot cannot copy a page that takes no fault: each page discarded
//! before its batch was copied holds its contents at the instant or zeros,
//! as documented, and nothing else; the next snapshot sees the discard.

mod common;

use common::generation::{fill_all, fill_page, pg};
use common::rng::XorShift;
use pagesnap::{PageStore, Region, Snapshot, Tracking};

const PAGES: usize = 4096;

/// Discards `n` pages from page `p` of the mapping at `base`.
fn discard(base: usize, p: usize, n: usize) {
    // SAFETY: the pages lie inside a region's mapping, which outlives the
    // call; no reference into them is alive (callers hold only the address),
    // and a discarded private anonymous page simply reads as zeros.
    let rc = unsafe { libc::madvise((base + p * pg()) as *mut _, n * pg(), libc::MADV_DONTNEED) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
}

/// A region of generation 1, past a sync point.
fn region(t: Tracking) -> Region {
    let mut region = Region::builder(PAGES * pg()).tracking(t).build().unwrap();
    fill_all(region.as_mut_slice(), 1);
    region.snapshot().unwrap();
    region
}

/// Discards a few runs of pages at `base` while a converging snapshot's rounds
/// run, rewriting one page of each (a user-mode write through the address,
/// as a program's own allocator would).
fn discard_while_rounds_run(base: usize, seed: u64) {
    let mut rng = XorShift(seed | 1);
    for _ in 0..8 {
        let p = rng.below(PAGES - 64);
        discard(base, p, 1 + rng.below(64));
        // SAFETY: inside the region; nothing else writes it meanwhile.
        unsafe { ((base + p * pg()) as *mut u64).write_volatile(0x5eed) };
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_converging_snapshot_sees_pages_discarded_during_its_rounds() {
    for t in common::backends() {
        let mut region = region(t);
        let base = region.as_ptr() as usize;
        let conv = region.converging_snapshot().unwrap();
        discard_while_rounds_run(base, 7);
        let snap = conv.finish().unwrap();
        assert!(
            snap.to_vec() == region.as_slice(),
            "{t}: the converging snapshot differs from the region at finish"
        );
    }
}

#[test]
fn a_converging_save_sees_pages_discarded_during_its_rounds() {
    let dir = std::env::temp_dir().join(format!("pagesnap-discards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in common::backends() {
        let mut region = region(t);
        let base = region.as_ptr() as usize;
        let file = dir.join(format!("{t}.snap"));
        let conv = region.converging_save(&file).unwrap();
        discard_while_rounds_run(base, 11);
        conv.finish().unwrap().wait().unwrap();
        let snap = Snapshot::load(&file, &PageStore::new()).unwrap();
        assert!(
            snap.to_vec() == region.as_slice(),
            "{t}: the converging save differs from the region at finish"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_page_discarded_during_a_point_in_time_snapshot_holds_its_instant_or_zeros() {
    for t in common::backends() {
        let mut region = region(t);
        let base = region.as_ptr() as usize;
        let bg = region.background_snapshot().unwrap();
        // The last quarter, at once: the copier has likely not reached it.
        let (first, n) = (PAGES - PAGES / 4, PAGES / 4);
        discard(base, first, n);
        let snap = bg.wait().unwrap();
        let (mut got, mut want) = (vec![0u8; pg()], vec![0u8; pg()]);
        let mut zeros = 0;
        for p in 0..PAGES {
            snap.read(p * pg(), &mut got).unwrap();
            fill_page(&mut want, 1, p);
            if got != want {
                assert!(
                    (first..first + n).contains(&p) && got.iter().all(|&b| b == 0),
                    "{t}: page {p} is neither its contents at the instant nor a discarded page's zeros"
                );
                zeros += 1;
            }
        }
        eprintln!("{t}: {zeros} of {n} pages discarded during the snapshot read as zeros in it");
        let next = region.snapshot().unwrap();
        assert!(
            next.to_vec() == region.as_slice(),
            "{t}: the snapshot after the discards differs from the region"
        );
    }
}
