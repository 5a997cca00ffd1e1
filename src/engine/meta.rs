//! The store's identity file `kvs.meta`: which engine owns the directory, the format version
//! and the partition count (fixed when the directory is created), guarded by a checksum.
//!
//! Text, one `name value` pair a line, the last line `crc32c <hex>` over the lines before it:
//! ```text
//! kvs-meta 1
//! engine kvs
//! partitions 16
//! crc32c 1a2b3c4d
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{KvsError, Result};

pub const META_NAME: &str = "kvs.meta";
const META_VERSION: u32 = 1;

/// Which engine a directory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Kvs,
    Sled,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Kvs => "kvs",
            EngineKind::Sled => "sled",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "kvs" => Ok(EngineKind::Kvs),
            "sled" => Ok(EngineKind::Sled),
            o => Err(format!("unknown engine '{o}' (expected kvs or sled)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    pub engine: EngineKind,
    pub partitions: u32,
}

impl StoreMeta {
    fn encode(&self) -> String {
        let body = format!(
            "kvs-meta {META_VERSION}\nengine {}\npartitions {}\n",
            self.engine.name(),
            self.partitions
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc32c {crc:08x}\n")
    }

    fn decode(text: &str, path: &Path) -> Result<StoreMeta> {
        let corrupt = |reason: &str| KvsError::Corrupt {
            file: path.to_owned(),
            offset: 0,
            reason: reason.to_owned(),
        };
        let crc_at = text
            .rfind("crc32c ")
            .ok_or_else(|| corrupt("no checksum line"))?;
        let (body, crc_line) = text.split_at(crc_at);
        let stored = u32::from_str_radix(crc_line.trim_start_matches("crc32c ").trim(), 16)
            .map_err(|_| corrupt("unreadable checksum"))?;
        if stored != crc32c::crc32c(body.as_bytes()) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut engine = None;
        let mut partitions = None;
        for line in body.lines() {
            match line.split_once(' ') {
                Some(("kvs-meta", v)) if v == META_VERSION.to_string() => {}
                Some(("kvs-meta", v)) => {
                    return Err(corrupt(&format!("version {v} is not supported")))
                }
                Some(("engine", v)) => engine = Some(v.parse().map_err(|e: String| corrupt(&e))?),
                Some(("partitions", v)) => partitions = v.parse::<u32>().ok(),
                _ => return Err(corrupt(&format!("unexpected line '{line}'"))),
            }
        }
        let meta = StoreMeta {
            engine: engine.ok_or_else(|| corrupt("no engine line"))?,
            partitions: partitions.ok_or_else(|| corrupt("no partitions line"))?,
        };
        if meta.partitions == 0 || meta.partitions > crate::limits::PARTITIONS_MAX {
            return Err(corrupt("partition count out of range"));
        }
        // Only the canonical text is accepted, so no flipped bit (a hex digit's case, a
        // newline turned into other white space) can pass as the same file.
        if meta.encode() != text {
            return Err(corrupt("not in canonical form"));
        }
        Ok(meta)
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(META_NAME)
    }

    /// Reads the meta file; `Ok(None)` if the directory has none yet.
    pub fn load(dir: &Path) -> Result<Option<StoreMeta>> {
        let path = Self::path(dir);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(KvsError::Config(format!(
                "{} is a symbolic link; kvs does not follow links inside its data directory",
                path.display()
            )));
        }
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| KvsError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    reason: "not UTF-8".into(),
                })?;
                Self::decode(&text, &path).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the meta file durably: temporary file, fsync, rename, directory fsync.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let tmp = super::segment::tmp_path(&path);
        let mut f = owner_only()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(self.encode().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(())
    }

    /// Loads the meta, or records `fresh` if the directory is new. A directory of the other
    /// engine is refused with [`KvsError::WrongEngine`] and left untouched.
    pub fn load_or_create(dir: &Path, fresh: StoreMeta) -> Result<StoreMeta> {
        match Self::load(dir)? {
            Some(m) if m.engine != fresh.engine => Err(KvsError::WrongEngine {
                on_disk: m.engine.name().into(),
                requested: fresh.engine.name().into(),
            }),
            Some(m) => Ok(m),
            None => {
                fresh.store(dir)?;
                Ok(fresh)
            }
        }
    }
}

/// Open options that create files readable by the owner only.
pub fn owner_only() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    // A link in the data directory is never followed out of it.
    o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    o
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) with owner-only permissions where missing, and syncs the parent.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_refuses_other_engine() {
        // Guards against a sled directory being opened as kvs (or the reverse).
        let dir = tempfile::tempdir().unwrap();
        let m = StoreMeta {
            engine: EngineKind::Kvs,
            partitions: 4,
        };
        assert_eq!(StoreMeta::load_or_create(dir.path(), m.clone()).unwrap(), m);
        assert_eq!(StoreMeta::load(dir.path()).unwrap(), Some(m));
        let err = StoreMeta::load_or_create(
            dir.path(),
            StoreMeta {
                engine: EngineKind::Sled,
                partitions: 1,
            },
        );
        assert!(matches!(err, Err(KvsError::WrongEngine { .. })));
    }

    #[test]
    fn meta_flipped_bit_is_refused() {
        // Guards against a damaged meta file changing the partition count silently.
        let dir = tempfile::tempdir().unwrap();
        StoreMeta {
            engine: EngineKind::Kvs,
            partitions: 16,
        }
        .store(dir.path())
        .unwrap();
        let path = StoreMeta::path(dir.path());
        let good = fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, &bad).unwrap();
            assert!(StoreMeta::load(dir.path()).is_err(), "bit {bit}");
        }
    }
}
