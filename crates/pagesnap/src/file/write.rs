//! Writing: the plan (page table and the distinct pages, in file order) and the
//! bytes, streamed in large writes with one store lock per batch of pages.

use super::error::FileError;
use super::format::{
    record_crc, record_word, Footer, Header, Run, FOOTER_LEN, HEADER_LEN, MAX_RUN,
    RECORD_HEADER_LEN, RUN_LEN, TABLE_OVERHEAD, ZERO_DATA,
};
use super::SaveReport;
use crate::store::frames::FrameId;
use crate::store::PageStore;
use crate::Digest;
use lz4_flex::block::{compress_into_with_table, get_maximum_output_size, CompressTable};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;

/// Pages encoded per store lock.
const BATCH: usize = 256;
/// Bytes gathered before each write(2).
const FLUSH: usize = 1 << 20;

/// When to try compressing: every page while pages shrink; after `k` pages in a
/// row that did not, skip the next `2^k - 1` (at most [`MAX_SKIP`]), so a long
/// incompressible stretch (random or encrypted data) costs one lz4 probe per 64
/// pages instead of a failed lz4 pass per page.
#[derive(Default)]
struct Backoff {
    failures: u32,
    skip: u32,
}

/// Most pages stored raw without a try after incompressible ones.
const MAX_SKIP: u32 = 63;

impl Backoff {
    fn try_now(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    fn result(&mut self, shrank: bool) {
        if shrank {
            self.failures = 0;
            self.skip = 0;
        } else {
            self.failures = (self.failures + 1).min(6);
            self.skip = ((1u32 << self.failures) - 1).min(MAX_SKIP);
        }
    }
}

/// Frame ids are small dense integers: one multiply spreads them over the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What a file will hold: the page table's runs and the frames to store, each once,
/// in the order of their first page.
#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) runs: Vec<Run>,
    pub(crate) data: Vec<FrameId>,
    /// Pages the table lists.
    pub(crate) listed: u64,
    /// Of those, pages listed as zero.
    pub(crate) zero: u64,
    index: HashMap<FrameId, u32, BuildHasherDefault<IdHasher>>,
}

impl Plan {
    /// Adds `page` holding `id`; pages must come in increasing order.
    pub(crate) fn push(&mut self, page: usize, id: FrameId) {
        let page = page as u64;
        self.listed += 1;
        let data = if id == FrameId::ZERO {
            self.zero += 1;
            ZERO_DATA
        } else {
            let next = self.data.len() as u32;
            let d = *self.index.entry(id).or_insert(next);
            if d == next {
                self.data.push(id);
            }
            d
        };
        push_run(&mut self.runs, page, data);
    }
}

/// Appends `page` (after every page already in `runs`) holding stored page `data`
/// (or [`ZERO_DATA`]) to the page table, extending the last run when it can.
pub(crate) fn push_run(runs: &mut Vec<Run>, page: u64, data: u32) {
    if let Some(r) = runs.last_mut() {
        if r.end() == page && r.count < MAX_RUN {
            // Zero runs and repeat runs go on with the same data; a sequential
            // run with the next index; a one-page run becomes a repeat run.
            let extends = if data == ZERO_DATA || r.data == ZERO_DATA || r.repeat {
                data == r.data
            } else if r.count == 1 && data == r.data {
                r.repeat = true;
                true
            } else {
                u64::from(r.data) + u64::from(r.count) == u64::from(data)
            };
            if extends {
                r.count += 1;
                return;
            }
        }
    }
    runs.push(Run {
        first: page,
        count: 1,
        repeat: false,
        data,
    });
}

/// Encodes page records: lz4 when that is smaller (with [`Backoff`]), raw otherwise.
pub(crate) struct RecordEncoder {
    page: usize,
    scratch: Vec<u8>,
    table: CompressTable,
    backoff: Backoff,
}

impl RecordEncoder {
    pub(crate) fn new(page: usize) -> RecordEncoder {
        RecordEncoder {
            page,
            scratch: vec![0u8; get_maximum_output_size(page)],
            table: CompressTable::default(),
            backoff: Backoff::default(),
        }
    }

