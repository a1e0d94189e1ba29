//! Table `kpi_values`: one row per published [`KpiUpdate`], partitioned by the UTC date of
//! the window's start.
//!
//! | column | type | null | from |
//! |---|---|---|---|
//! | kpi, unit, direction, owner | Utf8 | no | the KPI definition |
//! | kpi_version | UInt32 | no | |
//! | shop, channel, marketplace | Utf8 | no | `scope` |
//! | window_kind, window_name | Utf8 | no | `window` |
//! | window_start, window_end | Timestamp(µs, UTC) | no | `window` (start inclusive, end exclusive) |
//! | time_zone, basis | Utf8 | no | `window` |
//! | numerator | Decimal128(38, 9) | no | exact |
//! | denominator | Decimal128(38, 9) | yes | exact, ratios only |
//! | value | Float64 | yes | absent when the denominator is zero |
//! | currency | Utf8 | yes | money KPIs |
//! | revision | UInt64 | no | highest is current per `key` |
//! | watermark, emitted_at | Timestamp(µs, UTC) | no | |
//! | key | Utf8 | no | [`KpiUpdate::key`] |
//!
//! Readers add the partition column `date` (Date32).

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, Decimal128Array, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use kpiflow_schemas::{KpiUpdate, Scope, WindowRef};

use super::{
    Table, TableRow, column, decimal_from_i128, decimal_to_i128, decimal_type, downcast,
    from_micros, from_wire_name, micros, timestamp_type, wire_name,
};
use crate::SinkError;

/// The schema of `kpi_values` files.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let ts = |name: &str| Field::new(name, timestamp_type(), false);
        Arc::new(Schema::new(vec![
            utf8("kpi"),
            Field::new("kpi_version", DataType::UInt32, false),
            utf8("unit"),
            utf8("direction"),
            utf8("owner"),
            utf8("shop"),
            utf8("channel"),
            utf8("marketplace"),
            utf8("window_kind"),
            utf8("window_name"),
            ts("window_start"),
            ts("window_end"),
            utf8("time_zone"),
            utf8("basis"),
            Field::new("numerator", decimal_type(), false),
            Field::new("denominator", decimal_type(), true),
            Field::new("value", DataType::Float64, true),
            Field::new("currency", DataType::Utf8, true),
            Field::new("revision", DataType::UInt64, false),
            ts("watermark"),
            ts("emitted_at"),
            utf8("key"),
        ]))
    }))
}

impl TableRow for KpiUpdate {
    const TABLE: Table = Table::KpiValues;

    fn partition_date(&self) -> NaiveDate {
        self.window.start.date_naive()
    }

    fn check_storable(&self) -> Result<(), SinkError> {
        decimal_to_i128(self.numerator, "numerator")?;
        if let Some(d) = self.denominator {
            decimal_to_i128(d, "denominator")?;
        }
        Ok(())
    }

