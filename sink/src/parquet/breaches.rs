//! Table `breaches`: one row per [`BreachEvent`] (a breach opening or resolving), partitioned
//! by the UTC date of `at`.
//!
//! | column | type | null | from |
//! |---|---|---|---|
//! | breach_id, rule | Utf8 | no | both events of one breach share `breach_id` |
//! | rule_kind | Utf8 | no | `threshold`, `trend`, `staleness`, `cross_check` |
//! | state | Utf8 | no | `firing` or `resolved` |
//! | severity | Utf8 | no | `info`, `warning`, `critical` |
//! | kpi, owner, priority, unit | Utf8 | no | |
//! | kpi_version | UInt32 | no | |
//! | shop, channel, marketplace | Utf8 | no | `scope` |
//! | sku, campaign | Utf8 | yes | `scope` |
//! | window_kind, window_name | Utf8 | no | `window` |
//! | window_start, window_end | Timestamp(µs, UTC) | no | `window` (start inclusive, end exclusive) |
//! | time_zone, basis | Utf8 | no | `window` |
//! | value | Float64 | yes | the KPI value at the transition |
//! | numerator | Decimal128(38, 9) | no | exact |
//! | denominator | Decimal128(38, 9) | yes | exact |
//! | op | Utf8 | no | `above` or `below` |
//! | threshold | Float64 | no | |
//! | baseline | Float64 | yes | trend rules: the value compared against |
//! | message | Utf8 | no | for humans |
//! | runbook_url | Utf8 | yes | |
//! | at, emitted_at | Timestamp(µs, UTC) | no | event time, publish time |
//!
//! Readers add the partition column `date` (Date32). After a crash the same event may appear
//! twice; `(breach_id, state, at)` identifies an event.

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, Float64Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use kpiflow_schemas::BreachEvent;

use super::{
    Columns, Table, TableRow, batch, check_exact, exact_decimal_columns, exact_decimal_fields,
    from_micros, from_wire_name, optional_primitive_column, optional_string,
    optional_string_column, primitive_column, scope_columns, scope_fields, string_column,
    timestamp_column, timestamp_field, utf8_field, window_columns, window_fields,
};
use crate::SinkError;

/// The schema of `breaches` files.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(
            [
                vec![
                    utf8_field("breach_id"),
                    utf8_field("rule"),
                    utf8_field("rule_kind"),
                    utf8_field("state"),
                    utf8_field("severity"),
                    utf8_field("kpi"),
                    Field::new("kpi_version", DataType::UInt32, false),
                    utf8_field("owner"),
                    utf8_field("priority"),
                    utf8_field("unit"),
                ],
                // shop, channel, marketplace, sku, campaign
                scope_fields(),
                // window_kind, window_name, window_start, window_end, time_zone, basis
                window_fields(),
                vec![Field::new("value", DataType::Float64, true)],
                // numerator, denominator
                exact_decimal_fields(),
                vec![
                    utf8_field("op"),
                    Field::new("threshold", DataType::Float64, false),
                    Field::new("baseline", DataType::Float64, true),
                    utf8_field("message"),
                    Field::new("runbook_url", DataType::Utf8, true),
                    timestamp_field("at"),
                    timestamp_field("emitted_at"),
                ],
            ]
            .concat(),
        ))
    }))
}

impl TableRow for BreachEvent {
    const TABLE: Table = Table::Breaches;

    fn partition_date(&self) -> NaiveDate {
        self.at.date_naive()
    }

    /// In time order, so page statistics on `at` prune a time-range query.
    fn sort_for_file(rows: &mut [&Self]) {
        rows.sort_by(|a, b| (a.at, &a.breach_id).cmp(&(b.at, &b.breach_id)));
    }

    fn check_storable(&self) -> Result<(), SinkError> {
        check_exact(self.numerator, self.denominator)
    }

