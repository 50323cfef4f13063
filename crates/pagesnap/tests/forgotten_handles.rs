//! Handles the program forgets: `std::mem::forget` is safe Rust, so a
//! converging or background handle whose `Drop` never runs must leave the
//! region exact and usable — no hang, no snapshot missing a write, no
//! background snapshot refused for ever. Each case runs in a forked child with
//! a deadline (a hang is a failure).
mod common;

use common::child;
use pagesnap::{PageStore, Region, Snapshot, Tracking};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LEN: usize = 8 << 20;
const PAGE: usize = 4096;

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pagesnap-forgotten-{tag}-{}", std::process::id()))
}

/// Files in the temporary directory whose names contain the target's name.
fn files_named_like(target: &Path) -> Vec<String> {
    let name = target.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(&name))
        .collect()
}

/// A converging run of `region` (store or file), forgotten after its rounds
/// took every written page from the tracker.
fn forget_converging(region: &mut Region, save: Option<&Path>) {
    let region_tracking = region.tracking();
    match save {
        Some(path) => {
            let conv = region.converging_save(path).unwrap();
            conv.wait_converged();
            assert_copied(conv.progress().copied, region_tracking);
            std::mem::forget(conv);
        }
        None => {
            let conv = region.converging_snapshot().unwrap();
            conv.wait_converged();
            assert_copied(conv.progress().copied, region_tracking);
            std::mem::forget(conv);
        }
    }
}

/// The rounds took pages from the tracker (compare tracking runs no rounds).
fn assert_copied(copied: u64, t: Tracking) {
    assert!(
        copied > 0 || t == Tracking::Compare,
        "{t}: the rounds copied nothing"
    );
}

fn assert_equal(snap: &Snapshot, region: &Region, what: &str) {
    let got = snap.to_vec();
    let differing = got
        .chunks(PAGE)
        .zip(region.as_slice().chunks(PAGE))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "{what}: pages differing from the region");
}

#[test]
fn a_forgotten_converging_run_leaves_the_region_exact_and_usable() {
    for t in common::backends() {
        for save in [false, true] {
            child::assert_clean(&format!("{t} save={save}"), 60, || {
                let target = scratch(&format!("{t}-{save}"));
                let mut region = Region::builder(LEN).tracking(t).build().unwrap();
                common::fill(region.as_mut_slice(), 1);
                let first = region.snapshot().unwrap();
                common::fill(region.as_mut_slice(), 2);
                forget_converging(&mut region, save.then_some(target.as_path()));
                // Writes after the forget, to some pages only.
                for p in (0..LEN / PAGE).step_by(5) {
                    region.as_mut_slice()[p * PAGE + 1] ^= 0xff;
                }
                // The next snapshot sees what the forgotten rounds took.
                let snap = region.snapshot().unwrap();
                assert_equal(&snap, &region, &format!("{t}: snapshot after forget"));
                // The temporary file of the forgotten save is gone with it.
                assert!(
                    files_named_like(&target).is_empty(),
                    "{t}: left behind: {:?}",
                    files_named_like(&target)
                );
                // Background snapshots are allowed again, and exact.
                region.as_mut_slice()[7] ^= 1;
                let bg = region.background_snapshot().unwrap().wait().unwrap();
                assert_equal(&bg, &region, &format!("{t}: background after forget"));
                // Restore and verify return (they waited for ever before).
                region.restore(&first).unwrap();
                assert_eq!(region.as_slice(), &first.to_vec()[..], "{t}: restore");
                assert_eq!(region.verify().unwrap().untracked, 0, "{t}: verify");
                // Forgotten twice in a row, then a converging run finished.
                common::fill(region.as_mut_slice(), 3);
                forget_converging(&mut region, None);
                forget_converging(&mut region, None);
                region.as_mut_slice()[PAGE * 3] ^= 1;
                let conv = region.converging_snapshot().unwrap();
                conv.wait_converged();
                let done = conv.finish().unwrap();
                assert_equal(&done, &region, &format!("{t}: converging after forget"));
                if t != Tracking::Compare {
                    let v = region.verify().unwrap();
                    assert_eq!((v.changed, v.untracked), (0, 0), "{t}: in step");
                }
            });
        }
    }
}

#[test]
fn a_forgotten_converging_run_before_a_background_snapshot() {
    // The first call after the forget is the `&self` one.
    for t in common::backends() {
        child::assert_clean(&format!("{t}"), 60, || {
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            common::fill(region.as_mut_slice(), 4);
            region.snapshot().unwrap();
            common::fill(region.as_mut_slice(), 5);
            forget_converging(&mut region, None);
            let bg = region.background_snapshot().unwrap().wait().unwrap();
            assert_equal(&bg, &region, &format!("{t}: background"));
            let snap = region.snapshot().unwrap();
            assert_equal(&snap, &region, &format!("{t}: snapshot"));
        });
    }
}

#[test]
fn a_clone_resets_fully_after_a_forgotten_converging_run() {
    for t in common::backends() {
        child::assert_clean(&format!("{t}"), 60, || {
            let store = PageStore::new();
            let mut parent = Region::builder(LEN)
                .tracking(t)
                .store(&store)
                .build()
                .unwrap();
            common::fill(parent.as_mut_slice(), 6);
            let origin = parent.snapshot().unwrap();
            let mut clone = origin
                .instantiate_with(Region::builder(LEN).tracking(t))
                .unwrap();
            common::fill(clone.as_mut_slice(), 7);
            forget_converging(&mut clone, None);
            clone.reset().unwrap();
            assert_eq!(clone.as_slice(), &origin.to_vec()[..], "{t}: reset");
        });
    }
}

#[test]
fn dropping_a_region_stops_its_forgotten_rounds() {
    for t in common::backends() {
        child::assert_clean(&format!("{t}"), 60, || {
            let store = PageStore::new();
            let mut region = Region::builder(LEN)
                .tracking(t)
                .store(&store)
                .build()
                .unwrap();
            common::fill(region.as_mut_slice(), 8);
            forget_converging(&mut region, None);
            drop(region);
            // The round thread is gone with what it held of the store.
            assert_eq!(store.stats().unique_pages, 0, "{t}: pages still held");
        });
    }
}

#[test]
fn forgotten_background_handles_free_the_region_when_their_copy_ends() {
    for t in common::backends() {
        for save in [false, true] {
            child::assert_clean(&format!("{t} save={save}"), 60, || {
                let target = scratch(&format!("bg-{t}-{save}"));
                let mut region = Region::builder(LEN).tracking(t).build().unwrap();
                common::fill(region.as_mut_slice(), 9);
                region.snapshot().unwrap();
                if save {
                    std::mem::forget(region.background_save(&target).unwrap());
                } else {
                    std::mem::forget(region.background_snapshot().unwrap());
                }
                common::fill(region.as_mut_slice(), 10);
                let again = loop {
                    match region.background_snapshot() {
                        Ok(bg) => break bg,
                        Err(pagesnap::Error::BackgroundBusy) => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(e) => panic!("{t}: {e}"),
                    }
                };
                let snap = again.wait().unwrap();
                assert_equal(&snap, &region, &format!("{t}: second background"));
                let snap = region.snapshot().unwrap();
                assert_equal(&snap, &region, &format!("{t}: snapshot"));
                std::fs::remove_file(&target).ok();
            });
        }
    }
}
