//! The storage engine.
//!
//! [`KvsEngine`] is the async interface both engines implement. [`KvStore`] is kvs's own
//! engine; [`SledKvsEngine`] wraps sled 0.34.

use std::future::Future;

use bytes::Bytes;

use crate::Result;

mod active_hint;
mod cache;
pub mod durability;
mod fair_queue;
#[cfg(test)]
mod format_doc;
mod hint;
mod index;
mod key_filter;
mod manifest;
pub mod meta;
mod newest;
pub mod partition;
mod record;
mod segment;
pub mod shard;
mod sled_engine;
mod store;
#[cfg(test)]
pub(crate) mod tests;

pub use cache::{Prefetch, ReadMirror};
pub use durability::FsyncPolicy;
pub use fair_queue::{Source, EMBEDDED};
pub use key_filter::KeyFilter;
pub use partition::{Partition, PartitionConfig, PartitionStats};
pub use sled_engine::SledKvsEngine;
pub use store::{choose_backend, lock_dir, partition_dir, KvStore, StoreOptions};

/// A key/value storage engine. Keys and values are bytes (binary-safe, empty value allowed).
/// Handles are cheap to clone and usable from any thread of a multi-threaded tokio runtime.
pub trait KvsEngine: Clone + Send + Sync + 'static {
    /// Sets `key` to `value`. Resolves once the write is durable per the store's fsync policy.
    fn set(&self, key: Bytes, value: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// The value of `key`, or `None`.
    fn get(&self, key: Bytes) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// Removes `key`; [`crate::KvsError::KeyNotFound`] when it is absent.
    fn remove(&self, key: Bytes) -> impl Future<Output = Result<()>> + Send;
}
