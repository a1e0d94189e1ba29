//! Reconciliation: the catalog's KPI definitions run again as batch SQL (DataFusion) over an
//! archive of the events, compared with the values the stream published.
//!
//! ```text
//!   events (Parquet archive) ──► batch SQL per measure ──► sums per published window ─┐
//!                                                                                     ├─► differences
//!   kpi_latest (what the stream published) ───────────────────────────────────────────┘
//! ```
//!
//! The batch side applies the engine's semantics independently: one row per event id (the
//! first ingested), restated facts reduced to their newest (version, event id) per key with
//! the filter applied after, gauges read at each window's end. The stream additionally
//! refuses facts later than their allowed lateness (they are dead-lettered), so a late fact is
//! exactly the kind of difference this reports.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kpiflow_schemas::{Decimal, EventBody};

use crate::ProcessorError;
use crate::catalog::Measure;
use crate::config::Compiled;
use crate::event_table::DECIMAL_SCALE;

/// One published window whose values the batch computation does not reproduce.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// KPI id.
    pub kpi: String,
    /// `channel/marketplace/shop[/sku=…][/campaign=…]`.
    pub scope: String,
    /// Window name.
    pub window: String,
    /// Window start (inclusive).
    pub start: DateTime<Utc>,
    /// Window end (exclusive).
    pub end: DateTime<Utc>,
    /// What the stream published: numerator, denominator.
    pub stream: (Decimal, Option<Decimal>),
    /// What the batch computation gives.
    pub batch: (Decimal, Option<Decimal>),
}

/// What a reconciliation found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Published windows compared.
    pub checked: usize,
    /// Those that differ.
    pub differences: Vec<Difference>,
    /// Published KPIs the catalog does not define (skipped).
    pub unknown_kpis: Vec<String>,
    /// Published KPIs over daily stock levels (`daily` measures, carried forward between
    /// snapshots): not recomputed here (skipped).
    pub daily_kpis: Vec<String>,
    /// Published KPIs over costs of goods (units priced at the cost in force on their day,
    /// repriced by costs dated back): not recomputed here (skipped).
    pub cost_kpis: Vec<String>,
}

