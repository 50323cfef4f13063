//! Sweeps of the address-space headroom (`RLIMIT_AS` above current use) across
//! what a snapshot needs: each snapshot taken under the limit must hold the
//! region's new contents or fail with an allowed error, after which a plain
//! snapshot must; the sweep must see both outcomes.

use super::address_space::with_headroom;
use pagesnap::{Error, Region, Snapshot};

/// How a sweep writes a generation into its region and checks a snapshot of it.
pub struct Contents<F, C> {
    /// Writes generation `gen` into the region.
    pub fill: F,
    /// Panics unless the snapshot holds generation `gen` (`context` says where).
    pub check: C,
}

/// For each headroom (bytes), writes a new generation and takes a snapshot
/// with `take` under it.
pub fn sweep<F, C>(
    what: &str,
    region: &mut Region,
    headrooms: impl IntoIterator<Item = u64>,
    contents: Contents<F, C>,
    mut take: impl FnMut(&mut Region) -> Result<Snapshot, Error>,
    allowed: impl Fn(&Error) -> bool,
) where
    F: Fn(&mut Region, u64),
    C: Fn(&Snapshot, u64, &str),
{
    let (mut ok, mut failed) = (0, 0);
    for (step, headroom) in headrooms.into_iter().enumerate() {
        let gen = 10 + step as u64;
        (contents.fill)(region, gen);
        let context = format!("{what}: headroom {} KiB", headroom / 1024);
        let snap = match with_headroom(headroom, || take(region)) {
            Ok(snap) => {
                ok += 1;
                snap
            }
            Err(e) => {
                failed += 1;
                assert!(allowed(&e), "{context}: {e:?}");
                region.snapshot().unwrap()
            }
        };
        (contents.check)(&snap, gen, &context);
    }
    eprintln!("{what} sweep: {ok} succeeded under the limit, {failed} failed");
    assert!(ok > 0 && failed > 0, "{what}: the sweep crossed the limit");
}
