//! Command-line quantities: byte sizes (`1GiB`, `256MiB`, `4096`) and shares (`1%`).

use std::fmt;
use std::str::FromStr;

/// A byte count written with an optional unit: `B`, `KiB`/`K`, `MiB`/`M`, `GiB`/`G`,
/// `TiB`/`T` (powers of 1024), or `kB`, `MB`, `GB`, `TB` (powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "B" | "b" => 1,
            "K" | "k" | "KiB" | "kiB" => 1 << 10,
            "M" | "m" | "MiB" => 1 << 20,
            "G" | "g" | "GiB" => 1 << 30,
            "T" | "t" | "TiB" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            u => {
                return Err(format!(
                    "unknown size unit {u:?} (use B, KiB, MiB, GiB, TiB)"
                ))
            }
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("not a size: {s:?} (e.g. 64MiB, 1GiB, 4096)"))?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > isize::MAX as f64 {
            return Err(format!("size out of range: {s:?}"));
        }
        Ok(ByteSize(bytes as usize))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        human_bytes(self.0 as u64).fmt(f)
    }
}

/// `1 GiB`, `256 MiB`, `1.5 KiB`, `300 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A share of the pages, written `1%` or `0.5%` (a bare number is a percentage too).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    /// How many of `total` pages this share is: rounded down, at least one.
    pub fn of(self, total: usize) -> usize {
        ((total as f64 * self.0 / 100.0).floor() as usize).clamp(1, total)
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Percent, String> {
        let num = s.trim().trim_end_matches('%').trim();
        let v: f64 = num
            .parse()
            .map_err(|_| format!("not a percentage: {s:?} (e.g. 1%)"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("percentage out of range (0, 100]: {s:?}"));
        }
        Ok(Percent(v))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("8M".parse::<ByteSize>().unwrap().0, 8 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1.5KiB".parse::<ByteSize>().unwrap().0, 1536);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2_000_000_000);
        assert!("1 parsec".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }

    #[test]
    fn percents() {
        assert_eq!("1%".parse::<Percent>().unwrap().of(262_144), 2621);
        assert_eq!("100%".parse::<Percent>().unwrap().of(10), 10);
        assert_eq!("0.001%".parse::<Percent>().unwrap().of(10), 1);
        assert!("0%".parse::<Percent>().is_err());
        assert!("150%".parse::<Percent>().is_err());
        assert!("x".parse::<Percent>().is_err());
    }
}
