//! Table `kpi_values`: one row per published [`KpiUpdate`], partitioned by the UTC date of the
//! window's start, `kpi_values/date=YYYY-MM-DD/`, each file sorted by `(kpi, key, revision)`.
//!
//! | column | type | null | from |
//! |---|---|---|---|
//! | kpi | Utf8 | no | the KPI id |
//! | unit, direction, owner, priority | Utf8 | no | the KPI definition |
//! | kpi_version | UInt32 | no | |
//! | shop, channel, marketplace | Utf8 | no | `scope` |
//! | sku, campaign | Utf8 | yes | `scope`, for KPIs grouped by SKU or campaign |
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
//! | settling, final_at | Boolean, Timestamp(µs, UTC) | yes | [`KpiUpdate::settling`] and when it becomes final; null in files written before they existed |
//!
//! Readers add the partition column `date` (Date32).
//!
//! Why `kpi` is a column and not a folder level (it was one, `kpi=<id>/date=…/`, until
//! issue 12): one flush touches every KPI, so a folder per KPI cut ~26 files per date per
//! flush. Sorted by `kpi`, a file's pages keep one KPI's rows together, so a filter on `kpi`
//! still skips the others through the Parquet page statistics. Files of the old layout are
//! still read (see [`super::legacy`]) and `kpiflow compact` rewrites them.

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type, UInt64Type,
};
use kpiflow_schemas::KpiUpdate;

use super::{
    Columns, KPI_COLUMN, Table, TableRow, batch, check_exact, exact_decimal_columns,
    exact_decimal_fields, from_micros, from_wire_name, micros, optional_primitive_column,
    optional_string, optional_string_column, primitive_column, scope_columns, scope_fields,
    string_column, timestamp_column, timestamp_field, timestamp_type, utf8_field, window_columns,
    window_fields,
};
use crate::SinkError;

/// The schema of `kpi_values` files.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(
            [
                vec![
                    utf8_field(KPI_COLUMN),
                    Field::new("kpi_version", DataType::UInt32, false),
                    utf8_field("unit"),
                    utf8_field("direction"),
                    utf8_field("owner"),
                    utf8_field("priority"),
                ],
                // shop, channel, marketplace, sku, campaign
                scope_fields(),
                // window_kind, window_name, window_start, window_end, time_zone, basis
                window_fields(),
                // numerator, denominator
                exact_decimal_fields(),
                vec![
                    Field::new("value", DataType::Float64, true),
                    Field::new("currency", DataType::Utf8, true),
                    Field::new("revision", DataType::UInt64, false),
                    timestamp_field("watermark"),
                    timestamp_field("emitted_at"),
                    utf8_field("key"),
                    // Nullable: files written before them read as null.
                    Field::new("settling", DataType::Boolean, true),
                    Field::new("final_at", timestamp_type(), true),
                ],
            ]
            .concat(),
        ))
    }))
}

impl TableRow for KpiUpdate {
    const TABLE: Table = Table::KpiValues;

    fn partition_date(&self) -> NaiveDate {
        self.window.start.date_naive()
    }

    /// One KPI's rows together (page statistics on `kpi` then prune), each series' revisions
    /// in order.
    fn sort_for_file(rows: &mut [&Self]) {
        // `key()` builds a string: once per row, not once per comparison.
        rows.sort_by_cached_key(|r| (r.kpi.clone(), r.key(), r.revision));
    }

    fn check_storable(&self) -> Result<(), SinkError> {
        if self.kpi.is_empty() {
            return Err(SinkError::InvalidRecord(
                "field `kpi` is empty: every KPI value names its KPI".into(),
            ));
        }
        check_exact(self.numerator, self.denominator)
    }

