//! What can go wrong inside the page store: it runs out of memory.

/// The page store could not take a page: memory for frames or for its index ran
/// out. Nothing was taken: the pages already held stay held, the call that failed
/// holds nothing more, and the region's tracking stays exact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Mapping a new slab of frame memory failed.
    #[error(
        "out of memory for the page store: mapping a slab of {bytes} bytes for new pages failed"
    )]
    Slab {
        /// The slab's size.
        bytes: usize,
        /// The error `mmap` returned.
        #[source]
        source: std::io::Error,
    },
    /// Growing the content index failed.
    #[error(
        "out of memory for the page store: growing the content index past {entries} entries failed"
    )]
    Index {
        /// Entries in the index part that could not grow.
        entries: usize,
    },
    /// Too little address space is left under the process's limit
    /// (`RLIMIT_AS`) for the table a snapshot makes: checked before any page is
    /// taken.
    #[error(
        "out of memory for the page store: about {bytes} bytes of tables do not fit under the address-space limit"
    )]
    Tables {
        /// The estimate, with room for the allocator.
        bytes: usize,
    },
    /// A reservation ([`PageStore::reserve`](crate::PageStore::reserve)) asked
    /// for more memory than the system has available: faulting it in would
    /// only end in the kernel's out-of-memory killer. Nothing was reserved.
    #[error(
        "cannot reserve {bytes} bytes for the page store: about {available} bytes of memory are available"
    )]
    Unavailable {
        /// The new memory the reservation needed.
        bytes: u64,
        /// Memory available: the system's (available plus free swap), or its
        /// control group's limit less its use where that is lower.
        available: u64,
    },
    /// Every frame id is in use.
    #[error("the page store is full: it holds at most {max} distinct pages")]
    Full {
        /// The most distinct pages one store holds.
        max: u64,
    },
}

impl StoreError {
    /// What could not be allocated, and how many bytes were asked for.
    pub fn what(&self) -> (&'static str, usize) {
        match self {
            StoreError::Slab { bytes, .. } => ("a page-store slab", *bytes),
            StoreError::Index { entries } => ("the page store's index", (entries + 1) * 10),
            StoreError::Tables { bytes } => ("the page store's tables", *bytes),
            StoreError::Unavailable { bytes, .. } => (
                "a page-store reservation beyond the memory available",
                usize::try_from(*bytes).unwrap_or(usize::MAX),
            ),
            StoreError::Full { .. } => ("a frame id (2^32 frames)", 0),
        }
    }
}
