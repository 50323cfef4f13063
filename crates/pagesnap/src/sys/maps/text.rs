//! `/proc/self/maps` read as text, a line at a time: what every kernel
//! has. (A region that mprotect tracking cut into many mappings makes the file
//! long, so it is read only up to the range's end.)

use super::{first_foreign, Foreign};
use std::io::{self, BufRead};

/// The first run inside `[start, start + len)` left unmapped or mapped with a
/// protection not one of `allowed`, clipped to the range. `None` where
/// `/proc/self/maps` cannot be read through (a rare sandbox: nothing can be
/// known).
pub(super) fn foreign_protection(start: usize, len: usize, allowed: &[&str]) -> Option<Foreign> {
    let file = std::fs::File::open(crate::sys::process::proc_file!("maps")).ok()?;
    let mut lines = io::BufReader::new(file);
    let mut line = String::new();
    // A read that fails part-way must not pass for the end of the list,
    // which would show the rest of the range as unmapped.
    // So must an empty list (a process always maps its own code), as a
    // process whose memory is gone would show.
    let (mut failed, mut read) = (false, 0usize);
    let maps = std::iter::from_fn(|| {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => {
                failed |= read == 0;
                None
            }
            Ok(_) => {
                read += 1;
                Some(parse(&line))
            }
            Err(_) => {
                failed = true;
                None
            }
        }
    });
    let found = first_foreign(maps.flatten(), start, start.saturating_add(len), allowed);
    if failed {
        return None;
    }
    found
}

/// `start-end perms …` → (start, end, the three protection letters).
fn parse(line: &str) -> Option<(usize, usize, [u8; 3])> {
    let mut fields = line.split_ascii_whitespace();
    let (from, to) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes().get(..3)?.try_into().ok()?;
    let from = usize::from_str_radix(from, 16).ok()?;
    let to = usize::from_str_radix(to, 16).ok()?;
    Some((from, to, perms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /bin/x
7f0000000000-7f0000004000 rw-p 00000000 00:00 0
7f0000004000-7f0000005000 ---p 00000000 00:00 0
7f0000005000-7f0000010000 rw-p 00000000 00:00 0
7f0000010000-7f0000011000 r-xp 00000000 00:00 0
";

    fn parsed(maps: &str) -> impl Iterator<Item = (usize, usize, [u8; 3])> + '_ {
        maps.lines().filter_map(parse)
    }

    #[test]
    fn finds_the_first_mapping_the_region_did_not_expect() {
        let rw = ["rw-"];
        let found = first_foreign(parsed(MAPS), 0x7f0000000000, 0x7f0000010000, &rw).unwrap();
        assert_eq!(
            found,
            Foreign {
                addr: 0x7f0000004000,
                len: 0x1000,
                perms: Some("---".into())
            }
        );
        // Clipped to the range, and mappings outside it do not count.
        assert_eq!(
            first_foreign(parsed(MAPS), 0x7f0000005000, 0x7f0000010000, &rw),
            None
        );
        let tail = first_foreign(parsed(MAPS), 0x7f000000f000, 0x7f0000010800, &rw).unwrap();
        assert_eq!(
            (tail.addr, tail.len, tail.perms.as_deref()),
            (0x7f0000010000, 0x800, Some("r-x"))
        );
        // Nothing mapped is a run too.
        let none = first_foreign(parsed("garbage\n\n"), 0, usize::MAX, &rw).unwrap();
        assert_eq!((none.addr, none.len, none.perms), (0, usize::MAX, None));
    }

    #[test]
    fn finds_pages_the_program_unmapped() {
        const HOLES: &str = "\
7f0000001000-7f0000003000 rw-p 00000000 00:00 0
7f0000004000-7f0000006000 rw-p 00000000 00:00 0
";
        let rw = ["rw-"];
        let hole = |start, end| {
            let f = first_foreign(parsed(HOLES), start, end, &rw)?;
            assert_eq!(f.perms, None);
            Some((f.addr, f.len))
        };
        // Before the first mapping, between two, after the last.
        assert_eq!(
            hole(0x7f0000000000, 0x7f0000006000),
            Some((0x7f0000000000, 0x1000))
        );
        assert_eq!(
            hole(0x7f0000001000, 0x7f0000006000),
            Some((0x7f0000003000, 0x1000))
        );
        assert_eq!(
            hole(0x7f0000004800, 0x7f0000008000),
            Some((0x7f0000006000, 0x2000))
        );
        assert_eq!(hole(0x7f0000002000, 0x7f0000003000), None);
        assert_eq!(hole(0x7f0000004000, 0x7f0000006000), None);
    }

    #[test]
    fn this_process_reads_its_own_maps() {
        let map = crate::sys::mmap::Mapping::anonymous(
            4 * crate::sys::page_size(),
            crate::sys::mmap::Protection::ReadWrite,
            false,
        )
        .unwrap();
        let (start, len) = (map.as_ptr() as usize, map.len());
        assert_eq!(foreign_protection(start, len, &["rw-"]), None);
        let found = foreign_protection(start, len, &["r--"]).unwrap();
        assert_eq!((found.addr, found.perms.as_deref()), (start, Some("rw-")));
    }
}
