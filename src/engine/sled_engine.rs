//! sled 0.34 as a [`KvsEngine`]: the alternative engine, for comparison with kvs's own.
//!
//! Every write is flushed before its future resolves, so an acknowledged write survives a
//! crash as it does with kvs's default fsync policy. Keys and values are held to the same
//! limits as kvs's own engine.
//!
//! The flush is sled's blocking `flush` on tokio's blocking pool, not `flush_async`: in sled
//! 0.34 `flush_async` runs the flush on sled's own I/O threads, and with many writers those
//! threads all end up waiting for a buffer write that needs one of them, so every write hangs
//! (sled issue 1241). Concurrent flushes still share one disk write: each waits until the log
//! is stable up to its own write.

use std::path::Path;

use bytes::Bytes;

use super::KvsEngine;
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::{KvsError, Result};

/// sled 0.34 behind [`KvsEngine`]. Clones share one database.
#[derive(Clone, Debug)]
pub struct SledKvsEngine {
    db: sled::Db,
}

impl SledKvsEngine {
    /// Opens (or creates) the sled database in the directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledKvsEngine> {
        Ok(SledKvsEngine::new(sled::open(path)?))
    }

    /// Wraps a database opened by the caller (say, with a custom `sled::Config`).
    pub fn new(db: sled::Db) -> SledKvsEngine {
        SledKvsEngine { db }
    }

    /// Keys in the database.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(KvsError::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Makes every write so far durable, without blocking the caller's runtime thread.
async fn flush(db: sled::Db) -> Result<()> {
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|e| KvsError::Io(std::io::Error::other(format!("sled flush task: {e}"))))??;
    Ok(())
}

impl KvsEngine for SledKvsEngine {
    fn set(
        &self,
        key: Bytes,
        value: Bytes,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        let db = self.db.clone();
        async move {
            check_key(&key)?;
            if value.len() > VALUE_BYTES_MAX {
                return Err(KvsError::ValueTooLarge {
                    len: value.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
            db.insert(key.as_ref(), value.as_ref())?;
            flush(db).await
        }
    }

    fn get(&self, key: Bytes) -> impl std::future::Future<Output = Result<Option<Bytes>>> + Send {
        let db = self.db.clone();
        async move {
            check_key(&key)?;
            Ok(db.get(key.as_ref())?.map(|v| Bytes::copy_from_slice(&v)))
        }
    }

    fn remove(&self, key: Bytes) -> impl std::future::Future<Output = Result<()>> + Send {
        let db = self.db.clone();
        async move {
            check_key(&key)?;
            if db.remove(key.as_ref())?.is_none() {
                return Err(KvsError::KeyNotFound);
            }
            flush(db).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Guards against values that do not come back as they were written.
    #[test]
    fn set_get_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        block_on(async {
            let key = Bytes::from_static(b"key\0binary");
            assert_eq!(engine.get(key.clone()).await.unwrap(), None);
            engine
                .set(key.clone(), Bytes::from_static(b"v1"))
                .await
                .unwrap();
            assert_eq!(engine.get(key.clone()).await.unwrap().unwrap(), "v1");
            engine.set(key.clone(), Bytes::new()).await.unwrap();
            assert_eq!(engine.get(key.clone()).await.unwrap().unwrap(), "");
            engine.remove(key.clone()).await.unwrap();
            assert_eq!(engine.get(key).await.unwrap(), None);
        });
    }

    /// Guards against removing an absent key looking like a success.
    #[test]
    fn remove_missing_key_is_key_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        let err = block_on(engine.remove(Bytes::from_static(b"absent"))).unwrap_err();
        assert!(matches!(err, KvsError::KeyNotFound), "{err:?}");
        assert_eq!(err.to_string(), "Key not found");
    }

    /// Guards against acknowledged writes that a reopen does not see.
    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SledKvsEngine::open(dir.path()).unwrap();
            block_on(async {
                for i in 0..100u32 {
                    let key = Bytes::from(format!("key{i}"));
                    engine
                        .set(key, Bytes::from(format!("value{i}")))
                        .await
                        .unwrap();
                }
                engine.remove(Bytes::from_static(b"key7")).await.unwrap();
            });
        }
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        block_on(async {
            for i in 0..100u32 {
                let got = engine.get(Bytes::from(format!("key{i}"))).await.unwrap();
                if i == 7 {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got.unwrap(), format!("value{i}").as_bytes());
                }
            }
        });
    }

