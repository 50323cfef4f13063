//! Background snapshots used the way real programs call them: a second start
//! refused while one runs, reads into memory under a background snapshot, and
//! per-run reports.

mod common;

use pagesnap::{Error, Region, Snapshot};
use std::process::Command;
use std::time::{Duration, Instant};

/// A refused second `background_snapshot` / `background_save` must leave the
/// first one intact: a `snapshot()` right after must not collect (and clear)
/// the pages the first copier has yet to read.
#[test]
fn refused_second_start_keeps_the_first_exact() {
    let dir = std::env::temp_dir().join(format!("pagesnap-rel-bg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for t in common::backends() {
        for round in 0..40u64 {
            let mut region = Region::builder(6 << 20).tracking(t).build().unwrap();
            common::fill(region.as_mut_slice(), round + 1);
            let expected = region.as_slice().to_vec();
            let bg = region.background_snapshot().unwrap();
            let refused = if round % 2 == 0 {
                region.background_snapshot().map(drop)
            } else {
                region.background_save(dir.join("second.snap")).map(drop)
            };
            // The first may have finished already; then a second start is fine.
            if let Err(e) = refused {
                assert!(matches!(e, Error::BackgroundBusy), "{t}: {e}");
            }
            let now = region.snapshot().unwrap();
            let snap = bg.wait().unwrap();
            assert!(
                snap.to_vec() == expected,
                "{t} round {round}: the first background snapshot lost pages"
            );
            assert_eq!(snap.digest(), now.digest(), "{t} round {round}");
            region.as_mut_slice()[5] = 1;
            assert!(
                region.snapshot().unwrap().to_vec() == region.as_slice(),
                "{t} round {round}: tracking is no longer exact"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fault counts belong to one run: a quiet run after busy ones reports none.
#[test]
fn fault_counts_are_per_run() {
    let len = 32 << 20;
    for t in common::backends() {
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        let mut busy_faults = 0;
        for round in 0..3u8 {
            region.as_mut_slice().fill(round + 1);
            let bg = region.background_snapshot().unwrap();
            // The copier goes in address order: the last batch is still protected.
            region.as_mut_slice()[len - 1] = 9;
            let (_, report) = bg.wait_report().unwrap();
            busy_faults += report.faults;
            region.snapshot().unwrap();
        }
        let (_, quiet) = region.background_snapshot().unwrap().wait_report().unwrap();
        assert_eq!(quiet.faults, 0, "{t}: a run without writers reports faults");
        eprintln!("{t}: busy runs: {busy_faults} faults in all; quiet run: 0");
        if busy_faults == 0 {
            eprintln!("{t}: no busy run faulted (the copier was ahead): weak round");
        }
        let dir = std::env::temp_dir().join(format!("pagesnap-rel-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let save = region
            .background_save(dir.join("q.snap"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            save.faults, 0,
            "{t}: a quiet background save reports faults"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn child_role() -> Option<String> {
    std::env::var("PAGESNAP_REL_BG_CHILD").ok()
}

/// Runs test `test` of this binary in a child with the role set; kills it after
/// `limit` (a deadlock then fails the test instead of hanging the suite).
fn run_child(test: &str, limit: Duration) -> (bool, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("PAGESNAP_REL_BG_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            return (status.success() && text.contains("child-ok"), text);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            return (
                false,
                format!("timed out (deadlock?) after {limit:?}\n{text}"),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Snapshot::read` into memory of a region under a background snapshot: the
/// destination faults and waits for the copier, which needs the store; the
/// reader must not hold the store while it writes there.
#[test]
fn read_into_a_region_under_background_does_not_deadlock() {
    if child_role().is_none() {
        let (ok, text) = run_child(
            "read_into_a_region_under_background_does_not_deadlock",
            Duration::from_secs(60),
        );
        assert!(ok, "child failed:\n{text}");
        return;
    }
    for t in common::backends() {
        let len = 16 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        // Another snapshot, in the same store, to read from.
        let mut other = Region::builder(len).store(region.store()).build().unwrap();
        common::fill(other.as_mut_slice(), 7);
        let source: Snapshot = other.snapshot().unwrap();
        for round in 0..4u8 {
            region.as_mut_slice().fill(round + 1);
            let bg = region.background_snapshot().unwrap();
            // Into the last batches, which the copier reaches last.
            let at = len - (4 << 20);
            source.read(at, &mut region.as_mut_slice()[at..]).unwrap();
            let snap = bg.wait().unwrap();
            assert!(snap.to_vec().iter().all(|&b| b == round + 1), "{t}");
            assert!(region.as_slice()[at..] == source.to_vec()[at..], "{t}");
            assert!(
                region.snapshot().unwrap().to_vec() == region.as_slice(),
                "{t}"
            );
        }
    }
    println!("child-ok");
}
