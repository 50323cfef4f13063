//! Where each page of a manifest lives: runs of entries stored in consecutive
//! slots of one pack.
//!
//! A manifest that carries its places (version 2) lets a pull or a lazy clone go
//! straight to the packs, without listing the remote or reading any pack index:
//! a lazy clone is usable after one small GET. Packs are immutable and never
//! deleted, so a place written once stays true. A first push packs pages in page
//! order, so a snapshot's places are a handful of runs, not one per page.

use super::index::Location;

/// The places of a manifest's entries (its non-zero pages, in page order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Places {
    /// The packs named, by number in this manifest.
    pub(super) packs: Vec<String>,
    /// Each run's first entry, pack number and first slot, by first entry; the
    /// run ends where the next begins.
    runs: Vec<Run>,
    /// Entries in all.
    entries: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    entry: u64,
    pack: u32,
    slot: u32,
}

/// Bytes of one encoded run: count u32, pack u32, first slot u32.
pub(super) const RUN_BYTES: usize = 12;

impl Places {
    /// The places of `hashes` (a manifest's entries, in order), each found with
    /// `lookup` (pack number in `known_packs`, slot). `Err(entry)` names the
    /// first entry `lookup` does not know.
    pub(super) fn build(
        hashes: impl IntoIterator<Item = u128>,
        known_packs: &[String],
        lookup: impl Fn(u128) -> Option<Location>,
    ) -> Result<Places, u64> {
        let mut packs: Vec<String> = Vec::new();
        // Known pack number → number here; a snapshot names few packs.
        let mut renumber: Vec<(u32, u32)> = Vec::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut entries = 0u64;
        let mut prev: Option<Location> = None;
        for h in hashes {
            let loc = lookup(h).ok_or(entries)?;
            let follows =
                prev.is_some_and(|p| p.pack == loc.pack && p.slot.wrapping_add(1) == loc.slot);
            if !follows {
                let pack = match renumber.iter().find(|r| r.0 == loc.pack) {
                    Some(&(_, here)) => here,
                    None => {
                        let here = packs.len() as u32;
                        packs.push(known_packs[loc.pack as usize].clone());
                        renumber.push((loc.pack, here));
                        here
                    }
                };
                runs.push(Run {
                    entry: entries,
                    pack,
                    slot: loc.slot,
                });
            }
            prev = Some(loc);
            entries += 1;
        }
        Ok(Places {
            packs,
            runs,
            entries,
        })
    }

    /// The place of entry `entry` (`< entries`), its pack numbered in [`packs`](Self::packs).
    pub(super) fn of(&self, entry: u64) -> Location {
        let i = self.runs.partition_point(|r| r.entry <= entry) - 1;
        let run = self.runs[i];
        Location {
            pack: run.pack,
            slot: run.slot + (entry - run.entry) as u32,
        }
    }

    /// Runs in the encoding.
    pub(super) fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Appends the pack names (16 bytes each) and the runs.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        for name in &self.packs {
            let n = u128::from_str_radix(name, 16).expect("pack names are 32 hex digits");
            out.extend_from_slice(&n.to_le_bytes());
        }
        for (i, run) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(self.entries, |r| r.entry);
            out.extend_from_slice(&((end - run.entry) as u32).to_le_bytes());
            out.extend_from_slice(&run.pack.to_le_bytes());
            out.extend_from_slice(&run.slot.to_le_bytes());
        }
    }

    /// Reads `packs` names (16 bytes each) then the runs, which must cover
    /// exactly `entries` entries; `Err` says what is wrong.
    pub(super) fn decode(packs: &[u8], runs: &[u8], entries: u64) -> Result<Places, String> {
        let packs: Vec<String> = packs
            .chunks_exact(16)
            .map(|b| {
                format!(
                    "{:032x}",
                    u128::from_le_bytes(b.try_into().expect("16 bytes"))
                )
            })
            .collect();
        let mut out = Vec::with_capacity(runs.len() / RUN_BYTES);
        let mut entry = 0u64;
        for r in runs.chunks_exact(RUN_BYTES) {
            let word = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
            let (count, pack, slot) = (word(0), word(4), word(8));
            if count == 0 || pack as usize >= packs.len() || slot.checked_add(count).is_none() {
                return Err(format!(
                    "place run {count}@{pack}:{slot} is empty or out of range"
                ));
            }
            out.push(Run { entry, pack, slot });
            entry += u64::from(count);
        }
        if entry != entries {
            return Err(format!(
                "the places cover {entry} pages, the table {entries}"
            ));
        }
        Ok(Places {
            packs,
            runs: out,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_run_and_round_trip() {
        let known = vec![format!("{:032x}", 10u128), format!("{:032x}", 20u128)];
        // Entries 0..3 in pack 1 slots 5..8, entry 3 in pack 0 slot 0, entry 4 in pack 1 slot 9.
        let at = |h: u128| {
            Some(match h {
                0..=2 => Location {
                    pack: 1,
                    slot: 5 + h as u32,
                },
                3 => Location { pack: 0, slot: 0 },
                _ => Location { pack: 1, slot: 9 },
            })
        };
        let p = Places::build(0..5u128, &known, at).unwrap();
        assert_eq!(p.run_count(), 3);
        assert_eq!(p.packs, vec![known[1].clone(), known[0].clone()]);
        assert_eq!(p.of(2), Location { pack: 0, slot: 7 });
        assert_eq!(p.of(3), Location { pack: 1, slot: 0 });
        assert_eq!(p.of(4), Location { pack: 0, slot: 9 });
        let mut bytes = Vec::new();
        p.encode_into(&mut bytes);
        let (names, runs) = bytes.split_at(32);
        assert_eq!(Places::decode(names, runs, 5).unwrap(), p);
        assert!(Places::decode(names, runs, 6).is_err());
        assert!(Places::decode(&names[..16], runs, 5).is_err());
        assert_eq!(Places::build(0..1u128, &known, |_| None), Err(0));
    }
}
