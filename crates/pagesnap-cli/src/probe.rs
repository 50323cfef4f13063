//! `pagesnap probe [--json]`.

use crate::CmdResult;
use pagesnap::{probe, Tracking, UffdAccess};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> CmdResult {
    let caps = probe();
    let chosen = pagesnap::Region::builder(pagesnap::page_size())
        .build()
        .map(|r| r.tracking());
    let uffd = match &caps.userfaultfd {
        Ok(UffdAccess::UserModeOnly) => {
            "yes (userfaultfd(2) with UFFD_USER_MODE_ONLY: works unprivileged)".to_string()
        }
        Ok(UffdAccess::Device) => "yes (through /dev/userfaultfd)".to_string(),
        Ok(_) => "yes".to_string(),
        Err(e) => format!("no: {e}"),
    };
    let env = std::env::var("PAGESNAP_TRACKING").ok();
    let bugs: Vec<_> = caps
        .known_bugs
        .iter()
        .map(|b| json!({"name": b.name, "summary": b.summary, "auto_avoids": b.auto_avoids.map(|t| t.name()), "consequence": b.consequence}))
        .collect();
    if args.json {
        let backends: Vec<_> = caps
            .backends
            .iter()
            .map(|b| json!({"tracking": b.tracking.name(), "available": b.available, "reason": b.reason}))
            .collect();
        let doc = json!({
            "kernel": caps.kernel,
            "kernel_version": caps.kernel_version.map(|v| v.to_string()),
            "known_bugs": bugs,
            "page_size": caps.page_size,
            "userfaultfd": caps.userfaultfd.is_ok(),
            "userfaultfd_user_mode_only": matches!(caps.userfaultfd, Ok(UffdAccess::UserModeOnly)),
            "userfaultfd_error": caps.userfaultfd.as_ref().err(),
            "wp_async": caps.wp_async,
            "wp_unpopulated": caps.wp_unpopulated,
            "pagemap_scan": caps.pagemap_scan,
            "soft_dirty": caps.soft_dirty,
            "procmap_query": caps.procmap_query,
            "thp": caps.thp,
            "ksm": caps.ksm,
            "backends": backends,
            "auto": caps.auto.name(),
            "pagesnap_tracking_env": env,
            "in_use": chosen.as_ref().ok().map(|t| t.name()),
            "in_use_error": chosen.as_ref().err().map(|e| pagesnap::error::chain(e)),
            "kernel_writes": chosen.as_ref().ok().map(|&t| json!({
                "converging_snapshot": kernel_writes(t, true).0,
                "background_snapshot": kernel_writes(t, false).0,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("kernel            {}", caps.kernel);
    let pretended = std::env::var("PAGESNAP_KERNEL_VERSION").is_ok();
    match caps.kernel_version {
        Some(v) if pretended => println!("  judged as       {v} (PAGESNAP_KERNEL_VERSION)"),
        Some(v) => println!("  built from      {v}"),
        None => println!("  built from      unknown (known kernel bugs not checked)"),
    }
    println!("page size         {} bytes", caps.page_size);
    println!("userfaultfd       {uffd}");
    println!("  WP_ASYNC        {}", yn(caps.wp_async));
    println!("  WP_UNPOPULATED  {}", yn(caps.wp_unpopulated));
    println!("PAGEMAP_SCAN      {}", yn(caps.pagemap_scan));
    println!("soft-dirty        {}", yn(caps.soft_dirty));
    println!(
        "PROCMAP_QUERY     {}",
        if caps.procmap_query {
            "yes (snapshot, restore and verify also refuse pages the program protected or unmapped)"
        } else {
            "no (only background and converging snapshots refuse pages the program protected or unmapped)"
        }
    );
    println!(
        "THP               {}",
        caps.thp.as_deref().unwrap_or("unknown")
    );
    println!(
        "KSM               {}",
        match caps.ksm {
            Some(true) => "running",
            Some(false) => "present, not running",
            None => "absent",
        }
    );
    println!();
    println!("backends, best first:");
    for b in &caps.backends {
        let mark = if b.tracking == caps.auto { "→" } else { " " };
        if b.available {
            println!(" {mark} {:<11} available", b.tracking.name());
        } else {
            println!(
                " {mark} {:<11} unavailable: {}",
                b.tracking.name(),
                b.reason
            );
        }
    }
    if !caps.known_bugs.is_empty() {
        println!();
        println!("known kernel bugs in this version:");
        for b in &caps.known_bugs {
            println!("  {}: {}", b.name, b.summary);
            println!("    {}", b.consequence);
        }
    }
    println!();
    println!("Tracking::Auto picks {}", caps.auto);
    match (&env, &chosen) {
        (Some(v), Ok(t)) => println!("PAGESNAP_TRACKING={v} overrides it: regions use {t}"),
        (Some(v), Err(e)) => println!("PAGESNAP_TRACKING={v}: {}", pagesnap::error::chain(e)),
        (None, Err(e)) => println!("but building a region fails: {}", pagesnap::error::chain(e)),
        (None, Ok(_)) => {}
    }
    let uffd_available = caps.backend(Tracking::UffdWp).is_some_and(|b| b.available);
    if caps.auto != Tracking::UffdWp && uffd_available {
        println!("(uffd-wp works here, but a known bug of this kernel rules it out for Auto)");
    } else if caps.auto != Tracking::UffdWp {
        println!("(uffd-wp is the fastest backend; see the reason above for why it is out)");
    }
    if let Ok(t) = chosen {
        println!();
        println!("kernel-mode writes (read(2), recv(2) into a region) with {t}:");
        for (name, converging) in [
            ("converging_snapshot", true),
            ("background_snapshot", false),
        ] {
            println!("  during {name:<20} {}", kernel_writes(t, converging).1);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether kernel-mode writes into a region succeed during a background
/// snapshot of each mode under backend `t` (as the tests assert): a short
/// word and the sentence that explains it.
fn kernel_writes(t: Tracking, converging: bool) -> (&'static str, &'static str) {
    match (t, converging) {
        (Tracking::Mprotect, _) => (
            "fail",
            "fail with EFAULT (mprotect tracking keeps pages read-only; read into a buffer outside the region)",
        ),
        (_, true) => ("succeed", "succeed (nothing is protected; the safe default for such programs)"),
        (_, false) => (
            "may-fail",
            "may fail with EFAULT into a part not yet copied (the data stays unread; retry, or use converging_snapshot)",
        ),
    }
}
