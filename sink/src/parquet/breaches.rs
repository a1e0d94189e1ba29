//! Table `breaches`: one row per [`BreachEvent`] (a breach opening or resolving), partitioned
//! by the UTC date of `at`.
//!
//! | column | type | null | from |
//! |---|---|---|---|
//! | breach_id, rule | Utf8 | no | both events of one breach share `breach_id` |
//! | state | Utf8 | no | `firing` or `resolved` |
//! | severity | Utf8 | no | `info`, `warning`, `critical` |
//! | kpi, owner | Utf8 | no | |
//! | kpi_version | UInt32 | no | |
//! | shop, channel, marketplace | Utf8 | no | `scope` |
//! | window_name | Utf8 | no | `window` |
//! | window_start, window_end | Timestamp(µs, UTC) | no | `window` |
//! | value | Float64 | yes | the KPI value at the transition |
//! | numerator | Decimal128(38, 9) | no | exact |
//! | denominator | Decimal128(38, 9) | yes | exact |
//! | op | Utf8 | no | `above` or `below` |
//! | threshold | Float64 | no | |
//! | message | Utf8 | no | for humans |
//! | at, emitted_at | Timestamp(µs, UTC) | no | event time, publish time |
//!
//! Readers add the partition column `date` (Date32). After a crash the same event may appear
//! twice; `(breach_id, state, at)` identifies an event.

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, Decimal128Array, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kpiflow_schemas::{BreachEvent, Scope, WindowKind, WindowRef};

use super::{
    Table, TableRow, column, decimal_from_i128, decimal_to_i128, decimal_type, downcast,
    from_micros, from_wire_name, micros, timestamp_type, wire_name,
};
use crate::SinkError;

/// The schema of `breaches` files.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let ts = |name: &str| Field::new(name, timestamp_type(), false);
        Arc::new(Schema::new(vec![
            utf8("breach_id"),
            utf8("rule"),
            utf8("state"),
            utf8("severity"),
            utf8("kpi"),
            Field::new("kpi_version", DataType::UInt32, false),
            utf8("owner"),
            utf8("shop"),
            utf8("channel"),
            utf8("marketplace"),
            utf8("window_name"),
            ts("window_start"),
            ts("window_end"),
            Field::new("value", DataType::Float64, true),
            Field::new("numerator", decimal_type(), false),
            Field::new("denominator", decimal_type(), true),
            utf8("op"),
            Field::new("threshold", DataType::Float64, false),
            utf8("message"),
            ts("at"),
            ts("emitted_at"),
        ]))
    }))
}

impl TableRow for BreachEvent {
    const TABLE: Table = Table::Breaches;

    fn partition_date(&self) -> NaiveDate {
        self.at.date_naive()
    }

    fn check_storable(&self) -> Result<(), SinkError> {
        decimal_to_i128(self.numerator, "numerator")?;
        if let Some(d) = self.denominator {
            decimal_to_i128(d, "denominator")?;
        }
        Ok(())
    }

