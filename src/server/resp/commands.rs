//! The RESP commands kvs answers, as one table. The table drives command lookup, the arity
//! checks (in Redis's wording), `COMMAND`, `COMMAND INFO`, `COMMAND DOCS`, `COMMAND COUNT`
//! and each container command's `HELP`. What the server does and what it says it does come
//! from the same entries, so they cannot drift apart.
//!
//! Redis's conventions are kept: names are lower case, a subcommand is named
//! `container|sub`, and an arity `n > 0` means exactly `n` words including the name, `n < 0`
//! at least `-n`.

use bytes::Bytes;

use crate::protocol::resp::Reply;

/// The version of kvs that each command arrived in (`since` in `COMMAND DOCS`).
const SINCE: &str = "0.1.0";
/// How much of an unknown command, and of its arguments together, an error quotes. Redis's
/// figure.
const QUOTED_BYTES_MAX: usize = 128;

/// Which handler answers a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Get,
    Set,
    Del,
    Exists,
    Mget,
    Mset,
    Dbsize,
    Info,
    Ping,
    Echo,
    Select,
    Hello,
    Auth,
    Quit,
    Client,
    ClientSetname,
    ClientGetname,
    ClientId,
    Config,
    ConfigGet,
    Command,
    CommandCount,
    CommandDocs,
    CommandInfo,
    /// `HELP` of any container command.
    Help,
}

/// What an argument is, as `COMMAND DOCS` names it.
#[derive(Clone, Copy, Debug)]
pub enum ArgKind {
    Key,
    String,
    Integer,
    Pattern,
    /// Several arguments that go together, such as MSET's key and value.
    Block(&'static [Arg]),
}

impl ArgKind {
    fn name(self) -> &'static str {
        match self {
            ArgKind::Key => "key",
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Pattern => "pattern",
            ArgKind::Block(_) => "block",
        }
    }
}

/// One argument of a command, for `COMMAND DOCS` and `HELP`.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub kind: ArgKind,
    /// A word that comes before the value, such as HELLO's `SETNAME`.
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
}

impl Arg {
    const fn new(name: &'static str, kind: ArgKind) -> Arg {
        Arg {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
        }
    }
    const fn optional(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }
    const fn multiple(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }
    const fn token(self, token: &'static str) -> Arg {
        Arg {
            token: Some(token),
            ..self
        }
    }
}

