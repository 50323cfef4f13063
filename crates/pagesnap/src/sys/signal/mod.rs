//! # Safety
//!
//! The process-wide `SIGSEGV` handler of the mprotect tracker.
//!
//! Regions tracked by mprotect are mapped read-only; the first write to a page
//! faults, and the handler records the page in the region's dirty bitmap and makes
//! it writable again. The handler is async-signal-safe: it only reads a fixed table
//! of atomics, sets a bit with `fetch_or` and calls `mprotect(2)`; it never
//! allocates or takes a lock. A fault outside every registered region goes to the
//! handler that was installed before ours (or to the default action, which kills
//! the process with `SIGSEGV`), so a real crash still crashes.
//!
//! A second table serves background snapshots (see `background/mod.rs`): there, a write to
//! a batch not saved yet copies the batch into the snapshot's staging pool
//! (`staging.rs`), lifts its protection and goes on; only when the pool is full
//! does it park the writer on a futex until a copier has saved the batch.
//!
//! Every entry records the process that registered it. In a child forked from
//! that process the entry is a copy with no tracker or copier behind it: a write
//! there has its page made writable and goes on (a child must never wait for a
//! copier that does not exist in it; its pagesnap calls are refused anyway, see
//! `fork.rs`).
//!
//! The tables live beside this file, `SLOTS` in `tracked.rs` and `BACKGROUND` with
//! its batch states in `background.rs`; this file installs, checks and dispatches.
//!
//! pagesnap relies on receiving these faults. [`check`] tells whether its handler
//! is still the installed one: a handler installed later that does not pass
//! faults on would make writes go unrecorded, so callers refuse to produce a
//! snapshot then, and [`replacements`] lets a tracker know that it may have
//! missed writes while the handler was away.
//!
//! ```text
//!  BACKGROUND[i]: start, len, batch bytes
//!                 batches ─► BatchStates
//!                   states   [AtomicU32; batches]  PENDING → (REQUESTED) → COPYING
//!                                                  → COPIED, or → STAGED by a writer
//!                                                  (→ DEFERRED → COPIED at the
//!                                                  limit of mappings)
//!                   requests AtomicUsize           bumped when a writer asks for a batch
//!                   pool     staging pool of the running snapshot (null: none)
//!                   inside   writers using the pool right now
//!                 pid                              the registering process
//!  SLOTS[i]: start ──► first byte of a region      (0 = slot free)
//!            pid       the registering process
//!            len       bytes
//!            bits  ──► [AtomicU64; pages/64] dirty bitmap, owned by the tracker
//! ```
#![allow(unsafe_code)]

mod background;
mod blocked;
mod chain;
mod child;
mod tracked;
mod widen;

#[allow(unused_imports)] // kept at its old path; no other file names it today
pub(crate) use background::Published;
pub(crate) use background::{
    register_background, BackgroundSlot, BatchStates, COPIED, COPYING, DEFERRED, MAX_BACKGROUND,
    PENDING, REQUESTED, STAGED,
};
pub(crate) use blocked::{no_thread_blocks_sigsegv, unblock_in_this_thread, Blocked};
pub(crate) use tracked::{register, FaultSlot, MAX_REGIONS};

use super::mmap::HUGE_PAGE;
use super::process;
use super::staging;
use background::{monotonic_ns, BACKGROUND, BACKGROUND_HIGH};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tracked::{SLOTS, SLOTS_HIGH};

/// The registry lock, except in a child forked from the process that made the
/// entry: a thread of the parent may have held the lock at the fork, and would
/// never release it there. (Clearing `start` is atomic; the lock only keeps two
/// registrations from taking one free slot.)
fn registry_unless_inherited(pid: &AtomicU32) -> Option<std::sync::MutexGuard<'static, ()>> {
    (pid.load(Ordering::Relaxed) == process::id())
        .then(|| REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}
/// Serialises registration (never taken by the handler).
static REGISTRY: Mutex<()> = Mutex::new(());
/// The handler that was installed before ours; set once, before ours is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// Error from [`register`].
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// `sigaction(2)` failed.
    Sigaction(io::Error),
    /// All [`MAX_REGIONS`] slots are taken.
    Full,
}

