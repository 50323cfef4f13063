//! The options every benchmark shares, flattened into each one's arguments so
//! that `--seed`, `--json` and `--tracking` read and behave the same everywhere.

use super::dataset::fresh_seed;
use pagesnap::Tracking;
use std::path::{Path, PathBuf};

/// `--seed N`: the seed of a benchmark's random choices.
#[derive(clap::Args, Debug)]
pub struct SeedArg {
    /// Seed of the random page choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

impl SeedArg {
    /// The seed given, or a fresh one from the clock.
    pub fn get(&self) -> u64 {
        self.seed.unwrap_or_else(fresh_seed)
    }
}

/// `--json FILE`: where to write a benchmark's results as JSON.
#[derive(clap::Args, Debug)]
pub struct JsonArg {
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl JsonArg {
    /// The file asked for, if any.
    pub fn path(&self) -> Option<&Path> {
        self.json.as_deref()
    }

    /// Writes `doc` (pretty, one trailing newline) to the file asked for,
    /// creating its folder; does nothing when none was asked for.
    pub fn write(&self, doc: &serde_json::Value) -> Result<(), Box<dyn std::error::Error>> {
        let Some(path) = self.path() else {
            return Ok(());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(doc)? + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(())
    }
}

/// `--tracking BACKEND`: the backend of a benchmark that measures one.
#[derive(clap::Args, Debug)]
pub struct TrackingArg {
    /// Tracking backend.
    #[arg(long, default_value = "auto")]
    tracking: Tracking,
}

impl TrackingArg {
    /// The backend asked for.
    pub fn get(&self) -> Tracking {
        self.tracking
    }
}
