//! [`Snapshot`]: an immutable, deduplicated copy of a region's contents.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{PageStore, Staged, TableCost, Tree};
use crate::sys::memfd::Memfd;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// The contents of a region at one instant.
///
/// Cheap to clone (a shared handle) and `Send + Sync`. Its pages live in the
/// [`PageStore`] of the region it was taken from, shared with every other snapshot
/// holding the same contents; dropping the last handle releases the pages no other
/// snapshot holds.
#[derive(Clone)]
pub struct Snapshot {
    inner: Arc<Inner>,
    /// The [`Heap`](crate::Heap) that handed out this handle (its token), or 0.
    /// Set only by the heap, never from the contents: a heap restores only its
    /// own snapshots, and bytes cannot claim to be one.
    heap: u64,
}

struct Inner {
    tree: Tree,
    /// Computed on first use: taking a snapshot hashes no table nodes.
    digest: OnceLock<Digest>,
    len: usize,
    /// The address of the region it was taken from; 0 when unknown (a file of
    /// a format version before 3).
    origin: usize,
    /// The contents written out once to a memory file, made by the first
    /// [`instantiate`](Snapshot::instantiate) and mapped privately by every clone
    /// (see `clone.rs`). Empty until then; kept while the snapshot lives.
    image: OnceLock<Arc<Image>>,
}

/// A snapshot's contents in a memory file, which clones map privately (written
/// by `clone.rs`, cached in the snapshot it holds).
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) memfd: Memfd,
}

impl Image {
    /// Bytes of memory the image holds (its non-zero pages).
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.memfd.resident_bytes().unwrap_or(0)
    }
}

impl Snapshot {
    /// A snapshot of a region that was at `origin` (null: unknown).
    pub(crate) fn from_tree_at(tree: Tree, len: usize, origin: *const u8) -> Snapshot {
        Snapshot {
            inner: Arc::new(Inner {
                tree,
                digest: OnceLock::new(),
                len,
                origin: origin as usize,
                image: OnceLock::new(),
            }),
            heap: 0,
        }
    }

    /// This handle, marked as handed out by the heap with `token` (non-zero).
    pub(crate) fn of_heap(mut self, token: u64) -> Snapshot {
        self.heap = token;
        self
    }

    /// The token of the heap that handed out this handle, or 0.
    pub(crate) fn heap_token(&self) -> u64 {
        self.heap
    }

    /// The address of the region this snapshot was taken from: where the
    /// pointers it may hold (into itself) are valid, and so where
    /// [`instantiate_at`](Self::instantiate_at) or
    /// [`RegionBuilder::at`](crate::RegionBuilder::at) should map it. Kept in
    /// snapshot files; `None` for a snapshot loaded from a file written before
    /// the format recorded it (versions 1 and 2).
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(1 << 20).build()?;
    /// let snap = region.snapshot()?;
    /// assert_eq!(snap.origin(), Some(region.as_ptr() as usize));
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn origin(&self) -> Option<usize> {
        (self.inner.origin != 0).then_some(self.inner.origin)
    }

    pub(crate) fn tree(&self) -> &Tree {
        &self.inner.tree
    }

    /// The cache of this snapshot's clone image (see `clone.rs`).
    pub(crate) fn image_cell(&self) -> &OnceLock<Arc<Image>> {
        &self.inner.image
    }

    /// The content digest: equal for snapshots with equal bytes and length.
    ///
    /// Computed on the first call, from the page table's Merkle nodes: a node
    /// shared with a snapshot whose digest was asked for before costs nothing, so
    /// the first call costs about what changed since then (the whole table the
    /// first time). Later calls cost nothing.
    pub fn digest(&self) -> Digest {
        *self
            .inner
            .digest
            .get_or_init(|| Digest(self.inner.tree.digest()))
    }

    /// Length in bytes (the region's length, a whole number of pages).
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether the snapshot is empty (never: regions are at least one page).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The store holding the snapshot's pages.
    pub fn store(&self) -> &PageStore {
        self.inner.tree.store()
    }

    /// Whether `self` and `other` are handles to the very same snapshot.
    pub fn ptr_eq(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(8192).build()?;
    /// region.as_mut_slice()[4095..4097].copy_from_slice(b"hi");
    /// let snap = region.snapshot()?;
    /// let mut two = [0u8; 2];
    /// snap.read(4095, &mut two)?;
    /// assert_eq!(&two, b"hi");
    /// assert!(snap.read(8191, &mut two).is_err()); // past the end
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len());
        if end.is_none_or(|e| e > self.len()) {
            return Err(Error::OutOfBounds {
                offset,
                len: buf.len(),
                snapshot: self.len(),
            });
        }
        // `buf` may lie in memory that faults into pagesnap (a region under a
        // background snapshot, whose copier needs the store): the store reads
        // its frames without any lock, so none is held while `buf` is written.
        self.store().read(self.tree(), offset, buf);
        Ok(())
    }

    /// The whole contents as a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let page = crate::sys::page_size();
        let store = self.store();
        self.tree().for_each_nonzero(|p, id| {
            out[p * page..(p + 1) * page].copy_from_slice(store.frame(id));
        });
        out
    }

    /// Number of pages whose contents differ between `self` and `other`, found
    /// from their page tables in time proportional to the difference (shared
    /// subtrees are skipped). `None` when the two are not comparable that way:
    /// different lengths, or different stores.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(1 << 20).build()?;
    /// let a = region.snapshot()?;
    /// region.as_mut_slice()[0] = 1;
    /// region.as_mut_slice()[8192] = 1;
    /// let b = region.snapshot()?;
    /// assert_eq!(a.changed_pages(&b), Some(2));
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn changed_pages(&self, other: &Snapshot) -> Option<usize> {
        if self.len() != other.len() || !self.store().same_as(other.store()) {
            return None;
        }
        let mut out = Vec::new();
        self.tree().diff(other.tree(), &mut out);
        Some(out.len())
    }

    /// Number of pages that are not all zeros.
    pub fn nonzero_pages(&self) -> usize {
        let mut n = 0;
        self.tree().for_each_nonzero(|_, _| n += 1);
        n
    }

    /// This snapshot's contents as a snapshot in `store` (itself when it already
    /// is). Fails, leaving `store` as it was, when the pages do not fit.
    pub(crate) fn in_store(&self, store: &PageStore) -> Result<Snapshot> {
        if self.store().same_as(store) {
            return Ok(self.clone());
        }
        store.room_for_tables(|| {
            let mut cost = TableCost::default();
            self.tree().for_each_nonzero(|p, _| cost.add_run(p, 1));
            cost
        })?;
        // Dropped on an error, which hands the pages taken so far back.
        let mut staged = Staged::new(store);
        let src = self.store();
        let mut failed = None;
        self.tree().for_each_nonzero(|p, id| {
            if failed.is_none() {
                if let Err(e) = staged.add(p, src.frame(id)) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        let zero = Tree::zero(store, self.tree().pages());
        let tree = store.commit(&zero, staged);
        drop(zero);
        Ok(Snapshot::from_tree_at(
            tree,
            self.len(),
            self.inner.origin as *const u8,
        ))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("len", &self.len())
            .field("digest", &self.digest())
            .field("origin", &self.origin())
            .finish()
    }
}
