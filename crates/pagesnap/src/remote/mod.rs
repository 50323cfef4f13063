//! Snapshots in object storage (feature `remote`): push from one host, pull or
//! start clones on any other.
//!
//! ```text
//!  host A: Snapshot ──push──► bucket/prefix/                 ◄──pull── host B: Snapshot
//!                              packs/H.pack + H.idx  pages, content-addressed,
//!                              packs/…               a few MiB per pack
//!                              snapshots/NAME.snap   manifest: length, digest,
//!                                                    origin, page → hash table,
//!                                                    where each page is
//!                                                    ◄──instantiate── host C: clone,
//!                                                       pages fetched on first touch
//! ```
//!
//! Pages are addressed by their 128-bit content hash, so a page the remote holds
//! (from any snapshot, pushed from any host) is never uploaded again: a push sends
//! only the pages no pack index lists, packed into objects of a few MiB, then the
//! manifest. Packs and indexes are named by their contents and written
//! create-only, so concurrent pushes cannot clobber one another; the manifest goes
//! last, so an interrupted push leaves no manifest naming missing pages (only
//! unreferenced packs, which later pushes reuse). A pull checks every page against
//! its hash and the rebuilt snapshot against the manifest's digest. The manifest
//! also says which pack and slot holds each page, so a pull or a lazy clone reads
//! no pack index: a lazy clone starts after one request.
//!
//! The object store is asynchronous; [`Remote`] runs it on a small private runtime,
//! so its API is blocking. Don't call it from inside an async runtime's worker
//! (use `spawn_blocking`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pagesnap::remote::Remote;
//! let dir = std::env::temp_dir().join(format!("pagesnap-doc-{}", std::process::id()));
//! let remote = Remote::open(&format!("file://{}", dir.display()))?;
//!
//! let mut region = pagesnap::Region::builder(1 << 20).build()?;
//! region.as_mut_slice()[..5].copy_from_slice(b"hello");
//! let snap = region.snapshot()?;
//! let report = remote.push(&snap, "greeting")?;
//! assert_eq!(report.pages_uploaded, 1); // one non-zero page
//! assert_eq!(remote.push(&snap, "again")?.pages_uploaded, 0); // already there
//!
//! // Elsewhere: an empty store, the same bytes.
//! let store = pagesnap::PageStore::new();
//! let pulled = remote.pull("greeting", &store)?;
//! assert_eq!(pulled.digest(), snap.digest());
//! let clone = remote.instantiate("greeting")?; // pages come in on first touch
//! assert_eq!(&clone.as_slice()[..5], b"hello");
//! # drop(clone); std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

#[cfg(test)]
mod compat_tests;
mod error;
mod format;
mod index;
mod lazy;
mod lazy_handler;
mod list;
mod open;
mod places;
mod pull;
mod push;

pub use error::{RemoteError, Result};
pub use lazy::{LazyClone, LazyStats, EAGER_ENV};
pub use list::RemoteSnapshot;
pub use push::PushReport;

use object_store::path::Path;
use object_store::ObjectStore;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// A place in object storage holding snapshots: see the [module docs](self).
///
/// Cheap to clone (a shared handle), `Send + Sync`.
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

/// Progress of a transfer, given to the `*_with_progress` callbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transfer {
    /// Bytes moved so far.
    pub bytes: u64,
    /// Bytes to move in all (as far as known when the transfer started).
    pub total: u64,
}

pub(crate) struct Shared {
    url: String,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    known: Mutex<index::Known>,
    /// The process that opened it: the runtime's threads exist only there.
    pid: u32,
}

/// Parallel requests per transfer: enough to hide a round trip, few enough for
/// a small machine.
const PARALLEL: usize = 8;

impl Remote {
    /// Opens the remote at `url`: `file:///dir`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`, or `memory://` (this
    /// handle's own empty store). Cloud credentials and endpoints come from the
    /// usual environment variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, …). Nothing is read from the store yet.
    pub fn open(url: &str) -> Result<Remote> {
        let store = open::store_for(url)?;
        Remote::from_object_store(store, url)
    }

    /// A remote over an object store built by the caller (`url` is only shown in
    /// messages).
    pub fn from_object_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pagesnap-remote")
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        Ok(Remote {
            shared: Arc::new(Shared {
                url: url.to_string(),
                store,
                runtime,
                known: Mutex::new(index::Known::default()),
                pid: std::process::id(),
            }),
        })
    }

    /// The URL this remote was opened with.
    pub fn url(&self) -> &str {
        &self.shared.url
    }
}

impl Shared {
    /// Runs `fut` on the private runtime, blocking this thread until it is done.
    /// Refused in a forked child, where the runtime's threads do not exist and
    /// the call would wait for ever.
    fn block_on<F: Future>(&self, fut: F) -> Result<F::Output, RemoteError> {
        let current = std::process::id();
        if current != self.pid {
            return Err(RemoteError::ForkedChild {
                owner: self.pid,
                current,
            });
        }
        Ok(self.runtime.block_on(fut))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, index::Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.shared.url)
            .finish()
    }
}

/// The path of a pack's pages.
fn pack_path(name: &str) -> Path {
    Path::from(format!("{}/{name}.pack", format::PACKS))
}

/// The path of a pack's index.
fn index_path(name: &str) -> Path {
    Path::from(format!("{}/{name}{}", format::PACKS, format::INDEX_SUFFIX))
}

/// The path of a snapshot's manifest.
fn manifest_path(name: &str) -> Path {
    Path::from(format!(
        "{}/{name}{}",
        format::SNAPSHOTS,
        format::MANIFEST_SUFFIX
    ))
}

/// Checks a snapshot name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with `.`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Name {
            name: name.to_string(),
        })
    }
}

/// The error of a failed store request.
fn store_error(op: &'static str, path: &Path, source: object_store::Error) -> RemoteError {
    RemoteError::Store {
        op,
        object: path.to_string(),
        source,
    }
}
