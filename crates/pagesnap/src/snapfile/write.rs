//! Writing a snapshot that is whole in the store, table first (versions 1 and
//! 3): the plan (page table and the distinct pages, in file order), then the
//! bytes through the file [`Encoder`].

use super::encode::{push_page, Encoder};
use super::error::FileError;
use super::format::{
    Header, Run, FOOTER_LEN, HEADER_LEN, RECORD_HEADER_LEN, RUN_LEN, TABLE_OVERHEAD, ZERO_DATA,
};
use super::SaveReport;
use crate::store::frames::{FrameId, FrameIdMap};
use crate::store::PageStore;
use crate::Digest;
use std::io::Write;

/// Pages encoded per store lock.
const BATCH: usize = 256;

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
    index: FrameIdMap<u32>,
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
        push_page(&mut self.runs, page, data);
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
    let mut out = Encoder::new(header);
    out.table(&plan.runs);
    let data_off = out.position();
    debug_assert_eq!(
        data_off,
        HEADER_LEN + TABLE_OVERHEAD + RUN_LEN * plan.runs.len() as u64
    );
    for chunk in plan.data.chunks(BATCH) {
        for &id in chunk {
            out.record(store.frame(id));
        }
        out.flush_if_full(file)?;
    }
    let (data_count, stored_bytes, compressed) =
        (out.records(), out.stored_bytes(), out.compressed());
    let file_len = out.finish(file, HEADER_LEN, data_off, digest.to_bytes())?;
    debug_assert_eq!(
        file_len,
        data_off + data_count * RECORD_HEADER_LEN + stored_bytes + FOOTER_LEN
    );
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
}
