//! How many kernel mappings a store's frames take. Alone in its test binary:
//! it counts the whole process's mappings.

use pagesnap::{PageStore, Region};

/// Lines of `/proc/self/maps`: the process's mappings (VMAs).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// A store of 256 MiB of distinct pages lies in a handful of mappings (arenas
/// that grow), not one per 2 MiB slab: the kernel caps a process's mappings
/// (`vm.max_map_count`, 65,530 by default, which slabs of their own would
/// reach at 128 GiB), and the first fault in each new mapping takes the
/// process's mmap lock, stalling writers beside a background snapshot.
#[test]
fn a_stores_frames_lie_in_few_mappings() {
    let len = 256 << 20;
    let page = pagesnap::page_size();
    let store = PageStore::new();
    let mut region = Region::builder(len).store(&store).build().unwrap();
    for (i, p) in region.as_mut_slice().chunks_mut(page).enumerate() {
        p[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    let before = mappings();
    let snap = region.snapshot().unwrap();
    let after = mappings();
    let stats = store.stats();
    assert_eq!(stats.unique_pages, (len / page) as u64);
    let slabs = stats.reserved_bytes / (2 << 20);
    eprintln!("{slabs} slabs of frames; mappings {before} -> {after}");
    // Five arenas (16, 16, 32, 64 and 128 slabs), plus the copy threads'
    // stacks and malloc arenas; a mapping a slab took 135.
    assert!(
        after <= before + 16,
        "{slabs} slabs took {} new mappings",
        after.saturating_sub(before)
    );
    drop(snap);
}
