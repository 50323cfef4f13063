//! The one encoder behind every snapshot file pagesnap writes, table first
//! ([`write`](super::write), versions 1 and 3) or table last
//! ([`stream`](super::stream), versions 2 and 4): the output buffer flushed in
//! large writes, page records (lz4 when smaller), the page table as runs merged
//! as pages come, the table with its checksum, and the footer.
//!
//! ```text
//!  Encoder::header ─┬─ table ── record… ── footer     table first
//!                   └─ record… ── table ── footer     table last
//! ```

use super::error::FileError;
use super::format::{
    record_crc, record_word, table_last, Footer, Header, Run, FOOTER_LEN, MAX_RUN, ZERO_DATA,
};
use lz4_flex::block::{compress_into_with_table, get_maximum_output_size, CompressTable};
use std::io::Write;

/// Bytes gathered before each write(2).
const FLUSH: usize = 1 << 20;

/// A file's bytes as they are encoded: gathered in a buffer, written out in
/// large writes, counted.
pub(crate) struct Encoder {
    buf: Vec<u8>,
    /// Bytes written out before `buf`.
    written: u64,
    records: RecordEncoder,
    /// Page records encoded.
    record_count: u64,
    /// Their stored bytes (record headers not counted).
    stored_bytes: u64,
    /// Of them, lz4-compressed.
    compressed: u64,
    /// Whether the header's version puts the table after the records.
    table_last: bool,
}

impl Encoder {
    /// Starts a file with `header`.
    pub(crate) fn new(header: &Header) -> Encoder {
        // Room for a flush's worth and the batch of records that crosses it.
        let mut buf = Vec::with_capacity(2 * FLUSH);
        buf.extend_from_slice(&header.encode());
        Encoder {
            buf,
            written: 0,
            records: RecordEncoder::new(header.page_size as usize),
            record_count: 0,
            stored_bytes: 0,
            compressed: 0,
            table_last: table_last(header.version),
        }
    }