    fn to_batch(rows: &[&KpiUpdate]) -> Result<RecordBatch, SinkError> {
        let columns = [
            vec![
                string_column(rows, |r| &r.kpi),
                primitive_column::<UInt32Type, _>(rows, |r| r.kpi_version),
                string_column(rows, |r| &r.unit),
                string_column(rows, |r| r.direction.as_str()),
                string_column(rows, |r| &r.owner),
                string_column(rows, |r| r.priority.as_str()),
            ],
            scope_columns(rows, |r| &r.scope),
            window_columns(rows, |r| &r.window),
            exact_decimal_columns(rows, |r| r.numerator, |r| r.denominator)?,
            vec![
                optional_primitive_column::<Float64Type, _>(rows, |r| r.value),
                optional_string_column(rows, |r| r.currency.as_deref()),
                primitive_column::<UInt64Type, _>(rows, |r| r.revision),
                timestamp_column(rows, |r| r.watermark),
                timestamp_column(rows, |r| r.emitted_at),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.key()))),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.settling)),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        rows.iter().map(|r| r.final_at.map(micros)),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        ]
        .concat();
        batch(Self::TABLE, columns)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<KpiUpdate>, SinkError> {
        let c = Columns::of(batch, schema())?;
        let (scope, window, exact) = (c.scope()?, c.window()?, c.exact_decimals()?);
        let kpi = c.strings(KPI_COLUMN)?;
        let (unit, direction) = (c.strings("unit")?, c.strings("direction")?);
        let (owner, currency) = (c.strings("owner")?, c.strings("currency")?);
        let priority = c.strings("priority")?;
        let version = c.get::<UInt32Array>("kpi_version")?;
        let value = c.get::<Float64Array>("value")?;
        let revision = c.get::<UInt64Array>("revision")?;
        let (watermark, emitted_at) = (c.times("watermark")?, c.times("emitted_at")?);
        let (settling, final_at) = (c.get::<BooleanArray>("settling")?, c.times("final_at")?);
        (0..batch.num_rows())
            .map(|i| {
                let (numerator, denominator) = exact.at(i)?;
                Ok(KpiUpdate {
                    kpi: kpi.value(i).to_string(),
                    kpi_version: version.value(i),
                    unit: unit.value(i).to_string(),
                    direction: from_wire_name(direction.value(i), "direction")?,
                    owner: owner.value(i).to_string(),
                    priority: from_wire_name(priority.value(i), "priority")?,
                    scope: scope.at(i)?,
                    window: window.at(i)?,
                    numerator,
                    denominator,
                    value: value.is_valid(i).then(|| value.value(i)),
                    currency: optional_string(currency, i),
                    revision: revision.value(i),
                    watermark: from_micros(watermark.value(i), "watermark")?,
                    emitted_at: from_micros(emitted_at.value(i), "emitted_at")?,
                    settling: settling.is_valid(i) && settling.value(i),
                    final_at: final_at
                        .is_valid(i)
                        .then(|| from_micros(final_at.value(i), "final_at"))
                        .transpose()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::downcast;
    use crate::parquet::tests::kpi_fixtures;
    use datafusion::arrow::array::Decimal128Array;

    #[test]
    fn rows_round_trip_exactly_through_arrow() {
        let kpis = kpi_fixtures();
        let batch = KpiUpdate::to_batch(&kpis.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.schema(), schema());
        assert_eq!(KpiUpdate::from_batch(&batch).unwrap(), kpis);
        let without_kpi = batch
            .project(&(1..batch.num_columns()).collect::<Vec<_>>())
            .unwrap();
        let err = KpiUpdate::from_batch(&without_kpi).unwrap_err().to_string();
        assert!(err.contains("no column `kpi`"), "{err}");
        let keys = downcast::<StringArray>(batch.column_by_name("key").unwrap(), "key").unwrap();
        assert_eq!(keys.value(0), kpis[0].key());
    }

    #[test]
    fn decimals_are_stored_at_scale_nine() {
        let kpis = kpi_fixtures();
        let batch = KpiUpdate::to_batch(&[&kpis[0]]).unwrap();
        let num =
            downcast::<Decimal128Array>(batch.column_by_name("numerator").unwrap(), "numerator")
                .unwrap();
        let expected = kpis[0].numerator.0 * rust_decimal::Decimal::from(1_000_000_000u32);
        assert_eq!(num.value(0).to_string(), expected.normalize().to_string());
        assert_eq!(
            num.value_as_string(0),
            format!("{:.9}", kpis[0].numerator.0)
        );
    }

    #[test]
    fn a_file_holds_one_kpi_s_rows_together_and_each_series_in_revision_order() {
        let mut kpis = kpi_fixtures();
        assert!(kpis.len() >= 2);
        let mut later = kpis[0].clone();
        later.revision += 1;
        let mut other = kpis[0].clone();
        other.kpi = "aaa_first".into();
        // Arrival order: a later revision before the earlier one, another KPI in between.
        kpis.insert(0, later.clone());
        kpis.insert(1, other.clone());
        let mut rows: Vec<&KpiUpdate> = kpis.iter().collect();
        KpiUpdate::sort_for_file(&mut rows);
        assert_eq!(rows[0], &other, "ids in byte order: aaa_first first");
        let first = rows.iter().position(|r| r.key() == later.key()).unwrap();
        assert_eq!(rows[first].revision + 1, rows[first + 1].revision);
        assert_eq!(rows[first + 1], &later);
        let ids: Vec<&str> = rows.iter().map(|r| r.kpi.as_str()).collect();
        assert!(ids.is_sorted(), "{ids:?}");
    }

    #[test]
    fn an_empty_kpi_id_is_refused() {
        let mut k = kpi_fixtures().remove(0);
        assert_eq!(k.partition_path(), "date=2025-03-14");
        k.kpi = String::new();
        let err = k.check_storable().unwrap_err().to_string();
        assert!(err.contains("field `kpi` is empty"), "{err}");
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
