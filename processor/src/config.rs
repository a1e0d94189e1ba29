//! `[processor]` configuration: catalog and templates, time zones, lateness, rules.

use crate::fx::{FxConfig, Rates};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Offset, TimeZone, Utc};
use serde::Deserialize;

use kpiflow_core::storage::{Location, StoreOptions};
use kpiflow_schemas::Decimal;

use crate::ProcessorError;
use crate::catalog::{Catalog, Source};
use crate::event_table::Bounds;
use crate::rule::RuleConfigs;
use crate::rule::crosscheck::CrossCheckRuleConfig;
use crate::rule::staleness::StalenessRuleConfig;
use crate::rule::threshold::ThresholdRuleConfig;
use crate::rule::trend::TrendRuleConfig;
use crate::template::Template;

/// How late each kind of fact may arrive and still be counted. A fact is late when its own
/// time (shipped at, returned at, the ad report's day …) is behind the newest fact already read
/// from the same stream — the same topic, shop and source — by more than its kind's allowance,
/// so the verdict depends only on the order of one partition, never on batching or timing.
/// Late facts are not dropped silently: they go to the dead-letter topic as `late`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lateness {
    /// Order lifecycle events (placed, paid, shipped, cancelled, returned, refunded, …).
    /// Default `3days`.
    #[serde(default = "Lateness::orders", with = "humantime_serde")]
    pub orders: Duration,
    /// Ad performance rows, which platforms restate for about two weeks. Default `14days`.
    #[serde(default = "Lateness::ads", with = "humantime_serde")]
    pub ads: Duration,
    /// Order defects (feedback, claims, chargebacks). Default `60days`.
    #[serde(default = "Lateness::defects", with = "humantime_serde")]
    pub defects: Duration,
    /// Inventory snapshots and shipment milestones. Default `3days`.
    #[serde(default = "Lateness::orders", with = "humantime_serde")]
    pub logistics: Duration,
    /// How far before its own time a fact may be booked: a return or refund counts on its
    /// order's date, a defect on its order's date, up to this long after the order.
    /// Default `90days`. State is kept for the longest allowance plus this plus the longest
    /// window; a fact booked to an older instant is dead-lettered (`late`).
    #[serde(default = "Lateness::lookback", with = "humantime_serde")]
    pub lookback: Duration,
}

impl Lateness {
    fn orders() -> Duration {
        Duration::from_secs(3 * 86_400)
    }
    fn ads() -> Duration {
        Duration::from_secs(14 * 86_400)
    }
    fn defects() -> Duration {
        Duration::from_secs(60 * 86_400)
    }
    fn lookback() -> Duration {
        Duration::from_secs(90 * 86_400)
    }

    /// The longest allowance.
    pub fn max(&self) -> Duration {
        self.orders
            .max(self.ads)
            .max(self.defects)
            .max(self.logistics)
    }
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            orders: Self::orders(),
            ads: Self::ads(),
            defects: Self::defects(),
            logistics: Self::orders(),
            lookback: Self::lookback(),
        }
    }
}

/// `[processor.bounds]`: the largest values one fact may carry. A fact beyond them (an amount
/// with a misplaced decimal point, a unit count read from the wrong column, a 10 KB id) is
/// dead-lettered as `implausible`, naming the field, the value and the bound, instead of
/// moving its shop's KPIs for months.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsConfig {
    /// Largest absolute amount of money in one fact: an order's total, a payment, a refund, a
    /// fee, one campaign-day's spend or attributed sales, in the fact's own currency. Default
    /// `1000000`; at most `1000000000000000` (so sums stay exact).
    #[serde(default = "BoundsConfig::max_amount")]
    pub max_amount: Decimal,
    /// Most units in one order fact or shipment. Default `100000`.
    #[serde(default = "BoundsConfig::max_units")]
    pub max_units: u32,
    /// Longest text field (an id, a shop, a SKU, a carrier, a reason), in bytes. Default `1024`.
    #[serde(default = "BoundsConfig::max_text_bytes")]
    pub max_text_bytes: usize,
}

