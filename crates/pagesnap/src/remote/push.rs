//! Push: upload the pages the remote lacks in packs, then the manifest.

use super::error::RemoteError;
use super::format::{repeated, Manifest, PackIndex};
use super::places::Places;
use super::{
    check_name, index_path, manifest_path, pack_path, store_error, Remote, Transfer, PARALLEL,
};
use crate::Snapshot;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::HashSet;

/// Bytes of page data per pack object.
pub(super) const PACK_BYTES: usize = 4 << 20;

/// What a [`Remote::push`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Non-zero pages in the snapshot (zero pages are never stored).
    pub pages: u64,
    /// Pages uploaded: those no pack of the remote held yet (each content once).
    pub pages_uploaded: u64,
    /// Bytes uploaded in all: packs, their indexes, and the manifest.
    pub bytes_uploaded: u64,
}

impl Remote {
    /// Uploads `snapshot` as `name`: the pages the remote lacks, then the manifest.
    ///
    /// Pushing the same contents under a name again is a no-op upload-wise; a name
    /// that holds other contents is [`RemoteError::NameTaken`].
    pub fn push(&self, snapshot: &Snapshot, name: &str) -> Result<PushReport, RemoteError> {
        self.push_with_progress(snapshot, name, |_| {})
    }

    /// As [`push`](Self::push), calling `progress` after each uploaded object.
    pub fn push_with_progress(
        &self,
        snapshot: &Snapshot,
        name: &str,
        mut progress: impl FnMut(Transfer),
    ) -> Result<PushReport, RemoteError> {
        check_name(name)?;
        let shared = &*self.shared;
        let page = crate::sys::page_size();
        // The table: (page, hash) of every non-zero page, read off the frames.
        let mut table: Vec<(u64, u128)> = Vec::new();
        let frames = snapshot.store();
        snapshot
            .tree()
            .for_each_nonzero(|p, id| table.push((p as u64, frames.frame_hash(id))));
        let mut known = shared.known();
        known.refresh(shared)?;
        let mut report = PushReport {
            pages: table.len() as u64,
            ..PushReport::default()
        };
        let store = &shared.store;
        // Twice at most: a pack found missing below is uploaded again once.
        let mut attempt = 0;
        let places = loop {
            // Pages to send: each hash the remote lacks, once, in page order.
            let mut seen = HashSet::new();
            let missing: Vec<(u64, u128)> = table
                .iter()
                .filter(|(_, h)| !known.at.contains_key(h) && seen.insert(*h))
                .copied()
                .collect();
            let per_pack = (PACK_BYTES / page).max(1);
            let total = (missing.len() * page) as u64;
            let mut done = Transfer { bytes: 0, total };
            progress(done);

            let uploads = futures_util::stream::iter(missing.chunks(per_pack))
                .map(|chunk| {
                    // Gather the pack's bytes here, outside the async part (no lock:
                    // the snapshot holds its frames).
                    let mut data = Vec::with_capacity(chunk.len() * page);
                    for &(p, _) in chunk {
                        data.extend_from_slice(frames.frame(snapshot.tree().get(p as usize)));
                    }
                    let index = PackIndex {
                        page_size: page as u32,
                        hashes: chunk.iter().map(|&(_, h)| h).collect(),
                    };
                    async move {
                        let (index_bytes, pack) = index.encode();
                        let sent_pack = put_create(&**store, &pack_path(&pack), data).await?;
                        let sent_index =
                            put_create(&**store, &index_path(&pack), index_bytes).await?;
                        Ok::<_, RemoteError>((pack, index.hashes, sent_pack, sent_index))
                    }
                })
                .buffer_unordered(PARALLEL / 2);
            shared.block_on(async {
                let mut uploads = std::pin::pin!(uploads);
                while let Some(up) = uploads.next().await {
                    let (pack, hashes, sent_pack, sent_index) = up?;
                    done.bytes += (hashes.len() * page) as u64;
                    if sent_pack > 0 {
                        report.pages_uploaded += hashes.len() as u64;
                    }
                    report.bytes_uploaded += sent_pack + sent_index;
                    // Written now, or there already: either way it exists.
                    known.present.insert(pack.clone());
                    known.add(pack, &hashes);
                    progress(done);
                }
                Ok::<_, RemoteError>(())
            })??;
            // Every page is in a known pack now; the manifest records where, so
            // readers need no pack index.
            let places = Places::build(table.iter().map(|e| e.1), &known.packs, |h| {
                known.at.get(&h).copied()
            })
            .map_err(|entry| {
                let (page, hash) = table[entry as usize];
                RemoteError::MissingPage {
                    name: name.to_string(),
                    page,
                    hash,
                }
            })?;
            // An index says what a pack holds, not that the pack is still
            // there (deleted by hand, by a lifecycle rule): look before a
            // manifest names it, once per pack per handle.
            let lost = lost_packs(shared, &places.packs, &known.present)?;
            if lost.is_empty() {
                known.present.extend(places.packs.iter().cloned());
                break places;
            }
            if attempt == 1 {
                return Err(RemoteError::LostPack {
                    pack: lost[0].clone(),
                });
            }
            known.forget(&lost);
            attempt += 1;
        };
        drop(known);

        // Last, the manifest: once it exists, every page it names is in a pack.
        let manifest = Manifest {
            page_size: page as u32,
            len: snapshot.len() as u64,
            digest: snapshot.digest(),
            origin: snapshot.origin().unwrap_or(0) as u64,
            repeats: repeated(&table),
            pages: table,
            places: Some(places),
        };
        let path = manifest_path(name);
        let bytes = manifest.encode();
        let sent = shared.block_on(put_create(&**store, &path, bytes))??;
        if sent == 0 {
            // The name exists: fine if it holds these very contents.
            let existing = shared.block_on(async {
                let got = store
                    .get(&path)
                    .await
                    .map_err(|e| store_error("download", &path, e))?;
                got.bytes()
                    .await
                    .map_err(|e| store_error("download", &path, e))
            })??;
            let existing = Manifest::decode(path.as_ref(), &existing)?;
            if existing.digest != manifest.digest || existing.len != manifest.len {
                return Err(RemoteError::NameTaken {
                    name: name.to_string(),
                    existing: existing.digest,
                    pushed: manifest.digest,
                });
            }
        }
        report.bytes_uploaded += sent;
        Ok(report)
    }
}

/// The packs of `packs` not in `present` that the store no longer holds
/// (one metadata request each, in parallel).
fn lost_packs(
    shared: &super::Shared,
    packs: &[String],
    present: &HashSet<String>,
) -> Result<Vec<String>, RemoteError> {
    let unseen: Vec<&String> = packs.iter().filter(|p| !present.contains(*p)).collect();
    shared.block_on(async {
        let looks = futures_util::stream::iter(unseen)
            .map(|name| async move {
                let path = pack_path(name);
                match shared.store.head(&path).await {
                    Ok(_) => Ok(None),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(name.clone())),
                    Err(e) => Err(store_error("look at", &path, e)),
                }
            })
            .buffer_unordered(PARALLEL);
        let mut looks = std::pin::pin!(looks);
        let mut lost = Vec::new();
        while let Some(look) = looks.next().await {
            lost.extend(look?);
        }
        Ok(lost)
    })?
}

/// Writes `bytes` at `path` unless an object is there already; returns the bytes
/// written (0 when it existed: a content-named object is then the same one).
async fn put_create(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<u64, RemoteError> {
    let n = bytes.len() as u64;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(n),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(0),
        Err(e) => Err(store_error("upload", path, e)),
    }
}
