//! [`LazyClone`]: a region started from a remote snapshot at once, its pages
//! fetched on first touch (userfaultfd `MISSING` faults, see `lazy_handler.rs`).

use super::error::RemoteError;
use super::lazy_handler::{Handler, Server};
use super::Remote;
use crate::sys::mmap::Mapping;
use crate::sys::userfaultfd::{self, Mode, Unusable};
use crate::{Digest, PageStore, Region};
use std::sync::atomic::Ordering::Relaxed;

/// Set to `1` to make [`Remote::instantiate`] pull eagerly, as it does where
/// userfaultfd is unavailable (tests use it to exercise that path).
pub const EAGER_ENV: &str = "PAGESNAP_REMOTE_EAGER";

/// A clone of a remote snapshot whose pages arrive on first touch.
///
/// Reads and writes work at once; a page not yet here blocks the touching thread
/// while the handler fetches it (with its neighbours) and copies it in. Each
/// fetched page is checked against its content hash. If a page cannot be fetched
/// (the remote is unreachable after retries, or a stored page is corrupt) the
/// process is stopped with a message: the touching thread has no way to receive
/// an error, and wrong bytes would be worse.
///
/// Kernel-mode accesses to pages not yet fetched (`read(2)` into the clone,
/// for instance) fail with `EFAULT` where userfaultfd is only allowed in user mode
/// (the usual unprivileged setting): touch such buffers first.
///
/// Where userfaultfd is unavailable, the whole snapshot is pulled first and the
/// clone is an ordinary [`Region`]; [`fallback`](Self::fallback) says why.
pub struct LazyClone {
    inner: Inner,
    name: String,
    digest: Digest,
}

enum Inner {
    // Field order matters: the handler stops before the mapping goes.
    Lazy { handler: Handler, map: Mapping },
    Eager { region: Box<Region>, note: String },
}

/// What a lazy clone has fetched so far, from [`LazyClone::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LazyStats {
    /// Page faults served.
    pub faults: u64,
    /// Pages copied into the clone (fetched ones and zero pages).
    pub pages: u64,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
    /// Ranged requests made.
    pub requests: u64,
}

impl Remote {
    /// A clone of the snapshot `name`, returned as soon as its manifest is read
    /// (one request); its pages are fetched on first touch, with read-ahead of
    /// their neighbours. See [`LazyClone`].
    pub fn instantiate(&self, name: &str) -> Result<LazyClone, RemoteError> {
        self.instantiate_lazily(name, None)
    }

    /// As [`instantiate`](Self::instantiate), with the clone mapped at `addr`:
    /// at the snapshot's [`origin`](super::RemoteSnapshot::origin), pointers inside it
    /// stay valid. The range must be free ([`crate::Error::AddressTaken`]
    /// otherwise, inside [`RemoteError::Clone`]).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("pagesnap-doc-at-{}", std::process::id()));
    /// # let remote = pagesnap::remote::Remote::open(&format!("file://{}", dir.display()))?;
    /// # // At an address of its own, far from where the kernel places mappings,
    /// # // so that nothing else lands there once the region is gone.
    /// # let mut region = pagesnap::Region::builder(1 << 16).at(0x5a5a_0000_0000).build()?;
    /// # region.as_mut_slice()[0] = 1;
    /// # remote.push(&region.snapshot()?, "heap")?;
    /// # drop(region); // frees the origin, as on another host
    /// let info = remote.info("heap")?;
    /// if let Some(origin) = info.origin {
    ///     let clone = remote.instantiate_at("heap", origin)?;
    ///     assert_eq!(clone.as_slice().as_ptr() as usize, origin);
    /// }
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn instantiate_at(&self, name: &str, addr: usize) -> Result<LazyClone, RemoteError> {
        self.instantiate_lazily(name, Some(addr))
    }

