//! `[simulate]`: the simulator's settings, their defaults, and validation before any I/O.

use std::time::Duration;

use chrono::{DateTime, Datelike, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::IngestError;

/// The config section the simulator reads; error messages name keys under it.
pub const SECTION: &str = "simulate";

/// Orders the in-memory generator is sized for (shops × orders per shop per day × days):
/// about 1.1 million events, about 1 GB while the stream is assembled.
const MAX_ORDERS: u64 = 200_000;

/// What to simulate and how fast to publish it (`[simulate]` in the config file).
///
/// The event stream depends only on the fields above `rate`, plus the resolved start:
/// the same values always give the same events (see [`super::generate`]). `rate`,
/// `max_events` and `duration` only decide how much of it is published, and how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Seed of every random draw. Default `42`.
    pub seed: u64,
    /// Number of shops; shop `i` (`shop-001` is shop 0) sells on the `i % 4`-th channel of
    /// amazon, walmart, shopify, tiktok_shop. Default `4`.
    pub shops: u32,
    /// SKUs in each shop's catalogue (prices $8-$80). Default `8`.
    pub skus_per_shop: u32,
    /// Event-time start, RFC 3339 UTC as a string, e.g. `"2026-11-01T00:00:00Z"`.
    /// Default: none, meaning "now minus `days`", resolved once at start-up, so the
    /// simulated span ends now.
    pub start: Option<DateTime<Utc>>,
    /// Event-time span in days; nothing after `start + days` is emitted. Default `7`.
    pub days: u32,
    /// Mean orders placed per shop per day (diurnal in US Pacific time). Default `120`.
    /// The whole run (shops × this × days) may hold at most 200 000 orders.
    pub orders_per_shop_per_day: u32,
    /// Events published per wall-clock second. Default: none, as fast as possible.
    pub rate: Option<f64>,
    /// Stop after publishing this many events. Default: none, publish the whole span.
    pub max_events: Option<u64>,
    /// Stop after this much wall-clock time, e.g. `"30s"`. Default: none.
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Fraction of events also re-sent later in the stream with identical content and
    /// `event_id` (a retried delivery). Default `0.01`.
    pub duplicate_rate: f64,
    /// Fraction of events delivered late: moved later in the stream by up to `max_delay` of
    /// event time, so they arrive after newer events. Default `0.02`.
    pub late_rate: f64,
    /// The longest delay of a late event, e.g. `"6h"`. Default `"6h"`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Incidents to inject (each visible in its KPI). Default: none.
    /// [`SimulatorConfig::demo`] has one of each kind.
    pub anomalies: Vec<Anomaly>,
}

/// An incident injected into one shop, starting on a day of the span.
///
/// `day` counts US Pacific calendar days: day 0 is the Pacific date `start` falls on, and the
/// incident starts at Pacific midnight of that day (so a day's KPI shows it whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Anomaly {
    /// Orders due to ship in the period (their `ship_by` falls in it) ship late, still within
    /// the period: the late-shipment rate of those days jumps.
    LateShipmentSpike {
        /// Shop index, from 0.
        shop: u32,
        /// Pacific day the spike starts (0 = the day of `start`).
        day: u32,
        /// Share of the orders due in the period that ship late. Default `0.3`.
        #[serde(default = "default_late_share")]
        late_share: f64,
        /// Length of the period in hours. Default `24`.
        #[serde(default = "default_spike_hours")]
        hours: u32,
    },
    /// One SKU has no sellable stock for some days: its snapshots show `sellable = 0` and the
    /// seller cancels its orders ("out of stock").
    Stockout {
        /// Shop index, from 0.
        shop: u32,
        /// Pacific day the stockout starts.
        day: u32,
        /// SKU index within the shop, from 0.
        sku: u32,
        /// Length in days. Default `2`.
        #[serde(default = "default_stockout_days")]
        days: u32,
    },
    /// From that day on, the shop's ad campaigns attribute only `factor` of their usual sales
    /// and orders (0.3 means a 70% drop) while spend stays the same.
    RoasCollapse {
        /// Shop index, from 0.
        shop: u32,
        /// Pacific day (of the ad report date) the collapse starts.
        day: u32,
        /// Multiplier on attributed sales and orders, from 0 to 1. Default `0.3`.
        #[serde(default = "default_roas_factor")]
        factor: f64,
    },
}

