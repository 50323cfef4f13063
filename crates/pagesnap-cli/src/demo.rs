//! `pagesnap demo` (being built).

use crate::CmdResult;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CmdResult {
    Err("pagesnap demo is not built yet".into())
}
