//! The objects a remote holds, and their encodings.
//!
//! ```text
//!  PREFIX/packs/H.pack   pages back to back (page i at i × page_size), a few MiB
//!  PREFIX/packs/H.idx    "PSNPIDX1" | page_size u32 | count u32 | count × hash u128 | crc32c
//!                        H = xxh3-128 of the index before its crc: the name follows
//!                        from the contents, so a pack is written once (create-only)
//!  PREFIX/snapshots/N.snap   the manifest of snapshot N:
//!      "PSNPMAN1" | version u32 | page_size u32 | len u64 | digest [16]
//!      | runs u64 | entries u64                           (the 56-byte header)
//!      | runs × (first page u64, count u64)               non-zero pages, in order
//!      | entries × hash u128                              their content hashes
//!      | crc32c u32 of everything before
//! ```
//! All integers little-endian. A pack is uploaded before its index, and every pack
//! before the manifest that names its pages: an index that exists names a whole
//! pack, a manifest that exists names pages that are all there.

use super::error::{corrupt, RemoteError};
use crate::Digest;

const PACK_MAGIC: &[u8; 8] = b"PSNPIDX1";
const MANIFEST_MAGIC: &[u8; 8] = b"PSNPMAN1";
const MANIFEST_VERSION: u32 = 1;
/// Bytes of a manifest's fixed header.
pub(super) const MANIFEST_HEADER: usize = 56;

/// The folder of packs and their indexes.
pub(super) const PACKS: &str = "packs";
/// The folder of manifests.
pub(super) const SNAPSHOTS: &str = "snapshots";
/// The suffix of a pack index.
pub(super) const INDEX_SUFFIX: &str = ".idx";
/// The suffix of a manifest.
pub(super) const MANIFEST_SUFFIX: &str = ".snap";

/// The content hashes of a pack's pages, in slot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PackIndex {
    pub(super) page_size: u32,
    pub(super) hashes: Vec<u128>,
}

impl PackIndex {
    /// The encoded index and the pack's name (32 hex digits).
    pub(super) fn encode(&self) -> (Vec<u8>, String) {
        let mut out = Vec::with_capacity(20 + self.hashes.len() * 16);
        out.extend_from_slice(PACK_MAGIC);
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(&h.to_le_bytes());
        }
        let name = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&out));
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        (out, name)
    }

    pub(super) fn decode(object: &str, bytes: &[u8]) -> Result<PackIndex, RemoteError> {
        let body = checked_body(object, bytes, PACK_MAGIC, 20)?;
        let page_size = u32_at(body, 8);
        let count = u32_at(body, 12) as usize;
        let rest = &body[16..];
        if rest.len() != count.saturating_mul(16) {
            return Err(corrupt(
                object,
                format!("{count} hashes announced, {} bytes follow", rest.len()),
            ));
        }
        let hashes = rest.chunks_exact(16).map(u128_of).collect();
        Ok(PackIndex { page_size, hashes })
    }
}

/// A snapshot's manifest: its length, digest and page table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Manifest {
    pub(super) page_size: u32,
    pub(super) len: u64,
    pub(super) digest: Digest,
    /// (page, hash) of each non-zero page, in page order.
    pub(super) pages: Vec<(u64, u128)>,
}

/// What a manifest's header alone says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ManifestHeader {
    pub(super) page_size: u32,
    pub(super) len: u64,
    pub(super) digest: Digest,
    pub(super) runs: u64,
    pub(super) entries: u64,
}

