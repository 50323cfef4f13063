//! # Safety
//!
//! The `fork` baseline, measured in a helper process that holds only the dataset.
//!
//! Forking the bench process itself would charge fork for every other mapping (the
//! page store, the other methods' buffers) and leave every private page of the
//! bench write-protected afterwards, so the next method's writes would each pay a
//! fault. So the bench re-executes itself as `pagesnap bench fork-helper`, which maps
//! and fills the dataset and then answers requests over its stdin/stdout:
//!
//! ```text
//!  bench                                 helper (single-threaded)
//!  ── spawn `pagesnap bench fork-helper --size N` ─►  map + fill N bytes
//!  ◄──────────────────────────────── "ready"
//!  ── "round STAMP P1 P2 …" ─────────►  t0 fork() t1          child: pause() until killed
//!                                       dirty P1 P2 … t2      (copy-on-write faults)
//!                                       kill + reap child
//!  ◄──────────── "ok FORK_NS WRITE_NS"
//!  ── "quit" (or EOF) ───────────────►  exit
//! ```
//! The only unsafe code is `fork(2)` and what the child does after it: the helper
//! has a single thread, and the child calls nothing but async-signal-safe
//! functions (`prctl`, `pause`) until the helper kills it with SIGKILL.
#![allow(unsafe_code)]

use super::buffer::Buffer;
use super::dataset::{dirty, fill_page};
use super::units::ByteSize;
use crate::CmdResult;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `pagesnap bench fork-helper` (hidden): the helper's side.
#[derive(clap::Args)]
pub struct HelperArgs {
    /// Dataset size.
    #[arg(long)]
    size: ByteSize,
    /// Map the dataset with transparent huge pages.
    #[arg(long)]
    huge_pages: bool,
}

/// Serves rounds until "quit" or end of input.
pub fn serve(args: HelperArgs) -> CmdResult {
    let page = pagesnap::page_size();
    let len = args.size.0.next_multiple_of(page);
    let mut data = Buffer::new(len, args.huge_pages, fill_page)?;
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("round") => {
                let stamp: u64 = words.next().ok_or("round without a stamp")?.parse()?;
                let pages = words
                    .map(|w| w.parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()?;
                if pages.iter().any(|&p| p >= len / page) {
                    return Err("page index past the dataset".into());
                }
                let (fork, write) = fork_round(&mut data, &pages, stamp)?;
                writeln!(out, "ok {} {}", fork.as_nanos(), write.as_nanos())?;
                out.flush()?;
            }
            Some("quit") | None => break,
            Some(other) => return Err(format!("fork helper: unknown request {other:?}").into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Forks (the child keeps the copy and waits), dirties `pages` while the child
/// lives, then kills and reaps the child. Returns the fork and the write times.
fn fork_round(data: &mut Buffer, pages: &[usize], stamp: u64) -> io::Result<(Duration, Duration)> {
    let page = pagesnap::page_size();
    let t0 = Instant::now();
    // SAFETY: the helper is single-threaded (nothing here spawns threads), so the
    // child is a complete copy; it only calls async-signal-safe functions below.
    let pid = unsafe { libc::fork() };
    let fork = t0.elapsed();
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: prctl and pause are async-signal-safe; the loop never returns,
        // so no destructor or atexit handler of the copy runs. PDEATHSIG ends the
        // child should the helper die before killing it.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            loop {
                libc::pause();
            }
        }
    }
    let t1 = Instant::now();
    dirty(data.as_mut_slice(), pages, page, stamp);
    let write = t1.elapsed();
    let mut status = 0;
    // SAFETY: pid is our own child, not yet reaped.
    let reaped = unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0)
    };
    if reaped != pid {
        return Err(io::Error::last_os_error());
    }
    Ok((fork, write))
}

/// The bench's handle on a running helper.
pub struct ForkHelper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl ForkHelper {
    /// Starts `pagesnap bench fork-helper` and waits until its dataset is filled.
    pub fn spawn(len: usize, huge_pages: bool) -> io::Result<ForkHelper> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["bench", "fork-helper", "--size", &len.to_string()]);
        if huge_pages {
            cmd.arg("--huge-pages");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut helper = ForkHelper {
            child,
            stdin,
            stdout,
            line: String::new(),
        };
        helper.expect_line("ready")?;
        Ok(helper)
    }

    /// One round: fork, then dirty `pages` with `stamp` while the child lives.
    /// Returns (fork time, write time).
    pub fn round(&mut self, pages: &[usize], stamp: u64) -> io::Result<(Duration, Duration)> {
        let mut req = format!("round {stamp}");
        for p in pages {
            req.push(' ');
            req.push_str(&p.to_string());
        }
        req.push('\n');
        self.stdin.write_all(req.as_bytes())?;
        self.stdin.flush()?;
        self.expect_line("ok")?;
        let nums: Vec<u64> = self
            .line
            .split_ascii_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match nums[..] {
            [fork, write] => Ok((Duration::from_nanos(fork), Duration::from_nanos(write))),
            _ => Err(bad_reply(&self.line)),
        }
    }

    fn expect_line(&mut self, word: &str) -> io::Result<()> {
        self.line.clear();
        if self.stdout.read_line(&mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fork helper exited (see its message above)",
            ));
        }
        if self.line.split_ascii_whitespace().next() == Some(word) {
            Ok(())
        } else {
            Err(bad_reply(&self.line))
        }
    }
}

fn bad_reply(line: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply from the fork helper: {:?}", line.trim()),
    )
}

impl Drop for ForkHelper {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"quit\n");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
