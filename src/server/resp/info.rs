//! What `INFO` and `CONFIG GET` report. The layout is Redis's (`# Section` headers, `field:value`
//! lines ending in CRLF, a blank line between sections; `CONFIG GET` answers name/value pairs
//! for glob patterns, ignoring case). The fields are kvs's own wherever Redis's do not apply:
//! kvs has no RDB snapshots and no AOF, so those read as off, and its own durability is
//! reported as `fsync_policy`.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::engine::meta::EngineKind;
use crate::limits::FRAME_BYTES_MAX;
use crate::protocol::StatsReport;
use crate::server::ServerFacts;

/// Which `INFO` sections to render. Unknown section names are ignored, as in Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    pub server: bool,
    pub persistence: bool,
    pub keyspace: bool,
}

impl Sections {
    /// From `INFO`'s arguments: none, `default`, `all` or `everything` mean every section.
    pub fn parse(names: &[Bytes]) -> Sections {
        if names.is_empty() {
            return Sections::all();
        }
        let mut wanted = Sections::default();
        for name in names {
            let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
            if is("default") || is("all") || is("everything") {
                return Sections::all();
            }
            wanted.server |= is("server");
            wanted.persistence |= is("persistence");
            wanted.keyspace |= is("keyspace");
        }
        wanted
    }

    fn all() -> Sections {
        Sections {
            server: true,
            persistence: true,
            keyspace: true,
        }
    }
}

/// The `INFO` text. `log` is needed for the persistence section, `keys` for the keyspace
/// section; sections always come in Redis's order, whatever order they were asked in.
pub fn render(
    facts: &ServerFacts,
    sections: Sections,
    log: Option<&StatsReport>,
    keys: Option<u64>,
) -> String {
    let mut out = String::new();
    let mut section = |title: &str, body: String| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str("# ");
        out.push_str(title);
        out.push_str("\r\n");
        out.push_str(&body);
    };
    if sections.server {
        section("Server", server_section(facts));
    }
    if sections.persistence {
        section("Persistence", persistence_section(facts, log));
    }
    if sections.keyspace {
        let mut body = String::new();
        // Redis lists only databases that hold keys.
        if let Some(n) = keys.filter(|&n| n > 0) {
            line(
                &mut body,
                "db0",
                format_args!("keys={n},expires=0,avg_ttl=0"),
            );
        }
        section("Keyspace", body);
    }
    out
}

fn line(out: &mut String, field: &str, value: std::fmt::Arguments<'_>) {
    let _ = write!(out, "{field}:{value}\r\n");
}

fn server_section(facts: &ServerFacts) -> String {
    let mut s = String::new();
    let uptime = facts.started.elapsed().as_secs();
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    line(
        &mut s,
        "kvs_version",
        format_args!("{}", env!("CARGO_PKG_VERSION")),
    );
    line(
        &mut s,
        "os",
        format_args!("Linux {} {}", kernel_release(), std::env::consts::ARCH),
    );
    line(&mut s, "arch_bits", format_args!("{}", usize::BITS));
    line(
        &mut s,
        "io_backend",
        format_args!("{}", facts.io_backend.name()),
    );
    line(&mut s, "process_id", format_args!("{}", std::process::id()));
    line(&mut s, "tcp_port", format_args!("{}", facts.port));
    line(&mut s, "server_time_usec", format_args!("{now_us}"));
    line(&mut s, "uptime_in_seconds", format_args!("{uptime}"));
    line(
        &mut s,
        "uptime_in_days",
        format_args!("{}", uptime / 86_400),
    );
    line(&mut s, "workers", format_args!("{}", facts.workers));
    line(&mut s, "protocols", format_args!("kvs-native,resp2"));
    s
}

