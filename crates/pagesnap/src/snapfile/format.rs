//! The bytes of a snapshot file, versions 1 to 4: fixed-size header, footer, page-table
//! runs and page-record headers, encoded and decoded without any I/O.
//!
//! All integers are little-endian. Every decoder takes a slice of exactly the
//! right length (the caller checked it against the file size) and checks every
//! field it returns; none of them allocates or panics.

/// The first 8 bytes of every snapshot file.
pub(crate) const MAGIC: [u8; 8] = *b"PAGESNAP";
/// The last 8 bytes of every snapshot file.
pub(crate) const END_MAGIC: [u8; 8] = *b"PSNAPEND";
/// The newest format version this code reads; it reads every older one too.
/// [`Snapshot::save`](crate::Snapshot::save) writes version 3 (table first);
/// a background save writes version 4 (records first, table last).
pub const VERSION: u32 = 4;
/// Version 1: header, page table, page records, footer.
#[cfg_attr(not(test), allow(dead_code))] // read through `table_last`; written by tests
pub(crate) const VERSION_TABLE_FIRST: u32 = 1;
/// Version 2: header, page records, page table, footer — the layout of a file
/// streamed before its table is known. Otherwise identical to version 1.
pub(crate) const VERSION_TABLE_LAST: u32 = 2;
/// Version 3: version 1 whose header records the snapshot's origin address.
pub(crate) const VERSION_TABLE_FIRST_ORIGIN: u32 = 3;
/// Version 4: version 2 whose header records the snapshot's origin address.
pub(crate) const VERSION_TABLE_LAST_ORIGIN: u32 = 4;

/// Whether files of `version` put the page table after the records.
pub(crate) fn table_last(version: u32) -> bool {
    version == VERSION_TABLE_LAST || version == VERSION_TABLE_LAST_ORIGIN
}

/// Whether headers of `version` hold the origin address at bytes 48..56.
fn has_origin(version: u32) -> bool {
    version >= VERSION_TABLE_FIRST_ORIGIN
}
/// Bytes in the header (at offset 0).
pub(crate) const HEADER_LEN: u64 = 64;
/// Bytes in the footer (the file's last bytes).
pub(crate) const FOOTER_LEN: u64 = 64;
/// Bytes of one page-table run.
pub(crate) const RUN_LEN: u64 = 16;
/// Bytes of the table's run count and of its checksum.
pub(crate) const TABLE_OVERHEAD: u64 = 8 + 4;
/// Bytes of a page record's header (length word and checksum).
pub(crate) const RECORD_HEADER_LEN: u64 = 8;
/// The longest run: its page count must leave bit 31 free for [`REPEAT`].
pub(crate) const MAX_RUN: u32 = (1 << 31) - 1;
/// Run flag: every page of the run holds the same stored page.
pub(crate) const REPEAT: u32 = 1 << 31;
/// A run's data index meaning "all-zero pages".
pub(crate) const ZERO_DATA: u32 = u32::MAX;
/// Record flag: the stored bytes are an lz4 block.
pub(crate) const COMPRESSED: u32 = 1 << 31;
/// The largest region a file may describe: 2⁴⁷ bytes, the x86-64 user address space.
pub(crate) const MAX_REGION: u64 = 1 << 47;

/// What a snapshot file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A self-contained snapshot: pages not in the table are zero.
    Full,
    /// The differences from a parent snapshot: pages not in the table are the parent's.
    Delta,
}

impl FileKind {
    fn code(self) -> u32 {
        match self {
            FileKind::Full => 0,
            FileKind::Delta => 1,
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Full => "full",
            FileKind::Delta => "delta",
        })
    }
}

/// Why a fixed-size structure was refused: what, and at which byte of the structure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The magic bytes are not pagesnap's.
    Magic,
    /// The structure's checksum does not match: (stored, computed).
    Checksum(u32, u32),
    /// A version this code does not know.
    Version(u32),
    /// A field out of range: its offset within the structure, and what is wrong.
    Field(u64, String),
}

/// The header: what the file describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) kind: FileKind,
    pub(crate) page_size: u32,
    /// Region length in bytes: a non-zero multiple of `page_size`, at most [`MAX_REGION`].
    pub(crate) len: u64,
    /// The parent's digest (delta files; zeros in full files).
    pub(crate) parent: [u8; 16],
    /// The address of the region the snapshot was taken from (versions 3 and
    /// 4; 0 when unknown, and always 0 in older versions).
    pub(crate) origin: u64,
}

