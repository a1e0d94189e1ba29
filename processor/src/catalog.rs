//! The KPI catalog: windows, measures and KPIs read from a TOML file and compiled with
//! DataFusion against the [`event_table`](kpiflow_schemas::event_table) schema.
//!
//! A measure is a filtered sum over events (`filter`, `value` and `time` are SQL); a KPI is
//! `numerator / denominator`, each a small formula over measures. Every ratio keeps both sums
//! and divides only when a value is published ("never average ratios"). The built-in catalog
//! is `processor/catalog/kpis.toml`; templates (`processor/catalog/templates/*.toml`) pick
//! KPIs and add breach rules.
//!
//! Everything that can be wrong with a definition is found here, at start-up: an unknown
//! column or measure, a filter that is not boolean, a value that is not a number, a ratio that
//! divides money by a count, a window nobody defined.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{Expr, SessionContext};
use kpiflow_schemas::{Decimal, Direction, EventBody, Priority};
use serde::Deserialize;

use crate::ProcessorError;
use crate::event_table::{self, DECIMAL_SCALE};

/// The built-in catalog, embedded so the binary runs without any file.
pub const BUILTIN: &str = include_str!("../catalog/kpis.toml");

/// The built-in templates, by name.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("fba", include_str!("../catalog/templates/fba.toml")),
    (
        "overseas_warehouse",
        include_str!("../catalog/templates/overseas_warehouse.toml"),
    ),
    ("dtc", include_str!("../catalog/templates/dtc.toml")),
    ("profit", include_str!("../catalog/templates/profit.toml")),
    (
        "amazon_account_health",
        include_str!("../catalog/templates/amazon_account_health.toml"),
    ),
    (
        "walmart_seller_performance",
        include_str!("../catalog/templates/walmart_seller_performance.toml"),
    ),
];

// ------------------------------------------------------------------ the file, as written

/// A catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Window definitions by name.
    #[serde(default)]
    pub windows: BTreeMap<String, WindowConfig>,
    /// Measure definitions by name.
    #[serde(default)]
    pub measures: BTreeMap<String, MeasureConfig>,
    /// KPI definitions by id.
    #[serde(default)]
    pub kpis: BTreeMap<String, KpiConfig>,
}

/// The kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKindConfig {
    /// A calendar day in the scope's business time zone.
    BusinessDay,
    /// A calendar week, Monday to Monday, in the business time zone.
    Week,
    /// A calendar month in the business time zone.
    Month,
    /// The last `length`, sliding by one hour.
    Rolling,
    /// `length` ending `lag` before the newest hour.
    Lagged,
}

/// A window definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Which kind.
    pub kind: WindowKindConfig,
    /// Length of rolling and lagged windows (whole hours).
    #[serde(default, with = "humantime_serde")]
    pub length: Option<Duration>,
    /// Lag of lagged windows (whole hours).
    #[serde(default, with = "humantime_serde")]
    pub lag: Option<Duration>,
}

/// `count` or `money`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureUnit {
    /// Things counted (orders, units, clicks, SKU-days).
    Count,
    /// Amounts of money, in the pipeline currency.
    Money,
}

/// Restated facts: rows with the same key replace each other.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConfig {
    /// SQL expressions whose values identify the fact.
    pub key: Vec<String>,
    /// SQL timestamp: the largest (version, event id) counts. Default `event_time`.
    #[serde(default = "event_time")]
    pub version: String,
}

fn event_time() -> String {
    "event_time".into()
}

fn one() -> String {
    "1".into()
}

fn first_version() -> u32 {
    1
}

/// A measure definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureConfig {
    /// Event schemas read.
    pub events: Vec<String>,
    /// SQL boolean; rows where it is not true are skipped.
    #[serde(default)]
    pub filter: Option<String>,
    /// SQL number added per row. Default `1`.
    #[serde(default = "one")]
    pub value: String,
    /// SQL timestamp placing the row in time. Default `event_time`.
    #[serde(default = "event_time")]
    pub time: String,
    /// Name of the time basis.
    pub basis: String,
    /// `count` or `money`.
    pub unit: MeasureUnit,
    /// Restatement key, if facts are restated. A fact is only ever restated by a newer
    /// version of the same kind (event schema) and key: the schema is always part of the key.
    #[serde(default)]
    pub replace: Option<ReplaceConfig>,
    /// Count each key once (SQL expressions, e.g. `["order_id"]`): the first fact of a key
    /// counts, later facts of the same key add nothing ("orders with at least one defect").
    #[serde(default)]
    pub once: Option<Vec<String>>,
    /// A gauge: windows read the newest value per key at their end.
    #[serde(default)]
    pub latest: bool,
    /// A daily stock level: per SKU and business day, the sum over `replace.key` (its
    /// locations) of each one's newest `value` at the day's end, carried forward to days
    /// without a report, from the SKU's first report to its shop's current day. What a SKU-day
    /// adds: `days` (1), `zero_days` (1 when the level is 0), `level` (the level).
    #[serde(default)]
    pub daily: Option<DailyKind>,
    /// Cost of goods: `value` is a number of units of the fact's SKU, and the engine books
    /// each unit at the SKU's landed cost in force on its booked business day (from
    /// `cost.changed` events), restating it when a cost dated back arrives. Units with no cost
    /// known (or no SKU) go to the measure `uncosted` names instead, which this declares; a
    /// KPI reading a cost measure has no value for a window holding uncosted units.
    #[serde(default)]
    pub cost: Option<CostConfig>,
}

/// `cost = { uncosted = "…" }` of a cost-of-goods measure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// The name of the count measure of units without a known cost (declared by this).
    pub uncosted: String,
}

