//! Lazy clones and remotes where programs do what they do to any memory: fork,
//! `MADV_DONTNEED`. Never silent zeros, never a thread spinning for ever.
#![cfg(feature = "remote")]

#[path = "common/child.rs"]
#[allow(dead_code)]
mod child;
mod remote_support;

use child::Outcome;
use pagesnap::page_size;
use pagesnap::remote::{LazyClone, Remote, RemoteError};
use remote_support::*;
use std::time::Duration;

const PAGES: usize = 512;

fn lazy(tag: &str) -> Option<(Dir, LazyClone, Vec<u8>)> {
    let d = Dir::new(tag);
    let remote = Remote::open(&d.url()).unwrap();
    let snap = snapshot(PAGES, 5, None);
    remote.push(&snap, "s").unwrap();
    let clone = remote.instantiate("s").unwrap();
    if let Some(why) = clone.fallback() {
        eprintln!("skipping: the clone is not lazy here ({why})");
        return None;
    }
    Some((d, clone, snap.to_vec()))
}

#[test]
fn a_forked_child_never_reads_unfetched_pages_as_zeros() {
    let Some((_d, clone, want)) = lazy("fork") else {
        return;
    };
    let ps = page_size();
    let at = 200 * ps + 9; // never touched: not fetched
    assert_ne!(want[at], 0, "the test needs a non-zero byte there");
    let _serial = child::serial();
    let out = child::run(Duration::from_secs(20), || {
        // SAFETY: a read of the clone's memory, which lives (in the parent).
        let got = unsafe { std::ptr::read_volatile(clone.as_slice().as_ptr().add(at)) };
        i32::from(got != want[at]) + 10
    });
    // The child has no such mapping: it dies, rather than read zeros (11).
    assert_eq!(out, Outcome::Signaled(libc::SIGSEGV), "the child read it");
    assert_eq!(clone.as_slice()[at], want[at], "the parent's clone");
}

#[test]
fn a_page_dropped_after_its_fetch_reads_as_the_snapshot_again() {
    let Some((d, clone, want)) = lazy("dontneed") else {
        return;
    };
    let ps = page_size();
    // In a thread with a deadline (the handler lives in this process, so not
    // in a child): before, the handler woke the fault for ever and the read
    // never returned.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let base = clone.as_slice().as_ptr();
        for p in [5, 6, 300] {
            assert_eq!(clone.as_slice()[p * ps + 1], want[p * ps + 1], "fetch {p}");
            // SAFETY: one whole page of the clone's live mapping; no Rust
            // reference into it is held across the call.
            let rc = unsafe {
                libc::madvise(
                    base.add(p * ps) as *mut libc::c_void,
                    ps,
                    libc::MADV_DONTNEED,
                )
            };
            assert_eq!(rc, 0);
        }
        let same = clone.as_slice() == want.as_slice();
        let _ = tx.send(same);
        drop((clone, d));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(same) => assert!(same, "the dropped pages do not read as the snapshot"),
        Err(e) => panic!("the read never returned ({e})"),
    }
}

#[test]
fn a_remote_used_in_a_forked_child_is_refused() {
    let d = Dir::new("forked-remote");
    let remote = Remote::open(&d.url()).unwrap();
    remote.push(&snapshot(8, 6, None), "s").unwrap();
    let _serial = child::serial();
    let out = child::run(Duration::from_secs(20), || {
        let listed = matches!(remote.list(), Err(RemoteError::ForkedChild { .. }));
        let info = matches!(remote.info("s"), Err(RemoteError::ForkedChild { .. }));
        i32::from(!(listed && info))
    });
    assert_eq!(out, Outcome::Exited(0), "(TimedOut: it waited for ever)");
    // The parent's remote still works.
    assert_eq!(remote.list().unwrap().len(), 1);
}

/// A pack deleted from the remote (by hand, by a lifecycle rule) while its
/// index stays: a later push uploads its pages again instead of writing a
/// manifest that names it, and the snapshot pulls.
#[test]
fn a_push_uploads_again_what_a_lost_pack_held() {
    let d = Dir::new("lost-pack");
    let first = snapshot(64, 7, None);
    Remote::open(&d.url()).unwrap().push(&first, "a").unwrap();
    let packs = d.0.join("packs");
    let lost: Vec<_> = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert!(!lost.is_empty());
    for p in &lost {
        std::fs::remove_file(p).unwrap();
    }
    // Another process (a fresh handle): the same pages under another name.
    let remote = Remote::open(&d.url()).unwrap();
    let report = remote.push(&first, "b").unwrap();
    assert_eq!(report.pages_uploaded, report.pages, "{report:?}");
    let pulled = remote.pull("b", &pagesnap::PageStore::new()).unwrap();
    assert_eq!(pulled.digest(), first.digest());
    // The first name's packs are back too.
    let again = remote.pull("a", &pagesnap::PageStore::new()).unwrap();
    assert_eq!(again.digest(), first.digest());
}

/// Stray objects in a remote: a junk pack index does not stop pushes (its
/// pages count as absent), and `list` names only snapshots `pull` can take.
#[test]
fn stray_objects_do_not_break_push_or_list() {
    let d = Dir::new("stray");
    let snap = snapshot(16, 9, None);
    Remote::open(&d.url()).unwrap().push(&snap, "good").unwrap();
    std::fs::write(d.0.join("packs").join("junk.idx"), b"not an index").unwrap();
    let nested = d.0.join("snapshots").join("sub");
    std::fs::create_dir_all(&nested).unwrap();
    let manifest = std::fs::read(d.0.join("snapshots").join("good.snap")).unwrap();
    std::fs::write(nested.join("nested.snap"), &manifest).unwrap();
    std::fs::write(d.0.join("snapshots").join("ü x.snap"), &manifest).unwrap();
    let remote = Remote::open(&d.url()).unwrap();
    remote.push(&snapshot(16, 10, None), "other").unwrap();
    let names: Vec<_> = remote.list().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["good", "other"]);
    for name in &names {
        remote.pull(name, &pagesnap::PageStore::new()).unwrap();
    }
}
