//! The bytes of a C heap (`ps_heap_*`) inside its region: the allocator (talc,
//! as in the Rust `Arena`), its statistics and the root slots at the region's
//! start, a 16-byte header before every block.
//!
//! ```text
//!  region (ps_region_ptr)
//!  ┌─────────────────────────────┬──────────────────────────────────────────────┐
//!  │ HeapHeader                  │ talc's span: its bin table, then blocks:     │
//!  │  magic, base, len           │   ┌─────────────────┬───────────────────────┐│
//!  │  in_use, peak, allocations  │   │ usable │ check  │ user bytes (usable)   ││
//!  │  roots[16]                  │   └─────────────────┴───────────────────────┘│
//!  │  Talc { bins, counters }    │     block header      ▲ ps_heap_alloc()      │
//!  └─────────────────────────────┴──────────────────────────────────────────────┘
//! ```
//!
//! Every byte of allocator state lies in the region, and every pointer in it is an
//! absolute address inside the region, so `ps_restore` rolls the free lists, the
//! statistics and the roots back with the data. The header records the address
//! it was formatted at: a copy mapped elsewhere is refused rather than followed.
//!
//! # Safety
//!
//! A [`LockedHeap`] is built from a live `RegionCell` (its `Arc` held by the
//! caller, so the mapping outlives the value) while holding the region's heap
//! lock (so it is the only `&mut` to the header and talc in this process).
//! Bytes are reached only through raw pointers inside `[base, base + len)`.
//! Whatever the C caller has written into the region, the header is trusted only
//! after its magic, base and length match; a block is trusted only after its
//! address is inside talc's span, 16-aligned, and its header's check word
//! matches (a pointer not from `ps_heap_alloc` on this heap, or freed already,
//! is refused — with overwhelming probability, not certainty: C callers who
//! scribble on block headers can still break the heap, as with malloc).
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::mem::size_of;
use std::ptr::{self, NonNull};
use std::sync::MutexGuard;
use talc::base::{binning::DefaultBinning, Talc};
use talc::source::Manual;

type TalcState = Talc<Manual, DefaultBinning>;

/// "pgsnCHEP" little-endian: a formatted C heap.
const MAGIC: u64 = 0x5045_4843_6e73_6770;
/// Mixed into each block's check word.
const BLOCK_MAGIC: u64 = 0x9e37_79b9_7f4a_7c15;
/// Alignment of every block, and the size of its header.
pub(crate) const ALIGN: usize = 16;
/// Root slots in the header.
pub(crate) const ROOTS: usize = 16;

#[repr(C)]
struct HeapHeader {
    magic: u64,
    /// The region's address when formatted.
    base: usize,
    /// The region's length when formatted.
    len: usize,
    /// Sum of the usable sizes of live blocks.
    in_use: u64,
    /// The largest `in_use` ever reached (since ps_heap_init, as restored).
    peak: u64,
    /// Live blocks.
    allocations: u64,
    roots: [usize; ROOTS],
    talc: TalcState,
}

/// The block header before each user pointer.
#[repr(C)]
struct Block {
    /// Bytes the caller may use (a multiple of 16).
    usable: u64,
    /// `usable ^ address ^ BLOCK_MAGIC` while live, 0 once freed.
    check: u64,
}

const _: () = assert!(size_of::<Block>() == ALIGN);

fn header_len() -> usize {
    size_of::<HeapHeader>().next_multiple_of(64)
}

/// The smallest region that holds the heap's state and one small block.
pub(crate) fn min_len() -> usize {
    header_len() + talc::min_first_heap_size::<DefaultBinning>() + 256
}

