//! Loading: checked page records go into the store (staged: each copied into a
//! frame slot and hashed there), the page table becomes a tree over the base
//! (zeros, or the parent), and the result's digest must equal the footer's. On any
//! error every page taken into the store is released again (`Staged` does it).

use super::error::FileError;
use super::format::FileKind;
use super::options::LoadOptions;
use super::read::{self, Opened, RecordStats};
use super::FileInfo;
use crate::store::frames::FrameId;
use crate::store::{PageRun, PageStore, RunFrames, Staged, TableCost, Tree};
use crate::Digest;
use std::path::Path;

/// The snapshot a delta is loaded onto: what the file is checked against, and
/// the table its changes go over.
pub(crate) struct Parent<'a> {
    pub(crate) tree: &'a Tree,
    pub(crate) len: usize,
    pub(crate) digest: Digest,
}

/// A loaded file's contents, checked against its digest: the parts of a
/// snapshot (its table, length and origin address, 0 when unknown).
pub(crate) struct Loaded {
    pub(crate) tree: Tree,
    pub(crate) len: usize,
    pub(crate) origin: usize,
}

/// Opens `path`, checks it is of kind `expected`, and loads it.
pub(crate) fn load(
    path: &Path,
    expected: FileKind,
    store: &PageStore,
    parent: Option<Parent<'_>>,
    options: &LoadOptions,
) -> Result<(Loaded, FileInfo), FileError> {
    let opened = read::open(path)?;
    options.check(opened.header.len)?;
    if opened.header.kind != expected {
        return Err(FileError::Kind {
            expected,
            found: opened.header.kind,
        });
    }
    load_opened(opened, store, parent)
}

fn too_large(what: &'static str, count: u64, each: u64) -> FileError {
    FileError::TooLarge {
        what,
        bytes: count.saturating_mul(each),
    }
}

/// Loads an opened file: a full one into `store`, a delta onto `parent`.
pub(crate) fn load_opened(
    opened: Opened,
    store: &PageStore,
    parent: Option<Parent<'_>>,
) -> Result<(Loaded, FileInfo), FileError> {
    let h = opened.header;
    let machine = crate::sys::page_size();
    if h.page_size as usize != machine {
        return Err(FileError::PageSize {
            file: h.page_size,
            machine,
        });
    }
    let len = usize::try_from(h.len).map_err(|_| too_large("the region", h.len, 1))?;
    let pages = len / machine;
    if let Some(p) = &parent {
        if p.len != len {
            return Err(FileError::ParentLength {
                parent: p.len as u64,
                snapshot: h.len,
            });
        }
        let expected = Digest::from_bytes(h.parent);
        if p.digest != expected {
            return Err(FileError::ParentDigest {
                expected,
                given: p.digest,
            });
        }
    }

    let count = opened.footer.data_count;
    // Record i is staged as "page" i: `held` keeps the frames until the table
    // takes references of its own; `ids` lists them in record order.
    // What the table built below from the runs will cost.
    let cost = || {
        let mut cost = TableCost::default();
        for run in &opened.runs {
            let first = usize::try_from(run.first).unwrap_or(usize::MAX);
            match (run.data_of(0), run.repeat) {
                (None, _) if parent.is_none() => {}
                (None, _) | (Some(_), true) => cost.add_same_run(first, run.count as usize),
                (Some(_), false) => cost.add_run(first, run.count as usize),
            }
        }
        cost
    };
    store
        .room_for_tables(cost)
        .map_err(|e| too_large(e.what().0, e.what().1 as u64, 1))?;
    let mut held = Staged::new(store);
    held.try_reserve(count)
        .map_err(|_| too_large("the stored pages", count, 16))?;
    let mut ids: Vec<FrameId> = Vec::new();
    ids.try_reserve_exact(count as usize)
        .map_err(|_| too_large("the stored pages' ids", count, 4))?;
    let stats = opened.for_each_batch(|batch| {
        for p in batch {
            let id = held.add(ids.len(), p).map_err(|e| {
                let (what, bytes) = e.what();
                FileError::TooLarge {
                    what,
                    bytes: bytes as u64,
                }
            })?;
            ids.push(id);
        }
        Ok(())
    })?;

    // The table is built from the runs themselves: a run of one frame (or of
    // zeros) shares its subtrees, so the cost follows the file, not the region.
    let mut runs: Vec<PageRun<'_>> = Vec::new();
    runs.try_reserve_exact(opened.runs.len())
        .map_err(|_| too_large("the page table's runs", opened.runs.len() as u64, 32))?;
    for run in &opened.runs {
        // Run::decode checked every run against the region's pages and every data
        // index against the record count (which ids has, one id each).
        let frames = match (run.data_of(0), run.repeat) {
            (None, _) if parent.is_none() => continue, // zeros over a zero base
            (None, _) => RunFrames::Same(FrameId::ZERO),
            (Some(d), true) => RunFrames::Same(ids[d as usize]),
            (Some(d), false) => {
                let d = d as usize;
                RunFrames::Each(&ids[d..d + run.count as usize])
            }
        };
        runs.push(PageRun {
            first: usize::try_from(run.first).map_err(|_| too_large("the region", h.len, 1))?,
            count: run.count as usize,
            frames,
        });
    }
    let zero_base = match parent {
        Some(_) => None,
        None => Some(Tree::zero(store, pages)),
    };
    let base = match (&zero_base, &parent) {
        (Some(t), _) => t,
        (None, Some(p)) => p.tree,
        (None, None) => unreachable!("a zero base is made when there is no parent"),
    };
    let tree = base.with_runs(&runs);
    drop(runs);
    drop(zero_base);
    drop(held);
    let origin = usize::try_from(opened.header.origin).unwrap_or(0);
    // The snapshot's digest (`Snapshot::digest`), which it will find cached in
    // the table's nodes.
    let computed = Digest(tree.digest());
    let stored = Digest::from_bytes(opened.footer.digest);
    if computed != stored {
        return Err(FileError::Digest { stored, computed });
    }
    let info = info(&opened, stats, true);
    Ok((Loaded { tree, len, origin }, info))
}

/// The description of an opened file whose records were streamed.
pub(crate) fn info(opened: &Opened, stats: RecordStats, digest_checked: bool) -> FileInfo {
    let h = &opened.header;
    FileInfo {
        version: h.version,
        origin: usize::try_from(h.origin).ok().filter(|&o| o != 0),
        kind: h.kind,
        page_size: h.page_size,
        len: h.len,
        pages: h.pages(),
        runs: opened.runs.len() as u64,
        listed_pages: opened.listed(),
        zero_pages: opened.zero_listed(),
        stored_pages: opened.footer.data_count,
        compressed_pages: stats.compressed,
        stored_bytes: stats.stored_bytes,
        file_bytes: opened.size,
        parent: (h.kind == FileKind::Delta).then(|| Digest::from_bytes(h.parent)),
        digest: Digest::from_bytes(opened.footer.digest),
        digest_checked,
    }
}
