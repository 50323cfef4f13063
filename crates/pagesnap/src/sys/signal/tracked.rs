//! The table of regions tracked by the mprotect backend.
//!
//! `SLOTS[i]` names a read-only region and its dirty bitmap; the handler
//! (`on_fault` in `mod.rs`) sets the bit of the page a write faulted on and makes
//! the page writable again.

use super::{install, registry_unless_inherited, RegisterError, REGISTRY};
use crate::sys::process;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many regions can be tracked by mprotect at once in one process.
pub(crate) const MAX_REGIONS: usize = 1024;

pub(super) struct Slot {
    pub(super) start: AtomicUsize,
    pub(super) len: AtomicUsize,
    pub(super) bits: AtomicPtr<AtomicU64>,
    pub(super) pid: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    bits: AtomicPtr::new(std::ptr::null_mut()),
    pid: AtomicU32::new(0),
};
pub(super) static SLOTS: [Slot; MAX_REGIONS] = [EMPTY; MAX_REGIONS];
/// One past the highest slot index ever used: the handler scans no further.
pub(super) static SLOTS_HIGH: AtomicUsize = AtomicUsize::new(0);

/// A region's entry in the handler's table; removed on drop.
pub(crate) struct FaultSlot {
    pub(super) index: usize,
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
    SLOTS_HIGH.fetch_max(index + 1, Ordering::Release);
    let slot = &SLOTS[index];
    slot.bits
        .store(bits.as_ptr() as *mut AtomicU64, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    slot.pid.store(process::id(), Ordering::Relaxed);
    // Release: the handler that sees `start` also sees bits and len.
    slot.start.store(start, Ordering::Release);
    Ok(FaultSlot { index, _bits: bits })
}

impl Drop for FaultSlot {
    fn drop(&mut self) {
        let slot = &SLOTS[self.index];
        let _guard = registry_unless_inherited(&slot.pid);
        slot.start.store(0, Ordering::Release);
    }
}
