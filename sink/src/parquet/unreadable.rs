//! Table files whose Parquet footer cannot be read: found by name, and hidden from a query on request.
//!
//! DataFusion reports a truncated or overwritten file as "Corrupt footer" without saying which
//! file, and one such file fails every query over its table. [`find`] reads each committed
//! file's footer (its last 8 bytes, then the metadata they point at: two small ranged reads,
//! never the data pages) and names the files it cannot decode. A query names them in its error
//! (the check runs only after a read failed, so a healthy table pays nothing), and
//! `--skip-unreadable` checks first and lists the tables through a [`HidingStore`] that leaves
//! them out. A file with a sound footer but damaged pages still fails the query.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use datafusion::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kpiflow_core::CoreError;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

use super::store::TableStore;
use super::{FILE_EXTENSION, Table};
use crate::SinkError;

/// Footers checked at once (in a bucket each check is two GETs).
const CONCURRENT_CHECKS: usize = 16;
/// Parquet's trailing bytes: a 4-byte metadata length and the magic `PAR1`.
const FOOTER_BYTES: u64 = 8;
/// Parquet's leading magic `PAR1`.
const HEADER_BYTES: u64 = 4;

/// A committed table file whose footer cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableFile {
    /// The table it belongs to.
    pub table: Table,
    /// Where it is: a local path, or an `s3://` URL.
    pub path: String,
    /// Why it cannot be read, e.g. "Parquet error: Invalid Parquet file. Corrupt footer".
    pub reason: String,
}

impl std::fmt::Display for UnreadableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path, self.reason)
    }
}

/// The store DataFusion reads `tables` through, and the URL it is registered under: for a
/// folder the process's filesystem at `file://` (paths are absolute), for a bucket its client
/// at `s3://<bucket>/`.
pub(crate) fn query_store(tables: &TableStore) -> (Arc<dyn ObjectStore>, Url) {
    match tables {
        TableStore::Local(_) => (
            Arc::new(LocalFileSystem::new()),
            Url::parse("file://").expect("a valid URL"),
        ),
        TableStore::Bucket(bucket) => (bucket.store(), bucket.root_url()),
    }
}

/// Checks the footer of every committed file of every table in `tables` (through `store`, see
/// [`query_store`]) and returns the unreadable ones with their keys in `store`, sorted by path.
pub(crate) async fn find(
    tables: &TableStore,
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<(ObjectPath, UnreadableFile)>, SinkError> {
    let mut files: Vec<(Table, ObjectMeta)> = Vec::new();
    for table in Table::ALL {
        let prefix = tables.table_url(table)?.prefix().clone();
        let listed: Vec<ObjectMeta> = match store.list(Some(&prefix)).try_collect().await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(CoreError::storage(format!("listing {prefix}"), e).into()),
        };
        files.extend(
            listed
                .into_iter()
                .filter(|m| {
                    m.location
                        .filename()
                        .is_some_and(|n| n.ends_with(FILE_EXTENSION) && !n.starts_with('.'))
                })
                .map(|m| (table, m)),
        );
    }
    let checked: Vec<Option<(ObjectPath, UnreadableFile)>> = futures::stream::iter(files)
        .map(|(table, meta)| async move {
            let reason = match footer_problem(store.as_ref(), &meta).await {
                Ok(None) => return Ok(None),
                Ok(Some(reason)) => reason,
                // Deleted since the listing (a compaction merged it): nothing to read.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => {
                    return Err(SinkError::from(CoreError::storage(
                        format!("reading the footer of {}", meta.location),
                        e,
                    )));
                }
            };
            let path = display_path(tables, &meta.location);
            Ok(Some((
                meta.location,
                UnreadableFile {
                    table,
                    path,
                    reason,
                },
            )))
        })
        .buffer_unordered(CONCURRENT_CHECKS)
        .try_collect()
        .await?;
    let mut bad: Vec<_> = checked.into_iter().flatten().collect();
    bad.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    Ok(bad)
}

/// What is wrong with the footer of the file `meta`, or `None` when it decodes.
async fn footer_problem(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
) -> Result<Option<String>, object_store::Error> {
    let size = meta.size;
    if size < HEADER_BYTES + FOOTER_BYTES {
        return Ok(Some(format!(
            "{size} bytes, too short for a Parquet file (at least {})",
            HEADER_BYTES + FOOTER_BYTES
        )));
    }
    let tail = store
        .get_range(&meta.location, size - FOOTER_BYTES..size)
        .await?;
    let tail: [u8; FOOTER_BYTES as usize] = tail.as_ref().try_into().unwrap_or_default();
    let tail = match FooterTail::try_new(&tail) {
        Ok(tail) => tail,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let len = tail.metadata_length() as u64;
    if len + FOOTER_BYTES + HEADER_BYTES > size {
        return Ok(Some(format!(
            "the footer gives {len} bytes of metadata but the file has {size} bytes (truncated?)"
        )));
    }
    let range: Range<u64> = size - FOOTER_BYTES - len..size - FOOTER_BYTES;
    let metadata = store.get_range(&meta.location, range).await?;
    Ok(ParquetMetaDataReader::decode_metadata(&metadata)
        .err()
        .map(|e| e.to_string()))
}

/// A key of the query store as a user would write it: `/abs/path` or `s3://bucket/key`.
fn display_path(tables: &TableStore, location: &ObjectPath) -> String {
    match tables {
        TableStore::Local(_) => format!("/{location}"),
        TableStore::Bucket(bucket) => format!("{}{location}", bucket.root_url()),
    }
}

/// An object store that lists everything its inner store lists except `hidden`; every other
/// call goes straight through. Registered for a query's URL, it keeps unreadable files out
/// of DataFusion's listing, so they are never opened.
#[derive(Debug)]
pub(crate) struct HidingStore {
    inner: Arc<dyn ObjectStore>,
    hidden: HashSet<ObjectPath>,
}

impl HidingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, hidden: HashSet<ObjectPath>) -> Self {
        HidingStore { inner, hidden }
    }
}

impl std::fmt::Display for HidingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (hiding {} unreadable files)",
            self.inner,
            self.hidden.len()
        )
    }
}

#[async_trait::async_trait]
impl ObjectStore for HidingStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let hidden = self.hidden.clone();
        self.inner
            .list(prefix)
            .try_filter(move |m| futures::future::ready(!hidden.contains(&m.location)))
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|m| !self.hidden.contains(&m.location));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
