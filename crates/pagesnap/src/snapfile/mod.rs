//! The snapshot file format, below the crate's error type and [`Snapshot`](crate::Snapshot):
//! encoding, writing (whole or streamed), reading and loading, all failing with
//! [`FileError`]. Loading hands back a snapshot's parts ([`load::Loaded`]);
//! `file` builds the snapshot and names the path in the crate's error. See
//! [`crate::file`] for the format and its guarantees.

pub(crate) mod atomic;
mod encode;
mod error;
pub(crate) mod format;
#[cfg(test)]
mod format_origin_tests;
pub(crate) mod load;
mod options;
pub(crate) mod read;
mod recent;
pub(crate) mod rounds;
pub(crate) mod stream;
pub(crate) mod write;

pub use error::FileError;
pub use format::{FileKind, VERSION};
pub use options::LoadOptions;

use crate::Digest;

/// What [`Snapshot::save`](crate::Snapshot::save) or [`Snapshot::save_delta`](crate::Snapshot::save_delta) wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveReport {
    /// Full or delta.
    pub kind: FileKind,
    /// The file's size in bytes.
    pub bytes: u64,
    /// What the file's size would be with no page compressed.
    pub uncompressed_bytes: u64,
    /// Pages in the region.
    pub pages: u64,
    /// Pages the page table lists: the non-zero ones (full), the changed ones (delta).
    pub listed_pages: u64,
    /// Of the listed pages, those that are zero (deltas only).
    pub zero_pages: u64,
    /// Page records: distinct non-zero pages stored.
    pub stored_pages: u64,
    /// Of those, the ones stored lz4-compressed.
    pub compressed_pages: u64,
    /// The saved snapshot's digest.
    pub digest: Digest,
}

/// What a snapshot file holds, from [`inspect`](crate::file::inspect) or [`verify`](crate::file::verify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileInfo {
    /// The format version.
    pub version: u32,
    /// The address of the region the snapshot was taken from
    /// ([`Snapshot::origin`](crate::Snapshot::origin)); `None` in files before version 3.
    pub origin: Option<usize>,
    /// Full or delta.
    pub kind: FileKind,
    /// Page size in bytes.
    pub page_size: u32,
    /// The region's length in bytes.
    pub len: u64,
    /// Pages in the region.
    pub pages: u64,
    /// Runs in the page table.
    pub runs: u64,
    /// Pages the table lists (non-zero pages of a full file; changed pages of a delta).
    pub listed_pages: u64,
    /// Listed pages that are zero (a delta's pages that became zero).
    pub zero_pages: u64,
    /// Page records (distinct pages stored).
    pub stored_pages: u64,
    /// Records stored lz4-compressed.
    pub compressed_pages: u64,
    /// Bytes of stored page contents (after compression).
    pub stored_bytes: u64,
    /// The file's size.
    pub file_bytes: u64,
    /// The parent's digest (deltas).
    pub parent: Option<Digest>,
    /// The snapshot's digest (for a delta: of the snapshot it rebuilds).
    pub digest: Digest,
    /// Whether the digest was recomputed and matched (full files, by [`verify`](crate::file::verify)).
    pub digest_checked: bool,
}

impl FileInfo {
    /// Uncompressed bytes of the stored pages over their stored bytes (≥ 1).
    pub fn compression_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            return 1.0;
        }
        self.stored_pages as f64 * f64::from(self.page_size) / self.stored_bytes as f64
    }
}
