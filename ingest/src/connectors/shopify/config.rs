//! `[connectors.shopify_webhook]` and the per-shop settings both Shopify connectors share.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kpiflow_schemas::{Fulfilment, SourceTz};
use serde::Deserialize;

use crate::IngestError;
use crate::pull::secret::SecretRef;
use crate::push::server::HttpLimits;

/// One Shopify store as kpiflow sees it; keyed by its `*.myshopify.com` domain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyShop {
    /// The kpiflow shop id events carry (and are keyed by).
    pub shop: String,
    /// Marketplace id on events. Default `US`.
    #[serde(default = "ShopifyShop::default_marketplace")]
    pub marketplace: String,
    /// The store's IANA time zone (its business day). Default `America/Los_Angeles`.
    #[serde(default = "ShopifyShop::default_time_zone")]
    pub time_zone: SourceTz,
    /// How the store's orders are fulfilled. Default `merchant`.
    #[serde(default = "ShopifyShop::default_fulfilment")]
    pub fulfilment: Fulfilment,
    /// The store's promised handling time: Shopify has no per-order ship-by date, so
    /// ship-by = `created_at` + this. Default 2 days.
    #[serde(
        default = "ShopifyShop::default_handling_time",
        with = "humantime_serde"
    )]
    pub handling_time: Duration,
    /// The store's promised delivery time, from order creation: Shopify has no per-order
    /// promised delivery date, so deliver-by = `created_at` + this, on `order.placed`,
    /// `order.shipped` and `order.delivered`. Unset: no promise is known, and a delivered
    /// fulfilment publishes no `order.delivered` (on-time delivery keys on the promised date).
    /// Default unset.
    #[serde(default, with = "humantime_serde")]
    pub delivery_time: Option<Duration>,
}

impl ShopifyShop {
    pub(crate) fn default_marketplace() -> String {
        "US".into()
    }
    pub(crate) fn default_time_zone() -> SourceTz {
        SourceTz::US_PACIFIC
    }
    pub(crate) fn default_fulfilment() -> Fulfilment {
        Fulfilment::Merchant
    }
    pub(crate) fn default_handling_time() -> Duration {
        Duration::from_secs(2 * 86_400)
    }

    /// A shop with every default; for tests.
    pub fn for_tests(shop: &str) -> ShopifyShop {
        ShopifyShop {
            shop: shop.into(),
            marketplace: Self::default_marketplace(),
            time_zone: Self::default_time_zone(),
            fulfilment: Self::default_fulfilment(),
            handling_time: Self::default_handling_time(),
            delivery_time: None,
        }
    }

    /// `handling_time` as a chrono delta.
    pub fn handling_time_delta(&self) -> TimeDelta {
        TimeDelta::from_std(self.handling_time).unwrap_or(TimeDelta::MAX)
    }

    /// The promised delivery of an order placed at `placed`, if the store promises one.
    pub fn deliver_by(&self, placed: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.delivery_time
            .map(|d| placed + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
    }
}

/// Checks the `shops` table of `section`.
pub fn validate_shops(
    section: &str,
    shops: &BTreeMap<String, ShopifyShop>,
) -> Result<(), IngestError> {
    if shops.is_empty() {
        return Err(IngestError::config(
            format!("{section}.shops"),
            "{}",
            "map at least one store: [\"<store>.myshopify.com\"] shop = \"<kpiflow shop id>\"",
        ));
    }
    for (domain, s) in shops {
        let key = |k: &str| format!("{section}.shops.\"{domain}\".{k}");
        if !domain.ends_with(".myshopify.com") || domain.len() <= ".myshopify.com".len() {
            return Err(IngestError::config(
                format!("{section}.shops"),
                format!("{domain:?}"),
                "keys are the store's permanent domain, e.g. \"acme.myshopify.com\" (what Shopify sends in X-Shopify-Shop-Domain)",
            ));
        }
        if s.shop.trim().is_empty() {
            return Err(IngestError::config(
                key("shop"),
                "\"\"",
                "must not be empty",
            ));
        }
        if s.marketplace.trim().is_empty() {
            return Err(IngestError::config(
                key("marketplace"),
                "\"\"",
                "must not be empty",
            ));
        }
        if s.handling_time.is_zero() || s.handling_time > Duration::from_secs(30 * 86_400) {
            return Err(IngestError::config(
                key("handling_time"),
                format!("\"{}\"", humantime::format_duration(s.handling_time)),
                "must be more than 0 and at most 30 days",
            ));
        }
        if let Some(d) = s.delivery_time
            && (d <= s.handling_time || d > Duration::from_secs(90 * 86_400))
        {
            return Err(IngestError::config(
                key("delivery_time"),
                format!("\"{}\"", humantime::format_duration(d)),
                format!(
                    "must be more than handling_time (\"{}\") and at most 90 days",
                    humantime::format_duration(s.handling_time)
                ),
            ));
        }
    }
    Ok(())
}

/// The webhook receiver's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on (behind the TLS-terminating proxy Shopify calls). Default
    /// `127.0.0.1:8471`.
    #[serde(default = "WebhookConfig::default_listen")]
    pub listen: SocketAddr,
    /// The path webhooks are posted to. Default `/webhooks/shopify`.
    #[serde(default = "WebhookConfig::default_path")]
    pub path: String,
    /// The app's client secret (signs every webhook): `env:NAME` or `file:/path`.
    pub client_secret: SecretRef,
    /// Larger bodies are refused with 413 before they are read in full. Default 1 MiB.
    #[serde(default = "WebhookConfig::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time to get Kafka's acknowledgement before answering 503 so Shopify retries; must stay
    /// under Shopify's 5-second budget. Default 4 s.
    #[serde(
        default = "WebhookConfig::default_ack_deadline",
        with = "humantime_serde"
    )]
    pub ack_deadline: Duration,
    /// Delivery ids (topic + X-Shopify-Event-Id) remembered to acknowledge retries without
    /// publishing again; also the number of order dates remembered for `refunds/create` and
    /// `fulfillments/*`.
    /// Default 100000.
    #[serde(default = "WebhookConfig::default_recent_deliveries")]
    pub recent_deliveries: usize,
    /// Deliveries waiting for the publisher before new ones wait (and may hit the deadline).
    /// Default 1024.
    #[serde(default = "WebhookConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// `orders/updated` publishes facts (payment, fulfilments, cancellation, refunds) at most
    /// this long before the order's `updated_at`. Default 1 day.
    #[serde(
        default = "WebhookConfig::default_updated_lookback",
        with = "humantime_serde"
    )]
    pub updated_lookback: Duration,
    /// How often a `source.heartbeat` per store is published (last acknowledged delivery,
    /// newest event time, counts), for staleness rules. Default 1 minute.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The HTTP server's timeouts and connection limit (`[connectors.shopify_webhook.http]`).
    #[serde(default)]
    pub http: HttpLimits,
    /// Stores, keyed by `*.myshopify.com` domain.
    pub shops: BTreeMap<String, ShopifyShop>,
}

