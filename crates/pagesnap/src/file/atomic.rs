//! Atomic, durable replacement of a file.
//!
//! ```text
//!  dir/.NAME.PID.N.tmp   created O_EXCL, mode 0600
//!        │ write everything, fsync
//!        ▼
//!  rename(tmp, dir/NAME)  atomic: readers see the old file or the new one, whole
//!        │
//!  fsync(dir)             the rename itself survives a power cut
//! ```
//! A crash before the rename leaves the old file (or none) at `NAME` and a stray
//! `.NAME.*.tmp` beside it; a failure we see removes the temporary file.

use super::error::FileError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> FileError {
    let op = op.into();
    move |source| FileError::Io { op, source }
}

/// Writes `path` through `body` so that it is replaced atomically and durably.
pub(crate) fn replace<R>(
    path: &Path,
    body: impl FnOnce(&mut File) -> Result<R, FileError>,
) -> Result<R, FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| FileError::Io {
        op: "name the file".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(format!(
            "create the temporary file {}",
            tmp.display()
        )))?;
    let result = body(&mut file)
        .and_then(|r| file.sync_all().map_err(io_err("fsync")).map(|()| r))
        .and_then(|r| {
            drop(file);
            std::fs::rename(&tmp, path)
                .map_err(io_err(format!("rename {} over it", tmp.display())))
                .map(|()| r)
        });
    match result {
        Ok(r) => {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(format!("fsync the directory {}", dir.display())))?;
            Ok(r)
        }
        Err(e) => {
            // Best effort: the error being reported matters more than this one.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