impl Header {
    pub(crate) fn pages(&self) -> u64 {
        self.len / u64::from(self.page_size)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.code().to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b[32..48].copy_from_slice(&self.parent);
        if has_origin(self.version) {
            b[48..56].copy_from_slice(&self.origin.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; HEADER_LEN as usize]) -> Result<Header, Bad> {
        if b[0..8] != MAGIC {
            return Err(Bad::Magic);
        }
        let version = u32_at(b, 8);
        if version == 0 || version > VERSION {
            return Err(Bad::Version(version));
        }
        let (stored, computed) = (u32_at(b, 60), crc32c::crc32c(&b[..60]));
        if stored != computed {
            return Err(Bad::Checksum(stored, computed));
        }
        let kind = match u32_at(b, 12) {
            0 => FileKind::Full,
            1 => FileKind::Delta,
            k => {
                return Err(Bad::Field(
                    12,
                    format!("kind {k} is neither 0 (full) nor 1 (delta)"),
                ))
            }
        };
        let page_size = u32_at(b, 16);
        if !page_size.is_power_of_two() || !(512..=1 << 16).contains(&page_size) {
            return Err(Bad::Field(
                16,
                format!("page size {page_size} is not a power of two in 512..=65536"),
            ));
        }
        let reserved_from = if has_origin(version) { 56 } else { 48 };
        if u32_at(b, 20) != 0 || b[reserved_from..60].iter().any(|&x| x != 0) {
            return Err(Bad::Field(20, "reserved bytes are not zero".into()));
        }
        let origin = if has_origin(version) {
            u64_at(b, 48)
        } else {
            0
        };
        let len = u64_at(b, 24);
        if len == 0 || len % u64::from(page_size) != 0 || len > MAX_REGION {
            return Err(Bad::Field(
                24,
                format!("region length {len} is not a non-zero multiple of the page size {page_size} up to 2^47"),
            ));
        }
        let mut parent = [0u8; 16];
        parent.copy_from_slice(&b[32..48]);
        if kind == FileKind::Full && parent != [0; 16] {
            return Err(Bad::Field(32, "a full file names a parent digest".into()));
        }
        Ok(Header {
            version,
            kind,
            page_size,
            len,
            parent,
            origin,
        })
    }
}

/// The footer: where the parts are and what the result must hash to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    /// Offset of the page table (version 1: right after the header; version 2:
    /// right after the records).
    pub(crate) table_off: u64,
    /// Offset of the first page record (version 1: right after the table;
    /// version 2: right after the header).
    pub(crate) data_off: u64,
    /// Number of page records.
    pub(crate) data_count: u64,
    /// The whole file's length, footer included.
    pub(crate) file_len: u64,
    /// The snapshot's digest.
    pub(crate) digest: [u8; 16],
    /// Version 2's layout: the table after the records (not encoded; from the
    /// header's version).
    pub(crate) table_last: bool,
}

