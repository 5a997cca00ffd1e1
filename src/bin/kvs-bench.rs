//! `kvs-bench`: parses flags and runs [`kvs::bench`]: a load generator for kvs and Redis, and
//! `kvs-bench summarize`, which turns many runs into the side-by-side tables and chart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kvs::auth::{Password, PasswordParser};
use kvs::bench::{self, parse_duration, BenchConfig, Protocol, RunLength};

/// Load generator for kvs and Redis: GET/SET over the native protocol or RESP, closed or open
/// loop, with latency percentiles, errors and the server's CPU time per operation.
#[derive(Parser, Debug)]
#[command(
    name = "kvs-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Summarise runs (JSON lines from `kvs-bench --json`) as Markdown tables and an SVG chart.
    Summarize(SummarizeArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:4000")]
    addr: SocketAddr,
    /// Wire protocol: native (kvs only) or resp (kvs and Redis).
    #[arg(long, default_value = "native")]
    protocol: Protocol,
    /// Connections, each with its own key stream.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: u32,
    /// Requests each connection keeps in flight.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: u32,
    /// Distinct keys, drawn uniformly.
    #[arg(long, default_value_t = 100_000)]
    keys: u32,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of requests that are GETs (the rest are SETs).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Length of the measured phase: 10, 2.5s, 500ms, 1m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration, conflicts_with = "requests")]
    duration: std::time::Duration,
    /// Measure this many requests instead of a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Warm-up before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: std::time::Duration,
    /// Seed for keys, the GET/SET mix and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Open loop at this many requests per second in all; latency is measured from each
    /// request's scheduled send time. Without it: closed loop, as fast as replies come.
    #[arg(long)]
    rate: Option<f64>,
    /// Generator threads (each a current-thread runtime multiplexing its connections).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Pin the generator to these CPUs (comma-separated; threads take them round-robin).
    #[arg(long, value_delimiter = ',')]
    cpu: Vec<usize>,
    /// The server's process id: report its CPU time per operation.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Check every GET against what was written (each connection gets keys of its own;
    /// implies --prefill). Mismatches are errors.
    #[arg(long)]
    verify: bool,
    /// Write every key once before warm-up, so GETs find values.
    #[arg(long)]
    prefill: bool,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    no_progress: bool,
    /// A label copied into the result, NAME=VALUE (repeatable).
    #[arg(long, value_parser = parse_tag)]
    tag: Vec<(String, String)>,
    /// The server's password, sent first on every connection (native Auth, RESP AUTH).
    #[arg(long, value_name = "PASSWORD", value_parser = PasswordParser)]
    password: Option<Password>,
}

#[derive(Args, Debug)]
struct SummarizeArgs {
    /// JSON-lines files of runs.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Markdown file whose generated section is replaced (or appended); without it the
    /// section is printed.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// How the Markdown links to the chart (default: the --svg path).
    #[arg(long)]
    svg_link: Option<String>,
    /// A line in the section's settings list, NAME=VALUE (repeatable).
    #[arg(long, value_parser = parse_tag)]
    meta: Vec<(String, String)>,
    /// A paragraph at the top of the section (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not NAME=VALUE")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Summarize(args)) => summarize(args).map(|()| true),
        None => run(cli.run),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kvs-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; false if it saw errors or did nothing.
fn run(args: RunArgs) -> anyhow::Result<bool> {
    let mut config = BenchConfig::new(args.addr);
    config.protocol = args.protocol;
    config.connections = args.connections;
    config.pipeline = args.pipeline;
    config.keys = args.keys;
    config.key_size = args.key_size;
    config.value_size = args.value_size;
    config.read_ratio = args.read_ratio;
    config.length = match args.requests {
        Some(n) => RunLength::Requests(n),
        None => RunLength::Time(args.duration),
    };
    config.warmup = args.warmup;
    config.seed = args.seed;
    config.rate = args.rate;
    config.threads = args.threads;
    config.cpus = args.cpu;
    config.server_pid = args.server_pid;
    config.verify = args.verify;
    config.prefill = args.prefill;
    config.progress = !args.no_progress;
    config.tags = args.tag.into_iter().collect::<BTreeMap<_, _>>();
    config.password = args.password;
    let report = bench::run(&config)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if !report.succeeded() {
        eprintln!(
            "kvs-bench: the run failed: {} error(s), {} operation(s) measured",
            report.errors.total, report.ops
        );
    }
    Ok(report.succeeded())
}

fn summarize(args: SummarizeArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for path in &args.runs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        reports.extend(
            bench::summary::read_runs(&text).with_context(|| format!("in {}", path.display()))?,
        );
    }
    if reports.is_empty() {
        bail!("no runs in {:?}", args.runs);
    }
    let rows = bench::summary::rows(&reports);
    let link = args
        .svg_link
        .or_else(|| args.svg.as_ref().map(|p| p.display().to_string()));
    if let Some(path) = &args.svg {
        let subtitle: Vec<String> = args
            .meta
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .take(3)
            .collect();
        std::fs::write(path, bench::summary::svg(&rows, &subtitle.join(" · ")))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let section = bench::summary::markdown(&rows, &args.meta, &args.note, link.as_deref());
    match &args.markdown {
        Some(path) => {
            let doc = match std::fs::read_to_string(path) {
                Ok(doc) => doc,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            std::fs::write(path, bench::summary::replace_section(&doc, &section))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{section}"),
    }
    Ok(())
}
