//! The `[sink]` section of the config file: where files go and when they are cut.

use std::path::PathBuf;
use std::time::Duration;

use kpiflow_core::storage::{Location, StoreOptions};
use serde::Deserialize;

use crate::SinkError;

/// Sink settings (`[sink]` in the config file). Every field is optional.
///
/// ```toml
/// [sink]
/// dir = "kpiflow-data"
/// group_id = "kpiflow-sink"
/// roll_rows = 50000
/// roll_interval = "1m"
/// compression = "zstd"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Root of the Parquet tables (`<dir>/kpi_values/`, `<dir>/breaches/`, `<dir>/events/`): a
    /// local folder (created if missing) or `s3://bucket/prefix` in S3-compatible object
    /// storage (see `object_store`). Default: `"kpiflow-data"`.
    #[serde(default = "SinkConfig::default_dir")]
    pub dir: Location,
    /// `[sink.object_store]`: S3 settings for an `s3://` `dir` (`endpoint`, `region`,
    /// `allow_http`, …; see `kpiflow_core::storage`). Credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from this file. Default: empty.
    #[serde(default)]
    pub object_store: StoreOptions,
    /// Kafka consumer group; two sinks with the same group share the partitions, two with
    /// different groups each write every row. Default: `"kpiflow-sink"`.
    #[serde(default = "SinkConfig::default_group_id")]
    pub group_id: String,
    /// Records read (all topics together) before a flush cuts files and commits offsets;
    /// bounds the sink's memory. Default: `50000`.
    #[serde(default = "SinkConfig::default_roll_rows")]
    pub roll_rows: usize,
    /// The longest a record waits in the buffer before it is written and its offset committed,
    /// e.g. `"500ms"`, `"10s"`, `"1m"`: the freshness of the Parquet tables, traded against
    /// file count (one file per table per touched date partition per flush; live KPIs are on
    /// `/metrics` and the `kpi.updates` topic at once). Default: `"1m"`.
    #[serde(
        default = "SinkConfig::default_roll_interval",
        with = "humantime_serde"
    )]
    pub roll_interval: Duration,
    /// Parquet compression codec: `"zstd"`, `"snappy"` or `"none"`. Default: `"zstd"`.
    #[serde(default)]
    pub compression: Compression,
    /// Also archive the canonical events (the `events` table, input of `kpiflow reconcile`):
    /// the sink then consumes the event topics too. Default: `false`.
    #[serde(default)]
    pub events_archive: bool,
    /// `[sink.prometheus]`: which KPI series `/metrics` exports.
    #[serde(default)]
    pub prometheus: PrometheusConfig,
    /// `[sink.guard]`: the automation guard (`GET /v1/guard`), off by default.
    #[serde(default)]
    pub guard: crate::guard::GuardConfig,
    /// On SIGTERM / Ctrl-C, `kpiflow sink` writes what it buffered and commits; it exits
    /// (code 3) this long after the signal whatever it is doing (waiting for an unreachable
    /// broker or bucket), as after a crash: the rows since the last commit are read again at
    /// the next start. Between 1s and 10m. Default: `"30s"`.
    #[serde(
        default = "SinkConfig::default_shutdown_timeout",
        with = "humantime_serde"
    )]
    pub shutdown_timeout: Duration,
}

/// Checks `<section>.shutdown_timeout`: at least 1 s (a stage needs a moment to write what it
/// holds) and at most 10 min (an orchestrator's grace period is shorter).
pub(crate) fn validate_shutdown_timeout(section: &str, timeout: Duration) -> Result<(), SinkError> {
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(600) {
        return Err(SinkError::Config {
            key: format!("{section}.shutdown_timeout"),
            value: format!("\"{}\"", humantime::format_duration(timeout)),
            problem: "must be between 1s and 10m".into(),
        });
    }
    Ok(())
}

/// The cardinality guard of the KPI gauges (`[sink.prometheus]`).
///
/// Every exported series costs Prometheus memory for as long as it is retained; SKU-level
/// KPIs multiply the series by the catalogue size, so they stay off unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Export KPI values grouped by SKU (label `sku`). Default: `false`.
    #[serde(default)]
    pub sku_labels: bool,
    /// Export KPI values grouped by ad campaign (label `campaign`). Default: `false`.
    #[serde(default)]
    pub campaign_labels: bool,
    /// Most KPI series exported; updates of further series are cut and counted in
    /// `kpiflow_kpi_series_cut_total{reason="limit"}`. Default: `10000`.
    #[serde(default = "PrometheusConfig::default_max_series")]
    pub max_series: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            sku_labels: false,
            campaign_labels: false,
            max_series: Self::default_max_series(),
        }
    }
}

impl PrometheusConfig {
    fn default_max_series() -> usize {
        10_000
    }
}

/// Parquet page compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (level 3): small files, fast enough for a sink.
    #[default]
    Zstd,
    /// Snappy: faster, larger files.
    Snappy,
    /// No compression.
    None,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            dir: Self::default_dir(),
            group_id: Self::default_group_id(),
            roll_rows: Self::default_roll_rows(),
            roll_interval: Self::default_roll_interval(),
            compression: Compression::default(),
            events_archive: false,
            prometheus: PrometheusConfig::default(),
            object_store: StoreOptions::new(),
            shutdown_timeout: Self::default_shutdown_timeout(),
            guard: crate::guard::GuardConfig::default(),
        }
    }
}