impl Manifest {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &(p, _) in &self.pages {
            match runs.last_mut() {
                Some((first, n)) if *first + *n == p => *n += 1,
                _ => runs.push((p, 1)),
            }
        }
        let mut out =
            Vec::with_capacity(MANIFEST_HEADER + runs.len() * 16 + self.pages.len() * 16 + 4);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.digest.to_bytes());
        out.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.pages.len() as u64).to_le_bytes());
        for (first, n) in runs {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        for &(_, h) in &self.pages {
            out.extend_from_slice(&h.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The header of a manifest from its first [`MANIFEST_HEADER`] bytes.
    pub(super) fn decode_header(object: &str, bytes: &[u8]) -> Result<ManifestHeader, RemoteError> {
        if bytes.len() < MANIFEST_HEADER || &bytes[..8] != MANIFEST_MAGIC {
            return Err(corrupt(
                object,
                "not a pagesnap manifest (bad magic or too short)",
            ));
        }
        let version = u32_at(bytes, 8);
        if version != MANIFEST_VERSION {
            return Err(corrupt(
                object,
                format!("manifest version {version}, this pagesnap reads {MANIFEST_VERSION}"),
            ));
        }
        let page_size = u32_at(bytes, 12);
        let len = u64_at(bytes, 16);
        let digest = Digest::from_bytes(bytes[24..40].try_into().expect("16 bytes"));
        let runs = u64_at(bytes, 40);
        let entries = u64_at(bytes, 48);
        if page_size == 0
            || !page_size.is_power_of_two()
            || len == 0
            || len % u64::from(page_size) != 0
        {
            return Err(corrupt(
                object,
                format!("length {len} is not a whole number of {page_size}-byte pages"),
            ));
        }
        Ok(ManifestHeader {
            page_size,
            len,
            digest,
            runs,
            entries,
        })
    }

    pub(super) fn decode(object: &str, bytes: &[u8]) -> Result<Manifest, RemoteError> {
        let body = checked_body(object, bytes, MANIFEST_MAGIC, MANIFEST_HEADER + 4)?;
        let h = Manifest::decode_header(object, body)?;
        let pages_total = h.len / u64::from(h.page_size);
        let need = h
            .runs
            .checked_mul(16)
            .and_then(|r| h.entries.checked_mul(16).and_then(|e| r.checked_add(e)));
        if need != Some((body.len() - MANIFEST_HEADER) as u64) || h.entries > pages_total {
            return Err(corrupt(
                object,
                "the page table's size disagrees with its header",
            ));
        }
        let runs_end = MANIFEST_HEADER + h.runs as usize * 16;
        let mut hashes = body[runs_end..].chunks_exact(16).map(u128_of);
        let mut pages = Vec::with_capacity(h.entries as usize);
        let mut next = 0u64;
        for run in body[MANIFEST_HEADER..runs_end].chunks_exact(16) {
            let (first, n) = (u64_at(run, 0), u64_at(run, 8));
            let end = first
                .checked_add(n)
                .filter(|&e| n > 0 && first >= next && e <= pages_total);
            let Some(end) = end else {
                return Err(corrupt(
                    object,
                    format!("page run {first}+{n} is out of order or past the end"),
                ));
            };
            for p in first..end {
                let Some(hash) = hashes.next() else {
                    return Err(corrupt(
                        object,
                        "the page runs name more pages than there are hashes",
                    ));
                };
                pages.push((p, hash));
            }
            next = end;
        }
        if pages.len() as u64 != h.entries {
            return Err(corrupt(
                object,
                "the page runs name fewer pages than there are hashes",
            ));
        }
        Ok(Manifest {
            page_size: h.page_size,
            len: h.len,
            digest: h.digest,
            pages,
        })
    }
}

/// `bytes` without its crc32c trailer, once magic, minimum size and crc check out.
fn checked_body<'a>(
    object: &str,
    bytes: &'a [u8],
    magic: &[u8; 8],
    min: usize,
) -> Result<&'a [u8], RemoteError> {
    if bytes.len() < min || &bytes[..8] != magic {
        return Err(corrupt(object, "bad magic or too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != stored {
        return Err(corrupt(object, "checksum mismatch"));
    }
    Ok(body)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_of(b: &[u8]) -> u128 {
    u128::from_le_bytes(b.try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let m = Manifest {
            page_size: 4096,
            len: 4096 * 100,
            digest: Digest(7),
            pages: vec![(0, 1), (1, 2), (5, 3), (99, 1)],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode("m", &bytes).unwrap(), m);
        let h = Manifest::decode_header("m", &bytes[..MANIFEST_HEADER]).unwrap();
        assert_eq!((h.runs, h.entries, h.len), (3, 4, 409600));
        for at in [0, 20, 60, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(
                matches!(
                    Manifest::decode("m", &bad),
                    Err(RemoteError::Corrupt { .. })
                ),
                "byte {at}"
            );
        }
        assert!(Manifest::decode("m", &bytes[..30]).is_err());
    }

    #[test]
    fn pack_index_names_follow_contents() {
        let a = PackIndex {
            page_size: 4096,
            hashes: vec![1, 2, 3],
        };
        let (bytes, name) = a.encode();
        assert_eq!(PackIndex::decode("i", &bytes).unwrap(), a);
        let (_, other) = PackIndex {
            page_size: 4096,
            hashes: vec![1, 2, 4],
        }
        .encode();
        assert_ne!(name, other);
        let mut bad = bytes.clone();
        bad[25] ^= 1;
        assert!(PackIndex::decode("i", &bad).is_err());
    }
}
