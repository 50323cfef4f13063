//! What a store's first background snapshot costs in memory. Alone in its
//! test binary: it measures the whole process's peak resident memory.

mod common;

use pagesnap::Region;

/// `VmHWM` or `VmRSS` of this process, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A store's first snapshot, while a writer rewrites the whole region in
/// order: the store has no free frames, so it lends new ones, and what the
/// writer stages is the snapshot's own copy. The process grows by about the
/// region (the snapshot), not the region plus a staging pool of its own
/// (which grew it by about 1.5 times the region).
///
/// The writer starts in the middle (the copier goes from the start) and wraps
/// round; since the copier may still get everywhere first, the case is tried
/// again, a few times, until the writer staged something.
#[test]
fn a_first_snapshot_stages_into_new_store_frames() {
    for attempt in 1..=8 {
        if staged_within_bounds(attempt) {
            return;
        }
    }
    panic!("the writer never staged in 8 attempts: nothing measured");
}

/// One attempt: false if the writer staged nothing.
fn staged_within_bounds(attempt: u32) -> bool {
    let len = 64 << 20;
    let page = pagesnap::page_size();
    let mut region = Region::builder(len).build().unwrap();
    // Distinct pages (past the first words, which the writer rewrites).
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        p[8..16].copy_from_slice(&(1 << 32 | i as u64).to_ne_bytes());
    }
    let before = region.as_slice().to_vec();
    let base = region.as_ptr() as usize;
    // Reset the peak to what the process holds now.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let rss = status_bytes("VmRSS:");
    let bg = region.background_snapshot().unwrap();
    let writer = std::thread::spawn(move || {
        let pages = len / page;
        for p in (pages / 2..pages).chain(0..pages / 2) {
            common::write_u64(base, p * page + 16, 2);
        }
    });
    writer.join().unwrap();
    let (snap, report) = bg.wait_report().unwrap();
    let grew = status_bytes("VmHWM:").saturating_sub(rss);
    assert!(
        snap.to_vec() == before,
        "the snapshot is not the region at its instant"
    );
    eprintln!(
        "attempt {attempt}: staged {} batches; grew {} MiB for a {} MiB snapshot",
        report.staged,
        grew >> 20,
        len >> 20
    );
    if report.staged == 0 {
        return false;
    }
    // The snapshot itself, its lists and tables: a few MiB past the region.
    assert!(
        grew <= (len + len / 8) as u64,
        "grew {} MiB for a {} MiB snapshot: staging memory of its own",
        grew >> 20,
        len >> 20
    );
    true
}
