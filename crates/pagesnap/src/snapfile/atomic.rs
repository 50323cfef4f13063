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
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
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
    let mut pending = Pending::create(path)?;
    let r = body(&mut pending.file)?;
    pending.commit()?;
    Ok(r)
}

/// A temporary file beside its target, written at leisure (a background save
/// creates it before protecting the region, and fills it from the copier).
/// [`commit`](Self::commit) fsyncs it, renames it over the target and fsyncs the
/// directory; dropping it uncommitted removes it.
pub(crate) struct Pending {
    pub(crate) file: File,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    done: bool,
}

impl Pending {
    /// Creates `dir/.NAME.PID.N.tmp` (O_EXCL, mode 0600) for target `path`.
    pub(crate) fn create(path: &Path) -> Result<Pending, FileError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().ok_or_else(|| FileError::Io {
            op: "name the file".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // A directory would only be found by the rename, after the whole
        // file was written (and, for a background save, after writers paid
        // for a protected snapshot).
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(FileError::Io {
                op: format!("replace {}", path.display()),
                source: io::Error::from_raw_os_error(libc::EISDIR),
            });
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temporary_name(name, std::process::id(), n));
        // Readable too: a converging save reads back what it wrote.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(format!(
                "create the temporary file {}",
                tmp.display()
            )))?;
        Ok(Pending {
            file,
            tmp,
            path: path.to_path_buf(),
            dir,
            done: false,
        })
    }

    /// Makes the written file the target's contents, atomically and durably.
    pub(crate) fn commit(mut self) -> Result<(), FileError> {
        self.file.sync_all().map_err(io_err("fsync"))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(io_err(format!("rename {} over it", self.tmp.display())))?;
        self.done = true;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!(
                "fsync the directory {}",
                self.dir.display()
            )))
    }
}

/// `.NAME.PID.N.tmp`, with NAME cut short where the whole would pass the
/// longest name a file system takes (255 bytes): any name the target may
/// have must be savable to.
fn temporary_name(name: &OsStr, pid: u32, n: u64) -> OsString {
    const NAME_MAX: usize = 255;
    let suffix = format!(".{pid}.{n}.tmp");
    let keep = NAME_MAX - 1 - suffix.len();
    let bytes = name.as_bytes();
    let mut tmp = OsString::from(".");
    tmp.push(OsStr::from_bytes(&bytes[..bytes.len().min(keep)]));
    tmp.push(suffix);
    tmp
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: the error being reported matters more than this one.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
