//! SQL over the sink's Parquet files with DataFusion: tables, the `kpi_latest` view, output formats.
//!
//! A [`session`] registers:
//!
//! - `kpi_values`: every revision of every KPI series, each `(key, revision)` once: a row
//!   the sink wrote again after a crash (an exact copy) shows once;
//! - `kpi_values_raw`: the `kpi_values` files as written, crash copies included (for
//!   checking the files themselves);
//! - `breaches`: every breach transition;
//! - `kpi_latest`: per `key`, the row with the highest `revision` (ties: latest `emitted_at`).
//!   **This is the table to read KPI values from.** The sink is at-least-once: after a crash a
//!   row may be written twice, and a window is republished whenever late data restates it;
//!   `kpi_latest` removes both.
//!
//! Every table has the Hive partition column `date` (Date32; UTC date of `window_start` for
//! KPIs, of `at` for breaches): filter on it to read only the partitions needed. `kpi_values`
//! files are sorted by `kpi`, so a filter on `kpi` skips the other KPIs' pages.
//!
//! ```sql
//! SELECT kpi, shop, window_start, value FROM kpi_latest
//! WHERE date >= DATE '2025-03-01' AND kpi = 'late_shipment_rate' ORDER BY window_start;
//! ```

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use kpiflow_schemas::BreachEvent;

use crate::SinkError;
use crate::error::plural;
use crate::internal_events::UnreadableFileSkipped;
use crate::parquet::legacy;
use crate::parquet::store::TableStore;
use crate::parquet::unreadable::{self, HidingStore, UnreadableFile};
use crate::parquet::{DATE_COLUMN, FILE_EXTENSION, Table, TableRow};

/// The name of the de-duplicated KPI view.
pub const KPI_LATEST: &str = "kpi_latest";
/// The `kpi_values` files as written, crash copies included (`kpi_values` shows each
/// `(key, revision)` once).
pub const KPI_VALUES_RAW: &str = "kpi_values_raw";

/// While old-layout `kpi_values` files exist: the current files' table…
const LEGACY_CURRENT: &str = "kpiflow_kpi_values_files";
/// …and the old ones' (`kpi=<id>/date=…`), unioned as `kpi_values_raw`.
const LEGACY_OLD: &str = "kpiflow_kpi_values_old_layout";

/// A listing table of Parquet files under `url`, Hive-partitioned by `partitions`.
fn listing(
    url: datafusion::datasource::listing::ListingTableUrl,
    schema: datafusion::arrow::datatypes::SchemaRef,
    partitions: Vec<(String, datafusion::arrow::datatypes::DataType)>,
) -> Result<Arc<ListingTable>, SinkError> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(FILE_EXTENSION)
        .with_table_partition_cols(partitions);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(
        ListingTable::try_new(config).map_err(SinkError::datafusion)?,
    ))
}

/// How a query treats the tables' files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Check every file's Parquet footer first and leave out those that cannot be read (each
    /// logged and counted as an [`UnreadableFileSkipped`] event), instead of failing. The
    /// answer then lacks their rows, and [`Answer::skipped`] says which. Default: `false`.
    pub skip_unreadable: bool,
}

/// A query's result, and the files it left out.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The result rows.
    pub batches: Vec<RecordBatch>,
    /// Unreadable files left out (with [`QueryOptions::skip_unreadable`] only).
    pub skipped: Vec<UnreadableFile>,
}

impl Answer {
    /// A sentence saying which files the answer lacks, or `None` when it lacks none.
    pub fn skipped_note(&self) -> Option<String> {
        (!self.skipped.is_empty()).then(|| {
            let files: Vec<String> = self.skipped.iter().map(ToString::to_string).collect();
            format!(
                "skipped {} (their rows are missing from this answer): {}",
                plural(self.skipped.len(), "unreadable Parquet file"),
                files.join("; ")
            )
        })
    }
}

/// A DataFusion session over the tables under `tables` (a folder, or an opened
/// [`TableStore`] for a bucket; see the module docs).
///
/// A missing or empty folder gives empty tables, not an error. Files are listed on every
/// query, so a long-lived session sees files the sink commits later; hidden temporary files
/// (`.part-….parquet.tmp`) are never read.
pub async fn session(tables: impl Into<TableStore>) -> Result<SessionContext, SinkError> {
    Ok(session_with(tables, QueryOptions::default()).await?.0)
}

