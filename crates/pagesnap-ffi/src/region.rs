//! `ps_region`: tracked memory, snapshot and restore.

use crate::handle::{self, Handled, Object};
use crate::heap_layout::LockedHeap;
use crate::op_stats::{measure, OP_RESET, OP_RESTORE, OP_SNAPSHOT};
use crate::snapshot::ps_snapshot;
use crate::status::{call, CallError};
use crate::store::ps_store;
use crate::tracking;
use pagesnap_lib::{PageStore, Region, Snapshot, Tracking};
use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

/// Memory whose writes pagesnap tracks. Opaque: only pointers to it exist.
#[allow(non_camel_case_types)]
pub struct ps_region {
    _opaque: [u8; 0],
}

/// A region behind a handle. Snapshot and restore need `&mut Region`, so the region
/// sits behind a mutex (two threads calling ps_snapshot_take on one region take
/// turns); the address, length and backend never change and are kept outside it,
/// so ps_region_ptr() never waits.
pub(crate) struct RegionCell {
    region: Mutex<Region>,
    /// The heap lock (ps_heap_*): held by every heap call, and around calls that
    /// read or replace the whole region (snapshot, restore, reset, the instant of
    /// a background snapshot or save), so they never see half an allocation.
    /// Taken before `region`, never after.
    heap: Mutex<()>,
    /// Figures of the last snapshot, restore or reset (ps_region_last_op).
    last_op: Mutex<crate::op_stats::ps_op_stats>,
    /// `Region::as_ptr` as an address (a raw pointer is not `Send`).
    addr: usize,
    len: usize,
    tracking: Tracking,
    /// Whether a converging snapshot holds the region (`converging.rs`): calls
    /// that need the whole region fail with "busy" instead of waiting for it.
    pub(crate) converging: std::sync::atomic::AtomicBool,
}