    fn to_batch(rows: &[&BreachEvent]) -> Result<RecordBatch, SinkError> {
        let strings = |f: fn(&BreachEvent) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
        };
        let owned = |f: fn(&BreachEvent) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
        };
        let times = |f: fn(&BreachEvent) -> i64| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| f(r)))
                    .with_timezone("UTC"),
            )
        };
        let decimals = |values: Vec<Option<i128>>| -> Result<ArrayRef, SinkError> {
            Ok(Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(super::DECIMAL_PRECISION, super::DECIMAL_SCALE)
                    .map_err(|e| SinkError::Internal(format!("decimal column: {e}")))?,
            ))
        };
        let numerators = rows
            .iter()
            .map(|r| decimal_to_i128(r.numerator, "numerator").map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let denominators = rows
            .iter()
            .map(|r| {
                r.denominator
                    .map(|d| decimal_to_i128(d, "denominator"))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let columns: Vec<ArrayRef> = vec![
            strings(|r| &r.breach_id),
            strings(|r| &r.rule),
            owned(|r| wire_name(&r.state)),
            strings(|r| r.severity.as_str()),
            strings(|r| &r.kpi),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.kpi_version),
            )),
            strings(|r| &r.owner),
            strings(|r| &r.scope.shop),
            strings(|r| r.scope.channel.as_str()),
            strings(|r| &r.scope.marketplace),
            strings(|r| &r.window.name),
            times(|r| micros(r.window.start)),
            times(|r| micros(r.window.end)),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
            decimals(numerators)?,
            decimals(denominators)?,
            owned(|r| wire_name(&r.op)),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.threshold),
            )),
            strings(|r| &r.message),
            times(|r| micros(r.at)),
            times(|r| micros(r.emitted_at)),
        ];
        RecordBatch::try_new(schema(), columns)
            .map_err(|e| SinkError::Internal(format!("breaches batch: {e}")))
    }

    /// Reads breach rows back. The table keeps only the window's name and bounds, so the
    /// window's kind, time zone and basis come back empty (`rolling`, `""`, `""`).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<BreachEvent>, SinkError> {
        let schema = schema();
        let cols = schema
            .fields()
            .iter()
            .map(|f| column(batch, f.name(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let s = |i: usize| downcast::<StringArray>(&cols[i], schema.field(i).name());
        let t = |i: usize| downcast::<TimestampMicrosecondArray>(&cols[i], schema.field(i).name());
        let d = |i: usize| downcast::<Decimal128Array>(&cols[i], schema.field(i).name());
        let f = |i: usize| downcast::<Float64Array>(&cols[i], schema.field(i).name());
        let (breach_id, rule, state, severity, kpi) = (s(0)?, s(1)?, s(2)?, s(3)?, s(4)?);
        let version = downcast::<UInt32Array>(&cols[5], "kpi_version")?;
        let (owner, shop, channel, marketplace, window_name) = (s(6)?, s(7)?, s(8)?, s(9)?, s(10)?);
        let (start, end, value, numerator, denominator) = (t(11)?, t(12)?, f(13)?, d(14)?, d(15)?);
        let (op, threshold, message, at, emitted_at) = (s(16)?, f(17)?, s(18)?, t(19)?, t(20)?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(BreachEvent {
                    breach_id: breach_id.value(i).to_string(),
                    rule: rule.value(i).to_string(),
                    state: from_wire_name(state.value(i), "state")?,
                    severity: from_wire_name(severity.value(i), "severity")?,
                    kpi: kpi.value(i).to_string(),
                    kpi_version: version.value(i),
                    owner: owner.value(i).to_string(),
                    scope: Scope {
                        shop: shop.value(i).to_string(),
                        channel: from_wire_name(channel.value(i), "channel")?,
                        marketplace: marketplace.value(i).to_string(),
                    },
                    window: WindowRef {
                        kind: WindowKind::Rolling,
                        name: window_name.value(i).to_string(),
                        start: from_micros(start.value(i), "window_start")?,
                        end: from_micros(end.value(i), "window_end")?,
                        time_zone: String::new(),
                        basis: String::new(),
                    },
                    value: value.is_valid(i).then(|| value.value(i)),
                    numerator: decimal_from_i128(numerator.value(i), "numerator")?,
                    denominator: denominator
                        .is_valid(i)
                        .then(|| denominator.value(i))
                        .map(|v| decimal_from_i128(v, "denominator"))
                        .transpose()?,
                    op: from_wire_name(op.value(i), "op")?,
                    threshold: threshold.value(i),
                    message: message.value(i).to_string(),
                    at: from_micros(at.value(i), "at")?,
                    emitted_at: from_micros(emitted_at.value(i), "emitted_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parquet::tests::breach_fixtures;

    /// What survives the table: the window's kind, zone and basis are not stored.
    pub(crate) fn as_stored(mut b: BreachEvent) -> BreachEvent {
        b.window.kind = WindowKind::Rolling;
        b.window.time_zone.clear();
        b.window.basis.clear();
        b
    }

    #[test]
    fn rows_round_trip_exactly_through_arrow() {
        let events = breach_fixtures();
        let batch = BreachEvent::to_batch(&events.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.schema(), schema());
        let back = BreachEvent::from_batch(&batch).unwrap();
        let expected: Vec<_> = events.into_iter().map(as_stored).collect();
        assert_eq!(back, expected);
    }
}
