//! `aftership_webhook` and `track17_webhook`: carrier tracking pushes from the aggregators
//! cross-border sellers use, for merchant- and 3PL-fulfilled parcels (FBM, Walmart, TikTok
//! Shop, 3PL orders), published as `order.delivered` and `shipment.milestone`.
//!
//! # What is published
//!
//! | provider status                                   | event                                  |
//! |---------------------------------------------------|----------------------------------------|
//! | delivered, with an expected delivery              | `order.delivered` at the delivery time, `deliver_by` = the expected delivery (`deliveries = "milestone"`, the default on a Shopify shop: `shipment.milestone` `delivered`) |
//! | delivered, no expected delivery                   | `shipment.milestone` `delivered` (`order.delivered` needs a promised date) |
//! | in transit, out for delivery, available for pickup| `shipment.milestone` `in_transit`       |
//! | failed attempt / delivery failure, exception, expired | `shipment.milestone` `exception`    |
//! | pending / not found, info received (no scan yet)  | nothing (acknowledged, counted as rejected `no_carrier_scan_yet`) |
//!
//! The order id: AfterShip `msg.order_id`, else `msg.order_number` (both set by the seller when
//! creating the tracking); 17TRACK `data.tag`, the label the seller sets when registering the
//! number. An update without one is dead-lettered naming the field. Shop, channel,
//! marketplace and fulfilment come from the config table (one table per shop), since neither
//! provider knows them; the marketplace defaults to the one the channel's order connector
//! puts on the same orders (`ATVPDKIKX0DER` for Amazon, `US` otherwise), since a delivery
//! counts only in the KPI scope (shop, channel, marketplace) of its shipment. Tracking knows parcels, not units: each parcel counts
//! `units_per_parcel` units (default 1). `placed_at` on `order.delivered` is the earliest scan
//! in the push (the order's placement is not in it); on-time delivery keys on `deliver_by`.
//!
//! Milestone ids are `<connector>-<shop>-<carrier>-<tracking number>-<milestone>-<unix
//! seconds>`: a provider's retry, or the same status pushed twice, gives the same id and is
//! counted once. An `order.delivered` has the parcel's id, `delivered-<shop>-<tracking
//! number>` ([`crate::map::parcel_delivered_id`]), the same from either aggregator and from
//! the store's own delivered fulfilment (`shopify_webhook`), so one parcel's delivery counts
//! once in on-time delivery. The first report read is the one counted; a push knows neither
//! the parcel's units nor the store's promise, which the store's report does, so on a Shopify
//! shop (where the push usually comes first) deliveries stay milestones unless
//! `deliveries = "count"`.
//!
//! # Signatures
//!
//! - AfterShip: `aftership-hmac-sha256: base64(HMAC-SHA256(raw body, webhook secret))`.
//! - 17TRACK: `sign: hex(SHA256(raw body + "/" + security key))`.
//!
//! # Unconfirmed
//!
//! From the providers' public documentation as we know it, not checked against live pushes:
//! both header names (hence `signature_header` is configurable) and 17TRACK's signing rule;
//! AfterShip's legacy tracking fields (`expected_delivery`, `shipment_delivery_date`) — newer API
//! versions rename the expected-delivery fields; the format of AfterShip times (with or without
//! an offset; without one, they are read in the shop's `time_zone`); 17TRACK's
//! `time_metrics.estimated_delivery_date` and `milestone[]` shapes; and whether 17TRACK's
//! `tag` is the field sellers use for the order id (its register call also knows a free
//! `param`, which is for the carrier). Fixtures: `ingest/fixtures/aftership/`,
//! `ingest/fixtures/17track/`.

pub mod aftership;
pub mod config;
pub mod map;
pub mod track17;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::Utc;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::TrackingConfig;

use crate::connector::{Connector, RunStats, StopReason};
use crate::pull::Origin;
use crate::pull::secret::Secret;
use crate::push::health::PushHealth;
use crate::push::metrics::{PushMetrics, PushStats};
use crate::push::queue::Delivery;
use crate::push::receiver::{self, Mapped, PushMapper, Receiver, ReceiverOptions};
use crate::push::signature::{self, SignatureError};
use crate::{IngestError, Publish};
use map::{Parsed, Target};

/// The AfterShip receiver's registry name.
pub const AFTERSHIP_NAME: &str = "aftership_webhook";
/// The 17TRACK receiver's registry name.
pub const TRACK17_NAME: &str = "track17_webhook";

