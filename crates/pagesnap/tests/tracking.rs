//! Tracking under threads, kernel-mode writes, and the behaviour of each backend.

mod common;

use common::rng::XorShift;
use pagesnap::{PageStore, Region, Tracking};
use std::io::{Read, Write};

/// Several threads write through `as_ptr()` between snapshots: no page is missed.
#[test]
fn threaded_writers_every_backend() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        for threads in [2usize, 4] {
            let pages = 512;
            let mut region = Region::builder(pages * page).tracking(t).build().unwrap();
            let mut model = vec![0u8; pages * page];
            let chunk = pages / threads;
            for round in 0..6u64 {
                let base = region.as_ptr() as usize;
                let handles: Vec<_> = (0..threads)
                    .map(|i| {
                        std::thread::spawn(move || {
                            // Each thread writes a pseudo-random subset of its own pages.
                            let mut written = Vec::new();
                            let mut rng = XorShift((round * 7919 + i as u64 * 104729) | 1);
                            for k in 0..chunk / 3 {
                                let x = rng.next_u64();
                                let p = i * chunk + (x as usize) % chunk;
                                let off = (x as usize >> 20) % page;
                                let v = (round as u8).wrapping_add(k as u8) | 1;
                                let addr = base + p * page + off;
                                // The region outlives the threads (joined below); the
                                // chunks are disjoint, so no two threads write one byte.
                                unsafe_write(addr as *mut u8, v);
                                written.push((p * page + off, v));
                            }
                            written
                        })
                    })
                    .collect();
                for h in handles {
                    for (at, v) in h.join().unwrap() {
                        model[at] = v;
                    }
                }
                let snap = region.snapshot().unwrap();
                assert!(
                    snap.to_vec() == model,
                    "{t}: {threads} writers, round {round}: a write was missed"
                );
            }
        }
    }
}

/// Writes one byte through a raw pointer: how other threads reach the region.
fn unsafe_write(ptr: *mut u8, v: u8) {
    // SAFETY: ptr is inside a live region (the caller joins its threads before the
    // region goes) and no other thread touches this byte concurrently.
    unsafe { ptr.write_volatile(v) };
}

/// `read(2)` from a pipe into the region: tracked by uffd-wp, soft-dirty and
/// compare; `EFAULT` under mprotect, as documented.
#[test]
fn kernel_mode_writes() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        let mut region = Region::builder(8 * page).tracking(t).build().unwrap();
        region.as_mut_slice()[0] = 1;
        let first = region.snapshot().unwrap();
        let (mut rx, mut tx) = std::io::pipe().unwrap();
        tx.write_all(&vec![0xAB; page]).unwrap();
        let target = &mut region.as_mut_slice()[3 * page..4 * page];
        let result = rx.read_exact(target);
        if t == Tracking::Mprotect {
            let err = result.expect_err("read(2) into a protected page must fail under mprotect");
            assert_eq!(err.raw_os_error(), Some(libc_efault()), "{err}");
            continue;
        }
        result.unwrap();
        let snap = region.snapshot().unwrap();
        let bytes = snap.to_vec();
        assert!(
            bytes[3 * page..4 * page].iter().all(|&b| b == 0xAB),
            "{t}: read(2) was not tracked"
        );
        region.restore(&first).unwrap();
        assert!(region.as_slice()[3 * page..4 * page]
            .iter()
            .all(|&b| b == 0));
    }
}

fn libc_efault() -> i32 {
    14 // EFAULT on every Linux architecture
}

/// Identical pages are stored once; zero pages cost nothing; dropping snapshots
/// returns the store to what the live ones hold.
#[test]
fn store_accounting() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        let store = PageStore::new();
        let mut a = Region::builder(64 * page)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        let mut b = Region::builder(64 * page)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        // Zero pages written explicitly cost nothing.
        a.as_mut_slice()[..8 * page].fill(0);
        let s0 = a.snapshot().unwrap();
        assert_eq!(store.stats().unique_pages, 0, "{t}");
        assert_eq!(store.stats().stored_bytes, 0, "{t}");
        // 10 pages with the same contents, in two regions: one frame.
        for p in 0..5 {
            a.as_mut_slice()[p * page..(p + 1) * page].fill(9);
            b.as_mut_slice()[(p + 10) * page..(p + 11) * page].fill(9);
        }
        let s1 = a.snapshot().unwrap();
        let s2 = b.snapshot().unwrap();
        assert_eq!(store.stats().unique_pages, 1, "{t}");
        assert_eq!(store.stats().stored_bytes, page as u64, "{t}");
        // A distinct page in a later snapshot.
        a.as_mut_slice()[40 * page] = 7;
        let s3 = a.snapshot().unwrap();
        assert_eq!(store.stats().unique_pages, 2, "{t}");
        // Region `a` moves its sync point back to s0; s3 is then held only by `s3`.
        a.restore(&s0).unwrap();
        drop(s3);
        assert_eq!(store.stats().unique_pages, 1, "{t}");
        drop((s1, s2));
        // Region b's sync point still holds the page.
        assert_eq!(store.stats().unique_pages, 1, "{t}");
        drop(b);
        assert_eq!(store.stats().unique_pages, 0, "{t}");
        drop((a, s0));
        assert_eq!(store.stats().table_nodes, 0, "{t}");
    }
}

