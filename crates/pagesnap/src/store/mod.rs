//! The page store: content-addressed frames shared by every snapshot (and every
//! region) that uses the store, and the persistent page tables that name them.

pub(crate) mod frames;
pub(crate) mod tree;

use frames::Frames;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// A content-addressed, reference-counted store of pages.
///
/// Cloning is cheap (a shared handle); the store lives while any handle, region or
/// snapshot uses it. Each distinct non-zero page is held once, however many
/// snapshots or regions contain it; all-zero pages are never stored.
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
    shared: Arc<Mutex<State>>,
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

/// Memory for the store could not be had: which part, and how many bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoMemory {
    pub(crate) what: &'static str,
    pub(crate) bytes: usize,
}

impl From<NoMemory> for crate::Error {
    fn from(e: NoMemory) -> crate::Error {
        crate::Error::OutOfMemory {
            what: e.what,
            bytes: e.bytes,
        }
    }
}

/// The store's mutable state, behind one mutex.
pub(crate) struct State {
    pub(crate) frames: Frames,
    /// Live page-table nodes and the bytes they take.
    pub(crate) nodes: u64,
    pub(crate) node_bytes: u64,
}

impl PageStore {
    /// An empty store.
    pub fn new() -> PageStore {
        PageStore {
            shared: Arc::new(Mutex::new(State {
                frames: Frames::new(crate::sys::page_size()),
                nodes: 0,
                node_bytes: 0,
            })),
        }
    }

    /// What the store holds now.
    pub fn stats(&self) -> StoreStats {
        let st = self.lock();
        let page_size = st.frames.page_size() as u64;
        StoreStats {
            unique_pages: st.frames.unique(),
            stored_bytes: st.frames.unique() * page_size,
            reserved_bytes: st.frames.reserved_bytes(),
            page_size,
            metadata_bytes: st.node_bytes + st.frames.index_bytes(),
            table_nodes: st.nodes,
        }
    }

    /// Whether `self` and `other` are handles to the same store.
    pub fn same_as(&self, other: &PageStore) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Locks the state. A panic while the lock was held cannot leave the frame table
    /// half-updated in a way that breaks memory safety, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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
