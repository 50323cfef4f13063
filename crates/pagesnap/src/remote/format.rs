//! The objects a remote holds, and their encodings.
//!
//! ```text
//!  PREFIX/packs/H.pack   pages back to back (page i at i × page_size), a few MiB
//!  PREFIX/packs/H.idx    "PSNPIDX1" | page_size u32 | count u32 | count × hash u128 | crc32c
//!                        H = xxh3-128 of the index before its crc: the name follows
//!                        from the contents, so a pack is written once (create-only)
//!  PREFIX/snapshots/N.snap   the manifest of snapshot N (version 2):
//!      "PSNPMAN1" | version u32 | page_size u32 | len u64 | digest [16]
//!      | runs u64 | entries u64 | origin u64
//!      | packs u64 | places u64 | repeats u64             (the 88-byte header)
//!      | runs × (first page u64, count u64)               non-zero pages, in order
//!      | entries × hash u128                              their content hashes
//!      | packs × name u128                                the packs they are in
//!      | places × (count u32, pack u32, first slot u32)   entries in consecutive slots
//!      | repeats × hash u128                              hashes at several pages
//!      | crc32c u32 of everything before
//! ```
//! Version 1 (still read) has the 56-byte header up to `entries`, then only the
//! runs and hashes: no origin, and readers find the pages in the pack indexes.
//! All integers little-endian. A pack is uploaded before its index, and every pack
//! before the manifest that names its pages: an index that exists names a whole
//! pack, a manifest that exists names pages that are all there.

use super::error::{corrupt, RemoteError};
use super::places::{Places, RUN_BYTES};
use crate::Digest;

const PACK_MAGIC: &[u8; 8] = b"PSNPIDX1";
const MANIFEST_MAGIC: &[u8; 8] = b"PSNPMAN1";
/// The newest manifest version; every older one is still read.
const MANIFEST_VERSION: u32 = 2;
/// Bytes of a manifest's fixed header (version 2; the longest).
pub(super) const MANIFEST_HEADER: usize = 88;
/// Bytes of a version-1 manifest's fixed header.
const MANIFEST_HEADER_V1: usize = 56;

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
        let name = format!("{:032x}", crate::digest::xxh3_128(&out));
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

/// A snapshot's manifest: its length, digest, origin and page table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Manifest {
    pub(super) page_size: u32,
    pub(super) len: u64,
    pub(super) digest: Digest,
    /// Where the snapshot's region was mapped (0: unknown, or a version-1 manifest).
    pub(super) origin: u64,
    /// (page, hash) of each non-zero page, in page order.
    pub(super) pages: Vec<(u64, u128)>,
    /// Where each page lives. Encoded as version 2 when known; `None` encodes
    /// version 1 (no origin, no places: readers look the pages up in the pack
    /// indexes), as pagesnap wrote before.
    pub(super) places: Option<Places>,
    /// Hashes held at more than one page, sorted.
    pub(super) repeats: Vec<u128>,
}

/// What a manifest's header alone says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ManifestHeader {
    pub(super) version: u32,
    pub(super) page_size: u32,
    pub(super) len: u64,
    pub(super) digest: Digest,
    pub(super) origin: u64,
    pub(super) runs: u64,
    pub(super) entries: u64,
    /// Version 2: pack names, place runs and repeated hashes that follow.
    pub(super) packs: u64,
    pub(super) places: u64,
    pub(super) repeats: u64,
}