fn persistence_section(facts: &ServerFacts, log: Option<&StatsReport>) -> String {
    let mut s = String::new();
    // kvs opens its partitions before it listens, so it is never loading while it answers.
    line(&mut s, "loading", format_args!("0"));
    line(&mut s, "rdb_bgsave_in_progress", format_args!("0"));
    line(&mut s, "aof_enabled", format_args!("0"));
    line(&mut s, "engine", format_args!("{}", facts.engine.name()));
    line(&mut s, "fsync_policy", format_args!("{}", facts.fsync));
    line(&mut s, "partitions", format_args!("{}", facts.partitions));
    // sled keeps its own files; the log figures describe kvs's engine only.
    if let (EngineKind::Kvs, Some(log)) = (facts.engine, log) {
        let sum = |f: fn(&crate::protocol::PartitionStats) -> u64| {
            log.partitions.iter().map(f).sum::<u64>()
        };
        line(
            &mut s,
            "log_segments",
            format_args!("{}", sum(|p| p.segments.into())),
        );
        line(
            &mut s,
            "log_live_bytes",
            format_args!("{}", sum(|p| p.live_bytes)),
        );
        line(
            &mut s,
            "log_dead_bytes",
            format_args!("{}", sum(|p| p.dead_bytes)),
        );
        line(
            &mut s,
            "log_compactions",
            format_args!("{}", sum(|p| p.compactions)),
        );
    }
    s
}

/// The running kernel's release, read once.
fn kernel_release() -> &'static str {
    static RELEASE: OnceLock<String> = OnceLock::new();
    RELEASE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
    })
}

/// The parameters `CONFIG GET` knows, with their values: Redis's names where kvs has an
/// equivalent (what redis-benchmark and redis-cli ask for at start-up among them), and
/// kvs's own settings under `kvs-` names.
pub fn parameters(facts: &ServerFacts) -> Vec<(&'static str, String)> {
    vec![
        // No RDB snapshots and no AOF: kvs's log is its own (see kvs-fsync).
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("port", facts.port.to_string()),
        ("maxclients", facts.max_connections.to_string()),
        (
            "timeout",
            facts.idle_timeout.as_secs_f64().ceil().to_string(),
        ),
        ("proto-max-bulk-len", FRAME_BYTES_MAX.to_string()),
        ("kvs-engine", facts.engine.name().into()),
        ("kvs-fsync", facts.fsync.to_string()),
        ("kvs-io-backend", facts.io_backend.name().into()),
        ("kvs-partitions", facts.partitions.to_string()),
        ("kvs-workers", facts.workers.to_string()),
    ]
}

/// `CONFIG GET`'s answer: every parameter matching any of the patterns, once, in table order.
pub fn config_get(facts: &ServerFacts, patterns: &[Bytes]) -> Vec<(&'static str, String)> {
    parameters(facts)
        .into_iter()
        .filter(|(name, _)| patterns.iter().any(|p| glob_match(p, name.as_bytes())))
        .collect()
}

