//! The crate's error type: one variant per failing step, with the addresses and
//! lengths involved and the OS error as `source`.

use crate::store::StoreError;
use crate::track::error::TrackError;
use crate::Tracking;
use std::io;

/// Everything that can go wrong in pagesnap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `Region::builder(0)`.
    #[error("a region must be at least one page long (asked for 0 bytes)")]
    ZeroLength,

    /// The length does not fit the address space once rounded up to pages.
    #[error("a region of {len} bytes cannot be mapped: the length overflows when rounded up to whole pages")]
    LengthOverflow {
        /// The length asked for.
        len: usize,
    },

    /// `mmap(2)` of the region failed.
    #[error("mmap of {len} bytes failed")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A region or clone asked for at an address ([`RegionBuilder::at`](crate::RegionBuilder::at),
    /// [`Snapshot::instantiate_at`](crate::Snapshot::instantiate_at)) overlaps
    /// memory that is mapped already. Nothing was mapped or replaced.
    #[error("the range [{addr:#x}, {end:#x}) is not free: something is mapped there already (nothing was replaced)", end = addr.saturating_add(*len))]
    AddressTaken {
        /// The address asked for.
        addr: usize,
        /// The length in bytes.
        len: usize,
    },

    /// An address asked for that cannot start a region.
    #[error("cannot map a region at {addr:#x}: {reason}")]
    BadAddress {
        /// The address asked for.
        addr: usize,
        /// Why, in words.
        reason: &'static str,
    },

    /// A tracking backend was asked for explicitly, and this kernel or process cannot
    /// provide it. pagesnap never falls back silently from an explicit choice.
    #[error("tracking backend {backend:?} is unavailable: {reason}")]
    Unavailable {
        /// The backend asked for.
        backend: Tracking,
        /// What is missing, in words (e.g. "userfaultfd(2): Operation not permitted").
        reason: String,
    },

    /// `PAGESNAP_TRACKING` holds something other than a backend name.
    #[error("PAGESNAP_TRACKING={value:?} is not one of uffd-wp, soft-dirty, mprotect, compare")]
    BadTrackingVariable {
        /// The variable's value.
        value: String,
    },

    /// A kernel call of a tracking backend failed on a live region.
    #[error("{backend:?} tracking: {step} failed for {len} bytes at {addr:#x}")]
    Track {
        /// The backend in use.
        backend: Tracking,
        /// The kernel call that failed, e.g. "PAGEMAP_SCAN" or "UFFDIO_REGISTER".
        step: &'static str,
        /// Start of the range involved.
        addr: usize,
        /// Length of the range involved.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Every slot of the mprotect tracker's signal-handler table is taken.
    #[error("too many regions use mprotect tracking at once (at most {max})")]
    TooManyRegions {
        /// The table's size.
        max: usize,
    },

    /// A snapshot was restored into a region of another length.
    #[error("cannot restore a snapshot of {snapshot} bytes into a region of {region} bytes")]
    LengthMismatch {
        /// The snapshot's length in bytes.
        snapshot: usize,
        /// The region's length in bytes.
        region: usize,
    },

    /// Memory for the operation could not be had (an `mmap` or allocation was
    /// refused, e.g. under `RLIMIT_AS`). Nothing was lost: the region's tracking
    /// is as before the call, so a later call, once memory is free, is exact.
    #[error("out of memory: {what} ({bytes} bytes) could not be allocated")]
    OutOfMemory {
        /// What was being allocated, e.g. "a page-store slab".
        what: &'static str,
        /// Bytes asked for.
        bytes: usize,
    },

    /// A background snapshot of this region is still running.
    #[error("a background snapshot of this region is already running")]
    BackgroundBusy,

    /// Too many background snapshots run at once in this process.
    #[error("too many background snapshots at once (at most {max})")]
    TooManyBackground {
        /// The handler table's size.
        max: usize,
    },

    /// A step of a background snapshot failed; writers were released.
    #[error("background snapshot: {step} failed for {len} bytes at {addr:#x}")]
    Background {
        /// The call that failed.
        step: &'static str,
        /// Start of the range involved.
        addr: usize,
        /// Length of the range involved.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Making a clone of a snapshot failed ([`Snapshot::instantiate`](crate::Snapshot::instantiate)).
    #[error("clone of a snapshot of {len} bytes: {step} failed")]
    Clone {
        /// The call that failed, e.g. "memfd_create" or "mmap of the image".
        step: &'static str,
        /// The snapshot's length in bytes.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// [`Region::reset`](crate::Region::reset) on a region that is not a clone: it
    /// has no snapshot to go back to (restore one explicitly instead).
    #[error("reset needs a clone (a region made by Snapshot::instantiate); this region was built empty — restore a snapshot instead")]
    NotAClone,

    /// A read outside a snapshot.
    #[error("read of {len} bytes at offset {offset} is outside the snapshot ({snapshot} bytes)")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// The snapshot's length in bytes.
        snapshot: usize,
    },

    /// A [`Heap`](crate::Heap) whose region cannot hold the allocator state and the
    /// root object.
    #[error("a heap of {len} bytes is too small: the allocator state and the root object need about {needed} bytes")]
    HeapTooSmall {
        /// The region length asked for.
        len: usize,
        /// About what would do (an upper bound: the allocator rounds).
        needed: usize,
    },

    /// A snapshot (or full copy) this heap did not hand out was given to
    /// [`Heap::restore`](crate::Heap::restore) (or `restore_copy`): another
    /// heap's, one loaded from a file, or one of another region holding the same
    /// bytes. A heap's bytes hold pointers into its own region and allocator
    /// state only it produced, so it restores only snapshots it took itself —
    /// known from the handle, never from the bytes.
    #[error("this snapshot was not taken from this heap: a heap restores only its own snapshots (they hold pointers into its region)")]
    ForeignSnapshot,

    /// A region, or a background snapshot, used in a process forked from the one
    /// that created it. Tracking state belongs to the creating process (the
    /// kernel does not carry userfaultfd registrations into a child, and
    /// descriptors such as `/proc/self/pagemap` opened before the fork still name
    /// the parent), so the child may read and write the memory and read
    /// snapshots, but not snapshot, restore or reset the region.
    #[error("this region belongs to process {owner}; process {current} is a child forked from it: a child cannot snapshot, restore, reset or start a background snapshot of an inherited region (it may still read and write the memory, read snapshots, and create regions of its own)")]
    ForkedChild {
        /// The process that created the region.
        owner: u32,
        /// This process.
        current: u32,
    },

    /// pagesnap's SIGSEGV handler, which the mprotect backend and background
    /// snapshots rely on, was replaced by another that does not pass faults on
    /// to it: writes may have gone unrecorded, so no snapshot is made.
    #[error("pagesnap's SIGSEGV handler has been replaced (the handler now installed is at {current:#x}): writes to regions tracked by mprotect, or under a background snapshot, may have gone unrecorded; install other SIGSEGV handlers before creating pagesnap regions (pagesnap passes them every fault it did not cause), or reinstall the handler they replaced")]
    HandlerReplaced {
        /// The address of the handler now installed (0: the default action, 1: ignored).
        current: usize,
    },

    /// A thread of this process blocks `SIGSEGV`, so its first write to a page
    /// pagesnap protects (every page under mprotect tracking, and a background
    /// snapshot's pages until they are copied) would kill the process: the
    /// kernel cannot hand a blocked fault signal to pagesnap's handler, and
    /// resets it to the default action instead. Nothing was protected.
    #[error("thread {thread} ({name}) blocks SIGSEGV: its first write to a page pagesnap protects would kill the process (the kernel cannot hand a blocked fault signal to pagesnap's handler); unblock SIGSEGV in threads that write regions — blocking every signal but SIGSEGV, SIGBUS, SIGFPE and SIGILL, whose blocking POSIX leaves undefined — or snapshot with the converging mode under uffd-wp, soft-dirty or compare tracking, which protects nothing")]
    FaultSignalBlocked {
        /// The thread's id (as `gettid()` returns it).
        thread: i32,
        /// The thread's name.
        name: String,
    },

    /// The program changed the protection of pages of the region (a guard
    /// page, a write barrier, code): pagesnap would replace it with its own,
    /// or fault reading or writing pages the program made unreadable or
    /// read-only. Nothing was protected, copied or written. Background and
    /// converging snapshots always look; synchronous snapshots, restores and
    /// verifies look where the kernel answers in microseconds (Linux ≥ 6.11).
    #[error("pages [{addr:#x}, {end:#x}) of the region are mapped {perms} by the program, where pagesnap expects {expected}: pagesnap sets the protection of a region's pages itself and reads or writes each page it copies, so it would replace that protection or fault; leave the protection of region pages to pagesnap", end = addr.saturating_add(*len))]
    ForeignProtection {
        /// First byte of the run.
        addr: usize,
        /// Its length in bytes.
        len: usize,
        /// Its protection, as `/proc/self/maps` spells it (`---`, `r--`, `rwx`).
        perms: String,
        /// What pagesnap expects there.
        expected: &'static str,
    },

    /// The program unmapped pages of the region (`munmap`, `mremap`, or a
    /// `MAP_FIXED` mapping that left a hole): pagesnap would fault reading or
    /// writing them. Nothing was protected, copied or written. Looked for
    /// where [`Error::ForeignProtection`] is.
    #[error("pages [{addr:#x}, {end:#x}) of the region are not mapped: the program unmapped them, and pagesnap would fault reading or writing them; a region's memory must stay mapped while the region lives", end = addr.saturating_add(*len))]
    Unmapped {
        /// First byte of the run.
        addr: usize,
        /// Its length in bytes.
        len: usize,
    },

    /// Saving or loading a snapshot file failed.
    #[error("snapshot file {}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong, and where in the file.
        #[source]
        source: crate::snapfile::FileError,
    },
}