/// Push connectors' default heartbeat interval.
pub fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(60)
}

/// Checks a heartbeat interval (`key` names it).
pub fn validate_heartbeat_interval(key: String, d: Duration) -> Result<(), IngestError> {
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(IngestError::config(
            key,
            format!("\"{}\"", humantime::format_duration(d)),
            "must be between 1s and 1h",
        ));
    }
    Ok(())
}

impl WebhookConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8471))
    }
    fn default_path() -> String {
        "/webhooks/shopify".into()
    }
    fn default_max_body_bytes() -> usize {
        1 << 20
    }
    fn default_ack_deadline() -> Duration {
        Duration::from_secs(4)
    }
    fn default_recent_deliveries() -> usize {
        100_000
    }
    fn default_queue_capacity() -> usize {
        1024
    }
    fn default_updated_lookback() -> Duration {
        Duration::from_secs(86_400)
    }

    /// Parses the section (without validating).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(super::WEBHOOK_SECTION, value.clone())
    }

    /// Checks every value before any I/O; errors quote key and value.
    pub fn validate(&self) -> Result<(), IngestError> {
        let s = super::WEBHOOK_SECTION;
        let bad = |k: &str, v: String, p: &str| Err(IngestError::config(format!("{s}.{k}"), v, p));
        if !self.path.starts_with('/') {
            return bad("path", format!("{:?}", self.path), "must start with '/'");
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 64 << 20 {
            return bad(
                "max_body_bytes",
                self.max_body_bytes.to_string(),
                "must be between 1024 and 67108864 (64 MiB)",
            );
        }
        if self.ack_deadline < Duration::from_millis(100)
            || self.ack_deadline >= Duration::from_secs(5)
        {
            return bad(
                "ack_deadline",
                format!("\"{}\"", humantime::format_duration(self.ack_deadline)),
                "must be at least 100ms and under Shopify's 5s budget",
            );
        }
        if self.recent_deliveries == 0 {
            return bad("recent_deliveries", "0".into(), "must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "0".into(), "must be at least 1");
        }
        validate_heartbeat_interval(format!("{s}.heartbeat_interval"), self.heartbeat_interval)?;
        self.http.validate(&format!("{s}.http"))?;
        validate_shops(s, &self.shops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<WebhookConfig, IngestError> {
        let c = WebhookConfig::from_value(&v)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_errors_name_key_and_value() {
        let ok = json!({"client_secret": "env:S", "shops": {"acme.myshopify.com": {"shop": "shop-003"}}});
        let c = parse(ok.clone()).unwrap();
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(
            c.shops["acme.myshopify.com"].fulfilment,
            Fulfilment::Merchant
        );

        let mut v = ok.clone();
        v["ack_deadline"] = json!("6s");
        assert_eq!(
            parse(v).unwrap_err().to_string(),
            "bad config: `connectors.shopify_webhook.ack_deadline` = \"6s\": must be at least 100ms and under Shopify's 5s budget"
        );
        let mut v = ok.clone();
        v["shops"] = json!({"acme.com": {"shop": "x"}});
        assert!(
            parse(v)
                .unwrap_err()
                .to_string()
                .contains(r#"`connectors.shopify_webhook.shops` = "acme.com""#)
        );
        let mut v = ok.clone();
        v["http"] = json!({"body_read_timeout": "0s"});
        assert_eq!(
            parse(v).unwrap_err().to_string(),
            "bad config: `connectors.shopify_webhook.http.body_read_timeout` = \"0s\": must be between 100ms and 10m"
        );
        let mut v = ok;
        v["lisen"] = json!("x");
        assert!(
            parse(v)
                .unwrap_err()
                .to_string()
                .contains("unknown field `lisen`")
        );
    }
}