/// Which aggregator a receiver speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AfterShip tracking webhooks.
    AfterShip,
    /// 17TRACK push (webhook v2.2).
    Track17,
}

impl Provider {
    /// The registry name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::AfterShip => AFTERSHIP_NAME,
            Provider::Track17 => TRACK17_NAME,
        }
    }

    /// The provider's own name, for messages and the default warehouse.
    pub fn short_name(self) -> &'static str {
        match self {
            Provider::AfterShip => "aftership",
            Provider::Track17 => "17track",
        }
    }

    /// The config section.
    pub fn section(self) -> &'static str {
        match self {
            Provider::AfterShip => "connectors.aftership_webhook",
            Provider::Track17 => "connectors.track17_webhook",
        }
    }

    /// The metrics component and dead-letter stage.
    pub fn component(self) -> &'static str {
        match self {
            Provider::AfterShip => "ingest.aftership_webhook",
            Provider::Track17 => "ingest.track17_webhook",
        }
    }

    /// Where a receiver listens unless configured.
    pub fn default_listen(self) -> SocketAddr {
        match self {
            Provider::AfterShip => SocketAddr::from(([127, 0, 0, 1], 8473)),
            Provider::Track17 => SocketAddr::from(([127, 0, 0, 1], 8474)),
        }
    }

    /// The path pushes are posted to unless configured.
    pub fn default_path(self) -> &'static str {
        match self {
            Provider::AfterShip => "/webhooks/aftership",
            Provider::Track17 => "/webhooks/17track",
        }
    }

    /// The documented signature header.
    pub fn default_signature_header(self) -> &'static str {
        match self {
            Provider::AfterShip => "aftership-hmac-sha256",
            Provider::Track17 => "sign",
        }
    }
}

/// The provider's half of the receiver.
pub struct TrackingMapper {
    provider: Provider,
    target: Target,
}

impl TrackingMapper {
    /// A mapper publishing `provider`'s updates for `target`.
    pub fn new(provider: Provider, target: Target) -> TrackingMapper {
        TrackingMapper { provider, target }
    }
}

impl PushMapper for TrackingMapper {
    fn delivery_id(&self, _: &HeaderMap) -> Option<String> {
        // Neither provider sends a delivery id header; retries are recognised by event id.
        None
    }

    fn map(&self, _: &HeaderMap, body: &[u8]) -> Mapped {
        let label = self.provider.short_name();
        let dead = |reason: String| Mapped::invalid(reason, body);
        let doc: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return dead(format!("{label} webhook: not JSON: {e}")),
        };
        let tz = self.target.time_zone;
        let parsed = match self.provider {
            Provider::AfterShip => aftership::parse(&doc, tz),
            Provider::Track17 => track17::parse(&doc, tz),
        };
        match parsed {
            Ok(Parsed::Update(u)) => Mapped::Publish(Delivery {
                events: vec![map::event(&u, &self.target, Utc::now())],
                dead_letters: vec![],
            }),
            Ok(Parsed::Ignore(reason)) => Mapped::Ignore(reason),
            Err(fe) => dead(format!("{label} webhook: field {fe}")),
        }
    }

    fn verify(
        &self,
        secret: &Secret,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        match self.provider {
            Provider::AfterShip => signature::verify(secret, body, header),
            Provider::Track17 => signature::verify_sha256_hex_suffixed(secret, body, header),
        }
    }
}

/// The connector: one receiver for one shop's parcels, until shutdown.
pub struct TrackingWebhook {
    provider: Provider,
    cfg: TrackingConfig,
    metrics: PushMetrics,
}

