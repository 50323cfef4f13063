//! The allocator state of an [`Arena`], kept inside the region it manages.
//!
//! ```text
//!  region (one mmap; never moves while the Heap lives)
//!  ┌────────────────────────────────────┬───────────────────────────────────────────┐
//!  │ Header                             │ talc heap: its bin table first, then      │
//!  │  magic, root pointer               │ chunks (user data) and gaps (free-list    │
//!  │  Talc { avails, gap_lists, ..}     │ nodes and boundary tags)                  │
//!  └────────────────────────────────────┴───────────────────────────────────────────┘
//!    ▲ Arena<'a> is a pointer to this header, nothing more
//! ```
//!
//! Every byte of allocator state — the `Talc` struct, its bin table, free-list nodes,
//! boundary tags, counters, and the pointer to the heap's root object — lies inside
//! the region, and every pointer in it is an absolute address inside the region.
//! A restore therefore rolls the allocator back together with the data it describes:
//! after `restore(&s)` the free lists are exactly those of the moment `s` was taken.
//!
//! # Safety
//!
//! The unsafe code here rests on four facts established by safe code above it:
//!
//! 1. `RawHeap` owns its region (mapped read-write, never moved) and no one else can
//!    reach its bytes; `Arena<'a>` handles only exist inside closures that borrow the
//!    `RawHeap` (the brand `'a` keeps them there), so the mapping outlives them.
//! 2. The region's bytes are only replaced wholesale by a restore of a snapshot
//!    (or full copy) that this very heap took at a point where no closure ran, so the
//!    header and heap are always a state talc itself produced, at this address.
//!    Which heap took a snapshot is not read from its bytes (a clone or a fresh
//!    region can hold any bytes, a header's included): each heap has a token
//!    unique in the process, stamps it on every [`Snapshot`] handle and
//!    [`FullCopy`](crate::FullCopy) it hands out (fields safe code cannot set),
//!    and restores only those carrying it.
//! 3. `Arena` is neither `Send` nor `Sync` (it holds a `NonNull`), and talc never calls
//!    back into user code, so at most one `&mut Talc` exists at any instant.
//! 4. Types stored in the heap implement [`InArena`]: they own nothing outside the
//!    arena, so overwriting them with older bytes cannot leak, double-free or dangle
//!    anything outside the region.
#![allow(unsafe_code)]

use allocator_api2::alloc::{AllocError, Allocator};
use std::alloc::{GlobalAlloc, Layout};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};
use talc::base::{binning::DefaultBinning, Talc};
use talc::source::Manual;

use crate::error::{Error, Result};
use crate::heap::Family;
use crate::region::Region;
use crate::snapshot::Snapshot;

type TalcState = Talc<Manual, DefaultBinning>;

/// "pgsnARNA" little-endian: marks a formatted header.
const MAGIC: u64 = 0x414e_5241_6e73_6770;

/// The first bytes of the region.
#[repr(C)]
struct Header {
    /// Marks a formatted region (for anyone reading a snapshot's bytes; the heap
    /// itself never trusts them, see fact 2).
    magic: u64,
    /// The root object, null until `set_root`.
    root: *mut u8,
    talc: TalcState,
}

fn header_len() -> usize {
    size_of::<Header>().next_multiple_of(64)
}

/// The smallest region that holds the header and talc's first heap.
pub(crate) fn min_len() -> usize {
    header_len() + talc::min_first_heap_size::<DefaultBinning>() + 256
}

/// The untyped-free core of a [`Heap`](crate::Heap): the region, the allocator state
/// formatted inside it, and the root object of type `F::Of<'_>`.
///
/// Owning the region here keeps fact 1 of the module doc local: the mapping lives
/// exactly as long as this value, and nothing outside this file can reach its bytes.
pub(crate) struct RawHeap<F: Family> {
    region: Region,
    header: NonNull<Header>,
    /// Unique in the process: stamped on every snapshot and copy this heap hands
    /// out, and required of every one it restores (fact 2).
    token: u64,
    _root: PhantomData<fn() -> F>,
}

