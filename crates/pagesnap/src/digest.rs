//! Content hashes: of one page (the store's key) and of a whole snapshot.

use std::fmt;
use xxhash_rust::xxh3::xxh3_128;

/// A 128-bit content digest of a snapshot: equal contents (and lengths) give equal
/// digests; different contents give different digests except with probability
/// about 2⁻¹²⁸ per pair (xxh3-128 Merkle hash over the page table).
///
/// Displays as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub(crate) u128);

impl Digest {
    /// The 16 bytes of the digest, big-endian (the order `Display` prints).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The digest whose [`to_bytes`](Self::to_bytes) is `bytes`.
    pub fn from_bytes(bytes: [u8; 16]) -> Digest {
        Digest(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({:032x})", self.0)
    }
}

/// The content hash of one page.
pub(crate) fn page_hash(page: &[u8]) -> u128 {
    xxh3_128(page)
}

/// A hash over up to 64 hashes (one Merkle node of the page table).
pub(crate) fn combine(hashes: &[u128]) -> u128 {
    let mut buf = [0u8; 16 * 64];
    assert!(
        hashes.len() <= 64,
        "a page-table node has at most 64 children"
    );
    for (chunk, h) in buf.chunks_exact_mut(16).zip(hashes) {
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    xxh3_128(&buf[..hashes.len() * 16])
}