/// [`session`], with `options`; also returns the files it left out.
pub async fn session_with(
    tables: impl Into<TableStore>,
    options: QueryOptions,
) -> Result<(SessionContext, Vec<UnreadableFile>), SinkError> {
    let tables = tables.into();
    // DataFusion caches directory listings forever by default; a sink's folders grow, so
    // listing again on every query is the point.
    let runtime = RuntimeEnvBuilder::new()
        .with_object_list_cache_limit(0)
        .build_arc()
        .map_err(SinkError::datafusion)?;
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    tables.register(&ctx);
    let mut skipped = Vec::new();
    if options.skip_unreadable {
        // Checked once, here: a file that breaks later fails the query and is named then.
        let (store, url) = unreadable::query_store(&tables);
        let bad = unreadable::find(&tables, &store).await?;
        for (_, file) in &bad {
            UnreadableFileSkipped {
                table: file.table,
                path: &file.path,
                reason: &file.reason,
            }
            .emit();
        }
        let hidden = bad.iter().map(|(key, _)| key.clone()).collect();
        ctx.register_object_store(&url, Arc::new(HidingStore::new(store, hidden)));
        skipped = bad.into_iter().map(|(_, file)| file).collect();
    }
    let legacy = legacy::present(&tables).await?;
    for table in Table::ALL {
        let url = tables.table_url(table)?;
        let provider = listing(url.clone(), table.schema(), table.partition_columns())?;
        // `kpi_values` is the view over the files that shows each (key, revision) once.
        let name = match table {
            Table::KpiValues if legacy => LEGACY_CURRENT,
            Table::KpiValues => KPI_VALUES_RAW,
            _ => table.name(),
        };
        ctx.register_table(name, provider)
            .map_err(SinkError::datafusion)?;
    }
    if legacy {
        // Files an older sink wrote under kpi=<id>/date=…: listed as a second table, and
        // `kpi_values_raw` is both (see `parquet::legacy`).
        let url = tables.table_url(Table::KpiValues)?;
        let provider = listing(url, legacy::file_schema(), legacy::partition_columns())?;
        ctx.register_table(LEGACY_OLD, provider)
            .map_err(SinkError::datafusion)?;
        let columns = quoted_columns(Table::KpiValues, true);
        let ddl = format!(
            "CREATE VIEW {KPI_VALUES_RAW} AS SELECT {columns} FROM {LEGACY_CURRENT} \
             UNION ALL SELECT {columns} FROM {LEGACY_OLD}"
        );
        ctx.sql(&ddl)
            .await
            .map_err(|e| SinkError::Internal(format!("creating view {KPI_VALUES_RAW}: {e}")))?;
    }
    for (view, ddl) in [
        (Table::KpiValues.name(), kpi_values_ddl()),
        (KPI_LATEST, kpi_latest_ddl()),
    ] {
        ctx.sql(&ddl)
            .await
            .map_err(|e| SinkError::Internal(format!("creating view {view}: {e}")))?;
    }
    Ok((ctx, skipped))
}

/// Runs one read-only SQL statement over the tables under `tables` and collects the result.
///
/// Statements that would change anything (DDL such as `CREATE`, DML such as `COPY … TO`,
/// `SET`) are refused with [`SinkError::BadQuery`]. A file that cannot be read fails the
/// query with [`SinkError::UnreadableFiles`], which names it.
pub async fn query(
    tables: impl Into<TableStore>,
    sql: &str,
) -> Result<Vec<RecordBatch>, SinkError> {
    Ok(query_with(tables, sql, QueryOptions::default())
        .await?
        .batches)
}

