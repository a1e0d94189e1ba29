//! The Parquet tables: Arrow schemas, row conversion, and the atomic, Hive-partitioned writer.
//!
//! Layout under the sink's `dir`:
//!
//! ```text
//! <dir>/kpi_values/date=2025-03-14/part-20250314T101500.123Z-<uuid>.parquet
//! <dir>/breaches/date=2025-03-14/part-20250314T101500.123Z-<uuid>.parquet
//! <dir>/events/date=2025-03-14/part-20250314T101500.123Z-<uuid>.parquet      (sink.events_archive)
//! <dir>/kpi_values/date=2025-03-14/.part-….parquet.tmp      (being written; readers skip it)
//! ```
//!
//! Partitions are Hive-style: the `date` value lives in the folder name only, not in the file
//! (DataFusion, Spark, DuckDB and Trino read it back from the path). A query filtering on
//! `date` reads only those folders. One flush writes one file per table per touched date,
//! its rows sorted ([`TableRow::sort_for_file`]) so page statistics prune the rest: in
//! `kpi_values` by KPI id ([`legacy`] reads the older `kpi=<id>/date=…` folders).
//!
//! A file appears under its final name only once it is complete and on disk: it is written
//! under a hidden temporary name in the same folder, fsynced, renamed (atomic within one
//! filesystem), and the folder is fsynced so the rename itself survives a power cut. A reader
//! therefore sees a file whole or not at all.
//!
//! When `dir` is `s3://bucket/prefix` ([`store`]) the layout is the same under the prefix; a
//! file is one PUT of the whole encoded object, which S3 makes visible only once complete,
//! so readers again see it whole or not at all, and there are no temporary objects.

pub mod breaches;
pub mod compact;
pub mod events;
pub mod kpi_values;
pub mod legacy;
pub mod store;
pub mod unreadable;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, Decimal128Array, PrimitiveArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Field, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use kpiflow_schemas::{Decimal, Scope, WindowRef};
use serde::de::DeserializeOwned;

use crate::{Compression, SinkError};

/// The Hive partition column every table is split by: a UTC date, `date=YYYY-MM-DD`.
pub const DATE_COLUMN: &str = "date";
/// The KPI id column of `kpi_values` (a folder level `kpi=<id>` in the [`legacy`] layout).
pub const KPI_COLUMN: &str = "kpi";
/// Precision of exact decimal columns (numerator, denominator).
pub const DECIMAL_PRECISION: u8 = 38;
/// Scale of exact decimal columns: nine places hold any money or ratio the pipeline makes.
pub const DECIMAL_SCALE: i8 = 9;
/// File name extension of committed files; readers list only these.
pub const FILE_EXTENSION: &str = ".parquet";

/// The exact decimal type: `Decimal128(38, 9)`.
pub fn decimal_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
}

/// The timestamp type: microseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The sink's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per published KPI value ([`kpi_values`]).
    KpiValues,
    /// One row per breach transition ([`breaches`]).
    Breaches,
    /// One row per canonical event, when the archive is on ([`events`]).
    Events,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::KpiValues, Table::Breaches, Table::Events];

    /// The table's name, also its folder under the sink's `dir`.
    pub fn name(&self) -> &'static str {
        match self {
            Table::KpiValues => "kpi_values",
            Table::Breaches => "breaches",
            Table::Events => "events",
        }
    }

    /// The table's Hive partition columns: `date` (Date32) for every table.
    pub fn partition_columns(&self) -> Vec<(String, DataType)> {
        vec![(DATE_COLUMN.to_string(), DataType::Date32)]
    }

    /// The schema of the table's files (without the partition columns).
    pub fn schema(&self) -> SchemaRef {
        match self {
            Table::KpiValues => kpi_values::schema(),
            Table::Breaches => breaches::schema(),
            Table::Events => events::schema(),
        }
    }

    /// The table's folder under `dir`.
    pub fn dir(&self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A record type that is stored as rows of one table.
pub trait TableRow: Sized {
    /// The table the rows go to.
    const TABLE: Table;

    /// The UTC date of the partition the row belongs to.
    fn partition_date(&self) -> NaiveDate;

    /// The partition folder under the table's folder, e.g. `date=2025-03-14`.
    fn partition_path(&self) -> String {
        format!("{DATE_COLUMN}={}", self.partition_date())
    }

    /// Orders one file's rows so that the columns queries filter on come in runs, which
    /// Parquet's page statistics let a reader skip. Default: arrival order.
    fn sort_for_file(_rows: &mut [&Self]) {}

    /// Fails when the record cannot be stored exactly (e.g. a decimal with more than nine
    /// places); the sink dead-letters such records instead of buffering them.
    fn check_storable(&self) -> Result<(), SinkError>;

    /// Converts rows to one Arrow batch in the table's file schema (no partition columns).
    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, SinkError>;

    /// Reads rows back from a batch read through the table (with its partition columns;
    /// extra columns such as `date` are ignored).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, SinkError>;
}

/// A file the writer committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The table.
    pub table: Table,
    /// The partition folder, e.g. `date=2025-03-14`.
    pub partition: String,
    /// The partition's date.
    pub date: NaiveDate,
    /// The final path (in a bucket: the object's `s3://` URL).
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: usize,
}

