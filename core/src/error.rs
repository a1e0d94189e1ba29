//! The one error type of this crate.

/// What went wrong in shared plumbing, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A configuration value is wrong (the operator's fault); retrying cannot help.
    #[error("bad config: `{key}` = {value:?}: {problem}")]
    Config {
        /// The offending key, e.g. `kafka.bootstrap_servers`.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// Kafka refused or could not be reached (an external system); retrying may help.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What kpiflow was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record was handed to Kafka but not acknowledged: it is not stored. Retrying may help
    /// unless the broker refused the record itself (too large, no such topic…).
    #[error("kafka: delivery of {record} failed: {source}")]
    Delivery {
        /// Which record, e.g. `event sim-42-17-placed (key "shop-001") to kpiflow.events.orders`.
        record: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Kafka answered, but not as needed (e.g. a topic could not be created); retrying may help.
    #[error("kafka: {0}")]
    KafkaAdmin(String),
    /// Object storage (S3 or a compatible store) refused or could not be reached (an
    /// external system); retrying may help.
    #[error("object storage: {context}: {source}")]
    Storage {
        /// What kpiflow was doing, with the object's URL.
        context: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The metrics endpoint could not bind or serve (an environment problem).
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics {
        /// The address it tried.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    /// Wraps a Kafka client error with what kpiflow was doing.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        CoreError::Kafka {
            context: context.into(),
            source,
        }
    }

    /// A configuration error: `key` = `value` is wrong because of `problem`.
    pub fn config(
        key: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        CoreError::Config {
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }

    /// Wraps an object-storage error with what kpiflow was doing.
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        CoreError::Storage {
            context: context.into(),
            source,
        }
    }

    /// `true` when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoreError::Kafka { .. } | CoreError::KafkaAdmin(_) => true,
            CoreError::Delivery { source, .. } => kafka_retryable(source),
            // A missing object or a refused credential stays so; a timeout or 5xx may not.
            CoreError::Storage { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            CoreError::Config { .. } | CoreError::Metrics { .. } => false,
        }
    }
}

/// Kafka errors that the same request will hit again, however long one waits.
pub fn kafka_retryable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    !matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidConfig
                | C::InvalidArgument
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::InvalidTopic
        )
    )
}