impl<F: Family> RawHeap<F> {
    /// Formats `region` (any contents) as an arena and builds the root in it with
    /// `init`.
    pub(crate) fn new(
        region: Region,
        token: u64,
        init: impl for<'a> FnOnce(Arena<'a>) -> F::Of<'a>,
    ) -> Result<Self> {
        let len = region.len();
        let too_small = |extra: usize| Error::HeapTooSmall {
            len,
            needed: min_len() + extra,
        };
        if len < min_len() {
            return Err(too_small(size_of::<F::Of<'static>>()));
        }
        let base = region.as_ptr();
        let header = base.cast::<Header>();
        // SAFETY: `base` is page-aligned (an mmap), so aligned for `Header`; the
        // region is at least `min_len() > header_len()` bytes (checked) and owned
        // by us alone (we hold it by value).
        unsafe {
            ptr::write(
                header,
                Header {
                    magic: MAGIC,
                    root: ptr::null_mut(),
                    talc: TalcState::new(Manual),
                },
            );
        }
        let hl = header_len();
        // SAFETY: `header` was just initialised; the span `base+hl..base+len` lies
        // inside the region, past the header, and only talc will touch it until it
        // hands chunks out (the region is owned by the value we are building), which
        // is what `Talc::claim` requires.
        let claimed = unsafe { (*header).talc.claim(base.add(hl), len - hl) };
        if claimed.is_none() {
            return Err(too_small(size_of::<F::Of<'static>>()));
        }
        let heap = RawHeap {
            region,
            // SAFETY: an mmap'd address is never null.
            header: unsafe { NonNull::new_unchecked(header) },
            token,
            _root: PhantomData,
        };
        let value = init(heap.arena());
        let layout = Layout::new::<F::Of<'static>>();
        let Ok(slot) = heap.arena().allocate(layout) else {
            return Err(too_small(layout.size() + layout.align()));
        };
        let slot = slot.cast::<F::Of<'_>>();
        // SAFETY: `slot` is a fresh arena block of `Layout::new::<F::Of<'_>>()`
        // (lifetimes do not change layout), or a dangling aligned pointer for a
        // zero-sized root, which `write` accepts.
        unsafe { ptr::write(slot.as_ptr(), value) };
        // SAFETY: header initialised; no other reference to it exists.
        unsafe { (*heap.header.as_ptr()).root = slot.as_ptr().cast() };
        Ok(heap)
    }

    /// A handle with a fresh brand: the caller's closure is generic over `'a`.
    fn arena<'a>(&self) -> Arena<'a> {
        Arena {
            header: self.header,
            _brand: PhantomData,
        }
    }

    fn root(&self) -> *mut u8 {
        // SAFETY: the header is initialised and mapped (facts 1, 2); reading a
        // plain field through the raw pointer creates no lasting reference.
        unsafe { (*self.header.as_ptr()).root }
    }

    /// Runs `f` on the root, shared.
    pub(crate) fn with<R>(&self, f: impl for<'a> FnOnce(&'a F::Of<'a>) -> R) -> R {
        // SAFETY: `new` stored a valid `F::Of<'_>` at `root`, and every state a
        // restore can bring back is one `new`/`with_mut` left behind (fact 2), with
        // nothing owned outside the region (fact 4). The reference lives for the
        // borrow of `self`, which keeps `with_mut`, `snapshot` and `restore` out.
        let root = unsafe { &*self.root().cast::<F::Of<'_>>() };
        f(root)
    }

    /// Runs `f` on the root, exclusive.
    pub(crate) fn with_mut<R>(&mut self, f: impl for<'a> FnOnce(&'a mut F::Of<'a>) -> R) -> R {
        // SAFETY: as in `with`; `&mut self` makes this the only reference.
        let root = unsafe { &mut *self.root().cast::<F::Of<'_>>() };
        f(root)
    }

    /// Allocation statistics (they live in the region and roll back with it).
    pub(crate) fn counters(&self) -> talc::base::Counters {
        self.arena().talc(|t| *t.counters())
    }

    /// The region (read-only metadata; its bytes stay private to this file).
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// Snapshot of the whole region. `&mut self`: no closure is running, so the
    /// state is one talc and the root's methods left consistent.
    pub(crate) fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(self.region.snapshot()?.of_heap(self.token))
    }

    /// This heap's token: what its snapshots and copies carry (fact 2).
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// Restores a snapshot this heap handed out (its handle carries the token).
    pub(crate) fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if snap.len() != self.region.len() {
            return Err(Error::LengthMismatch {
                snapshot: snap.len(),
                region: self.region.len(),
            });
        }
        if snap.heap_token() != self.token {
            return Err(Error::ForeignSnapshot);
        }
        self.region.restore(snap)
    }

    /// Copies the whole region into `dst` (resized to the region's length).
    pub(crate) fn copy_into(&self, dst: &mut Vec<u8>) {
        dst.resize(self.region.len(), 0);
        dst.copy_from_slice(self.region.as_slice());
    }

    /// Writes `src` back over the whole region: a `copy_into` of the heap whose
    /// token is `from`, which must be this one.
    pub(crate) fn restore_bytes(&mut self, src: &[u8], from: u64) -> Result<()> {
        if src.len() != self.region.len() {
            return Err(Error::LengthMismatch {
                snapshot: src.len(),
                region: self.region.len(),
            });
        }
        if from != self.token {
            return Err(Error::ForeignSnapshot);
        }
        self.region.as_mut_slice().copy_from_slice(src);
        Ok(())
    }
}

/// The allocator of a [`Heap`](crate::Heap): a copyable handle to state that lives
/// inside the heap's region.
///
/// `'a` is a *brand*: each `Heap::with`/`with_mut` call makes a fresh, unnameable
/// `'a`, so nothing allocated in the arena — no `Vec<_, Arena<'a>>`, no `Arena<'a>`
/// — can leave the closure or be mixed into another heap. That is how the borrow
/// checker guarantees no reference into the region outlives a restore.
///
/// Implements allocator-api2's [`Allocator`] (the version hashbrown uses) and
/// [`GlobalAlloc`]. Running out of arena memory is an allocation failure: `Err` from
/// fallible calls (`try_reserve`, `Box::try_new_in`, …), and the standard
/// `handle_alloc_error` (abort with a message) from infallible ones — never a write
/// outside the arena.
#[derive(Clone, Copy)]
pub struct Arena<'a> {
    header: NonNull<Header>,
    /// Invariant in `'a`: brands cannot be shortened or lengthened into each other.
    _brand: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl Arena<'_> {
    /// Runs `f` on the talc state.
    fn talc<R>(&self, f: impl FnOnce(&mut TalcState) -> R) -> R {
        // SAFETY: the header is mapped and initialised (facts 1, 2); `Arena` is
        // !Send + !Sync and `f` is one of this file's closures that never re-enter
        // the arena, so this `&mut` is the only reference to the state (fact 3).
        f(unsafe { &mut (*self.header.as_ptr()).talc })
    }

    /// Bytes currently allocated from this arena.
    pub fn allocated_bytes(&self) -> usize {
        self.talc(|t| t.counters().allocated_bytes)
    }

    /// Bytes still available (possibly fragmented).
    pub fn available_bytes(&self) -> usize {
        self.talc(|t| t.counters().available_bytes)
    }
}

impl std::fmt::Debug for Arena<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("header", &self.header)
            .field("allocated_bytes", &self.allocated_bytes())
            .finish()
    }
}