/// What one SKU-day of a `daily` measure adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DailyKind {
    /// 1 for every SKU-day with stock data (active SKU-days).
    Days,
    /// 1 for a SKU-day whose level is 0 (stockout SKU-days).
    ZeroDays,
    /// The SKU-day's level (unit-days, for average stock).
    Level,
}

/// Which scopes a KPI is kept for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One value per shop.
    #[default]
    Shop,
    /// One value per shop and SKU.
    Sku,
    /// One value per shop and ad campaign.
    Campaign,
}

/// A KPI definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiConfig {
    /// One sentence for humans.
    pub description: String,
    /// Definition version, stamped on outputs. Default 1.
    #[serde(default = "first_version")]
    pub version: u32,
    /// `ratio`, `money`, `count`, `days`, `turns`.
    pub unit: String,
    /// Whether larger is better.
    pub direction: Direction,
    /// Owning team.
    pub owner: String,
    /// Core or supporting.
    pub priority: Priority,
    /// Formula over measures.
    pub numerator: String,
    /// Formula over measures, for ratios.
    #[serde(default)]
    pub denominator: Option<String>,
    /// Windows published.
    pub windows: Vec<String>,
    /// Scopes kept.
    #[serde(default)]
    pub group_by: GroupBy,
}

/// Units a KPI may have.
pub const KPI_UNITS: &[&str] = &["ratio", "money", "count", "days", "turns"];

/// Teams a KPI may belong to.
pub const OWNERS: &[&str] = &[
    "ads",
    "operations",
    "warehouse",
    "customer_service",
    "finance",
];

// ------------------------------------------------------------------ compiled

/// A compiled window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowDef {
    /// Name, e.g. `rolling_7d`.
    pub name: String,
    /// Kind.
    pub kind: WindowKindConfig,
    /// Hours long (rolling, lagged).
    pub hours: i64,
    /// Hours of lag (lagged).
    pub lag_hours: i64,
}

/// A compiled measure.
pub struct Measure {
    /// Name.
    pub name: String,
    /// Its definition as written (the reconcile command turns it into batch SQL).
    pub config: MeasureConfig,
    /// Which of [`EventBody::SCHEMAS`] it reads.
    pub schemas: Vec<bool>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    value: Arc<dyn PhysicalExpr>,
    time: Arc<dyn PhysicalExpr>,
    /// `time` is a date (an ad report day): the fact is booked at the start of that business
    /// day in its scope's zone, not at a UTC instant.
    pub time_is_date: bool,
    /// Index into [`Catalog::replace_groups`].
    pub replace_group: Option<usize>,
    /// A daily stock level (see [`MeasureConfig::daily`]).
    pub daily: Option<DailyKind>,
    /// For a cost-of-goods measure (see [`MeasureConfig::cost`]): the index of its measure
    /// of uncosted units, which no fact feeds directly.
    pub uncosted: Option<u16>,
}

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Measure").field("name", &self.name).finish()
    }
}

/// Measures that share a replace key and version: one restated fact, several figures.
pub struct ReplaceGroup {
    /// The key and version as written.
    pub config: ReplaceConfig,
    /// Whether the measures are gauges.
    pub latest: bool,
    /// Whether each key counts once (`once`) instead of being restated.
    pub once: bool,
    /// Whether the measures are daily stock levels (`daily`).
    pub daily: bool,
    key: Vec<Arc<dyn PhysicalExpr>>,
    version: Arc<dyn PhysicalExpr>,
    /// Member measures.
    pub measures: Vec<usize>,
}

impl std::fmt::Debug for ReplaceGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaceGroup")
            .field("config", &self.config)
            .field("measures", &self.measures)
            .finish()
    }
}

/// A formula over measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Formula {
    /// A measure's window sum.
    Measure(usize),
    /// A number.
    Const(Decimal),
    /// The window's length in days.
    WindowDays,
    /// Sum.
    Add(Box<Formula>, Box<Formula>),
    /// Difference.
    Sub(Box<Formula>, Box<Formula>),
    /// Product.
    Mul(Box<Formula>, Box<Formula>),
}

impl Formula {
    /// Evaluates with `sums` per measure and the window length.
    pub fn eval(&self, sums: &[Decimal], window_days: Decimal) -> Decimal {
        match self {
            Formula::Measure(m) => sums[*m],
            Formula::Const(c) => *c,
            Formula::WindowDays => window_days,
            Formula::Add(a, b) => a.eval(sums, window_days) + b.eval(sums, window_days),
            Formula::Sub(a, b) => a.eval(sums, window_days) - b.eval(sums, window_days),
            Formula::Mul(a, b) => {
                Decimal(a.eval(sums, window_days).0 * b.eval(sums, window_days).0)
            }
        }
    }

    /// Measures it reads, as a bit mask.
    pub fn mask(&self) -> u64 {
        match self {
            Formula::Measure(m) => 1 << m,
            Formula::Const(_) | Formula::WindowDays => 0,
            Formula::Add(a, b) | Formula::Sub(a, b) | Formula::Mul(a, b) => a.mask() | b.mask(),
        }
    }

    fn measures(&self) -> Vec<usize> {
        (0..64).filter(|m| self.mask() & (1 << m) != 0).collect()
    }
}

/// A compiled KPI.
#[derive(Debug, Clone)]
pub struct Kpi {
    /// Id.
    pub id: String,
    /// The definition as written.
    pub config: KpiConfig,
    /// Compiled numerator.
    pub numerator: Formula,
    /// Compiled denominator.
    pub denominator: Option<Formula>,
    /// Indexes into [`Catalog::windows`].
    pub windows: Vec<usize>,
    /// Measures read (numerator and denominator, and [`Kpi::gate`]), as a bit mask.
    pub mask: u64,
    /// Measures of uncosted units of the cost measures it reads: while any is non-zero in a
    /// window, the window has no value (a profit missing costs is wrong, not partial).
    pub gate: u64,
    /// The time basis (of the numerator's first measure).
    pub basis: String,
}

