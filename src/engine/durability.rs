//! When the writer loop calls fdatasync.

use std::time::Duration;

/// The fsync policy. Under every policy a write has reached the kernel before it is
/// acknowledged, so it survives a kill -9 of the process; `Always` also survives power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fdatasync after every write batch, before acknowledging it (the default).
    #[default]
    Always,
    /// fdatasync at most this long after an acknowledged write.
    Interval(Duration),
    /// Leave flushing to the kernel (and to sealing and shutdown).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => {
                let ms = other
                    .strip_suffix("ms")
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        format!("bad fsync policy '{other}' (expected always, never or <N>ms, e.g. 10ms)")
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_its_display() {
        // Guards against a flag value that prints one way and parses another.
        for p in ["always", "never", "10ms", "1500ms"] {
            assert_eq!(p.parse::<FsyncPolicy>().unwrap().to_string(), p);
        }
        assert!("0ms".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
