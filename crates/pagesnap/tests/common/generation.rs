//! Generations of distinct pages: every word of page `p` of generation `gen`
//! depends on both, so a snapshot that mixes pages of two generations, or two
//! pages of one, is caught page by page.

use pagesnap::Snapshot;

/// The machine's page size.
pub fn pg() -> usize {
    pagesnap::page_size()
}

/// splitmix64.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Page `p` of generation `gen`: every word depends on both, so pages of
/// different (gen, p) differ (and none is zero, but with odds of 2^-64).
pub fn fill_page(buf: &mut [u8], gen: u64, p: usize) {
    let seed = mix((gen << 40) ^ p as u64);
    for (w, c) in buf.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_ne_bytes());
    }
}

/// Writes generation `gen` over every page of `bytes`.
pub fn fill_all(bytes: &mut [u8], gen: u64) {
    for (p, b) in bytes.chunks_exact_mut(pg()).enumerate() {
        fill_page(b, gen, p);
    }
}

/// `bytes` is generation `gen` on every page; panics at the first page that is not.
pub fn assert_gen(bytes: &[u8], gen: u64, context: &str) {
    let mut want = vec![0u8; pg()];
    for (p, b) in bytes.chunks_exact(pg()).enumerate() {
        fill_page(&mut want, gen, p);
        assert!(
            b == &want[..],
            "{context}: page {p} is not generation {gen} (first word {:#x})",
            u64::from_ne_bytes(b[..8].try_into().unwrap())
        );
    }
}

/// A snapshot holds generation `gen` on every page (read 8 MiB at a time).
pub fn assert_snap_gen(snap: &Snapshot, gen: u64, context: &str) {
    let chunk = 8 << 20;
    let mut buf = vec![0u8; chunk];
    let mut want = vec![0u8; pg()];
    let mut at = 0;
    while at < snap.len() {
        let n = chunk.min(snap.len() - at);
        snap.read(at, &mut buf[..n]).unwrap();
        for (i, b) in buf[..n].chunks_exact(pg()).enumerate() {
            let p = at / pg() + i;
            fill_page(&mut want, gen, p);
            assert!(
                b == &want[..],
                "{context}: snapshot page {p} is not generation {gen}"
            );
        }
        at += n;
    }
}
