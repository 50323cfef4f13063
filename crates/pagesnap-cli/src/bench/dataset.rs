//! What every method holds and writes: the initial page contents, the seeded choice
//! of dirty pages, and the stores that dirty them.
//!
//! ```text
//!  initial page i:  [ i | 1<<63 ][ 0x5a 0x5a 0x5a … ]    non-zero, unique per page
//!  dirtied page i:  [ (round+1)<<40 | method<<32 | i ][ unchanged … ]
//! ```
//! A dirtied page never equals an initial one (bit 63), nor a page another method
//! dirtied (the method id), so no method gets dedup hits from another's writes.

/// Writes the initial contents of page `i`.
pub fn fill_page(i: usize, page: &mut [u8]) {
    page.fill(0x5a);
    page[..8].copy_from_slice(&(i as u64 | 1 << 63).to_ne_bytes());
}

/// The first word of pages dirtied by `method` in `round` (or'ed with the page index).
pub fn stamp(round: usize, method: usize) -> u64 {
    ((round as u64 + 1) << 40) | ((method as u64 & 0xff) << 32)
}

/// The timed write: one 8-byte store at the start of each page in `pages`.
#[inline(never)]
pub fn dirty(mem: &mut [u8], pages: &[usize], page_size: usize, stamp: u64) {
    for &p in pages {
        let at = p * page_size;
        mem[at..at + 8].copy_from_slice(&(stamp | p as u64).to_ne_bytes());
    }
}

/// Whether page `p` of `mem` holds its initial contents (checked after restores).
pub fn is_initial(mem: &[u8], p: usize, page_size: usize) -> bool {
    let at = p * page_size;
    mem[at..at + 8] == (p as u64 | 1 << 63).to_ne_bytes() && mem[at + 8] == 0x5a
}

/// SplitMix64: small, seedable, good enough to scatter pages.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: usize) -> usize {
        ((self.next_u64() as u128 * (max as u128 + 1)) >> 64) as usize
    }

    /// `k` distinct page indices out of `n`, sorted (Floyd's algorithm: O(k) draws).
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "cannot choose {k} of {n}");
        let mut taken = vec![0u64; n.div_ceil(64)];
        let mut out = Vec::with_capacity(k);
        for j in n - k..n {
            let t = self.up_to(j);
            let pick = if taken[t / 64] & (1 << (t % 64)) != 0 {
                j
            } else {
                t
            };
            taken[pick / 64] |= 1 << (pick % 64);
            out.push(pick);
        }
        out.sort_unstable();
        out
    }
}

/// A seed from the clock and the process id, for runs without `--seed`.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng::new(nanos ^ u64::from(std::process::id()) << 32).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_is_distinct_sorted_and_seeded() {
        let a = Rng::new(7).choose(1000, 100);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&p| p < 1000));
        assert_eq!(a, Rng::new(7).choose(1000, 100));
        assert_ne!(a, Rng::new(8).choose(1000, 100));
        assert_eq!(Rng::new(1).choose(50, 50), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn dirty_pages_differ_from_initial() {
        let page = 4096;
        let mut mem = vec![0u8; 4 * page];
        for (i, p) in mem.chunks_exact_mut(page).enumerate() {
            fill_page(i, p);
        }
        assert!((0..4).all(|p| is_initial(&mem, p, page)));
        dirty(&mut mem, &[1, 3], page, stamp(0, 2));
        assert!(is_initial(&mem, 0, page) && !is_initial(&mem, 1, page));
        assert!(!is_initial(&mem, 3, page));
    }
}
