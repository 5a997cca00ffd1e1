//! The active segment's hint, written as the segment grows.
//!
//! Each batch's entries go to a [`HintBuilder`]; once a chunk of them has gathered, the writer
//! loop writes it to `<id>.hint.active` (never synced on its own). Sealing the segment writes
//! the rest and the header, syncs the file and renames it to `<id>.hint`. So a segment's hint is
//! never whole in memory (it was: about 20 MB for a 64 MiB segment of 100-byte values, copied
//! once more at each rotation), and nothing of it is under a hint's name before it is complete.
//!
//! A hint is an optimisation: when writing one fails, the segment gets none (its next open
//! scans it) and the partition goes on. What must never happen is a hint that checks out but
//! lacks entries: every entry written to the segment is pushed, or the hint is dropped.

use std::io;
use std::path::Path;
use std::rc::Rc;

use super::hint::{HintBuilder, HintEntry};
use super::partition::write_all;
use super::segment;
use crate::io_backend::{Disk, DiskFile};

pub struct ActiveHint<F> {
    segment: u32,
    builder: HintBuilder,
    file: HintFile<F>,
    /// The buffer of the last chunk written, reused for the next.
    spare: Vec<u8>,
}

enum HintFile<F> {
    /// Not made yet: it is made by the first chunk's write (a small segment's at its seal), so
    /// an open or a partition that writes little changes no file.
    NotMade,
    Made(Rc<F>),
    /// Given up (a write failed, or the partition closed): nothing more is written, and at the
    /// end the file, if it was made, is removed.
    Stopped {
        made: bool,
    },
}

/// A chunk to write: the file (`None`: make it first), the offset and the bytes.
pub struct HintChunk<F> {
    segment: u32,
    file: Option<Rc<F>>,
    pos: u64,
    bytes: Vec<u8>,
}

impl<F: DiskFile> ActiveHint<F> {
    pub fn new(segment: u32) -> ActiveHint<F> {
        ActiveHint {
            segment,
            builder: HintBuilder::default(),
            file: HintFile::NotMade,
            spare: Vec::new(),
        }
    }

    pub fn segment(&self) -> u32 {
        self.segment
    }

    pub fn push(&mut self, e: &HintEntry<'_>) {
        if !matches!(self.file, HintFile::Stopped { .. }) {
            self.builder.push(e);
        }
    }

    /// A chunk ready to write, if enough entries have gathered.
    pub fn take_chunk(&mut self) -> Option<HintChunk<F>> {
        let file = match &self.file {
            HintFile::NotMade => None,
            HintFile::Made(f) => Some(f.clone()),
            HintFile::Stopped { .. } => return None,
        };
        if !self.builder.wants_write() {
            return None;
        }
        let (pos, bytes) = self.builder.take(std::mem::take(&mut self.spare));
        Some(HintChunk {
            segment: self.segment,
            file,
            pos,
            bytes,
        })
    }

    /// Records how the write of a chunk taken from this hint went.
    pub fn wrote(&mut self, result: io::Result<(Rc<F>, Vec<u8>)>) {
        match result {
            Ok((file, buf)) => {
                self.file = HintFile::Made(file);
                self.spare = buf;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot write the hint of segment {}: {e}; it will have none",
                    self.segment
                );
                self.stop();
            }
        }
    }

    /// Writes every chunk that is ready (where nothing else can reach the hint meanwhile).
    pub async fn write_ready<D: Disk<File = F>>(&mut self, disk: &D, dir: &Path) {
        while let Some(chunk) = self.take_chunk() {
            let result = chunk.write(disk, dir).await;
            self.wrote(result);
        }
    }

    /// Gives the hint up: nothing more is written. Returns whether its file may exist (for the
    /// caller to remove with [`ActiveHint::discard`]).
    pub fn stop(&mut self) -> bool {
        let made = match self.file {
            HintFile::NotMade => false,
            HintFile::Made(_) => true,
            HintFile::Stopped { made } => made,
        };
        self.file = HintFile::Stopped { made };
        self.builder = HintBuilder::default();
        self.spare = Vec::new();
        made
    }

    /// Completes the hint of the sealed segment, whose records end at `segment_len` and are on
    /// disk: writes the rest and the header, syncs, and renames the file to `<id>.hint`. On any
    /// failure, or if the hint was given up, the file is removed and the segment has no hint.
    pub async fn seal<D: Disk<File = F>>(mut self, disk: &D, dir: &Path, segment_len: u64) {
        let id = u64::from(self.segment);
        let active = segment::active_hint_path(dir, id);
        let file = match std::mem::replace(&mut self.file, HintFile::NotMade) {
            HintFile::Stopped { made } => {
                if made {
                    Self::discard(disk, dir, self.segment).await;
                }
                return;
            }
            HintFile::NotMade => None,
            HintFile::Made(f) => Some(f),
        };
        let builder = self.builder;
        let done = async {
            let file = match file {
                Some(f) => f,
                None => make(disk, &active).await?,
            };
            write_rest(&*file, builder, id, segment_len).await?;
            file.sync_data().await?;
            disk.rename(&active, &segment::hint_path(dir, id)).await
        }
        .await;
        if let Err(e) = done {
            tracing::warn!("cannot write the hint of segment {id}: {e}");
            Self::discard(disk, dir, self.segment).await;
        }
    }

    /// Removes the file of a hint that will not be completed (its segment failed to seal).
    pub async fn abandon<D: Disk<File = F>>(mut self, disk: &D, dir: &Path) {
        if self.stop() {
            Self::discard(disk, dir, self.segment).await;
        }
    }

    /// Removes the file of segment `segment`'s active hint, if there is one.
    pub async fn discard<D: Disk<File = F>>(disk: &D, dir: &Path, segment: u32) {
        let path = segment::active_hint_path(dir, u64::from(segment));
        if let Err(e) = disk.remove(&path).await {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}; the next open will", path.display());
            }
        }
    }
}

impl<F: DiskFile> HintChunk<F> {
    /// Writes the chunk, making the file first if it is the first; gives the file and the
    /// chunk's buffer back.
    pub async fn write<D: Disk<File = F>>(
        self,
        disk: &D,
        dir: &Path,
    ) -> io::Result<(Rc<F>, Vec<u8>)> {
        let file = match self.file {
            Some(f) => f,
            None => {
                make(
                    disk,
                    &segment::active_hint_path(dir, u64::from(self.segment)),
                )
                .await?
            }
        };
        let buf = write_all(&*file, self.bytes, self.pos).await?;
        Ok((file, buf))
    }
}

/// Writes what is left of a hint in `file`: the entries `builder` still holds and the checksum,
/// then the header (last, so that a hint cut short never checks out). The caller syncs.
pub async fn write_rest<F: DiskFile>(
    file: &F,
    builder: HintBuilder,
    id: u64,
    segment_len: u64,
) -> io::Result<()> {
    let (header, pos, rest) = builder.finish(id, segment_len);
    write_all(file, rest, pos).await?;
    write_all(file, header, 0).await?;
    Ok(())
}

/// Makes an empty hint file at `path` (one left by an earlier process is emptied).
async fn make<D: Disk>(disk: &D, path: &Path) -> io::Result<Rc<D::File>> {
    let f = disk.open(path, true).await?;
    f.set_len(0).await?;
    Ok(Rc::new(f))
}
