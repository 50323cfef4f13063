//! Results: rows of method × op, the stdout table, the targets, JSON rows.

use super::stats::Summary;
use comfy_table::{presets, CellAlignment, Table};
use serde_json::{json, Value};

/// One method × op.
#[derive(Clone, Debug)]
pub struct Row {
    pub method: String,
    pub op: &'static str,
    pub summary: Summary,
    /// Every timed sample in round order, in milliseconds.
    pub samples_ms: Vec<f64>,
}

impl Row {
    pub fn json(&self) -> Value {
        json!({
            "method": self.method,
            "op": self.op,
            "median_ms": self.summary.median_ms,
            "min_ms": self.summary.min_ms,
            "max_ms": self.summary.max_ms,
            "samples_ms": self.samples_ms,
        })
    }
}

/// The median of `method` × `op`, if measured.
pub fn median(rows: &[Row], method: &str, op: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.method == method && r.op == op)
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
/// row's median, min, max, then one ratio column per `versus`.
pub fn table(rows: &[Row], versus: &[Versus]) -> Table {
    let mut t = Table::new();
    let mut header = vec!["method", "op", "median ms", "min ms", "max ms"];
    header.extend(versus.iter().map(|v| v.header));
    t.load_preset(presets::ASCII_MARKDOWN).set_header(header);
    for r in rows {
        let m = r.summary.median_ms;
        let mut cells = vec![
            r.method.clone(),
            r.op.to_string(),
            ms(m),
            ms(r.summary.min_ms),
            ms(r.summary.max_ms),
        ];
        for v in versus {
            let base = median(rows, v.base, r.op);
            cells.push(ratio(base.map(|b| if v.speedup { b / m } else { m / b })));
        }
        t.add_row(cells);
    }
    for i in 2..5 + versus.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// One of issue 4's targets, checked against measured medians.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the issue asks, e.g. "uffd-wp snapshot ≤ 3× floor snapshot".
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

/// Issue 4's speed targets for the main benchmark (stated for 1 GiB, 1 %, 4 KiB).
pub fn main_targets(rows: &[Row]) -> Vec<Target> {
    let u = "uffd-wp";
    vec![
        target(
            rows,
            "uffd-wp snapshot ≤ 3× floor snapshot",
            (u, "snapshot"),
            ("floor", "snapshot"),
            3.0,
            true,
        ),
        target(
            rows,
            "uffd-wp snapshot ≥ 20× faster than memcpy",
            ("memcpy", "snapshot"),
            (u, "snapshot"),
            20.0,
            false,
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
            "uffd-wp restore ≤ 3× floor restore",
            (u, "restore"),
            ("floor", "restore"),
            3.0,
            true,
        ),
        target(
            rows,
            "uffd-wp write ≤ 1.2× uffd-raw write",
            (u, "write"),
            ("uffd-raw", "write"),
            1.2,
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, op: &'static str, median_ms: f64) -> Row {
        Row {
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
            row("uffd-wp", "snapshot", 4.0),
            row("floor", "snapshot", 2.0),
            row("memcpy", "snapshot", 100.0),
        ];
        let t = main_targets(&rows);
        assert_eq!((t[0].ratio, t[0].met()), (Some(2.0), Some(true)));
        assert_eq!((t[1].ratio, t[1].met()), (Some(25.0), Some(true)));
        assert_eq!(t[2].met(), None);
        assert!(t[2].line().contains("not measured"));
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
        assert!(text.contains("| uffd-wp") && text.contains("2.00×") && text.contains("25.0×"));
    }
}
