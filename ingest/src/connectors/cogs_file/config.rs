//! `[[connectors.cogs_file]]`: which file, whose costs, how often it is looked at.

use std::path::PathBuf;
use std::time::Duration;

use kpiflow_schemas::{Channel, SourceTz};
use serde::Deserialize;

use super::SECTION;
use crate::IngestError;

/// The shortest `poll_interval` other than `0s` (read once).
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One table: one cost file of one shop.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CogsFileConfig {
    /// The cost file: `*.csv` (a header row, then one cost per row) or `*.toml` (`[[cost]]`
    /// tables); the extension decides, case-insensitively.
    pub path: PathBuf,
    /// The kpiflow shop id events carry (the Kafka key).
    pub shop: String,
    /// The channel the shop sells through.
    pub channel: Channel,
    /// Marketplace id on events: the one the shop's order connector puts on its orders, since
    /// a cost prices the units of its own (shop, channel, marketplace) scope only. Default by
    /// channel: `ATVPDKIKX0DER` (Amazon US) for `amazon`, `US` otherwise.
    #[serde(default)]
    pub marketplace: Option<String>,
    /// ISO 4217 currency of rows without a `currency` value. Default `USD`.
    #[serde(default = "crate::pull::settings::defaults::usd")]
    pub currency: String,
    /// The shop's IANA time zone, in which `effective_from` is a business day. Default
    /// `America/Los_Angeles`.
    #[serde(default = "default_time_zone")]
    pub time_zone: SourceTz,
    /// How often the file's modification time and size are checked; the file is read again
    /// when either changed. `0s` reads the file once, publishes it and stops. Otherwise at
    /// least 100ms. Default 30 s.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_time_zone() -> SourceTz {
    SourceTz::US_PACIFIC
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}

/// How the file is written, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.csv`: a header row naming the columns.
    Csv,
    /// `.toml`: `[[cost]]` tables.
    Toml,
}

impl CogsFileConfig {
    /// Parses the section (without validating).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(SECTION, value.clone())
    }

    /// The marketplace id, defaulted by channel.
    pub fn marketplace(&self) -> String {
        match (&self.marketplace, self.channel) {
            (Some(m), _) => m.clone(),
            (None, Channel::Amazon) => crate::connectors::amazon_sp_orders::US_MARKETPLACE.into(),
            (None, _) => "US".into(),
        }
    }

    /// The file's format, from its extension (`None`: neither `.csv` nor `.toml`).
    pub fn format(&self) -> Option<Format> {
        let ext = self.path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("csv") {
            Some(Format::Csv)
        } else if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else {
            None
        }
    }

    /// `true` when the file is read once (`poll_interval = "0s"`).
    pub fn once(&self) -> bool {
        self.poll_interval.is_zero()
    }

    /// Checks every value before any I/O; errors name the key and quote the value.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad =
            |k: &str, v: String, p: &str| Err(IngestError::config(format!("{SECTION}.{k}"), v, p));
        let path = format!("{:?}", self.path.display().to_string());
        if self.path.as_os_str().is_empty() {
            return bad("path", path, "must name a file");
        }
        if self.format().is_none() {
            return bad(
                "path",
                path,
                "the file must end in .csv or .toml (its extension decides how it is read)",
            );
        }
        for (key, value) in [("shop", &self.shop), ("marketplace", &self.marketplace())] {
            if value.trim().is_empty() {
                return bad(key, format!("{value:?}"), "must not be empty");
            }
        }
        if !is_currency(&self.currency) {
            return bad(
                "currency",
                format!("{:?}", self.currency),
                "expected an ISO 4217 code of three upper-case letters such as \"USD\"",
            );
        }
        if !self.once() && self.poll_interval < MIN_POLL_INTERVAL {
            return bad(
                "poll_interval",
                format!("\"{}\"", humantime::format_duration(self.poll_interval)),
                "must be at least 100ms, or 0s to read the file once",
            );
        }
        Ok(())
    }
}

/// Three upper-case ASCII letters, as the schemas check a currency.
pub(super) fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<CogsFileConfig, IngestError> {
        CogsFileConfig::from_value(&v)
    }

    fn minimal() -> serde_json::Value {
        json!({"path": "/srv/costs/shop-001.csv", "shop": "shop-001", "channel": "amazon"})
    }

    fn error(v: serde_json::Value) -> String {
        match parse(v) {
            Ok(c) => c.validate().expect_err("invalid").to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(minimal()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.marketplace(), "ATVPDKIKX0DER");
        assert_eq!(c.currency, "USD");
        assert_eq!(c.time_zone, SourceTz::US_PACIFIC);
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.format(), Some(Format::Csv));
        assert!(!c.once());
        let mut v = minimal();
        v["channel"] = "walmart".into();
        v["path"] = "/srv/costs/COSTS.TOML".into();
        v["poll_interval"] = "0s".into();
        let c = parse(v).unwrap();
        c.validate().unwrap();
        assert_eq!(c.marketplace(), "US");
        assert_eq!(c.format(), Some(Format::Toml));
        assert!(c.once());
    }

    #[test]
    fn errors_name_the_key_and_quote_the_value() {
        let with = |k: &str, v: serde_json::Value| {
            let mut t = minimal();
            t[k] = v;
            error(t)
        };
        assert_eq!(
            with("path", "/srv/costs.xlsx".into()),
            "bad config: `connectors.cogs_file.path` = \"/srv/costs.xlsx\": the file must end in .csv or .toml (its extension decides how it is read)"
        );
        assert_eq!(
            with("path", "".into()),
            "bad config: `connectors.cogs_file.path` = \"\": must name a file"
        );
        assert_eq!(
            with("currency", "usd".into()),
            "bad config: `connectors.cogs_file.currency` = \"usd\": expected an ISO 4217 code of three upper-case letters such as \"USD\""
        );
        assert_eq!(
            with("shop", " ".into()),
            "bad config: `connectors.cogs_file.shop` = \" \": must not be empty"
        );
        assert_eq!(
            with("marketplace", "".into()),
            "bad config: `connectors.cogs_file.marketplace` = \"\": must not be empty"
        );
        assert_eq!(
            with("poll_interval", "50ms".into()),
            "bad config: `connectors.cogs_file.poll_interval` = \"50ms\": must be at least 100ms, or 0s to read the file once"
        );
        let tz = with("time_zone", "Mars/Olympus".into());
        assert!(
            tz.starts_with("bad config: `connectors.cogs_file.time_zone` = \"Mars/Olympus\""),
            "{tz}"
        );
        let ch = with("channel", "ebay".into());
        assert!(
            ch.starts_with("bad config: `connectors.cogs_file.channel` = \"ebay\""),
            "{ch}"
        );
        let mut t = minimal();
        t["once"] = true.into();
        let unknown = error(t);
        assert!(
            unknown.starts_with(
                "bad config: `connectors.cogs_file.once` = (not read): unknown field `once`"
            ),
            "{unknown}"
        );
        let mut t = minimal();
        t.as_object_mut().unwrap().remove("shop");
        let missing = error(t);
        assert!(missing.contains("missing field `shop`"), "{missing}");
    }
}
