//! Results: rows of case × method × op, the stdout table, the targets, JSON rows.

use super::stats::Summary;
use comfy_table::{presets, CellAlignment, Table};
use serde_json::{json, Value};

/// One method × op, in one case (e.g. `1% 4K`; empty where a bench has one).
#[derive(Clone, Debug)]
pub struct Row {
    pub case: String,
    pub method: String,
    pub op: &'static str,
    pub summary: Summary,
    /// Every timed sample in round order, in milliseconds.
    pub samples_ms: Vec<f64>,
}

impl Row {
    pub fn json(&self) -> Value {
        json!({
            "case": self.case,
            "method": self.method,
            "op": self.op,
            "median_ms": self.summary.median_ms,
            "min_ms": self.summary.min_ms,
            "max_ms": self.summary.max_ms,
            "samples_ms": self.samples_ms,
        })
    }
}

/// The median of `method` × `op`, if measured (the first case that has it).
pub fn median(rows: &[Row], method: &str, op: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.method == method && r.op == op)
        .map(|r| r.summary.median_ms)
}

/// The median of `method` × `op` in `case`, if measured.
fn median_in(rows: &[Row], case: &str, method: &str, op: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.case == case && r.method == method && r.op == op)
        .map(|r| r.summary.median_ms)
}

fn ratio(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => {
            if v >= 100.0 {
                format!("{v:.0}×")
            } else if v >= 10.0 {
                format!("{v:.1}×")
            } else if v >= 1.0 {
                format!("{v:.2}×")
            } else {
                format!("{v:.3}×")
            }
        }
        _ => "–".into(),
    }
}

/// `1.234`, `0.0123`, `123.4`: three significant digits or so.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else if v >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// A ratio column: each row's median against `base`'s median of the same op, as
/// `median / base` (a cost, `speedup == false`) or `base / median` (a speedup).
pub struct Versus {
    pub header: &'static str,
    pub base: &'static str,
    pub speedup: bool,
}

/// The main benchmark's columns: cost relative to the floor, speedup over fork and
/// over memcpy.
pub const MAIN_COLUMNS: [Versus; 3] = [
    Versus {
        header: "cost vs floor",
        base: "floor",
        speedup: false,
    },
    Versus {
        header: "faster than fork",
        base: "fork",
        speedup: true,
    },
    Versus {
        header: "faster than memcpy",
        base: "memcpy",
        speedup: true,
    },
];

/// The table printed on stdout (Markdown, so it pastes into a README as is): each
/// row's case (where there are cases), median, min, max, then one ratio column per
/// `versus`, against `versus.base` in the same case.
pub fn table(rows: &[Row], versus: &[Versus]) -> Table {
    let mut t = Table::new();
    let cased = rows.iter().any(|r| !r.case.is_empty());
    let mut header = vec!["method", "op", "median ms", "min ms", "max ms"];
    if cased {
        header.insert(0, "case");
    }
    header.extend(versus.iter().map(|v| v.header));
    t.load_preset(presets::ASCII_MARKDOWN).set_header(header);
    for r in rows {
        let m = r.summary.median_ms;
        let mut cells = vec![];
        if cased {
            cells.push(r.case.clone());
        }
        cells.extend([
            r.method.clone(),
            r.op.to_string(),
            ms(m),
            ms(r.summary.min_ms),
            ms(r.summary.max_ms),
        ]);
        for v in versus {
            let base = median_in(rows, &r.case, v.base, r.op);
            cells.push(ratio(base.map(|b| if v.speedup { b / m } else { m / b })));
        }
        t.add_row(cells);
    }
    let first = 2 + usize::from(cased);
    for i in first..first + 3 + versus.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// A target, checked against measured medians.
#[derive(Clone, Debug)]
pub struct Target {
    /// What is asked, e.g. "uffd-wp snapshot ≤ 1.5× floor snapshot".
    pub goal: String,
    /// The measured ratio, if both sides were measured.
    pub ratio: Option<f64>,
    /// The limit the ratio must not exceed (`at_most`) or must reach.
    pub limit: f64,
    pub at_most: bool,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.ratio.map(|r| {
            if self.at_most {
                r <= self.limit
            } else {
                r >= self.limit
            }
        })
    }

    pub fn line(&self) -> String {
        let verdict = match self.met() {
            Some(true) => "met".to_string(),
            Some(false) => {
                let r = self.ratio.unwrap_or(f64::NAN);
                let off = if self.at_most {
                    r / self.limit
                } else {
                    self.limit / r
                };
                format!("NOT met ({off:.2}× off)")
            }
            None => "not measured".into(),
        };
        format!(
            "{:<48} measured {:>8}  {verdict}",
            self.goal,
            ratio(self.ratio)
        )
    }

    pub fn json(&self) -> Value {
        json!({"goal": self.goal, "ratio": self.ratio, "limit": self.limit,
               "at_most": self.at_most, "met": self.met()})
    }
}