    /// Appends the record of `bytes` (one page) to `out`; returns the stored
    /// length and whether it was compressed.
    pub(crate) fn encode(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let page = self.page;
        let n = if self.backoff.try_now() {
            let n = compress_into_with_table(bytes, &mut self.scratch, &mut self.table)
                .unwrap_or(usize::MAX);
            self.backoff.result(n < page);
            n
        } else {
            usize::MAX
        };
        let (stored, is_compressed) = if n < page {
            (&self.scratch[..n], true)
        } else {
            (bytes, false)
        };
        let word = record_word(stored.len(), is_compressed);
        out.extend_from_slice(&word.to_le_bytes());
        out.extend_from_slice(&record_crc(word, stored).to_le_bytes());
        out.extend_from_slice(stored);
        (stored.len(), is_compressed)
    }
}

/// Writes the whole file: header, table, page records, footer.
pub(crate) fn write(
    file: &mut impl Write,
    store: &PageStore,
    header: &Header,
    plan: &Plan,
    digest: Digest,
) -> Result<SaveReport, FileError> {
    let page = header.page_size as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH + BATCH * (page + 8));
    let mut written = 0u64;
    let mut flush = |buf: &mut Vec<u8>, written: &mut u64| -> Result<(), FileError> {
        file.write_all(buf).map_err(|source| FileError::Io {
            op: format!("write {} bytes at byte {written}", buf.len()),
            source,
        })?;
        *written += buf.len() as u64;
        buf.clear();
        Ok(())
    };

    buf.extend_from_slice(&header.encode());
    let table_start = buf.len();
    buf.extend_from_slice(&(plan.runs.len() as u64).to_le_bytes());
    for run in &plan.runs {
        run.encode(&mut buf);
    }
    let crc = crc32c::crc32c(&buf[table_start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
    let data_off = HEADER_LEN + TABLE_OVERHEAD + RUN_LEN * plan.runs.len() as u64;
    debug_assert_eq!(buf.len() as u64, data_off);

    let mut enc = RecordEncoder::new(page);
    let (mut compressed, mut stored_bytes) = (0u64, 0u64);
    for chunk in plan.data.chunks(BATCH) {
        for &id in chunk {
            let (n, is_compressed) = enc.encode(store.frame(id), &mut buf);
            compressed += u64::from(is_compressed);
            stored_bytes += n as u64;
        }
        if buf.len() >= FLUSH {
            flush(&mut buf, &mut written)?;
        }
    }
    let data_count = plan.data.len() as u64;
    let file_len = data_off + data_count * RECORD_HEADER_LEN + stored_bytes + FOOTER_LEN;
    let footer = Footer {
        table_off: HEADER_LEN,
        data_off,
        data_count,
        file_len,
        digest: digest.to_bytes(),
        table_last: false,
    };
    buf.extend_from_slice(&footer.encode());
    flush(&mut buf, &mut written)?;
    debug_assert_eq!(written, file_len);
    Ok(SaveReport {
        kind: header.kind,
        bytes: file_len,
        uncompressed_bytes: file_len - stored_bytes + data_count * page as u64,
        pages: header.pages(),
        listed_pages: plan.listed,
        zero_pages: plan.zero,
        stored_pages: data_count,
        compressed_pages: compressed,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(entries: &[(usize, u32)]) -> Vec<(u64, u32, bool, u32)> {
        let mut p = Plan::default();
        for &(page, id) in entries {
            p.push(page, FrameId(id));
        }
        p.runs
            .iter()
            .map(|r| (r.first, r.count, r.repeat, r.data))
            .collect()
    }

    #[test]
    fn runs_are_sequential_repeated_or_zero() {
        // Distinct pages in a row: one sequential run.
        assert_eq!(plan(&[(0, 5), (1, 6), (2, 7)]), [(0, 3, false, 0)]);
        // The same frame in a row: one repeat run; a gap starts a new run.
        assert_eq!(
            plan(&[(3, 9), (4, 9), (5, 9), (7, 9)]),
            [(3, 3, true, 0), (7, 1, false, 0)]
        );
        // Zero pages (deltas) form their own runs; a frame seen before keeps its index.
        assert_eq!(
            plan(&[(0, 1), (1, 0), (2, 0), (3, 2), (4, 1)]),
            [
                (0, 1, false, 0),
                (1, 2, false, ZERO_DATA),
                (3, 1, false, 1),
                (4, 1, false, 0)
            ]
        );
    }

    #[test]
    fn backoff_probes_less_while_pages_do_not_shrink() {
        let mut b = Backoff::default();
        let mut tries = 0;
        for _ in 0..1000 {
            if b.try_now() {
                tries += 1;
                b.result(false);
            }
        }
        assert!(tries < 30, "{tries} tries for 1000 incompressible pages");
        b.result(true);
        assert!((0..10).all(|_| b.try_now()), "a page that shrank resets it");
    }
}
