//! `pagesnap inspect` and `pagesnap verify` (being built).

use crate::CmdResult;

#[derive(clap::Args)]
pub struct InspectArgs {}

#[derive(clap::Args)]
pub struct VerifyArgs {}

pub fn inspect(_args: InspectArgs) -> CmdResult {
    Err("pagesnap inspect is not built yet".into())
}

pub fn verify(_args: VerifyArgs) -> CmdResult {
    Err("pagesnap verify is not built yet".into())
}
