//! A background save that fails mid-stream (the file size limit, standing in for
//! a full disk) fails with a typed error and releases every parked writer.
//! Alone in its test binary: it lowers RLIMIT_FSIZE for the whole process.

mod common;

use pagesnap::{PageStore, Region, Snapshot, Tracking};

/// Limits the process's files to 256 KiB (set again by each test, whatever
/// their order) and returns a fresh scratch folder named after `name`.
fn limited_files(name: &str) -> std::path::PathBuf {
    // SAFETY: plain libc calls with valid arguments; SIGXFSZ ignored so a write
    // past the limit fails with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 256 << 10,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let dir = std::env::temp_dir().join(format!("pagesnap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn write_failure_mid_stream_releases_writers() {
    let dir = limited_files("bgfail");
    for t in [Tracking::Auto, Tracking::Mprotect] {
        for huge in [false, true] {
            let len = 32 << 20;
            let mut region = Region::builder(len)
                .tracking(t)
                .huge_pages(huge)
                .build()
                .unwrap();
            // Incompressible pages: the file would be ≈ 32 MiB, far past the limit.
            common::fill(region.as_mut_slice(), 3);
            let path = dir.join("a.snap");
            let bg = region.background_save(&path).unwrap();
            let base = region.as_ptr() as usize;
            let writers: Vec<_> = (0..2usize)
                .map(|tid| {
                    std::thread::spawn(move || {
                        let chunk = len / 2;
                        // From the end backwards: these batches are the copier's
                        // last, so the writers park on them when the write fails.
                        for at in (tid * chunk..(tid + 1) * chunk).step_by(4096).rev() {
                            common::write_u64(base, at, 42);
                        }
                    })
                })
                .collect();
            let err = bg.wait().unwrap_err();
            assert!(
                matches!(&err, pagesnap::Error::File { path: p, .. } if *p == path),
                "{err}"
            );
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for w in writers {
                    w.join().unwrap();
                }
                let _ = tx.send(());
            });
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .expect("writers were left blocked after the failure");
            assert!(!path.exists());
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert!(left.is_empty(), "the temporary file was not removed");
            // Tracking stayed exact through the failure.
            let snap = region.snapshot().unwrap();
            assert!(
                snap.to_vec() == region.as_slice(),
                "{t}: tracking missed writes"
            );
            // A save small enough for the limit still works afterwards.
            let mut small = Region::builder(1 << 20).tracking(t).build().unwrap();
            small.as_mut_slice().fill(5);
            small.background_save(&path).unwrap().wait().unwrap();
            let back = Snapshot::load(&path, &PageStore::new()).unwrap();
            assert!(back.to_vec().iter().all(|&b| b == 5));
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A converging save whose file cannot grow (the same limit) fails with a
/// typed error at `finish`, leaves no file at the target nor beside it, and
/// loses no write: the region's next snapshot is exact.
#[test]
fn converging_save_write_failure_leaves_no_file() {
    let dir = limited_files("cvfail");
    for t in [Tracking::Auto, Tracking::Mprotect] {
        let len = 16 << 20;
        let mut region = Region::builder(len).tracking(t).build().unwrap();
        common::fill(region.as_mut_slice(), 4);
        let path = dir.join("c.snap");
        let conv = region.converging_save(&path).unwrap();
        conv.wait_converged();
        let err = conv.finish().err().expect("the file cannot hold 16 MiB");
        assert!(
            matches!(&err, pagesnap::Error::File { path: p, .. } if *p == path),
            "{t}: {err}"
        );
        assert!(!path.exists(), "{t}: a file at the target");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "{t}: the temporary file was not removed");
        region.as_mut_slice()[5] ^= 1;
        let snap = region.snapshot().unwrap();
        assert!(snap.to_vec() == region.as_slice(), "{t}: a write was lost");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
