//! Snapshot files: [`Snapshot::save`], [`Snapshot::save_delta`],
//! [`Snapshot::load`], [`Snapshot::load_delta`], [`inspect`] and [`verify`].
//!
//! # Format, version 1
//!
//! All integers little-endian; crc32c is the Castagnoli CRC.
//!
//! ```text
//!  offset 0   ┌─ header (64 bytes) ────────────────────────────────────────────┐
//!             │ 0  magic "PAGESNAP"        8  version u32 (1)   12 kind u32    │
//!             │    (0 full, 1 delta)      16  page size u32    20 reserved 0  │
//!             │ 24 region length u64 (bytes, a multiple of the page size)       │
//!             │ 32 parent digest [16] (delta; zeros in a full file)             │
//!             │ 48 reserved zeros [12]   60 crc32c of bytes 0..60               │
//!  64         ├─ page table ────────────────────────────────────────────────────┤
//!             │ run count u64, then per run (16 bytes, sorted, disjoint):       │
//!             │   first page u64 │ count u31 + REPEAT bit │ data index u32      │
//!             │ pages first.. first+count hold stored pages data, data+1, …     │
//!             │ (REPEAT: all hold `data`; data = 0xffffffff: all zeros).        │
//!             │ Pages in no run: zero (full file) or the parent's (delta).      │
//!             │ crc32c u32 of the count and the runs                           │
//!  data_off   ├─ page records, one per distinct stored page, in first-use order ┤
//!             │ word u32: stored length (bits 0..31) + bit 31 = lz4-compressed  │
//!             │ crc32c u32 of the word and the stored bytes                     │
//!             │ stored bytes: the page, or its lz4 block when that is smaller   │
//!  size - 64  ├─ footer (64 bytes) ─────────────────────────────────────────────┤
//!             │ 0 table offset u64 (64)   8 data_off u64   16 record count u64  │
//!             │ 24 file length u64        32 digest of the snapshot [16]        │
//!             │ 48 reserved 0 u32         52 crc32c of bytes 0..52              │
//!             │ 56 magic "PSNAPEND"                                             │
//!             └─────────────────────────────────────────────────────────────────┘
//! ```
//!
//! # Format, version 2: records first, table last
//!
//! Written by [`Region::background_save`](crate::Region::background_save), which
//! streams pages out before it knows the page table. Everything is as in
//! version 1 except the order of the middle parts and the footer's offsets:
//!
//! ```text
//!  0          header (version 2)
//!  64         page records            (footer: data_off = 64)
//!  table_off  page table              (footer: table_off, after the records)
//!  size - 64  footer
//! ```
//! Records are in the order they were written, which need not be first use;
//! a page may be stored twice (pages are deduplicated only as far as the writer
//! could check their bytes).
//!
//! # Versions 3 and 4: the origin address
//!
//! Versions 3 (laid out as 1) and 4 (laid out as 2) record where the snapshot's
//! region was mapped ([`Snapshot::origin`]) in header bytes 48..56 (u64; 0 when
//! unknown), leaving 56..60 reserved. [`Snapshot::save`] writes version 3, a
//! background save version 4. Readers accept all four; a snapshot loaded from
//! version 1 or 2 has no origin.
//!
//! Guarantees:
//! - **Atomic and durable**: a file is written to a temporary file beside the
//!   target (mode 0600), fsynced, renamed over the target, and the directory is
//!   fsynced. A crash at any point leaves the old file or the new one, whole.
//! - **Nothing trusted**: every length and count is checked against the file size
//!   before anything is sized from it; every block's checksum, every run and every
//!   record is checked, and finally the loaded snapshot's digest must equal the
//!   footer's. Any failure is a [`FileError`] naming the part and its byte offset;
//!   nothing partly loaded is handed back, and the pages read are released.
//! - **Versioned**: a reader reads its own version and every older one; a newer
//!   version is refused with [`FileError::Version`].
//! - **Compact**: zero pages are not stored, equal pages are stored once, and a
//!   delta stores only the pages whose frames differ from the parent's (found by
//!   comparing page tables, shared subtrees skipped).
//!
//! Time and memory a load, [`verify`] or [`inspect`] takes follow the file, not
//! the region length it declares: the distinct pages (each record decodes to at
//! most one page) plus a page table built from the runs, where a run of one page
//! (or of zeros) shares its subtrees. Allocations sized from the file are fallible
//! and fail as [`FileError::TooLarge`]; [`LoadOptions`] caps the region length a
//! caller accepts from an untrusted file.

pub(crate) use crate::snapfile::{rounds, stream};
pub use crate::snapfile::{FileError, FileInfo, FileKind, LoadOptions, SaveReport, VERSION};

use crate::error::{Error, Result};
use crate::snapfile::load::{self, Loaded, Parent};
use crate::snapfile::write::Plan;
use crate::snapfile::{atomic, format, read, write};
use crate::snapshot::Snapshot;
use crate::store::PageStore;
use std::path::Path;

fn at(path: &Path) -> impl FnOnce(FileError) -> Error + '_ {
    move |source| Error::File {
        path: path.to_path_buf(),
        source,
    }
}

/// What a delta is checked against and loaded onto.
fn parent_of(s: &Snapshot) -> Parent<'_> {
    Parent {
        tree: s.tree(),
        len: s.len(),
        digest: s.digest(),
    }
}

/// The snapshot a file held, once loaded and checked.
fn snapshot_of(l: Loaded) -> Snapshot {
    Snapshot::from_tree_at(l.tree, l.len, l.origin as *const u8)
}