fn default_late_share() -> f64 {
    0.3
}
fn default_spike_hours() -> u32 {
    24
}
fn default_stockout_days() -> u32 {
    2
}
fn default_roas_factor() -> f64 {
    0.3
}

impl Anomaly {
    /// The wire name of the kind, e.g. `late_shipment_spike`.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::LateShipmentSpike { .. } => "late_shipment_spike",
            Anomaly::Stockout { .. } => "stockout",
            Anomaly::RoasCollapse { .. } => "roas_collapse",
        }
    }

    /// The shop index the anomaly applies to.
    pub fn shop(&self) -> u32 {
        match self {
            Anomaly::LateShipmentSpike { shop, .. }
            | Anomaly::Stockout { shop, .. }
            | Anomaly::RoasCollapse { shop, .. } => *shop,
        }
    }

    /// The Pacific day offset the anomaly starts on.
    pub fn day(&self) -> u32 {
        match self {
            Anomaly::LateShipmentSpike { day, .. }
            | Anomaly::Stockout { day, .. }
            | Anomaly::RoasCollapse { day, .. } => *day,
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 42,
            shops: 4,
            skus_per_shop: 8,
            start: None,
            days: 7,
            orders_per_shop_per_day: 120,
            rate: None,
            max_events: None,
            duration: None,
            duplicate_rate: 0.01,
            late_rate: 0.02,
            max_delay: Duration::from_secs(6 * 3600),
            anomalies: Vec::new(),
        }
    }
}

impl SimulatorConfig {
    /// The defaults plus one anomaly of each kind: a late-shipment spike on shop 0 (amazon)
    /// on day 2, a two-day stockout of SKU 0 of shop 1 (walmart) from day 3, and a ROAS
    /// collapse to 30% on shop 2 (shopify) from day 4.
    pub fn demo() -> Self {
        SimulatorConfig {
            anomalies: vec![
                Anomaly::LateShipmentSpike {
                    shop: 0,
                    day: 2,
                    late_share: default_late_share(),
                    hours: default_spike_hours(),
                },
                Anomaly::Stockout {
                    shop: 1,
                    day: 3,
                    sku: 0,
                    days: default_stockout_days(),
                },
                Anomaly::RoasCollapse {
                    shop: 2,
                    day: 4,
                    factor: default_roas_factor(),
                },
            ],
            ..SimulatorConfig::default()
        }
    }

    /// Parses the `[simulate]` section; errors name the key, e.g. `simulate.anomalies[0].kind`.
    /// Does not validate: call [`SimulatorConfig::validate`].
    pub fn from_value(value: serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(SECTION, value)
    }

