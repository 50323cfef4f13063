//! The page store: content-addressed frames shared by every snapshot (and every
//! region) that uses the store, and the persistent page tables that name them.
//!
//! ```text
//!  PageStore ── Shared ─┬─ Frames: slabs (bytes, refs, hashes; lock-free reads)
//!                       │          index (64 locked shards), alloc (one lock)
//!                       └─ node counters (atomics)
//!  Staged    ── pages taken in, not yet in a table (released if dropped)
//!  Tree      ── one page table; dropping it releases what no other table holds
//! ```
//! Every lock of the store lives in this folder, and none is held while touching
//! memory outside the store (a region, a caller's buffer) or while a tree drops:
//! pages are copied into reserved slots before any lock is taken, and frames are
//! read without one (a frame never changes while someone holds it).

pub mod error;
pub(crate) mod frames;
mod index;
mod lent;
mod parallel;
mod slabs;
pub(crate) mod staged;
pub(crate) mod tree;

use frames::{FrameId, Frames};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use error::StoreError;
pub(crate) use index::IdentityHasher;
pub(crate) use lent::LentFrames;
pub(crate) use parallel::Threads;
pub(crate) use staged::Staged;
pub(crate) use tree::{PageRun, RunFrames, TableCost, Tree};

/// A content-addressed, reference-counted store of pages.
///
/// Cloning is cheap (a shared handle); the store lives while any handle, region or
/// snapshot uses it. Each distinct non-zero page is held once, however many
/// snapshots or regions contain it; all-zero pages are never stored. Any number of
/// threads may take snapshots into one store at once.
///
/// ```
/// let store = pagesnap::PageStore::new();
/// let mut a = pagesnap::Region::builder(1 << 20).store(&store).build()?;
/// let mut b = pagesnap::Region::builder(1 << 20).store(&store).build()?;
/// a.as_mut_slice()[..4096].fill(7);
/// b.as_mut_slice()[..4096].fill(7);
/// let (_sa, _sb) = (a.snapshot()?, b.snapshot()?);
/// assert_eq!(store.stats().unique_pages, 1); // the same page, stored once
/// # Ok::<(), pagesnap::Error>(())
/// ```
#[derive(Clone)]
pub struct PageStore {
    shared: Arc<Shared>,
}

/// What a store holds, from [`PageStore::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Distinct non-zero pages held.
    pub unique_pages: u64,
    /// Bytes of page contents held (`unique_pages` × `page_size`).
    pub stored_bytes: u64,
    /// Bytes of frame memory mapped: `stored_bytes` plus free slots (reused by the
    /// next new pages) plus the unused tail of the last 2 MiB slab.
    pub reserved_bytes: u64,
    /// The page size in bytes.
    pub page_size: u64,
    /// Bytes of metadata: live page-table nodes of all snapshots, plus the frame
    /// table and its hash index.
    pub metadata_bytes: u64,
    /// Live page-table nodes (shared nodes count once).
    pub table_nodes: u64,
}

/// See [`PageStore::beside_writers`].
pub(crate) struct BesideWriters {
    shared: Arc<Shared>,
}

impl Drop for BesideWriters {
    fn drop(&mut self) {
        self.shared.frames.beside_writers(false);
    }
}

/// The store's state: the frames, and what the live tables take.
pub(crate) struct Shared {
    frames: Frames,
    nodes: AtomicU64,
    node_bytes: AtomicU64,
}

