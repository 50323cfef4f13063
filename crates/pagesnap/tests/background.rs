//! Background snapshots: point-in-time consistency while writer threads run.

mod common;

use pagesnap::{Region, Tracking};

/// The seed case: fill, start the snapshot, then writers overwrite everything
/// once. The snapshot holds only the fill value.
#[test]
fn seed_case_every_backend() {
    for t in common::backends() {
        for huge in [false, true] {
            let len = 16 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .huge_pages(huge)
                .build()
                .unwrap();
            region.as_mut_slice().fill(123);
            let bg = region.background_snapshot().unwrap();
            let base = region.as_ptr() as usize;
            let writers: Vec<_> = (0..2usize)
                .map(|tid| {
                    std::thread::spawn(move || {
                        let chunk = len / 2;
                        for at in (tid * chunk..(tid + 1) * chunk).step_by(8) {
                            common::write_u64(base, at, tid as u64 + 1);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            let (snap, report) = bg.wait_report().unwrap();
            assert!(
                snap.to_vec().iter().all(|&b| b == 123),
                "{t} huge={huge}: snapshot is not the fill"
            );
            assert_eq!(report.pages as usize, len / pagesnap::page_size());
            // Tracking stayed exact: the next snapshot is the writers' work.
            let next = region.snapshot().unwrap();
            assert!(
                next.to_vec() == region.as_slice(),
                "{t}: tracking missed writes"
            );
            let first = u64::from_ne_bytes(next.to_vec()[..8].try_into().unwrap());
            assert_eq!(first, 1);
        }
    }
}

/// Writers stamp a round number into every page of their chunk, in order, again
/// and again. A consistent snapshot shows, for each writer, one boundary: pages
/// before it at round r+1, after it at round r.
#[test]
fn point_in_time_under_continuous_writers() {
    for t in common::backends() {
        for (len, huge) in [(8 << 20, false), (12 << 20, true), (3 << 20, false)] {
            let mut region = Region::builder(len)
                .tracking(t)
                .huge_pages(huge)
                .build()
                .unwrap();
            let mut stampers = common::Stampers::start(region.as_ptr() as usize, len, 3);
            let mut snaps = Vec::new();
            for _ in 0..12 {
                std::thread::sleep(std::time::Duration::from_millis(3));
                snaps.push(region.background_snapshot().and_then(|bg| bg.wait()));
            }
            stampers.stop();
            for snap in snaps {
                stampers.assert_consistent(&snap.unwrap().to_vec(), &format!("{t} len={len}"));
            }
            // After the writers stop, tracking is exact.
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "{t}: next snapshot after background runs differs"
            );
        }
    }
}

/// Only one background snapshot at a time per region; a dropped Background
/// releases everything.
#[test]
fn busy_and_drop() {
    let mut region = Region::builder(4 << 20)
        .tracking(Tracking::Compare)
        .build()
        .unwrap();
    region.as_mut_slice().fill(1);
    let bg = region.background_snapshot().unwrap();
    // Either still running (busy) or already done; never two at once.
    if !bg.is_finished() {
        if let Err(e) = region.background_snapshot() {
            assert!(matches!(e, pagesnap::Error::BackgroundBusy), "{e}");
        }
    }
    drop(bg);
    region.as_mut_slice()[0] = 2;
    let s = region.background_snapshot().unwrap().wait().unwrap();
    assert_eq!(s.to_vec()[0], 2);
}

/// A snapshot taken right after a background snapshot starts must not steal the
/// dirty pages the copier has yet to read (the copier peeks off the caller's
/// thread): both see the fill.
#[test]
fn snapshot_right_after_background_start() {
    for t in common::backends() {
        for _ in 0..20 {
            let mut region = Region::builder(6 << 20).tracking(t).build().unwrap();
            region.as_mut_slice().fill(123);
            let bg = region.background_snapshot().unwrap();
            let now = region.snapshot().unwrap();
            let snap = bg.wait().unwrap();
            assert!(
                snap.to_vec().iter().all(|&b| b == 123),
                "{t}: background lost pages"
            );
            assert_eq!(snap.digest(), now.digest(), "{t}");
            region.as_mut_slice()[5] = 1;
            assert!(
                region.snapshot().unwrap().to_vec() == region.as_slice(),
                "{t}"
            );
        }
    }
}
