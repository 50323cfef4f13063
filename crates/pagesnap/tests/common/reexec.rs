//! Running part of a test in a child process: the test binary re-executes itself
//! for one test, with an environment variable telling that test to play the
//! child. A crash, abort or hang there fails the parent's assertion instead of
//! killing the test harness.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a child left: its exit status and its stdout and stderr together.
pub struct Outcome {
    pub status: ExitStatus,
    pub output: String,
    pub timed_out: bool,
}

/// Runs test `name` of this binary with `var=1` set, killing it after `limit`.
pub fn run_test(name: &str, var: &str, limit: Duration) -> Outcome {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(var, "1");
    run(cmd, limit)
}

/// Runs `cmd`, killing it after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("reap the child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut output = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    output += &String::from_utf8_lossy(&err_reader.join().unwrap());
    Outcome {
        status,
        output,
        timed_out,
    }
}

/// Limits this process's address space to what it maps now plus `extra` bytes
/// (`setrlimit(RLIMIT_AS)`): an allocation beyond fails instead of succeeding.
pub fn limit_address_space(extra: u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    rl.rlim_cur = (kb * 1024 + extra).min(rl.rlim_max);
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}