/// One partition's rows encoded as a whole Parquet file, not stored yet.
#[derive(Debug)]
pub struct EncodedFile {
    /// The table.
    pub table: Table,
    /// The partition folder, e.g. `date=2025-03-14`.
    pub partition: String,
    /// The partition's date.
    pub date: NaiveDate,
    /// The file name, unique across writers: `part-<UTC time>-<uuid>.parquet`.
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Rows in the file.
    pub rows: usize,
}

impl EncodedFile {
    /// The path under the tables' root: `<table>/<partition>/<name>`.
    pub fn relative_path(&self) -> String {
        format!("{}/{}/{}", self.table.name(), self.partition, self.name)
    }

    /// What was committed, at `path`.
    pub fn written(&self, path: PathBuf) -> WrittenFile {
        WrittenFile {
            table: self.table,
            partition: self.partition.clone(),
            date: self.date,
            path,
            rows: self.rows,
        }
    }
}

/// Encodes `rows` as one Parquet file per touched partition, each sorted by
/// [`TableRow::sort_for_file`], in memory (a flush holds at most `roll_rows` rows, so the
/// files are small enough to hold).
pub fn encode_rows<R: TableRow>(
    rows: &[R],
    compression: Compression,
) -> Result<Vec<EncodedFile>, SinkError> {
    let mut by_partition: BTreeMap<(String, NaiveDate), Vec<&R>> = BTreeMap::new();
    for row in rows {
        by_partition
            .entry((row.partition_path(), row.partition_date()))
            .or_default()
            .push(row);
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut files = Vec::with_capacity(by_partition.len());
    for ((partition, date), mut rows) in by_partition {
        R::sort_for_file(&mut rows);
        let batch = R::to_batch(&rows)?;
        let name = format!("part-{stamp}-{}{FILE_EXTENSION}", uuid::Uuid::new_v4());
        let path = Path::new(R::TABLE.name()).join(&partition).join(&name);
        let bytes = encode(Vec::new(), &path, &batch, compression)?;
        files.push(EncodedFile {
            table: R::TABLE,
            partition,
            date,
            name,
            bytes,
            rows: rows.len(),
        });
    }
    Ok(files)
}

/// Writes `rows` to `dir`: one new file per touched partition, each committed atomically.
///
/// Blocking (file I/O and fsync): call it from `spawn_blocking` in async code. When it fails
/// part-way, the partitions written before the failure stay (complete) on disk; the caller
/// must not commit the offsets, and the replay writes those rows again (readers de-duplicate
/// through `kpi_latest`).
pub fn write_rows<R: TableRow>(
    dir: &Path,
    rows: &[R],
    compression: Compression,
) -> Result<Vec<WrittenFile>, SinkError> {
    encode_rows(rows, compression)?
        .into_iter()
        .map(|file| write_encoded(dir, &file))
        .collect()
}

/// Commits one encoded file under `dir` atomically (see [`write_file_atomically`]).
pub fn write_encoded(dir: &Path, file: &EncodedFile) -> Result<WrittenFile, SinkError> {
    use std::io::Write;
    let folder = file.table.dir(dir).join(&file.partition);
    let path = commit_atomically(&folder, &file.name, |mut f, temp| {
        f.write_all(&file.bytes)
            .map_err(|e| SinkError::io("writing", temp, e))?;
        Ok(f)
    })?;
    Ok(file.written(path))
}

/// The hidden name a file is written under before it is renamed to `name`.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Writes `batch` to `<folder>/<name>` so that the name appears only for a complete, durable
/// file: temp name in the same folder, fsync, rename, fsync of the folder.
pub fn write_file_atomically(
    folder: &Path,
    name: &str,
    batch: &RecordBatch,
    compression: Compression,
) -> Result<PathBuf, SinkError> {
    commit_atomically(folder, name, |file, path| {
        encode(file, path, batch, compression)
    })
}

/// Creates a hidden temp file in `folder`, lets `write` fill it, then fsyncs it, renames it
/// to `name` and fsyncs the folder. On failure the temp file is removed.
fn commit_atomically(
    folder: &Path,
    name: &str,
    write: impl FnOnce(File, &Path) -> Result<File, SinkError>,
) -> Result<PathBuf, SinkError> {
    create_dir_durably(folder)?;
    let final_path = folder.join(name);
    let temp_path = folder.join(temp_name(name));
    let result = File::create_new(&temp_path)
        .map_err(|e| SinkError::io("creating", &temp_path, e))
        .and_then(|file| {
            // Held until the file is closed (after the rename): it tells a starting sink that
            // this temp file has a live writer (see `remove_abandoned_temp_files`). A
            // filesystem that cannot lock falls back to the age rule there.
            match file.lock() {
                Ok(()) => Ok(file),
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Ok(file),
                Err(e) => Err(SinkError::io("locking", &temp_path, e)),
            }
        })
        .and_then(|file| write(file, &temp_path))
        .and_then(|file| {
            file.sync_all()
                .map_err(|e| SinkError::io("syncing", &temp_path, e))?;
            // Renamed while still open, so the lock covers the temp name's whole life.
            std::fs::rename(&temp_path, &final_path)
                .map_err(|e| SinkError::io("renaming into", &final_path, e))?;
            drop(file);
            Ok(())
        })
        .and_then(|()| sync_dir(folder));
    if result.is_err() {
        // Best effort: readers skip temp files anyway, and a stale one is removed at start-up.
        let _ = std::fs::remove_file(&temp_path);
    }
    result.map(|()| final_path)
}

/// Encodes `batch` as one Parquet file into `file` and returns it, flushed.
pub(crate) fn encode<W: std::io::Write + Send>(
    file: W,
    path: &Path,
    batch: &RecordBatch,
    compression: Compression,
) -> Result<W, SinkError> {
    let codec = match compression {
        // Level 3 is zstd's own default: most of the size win at a fraction of the CPU.
        Compression::Zstd => ParquetCompression::ZSTD(
            ZstdLevel::try_new(3)
                .map_err(|e| SinkError::Internal(format!("zstd level 3 refused: {e}")))?,
        ),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder().set_compression(codec).build();
    let parquet_err = |source| SinkError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    writer.into_inner().map_err(parquet_err)
}

/// Creates `folder` and its parents; a folder that did not exist is made durable by syncing
/// its parent, so a file renamed into it cannot vanish with it after a power cut.
fn create_dir_durably(folder: &Path) -> Result<(), SinkError> {
    if folder.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(folder).map_err(|e| SinkError::io("creating folder", folder, e))?;
    let mut parent = folder.parent();
    // Sync the new folder's parent and grandparent (the table folder may be new too).
    for _ in 0..2 {
        match parent {
            Some(p) if !p.as_os_str().is_empty() => {
                sync_dir(p)?;
                parent = p.parent();
            }
            _ => break,
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SinkError::io("syncing folder", dir, e))
}

/// Deletes the temporary files a killed writer left behind, and returns how many.
///
/// A writer holds an exclusive lock ([`File::lock`], `flock(2)`) on its temp file from
/// creation to rename, and the kernel drops the lock when the process dies, SIGKILL included.
/// So a temp file whose lock can be taken has no live writer, whatever its age: it is removed
/// (each removal is a [`TempFileRemoved`](crate::internal_events::TempFileRemoved) event). One
/// whose lock is held belongs to another sink (or a compaction) writing now and stays. Where
/// the filesystem cannot lock (some network mounts), only files older than `unlockable_age`
/// are removed, since a write takes seconds.
pub fn remove_abandoned_temp_files(
    dir: &Path,
    unlockable_age: Duration,
) -> Result<usize, SinkError> {
    let now = SystemTime::now();
    let mut removed = 0;
    for table in Table::ALL {
        // Walk every folder under the table (the legacy layout nests kpi=…/date=…).
        let mut folders = vec![table.dir(dir)];
        while let Some(folder) = folders.pop() {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SinkError::io("listing", &folder, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| SinkError::io("listing", &folder, e))?;
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    folders.push(entry.path());
                    continue;
                }
                let is_temp = entry.file_name().to_str().is_some_and(|n| {
                    n.starts_with(".part-") && n.ends_with(&format!("{FILE_EXTENSION}.tmp"))
                });
                if !is_temp {
                    continue;
                }
                let path = entry.path();
                let abandoned = match File::open(&path) {
                    // Gone already: its writer renamed it (or another clean-up removed it).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SinkError::io("opening", &path, e)),
                    Ok(file) => match file.try_lock() {
                        Ok(()) => true,
                        Err(std::fs::TryLockError::WouldBlock) => false,
                        Err(std::fs::TryLockError::Error(_)) => entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| now.duration_since(t).ok())
                            .is_some_and(|age| age >= unlockable_age),
                    },
                };
                if !abandoned {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SinkError::io("removing", &path, e)),
                }
                crate::internal_events::TempFileRemoved { table, path: &path }.emit();
                removed += 1;
            }
        }
    }
    Ok(removed)
}