/// One command or subcommand.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower case; `container|sub` for a subcommand.
    pub name: &'static str,
    pub cmd: Cmd,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: counted from the end) and step, as `COMMAND` reports.
    pub keys: (i32, i32, i32),
    pub group: &'static str,
    pub complexity: &'static str,
    pub summary: &'static str,
    pub args: &'static [Arg],
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    /// The plain command, or a subcommand's own word (`setname` for `client|setname`).
    fn word(&self) -> &'static str {
        self.name.split_once('|').map_or(self.name, |(_, sub)| sub)
    }

    fn arity_allows(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

const KEY: Arg = Arg::new("key", ArgKind::Key);
const KEYS: Arg = Arg::new("key", ArgKind::Key).multiple();
const USERNAME_PASSWORD: &[Arg] = &[
    Arg::new("username", ArgKind::String),
    Arg::new("password", ArgKind::String),
];
const KEY_VALUE: &[Arg] = &[
    Arg::new("key", ArgKind::Key),
    Arg::new("value", ArgKind::String),
];

/// A container's `HELP` subcommand.
const fn help(name: &'static str, group: &'static str) -> CommandSpec {
    CommandSpec {
        name,
        cmd: Cmd::Help,
        arity: 2,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        group,
        complexity: "O(1)",
        summary: "Returns helpful text about the different subcommands.",
        args: &[],
        subcommands: &[],
    }
}

/// Every command kvs answers over RESP. Commands not listed get Redis's "unknown command".
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        cmd: Cmd::Get,
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        group: "string",
        complexity: "O(1)",
        summary: "Returns the value of a key, or nil when the key does not exist.",
        args: &[KEY],
        subcommands: &[],
    },
    CommandSpec {
        name: "set",
        cmd: Cmd::Set,
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        group: "string",
        complexity: "O(1)",
        summary: "Sets the value of a key, durably under the server's fsync policy. \
                  kvs supports no options (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL are refused).",
        args: KEY_VALUE,
        subcommands: &[],
    },
    CommandSpec {
        name: "del",
        cmd: Cmd::Del,
        arity: -2,
        flags: &["write"],
        keys: (1, -1, 1),
        group: "generic",
        complexity: "O(N) where N is the number of keys",
        summary: "Deletes keys and returns how many existed.",
        args: &[KEYS],
        subcommands: &[],
    },
    CommandSpec {
        name: "unlink",
        cmd: Cmd::Del,
        arity: -2,
        flags: &["write", "fast"],
        keys: (1, -1, 1),
        group: "generic",
        complexity: "O(N) where N is the number of keys",
        summary: "Deletes keys and returns how many existed (the same as DEL in kvs).",
        args: &[KEYS],
        subcommands: &[],
    },
    CommandSpec {
        name: "exists",
        cmd: Cmd::Exists,
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        group: "generic",
        complexity: "O(N) where N is the number of keys",
        summary: "Counts the given keys that exist; a key named twice counts twice.",
        args: &[KEYS],
        subcommands: &[],
    },
    CommandSpec {
        name: "mget",
        cmd: Cmd::Mget,
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        group: "string",
        complexity: "O(N) where N is the number of keys",
        summary: "Returns the values of keys, nil for each key that does not exist.",
        args: &[KEYS],
        subcommands: &[],
    },
    CommandSpec {
        name: "mset",
        cmd: Cmd::Mset,
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, -1, 2),
        group: "string",
        complexity: "O(N) where N is the number of keys",
        summary: "Sets several keys. Each write is durable when OK is returned, but the set is \
                  not atomic: a reader may see some keys updated before others.",
        args: &[Arg::new("data", ArgKind::Block(KEY_VALUE)).multiple()],
        subcommands: &[],
    },
    CommandSpec {
        name: "dbsize",
        cmd: Cmd::Dbsize,
        arity: 1,
        flags: &["readonly", "fast"],
        keys: (0, 0, 0),
        group: "server",
        complexity: "O(P) where P is the number of partitions",
        summary: "Returns the number of keys in the store.",
        args: &[],
        subcommands: &[],
    },
    CommandSpec {
        name: "info",
        cmd: Cmd::Info,
        arity: -1,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        group: "server",
        complexity: "O(P) where P is the number of partitions",
        summary: "Returns information about the server: the server, persistence and keyspace \
                  sections.",
        args: &[Arg::new("section", ArgKind::String).optional().multiple()],
        subcommands: &[],
    },
    CommandSpec {
        name: "ping",
        cmd: Cmd::Ping,
        arity: -1,
        flags: &["fast"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(1)",
        summary: "Returns PONG, or the message when one is given.",
        args: &[Arg::new("message", ArgKind::String).optional()],
        subcommands: &[],
    },
    CommandSpec {
        name: "echo",
        cmd: Cmd::Echo,
        arity: 2,
        flags: &["fast"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(1)",
        summary: "Returns the message.",
        args: &[Arg::new("message", ArgKind::String)],
        subcommands: &[],
    },
    CommandSpec {
        name: "select",
        cmd: Cmd::Select,
        arity: 2,
        flags: &["loading", "stale", "fast"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(1)",
        summary: "Accepts database 0, the only one kvs has.",
        args: &[Arg::new("index", ArgKind::Integer)],
        subcommands: &[],
    },
    CommandSpec {
        name: "hello",
        cmd: Cmd::Hello,
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(1)",
        summary: "Describes the server and the connection, optionally authenticating first. \
                  kvs speaks RESP2 only.",
        args: &[
            Arg::new("protover", ArgKind::Integer).optional(),
            Arg::new("auth", ArgKind::Block(USERNAME_PASSWORD))
                .token("AUTH")
                .optional(),
            Arg::new("clientname", ArgKind::String)
                .token("SETNAME")
                .optional(),
        ],
        subcommands: &[],
    },
    CommandSpec {
        name: "auth",
        cmd: Cmd::Auth,
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "no_auth"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(N) where N is the number of bytes of the server's password",
        summary: "Authenticates the connection with the server's password (user `default`). \
                  A wrong password is answered after a delay that grows with each failure, and \
                  the connection is closed after 10.",
        args: &[
            Arg::new("username", ArgKind::String).optional(),
            Arg::new("password", ArgKind::String),
        ],
        subcommands: &[],
    },
    CommandSpec {
        name: "quit",
        cmd: Cmd::Quit,
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast"],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "O(1)",
        summary: "Answers OK and closes the connection.",
        args: &[],
        subcommands: &[],
    },
    CommandSpec {
        name: "client",
        cmd: Cmd::Client,
        arity: -2,
        flags: &[],
        keys: (0, 0, 0),
        group: "connection",
        complexity: "Depends on subcommand.",
        summary: "A container for client connection commands.",
        args: &[],
        subcommands: &[
            CommandSpec {
                name: "client|setname",
                cmd: Cmd::ClientSetname,
                arity: 3,
                flags: &["noscript", "loading", "stale"],
                keys: (0, 0, 0),
                group: "connection",
                complexity: "O(1)",
                summary: "Names the connection; an empty name removes it.",
                args: &[Arg::new("connection-name", ArgKind::String)],
                subcommands: &[],
            },
            CommandSpec {
                name: "client|getname",
                cmd: Cmd::ClientGetname,
                arity: 2,
                flags: &["noscript", "loading", "stale"],
                keys: (0, 0, 0),
                group: "connection",
                complexity: "O(1)",
                summary: "Returns the name of the connection, or nil.",
                args: &[],
                subcommands: &[],
            },
            CommandSpec {
                name: "client|id",
                cmd: Cmd::ClientId,
                arity: 2,
                flags: &["noscript", "loading", "stale"],
                keys: (0, 0, 0),
                group: "connection",
                complexity: "O(1)",
                summary: "Returns the unique id of the connection.",
                args: &[],
                subcommands: &[],
            },
            help("client|help", "connection"),
        ],
    },
    CommandSpec {
        name: "config",
        cmd: Cmd::Config,
        arity: -2,
        flags: &[],
        keys: (0, 0, 0),
        group: "server",
        complexity: "Depends on subcommand.",
        summary: "A container for server configuration commands. kvs's configuration is fixed \
                  at start-up, so it can only be read.",
        args: &[],
        subcommands: &[
            CommandSpec {
                name: "config|get",
                cmd: Cmd::ConfigGet,
                arity: -3,
                flags: &["admin", "noscript", "loading", "stale"],
                keys: (0, 0, 0),
                group: "server",
                complexity: "O(N) where N is the number of parameters",
                summary: "Returns the parameters matching glob-style patterns, with their values.",
                args: &[Arg::new("parameter", ArgKind::Pattern).multiple()],
                subcommands: &[],
            },
            help("config|help", "server"),
        ],
    },
    CommandSpec {
        name: "command",
        cmd: Cmd::Command,
        arity: -1,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        group: "server",
        complexity: "O(N) where N is the number of commands",
        summary: "Returns information about every command.",
        args: &[],
        subcommands: &[
            CommandSpec {
                name: "command|count",
                cmd: Cmd::CommandCount,
                arity: 2,
                flags: &["loading", "stale"],
                keys: (0, 0, 0),
                group: "server",
                complexity: "O(1)",
                summary: "Returns the number of commands.",
                args: &[],
                subcommands: &[],
            },
            CommandSpec {
                name: "command|docs",
                cmd: Cmd::CommandDocs,
                arity: -2,
                flags: &["loading", "stale"],
                keys: (0, 0, 0),
                group: "server",
                complexity: "O(N) where N is the number of commands",
                summary: "Returns documentary information about commands, all of them when none \
                          is named.",
                args: &[Arg::new("command-name", ArgKind::String)
                    .optional()
                    .multiple()],
                subcommands: &[],
            },
            CommandSpec {
                name: "command|info",
                cmd: Cmd::CommandInfo,
                arity: -2,
                flags: &["loading", "stale"],
                keys: (0, 0, 0),
                group: "server",
                complexity: "O(N) where N is the number of commands",
                summary: "Returns information about commands, all of them when none is named.",
                args: &[Arg::new("command-name", ArgKind::String)
                    .optional()
                    .multiple()],
                subcommands: &[],
            },
            help("command|help", "server"),
        ],
    },
];

/// Finds a top-level command by name, ignoring case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The command `args` names, with its arity checked; otherwise the error to send, in
/// Redis's wording (without the leading `-`). `args` is not empty.
pub fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, String> {
    let Some(spec) = lookup(&args[0]) else {
        return Err(unknown_command(args));
    };
    if !spec.arity_allows(args.len()) {
        return Err(wrong_arity(spec));
    }
    if spec.subcommands.is_empty() || args.len() < 2 {
        return Ok(spec);
    }
    let Some(sub) = spec
        .subcommands
        .iter()
        .find(|s| s.word().as_bytes().eq_ignore_ascii_case(&args[1]))
    else {
        return Err(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(c_string(&args[1], QUOTED_BYTES_MAX)),
            spec.name.to_ascii_uppercase()
        ));
    };
    if !sub.arity_allows(args.len()) {
        return Err(wrong_arity(sub));
    }
    Ok(sub)
}

pub fn wrong_arity(spec: &CommandSpec) -> String {
    format!("ERR wrong number of arguments for '{}' command", spec.name)
}

/// Redis's sentence for an unknown command: the name and the arguments are quoted up to
/// 128 bytes (the arguments together), each as C would print it (up to a NUL byte).
fn unknown_command(args: &[Bytes]) -> String {
    let mut quoted = Vec::new();
    for arg in &args[1..] {
        if quoted.len() >= QUOTED_BYTES_MAX {
            break;
        }
        let budget = QUOTED_BYTES_MAX - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(c_string(arg, budget));
        quoted.extend_from_slice(b"' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(c_string(&args[0], QUOTED_BYTES_MAX)),
        String::from_utf8_lossy(&quoted)
    )
}

/// `bytes` as `printf("%.*s", max, bytes)` prints them: up to the first NUL, at most `max`.
fn c_string(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end.min(max)]
}

fn text(s: &str) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
}

