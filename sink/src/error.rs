//! The one error type of this crate.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use kpiflow_core::CoreError;

use crate::parquet::unreadable::UnreadableFile;

/// `1 Parquet file`, `2 Parquet files`.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// What went wrong in the sink, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configuration value is wrong (the operator's fault); retrying cannot help.
    #[error("bad config: {key} = {value}: {problem}")]
    Config {
        /// The offending key, e.g. `sink.roll_rows`.
        key: String,
        /// The offending value as written in the config (strings quoted).
        value: String,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// A record cannot be stored as it is (the producer's fault); it is dead-lettered, not retried.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A SQL query is wrong (the caller's fault): syntax, unknown table or column, types.
    #[error("bad query: {message}")]
    BadQuery {
        /// DataFusion's explanation, which lists the valid names where it can.
        message: String,
        /// DataFusion's error.
        #[source]
        source: DataFusionError,
    },
    /// Kafka set-up failed: the consumer, producer or topics (an external system, or bad
    /// Kafka settings; see [`CoreError::is_retryable`]).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Kafka refused or could not be reached (an external system); retrying may help.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What the sink was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The filesystem refused a read or write (an external system); retrying may help when the
    /// disk has room again, not when permissions are wrong.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What the sink was doing, e.g. `writing`.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a Parquet file failed; usually an I/O error underneath (an external system).
    #[error("writing parquet {}: {source}", path.display())]
    Parquet {
        /// The temporary file being written.
        path: PathBuf,
        /// The Parquet writer's error.
        #[source]
        source: ParquetError,
    },
    /// Reading the Parquet files failed (a file is unreadable or the folder vanished).
    #[error("reading parquet: {source}")]
    Read {
        /// DataFusion's error.
        #[source]
        source: DataFusionError,
    },
    /// Table files whose Parquet footer cannot be decoded (a truncated copy, a disk fault, a
    /// foreign file: the data's fault, not the query's); retrying cannot help until they are
    /// moved away, or the query skips them (`kpiflow query --skip-unreadable`).
    #[error(
        "cannot read {}: {}; move them out of the table folder, or query with \
         --skip-unreadable to answer from the other files",
        plural(files.len(), "Parquet file"),
        files.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    UnreadableFiles {
        /// Each file, with why it cannot be read.
        files: Vec<UnreadableFile>,
    },
    /// An alert receiver (Alertmanager, a webhook) could not be reached, timed out, or answered
    /// 5xx, 408 or 429 (an external system); retrying helps once it is back.
    #[error("{target} unavailable: {reason}")]
    AlertUnavailable {
        /// The receiver, e.g. `alertmanager http://127.0.0.1:9093` (no path: it may hold a token).
        target: String,
        /// What failed.
        reason: String,
    },
    /// An alert receiver refused a delivery with a 4xx status (the payload or the receiver's
    /// configuration is at fault); retrying the same delivery cannot help.
    #[error("{target} refused the alert: HTTP {status}: {body}")]
    AlertRejected {
        /// The receiver.
        target: String,
        /// The HTTP status.
        status: u16,
        /// The start of the receiver's answer.
        body: String,
    },
    /// An invariant of this crate did not hold: this is likely a bug in kpiflow-sink.
    #[error("internal error (likely a bug in kpiflow-sink, please report it): {0}")]
    Internal(String),
}

impl SinkError {
    /// Wraps a Kafka client error with what the sink was doing.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        SinkError::Kafka {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error with what the sink was doing to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SinkError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Classifies a DataFusion error: planning and SQL errors are the query's fault, the rest
    /// come from reading the files.
    pub fn datafusion(source: DataFusionError) -> Self {
        match source.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => SinkError::BadQuery {
                message: source.strip_backtrace(),
                source,
            },
            _ => SinkError::Read { source },
        }
    }

    /// `true` when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            SinkError::Kafka { .. } | SinkError::AlertUnavailable { .. } => true,
            SinkError::Core(e) => e.is_retryable(),
            SinkError::Io { source, .. } => !matches!(
                source.kind(),
                ErrorKind::PermissionDenied
                    | ErrorKind::InvalidInput
                    | ErrorKind::NotADirectory
                    | ErrorKind::ReadOnlyFilesystem
            ),
            SinkError::Parquet { source, .. } => matches!(source, ParquetError::External(_)),
            SinkError::Config { .. }
            | SinkError::InvalidRecord(_)
            | SinkError::BadQuery { .. }
            | SinkError::Read { .. }
            | SinkError::UnreadableFiles { .. }
            | SinkError::AlertRejected { .. }
            | SinkError::Internal(_) => false,
        }
    }

    /// A low-cardinality label for the `kpiflow_errors_total{kind}` counter.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Config { .. } => "config",
            SinkError::InvalidRecord(_) => "invalid",
            SinkError::BadQuery { .. } => "query",
            SinkError::Core(CoreError::Storage { .. }) => "io",
            SinkError::Core(_) | SinkError::Kafka { .. } => "kafka",
            SinkError::Io { .. } | SinkError::Parquet { .. } => "io",
            SinkError::Read { .. } | SinkError::UnreadableFiles { .. } => "read",
            SinkError::AlertUnavailable { .. } => "unavailable",
            SinkError::AlertRejected { .. } => "rejected",
            SinkError::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_decide_retries() {
        let disk_full = SinkError::io(
            "writing",
            "/x",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(disk_full.is_retryable());
        let denied = SinkError::io(
            "writing",
            "/x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!denied.is_retryable());
        assert_eq!(denied.to_string(), "writing /x: permission denied");
        assert!(!SinkError::Internal("x".into()).is_retryable());
        let bad_sql = SinkError::datafusion(DataFusionError::Plan("no table t".into()));
        assert!(matches!(bad_sql, SinkError::BadQuery { .. }), "{bad_sql:?}");
    }
}
