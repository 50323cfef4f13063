//! Pull: read a manifest, fetch its pages from the packs (coalesced ranges, a few
//! packs at a time), check each against its hash, and build the snapshot in a store.

use super::error::RemoteError;
use super::format::Manifest;
use super::index::Location;
use super::places::Places;
use super::{
    check_name, manifest_path, pack_path, store_error, Remote, Shared, Transfer, PARALLEL,
};
use crate::digest::page_hash;
use crate::store::IdentityHasher;
use crate::store::{PageStore, Staged, TableCost, Tree};
use crate::Snapshot;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

impl Remote {
    /// Downloads the snapshot `name` into `store`, checking every page against
    /// its content hash and the result against the manifest's digest. Pages
    /// `store` holds already are shared, as always.
    pub fn pull(&self, name: &str, store: &PageStore) -> Result<Snapshot, RemoteError> {
        self.pull_with_progress(name, store, |_| {})
    }

    /// As [`pull`](Self::pull), calling `progress` as pages arrive.
    pub fn pull_with_progress(
        &self,
        name: &str,
        store: &PageStore,
        mut progress: impl FnMut(Transfer),
    ) -> Result<Snapshot, RemoteError> {
        let shared = &*self.shared;
        let manifest = shared.manifest(name)?;
        let page = crate::sys::page_size();
        let pages =
            usize::try_from(manifest.len / page as u64).map_err(|_| RemoteError::TooLarge {
                what: "the snapshot",
                bytes: manifest.len,
            })?;
        let (wanted, packs) = shared.locate(name, &manifest)?;
        let total: u64 = wanted.values().map(|v| (v.len() * page) as u64).sum();
        let mut done = Transfer { bytes: 0, total };
        progress(done);

        // Every page of the manifest by hash: a fetched page is staged once per
        // page that holds it (the first copy is stored, the rest share its frame).
        let mut pages_of: HashMap<u128, Vec<usize>> = HashMap::new();
        for &(p, h) in &manifest.pages {
            pages_of.entry(h).or_default().push(p as usize);
        }
        let mut staged = Staged::new(store);
        staged
            .try_reserve(manifest.pages.len() as u64)
            .map_err(|_| RemoteError::TooLarge {
                what: "the snapshot's page list",
                bytes: manifest.pages.len() as u64,
            })?;
        store
            .room_for_tables(|| {
                TableCost::of_pages(manifest.pages.iter().map(|&(p, _)| p as usize))
            })
            .map_err(|e| RemoteError::TooLarge {
                what: e.what().0,
                bytes: e.what().1 as u64,
            })?;
        let first_page = first_pages(&manifest);
        let page_of = |h: u128| first_page.get(&h).copied().unwrap_or(0);
        let fetches = futures_util::stream::iter(wanted)
            .map(|(pack, slots)| {
                fetch_from_pack(
                    &*shared.store,
                    &packs[pack as usize],
                    slots,
                    page,
                    name,
                    &page_of,
                )
            })
            .buffer_unordered(PARALLEL);
        shared.block_on(async {
            let mut fetches = std::pin::pin!(fetches);
            while let Some(got) = fetches.next().await {
                let got = got?;
                for (hash, bytes) in &got {
                    let Some(at) = pages_of.get(hash) else {
                        continue;
                    };
                    let (&first, rest) = at.split_first().expect("a listed hash has a page");
                    let id = staged
                        .add(first, bytes)
                        .map_err(|_| RemoteError::TooLarge {
                            what: "the page store",
                            bytes: page as u64,
                        })?;
                    for &p in rest {
                        staged.add_same(p, id);
                    }
                }
                done.bytes += (got.len() * page) as u64;
                progress(done);
            }
            Ok::<_, RemoteError>(())
        })??;

        // locate() found every hash, and every fetched page was checked; the
        // digest below confirms the table is whole.
        let tree = store.commit(&Tree::zero(store, pages), staged);
        let snap =
            Snapshot::from_tree_at(tree, pages * page, manifest.origin as usize as *const u8);
        if snap.digest() != manifest.digest {
            return Err(RemoteError::Digest {
                name: name.to_string(),
                expected: manifest.digest,
                computed: snap.digest(),
            });
        }
        Ok(snap)
    }
}

/// Slots wanted per pack number: (slot, hash), sorted by slot.
pub(super) type Wanted = BTreeMap<u32, Vec<(u32, u128)>>;