/// Why a heap call was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeapError {
    #[error("the region holds no heap: call ps_heap_init() on it first")]
    NotFormatted,
    #[error("the heap in this region was formatted at {formatted:#x}, but the region is at {now:#x}: its pointers name the other address; map its snapshot at its origin with ps_snapshot_instantiate_at() (ps_snapshot_origin() gives it)")]
    Moved { formatted: usize, now: usize },
    #[error(
        "a region of {len} bytes is too small for a heap: ps_heap_init() needs at least {needed}"
    )]
    TooSmall { len: usize, needed: usize },
    #[error("pointer {ptr:#x} is not a live block of this heap (not returned by ps_heap_alloc/ps_heap_calloc/ps_heap_realloc on this region, or freed already)")]
    NotABlock { ptr: usize },
    #[error("root slot {slot} is out of range: slots are 0..{}", ROOTS - 1)]
    BadSlot { slot: u32 },
    #[error(
        "a root must be NULL or point into the region [{base:#x}, {end:#x}); {ptr:#x} does not"
    )]
    RootOutside { ptr: usize, base: usize, end: usize },
    #[error("the heap is full: no free block of {size} bytes (in use {in_use} of {heap} bytes)")]
    Full {
        size: usize,
        in_use: u64,
        heap: usize,
    },
    #[error("a request of {n} x {size} bytes overflows size_t")]
    Overflow { n: usize, size: usize },
}

/// Statistics read from the header.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) in_use: u64,
    pub(crate) peak: u64,
    pub(crate) allocations: u64,
    pub(crate) available: u64,
    pub(crate) heap: u64,
}

/// Exclusive access to the heap formatted (or to be formatted) in one region.
pub(crate) struct LockedHeap<'a> {
    base: NonNull<u8>,
    len: usize,
    _lock: MutexGuard<'a, ()>,
}