fn status(s: &str) -> Reply {
    Reply::Simple(s.to_owned())
}

fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

/// The `COMMAND INFO` entry of a command: name, arity, flags, first key, last key, step,
/// ACL categories, tips, key specifications and subcommands, as Redis 7 lists them.
pub fn info_entry(spec: &CommandSpec) -> Reply {
    let (first, last, step) = spec.keys;
    array(vec![
        text(spec.name),
        Reply::Integer(spec.arity.into()),
        array(spec.flags.iter().map(|f| status(f)).collect()),
        Reply::Integer(first.into()),
        Reply::Integer(last.into()),
        Reply::Integer(step.into()),
        array(Vec::new()),
        array(Vec::new()),
        array(Vec::new()),
        array(spec.subcommands.iter().map(info_entry).collect()),
    ])
}

/// A command's `COMMAND DOCS` map (a flat array of pairs in RESP2). redis-cli reads
/// `summary`, `since` and `group` of every entry, and `name` and `type` of every argument,
/// without checking they are there, so each is always present.
pub fn docs_entry(spec: &CommandSpec) -> Reply {
    let mut map = vec![
        text("summary"),
        text(spec.summary),
        text("since"),
        text(SINCE),
        text("group"),
        text(spec.group),
        text("complexity"),
        text(spec.complexity),
    ];
    if !spec.args.is_empty() {
        map.push(text("arguments"));
        map.push(array(spec.args.iter().map(arg_docs).collect()));
    }
    if !spec.subcommands.is_empty() {
        map.push(text("subcommands"));
        let mut subs = Vec::new();
        for sub in spec.subcommands {
            subs.push(text(sub.name));
            subs.push(docs_entry(sub));
        }
        map.push(array(subs));
    }
    array(map)
}