// ---- conversions shared by the tables ---------------------------------------------------

/// An exact decimal as the `i128` of a `Decimal128(38, 9)` column.
pub(crate) fn decimal_to_i128(d: Decimal, field: &str) -> Result<i128, SinkError> {
    let mut v = d.0.normalize();
    let scale = u32::try_from(DECIMAL_SCALE).unwrap_or(9);
    if v.scale() > scale {
        return Err(SinkError::InvalidRecord(format!(
            "field `{field}` = {d} has {} decimal places; the Parquet column keeps {scale} exactly",
            v.scale()
        )));
    }
    // A rust_decimal mantissa has at most 96 bits (< 8e28), so scaling by 1e9 stays below the
    // column's 1e38.
    v.rescale(scale);
    Ok(v.mantissa())
}

/// The exact decimal of a `Decimal128(38, 9)` value.
pub(crate) fn decimal_from_i128(v: i128, field: &str) -> Result<Decimal, SinkError> {
    let scale = u32::try_from(DECIMAL_SCALE).unwrap_or(9);
    rust_decimal::Decimal::try_from_i128_with_scale(v, scale)
        .map(|d| Decimal(d.normalize()))
        .map_err(|e| SinkError::Read {
            source: datafusion::error::DataFusionError::Execution(format!(
                "column `{field}`: {v}e-{scale} does not fit a decimal: {e}"
            )),
        })
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64, field: &str) -> Result<DateTime<Utc>, SinkError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| {
        SinkError::Internal(format!(
            "column `{field}`: {v} µs is not a representable time"
        ))
    })
}