impl Footer {
    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN as usize] {
        let mut b = [0u8; FOOTER_LEN as usize];
        b[0..8].copy_from_slice(&self.table_off.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_off.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.file_len.to_le_bytes());
        b[32..48].copy_from_slice(&self.digest);
        let crc = crc32c::crc32c(&b[..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b[56..64].copy_from_slice(&END_MAGIC);
        b
    }

    /// Where the page table ends (exclusive), in a file of `size` bytes.
    pub(crate) fn table_end(&self, size: u64) -> u64 {
        if !self.table_last {
            self.data_off
        } else {
            size.saturating_sub(FOOTER_LEN)
        }
    }

    /// Where the page records end (exclusive), in a file of `size` bytes.
    pub(crate) fn data_end(&self, size: u64) -> u64 {
        if !self.table_last {
            size.saturating_sub(FOOTER_LEN)
        } else {
            self.table_off
        }
    }

    /// Decodes the footer of a file of `size` bytes and version `version`, and
    /// checks that its offsets describe that file: header, table, records, footer
    /// (version 1) or header, records, table, footer (version 2), no gaps.
    pub(crate) fn decode(
        b: &[u8; FOOTER_LEN as usize],
        size: u64,
        version: u32,
    ) -> Result<Footer, Bad> {
        if b[56..64] != END_MAGIC {
            return Err(Bad::Magic);
        }
        let (stored, computed) = (u32_at(b, 52), crc32c::crc32c(&b[..52]));
        if stored != computed {
            return Err(Bad::Checksum(stored, computed));
        }
        if b[48..52].iter().any(|&x| x != 0) {
            return Err(Bad::Field(48, "reserved bytes are not zero".into()));
        }
        let f = Footer {
            table_off: u64_at(b, 0),
            data_off: u64_at(b, 8),
            data_count: u64_at(b, 16),
            file_len: u64_at(b, 24),
            digest: b[32..48].try_into().expect("16 bytes"),
            table_last: table_last(version),
        };
        if f.file_len != size {
            return Err(Bad::Field(
                24,
                format!(
                    "the footer says the file is {} bytes; it is {size}",
                    f.file_len
                ),
            ));
        }
        // Every sum below is on values read from the file: checked, never wrapped.
        let Some(footer_off) = size.checked_sub(FOOTER_LEN) else {
            return Err(Bad::Field(
                24,
                format!("a file of {size} bytes has no room for its footer"),
            ));
        };
        let fits = |off: u64, len: u64, end: u64| off.checked_add(len).is_some_and(|e| e <= end);
        if !table_last(version) {
            if f.table_off != HEADER_LEN {
                return Err(Bad::Field(
                    0,
                    format!(
                        "the page table is at byte {}, not right after the header",
                        f.table_off
                    ),
                ));
            }
            if !fits(f.table_off, TABLE_OVERHEAD, f.data_off) || f.data_off > footer_off {
                return Err(Bad::Field(
                    8,
                    format!(
                        "the page records start at byte {}, outside the file's middle",
                        f.data_off
                    ),
                ));
            }
        } else {
            if f.data_off != HEADER_LEN {
                return Err(Bad::Field(
                    8,
                    format!(
                        "the page records start at byte {}, not right after the header",
                        f.data_off
                    ),
                ));
            }
            if f.table_off < f.data_off || !fits(f.table_off, TABLE_OVERHEAD, footer_off) {
                return Err(Bad::Field(
                    0,
                    format!(
                        "the page table is at byte {}, outside the file's middle",
                        f.table_off
                    ),
                ));
            }
        }
        // Checked above: data_off <= data_end <= footer_off in both layouts.
        let data_len = f.data_end(size) - f.data_off;
        // Each record takes a header and at least one byte, and is named by a u32
        // index below the "zero pages" marker.
        if f.data_count > data_len / (RECORD_HEADER_LEN + 1) || f.data_count > u64::from(ZERO_DATA)
        {
            return Err(Bad::Field(
                16,
                format!(
                    "{} page records cannot fit in {data_len} bytes",
                    f.data_count
                ),
            ));
        }
        Ok(f)
    }
}

/// One page-table run: `count` pages from `first` hold stored pages
/// `data, data + 1, …` — or all `data` when `repeat` — or zeros when `data` is
/// [`ZERO_DATA`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) repeat: bool,
    pub(crate) data: u32,
}

impl Run {
    /// The stored page (or `None` for zero) of the run's `i`-th page.
    pub(crate) fn data_of(&self, i: u32) -> Option<u32> {
        match (self.data, self.repeat) {
            (ZERO_DATA, _) => None,
            (d, true) => Some(d),
            (d, false) => Some(d + i),
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first.to_le_bytes());
        let count = self.count | if self.repeat { REPEAT } else { 0 };
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.data.to_le_bytes());
    }

    /// Decodes run `b` and checks it against the previous run's end, the region's
    /// page count and the number of stored pages.
    pub(crate) fn decode(
        b: &[u8],
        prev_end: u64,
        pages: u64,
        data_count: u64,
    ) -> Result<Run, String> {
        let first = u64_at(b, 0);
        let word = u32_at(b, 8);
        let run = Run {
            first,
            count: word & !REPEAT,
            repeat: word & REPEAT != 0,
            data: u32_at(b, 12),
        };
        if run.count == 0 {
            return Err("a run of zero pages".into());
        }
        if first < prev_end {
            return Err(format!(
                "the run at page {first} overlaps or precedes the run ending at page {prev_end}"
            ));
        }
        if first > pages || u64::from(run.count) > pages - first {
            return Err(format!(
                "the run of {} pages at page {first} ends past the region's {pages} pages",
                run.count
            ));
        }
        if run.data != ZERO_DATA {
            // At most (2^32 - 2) + (2^31 - 1): no overflow in u64.
            let last = if run.repeat {
                u64::from(run.data)
            } else {
                u64::from(run.data) + u64::from(run.count) - 1
            };
            // Footer::decode keeps data_count below ZERO_DATA, so every index
            // named here fits a u32 and `data_of` cannot overflow.
            if last >= data_count {
                return Err(format!(
                    "the run at page {first} names stored page {last}; the file stores {data_count}"
                ));
            }
        }
        Ok(run)
    }
}

/// A page record's length word: stored length, and whether it is compressed.
pub(crate) fn record_word(stored: usize, compressed: bool) -> u32 {
    stored as u32 | if compressed { COMPRESSED } else { 0 }
}

/// The checksum of a record: over its length word and its stored bytes.
pub(crate) fn record_crc(word: u32, stored: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), stored)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
