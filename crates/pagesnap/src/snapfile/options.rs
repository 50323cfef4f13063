//! [`LoadOptions`]: limits a caller sets before loading a file it does not trust.

/// Limits for [`Snapshot::load_with`](crate::Snapshot::load_with) and
/// [`verify_with`](crate::file::verify_with).
///
/// Loading costs time and memory in proportion to the file (its size and its
/// distinct pages), never to the region length it declares; but the snapshot it
/// returns is as long as the file says — up to 2⁴⁷ bytes — and whatever the caller
/// does next with it (restore it into a region, [`to_vec`](crate::Snapshot::to_vec),
/// save it) costs that length. A file from an untrusted source should be loaded
/// with a `max_len` the program can afford.
///
/// ```
/// use pagesnap::file::LoadOptions;
/// use pagesnap::{Error, FileError, PageStore, Region, Snapshot};
/// let dir = std::env::temp_dir().join(format!("pagesnap-doc-opts-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let snap = Region::builder(4 << 20).build()?.snapshot()?;
/// snap.save(dir.join("a.snap"))?;
///
/// let small = LoadOptions::new().max_len(1 << 20);
/// let e = Snapshot::load_with(dir.join("a.snap"), &PageStore::new(), &small).unwrap_err();
/// assert!(matches!(e, Error::File { source: FileError::RegionLimit { .. }, .. }));
/// let fits = LoadOptions::new().max_len(4 << 20);
/// Snapshot::load_with(dir.join("a.snap"), &PageStore::new(), &fits)?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), pagesnap::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The longest region accepted, in bytes; `None`: any the format allows.
    /// A longer one is [`FileError::RegionLimit`](crate::FileError::RegionLimit),
    /// found from the header before any page is read.
    pub max_len: Option<u64>,
}

impl LoadOptions {
    /// No limit beyond the format's.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Refuses files whose region is longer than `bytes`.
    pub fn max_len(mut self, bytes: u64) -> LoadOptions {
        self.max_len = Some(bytes);
        self
    }

    /// Checks a file's declared region length against the limits.
    pub(crate) fn check(&self, len: u64) -> Result<(), super::FileError> {
        match self.max_len {
            Some(max) if len > max => Err(super::FileError::RegionLimit { len, max }),
            _ => Ok(()),
        }
    }
}