/// Parses a wire name back into its enum.
pub(crate) fn from_wire_name<T: DeserializeOwned>(s: &str, field: &str) -> Result<T, SinkError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| SinkError::Read {
        source: datafusion::error::DataFusionError::Execution(format!(
            "column `{field}`: {s:?} is not a known value: {e}"
        )),
    })
}

/// A column of `batch` by name, cast to `expected` (DataFusion may hand strings back as
/// `Utf8View`, for example).
pub(crate) fn column(
    batch: &RecordBatch,
    name: &str,
    expected: &DataType,
) -> Result<ArrayRef, SinkError> {
    let col = batch.column_by_name(name).ok_or_else(|| SinkError::Read {
        source: datafusion::error::DataFusionError::Execution(format!(
            "no column `{name}` in the batch; columns are: {}",
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })?;
    if col.data_type() == expected {
        return Ok(Arc::clone(col));
    }
    cast(col, expected).map_err(|e| SinkError::Read {
        source: datafusion::error::DataFusionError::ArrowError(
            Box::new(e),
            Some(format!("column `{name}`")),
        ),
    })
}

/// Downcasts an array already cast to the expected type.
pub(crate) fn downcast<'a, A: Array + 'static>(
    array: &'a ArrayRef,
    name: &str,
) -> Result<&'a A, SinkError> {
    array.as_any().downcast_ref::<A>().ok_or_else(|| {
        SinkError::Internal(format!(
            "column `{name}` of type {} did not downcast",
            array.data_type()
        ))
    })
}

// ---- columns shared by the tables ----------------------------------------------------------

/// A non-null `Utf8` field.
pub(crate) fn utf8_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// A non-null timestamp field (µs, UTC).
pub(crate) fn timestamp_field(name: &str) -> Field {
    Field::new(name, timestamp_type(), false)
}

/// The fields of a [`Scope`]: `shop`, `channel`, `marketplace`, `sku` and `campaign`
/// (nullable: absent for shop-level values).
pub(crate) fn scope_fields() -> Vec<Field> {
    vec![
        utf8_field("shop"),
        utf8_field("channel"),
        utf8_field("marketplace"),
        Field::new("sku", DataType::Utf8, true),
        Field::new("campaign", DataType::Utf8, true),
    ]
}

/// The fields of a [`WindowRef`]: `window_kind`, `window_name`, `window_start`, `window_end`,
/// `time_zone`, `basis`.
pub(crate) fn window_fields() -> Vec<Field> {
    vec![
        utf8_field("window_kind"),
        utf8_field("window_name"),
        timestamp_field("window_start"),
        timestamp_field("window_end"),
        utf8_field("time_zone"),
        utf8_field("basis"),
    ]
}

/// The exact fields: `numerator` (not null) and `denominator` (nullable).
pub(crate) fn exact_decimal_fields() -> Vec<Field> {
    vec![
        Field::new("numerator", decimal_type(), false),
        Field::new("denominator", decimal_type(), true),
    ]
}

/// Fails when the numerator or the denominator has more places than the columns keep.
pub(crate) fn check_exact(
    numerator: Decimal,
    denominator: Option<Decimal>,
) -> Result<(), SinkError> {
    decimal_to_i128(numerator, "numerator")?;
    if let Some(d) = denominator {
        decimal_to_i128(d, "denominator")?;
    }
    Ok(())
}

/// A `Utf8` column of one string per row.
pub(crate) fn string_column<'a, R>(rows: &[&'a R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

/// A nullable `Utf8` column.
pub(crate) fn optional_string_column<'a, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> Option<&'a str>,
) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows.iter().map(|r| f(r))))
}

