//! kvs: a persistent key/value store for Linux.
//!
//! # Layout
//! - [`engine`]: the storage engine. A keyspace split into partitions; each partition is a
//!   segmented, checksummed, compacted append-only log with an in-memory index, owned by one
//!   thread. [`KvStore`] is the embeddable handle; [`SledKvsEngine`] the alternative engine.
//! - [`io_backend`]: the narrow file-I/O trait the engine is written against, with an io_uring
//!   implementation and a blocking thread-pool fallback, chosen once at start-up.
//! - [`protocol`]: wire codecs (the native postcard frames and RESP). Codecs do no I/O.
//! - [`server`]: the thread-per-core server behind `kvs-server`.
//! - [`client`]: [`KvsClient`], the async client library behind `kvs-client`.
//! - [`bench`]: the load generator behind `kvs-bench` (native protocol and RESP, so it
//!   drives kvs and Redis alike) and the side-by-side summary `ci/bench.sh` writes.
//! - [`thread_pool`]: the `ThreadPool` trait and its implementations.
//! - [`limits`]: every limit in one place.
//! - [`auth`]: [`Password`], which never shows its bytes and compares in constant time.
//!
//! kvs is Linux-only; see `LINUX_ONLY.md`.

#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!("kvs builds on Linux only (io_uring, CPU pinning): see LINUX_ONLY.md");

pub mod auth;
pub mod bench;
pub mod client;
pub mod engine;
pub mod error;
pub mod io_backend;
pub mod limits;
pub mod protocol;
pub mod server;
pub mod thread_pool;

pub use auth::Password;
pub use client::KvsClient;
pub use engine::{KvStore, KvsEngine, SledKvsEngine};
pub use error::{KvsError, Result};
pub use thread_pool::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};