/// [`query`], with `options`: with `skip_unreadable` the answer leaves out the files whose
/// footer cannot be read and says which ([`Answer::skipped`]).
pub async fn query_with(
    tables: impl Into<TableStore>,
    sql: &str,
    options: QueryOptions,
) -> Result<Answer, SinkError> {
    let tables = tables.into();
    let (ctx, skipped) = session_with(&tables, options).await?;
    let read_only = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let result = async {
        ctx.sql_with_options(sql, read_only)
            .await
            .map_err(SinkError::datafusion)?
            .collect()
            .await
            .map_err(SinkError::datafusion)
    }
    .await;
    match result {
        Ok(batches) => Ok(Answer { batches, skipped }),
        Err(e @ SinkError::Read { .. }) => Err(name_unreadable_files(&tables, e).await),
        Err(e) => Err(e),
    }
}

/// DataFusion's read errors do not say which file ("Corrupt footer"): after one, check the
/// footers and name the unreadable files; `e` stands when every footer is sound.
async fn name_unreadable_files(tables: &TableStore, e: SinkError) -> SinkError {
    let (store, _) = unreadable::query_store(tables);
    match unreadable::find(tables, &store).await {
        Ok(bad) if !bad.is_empty() => SinkError::UnreadableFiles {
            files: bad.into_iter().map(|(_, file)| file).collect(),
        },
        Ok(_) => e,
        Err(check) => {
            tracing::warn!(error = %check, "could not check the footers after a read error");
            e
        }
    }
}

/// The breaches open at the end of the `breaches` table: per `breach_id`, the latest event,
/// kept when it is `firing`. The sink rebuilds its `breaches_open` gauge from it at start-up.
pub async fn open_breaches(tables: impl Into<TableStore>) -> Result<Vec<BreachEvent>, SinkError> {
    let columns = quoted_columns(Table::Breaches, false);
    // At the same `at`, a resolve wins: a breach cannot reopen in the instant it closed.
    let sql = format!(
        "SELECT {columns} FROM (
           SELECT *, row_number() OVER (
             PARTITION BY breach_id
             ORDER BY at DESC, CASE state WHEN 'resolved' THEN 0 ELSE 1 END, emitted_at DESC
           ) AS kpiflow_rank
           FROM breaches
         ) WHERE kpiflow_rank = 1 AND state = 'firing'"
    );
    let batches = query(tables, &sql).await?;
    let mut out = Vec::new();
    for batch in &batches {
        out.extend(BreachEvent::from_batch(batch)?);
    }
    Ok(out)
}

// Both views partition by `kpi` and `date` as well as by `key`: the key determines both (its
// KPI id and window start), so the rows are the same, and DataFusion pushes a filter on a
// window's PARTITION BY columns below it, so `WHERE kpi = … AND date = …` still reads only
// those folders and pages.

fn kpi_values_ddl() -> String {
    let columns = quoted_columns(Table::KpiValues, true);
    let name = Table::KpiValues.name();
    format!(
        "CREATE VIEW {name} AS SELECT {columns} FROM (
           SELECT *, row_number() OVER (
             PARTITION BY kpi, date, key, revision ORDER BY emitted_at DESC
           ) AS kpiflow_copy
           FROM {KPI_VALUES_RAW}
         ) WHERE kpiflow_copy = 1"
    )
}

fn kpi_latest_ddl() -> String {
    let columns = quoted_columns(Table::KpiValues, true);
    format!(
        "CREATE VIEW {KPI_LATEST} AS SELECT {columns} FROM (
           SELECT *, row_number() OVER (
             PARTITION BY kpi, date, key ORDER BY revision DESC, emitted_at DESC
           ) AS kpiflow_rank
           FROM {KPI_VALUES_RAW}
         ) WHERE kpiflow_rank = 1"
    )
}

/// The table's columns: the files' columns, then `date` when asked for.
fn quoted_columns(table: Table, with_date: bool) -> String {
    let mut names: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    if with_date {
        names.push(format!("\"{DATE_COLUMN}\""));
    }
    names.join(", ")
}

/// How [`format_batches`] renders a result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// A boxed text table followed by the row count.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects (decimals as strings, exact).
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!(
                "unknown output format {other:?}; valid formats are table, csv, json"
            )),
        }
    }
}

