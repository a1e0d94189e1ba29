//! Table `events` (optional, `sink.events_archive`): the canonical events as they arrived,
//! partitioned by the UTC date of `event_time`, in the processor's
//! [`event_table`](kpiflow_schemas::event_table) schema, so `kpiflow reconcile` can recompute
//! every KPI in batch and compare it with what the stream published.
//!
//! Columns: see [`kpiflow_schemas::event_table`]. Readers add the partition column `date`
//! (Date32). An event delivered twice (by a source, or by a replay after a crash) is stored
//! twice; `event_id` identifies it (reconcile's `events_once` view keeps one row per id).

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use kpiflow_schemas::Event;
use kpiflow_schemas::event_table;

use super::{Table, TableRow};
use crate::SinkError;

/// The schema of `events` files.
pub fn schema() -> SchemaRef {
    event_table::schema()
}

impl TableRow for Event {
    const TABLE: Table = Table::Events;

    fn partition_date(&self) -> NaiveDate {
        self.header.event_time.date_naive()
    }

    fn check_storable(&self) -> Result<(), SinkError> {
        event_table::check(self)
            .map_err(|e| SinkError::InvalidRecord(format!("{}: {e}", self.schema())))
    }

    fn to_batch(rows: &[&Event]) -> Result<RecordBatch, SinkError> {
        event_table::to_batch(rows.iter().copied())
            .map_err(|e| SinkError::InvalidRecord(e.to_string()))
    }

    /// The archive is read with SQL only (the catalog's measures, reconcile); turning rows
    /// back into events is not needed and not offered.
    fn from_batch(_batch: &RecordBatch) -> Result<Vec<Event>, SinkError> {
        Err(SinkError::Internal(
            "events rows are read with SQL, not decoded back into events".into(),
        ))
    }
}