/// A target on the ratio `num / den` of two medians.
pub fn target(
    rows: &[Row],
    goal: &str,
    num: (&str, &str),
    den: (&str, &str),
    limit: f64,
    at_most: bool,
) -> Target {
    let ratio = match (median(rows, num.0, num.1), median(rows, den.0, den.1)) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    };
    Target {
        goal: goal.to_string(),
        ratio,
        limit,
        at_most,
    }
}

/// The main benchmark's speed targets, for the rows of one case: at 1 % dirty
/// (stated for 1 GiB, 4 KiB pages) snapshot and restore within 1.5× of copying
/// exactly the dirty pages, a write + snapshot cycle 4× faster than fork's, a
/// write within 1.1× of the bare userfaultfd fault; at 100 % a snapshot within
/// 1.5× of a full memcpy; at 0.1 % within 3× of the floor. Other fractions have
/// no stated bar.
pub fn main_targets(rows: &[Row], percent: f64) -> Vec<Target> {
    let u = "uffd-wp";
    let snap = (u, "snapshot");
    if percent >= 100.0 {
        return vec![target(
            rows,
            "uffd-wp snapshot ≤ 1.5× memcpy snapshot",
            snap,
            ("memcpy", "snapshot"),
            1.5,
            true,
        )];
    }
    if percent <= 0.1 {
        return vec![target(
            rows,
            "uffd-wp snapshot ≤ 3× floor snapshot",
            snap,
            ("floor", "snapshot"),
            3.0,
            true,
        )];
    }
    if percent != 1.0 {
        return Vec::new();
    }
    vec![
        target(
            rows,
            "uffd-wp snapshot ≤ 1.5× floor snapshot",
            snap,
            ("floor", "snapshot"),
            1.5,
            true,
        ),
        target(
            rows,
            "uffd-wp restore ≤ 1.5× floor restore",
            (u, "restore"),
            ("floor", "restore"),
            1.5,
            true,
        ),
        target(
            rows,
            "uffd-wp cycle ≥ 4× faster than fork cycle",
            ("fork", "cycle"),
            (u, "cycle"),
            4.0,
            false,
        ),
        target(
            rows,
            "uffd-wp write ≤ 1.1× uffd-raw write",
            (u, "write"),
            ("uffd-raw", "write"),
            1.1,
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, op: &'static str, median_ms: f64) -> Row {
        Row {
            case: String::new(),
            method: method.into(),
            op,
            summary: Summary {
                median_ms,
                min_ms: median_ms,
                max_ms: median_ms,
            },
            samples_ms: vec![median_ms],
        }
    }

    #[test]
    fn targets_compare_medians() {
        let rows = vec![
            row("uffd-wp", "snapshot", 2.4),
            row("floor", "snapshot", 2.0),
            row("memcpy", "snapshot", 100.0),
        ];
        let t = main_targets(&rows, 1.0);
        assert_eq!((t[0].ratio, t[0].met()), (Some(1.2), Some(true)));
        assert_eq!(t[2].met(), None);
        assert!(t[2].line().contains("not measured"));
        let full = main_targets(&rows, 100.0);
        assert!((full[0].ratio.unwrap() - 0.024).abs() < 1e-9 && full[0].met() == Some(true));
        let sparse = main_targets(&rows, 0.1);
        assert_eq!(sparse[0].met(), Some(true));
        assert!(main_targets(&rows, 10.0).is_empty());
        let slow = target(
            &rows,
            "x",
            ("memcpy", "snapshot"),
            ("floor", "snapshot"),
            3.0,
            true,
        );
        assert!(slow.line().contains("NOT met"));
        let text = table(&rows, &MAIN_COLUMNS).to_string();
        assert!(text.contains("| uffd-wp") && text.contains("1.20×") && text.contains("41.7×"));
    }
}
