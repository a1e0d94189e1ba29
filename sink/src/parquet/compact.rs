//! `kpiflow compact`: merges a partition's small files into few large ones.
//!
//! The sink cuts one file per touched partition per flush (every `roll_interval`), so a busy
//! day partition collects hundreds of small files a day, and every query pays to open each one.
//! Compaction rewrites a partition's small files (under [`SMALL_FILE_BYTES`]) as files of up
//! to [`TARGET_FILE_BYTES`]:
//!
//! ```text
//!   date=…/part-a (40 KB) ┐
//!   date=…/part-b (38 KB) ├─► read ─► one batch ─► part-<now> (committed atomically) ─► delete a, b, c
//!   date=…/part-c (41 KB) ┘
//! ```
//!
//! Files of the old `kpi_values` layout (`kpi=<id>/date=…`, see [`super::legacy`]) are merged
//! into their `date=` partition whatever their size and age, their `kpi` column taken from
//! the folder name; the emptied folders are removed.
//!
//! In `kpi_values` the merge keeps each `(key, revision)` once, so the copies a sink's replay
//! after a crash wrote do not pile up: a partition's file holds each revision once after its
//! next compaction.
//!
//! The merged file is committed (temp + rename, or one PUT) *before* the originals are
//! deleted, so no row is ever missing. A crash in between leaves the rows twice, which the
//! `kpi_values` and `kpi_latest` views already show once (`docs/tables.md`), and the next
//! run merges the leftovers with the merged file and drops the copies again. A query that
//! listed a partition just before its originals were deleted can fail to open one of them;
//! running it again succeeds. Files younger than `older_than` are left alone, so the
//! partitions the sink is writing now are not rewritten on every run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use datafusion::arrow::array::{RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use kpiflow_core::CoreError;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use super::store::TableStore;
use super::{DATE_COLUMN, EncodedFile, FILE_EXTENSION, KPI_COLUMN, Table, encode, legacy};
use crate::{Compression, SinkError};

/// Files at least this large are left as they are.
pub const SMALL_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The most input bytes merged into one file.
pub const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Partitions that had files merged.
    pub partitions: usize,
    /// Small files read (and deleted once their merge was committed).
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
    /// Rows rewritten.
    pub rows: usize,
    /// `kpi_values` rows not rewritten because their `(key, revision)` was already in the
    /// merged file (crash copies).
    pub copies_dropped: usize,
    /// Of `files_in`, the old-layout `kpi_values` files (`kpi=<id>/date=…`) moved into their
    /// `date=` partition.
    pub old_layout_files: usize,
}

/// Merges the small files older than `older_than` of every partition of every table.
pub async fn compact(
    tables: &TableStore,
    older_than: Duration,
    compression: Compression,
) -> Result<CompactStats, SinkError> {
    let mut stats = CompactStats::default();
    if tables.local().is_some_and(|dir| !dir.exists()) {
        // Nothing written yet (or a mistyped --dir): nothing to merge, and no folder to make.
        return Ok(stats);
    }
    let (store, root) = tables.object_store()?;
    let cutoff =
        Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
    for table in Table::ALL {
        let prefix = join(&root, table.name());
        let listed: Vec<ObjectMeta> = match store.list(Some(&prefix)).try_collect().await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(storage(format!("listing {prefix}"), e)),
        };
        // Committed, small, old enough; grouped by partition folder. Old-layout files
        // (kpi=<id>/date=…) go to their date= partition whatever their size or age: no
        // sink writes there any more.
        let mut partitions: BTreeMap<String, Vec<Input>> = BTreeMap::new();
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if !name.ends_with(FILE_EXTENSION) || name.starts_with('.') {
                continue;
            }
            let Some(partition) = partition_of(&prefix, &meta.location) else {
                continue;
            };
            let (partition, old_kpi) = match legacy::split(&partition) {
                Some((kpi, current)) if table == Table::KpiValues => {
                    (current.to_string(), Some(kpi.to_string()))
                }
                _ => (partition, None),
            };
            if old_kpi.is_none() && (meta.size >= SMALL_FILE_BYTES || meta.last_modified > cutoff) {
                continue;
            }
            partitions
                .entry(partition)
                .or_default()
                .push(Input { meta, old_kpi });
        }
        for (partition, mut files) in partitions {
            files.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
            let mut merged_any = false;
            for group in groups(files) {
                let (rows, dropped) =
                    merge(tables, &store, table, &partition, &group, compression).await?;
                stats.files_in += group.len();
                stats.old_layout_files += group.iter().filter(|f| f.old_kpi.is_some()).count();
                stats.files_out += 1;
                stats.rows += rows;
                stats.copies_dropped += dropped;
                merged_any = true;
            }
            stats.partitions += usize::from(merged_any);
        }
    }
    if let Some(dir) = tables.local() {
        remove_empty_old_folders(&Table::KpiValues.dir(dir));
    }
    Ok(stats)
}