impl<'a> LockedHeap<'a> {
    /// Access to the heap of the region at `base`, `len` bytes, with its heap lock
    /// held by `lock`.
    ///
    /// # Safety
    /// `[base, base + len)` is a live read-write mapping for `'a` (the caller
    /// holds the region), and `lock` is that region's heap lock.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize, lock: MutexGuard<'a, ()>) -> Self {
        LockedHeap {
            base,
            len,
            _lock: lock,
        }
    }

    fn header(&self) -> *mut HeapHeader {
        self.base.as_ptr().cast()
    }

    fn end(&self) -> usize {
        self.base.as_ptr() as usize + self.len
    }

    /// Formats the region as an empty heap, whatever it held.
    pub(crate) fn init(&mut self) -> Result<(), HeapError> {
        if self.len < min_len() {
            return Err(HeapError::TooSmall {
                len: self.len,
                needed: min_len(),
            });
        }
        let h = self.header();
        let hl = header_len();
        // SAFETY: the region is at least `min_len() > header_len()` bytes (checked)
        // and page-aligned, so `h` is valid and aligned for a HeapHeader; we hold
        // the heap lock, so nothing else in this process uses these bytes as a heap.
        let claimed = unsafe {
            ptr::write(
                h,
                HeapHeader {
                    magic: 0,
                    base: self.base.as_ptr() as usize,
                    len: self.len,
                    in_use: 0,
                    peak: 0,
                    allocations: 0,
                    roots: [0; ROOTS],
                    talc: TalcState::new(Manual),
                },
            );
            // The span past the header lies inside the region and only talc uses it.
            (*h).talc.claim(self.base.as_ptr().add(hl), self.len - hl)
        };
        if claimed.is_none() {
            return Err(HeapError::TooSmall {
                len: self.len,
                needed: min_len(),
            });
        }
        // SAFETY: as above; the magic goes last so a failed init leaves no heap.
        unsafe { (*h).magic = MAGIC };
        Ok(())
    }

    /// Checks the header names this heap at this address.
    pub(crate) fn check(&self) -> Result<(), HeapError> {
        let h = self.header();
        // SAFETY: the region is at least one page, more than the three words read;
        // plain reads of integers (any bit pattern is a valid u64/usize).
        let (magic, base, len) = unsafe { ((*h).magic, (*h).base, (*h).len) };
        if magic != MAGIC || self.len < min_len() {
            return Err(HeapError::NotFormatted);
        }
        let now = self.base.as_ptr() as usize;
        if base != now {
            return Err(HeapError::Moved {
                formatted: base,
                now,
            });
        }
        if len != self.len {
            return Err(HeapError::NotFormatted);
        }
        Ok(())
    }

    /// Runs `f` on talc and the header, once `check` passed.
    fn with<R>(&mut self, f: impl FnOnce(&mut HeapHeader) -> R) -> Result<R, HeapError> {
        self.check()?;
        // SAFETY: the header is a formatted heap at this address (checked), and
        // the heap lock makes this the only reference to it in this process.
        Ok(f(unsafe { &mut *self.header() }))
    }

    /// A new block of at least `size` bytes (0 counts as 1), 16-aligned.
    pub(crate) fn alloc(&mut self, size: usize) -> Result<NonNull<u8>, HeapError> {
        let full = |h: &HeapHeader| HeapError::Full {
            size,
            in_use: h.in_use,
            heap: h.len,
        };
        self.with(|h| {
            let usable = usable_for(size).ok_or_else(|| full(h))?;
            let layout = block_layout(usable).ok_or_else(|| full(h))?;
            // SAFETY: the layout's size is at least 16, non-zero as talc demands.
            let block = unsafe { h.talc.allocate(layout) }.ok_or_else(|| full(h))?;
            // SAFETY: talc returned a live, 16-aligned chunk of `usable + 16` bytes
            // inside the region; the block header is its first 16.
            unsafe { write_block(block, usable) };
            h.in_use += usable as u64;
            h.peak = h.peak.max(h.in_use);
            h.allocations += 1;
            // SAFETY: the user bytes start 16 bytes into the chunk.
            Ok(unsafe { NonNull::new_unchecked(block.as_ptr().add(ALIGN)) })
        })?
    }

    /// The block header of user pointer `ptr`, if it is a live block: (block, usable).
    fn block(&self, ptr: *const u8) -> Result<(NonNull<u8>, usize), HeapError> {
        let bad = HeapError::NotABlock { ptr: ptr as usize };
        let p = ptr as usize;
        let first = self.base.as_ptr() as usize + header_len() + ALIGN;
        if p < first || p >= self.end() || p % ALIGN != 0 {
            return Err(bad);
        }
        let block = (p - ALIGN) as *mut Block;
        // SAFETY: `block` is 16-aligned and its 16 bytes lie inside the region,
        // past the header (checked above); integers have no invalid bit patterns.
        let (usable, check) = unsafe { ((*block).usable, (*block).check) };
        let fits = (usable as usize)
            .checked_add(p)
            .is_some_and(|e| e <= self.end());
        if check != usable ^ (block as u64) ^ BLOCK_MAGIC || !fits || usable == 0 {
            return Err(bad);
        }
        // SAFETY: inside the region, so non-null.
        Ok((
            unsafe { NonNull::new_unchecked(block.cast()) },
            usable as usize,
        ))
    }

    /// Frees a block from `alloc`/`realloc`.
    pub(crate) fn free(&mut self, ptr: *mut u8) -> Result<(), HeapError> {
        self.check()?;
        let (block, usable) = self.block(ptr)?;
        self.with(|h| {
            let layout = block_layout(usable).expect("a live block's layout was valid");
            // SAFETY: `block` is a live chunk talc gave out with this layout (its
            // check word matched); clearing the check first makes a second free
            // of it an error.
            unsafe {
                (*block.as_ptr().cast::<Block>()).check = 0;
                h.talc.deallocate(block.as_ptr(), layout);
            }
            h.in_use -= usable as u64;
            h.allocations -= 1;
        })
    }

    /// Resizes a block, moving it when it cannot grow in place; on failure the
    /// block is unchanged.
    pub(crate) fn realloc(&mut self, ptr: *mut u8, size: usize) -> Result<NonNull<u8>, HeapError> {
        self.check()?;
        let (block, old) = self.block(ptr)?;
        let Some(new) = usable_for(size) else {
            return self.alloc(size); // reports Full with the figures
        };
        let old_layout = block_layout(old).expect("a live block's layout was valid");
        let resized = self.with(|h| {
            let done = if new < old {
                // SAFETY: live block with `old_layout`; the new size is non-zero and smaller.
                unsafe { h.talc.shrink(block.as_ptr(), old_layout, new + ALIGN) };
                true
            } else {
                // SAFETY: live block with `old_layout`; the new size is larger or equal.
                new == old
                    || unsafe {
                        h.talc
                            .try_grow_in_place(block.as_ptr(), old_layout, new + ALIGN)
                    }
            };
            if done {
                // SAFETY: the chunk is now `new + 16` bytes at the same place.
                unsafe { write_block(block, new) };
                h.in_use = h.in_use - old as u64 + new as u64;
                h.peak = h.peak.max(h.in_use);
            }
            done
        })?;
        if resized {
            return Ok(NonNull::new(ptr).expect("checked non-null above"));
        }
        let moved = self.alloc(size)?;
        // SAFETY: both are live blocks of this heap, distinct (the old one is still
        // allocated), with at least `old` usable bytes each (new > old).
        unsafe { ptr::copy_nonoverlapping(ptr, moved.as_ptr(), old) };
        self.free(ptr)?;
        Ok(moved)
    }

    /// Bytes usable at `ptr` (at least what was asked, a multiple of 16).
    pub(crate) fn usable_size(&mut self, ptr: *const u8) -> Result<usize, HeapError> {
        self.check()?;
        Ok(self.block(ptr)?.1)
    }

    /// Stores `ptr` in root slot `slot`.
    pub(crate) fn set_root(&mut self, slot: u32, ptr: *mut u8) -> Result<(), HeapError> {
        let (base, end) = (self.base.as_ptr() as usize, self.end());
        let p = ptr as usize;
        if !ptr.is_null() && !(base..end).contains(&p) {
            return Err(HeapError::RootOutside { ptr: p, base, end });
        }
        let i = slot_index(slot)?;
        self.with(|h| h.roots[i] = p)
    }

    /// The pointer in root slot `slot` (NULL if never set).
    pub(crate) fn root(&mut self, slot: u32) -> Result<*mut u8, HeapError> {
        let i = slot_index(slot)?;
        self.with(|h| h.roots[i] as *mut u8)
    }

    /// The header's statistics.
    pub(crate) fn counters(&mut self) -> Result<Counters, HeapError> {
        self.with(|h| {
            let c = h.talc.counters();
            Counters {
                in_use: h.in_use,
                peak: h.peak,
                allocations: h.allocations,
                available: c.available_bytes as u64,
                heap: c.claimed_bytes as u64,
            }
        })
    }
}

