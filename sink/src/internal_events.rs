//! Internal events of the sink's table hygiene and of the guard's webhook: each struct's
//! `emit()` logs and counts one thing.
//!
//! Counted in `kpiflow_sink_temp_files_removed_total{table}`,
//! `kpiflow_query_files_skipped_total{table}` and `kpiflow_guard_webhook_pushes_total{outcome}`
//! (names in `kpiflow_core::metrics`).

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

/// What became of one attempt or push of the guard's webhook ([`crate::guard_webhook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardPushOutcome {
    /// The receiver accepted it (2xx).
    Delivered,
    /// An attempt failed (network error, timeout, 5xx, 408, 429) and will be retried.
    Retried,
    /// The receiver refused it for good (another 4xx); not retried.
    Rejected,
    /// Every attempt failed; given up, the state is re-synced once the queue is empty.
    Failed,
    /// The queue was full; dropped, the state is re-synced once the queue is empty.
    Dropped,
    /// Still queued or in flight at shutdown; the next start's syncs tell the state.
    Abandoned,
}

impl GuardPushOutcome {
    /// Every outcome, to create the series at zero.
    pub const ALL: [GuardPushOutcome; 6] = [
        GuardPushOutcome::Delivered,
        GuardPushOutcome::Retried,
        GuardPushOutcome::Rejected,
        GuardPushOutcome::Failed,
        GuardPushOutcome::Dropped,
        GuardPushOutcome::Abandoned,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardPushOutcome::Delivered => "delivered",
            GuardPushOutcome::Retried => "retried",
            GuardPushOutcome::Rejected => "rejected",
            GuardPushOutcome::Failed => "failed",
            GuardPushOutcome::Dropped => "dropped",
            GuardPushOutcome::Abandoned => "abandoned",
        }
    }
}

/// One push of the guard's webhook was delivered, retried, refused, given up or dropped.
pub struct GuardPushed<'a> {
    /// What became of it.
    pub outcome: GuardPushOutcome,
    /// `pause`, `resume`, `sync` or `sync_complete`.
    pub event: &'a str,
    /// The push's `delivery_id`.
    pub delivery_id: &'a str,
    /// The shop it is about (none for `sync_complete`).
    pub shop: Option<&'a str>,
    /// The attempt, from 1 (0 when it was never attempted).
    pub attempt: u32,
    /// Why it failed: the receiver's status and answer, or the network error.
    pub reason: Option<&'a str>,
}

impl GuardPushed<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        metrics::guard_webhook_pushes()
            .with_label_values(&[self.outcome.as_str()])
            .inc();
        let (event, delivery_id, shop, attempt) =
            (self.event, self.delivery_id, self.shop, self.attempt);
        let reason = self.reason.unwrap_or_default();
        match self.outcome {
            GuardPushOutcome::Delivered => tracing::info!(
                event,
                delivery_id,
                shop,
                attempt,
                "guard webhook push delivered"
            ),
            GuardPushOutcome::Retried => tracing::warn!(
                event,
                delivery_id,
                shop,
                attempt,
                reason,
                "guard webhook push failed; retrying"
            ),
            GuardPushOutcome::Rejected => tracing::error!(
                event,
                delivery_id,
                shop,
                attempt,
                reason,
                "the guard webhook's receiver refused a push; not retried"
            ),
            GuardPushOutcome::Failed => tracing::error!(
                event,
                delivery_id,
                shop,
                attempt,
                reason,
                "guard webhook push given up after max_attempts; the state is re-synced next"
            ),
            GuardPushOutcome::Dropped => tracing::error!(
                event,
                delivery_id,
                shop,
                reason,
                "guard webhook push dropped; the state is re-synced once the queue is empty"
            ),
            GuardPushOutcome::Abandoned => tracing::warn!(
                event,
                delivery_id,
                shop,
                "guard webhook push abandoned at shutdown; the next start syncs the receiver"
            ),
        }
    }
}

/// The guard's webhook stopped at shutdown with pushes still queued or in flight; the next
/// start's syncs tell the receiver the state.
pub struct GuardPushesAbandoned {
    /// How many.
    pub count: usize,
}

impl GuardPushesAbandoned {
    /// Logs and counts (nothing when none was left).
    pub fn emit(&self) {
        if self.count == 0 {
            tracing::debug!("guard webhook stopped with nothing queued");
            return;
        }
        metrics::guard_webhook_pushes()
            .with_label_values(&[GuardPushOutcome::Abandoned.as_str()])
            .inc_by(self.count as u64);
        tracing::warn!(
            count = self.count,
            "guard webhook stopped with pushes queued; the next start syncs the receiver"
        );
    }
}
