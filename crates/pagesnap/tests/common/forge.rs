//! Snapshot files built and altered byte by byte, checksums recomputed, for the
//! hostile-file tests (the library's and the CLI's include this file by path).
//!
//! It knows the format from its documentation (`pagesnap::file`), not from the
//! library's code: header 64 bytes, page table (run count, 16-byte runs, crc),
//! page records (length word, crc, bytes), footer 64 bytes.
#![allow(dead_code)]

/// Header and footer size.
pub const FIXED: usize = 64;
/// Footer field offsets (from the footer's start).
pub const TABLE_OFF: usize = 0;
pub const DATA_OFF: usize = 8;
pub const DATA_COUNT: usize = 16;
pub const FILE_LEN: usize = 24;
pub const DIGEST: usize = 32;
/// Header field offsets.
pub const VERSION: usize = 8;
pub const KIND: usize = 12;
pub const PAGE_SIZE: usize = 16;
pub const REGION_LEN: usize = 24;
/// Run flag: every page of the run holds one stored page.
pub const REPEAT: u32 = 1 << 31;
/// A run's data index for zero pages.
pub const ZERO_DATA: u32 = u32::MAX;

pub fn get_u64(v: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(v[at..at + 8].try_into().unwrap())
}

pub fn set_u64(v: &mut [u8], at: usize, x: u64) {
    v[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

pub fn get_u32(v: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(v[at..at + 4].try_into().unwrap())
}

pub fn set_u32(v: &mut [u8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&x.to_le_bytes());
}

/// Where the footer starts.
pub fn footer(v: &[u8]) -> usize {
    v.len() - FIXED
}

pub fn fix_header_crc(v: &mut [u8]) {
    let crc = crc32c::crc32c(&v[..60]);
    set_u32(v, 60, crc);
}

pub fn fix_footer_crc(v: &mut [u8]) {
    let f = footer(v);
    let crc = crc32c::crc32c(&v[f..f + 52]);
    set_u32(v, f + 52, crc);
}

/// The page table's byte range, from the (trusted, unaltered) footer.
pub fn table(v: &[u8]) -> std::ops::Range<usize> {
    let f = footer(v);
    let start = get_u64(v, f + TABLE_OFF) as usize;
    let end = if table_first(v) {
        get_u64(v, f + DATA_OFF) as usize
    } else {
        f
    };
    start..end
}

/// The page records' byte range.
pub fn data(v: &[u8]) -> std::ops::Range<usize> {
    let f = footer(v);
    let start = get_u64(v, f + DATA_OFF) as usize;
    let end = if table_first(v) {
        f
    } else {
        get_u64(v, f + TABLE_OFF) as usize
    };
    start..end
}

pub fn fix_table_crc(v: &mut [u8]) {
    let t = table(v);
    let crc = crc32c::crc32c(&v[t.start..t.end - 4]);
    set_u32(v, t.end - 4, crc);
}

/// Offsets of the page records (from a file whose records are intact).
pub fn records(v: &[u8]) -> Vec<usize> {
    let d = data(v);
    let mut out = Vec::new();
    let mut at = d.start;
    while at < d.end {
        out.push(at);
        at += 8 + (get_u32(v, at) & !(1 << 31)) as usize;
    }
    out
}

/// Recomputes the checksum of the record at `at`, trusting its length word as far
/// as the records' end.
pub fn fix_record_crc(v: &mut [u8], at: usize) {
    let end = data(v).end;
    let len = (get_u32(v, at) & !(1 << 31)) as usize;
    let stop = (at + 8).saturating_add(len).min(end);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[at..at + 4]), &v[at + 8..stop]);
    set_u32(v, at + 4, crc);
}

/// Whether the file puts its page table before the records (versions 1 and 3;
/// 2 and 4 put it last).
fn table_first(v: &[u8]) -> bool {
    get_u32(v, VERSION) % 2 == 1
}

/// A table-first file (version 1 or 3) rewritten in the table-last layout of
/// the next version (2 or 4): records first, table last.
pub fn to_v2(v1: &[u8]) -> Vec<u8> {
    let (t, d) = (table(v1), data(v1));
    let mut v = v1[..FIXED].to_vec();
    set_u32(&mut v, VERSION, get_u32(v1, VERSION) + 1);
    fix_header_crc(&mut v);
    v.extend_from_slice(&v1[d.clone()]);
    let table_off = v.len() as u64;
    v.extend_from_slice(&v1[t]);
    let mut foot = v1[footer(v1)..].to_vec();
    set_u64(&mut foot, TABLE_OFF, table_off);
    set_u64(&mut foot, DATA_OFF, FIXED as u64);
    set_u64(&mut foot, FILE_LEN, (v.len() + FIXED) as u64);
    v.extend_from_slice(&foot);
    fix_footer_crc(&mut v);
    v
}

