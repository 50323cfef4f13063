//! Reading: the header, footer and page table are checked against the file size
//! and their checksums before anything is sized from them; then the page records
//! stream through a fixed buffer, each checked and decoded, in batches.

use super::error::FileError;
use super::format::{
    record_crc, u32_at, u64_at, Bad, Footer, Header, Run, COMPRESSED, FOOTER_LEN, HEADER_LEN,
    MAGIC, RECORD_HEADER_LEN, RUN_LEN, TABLE_OVERHEAD,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Bytes read per read(2) of the page records.
const CHUNK: usize = 4 << 20;
/// Most pages handed to the sink at once.
const BATCH: usize = 256;

/// A file whose header, footer and page table have been read and checked.
pub(crate) struct Opened {
    file: File,
    pub(crate) size: u64,
    pub(crate) header: Header,
    pub(crate) footer: Footer,
    pub(crate) runs: Vec<Run>,
}

/// What streaming the page records found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecordStats {
    pub(crate) compressed: u64,
    pub(crate) stored_bytes: u64,
}

fn bad(what: &str, base: u64, b: Bad) -> FileError {
    match b {
        Bad::Magic => FileError::BadMagic {
            what: if what == "header" { "header" } else { "footer" },
            offset: if what == "header" { base } else { base + 56 },
        },
        Bad::Version(found) => FileError::Version {
            found,
            supported: super::format::VERSION,
        },
        Bad::Checksum(stored, computed) => FileError::Checksum {
            what: what.into(),
            offset: base,
            stored,
            computed,
        },
        Bad::Field(at, reason) => FileError::Invalid {
            what: what.into(),
            offset: base + at,
            reason,
        },
    }
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), FileError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| FileError::Io {
            op: format!("read {} bytes at byte {offset}", buf.len()),
            source,
        })
}

/// Opens `path` and checks everything but the page records.
pub(crate) fn open(path: &Path) -> Result<Opened, FileError> {
    // Non-blocking: opening a FIFO for reading would otherwise wait for a
    // writer for ever, before anything could look at what the path is.
    // (On a regular file the flag changes nothing.)
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| FileError::Io {
            op: "open".into(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| FileError::Io {
        op: "stat".into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FileError::Io {
            op: "open".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a directory, FIFO, socket or device)",
            ),
        });
    }
    let size = meta.len();
    let min = HEADER_LEN + TABLE_OVERHEAD + FOOTER_LEN;
    if size < min {
        let mut start = [0u8; 8];
        let n = (size as usize).min(8);
        read_at(&file, &mut start[..n], 0)?;
        if start[..n] != MAGIC[..n] {
            return Err(FileError::BadMagic {
                what: "header",
                offset: 0,
            });
        }
        return Err(FileError::Truncated {
            what: "header, page table and footer",
            offset: 0,
            needed: min,
            size,
        });
    }
    let mut hb = [0u8; HEADER_LEN as usize];
    read_at(&file, &mut hb, 0)?;
    let header = Header::decode(&hb).map_err(|b| bad("header", 0, b))?;
    let footer_off = size - FOOTER_LEN;
    let mut fb = [0u8; FOOTER_LEN as usize];
    read_at(&file, &mut fb, footer_off)?;
    let footer =
        Footer::decode(&fb, size, header.version).map_err(|b| bad("footer", footer_off, b))?;

    // Footer::decode checked that the table and the records lie between the
    // header and the footer, in the order of the header's version.
    let table_len = footer.table_end(size) - footer.table_off;
    let too_large = || FileError::TooLarge {
        what: "the page table",
        bytes: table_len,
    };
    let table_bytes = usize::try_from(table_len).map_err(|_| too_large())?;
    let mut tb = Vec::new();
    tb.try_reserve_exact(table_bytes).map_err(|_| too_large())?;
    tb.resize(table_bytes, 0);
    read_at(&file, &mut tb, footer.table_off)?;
    let crc_at = tb.len() - 4;
    let (stored, computed) = (u32_at(&tb, crc_at), crc32c::crc32c(&tb[..crc_at]));
    if stored != computed {
        return Err(FileError::Checksum {
            what: "page table".into(),
            offset: footer.table_off,
            stored,
            computed,
        });
    }
    let count = u64_at(&tb, 0);
    if count
        .checked_mul(RUN_LEN)
        .and_then(|b| b.checked_add(TABLE_OVERHEAD))
        != Some(table_len)
    {
        return Err(FileError::Invalid {
            what: "page table".into(),
            offset: footer.table_off,
            reason: format!("{count} runs do not fill its {table_len} bytes"),
        });
    }
    let mut runs = Vec::with_capacity(count as usize);
    let mut prev_end = 0;
    for (i, b) in tb[8..crc_at].chunks_exact(RUN_LEN as usize).enumerate() {
        let run =
            Run::decode(b, prev_end, header.pages(), footer.data_count).map_err(|reason| {
                FileError::Invalid {
                    what: format!("page table run {i}"),
                    offset: footer.table_off + 8 + i as u64 * RUN_LEN,
                    reason,
                }
            })?;
        prev_end = run.end();
        runs.push(run);
    }
    Ok(Opened {
        file,
        size,
        header,
        footer,
        runs,
    })
}

