//! # Safety
//!
//! Scheduling policy of single threads (`sched_setscheduler(2)` on a thread
//! id): a converging snapshot's round thread copies on idle CPU time only, so
//! that it never takes a core from the program's own threads, and is raised
//! back to normal before the program waits for it.
//!
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of at least
//! 20 (a return to nice 0); without either the kernel refuses with `EPERM`,
//! and a thread left idle on a busy machine could keep a waiter waiting. So a
//! thread is made idle only where [`can_leave_idle`] says it can be raised.
#![allow(unsafe_code)]

use std::io;

/// `CAP_SYS_NICE` (linux/capability.h; not exported by libc).
const CAP_SYS_NICE: u32 = 23;

/// The calling thread's id, as `sched_setscheduler` takes it.
pub(crate) fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a live sched_param for the call; the kernel only reads
    // it. A wrong `tid` changes another thread's policy, never memory: callers
    // name only threads they know to be alive.
    let r = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs the calling thread only when a CPU would otherwise be idle.
pub(crate) fn make_self_idle() -> io::Result<()> {
    set_policy(0, libc::SCHED_IDLE)
}

/// Returns thread `tid` (of this process, alive) to the normal policy.
pub(crate) fn make_normal(tid: libc::pid_t) -> io::Result<()> {
    set_policy(tid, libc::SCHED_OTHER)
}

/// The policy of thread `tid` (0: the calling thread).
#[cfg(test)]
pub(crate) fn policy(tid: libc::pid_t) -> io::Result<libc::c_int> {
    // SAFETY: sched_getscheduler only reads the policy of `tid`.
    let p = unsafe { libc::sched_getscheduler(tid) };
    if p >= 0 {
        Ok(p)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a thread of this process made idle can be returned to normal:
/// `CAP_SYS_NICE` in the effective set, or `RLIMIT_NICE` ≥ 20.
pub(crate) fn can_leave_idle() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } == 0 && lim.rlim_cur >= 20 {
        return true;
    }
    has_effective_cap(CAP_SYS_NICE)
}

/// Whether capability `cap` is in this thread's effective set, read from
/// `/proc/thread-self/status` (libc has no `capget` wrapper with its structs,
/// and one bit is all that is needed).
fn has_effective_cap(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| cap < 64 && set & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_made_idle_is_raised_again_where_allowed() {
        if !can_leave_idle() {
            eprintln!("skipped: neither CAP_SYS_NICE nor RLIMIT_NICE >= 20 here");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            make_self_idle().unwrap();
            tx.send((current_tid(), policy(0).unwrap())).unwrap();
            back_rx.recv().unwrap();
            policy(0).unwrap()
        });
        let (tid, idle) = rx.recv().unwrap();
        assert_eq!(idle, libc::SCHED_IDLE);
        make_normal(tid).unwrap();
        back_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), libc::SCHED_OTHER);
    }
}
