//! A heap restores only snapshots it took itself. Which heap took a snapshot is
//! never read from the snapshot's bytes: a clone of the heap's own snapshot, or a
//! fresh region, can hold any bytes — the heap's identity included — and a forged
//! allocator state or root pointer restored into a heap is undefined behaviour
//! the moment `with_mut` follows it.
//!
//! The forgeries run in a child process (this binary, re-executed for one test):
//! a heap that accepted one would crash there with SIGSEGV, which fails the
//! parent's assertion instead of killing the harness.

#[path = "common/reexec.rs"]
mod reexec;

use pagesnap::arena::Vec;
use pagesnap::{in_arena, Error, FullCopy, Heap, PageStore, Region, Snapshot};
use std::time::Duration;

in_arena! {
    struct Log<'a> {
        items: Vec<'a, u64>,
    }
}

const CHILD: &str = "PAGESNAP_HEAP_FORGERY_CHILD";
const LEN: usize = 1 << 20;

fn heap() -> Heap<Log<'static>> {
    let mut h = Heap::<Log<'static>>::new(LEN, |a| Log {
        items: Vec::new_in(a),
    })
    .unwrap();
    h.with_mut(|l| l.items.extend(0..1000u64));
    h
}

/// The heap's bytes with everything past the first 24 (where an older version
/// kept the heap's identity: magic, token, base) overwritten: the root pointer
/// and the allocator's state become garbage.
fn corrupt(bytes: &mut [u8]) {
    bytes[24..4096].fill(0xa5);
}

/// Restores `forged` and, if the heap took it, touches the root: a crash.
fn try_forgery(heap: &mut Heap<Log<'static>>, forged: &Snapshot, what: &str) {
    match heap.restore(forged) {
        Err(Error::ForeignSnapshot) => println!("{what}: refused"),
        Err(e) => panic!("{what}: refused with the wrong error: {e}"),
        Ok(()) => {
            println!("{what}: ACCEPTED; touching the root");
            heap.with_mut(|l| l.items.push(1));
            println!("{what}: survived the forged root");
            std::process::exit(3);
        }
    }
}

/// The child's part: both forgeries.
#[test]
fn forgery_child_role() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut h = heap();
    let own = h.snapshot().unwrap();

    // 1. A clone of the heap's own snapshot, written through as_mut_slice.
    let mut clone = own.instantiate().unwrap();
    corrupt(clone.as_mut_slice());
    let forged = clone.snapshot().unwrap();
    try_forgery(&mut h, &forged, "a written clone of the heap's snapshot");

    // 2. A fresh region (in the heap's own store) holding those bytes.
    let mut fresh = Region::builder(LEN).store(h.store()).build().unwrap();
    fresh.as_mut_slice().copy_from_slice(&own.to_vec());
    corrupt(fresh.as_mut_slice());
    let forged = fresh.snapshot().unwrap();
    try_forgery(&mut h, &forged, "a fresh region holding the heap's bytes");

    // The heap still works, and its own snapshot still restores.
    h.with_mut(|l| l.items.push(7));
    h.restore(&own).unwrap();
    assert_eq!(h.with(|l| l.items.len()), 1000);
    println!("child done");
}

#[test]
fn forged_snapshots_are_refused_not_restored() {
    let out = reexec::run_test("forgery_child_role", CHILD, Duration::from_secs(120));
    assert!(
        !out.timed_out && out.status.success() && out.output.contains("child done"),
        "the child failed ({:?}): {}",
        out.status,
        out.output
    );
    assert_eq!(out.output.matches(": refused").count(), 2, "{}", out.output);
}

/// Byte-identical snapshots that the heap did not hand out are refused too, as
/// are snapshots loaded from a file; the heap's own handles (and their clones)
/// are accepted, before and after restores.
#[test]
fn only_the_heaps_own_handles_restore() {
    let mut h = heap();
    let s1 = h.snapshot().unwrap();
    h.with_mut(|l| l.items.push(5));
    let s2 = h.snapshot().unwrap();

    // An exact copy, untouched: equal digest, still not the heap's.
    let mut clone = s1.instantiate().unwrap();
    let same = clone.snapshot().unwrap();
    assert_eq!(same.digest(), s1.digest());
    assert!(matches!(h.restore(&same), Err(Error::ForeignSnapshot)));

    let dir = std::env::temp_dir().join(format!("pagesnap-lineage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    s1.save(dir.join("s1")).unwrap();
    let loaded = Snapshot::load(dir.join("s1"), &PageStore::new()).unwrap();
    assert!(matches!(h.restore(&loaded), Err(Error::ForeignSnapshot)));
    let loaded_here = Snapshot::load(dir.join("s1"), h.store()).unwrap();
    assert!(matches!(
        h.restore(&loaded_here),
        Err(Error::ForeignSnapshot)
    ));
    std::fs::remove_dir_all(&dir).unwrap();

    // Another heap's snapshot and copy.
    let mut other = heap();
    let theirs = other.snapshot().unwrap();
    assert!(matches!(h.restore(&theirs), Err(Error::ForeignSnapshot)));
    let mut copy = FullCopy::new();
    other.copy_into(&mut copy);
    assert!(matches!(h.restore_copy(&copy), Err(Error::ForeignSnapshot)));
    assert!(matches!(
        h.restore_copy(&FullCopy::new()),
        Err(Error::LengthMismatch { .. } | Error::ForeignSnapshot)
    ));

    // The heap's own, in any order, through clones of the handles.
    let s1_again = s1.clone();
    h.restore(&s1_again).unwrap();
    assert_eq!(h.with(|l| l.items.len()), 1000);
    h.restore(&s2).unwrap();
    assert_eq!(h.with(|l| l.items.len()), 1001);
    let s3 = h.snapshot().unwrap(); // taken right after a restore
    h.restore(&s1).unwrap();
    h.restore(&s3).unwrap();
    assert_eq!(h.with(|l| *l.items.last().unwrap()), 5);
    h.copy_into(&mut copy);
    h.restore(&s1).unwrap();
    h.restore_copy(&copy).unwrap();
    assert_eq!(h.with(|l| l.items.len()), 1001);
}
