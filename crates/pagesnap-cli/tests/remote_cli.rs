//! `pagesnap push`, `ls` and `pull` against a `file://` remote, as a user runs
//! them: JSON shapes, deduplication, and the origin surviving the round trip.

use pagesnap::{page_size, PageStore, Region, Snapshot};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn pagesnap(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pagesnap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pagesnap {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn push_ls_pull_keep_contents_and_origin() {
    let dir = std::env::temp_dir().join(format!("pagesnap-cli-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ps = page_size();
    let mut region = Region::builder(32 * ps).build().unwrap();
    for (i, page) in region.as_mut_slice().chunks_exact_mut(ps).enumerate() {
        page[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    let snap = region.snapshot().unwrap();
    let origin = region.as_ptr() as u64;
    let file = dir.join("state.snap");
    snap.save(&file).unwrap();
    let url = format!("file://{}", dir.join("remote").display());
    let file_arg = file.to_str().unwrap();

    let first = pagesnap(&["push", file_arg, &format!("{url}/one"), "--json"]);
    assert_eq!(first["pages"], 32);
    assert_eq!(first["pages_uploaded"], 32);
    assert!(first["bytes_uploaded"].as_u64().unwrap() > 32 * ps as u64);
    let again = pagesnap(&["push", file_arg, &format!("{url}/two"), "--json"]);
    assert_eq!(again["pages_uploaded"], 0, "{again}");

    let listed = pagesnap(&["ls", &url, "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(listed[0]["origin"], origin);
    assert_eq!(listed[0]["digest"], snap.digest().to_string());

    let out = dir.join("pulled.snap");
    let pulled = pagesnap(&[
        "pull",
        &format!("{url}/two"),
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(pulled["digest"], snap.digest().to_string());
    let loaded = Snapshot::load(Path::new(&out), &PageStore::new()).unwrap();
    assert_eq!(loaded.digest(), snap.digest());
    assert_eq!(loaded.origin(), Some(origin as usize));
    std::fs::remove_dir_all(&dir).unwrap();
}
