//! `kvs-client`: the command-line client. Parses flags, installs logging and calls
//! [`kvs::KvsClient`].
//!
//! Output follows talent-plan's conventions: `set` and `rm` print nothing on success; `get`
//! prints the value and a newline, or `Key not found` (exit 0); `rm` of an absent key prints
//! `Key not found` on stderr and exits 1. Usage errors exit 2 (clap); anything else that
//! fails exits 1 with a sentence on stderr, a missing or refused password included.
//!
//! The password comes from `--password` or, without it, the `KVS_PASSWORD` environment
//! variable (which, unlike a flag, other users cannot read in the process list).

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use kvs::auth::PasswordParser;
use kvs::client::{stats_table, ClientOptions};
use kvs::{KvsClient, KvsError, Password};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "kvs-client", version, about = "Talks to a kvs server")]
struct Cli {
    /// The server's address. Accepted before or after the command and its arguments.
    #[arg(
        long,
        global = true,
        value_name = "IP:PORT",
        default_value = "127.0.0.1:4000"
    )]
    addr: SocketAddr,

    /// The server's password, if it has one; without this flag, the KVS_PASSWORD environment
    /// variable. Every user of this machine can read a flag in the process list, so prefer
    /// the variable. Accepted before or after the command.
    #[arg(long, global = true, value_name = "PASSWORD", value_parser = PasswordParser)]
    password: Option<Password>,

    #[command(subcommand)]
    command: Command,
}

/// The variable that holds the password when `--password` is not given.
const PASSWORD_VAR: &str = "KVS_PASSWORD";

// Keys and values are OsStrings so that any bytes the shell can pass reach the server as-is.
#[derive(Subcommand)]
enum Command {
    /// Stores VALUE under KEY.
    Set { key: OsString, value: OsString },
    /// Prints the value stored under KEY, or "Key not found".
    Get { key: OsString },
    /// Removes KEY; "Key not found" and exit status 1 if it is absent.
    Rm { key: OsString },
    /// Checks that the server answers, and how quickly.
    Ping,
    /// Prints the server's I/O backend and per-partition counters.
    Stats,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.password.is_none() {
        // An empty variable counts as unset.
        match std::env::var_os(PASSWORD_VAR).filter(|v| !v.is_empty()) {
            None => {}
            Some(value) => match Password::new(value.into_vec()) {
                Ok(password) => cli.password = Some(password),
                Err(e) => {
                    eprintln!("kvs-client: {PASSWORD_VAR}: {e}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    // Logs go to stderr so that stdout carries only values. Quiet unless RUST_LOG says more.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kvs-client: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<KvsError>() {
                Some(KvsError::WrongPassword) => eprintln!(
                    "kvs-client: the server refused the password (given with --password or \
                     {PASSWORD_VAR})"
                ),
                Some(KvsError::AuthRequired) => eprintln!(
                    "kvs-client: the server requires a password: give it with --password \
                     PASSWORD or in the {PASSWORD_VAR} environment variable"
                ),
                // The library's errors are whole sentences that already name their cause.
                _ => eprintln!("kvs-client: {err}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = ClientOptions {
        password: cli.password,
        ..ClientOptions::default()
    };
    let mut client = KvsClient::connect_with(cli.addr, options).await?;
    match cli.command {
        Command::Set { key, value } => client.set(key.into_vec(), value.into_vec()).await?,
        Command::Get { key } => match client.get(key.into_vec()).await? {
            Some(value) => {
                // Raw bytes: a value need not be UTF-8.
                let mut stdout = io::stdout().lock();
                stdout.write_all(&value)?;
                stdout.write_all(b"\n")?;
                stdout.flush()?;
            }
            None => println!("Key not found"),
        },
        Command::Rm { key } => match client.remove(key.into_vec()).await {
            Ok(()) => {}
            Err(KvsError::KeyNotFound) => {
                eprintln!("Key not found");
                return Ok(ExitCode::FAILURE);
            }
            Err(err) => return Err(err.into()),
        },
        Command::Ping => {
            let start = Instant::now();
            client.ping().await?;
            println!("PONG from {} in {:.3?}", cli.addr, start.elapsed());
        }
        Command::Stats => print!("{}", stats_table(&client.stats().await?)),
    }
    Ok(ExitCode::SUCCESS)
}
