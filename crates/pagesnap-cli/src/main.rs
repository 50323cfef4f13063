//! `pagesnap`: probe the kernel, benchmark, demo, inspect and verify snapshot files.

mod bench;

mod demo;
mod files;
mod probe;
mod remote;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pagesnap",
    version,
    about = "Copy-on-write snapshots of live process memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this kernel offers and which tracking backend pagesnap uses.
    Probe(probe::Args),
    /// Benchmarks against fork, memcpy and the dirty-copy floor (and sub-benchmarks).
    Bench(bench::Args),
    /// A model checker whose whole state lives in a pagesnap heap.
    Demo(demo::Args),
    /// Describe a snapshot file.
    Inspect(files::InspectArgs),
    /// Check a snapshot file end to end: exit 0 when whole, 1 with the reason when not.
    Verify(files::VerifyArgs),
    /// Upload a snapshot file to object storage: only pages the remote lacks.
    Push(remote::PushArgs),
    /// Download a snapshot from object storage into a file (every page checked).
    Pull(remote::PullArgs),
    /// List the snapshots in object storage.
    Ls(remote::LsArgs),
}

fn main() -> ExitCode {
    die_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(args) => probe::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => files::inspect(args),
        Command::Verify(args) => files::verify(args),
        Command::Push(args) => remote::push(args),
        Command::Pull(args) => remote::pull(args),
        Command::Ls(args) => remote::ls(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pagesnap: {}", pagesnap::error::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// `pagesnap probe | head -1`: once the reader is gone, end as Unix tools do
/// (killed by SIGPIPE, no message) instead of panicking in `println!`. Rust
/// ignores SIGPIPE by default; the sockets of remote commands are written with
/// `MSG_NOSIGNAL` and so still see `EPIPE` as an error.
#[allow(unsafe_code)]
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default, at start-up,
    // before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// What a subcommand returns: an exit code, or an error printed with its causes.
pub type CmdResult = Result<ExitCode, Box<dyn std::error::Error>>;
