//! The one error type of this crate, telling whose fault a failure is.

use kpiflow_core::CoreError;
use rdkafka::error::KafkaError;

/// What went wrong while ingesting, and whose fault it is.
///
/// The variant decides what a caller does: fix the configuration ([`IngestError::Config`]),
/// dead-letter the record ([`IngestError::Input`]), retry later ([`IngestError::Kafka`],
/// [`IngestError::Delivery`], [`IngestError::External`] — see [`IngestError::is_retryable`]),
/// or report a bug ([`IngestError::Internal`]).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A configuration value is wrong (the operator's fault); retrying cannot help.
    #[error("bad config: `{key}` = {value}: {problem}")]
    Config {
        /// The offending key, e.g. `simulate.shops`.
        key: String,
        /// The offending value as written in the config (strings quoted).
        value: String,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// A source sent something kpiflow cannot use (the source's fault); the record belongs on
    /// the dead-letter topic, retrying the same bytes cannot help.
    #[error("bad input from {source_name}: {problem}")]
    Input {
        /// The connector or source, e.g. `simulator`.
        source_name: String,
        /// What is wrong, naming field, value and rule.
        problem: String,
    },
    /// Kafka refused a request or could not be reached (an external system).
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What kpiflow was doing.
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// Kafka answered, but not as needed (e.g. a topic could not be created).
    #[error("kafka: {0}")]
    KafkaAdmin(String),
    /// A record was handed to Kafka but not acknowledged: it is not stored.
    #[error("kafka: delivery of {record} failed: {source}")]
    Delivery {
        /// Which record, e.g. `event sim-42-17-placed (key "shop-001") to kpiflow.events.orders`.
        record: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// Another external system failed (a platform API, the metrics endpoint, the OS).
    #[error("{system}: {detail}")]
    External {
        /// Which system, e.g. `metrics endpoint`.
        system: String,
        /// What it said.
        detail: String,
        /// Whether trying again later may succeed.
        retryable: bool,
    },
    /// An invariant of kpiflow itself does not hold.
    #[error("internal error (this is likely a bug): {0}")]
    Internal(String),
}

impl IngestError {
    /// A configuration error; `value` is shown as given (quote strings at the call site).
    pub fn config(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        problem: impl Into<String>,
    ) -> Self {
        IngestError::Config {
            key: key.into(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// Wraps a Kafka client error with what kpiflow was doing.
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        IngestError::Kafka {
            context: context.into(),
            source,
        }
    }

    /// `true` when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Config { .. } | IngestError::Input { .. } | IngestError::Internal(_) => {
                false
            }
            IngestError::Kafka { source, .. } | IngestError::Delivery { source, .. } => {
                kpiflow_core::error::kafka_retryable(source)
            }
            IngestError::KafkaAdmin(_) => true,
            IngestError::External { retryable, .. } => *retryable,
        }
    }
}

impl From<CoreError> for IngestError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Config {
                key,
                value,
                problem,
            } => IngestError::Config {
                key,
                value: format!("{value:?}"),
                problem,
            },
            CoreError::Kafka { context, source } => IngestError::Kafka { context, source },
            CoreError::KafkaAdmin(detail) => IngestError::KafkaAdmin(detail),
            CoreError::Delivery { record, source } => IngestError::Delivery { record, source },
            CoreError::Metrics { addr, source } => IngestError::External {
                system: "metrics endpoint".into(),
                detail: format!("{addr}: {source}"),
                retryable: false,
            },
            e @ CoreError::Storage { .. } => IngestError::External {
                system: "object storage".into(),
                retryable: e.is_retryable(),
                detail: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn fault_decides_retry() {
        assert!(!IngestError::config("simulate.shops", 0, "must be at least 1").is_retryable());
        assert!(
            !IngestError::Input {
                source_name: "simulator".into(),
                problem: "x".into()
            }
            .is_retryable()
        );
        assert!(!IngestError::Internal("x".into()).is_retryable());
        let transient = KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut);
        assert!(IngestError::kafka("sending", transient).is_retryable());
        let permanent = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!IngestError::kafka("sending", permanent).is_retryable());
    }

    #[test]
    fn core_config_errors_stay_config_errors() {
        let e: IngestError = CoreError::Config {
            key: "kafka.partitions".into(),
            value: "0".into(),
            problem: "must be at least 1".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            r#"bad config: `kafka.partitions` = "0": must be at least 1"#
        );
        assert!(!e.is_retryable());
    }
}