impl Shared {
    /// Reads and checks the manifest of `name`.
    pub(super) fn manifest(&self, name: &str) -> Result<Manifest, RemoteError> {
        check_name(name)?;
        let path = manifest_path(name);
        let bytes = self.block_on(async {
            let got = self.store.get(&path).await?;
            got.bytes().await
        })?;
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RemoteError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(store_error("download", &path, e)),
        };
        let manifest = Manifest::decode(path.as_ref(), &bytes)?;
        let machine = crate::sys::page_size();
        if manifest.page_size as usize != machine {
            return Err(RemoteError::PageSize {
                remote: u64::from(manifest.page_size),
                machine,
            });
        }
        Ok(manifest)
    }

    /// Where each distinct page of `manifest` lives: slots wanted per pack number
    /// (sorted), and the pack names by number.
    pub(super) fn locate(
        &self,
        name: &str,
        manifest: &Manifest,
    ) -> Result<(Wanted, Vec<String>), RemoteError> {
        let places = self.places(name, manifest)?;
        let mut wanted = Wanted::new();
        let mut seen: HashSet<u128, BuildHasherDefault<IdentityHasher>> = HashSet::default();
        for (entry, &(_, h)) in manifest.pages.iter().enumerate() {
            if seen.insert(h) {
                let Location { pack, slot } = places.of(entry as u64);
                wanted.entry(pack).or_default().push((slot, h));
            }
        }
        for slots in wanted.values_mut() {
            slots.sort_unstable();
        }
        Ok((wanted, places.packs.clone()))
    }

    /// Where the pages of `manifest` live: as it says, or (a version-1 manifest)
    /// as the remote's pack indexes say.
    pub(super) fn places<'m>(
        &self,
        name: &str,
        manifest: &'m Manifest,
    ) -> Result<Cow<'m, Places>, RemoteError> {
        if let Some(places) = &manifest.places {
            return Ok(Cow::Borrowed(places));
        }
        let mut known = self.known();
        known.refresh(self)?;
        let places = Places::build(manifest.pages.iter().map(|e| e.1), &known.packs, |h| {
            known.at.get(&h).copied()
        });
        places.map(Cow::Owned).map_err(|entry| {
            let (page, hash) = manifest.pages[entry as usize];
            RemoteError::MissingPage {
                name: name.to_string(),
                page,
                hash,
            }
        })
    }
}

/// The first page holding each hash (for error messages).
pub(super) fn first_pages(manifest: &Manifest) -> HashMap<u128, u64> {
    let mut first = HashMap::with_capacity(manifest.pages.len());
    for &(p, h) in &manifest.pages {
        first.entry(h).or_insert(p);
    }
    first
}

/// Fetches `slots` (sorted (slot, hash)) of pack `pack`, one range per run of
/// consecutive slots, and checks each page against its hash.
pub(super) async fn fetch_from_pack(
    store: &dyn ObjectStore,
    pack: &str,
    slots: Vec<(u32, u128)>,
    page: usize,
    name: &str,
    page_of: &(dyn Fn(u128) -> u64 + Sync),
) -> Result<Vec<(u128, Bytes)>, RemoteError> {
    let path = pack_path(pack);
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    let mut prev: Option<u32> = None;
    for &(slot, _) in &slots {
        let start = u64::from(slot) * page as u64;
        match ranges.last_mut() {
            Some(r) if prev == Some(slot.wrapping_sub(1)) => r.end = start + page as u64,
            _ => ranges.push(start..start + page as u64),
        }
        prev = Some(slot);
    }
    let got = store
        .get_ranges(&path, &ranges)
        .await
        .map_err(|e| store_error("download", &path, e))?;
    let mut out = Vec::with_capacity(slots.len());
    let mut slots = slots.into_iter();
    for (range, bytes) in ranges.iter().zip(got) {
        if bytes.len() as u64 != range.end - range.start {
            return Err(super::error::corrupt(
                path.as_ref(),
                "the pack is shorter than its index says",
            ));
        }
        for chunk in 0..bytes.len() / page {
            let (_, hash) = slots.next().expect("one slot per page of the ranges");
            let data = bytes.slice(chunk * page..(chunk + 1) * page);
            if page_hash(&data) != hash {
                return Err(RemoteError::PageHash {
                    name: name.to_string(),
                    page: page_of(hash),
                    object: path.to_string(),
                });
            }
            out.push((hash, data));
        }
    }
    Ok(out)
}
