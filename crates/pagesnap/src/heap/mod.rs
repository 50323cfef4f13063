//! [`Heap`]: a typed data structure living in a region, snapshotted and restored
//! with zero serialisation.
//!
//! ```text
//!   Heap<F>
//!   ├── Region ─────────────── one mmap, tracked page by page
//!   │    ├── allocator state   (talc: bins, free lists, tags, counters)
//!   │    ├── root: F::Of<'a>   (your struct, built by the init closure)
//!   │    └── everything it owns (Vec / Box / HashMap / String buffers)
//!   └── snapshot() / restore(&s): whole-region page snapshots, so the allocator
//!       and the data roll back together
//! ```
//!
//! Access goes through closures, `with(|t| …)` and `with_mut(|t| …)`, whose argument
//! carries a fresh brand lifetime `'a` (see [`Arena`]); nothing typed by `'a` can
//! leave the closure, and `restore` takes `&mut self`, so no reference into the
//! region survives a restore. The borrow checker enforces it:
//!
//! ```compile_fail
//! # use pagesnap::{arena::Vec, in_arena, Arena, Heap};
//! # in_arena! { struct S<'a> { v: Vec<'a, u8> } }
//! let mut heap = Heap::<S<'static>>::new(1 << 20, |a| S { v: Vec::new_in(a) })?;
//! let first = heap.with(|s| &s.v[0]); // error: the reference would escape
//! # Ok::<(), pagesnap::Error>(())
//! ```

pub(crate) mod alloc;

use self::alloc::{Arena, InArena, RawHeap};
use crate::error::Result;
use crate::{Digest, PageStore, Region, RegionBuilder, Snapshot, StoreStats, Tracking};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A family of root types `Of<'a>`, one per arena brand `'a`.
///
/// [`in_arena!`](crate::in_arena) implements it for `Name<'static>` when it defines
/// `struct Name<'a>`, so a heap of `Name` is written `Heap<Name<'static>>`.
pub trait Family: 'static {
    /// The root type for brand `'a`.
    type Of<'a>: InArena;
}

/// A typed root and everything it owns, in a [`Region`] with its allocator.
///
/// ```
/// use pagesnap::arena::{HashMap, String, Vec};
/// use pagesnap::{in_arena, Heap};
///
/// in_arena! {
///     struct Game<'a> {
///         scores: HashMap<'a, u32, u64>,
///         log: Vec<'a, String<'a>>,
///     }
/// }
///
/// let mut heap = Heap::<Game<'static>>::new(16 << 20, |arena| Game {
///     scores: HashMap::new_in(arena),
///     log: Vec::new_in(arena),
/// })?;
/// heap.with_mut(|g| {
///     g.scores.insert(1, 10);
///     g.log.push(String::from_str_in("player 1 scored", *g.log.allocator()));
/// });
/// let before = heap.snapshot()?;
///
/// heap.with_mut(|g| {
///     g.scores.clear();
///     g.log.clear();
/// });
/// heap.restore(&before)?; // the map, the log and the allocator roll back together
/// heap.with(|g| {
///     assert_eq!(g.scores[&1], 10);
///     assert_eq!(g.log[0].as_str(), "player 1 scored");
/// });
/// # Ok::<(), pagesnap::Error>(())
/// ```
///
/// The root's `Drop` never runs: dropping the heap unmaps the region and with it
/// everything the root owns ([`InArena`] types own nothing else).
pub struct Heap<F: Family> {
    raw: RawHeap<F>,
}

/// What a [`Heap`] holds, from [`Heap::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Region length in bytes.
    pub region_bytes: usize,
    /// Bytes the allocator manages (the region minus its header and bin table).
    pub arena_bytes: usize,
    /// Bytes handed out to live allocations.
    pub allocated_bytes: usize,
    /// Live allocations.
    pub allocations: usize,
    /// Bytes still free (possibly fragmented).
    pub available_bytes: usize,
    /// The page store holding the heap's snapshots.
    pub store: StoreStats,
}

