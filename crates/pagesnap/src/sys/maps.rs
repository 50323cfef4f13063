//! The protection the program gave pages of a region, from `/proc/self/maps`.
//!
//! pagesnap sets the protection of a region's pages itself (mprotect
//! tracking, point-in-time snapshots) and reads every page it copies. A
//! program that protects region pages on its own — a guard page
//! (`PROT_NONE`), a garbage collector's write barrier (`PROT_READ`), code
//! (`PROT_EXEC`) — would have that protection replaced by pagesnap's, or make
//! pagesnap's own read fault. So what is about to protect or copy a whole
//! region first asks the kernel which protections its mappings have.

use std::io::{self, BufRead};

/// A run of a region's pages mapped with a protection pagesnap did not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreign {
    /// First byte of the run (page-aligned).
    pub(crate) addr: usize,
    /// Its length in bytes.
    pub(crate) len: usize,
    /// Its protection as `/proc/self/maps` spells it (`r--`, `---`, `rwx`, …).
    pub(crate) perms: String,
}

/// The protections pagesnap leaves a region's pages with between snapshots:
/// read-write, and under mprotect tracking read-only too (a program's own
/// `PROT_READ` cannot be told apart there); with how an error says it.
pub(crate) fn expected(mprotect: bool) -> (&'static [&'static str], &'static str) {
    if mprotect {
        (
            &["rw-", "r--"],
            "read-write or read-only (mprotect tracking)",
        )
    } else {
        (&["rw-"], "read-write")
    }
}

/// The first mapping inside `[start, start + len)` whose protection is not
/// one of `allowed` (spelled as in `/proc/self/maps`: `rw-`, `r--`), clipped
/// to the range. `None` where `/proc/self/maps` cannot be read (a rare
/// sandbox: nothing can be known). Read a line at a time (a region that
/// mprotect tracking cut into many mappings makes the file long), up to the
/// range's end.
pub(crate) fn foreign_protection(start: usize, len: usize, allowed: &[&str]) -> Option<Foreign> {
    let file = std::fs::File::open("/proc/self/maps").ok()?;
    let mut lines = io::BufReader::new(file);
    let mut line = String::new();
    let lines = std::iter::from_fn(move || {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(n) if n > 0 => Some(parse(&line)),
            _ => None,
        }
    });
    first_foreign(lines.flatten(), start, start.saturating_add(len), allowed)
}

/// [`foreign_protection`] over the parsed lines of a maps file.
fn first_foreign(
    maps: impl Iterator<Item = (usize, usize, [u8; 3])>,
    start: usize,
    end: usize,
    allowed: &[&str],
) -> Option<Foreign> {
    maps.take_while(|&(from, _, _)| from < end)
        .filter(|&(_, to, _)| to > start)
        .find(|(_, _, perms)| !allowed.iter().any(|a| a.as_bytes() == perms))
        .map(|(from, to, perms)| {
            let addr = from.max(start);
            Foreign {
                addr,
                len: to.min(end) - addr,
                perms: String::from_utf8_lossy(&perms).into_owned(),
            }
        })
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
                perms: "---".into()
            }
        );
        // Clipped to the range, and mappings outside it do not count.
        assert_eq!(
            first_foreign(parsed(MAPS), 0x7f0000005000, 0x7f0000010000, &rw),
            None
        );
        let tail = first_foreign(parsed(MAPS), 0x7f000000f000, 0x7f0000010800, &rw).unwrap();
        assert_eq!(
            (tail.addr, tail.len, tail.perms.as_str()),
            (0x7f0000010000, 0x800, "r-x")
        );
        assert_eq!(
            first_foreign(parsed("garbage\n\n"), 0, usize::MAX, &rw),
            None
        );
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
        assert_eq!((found.addr, found.perms.as_str()), (start, "rw-"));
    }
}
