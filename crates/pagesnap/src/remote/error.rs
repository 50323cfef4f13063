//! [`RemoteError`]: what can go wrong between a snapshot and its object store.

use crate::Digest;
use std::io;

/// An error of a [`Remote`](super::Remote) operation: a variant per failing step,
/// with the object or snapshot it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The URL names no store pagesnap can open.
    #[error("cannot use {url:?} as a remote: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The store for a valid URL could not be set up (credentials, configuration).
    #[error("cannot open the remote {url:?}")]
    Open {
        /// The URL given.
        url: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The private runtime that drives the object store could not be started.
    #[error("cannot start the remote's I/O runtime")]
    Runtime(#[source] io::Error),
    /// A snapshot name that is empty, too long, or holds a character other than
    /// letters, digits, `.`, `_` and `-` (or starts with `.`).
    #[error("{name:?} is not a valid snapshot name (1 to 200 letters, digits, '.', '_' or '-', not starting with '.')")]
    Name {
        /// The name given.
        name: String,
    },
    /// No snapshot of that name is in the remote.
    #[error("the remote has no snapshot named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The name is taken by a snapshot with other contents.
    #[error("the remote already holds a different snapshot named {name:?} (digest {existing}, pushing {pushed})")]
    NameTaken {
        /// The name pushed to.
        name: String,
        /// The digest of the snapshot already there.
        existing: Digest,
        /// The digest of the snapshot being pushed.
        pushed: Digest,
    },
    /// An object store request failed.
    #[error("{op} of {object} failed")]
    Store {
        /// What was being done: "upload", "download", "listing".
        op: &'static str,
        /// The object's path in the store.
        object: String,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A stored object is malformed: bad magic, checksum, or contents.
    #[error("the remote object {object} is corrupt: {reason}")]
    Corrupt {
        /// The object's path in the store.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A downloaded page's contents do not match its content hash.
    #[error("page {page} of {name:?} does not match its hash (stored in {object})")]
    PageHash {
        /// The snapshot being read.
        name: String,
        /// The page index in the snapshot.
        page: u64,
        /// The pack holding it.
        object: String,
    },
    /// The manifest names a page no pack in the remote holds.
    #[error("page {page} of {name:?} (hash {hash:032x}) is in no pack of the remote")]
    MissingPage {
        /// The snapshot being read.
        name: String,
        /// The page index in the snapshot.
        page: u64,
        /// Its content hash.
        hash: u128,
    },
    /// The snapshot rebuilt from the pages has another digest than the manifest's.
    #[error("the snapshot {name:?} read back has digest {computed}, its manifest says {expected}")]
    Digest {
        /// The snapshot being read.
        name: String,
        /// The digest in the manifest.
        expected: Digest,
        /// The digest of what was read.
        computed: Digest,
    },
    /// The remote snapshot was taken on a machine with another page size.
    #[error("the remote snapshot has {remote}-byte pages, this machine {machine}-byte pages")]
    PageSize {
        /// The snapshot's page size.
        remote: u64,
        /// This machine's page size.
        machine: usize,
    },
    /// A snapshot too large for this machine's address space or memory.
    #[error("the remote snapshot is too large here: {what} needs {bytes} bytes")]
    TooLarge {
        /// What needs the memory.
        what: &'static str,
        /// How many bytes.
        bytes: u64,
    },
    /// Making the clone region failed.
    #[error("cannot make the clone")]
    Clone(#[source] crate::Error),
    /// A pack the remote's index lists is gone from the store, and uploading
    /// its pages again did not bring it back.
    #[error("the remote's pack {pack:?} is missing though its index is there")]
    LostPack {
        /// The pack's name.
        pack: String,
    },
    /// The remote was opened by another process (this one is its forked child):
    /// its runtime's threads were not copied by `fork`.
    #[error("this remote was opened by process {owner}; in its forked child ({current}) open the remote again")]
    ForkedChild {
        /// The process that opened it.
        owner: u32,
        /// This process.
        current: u32,
    },
    /// Setting up the lazy clone's fault handling failed.
    #[error("cannot set up the lazy clone: {step}")]
    Lazy {
        /// The failing step.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A shorthand for results of remote operations.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// A corrupt-object error.
pub(super) fn corrupt(object: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::Corrupt {
        object: object.to_string(),
        reason: reason.into(),
    }
}
