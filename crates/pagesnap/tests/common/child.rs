//! Running a risky part of a test in a forked child with a deadline.
//!
//! The child runs the closure, then `_exit`s with its return value (101 if it
//! panicked); the parent polls `waitpid` until the deadline and kills the child
//! with SIGKILL past it. Tests that fork hold [`serial`] so no other test of the
//! same binary is inside pagesnap (holding one of its locks) at the fork.
#![allow(unsafe_code)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by this signal (not by the deadline).
    Signaled(i32),
    /// Still running at the deadline: killed.
    TimedOut,
}

/// Serialises the tests of one binary that fork.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks; the child runs `f` and exits with its result. Waits at most `timeout`.
pub fn run(timeout: Duration, f: impl FnOnce() -> i32) -> Outcome {
    // SAFETY: the child only runs `f` (which the caller wrote to be fork-safe:
    // no locks another thread may hold) and then `_exit`s without unwinding.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: _exit ends the child at once, running no destructors or atexit
        // handlers that could touch state shared with the parent.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if r == pid {
            return if libc::WIFEXITED(status) {
                Outcome::Exited(libc::WEXITSTATUS(status))
            } else {
                Outcome::Signaled(libc::WTERMSIG(status))
            };
        }
        if Instant::now() >= deadline {
            // SAFETY: pid is our child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f` in a forked child (after taking [`serial`]) and asserts it exited
/// 0 within `secs`: a panic (its message is printed above), a signal or a hang
/// fails the test.
pub fn assert_clean(name: &str, secs: u64, f: impl FnOnce()) {
    let _serial = serial();
    let out = run(Duration::from_secs(secs), || {
        f();
        0
    });
    assert_eq!(
        out,
        Outcome::Exited(0),
        "{name}: the child did not finish cleanly (101: it panicked, message above)"
    );
}

/// Writes `msg` to stderr with one `write(2)`, taking no lock (for children).
pub fn say(msg: &str) {
    // SAFETY: msg is a valid buffer of msg.len() bytes.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// A `waitpid` status as a result for [`run`] to pass on: the exit code, or
/// 128 + the signal that killed the process (a raw status would be cut to its
/// low byte, turning `exit(3)` into 0).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}