/// A timestamp column (µs, UTC).
pub(crate) fn timestamp_column<'a, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> DateTime<Utc>,
) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| micros(f(r))))
            .with_timezone("UTC"),
    )
}

/// A non-null numeric column, e.g. `primitive_column::<UInt32Type, _>(rows, |r| r.kpi_version)`.
pub(crate) fn primitive_column<'a, T: ArrowPrimitiveType, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> T::Native,
) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::from_iter_values(
        rows.iter().map(|r| f(r)),
    ))
}

/// A nullable numeric column.
pub(crate) fn optional_primitive_column<'a, T: ArrowPrimitiveType, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> Option<T::Native>,
) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::from_iter(rows.iter().map(|r| f(r))))
}

/// The columns of [`scope_fields`].
pub(crate) fn scope_columns<'a, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> &'a Scope,
) -> Vec<ArrayRef> {
    vec![
        string_column(rows, |r| &f(r).shop),
        string_column(rows, |r| f(r).channel.as_str()),
        string_column(rows, |r| &f(r).marketplace),
        optional_string_column(rows, |r| f(r).sku.as_deref()),
        optional_string_column(rows, |r| f(r).campaign.as_deref()),
    ]
}

/// The columns of [`window_fields`].
pub(crate) fn window_columns<'a, R>(
    rows: &[&'a R],
    f: impl Fn(&'a R) -> &'a WindowRef,
) -> Vec<ArrayRef> {
    vec![
        string_column(rows, |r| f(r).kind.as_str()),
        string_column(rows, |r| &f(r).name),
        timestamp_column(rows, |r| f(r).start),
        timestamp_column(rows, |r| f(r).end),
        string_column(rows, |r| &f(r).time_zone),
        string_column(rows, |r| &f(r).basis),
    ]
}

/// The columns of [`exact_decimal_fields`]; fails like [`check_exact`].
pub(crate) fn exact_decimal_columns<R>(
    rows: &[&R],
    numerator: impl Fn(&R) -> Decimal,
    denominator: impl Fn(&R) -> Option<Decimal>,
) -> Result<Vec<ArrayRef>, SinkError> {
    let numerators = rows
        .iter()
        .map(|r| decimal_to_i128(numerator(r), "numerator").map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let denominators = rows
        .iter()
        .map(|r| {
            denominator(r)
                .map(|d| decimal_to_i128(d, "denominator"))
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        decimal_column(numerators)?,
        decimal_column(denominators)?,
    ])
}

fn decimal_column(values: Vec<Option<i128>>) -> Result<ArrayRef, SinkError> {
    Ok(Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)
            .map_err(|e| SinkError::Internal(format!("decimal column: {e}")))?,
    ))
}

