//! [`FileError`]: what is wrong with a snapshot file, and where.

use super::format::FileKind;
use crate::Digest;
use std::io;

/// Why saving or loading a snapshot file failed. Every variant about the file's
/// contents names the byte offset where the problem is.
///
/// Reported inside [`Error::File`](crate::Error::File), which names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A system call on the file (or its directory) failed.
    #[error("{op} failed")]
    Io {
        /// What was being done: "create the temporary file", "fsync", "read at byte 64", …
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The file is shorter than its structure says it must be.
    #[error("truncated: {what} needs {needed} bytes at byte {offset}, the file has {size}")]
    Truncated {
        /// The part that does not fit.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs from there.
        needed: u64,
        /// The file's size.
        size: u64,
    },

    /// The magic bytes at the start or the end are not pagesnap's.
    #[error("not a pagesnap snapshot file: no {what} magic at byte {offset}")]
    BadMagic {
        /// "header" or "footer".
        what: &'static str,
        /// Where the magic should be.
        offset: u64,
    },

    /// A format version this code cannot read.
    #[error(
        "format version {found} is not supported (this build reads versions 1 to {supported})"
    )]
    Version {
        /// The file's version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// A checksum does not match the bytes it covers.
    #[error("checksum mismatch in {what} at byte {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The part: "header", "footer", "page table", "page record 12".
        what: String,
        /// Where the part starts.
        offset: u64,
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },

    /// A field holds a value the format does not allow.
    #[error("invalid {what} at byte {offset}: {reason}")]
    Invalid {
        /// The part: "header", "footer", "page table", "page record 12".
        what: String,
        /// The field's (or the part's) offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The file was written on a machine with another page size.
    #[error("the file's page size is {file} bytes; this machine's is {machine}")]
    PageSize {
        /// The file's page size.
        file: u32,
        /// This machine's.
        machine: usize,
    },

    /// A full file given to `load_delta`, or a delta given to `load`.
    #[error("this is a {found} snapshot file; {expected} was asked for")]
    Kind {
        /// What the call expects.
        expected: FileKind,
        /// What the file is.
        found: FileKind,
    },

    /// A delta and its parent (or a snapshot and the parent given for its delta)
    /// have different lengths.
    #[error("the parent snapshot is {parent} bytes long; the snapshot is {snapshot} bytes")]
    ParentLength {
        /// The parent's length.
        parent: u64,
        /// The delta's (or the child's) length.
        snapshot: u64,
    },

    /// The delta was taken against another parent.
    #[error(
        "the delta's parent has digest {expected}; the snapshot given as its parent has {given}"
    )]
    ParentDigest {
        /// The digest recorded in the file.
        expected: Digest,
        /// The digest of the snapshot passed in.
        given: Digest,
    },

    /// Every block checked, yet the loaded snapshot's digest is not the saved one.
    #[error("the loaded contents have digest {computed}; the file's footer says {stored}")]
    Digest {
        /// The digest in the footer.
        stored: Digest,
        /// The digest of what was loaded.
        computed: Digest,
    },

    /// The file's region is longer than the caller's
    /// [`LoadOptions::max_len`](crate::file::LoadOptions::max_len).
    #[error(
        "the file describes a region of {len} bytes, more than the {max} bytes this load accepts"
    )]
    RegionLimit {
        /// The region length the header declares.
        len: u64,
        /// The limit the caller set.
        max: u64,
    },

    /// The file describes more than this process can allocate: memory, its
    /// address-space limit (`RLIMIT_AS`) or its limit of mappings
    /// (`vm.max_map_count`) ran out.
    #[error("loading needs {bytes} bytes for {what}, more than can be allocated (memory, the address-space limit or the limit of mappings ran out)")]
    TooLarge {
        /// What would not fit.
        what: &'static str,
        /// Bytes asked for.
        bytes: u64,
    },
}
