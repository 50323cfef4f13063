//! Threads that block `SIGSEGV`. Programs that handle signals in one thread
//! block every signal in `main` before starting threads, and each thread
//! inherits that mask. A write to a page pagesnap protected then kills the
//! process (the kernel resets a blocked fault signal to its default action),
//! so pagesnap must refuse, with an error naming the thread, whatever would
//! protect pages while such a thread exists — and stay usable for programs
//! that block every signal but the fault signals. Each case runs in a forked
//! child: a wrong answer kills it.
#![allow(unsafe_code)]

mod common;

use common::child::{self, Outcome};
use pagesnap::{Error, Region, Tracking};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
const LEN: usize = 16 << 20;

/// Blocks every signal in the calling thread, or every one but the four a
/// fault raises (`but_faults`).
fn block_signals(but_faults: bool) {
    // SAFETY: a filled set, edited and passed by reference; only the calling
    // thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        if but_faults {
            for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
                libc::sigdelset(&mut set, sig);
            }
        }
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether the calling thread blocks `SIGSEGV`.
fn blocks_sigsegv_here() -> bool {
    // SAFETY: a null new set only reads the mask into `old`.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        libc::sigismember(&old, libc::SIGSEGV) == 1
    }
}

/// A thread that blocks every signal, as a program's signal-handling thread
/// does; told to, it fills the region at `base` with `v` (it must survive
/// doing so) and ends.
struct Blocker {
    tid: i32,
    go: mpsc::Sender<Option<(usize, u8)>>,
    thread: std::thread::JoinHandle<()>,
}

impl Blocker {
    fn start() -> Blocker {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<Option<(usize, u8)>>();
        let thread = std::thread::spawn(move || {
            block_signals(false);
            tid_tx.send(gettid()).unwrap();
            if let Ok(Some((base, v))) = go_rx.recv() {
                // SAFETY: the live region's LEN bytes, which outlive this
                // thread (it is joined first); the only writer now.
                unsafe { std::ptr::write_bytes(base as *mut u8, v, LEN) };
            }
        });
        Blocker {
            tid: tid_rx.recv().unwrap(),
            go,
            thread,
        }
    }

    /// Writes `v` to every page at `base` from the blocking thread, and ends it.
    fn write_and_end(self, base: usize, v: u8) {
        self.go.send(Some((base, v))).unwrap();
        self.thread.join().unwrap();
    }

    fn end(self) {
        self.go.send(None).unwrap();
        self.thread.join().unwrap();
    }
}

fn is_blocked_by(r: &pagesnap::Result<impl Sized>, tid: i32) -> bool {
    matches!(r, Err(Error::FaultSignalBlocked { thread, .. }) if *thread == tid)
}

/// While a thread blocks SIGSEGV, a background snapshot or save of a region
/// of any backend fails with `FaultSignalBlocked` naming it, protects
/// nothing (the thread then writes every page and lives), and leaves no
/// file; once it is gone, both work and the snapshot holds what it wrote.
#[test]
fn background_snapshots_refuse_while_a_thread_blocks_sigsegv() {
    let _serial = child::serial();
    for t in common::backends() {
        let out = child::run(DEADLINE, move || {
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            region.as_mut_slice().fill(1);
            let _before = region.snapshot().unwrap();
            let dir = std::env::temp_dir().join(format!("pagesnap-blocked-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("a.snap");

            let blocker = Blocker::start();
            let bg = region.background_snapshot();
            assert!(is_blocked_by(&bg, blocker.tid), "{t}: {:?}", bg.err());
            let message = bg.err().unwrap().to_string();
            assert!(message.contains("blocks SIGSEGV"), "{message}");
            let save = region.background_save(&path);
            assert!(is_blocked_by(&save, blocker.tid), "{t}: {:?}", save.err());
            assert!(!path.exists(), "{t}: a refused save left its target");
            assert_eq!(
                std::fs::read_dir(&dir).unwrap().count(),
                0,
                "{t}: a temporary file"
            );
            // Nothing is protected for a background snapshot; under mprotect
            // tracking the tracker's own protection is, so there the blocking
            // thread must not write (that is what the check at arming is for).
            if t == Tracking::Mprotect {
                blocker.end();
                region.as_mut_slice().fill(2);
            } else {
                blocker.write_and_end(region.as_ptr() as usize, 2);
            }

            let snap = region.background_snapshot().unwrap().wait().unwrap();
            assert!(snap.to_vec().iter().all(|&b| b == 2), "{t}: snapshot after");
            region.background_save(&path).unwrap().wait().unwrap();
            assert!(path.exists());
            std::fs::remove_dir_all(&dir).unwrap();
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}

/// mprotect tracking cannot be armed while a thread blocks SIGSEGV (its first
/// write would kill the process): the build fails naming the thread.
#[test]
fn mprotect_tracking_is_refused_while_a_thread_blocks_sigsegv() {
    let _serial = child::serial();
    let out = child::run(DEADLINE, || {
        let blocker = Blocker::start();
        let built = Region::builder(LEN).tracking(Tracking::Mprotect).build();
        assert!(is_blocked_by(&built, blocker.tid), "{:?}", built.err());
        blocker.end();
        let mut region = Region::builder(LEN)
            .tracking(Tracking::Mprotect)
            .build()
            .unwrap();
        region.as_mut_slice().fill(3);
        assert!(region.snapshot().unwrap().to_vec().iter().all(|&b| b == 3));
        0
    });
    assert_eq!(out, Outcome::Exited(0));
}

/// A program that blocks every signal but the fault signals in `main`
/// before starting its threads snapshots as usual, point-in-time and
/// converging, under writers that never stop; and pagesnap's own threads,
/// started from a thread that blocks everything, unblock SIGSEGV.
#[test]
fn a_program_blocking_all_but_the_fault_signals_snapshots_as_usual() {
    let _serial = child::serial();
    for t in common::backends() {
        let out = child::run(DEADLINE, move || {
            block_signals(true);
            let mut region = Region::builder(LEN).tracking(t).build().unwrap();
            let base = region.as_ptr() as usize;
            let mut writers = common::Stampers::start(base, LEN, 2);
            writers.wait_started(base);
            let pit = region.background_snapshot().unwrap().wait();
            // Converging: rounds while the writers write, `finish` once they
            // are quiescent (here: stopped).
            let conv = region.converging_snapshot().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            writers.stop();
            let conv = conv.finish().unwrap();
            writers.assert_consistent(&pit.unwrap().to_vec(), &format!("{t}: point-in-time"));
            assert!(conv.to_vec() == region.as_slice(), "{t}: converging");

            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                block_signals(false);
                let inner = pagesnap::spawn_thread("pagesnap-test", blocks_sigsegv_here).unwrap();
                tx.send(inner.join().unwrap()).unwrap();
            });
            assert!(
                !rx.recv().unwrap(),
                "a pagesnap thread kept SIGSEGV blocked"
            );
            0
        });
        assert_eq!(out, Outcome::Exited(0), "{t}");
    }
}