impl Snapshot {
    /// Saves the snapshot as a self-contained file at `path`, atomically replacing
    /// any file there (see the [format and guarantees](crate::file)).
    ///
    /// ```
    /// use pagesnap::{PageStore, Region, Snapshot};
    /// let dir = std::env::temp_dir().join(format!("pagesnap-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut region = Region::builder(1 << 20).build()?;
    /// region.as_mut_slice()[..5].copy_from_slice(b"hello");
    /// let snap = region.snapshot()?;
    /// snap.save(dir.join("a.snap"))?;
    /// let back = Snapshot::load(dir.join("a.snap"), &PageStore::new())?;
    /// assert_eq!(back.digest(), snap.digest());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), pagesnap::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<SaveReport> {
        let path = path.as_ref();
        let mut plan = Plan::default();
        self.tree().for_each_nonzero(|p, id| plan.push(p, id));
        self.save_plan(path, &plan, format::FileKind::Full, [0; 16])
    }

    /// Saves only the pages where this snapshot differs from `parent` (same
    /// length), and `parent`'s digest; [`load_delta`](Self::load_delta) with that
    /// parent rebuilds this snapshot. Differences are found by comparing page
    /// tables: cost follows the changes, not the region.
    pub fn save_delta(&self, path: impl AsRef<Path>, parent: &Snapshot) -> Result<SaveReport> {
        let path = path.as_ref();
        if parent.len() != self.len() {
            return Err(at(path)(FileError::ParentLength {
                parent: parent.len() as u64,
                snapshot: self.len() as u64,
            }));
        }
        let parent_here = parent.in_store(self.store())?;
        let mut changes = Vec::new();
        parent_here.tree().diff(self.tree(), &mut changes);
        drop(parent_here);
        let mut plan = Plan::default();
        for (p, id) in changes {
            plan.push(p, id);
        }
        self.save_plan(
            path,
            &plan,
            format::FileKind::Delta,
            parent.digest().to_bytes(),
        )
    }

    fn save_plan(
        &self,
        path: &Path,
        plan: &Plan,
        kind: FileKind,
        parent: [u8; 16],
    ) -> Result<SaveReport> {
        let header = format::Header {
            version: format::VERSION_TABLE_FIRST_ORIGIN,
            kind,
            page_size: crate::sys::page_size() as u32,
            len: self.len() as u64,
            parent,
            origin: self.origin().unwrap_or(0) as u64,
        };
        atomic::replace(path, |file| {
            write::write(file, self.store(), &header, plan, self.digest())
        })
        .map_err(at(path))
    }

    /// Loads a full snapshot file into `store`; its pages are deduplicated against
    /// what the store holds. The result's digest equals the saved snapshot's.
    ///
    /// Time and memory follow the file (its size and distinct pages), not the
    /// region length it declares; to cap that length for a file from an untrusted
    /// source, use [`load_with`](Self::load_with).
    pub fn load(path: impl AsRef<Path>, store: &PageStore) -> Result<Snapshot> {
        Snapshot::load_with(path, store, &LoadOptions::new())
    }

    /// As [`load`](Self::load), refusing files beyond `options`' limits (see
    /// [`LoadOptions`]).
    pub fn load_with(
        path: impl AsRef<Path>,
        store: &PageStore,
        options: &LoadOptions,
    ) -> Result<Snapshot> {
        let path = path.as_ref();
        load::load(path, FileKind::Full, store, None, options)
            .map(|(l, _)| snapshot_of(l))
            .map_err(at(path))
    }

    /// Loads a delta file on top of `parent` (into `parent`'s store). Fails when
    /// `parent`'s digest is not the one the delta was saved against.
    pub fn load_delta(path: impl AsRef<Path>, parent: &Snapshot) -> Result<Snapshot> {
        let path = path.as_ref();
        load::load(
            path,
            FileKind::Delta,
            parent.store(),
            Some(parent_of(parent)),
            &LoadOptions::new(),
        )
        .map(|(l, _)| snapshot_of(l))
        .map_err(at(path))
    }
}

/// Describes a snapshot file, checking its header, footer, page table and every
/// page record (checksums and decoding), but not its digest (see [`verify`]).
pub fn inspect(path: impl AsRef<Path>) -> Result<FileInfo> {
    let path = path.as_ref();
    let run = || {
        let opened = read::open(path)?;
        let stats = opened.for_each_batch(|_| Ok(()))?;
        Ok(load::info(&opened, stats, false))
    };
    run().map_err(at(path))
}

/// Checks a snapshot file end to end. A full file is loaded into a scratch store
/// and its digest recomputed (memory: its distinct pages); a delta's digest needs
/// its parent, so it gets every check but that one (`digest_checked` is false) —
/// use [`Snapshot::load_delta`] for the rest.
pub fn verify(path: impl AsRef<Path>) -> Result<FileInfo> {
    verify_with(path, &LoadOptions::new())
}

/// As [`verify`], refusing files beyond `options`' limits (see [`LoadOptions`]).
pub fn verify_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<FileInfo> {
    let path = path.as_ref();
    let run = || {
        let opened = read::open(path)?;
        options.check(opened.header.len)?;
        if opened.header.kind == FileKind::Delta {
            let stats = opened.for_each_batch(|_| Ok(()))?;
            return Ok(load::info(&opened, stats, false));
        }
        let store = PageStore::new();
        let (_, info) = load::load_opened(opened, &store, None)?;
        Ok(info)
    };
    run().map_err(at(path))
}
