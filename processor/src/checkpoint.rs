//! Durable processor state: one checkpoint per input partition number, holding the engine's
//! state and the input offsets it covers (Flink / Arroyo style: offsets live inside the state,
//! so restoring both together is exactly-once on any broker with consumer groups).
//!
//! ```text
//!   events.*/p ──► task p (Engine) ──► outputs (upserts) ──► checkpoint p = {state, offsets}
//!                      ▲                                          │
//!                      └──────── restore on assignment ◄──────────┘
//! ```
//!
//! Every event topic has the same partition count and events are keyed by shop, so partition
//! `p` of every topic holds the same shops: task `p` owns them, and the consumer group's range
//! assignor hands all topics' partition `p` to one member.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ProcessorError;

/// Bumped when the file layout changes incompatibly.
const FORMAT: u32 = 1;

/// One task's durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// File format version.
    pub format: u32,
    /// The input partition number.
    pub partition: i32,
    /// Next offset to read per event topic (by topic suffix, e.g. `events.orders`).
    pub offsets: Vec<(String, i64)>,
    /// [`crate::Engine::snapshot`].
    pub engine: Vec<u8>,
    /// When it was written (wall clock).
    pub written_at: DateTime<Utc>,
}

impl Checkpoint {
    /// A checkpoint of `engine` bytes covering `offsets`.
    pub fn new(partition: i32, offsets: Vec<(String, i64)>, engine: Vec<u8>) -> Checkpoint {
        Checkpoint {
            format: FORMAT,
            partition,
            offsets,
            engine,
            written_at: Utc::now(),
        }
    }

    /// The next offset of `topic_suffix`, if the checkpoint has one.
    pub fn offset(&self, topic_suffix: &str) -> Option<i64> {
        self.offsets
            .iter()
            .find(|(t, _)| t == topic_suffix)
            .map(|(_, o)| *o)
    }
}

/// Where checkpoints live.
pub trait CheckpointStore: Send + Sync {
    /// The newest checkpoint of `partition`, if any.
    fn load(&self, partition: i32) -> Result<Option<Checkpoint>, ProcessorError>;
    /// Replaces `checkpoint.partition`'s checkpoint; durable when this returns.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), ProcessorError>;
}

/// Checkpoints as files in a local (or shared, e.g. NFS) directory: `partition-<p>.ckpt`,
/// each written to a temporary name, synced, then renamed, so a crash leaves the old one.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    dir: PathBuf,
}

fn io(what: String) -> impl Fn(std::io::Error) -> ProcessorError {
    move |e| ProcessorError::Checkpoint {
        problem: format!("{what}: {e}"),
    }
}

impl LocalDirStore {
    /// A store in `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> Result<LocalDirStore, ProcessorError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(LocalDirStore { dir })
    }

    fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.ckpt"))
    }
}

impl CheckpointStore for LocalDirStore {
    fn load(&self, partition: i32) -> Result<Option<Checkpoint>, ProcessorError> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let cp: Checkpoint =
            postcard::from_bytes(&bytes).map_err(|e| ProcessorError::Checkpoint {
                problem: format!("{}: cannot decode: {e}", path.display()),
            })?;
        if cp.format != FORMAT || cp.partition != partition {
            return Err(ProcessorError::Checkpoint {
                problem: format!(
                    "{}: format {} for partition {}, expected format {FORMAT} for partition {partition}",
                    path.display(),
                    cp.format,
                    cp.partition
                ),
            });
        }
        Ok(Some(cp))
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), ProcessorError> {
        use std::io::Write;
        let path = self.path(checkpoint.partition);
        let temp = path.with_extension(format!("ckpt.tmp-{}", std::process::id()));
        let bytes = postcard::to_stdvec(checkpoint).expect("checkpoints encode");
        let mut f =
            std::fs::File::create(&temp).map_err(io(format!("creating {}", temp.display())))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("writing {}", temp.display())))?;
        std::fs::rename(&temp, &path).map_err(io(format!("renaming to {}", path.display())))?;
        // The rename itself must survive a power cut.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", self.dir.display())))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path().join("group")).unwrap();
        assert_eq!(store.load(3).unwrap(), None);
        let first = Checkpoint::new(3, vec![("events.orders".into(), 10)], vec![1, 2, 3]);
        store.save(&first).unwrap();
        let second = Checkpoint::new(3, vec![("events.orders".into(), 20)], vec![4]);
        store.save(&second).unwrap();
        let got = store.load(3).unwrap().unwrap();
        assert_eq!(got, second);
        assert_eq!(got.offset("events.orders"), Some(20));
        assert_eq!(got.offset("events.ads"), None);
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("group")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_corrupt_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("partition-0.ckpt"), b"garbage").unwrap();
        let err = store.load(0).unwrap_err().to_string();
        assert!(err.contains("partition-0.ckpt: cannot decode"), "{err}");
    }
}
