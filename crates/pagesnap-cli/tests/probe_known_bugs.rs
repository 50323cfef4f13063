//! `pagesnap probe` judges known kernel bugs by version: `PAGESNAP_KERNEL_VERSION`
//! pretends one, so Auto's decision is forced on any machine.

use std::process::Command;

fn probe_json(version: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
        .args(["probe", "--json"])
        .env("PAGESNAP_KERNEL_VERSION", version)
        .env_remove("PAGESNAP_TRACKING")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn best_available(doc: &serde_json::Value) -> Vec<String> {
    doc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["available"] == true)
        .map(|b| b["tracking"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_kernel_that_loses_dirty_bits_in_scans_keeps_auto_off_uffd_wp() {
    let doc = probe_json("6.8.5");
    assert_eq!(doc["kernel_version"], "6.8.5");
    let bugs = doc["known_bugs"].as_array().unwrap();
    assert!(bugs
        .iter()
        .any(|b| b["name"] == "CVE-2024-36943" && b["auto_avoids"] == "uffd-wp"));
    assert_ne!(doc["auto"], "uffd-wp");
    // Auto takes the best of the rest; uffd-wp itself stays available to ask for.
    let rest: Vec<String> = best_available(&doc)
        .into_iter()
        .filter(|t| t != "uffd-wp")
        .collect();
    assert_eq!(doc["auto"], rest[0].as_str());

    let text = Command::new(env!("CARGO_BIN_EXE_pagesnap"))
        .arg("probe")
        .env("PAGESNAP_KERNEL_VERSION", "6.8.5")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("judged as       6.8.5"), "{text}");
    assert!(text.contains("CVE-2024-36943"), "{text}");
}

#[test]
fn a_fixed_kernel_gets_the_best_backend() {
    for version in ["6.8.10", "6.12.117", "7.2.0"] {
        let doc = probe_json(version);
        assert_eq!(doc["auto"], best_available(&doc)[0].as_str(), "{version}");
        assert!(doc["known_bugs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["auto_avoids"].is_null()));
    }
    // The written-state bugs are named, with why pagesnap is unaffected.
    let doc = probe_json("6.12.117");
    let text = doc["known_bugs"].to_string();
    assert!(
        text.contains("07b4377bdbe7") && text.contains("PAGE_IS_WRITTEN"),
        "{text}"
    );
}
