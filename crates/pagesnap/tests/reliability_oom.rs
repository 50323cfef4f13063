//! Allocation failure: under an address-space limit a little above what the
//! process uses, snapshot, restore, background snapshot, file load and store
//! reservation fail with a typed error (no panic, no abort), and tracking stays
//! exact: once memory is back, the next snapshot equals the region's bytes.
//!
//! The limit is set in a child process (this test binary re-run with
//! `PAGESNAP_REL_OOM_CHILD` set), so the harness never runs short.

mod common;

use pagesnap::{Error, FileError, PageStore, Region, Snapshot, Tracking};
use std::process::Command;
use std::time::{Duration, Instant};

const LEN: usize = 64 << 20;
/// Room left above current use: far less than 64 MiB of pages.
const HEADROOM: u64 = 16 << 20;

/// Runs `f` with the address space capped at current use plus [`HEADROOM`].
fn limited<T>(f: impl FnOnce() -> T) -> T {
    common::address_space::with_headroom(HEADROOM, f)
}

/// Makes every page distinct and non-zero, cheaply: `seed` and the page index
/// in its first bytes.
fn stamp(buf: &mut [u8], seed: u64) {
    for (i, page) in buf.chunks_exact_mut(pagesnap::page_size()).enumerate() {
        page[..16].copy_from_slice(&[seed.to_ne_bytes(), (i as u64).to_ne_bytes()].concat());
    }
}

fn is_oom(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. })
        || matches!(
            e,
            Error::File {
                source: FileError::TooLarge { .. },
                ..
            }
        )
}

fn child(t: Tracking, dir: &std::path::Path) {
    let mut region = Region::builder(LEN).tracking(t).build().unwrap();
    stamp(region.as_mut_slice(), 1);

    // snapshot(): a typed error, nothing left in the store, then exact.
    let failed = limited(|| region.snapshot());
    let e = failed.expect_err("a snapshot of 64 MiB fits in 16 MiB?");
    assert!(is_oom(&e), "{t}: snapshot: {e}");
    eprintln!("{t}: snapshot under the limit: {e}");
    assert_eq!(region.store().stats().unique_pages, 0, "{t}: frames leaked");
    let first = region.snapshot().unwrap();
    assert!(
        first.to_vec() == region.as_slice(),
        "{t}: next snapshot is not exact"
    );

    // restore() of a snapshot of another store (a copy into this one).
    let mut other = Region::builder(LEN).tracking(t).build().unwrap();
    stamp(other.as_mut_slice(), 2);
    let theirs = other.snapshot().unwrap();
    drop(other);
    region.as_mut_slice()[..4096].fill(9);
    let before = region.as_slice().to_vec();
    let failed = limited(|| region.restore(&theirs));
    let e = failed.expect_err("a copy of 64 MiB fits in 16 MiB?");
    assert!(is_oom(&e), "{t}: restore: {e}");
    assert!(
        region.as_slice() == before,
        "{t}: a failed restore changed the region"
    );
    assert!(
        region.snapshot().unwrap().to_vec() == before,
        "{t}: not exact after restore"
    );
    region.restore(&theirs).unwrap();
    assert!(
        region.as_slice() == theirs.to_vec(),
        "{t}: restore after the limit"
    );
    region.restore(&first).unwrap();
    assert!(region.as_slice() == first.to_vec(), "{t}: restore back");

    // background snapshot (a new store: no free frames to reuse): a typed error
    // at start or from wait; writers go on.
    drop((first, theirs));
    let mut region = Region::builder(LEN).tracking(t).build().unwrap();
    stamp(region.as_mut_slice(), 3);
    let failed = limited(|| region.background_snapshot().and_then(|bg| bg.wait()));
    let e = failed.expect_err("a background snapshot of 64 MiB fits in 16 MiB?");
    assert!(
        is_oom(&e) || matches!(e, Error::Background { .. }),
        "{t}: background: {e}"
    );
    eprintln!("{t}: background under the limit: {e}");
    region.as_mut_slice()[LEN - 1] ^= 1; // not left protected
    assert!(
        region.snapshot().unwrap().to_vec() == region.as_slice(),
        "{t}: after background"
    );

    // file load into a fresh store.
    let path = dir.join(format!("{t}.snap"));
    let saved = region.snapshot().unwrap();
    saved.save(&path).unwrap();
    let failed = limited(|| Snapshot::load(&path, &PageStore::new()));
    let e = failed.expect_err("loading 64 MiB fits in 16 MiB?");
    assert!(is_oom(&e), "{t}: load: {e}");
    let back = Snapshot::load(&path, &PageStore::new()).unwrap();
    assert_eq!(back.digest(), saved.digest(), "{t}: load after the limit");
}

/// Reserving store memory past the limit: a typed error, what was reserved
/// before it ran out stays free for the store's next pages, and a snapshot
/// taken after holds exactly the region.
fn reserve_under_limit() {
    let store = PageStore::new();
    let failed = limited(|| store.reserve(LEN));
    let e = Error::from(failed.expect_err("reserving 64 MiB fits in 16 MiB?"));
    assert!(is_oom(&e), "reserve: {e}");
    let kept = store.free_bytes();
    assert!(
        kept > 0,
        "reserve kept nothing it mapped before running out"
    );
    assert_eq!(store.stats().stored_bytes, 0);
    let reserved = store.stats().reserved_bytes;
    let page = pagesnap::page_size();
    let len = (kept as usize / page).min(1024) * page;
    let mut region = Region::builder(len).store(&store).build().unwrap();
    stamp(region.as_mut_slice(), 7);
    let snap = region.snapshot().unwrap();
    assert!(snap.to_vec() == region.as_slice(), "snapshot after reserve");
    assert_eq!(
        store.stats().reserved_bytes,
        reserved,
        "pages that fit in the reserved memory mapped more"
    );
    eprintln!("reserve: kept {} KiB under the limit", kept >> 10);
}

#[test]
fn allocation_failure_is_an_error_and_tracking_stays_exact() {
    if std::env::var_os("PAGESNAP_REL_OOM_CHILD").is_some() {
        reserve_under_limit();
        let dir = std::env::temp_dir().join(format!("pagesnap-rel-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for t in common::backends() {
            let start = Instant::now();
            child(t, &dir);
            eprintln!("{t}: {:?}", start.elapsed());
        }
        let _ = std::fs::remove_dir_all(&dir);
        println!("child-ok");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "allocation_failure_is_an_error_and_tracking_stays_exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PAGESNAP_REL_OOM_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("child-ok"),
        "child failed ({}):\n{text}",
        out.status
    );
}
