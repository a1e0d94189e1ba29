//! `[connectors.threepl]`: the shops a 3PL works for, its drop folder and its webhook.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kpiflow_schemas::{Channel, SourceTz};
use serde::Deserialize;

use super::SECTION;
use crate::IngestError;
use crate::pull::secret::SecretRef;

/// A kpiflow shop a 3PL ships for; records name it in their `shop` column.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreeplShop {
    /// The channel the shop sells through.
    pub channel: Channel,
    /// Marketplace id on events. Default `US`.
    #[serde(default = "ThreeplShop::default_marketplace")]
    pub marketplace: String,
    /// The shop's IANA time zone. Default `America/Los_Angeles`.
    #[serde(default = "ThreeplShop::default_time_zone")]
    pub time_zone: SourceTz,
}

impl ThreeplShop {
    fn default_marketplace() -> String {
        "US".into()
    }
    fn default_time_zone() -> SourceTz {
        SourceTz::US_PACIFIC
    }

    /// A Shopify shop in the US with the defaults; for tests.
    pub fn for_tests() -> ThreeplShop {
        ThreeplShop {
            channel: Channel::Shopify,
            marketplace: Self::default_marketplace(),
            time_zone: Self::default_time_zone(),
        }
    }
}

/// The drop folder the 3PL uploads CSV files to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// The folder watched for `*.csv` files (not its sub-folders).
    pub dir: PathBuf,
    /// How often the folder is scanned. Default 30 s.
    #[serde(
        default = "DropConfig::default_poll_interval",
        with = "humantime_serde"
    )]
    pub poll_interval: Duration,
    /// A file is read only once it has not changed for this long, so an upload in progress
    /// is not read half-way. Default 10 s.
    #[serde(default = "DropConfig::default_settle_time", with = "humantime_serde")]
    pub settle_time: Duration,
    /// Where processed files go. Default `<dir>/done`.
    #[serde(default)]
    pub done_dir: Option<PathBuf>,
    /// Where files that could not be read as a whole go (their reason is dead-lettered).
    /// Default `<dir>/failed`.
    #[serde(default)]
    pub failed_dir: Option<PathBuf>,
}

impl DropConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(30)
    }
    fn default_settle_time() -> Duration {
        Duration::from_secs(10)
    }

    /// A folder scanned every second with no settle time; for tests.
    pub fn for_tests(dir: PathBuf) -> DropConfig {
        DropConfig {
            dir,
            poll_interval: Duration::from_secs(1),
            settle_time: Duration::ZERO,
            done_dir: None,
            failed_dir: None,
        }
    }

    /// `done_dir`, defaulted.
    pub fn done(&self) -> PathBuf {
        self.done_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("done"))
    }

    /// `failed_dir`, defaulted.
    pub fn failed(&self) -> PathBuf {
        self.failed_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("failed"))
    }
}

/// The 3PL's webhook: the same records as JSON, signed with a shared secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreeplWebhookConfig {
    /// Where to listen. Default `127.0.0.1:8472`.
    #[serde(default = "ThreeplWebhookConfig::default_listen")]
    pub listen: SocketAddr,
    /// The path records are posted to. Default `/webhooks/threepl`.
    #[serde(default = "ThreeplWebhookConfig::default_path")]
    pub path: String,
    /// The shared secret (`env:NAME` or `file:/path`).
    pub secret: SecretRef,
    /// The header with base64(HMAC-SHA256(body, secret)). Default `X-Threepl-Hmac-Sha256`.
    #[serde(default = "ThreeplWebhookConfig::default_signature_header")]
    pub signature_header: String,
    /// Larger bodies get 413. Default 4 MiB.
    #[serde(default = "ThreeplWebhookConfig::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time to get Kafka's acknowledgement before answering 503. Default 10 s.
    #[serde(
        default = "ThreeplWebhookConfig::default_ack_deadline",
        with = "humantime_serde"
    )]
    pub ack_deadline: Duration,
    /// `X-Threepl-Delivery-Id`s remembered to acknowledge retries without publishing. Default
    /// 10000.
    #[serde(default = "ThreeplWebhookConfig::default_recent_deliveries")]
    pub recent_deliveries: usize,
    /// Deliveries waiting for the publisher. Default 256.
    #[serde(default = "ThreeplWebhookConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// The HTTP server's timeouts and connection limit (`[connectors.threepl.webhook.http]`).
    #[serde(default)]
    pub http: crate::push::server::HttpLimits,
}

