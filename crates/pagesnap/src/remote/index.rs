//! What the remote holds: every pack index read so far, as hash → (pack, slot).
//!
//! Indexes are immutable once written, so each is read once per [`Remote`]
//! handle; a refresh lists the packs folder and reads only the new ones.
//!
//! [`Remote`]: super::Remote

use super::error::RemoteError;
use super::format::{PackIndex, INDEX_SUFFIX, PACKS};
use super::{index_path, store_error, Shared, PARALLEL};
use crate::store::IdentityHasher;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

/// Where a page lives: pack number (in [`Known::packs`]) and slot in the pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) pack: u32,
    pub(super) slot: u32,
}

/// The pages the remote is known to hold.
#[derive(Default)]
pub(super) struct Known {
    loaded: HashSet<String>,
    /// Packs seen to exist (uploaded, or looked at) by this handle.
    pub(super) present: HashSet<String>,
    /// Packs whose index is there but not the pack: not read again.
    lost: HashSet<String>,
    /// Pack names, by pack number.
    pub(super) packs: Vec<String>,
    pub(super) at: HashMap<u128, Location, BuildHasherDefault<IdentityHasher>>,
}

impl Known {
    /// Records a pack and its pages (one just read, or one just uploaded).
    pub(super) fn add(&mut self, name: String, hashes: &[u128]) {
        self.lost.remove(&name);
        if !self.loaded.insert(name.clone()) {
            return;
        }
        let pack = self.packs.len() as u32;
        self.packs.push(name);
        for (slot, &h) in hashes.iter().enumerate() {
            self.at.entry(h).or_insert(Location {
                pack,
                slot: slot as u32,
            });
        }
    }

    /// Forgets packs found missing (their indexes remain): their pages count
    /// as absent, so the next push uploads them again.
    pub(super) fn forget(&mut self, lost: &[String]) {
        for name in lost {
            let numbers: HashSet<u32> = (0..self.packs.len() as u32)
                .filter(|&n| self.packs[n as usize] == *name)
                .collect();
            self.at.retain(|_, l| !numbers.contains(&l.pack));
            self.loaded.remove(name);
            self.present.remove(name);
            self.lost.insert(name.clone());
        }
    }

    /// Reads the indexes of packs written since the last refresh.
    pub(super) fn refresh(&mut self, shared: &Shared) -> Result<(), RemoteError> {
        let folder = Path::from(PACKS);
        let machine = crate::sys::page_size();
        let new: Vec<String> = shared.block_on(async {
            let metas: Vec<_> = shared
                .store
                .list(Some(&folder))
                .try_collect()
                .await
                .map_err(|e| store_error("listing", &folder, e))?;
            Ok::<_, RemoteError>(
                metas
                    .into_iter()
                    .filter_map(|m| {
                        m.location
                            .filename()?
                            .strip_suffix(INDEX_SUFFIX)
                            .map(str::to_string)
                    })
                    .filter(|n| !self.loaded.contains(n) && !self.lost.contains(n))
                    .collect(),
            )
        })??;
        let read = shared.block_on(
            futures_util::stream::iter(new)
                .map(|name| async move {
                    let path = index_path(&name);
                    let bytes = shared
                        .store
                        .get(&path)
                        .await
                        .map_err(|e| store_error("download", &path, e))?
                        .bytes()
                        .await
                        .map_err(|e| store_error("download", &path, e))?;
                    // A damaged or foreign index is passed over: its pages
                    // only count as absent, and the next push uploads them.
                    let index = PackIndex::decode(path.as_ref(), &bytes).ok();
                    Ok::<_, RemoteError>((name, index))
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<_>>(),
        )??;
        for (name, index) in read {
            match index {
                // Packs of another page size can hold none of this machine's pages.
                Some(index) if index.page_size as usize == machine => self.add(name, &index.hashes),
                Some(_) => {}
                None => {
                    self.lost.insert(name);
                }
            }
        }
        Ok(())
    }
}
