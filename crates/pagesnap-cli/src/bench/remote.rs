//! `pagesnap bench remote`: snapshots in object storage.
//!
//! ```text
//!  push full     a snapshot of --size, every page distinct        (all pages go up)
//!  push changed  the same with --change of its pages rewritten    (only those go up)
//!  pull          the changed snapshot into an empty store         (every page checked)
//!  download      baseline: copy its snapshot file out of the remote folder + load it
//!  lazy          instantiate + first page usable; then touch --touch of the pages
//!  eager         pull everything first, instantiate, touch the same pages
//! ```
//! Lazy and eager open the remote afresh, as another host would (pack indexes
//! read again, runtime started).
//! The remote is a fresh folder (`file://`) unless `--url` names another; the
//! download baseline needs a folder, so it is measured for `file://` remotes only.
//! One run per figure: each moves the whole snapshot.

use super::args::{JsonArg, SeedArg};
use super::dataset::{fill_page, Rng};
use super::report::{ms, Target};
use super::units::{human_bytes, ByteSize, Percent};
use crate::CmdResult;
use comfy_table::{presets, Table};
use pagesnap::remote::Remote;
use pagesnap::{PageStore, Region, Snapshot};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Options of `pagesnap bench remote`.
#[derive(clap::Args, Debug)]
pub struct RemoteArgs {
    /// Snapshot size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Share of the pages rewritten between the two pushes.
    #[arg(long, default_value = "1%")]
    change: Percent,
    /// Share of the pages a clone touches.
    #[arg(long, default_value = "1%")]
    touch: Percent,
    /// The remote (default: a fresh folder under the temp dir, removed after).
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Reads one word of each page in `pages` (a clone's first use of them).
#[inline(never)]
fn touch(mem: &[u8], pages: &[usize], page: usize) -> u64 {
    pages.iter().fold(0u64, |sum, &p| {
        let word: [u8; 8] = mem[p * page..p * page + 8].try_into().expect("8 bytes");
        sum.wrapping_add(u64::from_ne_bytes(std::hint::black_box(word)))
    })
}

pub fn run(args: RemoteArgs) -> CmdResult {
    let page = pagesnap::page_size();
    let seed = args.seed.get();
    let tag = format!("{}-{seed}", std::process::id());
    let folder = std::env::temp_dir().join(format!("pagesnap-bench-remote-{tag}"));
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("file://{}", folder.display()));
    let remote_dir = url.strip_prefix("file://").map(PathBuf::from);
    let remote = Remote::open(&url)?;

    let mut region = Region::builder(args.size.0).build()?;
    let npages = region.len() / page;
    let changed = args.change.of(npages);
    let touched = args.touch.of(npages).max(1);
    println!(
        "pagesnap bench remote: {} snapshot, {changed} pages ({}) changed, {touched} pages ({}) touched, remote {url}, seed {seed}",
        human_bytes(region.len() as u64),
        args.change,
        args.touch
    );
    for (i, p) in region.as_mut_slice().chunks_exact_mut(page).enumerate() {
        fill_page(i, p);
    }
    let full = region.snapshot()?;
    let mut rng = Rng::new(seed);
    for p in rng.choose(npages, changed) {
        region.as_mut_slice()[p * page..p * page + 8]
            .copy_from_slice(&(seed ^ p as u64).to_ne_bytes());
    }
    let second = region.snapshot()?;
    drop(region);
    let (full_name, second_name) = (format!("full-{tag}"), format!("changed-{tag}"));

    let t = Instant::now();
    let push_full = remote.push(&full, &full_name)?;
    let push_full_ms = secs(t);
    let t = Instant::now();
    let push_second = remote.push(&second, &second_name)?;
    let push_second_ms = secs(t);
    let manifest = remote
        .list()?
        .into_iter()
        .find(|s| s.name == second_name)
        .map_or(0, |s| s.manifest_bytes);
    let changed_bytes = (changed * page) as u64;
    let upload_ratio = (push_second.bytes_uploaded - manifest.min(push_second.bytes_uploaded))
        as f64
        / changed_bytes.max(1) as f64;

    let t = Instant::now();
    let pulled = remote.pull(&second_name, &PageStore::new())?;
    let pull_ms = secs(t);
    let digest_equal = pulled.digest() == second.digest();
    drop(pulled);

    // Baseline: the snapshot as one file in the remote folder, copied out and loaded.
    let download_ms = match &remote_dir {
        Some(dir) => {
            let stored = dir.join(format!("plain-{tag}.pagesnap"));
            second.save(&stored)?;
            let local = std::env::temp_dir().join(format!("pagesnap-bench-download-{tag}"));
            let t = Instant::now();
            std::fs::copy(&stored, &local)?;
            let loaded = Snapshot::load(&local, &PageStore::new())?;
            let ms = secs(t);
            drop(loaded);
            let _ = std::fs::remove_file(&local);
            Some(ms)
        }
        None => None,
    };
    drop(full);
    drop(second);

    let pages = rng.choose(npages, touched);
    // Lazy and eager each start from a fresh handle, as on another host: the
    // pack indexes are read again.
    let t = Instant::now();
    let clone = Remote::open(&url)?.instantiate(&second_name)?;
    let first = pages[0];
    std::hint::black_box(touch(clone.as_slice(), &[first], page));
    let lazy_first_ms = secs(t);
    std::hint::black_box(touch(clone.as_slice(), &pages, page));
    let lazy_total_ms = secs(t);
    let lazy_stats = clone.stats();
    if let Some(why) = clone.fallback() {
        println!("  note: {why}");
    }
    drop(clone);

    let t = Instant::now();
    let snap = Remote::open(&url)?.pull(&second_name, &PageStore::new())?;
    let eager = snap.instantiate()?;
    let eager_first_ms = secs(t);
    std::hint::black_box(touch(eager.as_slice(), &pages, page));
    let eager_total_ms = secs(t);
    drop(eager);
    drop(snap);
    if args.url.is_none() {
        let _ = std::fs::remove_dir_all(&folder);
    }

    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN)
        .set_header(vec!["step", "ms", "moved", "note"]);
    t.add_row(vec![
        "push full".into(),
        ms(push_full_ms),
        human_bytes(push_full.bytes_uploaded),
        format!(
            "{} of {} pages uploaded",
            push_full.pages_uploaded, push_full.pages
        ),
    ]);
    t.add_row(vec![
        format!("push {} changed", args.change),
        ms(push_second_ms),
        human_bytes(push_second.bytes_uploaded),
        format!(
            "{} pages uploaded; {} manifest; {:.3}× the changed pages' bytes",
            push_second.pages_uploaded,
            human_bytes(manifest),
            upload_ratio
        ),
    ]);
    t.add_row(vec![
        "pull".into(),
        ms(pull_ms),
        human_bytes((npages * page) as u64),
        format!("digest equal: {digest_equal}"),
    ]);
    if let Some(d) = download_ms {
        t.add_row(vec![
            "download file + load".into(),
            ms(d),
            "".into(),
            "baseline".into(),
        ]);
    }
    t.add_row(vec![
        "lazy: first page usable".into(),
        ms(lazy_first_ms),
        "".into(),
        "instantiate + one read".into(),
    ]);
    t.add_row(vec![
        format!("lazy: touch {}", args.touch),
        ms(lazy_total_ms),
        human_bytes(lazy_stats.bytes_fetched),
        format!(
            "{} requests, {} pages in",
            lazy_stats.requests, lazy_stats.pages
        ),
    ]);
    t.add_row(vec![
        "eager: pull + instantiate".into(),
        ms(eager_first_ms),
        "".into(),
        "first page usable".into(),
    ]);
    t.add_row(vec![
        format!("eager: touch {}", args.touch),
        ms(eager_total_ms),
        "".into(),
        "".into(),
    ]);
    println!("{t}");
    let targets = [
        Target {
            goal: "2nd push ≤ 1.1× changed bytes (+manifest)".into(),
            ratio: Some(upload_ratio),
            limit: 1.1,
            at_most: true,
        },
        Target {
            goal: "pulled digest equals pushed".into(),
            ratio: Some(if digest_equal { 1.0 } else { 0.0 }),
            limit: 1.0,
            at_most: false,
        },
        Target {
            goal: "lazy first page ≥ 10× sooner than full pull".into(),
            ratio: Some(eager_first_ms / lazy_first_ms),
            limit: 10.0,
            at_most: false,
        },
    ];
    for target in &targets {
        println!("  {}", target.line());
    }
    println!(
        "  lazy touch {} vs pull-everything-first: {:.1}× sooner",
        args.touch,
        eager_total_ms / lazy_total_ms
    );
    if args.json.path().is_some() {
        let out = json!({
            "size": npages * page, "changed_pages": changed, "touched_pages": touched, "url": url, "seed": seed,
            "push_full": {"ms": push_full_ms, "pages": push_full.pages, "pages_uploaded": push_full.pages_uploaded, "bytes_uploaded": push_full.bytes_uploaded},
            "push_changed": {"ms": push_second_ms, "pages": push_second.pages, "pages_uploaded": push_second.pages_uploaded, "bytes_uploaded": push_second.bytes_uploaded, "manifest_bytes": manifest, "changed_bytes": changed_bytes},
            "pull_ms": pull_ms, "download_ms": download_ms, "digest_equal": digest_equal,
            "lazy": {"first_page_ms": lazy_first_ms, "touch_ms": lazy_total_ms, "bytes_fetched": lazy_stats.bytes_fetched, "requests": lazy_stats.requests},
            "eager": {"first_page_ms": eager_first_ms, "touch_ms": eager_total_ms},
            "targets": targets.iter().map(Target::json).collect::<Vec<_>>(),
        });
        args.json.write(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}