/// Renders query results as text in `format`.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String, SinkError> {
    use datafusion::arrow::error::ArrowError;
    let arrow = |e: ArrowError| SinkError::Internal(format!("formatting results: {e}"));
    let utf8 = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|e| SinkError::Internal(format!("non-UTF-8 output: {e}")))
    };
    match format {
        OutputFormat::Table => {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let table =
                datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(arrow)?;
            let noun = if rows == 1 { "row" } else { "rows" };
            Ok(format!("{table}\n({rows} {noun})\n"))
        }
        OutputFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(arrow)?;
            }
            utf8(writer.into_inner())
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(arrow)?;
            }
            writer.finish().map_err(arrow)?;
            let mut bytes = writer.into_inner();
            if bytes.is_empty() {
                bytes.extend_from_slice(b"[]");
            }
            bytes.push(b'\n');
            utf8(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Compression;
    use crate::parquet::Table;
    use crate::parquet::tests::{breach_fixtures, kpi_fixtures, write_with_pause};
    use crate::parquet::write_rows;
    use kpiflow_schemas::KpiUpdate;

    async fn read<R: TableRow>(dir: &Path, sql: &str) -> Vec<R> {
        let batches = query(dir, sql).await.unwrap();
        batches
            .iter()
            .flat_map(|b| R::from_batch(b).unwrap())
            .collect()
    }

    fn count(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[tokio::test]
    async fn a_missing_or_empty_folder_gives_empty_tables() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("never-written");
        for table in ["kpi_values", "breaches", "kpi_latest"] {
            let batches = query(&missing, &format!("SELECT * FROM {table}"))
                .await
                .unwrap();
            assert_eq!(count(&batches), 0, "{table}");
        }
        std::fs::create_dir_all(dir.path().join("kpi_values/date=2025-01-01")).unwrap();
        let batches = query(dir.path(), "SELECT count(*) AS n FROM kpi_values")
            .await
            .unwrap();
        let text = format_batches(&batches, OutputFormat::Csv).unwrap();
        assert_eq!(text, "n\n0\n");
        assert!(open_breaches(&missing).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn written_rows_read_back_exactly_and_temp_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        let events = breach_fixtures();
        write_rows(dir.path(), &kpis, Compression::Zstd).unwrap();
        write_rows(dir.path(), &events, Compression::None).unwrap();
        // A file caught mid-write: readers must skip it (it is not even valid Parquet).
        let partition = dir.path().join("kpi_values/date=2025-03-14");
        std::fs::write(
            partition.join(".part-crashed.parquet.tmp"),
            b"PAR1 half a file",
        )
        .unwrap();

        let back: Vec<KpiUpdate> = read(
            dir.path(),
            "SELECT * FROM kpi_values ORDER BY key, revision",
        )
        .await;
        let mut expected = kpis.clone();
        expected.sort_by_key(|a| (a.key(), a.revision));
        assert_eq!(back, expected);

        let back: Vec<BreachEvent> = read(dir.path(), "SELECT * FROM breaches ORDER BY at").await;
        let mut expected = events;
        expected.sort_by_key(|b| b.at);
        assert_eq!(back, expected);

        let dates = query(
            dir.path(),
            "SELECT DISTINCT CAST(date AS VARCHAR) AS d FROM kpi_values ORDER BY d",
        )
        .await
        .unwrap();
        assert_eq!(
            format_batches(&dates, OutputFormat::Csv).unwrap(),
            "d\n2025-03-13\n2025-03-14\n"
        );
        let day = query(
            dir.path(),
            "SELECT count(*) AS n FROM kpi_values WHERE date = DATE '2025-03-13'",
        )
        .await
        .unwrap();
        assert_eq!(format_batches(&day, OutputFormat::Csv).unwrap(), "n\n2\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_never_sees_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        write_rows(dir.path(), &kpis, Compression::Zstd).unwrap();
        // One partition's rows (the file goes into that KPI's folder).
        let lsr: Vec<&KpiUpdate> = kpis
            .iter()
            .filter(|k| k.kpi == "late_shipment_rate")
            .collect();
        let batch = KpiUpdate::to_batch(&lsr).unwrap();
        let extra = lsr.len();
        let (half_written, go_on) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
        let writer = {
            let folder = dir.path().join("kpi_values/date=2025-03-14");
            let (tell, wait) = (half_written.0, go_on.1);
            std::thread::spawn(move || {
                write_with_pause(&folder, "part-paused.parquet", &batch, || {
                    tell.send(()).unwrap();
                    wait.recv().unwrap();
                })
            })
        };
        tokio::task::block_in_place(|| half_written.1.recv()).unwrap();
        // Half a Parquet file is on disk right now; it must be invisible, not an error.
        let n = count(
            &query(dir.path(), "SELECT * FROM kpi_values_raw")
                .await
                .unwrap(),
        );
        assert_eq!(n, kpis.len());
        go_on.0.send(()).unwrap();
        let path = writer.join().unwrap();
        assert!(path.ends_with("part-paused.parquet"));
        let n = count(
            &query(dir.path(), "SELECT * FROM kpi_values_raw")
                .await
                .unwrap(),
        );
        assert_eq!(n, kpis.len() + extra);
    }

    /// Schema evolution: files from an older writer that lacked nullable columns, and files
    /// from a newer writer with a column this reader does not know, read side by side.
    #[tokio::test]
    async fn older_and_newer_files_read_with_the_current_schema() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let mut sku = kpi_fixtures().remove(5);
        sku.kpi = "evolution_test".into();
        sku.settling = true;
        sku.final_at = Some(sku.window.end + chrono::Duration::days(14));
        let folder = dir
            .path()
            .join(format!("kpi_values/{}", sku.partition_path()));
        let current = KpiUpdate::to_batch(&[&sku]).unwrap();

        // An old file: written before `sku`, `campaign`, `currency`, `settling` and
        // `final_at` existed.
        let keep: Vec<usize> = (0..current.num_columns())
            .filter(|i| {
                let name = current.schema().field(*i).name().clone();
                !["sku", "campaign", "currency", "settling", "final_at"].contains(&name.as_str())
            })
            .collect();
        let old = current.project(&keep).unwrap();
        crate::parquet::write_file_atomically(&folder, "part-old.parquet", &old, Compression::Zstd)
            .unwrap();
        // A newer file: one more column, unknown to this reader.
        let mut fields: Vec<Field> = current
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("added_later", DataType::Utf8, true));
        let mut columns = current.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![Some("x")])));
        let newer = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        crate::parquet::write_file_atomically(
            &folder,
            "part-newer.parquet",
            &newer,
            Compression::Zstd,
        )
        .unwrap();

        let back: Vec<KpiUpdate> = read(
            dir.path(),
            "SELECT * FROM kpi_values_raw ORDER BY sku NULLS FIRST",
        )
        .await;
        let mut without = sku.clone();
        without.scope.sku = None;
        without.scope.campaign = None;
        without.currency = None;
        without.settling = false;
        without.final_at = None;
        assert_eq!(
            back,
            vec![without, sku],
            "missing nullable columns read as null"
        );
    }

    #[tokio::test]
    async fn kpi_latest_keeps_the_highest_revision_when_rows_were_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        // A replay after a crash writes the same rows again, in a second file.
        write_rows(dir.path(), &kpis, Compression::Zstd).unwrap();
        write_rows(dir.path(), &kpis[..2], Compression::Zstd).unwrap();
        let raw = query(dir.path(), "SELECT * FROM kpi_values_raw")
            .await
            .unwrap();
        assert_eq!(count(&raw), kpis.len() + 2, "the files hold both copies");
        let all = query(dir.path(), "SELECT * FROM kpi_values").await.unwrap();
        assert_eq!(
            count(&all),
            kpis.len(),
            "kpi_values shows each (key, revision) once"
        );

        let latest: Vec<KpiUpdate> =
            read(dir.path(), "SELECT * FROM kpi_latest ORDER BY key").await;
        let keys: std::collections::BTreeSet<_> = kpis.iter().map(KpiUpdate::key).collect();
        assert_eq!(latest.len(), keys.len());
        let lsr = latest
            .iter()
            .find(|k| k.key() == kpis[0].key())
            .expect("the late shipment series");
        assert_eq!(lsr.revision, 2);
        assert_eq!(lsr, &kpis[1]);
    }

    /// A truncated copy of a file of the partition, as a disk that filled mid-copy leaves it.
    fn truncated_file(dir: &Path) -> std::path::PathBuf {
        let good = write_rows(dir, &kpi_fixtures()[2..3], Compression::Zstd).unwrap();
        let bytes = std::fs::read(&good[0].path).unwrap();
        std::fs::remove_file(&good[0].path).unwrap();
        let path = good[0].path.with_file_name("part-truncated.parquet");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        path
    }

    #[tokio::test]
    async fn an_unreadable_file_is_named_and_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        // Rows 0 and 1 (late_shipment_rate, 2025-03-14) and row 3 (gmv) are sound; row 2
        // (late_shipment_rate, 2025-03-13) is only in a file cut in half.
        write_rows(dir.path(), &kpis[..2], Compression::Zstd).unwrap();
        write_rows(dir.path(), &kpis[3..4], Compression::Zstd).unwrap();
        let bad = truncated_file(dir.path());
        let absolute = std::path::absolute(&bad).unwrap();
        let sql = "SELECT kpi, shop, numerator, revision FROM kpi_values ORDER BY kpi, revision";

        let err = query(dir.path(), sql).await.unwrap_err();
        let SinkError::UnreadableFiles { files } = &err else {
            panic!("expected the file to be named, got {err:?}");
        };
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].table, Table::KpiValues);
        assert_eq!(files[0].path, absolute.display().to_string());
        assert!(
            files[0].reason.contains("Corrupt footer"),
            "{}",
            files[0].reason
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read 1 Parquet file: {} (",
                absolute.display()
            )) && text.ends_with("or query with --skip-unreadable to answer from the other files"),
            "{text}"
        );
        assert!(!err.is_retryable());

        let counter = || {
            kpiflow_core::metrics::query_files_skipped()
                .with_label_values(&["kpi_values"])
                .get()
        };
        let before = counter();
        let options = QueryOptions {
            skip_unreadable: true,
        };
        let answer = query_with(dir.path(), sql, options).await.unwrap();
        // The three sound rows, by hand from the fixture: gmv dtc-store 12345.67 revision 3;
        // late_shipment_rate shop-1 3 (revision 1) and 4 (revision 2). Row 2 (9/100, revision
        // 5) is the truncated file's and is missing.
        assert_eq!(
            format_batches(&answer.batches, OutputFormat::Csv).unwrap(),
            "kpi,shop,numerator,revision\n\
             gmv,dtc-store,12345.670000000,3\n\
             late_shipment_rate,shop-1,3.000000000,1\n\
             late_shipment_rate,shop-1,4.000000000,2\n"
        );
        assert_eq!(answer.skipped, files.clone());
        assert_eq!(
            answer.skipped_note().unwrap(),
            format!(
                "skipped 1 unreadable Parquet file (their rows are missing from this answer): {}",
                files[0]
            )
        );
        assert!(counter() > before, "the skipped file is counted");
        // Nothing skipped, nothing said.
        std::fs::remove_file(&bad).unwrap();
        let clean = query_with(dir.path(), sql, options).await.unwrap();
        assert!(clean.skipped.is_empty() && clean.skipped_note().is_none());
    }

    #[tokio::test]
    async fn replayed_rows_show_once_in_kpi_values_and_partition_filters_still_prune() {
        let dir = tempfile::tempdir().unwrap();
        let kpis = kpi_fixtures();
        // First run: late_shipment_rate revisions 1, 2 (2025-03-14) and 5 (2025-03-13), gmv
        // revision 3.
        write_rows(dir.path(), &kpis[..4], Compression::Zstd).unwrap();
        // Killed before its commit, the sink replays rows 1..4 and then reads a new gmv
        // revision 4 (12400, restated by late data).
        let mut restated = kpis[3].clone();
        restated.revision = 4;
        restated.numerator = kpiflow_schemas::Decimal::parse("12400").unwrap();
        let mut replay = kpis[1..4].to_vec();
        replay.push(restated);
        write_rows(dir.path(), &replay, Compression::Zstd).unwrap();

        let csv = |sql: &'static str| {
            let dir = dir.path().to_path_buf();
            async move { format_batches(&query(&dir, sql).await.unwrap(), OutputFormat::Csv).unwrap() }
        };
        // 4 + 4 rows in the files; 4 + 1 distinct (key, revision) pairs.
        assert_eq!(
            csv("SELECT count(*) AS n FROM kpi_values_raw").await,
            "n\n8\n"
        );
        assert_eq!(
            csv("SELECT kpi, numerator, revision FROM kpi_values ORDER BY kpi, revision").await,
            "kpi,numerator,revision\n\
             gmv,12345.670000000,3\n\
             gmv,12400.000000000,4\n\
             late_shipment_rate,3.000000000,1\n\
             late_shipment_rate,4.000000000,2\n\
             late_shipment_rate,9.000000000,5\n"
        );
        assert_eq!(
            csv("SELECT numerator, revision FROM kpi_latest WHERE kpi = 'gmv'").await,
            "numerator,revision\n12400.000000000,4\n"
        );

        // A damaged file in another date's folder: a query filtered on `date` must not open
        // it, so the views pass the filter down to the listing.
        let other_day = dir.path().join("kpi_values/date=2025-03-12");
        std::fs::create_dir_all(&other_day).unwrap();
        std::fs::write(other_day.join("part-bad.parquet"), b"not parquet at all").unwrap();
        assert_eq!(
            csv("SELECT count(*) AS n FROM kpi_values WHERE kpi = 'gmv' AND date = DATE '2025-03-14'")
                .await,
            "n\n2\n"
        );
        assert_eq!(
            csv("SELECT count(*) AS n FROM kpi_latest WHERE kpi = 'gmv' AND date > DATE '2025-03-12'")
                .await,
            "n\n1\n"
        );
        let err = query(dir.path(), "SELECT count(*) FROM kpi_values")
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::UnreadableFiles { .. }), "{err}");
    }

    #[tokio::test]
    async fn golden_kpi_latest_table() {
        let dir = tempfile::tempdir().unwrap();
        write_rows(dir.path(), &kpi_fixtures(), Compression::Zstd).unwrap();
        let batches = query(
            dir.path(),
            "SELECT date, kpi, shop, window_name, window_start, numerator, denominator, value, \
             currency, revision FROM kpi_latest ORDER BY key",
        )
        .await
        .unwrap();
        let text = format_batches(&batches, OutputFormat::Table).unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kpi_latest.golden.txt");
        if std::env::var_os("KPIFLOW_BLESS").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (KPIFLOW_BLESS=1 writes it)", golden.display()));
        assert_eq!(
            text,
            expected,
            "KPIFLOW_BLESS=1 rewrites {}",
            golden.display()
        );
    }

    #[tokio::test]
    async fn open_breaches_are_the_latest_firing_events() {
        let dir = tempfile::tempdir().unwrap();
        let events = breach_fixtures();
        write_rows(dir.path(), &events, Compression::Zstd).unwrap();
        let open = open_breaches(dir.path()).await.unwrap();
        assert_eq!(open, vec![events[2].clone()]);
    }

    #[tokio::test]
    async fn output_formats_and_bad_queries() {
        let dir = tempfile::tempdir().unwrap();
        write_rows(dir.path(), &kpi_fixtures()[3..4], Compression::Zstd).unwrap();
        let batches = query(dir.path(), "SELECT kpi, numerator, value FROM kpi_latest")
            .await
            .unwrap();
        let json = format_batches(&batches, OutputFormat::Json).unwrap();
        assert!(json.starts_with("[{\"kpi\":\"gmv\""), "{json}");
        assert!(json.contains("12345.670000000"), "{json}");
        let table = format_batches(&batches, OutputFormat::Table).unwrap();
        assert!(table.contains("| gmv "), "{table}");
        assert!(table.ends_with("(1 row)\n"), "{table}");
        assert_eq!(format_batches(&[], OutputFormat::Json).unwrap(), "[]\n");
        assert_eq!(
            "xml".parse::<OutputFormat>().unwrap_err(),
            "unknown output format \"xml\"; valid formats are table, csv, json"
        );

        let err = query(dir.path(), "SELECT nope FROM kpi_latest")
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::BadQuery { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let err = query(dir.path(), "CREATE TABLE t AS SELECT 1")
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::BadQuery { .. }), "{err:?}");
    }
}
