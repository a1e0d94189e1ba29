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
//! Two stores: [`LocalDirStore`] (a folder; one machine, or a shared volume) and
//! [`ObjectStoreCheckpoints`] (an S3-compatible bucket; a cluster without shared disks).
//! [`open`] picks one from `[processor.checkpoint]`.
//!
//! Every event topic has the same partition count and events are keyed by shop, so partition
//! `p` of every topic holds the same shops: task `p` owns them, and the consumer group's range
//! assignor hands all topics' partition `p` to one member.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kpiflow_core::CoreError;
use kpiflow_core::storage::{Bucket, Location};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::ProcessorError;
use crate::config::CheckpointConfig;

/// Bumped when the file layout changes; [`decode`] still reads every older format.
/// 1: no cluster id. 2: adds [`Checkpoint::cluster_id`].
const FORMAT: u32 = 3;

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
    /// The Kafka cluster the offsets belong to (`None`: unknown, e.g. format 1). Offsets of
    /// another cluster mean nothing: restoring them on a re-created broker would replay the
    /// new topics on top of the old state and count events twice.
    pub cluster_id: Option<String>,
    /// How many partitions the event topics had (`None`: unknown, formats 1 and 2). A shop's
    /// partition is its murmur2 hash modulo this count, so under another count the state
    /// belongs to other tasks.
    pub partitions: Option<i32>,
}

/// Format 2, read for upgrades: the same fields without the partition count.
#[derive(Deserialize)]
struct CheckpointV2 {
    format: u32,
    partition: i32,
    offsets: Vec<(String, i64)>,
    engine: Vec<u8>,
    written_at: DateTime<Utc>,
    cluster_id: Option<String>,
}

/// Format 1, read for upgrades: the same fields without the cluster id.
#[derive(Deserialize)]
struct CheckpointV1 {
    format: u32,
    partition: i32,
    offsets: Vec<(String, i64)>,
    engine: Vec<u8>,
    written_at: DateTime<Utc>,
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
            cluster_id: None,
            partitions: None,
        }
    }

    /// The same checkpoint, marked as written while the event topics had `partitions`.
    pub fn with_partitions(mut self, partitions: i32) -> Checkpoint {
        self.partitions = Some(partitions);
        self
    }

    /// The same checkpoint, marked as covering offsets of Kafka cluster `cluster_id`.
    pub fn in_cluster(mut self, cluster_id: Option<String>) -> Checkpoint {
        self.cluster_id = cluster_id;
        self
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
    /// Where `partition`'s checkpoint lives (a path or URL), for messages.
    fn name(&self, partition: i32) -> String;
}

/// The store `cfg` names, for consumer group `group` (its own subfolder or key prefix).
pub fn open(
    cfg: &CheckpointConfig,
    group: &str,
) -> Result<Arc<dyn CheckpointStore>, ProcessorError> {
    let location = cfg.dir.join(group);
    match location.open("processor.checkpoint.object_store", &cfg.object_store)? {
        None => {
            let dir = location
                .local()
                .expect("a location without a bucket is a folder");
            Ok(Arc::new(LocalDirStore::new(dir)?))
        }
        Some(bucket) => Ok(Arc::new(ObjectStoreCheckpoints::new(bucket, location)?)),
    }
}

fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    postcard::to_stdvec(checkpoint).expect("checkpoints encode")
}

/// Decodes the checkpoint of `partition` read from `name`, refusing another format or
/// another partition's file (a copy under the wrong name would restore the wrong shops).
fn decode(bytes: &[u8], partition: i32, name: &str) -> Result<Checkpoint, ProcessorError> {
    let undecodable = |e: postcard::Error| ProcessorError::Checkpoint {
        problem: format!("{name}: cannot decode: {e}"),
    };
    // Every format starts with its number, so it can be read before the rest.
    let (format, _) = postcard::take_from_bytes::<u32>(bytes).map_err(undecodable)?;
    let cp = match format {
        1 => {
            let v1: CheckpointV1 = postcard::from_bytes(bytes).map_err(undecodable)?;
            Checkpoint {
                format: v1.format,
                partition: v1.partition,
                offsets: v1.offsets,
                engine: v1.engine,
                written_at: v1.written_at,
                cluster_id: None,
                partitions: None,
            }
        }
        2 => {
            let v2: CheckpointV2 = postcard::from_bytes(bytes).map_err(undecodable)?;
            Checkpoint {
                format: v2.format,
                partition: v2.partition,
                offsets: v2.offsets,
                engine: v2.engine,
                written_at: v2.written_at,
                cluster_id: v2.cluster_id,
                partitions: None,
            }
        }
        _ => postcard::from_bytes::<Checkpoint>(bytes).map_err(undecodable)?,
    };
    if cp.format > FORMAT || cp.partition != partition {
        return Err(ProcessorError::Checkpoint {
            problem: format!(
                "{name}: format {} for partition {}, expected format {FORMAT} or older for partition {partition}",
                cp.format, cp.partition
            ),
        });
    }
    Ok(cp)
}

fn file_name(partition: i32) -> String {
    format!("partition-{partition}.ckpt")
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
        self.dir.join(file_name(partition))
    }
}

impl CheckpointStore for LocalDirStore {
    fn name(&self, partition: i32) -> String {
        self.path(partition).display().to_string()
    }

