//! The configuration file: one TOML document with a section per role.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use kpiflow_core::KafkaConfig;
use kpiflow_ingest::connectors::simulator::SimulatorConfig;
use kpiflow_processor::ProcessorConfig;
use kpiflow_sink::{AlertsConfig, SinkConfig};
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
    /// `[[connectors.<name>]]`: pull connectors, one table per shop (parsed and checked by
    /// each connector when built).
    #[serde(default)]
    pub connectors: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// `[alerts]`: breach alerts to Alertmanager and webhooks.
    #[serde(default)]
    pub alerts: AlertsConfig,
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

    /// Checks every section before any I/O.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        self.simulate.validate()?;
        self.processor.validate()?;
        self.sink.validate()?;
        for name in self.connectors.keys() {
            let pull = kpiflow_ingest::connector::REGISTRY
                .iter()
                .filter(|s| s.name != kpiflow_ingest::connectors::simulator::NAME);
            if !pull.clone().any(|s| s.name == name) {
                anyhow::bail!(
                    "bad config: `connectors.{name}`: no such pull connector; known: {}",
                    pull.map(|s| s.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        self.alerts.validate()?;
        Ok(())
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
    fn the_deploy_configs_load_and_are_valid() {
        let compose = Config::parse(
            include_str!("../deploy/compose/kpiflow.toml"),
            "deploy/compose/kpiflow.toml",
        )
        .unwrap();
        assert_eq!(compose.kafka.bootstrap_servers, "kafka:9092");
        assert!(compose.alerts.alertmanager.enabled);
        let k8s = Config::parse(
            include_str!("../deploy/k8s/kpiflow.toml"),
            "deploy/k8s/kpiflow.toml",
        )
        .unwrap();
        assert_eq!(k8s.metrics.listen.port(), 9464);
        assert!(
            !Config::load(None).unwrap().alerts.any_enabled(),
            "alerts are off in the example, so the demo needs no Alertmanager"
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
        let err = format!(
            "{:#}",
            Config::parse("[[connectors.amazon_orders]]\nshop = \"s\"", "test").unwrap_err()
        );
        assert!(
            err.contains(
                "`connectors.amazon_orders`: no such pull connector; known: amazon_sp_orders"
            ),
            "{err}"
        );
    }
}