/// A file to merge; `old_kpi` is the KPI id of an old-layout file's folder.
struct Input {
    meta: ObjectMeta,
    old_kpi: Option<String>,
}

/// Splits a partition's files into runs of at most [`TARGET_FILE_BYTES`]; runs of one file
/// are dropped (nothing to merge) unless it is an old-layout file, which moves.
fn groups(files: Vec<Input>) -> Vec<Vec<Input>> {
    let mut out: Vec<Vec<Input>> = Vec::new();
    let mut current: Vec<Input> = Vec::new();
    let mut bytes = 0;
    for f in files {
        if !current.is_empty() && bytes + f.meta.size > TARGET_FILE_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += f.meta.size;
        current.push(f);
    }
    out.push(current);
    out.retain(|g| g.len() > 1 || g.iter().any(|f| f.old_kpi.is_some()));
    out
}

/// Removes the `kpi=<id>/date=…` folders compaction emptied (a bucket has no folders).
fn remove_empty_old_folders(table_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(table_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_old = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("kpi="));
        if !is_old || !entry.path().is_dir() {
            continue;
        }
        if let Ok(dates) = std::fs::read_dir(entry.path()) {
            for date in dates.flatten() {
                // Fails, and stays, when not empty.
                let _ = std::fs::remove_dir(date.path());
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// Reads `group`, commits their rows as one file (in `kpi_values` each `(key, revision)`
/// once), then deletes them. Returns the rows written and the copies dropped.
async fn merge(
    tables: &TableStore,
    store: &Arc<dyn ObjectStore>,
    table: Table,
    partition: &str,
    group: &[Input],
    compression: Compression,
) -> Result<(usize, usize), SinkError> {
    let schema = table.schema();
    let mut batches = Vec::new();
    for Input { meta, old_kpi } in group {
        let bytes = store
            .get(&meta.location)
            .await
            .map_err(|e| storage(format!("reading {}", meta.location), e))?
            .bytes()
            .await
            .map_err(|e| storage(format!("reading {}", meta.location), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|source| SinkError::Parquet {
                path: meta.location.to_string().into(),
                source,
            })?;
        for batch in reader {
            let batch = batch
                .map_err(|e| SinkError::Internal(format!("decoding {}: {e}", meta.location)))?;
            // Same columns as the table's schema; field metadata may differ between writers.
            let batch = match old_kpi {
                Some(kpi) => legacy::with_kpi(&batch, kpi)?,
                None => {
                    RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|e| {
                        SinkError::Internal(format!(
                            "{} does not match the {table} schema: {e}",
                            meta.location
                        ))
                    })?
                }
            };
            batches.push(batch);
        }
    }
    let batch = concat_batches(&schema, &batches)
        .map_err(|e| SinkError::Internal(format!("merging {table}/{partition}: {e}")))?;
    let (batch, dropped) = match table {
        Table::KpiValues => drop_copies(batch)
            .and_then(|(batch, dropped)| Ok((sort_kpi_values(&batch)?, dropped)))
            .map_err(|e| SinkError::Internal(format!("merging {table}/{partition}: {e}")))?,
        Table::Breaches | Table::Events => (batch, 0),
    };
    let rows = batch.num_rows();
    let name = format!(
        "part-{}-{}{FILE_EXTENSION}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4()
    );
    let relative = format!("{}/{partition}/{name}", table.name());
    let bytes = tokio::task::spawn_blocking(move || {
        encode(
            Vec::new(),
            std::path::Path::new(&relative),
            &batch,
            compression,
        )
    })
    .await
    .map_err(|e| SinkError::Internal(format!("compaction task failed: {e}")))??;
    let file = EncodedFile {
        table,
        partition: partition.to_string(),
        date: partition_date(partition),
        name,
        bytes,
        rows,
    };
    // The merged rows are durable before any original goes away.
    tables.commit(vec![file]).await?;
    for Input { meta, .. } in group {
        match store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage(format!("deleting {}", meta.location), e)),
        }
    }
    Ok((rows, dropped))
}

/// Keeps the first row of each `(key, revision)` of a `kpi_values` batch: the others are the
/// exact copies a replay after a crash wrote (a revision is published once), or copies a
/// compaction interrupted between commit and delete left. Returns the batch and how many
/// rows went.
fn drop_copies(batch: RecordBatch) -> Result<(RecordBatch, usize), ArrowError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no column `{name}`")))
    };
    let keys = column("key")?;
    let keys = keys
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::SchemaError("column `key` is not Utf8".into()))?;
    let revisions = column("revision")?;
    let revisions = revisions
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| ArrowError::SchemaError("column `revision` is not UInt64".into()))?;
    let mut seen = HashSet::with_capacity(batch.num_rows());
    let keep: Vec<u32> = (0..batch.num_rows())
        .filter(|&i| seen.insert((keys.value(i), revisions.value(i))))
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let dropped = batch.num_rows() - keep.len();
    if dropped == 0 {
        return Ok((batch, 0));
    }
    let kept = take_record_batch(&batch, &UInt32Array::from(keep))?;
    Ok((kept, dropped))
}