    /// Bytes encoded so far: where the next part starts in the file.
    pub(crate) fn position(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Page records encoded so far.
    pub(crate) fn records(&self) -> u64 {
        self.record_count
    }

    /// Stored bytes of those records (record headers not counted).
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// How many of them are lz4-compressed.
    pub(crate) fn compressed(&self) -> u64 {
        self.compressed
    }

    /// Appends the record of one page; returns its index among the records.
    pub(crate) fn record(&mut self, bytes: &[u8]) -> u32 {
        let (n, is_compressed) = self.records.encode(bytes, &mut self.buf);
        self.stored_bytes += n as u64;
        self.compressed += u64::from(is_compressed);
        self.record_count += 1;
        u32::try_from(self.record_count - 1).expect("fewer than 2^32 records")
    }

    /// Appends the record of one page stored as it is (no compression tried):
    /// the quickest way in, for a caller that must not dawdle. Returns its index.
    pub(crate) fn record_raw(&mut self, bytes: &[u8]) -> u32 {
        let word = record_word(bytes.len(), false);
        self.buf.extend_from_slice(&word.to_le_bytes());
        self.buf
            .extend_from_slice(&record_crc(word, bytes).to_le_bytes());
        self.buf.extend_from_slice(bytes);
        self.stored_bytes += bytes.len() as u64;
        self.record_count += 1;
        u32::try_from(self.record_count - 1).expect("fewer than 2^32 records")
    }

    /// The encoded bytes from file offset `at` on, if they are still in the
    /// buffer (not yet written out). A record is never split by a flush.
    pub(crate) fn buffered_from(&self, at: u64) -> Option<&[u8]> {
        let i = usize::try_from(at.checked_sub(self.written)?).ok()?;
        self.buf.get(i..)
    }

    /// Appends the page table: its run count, its runs and their checksum.
    pub(crate) fn table(&mut self, runs: &[Run]) {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for run in runs {
            run.encode(&mut self.buf);
        }
        let crc = crc32c::crc32c(&self.buf[start..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
    }

    /// Writes the buffer out once it holds [`FLUSH`] bytes or more.
    pub(crate) fn flush_if_full(&mut self, file: &mut impl Write) -> Result<(), FileError> {
        if self.buf.len() >= FLUSH {
            self.flush(file)?;
        }
        Ok(())
    }

    fn flush(&mut self, file: &mut impl Write) -> Result<(), FileError> {
        let at = self.written;
        file.write_all(&self.buf).map_err(|source| FileError::Io {
            op: format!("write {} bytes at byte {at}", self.buf.len()),
            source,
        })?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Appends the footer for records from `data_off` and the table at
    /// `table_off` (in the order the header's version says) and writes everything out; returns the file's
    /// length.
    pub(crate) fn finish(
        mut self,
        file: &mut impl Write,
        table_off: u64,
        data_off: u64,
        digest: [u8; 16],
    ) -> Result<u64, FileError> {
        let file_len = self.position() + FOOTER_LEN;
        let footer = Footer {
            table_off,
            data_off,
            data_count: self.record_count,
            file_len,
            digest,
            table_last: self.table_last,
        };
        self.buf.extend_from_slice(&footer.encode());
        self.flush(file)?;
        debug_assert_eq!(self.written, file_len);
        Ok(file_len)
    }
}

/// Appends `r` (after every page already in `runs`) to the page table, extending
/// the last run when `r` continues it: zero runs with zero runs, runs of one
/// stored page with that page again (a one-page run becomes a repeat run),
/// sequential runs with the next indices.
pub(crate) fn join(runs: &mut Vec<Run>, r: Run) {
    if let Some(last) = runs.last_mut() {
        let fits = u64::from(last.count) + u64::from(r.count) <= u64::from(MAX_RUN);
        if last.end() == r.first && fits {
            let same = |run: &Run| run.repeat || run.count == 1;
            let (repeat, extends) = if last.data == ZERO_DATA || r.data == ZERO_DATA {
                (false, last.data == r.data)
            } else if last.data == r.data && same(last) && same(&r) {
                (true, true)
            } else {
                let sequential = !last.repeat
                    && !r.repeat
                    && u64::from(last.data) + u64::from(last.count) == u64::from(r.data);
                (false, sequential)
            };
            if extends {
                last.count += r.count;
                last.repeat = repeat;
                return;
            }
        }
    }
    runs.push(r);
}

/// Appends `page` holding stored page `data` (or [`ZERO_DATA`]) to the page
/// table, as [`join`] does.
pub(crate) fn push_page(runs: &mut Vec<Run>, page: u64, data: u32) {
    join(
        runs,
        Run {
            first: page,
            count: 1,
            repeat: false,
            data,
        },
    );
}

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

/// Encodes page records: lz4 when that is smaller (with [`Backoff`]), raw otherwise.
struct RecordEncoder {
    page: usize,
    scratch: Vec<u8>,
    table: CompressTable,
    backoff: Backoff,
}

impl RecordEncoder {
    fn new(page: usize) -> RecordEncoder {
        RecordEncoder {
            page,
            scratch: vec![0u8; get_maximum_output_size(page)],
            table: CompressTable::default(),
            backoff: Backoff::default(),
        }
    }

    /// Appends the record of `bytes` (one page) to `out`; returns the stored
    /// length and whether it was compressed.
    fn encode(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(pages: &[(u64, u32)]) -> Vec<(u64, u32, bool, u32)> {
        let mut runs = Vec::new();
        for &(page, data) in pages {
            push_page(&mut runs, page, data);
        }
        runs.iter()
            .map(|r| (r.first, r.count, r.repeat, r.data))
            .collect()
    }

    #[test]
    fn pages_join_sequential_repeated_or_zero_runs() {
        assert_eq!(runs(&[(0, 0), (1, 1), (2, 2)]), [(0, 3, false, 0)]);
        assert_eq!(
            runs(&[(3, 0), (4, 0), (5, 0), (7, 0)]),
            [(3, 3, true, 0), (7, 1, false, 0)]
        );
        assert_eq!(
            runs(&[(0, 0), (1, ZERO_DATA), (2, ZERO_DATA), (3, 1), (4, 0)]),
            [
                (0, 1, false, 0),
                (1, 2, false, ZERO_DATA),
                (3, 1, false, 1),
                (4, 1, false, 0)
            ]
        );
        // A sequential run and a repeat run do not mix.
        assert_eq!(
            runs(&[(0, 4), (1, 5), (2, 5)]),
            [(0, 2, false, 4), (2, 1, false, 5)]
        );
    }

    #[test]
    fn runs_join_across_batches_as_pages_would() {
        let by_page = runs(&[(0, 1), (1, 2), (2, 3), (3, 3), (4, 3), (5, ZERO_DATA)]);
        let mut joined = Vec::new();
        for (first, count, repeat, data) in [
            (0, 2, false, 1),
            (2, 1, false, 3),
            (3, 2, true, 3),
            (5, 1, false, ZERO_DATA),
        ] {
            join(
                &mut joined,
                Run {
                    first,
                    count,
                    repeat,
                    data,
                },
            );
        }
        let joined: Vec<_> = joined
            .iter()
            .map(|r| (r.first, r.count, r.repeat, r.data))
            .collect();
        assert_eq!(joined, by_page);
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