impl TrackingWebhook {
    /// Validates `cfg`; nothing is bound yet.
    pub fn new(provider: Provider, cfg: TrackingConfig) -> Result<TrackingWebhook, IngestError> {
        cfg.validate(provider)?;
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: cfg.channel,
            marketplace: cfg.marketplace(),
            source_tz: cfg.time_zone,
        };
        let health = Arc::new(PushHealth::new(provider.name(), [origin]));
        Ok(TrackingWebhook {
            provider,
            cfg,
            metrics: PushMetrics::new(provider.component()).with_health(health),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> PushStats {
        self.metrics.snapshot()
    }

    /// Binds the receiver with the configured secret.
    pub async fn bind(&self) -> Result<Receiver, IngestError> {
        let secret = self.cfg.secret.resolve(&self.secret_key())?;
        self.bind_with_secret(secret).await
    }

    /// Like [`TrackingWebhook::bind`] with a secret obtained elsewhere.
    pub async fn bind_with_secret(&self, secret: Secret) -> Result<Receiver, IngestError> {
        let p = self.provider;
        let opts = ReceiverOptions {
            listen: self.cfg.listen(p),
            listen_key: format!("{}.listen", p.section()),
            path: self.cfg.path(p),
            signature_header: self.cfg.signature_header(p),
            max_body_bytes: self.cfg.max_body_bytes,
            ack_deadline: self.cfg.ack_deadline,
            recent_deliveries: self.cfg.recent_deliveries,
            queue_capacity: self.cfg.queue_capacity,
            http: self.cfg.http.clone(),
        };
        let target = Target {
            source: p.name(),
            shop: self.cfg.shop.clone(),
            channel: self.cfg.channel,
            marketplace: self.cfg.marketplace(),
            time_zone: self.cfg.time_zone,
            fulfilment: self.cfg.fulfilment,
            count_deliveries: self.cfg.deliveries() == config::Deliveries::Count,
            warehouse: self.cfg.warehouse(p),
            units: self.cfg.units_per_parcel,
        };
        let mapper = Arc::new(TrackingMapper::new(p, target));
        receiver::bind(opts, secret, mapper, self.metrics.clone()).await
    }

    fn secret_key(&self) -> String {
        format!("{}.secret", self.provider.section())
    }
}

impl Connector for TrackingWebhook {
    fn name(&self) -> &'static str {
        self.provider.name()
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(async move {
            let began = Instant::now();
            publisher.ensure_topics().await?;
            let hook = self.bind().await?;
            tracing::info!(addr = %hook.local_addr(), connector = self.provider.name(),
                "tracking webhook listening");
            let serving = hook.serve(publisher, shutdown.clone());
            let beating = self.metrics.health().expect("set in new").beat(
                publisher,
                self.cfg.heartbeat_interval,
                shutdown.clone(),
            );
            let (served, ()) = tokio::join!(serving, beating);
            served?;
            let s = self.stats();
            Ok(RunStats {
                published: s.published,
                dead_lettered: s.dead_lettered,
                stop: StopReason::Shutdown,
                elapsed: began.elapsed(),
            })
        })
    }
}

fn build(
    provider: Provider,
    section: serde_json::Value,
) -> Result<Box<dyn Connector>, IngestError> {
    let hook = TrackingWebhook::new(provider, TrackingConfig::from_value(provider, &section)?)?;
    // The secret is read again when the receiver binds; checking it here refuses a missing one
    // before any I/O (and in check-config).
    hook.cfg.secret.check(&hook.secret_key())?;
    Ok(Box::new(hook))
}

/// Builds `aftership_webhook` from its section (the registry's entry point).
pub(crate) fn build_aftership(
    section: serde_json::Value,
) -> Result<Box<dyn Connector>, IngestError> {
    build(Provider::AfterShip, section)
}

/// Builds `track17_webhook` from its section (the registry's entry point).
pub(crate) fn build_track17(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    build(Provider::Track17, section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{Channel, EventBody, Fulfilment, Milestone, SourceTz};

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn mapper(provider: Provider, channel: Channel, tz: chrono_tz::Tz) -> TrackingMapper {
        TrackingMapper::new(
            provider,
            Target {
                source: provider.name(),
                shop: "shop-001".into(),
                channel,
                marketplace: "US".into(),
                time_zone: SourceTz(tz),
                fulfilment: Fulfilment::Merchant,
                count_deliveries: true,
                warehouse: provider.short_name().into(),
                units: 1,
            },
        )
    }

    fn delivery(m: Mapped) -> Delivery {
        match m {
            Mapped::Publish(d) => d,
            Mapped::Ignore(r) => panic!("ignored: {r}"),
        }
    }

    fn utc(s: &str) -> chrono::DateTime<Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn aftership_delivered_is_order_delivered_by_the_expected_date() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Amazon,
            chrono_tz::America::New_York,
        );
        let d = delivery(m.map(&HeaderMap::new(), &fixture("aftership/delivered.json")));
        assert!(d.dead_letters.is_empty(), "{:?}", d.dead_letters);
        let [e] = d.events.as_slice() else {
            panic!("{:?}", d.events)
        };
        assert_eq!(
            e.header.event_id,
            "delivered-shop-001-9400111899223817576593"
        );
        assert_eq!(e.header.event_time, utc("2026-11-07T18:48:00Z"));
        assert_eq!(e.header.channel, Channel::Amazon);
        let EventBody::OrderDelivered(b) = &e.body else {
            panic!("{:?}", e.body)
        };
        assert_eq!(b.order_id, "112-4839201-5521934");
        // expected_delivery "2026-11-08": the end of that day in New York (EST).
        assert_eq!(b.deliver_by, utc("2026-11-09T04:59:59Z"));
        assert_eq!(b.placed_at, utc("2026-11-05T00:12:00Z"));
        assert_eq!(b.units, 1);
        assert_eq!(b.fulfilment, Some(Fulfilment::Merchant));
        e.validate().unwrap();
    }