/// A batch of `table` from its columns, in the order of the table's schema.
pub(crate) fn batch(table: Table, columns: Vec<ArrayRef>) -> Result<RecordBatch, SinkError> {
    RecordBatch::try_new(table.schema(), columns)
        .map_err(|e| SinkError::Internal(format!("{table} batch: {e}")))
}

/// The columns of a batch in a table's schema, each cast to its type, looked up by name.
pub(crate) struct Columns {
    schema: SchemaRef,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    /// Reads every column of `schema` from `batch` (extra columns are ignored).
    pub(crate) fn of(batch: &RecordBatch, schema: SchemaRef) -> Result<Columns, SinkError> {
        let arrays = schema
            .fields()
            .iter()
            .map(|f| column(batch, f.name(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Columns { schema, arrays })
    }

    /// The column `name` as an `A`.
    pub(crate) fn get<A: Array + 'static>(&self, name: &str) -> Result<&A, SinkError> {
        let i = self.schema.index_of(name).map_err(|e| {
            SinkError::Internal(format!("column `{name}` is not in the table's schema: {e}"))
        })?;
        downcast(&self.arrays[i], name)
    }

    /// A `Utf8` column.
    pub(crate) fn strings(&self, name: &str) -> Result<&StringArray, SinkError> {
        self.get(name)
    }

    /// A timestamp column.
    pub(crate) fn times(&self, name: &str) -> Result<&TimestampMicrosecondArray, SinkError> {
        self.get(name)
    }

    /// The columns of [`scope_fields`].
    pub(crate) fn scope(&self) -> Result<ScopeReader<'_>, SinkError> {
        ScopeReader::new(self)
    }

    /// The columns of [`window_fields`].
    pub(crate) fn window(&self) -> Result<WindowReader<'_>, SinkError> {
        WindowReader::new(self)
    }

    /// The columns of [`exact_decimal_fields`].
    pub(crate) fn exact_decimals(&self) -> Result<ExactDecimalReader<'_>, SinkError> {
        ExactDecimalReader::new(self)
    }
}

/// Row `i` of a nullable string column.
pub(crate) fn optional_string(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Reads a [`Scope`] back from the columns of [`scope_fields`].
pub(crate) struct ScopeReader<'c> {
    shop: &'c StringArray,
    channel: &'c StringArray,
    marketplace: &'c StringArray,
    sku: &'c StringArray,
    campaign: &'c StringArray,
}

impl<'c> ScopeReader<'c> {
    fn new(c: &'c Columns) -> Result<Self, SinkError> {
        Ok(ScopeReader {
            shop: c.strings("shop")?,
            channel: c.strings("channel")?,
            marketplace: c.strings("marketplace")?,
            sku: c.strings("sku")?,
            campaign: c.strings("campaign")?,
        })
    }

    /// The scope of row `i`.
    pub(crate) fn at(&self, i: usize) -> Result<Scope, SinkError> {
        Ok(Scope {
            shop: self.shop.value(i).to_string(),
            channel: from_wire_name(self.channel.value(i), "channel")?,
            marketplace: self.marketplace.value(i).to_string(),
            sku: optional_string(self.sku, i),
            campaign: optional_string(self.campaign, i),
        })
    }
}

