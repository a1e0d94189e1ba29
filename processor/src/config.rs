//! `[processor]` configuration: time zone, windows, lateness, rules.

use std::time::Duration;

use chrono::{Datelike, Offset, TimeZone, Utc};
use serde::Deserialize;

use crate::ProcessorError;
use crate::rule::threshold::ThresholdRuleConfig;

/// How late each kind of fact may arrive (against the watermark) and still be counted.
/// Later facts are not dropped silently: they go to the dead-letter topic as `late`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lateness {
    /// Order lifecycle events (placed, paid, shipped, cancelled, …). Default `3days`.
    #[serde(default = "Lateness::orders", with = "humantime_serde")]
    pub orders: Duration,
    /// Ad performance rows, which platforms restate for about two weeks. Default `14days`.
    #[serde(default = "Lateness::ads", with = "humantime_serde")]
    pub ads: Duration,
    /// Order defects (feedback, claims, chargebacks) that arrive weeks later. Default `60days`.
    #[serde(default = "Lateness::defects", with = "humantime_serde")]
    pub defects: Duration,
    /// Inventory snapshots and shipment milestones. Default `3days`.
    #[serde(default = "Lateness::orders", with = "humantime_serde")]
    pub logistics: Duration,
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
    /// IANA zone of business days. Default `America/Los_Angeles` (Amazon US's day). Must have
    /// whole-hour UTC offsets, because aggregates are kept in one-hour buckets.
    #[serde(default = "ProcessorConfig::time_zone")]
    pub time_zone: String,
    /// Lengths, in hours, of the rolling windows to publish (each slides by one hour).
    /// Default `[24]`.
    #[serde(default = "ProcessorConfig::rolling_hours")]
    pub rolling_hours: Vec<u32>,
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
    /// How late facts may be, per kind.
    #[serde(default)]
    pub lateness: Lateness,
    /// How often aggregates are published and input offsets committed. Default `1s`.
    #[serde(default = "ProcessorConfig::flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most records read between two flushes. Default `20000`.
    #[serde(default = "ProcessorConfig::max_batch")]
    pub max_batch: usize,
    /// The one currency money KPIs are kept in; events in another currency are dead-lettered
    /// (`currency`) until FX conversion exists. Default `USD`.
    #[serde(default = "ProcessorConfig::currency")]
    pub currency: String,
    /// Breach rules.
    #[serde(default)]
    pub rules: Vec<ThresholdRuleConfig>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            group_id: Self::group_id(),
            time_zone: Self::time_zone(),
            rolling_hours: Self::rolling_hours(),
            out_of_orderness: Self::out_of_orderness(),
            idle_timeout: Self::idle_timeout(),
            lateness: Lateness::default(),
            flush_interval: Self::flush_interval(),
            max_batch: Self::max_batch(),
            currency: Self::currency(),
            rules: Vec::new(),
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
    fn rolling_hours() -> Vec<u32> {
        vec![24]
    }
    fn out_of_orderness() -> Duration {
        Duration::from_secs(300)
    }
    fn idle_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn flush_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn max_batch() -> usize {
        20_000
    }
    fn currency() -> String {
        "USD".into()
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
        let tz: chrono_tz::Tz = self.time_zone.parse().map_err(|_| {
            ProcessorError::config(
                "time_zone",
                &self.time_zone,
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
                    "time_zone",
                    &self.time_zone,
                    format!(
                        "UTC offset {}h{:02} is not a whole hour; business days are built from one-hour buckets",
                        offset / 3600,
                        (offset % 3600).abs() / 60
                    ),
                ));
            }
        }
        if self.rolling_hours.is_empty() {
            return Err(ProcessorError::config(
                "rolling_hours",
                &self.rolling_hours,
                "list at least one window length in hours, e.g. [24]",
            ));
        }
        if let Some(h) = self
            .rolling_hours
            .iter()
            .find(|h| **h == 0 || **h > 24 * 90)
        {
            return Err(ProcessorError::config(
                "rolling_hours",
                &self.rolling_hours,
                format!("{h} is not between 1 and 2160 hours (90 days)"),
            ));
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
        let windows = self.window_names();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("rules[{i}]"), &windows)?;
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

    /// Names of the configured windows, e.g. `business_day`, `rolling_24h`.
    pub fn window_names(&self) -> Vec<String> {
        crate::window::specs(self)
            .iter()
            .map(|w| w.name().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        ProcessorConfig::default().validate().unwrap();
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
            rolling_hours: vec![24, 0],
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("0 is not between")
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
