//! # pagesnap
//!
//! Copy-on-write snapshots of live process memory on Linux, page by page.
//!
//! A [`Region`] is memory whose writes the kernel tracks. [`Region::snapshot`]
//! stores only the pages written since the last snapshot, into a content-addressed
//! [`PageStore`] where each distinct page is held once; [`Region::restore`] writes
//! back only the pages that differ. Both cost O(changes), not O(region).
//!
//! ```
//! use pagesnap::{PageStore, Region};
//!
//! let store = PageStore::new();
//! let mut region = Region::builder(64 << 20).store(&store).build()?;
//! println!("tracking with {}", region.tracking());
//!
//! region.as_mut_slice()[..11].copy_from_slice(b"first state");
//! let first = region.snapshot()?;
//!
//! region.as_mut_slice()[..11].copy_from_slice(b"later state");
//! region.as_mut_slice()[32 << 20] = 1;
//! let later = region.snapshot()?;
//!
//! region.restore(&first)?; // writes back two pages, not 64 MiB
//! assert_eq!(&region.as_slice()[..11], b"first state");
//! assert_eq!(region.as_slice()[32 << 20], 0);
//! assert_ne!(first.digest(), later.digest());
//! assert_eq!(store.stats().unique_pages, 3);
//! # Ok::<(), pagesnap::Error>(())
//! ```
//!
//! Tracking backends, best first: userfaultfd write-protect (async) with
//! `PAGEMAP_SCAN`, soft-dirty bits, mprotect + SIGSEGV, and full compare; see
//! [`Tracking`] and [`probe`].
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod arena;
mod background;
mod clone;
mod digest;
pub mod error;
pub mod file;
mod fork;
mod heap;
mod placement;
mod protection;
mod region;
#[cfg(feature = "remote")]
pub mod remote;
mod snapfile;
mod snapshot;
mod store;
mod sys;
mod track;
mod verify;

pub use arena::Arena;
pub use background::{
    Background, BackgroundReport, BackgroundSave, BackgroundSaveReport, Progress,
};
pub use digest::Digest;
pub use error::{Error, Result};
pub use heap::{Family, FullCopy, Heap, HeapStats};
pub use region::converge::{ConvergeProgress, Converging};
pub use region::converge_save::{ConvergedSave, ConvergingSave};
pub use region::{Region, RegionBuilder};
pub use snapfile::{FileError, FileInfo, FileKind, LoadOptions, SaveReport};
pub use snapshot::Snapshot;
pub use store::{PageStore, StoreError, StoreStats};
pub use track::kernel_bugs::{known_bugs, KernelVersion, KnownBug};
pub use track::kind::{ParseTrackingError, Tracking};
pub use track::probe::{probe, BackendStatus, Capabilities, UffdAccess};
pub use verify::VerifyReport;

/// The base page size of this machine in bytes.
pub fn page_size() -> usize {
    sys::page_size()
}

/// Starts a thread named `name` running `f` only where its stacks fit, as
/// pagesnap starts its own: the Rust runtime maps a new thread's signal stack
/// inside that thread and aborts the process if it cannot, which an
/// address-space limit (`RLIMIT_AS`) can cause; this checks for room first and
/// returns the error instead. For hosts of the library that start threads
/// beside it (the C API's converging thread).
#[doc(hidden)]
pub fn spawn_thread<F, T>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    sys::thread::spawn(name, f)
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
