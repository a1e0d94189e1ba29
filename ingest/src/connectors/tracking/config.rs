//! `[[connectors.aftership_webhook]]` / `[[connectors.track17_webhook]]`: the receiver and the
//! shop whose parcels it tracks.

use std::net::SocketAddr;
use std::time::Duration;

use kpiflow_schemas::{Channel, Fulfilment, SourceTz};
use serde::Deserialize;

use super::Provider;
use crate::IngestError;
use crate::pull::secret::SecretRef;
use crate::push::server::HttpLimits;

/// One table: one receiver for one shop's parcels (several shops: several tables, each on its
/// own path or port, since neither provider names the seller's shop in a push).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// The kpiflow shop id events carry.
    pub shop: String,
    /// The channel the orders were sold through (`amazon` for FBM, `walmart`, `tiktok_shop`,
    /// `shopify`).
    pub channel: Channel,
    /// Marketplace id on events: it must be the one the shop's order connector puts on the
    /// same orders, since a KPI's scope is (shop, channel, marketplace) and a delivery in
    /// another scope than its shipment never meets it. Default by channel: `ATVPDKIKX0DER`
    /// (Amazon US, as `amazon_sp_orders`) for `amazon`, `US` otherwise (as `walmart_orders`,
    /// `tiktok_shop_orders` and `shopify_webhook`).
    #[serde(default)]
    pub marketplace: Option<String>,
    /// The shop's IANA time zone; also the zone of provider times given without an offset.
    /// Default `America/Los_Angeles`.
    #[serde(default = "default_time_zone")]
    pub time_zone: SourceTz,
    /// How these parcels are fulfilled: `merchant` (shipped by the seller) or `third_party`
    /// (an overseas warehouse / 3PL). Default `merchant`.
    #[serde(default = "default_fulfilment")]
    pub fulfilment: Fulfilment,
    /// The `warehouse` on `shipment.milestone` events. Default the provider's name
    /// (`aftership`, `17track`).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// What a delivered parcel with an expected delivery becomes: `count`, an `order.delivered`
    /// (on-time delivery counts it), or `milestone`, a `shipment.milestone` `delivered` only,
    /// for a shop whose store reports its deliveries itself. A parcel is counted once, by its
    /// first report, and a push knows neither the units nor the store's promise: on a Shopify
    /// shop the push, usually first, would count `units_per_parcel` units against the
    /// carrier's estimate where `shopify_webhook`'s delivered fulfilment counts the
    /// fulfilment's units against the store's `delivery_time`. Default `milestone` for channel
    /// `shopify`, `count` otherwise.
    #[serde(default)]
    pub deliveries: Option<Deliveries>,
    /// Units counted per parcel: tracking knows parcels, not units. Default 1.
    #[serde(default = "default_units_per_parcel")]
    pub units_per_parcel: u32,
    /// Where to listen. Default `127.0.0.1:8473` (AfterShip), `127.0.0.1:8474` (17TRACK).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The path pushes are posted to. Default `/webhooks/aftership`, `/webhooks/17track`.
    #[serde(default)]
    pub path: Option<String>,
    /// AfterShip: the webhook secret (Settings → Webhooks). 17TRACK: the account's security key.
    /// `env:NAME` or `file:/path`.
    pub secret: SecretRef,
    /// The signature header. Default `aftership-hmac-sha256` (AfterShip), `sign` (17TRACK).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Larger bodies get 413. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time to get Kafka's acknowledgement before answering 503 (the provider retries).
    /// Default 10 s.
    #[serde(default = "default_ack_deadline", with = "humantime_serde")]
    pub ack_deadline: Duration,
    /// Delivery ids remembered; neither provider sends one in a header, so retries are
    /// recognised by their event ids instead. Default 1000.
    #[serde(default = "default_recent_deliveries")]
    pub recent_deliveries: usize,
    /// Pushes waiting for the publisher. Default 256.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How often a `source.heartbeat` is published. Default 1 minute.
    #[serde(
        default = "crate::connectors::shopify::config::default_heartbeat_interval",
        with = "humantime_serde"
    )]
    pub heartbeat_interval: Duration,
    /// The HTTP server's timeouts and connection limit (`[connectors.<provider>_webhook.http]`).
    #[serde(default)]
    pub http: HttpLimits,
}

/// What a receiver publishes for a delivered parcel (`deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliveries {
    /// `order.delivered`, counted by on-time delivery.
    Count,
    /// `shipment.milestone` `delivered`, counted by no KPI.
    Milestone,
}

fn default_time_zone() -> SourceTz {
    SourceTz::US_PACIFIC
}
fn default_fulfilment() -> Fulfilment {
    Fulfilment::Merchant
}
fn default_units_per_parcel() -> u32 {
    1
}
fn default_max_body_bytes() -> usize {
    1 << 20
}
fn default_ack_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_recent_deliveries() -> usize {
    1000
}
fn default_queue_capacity() -> usize {
    256
}

impl TrackingConfig {
    /// Parses the section of `provider` (without validating).
    pub fn from_value(provider: Provider, value: &serde_json::Value) -> Result<Self, IngestError> {
        crate::connector::parse_section(provider.section(), value.clone())
    }

    /// The marketplace id, defaulted by channel.
    pub fn marketplace(&self) -> String {
        match (&self.marketplace, self.channel) {
            (Some(m), _) => m.clone(),
            (None, Channel::Amazon) => crate::connectors::amazon_sp_orders::US_MARKETPLACE.into(),
            (None, _) => "US".into(),
        }
    }