impl BoundsConfig {
    fn max_amount() -> Decimal {
        Decimal(rust_decimal::Decimal::from(1_000_000))
    }
    fn max_units() -> u32 {
        100_000
    }
    fn max_text_bytes() -> usize {
        1024
    }
    /// The largest `max_amount`: 10^15 at scale 9 is 10^24, so even 10^14 facts of that size
    /// in one bucket stay far inside an i128 sum.
    fn amount_ceiling() -> Decimal {
        Decimal(rust_decimal::Decimal::from(1_000_000_000_000_000_i64))
    }

    /// The engine's form of the bounds.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_amount: crate::fixed::fixed(self.max_amount),
            max_units: i64::from(self.max_units),
            max_text_bytes: self.max_text_bytes,
        }
    }

    fn validate(&self) -> Result<(), ProcessorError> {
        if self.max_amount.0 <= rust_decimal::Decimal::ZERO
            || self.max_amount.0 > Self::amount_ceiling().0
        {
            return Err(ProcessorError::config(
                "bounds.max_amount",
                self.max_amount.to_string(),
                "must be above 0 and at most 1000000000000000 (so sums stay exact)",
            ));
        }
        if self.max_units == 0 {
            return Err(ProcessorError::config(
                "bounds.max_units",
                self.max_units,
                "must be at least 1",
            ));
        }
        // Ids built by connectors join a few names (`delivered-<shop>-<tracking>`): 64 bytes is
        // the least that never refuses a real one.
        if self.max_text_bytes < 64 {
            return Err(ProcessorError::config(
                "bounds.max_text_bytes",
                self.max_text_bytes,
                "must be at least 64",
            ));
        }
        Ok(())
    }
}

impl Default for BoundsConfig {
    fn default() -> Self {
        BoundsConfig {
            max_amount: Self::max_amount(),
            max_units: Self::max_units(),
            max_text_bytes: Self::max_text_bytes(),
        }
    }
}

/// `[processor.checkpoint]`: durable state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Where checkpoints live: a local folder, or `s3://bucket/prefix` in S3-compatible object
    /// storage (one subfolder / key prefix per consumer group, one object per input
    /// partition). Every processor of a group must reach the same location for partitions to
    /// move between machines: a bucket, or a shared volume. Default `kpiflow-state`.
    #[serde(default = "CheckpointConfig::dir")]
    pub dir: Location,
    /// How often state is checkpointed (and offsets committed); after a crash at most this
    /// much input is replayed. After partitions are assigned the first checkpoint comes
    /// after 1 s, then 2 s, 4 s … up to this, so a member killed soon after every start (a
    /// crash loop) still keeps its progress. Default `10s`.
    #[serde(default = "CheckpointConfig::interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `[processor.checkpoint.object_store]`: S3 settings for an `s3://` `dir` (`endpoint`,
    /// `region`, `allow_http`, …; see `kpiflow_core::storage`). Credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from this file.
    #[serde(default)]
    pub object_store: StoreOptions,
}

impl CheckpointConfig {
    fn dir() -> Location {
        Location::Local(PathBuf::from("kpiflow-state"))
    }
    fn interval() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: Self::dir(),
            interval: Self::interval(),
            object_store: StoreOptions::new(),
        }
    }
}

