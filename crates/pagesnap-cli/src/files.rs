//! `pagesnap inspect` and `pagesnap verify`: describe and check snapshot files.

use crate::CmdResult;
use pagesnap::file::FileInfo;
use pagesnap::{FileKind, PageStore, Snapshot};
use std::path::PathBuf;
use std::process::ExitCode;

/// `pagesnap inspect FILE [--json]`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The snapshot file.
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `pagesnap verify FILE [--parent FILE]`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The snapshot file.
    file: PathBuf,
    /// For a delta: the full file it was saved against, so the digest is checked too.
    #[arg(long)]
    parent: Option<PathBuf>,
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn json(path: &std::path::Path, i: &FileInfo) -> serde_json::Value {
    serde_json::json!({
        "file": path.display().to_string(),
        "version": i.version,
        "kind": i.kind.to_string(),
        "page_size": i.page_size,
        "region_bytes": i.len,
        "pages": i.pages,
        "runs": i.runs,
        "listed_pages": i.listed_pages,
        "zero_pages": i.zero_pages,
        "stored_pages": i.stored_pages,
        "compressed_pages": i.compressed_pages,
        "stored_bytes": i.stored_bytes,
        "file_bytes": i.file_bytes,
        "compression_ratio": i.compression_ratio(),
        "parent_digest": i.parent.map(|d| d.to_string()),
        "digest": i.digest.to_string(),
    })
}

/// Header, page counts, compression and digests of a file (every block checked).
pub fn inspect(args: InspectArgs) -> CmdResult {
    let i = pagesnap::file::inspect(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&args.file, &i))?);
        return Ok(ExitCode::SUCCESS);
    }
    let listed = match i.kind {
        FileKind::Full => "non-zero pages",
        FileKind::Delta => "changed pages",
    };
    println!("file           {}", args.file.display());
    println!(
        "format         pagesnap v{}, {} snapshot",
        i.version, i.kind
    );
    println!("page size      {} bytes", i.page_size);
    println!("region         {} ({} pages)", mib(i.len), i.pages);
    println!(
        "page table     {} runs; {} {listed} ({} of them zero)",
        i.runs, i.listed_pages, i.zero_pages
    );
    println!(
        "stored pages   {} distinct, {} lz4-compressed; {} stored for {} of pages (ratio {:.2})",
        i.stored_pages,
        i.compressed_pages,
        mib(i.stored_bytes),
        mib(i.stored_pages.saturating_mul(u64::from(i.page_size))),
        i.compression_ratio()
    );
    println!(
        "file size      {} ({} bytes)",
        mib(i.file_bytes),
        i.file_bytes
    );
    if let Some(p) = i.parent {
        println!("parent digest  {p}");
    }
    println!("digest         {}", i.digest);
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when the file is whole, 1 with a one-line reason when not.
pub fn verify(args: VerifyArgs) -> CmdResult {
    let result = match &args.parent {
        None => pagesnap::file::verify(&args.file).map(|i| {
            if i.digest_checked {
                format!("digest {} verified", i.digest)
            } else {
                format!(
                    "every block checked; the digest of a delta needs its parent (--parent FILE), parent digest {}",
                    i.parent.map(|d| d.to_string()).unwrap_or_default()
                )
            }
        }),
        Some(parent) => Snapshot::load(parent, &PageStore::new())
            .and_then(|p| Snapshot::load_delta(&args.file, &p))
            .map(|s| format!("delta on its parent: digest {} verified", s.digest())),
    };
    match result {
        Ok(what) => {
            println!("ok: {}: {what}", args.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("invalid: {}", pagesnap::error::chain(&e));
            Ok(ExitCode::from(1))
        }
    }
}