    fn to_batch(rows: &[&BreachEvent]) -> Result<RecordBatch, SinkError> {
        let columns = [
            vec![
                string_column(rows, |r| &r.breach_id),
                string_column(rows, |r| &r.rule),
                string_column(rows, |r| r.rule_kind.as_str()),
                string_column(rows, |r| r.state.as_str()),
                string_column(rows, |r| r.severity.as_str()),
                string_column(rows, |r| &r.kpi),
                primitive_column::<UInt32Type, _>(rows, |r| r.kpi_version),
                string_column(rows, |r| &r.owner),
                string_column(rows, |r| r.priority.as_str()),
                string_column(rows, |r| &r.unit),
            ],
            scope_columns(rows, |r| &r.scope),
            window_columns(rows, |r| &r.window),
            vec![optional_primitive_column::<Float64Type, _>(rows, |r| {
                r.value
            })],
            exact_decimal_columns(rows, |r| r.numerator, |r| r.denominator)?,
            vec![
                string_column(rows, |r| r.op.as_str()),
                primitive_column::<Float64Type, _>(rows, |r| r.threshold),
                optional_primitive_column::<Float64Type, _>(rows, |r| r.baseline),
                string_column(rows, |r| &r.message),
                optional_string_column(rows, |r| r.runbook_url.as_deref()),
                timestamp_column(rows, |r| r.at),
                timestamp_column(rows, |r| r.emitted_at),
            ],
        ]
        .concat();
        batch(Self::TABLE, columns)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<BreachEvent>, SinkError> {
        let c = Columns::of(batch, schema())?;
        let (scope, window, exact) = (c.scope()?, c.window()?, c.exact_decimals()?);
        let (breach_id, rule, state) = (
            c.strings("breach_id")?,
            c.strings("rule")?,
            c.strings("state")?,
        );
        let (severity, kpi, owner) = (
            c.strings("severity")?,
            c.strings("kpi")?,
            c.strings("owner")?,
        );
        let (rule_kind, priority, unit) = (
            c.strings("rule_kind")?,
            c.strings("priority")?,
            c.strings("unit")?,
        );
        let (baseline, runbook_url) = (
            c.get::<Float64Array>("baseline")?,
            c.strings("runbook_url")?,
        );
        let version = c.get::<UInt32Array>("kpi_version")?;
        let value = c.get::<Float64Array>("value")?;
        let (op, threshold) = (c.strings("op")?, c.get::<Float64Array>("threshold")?);
        let (message, at, emitted_at) = (
            c.strings("message")?,
            c.times("at")?,
            c.times("emitted_at")?,
        );
        (0..batch.num_rows())
            .map(|i| {
                let (numerator, denominator) = exact.at(i)?;
                Ok(BreachEvent {
                    breach_id: breach_id.value(i).to_string(),
                    rule: rule.value(i).to_string(),
                    rule_kind: from_wire_name(rule_kind.value(i), "rule_kind")?,
                    state: from_wire_name(state.value(i), "state")?,
                    severity: from_wire_name(severity.value(i), "severity")?,
                    kpi: kpi.value(i).to_string(),
                    kpi_version: version.value(i),
                    owner: owner.value(i).to_string(),
                    priority: from_wire_name(priority.value(i), "priority")?,
                    unit: unit.value(i).to_string(),
                    scope: scope.at(i)?,
                    window: window.at(i)?,
                    value: value.is_valid(i).then(|| value.value(i)),
                    numerator,
                    denominator,
                    op: from_wire_name(op.value(i), "op")?,
                    threshold: threshold.value(i),
                    baseline: baseline.is_valid(i).then(|| baseline.value(i)),
                    message: message.value(i).to_string(),
                    runbook_url: optional_string(runbook_url, i),
                    at: from_micros(at.value(i), "at")?,
                    emitted_at: from_micros(emitted_at.value(i), "emitted_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::breach_fixtures;
    use kpiflow_schemas::WindowKind;

    #[test]
    fn rows_round_trip_exactly_through_arrow() {
        let events = breach_fixtures();
        // Both window kinds, and zones and bases that are not empty: a table that dropped
        // them could not give these events back.
        for kind in [WindowKind::Rolling, WindowKind::BusinessDay] {
            assert!(events.iter().any(|b| b.window.kind == kind), "{kind:?}");
        }
        assert!(
            events
                .iter()
                .all(|b| !b.window.time_zone.is_empty() && !b.window.basis.is_empty())
        );
        let batch = BreachEvent::to_batch(&events.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.schema(), schema());
        assert_eq!(BreachEvent::from_batch(&batch).unwrap(), events);
    }

    #[test]
    fn the_window_is_stored_whole_under_wire_names() {
        let events = breach_fixtures();
        let batch = BreachEvent::to_batch(&events.iter().collect::<Vec<_>>()).unwrap();
        let c = Columns::of(&batch, schema()).unwrap();
        let column = |name: &str| -> Vec<String> {
            let strings = c.strings(name).unwrap();
            (0..strings.len())
                .map(|i| strings.value(i).to_string())
                .collect()
        };
        assert_eq!(
            column("window_kind"),
            ["rolling", "rolling", "business_day"]
        );
        assert_eq!(column("time_zone"), ["UTC", "UTC", "America/Los_Angeles"]);
        assert_eq!(column("basis"), ["shipped", "shipped", "snapshot"]);
        assert_eq!(column("state"), ["firing", "resolved", "firing"]);
        assert_eq!(column("op"), ["above", "above", "above"]);
    }
}
