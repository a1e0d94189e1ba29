//! `pull`: the settings every pull connector shares (where, how often, how far back, how hard
//! to retry), with per-connector defaults.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::http::HttpOptions;
use super::rate_limit::RateLimit;
use super::retry::RetryPolicy;
use crate::IngestError;

/// The `pull` table of a connector section; an omitted key takes the connector's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullSettings {
    /// The platform's base URL (production, sandbox, or a test server).
    pub base_url: Option<String>,
    /// Time between two syncs, e.g. `"5m"` ("real time") or `"24h"` (daily).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Each sync starts this long before the stored high-water mark, to catch records the
    /// platform updated late (ad platforms: the restatement window, e.g. `"14days"`).
    #[serde(default, with = "humantime_serde")]
    pub overlap: Option<Duration>,
    /// How far back the very first sync (no stored cursor yet) reaches.
    #[serde(default, with = "humantime_serde")]
    pub initial_lookback: Option<Duration>,
    /// Longest time range one sync asks for; a longer gap (after downtime, or a backfill) is
    /// pulled in steps of this size, saving the cursor after each.
    #[serde(default, with = "humantime_serde")]
    pub max_window: Option<Duration>,
    /// Folder of the cursor files. Default `"kpiflow-state/cursors"`.
    pub cursor_dir: Option<PathBuf>,
    /// Time limit of one HTTP attempt. Default `"30s"`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Client-side request budget, e.g. `{ rate = 0.0167, burst = 20 }`.
    pub rate_limit: Option<RateLimit>,
    /// Retries of failed requests.
    pub retry: Option<RetryPolicy>,
}

/// A connector's defaults for [`PullSettings`].
#[derive(Debug, Clone, Copy)]
pub struct PullDefaults {
    /// Production base URL.
    pub base_url: &'static str,
    /// Sync interval.
    pub interval: Duration,
    /// Overlap of consecutive syncs.
    pub overlap: Duration,
    /// Reach of the first sync.
    pub initial_lookback: Duration,
    /// Longest range of one sync.
    pub max_window: Duration,
    /// The platform's documented request budget.
    pub rate_limit: Option<RateLimit>,
}

