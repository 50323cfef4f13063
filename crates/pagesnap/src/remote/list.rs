//! Listing the snapshots a remote holds, from their manifests' headers.

use super::error::RemoteError;
use super::format::{Manifest, MANIFEST_HEADER, MANIFEST_SUFFIX, SNAPSHOTS};
use super::{check_name, manifest_path, store_error, Remote, Shared, PARALLEL};
use crate::Digest;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

/// One snapshot in a remote, from [`Remote::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteSnapshot {
    /// Its name.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// Its content digest.
    pub digest: Digest,
    /// Its non-zero pages.
    pub pages: u64,
    /// The size of its manifest object in bytes.
    pub manifest_bytes: u64,
    /// Where its region was mapped when it was pushed, if known (see
    /// [`Snapshot::origin`](crate::Snapshot::origin) and
    /// [`Remote::instantiate_at`]).
    pub origin: Option<usize>,
}

impl Remote {
    /// The snapshots in this remote, by name. Each manifest's header is read
    /// (a small ranged request each); one that is malformed is an error.
    pub fn list(&self) -> Result<Vec<RemoteSnapshot>, RemoteError> {
        let shared = &*self.shared;
        let folder = Path::from(SNAPSHOTS);
        let mut found = shared.block_on(async {
            let metas: Vec<_> = shared
                .store
                .list(Some(&folder))
                .try_collect()
                .await
                .map_err(|e| store_error("listing", &folder, e))?;
            futures_util::stream::iter(metas.into_iter().filter_map(|m| {
                let name = m
                    .location
                    .filename()?
                    .strip_suffix(MANIFEST_SUFFIX)?
                    .to_string();
                // Only what `pull` can name: not nested objects, not names
                // it refuses.
                (check_name(&name).is_ok() && m.location == manifest_path(&name))
                    .then_some((name, m))
            }))
            .map(|(name, meta)| described(shared, name, meta))
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await
        })??;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The snapshot `name` as [`list`](Self::list) describes it (one small ranged
    /// request, after a metadata one): its length, digest, origin, ….
    pub fn info(&self, name: &str) -> Result<RemoteSnapshot, RemoteError> {
        check_name(name)?;
        let shared = &*self.shared;
        let path = manifest_path(name);
        shared.block_on(async {
            let meta = match shared.store.head(&path).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(RemoteError::NotFound {
                        name: name.to_string(),
                    })
                }
                Err(e) => return Err(store_error("metadata", &path, e)),
            };
            described(shared, name.to_string(), meta).await
        })?
    }
}

/// A snapshot from the header of its manifest `meta`.
async fn described(
    shared: &Shared,
    name: String,
    meta: ObjectMeta,
) -> Result<RemoteSnapshot, RemoteError> {
    let path = meta.location;
    let head = shared
        .store
        .get_range(&path, 0..(MANIFEST_HEADER as u64).min(meta.size))
        .await
        .map_err(|e| store_error("download", &path, e))?;
    let h = Manifest::decode_header(path.as_ref(), &head)?;
    Ok(RemoteSnapshot {
        name,
        len: h.len,
        digest: h.digest,
        pages: h.entries,
        manifest_bytes: meta.size,
        origin: usize::try_from(h.origin).ok().filter(|&o| o != 0),
    })
}