/// Glob matching as Redis's `stringmatch` does it, ignoring ASCII case: `*` any run, `?` any
/// byte, `[abc]`, `[a-z]` and `[^...]` classes, `\` escapes the next byte. Runs in time
/// proportional to the product of the lengths (no exponential backtracking).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After a `*`: where the pattern resumes, and the text position it was last tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            // Let the star swallow one more byte and try again from there.
            Some((resume, tried)) => {
                star = Some((resume, tried + 1));
                p = resume;
                t = tried + 1;
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// If the pattern element at `p` (not a `*`) matches `byte`, the index after the element.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    let same = |a: u8| a.eq_ignore_ascii_case(&byte);
    match *pattern.get(p)? {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => same(pattern[p + 1]).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            // An unclosed class ends with the pattern, as in Redis.
            while i < pattern.len() && pattern[i] != b']' {
                if pattern[i] == b'\\' && i + 1 < pattern.len() {
                    hit |= same(pattern[i + 1]);
                    i += 2;
                } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                    let (a, b) = (
                        pattern[i].to_ascii_lowercase(),
                        pattern[i + 2].to_ascii_lowercase(),
                    );
                    let (lo, hi) = (a.min(b), a.max(b));
                    hit |= (lo..=hi).contains(&byte.to_ascii_lowercase());
                    i += 3;
                } else {
                    hit |= same(pattern[i]);
                    i += 1;
                }
            }
            (hit != negate).then_some(i + 1)
        }
        literal => same(literal).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::FsyncPolicy;
    use crate::io_backend::IoBackendKind;
    use crate::protocol::PartitionStats;

    fn facts() -> ServerFacts {
        ServerFacts {
            port: 4000,
            io_backend: IoBackendKind::Blocking,
            engine: EngineKind::Kvs,
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
            workers: 2,
            partitions: 4,
            max_connections: 100,
            idle_timeout: Duration::from_millis(1500),
            started: Instant::now(),
        }
    }

    fn names(patterns: &[&str]) -> Vec<&'static str> {
        let patterns: Vec<Bytes> = patterns
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        config_get(&facts(), &patterns)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn glob_patterns_match_as_in_redis() {
        // Guards against CONFIG GET patterns selecting other parameters than Redis would.
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("save", "SAVE", true),
            ("sav", "save", false),
            ("s?ve", "save", true),
            ("*only", "appendonly", true),
            ("a*d*y", "appendonly", true),
            ("a*x*y", "appendonly", false),
            ("[ab]ppend*", "appendonly", true),
            ("[^a]ppend*", "appendonly", false),
            ("[a-c]*", "Bob", true),
            ("[c-a]*", "bob", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("kvs-*", "kvs-fsync", true),
            ("**a", "ba", true),
            ("[ab", "b", true),
        ];
        for &(pattern, text, want) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                want,
                "{pattern} vs {text}"
            );
        }
        // A pattern that takes exponential time in a naively recursive matcher.
        let text = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn config_get_answers_what_redis_tools_ask_at_start_up() {
        // Guards against redis-benchmark printing "Could not fetch server CONFIG".
        let all = parameters(&facts());
        let value = |n: &str| {
            all.iter()
                .find(|(name, _)| *name == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(value("save").as_deref(), Some(""));
        assert_eq!(value("appendonly").as_deref(), Some("no"));
        assert_eq!(value("kvs-fsync").as_deref(), Some("10ms"));
        assert_eq!(value("timeout").as_deref(), Some("2"));
        assert_eq!(names(&["save"]), ["save"]);
        assert_eq!(
            names(&["APPENDONLY", "save", "sa*"]),
            ["save", "appendonly"]
        );
        assert_eq!(names(&["nosuch"]), Vec::<&str>::new());
        assert_eq!(names(&["*"]).len(), all.len());
    }

    #[test]
    fn info_sections_follow_redis_layout() {
        // Guards against INFO text that Redis clients' parsers split wrongly.
        let log = StatsReport {
            io_backend: "blocking".into(),
            partitions: (0..2)
                .map(|p| PartitionStats {
                    partition: p,
                    keys: 3,
                    live_bytes: 10,
                    dead_bytes: 1,
                    segments: 1,
                    compactions: 0,
                })
                .collect(),
        };
        let all = render(&facts(), Sections::parse(&[]), Some(&log), Some(6));
        assert!(all.starts_with("# Server\r\nkvs_version:"), "{all}");
        assert!(
            all.contains("\r\nio_backend:blocking\r\n") && all.contains("\r\ntcp_port:4000\r\n"),
            "{all}"
        );
        assert!(
            all.contains("\r\n\r\n# Persistence\r\nloading:0\r\n"),
            "{all}"
        );
        assert!(
            all.contains("\r\naof_enabled:0\r\n") && all.contains("\r\nfsync_policy:10ms\r\n"),
            "{all}"
        );
        assert!(all.contains("\r\nlog_live_bytes:20\r\n"), "{all}");
        assert!(
            all.ends_with("\r\n\r\n# Keyspace\r\ndb0:keys=6,expires=0,avg_ttl=0\r\n"),
            "{all}"
        );
        for l in all
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(
                l.split_once(':').is_some_and(|(k, _)| !k.is_empty()),
                "{l:?}"
            );
        }

        let keyspace = Sections::parse(&[
            Bytes::from_static(b"KEYSPACE"),
            Bytes::from_static(b"nosuch"),
        ]);
        assert_eq!(
            keyspace,
            Sections {
                keyspace: true,
                ..Sections::default()
            }
        );
        assert_eq!(render(&facts(), keyspace, None, Some(0)), "# Keyspace\r\n");
        assert_eq!(
            render(
                &facts(),
                Sections::parse(&[Bytes::from_static(b"nosuch")]),
                None,
                None
            ),
            ""
        );
        let both = Sections::parse(&[
            Bytes::from_static(b"keyspace"),
            Bytes::from_static(b"server"),
        ]);
        assert!(render(&facts(), both, None, Some(1)).starts_with("# Server\r\n"));
    }
}