/// [`PullSettings`] with every default applied and checked.
#[derive(Debug, Clone)]
pub struct Pull {
    /// Time between two syncs.
    pub interval: Duration,
    /// Overlap of consecutive syncs.
    pub overlap: Duration,
    /// Reach of the first sync.
    pub initial_lookback: Duration,
    /// Longest range of one sync.
    pub max_window: Duration,
    /// Folder of the cursor files.
    pub cursor_dir: PathBuf,
    /// How to reach the platform.
    pub http: HttpOptions,
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

impl PullSettings {
    /// Applies `defaults` and checks every value; `section` (e.g.
    /// `connectors.amazon_sp_orders[0]`) prefixes the keys named in errors.
    pub fn resolve(&self, section: &str, defaults: &PullDefaults) -> Result<Pull, IngestError> {
        let key = |k: &str| format!("{section}.pull.{k}");
        let dur = |d: Duration| format!("{:?}", humantime::format_duration(d).to_string());
        let base = self.base_url.as_deref().unwrap_or(defaults.base_url);
        let mut base_url = Url::parse(base).map_err(|e| {
            IngestError::config(
                key("base_url"),
                format!("{base:?}"),
                format!("not a URL: {e}"),
            )
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(IngestError::config(
                key("base_url"),
                format!("{base:?}"),
                "must be an http:// or https:// URL",
            ));
        }
        // Paths are joined to the base: without a trailing slash its last segment would be lost.
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        let pull = Pull {
            interval: self.interval.unwrap_or(defaults.interval),
            overlap: self.overlap.unwrap_or(defaults.overlap),
            initial_lookback: self.initial_lookback.unwrap_or(defaults.initial_lookback),
            max_window: self.max_window.unwrap_or(defaults.max_window),
            cursor_dir: self
                .cursor_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("kpiflow-state/cursors")),
            http: HttpOptions {
                base_url,
                timeout: self.timeout.unwrap_or(Duration::from_secs(30)),
                rate_limit: self.rate_limit.or(defaults.rate_limit),
                retry: self.retry.clone().unwrap_or_default(),
            },
        };
        let checks: [(&str, Duration, Duration, Duration); 5] = [
            (
                "interval",
                pull.interval,
                Duration::from_secs(1),
                Duration::from_secs(7 * DAY),
            ),
            (
                "overlap",
                pull.overlap,
                Duration::ZERO,
                Duration::from_secs(90 * DAY),
            ),
            (
                "initial_lookback",
                pull.initial_lookback,
                Duration::ZERO,
                Duration::from_secs(3 * 365 * DAY),
            ),
            (
                "max_window",
                pull.max_window,
                Duration::from_secs(60),
                Duration::from_secs(365 * DAY),
            ),
            (
                "timeout",
                pull.http.timeout,
                Duration::from_millis(100),
                Duration::from_secs(HOUR),
            ),
        ];
        for (k, v, min, max) in checks {
            if v < min || v > max {
                return Err(IngestError::config(
                    key(k),
                    dur(v),
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if let Some(l) = &pull.http.rate_limit
            && let Some(problem) = l.problem()
        {
            return Err(IngestError::config(
                key("rate_limit"),
                format!("{{ rate = {}, burst = {} }}", l.rate, l.burst),
                problem,
            ));
        }
        if let Some((k, v, problem)) = pull.http.retry.problem() {
            return Err(IngestError::config(key(&format!("retry.{k}")), v, problem));
        }
        Ok(pull)
    }
}

/// Serde defaults shared by connector sections.
pub mod defaults {
    /// `"US"`.
    pub fn us() -> String {
        "US".into()
    }
    /// `"ATVPDKIKX0DER"` (Amazon US).
    pub fn amazon_us() -> String {
        "ATVPDKIKX0DER".into()
    }
    /// `"America/Los_Angeles"`.
    pub fn us_pacific() -> String {
        "America/Los_Angeles".into()
    }
    /// `"USD"`.
    pub fn usd() -> String {
        "USD".into()
    }
}

/// `value` as an IANA time zone; `key` names it in the error.
pub fn time_zone(key: &str, value: &str) -> Result<chrono_tz::Tz, IngestError> {
    value.parse().map_err(|_| {
        IngestError::config(
            key,
            format!("{value:?}"),
            "expected an IANA time zone such as \"America/Los_Angeles\"",
        )
    })
}

/// Refuses an empty (or blank) `value`; `key` names it in the error.
pub fn non_empty(key: &str, value: &str) -> Result<(), IngestError> {
    if value.trim().is_empty() {
        return Err(IngestError::config(
            key,
            format!("{value:?}"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// Refuses a `value` that is not all ASCII digits (an account id); `problem` says what is
/// expected, `key` names it in the error.
pub fn digits(key: &str, value: &str, problem: &str) -> Result<(), IngestError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IngestError::config(key, format!("{value:?}"), problem));
    }
    Ok(())
}

/// Refuses a `value` outside `range` (a page size); `key` names it in the error.
pub fn within(key: &str, value: u32, range: RangeInclusive<u32>) -> Result<(), IngestError> {
    if !range.contains(&value) {
        return Err(IngestError::config(
            key,
            value,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: PullDefaults = PullDefaults {
        base_url: "https://api.example.com/v1",
        interval: Duration::from_secs(300),
        overlap: Duration::from_secs(600),
        initial_lookback: Duration::from_secs(DAY),
        max_window: Duration::from_secs(DAY),
        rate_limit: Some(RateLimit {
            rate: 0.0167,
            burst: 20,
        }),
    };

    #[test]
    fn defaults_fill_in_and_the_base_keeps_its_path() {
        let p = PullSettings::default().resolve("c", &D).unwrap();
        assert_eq!(p.interval, Duration::from_secs(300));
        assert_eq!(p.http.base_url.as_str(), "https://api.example.com/v1/");
        assert_eq!(
            p.http.base_url.join("orders").unwrap().as_str(),
            "https://api.example.com/v1/orders"
        );
        assert_eq!(p.http.rate_limit.unwrap().burst, 20);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let s = PullSettings {
            interval: Some(Duration::ZERO),
            ..PullSettings::default()
        };
        assert_eq!(
            s.resolve("connectors.walmart_orders[0]", &D)
                .unwrap_err()
                .to_string(),
            "bad config: `connectors.walmart_orders[0].pull.interval` = \"0s\": must be between 1s and 7days"
        );
        let s = PullSettings {
            base_url: Some("ftp://x".into()),
            ..PullSettings::default()
        };
        assert!(
            s.resolve("c", &D)
                .unwrap_err()
                .to_string()
                .contains("`c.pull.base_url` = \"ftp://x\"")
        );
        let s = PullSettings {
            rate_limit: Some(RateLimit {
                rate: -1.0,
                burst: 2,
            }),
            ..PullSettings::default()
        };
        assert!(
            s.resolve("c", &D)
                .unwrap_err()
                .to_string()
                .contains("`c.pull.rate_limit`")
        );
    }
}
