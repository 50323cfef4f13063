//! A writer thread in asynchronous cancel mode (a C compute thread,
//! `PTHREAD_CANCEL_ASYNCHRONOUS`), cancelled with `pthread_cancel` while it
//! writes a region, around point-in-time snapshots. The cancel signal used to
//! arrive inside pagesnap's SIGSEGV handler (glibc's `sigfillset` leaves its
//! internal signals out of the handler's mask), and the thread unwound out of
//! it with a lift counted: the next `background_snapshot()` waited for ever
//! (3 runs of 3 under mprotect tracking), or the forced unwind aborted the
//! process. The handler now blocks cancellation until it returns; every
//! round must start and finish, and tracking stay exact. Each backend runs
//! in a forked child with a deadline.
#![allow(unsafe_code)]
mod common;

use pagesnap::{Region, Tracking};
use std::time::Duration;

const PAGE: usize = 4096;

extern "C" {
    fn pthread_setcanceltype(t: libc::c_int, old: *mut libc::c_int) -> libc::c_int;
}
const PTHREAD_CANCEL_ASYNCHRONOUS: libc::c_int = 1;

struct Arg {
    base: usize,
    len: usize,
}

/// `C-unwind`: cancellation unwinds the thread through this frame, which a
/// plain `extern "C"` Rust function turns into an abort.
extern "C-unwind" fn writer(p: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: p is the leaked Arg of the test, alive for the process.
    let a = unsafe { &*(p as *const Arg) };
    // SAFETY: plain libc call on the current thread.
    unsafe { pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, std::ptr::null_mut()) };
    let mut v = 1u64;
    loop {
        let mut off = 0;
        while off < a.len {
            // SAFETY: inside the live region (leaked for the child's life).
            unsafe { ((a.base + off) as *mut u64).write_volatile(v) };
            off += PAGE;
        }
        v += 1;
    }
}

/// [`writer`] as pthread_create takes it.
fn start() -> extern "C" fn(*mut libc::c_void) -> *mut libc::c_void {
    let f: extern "C-unwind" fn(*mut libc::c_void) -> *mut libc::c_void = writer;
    // SAFETY: the same ABI and signature; "C-unwind" only lets a forced
    // unwind (cancellation) pass through the frame.
    unsafe { std::mem::transmute(f) }
}

fn scenario(t: Tracking, rounds: u64) -> i32 {
    let mut region = Region::builder(32 << 20)
        .tracking(t)
        .staging(256 << 10)
        .build()
        .unwrap();
    region.as_mut_slice().fill(1);
    region.snapshot().unwrap();
    let arg = Box::leak(Box::new(Arg {
        base: region.as_ptr() as usize,
        len: region.len(),
    }));
    for round in 0..rounds {
        let mut th: libc::pthread_t = 0;
        // SAFETY: writer has the pthread start signature; arg outlives it.
        let r = unsafe {
            libc::pthread_create(
                &mut th,
                std::ptr::null(),
                start(),
                arg as *mut Arg as *mut _,
            )
        };
        assert_eq!(r, 0);
        std::thread::sleep(Duration::from_micros(300));
        let bg = region.background_snapshot().unwrap();
        std::thread::sleep(Duration::from_micros(200 + (round * 37) % 700));
        // SAFETY: th is a live joinable thread of ours.
        unsafe {
            libc::pthread_cancel(th);
            libc::pthread_join(th, std::ptr::null_mut());
        }
        let snap = bg.wait().unwrap();
        assert_eq!(snap.len(), region.len());
        let now = region.as_slice().to_vec();
        if region.snapshot().unwrap().to_vec() != now {
            eprintln!("{t}: round {round}: sync snapshot misses writes");
            return 3;
        }
    }
    0
}

#[test]
fn a_writer_cancelled_asynchronously_during_background_snapshots() {
    let _serial = common::child::serial();
    let mut backends = common::backends();
    backends.sort_by_key(|&t| t != Tracking::Mprotect); // the one that hung first
    for t in backends {
        let out = common::child::run(Duration::from_secs(30), || scenario(t, 40));
        eprintln!("{t}: {out:?}");
        assert_eq!(
            out,
            common::child::Outcome::Exited(0),
            "{t}: a writer cancelled inside pagesnap's SIGSEGV handler left it hung (TimedOut) or aborted (Signaled(6))"
        );
    }
}
