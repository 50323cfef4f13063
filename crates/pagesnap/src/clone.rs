//! Clones: many regions started from one snapshot, each ready in microseconds,
//! sharing every page none of them has written.
//!
//! ```text
//!  Snapshot S ── first instantiate: write S's non-zero pages once into a memfd
//!      │          (zero pages stay holes), cached in S for every later clone
//!      ▼
//!  image (memfd, tmpfs page cache) ◄─── read faults map these very pages
//!      ▲             ▲             ▲     (shared by every clone, never written)
//!  clone A        clone B        clone C    mmap(MAP_PRIVATE) of the image:
//!  [ · w · ]      [ · · · ]      [ w · w ]  a write copies one page into that
//!                                           clone alone (w); the image never changes
//! ```
//!
//! A clone is a full [`Region`] whose sync point is S itself: it tracks, snapshots
//! and restores like any other, and [`Region::reset`] drops its written pages
//! (`MADV_DONTNEED`) so the image shows through again.
//!
//! ## Why a private mapping of a memfd image
//!
//! Instantiating is an `mmap` plus arming the tracker, whatever the size: no page
//! is copied, and a page comes in on its first touch through the ordinary fault
//! path, with no thread of ours involved. Pages a clone only reads are the image's
//! page-cache pages, one copy for all clones of S. The price is the image itself:
//! a second copy of S's non-zero pages (beside the store's frames), written once
//! per snapshot at its first `instantiate` (O(non-zero pages)) and kept while S
//! lives.
//!
//! The alternatives, weighed against that:
//! - userfaultfd `MINOR` faults + `UFFDIO_CONTINUE` over a shared memfd: the image
//!   must be in the page cache all the same, and each first touch becomes a round
//!   trip through a handler thread (≈ 10–17 µs per page here, against ≈ 1–4 µs for
//!   a plain fault). It pays off only when the image is filled lazily (from a
//!   file or the network); ours is already in memory.
//! - userfaultfd `MISSING` + `UFFDIO_COPY` straight from the store (Firecracker):
//!   no image, but every page a clone touches, even to read, becomes a private
//!   copy in that clone (no sharing), and a handler-thread round trip.
//!
//! ## Tracking a clone
//!
//! Each backend starts at S: mprotect and soft-dirty work unchanged on a private
//! file mapping; compare starts from the page hashes of S (read off the store's
//! frames, no page is hashed); uffd-wp arms chunk by chunk as with any region — an
//! unarmed chunk's untouched pages are holes that read as the image, so
//! "populated" still covers "written" (pages only read are reported too, and
//! deduplicate to the frames S already holds).

use crate::error::{Error, Result};
use crate::region::{Region, RegionBuilder};
use crate::snapshot::{Image, Snapshot};
use crate::sys::memfd::Memfd;
use crate::sys::page_size;
use crate::track::{self, runs};
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

/// Writes `snap`'s non-zero pages at their offsets into a new image; zero pages
/// stay holes.
fn build_image(snap: &Snapshot) -> io::Result<Image> {
    /// Pages gathered into one `pwritev` at most.
    const BATCH: usize = 1024;
    let memfd = Memfd::create(c"pagesnap-clone-image", snap.len())?;
    let page = page_size();
    let store = snap.store();
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(BATCH);
    let (mut first, mut next) = (0, 0);
    let mut result = Ok(());
    snap.tree().for_each_nonzero(|p, id| {
        if result.is_err() {
            return;
        }
        if !bufs.is_empty() && (p != next || bufs.len() == BATCH) {
            result = memfd.write_at(first * page, &bufs);
            bufs.clear();
        }
        if bufs.is_empty() {
            first = p;
        }
        bufs.push(store.frame(id));
        next = p + 1;
    });
    if result.is_ok() && !bufs.is_empty() {
        result = memfd.write_at(first * page, &bufs);
    }
    drop(bufs);
    result.map(|()| Image { memfd })
}

impl Snapshot {
    /// A new [`Region`] whose contents equal this snapshot: a *clone*.
    ///
    /// Ready in time that does not grow with the length (an `mmap` of the
    /// snapshot's image and arming the tracker); pages come in on first touch.
    /// Clones of one snapshot share every page none of them has written; writes in
    /// a clone reach neither the snapshot, nor other clones, nor the region the
    /// snapshot came from. The clone tracks, snapshots and restores like any
    /// region, keeps its snapshots in this snapshot's store, and
    /// [`reset`](Region::reset) takes it back here in time proportional to what
    /// it wrote.
    ///
    /// The first clone of a snapshot writes its non-zero pages once into a memory
    /// file (the *image*, O(non-zero pages)), which later clones reuse: it lives
    /// as long as the snapshot does. See the `clone` module for the design.
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(64 << 20).build()?;
    /// region.as_mut_slice()[..5].copy_from_slice(b"hello");
    /// let snap = region.snapshot()?;
    ///
    /// let mut a = snap.instantiate()?;
    /// let b = snap.instantiate()?;
    /// a.as_mut_slice()[0] = b'j';
    /// assert_eq!(&a.as_slice()[..5], b"jello");
    /// assert_eq!(&b.as_slice()[..5], b"hello"); // untouched by a's write
    /// a.reset()?;
    /// assert_eq!(&a.as_slice()[..5], b"hello");
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn instantiate(&self) -> Result<Region> {
        self.instantiate_with(Region::builder(self.len()))
    }

