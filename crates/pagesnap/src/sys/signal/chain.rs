//! Handing a SIGSEGV that is not pagesnap's to the handler installed before
//! ours, as the kernel would have called it, or to the default action.

use super::PREVIOUS;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the previous handler, installed with `SA_RESETHAND`, has been
/// called: the kernel would have reset the action to the default on that
/// call, so every later fault takes the default action (measured before: a
/// crash reporter installed that way ran millions of times on one bad write,
/// the process never dying).
static PREVIOUS_SPENT: AtomicBool = AtomicBool::new(false);

/// Hands a fault that is not ours to the previous handler, or to the default action.
pub(super) fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = PREVIOUS
        .get()
        .filter(|_| !PREVIOUS_SPENT.load(Ordering::Acquire))
        .map(|p| (p.sa_sigaction, p.sa_flags, p.sa_mask));
    match previous {
        Some((action, flags, mask)) if action != libc::SIG_DFL && action != libc::SIG_IGN => {
            if flags & libc::SA_RESETHAND as libc::c_int != 0 {
                PREVIOUS_SPENT.store(true, Ordering::Release);
            }
            // The mask the kernel would have set for the previous handler: the
            // interrupted code's, its own, and SIGSEGV unless it asked for
            // SA_NODEFER (ours did, so the kernel did not) — not ours, which
            // blocks nearly everything (measured before: a crash reporter's
            // alarm() watchdog never fired, and the process hung). The return
            // from our handler restores the interrupted code's mask.
            // SAFETY: `mask` is a copy of a valid sigset_t; `ctx` is the
            // ucontext the kernel passed, whose uc_sigmask holds the
            // interrupted mask in its first 64 bits, all that is read here;
            // sigemptyset, sigismember, sigaddset and pthread_sigmask are
            // async-signal-safe and change only this thread.
            unsafe {
                let interrupted = &(*ctx.cast::<libc::ucontext_t>()).uc_sigmask;
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for sig in 1..=64 {
                    if libc::sigismember(interrupted, sig) == 1
                        || libc::sigismember(&mask, sig) == 1
                    {
                        libc::sigaddset(&mut set, sig);
                    }
                }
                if flags & libc::SA_NODEFER == 0 {
                    libc::sigaddset(&mut set, libc::SIGSEGV);
                }
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            }
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO, so it
                // has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(action) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO a handler takes only the signal number.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
                f(sig);
            }
        }
        // A sent SIGSEGV the program ignores stays ignored.
        Some((libc::SIG_IGN, ..)) if !raised_by_fault(info) => {}
        _ => {
            // Restore the default action; returning re-executes the faulting
            // instruction, which now kills the process with SIGSEGV. A sent
            // signal re-executes nothing: it is raised again, and kills as it
            // would have without pagesnap.
            // SAFETY: zeroed sigaction is SIG_DFL with an empty mask; sigaction
            // and raise are async-signal-safe, and SIGSEGV is not blocked here
            // (SA_NODEFER), so the raise is delivered at once.
            unsafe {
                let dfl: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGSEGV, &dfl, std::ptr::null_mut());
                if !raised_by_fault(info) {
                    libc::raise(libc::SIGSEGV);
                }
            }
        }
    }
}

/// Whether the kernel raised the signal for a fault (`si_code` > 0), not a
/// process with `kill`, `raise` or `sigqueue` (`si_code` ≤ 0).
fn raised_by_fault(info: *mut libc::siginfo_t) -> bool {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    unsafe { (*info).si_code > 0 }
}