/// A merged `kpi_values` batch in the sink's file order, `(kpi, key, revision)` (see
/// `KpiUpdate::sort_for_file`), so the merged file prunes as the sink's do.
fn sort_kpi_values(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let by = |name: &str| -> Result<SortColumn, ArrowError> {
        Ok(SortColumn {
            values: batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| ArrowError::SchemaError(format!("no column `{name}`")))?,
            options: None,
        })
    };
    let order = lexsort_to_indices(&[by(KPI_COLUMN)?, by("key")?, by("revision")?], None)?;
    take_record_batch(batch, &order)
}

/// `prefix/<partition…>/<file>` → `<partition…>`, e.g. `date=2025-03-14` (or, in the old
/// layout, `kpi=gmv/date=2025-03-14`).
fn partition_of(prefix: &ObjectPath, location: &ObjectPath) -> Option<String> {
    let parts: Vec<String> = location
        .prefix_match(prefix)?
        .map(|p| p.as_ref().to_string())
        .collect();
    let (_, folders) = parts.split_last()?;
    (!folders.is_empty()).then(|| folders.join("/"))
}

/// The `date=` level of a partition path (the epoch when there is none).
fn partition_date(partition: &str) -> NaiveDate {
    partition
        .split('/')
        .find_map(|level| level.strip_prefix(&format!("{DATE_COLUMN}="))?.parse().ok())
        .unwrap_or_default()
}

fn join(root: &ObjectPath, name: &str) -> ObjectPath {
    root.clone().join(name)
}

