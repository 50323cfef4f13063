//! The remote scenarios against a real S3-compatible server (moto in CI: see
//! `.ci/remote.sh`), named by `PAGESNAP_TEST_S3_ENDPOINT` (`http://127.0.0.1:PORT`).
//! Without it every test here says why it skips.
//!
//! The server is reached the way users reach S3: `s3://bucket/prefix` with
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` and credentials from the environment
//! (set here from the endpoint when missing). Objects are corrupted through plain
//! HTTP requests, as another client would.
#![cfg(feature = "remote")]

mod remote_support;

use remote_support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Once;

const ENDPOINT_ENV: &str = "PAGESNAP_TEST_S3_ENDPOINT";

#[test]
fn child_role() {
    remote_support::child_role();
}

/// The server's bucket for one test and raw access to it.
struct S3 {
    host: String,
    bucket: String,
    prefix: String,
}

impl S3 {
    /// A new bucket for `tag`, or `None` (with the reason printed) without a server.
    fn new(tag: &str) -> Option<S3> {
        let Ok(endpoint) = std::env::var(ENDPOINT_ENV) else {
            println!("skipped: {ENDPOINT_ENV} is not set (start an S3-compatible server such as `moto_server -p 5000` and set it to http://127.0.0.1:5000)");
            return None;
        };
        static ENV: Once = Once::new();
        ENV.call_once(|| {
            for (k, v) in [
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ] {
                if std::env::var_os(k).is_none() {
                    std::env::set_var(k, v);
                }
            }
        });
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let s3 = S3 {
            host,
            bucket: format!("pagesnap-{tag}-{}", std::process::id()),
            prefix: "remote/test".to_string(),
        };
        let (status, body) = s3.request("PUT", &format!("/{}", s3.bucket), &[]);
        assert!(
            status == 200,
            "creating bucket {}: {status} {}",
            s3.bucket,
            String::from_utf8_lossy(&body)
        );
        Some(s3)
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// One HTTP/1.1 request (the server checks no signature).
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(&self.host).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

impl Raw for S3 {
    fn keys(&self, prefix: &str) -> Vec<String> {
        let full = format!("{}/{prefix}", self.prefix);
        let (status, body) = self.request(
            "GET",
            &format!("/{}?list-type=2&prefix={full}", self.bucket),
            &[],
        );
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(|k| {
                k.trim_start_matches(&format!("{}/", self.prefix))
                    .to_string()
            })
            .collect()
    }
    fn get(&self, key: &str) -> Vec<u8> {
        let (status, body) = self.request(
            "GET",
            &format!("/{}/{}/{key}", self.bucket, self.prefix),
            &[],
        );
        assert_eq!(status, 200, "GET {key}");
        body
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        let (status, _) = self.request(
            "PUT",
            &format!("/{}/{}/{key}", self.bucket, self.prefix),
            bytes,
        );
        assert_eq!(status, 200, "PUT {key}");
    }
}

#[test]
fn s3_push_then_pull_in_another_process() {
    if let Some(s3) = S3::new("pull") {
        push_then_pull_elsewhere(&s3.url());
    }
}

#[test]
fn s3_dedup_across_snapshots_and_processes() {
    if let Some(s3) = S3::new("dedup") {
        dedup_across_snapshots_and_processes(&s3.url());
    }
}

#[test]
fn s3_corruption_is_detected() {
    if let Some(s3) = S3::new("corrupt") {
        corruption_is_detected(&s3.url(), &s3);
    }
}

#[test]
fn s3_killed_push_leaves_remote_consistent() {
    if let Some(s3) = S3::new("kill") {
        killed_push_leaves_remote_consistent(&s3.url(), 3);
    }
}

#[test]
fn s3_lazy_clone_matches() {
    if let Some(s3) = S3::new("lazy") {
        lazy_clone_matches(&s3.url());
    }
}

#[test]
fn s3_origin_travels_to_another_process() {
    if let Some(s3) = S3::new("origin") {
        origin_travels(&s3.url());
    }
}