/// A compiled catalog restricted to the selected KPIs.
#[derive(Debug)]
pub struct Catalog {
    /// Windows used by the selected KPIs.
    pub windows: Vec<WindowDef>,
    /// Every measure of the file (indexes are stable; unused ones are never evaluated).
    pub measures: Vec<Measure>,
    /// Measure groups sharing a replace key.
    pub replace_groups: Vec<ReplaceGroup>,
    /// The selected KPIs.
    pub kpis: Vec<Kpi>,
    /// Measures used by at least one selected KPI.
    pub used_measures: u64,
}

/// Where catalog text came from, for error messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// A file path or `built-in`.
    pub name: String,
    /// The TOML text.
    pub text: String,
}

impl Source {
    /// The built-in catalog.
    pub fn builtin() -> Source {
        Source {
            name: "built-in".into(),
            text: BUILTIN.into(),
        }
    }
}

struct Compiler<'a> {
    file: &'a str,
    ctx: SessionContext,
    schema: DFSchema,
}

impl Compiler<'_> {
    fn err(
        &self,
        item: &str,
        key: &str,
        value: &str,
        problem: impl Into<String>,
    ) -> ProcessorError {
        ProcessorError::Catalog {
            file: self.file.to_string(),
            item: item.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// Parses `sql`, checks its type with `check`, and returns it cast to `to`.
    fn expr(
        &self,
        item: &str,
        key: &str,
        sql: &str,
        check: impl Fn(&DataType) -> Result<(), String>,
        to: Option<DataType>,
    ) -> Result<Arc<dyn PhysicalExpr>, ProcessorError> {
        let short = |e: datafusion::error::DataFusionError| {
            let msg = e.to_string();
            // DataFusion lists every valid field after an unknown one; keep the message short.
            match msg.find("Valid fields are") {
                Some(i) => format!(
                    "{}; see the `events` table columns",
                    msg[..i].trim_end().trim_end_matches('.')
                ),
                None => msg,
            }
        };
        let expr = self
            .ctx
            .parse_sql_expr(sql, &self.schema)
            .map_err(|e| self.err(item, key, sql, short(e)))?;
        let ty = expr
            .get_type(&self.schema)
            .map_err(|e| self.err(item, key, sql, short(e)))?;
        check(&ty).map_err(|p| self.err(item, key, sql, format!("{p}, got {ty}")))?;
        let expr = match to {
            Some(to) if to != ty => {
                Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(expr), to))
            }
            _ => expr,
        };
        // Some functions (COALESCE, NVL...) only exist in simplified form at execution.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(self.schema.clone()))
                .build(),
        );
        let expr = simplifier
            .simplify(expr)
            .map_err(|e| self.err(item, key, sql, short(e)))?;
        self.ctx
            .create_physical_expr(expr, &self.schema)
            .map_err(|e| self.err(item, key, sql, short(e)))
    }
}

fn is_numeric(t: &DataType) -> Result<(), String> {
    if t.is_numeric() || *t == DataType::Null {
        Ok(())
    } else {
        Err("must be a number".into())
    }
}

fn is_boolean(t: &DataType) -> Result<(), String> {
    if *t == DataType::Boolean {
        Ok(())
    } else {
        Err("must be a boolean condition".into())
    }
}

fn is_timestamp_or_date(t: &DataType) -> Result<(), String> {
    if matches!(t, DataType::Timestamp(_, _) | DataType::Date32) {
        Ok(())
    } else {
        Err("must be a timestamp or a date".into())
    }
}

fn is_timestamp(t: &DataType) -> Result<(), String> {
    if matches!(t, DataType::Timestamp(_, _)) {
        Ok(())
    } else {
        Err("must be a timestamp".into())
    }
}

fn any(_: &DataType) -> Result<(), String> {
    Ok(())
}

