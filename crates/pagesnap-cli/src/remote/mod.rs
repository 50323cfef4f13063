//! `pagesnap push`, `pagesnap pull`, `pagesnap ls`: snapshot files to and from
//! object storage (`file:///dir`, `s3://bucket/prefix`, `gs://…`, `az://…`).

mod target;

use crate::CmdResult;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagesnap::remote::{Remote, Transfer};
use pagesnap::{PageStore, Snapshot};
use std::path::PathBuf;
use std::process::ExitCode;
use target::Target;

/// `pagesnap push FILE URL/NAME [--json]`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The snapshot file to upload (a full snapshot).
    file: PathBuf,
    /// Where to: the remote's URL, a slash, and the snapshot's name
    /// (`s3://bucket/prefix/NAME`, `file:///dir/NAME`).
    target: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `pagesnap pull URL/NAME FILE [--json]`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The remote snapshot: the remote's URL, a slash, and the snapshot's name.
    source: String,
    /// The snapshot file to write (replaced atomically).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `pagesnap ls URL [--json]`.
#[derive(clap::Args)]
pub struct LsArgs {
    /// The remote's URL (`s3://bucket/prefix`, `file:///dir`, …).
    url: String,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// Bars appear for transfers above this many bytes, on a terminal only.
const BAR_FROM: u64 = 8 << 20;

fn bar(json: bool, what: &'static str) -> impl FnMut(Transfer) {
    let mut pb: Option<ProgressBar> = None;
    move |t: Transfer| {
        if json || t.total < BAR_FROM {
            return;
        }
        let pb = pb.get_or_insert_with(|| {
            let pb = ProgressBar::with_draw_target(Some(t.total), ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            pb.set_prefix(what);
            pb
        });
        pb.set_position(t.bytes);
        if t.bytes >= t.total {
            pb.finish_and_clear();
        }
    }
}

/// Uploads a snapshot file's pages the remote lacks, then its manifest.
pub fn push(args: PushArgs) -> CmdResult {
    let target = Target::parse(&args.target)?;
    let snap = Snapshot::load(&args.file, &PageStore::new())?;
    let remote = Remote::open(&target.url)?;
    let r = remote.push_with_progress(&snap, &target.name, bar(args.json, "push"))?;
    if args.json {
        // Exactly this shape, keys in this order.
        println!(
            r#"{{"pages":{},"pages_uploaded":{},"bytes_uploaded":{}}}"#,
            r.pages, r.pages_uploaded, r.bytes_uploaded
        );
    } else {
        println!(
            "pushed {} as {:?} to {}: {} non-zero pages, {} uploaded ({} bytes), digest {}",
            args.file.display(),
            target.name,
            target.url,
            r.pages,
            r.pages_uploaded,
            r.bytes_uploaded,
            snap.digest()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads a snapshot (every page and the digest checked) into a file.
pub fn pull(args: PullArgs) -> CmdResult {
    let source = Target::parse(&args.source)?;
    let remote = Remote::open(&source.url)?;
    let snap =
        remote.pull_with_progress(&source.name, &PageStore::new(), bar(args.json, "pull"))?;
    snap.save(&args.file)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": source.name,
                "file": args.file.display().to_string(),
                "len": snap.len(),
                "pages": snap.nonzero_pages(),
                "digest": snap.digest().to_string(),
            })
        );
    } else {
        println!(
            "pulled {:?} from {} into {}: {} bytes, {} non-zero pages, digest {} (checked)",
            source.name,
            source.url,
            args.file.display(),
            snap.len(),
            snap.nonzero_pages(),
            snap.digest()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists the snapshots of a remote.
pub fn ls(args: LsArgs) -> CmdResult {
    let remote = Remote::open(&args.url)?;
    let list = remote.list()?;
    if args.json {
        let items: Vec<_> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "len": s.len,
                    "pages": s.pages,
                    "digest": s.digest.to_string(),
                    "manifest_bytes": s.manifest_bytes,
                    "origin": s.origin,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no snapshots in {}", args.url);
    }
    for s in &list {
        println!(
            "{:<32} {:>12} bytes {:>10} pages  {}",
            s.name, s.len, s.pages, s.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