/// Settings of the KPI engine (`[processor]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Consumer group the processor reports its progress (and lag) under. Default `kpiflow-processor`.
    #[serde(default = "ProcessorConfig::group_id")]
    pub group_id: String,
    /// Static group membership (Kafka's `group.instance.id`): a member restarted with the same
    /// id takes its partitions back at once, instead of after the session timeout (45 s by
    /// default) during which no KPI of those partitions moves. Unique per member and stable
    /// across its restarts: a StatefulSet pod name, a host name; `"env:NAME"` reads it from
    /// the environment variable `NAME`. A member stopped for good keeps its partitions until
    /// `session.timeout.ms` passes, so leave it unset where members come and go with new
    /// names. Default: none (dynamic membership).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// IANA zone of business days (and weeks, months) for marketplaces not listed in
    /// `marketplace_time_zones`. Default `America/Los_Angeles` (Amazon US's day). Must have
    /// whole-hour UTC offsets, because aggregates are kept in one-hour buckets.
    #[serde(default = "ProcessorConfig::time_zone")]
    pub time_zone: String,
    /// Business time zone per marketplace id, e.g. `{ A1VC38T7YXB528 = "Asia/Tokyo" }`.
    #[serde(default)]
    pub marketplace_time_zones: BTreeMap<String, String>,
    /// KPI catalog file (TOML); default: the built-in catalog (`processor/catalog/kpis.toml`).
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Templates whose KPIs and rules are used: `fba`, `overseas_warehouse`, `dtc`,
    /// `amazon_account_health`, `walmart_seller_performance`, or the path of an edited copy
    /// (ending in `.toml`). With neither `templates` nor
    /// `kpis`, every KPI of the catalog is published.
    #[serde(default)]
    pub templates: Vec<String>,
    /// More KPI ids to publish, beyond the templates'.
    #[serde(default)]
    pub kpis: Vec<String>,
    /// How far behind the newest event time the watermark trails, to absorb ordinary
    /// reordering. Default `5m`.
    #[serde(
        default = "ProcessorConfig::out_of_orderness",
        with = "humantime_serde"
    )]
    pub out_of_orderness: Duration,
    /// A partition with no records for this long stops holding the watermark back. Default `10s`.
    #[serde(default = "ProcessorConfig::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A fact whose event time is more than this after its ingest time has not happened yet:
    /// it is dead-lettered as implausible instead of moving its shop's clock (and with it the
    /// retention of the shop's state) into the future. Default `1d`, wide enough for any
    /// clock skew or time-zone slip between hosts.
    #[serde(default = "ProcessorConfig::max_event_ahead", with = "humantime_serde")]
    pub max_event_ahead: Duration,
    /// A fact whose event time is more than this before its ingest time is dead-lettered as
    /// implausible (a 1970 epoch, a default date): it would open windows decades back.
    /// Default `365d`; raise it to backfill older history.
    #[serde(default = "ProcessorConfig::max_event_age", with = "humantime_serde")]
    pub max_event_age: Duration,
    /// The largest values one fact may carry.
    #[serde(default)]
    pub bounds: BoundsConfig,
    /// How late facts may be, per kind.
    #[serde(default)]
    pub lateness: Lateness,
    /// Where and how often state is checkpointed.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// A batch closes after this long (or `max_batch` records) and its changed aggregates are
    /// published. Default `100ms`.
    #[serde(default = "ProcessorConfig::flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// On SIGTERM / Ctrl-C, longest wait for the last outputs to be acknowledged before the
    /// final checkpoint; past it the processor exits with an error and the next start
    /// replays from the previous checkpoint. `kpiflow process` exits (code 3) this long after
    /// the signal whatever it is doing, as after a crash. Default `30s`.
    #[serde(
        default = "ProcessorConfig::shutdown_timeout",
        with = "humantime_serde"
    )]
    pub shutdown_timeout: Duration,
    /// Most records read between two flushes. Default `20000`.
    #[serde(default = "ProcessorConfig::max_batch")]
    pub max_batch: usize,
    /// The one currency money KPIs are kept in. Money in another currency is converted with
    /// the dated rates of `[processor.fx]`; without a rate it is dead-lettered (`currency`),
    /// with every other fact of its order. Default `USD`.
    #[serde(default = "ProcessorConfig::currency")]
    pub currency: String,
    /// Dated FX rates into `currency`.
    #[serde(default)]
    pub fx: FxConfig,
    /// Threshold breach rules (in addition to the templates').
    #[serde(default)]
    pub rules: Vec<ThresholdRuleConfig>,
    /// Trend breach rules: change against a week or month earlier, or a baseline.
    #[serde(default)]
    pub trend_rules: Vec<TrendRuleConfig>,
    /// Staleness breach rules: a source silent for too long.
    #[serde(default)]
    pub staleness_rules: Vec<StalenessRuleConfig>,
    /// Cross-check rules (in addition to the templates'): kpiflow's ODR, late shipment,
    /// cancel, valid tracking and on-time delivery rates against Amazon's own figures for the
    /// same days, beyond a tolerance.
    #[serde(default)]
    pub crosscheck_rules: Vec<CrossCheckRuleConfig>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            group_id: Self::group_id(),
            instance_id: None,
            time_zone: Self::time_zone(),
            marketplace_time_zones: BTreeMap::new(),
            catalog: None,
            templates: Vec::new(),
            kpis: Vec::new(),
            out_of_orderness: Self::out_of_orderness(),
            idle_timeout: Self::idle_timeout(),
            max_event_ahead: Self::max_event_ahead(),
            max_event_age: Self::max_event_age(),
            bounds: BoundsConfig::default(),
            lateness: Lateness::default(),
            checkpoint: CheckpointConfig::default(),
            flush_interval: Self::flush_interval(),
            shutdown_timeout: Self::shutdown_timeout(),
            max_batch: Self::max_batch(),
            currency: Self::currency(),
            fx: FxConfig::default(),
            rules: Vec::new(),
            trend_rules: Vec::new(),
            staleness_rules: Vec::new(),
            crosscheck_rules: Vec::new(),
        }
    }
}

