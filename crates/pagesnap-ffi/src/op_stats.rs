//! `ps_region_last_op`: what the region's last snapshot, restore or reset did,
//! in figures a host can log.

use crate::handle;
use crate::region::{ps_region, RegionCell};
use crate::status::{call, CallError};
use pagesnap_lib::{PageStore, Snapshot};
use std::ffi::c_int;
use std::sync::Arc;
use std::time::Instant;

/// What the region's last ps_snapshot_take(), ps_restore() or ps_region_reset()
/// did, filled in by ps_region_last_op(). All zeros before the first.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_op_stats {
    /// 1 snapshot, 2 restore, 3 reset (0: none yet).
    pub op: u32,
    /// Snapshot: pages whose contents changed since the previous sync point.
    /// Restore and reset: pages whose contents differ between the previous sync
    /// point and the snapshot gone back to (written from the page tables; pages
    /// written since the sync point are put back too and are not counted here).
    pub changed_pages: u64,
    /// Snapshot: pages newly held by the store (the others were held already by
    /// some snapshot: deduplicated). Counted on the whole store, so another
    /// region snapshotting into it at the same moment adds to it.
    pub new_stored_pages: u64,
    /// Wall-clock nanoseconds the call took.
    pub duration_ns: u64,
    /// Restore: pages written back into the region (those of `changed_pages`
    /// plus those written since the sync point). Reset: pages given back to the
    /// clone's image. Snapshot: 0.
    pub written_pages: u64,
}

/// A duration in nanoseconds for a C figure (saturating: u64 nanoseconds last
/// 584 years).
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) const OP_SNAPSHOT: u32 = 1;
pub(crate) const OP_RESTORE: u32 = 2;
pub(crate) const OP_RESET: u32 = 3;

/// Figures of one operation, measured around `f` from the sync point before and
/// after it.
pub(crate) fn measure<T>(
    r: &RegionCell,
    op: u32,
    f: impl FnOnce(&mut pagesnap_lib::Region) -> Result<T, pagesnap_lib::Error>,
) -> Result<T, CallError> {
    let mut region = r.lock()?;
    let store: PageStore = region.store().clone();
    let before_pages = store.stats().unique_pages;
    let before: Snapshot = region.last_snapshot().clone();
    let t = Instant::now();
    let out = f(&mut region)?;
    let duration_ns = nanos(t.elapsed());
    let after = region.last_snapshot().clone();
    let last_written = region.last_restore_pages();
    drop(region);
    let stats = ps_op_stats {
        op,
        changed_pages: before.changed_pages(&after).unwrap_or(0) as u64,
        new_stored_pages: if op == OP_SNAPSHOT {
            store.stats().unique_pages.saturating_sub(before_pages)
        } else {
            0
        },
        duration_ns,
        written_pages: if op == OP_SNAPSHOT { 0 } else { last_written },
    };
    r.set_last_op(stats);
    Ok(out)
}

/// Fills `*out` with what the region's last ps_snapshot_take(), ps_restore() or
/// ps_region_reset() did (on any thread). Returns 0, or -1 (dead handle, NULL out).
///
/// # Safety
/// `out` is NULL or points to a writable ps_op_stats.
#[no_mangle]
pub unsafe extern "C" fn ps_region_last_op(
    region: *const ps_region,
    out: *mut ps_op_stats,
) -> c_int {
    call(-1, || {
        let r: Arc<RegionCell> = handle::get(region, "region (ps_region *)")?;
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (ps_op_stats *)",
            });
        }
        let stats = r.last_op();
        // SAFETY: `out` is non-NULL (checked) and writable by the contract.
        unsafe { out.write(stats) };
        Ok(0)
    })
}
