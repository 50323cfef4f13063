//! `pagesnap bench`: pagesnap against fork, memcpy and the dirty-copy floor, and
//! its sub-benchmarks.
//!
//! ```text
//!  pagesnap bench [--size 1GiB --dirty 1% --rounds 7 …]   snapshot.rs: every method × op
//!  pagesnap bench memory [--snapshots 100 …]              memory.rs: store size vs bytes written
//!  pagesnap bench scale [--reserve 16GiB --use 1GiB …]    scale.rs: reserved vs used
//!  pagesnap bench file …                                  file.rs: save, load, deltas
//!  pagesnap bench clone [--size 1GiB --touch 1% --clones 10] clone.rs: eager vs lazy clones
//!  pagesnap bench bgsave [--size 1GiB --writers 2]          bgsave/: the seed: fork vs both background modes
//!  pagesnap bench remote [--size 1GiB --change 1% --touch 1%] remote.rs: push, pull, lazy clones
//!  pagesnap bench fork-helper (hidden)                    fork_helper.rs: the fork baseline's process
//! ```
//! Figures come from here, never from timed tests.

mod args;
mod bgsave;
mod buffer;
mod clone;
mod dataset;
mod file;
mod fork_helper;
mod memory;
mod methods;
mod plot;
mod progress;
mod remote;
mod report;
mod scale;
mod snapshot;
mod stats;
mod uffd_raw;
pub(crate) mod units;

use crate::CmdResult;

/// `pagesnap bench [OPTIONS]` runs the main benchmark; `pagesnap bench SUBCOMMAND`
/// a sub-benchmark.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    main: snapshot::MainArgs,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Memory held by many live snapshots: unique pages, stored and metadata bytes.
    Memory(memory::MemoryArgs),
    /// Snapshot time of a region reserving far more than it uses, against a dense one.
    Scale(scale::ScaleArgs),
    /// Snapshot files (save, load, deltas) against plain write(2)/read(2) of the bytes.
    File(file::FileArgs),
    /// Clones of one snapshot: eager (new region + restore) against lazy
    /// (`Snapshot::instantiate`): start, touch, reset, memory of many live clones.
    Clone(clone::CloneArgs),
    /// The seed benchmark: a consistent snapshot beside writer threads, fork
    /// against pagesnap's background snapshot and background save.
    Bgsave(bgsave::BgsaveArgs),
    /// Snapshots in object storage: push (full and changed), pull against a plain
    /// download, lazy clones against pulling everything first.
    Remote(remote::RemoteArgs),
    /// Internal: the process the fork baseline runs in.
    #[command(hide = true)]
    ForkHelper(fork_helper::HelperArgs),
}

pub fn run(args: Args) -> CmdResult {
    match args.command {
        None => snapshot::run(args.main),
        Some(Sub::Memory(a)) => memory::run(a),
        Some(Sub::Scale(a)) => scale::run(a),
        Some(Sub::File(a)) => file::run(a),
        Some(Sub::Clone(a)) => clone::run(a),
        Some(Sub::Bgsave(a)) => bgsave::run(a),
        Some(Sub::Remote(a)) => remote::run(a),
        Some(Sub::ForkHelper(a)) => fork_helper::serve(a),
    }
}
