//! A process at its limit of mappings (`vm.max_map_count`, 65530 by
//! default). mprotect tracking makes each written page writable on its own,
//! cutting a region into a mapping per written run, so a region with
//! scattered writes reaches the limit and `mprotect` fails with `ENOMEM`.
//! Measured before: the writer died of SIGSEGV under a synchronous
//! snapshot's tracking, and faulted in a loop forever under a background
//! snapshot. Each case uses up the child's mappings until 200 are left, then
//! writes every other page of a 64 MiB region (8192 runs); every snapshot
//! must still equal the region, and the writer's `errno` must survive the
//! faults (the handler's failing system calls set it). A child forked at the
//! limit must be able to write its copy too. Each case runs in a forked
//! child.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::{Region, Tracking};
use std::time::Duration;

const LEN: usize = 64 << 20;
const BIG: usize = 256 << 20;

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Uses up this process's mappings until about `left` remain: a mapping cut
/// into alternating read-only and read-write pages.
fn exhaust(left: usize) {
    let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let page = pagesnap::page_size();
    let pages = 2 * max;
    // SAFETY: a fresh anonymous mapping, never unmapped (the child exits).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let mut i = 1;
    loop {
        let count = map_count();
        if count + 2 >= max - left || i >= pages {
            break;
        }
        for _ in 0..((max - left - count) / 2).max(1) {
            // SAFETY: a page of the mapping above, which nothing reads.
            let r =
                unsafe { libc::mprotect((p as usize + i * page) as *mut _, page, libc::PROT_READ) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            i += 2;
        }
    }
}

/// Writes `byte` at `addr` of a region, checking that the write leaves errno
/// as it was.
fn write_keeping_errno(addr: usize, byte: u8) {
    // SAFETY: this thread's errno; `addr` is a byte of a live region, written
    // the way the program writes it.
    unsafe {
        *libc::__errno_location() = 4242;
        std::ptr::write_volatile(addr as *mut u8, byte);
        assert_eq!(
            *libc::__errno_location(),
            4242,
            "errno changed by a write fault"
        );
    }
}

/// Writes `byte` into every other page of the region from `first`, checking
/// that each write leaves errno as it was.
fn write_every_other(base: usize, first: usize, byte: u8) {
    let page = pagesnap::page_size();
    for at in (first * page..LEN).step_by(2 * page) {
        write_keeping_errno(base + at, byte);
    }
}

#[test]
fn mprotect_tracking_at_the_mapping_limit() {
    let _serial = child::serial();
    let out = child::run(Duration::from_secs(120), || {
        let mut region = Region::builder(LEN)
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        region.as_mut_slice().fill(1);
        let first = region.snapshot().unwrap();
        exhaust(200);
        let base = region.as_ptr() as usize;
        write_every_other(base, 0, 2);
        let second = region.snapshot().unwrap();
        assert!(
            second.to_vec() == region.as_slice(),
            "snapshot after the limit"
        );
        write_every_other(base, 1, 3);
        let third = region.snapshot().unwrap();
        assert!(
            third.to_vec() == region.as_slice(),
            "snapshot of the other pages"
        );
        region.restore(&first).unwrap();
        assert!(region.as_slice().iter().all(|&b| b == 1), "restored");
        region.restore(&second).unwrap();
        assert!(region.as_slice() == second.to_vec(), "restored forward");
        0
    });
    assert_eq!(out, Outcome::Exited(0));
}

#[test]
fn background_snapshots_at_the_mapping_limit() {
    let _serial = child::serial();
    for t in common::backends() {
        let out = child::run(Duration::from_secs(120), || {
            // Larger, so that the copier is still at work when the writer
            // has lifted batches all over it.
            let mut region = Region::builder(BIG).tracking(t).build().unwrap();
            region.as_mut_slice().fill(1);
            region.snapshot().unwrap();
            exhaust(200);
            let base = region.as_ptr() as usize;
            let bg = region.background_snapshot().unwrap();
            // From the end, against the copier's order: the writes lift
            // batches the copier has not reached.
            let page = pagesnap::page_size();
            for at in (0..=BIG - 16 * page).rev().step_by(32 * page) {
                write_keeping_errno(base + at, 2);
            }
            let snap = bg.wait().unwrap();
            assert!(
                snap.to_vec().iter().all(|&b| b == 1),
                "{t}: the instant's bytes"
            );
            write_every_other(base, 1, 3);
            let after = region.snapshot().unwrap();
            assert!(
                after.to_vec() == region.as_slice(),
                "{t}: the next snapshot"
            );
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}

/// A child forked at the limit writes every other page of its copy, during
/// the parent's background snapshot or under mprotect tracking alone. Forked
/// by `fork()` (whose handler makes the child's regions writable at once)
/// and by the raw system call, which runs no such handler: then each write
/// faults, and lifting its page alone needs a mapping more. Measured before:
/// the child died of SIGSEGV on every backend.
#[test]
fn a_child_forked_at_the_mapping_limit_writes_its_copy() {
    let _serial = child::serial();
    let mut cases = vec![(Tracking::Mprotect, false)];
    cases.extend(common::backends().into_iter().map(|t| (t, true)));
    for (t, background) in cases {
        for raw in [false, true] {
            let out = child::run(Duration::from_secs(120), || {
                let mut region = Region::builder(BIG).tracking(t).build().unwrap();
                region.as_mut_slice().fill(1);
                let first = region.snapshot().unwrap();
                exhaust(200);
                let bg = background.then(|| region.background_snapshot().unwrap());
                let base = region.as_ptr() as usize;
                // SAFETY: the child below only writes its copy of the region
                // and `_exit`s: no lock, no allocation.
                let pid = unsafe {
                    if raw {
                        libc::syscall(libc::SYS_fork) as libc::pid_t
                    } else {
                        libc::fork()
                    }
                };
                if pid == 0 {
                    let page = pagesnap::page_size();
                    let mut at = BIG - page;
                    loop {
                        // SAFETY: a page of the child's copy of the region.
                        unsafe { std::ptr::write_volatile((base + at) as *mut u8, 2) };
                        match at.checked_sub(2 * page) {
                            Some(a) => at = a,
                            None => break,
                        }
                    }
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                // SAFETY: our child; a valid out pointer.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if let Some(bg) = bg {
                    let snap = bg.wait().unwrap();
                    assert!(snap.digest() == first.digest(), "{t}: the parent's instant");
                }
                let now = region.snapshot().unwrap();
                assert!(
                    now.digest() == first.digest(),
                    "{t}: the child's writes reached the parent"
                );
                child::exit_code(status)
            });
            assert_eq!(
                out,
                Outcome::Exited(0),
                "{t}, background {background}, raw {raw}"
            );
        }
    }
}

/// pagesnap's own threads (a large snapshot's and restore's workers) at the
/// limit: a thread whose stack still fits but whose signal stack does not
/// aborts the whole process (Rust's runtime maps it inside the new thread).
/// With a handful of mappings left they must not start, and the work is done
/// on the caller's thread.
#[test]
fn workers_do_not_start_at_the_mapping_limit() {
    let _serial = child::serial();
    for left in [1, 3, 5, 7] {
        let out = child::run(Duration::from_secs(120), || {
            let mut region = Region::builder(LEN)
                .tracking(Tracking::Compare)
                .build()
                .unwrap();
            let first = region.snapshot().unwrap();
            exhaust(left);
            region.as_mut_slice().fill(2);
            let full = region.snapshot().unwrap();
            assert!(full.to_vec() == region.as_slice(), "left {left}: snapshot");
            region.restore(&first).unwrap();
            assert!(region.as_slice().iter().all(|&b| b == 0), "left {left}");
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{left} mappings left");
    }
}
