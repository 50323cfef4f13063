//! `pagesnap bench` at tiny sizes: the commands run and their JSON has the promised
//! shape. Timings are not checked beyond being positive: figures come from real
//! benchmark runs, never from tests.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn pagesnap(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
        .args(args)
        .output()
        .expect("run pagesnap");
    assert!(
        out.status.success(),
        "pagesnap {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A path in the temp dir unique to this test process.
fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "pagesnap-bench-smoke-{}-{name}",
        std::process::id()
    ))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("the JSON file was written");
    std::fs::remove_file(path).ok();
    serde_json::from_str(&text).expect("valid JSON")
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x > 0.0, "{what} is not positive: {x}");
    x
}

#[test]
fn main_bench_reports_every_method_and_op() {
    let (json, svg) = (temp("main.json"), temp("main.svg"));
    let out = pagesnap(&[
        "bench",
        "--size",
        "8MiB",
        "--rounds",
        "2",
        "--seed",
        "42",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("seed 42"), "the seed is printed: {stdout}");
    assert!(stdout.contains("| method"), "a table is printed: {stdout}");

    let plot = std::fs::read_to_string(&svg).expect("the SVG was written");
    std::fs::remove_file(&svg).ok();
    assert!(plot.starts_with("<svg") && plot.contains("snapshot"));

    let doc = read_json(&json);
    assert_eq!(doc["size_bytes"], 8 << 20);
    let page = doc["page_size"].as_u64().unwrap();
    assert_eq!(doc["dirty_pages"], (8 << 20) / page / 100);
    assert_eq!(doc["rounds"], 2);
    assert_eq!(doc["huge_pages"], false);
    assert!(!doc["kernel"].as_str().unwrap().is_empty());

    let skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    let all = ["write", "snapshot", "restore", "cycle"];
    let mut expected: Vec<(&str, &[&str])> = Vec::new();
    for backend in ["uffd-wp", "soft-dirty", "mprotect", "compare"] {
        if !skipped.contains(&backend) {
            expected.push((backend, &all));
        }
    }
    assert!(
        !skipped.contains(&"mprotect") && !skipped.contains(&"compare"),
        "mprotect and compare work everywhere: {skipped:?}"
    );
    if !skipped.contains(&"uffd-wp") && !skipped.contains(&"uffd-raw") {
        expected.push(("uffd-raw", &["write"]));
    }
    expected.push(("floor", &all));
    expected.push(("memcpy", &all));
    expected.push(("fork", &["write", "snapshot", "cycle"]));

    let results = doc["results"].as_array().unwrap();
    let rows: usize = expected.iter().map(|(_, ops)| ops.len()).sum();
    assert_eq!(results.len(), rows, "one row per method × op: {results:#?}");
    for (method, ops) in expected {
        for op in ops {
            let row = results
                .iter()
                .find(|r| r["method"] == method && r["op"] == *op)
                .unwrap_or_else(|| panic!("no row for {method} {op}"));
            let what = format!("{method} {op}");
            let min = positive(&row["min_ms"], &what);
            let median = positive(&row["median_ms"], &what);
            let max = positive(&row["max_ms"], &what);
            assert!(min <= median && median <= max, "{what}: {row}");
        }
    }
}

#[test]
fn memory_bench_reports_store_figures() {
    let json = temp("memory.json");
    pagesnap(&[
        "bench",
        "memory",
        "--size",
        "4MiB",
        "--snapshots",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    let doc = read_json(&json);
    let page = positive(&doc["page_size"], "page_size");
    let unique = positive(&doc["unique_pages"], "unique_pages");
    positive(&doc["metadata_bytes"], "metadata_bytes");
    assert_eq!(doc["stored_bytes"].as_f64().unwrap(), unique * page);
    // 5 snapshots of 1 % of the pages each (10 of 1024 with 4 KiB pages), every
    // written page's contents unique.
    let k = ((4u64 << 20) as f64 / page / 100.0).floor().max(1.0);
    assert_eq!(doc["dirty_bytes_total"].as_f64().unwrap(), 5.0 * k * page);
    assert_eq!(unique, 5.0 * k);
}

#[test]
fn scale_bench_reports_sparse_and_dense() {
    let json = temp("scale.json");
    pagesnap(&[
        "bench",
        "scale",
        "--reserve",
        "64MiB",
        "--use",
        "8MiB",
        "--rounds",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let doc = read_json(&json);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for method in ["sparse", "dense"] {
        let row = results
            .iter()
            .find(|r| r["method"] == method && r["op"] == "snapshot")
            .unwrap_or_else(|| panic!("no {method} row: {results:?}"));
        positive(&row["median_ms"], method);
    }
}

#[test]
fn bad_sizes_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
        .args(["bench", "--size", "1parsec"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("size"));
}

/// `bench bgsave` runs every method on both kinds of data, any writer count, and
/// every pagesnap row is verified.
#[test]
fn bgsave_runs_every_method_verified() {
    for (data, writers) in [("distinct", "3"), ("seed", "1")] {
        let json = temp(&format!("bgsave-{data}.json"));
        pagesnap(&[
            "bench",
            "bgsave",
            "--size",
            "6MiB",
            "--rounds",
            "1",
            "--writers",
            writers,
            "--data",
            data,
            "--json",
            json.to_str().unwrap(),
        ]);
        let doc = read_json(&json);
        assert_eq!(doc["data"], data);
        let rows = doc["results"].as_array().expect("results");
        let methods: Vec<&str> = rows.iter().filter_map(|r| r["method"].as_str()).collect();
        assert_eq!(
            methods,
            [
                "none",
                "fork",
                "pagesnap",
                "pagesnap-save",
                "pagesnap-converge",
                "pagesnap-converge-save"
            ]
        );
        for r in rows {
            positive(&r["writers_ms"], "writers_ms");
            positive(&r["complete_ms"], "complete_ms");
            assert!(r["pause_ms"].as_f64().is_some() && r["extra_rss_mb"].as_f64().is_some());
            if r["method"].as_str().unwrap().starts_with("pagesnap") {
                assert_eq!(r["verified"], true, "{data}: {r}");
            }
        }
    }
}