    /// The event-time start: `start` if set, else `now - days` (whole seconds).
    pub fn resolve_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.start
            .unwrap_or_else(|| now.trunc_subsecs(0) - TimeDelta::days(i64::from(self.days)))
    }

    /// Checks every value before anything runs; errors quote key and value, e.g.
    /// ``bad config: `simulate.shops` = 0: must be at least 1``.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, problem: String| {
            Err(IngestError::config(
                format!("{SECTION}.{key}"),
                value,
                problem,
            ))
        };
        if self.shops == 0 || self.shops > 1000 {
            return bad("shops", &self.shops, "must be between 1 and 1000".into());
        }
        if self.skus_per_shop == 0 || self.skus_per_shop > 10_000 {
            return bad(
                "skus_per_shop",
                &self.skus_per_shop,
                "must be between 1 and 10000".into(),
            );
        }
        if self.days == 0 || self.days > 3660 {
            return bad("days", &self.days, "must be between 1 and 3660".into());
        }
        if let Some(start) = self.start
            && !(1970..=9000).contains(&start.year())
        {
            return bad(
                "start",
                &format!("{:?}", start.to_rfc3339()),
                "must be between the years 1970 and 9000".into(),
            );
        }
        let orders =
            u64::from(self.shops) * u64::from(self.orders_per_shop_per_day) * u64::from(self.days);
        if orders > MAX_ORDERS {
            return bad(
                "orders_per_shop_per_day",
                &self.orders_per_shop_per_day,
                format!(
                    "with simulate.shops = {} and simulate.days = {} that is {orders} orders; \
                     the generator holds the whole stream in memory and allows at most {MAX_ORDERS}",
                    self.shops, self.days
                ),
            );
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate >= 0.01)
        {
            return bad(
                "rate",
                &rate,
                "must be at least 0.01 events per second (leave it out for no limit)".into(),
            );
        }
        if self.max_events == Some(0) {
            return bad(
                "max_events",
                &0,
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if let Some(d) = self.duration
            && d.is_zero()
        {
            return bad(
                "duration",
                &"\"0s\"",
                "must be positive (leave it out for no limit)".into(),
            );
        }
        for (key, rate) in [
            ("duplicate_rate", self.duplicate_rate),
            ("late_rate", self.late_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(key, &rate, "must be a fraction between 0 and 1".into());
            }
        }
        if self.late_rate > 0.0 && self.max_delay < Duration::from_secs(1) {
            return bad(
                "max_delay",
                &format!(
                    "{:?}",
                    humantime::format_duration(self.max_delay).to_string()
                ),
                format!(
                    "must be at least 1s when simulate.late_rate = {} (set late_rate = 0 for no late events)",
                    self.late_rate
                ),
            );
        }
        for (i, anomaly) in self.anomalies.iter().enumerate() {
            self.validate_anomaly(i, anomaly)?;
        }
        Ok(())
    }

    fn validate_anomaly(&self, i: usize, anomaly: &Anomaly) -> Result<(), IngestError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, problem: String| {
            Err(IngestError::config(
                format!("{SECTION}.anomalies[{i}].{field}"),
                value,
                problem,
            ))
        };
        if anomaly.shop() >= self.shops {
            return bad(
                "shop",
                &anomaly.shop(),
                format!(
                    "no such shop: simulate.shops = {}, numbered from 0 to {}",
                    self.shops,
                    self.shops - 1
                ),
            );
        }
        if anomaly.day() >= self.days {
            return bad(
                "day",
                &anomaly.day(),
                format!(
                    "must fall within the span: simulate.days = {}, days numbered from 0 to {}",
                    self.days,
                    self.days - 1
                ),
            );
        }
        match anomaly {
            Anomaly::LateShipmentSpike {
                late_share, hours, ..
            } => {
                if !(*late_share > 0.0 && *late_share <= 1.0) {
                    return bad(
                        "late_share",
                        late_share,
                        "must be a fraction above 0 and at most 1".into(),
                    );
                }
                if *hours == 0 || *hours > 24 * self.days {
                    return bad(
                        "hours",
                        hours,
                        format!("must be between 1 and {} (the span)", 24 * self.days),
                    );
                }
            }
            Anomaly::Stockout { sku, days, .. } => {
                if *sku >= self.skus_per_shop {
                    return bad(
                        "sku",
                        sku,
                        format!(
                            "no such SKU: simulate.skus_per_shop = {}, numbered from 0 to {}",
                            self.skus_per_shop,
                            self.skus_per_shop - 1
                        ),
                    );
                }
                if *days == 0 || *days > self.days {
                    return bad(
                        "days",
                        days,
                        format!("must be between 1 and simulate.days = {}", self.days),
                    );
                }
            }
            Anomaly::RoasCollapse { factor, .. } => {
                if !(0.0..=1.0).contains(factor) {
                    return bad(
                        "factor",
                        factor,
                        "must be between 0 and 1 (the share of attributed sales kept)".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<SimulatorConfig, IngestError> {
        let cfg = SimulatorConfig::from_value(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(v: serde_json::Value) -> String {
        parse(v).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_section_is_the_defaults() {
        let cfg = parse(json!({})).unwrap();
        assert_eq!(cfg, SimulatorConfig::default());
        assert_eq!(cfg.seed, 42);
        assert_eq!(cfg.max_delay, Duration::from_secs(6 * 3600));
        SimulatorConfig::demo().validate().unwrap();
    }

    #[test]
    fn values_parse_from_config_text() {
        let cfg = parse(json!({
            "seed": 7, "start": "2026-11-01T00:00:00Z", "duration": "30s", "max_delay": "2h",
            "rate": 500.0,
            "anomalies": [
                {"kind": "late_shipment_spike", "shop": 0, "day": 2},
                {"kind": "stockout", "shop": 1, "day": 3, "sku": 4, "days": 1},
                {"kind": "roas_collapse", "shop": 2, "day": 4, "factor": 0.5}
            ]
        }))
        .unwrap();
        assert_eq!(cfg.duration, Some(Duration::from_secs(30)));
        assert_eq!(cfg.max_delay, Duration::from_secs(7200));
        assert_eq!(
            cfg.anomalies[0],
            Anomaly::LateShipmentSpike {
                shop: 0,
                day: 2,
                late_share: 0.3,
                hours: 24
            }
        );
        assert_eq!(cfg.anomalies[1].kind(), "stockout");
        let back: SimulatorConfig =
            serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn errors_quote_key_and_value() {
        assert_eq!(
            err(json!({"shops": 0})),
            "bad config: `simulate.shops` = 0: must be between 1 and 1000"
        );
        assert_eq!(
            err(json!({"late_rate": 1.5})),
            "bad config: `simulate.late_rate` = 1.5: must be a fraction between 0 and 1"
        );
        assert_eq!(
            err(json!({"max_events": 0})),
            "bad config: `simulate.max_events` = 0: must be at least 1 (leave it out for no limit)"
        );
        assert_eq!(
            err(json!({"anomalies": [{"kind": "stockout", "shop": 4, "day": 1, "sku": 0}]})),
            "bad config: `simulate.anomalies[0].shop` = 4: no such shop: simulate.shops = 4, numbered from 0 to 3"
        );
        assert_eq!(
            err(json!({"anomalies": [{"kind": "roas_collapse", "shop": 0, "day": 7}]})),
            "bad config: `simulate.anomalies[0].day` = 7: must fall within the span: simulate.days = 7, days numbered from 0 to 6"
        );
        let e = err(json!({"orders_per_shop_per_day": 10_000}));
        assert!(
            e.starts_with(
                "bad config: `simulate.orders_per_shop_per_day` = 10000: with simulate.shops = 4"
            ),
            "{e}"
        );
        let e = err(json!({"max_delay": "0s"}));
        assert!(
            e.starts_with(r#"bad config: `simulate.max_delay` = "0s": must be at least 1s"#),
            "{e}"
        );
    }

    #[test]
    fn parse_errors_name_the_key() {
        let e = err(json!({"shop": 3}));
        assert!(e.starts_with("bad config: `simulate"), "{e}");
        assert!(e.contains("unknown field `shop`"), "{e}");
        let e = err(json!({"anomalies": [{"kind": "flood", "shop": 0, "day": 0}]}));
        assert!(e.contains("`simulate.anomalies[0]"), "{e}");
        assert!(e.contains("unknown variant `flood`"), "{e}");
        let e = err(
            json!({"anomalies": [{"kind": "stockout", "shop": 0, "day": 0, "sku": 0, "factor": 2}]}),
        );
        assert!(e.contains("unknown field `factor`"), "{e}");
        let e = err(json!({"duration": "soon"}));
        assert!(e.contains("`simulate.duration` = \"soon\""), "{e}");
        let e = err(json!({"start": "yesterday"}));
        assert!(e.contains("`simulate.start` = \"yesterday\""), "{e}");
    }

    #[test]
    fn the_demo_fixture_is_demo() {
        let text = include_str!("../../../fixtures/simulate-demo.toml");
        let value: serde_json::Value = toml::from_str(text).unwrap();
        assert_eq!(parse(value).unwrap(), SimulatorConfig::demo());
    }

    #[test]
    fn start_defaults_to_now_minus_days() {
        let now: DateTime<Utc> = "2026-11-08T12:34:56.789Z".parse().unwrap();
        let cfg = SimulatorConfig::default();
        assert_eq!(
            cfg.resolve_start(now),
            "2026-11-01T12:34:56Z".parse::<DateTime<Utc>>().unwrap()
        );
        let fixed: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
        let cfg = SimulatorConfig {
            start: Some(fixed),
            ..cfg
        };
        assert_eq!(cfg.resolve_start(now), fixed);
    }
}