impl Catalog {
    /// Compiles `source`, keeping the KPIs in `select` (all when empty) plus the windows in
    /// `extra_windows` (kpi id → window names, from breach rules).
    pub fn compile(
        source: &Source,
        select: &[String],
        extra_windows: &[(String, String)],
    ) -> Result<Catalog, ProcessorError> {
        let file: CatalogFile =
            toml::from_str(&source.text).map_err(|e| ProcessorError::Catalog {
                file: source.name.clone(),
                item: "file".into(),
                key: "toml".into(),
                value: String::new(),
                problem: e.to_string(),
            })?;
        let c = Compiler {
            file: &source.name,
            ctx: SessionContext::new(),
            schema: DFSchema::try_from(event_table::schema().as_ref().clone()).map_err(|e| {
                ProcessorError::Internal {
                    what: "events schema".into(),
                    problem: e.to_string(),
                }
            })?,
        };
        if file.measures.len() > 64 {
            return Err(c.err(
                "measures",
                "count",
                &file.measures.len().to_string(),
                "at most 64 measures are supported",
            ));
        }
        let mut measures = Vec::new();
        let mut groups: Vec<ReplaceGroup> = Vec::new();
        for (name, m) in &file.measures {
            let item = format!("measure `{name}`");
            let mut schemas = vec![false; EventBody::SCHEMAS.len()];
            if m.events.is_empty() {
                return Err(c.err(&item, "events", "[]", "name at least one event schema"));
            }
            for e in &m.events {
                let Some(i) = EventBody::SCHEMAS.iter().position(|(s, _)| s == e) else {
                    let known: Vec<&str> = EventBody::SCHEMAS.iter().map(|(s, _)| *s).collect();
                    return Err(c.err(
                        &item,
                        "events",
                        e,
                        format!("no such event schema; known: {}", known.join(", ")),
                    ));
                };
                schemas[i] = true;
            }
            let filter = m
                .filter
                .as_deref()
                .map(|f| c.expr(&item, "filter", f, is_boolean, None))
                .transpose()?;
            let value = c.expr(
                &item,
                "value",
                &m.value,
                is_numeric,
                Some(event_table::decimal_type()),
            )?;
            // A date keeps its date: it is placed on the scope's business day when applied.
            let as_date = c.expr(&item, "time", &m.time, is_timestamp_or_date, None)?;
            let time_is_date =
                as_date.data_type(c.schema.as_arrow()).ok() == Some(DataType::Date32);
            let time = c.expr(
                &item,
                "time",
                &m.time,
                is_timestamp_or_date,
                Some(if time_is_date {
                    DataType::Date32
                } else {
                    DataType::Timestamp(
                        datafusion::arrow::datatypes::TimeUnit::Microsecond,
                        Some("UTC".into()),
                    )
                }),
            )?;
            if m.basis.trim().is_empty() {
                return Err(c.err(&item, "basis", &m.basis, "must not be empty"));
            }
            if m.latest && m.replace.is_none() {
                return Err(c.err(
                    &item,
                    "latest",
                    "true",
                    "a gauge needs `replace.key` to know which reports replace each other",
                ));
            }
            if m.daily.is_some() {
                let why = if m.replace.is_none() {
                    Some("a daily level needs `replace.key` (its locations)")
                } else if m.latest || m.once.is_some() {
                    Some("a daily level is neither a gauge (`latest`) nor counted `once`")
                } else if m.time != event_time() {
                    Some(
                        "a daily level is placed on its report's business day: leave `time` at event_time",
                    )
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(c.err(&item, "daily", &format!("{:?}", m.daily), why));
                }
            }
            let index = measures.len();
            let once = m.once.as_ref().map(|key| ReplaceConfig {
                key: key.clone(),
                version: event_time(),
            });
            if once.is_some() && (m.replace.is_some() || m.latest) {
                return Err(c.err(
                    &item,
                    "once",
                    &format!("{:?}", m.once.as_deref().unwrap_or_default()),
                    "a measure counted once per key cannot also be restated (`replace`) or a gauge (`latest`)",
                ));
            }
            let (key_name, version_name) = if once.is_some() {
                ("once", "once")
            } else {
                ("replace.key", "replace.version")
            };
            let replace_group = match m.replace.as_ref().or(once.as_ref()) {
                None => None,
                Some(r) => {
                    if r.key.is_empty() {
                        return Err(c.err(&item, key_name, "[]", "name at least one key"));
                    }
                    // Measures counted once per key each keep their own set of keys: a
                    // chargeback counted as a defect must not use up the order's slot for
                    // negative feedback.
                    let found = groups.iter().position(|g| {
                        once.is_none()
                            && !g.once
                            && g.config == *r
                            && g.latest == m.latest
                            && g.daily == m.daily.is_some()
                    });
                    Some(match found {
                        Some(g) => {
                            groups[g].measures.push(index);
                            g
                        }
                        None => {
                            let key = r
                                .key
                                .iter()
                                .map(|k| c.expr(&item, key_name, k, any, Some(DataType::Utf8)))
                                .collect::<Result<Vec<_>, _>>()?;
                            let version = c.expr(
                                &item,
                                version_name,
                                &r.version,
                                is_timestamp,
                                Some(DataType::Timestamp(
                                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                                    Some("UTC".into()),
                                )),
                            )?;
                            groups.push(ReplaceGroup {
                                config: r.clone(),
                                latest: m.latest,
                                once: once.is_some(),
                                daily: m.daily.is_some(),
                                key,
                                version,
                                measures: vec![index],
                            });
                            groups.len() - 1
                        }
                    })
                }
            };
            measures.push(Measure {
                name: name.clone(),
                config: m.clone(),
                schemas,
                filter,
                value,
                time,
                time_is_date,
                replace_group,
                daily: m.daily,
                uncosted: None,
            });
        }
        // Each cost measure declares its measure of uncosted units.
        for ci in 0..measures.len() {
            let Some(cost) = measures[ci].config.cost.clone() else {
                continue;
            };
            let m = &measures[ci];
            let item = format!("measure `{}`", m.name);
            let why = if m.config.unit != MeasureUnit::Money {
                Some("a cost of goods is money: set `unit = \"money\"`")
            } else if m.replace_group.is_some() || m.config.latest || m.daily.is_some() {
                Some(
                    "a cost measure counts units sold: it is not restated, counted once, a gauge or a daily level",
                )
            } else if file.measures.contains_key(&cost.uncosted)
                || measures.iter().any(|x| x.name == cost.uncosted)
            {
                Some("`uncosted` declares a measure of its own: choose a name no other measure has")
            } else if cost.uncosted.trim().is_empty() {
                Some("`uncosted` names the measure of units without a cost: it must not be empty")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(c.err(&item, "cost", &format!("{cost:?}"), why));
            }
            let mut config = m.config.clone();
            config.unit = MeasureUnit::Count;
            config.cost = None;
            let uncosted = Measure {
                name: cost.uncosted.clone(),
                config,
                // No fact feeds it: the engine books a cost measure's units here when it
                // cannot price them.
                schemas: vec![false; EventBody::SCHEMAS.len()],
                filter: None,
                value: Arc::clone(&m.value),
                time: Arc::clone(&m.time),
                time_is_date: m.time_is_date,
                replace_group: None,
                daily: None,
                uncosted: None,
            };
            measures.push(uncosted);
            measures[ci].uncosted = Some((measures.len() - 1) as u16);
        }
        if measures.len() > 64 {
            return Err(c.err(
                "measures",
                "count",
                &measures.len().to_string(),
                "at most 64 measures (counting those `cost` declares) are supported",
            ));
        }

        // Windows: all defined ones are checked; only used ones are kept.
        let mut all_windows = BTreeMap::new();
        for (name, w) in &file.windows {
            all_windows.insert(name.clone(), compile_window(&c, name, w)?);
        }

        let index_of: HashMap<&str, usize> = measures
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        for id in select {
            if !file.kpis.contains_key(id) {
                return Err(c.err(
                    &format!("kpi `{id}`"),
                    "id",
                    id,
                    format!(
                        "no such KPI in the catalog; known: {}",
                        file.kpis.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut windows: Vec<WindowDef> = Vec::new();
        let mut kpis = Vec::new();
        for (id, k) in &file.kpis {
            let item = format!("kpi `{id}`");
            let numerator = formula(&c, &item, "numerator", &k.numerator, &index_of)?;
            let denominator = k
                .denominator
                .as_deref()
                .map(|d| formula(&c, &item, "denominator", d, &index_of))
                .transpose()?;
            check_kpi(&c, &item, k, &numerator, denominator.as_ref(), &measures)?;
            if !select.is_empty() && !select.contains(id) {
                continue;
            }
            let mut names: Vec<&String> = k.windows.iter().collect();
            names.extend(
                extra_windows
                    .iter()
                    .filter(|(kpi, _)| kpi == id)
                    .map(|(_, w)| w),
            );
            let mut kpi_windows = Vec::new();
            for w in names {
                let Some(def) = all_windows.get(w) else {
                    return Err(c.err(
                        &item,
                        "windows",
                        w,
                        format!(
                            "no such window; defined: {}",
                            all_windows.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                let wi = match windows.iter().position(|x| x.name == *w) {
                    Some(i) => i,
                    None => {
                        windows.push(def.clone());
                        windows.len() - 1
                    }
                };
                if !kpi_windows.contains(&wi) {
                    kpi_windows.push(wi);
                }
            }
            let reads = numerator.mask() | denominator.as_ref().map_or(0, Formula::mask);
            // A KPI of a cost measure has no value while the window holds uncosted units: its
            // units of those measures are part of what it reads.
            let gate = (0..measures.len())
                .filter(|i| reads & (1 << i) != 0)
                .filter_map(|i| measures[i].uncosted)
                .fold(0u64, |g, u| g | (1 << u));
            let mask = reads | gate;
            let basis = numerator
                .measures()
                .first()
                .map(|m| measures[*m].config.basis.clone())
                .unwrap_or_default();
            kpis.push(Kpi {
                id: id.clone(),
                config: k.clone(),
                numerator,
                denominator,
                windows: kpi_windows,
                mask,
                gate,
                basis,
            });
        }
        let used_measures = kpis.iter().fold(0, |m, k| m | k.mask);
        Ok(Catalog {
            windows,
            measures,
            replace_groups: groups,
            kpis,
            used_measures,
        })
    }

    /// The built-in catalog with every KPI.
    pub fn builtin() -> Catalog {
        // The built-in catalog is checked by this crate's tests.
        Catalog::compile(&Source::builtin(), &[], &[]).expect("the built-in catalog compiles")
    }

    /// A KPI by id.
    pub fn kpi(&self, id: &str) -> Option<&Kpi> {
        self.kpis.iter().find(|k| k.id == id)
    }

    /// The longest window (plus lag), in hours.
    pub fn longest_window_hours(&self) -> i64 {
        self.windows
            .iter()
            .map(|w| match w.kind {
                WindowKindConfig::BusinessDay => 25,
                WindowKindConfig::Week => 7 * 24 + 1,
                WindowKindConfig::Month => 31 * 24 + 1,
                WindowKindConfig::Rolling => w.hours,
                WindowKindConfig::Lagged => w.hours + w.lag_hours,
            })
            .max()
            .unwrap_or(25)
    }

    /// Evaluates every used measure over `batch` (rows of the events table, with
    /// `schema_index[row]` the row's index in [`EventBody::SCHEMAS`]).
    pub fn evaluate(
        &self,
        batch: &RecordBatch,
        schema_index: &[usize],
    ) -> Result<Evaluated, ProcessorError> {
        let rows = batch.num_rows();
        let internal =
            |what: &str, e: datafusion::error::DataFusionError| ProcessorError::Internal {
                what: what.to_string(),
                problem: e.to_string(),
            };
        let array = |e: &Arc<dyn PhysicalExpr>, what: &str| -> Result<ArrayRef, ProcessorError> {
            e.evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|err| internal(what, err))
        };
        let mut contributions = Vec::new();
        for (mi, m) in self.measures.iter().enumerate() {
            if self.used_measures & (1 << mi) == 0 {
                continue;
            }
            if !schema_index.iter().any(|s| m.schemas[*s]) {
                continue;
            }
            let filter = match &m.filter {
                Some(f) => Some(array(f, &m.name)?),
                None => None,
            };
            let filter = filter
                .as_ref()
                .map(|a| a.as_any().downcast_ref::<BooleanArray>())
                .map(|a| a.ok_or_else(|| wrong_type(&m.name, "filter")))
                .transpose()?;
            let value = array(&m.value, &m.name)?;
            let value = value
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .ok_or_else(|| wrong_type(&m.name, "value"))?;
            let time = array(&m.time, &m.name)?;
            // Microseconds, or days since the epoch when the measure's time is a date.
            let time: Vec<Option<i64>> = if m.time_is_date {
                let a = time
                    .as_any()
                    .downcast_ref::<Date32Array>()
                    .ok_or_else(|| wrong_type(&m.name, "time"))?;
                a.iter().map(|d| d.map(i64::from)).collect()
            } else {
                let a = time
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| wrong_type(&m.name, "time"))?;
                a.iter().collect()
            };
            for (row, schema) in schema_index.iter().enumerate() {
                if !m.schemas[*schema] {
                    continue;
                }
                if let Some(f) = filter
                    && !(f.is_valid(row) && f.value(row))
                {
                    // Restated facts must still replace their older version with nothing;
                    // a fact counted once per key that does not match simply is not one.
                    if m.replace_group.is_none_or(|g| self.replace_groups[g].once) {
                        continue;
                    }
                    contributions.push(Contribution {
                        row: row as u32,
                        measure: mi as u16,
                        time: None,
                        value: Decimal::ZERO,
                    });
                    continue;
                }
                let Some(t) = time[row] else { continue };
                if value.is_null(row) {
                    continue;
                }
                contributions.push(Contribution {
                    row: row as u32,
                    measure: mi as u16,
                    time: Some(t),
                    value: Decimal(rust_decimal::Decimal::from_i128_with_scale(
                        value.value(row),
                        DECIMAL_SCALE as u32,
                    )),
                });
            }
        }
        let mut keys = Vec::with_capacity(self.replace_groups.len());
        for (gi, g) in self.replace_groups.iter().enumerate() {
            let used = g
                .measures
                .iter()
                .any(|m| self.used_measures & (1 << m) != 0);
            if !used {
                keys.push(None);
                continue;
            }
            let what = format!("replace group {gi}");
            let parts = g
                .key
                .iter()
                .map(|k| array(k, &what))
                .collect::<Result<Vec<_>, _>>()?;
            let parts = parts
                .iter()
                .map(|p| {
                    p.as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| wrong_type(&what, "key"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let version = array(&g.version, &what)?;
            let version = version
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| wrong_type(&what, "version"))?;
            let mut group_keys = Vec::with_capacity(rows);
            for row in 0..rows {
                let mut key = String::new();
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        key.push('\u{1f}');
                    }
                    if p.is_valid(row) {
                        key.push_str(p.value(row));
                    } else {
                        key.push('\u{0}');
                    }
                }
                let v = if version.is_valid(row) {
                    version.value(row)
                } else {
                    i64::MIN
                };
                group_keys.push((key, v));
            }
            keys.push(Some(group_keys));
        }
        Ok(Evaluated {
            contributions,
            keys,
        })
    }
}

fn wrong_type(what: &str, key: &str) -> ProcessorError {
    ProcessorError::Internal {
        what: format!("{what}.{key}"),
        problem: "evaluated to an unexpected Arrow type".into(),
    }
}

/// One row's effect on one measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// Row in the batch.
    pub row: u32,
    /// Measure index.
    pub measure: u16,
    /// Event-time microseconds placing it (days since the epoch for a measure whose time is
    /// a date); `None` when a restated row's filter is false (it replaces the older version
    /// with nothing).
    pub time: Option<i64>,
    /// Amount to add.
    pub value: Decimal,
}

/// Measures evaluated over a batch.
#[derive(Debug)]
pub struct Evaluated {
    /// Contributions, grouped by measure, rows ascending within a measure.
    pub contributions: Vec<Contribution>,
    /// Per replace group (None when unused): per row, the key and version (µs).
    pub keys: Vec<Option<Vec<(String, i64)>>>,
}

fn compile_window(
    c: &Compiler<'_>,
    name: &str,
    w: &WindowConfig,
) -> Result<WindowDef, ProcessorError> {
    let item = format!("window `{name}`");
    let hours = |key: &str, d: Option<Duration>| -> Result<i64, ProcessorError> {
        let Some(d) = d else {
            return Err(c.err(&item, key, "", "required for this kind of window"));
        };
        let shown = humantime::format_duration(d).to_string();
        if d.as_secs() == 0 || d.as_secs() % 3600 != 0 || d.subsec_nanos() != 0 {
            return Err(c.err(
                &item,
                key,
                &shown,
                "must be a whole number of hours, at least 1h",
            ));
        }
        Ok((d.as_secs() / 3600) as i64)
    };
    let (h, lag) = match w.kind {
        WindowKindConfig::Rolling => (hours("length", w.length)?, 0),
        WindowKindConfig::Lagged => (hours("length", w.length)?, hours("lag", w.lag)?),
        _ => {
            if w.length.is_some() || w.lag.is_some() {
                return Err(c.err(
                    &item,
                    "length",
                    "",
                    "calendar windows (business_day, week, month) take no length or lag",
                ));
            }
            (0, 0)
        }
    };
    if w.kind == WindowKindConfig::Rolling && w.lag.is_some() {
        return Err(c.err(
            &item,
            "lag",
            "",
            "rolling windows have no lag; use kind = \"lagged\"",
        ));
    }
    Ok(WindowDef {
        name: name.to_string(),
        kind: w.kind,
        hours: h,
        lag_hours: lag,
    })
}

/// Parses a KPI formula: measures, numbers, `window_days`, `+ - *`, parentheses.
fn formula(
    c: &Compiler<'_>,
    item: &str,
    key: &str,
    sql: &str,
    measures: &HashMap<&str, usize>,
) -> Result<Formula, ProcessorError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields: Vec<Field> = measures
        .keys()
        .map(|m| Field::new(*m, DataType::Float64, false))
        .collect();
    fields.push(Field::new("window_days", DataType::Float64, false));
    let schema = DFSchema::try_from(Schema::new(fields))
        .map_err(|e| c.err(item, key, sql, e.to_string()))?;
    let expr = c.ctx.parse_sql_expr(sql, &schema).map_err(|e| {
        let msg = e.to_string();
        let msg = match msg.find("Valid fields are") {
            Some(i) => format!(
                "{}; known measures: {}",
                msg[..i].trim_end().trim_end_matches('.'),
                {
                    let mut names: Vec<&str> = measures.keys().copied().collect();
                    names.sort_unstable();
                    names.join(", ")
                }
            ),
            None => msg,
        };
        c.err(item, key, sql, msg)
    })?;
    fn walk(e: &Expr, measures: &HashMap<&str, usize>) -> Result<Formula, String> {
        match e {
            Expr::Column(col) if col.name == "window_days" => Ok(Formula::WindowDays),
            Expr::Column(col) => measures
                .get(col.name.as_str())
                .map(|m| Formula::Measure(*m))
                .ok_or_else(|| format!("no such measure `{}`", col.name)),
            Expr::Literal(v, _) => {
                let text = match v {
                    ScalarValue::Int64(Some(i)) => i.to_string(),
                    ScalarValue::Float64(Some(f)) => f.to_string(),
                    other => other.to_string(),
                };
                Decimal::parse(&text)
                    .map(Formula::Const)
                    .ok_or_else(|| format!("`{text}` is not a plain number"))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (l, r) = (
                    Box::new(walk(left, measures)?),
                    Box::new(walk(right, measures)?),
                );
                match op {
                    Operator::Plus => Ok(Formula::Add(l, r)),
                    Operator::Minus => Ok(Formula::Sub(l, r)),
                    Operator::Multiply => Ok(Formula::Mul(l, r)),
                    other => Err(format!(
                        "operator `{other}` is not allowed; formulas use + - * (the KPI divides numerator by denominator)"
                    )),
                }
            }
            other => Err(format!(
                "`{other}` is not allowed; formulas combine measures, numbers and window_days with + - *"
            )),
        }
    }
    walk(&expr, measures).map_err(|p| c.err(item, key, sql, p))
}

fn formula_unit(f: &Formula, measures: &[Measure]) -> Option<MeasureUnit> {
    // The unit of the first measure read; `check_kpi` insists all measures agree.
    f.measures().first().map(|m| measures[*m].config.unit)
}

fn check_kpi(
    c: &Compiler<'_>,
    item: &str,
    k: &KpiConfig,
    numerator: &Formula,
    denominator: Option<&Formula>,
    measures: &[Measure],
) -> Result<(), ProcessorError> {
    if !KPI_UNITS.contains(&k.unit.as_str()) {
        return Err(c.err(
            item,
            "unit",
            &k.unit,
            format!("expected one of {}", KPI_UNITS.join(", ")),
        ));
    }
    if !OWNERS.contains(&k.owner.as_str()) {
        return Err(c.err(
            item,
            "owner",
            &k.owner,
            format!("expected one of {}", OWNERS.join(", ")),
        ));
    }
    if k.windows.is_empty() {
        return Err(c.err(item, "windows", "[]", "name at least one window"));
    }
    for (key, f, text) in [
        ("numerator", Some(numerator), k.numerator.as_str()),
        (
            "denominator",
            denominator,
            k.denominator.as_deref().unwrap_or(""),
        ),
    ] {
        let Some(f) = f else { continue };
        let ms = f.measures();
        if ms.is_empty() {
            return Err(c.err(item, key, text, "must read at least one measure"));
        }
        let units: Vec<MeasureUnit> = ms.iter().map(|m| measures[*m].config.unit).collect();
        if units.iter().any(|u| *u != units[0]) {
            return Err(c.err(item, key, text, "mixes money and count measures"));
        }
    }
    let (num_unit, den_unit) = (
        formula_unit(numerator, measures),
        denominator.and_then(|d| formula_unit(d, measures)),
    );
    let den_text = k.denominator.as_deref().unwrap_or("");
    match (k.unit.as_str(), den_unit) {
        ("ratio", None) => {
            return Err(c.err(item, "denominator", "", "a ratio needs a denominator"));
        }
        ("ratio", Some(d)) if Some(d) != num_unit => {
            return Err(c.err(
                item,
                "denominator",
                den_text,
                format!(
                    "a ratio divides like by like, but the numerator is {} and the denominator {}",
                    unit_name(num_unit),
                    unit_name(Some(d))
                ),
            ));
        }
        ("ratio", Some(_)) => {}
        (_, Some(MeasureUnit::Money)) => {
            return Err(c.err(
                item,
                "denominator",
                den_text,
                format!(
                    "division by a non-count: a `{}` KPI may only divide by counts; make it a ratio of money to money",
                    k.unit
                ),
            ));
        }
        ("money", _) if num_unit != Some(MeasureUnit::Money) => {
            return Err(c.err(
                item,
                "unit",
                &k.unit,
                "a money KPI needs money measures in its numerator",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn unit_name(u: Option<MeasureUnit>) -> &'static str {
    match u {
        Some(MeasureUnit::Count) => "a count",
        Some(MeasureUnit::Money) => "money",
        None => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Catalog, ProcessorError> {
        Catalog::compile(
            &Source {
                name: "test.toml".into(),
                text: text.into(),
            },
            &[],
            &[],
        )
    }

    const WINDOWS: &str = "[windows]\nbusiness_day = { kind = \"business_day\" }\n";

    fn with_kpi(measure: &str, kpi: &str) -> String {
        format!(
            "{WINDOWS}\n[measures.orders]\nevents = [\"order.placed\"]\nbasis = \"placed\"\nunit = \"count\"\n\
             [measures.gmv]\nevents = [\"order.placed\"]\nvalue = \"amount\"\nbasis = \"placed\"\nunit = \"money\"\n\
             {measure}\n[kpis.k]\ndescription = \"d\"\nunit = \"ratio\"\ndirection = \"higher_is_better\"\n\
             owner = \"finance\"\npriority = \"core\"\nwindows = [\"business_day\"]\n{kpi}\n"
        )
    }

    #[test]
    fn the_builtin_catalog_has_the_seed_kpis_and_every_template_compiles() {
        let c = Catalog::builtin();
        for id in [
            "gmv",
            "orders",
            "units",
            "aov",
            "fill_rate",
            "on_time_ship_rate",
            "late_shipment_rate",
            "cancellation_rate",
            "valid_tracking_rate",
            "on_time_delivery_rate",
            "order_defect_rate",
            "return_rate",
            "refund_rate",
            "roas",
            "acos",
            "tacos",
            "cpc",
            "ctr",
            "cvr",
            "stockout_rate",
            "days_of_cover",
            "inventory_turnover",
            "negative_feedback_rate",
        ] {
            assert!(c.kpi(id).is_some(), "{id} missing");
        }
        for (name, _) in TEMPLATES {
            let t = crate::template::Template::builtin(name).unwrap();
            let c = Catalog::compile(&Source::builtin(), &t.kpis, &t.rule_windows()).unwrap();
            assert_eq!(c.kpis.len(), t.kpis.len(), "{name}");
        }
    }

    #[test]
    fn unknown_columns_name_the_measure_and_expression() {
        let err = compile(&with_kpi(
            "[measures.bad]\nevents = [\"order.placed\"]\nvalue = \"amount_usd\"\nbasis = \"placed\"\nunit = \"money\"",
            "numerator = \"gmv\"\ndenominator = \"gmv\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("measure `bad`: `value` = \"amount_usd\""),
            "{err}"
        );
        assert!(err.contains("amount_usd"), "{err}");
    }

    #[test]
    fn type_errors_are_refused() {
        let err = compile(&with_kpi(
            "[measures.bad]\nevents = [\"order.placed\"]\nfilter = \"units + 1\"\nbasis = \"placed\"\nunit = \"count\"",
            "numerator = \"orders\"\ndenominator = \"orders\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`filter` = \"units + 1\": must be a boolean condition, got Int64"),
            "{err}"
        );
        let err = compile(&with_kpi(
            "[measures.bad]\nevents = [\"order.placed\"]\nvalue = \"order_id\"\nbasis = \"placed\"\nunit = \"count\"",
            "numerator = \"orders\"\ndenominator = \"orders\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be a number, got Utf8"), "{err}");
    }

    #[test]
    fn a_cost_measure_declares_its_uncosted_units_and_gates_its_kpis() {
        let cogs = "[measures.cogs]\nevents = [\"order.placed\"]\nvalue = \"units\"\nbasis = \"placed\"\nunit = \"money\"\ncost = { uncosted = \"uncosted\" }";
        let c = compile(&with_kpi(
            cogs,
            "numerator = \"gmv - cogs\"\ndenominator = \"gmv\"",
        ))
        .unwrap();
        let m = |name: &str| c.measures.iter().position(|m| m.name == name).unwrap();
        assert_eq!(c.measures[m("cogs")].uncosted, Some(m("uncosted") as u16));
        // No fact feeds the uncosted units directly; the KPI reads them as its gate.
        assert!(c.measures[m("uncosted")].schemas.iter().all(|s| !s));
        let k = c.kpi("k").unwrap();
        assert_eq!(k.gate, 1 << m("uncosted"));
        assert_ne!(k.mask & k.gate, 0);
        let err = |measure: &str| {
            compile(&with_kpi(
                measure,
                "numerator = \"gmv\"\ndenominator = \"gmv\"",
            ))
            .unwrap_err()
            .to_string()
        };
        assert!(
            err(&cogs.replace("unit = \"money\"", "unit = \"count\""))
                .contains("a cost of goods is money"),
        );
        assert!(
            err(&cogs.replace("\"uncosted\"", "\"orders\""))
                .contains("choose a name no other measure has"),
        );
        assert!(
            err(&format!("{cogs}\nonce = [\"order_id\"]"))
                .contains("a cost measure counts units sold"),
        );
    }

    #[test]
    fn ratios_divide_like_by_like_and_others_only_by_counts() {
        let err = compile(&with_kpi(
            "",
            "numerator = \"gmv\"\ndenominator = \"orders\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kpi `k`: `denominator` = \"orders\": a ratio divides like by like"),
            "{err}"
        );
        let err = compile(
            &with_kpi("", "numerator = \"orders\"\ndenominator = \"gmv\"")
                .replace("unit = \"ratio\"", "unit = \"days\""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("division by a non-count"), "{err}");
        let err = compile(&with_kpi(
            "",
            "numerator = \"orderz\"\ndenominator = \"orders\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("kpi `k`: `numerator` = \"orderz\""), "{err}");
        assert!(err.contains("known measures: gmv, orders"), "{err}");
    }

    #[test]
    fn formulas_evaluate_exactly() {
        let c = Catalog::builtin();
        let k = c.kpi("days_of_cover").unwrap();
        let mut sums = vec![Decimal::ZERO; c.measures.len()];
        let sellable = c
            .measures
            .iter()
            .position(|m| m.name == "sellable_now")
            .unwrap();
        sums[sellable] = Decimal::from_i64(70);
        assert_eq!(
            k.numerator.eval(&sums, Decimal::from_i64(7)),
            Decimal::from_i64(490)
        );
    }
}