/// Snapshots of one region restored into another of the same length (and store),
/// and into a region with another store.
#[test]
fn restore_into_other_regions() {
    let page = pagesnap::page_size();
    for t in common::backends() {
        let store = PageStore::new();
        let mut a = Region::builder(100 * page)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        common::fill(&mut a.as_mut_slice()[5 * page..40 * page], 3);
        let s = a.snapshot().unwrap();
        let mut b = Region::builder(100 * page)
            .tracking(t)
            .store(&store)
            .build()
            .unwrap();
        b.as_mut_slice()[99 * page] = 1;
        b.restore(&s).unwrap();
        assert!(b.as_slice() == a.as_slice());
        assert_eq!(b.snapshot().unwrap().digest(), s.digest());
        let mut c = Region::builder(100 * page).tracking(t).build().unwrap();
        c.restore(&s).unwrap();
        assert!(c.as_slice() == a.as_slice());
        let sc = c.snapshot().unwrap();
        assert_eq!(sc.digest(), s.digest());
        assert!(!sc.store().same_as(&store));
    }
}

/// Discards `n` pages from page `p` of `region` with `madvise(MADV_DONTNEED)`:
/// they read as zeros afterwards, though nothing wrote them.
fn discard(region: &Region, p: usize, n: usize) {
    let page = pagesnap::page_size();
    // SAFETY: the range lies inside the region's mapping; discarding anonymous
    // private pages only makes them read as zeros, which the region allows.
    let rc = unsafe {
        libc::madvise(
            region.as_ptr().add(p * page).cast(),
            n * page,
            libc::MADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
}

/// A program that hands memory back with `madvise(MADV_DONTNEED)` (an
/// allocator, a cache dropping entries) makes pages read as zeros without a
/// write. Each snapshot must see them: pages discarded and left alone,
/// discarded and then only read (the shared zero page is mapped), discarded
/// and written again, with synchronous and background snapshots alike.
#[test]
fn discarded_pages_every_backend() {
    let page = pagesnap::page_size();
    let pages = 256;
    for t in common::backends() {
        let mut region = Region::builder(pages * page).tracking(t).build().unwrap();
        let mut rng = XorShift(0x9e37_79b9 | 1);
        for round in 0..6u64 {
            for p in 0..pages {
                if rng.below(3) == 0 {
                    region.as_mut_slice()[p * page + rng.below(page)] = round as u8 + 1;
                }
            }
            let _before = region.snapshot().unwrap();
            let first = rng.below(pages - 16);
            discard(&region, first, 1 + rng.below(16));
            let read_back = rng.below(pages);
            discard(&region, read_back, 1);
            assert_eq!(
                region.as_slice()[read_back * page],
                0,
                "{t}: discarded page reads zero"
            );
            let rewritten = rng.below(pages);
            discard(&region, rewritten, 1);
            region.as_mut_slice()[rewritten * page + 7] = 0xa5;
            let snap = if round % 2 == 0 {
                region.snapshot().unwrap()
            } else {
                region.background_snapshot().unwrap().wait().unwrap()
            };
            assert!(
                snap.to_vec() == region.as_slice(),
                "{t}: round {round}: the snapshot after discards differs from the region"
            );
        }
        eprintln!("{t}: discarded pages seen in 6 rounds");
    }
}

/// Pages shared with a forked child (copy-on-write) are not this process's
/// alone, which a tracker reading pagemap entries cannot tell from the zero
/// page a discarded page maps when read: they may be reported while the child
/// lives, but a discard of one must still be seen, at the first snapshot after
/// it and at later ones.
#[test]
fn pages_shared_with_a_forked_child_then_discarded_are_seen() {
    let _serial = common::child::serial();
    let page = pagesnap::page_size();
    for t in common::backends() {
        let mut region = Region::builder(64 * page).tracking(t).build().unwrap();
        region.as_mut_slice().fill(3);
        region.snapshot().unwrap();
        // SAFETY: the child only sleeps and exits, touching no lock.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: async-signal-safe calls only, in the child.
            unsafe {
                libc::sleep(60);
                libc::_exit(0);
            }
        }
        for (round, at) in [5usize, 20, 40].into_iter().enumerate() {
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "{t}: round {round}, shared pages"
            );
            discard(&region, at, 3);
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "{t}: round {round}: a page discarded while a child shares it is lost"
            );
        }
        // SAFETY: pid is our child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        eprintln!("{t}: discards of pages shared with a child seen");
    }
}
