//! Writes through `/proc/self/mem` (and `ptrace(PTRACE_POKEDATA)`, which
//! takes the same path: a debugger's `set var`, an injector) bypass page
//! protection: the kernel writes with `FOLL_FORCE`, and no fault reaches
//! pagesnap's handler. What each backend sees of them is documented (the
//! `Tracking` docs, the README's backend notes); these tests pin it down.

mod common;

use pagesnap::{Region, Tracking};
use std::io::{Seek, SeekFrom, Write};

const LEN: usize = 4 << 20;

/// Writes `bytes` at `addr` of this process through `/proc/self/mem`.
fn poke(addr: usize, bytes: &[u8]) {
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .unwrap();
    mem.seek(SeekFrom::Start(addr as u64)).unwrap();
    assert_eq!(mem.write(bytes).unwrap(), bytes.len());
}

/// uffd-wp, soft-dirty and compare tracking see such a write at the next
/// snapshot, as the converging mode does at `finish`; mprotect tracking does
/// not (the page stays read-only and its bit clear), as documented.
#[test]
fn proc_mem_writes_per_backend() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        let mut region = Region::builder(LEN).tracking(t).build().unwrap();
        region.as_mut_slice().fill(1);
        region.snapshot().unwrap();
        let at = 5 * page + 100;
        poke(region.as_ptr() as usize + at, &[9; 16]);
        assert_eq!(region.as_slice()[at], 9, "{t}: the write went in");
        let snap = region.snapshot().unwrap().to_vec();
        if t == Tracking::Mprotect {
            assert_eq!(
                snap[at], 1,
                "mprotect: documented as unseen; update the docs"
            );
            continue;
        }
        assert_eq!(snap[at..at + 16], [9; 16], "{t}: snapshot");

        let base = region.as_ptr() as usize;
        let conv = region.converging_snapshot().unwrap();
        poke(base + at, &[7; 16]);
        let done = conv.finish().unwrap().to_vec();
        assert_eq!(done[at..at + 16], [7; 16], "{t}: converging");
    }
}
