//! `pagesnap bench` (being built).

use crate::CmdResult;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> CmdResult {
    Err("pagesnap bench is not built yet".into())
}