    /// Set by [`acknowledged_writes_survive_a_crash`] for the child process it starts.
    const CRASH_DIR_ENV: &str = "KVS_TEST_SLED_CRASH_DIR";
    const CRASH_KEYS: u32 = 20;

    /// Guards against acknowledging a write that sled still holds only in memory: a child
    /// process writes and aborts (no destructors, no flush on drop), then the parent reopens.
    #[test]
    fn acknowledged_writes_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "engine::sled_engine::tests::crash_child_writes_then_aborts",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child should have aborted: {status}");
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        block_on(async {
            for i in 0..CRASH_KEYS {
                let got = engine.get(Bytes::from(format!("key{i}"))).await.unwrap();
                assert_eq!(
                    got.as_deref(),
                    Some(format!("value{i}").as_bytes()),
                    "key{i}"
                );
            }
        });
    }

    /// The child half of [`acknowledged_writes_survive_a_crash`]; does nothing on its own.
    #[test]
    fn crash_child_writes_then_aborts() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let engine = SledKvsEngine::open(dir).unwrap();
        block_on(async {
            for i in 0..CRASH_KEYS {
                let key = Bytes::from(format!("key{i}"));
                engine
                    .set(key, Bytes::from(format!("value{i}")))
                    .await
                    .unwrap();
            }
        });
        std::process::abort();
    }

    /// Guards against the sled engine accepting what kvs's own engine refuses.
    #[test]
    fn oversized_keys_and_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        let big_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
        let big_value = Bytes::from(vec![b'v'; VALUE_BYTES_MAX + 1]);
        block_on(async {
            let err = engine.set(big_key.clone(), Bytes::new()).await.unwrap_err();
            assert!(matches!(err, KvsError::KeyTooLarge { .. }), "{err:?}");
            let err = engine
                .set(Bytes::from_static(b"k"), big_value)
                .await
                .unwrap_err();
            assert!(matches!(err, KvsError::ValueTooLarge { .. }), "{err:?}");
            let err = engine.get(big_key).await.unwrap_err();
            assert!(matches!(err, KvsError::KeyTooLarge { .. }), "{err:?}");
        });
    }

    /// Guards against concurrent writers hanging in the flush (sled 0.34's `flush_async`
    /// deadlocks once its I/O threads are all waiting in flushes). The writers run on their own
    /// thread so that a hang fails the test instead of stalling the run.
    #[test]
    fn many_concurrent_writers_all_finish() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writers = engine.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..64)
                    .map(|t| {
                        let engine = writers.clone();
                        tokio::spawn(async move {
                            for i in 0..20 {
                                let key = Bytes::from(format!("t{t}-k{i}"));
                                engine.set(key, Bytes::from_static(b"v")).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("concurrent sets did not finish within 60 s");
        let got = block_on(engine.get(Bytes::from_static(b"t63-k19"))).unwrap();
        assert_eq!(got.unwrap(), "v");
    }

    /// Guards against futures that cannot be spawned on a multi-threaded runtime.
    #[test]
    fn futures_run_on_a_multi_threaded_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledKvsEngine::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let task = rt.spawn(async move {
            engine
                .set(Bytes::from_static(b"k"), Bytes::from_static(b"v"))
                .await?;
            engine.get(Bytes::from_static(b"k")).await
        });
        let got = rt.block_on(task).unwrap().unwrap();
        assert_eq!(got.unwrap(), "v");
    }
}
