//! Where table files go: a local folder (temp file, fsync, rename) or an S3-compatible bucket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use kpiflow_core::CoreError;
use kpiflow_core::storage::{Bucket, Location, StoreOptions};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{EncodedFile, Table, TableRow, WrittenFile, encode_rows, write_encoded};
use crate::{Compression, SinkError};

fn joined(e: tokio::task::JoinError) -> SinkError {
    SinkError::Internal(format!("write task failed: {e}"))
}

/// The root of the sink's tables, opened.
#[derive(Debug, Clone)]
pub enum TableStore {
    /// A local (or mounted) folder.
    Local(PathBuf),
    /// A prefix in an S3-compatible bucket.
    Bucket(Bucket),
}

impl TableStore {
    /// Opens `location` with the S3 settings of `sink.object_store` (validated first).
    pub fn open(location: &Location, options: &StoreOptions) -> Result<TableStore, SinkError> {
        Ok(match location.open("sink.object_store", options)? {
            Some(bucket) => TableStore::Bucket(bucket),
            None => TableStore::Local(
                location
                    .local()
                    .expect("a location without a bucket is a folder")
                    .to_path_buf(),
            ),
        })
    }

    /// The folder, when the tables are local.
    pub fn local(&self) -> Option<&Path> {
        match self {
            TableStore::Local(dir) => Some(dir),
            TableStore::Bucket(_) => None,
        }
    }

    /// Writes `rows`, one new file per touched partition, each committed atomically (see
    /// [`super::write_rows`] for what a failure part-way leaves).
    pub async fn write<R: TableRow + Send + 'static>(
        &self,
        rows: Vec<R>,
        compression: Compression,
    ) -> Result<Vec<WrittenFile>, SinkError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Encoding is CPU work: off the async threads.
        let files = tokio::task::spawn_blocking(move || encode_rows(&rows, compression))
            .await
            .map_err(joined)??;
        self.commit(files).await
    }

    /// Commits encoded files: in a folder each atomically (temp name, fsync, rename), in a
    /// bucket each with one PUT.
    pub(crate) async fn commit(
        &self,
        files: Vec<EncodedFile>,
    ) -> Result<Vec<WrittenFile>, SinkError> {
        match self {
            // Blocks on fsync: off the async threads.
            TableStore::Local(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    files.iter().map(|f| write_encoded(&dir, f)).collect()
                })
                .await
                .map_err(joined)?
            }
            TableStore::Bucket(bucket) => {
                let store = bucket.store();
                let mut written = Vec::with_capacity(files.len());
                for file in files {
                    let relative = file.relative_path();
                    let url = bucket.url(&relative, false);
                    let done = file.written(PathBuf::from(&url));
                    store
                        .put(&bucket.key(&relative), PutPayload::from(file.bytes))
                        .await
                        .map_err(|e| CoreError::storage(format!("writing {url}"), e))?;
                    written.push(done);
                }
                Ok(written)
            }
        }
    }

    /// The store and the root key of the tables, for listing, reading and deleting files (a
    /// folder, which must exist, is opened through `object_store`'s local filesystem).
    pub(crate) fn object_store(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath), SinkError> {
        match self {
            TableStore::Bucket(bucket) => Ok((bucket.store(), bucket.key(""))),
            TableStore::Local(dir) => {
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| CoreError::storage(format!("opening {}", dir.display()), e))?;
                Ok((Arc::new(fs), ObjectPath::default()))
            }
        }
    }

    /// The listing URL of `table`'s folder, which may not exist yet.
    pub(crate) fn table_url(&self, table: Table) -> Result<ListingTableUrl, SinkError> {
        let text = match self {
            TableStore::Bucket(bucket) => bucket.url(table.name(), true),
            TableStore::Local(dir) => {
                let folder = table.dir(dir);
                let absolute: PathBuf = std::path::absolute(&folder)
                    .map_err(|e| SinkError::io("resolving", &folder, e))?;
                let text = absolute.to_str().ok_or_else(|| {
                    SinkError::io(
                        "reading",
                        &folder,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "the path is not UTF-8",
                        ),
                    )
                })?;
                // The trailing slash makes it a folder even when it does not exist yet.
                format!("{}/", text.trim_end_matches('/'))
            }
        };
        ListingTableUrl::parse(text).map_err(SinkError::datafusion)
    }

    /// Lets `ctx` read this store's URLs (a no-op for local folders, which DataFusion reads
    /// by itself).
    pub(crate) fn register(&self, ctx: &SessionContext) {
        if let TableStore::Bucket(bucket) = self {
            ctx.register_object_store(&bucket.root_url(), bucket.store());
        }
    }
}

impl std::fmt::Display for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableStore::Local(dir) => write!(f, "{}", dir.display()),
            TableStore::Bucket(bucket) => f.write_str(bucket.url("", false).trim_end_matches('/')),
        }
    }
}

impl From<&str> for TableStore {
    fn from(dir: &str) -> Self {
        TableStore::Local(PathBuf::from(dir))
    }
}

impl From<&Path> for TableStore {
    fn from(dir: &Path) -> Self {
        TableStore::Local(dir.to_path_buf())
    }
}

impl From<PathBuf> for TableStore {
    fn from(dir: PathBuf) -> Self {
        TableStore::Local(dir)
    }
}

impl From<&PathBuf> for TableStore {
    fn from(dir: &PathBuf) -> Self {
        TableStore::Local(dir.clone())
    }
}

impl From<&TableStore> for TableStore {
    fn from(store: &TableStore) -> Self {
        store.clone()
    }
}
