//! The methods `pagesnap bench` compares, each holding its own copy of the dataset.
//!
//! Every method runs the same round on the same chosen pages:
//!
//! | method | write | snapshot | restore (to the state before the writes) |
//! |---|---|---|---|
//! | a pagesnap backend | stores into the tracked region | `Region::snapshot` | `Region::restore` |
//! | `uffd-raw` | stores into a buffer armed by hand ([`super::uffd_raw`]) | – | – |
//! | `floor` | stores into a plain buffer | memcpy of exactly the dirty pages | memcpy of them back |
//! | `memcpy` | stores into a plain buffer | memcpy of the whole buffer | memcpy of a whole copy back |
//! | `fork` | stores while the forked child lives (CoW faults) | the `fork()` call | – |
//!
//! `cycle` is write + snapshot of the same round, timed back to back. All
//! destination buffers are pre-faulted when they are made.

use super::buffer::Buffer;
use super::dataset::{dirty, fill_page, is_initial};
use super::fork_helper::ForkHelper;
use super::uffd_raw::RawUffd;
use pagesnap::{PageStore, Region, Snapshot, Tracking};
use std::error::Error;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// An operation timed in each round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Snapshot,
    Restore,
    Cycle,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Write, Op::Snapshot, Op::Restore, Op::Cycle];

    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Snapshot => "snapshot",
            Op::Restore => "restore",
            Op::Cycle => "cycle",
        }
    }
}

/// What one round of one method measured (`None`: the method has no such op).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub write: Option<Duration>,
    pub snapshot: Option<Duration>,
    pub restore: Option<Duration>,
}

impl Timings {
    pub fn get(&self, op: Op) -> Option<Duration> {
        match op {
            Op::Write => self.write,
            Op::Snapshot => self.snapshot,
            Op::Restore => self.restore,
            Op::Cycle => Some(self.write? + self.snapshot?),
        }
    }
}

/// One competitor.
pub trait Method {
    /// The name in tables and JSON: a backend name, `uffd-raw`, `floor`, `memcpy`, `fork`.
    fn name(&self) -> &str;
    /// The ops this method reports.
    fn ops(&self) -> &'static [Op];
    /// Dirties `pages` (sorted, distinct) with `stamp`, and times the method's ops.
    /// Leaves the dataset as it was before the round where the method can restore.
    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings>;
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Fails unless the given pages hold their initial contents (checked, untimed,
/// after every restore, so a fast but wrong restore cannot pass).
fn check_restored(name: &str, mem: &[u8], pages: &[usize], page: usize) -> Result<()> {
    match pages.iter().find(|&&p| !is_initial(mem, p, page)) {
        None => Ok(()),
        Some(p) => Err(format!("{name}: page {p} differs from the snapshot after restore").into()),
    }
}

/// A pagesnap region with one backend; `base` is the snapshot taken before the writes.
pub struct Tracked {
    name: &'static str,
    region: Region,
    base: Snapshot,
}

impl Tracked {
    /// Builds, fills and snapshots a region (the snapshot every restore returns to).
    pub fn new(
        len: usize,
        tracking: Tracking,
        huge: bool,
        store: &PageStore,
        threads: usize,
    ) -> Result<Tracked> {
        let mut region = Region::builder(len)
            .tracking(tracking)
            .huge_pages(huge)
            .store(store)
            .threads(threads)
            .build()?;
        let page = pagesnap::page_size();
        for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
            fill_page(i, p);
        }
        let base = region.snapshot()?;
        Ok(Tracked {
            name: tracking.name(),
            region,
            base,
        })
    }
}

impl Method for Tracked {
    fn name(&self) -> &str {
        self.name
    }

    fn ops(&self) -> &'static [Op] {
        &Op::ALL
    }

    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings> {
        let page = pagesnap::page_size();
        let ((), write) = timed(|| dirty(self.region.as_mut_slice(), pages, page, stamp));
        let (snap, snapshot) = timed(|| self.region.snapshot());
        let snap = snap?;
        let (res, restore) = timed(|| self.region.restore(&self.base));
        res?;
        // Released outside the timings: a user keeping snapshots never pays this.
        drop(snap);
        check_restored(self.name, self.region.as_slice(), pages, page)?;
        Ok(Timings {
            write: Some(write),
            snapshot: Some(snapshot),
            restore: Some(restore),
        })
    }
}

/// The bare kernel cost of async write-protect faults.
pub struct UffdRaw {
    raw: RawUffd,
}

impl UffdRaw {
    pub fn new(len: usize, huge: bool) -> Result<UffdRaw> {
        let buf = Buffer::new(len, huge, fill_page)?;
        Ok(UffdRaw {
            raw: RawUffd::arm(buf)?,
        })
    }
}