fn storage(context: String, e: object_store::Error) -> SinkError {
    CoreError::storage(context, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::{breach_fixtures, files_under, kpi_fixtures};
    use crate::parquet::write_rows;
    use crate::{OutputFormat, format_batches, query};

    async fn csv(dir: &std::path::Path, sql: &str) -> String {
        format_batches(&query(dir, sql).await.unwrap(), OutputFormat::Csv).unwrap()
    }

    #[tokio::test]
    async fn small_files_merge_per_partition_and_no_row_is_lost_or_doubled() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            write_rows(dir.path(), &kpi_fixtures(), Compression::Zstd).unwrap();
            write_rows(dir.path(), &breach_fixtures(), Compression::Snappy).unwrap();
        }
        let kpis = "SELECT * FROM kpi_values ORDER BY key, revision";
        let breaches = "SELECT * FROM breaches ORDER BY breach_id, at";
        let before = (csv(dir.path(), kpis).await, csv(dir.path(), breaches).await);
        let files = files_under(dir.path()).len();
        assert_eq!(files % 3, 0);
        let tables = TableStore::from(dir.path());

        // Files younger than older_than stay as they are.
        let young = compact(&tables, Duration::from_secs(3600), Compression::Zstd)
            .await
            .unwrap();
        assert_eq!(young, CompactStats::default());
        assert_eq!(files_under(dir.path()).len(), files);

        let stats = compact(&tables, Duration::ZERO, Compression::Zstd)
            .await
            .unwrap();
        assert_eq!(stats.files_in, files);
        assert_eq!(stats.files_out, files / 3, "one file per partition");
        assert_eq!(stats.partitions, files / 3);
        let after = files_under(dir.path());
        assert_eq!(after.len(), files / 3, "{after:#?}");
        assert!(after.iter().all(|f| {
            let name = f.file_name().unwrap().to_str().unwrap();
            name.starts_with("part-") && name.ends_with(".parquet")
        }));
        assert_eq!(
            (csv(dir.path(), kpis).await, csv(dir.path(), breaches).await),
            before,
            "the same rows, each once"
        );

        // One file per partition: nothing left to merge.
        let again = compact(&tables, Duration::ZERO, Compression::Zstd)
            .await
            .unwrap();
        assert_eq!(again.files_out, 0);
    }

    /// Writes `rows` as a sink before issue 12 did: `kpi_values/kpi=<id>/date=…/`, files
    /// without the `kpi` column.
    fn write_old_layout(dir: &std::path::Path, rows: &[kpiflow_schemas::KpiUpdate]) {
        use crate::parquet::{TableRow, write_file_atomically};
        for row in rows {
            let batch = kpiflow_schemas::KpiUpdate::to_batch(&[row]).unwrap();
            assert_eq!(batch.schema().field(0).name(), "kpi");
            let old = batch
                .project(&(1..batch.num_columns()).collect::<Vec<_>>())
                .unwrap();
            let folder = dir.join(format!(
                "kpi_values/kpi={}/date={}",
                row.kpi,
                row.window.start.date_naive()
            ));
            let name = format!("part-old-{}.parquet", uuid::Uuid::new_v4());
            write_file_atomically(&folder, &name, &old, Compression::Snappy).unwrap();
        }
    }

    #[tokio::test]
    async fn old_layout_files_are_read_beside_new_ones_and_compaction_moves_them() {
        use crate::parquet::TableRow;
        use kpiflow_schemas::KpiUpdate;
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        let (old, new) = kpis.split_at(kpis.len() / 2);
        assert!(!old.is_empty() && !new.is_empty());
        write_old_layout(dir.path(), old);
        write_rows(dir.path(), new, Compression::Zstd).unwrap();
        let tables = TableStore::from(dir.path());
        assert!(legacy::present(&tables).await.unwrap());

        // Every fixture reads back exactly, the old ones' `kpi` taken from their folders.
        let mut expected = kpis.clone();
        expected.sort_by_key(|k| (k.key(), k.revision));
        let read_all = || async {
            let batches = query(
                dir.path(),
                "SELECT * FROM kpi_values ORDER BY key, revision",
            )
            .await
            .unwrap();
            batches
                .iter()
                .flat_map(|b| KpiUpdate::from_batch(b).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(read_all().await, expected);
        let gmv = expected.iter().filter(|k| k.kpi == "gmv").count();
        assert!(gmv > 0);
        assert_eq!(
            csv(
                dir.path(),
                "SELECT count(*) AS n FROM kpi_values WHERE kpi = 'gmv'"
            )
            .await,
            format!("n\n{gmv}\n")
        );

        // Compaction moves every old file, whatever its age: none is younger than an hour.
        let stats = compact(&tables, Duration::from_secs(3600), Compression::Zstd)
            .await
            .unwrap();
        assert_eq!(stats.old_layout_files, old.len(), "{stats:?}");
        assert!(!legacy::present(&tables).await.unwrap());
        let folders: Vec<String> = std::fs::read_dir(dir.path().join("kpi_values"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            folders.iter().all(|f| f.starts_with("date=")),
            "{folders:?}"
        );
        assert_eq!(read_all().await, expected, "the same rows, each once");
        // Every file, merged or the sink's, keeps one KPI's rows together (kpi in order).
        for path in files_under(&dir.path().join("kpi_values")) {
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            let mut ids = Vec::new();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name("kpi").unwrap();
                let col = col.as_any().downcast_ref::<StringArray>().unwrap();
                ids.extend(col.iter().map(|v| v.unwrap().to_string()));
            }
            assert!(ids.is_sorted(), "{}: {ids:?}", path.display());
        }
    }

    #[tokio::test]
    async fn replayed_kpi_rows_are_merged_once_even_after_an_interrupted_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        let lsr = dir.path().join("kpi_values/date=2025-03-14");
        // Rows 0 and 1 are late_shipment_rate revisions 1 and 2 of 2025-03-14 (one partition).
        // A first run, two replays of both after crashes, and a new revision 3: four files,
        // 2 + 2 + 2 + 1 = 7 rows, 3 distinct (key, revision).
        for _ in 0..3 {
            write_rows(dir.path(), &kpis[..2], Compression::Zstd).unwrap();
        }
        let mut newer = kpis[1].clone();
        newer.revision = 3;
        write_rows(dir.path(), &[newer], Compression::Zstd).unwrap();
        // (files in the partition, rows in the files, revisions a query sees)
        let state = || async {
            (
                files_under(&lsr).len(),
                csv(dir.path(), "SELECT count(*) AS n FROM kpi_values_raw").await,
                csv(
                    dir.path(),
                    "SELECT revision FROM kpi_values ORDER BY revision",
                )
                .await,
            )
        };
        let once = "revision\n1\n2\n3\n";
        assert_eq!(state().await, (4, "n\n7\n".into(), once.into()));
        let inputs = files_under(&lsr);
        let saved: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();

        let tables = TableStore::from(dir.path());
        // (files in, files out, rows written, copies dropped)
        let merge = || async {
            let s = compact(&tables, Duration::ZERO, Compression::Zstd)
                .await
                .unwrap();
            (s.files_in, s.files_out, s.rows, s.copies_dropped)
        };
        // 4 files of 7 rows in, 1 file of 3 rows out: the 4 copies are dropped.
        assert_eq!(merge().await, (4, 1, 3, 4));
        assert_eq!(state().await, (1, "n\n3\n".into(), once.into()));

        // A compaction killed after committing its file but before deleting the inputs
        // leaves both: put the inputs back. 3 merged + 7 left = 10 rows in 5 files, and
        // queries still see each revision once.
        for (path, bytes) in inputs.iter().zip(&saved) {
            std::fs::write(path, bytes).unwrap();
        }
        assert_eq!(state().await, (5, "n\n10\n".into(), once.into()));
        // The next run merges the leftovers with the merged file: 10 rows in, 3 out.
        assert_eq!(merge().await, (5, 1, 3, 7));
        assert_eq!(state().await, (1, "n\n3\n".into(), once.into()));
        assert_eq!(
            csv(
                dir.path(),
                "SELECT numerator, revision FROM kpi_latest WHERE kpi = 'late_shipment_rate'"
            )
            .await,
            "numerator,revision\n4.000000000,3\n"
        );
    }

    #[tokio::test]
    async fn a_missing_folder_has_nothing_to_merge_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let stats = compact(
            &TableStore::from(missing.as_path()),
            Duration::ZERO,
            Compression::Zstd,
        )
        .await
        .unwrap();
        assert_eq!(stats, CompactStats::default());
        assert!(!missing.exists());
    }

    #[test]
    fn partitions_and_dates_come_from_the_path() {
        let prefix = ObjectPath::from("root/kpi_values");
        let file = ObjectPath::from("root/kpi_values/kpi=gmv/date=2025-03-14/part-a.parquet");
        let partition = partition_of(&prefix, &file).unwrap();
        assert_eq!(partition, "kpi=gmv/date=2025-03-14");
        assert_eq!(
            partition_date(&partition),
            NaiveDate::from_ymd_opt(2025, 3, 14).unwrap()
        );
        let stray = ObjectPath::from("root/kpi_values/part-a.parquet");
        assert_eq!(
            partition_of(&prefix, &stray),
            None,
            "a file outside any partition"
        );
    }
}