impl RegionCell {
    /// Wraps a new region.
    pub(crate) fn new(region: Region) -> RegionCell {
        RegionCell {
            addr: region.as_ptr() as usize,
            len: region.len(),
            tracking: region.tracking(),
            region: Mutex::new(region),
            heap: Mutex::new(()),
            last_op: Mutex::new(Default::default()),
            converging: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn set_last_op(&self, stats: crate::op_stats::ps_op_stats) {
        *self.last_op.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    pub(crate) fn last_op(&self) -> crate::op_stats::ps_op_stats {
        *self.last_op.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The heap lock; see the field.
    pub(crate) fn heap_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // Heap calls never panic between writes that must go together (talc does
        // not panic); a poisoned lock protects a consistent heap.
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The heap in this region, locked.
    pub(crate) fn heap(&self) -> LockedHeap<'_> {
        let lock = self.heap_lock();
        let base = std::ptr::NonNull::new(self.addr as *mut u8).expect("a mapping is never at 0");
        // SAFETY: `self` owns the region, mapped read-write at `addr` for `len`
        // bytes as long as `self` lives; `lock` is its heap lock.
        unsafe { LockedHeap::new(base, self.len, lock) }
    }

    /// The region, locked; refused while a converging snapshot holds it (its
    /// thread keeps the lock until `ps_converging_finish*` or `_free`).
    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, Region>, CallError> {
        if self.converging.load(std::sync::atomic::Ordering::Acquire) {
            return Err(pagesnap_lib::Error::BackgroundBusy.into());
        }
        Ok(self.lock_held())
    }

    /// The region, locked, whoever may hold it.
    pub(crate) fn lock_held(&self) -> std::sync::MutexGuard<'_, Region> {
        // A panic inside snapshot/restore leaves the region's memory mapped and its
        // tracker armed; the worst outcome is a conservative (larger) next snapshot.
        self.region.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handled for Arc<RegionCell> {
    type Handle = ps_region;
    const KIND: &'static str = "ps_region";
    fn into_object(self) -> Object {
        Object::Region(self)
    }
    fn from_object(o: &Object) -> Option<Self> {
        match o {
            Object::Region(r) => Some(r.clone()),
            _ => None,
        }
    }
}

const REGION: &str = "region (ps_region *)";

/// A new region of `len` bytes (rounded up to whole pages), all zeros, whose
/// snapshots keep their pages in `store`, tracked by `tracking` (a `PS_TRACKING_*`
/// constant). An explicit backend this machine lacks is an error, never a silent
/// fallback. NULL on failure (NULL or dead store, len 0, bad tracking, mmap failure).
///
/// Ownership: the caller owns the handle and frees it with ps_region_free(), which
/// unmaps the memory. The region keeps `store` alive.
#[no_mangle]
pub extern "C" fn ps_region_new(
    store: *const ps_store,
    len: usize,
    tracking: c_int,
) -> *mut ps_region {
    call(std::ptr::null_mut(), || {
        let store: PageStore = handle::get(store, "store (ps_store *)")?;
        let tracking = tracking::from_c(tracking)?;
        let region = Region::builder(len)
            .tracking(tracking)
            .store(&store)
            .build()?;
        Ok(handle::insert(Arc::new(RegionCell::new(region))))
    })
}

/// As ps_region_new(), mapped at exactly `addr` (page-aligned), so that pointers
/// into the region stay valid in its snapshots wherever they are instantiated at
/// the same address (ps_snapshot_instantiate_at()), in this process or another.
/// Never replaces a mapping: if any part of [addr, addr + len) is in use, NULL,
/// with ps_last_error() saying the range is not free and PS_ERR_ADDRESS_TAKEN
/// from ps_last_error_code(); nothing is mapped or changed. NULL too for a NULL
/// or unaligned `addr`.
///
/// Address rule: choose addresses away from what the process maps itself (the
/// heap, libraries, thread stacks): e.g. ps_snapshot_origin() of a snapshot
/// taken in a process built the same way, or a fixed high address agreed by all
/// processes that share snapshots.
///
/// Ownership: as ps_region_new().
#[no_mangle]
pub extern "C" fn ps_region_new_at(
    store: *const ps_store,
    addr: *mut c_void,
    len: usize,
    tracking: c_int,
) -> *mut ps_region {
    call(std::ptr::null_mut(), || {
        let store: PageStore = handle::get(store, "store (ps_store *)")?;
        let tracking = tracking::from_c(tracking)?;
        let region = Region::builder(len)
            .tracking(tracking)
            .store(&store)
            .at(addr as usize)
            .build()?;
        Ok(handle::insert(Arc::new(RegionCell::new(region))))
    })
}

/// The region's first byte. Any thread may read and write
/// [ptr, ptr + ps_region_len()) between snapshot/restore calls; writers must be
/// quiescent while ps_snapshot_take() or ps_restore() runs on the region.
/// NULL if `region` is not a live handle.
///
/// Ownership: the memory belongs to the region; the pointer is valid until
/// ps_region_free(). Never free() or munmap() it.
#[no_mangle]
pub extern "C" fn ps_region_ptr(region: *const ps_region) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        let r: Arc<RegionCell> = handle::get(region, REGION)?;
        Ok(r.addr as *mut c_void)
    })
}

/// The region's length in bytes (a whole number of pages). 0 if `region` is not a
/// live handle (a region is never empty).
#[no_mangle]
pub extern "C" fn ps_region_len(region: *const ps_region) -> usize {
    call(
        0,
        || Ok(handle::get::<Arc<RegionCell>>(region, REGION)?.len),
    )
}

/// The backend tracking the region: a concrete `PS_TRACKING_*` constant, never
/// PS_TRACKING_AUTO. -1 if `region` is not a live handle.
#[no_mangle]
pub extern "C" fn ps_region_tracking(region: *const ps_region) -> c_int {
    call(-1, || {
        Ok(tracking::to_c(
            handle::get::<Arc<RegionCell>>(region, REGION)?.tracking,
        ))
    })
}

/// Unmaps the region and releases its handle. Snapshots taken from it stay valid.
/// NULL is a no-op (returns 0); -1 for a handle that is not live (e.g. freed twice).
/// If another thread is inside a call on this region, the memory is unmapped when
/// that call returns.
#[no_mangle]
pub extern "C" fn ps_region_free(region: *mut ps_region) -> c_int {
    call(-1, || {
        handle::remove::<Arc<RegionCell>>(region, REGION).map(|_| 0)
    })
}

/// Takes a snapshot of the region's contents: costs what was written since the last
/// snapshot or restore, not the region's size. Writers must be quiescent during the
/// call. NULL on failure.
///
/// Ownership: the caller owns the returned handle and frees it with
/// ps_snapshot_free(). The snapshot outlives the region it came from.
#[no_mangle]
pub extern "C" fn ps_snapshot_take(region: *mut ps_region) -> *mut ps_snapshot {
    call(std::ptr::null_mut(), || {
        let r: Arc<RegionCell> = handle::get(region, REGION)?;
        let _heap = r.heap_lock();
        let snap = measure(&r, OP_SNAPSHOT, |region| region.snapshot())?;
        Ok(handle::insert(snap))
    })
}

/// Makes the region's contents equal to `snap`, writing back only the pages that
/// differ; `snap` becomes the region's sync point. `snap` may come from any region
/// of the same length (another store costs a copy). Writers must be quiescent.
/// Returns 0, or -1 (dead handles, a snapshot of another length, a kernel error);
/// after a length mismatch the region is unchanged.
#[no_mangle]
pub extern "C" fn ps_restore(region: *mut ps_region, snap: *const ps_snapshot) -> c_int {
    call(-1, || {
        let r: Arc<RegionCell> = handle::get(region, REGION)?;
        let s: Snapshot = handle::get(snap, "snap (ps_snapshot *)")?;
        let _heap = r.heap_lock();
        measure(&r, OP_RESTORE, |region| region.restore(&s))?;
        Ok(0)
    })
}

/// A new region whose contents equal `snap`: a *clone*, ready in time that does
/// not grow with its length (a private mapping of the snapshot's image; pages come
/// in on first touch). Clones of one snapshot share every page none of them has
/// written; writes in a clone reach neither the snapshot, nor other clones, nor
/// the region the snapshot came from. The clone tracks with `tracking` (a
/// `PS_TRACKING_*` constant), keeps its snapshots in `snap`'s store, and
/// ps_region_reset() takes it back to `snap`. The first clone of a snapshot writes
/// its non-zero pages once into a memory file that later clones reuse; it lives
/// as long as the snapshot does. NULL on failure (dead handle, bad tracking,
/// memfd or mmap failure).
///
/// Ownership: the caller owns the handle and frees it with ps_region_free(). The
/// clone keeps `snap` alive; `snap` may be freed before it.
#[no_mangle]
pub extern "C" fn ps_snapshot_instantiate(
    snap: *const ps_snapshot,
    tracking: c_int,
) -> *mut ps_region {
    call(std::ptr::null_mut(), || {
        let s: Snapshot = handle::get(snap, "snap (ps_snapshot *)")?;
        let tracking = tracking::from_c(tracking)?;
        let region = s.instantiate_with(Region::builder(s.len()).tracking(tracking))?;
        Ok(handle::insert(Arc::new(RegionCell::new(region))))
    })
}

/// As ps_snapshot_instantiate(), with the clone mapped at exactly `addr`
/// (page-aligned). At ps_snapshot_origin(snap), every pointer the snapshot holds
/// into its own region is valid in the clone: a heap (ps_heap_*), an
/// interpreter's state. This is how a fresh process continues state another
/// process saved: ps_snapshot_load(), then ps_snapshot_instantiate_at(snap,
/// ps_snapshot_origin(snap), ...), then ps_heap_root(). Never replaces a
/// mapping: a range in use is an error (PS_ERR_ADDRESS_TAKEN) and changes
/// nothing. NULL on failure.
///
/// Ownership: as ps_snapshot_instantiate().
#[no_mangle]
pub extern "C" fn ps_snapshot_instantiate_at(
    snap: *const ps_snapshot,
    addr: *mut c_void,
    tracking: c_int,
) -> *mut ps_region {
    call(std::ptr::null_mut(), || {
        let s: Snapshot = handle::get(snap, "snap (ps_snapshot *)")?;
        let tracking = tracking::from_c(tracking)?;
        let region = s.instantiate_with(
            Region::builder(s.len())
                .tracking(tracking)
                .at(addr as usize),
        )?;
        Ok(handle::insert(Arc::new(RegionCell::new(region))))
    })
}

/// Takes a clone (from ps_snapshot_instantiate()) back to the snapshot it was made
/// from, in time proportional to the pages written since: those pages are dropped
/// and the snapshot's image shows through again. That snapshot becomes the sync
/// point; tracking stays exact. Writers must be quiescent. Returns 0, or -1 (dead
/// handle, a region made by ps_region_new() — it has nothing to go back to, use
/// ps_restore() — or a kernel error).
#[no_mangle]
pub extern "C" fn ps_region_reset(region: *mut ps_region) -> c_int {
    call(-1, || {
        let r: Arc<RegionCell> = handle::get(region, REGION)?;
        let _heap = r.heap_lock();
        measure(&r, OP_RESET, |region| region.reset())?;
        Ok(0)
    })
}

/// Lets go of the region's last sync point (the snapshot last taken or restored),
/// so that the store can free every page no live ps_snapshot handle holds: a
/// long-lived region otherwise keeps its last snapshot's pages in the store. The
/// contents and tracking are untouched; the next ps_snapshot_take(), ps_restore()
/// or background snapshot first reads the whole region once, since nothing is
/// left to compare it with. A clone keeps the snapshot it was made from for
/// ps_region_reset(). Waits for a running background snapshot of the region.
/// Returns 0, or -1 (dead handle, a converging snapshot running, in a forked
/// child).
///
/// Thread safety: callable from any thread; it takes the region's lock, as
/// ps_snapshot_take() does, so calls on one region take turns. Ownership:
/// frees nothing the caller holds; ps_snapshot handles stay valid.
#[no_mangle]
pub extern "C" fn ps_region_release_sync_point(region: *mut ps_region) -> c_int {
    call(-1, || {
        let r: Arc<RegionCell> = handle::get(region, REGION)?;
        let _heap = r.heap_lock();
        let mut region = r.lock()?;
        region.release_sync_point()?;
        Ok(0)
    })
}