impl Method for UffdRaw {
    fn name(&self) -> &str {
        "uffd-raw"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Write]
    }

    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings> {
        let page = pagesnap::page_size();
        let ((), write) = timed(|| dirty(self.raw.as_mut_slice(), pages, page, stamp));
        self.raw.reprotect(pages)?;
        Ok(Timings {
            write: Some(write),
            ..Timings::default()
        })
    }
}

/// The copy floor: what copying exactly the dirty pages costs, with no tracking.
pub struct Floor {
    data: Buffer,
    /// The chosen pages as they were before the writes (the "snapshot" restored).
    saved: Buffer,
    /// Where the snapshot copies the dirty pages.
    copy: Buffer,
}

impl Floor {
    pub fn new(len: usize, dirty_pages: usize, huge: bool) -> Result<Floor> {
        let small = dirty_pages * pagesnap::page_size();
        Ok(Floor {
            data: Buffer::new(len, huge, fill_page)?,
            saved: Buffer::new(small, huge, fill_page)?,
            copy: Buffer::new(small, huge, fill_page)?,
        })
    }
}

/// Copies page `pages[j]` of `from` to page `j` of `to`.
fn gather(from: &[u8], pages: &[usize], to: &mut [u8], page: usize) {
    for (dst, &p) in to.chunks_exact_mut(page).zip(pages) {
        dst.copy_from_slice(&from[p * page..(p + 1) * page]);
    }
}

/// Copies page `j` of `from` to page `pages[j]` of `to`.
fn scatter(from: &[u8], pages: &[usize], to: &mut [u8], page: usize) {
    for (src, &p) in from.chunks_exact(page).zip(pages) {
        to[p * page..(p + 1) * page].copy_from_slice(src);
    }
}

impl Method for Floor {
    fn name(&self) -> &str {
        "floor"
    }

    fn ops(&self) -> &'static [Op] {
        &Op::ALL
    }

    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings> {
        let page = pagesnap::page_size();
        // The state before the writes is the initial one: rebuild those pages rather
        // than read them, so the timed stores find the dataset as cold as others do.
        for (dst, &p) in self.saved.as_mut_slice().chunks_exact_mut(page).zip(pages) {
            fill_page(p, dst);
        }
        let ((), write) = timed(|| dirty(self.data.as_mut_slice(), pages, page, stamp));
        let ((), snapshot) =
            timed(|| gather(self.data.as_slice(), pages, self.copy.as_mut_slice(), page));
        let ((), restore) =
            timed(|| scatter(self.saved.as_slice(), pages, self.data.as_mut_slice(), page));
        check_restored("floor", self.data.as_slice(), pages, page)?;
        Ok(Timings {
            write: Some(write),
            snapshot: Some(snapshot),
            restore: Some(restore),
        })
    }
}

/// A full copy per snapshot.
pub struct Memcpy {
    data: Buffer,
    /// The dataset before the writes: the snapshot restores copy back.
    before: Buffer,
    /// Where each snapshot copies the whole dataset.
    copy: Buffer,
}

impl Memcpy {
    pub fn new(len: usize, huge: bool) -> Result<Memcpy> {
        Ok(Memcpy {
            data: Buffer::new(len, huge, fill_page)?,
            before: Buffer::new(len, huge, fill_page)?,
            copy: Buffer::new(len, huge, fill_page)?,
        })
    }
}

impl Method for Memcpy {
    fn name(&self) -> &str {
        "memcpy"
    }

    fn ops(&self) -> &'static [Op] {
        &Op::ALL
    }

    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings> {
        let page = pagesnap::page_size();
        let ((), write) = timed(|| dirty(self.data.as_mut_slice(), pages, page, stamp));
        let ((), snapshot) = timed(|| {
            self.copy
                .as_mut_slice()
                .copy_from_slice(self.data.as_slice())
        });
        let ((), restore) = timed(|| {
            self.data
                .as_mut_slice()
                .copy_from_slice(self.before.as_slice())
        });
        check_restored("memcpy", self.data.as_slice(), pages, page)?;
        Ok(Timings {
            write: Some(write),
            snapshot: Some(snapshot),
            restore: Some(restore),
        })
    }
}

/// fork() as a snapshot, measured in a helper process holding only the dataset.
pub struct Fork {
    helper: ForkHelper,
}

impl Fork {
    pub fn new(len: usize, huge: bool) -> Result<Fork> {
        Ok(Fork {
            helper: ForkHelper::spawn(len, huge)?,
        })
    }
}

impl Method for Fork {
    fn name(&self) -> &str {
        "fork"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Write, Op::Snapshot, Op::Cycle]
    }

    fn round(&mut self, pages: &[usize], stamp: u64) -> Result<Timings> {
        let (fork, write) = self.helper.round(pages, stamp)?;
        Ok(Timings {
            write: Some(write),
            snapshot: Some(fork),
            restore: None,
        })
    }
}