fn install() -> io::Result<()> {
    if PREVIOUS.get().is_some() {
        return Ok(());
    }
    PAGE.store(super::page_size(), Ordering::Relaxed);
    // SAFETY: zeroed is a valid sigaction (empty mask, no flags, SIG_DFL).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler as *const () as usize;
    // SA_NODEFER: a thread inside the handler (copying its batch, or asleep
    // until a copier saved it) shows its own mask, not SIGSEGV blocked, to the
    // check for threads that block it (`blocked.rs`). `chain` blocks what the
    // previous handler's own action would have.
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // Every other signal waits until the handler returns: a handler of the
    // program's that writes the region (a timer or profiler stamping into
    // it) would otherwise fault inside ours, nested on the same signal
    // stack, which overflowed (a test's SIGUSR1 handler killed the process
    // under every backend). The signals a fault raises stay unblocked.
    // SAFETY: `new.sa_mask` is a valid sigset_t to fill and edit.
    unsafe {
        libc::sigfillset(&mut new.sa_mask);
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
        ] {
            libc::sigdelset(&mut new.sa_mask, sig);
        }
        block_cancellation(&mut new.sa_mask);
    }
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // Record the previous handler first so the handler can always chain to it.
    // SAFETY: reading the current action with a null new action changes nothing.
    if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = PREVIOUS.set(old);
    // SAFETY: `handler` is async-signal-safe (see the module docs) and has the
    // SA_SIGINFO signature.
    if unsafe { libc::sigaction(libc::SIGSEGV, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    child::lift_regions_in_children();
    Ok(())
}

/// Adds glibc's thread-cancellation signal (32) to `mask`, which
/// `sigfillset` leaves out and `sigaddset` refuses: a writer in asynchronous
/// cancel mode, cancelled inside the handler, unwound out of it with a batch
/// claimed or a lift counted, and the next background snapshot waited for
/// ever (an adversarial test hung in 3 runs of 3). Cancelled after the
/// handler returns, it leaves nothing half done. glibc's other internal
/// signal (33, `setxid`) stays deliverable: it does not unwind, and a
/// `setuid` in another thread must not wait on a writer asleep here.
fn block_cancellation(mask: &mut libc::sigset_t) {
    const SIGCANCEL: usize = 32;
    // SAFETY: on Linux a sigset_t is an array of unsigned longs, signal n at
    // bit n - 1 (the kernel's layout, which sigaction passes on as it is);
    // the first word is in bounds.
    unsafe {
        let word = (mask as *mut libc::sigset_t).cast::<u64>();
        *word |= 1 << (SIGCANCEL - 1);
    }
}

/// `si_code` of a SIGSEGV for a page whose permissions forbid the access
/// (`<asm-generic/siginfo.h>`; the libc crate does not name it).
const SEGV_ACCERR: libc::c_int = 2;

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a write to a page without write permission is pagesnap's. A
    // SIGSEGV sent with kill(2), raise(3) or sigqueue(3) has no address (the
    // field holds the sender's pid and uid, or whatever the sender put
    // there), and a fault on an unmapped page or a protection key is never
    // ours: those go on to the program's handler as they are.
    keeping_errno(|| {
        if code != SEGV_ACCERR || !on_fault(addr) {
            chain::chain(sig, info, ctx);
        }
    });
}

/// Runs `f`, then gives this thread's `errno` back the value it had: code
/// interrupted by a handler (or resuming after `fork`) may be about to read
/// it, and the system calls of pagesnap's handlers (mprotect, futex) set it.
fn keeping_errno(f: impl FnOnce()) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Serves a write fault at `addr`: true if it was pagesnap's and the write may be
/// retried, false if it belongs to the previous handler.
fn on_fault(addr: usize) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    let mut in_background = false;
    // Set while this handler may lift a tracker's protection in a region
    // with background snapshots (see `enter_tracker_lift`).
    let mut lifting: Option<(&BatchStates, widen::Saving)> = None;
    // Counted until the lookup finds an entry or the tracker's lift is done.
    background::enter_lookup();
    if let Some(e) = BACKGROUND[..BACKGROUND_HIGH.load(Ordering::Acquire)]
        .iter()
        .find(|e| covers(&e.start, &e.len, addr))
    {
        background::leave_lookup();
        if e.pid.load(Ordering::Relaxed) != process::id() {
            let (start, len) = (
                e.start.load(Ordering::Relaxed),
                e.len.load(Ordering::Relaxed),
            );
            return child::lift(addr & !(page - 1), page, start, len);
        }
        in_background = true;
        let start = e.start.load(Ordering::Relaxed);
        let (len, batch) = (
            e.len.load(Ordering::Relaxed),
            e.batch.load(Ordering::Relaxed),
        );
        let b = (addr - start) / batch;
        // SAFETY: the BatchStates is kept alive by the BackgroundSlot that
        // published it; its states have len/batch entries (rounded up), and b
        // (addr - start < len) indexes one of them.
        let batches = unsafe { &*e.batches.load(Ordering::Relaxed) };
        let state = &batches.states[b];
        let entered = monotonic_ns();
        let waited = || {
            let ns = monotonic_ns().saturating_sub(entered);
            batches.waited_ns.fetch_add(ns, Ordering::Relaxed);
        };
        if matches!(state.load(Ordering::Acquire), PENDING | REQUESTED) {
            // A writer that staged the batch before this one is going through
            // memory in order: stage up to a huge page ahead in the same call.
            let ahead = if b > 0 && batches.states[b - 1].load(Ordering::Acquire) == STAGED {
                (HUGE_PAGE / batch).saturating_sub(1)
            } else {
                0
            };
            if batches.stage(b, (start, len, batch), ahead) == staging::Staged::Done {
                // Copied and writable again: retry the write.
                waited();
                return true;
            }
        }
        let retry = batches.wait_until_copied(b);
        waited();
        if retry {
            // Retry the write: the batch is saved and (unless the mprotect
            // tracker also watches it) writable again.
            return true;
        }
        // The batch is saved: the tracker's protection, if any, is next. A
        // snapshot starting meanwhile must not see it lifted after its own.
        if !batches.enter_tracker_lift(b) {
            return true;
        }
        lifting = Some((
            batches,
            widen::Saving {
                batches,
                start,
                batch,
            },
        ));
    }
    let tracked = on_tracker_fault(addr, page, lifting.as_ref().map(|l| &l.1));
    match lifting {
        Some((batches, _)) => batches.leave_tracker_lift(),
        // No background entry holds `addr`: still counted from the lookup.
        None => background::leave_lookup(),
    }
    // None: a fault in a batch that was saved between the fault and the
    // check above: the protection is already lifted, so the retried write
    // goes through.
    tracked.unwrap_or(in_background)
}

