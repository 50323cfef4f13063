//! The fault handler of a lazy clone: a thread that waits on the clone's
//! userfaultfd and fills each missing page from the remote, with read-ahead.
//!
//! ```text
//!  app thread touches page p (missing) ──► kernel queues a fault, the thread waits
//!  handler: p in window [start, end)   ──► one ranged GET per pack for the pages
//!           of the window not yet here      (neighbours in the snapshot are
//!           check each page's hash          neighbours in the packs of a first push)
//!           UFFDIO_COPY each run            ──► waiters wake, pages are now plain memory
//! ```
//! The window starts at 16 pages around the fault and doubles (to 1 MiB) while
//! faults walk forward from the end of the last window, as a file read-ahead does.
//! Pages whose contents repeat in the snapshot are kept once fetched, so a second
//! position with the same contents costs no request.

use super::error::RemoteError;
use super::places::Places;
use super::pull::fetch_from_pack;
use super::Shared;
use crate::sys::uffd_missing::{self, EventFd};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Smallest read-ahead window, in pages.
const MIN_WINDOW: usize = 16;
/// Largest read-ahead window, in pages.
const MAX_WINDOW: usize = 256;
/// Tries of one fetch before the handler gives up.
const TRIES: u32 = 3;

/// Counters the handler keeps, read by [`LazyClone::stats`](super::LazyClone::stats).
#[derive(Default, Debug)]
pub(super) struct Counters {
    pub(super) faults: AtomicU64,
    pub(super) pages: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) requests: AtomicU64,
}

/// The running handler; stopped and joined on drop.
pub(super) struct Handler {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    pub(super) counters: Arc<Counters>,
}

/// What the handler thread owns.
pub(super) struct Server {
    pub(super) uffd: OwnedFd,
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    /// Start address of the clone's mapping.
    pub(super) base: usize,
    pub(super) page: usize,
    /// Pages in the clone.
    pub(super) pages: usize,
    /// (page, hash) of each non-zero page, in page order: the manifest's table,
    /// searched per fault rather than expanded per page up front.
    pub(super) table: Vec<(u64, u128)>,
    /// Where each entry of `table` lives.
    pub(super) places: Places,
    /// Hashes held at more than one page, sorted: kept once fetched.
    pub(super) repeats: Vec<u128>,
    /// Which pages were filled: allocated by the caller (fallibly), since a
    /// failed allocation in the handler thread would abort the process.
    pub(super) present: Vec<bool>,
}

