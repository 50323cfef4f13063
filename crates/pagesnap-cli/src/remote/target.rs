//! `URL/NAME` arguments: a remote's URL and a snapshot name, split at the last `/`.

use std::fmt;

/// A remote snapshot named on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub name: String,
}

/// An argument that is not `SCHEME://…/NAME`.
#[derive(Debug)]
pub struct BadTarget(String);

impl fmt::Display for BadTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not URL/NAME (for example s3://bucket/prefix/NAME or file:///dir/NAME)",
            self.0
        )
    }
}

impl std::error::Error for BadTarget {}

impl Target {
    pub fn parse(arg: &str) -> Result<Target, BadTarget> {
        let bad = || BadTarget(arg.to_string());
        let (scheme, rest) = arg.split_once("://").ok_or_else(bad)?;
        let (path, name) = rest
            .trim_end_matches('/')
            .rsplit_once('/')
            .ok_or_else(bad)?;
        if name.is_empty() || (scheme == "file" && path.is_empty() && !rest.starts_with('/')) {
            return Err(bad());
        }
        let path = if scheme == "file" && path.is_empty() {
            "/"
        } else {
            path
        };
        Ok(Target {
            url: format!("{scheme}://{path}"),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_slash() {
        let t = Target::parse("s3://bucket/a/b/snap-1").unwrap();
        assert_eq!(
            (t.url.as_str(), t.name.as_str()),
            ("s3://bucket/a/b", "snap-1")
        );
        let t = Target::parse("file:///tmp/remote/x").unwrap();
        assert_eq!(
            (t.url.as_str(), t.name.as_str()),
            ("file:///tmp/remote", "x")
        );
        assert!(Target::parse("s3://bucket").is_err());
        assert!(Target::parse("no-scheme/x").is_err());
    }
}
