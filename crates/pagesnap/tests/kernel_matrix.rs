//! The kernel matrix's results: `kernels/matrix.sh` (run by `.ci/run` before
//! `cargo test`) boots Debian's stock kernels under qemu and runs the test
//! suites there; this test turns its results file into pass or fail here.
//! Without the file (a local `cargo test`) it says how to make one and skips;
//! under CI (`CI` set) a missing file fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

struct Row {
    kernel: String,
    suite: String,
    status: String,
    seconds: String,
    detail: String,
}

fn results_path() -> PathBuf {
    match std::env::var_os("PAGESNAP_KERNEL_MATRIX") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kernel-matrix/results.tsv")
        }
    }
}

fn read_rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(5, '\t').map(str::to_string);
            let mut next = || f.next().unwrap_or_default();
            Row {
                kernel: next(),
                suite: next(),
                status: next(),
                seconds: next(),
                detail: next(),
            }
        })
        .collect()
}

/// The last `n` lines a suite printed between its markers in a guest's log
/// (to the log's end where the suite never finished).
fn suite_tail<'a>(log: &'a str, suite: &str, n: usize) -> Vec<&'a str> {
    let begin = format!("@@suite {suite} begin");
    let end = format!("@@suite {suite} end");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !l.starts_with(&begin))
        .skip(1)
        .take_while(|l| !l.starts_with(&end))
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// `key=value` from a row's detail.
fn field<'a>(row: &'a Row, key: &str) -> &'a str {
    row.detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
}

#[test]
fn every_kernel_of_the_matrix_passes() {
    let path = results_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        // .ci/run always runs the matrix first: a missing file there is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {} is missing: did kernels/matrix.sh run?",
            path.display()
        );
        eprintln!(
            "skipping: no kernel matrix results at {} (run kernels/matrix.sh first; \
             .ci/run does)",
            path.display()
        );
        return;
    };
    let rows = read_rows(&text);
    eprintln!("kernel matrix ({}):", path.display());
    for r in &rows {
        eprintln!(
            "  {:<24} {:<13} {:<7} {:>5} s  {}",
            r.kernel, r.suite, r.status, r.seconds, r.detail
        );
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.status != "pass")
        .map(|r| format!("{} {}: {} ({})", r.kernel, r.suite, r.status, r.detail))
        .collect();
    // CI keeps only this test's output: show what each failing suite printed.
    for r in rows.iter().filter(|r| r.status != "pass") {
        let log = path.with_file_name(format!("{}.log", r.kernel));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!(
            "--- {} {}: the end of its output in {}",
            r.kernel,
            r.suite,
            log.display()
        );
        for line in suite_tail(&text, &r.suite, 60) {
            eprintln!("  | {line}");
        }
    }
    assert!(
        bad.is_empty(),
        "kernel matrix failures (guest logs beside {}):\n{}",
        path.display(),
        bad.join("\n")
    );

    let mut kernels: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        kernels.entry(&r.kernel).or_default().push(r);
    }
    assert!(
        kernels.len() >= 2,
        "the matrix should show at least two kernels, has {:?}",
        kernels.keys()
    );
    let mut soft_dirty_exercised = Vec::new();
    for (kernel, rows) in &kernels {
        let probe = rows
            .iter()
            .find(|r| r.suite == "probe")
            .unwrap_or_else(|| panic!("{kernel}: no probe row"));
        let available: Vec<&str> = field(probe, "available").split(',').collect();
        for r in rows
            .iter()
            .filter(|r| r.suite != "probe" && r.suite != "guest")
        {
            assert_ne!(field(r, "passed"), "0", "{kernel} {}: ran no test", r.suite);
            // A backend the kernel offers is never skipped by a suite.
            for skipped in field(r, "skipped").split(',') {
                assert!(
                    !available.contains(&skipped),
                    "{kernel} {}: skipped {skipped}, which the kernel offers",
                    r.suite
                );
            }
        }
        if available.contains(&"soft-dirty") {
            soft_dirty_exercised.push(*kernel);
        }
        if kernel.starts_with("6.1.") {
            assert_eq!(field(probe, "auto"), "soft-dirty", "{kernel}: Auto");
        }
    }
    assert!(
        !soft_dirty_exercised.is_empty(),
        "no kernel of the matrix offered soft-dirty"
    );
    eprintln!("soft-dirty exercised on {soft_dirty_exercised:?}");
}