impl ProcessorConfig {
    fn group_id() -> String {
        "kpiflow-processor".into()
    }
    fn time_zone() -> String {
        "America/Los_Angeles".into()
    }
    fn out_of_orderness() -> Duration {
        Duration::from_secs(300)
    }
    fn idle_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn max_event_ahead() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    fn max_event_age() -> Duration {
        Duration::from_secs(365 * 24 * 3600)
    }
    fn flush_interval() -> Duration {
        // Latency at low load; under load batches close on `max_batch` first.
        Duration::from_millis(100)
    }
    fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn max_batch() -> usize {
        20_000
    }
    fn currency() -> String {
        "USD".into()
    }

    /// The static member id (`instance_id`, read from the environment for `env:NAME`),
    /// checked as Kafka checks it: 1 to 249 of `A-Z a-z 0-9 . _ -`.
    pub fn instance_id(&self) -> Result<Option<String>, ProcessorError> {
        let Some(raw) = &self.instance_id else {
            return Ok(None);
        };
        let id = match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                ProcessorError::config(
                    "instance_id",
                    raw,
                    format!("the environment variable {var} is not set"),
                )
            })?,
            None => raw.clone(),
        };
        let legal = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if id.is_empty() || id.len() > 249 || !id.bytes().all(legal) {
            return Err(ProcessorError::config(
                "instance_id",
                &id,
                "expected 1 to 249 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(Some(id))
    }

    /// The parsed business-day zone (call after [`ProcessorConfig::validate`]).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// Checks every value before any I/O; messages quote the key and the value.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        if self.group_id.trim().is_empty() {
            return Err(ProcessorError::config(
                "group_id",
                &self.group_id,
                "must not be empty",
            ));
        }
        self.instance_id()?;
        if self.max_event_ahead < Duration::from_secs(60) {
            return Err(ProcessorError::config(
                "max_event_ahead",
                humantime::format_duration(self.max_event_ahead).to_string(),
                "must be at least 1m: hosts' clocks differ by seconds",
            ));
        }
        if self.max_event_age < Duration::from_secs(24 * 3600) {
            return Err(ProcessorError::config(
                "max_event_age",
                humantime::format_duration(self.max_event_age).to_string(),
                "must be at least 1d: facts arrive days late (returns, defects, restated ads)",
            ));
        }
        self.bounds.validate()?;
        check_time_zone("time_zone", &self.time_zone)?;
        for (marketplace, zone) in &self.marketplace_time_zones {
            check_time_zone(&format!("marketplace_time_zones.{marketplace}"), zone)?;
        }
        if self.flush_interval.is_zero() {
            return Err(ProcessorError::config(
                "flush_interval",
                self.flush_interval,
                "must be above zero",
            ));
        }
        if self.max_batch == 0 {
            return Err(ProcessorError::config(
                "max_batch",
                self.max_batch,
                "must be at least 1",
            ));
        }
        let currency_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return Err(ProcessorError::config(
                "currency",
                &self.currency,
                "expected an ISO 4217 code such as \"USD\"",
            ));
        }
        Rates::validate(&self.fx, &self.currency)?;
        self.checkpoint.dir.validate_options(
            "processor.checkpoint.object_store",
            &self.checkpoint.object_store,
        )?;
        for (i, rule) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|r| r.id == rule.id) {
                return Err(ProcessorError::config(
                    &format!("rules[{i}].id"),
                    &rule.id,
                    "another rule has the same id",
                ));
            }
        }
        Ok(())
    }

    /// Validates, reads the catalog and templates, and compiles them: everything the engine
    /// needs, checked before any Kafka I/O.
    pub fn compile(&self) -> Result<Compiled, ProcessorError> {
        self.validate()?;
        let source = match &self.catalog {
            None => Source::builtin(),
            Some(path) => Source {
                name: path.display().to_string(),
                text: std::fs::read_to_string(path).map_err(|e| {
                    ProcessorError::config("catalog", path, format!("cannot read: {e}"))
                })?,
            },
        };
        let mut select: Vec<String> = Vec::new();
        let mut rules: Vec<(String, ThresholdRuleConfig)> = Vec::new();
        let mut trends: Vec<(String, TrendRuleConfig)> = Vec::new();
        let mut crosschecks: Vec<(String, CrossCheckRuleConfig)> = Vec::new();
        for (i, name) in self.templates.iter().enumerate() {
            let t = if name.ends_with(".toml") {
                Template::from_file(std::path::Path::new(name)).map_err(|problem| {
                    ProcessorError::config(&format!("templates[{i}]"), name, problem)
                })?
            } else {
                Template::builtin(name).ok_or_else(|| {
                    ProcessorError::config(
                        &format!("templates[{i}]"),
                        name,
                        format!(
                            "no such template; known: {} (or a path ending in .toml)",
                            crate::catalog::TEMPLATES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?
            };
            select.extend(t.kpis.iter().cloned());
            rules.extend(
                t.rules
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| (format!("template {name} rules[{j}]"), r)),
            );
            trends.extend(
                t.trend_rules
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| (format!("template {name} trend_rules[{j}]"), r)),
            );
            crosschecks.extend(
                t.crosscheck_rules
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| (format!("template {name} crosscheck_rules[{j}]"), r)),
            );
        }
        select.extend(self.kpis.iter().cloned());
        rules.extend(
            self.rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("rules[{i}]"), r.clone())),
        );
        trends.extend(
            self.trend_rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("trend_rules[{i}]"), r.clone())),
        );
        // A rule on a KPI selects it, and its window is published for that KPI.
        let watched: Vec<(String, String)> = rules
            .iter()
            .map(|(_, r)| (r.kpi.clone(), r.window.clone()))
            .chain(
                trends
                    .iter()
                    .map(|(_, r)| (r.kpi.clone(), r.window.clone())),
            )
            .collect();
        crosschecks.extend(
            self.crosscheck_rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("crosscheck_rules[{i}]"), r.clone())),
        );
        if !select.is_empty() {
            select.extend(watched.iter().map(|(k, _)| k.clone()));
            // A cross-check needs kpiflow's own value of the KPI it checks.
            select.extend(crosschecks.iter().flat_map(|(_, r)| r.checked()));
        }
        select.sort();
        select.dedup();
        let rule_windows = watched;
        let catalog = Catalog::compile(&source, &select, &rule_windows)?;
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut check_id = |at: &str, id: &str| -> Result<(), ProcessorError> {
            if let Some(other) = seen.insert(id.to_string(), at.to_string()) {
                return Err(ProcessorError::config(
                    &format!("{at}.id"),
                    id,
                    format!("{other} has the same id"),
                ));
            }
            Ok(())
        };
        for (at, r) in &rules {
            r.validate(at, &catalog)?;
            check_id(at, &r.id)?;
        }
        for (at, r) in &trends {
            r.validate(at, &catalog)?;
            check_id(at, &r.id)?;
        }
        for (at, r) in &crosschecks {
            r.validate(at)?;
            check_id(at, &r.id)?;
        }
        for (i, r) in self.staleness_rules.iter().enumerate() {
            let at = format!("staleness_rules[{i}]");
            r.validate(&at)?;
            check_id(&at, &r.id)?;
        }
        let time_zones = self
            .marketplace_time_zones
            .iter()
            .map(|(m, z)| (m.clone(), z.parse().unwrap_or(chrono_tz::UTC)))
            .collect();
        let rates = Arc::new(Rates::load(&self.fx, &self.currency)?);
        Ok(Compiled {
            rates,
            config: self.clone(),
            catalog: Arc::new(catalog),
            rules: RuleConfigs {
                thresholds: rules.into_iter().map(|(_, r)| r).collect(),
                trends: trends.into_iter().map(|(_, r)| r).collect(),
                staleness: self.staleness_rules.clone(),
                crosschecks: crosschecks.into_iter().map(|(_, r)| r).collect(),
            },
            default_tz: self.tz(),
            time_zones,
        })
    }
}