    fn load(&self, partition: i32) -> Result<Option<Checkpoint>, ProcessorError> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        decode(&bytes, partition, &path.display().to_string()).map(Some)
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), ProcessorError> {
        use std::io::Write;
        let path = self.path(checkpoint.partition);
        let temp = path.with_extension(format!("ckpt.tmp-{}", std::process::id()));
        let bytes = encode(checkpoint);
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

/// Checkpoints as objects in an S3-compatible bucket: `<prefix>/<group>/partition-<p>.ckpt`.
///
/// A PUT replaces an object atomically and S3 reads are strongly consistent, so the next
/// owner of a partition, on any machine, reads either the old checkpoint or the new one,
/// whole. [`CheckpointStore`] is synchronous because the consumer's rebalance callback loads
/// checkpoints, so requests run on a small runtime of their own and the caller waits for
/// them: that works from any thread, inside the processor's runtime or not.
#[derive(Debug)]
pub struct ObjectStoreCheckpoints {
    bucket: Bucket,
    location: Location,
    /// `Some` until dropped: a runtime must not be dropped inside another one's worker.
    io: Option<tokio::runtime::Runtime>,
}

impl ObjectStoreCheckpoints {
    /// A store at `bucket`'s prefix; `location` names it in messages.
    pub fn new(
        bucket: Bucket,
        location: Location,
    ) -> Result<ObjectStoreCheckpoints, ProcessorError> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kpiflow-checkpoint-io")
            .enable_all()
            .build()
            .map_err(|e| ProcessorError::Checkpoint {
                problem: format!("starting the object-storage client for {location}: {e}"),
            })?;
        Ok(ObjectStoreCheckpoints {
            bucket,
            location,
            io: Some(io),
        })
    }

    /// Runs `request` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        request: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> Result<T, object_store::Error> {
        let io = self.io.as_ref().expect("present until dropped");
        futures::executor::block_on(io.spawn(request)).unwrap_or_else(|e| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })
        })
    }

    fn url(&self, partition: i32) -> String {
        format!("{}/{}", self.location, file_name(partition))
    }
}

impl Drop for ObjectStoreCheckpoints {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl CheckpointStore for ObjectStoreCheckpoints {
    fn name(&self, partition: i32) -> String {
        self.url(partition)
    }

    fn load(&self, partition: i32) -> Result<Option<Checkpoint>, ProcessorError> {
        let store: Arc<dyn ObjectStore> = self.bucket.store();
        let key = self.bucket.key(&file_name(partition));
        let got = self.run(async move {
            match store.get(&key).await {
                Ok(object) => object.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let url = self.url(partition);
        match got.map_err(|e| CoreError::storage(format!("reading {url}"), e))? {
            None => Ok(None),
            Some(bytes) => decode(&bytes, partition, &url).map(Some),
        }
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), ProcessorError> {
        let store = self.bucket.store();
        let key = self.bucket.key(&file_name(checkpoint.partition));
        let payload = PutPayload::from(encode(checkpoint));
        self.run(async move { store.put(&key, payload).await.map(|_| ()) })
            .map_err(|e| {
                CoreError::storage(format!("writing {}", self.url(checkpoint.partition)), e)
            })?;
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
    fn older_formats_still_restore_without_what_they_lacked() {
        #[derive(Serialize)]
        struct V1<'a> {
            format: u32,
            partition: i32,
            offsets: Vec<(&'a str, i64)>,
            engine: Vec<u8>,
            written_at: DateTime<Utc>,
        }
        let at = Utc::now();
        let bytes = postcard::to_stdvec(&V1 {
            format: 1,
            partition: 4,
            offsets: vec![("events.orders", 7)],
            engine: vec![9, 9],
            written_at: at,
        })
        .unwrap();
        let cp = decode(&bytes, 4, "v1").unwrap();
        assert_eq!(cp.offset("events.orders"), Some(7));
        assert_eq!(
            (cp.engine, cp.cluster_id, cp.written_at),
            (vec![9, 9], None, at)
        );
        let v3 = Checkpoint::new(4, vec![], vec![1])
            .in_cluster(Some("c-1".into()))
            .with_partitions(6);
        let back = decode(&encode(&v3), 4, "v3").unwrap();
        assert_eq!(back.cluster_id.as_deref(), Some("c-1"));
        assert_eq!(back.partitions, Some(6));
        assert!(
            decode(&encode(&v3), 5, "v3").is_err(),
            "another partition's file"
        );
        // Format 2: a cluster id, no partition count.
        #[derive(Serialize)]
        struct V2<'a> {
            format: u32,
            partition: i32,
            offsets: Vec<(&'a str, i64)>,
            engine: Vec<u8>,
            written_at: DateTime<Utc>,
            cluster_id: Option<&'a str>,
        }
        let bytes = postcard::to_stdvec(&V2 {
            format: 2,
            partition: 4,
            offsets: vec![("events.orders", 8)],
            engine: vec![7],
            written_at: at,
            cluster_id: Some("c-2"),
        })
        .unwrap();
        let cp = decode(&bytes, 4, "v2").unwrap();
        assert_eq!(
            (
                cp.offset("events.orders"),
                cp.cluster_id.as_deref(),
                cp.partitions
            ),
            (Some(8), Some("c-2"), None)
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