/// `Result` with pagesnap's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e` and its sources, joined by ": " (how the CLI prints errors).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<crate::sys::signal::Replaced> for Error {
    fn from(r: crate::sys::signal::Replaced) -> Self {
        Error::HandlerReplaced { current: r.current }
    }
}

impl From<crate::sys::signal::Blocked> for Error {
    fn from(b: crate::sys::signal::Blocked) -> Self {
        Error::FaultSignalBlocked {
            thread: b.tid,
            name: b.name,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        let (what, bytes) = e.what();
        Error::OutOfMemory { what, bytes }
    }
}

/// Each tracking failure is the public variant of the same name.
impl From<TrackError> for Error {
    fn from(e: TrackError) -> Error {
        match e {
            TrackError::Unavailable { backend, reason } => Error::Unavailable { backend, reason },
            TrackError::BadTrackingVariable { value } => Error::BadTrackingVariable { value },
            TrackError::Track {
                backend,
                step,
                addr,
                len,
                source,
            } => Error::Track {
                backend,
                step,
                addr,
                len,
                source,
            },
            TrackError::TooManyRegions { max } => Error::TooManyRegions { max },
            TrackError::OutOfMemory { what, bytes } => Error::OutOfMemory { what, bytes },
            TrackError::HandlerReplaced { current } => Error::HandlerReplaced { current },
            TrackError::FaultSignalBlocked { thread, name } => {
                Error::FaultSignalBlocked { thread, name }
            }
        }
    }
}
