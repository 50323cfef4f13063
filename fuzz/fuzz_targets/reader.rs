//! The snapshot-file reader on arbitrary bytes: `inspect`, `verify`, `load` and
//! `load_delta` must return (Ok or a typed error) and never panic, hang or leak
//! pages into the store.
//!
//! Run with `cargo +nightly fuzz run reader` from the repository root. Seeds:
//! `pagesnap bench file --size 1MiB --dir fuzz/corpus/reader` leaves a full and a
//! delta file there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap::{PageStore, Region, Snapshot};
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("pagesnap-fuzz-{}", std::process::id())))
}

/// A parent for deltas: 16 pages, a few of them written.
fn parent() -> &'static Snapshot {
    static PARENT: OnceLock<Snapshot> = OnceLock::new();
    PARENT.get_or_init(|| {
        let ps = pagesnap::page_size();
        let mut r = Region::builder(16 * ps).build().expect("a small region");
        r.as_mut_slice()[..ps].fill(1);
        r.as_mut_slice()[3 * ps + 5] = 7;
        r.snapshot().expect("a snapshot")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write the input to a scratch file");
    // Every call costs in proportion to the file, whatever region it claims:
    // no input is skipped.
    let Ok(info) = pagesnap::file::inspect(path) else {
        return;
    };
    let _ = pagesnap::file::verify(path);
    let store = PageStore::new();
    if let Ok(s) = Snapshot::load(path, &store) {
        assert_eq!(s.digest(), info.digest, "a load returned another digest");
    }
    assert_eq!(store.stats().unique_pages, 0, "pages leaked into the store");
    let parent = parent();
    let before = parent.store().stats().unique_pages;
    drop(Snapshot::load_delta(path, parent));
    assert_eq!(parent.store().stats().unique_pages, before, "pages leaked");
});