fn slot_index(slot: u32) -> Result<usize, HeapError> {
    let i = slot as usize;
    if i < ROOTS {
        Ok(i)
    } else {
        Err(HeapError::BadSlot { slot })
    }
}

/// The usable size for a request: at least 16, a multiple of 16.
fn usable_for(size: usize) -> Option<usize> {
    let usable = size.max(1).checked_next_multiple_of(ALIGN)?;
    // The block's layout (header included) must exist too: past it, the sizes
    // given to talc would wrap.
    block_layout(usable).map(|_| usable)
}

/// talc's layout of a block with `usable` user bytes.
fn block_layout(usable: usize) -> Option<Layout> {
    Layout::from_size_align(usable.checked_add(ALIGN)?, ALIGN).ok()
}

/// Writes the header of the block at `block` with `usable` user bytes.
///
/// # Safety
/// `block` is a live talc chunk of at least `usable + 16` bytes, 16-aligned.
unsafe fn write_block(block: NonNull<u8>, usable: usize) {
    let b = block.as_ptr().cast::<Block>();
    // SAFETY: the chunk's first 16 bytes are ours (caller's contract).
    unsafe {
        b.write(Block {
            usable: usable as u64,
            check: usable as u64 ^ (b as u64) ^ BLOCK_MAGIC,
        })
    };
}