impl PageStore {
    /// An empty store.
    pub fn new() -> PageStore {
        PageStore {
            shared: Arc::new(Shared {
                frames: Frames::new(crate::sys::page_size()),
                nodes: AtomicU64::new(0),
                node_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// What the store holds now.
    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        let page_size = s.frames.page_size() as u64;
        let unique = s.frames.unique();
        StoreStats {
            unique_pages: unique,
            stored_bytes: unique * page_size,
            reserved_bytes: s.frames.reserved_bytes(),
            page_size,
            metadata_bytes: s.node_bytes.load(Ordering::Relaxed) + s.frames.index_bytes(),
            table_nodes: s.nodes.load(Ordering::Relaxed),
        }
    }

    /// Makes sure the store has free memory for at least `bytes` of new pages
    /// (rounded up to whole pages), mapping and faulting it in now.
    ///
    /// Memory a process touches for the first time is zeroed by the kernel
    /// (and, in a virtual machine, often backed by the host): the costliest
    /// part of a first snapshot. A program that reserves the size of its
    /// region at start-up moves that cost out of its first snapshot: a
    /// point-in-time background snapshot then stages writers' copies straight
    /// into the reserved frames, as every later snapshot does into the frames
    /// of the snapshots dropped before it. The memory stays with the store
    /// (it is in [`StoreStats::reserved_bytes`]) and holds the next pages
    /// taken in.
    ///
    /// During a point-in-time background snapshot of a region of this store,
    /// the memory is mapped now but faulted in as it is first used: faulting
    /// it in would hold the process's memory-map lock against the writers.
    ///
    /// A request for more new memory than the system has available (its free
    /// memory and swap, or its control group's limit) is refused with
    /// [`StoreError::Unavailable`] before anything is mapped: faulting it in
    /// would end in the kernel's out-of-memory killer, not in an error.
    /// On another error (memory ran out) what was reserved so far stays reserved;
    /// [`StoreError`] converts into [`Error`](crate::Error) with `?`.
    ///
    /// ```
    /// let store = pagesnap::PageStore::new();
    /// store.reserve(8 << 20)?;
    /// assert!(store.stats().reserved_bytes >= 8 << 20);
    /// assert_eq!(store.stats().stored_bytes, 0);
    /// let region = pagesnap::Region::builder(8 << 20).store(&store).build()?;
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn reserve(&self, bytes: usize) -> Result<(), StoreError> {
        let frames = &self.shared.frames;
        frames.keep_free(bytes.div_ceil(frames.page_size()))
    }

    /// Bytes of free frame memory: what new pages can take in before the store
    /// maps more (see [`reserve`](Self::reserve)).
    pub fn free_bytes(&self) -> u64 {
        let frames = &self.shared.frames;
        (frames.free_slots() * frames.page_size()) as u64
    }

    /// Whether `self` and `other` are handles to the same store.
    pub fn same_as(&self, other: &PageStore) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Marks the store as filled beside a point-in-time background snapshot's
    /// writers until the guard drops: new frame memory is then faulted in as
    /// it is first written rather than pre-faulted, which would hold the
    /// process's mmap lock against the writers' fault handler.
    pub(crate) fn beside_writers(&self) -> BesideWriters {
        self.shared.frames.beside_writers(true);
        BesideWriters {
            shared: self.shared.clone(),
        }
    }

    /// The bytes of frame `id`, which the caller holds (through a table or a
    /// `Staged`) for as long as it reads them. No lock is taken.
    pub(crate) fn frame(&self, id: FrameId) -> &[u8] {
        self.shared.frames.bytes(id)
    }

    /// The content hash of frame `id`, which the caller holds.
    pub(crate) fn frame_hash(&self, id: FrameId) -> u128 {
        self.shared.frames.hash(id)
    }

    /// Fails where the address-space limit leaves no room for the table nodes
    /// that changes of `cost` will make. Those nodes are small infallible
    /// allocations (Rust aborts when one fails), so every path that builds a
    /// table calls this first, before it takes any page: on an error nothing
    /// is lost. `cost` (a pass over the changes) runs only under a limit.
    pub(crate) fn room_for_tables(
        &self,
        cost: impl FnOnce() -> TableCost,
    ) -> Result<(), StoreError> {
        let mut bytes = 0;
        let fits = crate::sys::room::has_room(|| {
            bytes = usize::try_from(cost().bytes()).unwrap_or(usize::MAX);
            bytes
        });
        if fits {
            Ok(())
        } else {
            Err(StoreError::Tables { bytes })
        }
    }

    /// A new table: `base` with the staged pages in place of its own. The staged
    /// references go to the new table.
    pub(crate) fn commit(&self, base: &Tree, staged: Staged) -> Tree {
        self.commit_on(base, staged, 1)
    }

    /// [`commit`](Self::commit), the table updated on up to `threads` threads.
    pub(crate) fn commit_on(&self, base: &Tree, mut staged: Staged, threads: usize) -> Tree {
        debug_assert!(staged.store().same_as(self) && base.store().same_as(self));
        let changes = staged.take_sorted();
        base.with_changes_on(&changes, threads)
    }

    /// Copies `buf.len()` bytes of `tree`'s contents from byte `offset` (in range)
    /// into `buf`, straight from the frames: no lock is held while `buf` (which
    /// may fault) is written.
    pub(crate) fn read(&self, tree: &Tree, offset: usize, buf: &mut [u8]) {
        let page = self.shared.frames.page_size();
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done;
            let in_page = at % page;
            let n = (page - in_page).min(buf.len() - done);
            let frame = self.frame(tree.get(at / page));
            buf[done..done + n].copy_from_slice(&frame[in_page..in_page + n]);
            done += n;
        }
    }
}

#[cfg(test)]
impl PageStore {
    /// Takes `page` in, with one reference for the caller.
    pub(crate) fn test_insert(&self, page: &[u8]) -> FrameId {
        let frames = &self.shared.frames;
        let mut slot = Vec::new();
        frames
            .reserve(1, &mut slot)
            .expect("memory for a test page");
        let id = frames
            .insert(slot[0], page)
            .expect("memory for a test page");
        if id != slot[0] {
            frames.unreserve(&mut slot);
        }
        id
    }

    pub(crate) fn test_retain(&self, id: FrameId) {
        self.shared.frames.retain(id);
    }

    pub(crate) fn test_release(&self, id: FrameId) {
        self.shared.frames.release_all([id]);
    }
}

impl Default for PageStore {
    fn default() -> Self {
        PageStore::new()
    }
}

impl fmt::Debug for PageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageStore")
            .field("stats", &self.stats())
            .finish()
    }
}