/// A dangling, well-aligned pointer for zero-sized allocations.
fn dangling(layout: Layout) -> NonNull<u8> {
    // A power of two, never zero.
    NonNull::new(layout.align() as *mut u8).unwrap_or(NonNull::dangling())
}

// SAFETY: blocks come from talc, which hands out disjoint, live, correctly aligned
// chunks of at least the requested size inside the region, until they are
// deallocated; the region stays mapped while any `Arena<'a>` exists (fact 1);
// copies of the handle share the same state, so memory allocated by one copy may be
// freed by another. Zero-sized requests get a dangling aligned pointer and are never
// passed to talc.
unsafe impl Allocator for Arena<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(NonNull::slice_from_raw_parts(dangling(layout), 0));
        }
        // SAFETY: `layout.size()` is non-zero (checked above), talc's only demand.
        let p = self.talc(|t| unsafe { t.allocate(layout) });
        p.map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller guarantees `ptr` was allocated by this arena with
            // `layout` (Allocator contract), and non-zero sizes came from talc.
            self.talc(|t| unsafe { t.deallocate(ptr.as_ptr(), layout) });
        }
    }
}

// SAFETY: forwards to the `Allocator` implementation above, whose blocks satisfy the
// GlobalAlloc contract (aligned, at least `size` bytes, live until dealloc).
unsafe impl GlobalAlloc for Arena<'_> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.allocate(layout) {
            Ok(p) => p.cast::<u8>().as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
            unsafe { self.deallocate(p, layout) }
        }
    }
}

