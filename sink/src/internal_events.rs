//! Internal events of the sink's table hygiene: each struct's `emit()` logs and counts one thing.
//!
//! Counted in `kpiflow_sink_temp_files_removed_total{table}` and
//! `kpiflow_query_files_skipped_total{table}` (names in `kpiflow_core::metrics`).

use std::path::Path;

use kpiflow_core::metrics;

use crate::parquet::Table;

/// A temporary file of a killed writer (`.part-….parquet.tmp`) was removed at sink start.
pub struct TempFileRemoved<'a> {
    /// The table whose folder held it.
    pub table: Table,
    /// The removed file.
    pub path: &'a Path,
}

impl TempFileRemoved<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        metrics::sink_temp_files_removed()
            .with_label_values(&[self.table.name()])
            .inc();
        tracing::info!(table = %self.table, path = %self.path.display(),
            "removed a temporary file of a killed writer");
    }
}

/// A table file whose Parquet footer cannot be read was left out of a query
/// (`--skip-unreadable`): the answer lacks its rows.
pub struct UnreadableFileSkipped<'a> {
    /// The table the file belongs to.
    pub table: Table,
    /// The file (a path, or an `s3://` URL).
    pub path: &'a str,
    /// Why it cannot be read, e.g. the Parquet reader's "Corrupt footer".
    pub reason: &'a str,
}

impl UnreadableFileSkipped<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        metrics::query_files_skipped()
            .with_label_values(&[self.table.name()])
            .inc();
        tracing::warn!(table = %self.table, path = self.path, reason = self.reason,
            "skipped an unreadable Parquet file; the answer lacks its rows");
    }
}