/// Reads a [`WindowRef`] back from the columns of [`window_fields`].
pub(crate) struct WindowReader<'c> {
    kind: &'c StringArray,
    name: &'c StringArray,
    start: &'c TimestampMicrosecondArray,
    end: &'c TimestampMicrosecondArray,
    time_zone: &'c StringArray,
    basis: &'c StringArray,
}

impl<'c> WindowReader<'c> {
    fn new(c: &'c Columns) -> Result<Self, SinkError> {
        Ok(WindowReader {
            kind: c.strings("window_kind")?,
            name: c.strings("window_name")?,
            start: c.times("window_start")?,
            end: c.times("window_end")?,
            time_zone: c.strings("time_zone")?,
            basis: c.strings("basis")?,
        })
    }

    /// The window of row `i`.
    pub(crate) fn at(&self, i: usize) -> Result<WindowRef, SinkError> {
        Ok(WindowRef {
            kind: from_wire_name(self.kind.value(i), "window_kind")?,
            name: self.name.value(i).to_string(),
            start: from_micros(self.start.value(i), "window_start")?,
            end: from_micros(self.end.value(i), "window_end")?,
            time_zone: self.time_zone.value(i).to_string(),
            basis: self.basis.value(i).to_string(),
        })
    }
}

/// Reads the numerator and denominator back from the columns of [`exact_decimal_fields`].
pub(crate) struct ExactDecimalReader<'c> {
    numerator: &'c Decimal128Array,
    denominator: &'c Decimal128Array,
}

impl<'c> ExactDecimalReader<'c> {
    fn new(c: &'c Columns) -> Result<Self, SinkError> {
        Ok(ExactDecimalReader {
            numerator: c.get("numerator")?,
            denominator: c.get("denominator")?,
        })
    }

