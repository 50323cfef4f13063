//! The priority of a converging snapshot's round thread: idle CPU time only
//! (`SCHED_IDLE`), where the process may raise it again, until someone waits
//! for it — then normal, for the rest of its run.
//!
//! ```text
//!  round thread:  enter_idle()   idle, unless raised already; its guard
//!                                dropped before it ends (its id may be reused after)
//!  callers:       raise()        wait, hurry, finish, drop: normal from now on
//! ```

use crate::sys::sched;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Whether round threads copy on idle CPU time only: where the process may
/// raise them again (`sys::sched`), so that a waiter never waits on a thread
/// the busy CPUs starve. Elsewhere they run at normal priority.
fn idle_rounds() -> bool {
    static IDLE: OnceLock<bool> = OnceLock::new();
    *IDLE.get_or_init(sched::can_leave_idle)
}

/// The round thread's id while it runs idle, and whether it was raised.
#[derive(Default)]
pub(super) struct RoundPriority(Mutex<(Option<libc::pid_t>, bool)>);

impl RoundPriority {
    fn lock(&self) -> MutexGuard<'_, (Option<libc::pid_t>, bool)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On the round thread: from now on, copy only when a CPU is free, so the
    /// rounds never take a core from the program's writers. The guard, dropped
    /// before the thread ends (a panic included), clears the thread's id:
    /// nobody may name it once it could be reused.
    pub(super) fn enter_idle(&self) -> Idle<'_> {
        if idle_rounds() {
            let mut p = self.lock();
            // A raise (a wait, `hurry`, a stop) before this point wins.
            if !p.1 && sched::make_self_idle().is_ok() {
                p.0 = Some(sched::current_tid());
            }
        }
        Idle(self)
    }

    /// Raises the round thread back to normal priority, now and for good.
    pub(super) fn raise(&self) {
        let mut p = self.lock();
        p.1 = true;
        if let Some(tid) = p.0.take() {
            // The thread is alive (it leaves before it ends). Should the raise
            // fail, a waiter still gets it back at its next chunk.
            let _ = sched::make_normal(tid);
        }
    }

    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.lock().0.is_some()
    }
}

/// See [`RoundPriority::enter_idle`].
#[must_use = "dropping it at once forgets the idle thread, which a raise then misses"]
pub(super) struct Idle<'a>(&'a RoundPriority);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.lock().0 = None;
    }
}

#[cfg(test)]
pub(super) fn may_go_idle() -> bool {
    idle_rounds()
}
