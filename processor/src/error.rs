//! The one error type of the processor.

use kpiflow_core::CoreError;

/// What stopped the processor, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A configuration value is wrong (the operator's fault); retrying cannot help.
    #[error("bad config: `processor.{key}` = {value}: {problem}")]
    Config {
        /// The key under `[processor]`.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// A KPI catalog definition is wrong (the operator's fault); retrying cannot help.
    #[error("bad KPI catalog ({file}): {item}: `{key}` = {value:?}: {problem}")]
    Catalog {
        /// The catalog file (or `built-in`).
        file: String,
        /// What the definition is, e.g. ``measure `gmv` `` or ``kpi `roas` ``.
        item: String,
        /// The key within the definition, e.g. `value`.
        key: String,
        /// The expression or value, as written.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// Evaluating a compiled catalog expression failed: a bug (the catalog was type-checked
    /// at start-up), not bad input; retrying cannot help.
    #[error("internal error evaluating {what}: {problem}")]
    Internal {
        /// Which expression.
        what: String,
        /// The underlying error.
        problem: String,
    },
    /// A state checkpoint cannot be used (corrupt, or from an incompatible version); the
    /// operator decides whether to delete it and rebuild from the input topics.
    #[error("bad checkpoint: {problem}")]
    Checkpoint {
        /// What is wrong.
        problem: String,
    },
    /// The event topics cannot be split by shop as the processor's tasks need (partition
    /// counts differ: the operator's fault, retrying cannot help), or their layout could not
    /// be read (the broker's: a restart retries).
    #[error("event topics: {problem}")]
    Topics {
        /// What is wrong.
        problem: String,
        /// Whether a restart may succeed (the layout could not be read).
        retryable: bool,
    },
    /// Kafka or another shared component failed (external); see [`CoreError::is_retryable`].
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Outputs could not be delivered to Kafka (external); the batch's offsets were not
    /// committed, so a restart reprocesses it.
    #[error("publishing outputs: {0}")]
    Publish(String),
}

impl ProcessorError {
    /// A config error for `key` with `value`.
    pub fn config(key: &str, value: impl std::fmt::Debug, problem: impl Into<String>) -> Self {
        ProcessorError::Config {
            key: key.to_string(),
            value: format!("{value:?}"),
            problem: problem.into(),
        }
    }

    /// `true` when retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcessorError::Config { .. }
            | ProcessorError::Catalog { .. }
            | ProcessorError::Internal { .. }
            | ProcessorError::Checkpoint { .. } => false,
            ProcessorError::Core(e) => e.is_retryable(),
            ProcessorError::Publish(_) => true,
            ProcessorError::Topics { retryable, .. } => *retryable,
        }
    }
}
