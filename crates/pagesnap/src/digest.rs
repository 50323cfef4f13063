//! Content hashes: of one page (the store's key) and of a whole snapshot.

use std::fmt;
use std::sync::OnceLock;

/// A 128-bit content digest of a snapshot: equal contents (and lengths) give equal
/// digests; different contents give different digests except with probability
/// about 2⁻¹²⁸ per pair (xxh3-128 Merkle hash over the page table).
///
/// xxh3 is fast, not cryptographic: pages crafted to share one xxh3-128 give
/// snapshots with equal digests, so a digest tells apart contents that differ by
/// accident or by ordinary change, not contents an adversary chose to collide.
/// (Snapshots themselves never mix such pages up: the store compares bytes.)
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

/// A page's xxh3-128 under a secret drawn at random once per process: what the
/// compare tracker keeps to notice that a page changed. Pages crafted to share
/// one plain xxh3-128 are easy to make (two words whose low halves match the
/// default secret's add only their high halves); nobody outside the process
/// knows this secret, so a write that keeps a page's plain hash still changes
/// this one. (Digests and the store use the plain hash: they must be the same in
/// every process, and the store compares bytes on every hit.)
pub(crate) fn keyed_page_hash(page: &[u8]) -> u128 {
    static SECRET: OnceLock<[u8; SECRET_LEN]> = OnceLock::new();
    let secret = SECRET.get_or_init(random_secret);
    twox_hash::XxHash3_128::oneshot_with_secret(secret, page)
        // A secret of SECRET_LEN bytes is long enough: this never falls back.
        .unwrap_or_else(|_| twox_hash::XxHash3_128::oneshot_with_seed(0x5eed, page))
}

/// Bytes of the compare tracker's secret (xxh3 takes 136 or more).
const SECRET_LEN: usize = 192;

/// Random bytes from the standard library's per-process random hash keys.
fn random_secret() -> [u8; SECRET_LEN] {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let mut secret = [0u8; SECRET_LEN];
    for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
    }
    secret
}

/// xxh3-128 of `bytes`: the hash of pages, page-table nodes and remote index
/// names. `twox-hash` picks AVX2 at run time where the CPU has it, where
/// `xxhash-rust` uses only what the build targets (SSE2 on x86-64).
pub(crate) fn xxh3_128(bytes: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(bytes)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The hash is xxh3-128 as the reference implementation computes it
        /// (every length class: short, mid-size, one page, several blocks), so
        /// digests in files written by earlier builds still verify.
        #[test]
        fn the_hash_is_the_reference_xxh3_128(
            bytes in prop::collection::vec(any::<u8>(), 0..9000),
            cut in 0usize..9000,
        ) {
            let b = &bytes[..cut.min(bytes.len())];
            prop_assert_eq!(super::xxh3_128(b), xxhash_rust::xxh3::xxh3_128(b));
        }
    }

    #[test]
    fn a_page_hashes_as_the_reference_does() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 251) as u8).collect();
        assert_eq!(super::page_hash(&page), xxhash_rust::xxh3::xxh3_128(&page));
        assert_eq!(
            super::page_hash(&[0; 4096]),
            xxhash_rust::xxh3::xxh3_128(&[0; 4096])
        );
    }
}