impl Handler {
    pub(super) fn start(server: Server) -> Result<Handler, RemoteError> {
        let stop = Arc::new(EventFd::new().map_err(|source| RemoteError::Lazy {
            step: "eventfd for the fault handler",
            source,
        })?);
        let counters = Arc::new(Counters::default());
        let (stop2, counters2) = (stop.clone(), counters.clone());
        let thread =
            crate::sys::thread::spawn("pagesnap-lazy", move || run(server, &stop2, &counters2))
                .map_err(|source| RemoteError::Lazy {
                    step: "starting the fault handler thread",
                    source,
                })?;
        Ok(Handler {
            stop,
            thread: Some(thread),
            counters,
        })
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // If the signal cannot be sent the thread would never end: leave it detached.
        if self.stop.signal().is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn run(mut server: Server, stop: &EventFd, counters: &Counters) {
    let pages = server.pages;
    let mut present = std::mem::take(&mut server.present);
    let mut cache: HashMap<u128, Bytes> = HashMap::new();
    let (mut window, mut next) = (MIN_WINDOW, usize::MAX);
    let mut faults = Vec::new();
    loop {
        let (fault, stopped) = match uffd_missing::poll_two(server.uffd.as_fd(), stop.as_fd()) {
            Ok(r) => r,
            Err(e) => give_up(&server.name, "poll", &e),
        };
        if stopped {
            return;
        }
        if !fault {
            continue;
        }
        faults.clear();
        if let Err(e) = uffd_missing::read_faults(&server.uffd, &mut faults) {
            give_up(&server.name, "read of the userfaultfd", &e);
        }
        for &addr in &faults {
            counters.faults.fetch_add(1, Relaxed);
            let p = (addr as usize).wrapping_sub(server.base) / server.page;
            if p >= pages {
                continue;
            }
            let at = server.base + p * server.page;
            if present[p] {
                if uffd_missing::resident(at, server.page) {
                    // Filled after this fault was queued; the copy woke it already.
                    let _ = uffd_missing::wake(&server.uffd, at, server.page);
                    continue;
                }
                // Dropped by the program since (`MADV_DONTNEED`): it reads as
                // the snapshot again, as an eager clone's page does.
                present[p] = false;
            }
            // Read-ahead: grow while faults walk forward, else a small aligned window.
            let start = if p == next {
                window = (window * 2).min(MAX_WINDOW);
                p
            } else {
                window = MIN_WINDOW;
                p - p % MIN_WINDOW
            };
            let end = (start + window).min(pages);
            next = end;
            if let Err(e) = server.fill(start, end, &mut present, &mut cache, counters) {
                give_up(&server.name, "fetching pages", &e);
            }
        }
    }
}

impl Server {
    /// Fetches and copies in the missing pages of `[start, end)`.
    fn fill(
        &mut self,
        start: usize,
        end: usize,
        present: &mut [bool],
        cache: &mut HashMap<u128, Bytes>,
        counters: &Counters,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let page = self.page;
        let hashes: Vec<Option<u128>> = (start..end).map(|p| self.hash_of(p)).collect();
        let mut wanted: BTreeMap<u32, Vec<(u32, u128)>> = BTreeMap::new();
        for (i, &here) in present[start..end].iter().enumerate() {
            if let (false, Some(h)) = (here, hashes[i]) {
                if !cache.contains_key(&h) {
                    let entry = self
                        .entry_of(start + i)
                        .expect("a page with a hash has an entry");
                    let loc = self.places.of(entry as u64);
                    let slots = wanted.entry(loc.pack).or_default();
                    if !slots.iter().any(|s| s.1 == h) {
                        slots.push((loc.slot, h));
                    }
                }
            }
        }
        let mut got: HashMap<u128, Bytes> = HashMap::new();
        for (pack, mut slots) in wanted {
            slots.sort_unstable();
            counters.requests.fetch_add(1, Relaxed);
            let pages = self.fetch(&self.places.packs[pack as usize], slots)?;
            for (h, b) in pages {
                counters.bytes.fetch_add(b.len() as u64, Relaxed);
                got.insert(h, b);
            }
        }
        // Copy each run of missing pages in one UFFDIO_COPY.
        let mut buf: Vec<u8> = Vec::with_capacity((end - start) * page);
        let mut p = start;
        while p < end {
            if present[p] {
                p += 1;
                continue;
            }
            let first = p;
            buf.clear();
            while p < end && !present[p] {
                match hashes[p - start] {
                    None => buf.resize(buf.len() + page, 0),
                    Some(h) => {
                        let data = got
                            .get(&h)
                            .or_else(|| cache.get(&h))
                            .ok_or("a fetched page went missing")?;
                        buf.extend_from_slice(data);
                    }
                }
                present[p] = true;
                p += 1;
            }
            // Counted first: the copy wakes the faulting thread, which may read them.
            counters.pages.fetch_add((p - first) as u64, Relaxed);
            uffd_missing::copy(&self.uffd, self.base + first * page, &buf, page)?;
        }
        for (h, b) in got {
            if self.repeats.binary_search(&h).is_ok() {
                cache.insert(h, b);
            }
        }
        Ok(())
    }

    /// The entry of `table` for page `p`; `None` for a zero page.
    fn entry_of(&self, p: usize) -> Option<usize> {
        self.table.binary_search_by_key(&(p as u64), |e| e.0).ok()
    }

    /// The content hash of page `p`; `None` for a zero page.
    fn hash_of(&self, p: usize) -> Option<u128> {
        self.entry_of(p).map(|e| self.table[e].1)
    }

    /// One pack's pages, tried a few times (object stores retry transient errors
    /// themselves; this covers a dropped connection between their retries).
    fn fetch(
        &self,
        pack: &str,
        slots: Vec<(u32, u128)>,
    ) -> Result<Vec<(u128, Bytes)>, RemoteError> {
        let mut tries = 0;
        loop {
            let page_of = |h: u128| self.table.iter().find(|e| e.1 == h).map_or(0, |e| e.0);
            let got = self.shared.block_on(fetch_from_pack(
                &*self.shared.store,
                pack,
                slots.clone(),
                self.page,
                &self.name,
                &page_of,
            ))?;
            tries += 1;
            match got {
                Err(RemoteError::Store { .. }) if tries < TRIES => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => return other,
            }
        }
    }
}

/// A page that cannot be had leaves the faulting thread no way on: stop the
/// process with the reason rather than hand it wrong bytes or hang it forever.
fn give_up(name: &str, step: &str, error: &dyn std::fmt::Display) -> ! {
    eprintln!("pagesnap: the lazy clone of {name:?} cannot go on ({step}: {error}); aborting");
    std::process::abort()
}