    #[test]
    fn aftership_in_transit_is_a_milestone_keyed_by_order_number() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Walmart,
            chrono_tz::America::New_York,
        );
        let d = delivery(m.map(&HeaderMap::new(), &fixture("aftership/in_transit.json")));
        let [e] = d.events.as_slice() else {
            panic!("{:?}", d)
        };
        assert_eq!(
            e.header.event_id,
            "aftership_webhook-shop-001-usps-9400111899223817576593-in_transit-1793837520"
        );
        let EventBody::ShipmentMilestone(b) = &e.body else {
            panic!("{:?}", e.body)
        };
        assert_eq!(b.milestone, Milestone::InTransit);
        assert_eq!(b.order_id.as_deref(), Some("WM-108844213"));
        assert_eq!(b.shipment_id, "9400111899223817576593");
        assert_eq!(b.tracking_id.as_deref(), Some("9400111899223817576593"));
        assert_eq!(b.carrier.as_deref(), Some("usps"));
        assert_eq!(b.warehouse, "aftership");
        e.validate().unwrap();
    }

    #[test]
    fn aftership_without_order_id_or_number_is_dead_lettered() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Amazon,
            chrono_tz::America::New_York,
        );
        let d = delivery(m.map(&HeaderMap::new(), &fixture("aftership/no_order_id.json")));
        assert!(d.events.is_empty());
        assert_eq!(
            d.dead_letters[0].reason,
            "aftership webhook: field `msg.order_id`: missing or empty, and so is msg.order_number: set the order id on the tracking when creating it"
        );
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Amazon,
            chrono_tz::America::New_York,
        );
        let reason = |body: &str| {
            delivery(m.map(&HeaderMap::new(), body.as_bytes())).dead_letters[0]
                .reason
                .clone()
        };
        assert_eq!(
            reason(r#"{"event":"tracking_update","msg":{"tag":"Lost","tracking_number":"1"}}"#),
            "aftership webhook: field `msg.tag` = \"Lost\": expected one of Pending, InfoReceived, InTransit, OutForDelivery, AttemptFail, Delivered, AvailableForPickup, Exception, Expired"
        );
        assert_eq!(
            reason(
                r#"{"event":"tracking_update","msg":{"tag":"InTransit","tracking_number":"1","order_id":"o","checkpoints":[{"checkpoint_time":"yesterday"}]}}"#
            ),
            "aftership webhook: field `msg.checkpoints[0].checkpoint_time` = \"yesterday\": expected a time such as \"2026-11-09T14:05:00-05:00\", \"2026-11-09T14:05:00\" or a date \"2026-11-09\""
        );
        assert_eq!(
            reason(r#"{"event":"tracking_update"}"#),
            "aftership webhook: field `msg`: missing or not an object"
        );
        assert!(reason("{").starts_with("aftership webhook: not JSON: "));
        let t17 = mapper(
            Provider::Track17,
            Channel::TiktokShop,
            chrono_tz::America::Chicago,
        );
        let d = delivery(t17.map(&HeaderMap::new(), br#"{"event":"TRACKING_UPDATED","data":{"number":"X","tag":"o","track_info":{"latest_status":{"status":"Delivered"}}}}"#));
        assert_eq!(
            d.dead_letters[0].reason,
            "17track webhook: field `data.track_info.latest_event.time_iso`: missing or empty, and so is time_utc: the update has no time"
        );
    }

    #[test]
    fn no_scan_yet_and_other_events_are_acknowledged_unpublished() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Amazon,
            chrono_tz::America::New_York,
        );
        let body =
            br#"{"event":"tracking_update","msg":{"tag":"InfoReceived","tracking_number":"1"}}"#;
        assert!(matches!(
            m.map(&HeaderMap::new(), body),
            Mapped::Ignore("no_carrier_scan_yet")
        ));
        let t17 = mapper(
            Provider::Track17,
            Channel::TiktokShop,
            chrono_tz::America::Chicago,
        );
        let body = br#"{"event":"TRACKING_STOPPED","data":{"number":"X"}}"#;
        assert!(matches!(
            t17.map(&HeaderMap::new(), body),
            Mapped::Ignore("not_a_tracking_update")
        ));
    }

    #[test]
    fn track17_delivered_late_and_in_transit() {
        let m = mapper(
            Provider::Track17,
            Channel::TiktokShop,
            chrono_tz::America::Chicago,
        );
        let d = delivery(m.map(&HeaderMap::new(), &fixture("17track/delivered.json")));
        let [e] = d.events.as_slice() else {
            panic!("{:?}", d)
        };
        assert_eq!(e.header.event_id, "delivered-shop-001-YT2531021266035577");
        assert_eq!(e.header.event_time, utc("2026-11-12T17:02:00Z"));
        let EventBody::OrderDelivered(b) = &e.body else {
            panic!("{:?}", e.body)
        };
        assert_eq!(b.order_id, "577138291045");
        assert_eq!(b.deliver_by, utc("2026-11-12T05:59:59Z"));
        assert_eq!(b.placed_at, utc("2026-11-02T01:30:00Z"));
        e.validate().unwrap();

        let d = delivery(m.map(&HeaderMap::new(), &fixture("17track/in_transit.json")));
        let [e] = d.events.as_slice() else {
            panic!("{:?}", d)
        };
        assert_eq!(
            e.header.event_id,
            "track17_webhook-shop-001-190008-YT2531021266035577-in_transit-1794206400"
        );
        let EventBody::ShipmentMilestone(b) = &e.body else {
            panic!("{:?}", e.body)
        };
        assert_eq!(b.milestone, Milestone::InTransit);
        assert_eq!(b.order_id.as_deref(), Some("577138291045"));
        assert_eq!(b.carrier.as_deref(), Some("190008"));
    }

    #[test]
    fn track17_without_tag_is_dead_lettered() {
        let m = mapper(
            Provider::Track17,
            Channel::TiktokShop,
            chrono_tz::America::Chicago,
        );
        let d = delivery(m.map(&HeaderMap::new(), &fixture("17track/no_tag.json")));
        assert!(d.events.is_empty());
        assert_eq!(
            d.dead_letters[0].reason,
            "17track webhook: field `data.tag`: missing or empty: register the number with the order id as its tag"
        );
    }

    #[test]
    fn a_store_reporting_its_own_deliveries_gets_the_push_as_a_milestone() {
        let mut m = mapper(
            Provider::AfterShip,
            Channel::Shopify,
            chrono_tz::America::New_York,
        );
        m.target.count_deliveries = false;
        let d = delivery(m.map(&HeaderMap::new(), &fixture("aftership/delivered.json")));
        let [e] = d.events.as_slice() else {
            panic!("{:?}", d.events)
        };
        // Not the parcel's delivery id, which the store's delivered fulfilment keeps; the
        // milestone id ends in the delivery time, 2026-11-07T18:48Z = 1794077280.
        assert_eq!(
            e.header.event_id,
            "aftership_webhook-shop-001-usps-9400111899223817576593-delivered-1794077280"
        );
        let EventBody::ShipmentMilestone(b) = &e.body else {
            panic!("{:?}", e.body)
        };
        assert_eq!(b.milestone, Milestone::Delivered);
        assert_eq!(e.header.event_time, utc("2026-11-07T18:48:00Z"));
    }

    #[test]
    fn delivered_without_expected_delivery_stays_a_milestone() {
        let m = mapper(
            Provider::AfterShip,
            Channel::Amazon,
            chrono_tz::America::New_York,
        );
        let body = br#"{"event":"tracking_update","msg":{"tag":"Delivered","tracking_number":"1Z9","slug":"ups","order_id":"o-1","expected_delivery":null,"checkpoints":[{"checkpoint_time":"2026-11-09T10:00:00-05:00","tag":"Delivered"}]}}"#;
        let d = delivery(m.map(&HeaderMap::new(), body));
        let EventBody::ShipmentMilestone(b) = &d.events[0].body else {
            panic!("{:?}", d)
        };
        assert_eq!(b.milestone, Milestone::Delivered);
        assert_eq!(d.events[0].header.event_time, utc("2026-11-09T15:00:00Z"));
    }
}