    /// As [`instantiate`](Self::instantiate), with the tracking backend, huge
    /// pages and store of `builder`. Its length must be this snapshot's
    /// ([`Error::LengthMismatch`] otherwise). Without
    /// [`store`](RegionBuilder::store), the clone uses this snapshot's store;
    /// another store costs a copy of the snapshot's pages into it.
    pub fn instantiate_with(&self, builder: RegionBuilder) -> Result<Region> {
        let (asked, tracking, huge, store, at) = builder.into_parts();
        if asked == 0 {
            return Err(Error::ZeroLength);
        }
        let len = asked
            .checked_next_multiple_of(page_size())
            .ok_or(Error::LengthOverflow { len: asked })?;
        if len != self.len() {
            return Err(Error::LengthMismatch {
                snapshot: self.len(),
                region: len,
            });
        }
        let kind = track::resolve(tracking)?;
        let store = store.unwrap_or_else(|| self.store().clone());
        let base = self.in_store(&store)?;
        let image = self.image()?;
        let map = crate::placement::private_file(image.memfd.as_fd(), len, huge, at)?;
        let tracker = track::arm_clone(kind, &map, || page_hashes(&base))?;
        Ok(Region::from_parts(map, tracker, store, base, huge))
    }

    /// As [`instantiate`](Self::instantiate), at exactly `addr`: at
    /// [`origin`](Self::origin), every pointer the snapshot holds into itself is
    /// valid in the clone (a heap, an interpreter's state), in this process or in
    /// another that loaded the snapshot from a file. Never replaces a mapping: a
    /// range in use is [`Error::AddressTaken`].
    ///
    /// ```
    /// let mut region = pagesnap::Region::builder(1 << 20).build()?;
    /// let addr = region.as_ptr() as usize;
    /// region.as_mut_slice()[..8].copy_from_slice(&addr.to_ne_bytes()); // a pointer to itself
    /// let snap = region.snapshot()?;
    /// assert!(matches!(snap.instantiate_at(addr), Err(pagesnap::Error::AddressTaken { .. })));
    /// drop(region);
    /// let clone = snap.instantiate_at(snap.origin().unwrap())?;
    /// assert_eq!(clone.as_ptr() as usize, addr); // the pointer is valid again
    /// assert_eq!(clone.as_slice()[..8], addr.to_ne_bytes());
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn instantiate_at(&self, addr: usize) -> Result<Region> {
        self.instantiate_with(Region::builder(self.len()).at(addr))
    }

    /// The cached image, made now if this is the first clone.
    fn image(&self) -> Result<Arc<Image>> {
        if let Some(image) = self.image_cell().get() {
            return Ok(image.clone());
        }
        let image = build_image(self).map_err(|source| Error::Clone {
            step: "writing the image (memfd_create, pwritev)",
            len: self.len(),
            source,
        })?;
        // Two threads may build at once: one image wins, the other is dropped.
        Ok(self.image_cell().get_or_init(|| Arc::new(image)).clone())
    }

    /// Bytes of memory this snapshot's clone image holds (0 before the first
    /// [`instantiate`](Self::instantiate)): a copy of its non-zero pages, shared by
    /// all its clones.
    pub fn image_bytes(&self) -> u64 {
        self.image_cell().get().map_or(0, |i| i.resident_bytes())
    }
}

/// The compare tracker's keyed hash of every page of `snap`, from its frames'
/// bytes (the store keeps only their plain hashes).
fn page_hashes(snap: &Snapshot) -> Vec<u128> {
    let store = snap.store();
    let zero = crate::digest::keyed_page_hash(&vec![0u8; crate::sys::page_size()]);
    let mut hashes = vec![zero; snap.tree().pages()];
    snap.tree()
        .for_each_nonzero(|p, id| hashes[p] = crate::digest::keyed_page_hash(store.frame(id)));
    hashes
}

impl Region {
    /// Takes a clone back to the snapshot it was made from
    /// ([`cloned_from`](Self::cloned_from)), in time proportional to the pages written
    /// since (or changed by snapshots restored since), not to its length.
    ///
    /// Those pages are dropped (`MADV_DONTNEED`) rather than copied back: the
    /// image shows through them again and their memory is freed, so a reset clone
    /// holds no private pages. The origin becomes the sync point; tracking stays
    /// exact. Writers must be quiescent.
    ///
    /// A region built empty has no origin: [`Error::NotAClone`] (restore a
    /// snapshot instead, which costs the same).
    pub fn reset(&mut self) -> Result<()> {
        self.preflight()?;
        // Pages a failed call (or a forgotten converging run) took from the
        // tracker are written too: found by comparing first.
        self.resync_if_needed()?;
        let page = page_size();
        let mut parts = self.parts();
        let origin = parts.origin.ok_or(Error::NotAClone)?.clone();
        parts.dirty.clear();
        parts.tracker.peek(parts.map, parts.dirty)?;
        parts.dirty.append(parts.carried);
        parts.changes.clear();
        parts.base.tree().diff(origin.tree(), parts.changes);
        parts.dirty.extend(parts.changes.iter().map(|c| c.0));
        parts.dirty.sort_unstable();
        parts.dirty.dedup();
        for (first, n) in runs(parts.dirty) {
            parts
                .map
                .discard(parts.key, first * page, n * page)
                .map_err(|source| Error::Clone {
                    step: "madvise(MADV_DONTNEED) of written pages",
                    len: parts.map.len(),
                    source,
                })?;
        }
        parts.tracker.rearm(parts.map, parts.dirty)?;
        *parts.last_written = parts.dirty.len() as u64;
        *parts.base = origin;
        Ok(())
    }
}
