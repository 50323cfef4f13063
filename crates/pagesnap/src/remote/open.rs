//! Turning a URL into an object store: `file:///dir`, `memory://`,
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
//!
//! Cloud credentials and endpoints come from the environment, as each provider's
//! own tools read them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …; `GOOGLE_SERVICE_ACCOUNT`, …;
//! `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ….

use super::error::RemoteError;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::sync::{Arc, Once};

/// The store a URL names, with its prefix applied.
pub(super) fn store_for(url: &str) -> Result<Arc<dyn ObjectStore>, RemoteError> {
    let bad = |reason: &str| RemoteError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let opened = |source| RemoteError::Open {
        url: url.to_string(),
        source,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected SCHEME://…, one of file, s3, gs, az, memory"));
    };
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (rest, ""),
    };
    let with_prefix = |store: Arc<dyn ObjectStore>| -> Arc<dyn ObjectStore> {
        if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        }
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(bad("a file URL needs an absolute path: file:///dir"));
            }
            std::fs::create_dir_all(rest)
                .map_err(|e| bad(&format!("cannot create {rest}: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(rest).map_err(opened)?;
            Ok(Arc::new(fs))
        }
        "memory" => Ok(Arc::new(InMemory::new())),
        "s3" | "gs" | "az" if bucket.is_empty() => {
            Err(bad("the bucket (or container) name is missing"))
        }
        "s3" => {
            install_tls_provider();
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(opened)?;
            Ok(with_prefix(Arc::new(s3)))
        }
        "gs" => {
            install_tls_provider();
            let gcs = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(opened)?;
            Ok(with_prefix(Arc::new(gcs)))
        }
        "az" => {
            install_tls_provider();
            let az = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .map_err(opened)?;
            Ok(with_prefix(Arc::new(az)))
        }
        _ => Err(bad("unknown scheme; use file, s3, gs, az or memory")),
    }
}

/// The TLS stack is rustls with the `ring` provider (no C toolchain beyond ring's),
/// installed once per process unless the application installed one already.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