impl ThreeplWebhookConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8472))
    }
    fn default_path() -> String {
        "/webhooks/threepl".into()
    }
    fn default_signature_header() -> String {
        "X-Threepl-Hmac-Sha256".into()
    }
    fn default_max_body_bytes() -> usize {
        4 << 20
    }
    fn default_ack_deadline() -> Duration {
        Duration::from_secs(10)
    }
    fn default_recent_deliveries() -> usize {
        10_000
    }
    fn default_queue_capacity() -> usize {
        256
    }
}

/// The whole section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreeplConfig {
    /// Shops by kpiflow shop id.
    pub shops: BTreeMap<String, ThreeplShop>,
    /// The CSV drop folder, if the 3PL uploads files.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// The webhook, if the 3PL posts records.
    #[serde(default)]
    pub webhook: Option<ThreeplWebhookConfig>,
    /// How often a `source.heartbeat` per shop is published. Default 1 minute.
    #[serde(
        default = "crate::connectors::shopify::config::default_heartbeat_interval",
        with = "humantime_serde"
    )]
    pub heartbeat_interval: Duration,
}

impl ThreeplConfig {
    /// Parses the section (without validating).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(SECTION, value.clone())
    }

    /// Checks every value before any I/O.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad =
            |k: &str, v: String, p: &str| Err(IngestError::config(format!("{SECTION}.{k}"), v, p));
        if self.shops.is_empty() {
            return bad(
                "shops",
                "{}".into(),
                "name at least one shop: [connectors.threepl.shops.<shop id>] channel = \"...\"",
            );
        }
        for (id, s) in &self.shops {
            if id.trim().is_empty() {
                return bad("shops", "\"\"".into(), "shop ids must not be empty");
            }
            if s.marketplace.trim().is_empty() {
                return bad(
                    &format!("shops.{id}.marketplace"),
                    "\"\"".into(),
                    "must not be empty",
                );
            }
        }
        crate::connectors::shopify::config::validate_heartbeat_interval(
            format!("{SECTION}.heartbeat_interval"),
            self.heartbeat_interval,
        )?;
        if self.drop.is_none() && self.webhook.is_none() {
            return bad(
                "drop",
                "(missing)".into(),
                "configure [connectors.threepl.drop], [connectors.threepl.webhook] or both",
            );
        }
        if let Some(d) = &self.drop {
            if d.dir.as_os_str().is_empty() {
                return bad("drop.dir", "\"\"".into(), "must name a folder");
            }
            if d.poll_interval < Duration::from_millis(100) {
                return bad(
                    "drop.poll_interval",
                    format!("\"{}\"", humantime::format_duration(d.poll_interval)),
                    "must be at least 100ms",
                );
            }
            if d.done() == d.dir || d.failed() == d.dir {
                return bad(
                    "drop.done_dir",
                    format!("{:?}", d.done().display().to_string()),
                    "done_dir and failed_dir must differ from dir, or files would be read again",
                );
            }
        }
        if let Some(w) = &self.webhook {
            crate::push::receiver::validate_options(
                |k| format!("{SECTION}.webhook.{k}"),
                &w.path,
                &w.signature_header,
                w.max_body_bytes,
                w.ack_deadline,
                w.recent_deliveries,
                w.queue_capacity,
            )?;
            w.http.validate(&format!("{SECTION}.webhook.http"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn needs_a_folder_or_a_webhook_and_names_bad_keys() {
        let shops = json!({"shop-003": {"channel": "shopify"}});
        let c = ThreeplConfig::from_value(&json!({"shops": shops})).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`connectors.threepl.drop`")
        );
        let c =
            ThreeplConfig::from_value(&json!({"shops": shops, "drop": {"dir": "/in"}})).unwrap();
        c.validate().unwrap();
        assert_eq!(c.drop.unwrap().done(), PathBuf::from("/in/done"));
        let err = ThreeplConfig::from_value(
            &json!({"shops": {"s": {"channel": "ebay"}}, "drop": {"dir": "/in"}}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad config: `connectors.threepl.shops.s.channel` = \"ebay\""),
            "{err}"
        );
        let c = ThreeplConfig::from_value(&json!({"shops": shops,
            "drop": {"dir": "/in", "done_dir": "/in"}}))
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("must differ from dir")
        );
    }
}