fn arg_docs(arg: &Arg) -> Reply {
    let mut map = vec![
        text("name"),
        text(arg.name),
        text("type"),
        text(arg.kind.name()),
    ];
    if let Some(token) = arg.token {
        map.push(text("token"));
        map.push(text(token));
    }
    let mut flags = Vec::new();
    if arg.optional {
        flags.push(status("optional"));
    }
    if arg.multiple {
        flags.push(status("multiple"));
    }
    if !flags.is_empty() {
        map.push(text("flags"));
        map.push(array(flags));
    }
    if let ArgKind::Block(args) = arg.kind {
        map.push(text("arguments"));
        map.push(array(args.iter().map(arg_docs).collect()));
    }
    array(map)
}

/// The answer to `container|help`: one line per subcommand of the container with its usage,
/// then its summary.
pub fn help_lines(help: &CommandSpec) -> Reply {
    let container = help.name.split_once('|').map_or(help.name, |(c, _)| c);
    let upper = container.to_ascii_uppercase();
    let mut lines = vec![status(&format!(
        "{upper} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ))];
    for sub in lookup(container.as_bytes()).map_or(&[][..], |c| c.subcommands) {
        let usage = usage(sub.args);
        let word = sub.word().to_ascii_uppercase();
        lines.push(status(
            if usage.is_empty() {
                word
            } else {
                format!("{word} {usage}")
            }
            .as_str(),
        ));
        lines.push(status(&format!("    {}", sub.summary)));
    }
    array(lines)
}

/// Arguments written the way Redis's documentation writes them: `key [key ...]`,
/// `[SETNAME clientname]`.
pub fn usage(args: &[Arg]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|arg| {
            let one = match arg.kind {
                ArgKind::Block(inner) => usage(inner),
                _ => arg.name.to_owned(),
            };
            let one = match arg.token {
                Some(token) => format!("{token} {one}"),
                None => one,
            };
            let all = if arg.multiple {
                format!("{one} [{one} ...]")
            } else {
                one
            };
            if arg.optional {
                format!("[{all}]")
            } else {
                all
            }
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn all_specs() -> Vec<&'static CommandSpec> {
        COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands.iter()))
            .collect()
    }

    #[test]
    fn table_names_arities_and_docs_are_consistent() {
        // Guards against an entry that redis-cli would crash on or that lookups cannot reach.
        for spec in all_specs() {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase(), "{}", spec.name);
            assert!(spec.arity != 0, "{}", spec.name);
            assert!(
                !spec.summary.is_empty() && !spec.group.is_empty(),
                "{}",
                spec.name
            );
            if spec.name.contains('|') {
                let (container, _) = spec.name.split_once('|').unwrap();
                let parent = lookup(container.as_bytes()).unwrap();
                assert!(parent.subcommands.iter().any(|s| std::ptr::eq(s, spec)));
                assert!(spec.subcommands.is_empty(), "{}", spec.name);
            } else {
                assert!(std::ptr::eq(lookup(spec.name.as_bytes()).unwrap(), spec));
            }
        }
        let mut names: Vec<&str> = all_specs().iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all_specs().len(), "duplicate names");
    }

    #[test]
    fn lookup_ignores_case_and_subcommands_resolve() {
        // Guards against `get`, `GET` and `GeT` being different commands, as they are not in Redis.
        assert_eq!(resolve(&words("GeT k")).unwrap().cmd, Cmd::Get);
        assert_eq!(
            resolve(&words("client SetName x")).unwrap().cmd,
            Cmd::ClientSetname
        );
        assert_eq!(resolve(&words("COMMAND")).unwrap().cmd, Cmd::Command);
        assert_eq!(
            resolve(&words("command docs")).unwrap().cmd,
            Cmd::CommandDocs
        );
        assert_eq!(resolve(&words("CONFIG HELP")).unwrap().cmd, Cmd::Help);
    }

    #[test]
    fn arity_errors_use_redis_wording_and_full_names() {
        // Guards against error sentences that differ from what Redis clients expect.
        for (line, name) in [
            ("get", "get"),
            ("GET a b", "get"),
            ("set a", "set"),
            ("mset a", "mset"),
            ("echo", "echo"),
            ("client", "client"),
            ("client setname", "client|setname"),
            ("CONFIG get", "config|get"),
            ("command count x", "command|count"),
            ("dbsize x", "dbsize"),
        ] {
            assert_eq!(
                resolve(&words(line)).unwrap_err(),
                format!("ERR wrong number of arguments for '{name}' command"),
                "{line}"
            );
        }
        assert_eq!(
            resolve(&words("client foo")).unwrap_err(),
            "ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
        assert_eq!(
            resolve(&words("config set a b")).unwrap_err(),
            "ERR unknown subcommand 'set'. Try CONFIG HELP."
        );
    }

    #[test]
    fn unknown_commands_quote_at_most_128_bytes_as_redis_does() {
        // Guards against unbounded error lines, and against wording that differs from Redis's.
        assert_eq!(
            resolve(&words("foo")).unwrap_err(),
            "ERR unknown command 'foo', with args beginning with: "
        );
        assert_eq!(
            resolve(&words("foo a bc")).unwrap_err(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'bc' "
        );
        let long = "x".repeat(200);
        let err = resolve(&words(&format!("{long} {long} b"))).unwrap_err();
        let x128 = "x".repeat(128);
        assert_eq!(
            err,
            format!("ERR unknown command '{x128}', with args beginning with: '{x128}' ")
        );
        // The budget shrinks by what is already quoted, quotes and spaces included.
        let a100 = "a".repeat(100);
        let err = resolve(&words(&format!("foo {a100} {a100} c"))).unwrap_err();
        let a25 = "a".repeat(128 - 103);
        assert_eq!(
            err,
            format!("ERR unknown command 'foo', with args beginning with: '{a100}' '{a25}' ")
        );
        let nul = vec![Bytes::from_static(b"f\0oo"), Bytes::from_static(b"a\0b")];
        assert_eq!(
            resolve(&nul).unwrap_err(),
            "ERR unknown command 'f', with args beginning with: 'a' "
        );
    }

    #[test]
    fn docs_carry_every_field_redis_cli_reads_without_checking() {
        // Guards against redis-cli dereferencing a missing summary, since, group, name or type.
        fn check_args(args: &[Reply]) {
            for arg in args {
                let Reply::Array(Some(map)) = arg else {
                    panic!("argument is not a map: {arg:?}")
                };
                let keys: Vec<&Reply> = map.iter().step_by(2).collect();
                assert!(
                    keys.contains(&&text("name")) && keys.contains(&&text("type")),
                    "{map:?}"
                );
                for pair in map.chunks(2) {
                    if pair[0] == text("arguments") {
                        let Reply::Array(Some(inner)) = &pair[1] else {
                            panic!()
                        };
                        check_args(inner);
                    }
                    if pair[0] == text("flags") {
                        let Reply::Array(Some(flags)) = &pair[1] else {
                            panic!()
                        };
                        assert!(flags.iter().all(|f| matches!(f, Reply::Simple(_))));
                    }
                }
            }
        }
        for spec in all_specs() {
            let Reply::Array(Some(map)) = docs_entry(spec) else {
                panic!()
            };
            assert_eq!(map.len() % 2, 0);
            for key in ["summary", "since", "group"] {
                assert!(
                    map.iter().step_by(2).any(|k| *k == text(key)),
                    "{} lacks {key}",
                    spec.name
                );
            }
            for pair in map.chunks(2) {
                if pair[0] == text("arguments") {
                    let Reply::Array(Some(args)) = &pair[1] else {
                        panic!()
                    };
                    check_args(args);
                }
            }
        }
    }

    #[test]
    fn usage_lines_read_like_redis_documentation() {
        // Guards against HELP and hints that misdescribe a command's arguments.
        assert_eq!(usage(lookup(b"del").unwrap().args), "key [key ...]");
        assert_eq!(
            usage(lookup(b"mset").unwrap().args),
            "key value [key value ...]"
        );
        assert_eq!(
            usage(lookup(b"hello").unwrap().args),
            "[protover] [AUTH username password] [SETNAME clientname]"
        );
        assert_eq!(usage(lookup(b"auth").unwrap().args), "[username] password");
        let help = resolve(&words("client help")).unwrap();
        let Reply::Array(Some(lines)) = help_lines(help) else {
            panic!()
        };
        assert_eq!(
            lines[0],
            status("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
        );
        assert!(lines.contains(&status("SETNAME connection-name")));
        assert!(lines.contains(&status("HELP")));
    }
}
