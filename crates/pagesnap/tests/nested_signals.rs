//! Signals that arrive while a writer is inside pagesnap's SIGSEGV handler,
//! whose own handlers write to the region: a profiler or timer handler
//! stamping into memory that lives in a region. The handler must not be
//! re-entered for a batch the same thread is copying (it would wait for
//! itself), nor may the nested write find SIGSEGV blocked (the kernel would
//! kill the process). Runs in a forked child with a deadline.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::Region;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const LEN: usize = 16 << 20;
/// Where the writer writes now; the signal handler writes the word after it.
static AT: AtomicUsize = AtomicUsize::new(0);
static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stamp(_sig: i32) {
    let at = AT.load(Ordering::Relaxed);
    if at != 0 {
        // SAFETY: `at + 8` lies inside the live region (the writer publishes
        // an address at least 16 bytes before its end); volatile, aligned.
        unsafe { ((at + 8) as *mut u64).write_volatile(0x5157) };
        HANDLED.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_signal_handler_writing_the_region_inside_a_fault() {
    let _serial = child::serial();
    for t in common::backends() {
        let out = child::run(Duration::from_secs(60), move || {
            // SAFETY: a plain handler for SIGUSR1 with an empty mask; `stamp`
            // is async-signal-safe (atomics and one volatile store).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = stamp as *const () as usize;
                assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
            }
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            region.as_mut_slice().fill(1);
            let base = region.as_ptr() as usize;
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            let s = stop.clone();
            let writer = std::thread::spawn(move || {
                // SAFETY: pthread_self cannot fail.
                tx.send(unsafe { libc::pthread_self() } as usize).unwrap();
                let mut round = 2u64;
                while !s.load(Ordering::Relaxed) {
                    for at in (0..LEN).step_by(512) {
                        AT.store(base + at, Ordering::Relaxed);
                        common::write_u64(base, at, round);
                    }
                    round += 1;
                }
                AT.store(0, Ordering::Relaxed);
            });
            let target = rx.recv().unwrap() as libc::pthread_t;
            let s = stop.clone();
            let signaler = std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    // SAFETY: the writer thread is alive until `stop`, after
                    // which this loop ends before it is joined.
                    unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                    std::thread::sleep(Duration::from_micros(20));
                }
            });
            for _ in 0..40 {
                region.background_snapshot().unwrap().wait().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            signaler.join().unwrap();
            writer.join().unwrap();
            assert!(HANDLED.load(Ordering::Relaxed) > 0);
            let snap = region.snapshot().unwrap();
            assert!(snap.to_vec() == region.as_slice());
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}