    fn instantiate_lazily(&self, name: &str, at: Option<usize>) -> Result<LazyClone, RemoteError> {
        let shared = &self.shared;
        let manifest = shared.manifest(name)?;
        let len = usize::try_from(manifest.len).map_err(|_| RemoteError::TooLarge {
            what: "the clone",
            bytes: manifest.len,
        })?;
        let fd = match std::env::var(EAGER_ENV) {
            Ok(v) if v == "1" => {
                return self.eager(name, at, format!("{EAGER_ENV}=1 asks for an eager pull"))
            }
            _ => match userfaultfd::open_with_api(0) {
                Ok((fd, _, _)) => fd,
                Err(e) => {
                    let why = match e {
                        Unusable::Open(_) => "userfaultfd is unavailable",
                        Unusable::Api(_) => "the userfaultfd handshake failed",
                    };
                    return self.eager(
                        name,
                        at,
                        format!("{why} ({e}); pulled the whole snapshot first"),
                    );
                }
            },
        };
        let places = shared.places(name, &manifest)?.into_owned();
        let map = crate::placement::anonymous(len, false, at).map_err(RemoteError::Clone)?;
        // A forked child would lose the userfaultfd registration and read
        // zeros where pages were not fetched yet: it gets no such mapping.
        map.advise(0, len, libc::MADV_DONTFORK)
            .map_err(|source| RemoteError::Lazy {
                step: "madvise(MADV_DONTFORK)",
                source,
            })?;
        let pages = len / crate::sys::page_size();
        let mut present = Vec::new();
        present
            .try_reserve_exact(pages)
            .map_err(|_| RemoteError::TooLarge {
                what: "the clone's page table",
                bytes: pages as u64,
            })?;
        present.resize(pages, false);
        let base = map.as_ptr() as usize;
        if let Err(e) = userfaultfd::register(&fd, base, len, Mode::Missing) {
            return match e.raw_os_error() {
                Some(libc::EPERM | libc::EINVAL | libc::ENOSYS) => {
                    // Give the range back first: an eager clone may want it.
                    drop(map);
                    self.eager(
                        name,
                        at,
                        format!("userfaultfd cannot register missing-page faults here ({e}); pulled the whole snapshot first"),
                    )
                }
                _ => Err(RemoteError::Lazy {
                    step: "UFFDIO_REGISTER (missing)",
                    source: e,
                }),
            };
        }
        let handler = Handler::start(Server {
            uffd: fd,
            shared: shared.clone(),
            name: name.to_string(),
            base,
            page: crate::sys::page_size(),
            pages,
            table: manifest.pages,
            places,
            repeats: manifest.repeats,
            present,
        })?;
        Ok(LazyClone {
            inner: Inner::Lazy { handler, map },
            name: name.to_string(),
            digest: manifest.digest,
        })
    }

    fn eager(&self, name: &str, at: Option<usize>, note: String) -> Result<LazyClone, RemoteError> {
        let snap = self.pull(name, &PageStore::new())?;
        let region = match at {
            None => snap.instantiate(),
            Some(addr) => snap.instantiate_at(addr),
        }
        .map_err(RemoteError::Clone)?;
        Ok(LazyClone {
            inner: Inner::Eager {
                region: Box::new(region),
                note,
            },
            name: name.to_string(),
            digest: snap.digest(),
        })
    }
}

impl LazyClone {
    /// The clone's bytes. Reading a page not yet fetched waits for it.
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Lazy { map, .. } => map.as_slice(),
            Inner::Eager { region, .. } => region.as_slice(),
        }
    }

    /// The clone's bytes, writable. Writes stay in this clone.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            // `&mut self` makes this the only reference into the mapping; the
            // handler never forms one (the kernel copies pages in).
            Inner::Lazy { map, .. } => map.as_mut_slice(),
            Inner::Eager { region, .. } => region.as_mut_slice(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the clone is empty (never: snapshots are at least one page).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of the remote snapshot it was started from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The digest of the remote snapshot it was started from.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether pages are fetched on first touch (false after a fallback).
    pub fn is_lazy(&self) -> bool {
        matches!(self.inner, Inner::Lazy { .. })
    }

    /// Why the clone was pulled whole instead of lazily, if it was.
    pub fn fallback(&self) -> Option<&str> {
        match &self.inner {
            Inner::Lazy { .. } => None,
            Inner::Eager { note, .. } => Some(note),
        }
    }

    /// What has been fetched so far (all zeros after a fallback).
    pub fn stats(&self) -> LazyStats {
        match &self.inner {
            Inner::Lazy { handler, .. } => {
                let c = &handler.counters;
                LazyStats {
                    faults: c.faults.load(Relaxed),
                    pages: c.pages.load(Relaxed),
                    bytes_fetched: c.bytes.load(Relaxed),
                    requests: c.requests.load(Relaxed),
                }
            }
            Inner::Eager { .. } => LazyStats::default(),
        }
    }
}

impl std::fmt::Debug for LazyClone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClone")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("lazy", &self.is_lazy())
            .finish()
    }
}