fn df(what: &str) -> impl Fn(datafusion::error::DataFusionError) -> ProcessorError + '_ {
    move |e| ProcessorError::Internal {
        what: format!("reconcile: {what}"),
        problem: e.to_string(),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL rows of one measure: `shop, channel, marketplace, sku, campaign, t, v` (and the
/// gauge key `k` for gauges).
fn measure_sql(compiled: &Compiled, m: &Measure) -> String {
    let catalog = &compiled.catalog;
    let c = &m.config;
    let schemas: Vec<String> = EventBody::SCHEMAS
        .iter()
        .zip(&m.schemas)
        .filter(|(_, on)| **on)
        .map(|((name, _), _)| quote(name))
        .collect();
    let filter = c.filter.as_deref().unwrap_or("TRUE");
    // A date-valued time is the start of that business day in the marketplace's zone: the
    // date as a local midnight (Arrow reads a zone-less timestamp cast to a zone as local).
    let time = if m.time_is_date {
        let at = |tz: &str| {
            format!(
                "arrow_cast(arrow_cast(CAST(({}) AS TIMESTAMP), 'Timestamp(Microsecond, Some(\"{tz}\"))'), 'Timestamp(Microsecond, Some(\"UTC\"))')",
                c.time
            )
        };
        let mut zones: Vec<(&String, &chrono_tz::Tz)> = compiled.time_zones.iter().collect();
        zones.sort_by_key(|(mkt, _)| *mkt);
        let arms: String = zones
            .iter()
            .map(|(mkt, tz)| format!("WHEN {} THEN {} ", quote(mkt), at(tz.name())))
            .collect();
        if arms.is_empty() {
            at(compiled.default_tz.name())
        } else {
            format!(
                "CASE marketplace {arms}ELSE {} END",
                at(compiled.default_tz.name())
            )
        }
    } else {
        c.time.clone()
    };
    let cols = format!(
        "shop, channel, marketplace, sku, campaign_id AS campaign, \
         ({time}) AS t, CAST(({value}) AS DECIMAL(38, {DECIMAL_SCALE})) AS v",
        value = c.value
    );
    let from = format!("events_once WHERE schema IN ({})", schemas.join(", "));
    if let Some(once) = &c.once {
        // Counted once per key: the earliest matching row of each key.
        return format!(
            "SELECT shop, channel, marketplace, sku, campaign, t, v FROM (\
               SELECT {cols}, \
                      ROW_NUMBER() OVER (PARTITION BY shop, channel, marketplace, {key} \
                                         ORDER BY event_time, event_id) AS rk__ \
               FROM {from} AND ({filter})) WHERE rk__ = 1",
            key = once.join(", "),
        );
    }
    match (
        &c.replace,
        m.replace_group.map(|g| catalog.replace_groups[g].latest),
    ) {
        (None, _) => format!("SELECT {cols} FROM {from} AND ({filter})"),
        (Some(r), Some(true)) => {
            // Gauges: the newest report per key and hour, with its key kept.
            let key = r.key.join(", ");
            format!(
                "SELECT shop, channel, marketplace, sku, campaign, t, v, k FROM (\
                   SELECT {cols}, \
                          concat_ws('|', {key_cast}) AS k, \
                          ROW_NUMBER() OVER (PARTITION BY shop, channel, marketplace, schema, {key}, date_trunc('hour', ({time})) \
                                             ORDER BY ({version}) DESC, event_id DESC) AS rk__ \
                   FROM {from} AND ({filter})) WHERE rk__ = 1",
                key_cast = r
                    .key
                    .iter()
                    .map(|k| format!("COALESCE(CAST(({k}) AS VARCHAR), '')"))
                    .collect::<Vec<_>>()
                    .join(", "),
                version = r.version,
            )
        }
        (Some(r), _) => format!(
            "SELECT shop, channel, marketplace, sku, campaign, t, v FROM (\
               SELECT {cols}, ({filter}) AS keep__, \
                      ROW_NUMBER() OVER (PARTITION BY shop, channel, marketplace, schema, {key} \
                                         ORDER BY ({version}) DESC, event_id DESC) AS rk__ \
               FROM {from}) WHERE rk__ = 1 AND keep__",
            key = r.key.join(", "),
            version = r.version,
        ),
    }
}

struct Window {
    kpi: String,
    shop: String,
    channel: String,
    marketplace: String,
    sku: Option<String>,
    campaign: Option<String>,
    name: String,
    start: i64,
    end: i64,
    numerator: Decimal,
    denominator: Option<Decimal>,
}

fn decimal(a: &Decimal128Array, i: usize) -> Option<Decimal> {
    a.is_valid(i).then(|| {
        Decimal(rust_decimal::Decimal::from_i128_with_scale(
            a.value(i),
            a.scale() as u32,
        ))
    })
}

fn col<'a, A: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a A, ProcessorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>())
        .ok_or_else(|| ProcessorError::Internal {
            what: "reconcile".into(),
            problem: format!("column {name} is missing or has an unexpected type"),
        })
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Compares the KPI values in `kpi_latest` with the catalog recomputed over `events`; both
/// tables must be registered in `ctx`. `kpis` limits the check (empty: every KPI).
pub async fn reconcile(
    ctx: &SessionContext,
    compiled: &Compiled,
    kpis: &[String],
) -> Result<Report, ProcessorError> {
    let catalog = &compiled.catalog;
    let mut report = Report::default();
    // Published windows.
    let batches = ctx
        .sql(
            "SELECT kpi, shop, channel, marketplace, sku, campaign, window_name, \
                    window_start, window_end, numerator, denominator FROM kpi_latest",
        )
        .await
        .map_err(df("reading kpi_latest"))?
        .collect()
        .await
        .map_err(df("reading kpi_latest"))?;
    let mut windows = Vec::new();
    for b in &batches {
        let (kpi, shop, channel, marketplace) = (
            col::<StringArray>(b, "kpi")?,
            col::<StringArray>(b, "shop")?,
            col::<StringArray>(b, "channel")?,
            col::<StringArray>(b, "marketplace")?,
        );
        let (sku, campaign, name) = (
            col::<StringArray>(b, "sku")?,
            col::<StringArray>(b, "campaign")?,
            col::<StringArray>(b, "window_name")?,
        );
        let (start, end) = (
            col::<TimestampMicrosecondArray>(b, "window_start")?,
            col::<TimestampMicrosecondArray>(b, "window_end")?,
        );
        let (num, den) = (
            col::<Decimal128Array>(b, "numerator")?,
            col::<Decimal128Array>(b, "denominator")?,
        );
        for i in 0..b.num_rows() {
            let id = kpi.value(i);
            if !kpis.is_empty() && !kpis.iter().any(|k| k == id) {
                continue;
            }
            let Some(def) = catalog.kpi(id) else {
                if !report.unknown_kpis.iter().any(|k| k == id) {
                    report.unknown_kpis.push(id.to_string());
                }
                continue;
            };
            let daily = catalog
                .measures
                .iter()
                .enumerate()
                .any(|(m, measure)| def.mask & (1 << m) != 0 && measure.daily.is_some());
            if daily {
                if !report.daily_kpis.iter().any(|k| k == id) {
                    report.daily_kpis.push(id.to_string());
                }
                continue;
            }
            // A cost measure's units and the uncosted units it declares.
            let costed = (0..catalog.measures.len()).any(|m| {
                def.mask & (1 << m) != 0
                    && (catalog.measures[m].uncosted.is_some()
                        || catalog
                            .measures
                            .iter()
                            .any(|x| x.uncosted == Some(m as u16)))
            });
            if costed {
                if !report.cost_kpis.iter().any(|k| k == id) {
                    report.cost_kpis.push(id.to_string());
                }
                continue;
            }
            windows.push(Window {
                kpi: id.to_string(),
                shop: shop.value(i).to_string(),
                channel: channel.value(i).to_string(),
                marketplace: marketplace.value(i).to_string(),
                sku: opt(sku, i),
                campaign: opt(campaign, i),
                name: name.value(i).to_string(),
                start: start.value(i),
                end: end.value(i),
                numerator: decimal(num, i).unwrap_or(Decimal::ZERO),
                denominator: decimal(den, i),
            });
        }
    }
    report.checked = windows.len();
    if windows.is_empty() {
        return Ok(report);
    }

    // The windows as a table to join measures against.
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("wid", DataType::UInt64, false),
        Field::new("w_shop", DataType::Utf8, false),
        Field::new("w_channel", DataType::Utf8, false),
        Field::new("w_marketplace", DataType::Utf8, false),
        Field::new("w_sku", DataType::Utf8, true),
        Field::new("w_campaign", DataType::Utf8, true),
        Field::new("w_start", ts.clone(), false),
        Field::new("w_end", ts, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(UInt64Array::from_iter_values(0..windows.len() as u64)),
            std::sync::Arc::new(StringArray::from_iter_values(
                windows.iter().map(|w| &w.shop),
            )),
            std::sync::Arc::new(StringArray::from_iter_values(
                windows.iter().map(|w| &w.channel),
            )),
            std::sync::Arc::new(StringArray::from_iter_values(
                windows.iter().map(|w| &w.marketplace),
            )),
            std::sync::Arc::new(StringArray::from_iter(
                windows.iter().map(|w| w.sku.as_deref()),
            )),
            std::sync::Arc::new(StringArray::from_iter(
                windows.iter().map(|w| w.campaign.as_deref()),
            )),
            std::sync::Arc::new(
                TimestampMicrosecondArray::from_iter_values(windows.iter().map(|w| w.start))
                    .with_timezone("UTC"),
            ),
            std::sync::Arc::new(
                TimestampMicrosecondArray::from_iter_values(windows.iter().map(|w| w.end))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .map_err(|e| ProcessorError::Internal {
        what: "reconcile windows".into(),
        problem: e.to_string(),
    })?;
    let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(df("windows table"))?;
    let _ = ctx.deregister_table("reconcile_windows");
    ctx.register_table("reconcile_windows", std::sync::Arc::new(table))
        .map_err(df("windows table"))?;
    ctx.sql(
        "CREATE OR REPLACE VIEW events_once AS SELECT * FROM (\
           SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY ingest_time, schema) AS once__ \
           FROM events) WHERE once__ = 1",
    )
    .await
    .map_err(df("events_once view"))?;

    // Sums per window and measure.
    let used: u64 = windows
        .iter()
        .filter_map(|w| catalog.kpi(&w.kpi))
        .fold(0, |m, k| m | k.mask);
    let mut sums: HashMap<(u64, usize), Decimal> = HashMap::new();
    const SCOPE_JOIN: &str = "m.shop = w.w_shop AND m.channel = w.w_channel AND m.marketplace = w.w_marketplace \
         AND (w.w_sku IS NULL OR m.sku = w.w_sku) AND (w.w_campaign IS NULL OR m.campaign = w.w_campaign)";
    for (mi, m) in catalog.measures.iter().enumerate() {
        if used & (1 << mi) == 0 {
            continue;
        }
        let rows = measure_sql(compiled, m);
        let latest = m
            .replace_group
            .is_some_and(|g| catalog.replace_groups[g].latest);
        let sql = if latest {
            // Per window and key, the newest report before the window's end.
            format!(
                "SELECT wid, CAST(SUM(v) AS DECIMAL(38, {DECIMAL_SCALE})) AS s FROM (\
                   SELECT w.wid, m.v, ROW_NUMBER() OVER (PARTITION BY w.wid, m.k ORDER BY m.t DESC) AS rn \
                   FROM reconcile_windows w JOIN ({rows}) m ON {SCOPE_JOIN} \
                   AND date_trunc('hour', m.t) < w.w_end) WHERE rn = 1 GROUP BY wid"
            )
        } else {
            format!(
                "SELECT w.wid, CAST(SUM(m.v) AS DECIMAL(38, {DECIMAL_SCALE})) AS s \
                 FROM reconcile_windows w JOIN ({rows}) m ON {SCOPE_JOIN} \
                 AND m.t >= w.w_start AND m.t < w.w_end GROUP BY w.wid"
            )
        };
        let what = format!("measure {}", m.name);
        let out = ctx
            .sql(&sql)
            .await
            .map_err(df(&what))?
            .collect()
            .await
            .map_err(df(&what))?;
        for b in &out {
            let wid = col::<UInt64Array>(b, "wid")?;
            let s = col::<Decimal128Array>(b, "s")?;
            for i in 0..b.num_rows() {
                if let Some(v) = decimal(s, i) {
                    sums.insert((wid.value(i), mi), v);
                }
            }
        }
    }

    for (wid, w) in windows.iter().enumerate() {
        let Some(kpi) = catalog.kpi(&w.kpi) else {
            continue;
        };
        let per_measure: Vec<Decimal> = (0..catalog.measures.len())
            .map(|m| sums.get(&(wid as u64, m)).copied().unwrap_or(Decimal::ZERO))
            .collect();
        let hours = (w.end - w.start) / 3_600_000_000;
        let days = Decimal(rust_decimal::Decimal::new(hours, 0) / rust_decimal::Decimal::from(24));
        let batch = (
            kpi.numerator.eval(&per_measure, days),
            kpi.denominator.as_ref().map(|d| d.eval(&per_measure, days)),
        );
        let same = |a: Decimal, b: Decimal| a.0.normalize() == b.0.normalize();
        let equal = same(batch.0, w.numerator)
            && match (batch.1, w.denominator) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            };
        if !equal {
            let mut scope = format!("{}/{}/{}", w.channel, w.marketplace, w.shop);
            if let Some(s) = &w.sku {
                scope.push_str(&format!("/sku={s}"));
            }
            if let Some(c) = &w.campaign {
                scope.push_str(&format!("/campaign={c}"));
            }
            report.differences.push(Difference {
                kpi: w.kpi.clone(),
                scope,
                window: w.name.clone(),
                start: DateTime::from_timestamp_micros(w.start).unwrap_or_default(),
                end: DateTime::from_timestamp_micros(w.end).unwrap_or_default(),
                stream: (w.numerator, w.denominator),
                batch,
            });
        }
    }
    report.differences.sort_by(|a, b| {
        (&a.kpi, &a.scope, &a.window, a.start).cmp(&(&b.kpi, &b.scope, &b.window, b.start))
    });
    Ok(report)
}

/// Differences as rows for printing: kpi, scope, window, start, end, stream and batch values.
pub fn rows(report: &Report) -> Vec<BTreeMap<&'static str, String>> {
    let show = |(n, d): (Decimal, Option<Decimal>)| match d {
        Some(d) => format!("{} / {}", n.0.normalize(), d.0.normalize()),
        None => n.0.normalize().to_string(),
    };
    report
        .differences
        .iter()
        .map(|d| {
            BTreeMap::from([
                ("kpi", d.kpi.clone()),
                ("scope", d.scope.clone()),
                ("window", d.window.clone()),
                ("start", d.start.to_rfc3339()),
                ("end", d.end.to_rfc3339()),
                ("stream", show(d.stream)),
                ("batch", show(d.batch)),
            ])
        })
        .collect()
}
