//! A write fault must leave the writer's `errno` as it was. pagesnap's
//! handler makes system calls (mprotect, futex waits, nanosleep) that set
//! errno on failure or wake-up, and the interrupted code may be just about to
//! read it: `if (read(…) < 0) { state->calls++; if (errno == EINTR) … }`
//! with `state` in a region. Measured before: writers of a background
//! snapshot without staging memory, which wait for the copier, found errno
//! changed after their writes. Runs in a forked child with a deadline.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::Region;
use std::time::Duration;

const LEN: usize = 32 << 20;

/// Writes one byte into every page from the last to the first, each with
/// errno set just before; how many writes found errno changed.
fn writes_keeping_errno(base: usize, byte: u8) -> usize {
    let page = pagesnap::page_size();
    let mut changed = 0;
    for at in (0..LEN / page).rev().map(|i| base + i * page) {
        // SAFETY: this thread's errno; `at` is a page of a live region.
        unsafe {
            *libc::__errno_location() = 4242;
            std::ptr::write_volatile(at as *mut u8, byte);
            if *libc::__errno_location() != 4242 {
                changed += 1;
            }
        }
    }
    changed
}

#[test]
fn write_faults_leave_errno_alone() {
    let _serial = child::serial();
    for t in common::backends() {
        let out = child::run(Duration::from_secs(60), move || {
            // No staging memory: writers wait on the copier (futex).
            let mut region = Region::builder(LEN).tracking(t).staging(0).build().unwrap();
            region.as_mut_slice().fill(1);
            region.snapshot().unwrap();
            let base = region.as_ptr() as usize;
            let mut changed = 0;
            for round in 0..4u8 {
                // Two writers against the copier's order: they stage batches
                // and wait for those being copied.
                let bg = region.background_snapshot().unwrap();
                let other = std::thread::spawn(move || writes_keeping_errno(base, round + 2));
                changed += writes_keeping_errno(base, round + 2);
                changed += other.join().unwrap();
                bg.wait().unwrap();
                // And tracking's own faults (mprotect).
                region.snapshot().unwrap();
                changed += writes_keeping_errno(base, round + 10);
            }
            assert_eq!(changed, 0, "{t}: writes that found errno changed");
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}