enum Src {
    Buf(usize),
    Scratch(usize),
}

impl Opened {
    /// Pages the table lists (zero ones included).
    pub(crate) fn listed(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.count)).sum()
    }

    /// Pages the table lists as zero.
    pub(crate) fn zero_listed(&self) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.data_of(0).is_none())
            .map(|r| u64::from(r.count))
            .sum()
    }

    /// Reads, checks and decodes every page record in order, handing the pages to
    /// `sink` in batches (each slice one page).
    pub(crate) fn for_each_batch(
        &self,
        mut sink: impl FnMut(&[&[u8]]) -> Result<(), FileError>,
    ) -> Result<RecordStats, FileError> {
        let page = self.header.page_size as usize;
        let data_end = self.footer.data_end(self.size);
        let count = self.footer.data_count;
        let mut stats = RecordStats::default();
        // Small files get small buffers; a record (≤ 8 + 65536 bytes) always fits.
        let data_len = data_end - self.footer.data_off;
        let mut buf = vec![0u8; usize::try_from(data_len).map_or(CHUNK, |n| n.clamp(1, CHUNK))];
        let batch_pages = (count as usize).clamp(1, BATCH);
        let mut scratch = vec![0u8; batch_pages * page];
        let mut items: Vec<Src> = Vec::with_capacity(BATCH);
        let (mut pos, mut at, mut have) = (self.footer.data_off, 0usize, 0usize);
        let mut index = 0u64;
        loop {
            items.clear();
            let mut starved = false;
            while index < count && items.len() < batch_pages {
                let offset = pos - (have - at) as u64;
                let what = || format!("page record {index}");
                if have - at < RECORD_HEADER_LEN as usize {
                    starved = true;
                    break;
                }
                let word = u32_at(&buf, at);
                let crc = u32_at(&buf, at + 4);
                let len = (word & !COMPRESSED) as usize;
                let compressed = word & COMPRESSED != 0;
                if len == 0
                    || len > page
                    || (compressed && len == page)
                    || (!compressed && len != page)
                {
                    return Err(FileError::Invalid {
                        what: what(),
                        offset,
                        reason: format!(
                            "stored length {len} ({}) for {page}-byte pages",
                            if compressed { "compressed" } else { "raw" }
                        ),
                    });
                }
                let start = at + RECORD_HEADER_LEN as usize;
                if have - start < len {
                    starved = true;
                    break;
                }
                let stored = &buf[start..start + len];
                let computed = record_crc(word, stored);
                if computed != crc {
                    return Err(FileError::Checksum {
                        what: what(),
                        offset,
                        stored: crc,
                        computed,
                    });
                }
                if compressed {
                    let k = items.len();
                    let out = &mut scratch[k * page..(k + 1) * page];
                    match lz4_flex::block::decompress_into(stored, out) {
                        Ok(n) if n == page => {}
                        Ok(n) => {
                            return Err(FileError::Invalid {
                                what: what(),
                                offset,
                                reason: format!("the lz4 block decodes to {n} bytes, not {page}"),
                            })
                        }
                        Err(e) => {
                            return Err(FileError::Invalid {
                                what: what(),
                                offset,
                                reason: format!("the lz4 block does not decode: {e}"),
                            })
                        }
                    }
                    items.push(Src::Scratch(k));
                    stats.compressed += 1;
                } else {
                    items.push(Src::Buf(start));
                }
                stats.stored_bytes += len as u64;
                at = start + len;
                index += 1;
            }
            if !items.is_empty() {
                let slices: Vec<&[u8]> = items
                    .iter()
                    .map(|s| match *s {
                        Src::Buf(i) => &buf[i..i + page],
                        Src::Scratch(k) => &scratch[k * page..(k + 1) * page],
                    })
                    .collect();
                sink(&slices)?;
            }
            if index == count {
                break;
            }
            if starved {
                buf.copy_within(at..have, 0);
                have -= at;
                at = 0;
                let want = ((buf.len() - have) as u64).min(data_end - pos) as usize;
                if want == 0 {
                    return Err(FileError::Invalid {
                        what: format!("page record {index}"),
                        offset: pos - have as u64,
                        reason: format!("it runs past the records' end at byte {data_end}"),
                    });
                }
                read_at(&self.file, &mut buf[have..have + want], pos)?;
                pos += want as u64;
                have += want;
            }
        }
        if pos != data_end || at != have {
            return Err(FileError::Invalid {
                what: "page records".into(),
                offset: pos - (have - at) as u64,
                reason: format!(
                    "bytes follow the last of the {count} records, before byte {data_end}"
                ),
            });
        }
        Ok(stats)
    }
}
