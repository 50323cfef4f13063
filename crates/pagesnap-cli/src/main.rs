//! `pagesnap`: probe the kernel, benchmark, demo, inspect and verify snapshot files.

mod probe;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(args) => probe::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pagesnap: {}", pagesnap::error::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// What a subcommand returns: an exit code, or an error printed with its causes.
pub type CmdResult = Result<ExitCode, Box<dyn std::error::Error>>;
