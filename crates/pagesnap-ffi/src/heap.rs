//! `ps_heap_*`: a malloc-style heap whose whole state lives in a region, so
//! `ps_restore` rolls the allocator back with the data (the C face of the Rust
//! `Arena`; layout in `heap_layout.rs`).

use crate::handle;
use crate::region::{ps_region, RegionCell};
use crate::status::{call, CallError};
use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

const REGION: &str = "region (ps_region *)";

/// What a heap holds, filled in by ps_heap_stats(). The figures live in the
/// region, so a restore rolls them back with the heap.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ps_heap_usage {
    /// Bytes in live blocks (usable sizes: requests rounded up to 16).
    pub in_use_bytes: u64,
    /// The most `in_use_bytes` has been since ps_heap_init().
    pub peak_bytes: u64,
    /// Live blocks.
    pub allocations: u64,
    /// Bytes still free for blocks (possibly fragmented; each block also costs a
    /// 16-byte header).
    pub free_bytes: u64,
    /// Bytes the allocator manages: the region less the heap's own state.
    pub heap_bytes: u64,
}

fn region(region: *const ps_region) -> Result<Arc<RegionCell>, CallError> {
    handle::get(region, REGION)
}

/// Formats the region as an empty heap, discarding whatever the region held there
/// (any earlier heap and its blocks included). The allocator's state, statistics
/// and root slots are kept at the region's start, so ps_restore() and
/// ps_region_reset() roll them back with the data. Returns 0, or -1 (dead handle,
/// a region too small for the heap's state: a few KiB).
///
/// Address rule: every pointer the heap hands out (and its own state) names the
/// region's address. A snapshot of the heap is only usable at that address:
/// ps_restore() into the same region, or ps_snapshot_instantiate_at() /
/// ps_region_new_at() at ps_snapshot_origin(). Heap calls on a copy mapped
/// elsewhere fail rather than follow pointers into another mapping.
#[no_mangle]
pub extern "C" fn ps_heap_init(region: *mut ps_region) -> c_int {
    call(-1, || {
        let r = self::region(region)?;
        r.heap().init()?;
        Ok(0)
    })
}

/// A block of at least `size` bytes (0 counts as 1), 16-byte aligned, inside the
/// region; its contents are unspecified. NULL when no free block is large enough
/// (ps_last_error() says so) or the region holds no heap. Never writes outside
/// the region.
///
/// Thread safety: any thread may call any ps_heap_* function on a region at any
/// time; calls on one region take turns on its heap lock. ps_snapshot_take(),
/// ps_restore(), ps_region_reset() and the start of a background snapshot or
/// save take that lock too, so they never see half an allocation.
///
/// Ownership: the block belongs to the caller until ps_heap_free(); it lives in
/// the region, so ps_restore() to a snapshot taken before the allocation frees
/// it (and one taken after brings it back).
#[no_mangle]
pub extern "C" fn ps_heap_alloc(region: *mut ps_region, size: usize) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        Ok(self::region(region)?.heap().alloc(size)?.as_ptr().cast())
    })
}

/// As ps_heap_alloc() for `n * size` bytes, all zero. NULL when the product
/// overflows size_t or the heap is full.
#[no_mangle]
pub extern "C" fn ps_heap_calloc(region: *mut ps_region, n: usize, size: usize) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        let total = n
            .checked_mul(size)
            .ok_or(crate::heap_layout::HeapError::Overflow { n, size })?;
        let p = self::region(region)?.heap().alloc(total)?;
        // SAFETY: `p` is a fresh block of at least `total` bytes inside the
        // region, which the caller has not seen yet.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, total) };
        Ok(p.as_ptr().cast())
    })
}

/// Resizes the block at `ptr` to at least `size` bytes, keeping its contents up to
/// the smaller size; the block may move (the old pointer is then invalid). As
/// realloc(3): `ptr` NULL allocates; `size` 0 frees `ptr` and returns NULL. NULL
/// on failure, leaving the block untouched (heap full, or `ptr` not a live block
/// of this region's heap).
#[no_mangle]
pub extern "C" fn ps_heap_realloc(
    region: *mut ps_region,
    ptr: *mut c_void,
    size: usize,
) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        let r = self::region(region)?;
        let mut heap = r.heap();
        if ptr.is_null() {
            return Ok(heap.alloc(size)?.as_ptr().cast());
        }
        if size == 0 {
            heap.free(ptr.cast())?;
            return Ok(std::ptr::null_mut());
        }
        Ok(heap.realloc(ptr.cast(), size)?.as_ptr().cast())
    })
}

/// Frees a block from ps_heap_alloc(), ps_heap_calloc() or ps_heap_realloc() on
/// this region. NULL is a no-op. A pointer that is not a live block of this heap
/// (freed already, from another heap or from malloc) is refused and reported in
/// ps_last_error(), the heap left unchanged.
#[no_mangle]
pub extern "C" fn ps_heap_free(region: *mut ps_region, ptr: *mut c_void) {
    call((), || {
        if ptr.is_null() {
            return Ok(());
        }
        self::region(region)?.heap().free(ptr.cast())?;
        Ok(())
    })
}

/// The bytes usable at `ptr` (at least what was asked, a multiple of 16), as
/// malloc_usable_size(3). 0 if `ptr` is NULL or not a live block of this heap.
#[no_mangle]
pub extern "C" fn ps_heap_usable_size(region: *mut ps_region, ptr: *const c_void) -> usize {
    call(0, || {
        if ptr.is_null() {
            return Ok(0);
        }
        Ok(self::region(region)?.heap().usable_size(ptr.cast())?)
    })
}

/// Stores `ptr` in root slot `slot` (0..15) of the heap: the way back to your data
/// after a restore, or in another process that instantiated a snapshot at its
/// origin. The slots live in the region and roll back with it. `ptr` must be NULL
/// or point into the region. Returns 0, or -1 (dead handle, no heap, slot out of
/// range, pointer outside the region).
#[no_mangle]
pub extern "C" fn ps_heap_set_root(
    region: *mut ps_region,
    slot: c_uint,
    ptr: *mut c_void,
) -> c_int {
    call(-1, || {
        self::region(region)?.heap().set_root(slot, ptr.cast())?;
        Ok(0)
    })
}

/// The pointer in root slot `slot` (0..15), NULL if none was set (or on error:
/// dead handle, no heap, slot out of range; ps_last_error() tells them apart).
#[no_mangle]
pub extern "C" fn ps_heap_root(region: *const ps_region, slot: c_uint) -> *mut c_void {
    call(std::ptr::null_mut(), || {
        Ok(self::region(region)?.heap().root(slot)?.cast())
    })
}

/// Fills `*out` with the heap's statistics (in the region: they roll back with
/// the heap). Returns 0, or -1 (dead handle, no heap, NULL out).
///
/// # Safety
/// `out` is NULL or points to a writable ps_heap_usage.
#[no_mangle]
pub unsafe extern "C" fn ps_heap_stats(region: *const ps_region, out: *mut ps_heap_usage) -> c_int {
    call(-1, || {
        let c = self::region(region)?.heap().counters()?;
        if out.is_null() {
            return Err(CallError::Null {
                arg: "out (ps_heap_usage *)",
            });
        }
        let stats = ps_heap_usage {
            in_use_bytes: c.in_use,
            peak_bytes: c.peak,
            allocations: c.allocations,
            free_bytes: c.available,
            heap_bytes: c.heap,
        };
        // SAFETY: `out` is non-NULL (checked) and writable by the contract.
        unsafe { out.write(stats) };
        Ok(0)
    })
}