    /// The numerator and denominator of row `i`.
    pub(crate) fn at(&self, i: usize) -> Result<(Decimal, Option<Decimal>), SinkError> {
        let numerator = decimal_from_i128(self.numerator.value(i), "numerator")?;
        let denominator = self
            .denominator
            .is_valid(i)
            .then(|| self.denominator.value(i))
            .map(|v| decimal_from_i128(v, "denominator"))
            .transpose()?;
        Ok((numerator, denominator))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use kpiflow_schemas::{BreachEvent, KpiUpdate};

    /// The golden KPI updates under `fixtures/`.
    pub(crate) fn kpi_fixtures() -> Vec<KpiUpdate> {
        include_str!("../../fixtures/kpi_updates.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| KpiUpdate::from_json(l.as_bytes()).expect("fixture decodes"))
            .collect()
    }

    /// The golden breach events under `fixtures/`.
    pub(crate) fn breach_fixtures() -> Vec<BreachEvent> {
        include_str!("../../fixtures/breaches.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| BreachEvent::from_json(l.as_bytes()).expect("fixture decodes"))
            .collect()
    }

    /// Writes `batch` to `<folder>/<name>` atomically, but stops half-way through the bytes
    /// and calls `mid_write` (with the file incomplete on disk) before finishing.
    pub(crate) fn write_with_pause(
        folder: &Path,
        name: &str,
        batch: &RecordBatch,
        mid_write: impl FnOnce(),
    ) -> PathBuf {
        use std::io::Write;
        let bytes = encode(Vec::new(), Path::new("memory"), batch, Compression::None).unwrap();
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        commit_atomically(folder, name, |mut file, _| {
            file.write_all(first).unwrap();
            file.flush().unwrap();
            mid_write();
            file.write_all(rest).unwrap();
            Ok(file)
        })
        .unwrap()
    }

    pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn decimals_convert_exactly_or_refuse() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        for s in [
            "0",
            "12.34",
            "-0.000000001",
            "79228162514.264337593",
            "1000000",
        ] {
            let v = decimal_to_i128(d(s), "x").unwrap();
            assert_eq!(decimal_from_i128(v, "x").unwrap(), d(s), "{s}");
        }
        // Trailing zeros beyond nine places are not precision.
        assert!(decimal_to_i128(d("1.5000000000000"), "x").is_ok());
        let err = decimal_to_i128(d("0.0000000001"), "numerator").unwrap_err();
        assert!(matches!(err, SinkError::InvalidRecord(_)));
        assert!(
            err.to_string()
                .contains("`numerator` = 0.0000000001 has 10 decimal places")
        );
    }

    #[test]
    fn every_fixture_lands_in_its_date_partition_and_no_temp_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        let files = write_rows(dir.path(), &kpis, Compression::Zstd).unwrap();
        let partitions: std::collections::BTreeSet<_> =
            kpis.iter().map(|k| k.window.start.date_naive()).collect();
        assert_eq!(
            files.len(),
            partitions.len(),
            "one file per touched partition"
        );
        assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), kpis.len());
        for f in &files {
            let rel = f
                .path
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                rel.starts_with(&format!("kpi_values/{}/part-", f.partition)),
                "{rel}"
            );
            assert_eq!(f.partition, format!("date={}", f.date));
            assert!(rel.ends_with(".parquet"), "{rel}");
        }
        let all = files_under(dir.path());
        assert_eq!(all.len(), files.len(), "only committed files: {all:?}");
        assert!(
            all.iter()
                .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        );
    }

    #[test]
    fn a_failed_write_leaves_neither_a_final_nor_a_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let batch =
            kpiflow_schemas::KpiUpdate::to_batch(&kpi_fixtures().iter().collect::<Vec<_>>())
                .unwrap();
        // A final name that already exists as a folder makes the rename fail after the temp
        // file was fully written.
        let folder = dir.path().join("date=2025-01-01");
        std::fs::create_dir_all(folder.join("part-x.parquet/blocker")).unwrap();
        let err = write_file_atomically(&folder, "part-x.parquet", &batch, Compression::Snappy)
            .unwrap_err();
        assert!(err.to_string().starts_with("renaming into"), "{err}");
        let names: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["part-x.parquet".to_string()],
            "the temp file is gone"
        );
    }

    #[test]
    fn abandoned_temp_files_are_removed_at_once_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let part = Table::KpiValues.dir(dir.path()).join("date=2025-01-01");
        let breaches = Table::Breaches.dir(dir.path()).join("date=2025-01-01");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::create_dir_all(&breaches).unwrap();
        // What a SIGKILLed sink leaves: seconds-old temp files nobody holds a lock on.
        std::fs::write(part.join(".part-a.parquet.tmp"), b"half").unwrap();
        std::fs::write(breaches.join(".part-c.parquet.tmp"), b"half").unwrap();
        std::fs::write(part.join("part-b.parquet"), b"whole").unwrap();
        std::fs::write(part.join(".hidden-other"), b"not ours").unwrap();
        let counter = || {
            kpiflow_core::metrics::sink_temp_files_removed()
                .with_label_values(&["kpi_values"])
                .get()
        };
        let before = counter();

        // A writer caught mid-file holds its lock: its temp file must survive the clean-up.
        let batch = KpiUpdate::to_batch(&kpi_fixtures().iter().collect::<Vec<_>>()).unwrap();
        let (half_written, go_on) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
        let writer = {
            let (folder, tell, wait) = (part.clone(), half_written.0, go_on.1);
            std::thread::spawn(move || {
                write_with_pause(&folder, "part-live.parquet", &batch, || {
                    tell.send(()).unwrap();
                    wait.recv().unwrap();
                })
            })
        };
        half_written.1.recv().unwrap();
        // An hour's fallback age: the two abandoned files go although they are seconds old.
        assert_eq!(
            remove_abandoned_temp_files(dir.path(), Duration::from_secs(3600)).unwrap(),
            2
        );
        assert!(
            part.join(".part-live.parquet.tmp").exists(),
            "a live writer's file stays"
        );
        go_on.0.send(()).unwrap();
        writer.join().unwrap();

        assert_eq!(
            files_under(dir.path()),
            vec![
                part.join(".hidden-other"),
                part.join("part-b.parquet"),
                part.join("part-live.parquet"),
            ]
        );
        assert_eq!(
            std::fs::read(part.join("part-b.parquet")).unwrap(),
            b"whole"
        );
        // One of the two removals was under kpi_values (the other under breaches).
        assert!(counter() > before, "removals are counted");
        // A missing folder is not an error.
        assert_eq!(
            remove_abandoned_temp_files(&dir.path().join("nope"), Duration::ZERO).unwrap(),
            0
        );
    }
}