/// The mprotect tracker's side of a fault at `addr`: lifts the page's
/// protection and marks it written. `None` if no tracked region holds it, or
/// the lift failed. `saving`: the background snapshot running in the region,
/// whose unsaved batches must stay protected.
fn on_tracker_fault(addr: usize, page: usize, saving: Option<&widen::Saving>) -> Option<bool> {
    let slot = SLOTS[..SLOTS_HIGH.load(Ordering::Acquire)]
        .iter()
        .find(|s| covers(&s.start, &s.len, addr))?;
    let start = slot.start.load(Ordering::Relaxed);
    let index = (addr - start) / page;
    let page_addr = start + index * page;
    if slot.pid.load(Ordering::Relaxed) != process::id() {
        let len = slot.len.load(Ordering::Relaxed);
        return Some(child::lift(page_addr, page, start, len));
    }
    let bits = slot.bits.load(Ordering::Relaxed);
    // Unprotect first, then set the bit: a collect running meanwhile (a
    // converging snapshot's round) either sees the bit and re-protects the
    // page after this, or misses it and sees it next time — never clears
    // the bit of a page left writable.
    if !make_writable(page_addr, page) {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOMEM) {
            return None;
        }
        // The process is at its limit of mappings: see `widen.rs`.
        let pages = slot.len.load(Ordering::Relaxed) / page;
        let bits = widen::Bits { bits, pages };
        if widen::lift_wide(start, page, &bits, index, saving) {
            return Some(true);
        }
        // Only pages of batches the snapshot has yet to save would merge:
        // retry once it has saved more (without spinning on the core).
        saving?;
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000,
        };
        // SAFETY: a valid timespec; nanosleep is async-signal-safe.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        return Some(true);
    }
    // SAFETY: bits points at a live bitmap of len/page bits (kept alive by
    // the FaultSlot that published it) and index < len/page.
    unsafe { (*bits.add(index / 64)).fetch_or(1 << (index % 64), Ordering::Release) };
    Some(true)
}

/// Whether the entry `[start, start + len)` is live and holds `addr`.
fn covers(start: &AtomicUsize, len: &AtomicUsize, addr: usize) -> bool {
    // Acquire: the entry's other fields were stored before `start` (Release).
    let start = start.load(Ordering::Acquire);
    start != 0 && addr >= start && addr - start < len.load(Ordering::Relaxed)
}

/// `mprotect(addr, len, PROT_READ | PROT_WRITE)` from the handler; true if done.
fn make_writable(addr: usize, len: usize) -> bool {
    // SAFETY: [addr, addr + len) is page-aligned and lies in a region registered
    // in one of the tables (by this process, or by the parent this child was
    // forked from: then it is the child's own copy); making it writable is what
    // the faulting store needs. mprotect is async-signal-safe.
    unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}

/// pagesnap's handler is not the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replaced {
    /// The handler installed instead (`SIG_DFL` = 0, `SIG_IGN` = 1).
    pub(crate) current: usize,
}

/// Set while the last [`check`] found another handler installed.
static REPLACED: AtomicBool = AtomicBool::new(false);
/// How many times [`check`] has found pagesnap's handler replaced (each period
/// of replacement counts once).
static REPLACEMENTS: AtomicU64 = AtomicU64::new(0);

/// Whether pagesnap's handler still receives SIGSEGV (if it was ever installed):
/// one `sigaction(2)` query.
pub(crate) fn check() -> Result<(), Replaced> {
    if PREVIOUS.get().is_none() {
        return Ok(());
    }
    // SAFETY: zeroed is a valid sigaction to receive the current one into.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `now`.
    if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut now) } != 0 {
        // Cannot fail for a valid signal number; treat it as "not ours" if it does.
        now.sa_sigaction = libc::SIG_DFL;
    }
    if now.sa_sigaction == handler as *const () as usize {
        REPLACED.store(false, Ordering::Release);
        return Ok(());
    }
    if !REPLACED.swap(true, Ordering::AcqRel) {
        REPLACEMENTS.fetch_add(1, Ordering::AcqRel);
    }
    Err(Replaced {
        current: now.sa_sigaction,
    })
}

/// How many periods of replacement [`check`] has seen: a tracker that saw a
/// different count before may have missed writes in between.
pub(crate) fn replacements() -> u64 {
    REPLACEMENTS.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests;
