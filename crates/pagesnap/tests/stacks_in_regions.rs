//! Coroutine stacks in a region: a model checker or a fiber runtime that keeps
//! its coroutines' stacks in a region, to snapshot and restore them with the
//! rest of its state. A push onto a protected stack page raises SIGSEGV,
//! whose frame the kernel cannot write onto that same page: the thread needs
//! a signal stack elsewhere (`sigaltstack`). Rust's threads have one; a C
//! thread must set one. This is documented (README, "fork() and signal
//! handlers"); these tests hold it to what the documents say. Each case runs
//! in a forked child.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::Region;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LEN: usize = 16 << 20;
const STACK: usize = 2 << 20;

static STOP: AtomicBool = AtomicBool::new(false);
/// The thread's own context and the coroutine's (one of each per child).
static mut OWN: std::mem::MaybeUninit<libc::ucontext_t> = std::mem::MaybeUninit::uninit();
static mut CO: std::mem::MaybeUninit<libc::ucontext_t> = std::mem::MaybeUninit::uninit();

/// Uses about `n` × 2 KiB of stack.
#[inline(never)]
fn deep(n: usize) -> u64 {
    let mut a = [0u8; 2048];
    a[n % 2048] = n as u8;
    let a = std::hint::black_box(a);
    match n {
        0 => u64::from(a[0]),
        n => deep(n - 1) + u64::from(a[n % 2048]),
    }
}

/// The coroutine: calls deep into its stack until told to stop, then goes
/// back to the thread's own context.
extern "C" fn coroutine() {
    let mut x = 0;
    while !STOP.load(Ordering::Relaxed) {
        x += deep(200);
    }
    std::hint::black_box(x);
    // SAFETY: both contexts were set up by `run_on` before this ran; OWN
    // is resumed where `run_on` swapped away from it.
    unsafe { libc::swapcontext((&raw mut CO).cast(), (&raw const OWN).cast()) };
}

/// Runs [`coroutine`] on `STACK` bytes at `stack` (inside a region) until it
/// stops; without a signal stack first if `no_signal_stack`.
fn run_on(stack: usize, no_signal_stack: bool) {
    // SAFETY: disabling the calling thread's signal stack changes only this
    // thread; the contexts are this child's statics, used by this thread
    // alone; `stack` is STACK bytes of a live region that outlives the
    // thread (it is joined before the region drops).
    unsafe {
        if no_signal_stack {
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, std::ptr::null_mut());
        }
        libc::getcontext((&raw mut CO).cast());
        let co = &mut *(&raw mut CO).cast::<libc::ucontext_t>();
        co.uc_stack.ss_sp = stack as *mut libc::c_void;
        co.uc_stack.ss_size = STACK;
        co.uc_link = std::ptr::null_mut();
        libc::makecontext(co, coroutine, 0);
        libc::swapcontext((&raw mut OWN).cast(), co);
    }
}

/// A coroutine on a stack in the region, through 20 point-in-time snapshots
/// and a synchronous one, on a thread with or without a signal stack.
fn coroutine_through_snapshots(t: pagesnap::Tracking, no_signal_stack: bool) -> Outcome {
    child::run(Duration::from_secs(60), move || {
        let mut region = Region::builder(LEN).tracking(t).build().unwrap();
        region.as_mut_slice().fill(0);
        let stack = region.as_ptr() as usize + LEN - STACK;
        let thread = std::thread::spawn(move || run_on(stack, no_signal_stack));
        for _ in 0..20 {
            region.background_snapshot().unwrap().wait().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        region.snapshot().unwrap();
        STOP.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        0
    })
}

/// [`coroutine_through_snapshots`] under every backend, each ending as `expected`.
fn every_backend_ends_as(no_signal_stack: bool, expected: Outcome, hint: &str) {
    let _serial = child::serial();
    for t in common::backends() {
        assert_eq!(
            coroutine_through_snapshots(t, no_signal_stack),
            expected,
            "{t}{hint}"
        );
    }
}

/// With a signal stack outside the region (as every Rust thread has), the
/// coroutine runs through snapshots under every backend.
#[test]
fn a_coroutine_stack_in_a_region_with_a_signal_stack_elsewhere() {
    every_backend_ends_as(false, Outcome::Exited(0), "");
}

/// Without one the first push onto a protected page kills the process, as
/// the README says: the documented requirement is real.
#[test]
fn without_a_signal_stack_the_documented_requirement_holds() {
    every_backend_ends_as(
        true,
        Outcome::Signaled(libc::SIGSEGV),
        ": if this now survives, update the README",
    );
}