impl<F: Family> Heap<F> {
    /// A heap of `len` bytes (rounded up to pages) whose root `init` builds with the
    /// arena it is given. Tracking is chosen as for [`Region::builder`].
    ///
    /// Fails with [`Error::HeapTooSmall`](crate::Error::HeapTooSmall) when the
    /// allocator state and the root do not fit.
    pub fn new(len: usize, init: impl for<'a> FnOnce(Arena<'a>) -> F::Of<'a>) -> Result<Self> {
        Self::with_region(Region::builder(len), init)
    }

    /// As [`new`](Self::new), with the region built from `builder` (tracking, huge
    /// pages, a shared store).
    pub fn with_region(
        builder: RegionBuilder,
        init: impl for<'a> FnOnce(Arena<'a>) -> F::Of<'a>,
    ) -> Result<Self> {
        let region = builder.build()?;
        Ok(Heap {
            raw: RawHeap::new(region, next_token(), init)?,
        })
    }

    /// Runs `f` with shared access to the root. `f` may allocate (through an
    /// [`Arena`] it finds in the root), but nothing it returns can borrow from the
    /// heap.
    pub fn with<R>(&self, f: impl for<'a> FnOnce(&'a F::Of<'a>) -> R) -> R {
        self.raw.with(f)
    }

    /// Runs `f` with exclusive access to the root.
    pub fn with_mut<R>(&mut self, f: impl for<'a> FnOnce(&'a mut F::Of<'a>) -> R) -> R {
        self.raw.with_mut(f)
    }

    /// A snapshot of the whole heap: root, everything it owns, and the allocator.
    /// Costs the pages written since the last snapshot or restore.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.raw.snapshot()
    }

    /// Makes the heap what it was at `snap`, writing back only the pages that
    /// differ. `snap` must come from this heap's [`snapshot`](Self::snapshot) (or
    /// be a clone of such a handle); any other snapshot is
    /// [`Error::ForeignSnapshot`](crate::Error::ForeignSnapshot) — another heap's,
    /// one loaded from a file, or one of a region (a clone, say) holding this
    /// heap's bytes. Which heap took a snapshot is recorded in the handle, not
    /// read from the bytes, which anyone could have written.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        self.raw.restore(snap)
    }

    /// The digest of the heap's current contents (a snapshot's digest): equal
    /// digests mean byte-identical heaps, allocator state included.
    pub fn digest(&mut self) -> Result<Digest> {
        Ok(self.snapshot()?.digest())
    }

    /// Copies the whole region into `dst`: the memcpy baseline pagesnap replaces.
    pub fn copy_into(&self, dst: &mut FullCopy) {
        self.raw.copy_into(&mut dst.bytes);
        dst.heap = self.raw.token();
    }

    /// Writes a [`FullCopy`] of this heap back over the whole region. A copy of
    /// another heap is [`Error::ForeignSnapshot`](crate::Error::ForeignSnapshot).
    pub fn restore_copy(&mut self, src: &FullCopy) -> Result<()> {
        self.raw.restore_bytes(&src.bytes, src.heap)
    }

    /// Allocation and store statistics.
    pub fn stats(&self) -> HeapStats {
        let c = self.raw.counters();
        HeapStats {
            region_bytes: self.raw.region().len(),
            arena_bytes: c.claimed_bytes,
            allocated_bytes: c.allocated_bytes,
            allocations: c.allocation_count,
            available_bytes: c.available_bytes,
            store: self.raw.region().store().stats(),
        }
    }

    /// The store the heap's snapshots live in.
    pub fn store(&self) -> &PageStore {
        self.raw.region().store()
    }

    /// The region's tracking backend.
    pub fn tracking(&self) -> Tracking {
        self.raw.region().tracking()
    }

    /// Region length in bytes.
    pub fn len(&self) -> usize {
        self.raw.region().len()
    }

    /// Always false: a heap has at least its allocator state.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The smallest heap length that holds the allocator state (plus the root).
    pub fn min_len() -> usize {
        alloc::min_len()
    }
}

impl<F: Family> fmt::Debug for Heap<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("region", self.raw.region())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A full byte copy of a heap's region, from [`Heap::copy_into`]: what a checker
/// without pagesnap keeps per state. Reuse one to avoid faulting in fresh memory.
#[derive(Clone, Default)]
pub struct FullCopy {
    bytes: Vec<u8>,
    /// The token of the heap whose bytes these are (0: none yet).
    heap: u64,
}

impl FullCopy {
    /// An empty copy (sized by the first `copy_into`).
    pub fn new() -> FullCopy {
        FullCopy::default()
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for FullCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FullCopy")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A token unique to each heap of this process, never 0 (what a snapshot handle
/// not handed out by a heap carries): restore refuses snapshots and copies that
/// do not carry the heap's own.
fn next_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