    fn to_batch(rows: &[&KpiUpdate]) -> Result<RecordBatch, SinkError> {
        let strings = |f: fn(&KpiUpdate) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
        };
        let owned = |f: fn(&KpiUpdate) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
        };
        let times = |f: fn(&KpiUpdate) -> i64| -> ArrayRef {
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
            strings(|r| &r.kpi),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.kpi_version),
            )),
            strings(|r| &r.unit),
            owned(|r| wire_name(&r.direction)),
            strings(|r| &r.owner),
            strings(|r| &r.scope.shop),
            strings(|r| r.scope.channel.as_str()),
            strings(|r| &r.scope.marketplace),
            owned(|r| wire_name(&r.window.kind)),
            strings(|r| &r.window.name),
            times(|r| micros(r.window.start)),
            times(|r| micros(r.window.end)),
            strings(|r| &r.window.time_zone),
            strings(|r| &r.window.basis),
            decimals(numerators)?,
            decimals(denominators)?,
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.currency.as_deref()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.revision),
            )),
            times(|r| micros(r.watermark)),
            times(|r| micros(r.emitted_at)),
            owned(KpiUpdate::key),
        ];
        RecordBatch::try_new(schema(), columns)
            .map_err(|e| SinkError::Internal(format!("kpi_values batch: {e}")))
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<KpiUpdate>, SinkError> {
        let schema = schema();
        let cols = schema
            .fields()
            .iter()
            .map(|f| column(batch, f.name(), f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let s = |i: usize| downcast::<StringArray>(&cols[i], schema.field(i).name());
        let t = |i: usize| downcast::<TimestampMicrosecondArray>(&cols[i], schema.field(i).name());
        let d = |i: usize| downcast::<Decimal128Array>(&cols[i], schema.field(i).name());
        let (kpi, version, unit, direction, owner) = (
            s(0)?,
            downcast::<UInt32Array>(&cols[1], "kpi_version")?,
            s(2)?,
            s(3)?,
            s(4)?,
        );
        let (shop, channel, marketplace, kind, name) = (s(5)?, s(6)?, s(7)?, s(8)?, s(9)?);
        let (start, end, tz, basis) = (t(10)?, t(11)?, s(12)?, s(13)?);
        let (numerator, denominator) = (d(14)?, d(15)?);
        let value = downcast::<Float64Array>(&cols[16], "value")?;
        let currency = s(17)?;
        let revision = downcast::<UInt64Array>(&cols[18], "revision")?;
        let (watermark, emitted_at) = (t(19)?, t(20)?);
        (0..batch.num_rows())
            .map(|i| {
                Ok(KpiUpdate {
                    kpi: kpi.value(i).to_string(),
                    kpi_version: version.value(i),
                    unit: unit.value(i).to_string(),
                    direction: from_wire_name(direction.value(i), "direction")?,
                    owner: owner.value(i).to_string(),
                    scope: Scope {
                        shop: shop.value(i).to_string(),
                        channel: from_wire_name(channel.value(i), "channel")?,
                        marketplace: marketplace.value(i).to_string(),
                    },
                    window: WindowRef {
                        kind: from_wire_name(kind.value(i), "window_kind")?,
                        name: name.value(i).to_string(),
                        start: from_micros(start.value(i), "window_start")?,
                        end: from_micros(end.value(i), "window_end")?,
                        time_zone: tz.value(i).to_string(),
                        basis: basis.value(i).to_string(),
                    },
                    numerator: decimal_from_i128(numerator.value(i), "numerator")?,
                    denominator: denominator
                        .is_valid(i)
                        .then(|| denominator.value(i))
                        .map(|v| decimal_from_i128(v, "denominator"))
                        .transpose()?,
                    value: value.is_valid(i).then(|| value.value(i)),
                    currency: currency
                        .is_valid(i)
                        .then(|| currency.value(i))
                        .map(str::to_string),
                    revision: revision.value(i),
                    watermark: from_micros(watermark.value(i), "watermark")?,
                    emitted_at: from_micros(emitted_at.value(i), "emitted_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::kpi_fixtures;

    #[test]
    fn rows_round_trip_exactly_through_arrow() {
        let kpis = kpi_fixtures();
        let batch = KpiUpdate::to_batch(&kpis.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.schema(), schema());
        assert_eq!(KpiUpdate::from_batch(&batch).unwrap(), kpis);
        let keys = downcast::<StringArray>(batch.column(21), "key").unwrap();
        assert_eq!(keys.value(0), kpis[0].key());
    }

    #[test]
    fn decimals_are_stored_at_scale_nine() {
        let kpis = kpi_fixtures();
        let batch = KpiUpdate::to_batch(&[&kpis[0]]).unwrap();
        let num = downcast::<Decimal128Array>(batch.column(14), "numerator").unwrap();
        let expected = kpis[0].numerator.0 * rust_decimal::Decimal::from(1_000_000_000u32);
        assert_eq!(num.value(0).to_string(), expected.normalize().to_string());
        assert_eq!(
            num.value_as_string(0),
            format!("{:.9}", kpis[0].numerator.0)
        );
    }

    #[test]
    fn a_decimal_with_ten_places_is_refused_before_buffering() {
        let mut k = kpi_fixtures().remove(0);
        k.denominator = kpiflow_schemas::Decimal::parse("1.0000000001");
        let err = k.check_storable().unwrap_err().to_string();
        assert!(
            err.contains("`denominator` = 1.0000000001 has 10 decimal places"),
            "{err}"
        );
    }
}
