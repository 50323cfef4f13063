//! Progress bars on stderr (drawn only when stderr is a terminal).
//!
//! No steady-tick thread: bars redraw when the benchmark moves them, between timed
//! sections, so no extra thread competes with what is measured.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps whose message says what is running.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:32}] {pos}/{len} {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}
