//! The CLI as a pipeline stage and on paths that are not files: `pagesnap probe
//! | head -1` ends quietly when its reader goes (as Unix tools do), and
//! `inspect`/`verify` of a FIFO fail at once instead of waiting for a writer.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    for args in [&["probe"][..], &["probe", "--json"][..]] {
        // A pipe whose reader is gone before the command starts.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just opened and are owned here alone.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn inspect_and_verify_of_a_fifo_fail_at_once() {
    let dir = std::env::temp_dir().join(format!("pagesnap-cli-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for cmd in ["inspect", "verify"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
            .args([cmd, fifo.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("pagesnap {cmd} of a FIFO waited for a writer");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success(), "{cmd}: {status}");
        assert!(status.code().is_some(), "{cmd}: {status}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