impl ManifestHeader {
    fn size(&self) -> usize {
        if self.version == 1 {
            MANIFEST_HEADER_V1
        } else {
            MANIFEST_HEADER
        }
    }
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
        let places_bytes = self.places.as_ref().map_or(0, |pl| {
            pl.packs.len() * 16 + pl.run_count() * RUN_BYTES + self.repeats.len() * 16
        });
        let mut out = Vec::with_capacity(
            MANIFEST_HEADER + runs.len() * 16 + self.pages.len() * 16 + places_bytes + 4,
        );
        out.extend_from_slice(MANIFEST_MAGIC);
        let version = if self.places.is_some() { 2u32 } else { 1 };
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.digest.to_bytes());
        out.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.pages.len() as u64).to_le_bytes());
        if let Some(places) = &self.places {
            out.extend_from_slice(&self.origin.to_le_bytes());
            out.extend_from_slice(&(places.packs.len() as u64).to_le_bytes());
            out.extend_from_slice(&(places.run_count() as u64).to_le_bytes());
            out.extend_from_slice(&(self.repeats.len() as u64).to_le_bytes());
        }
        for (first, n) in runs {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        for &(_, h) in &self.pages {
            out.extend_from_slice(&h.to_le_bytes());
        }
        if let Some(places) = &self.places {
            places.encode_into(&mut out);
            for h in &self.repeats {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The header of a manifest from its first [`MANIFEST_HEADER`] bytes (or
    /// fewer, for a short version-1 manifest).
    pub(super) fn decode_header(object: &str, bytes: &[u8]) -> Result<ManifestHeader, RemoteError> {
        if bytes.len() < MANIFEST_HEADER_V1 || &bytes[..8] != MANIFEST_MAGIC {
            return Err(corrupt(
                object,
                "not a pagesnap manifest (bad magic or too short)",
            ));
        }
        let version = u32_at(bytes, 8);
        if version == 0 || version > MANIFEST_VERSION {
            return Err(corrupt(
                object,
                format!("manifest version {version}, this pagesnap reads 1 to {MANIFEST_VERSION}"),
            ));
        }
        if version >= 2 && bytes.len() < MANIFEST_HEADER {
            return Err(corrupt(object, "the manifest's header is cut short"));
        }
        let page_size = u32_at(bytes, 12);
        let len = u64_at(bytes, 16);
        let digest = Digest::from_bytes(bytes[24..40].try_into().expect("16 bytes"));
        let v2 = |at| if version >= 2 { u64_at(bytes, at) } else { 0 };
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
            version,
            page_size,
            len,
            digest,
            origin: v2(56),
            runs: u64_at(bytes, 40),
            entries: u64_at(bytes, 48),
            packs: v2(64),
            places: v2(72),
            repeats: v2(80),
        })
    }

    pub(super) fn decode(object: &str, bytes: &[u8]) -> Result<Manifest, RemoteError> {
        let body = checked_body(object, bytes, MANIFEST_MAGIC, MANIFEST_HEADER_V1 + 4)?;
        let h = Manifest::decode_header(object, body)?;
        let pages_total = h.len / u64::from(h.page_size);
        // Byte sizes of the sections after the header, in order.
        let sizes = [
            h.runs.checked_mul(16),
            h.entries.checked_mul(16),
            h.packs.checked_mul(16),
            h.places.checked_mul(RUN_BYTES as u64),
            h.repeats.checked_mul(16),
        ];
        let need = sizes
            .iter()
            .try_fold(0u64, |sum, s| s.and_then(|s| sum.checked_add(s)));
        if need != Some((body.len() - h.size()) as u64) || h.entries > pages_total {
            return Err(corrupt(
                object,
                "the page table's size disagrees with its header",
            ));
        }
        let mut sections = Vec::with_capacity(sizes.len());
        let mut at = h.size();
        for size in sizes {
            let size = size.expect("checked above") as usize;
            sections.push(&body[at..at + size]);
            at += size;
        }
        let mut hashes = sections[1].chunks_exact(16).map(u128_of);
        let mut pages = Vec::with_capacity(h.entries as usize);
        let mut next = 0u64;
        for run in sections[0].chunks_exact(16) {
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
        let (places, repeats) = if h.version == 1 {
            (None, repeated(&pages))
        } else {
            let places = Places::decode(sections[2], sections[3], h.entries)
                .map_err(|reason| corrupt(object, reason))?;
            (
                Some(places),
                sections[4].chunks_exact(16).map(u128_of).collect(),
            )
        };
        Ok(Manifest {
            page_size: h.page_size,
            len: h.len,
            digest: h.digest,
            origin: h.origin,
            pages,
            places,
            repeats,
        })
    }
}

/// The hashes held at more than one of `pages`, sorted.
pub(super) fn repeated(pages: &[(u64, u128)]) -> Vec<u128> {
    let mut all: Vec<u128> = pages.iter().map(|&(_, h)| h).collect();
    all.sort_unstable();
    let mut out: Vec<u128> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    out.dedup();
    out
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

    fn manifest(places: bool) -> Manifest {
        let pages = vec![(0, 1), (1, 2), (5, 3), (99, 1)];
        let known = [format!("{:032x}", 42u128)];
        let places = places.then(|| {
            Places::build(pages.iter().map(|e| e.1), &known, |h| {
                Some(super::super::index::Location {
                    pack: 0,
                    slot: h as u32,
                })
            })
            .unwrap()
        });
        Manifest {
            page_size: 4096,
            len: 4096 * 100,
            digest: Digest(7),
            origin: if places.is_some() {
                0x7f00_0000_0000
            } else {
                0
            },
            repeats: repeated(&pages),
            pages,
            places,
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        for (version, m) in [(2, manifest(true)), (1, manifest(false))] {
            let bytes = m.encode();
            assert_eq!(
                Manifest::decode("m", &bytes).unwrap(),
                m,
                "version {version}"
            );
            assert_eq!(m.repeats, vec![1]);
            let h = Manifest::decode_header("m", &bytes[..MANIFEST_HEADER]).unwrap();
            assert_eq!(
                (h.version, h.runs, h.entries, h.len),
                (version, 3, 4, 409600)
            );
            assert_eq!(h.origin, m.origin);
            for at in [0, 20, 60, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 1;
                assert!(
                    matches!(
                        Manifest::decode("m", &bad),
                        Err(RemoteError::Corrupt { .. })
                    ),
                    "version {version}, byte {at}"
                );
            }
            assert!(Manifest::decode("m", &bytes[..30]).is_err());
        }
    }

    #[test]
    fn a_newer_manifest_version_is_refused_by_name() {
        let mut bytes = manifest(true).encode();
        bytes[8] = 3;
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        let e = Manifest::decode("m", &bytes).unwrap_err().to_string();
        assert!(e.contains("manifest version 3"), "{e}");
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
