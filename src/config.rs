//! The configuration file: one TOML document with a section per role.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use kpiflow_core::KafkaConfig;
use kpiflow_ingest::connectors::simulator::SimulatorConfig;
use kpiflow_processor::ProcessorConfig;
use kpiflow_sink::SinkConfig;
use serde::Deserialize;

/// The documented example configuration, also the default when no file is given.
pub(crate) const EXAMPLE: &str = include_str!("../deploy/config/kpiflow.toml");

/// Where the HTTP endpoints listen (`[metrics]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// Address of /metrics, /healthz and /readyz. Default `127.0.0.1:9464`.
    #[serde(default = "MetricsConfig::listen")]
    pub listen: SocketAddr,
}

impl MetricsConfig {
    fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Self::listen(),
        }
    }
}

/// The whole file; every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `[kafka]`: brokers, topic prefix, client pass-through.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// `[metrics]`: HTTP endpoints.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[simulate]`: the simulator connector.
    #[serde(default)]
    pub simulate: SimulatorConfig,
    /// `[processor]`: windows, lateness, rules.
    #[serde(default)]
    pub processor: ProcessorConfig,
    /// `[sink]`: Parquet output.
    #[serde(default)]
    pub sink: SinkConfig,
    /// `[connectors.<name>]` or `[[connectors.<name>]]`: platform connectors, each table
    /// handed to the connector registry (`kpiflow ingest <name>`).
    #[serde(default)]
    pub connectors: BTreeMap<String, toml::Value>,
}

/// One table of `[connectors.<name>]`.
pub(crate) struct ConnectorTable {
    /// Its key in errors, e.g. `connectors.shopify_orders[1]`.
    pub key: String,
    /// Whether it runs (`enabled`, default true).
    pub enabled: bool,
    /// The table without `enabled`, for the registry.
    pub section: serde_json::Value,
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).with_context(|| format!("reading {origin}"))?;
        cfg.validate()
            .with_context(|| format!("checking {origin}"))?;
        Ok(cfg)
    }

    /// Loads `path`, or the embedded example when none is given.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                Config::parse(&text, &p.display().to_string())
            }
            None => Config::parse(
                EXAMPLE,
                "the embedded default config (deploy/config/kpiflow.toml)",
            ),
        }
    }

    /// Checks every section before any I/O. Connector tables are only checked for a known
    /// name and shape here; [`Config::check_connectors`] builds them.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        self.simulate.validate()?;
        self.processor.validate()?;
        self.sink.validate()?;
        for name in self.connectors.keys() {
            self.connector_tables(name)?;
        }
        Ok(())
    }

    /// The tables of `[connectors.<name>]` (one, or one per entry of an array of tables).
    pub(crate) fn connector_tables(&self, name: &str) -> anyhow::Result<Vec<ConnectorTable>> {
        let known = || {
            kpiflow_ingest::connector::REGISTRY
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !kpiflow_ingest::connector::REGISTRY
            .iter()
            .any(|s| s.name == name)
        {
            anyhow::bail!(
                "bad config: `connectors.{name}`: no such connector; known connectors: {}",
                known()
            );
        }
        let Some(value) = self.connectors.get(name) else {
            return Ok(Vec::new());
        };
        let tables: Vec<(String, &toml::Value)> = match value {
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("connectors.{name}[{i}]"), v))
                .collect(),
            v => vec![(format!("connectors.{name}"), v)],
        };
        tables
            .into_iter()
            .map(|(key, v)| {
                let Some(table) = v.as_table() else {
                    anyhow::bail!("bad config: `{key}`: expected a table");
                };
                let mut table = table.clone();
                let enabled = match table.remove("enabled") {
                    None => true,
                    Some(toml::Value::Boolean(b)) => b,
                    Some(other) => {
                        anyhow::bail!(
                            "bad config: `{key}.enabled` = {other}: expected true or false"
                        )
                    }
                };
                let section =
                    serde_json::to_value(&table).with_context(|| format!("reading `{key}`"))?;
                Ok(ConnectorTable {
                    key,
                    enabled,
                    section,
                })
            })
            .collect()
    }

    /// Builds every connector table, enabled or not, so their values (and nothing else) are
    /// checked; building reads no secrets and opens nothing.
    pub(crate) fn check_connectors(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for name in self.connectors.keys() {
            for t in self.connector_tables(name)? {
                kpiflow_ingest::connector::build(name, t.section)
                    .with_context(|| format!("checking `{}`", t.key))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_and_is_valid() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.processor.rules.len(), 3);
        assert_eq!(cfg.simulate.anomalies.len(), 3);
        assert_eq!(cfg.kafka.topic_prefix, "kpiflow");
    }

    #[test]
    fn the_example_connectors_are_documented_disabled_and_build() {
        let cfg = Config::load(None).unwrap();
        for name in ["shopify_webhook", "shopify_orders", "threepl"] {
            let tables = cfg.connector_tables(name).unwrap();
            assert!(!tables.is_empty(), "{name} is documented in the example");
            assert!(
                tables.iter().all(|t| !t.enabled),
                "{name} is disabled by default"
            );
        }
        assert!(cfg.check_connectors().unwrap() >= 3);
    }

    #[test]
    fn connector_tables_are_checked() {
        let err = format!(
            "{:#}",
            Config::parse("[connectors.shopfiy]\nenabled = true", "test").unwrap_err()
        );
        assert!(
            err.contains("`connectors.shopfiy`: no such connector"),
            "{err}"
        );
        let cfg = Config::parse(
            "[[connectors.shopify_orders]]\ndomain = \"a.myshopify.com\"\naccess_token = \"env:T\"\n[connectors.shopify_orders.store]\nshop = \"s\"\n\n[[connectors.shopify_orders]]\nenabled = false\ndomain = \"b.myshopify.com\"\naccess_token = \"env:T\"\npage_size = 999\n[connectors.shopify_orders.store]\nshop = \"t\"\n",
            "test",
        )
        .unwrap();
        let tables = cfg.connector_tables("shopify_orders").unwrap();
        assert_eq!(
            tables
                .iter()
                .map(|t| (t.key.as_str(), t.enabled))
                .collect::<Vec<_>>(),
            [
                ("connectors.shopify_orders[0]", true),
                ("connectors.shopify_orders[1]", false)
            ]
        );
        let err = format!("{:#}", cfg.check_connectors().unwrap_err());
        assert!(
            err.contains("`connectors.shopify_orders.page_size` = 999"),
            "disabled tables are checked too: {err}"
        );
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = format!(
            "{:#}",
            Config::parse("[kafka]\nbootstrap = \"x:1\"", "test").unwrap_err()
        );
        assert!(err.contains("unknown field `bootstrap`"), "{err}");
        let err = format!(
            "{:#}",
            Config::parse("[processor]\ntime_zone = \"Mars/Base\"", "test").unwrap_err()
        );
        assert!(
            err.contains("`processor.time_zone` = \"Mars/Base\""),
            "{err}"
        );
        assert!(
            Config::parse("", "empty").is_ok(),
            "every section is optional"
        );
    }
}