/// Types that may live in a [`Heap`](crate::Heap): they own nothing outside the
/// arena.
///
/// A restore overwrites the heap's objects with older bytes and never runs their
/// `Drop`; that is only sound when everything an object owns is itself in the region
/// (and so rolls back with it). A `std::vec::Vec`, `Rc`, `Arc` or `File` owns
/// memory or resources outside the region and must not be stored; an
/// `allocator_api2::vec::Vec<T, Arena<'a>>` is fine.
///
/// Implemented for plain values (numbers, `bool`, `char`, `&'static str`, arrays,
/// tuples, `Option`), [`Arena`], and the arena's containers when their contents are
/// `InArena`. Implement it for your own structs with [`in_arena!`](crate::in_arena),
/// which checks every field.
///
/// # Safety
/// Implementors must own no memory or resource outside the arena, directly or
/// through their fields.
pub unsafe trait InArena {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: a plain value owns nothing.
        unsafe impl InArena for $t {}
    )* };
}
plain!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    &'static str,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroUsize
);

// SAFETY: the handle points into the region and owns nothing.
unsafe impl InArena for Arena<'_> {}
// SAFETY: owns nothing.
unsafe impl<T: ?Sized> InArena for PhantomData<T> {}
// SAFETY: owns what its elements own.
unsafe impl<T: InArena, const N: usize> InArena for [T; N] {}
// SAFETY: owns what its elements own (only reachable through an arena Box).
unsafe impl<T: InArena> InArena for [T] {}
// SAFETY: bytes only (only reachable through an arena Box).
unsafe impl InArena for str {}
// SAFETY: owns what its content owns.
unsafe impl<T: InArena> InArena for Option<T> {}
// SAFETY: owns what its content owns.
unsafe impl<T: InArena> InArena for std::cell::Cell<T> {}
// SAFETY: owns what its content owns.
unsafe impl<T: InArena> InArena for std::cell::RefCell<T> {}

macro_rules! tuple {
    ($($n:ident),+) => {
        // SAFETY: owns what its fields own.
        unsafe impl<$($n: InArena),+> InArena for ($($n,)+) {}
    };
}
tuple!(A);
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);
tuple!(A, B, C, D, E);
tuple!(A, B, C, D, E, F);

// SAFETY: the buffer is allocated from the arena; elements own only arena memory.
unsafe impl<'a, T: InArena> InArena for allocator_api2::vec::Vec<T, Arena<'a>> {}
// SAFETY: the box is allocated from the arena; its content owns only arena memory.
unsafe impl<'a, T: InArena + ?Sized> InArena for allocator_api2::boxed::Box<T, Arena<'a>> {}
// SAFETY: the table is allocated from the arena; keys, values and the hasher state
// own only arena memory.
unsafe impl<'a, K: InArena, V: InArena, S: InArena> InArena
    for hashbrown::HashMap<K, V, S, Arena<'a>>
{
}
// SAFETY: as for HashMap.
unsafe impl<'a, K: InArena, S: InArena> InArena for hashbrown::HashSet<K, S, Arena<'a>> {}
// SAFETY: hashbrown's default hasher state is a few integers (seeds).
unsafe impl InArena for hashbrown::DefaultHashBuilder {}
// SAFETY: zero-sized.
unsafe impl<H> InArena for std::hash::BuildHasherDefault<H> {}

const _: () = assert!(align_of::<Header>() <= 64);