/// One page-table run: `count` pages from `first` hold records `data, data+1, …`
/// (or all `data` when `repeat`; zeros when `data` is [`ZERO_DATA`]).
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub first: u64,
    pub count: u32,
    pub repeat: bool,
    pub data: u32,
}

/// A version 1 full file of a `len`-byte region: `runs` over raw page records
/// `pages`, with `digest` in the footer.
pub fn build(
    page_size: u32,
    len: u64,
    runs: &[Run],
    pages: &[Vec<u8>],
    digest: [u8; 16],
) -> Vec<u8> {
    let mut v = vec![0u8; FIXED];
    v[..8].copy_from_slice(b"PAGESNAP");
    set_u32(&mut v, VERSION, 1);
    set_u32(&mut v, KIND, 0);
    set_u32(&mut v, PAGE_SIZE, page_size);
    set_u64(&mut v, REGION_LEN, len);
    fix_header_crc(&mut v);
    let table_off = v.len();
    v.extend_from_slice(&(runs.len() as u64).to_le_bytes());
    for r in runs {
        v.extend_from_slice(&r.first.to_le_bytes());
        v.extend_from_slice(&(r.count | if r.repeat { REPEAT } else { 0 }).to_le_bytes());
        v.extend_from_slice(&r.data.to_le_bytes());
    }
    let crc = crc32c::crc32c(&v[table_off..]);
    v.extend_from_slice(&crc.to_le_bytes());
    let data_off = v.len();
    for p in pages {
        let word = p.len() as u32;
        v.extend_from_slice(&word.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&word.to_le_bytes()), p);
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(p);
    }
    let mut foot = vec![0u8; FIXED];
    set_u64(&mut foot, TABLE_OFF, table_off as u64);
    set_u64(&mut foot, DATA_OFF, data_off as u64);
    set_u64(&mut foot, DATA_COUNT, pages.len() as u64);
    set_u64(&mut foot, FILE_LEN, (v.len() + FIXED) as u64);
    foot[DIGEST..DIGEST + 16].copy_from_slice(&digest);
    foot[56..].copy_from_slice(b"PSNAPEND");
    v.extend_from_slice(&foot);
    fix_footer_crc(&mut v);
    v
}

/// Sets the footer's digest (checksum recomputed).
pub fn set_digest(v: &mut [u8], digest: [u8; 16]) {
    let f = footer(v);
    v[f + DIGEST..f + DIGEST + 16].copy_from_slice(&digest);
    fix_footer_crc(v);
}

/// A small file whose one record is the page of `fill` bytes, repeated over a
/// region of `pages` pages by runs of at most 2^31 - 1 pages (digest: zeros,
/// to be set with [`set_digest`] once the library has computed it).
pub fn repeat_file(page_size: u32, pages: u64, fill: u8) -> Vec<u8> {
    let max = (1u64 << 31) - 1;
    let mut runs = Vec::new();
    let mut first = 0;
    while first < pages {
        let count = (pages - first).min(max);
        runs.push(Run {
            first,
            count: count as u32,
            repeat: true,
            data: 0,
        });
        first += count;
    }
    let page = vec![fill; page_size as usize];
    build(
        page_size,
        pages * u64::from(page_size),
        &runs,
        &[page],
        [0; 16],
    )
}

/// Extreme values for a u64 field in a file of `size` bytes.
pub fn extremes(size: u64) -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        11,
        12,
        63,
        64,
        65,
        76,
        size.saturating_sub(65),
        size.saturating_sub(64),
        size.saturating_sub(63),
        size.saturating_sub(12),
        size - 1,
        size,
        size + 1,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        1 << 47,
        (1 << 47) + 4096,
        1 << 63,
        u64::MAX - 64,
        u64::MAX - 63,
        u64::MAX - 12,
        u64::MAX - 11,
        u64::MAX - 1,
        u64::MAX,
    ];
    v.sort_unstable();
    v.dedup();
    v
}
