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
//! ```text
//!  SLOTS[i]: start ──► first byte of a region      (0 = slot free)
//!            len       bytes
//!            bits  ──► [AtomicU64; pages/64] dirty bitmap, owned by the tracker
//! ```
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How many regions can be tracked by mprotect at once in one process.
pub(crate) const MAX_REGIONS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    bits: AtomicPtr<AtomicU64>,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    bits: AtomicPtr::new(std::ptr::null_mut()),
};
static SLOTS: [Slot; MAX_REGIONS] = [EMPTY; MAX_REGIONS];
/// Serialises registration (never taken by the handler).
static REGISTRY: Mutex<()> = Mutex::new(());
/// The handler that was installed before ours; set once, before ours is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A region's entry in the handler's table; removed on drop.
pub(crate) struct FaultSlot {
    index: usize,
    // Keeps the bitmap alive while the handler may read it.
    _bits: Arc<[AtomicU64]>,
}

impl std::fmt::Debug for FaultSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultSlot")
            .field("index", &self.index)
            .finish()
    }
}

/// Error from [`register`].
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// `sigaction(2)` failed.
    Sigaction(io::Error),
    /// All [`MAX_REGIONS`] slots are taken.
    Full,
}

/// Routes write faults in `[start, start + len)` to `bits` (one bit per page),
/// installing the handler on first use.
pub(crate) fn register(
    start: usize,
    len: usize,
    bits: Arc<[AtomicU64]>,
) -> Result<FaultSlot, RegisterError> {
    let _guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    install().map_err(RegisterError::Sigaction)?;
    let index = SLOTS
        .iter()
        .position(|s| s.start.load(Ordering::Relaxed) == 0)
        .ok_or(RegisterError::Full)?;
    let slot = &SLOTS[index];
    slot.bits
        .store(bits.as_ptr() as *mut AtomicU64, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    // Release: the handler that sees `start` also sees bits and len.
    slot.start.store(start, Ordering::Release);
    Ok(FaultSlot { index, _bits: bits })
}

impl Drop for FaultSlot {
    fn drop(&mut self) {
        let _guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        SLOTS[self.index].start.store(0, Ordering::Release);
    }
}

fn install() -> io::Result<()> {
    if PREVIOUS.get().is_some() {
        return Ok(());
    }
    PAGE.store(super::page_size(), Ordering::Relaxed);
    // SAFETY: zeroed is a valid sigaction (empty mask, no flags, SIG_DFL).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler as *const () as usize;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
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
    Ok(())
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in SLOTS.iter() {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let len = slot.len.load(Ordering::Relaxed);
        if addr - start >= len {
            continue;
        }
        let index = (addr - start) / page;
        let bits = slot.bits.load(Ordering::Relaxed);
        // SAFETY: bits points at a live bitmap of len/page bits (kept alive by the
        // FaultSlot that published it) and index < len/page.
        unsafe { (*bits.add(index / 64)).fetch_or(1 << (index % 64), Ordering::Relaxed) };
        let page_addr = start + index * page;
        // SAFETY: the page belongs to a live pagesnap region; making it writable is
        // exactly what the faulting store needs. mprotect is async-signal-safe.
        let rc = unsafe {
            libc::mprotect(
                page_addr as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc == 0 {
            return;
        }
        break;
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the previous handler, or to the default action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = PREVIOUS.get().map(|p| (p.sa_sigaction, p.sa_flags));
    match previous {
        Some((action, flags)) if action != libc::SIG_DFL && action != libc::SIG_IGN => {
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
        _ => {
            // Restore the default action; returning re-executes the faulting
            // instruction, which now kills the process with SIGSEGV.
            // SAFETY: zeroed sigaction is SIG_DFL with an empty mask; sigaction is
            // async-signal-safe.
            unsafe {
                let dfl: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGSEGV, &dfl, std::ptr::null_mut());
            }
        }
    }
}