/// A validated configuration with its compiled catalog and every rule (templates' first).
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The configuration.
    pub config: ProcessorConfig,
    /// The catalog, restricted to the selected KPIs.
    pub catalog: Arc<Catalog>,
    /// Breach rules from the templates and the configuration.
    pub rules: RuleConfigs,
    /// Business zone of marketplaces without their own.
    pub default_tz: chrono_tz::Tz,
    /// Business zone per marketplace.
    pub time_zones: HashMap<String, chrono_tz::Tz>,
    /// FX rates into the pipeline currency.
    pub rates: Arc<Rates>,
}

fn check_time_zone(key: &str, zone: &str) -> Result<(), ProcessorError> {
    let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
        ProcessorError::config(
            key,
            zone,
            "not an IANA time zone (e.g. \"America/Los_Angeles\")",
        )
    })?;
    let year = Utc::now().year();
    for month in [1, 7] {
        let t = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).unwrap();
        let offset = tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc();
        if offset % 3600 != 0 {
            return Err(ProcessorError::config(
                key,
                zone,
                format!(
                    "UTC offset {}h{:02} is not a whole hour; business days are built from one-hour buckets",
                    offset / 3600,
                    (offset % 3600).abs() / 60
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_checked_as_kafka_checks_them() {
        let with = |id: &str| ProcessorConfig {
            instance_id: Some(id.into()),
            ..ProcessorConfig::default()
        };
        assert_eq!(ProcessorConfig::default().instance_id().unwrap(), None);
        assert_eq!(
            with("kpiflow-processor-0")
                .instance_id()
                .unwrap()
                .as_deref(),
            Some("kpiflow-processor-0")
        );
        let err = with("proc 0").validate().unwrap_err().to_string();
        assert!(
            err.contains("instance_id") && err.contains("\"proc 0\""),
            "{err}"
        );
        let err = with("env:KPIFLOW_TEST_UNSET_INSTANCE_ID")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KPIFLOW_TEST_UNSET_INSTANCE_ID is not set"),
            "{err}"
        );
        // PATH is set in every test environment and holds '/' or ':', which Kafka refuses.
        let err = with("env:PATH").validate().unwrap_err().to_string();
        assert!(err.contains("expected 1 to 249 characters"), "{err}");
    }

    #[test]
    fn defaults_validate() {
        ProcessorConfig::default().compile().unwrap();
    }

    #[test]
    fn every_template_compiles_alone_and_all_together() {
        let names: Vec<String> = crate::catalog::TEMPLATES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        for n in &names {
            let cfg = ProcessorConfig {
                templates: vec![n.clone()],
                ..Default::default()
            };
            let c = cfg.compile().unwrap();
            assert!(!c.rules.thresholds.is_empty(), "{n} has rules");
        }
        let cfg = ProcessorConfig {
            templates: names,
            ..Default::default()
        };
        cfg.compile().unwrap();
    }

    #[test]
    fn errors_quote_key_and_value() {
        let cfg = ProcessorConfig {
            time_zone: "Asia/Kolkata".into(),
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "bad config: `processor.time_zone` = \"Asia/Kolkata\": UTC offset 5h30"
            ),
            "{err}"
        );
        let cfg = ProcessorConfig {
            templates: vec!["fbaa".into()],
            ..Default::default()
        };
        let err = cfg.compile().unwrap_err().to_string();
        assert!(
            err.contains("`processor.templates[0]` = \"fbaa\": no such template; known: fba,"),
            "{err}"
        );
        let cfg = ProcessorConfig {
            currency: "usd".into(),
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("`processor.currency` = \"usd\"")
        );
    }
}
