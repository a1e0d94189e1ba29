//! The one error type of this crate: a record that does not fit its schema.

/// Why a record could not be read as a canonical event or output.
///
/// Always the producer's fault (bad input): retrying the same bytes cannot help, so callers
/// route the record to the dead-letter topic with [`SchemaError::to_string`] as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not JSON, or not a JSON object.
    #[error("{schema}: not a JSON event object: {detail}")]
    Malformed {
        /// The schema name when it could be read, else `event`.
        schema: String,
        /// What the JSON parser said.
        detail: String,
    },
    /// A field is missing, has the wrong type, or breaks a rule.
    #[error("{schema}: field `{field}`: {problem}")]
    Field {
        /// The schema name, e.g. `order.placed` (`event` when the header itself is bad).
        schema: String,
        /// Dotted path of the field, e.g. `payload.total.amount`.
        field: String,
        /// The rule and the offending value, e.g. `must not be negative, got "-3.00"`.
        problem: String,
    },
    /// The schema name or version is not one this build reads.
    #[error(
        "event: fields `schema` = {schema:?}, `schema_version` = {version}: not a schema and version this build reads (supported: {supported})"
    )]
    Unsupported {
        /// The schema name found in the record.
        schema: String,
        /// The version found in the record.
        version: u32,
        /// What this build reads, e.g. `order.placed v1, order.paid v1, …`.
        supported: String,
    },
}

impl SchemaError {
    /// A field-rule violation; `value` is shown JSON-quoted so blanks and odd characters stay visible.
    pub fn field(
        schema: impl Into<String>,
        field: impl Into<String>,
        rule: &str,
        value: impl std::fmt::Display,
    ) -> Self {
        SchemaError::Field {
            schema: schema.into(),
            field: field.into(),
            problem: format!("{rule}, got {:?}", value.to_string()),
        }
    }

    /// The field path, where the error concerns one field.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            SchemaError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}
