//! Loading: checked page records go into the store in batches (hashed outside the
//! lock, one lock per batch), the page table becomes a tree over the base (zeros,
//! or the parent), and the result's digest must equal the footer's. On any error
//! every page taken into the store is released again.

use super::error::FileError;
use super::format::FileKind;
use super::read::{self, Opened, RecordStats};
use super::FileInfo;
use crate::digest::page_hash;
use crate::snapshot::Snapshot;
use crate::store::frames::FrameId;
use crate::store::tree::Tree;
use crate::store::PageStore;
use crate::Digest;
use std::path::Path;

/// Frames taken into the store for the records read so far, each with the one
/// reference its insertion gave; released when dropped (never drop it while the
/// store is locked).
struct Held {
    store: PageStore,
    ids: Vec<FrameId>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut st = self.store.lock();
        for &id in &self.ids {
            st.frames.release(id);
        }
    }
}

/// Opens `path`, checks it is of kind `expected`, and loads it.
pub(crate) fn load(
    path: &Path,
    expected: FileKind,
    store: &PageStore,
    parent: Option<&Snapshot>,
) -> Result<(Snapshot, FileInfo), FileError> {
    let opened = read::open(path)?;
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
    parent: Option<&Snapshot>,
) -> Result<(Snapshot, FileInfo), FileError> {
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
    if let Some(p) = parent {
        if p.len() != len {
            return Err(FileError::ParentLength {
                parent: p.len() as u64,
                snapshot: h.len,
            });
        }
        let expected = Digest::from_bytes(h.parent);
        if p.digest() != expected {
            return Err(FileError::ParentDigest {
                expected,
                given: p.digest(),
            });
        }
    }

    let count = opened.footer.data_count;
    let mut held = Held {
        store: store.clone(),
        ids: Vec::new(),
    };
    held.ids
        .try_reserve_exact(count as usize)
        .map_err(|_| too_large("the stored pages' ids", count, 4))?;
    let mut hashes = Vec::new();
    let stats = opened.for_each_batch(|batch| {
        hashes.clear();
        hashes.extend(batch.iter().map(|p| page_hash(p)));
        let mut st = store.lock();
        for (p, &hash) in batch.iter().zip(&hashes) {
            held.ids.push(st.frames.insert_hashed(p, hash));
        }
        Ok(())
    })?;

    // Zero runs change nothing over a zero base.
    let listed = match parent {
        Some(_) => opened.listed(),
        None => opened.listed() - opened.zero_listed(),
    };
    let mut changes: Vec<(usize, FrameId)> = Vec::new();
    changes
        .try_reserve_exact(listed as usize)
        .map_err(|_| too_large("the page table's changes", listed, 16))?;
    let zero_base = match parent {
        Some(_) => None,
        None => Some(Tree::zero(store, pages)),
    };
    let base = match (&zero_base, parent) {
        (Some(t), _) => t,
        (None, Some(p)) => p.tree(),
        (None, None) => unreachable!("a zero base is made when there is no parent"),
    };
    let tree = {
        let mut st = store.lock();
        for run in &opened.runs {
            if run.data_of(0).is_none() && parent.is_none() {
                continue;
            }
            for i in 0..run.count {
                let id = match run.data_of(i) {
                    // Run::decode checked every data index against the record count.
                    Some(d) => held.ids[d as usize],
                    None => FrameId::ZERO,
                };
                st.frames.retain(id);
                changes.push(((run.first + u64::from(i)) as usize, id));
            }
        }
        base.with_changes(&mut st, &changes)
    };
    drop(zero_base);
    drop(held);
    let origin = usize::try_from(opened.header.origin).unwrap_or(0);
    let snap = Snapshot::from_tree_at(tree, len, origin as *const u8);
    let stored = Digest::from_bytes(opened.footer.digest);
    if snap.digest() != stored {
        return Err(FileError::Digest {
            stored,
            computed: snap.digest(),
        });
    }
    let info = info(&opened, stats, true);
    Ok((snap, info))
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