impl SinkConfig {
    /// Rows above which a buffer would risk the sink's memory (about 1 KiB per row in memory).
    pub const MAX_ROLL_ROWS: usize = 10_000_000;
    /// Intervals below this would write a file every few records.
    pub const MIN_ROLL_INTERVAL: Duration = Duration::from_millis(10);
    /// Intervals above this hold offsets uncommitted for so long that a restart replays hours.
    pub const MAX_ROLL_INTERVAL: Duration = Duration::from_secs(3600);

    fn default_dir() -> Location {
        Location::Local(PathBuf::from("kpiflow-data"))
    }
    fn default_group_id() -> String {
        "kpiflow-sink".into()
    }
    fn default_roll_rows() -> usize {
        50_000
    }
    fn default_roll_interval() -> Duration {
        Duration::from_secs(60)
    }
    fn default_shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// Checks every value before any I/O; errors quote key and value,
    /// e.g. `bad config: sink.roll_rows = 0: must be at least 1`.
    pub fn validate(&self) -> Result<(), SinkError> {
        let bad = |key: &str, value: String, problem: String| SinkError::Config {
            key: format!("sink.{key}"),
            value,
            problem,
        };
        self.dir
            .validate_options("sink.object_store", &self.object_store)?;
        if self.group_id.trim().is_empty() {
            return Err(bad(
                "group_id",
                format!("{:?}", self.group_id),
                "must not be empty".into(),
            ));
        }
        if self.roll_rows < 1 {
            return Err(bad(
                "roll_rows",
                self.roll_rows.to_string(),
                "must be at least 1".into(),
            ));
        }
        if self.roll_rows > Self::MAX_ROLL_ROWS {
            return Err(bad(
                "roll_rows",
                self.roll_rows.to_string(),
                format!(
                    "must be at most {} (the buffer lives in memory)",
                    Self::MAX_ROLL_ROWS
                ),
            ));
        }
        validate_shutdown_timeout("sink", self.shutdown_timeout)?;
        self.guard.validate()?;
        let interval = || format!("\"{}\"", humantime::format_duration(self.roll_interval));
        if self.roll_interval < Self::MIN_ROLL_INTERVAL {
            return Err(bad(
                "roll_interval",
                interval(),
                format!(
                    "must be at least {} (shorter intervals write a file every few records)",
                    humantime::format_duration(Self::MIN_ROLL_INTERVAL)
                ),
            ));
        }
        if self.roll_interval > Self::MAX_ROLL_INTERVAL {
            return Err(bad(
                "roll_interval",
                interval(),
                format!(
                    "must be at most {} (uncommitted offsets are replayed after a restart)",
                    humantime::format_duration(Self::MAX_ROLL_INTERVAL)
                ),
            ));
        }
        if self.prometheus.max_series < 1 || self.prometheus.max_series > 1_000_000 {
            return Err(bad(
                "prometheus.max_series",
                self.prometheus.max_series.to_string(),
                "must be between 1 and 1000000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SinkConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let c = cfg("");
        assert_eq!(c, SinkConfig::default());
        assert_eq!(c.dir, Location::Local(PathBuf::from("kpiflow-data")));
        assert_eq!(c.group_id, "kpiflow-sink");
        assert_eq!(c.roll_rows, 50_000);
        assert_eq!(c.roll_interval, Duration::from_secs(60));
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        c.validate().unwrap();
    }

    #[test]
    fn errors_quote_key_and_value() {
        let msg = |text: &str| cfg(text).validate().unwrap_err().to_string();
        assert_eq!(
            msg("roll_rows = 0"),
            "bad config: sink.roll_rows = 0: must be at least 1"
        );
        assert_eq!(
            msg("roll_interval = \"1ms\""),
            "bad config: sink.roll_interval = \"1ms\": must be at least 10ms \
             (shorter intervals write a file every few records)"
        );
        assert!(
            msg("roll_interval = \"2h\"").starts_with("bad config: sink.roll_interval = \"2h\"")
        );
        assert_eq!(
            msg("group_id = \" \""),
            "bad config: sink.group_id = \" \": must not be empty"
        );
        assert_eq!(
            msg("shutdown_timeout = \"500ms\""),
            "bad config: sink.shutdown_timeout = \"500ms\": must be between 1s and 10m"
        );
        assert!(
            msg("dir = \"kpiflow-data\"\n[object_store]\nregion = \"eu-west-1\"")
                .starts_with("bad config: `sink.object_store.region` = \"eu-west-1\"")
        );
        assert!(
            msg("dir = \"s3://b/p\"\n[object_store]\nendpont = \"http://x\"")
                .starts_with("bad config: `sink.object_store.endpont` = \"http://x\"")
        );
        assert_eq!(
            msg("[prometheus]\nmax_series = 0"),
            "bad config: sink.prometheus.max_series = 0: must be between 1 and 1000000"
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = toml::from_str::<SinkConfig>("roll_row = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `roll_row`"), "{err}");
        let err = toml::from_str::<SinkConfig>("roll_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("roll_interval"), "{err}");
        let err = toml::from_str::<SinkConfig>("compression = \"lz4\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zstd"), "{err}");
        for (text, problem) in [
            ("dir = \"\"", "must not be empty"),
            ("dir = \"gs://b\"", "gs:// is not supported"),
        ] {
            let err = toml::from_str::<SinkConfig>(text).unwrap_err().to_string();
            assert!(err.contains("dir") && err.contains(problem), "{err}");
        }
    }
}