    /// What a delivered parcel becomes, defaulted by channel.
    pub fn deliveries(&self) -> Deliveries {
        self.deliveries.unwrap_or(match self.channel {
            Channel::Shopify => Deliveries::Milestone,
            _ => Deliveries::Count,
        })
    }

    /// The listen address, defaulted.
    pub fn listen(&self, provider: Provider) -> SocketAddr {
        self.listen.unwrap_or(provider.default_listen())
    }

    /// The path, defaulted.
    pub fn path(&self, provider: Provider) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| provider.default_path().into())
    }

    /// The signature header, defaulted, lower case.
    pub fn signature_header(&self, provider: Provider) -> String {
        self.signature_header
            .as_deref()
            .unwrap_or(provider.default_signature_header())
            .to_ascii_lowercase()
    }

    /// The warehouse on milestones, defaulted.
    pub fn warehouse(&self, provider: Provider) -> String {
        self.warehouse
            .clone()
            .unwrap_or_else(|| provider.short_name().into())
    }

    /// Checks every value before any I/O; errors name the key and quote the value.
    pub fn validate(&self, provider: Provider) -> Result<(), IngestError> {
        let section = provider.section();
        let bad =
            |k: &str, v: String, p: &str| Err(IngestError::config(format!("{section}.{k}"), v, p));
        for (key, value) in [("shop", &self.shop), ("marketplace", &self.marketplace())] {
            if value.trim().is_empty() {
                return bad(key, "\"\"".into(), "must not be empty");
            }
        }
        if let Some(w) = &self.warehouse
            && w.trim().is_empty()
        {
            return bad(
                "warehouse",
                "\"\"".into(),
                "must not be empty (or leave it out)",
            );
        }
        if self.units_per_parcel == 0 {
            return bad("units_per_parcel", "0".into(), "must be at least 1");
        }
        crate::push::receiver::validate_options(
            |k| format!("{section}.{k}"),
            &self.path(provider),
            &self.signature_header(provider),
            self.max_body_bytes,
            self.ack_deadline,
            self.recent_deliveries,
            self.queue_capacity,
        )?;
        self.http.validate(&format!("{section}.http"))?;
        crate::connectors::shopify::config::validate_heartbeat_interval(
            format!("{section}.heartbeat_interval"),
            self.heartbeat_interval,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_the_provider_and_bad_keys_are_named() {
        let v = json!({"shop": "shop-001", "channel": "amazon", "secret": "env:X"});
        let c = TrackingConfig::from_value(Provider::AfterShip, &v).unwrap();
        c.validate(Provider::AfterShip).unwrap();
        let mut bad = v.clone();
        bad["http"] = json!({"max_connections": 0});
        let err = TrackingConfig::from_value(Provider::AfterShip, &bad)
            .unwrap()
            .validate(Provider::AfterShip)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "bad config: `connectors.aftership_webhook.http.max_connections` = 0: must be between 1 and 65536"
        );
        assert_eq!(
            c.signature_header(Provider::AfterShip),
            "aftership-hmac-sha256"
        );
        assert_eq!(c.signature_header(Provider::Track17), "sign");
        assert_eq!(c.path(Provider::Track17), "/webhooks/17track");
        assert_eq!(c.fulfilment, Fulfilment::Merchant);
        // An FBM shop's deliveries carry amazon_sp_orders' marketplace, or they would sit in
        // another KPI scope than the shipments they complete.
        assert_eq!(c.marketplace(), "ATVPDKIKX0DER");
        assert_eq!(c.deliveries(), Deliveries::Count);
        let scoped = |channel: &str, extra: serde_json::Value| {
            let mut v = json!({"shop": "s", "channel": channel, "secret": "env:X"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            TrackingConfig::from_value(Provider::Track17, &v).unwrap()
        };
        for channel in ["walmart", "tiktok_shop", "shopify"] {
            assert_eq!(scoped(channel, json!({})).marketplace(), "US", "{channel}");
        }
        assert_eq!(
            scoped("amazon", json!({"marketplace": "A2EUQ1WTGCTBG2"})).marketplace(),
            "A2EUQ1WTGCTBG2"
        );
        // The store reports a Shopify shop's deliveries (shopify_webhook) with the units and
        // its promise; the push stays a milestone unless asked otherwise.
        assert_eq!(
            scoped("shopify", json!({})).deliveries(),
            Deliveries::Milestone
        );
        assert_eq!(
            scoped("shopify", json!({"deliveries": "count"})).deliveries(),
            Deliveries::Count
        );
        assert_eq!(
            scoped("walmart", json!({"deliveries": "milestone"})).deliveries(),
            Deliveries::Milestone
        );

        let err = TrackingConfig::from_value(
            Provider::Track17,
            &json!({"shop": "s", "channel": "amazon", "secret": "env:X", "shpo": "x"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "bad config: `connectors.track17_webhook.shpo` = (not read): unknown field `shpo`"
            ),
            "{err}"
        );
        let c = TrackingConfig::from_value(
            Provider::AfterShip,
            &json!({"shop": "s", "channel": "amazon", "secret": "env:X", "path": "hooks"}),
        )
        .unwrap();
        assert_eq!(
            c.validate(Provider::AfterShip).unwrap_err().to_string(),
            "bad config: `connectors.aftership_webhook.path` = \"hooks\": must start with '/'"
        );
        let c = TrackingConfig::from_value(
            Provider::AfterShip,
            &json!({"shop": "s", "channel": "amazon", "secret": "env:X", "units_per_parcel": 0}),
        )
        .unwrap();
        assert_eq!(
            c.validate(Provider::AfterShip).unwrap_err().to_string(),
            "bad config: `connectors.aftership_webhook.units_per_parcel` = 0: must be at least 1"
        );
    }
}
