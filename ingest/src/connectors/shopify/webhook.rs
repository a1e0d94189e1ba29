//! The `shopify_webhook` receiver: signature first, then the payload, then Kafka, then 200.
//!
//! Per request (`POST <path>`, default `/webhooks/shopify`):
//! 1. the body is read up to `max_body_bytes` (413 beyond);
//! 2. `X-Shopify-Hmac-Sha256` must be base64(HMAC-SHA256(raw body, client secret)), checked in
//!    constant time before any parsing (401 when missing, malformed or wrong);
//! 3. a delivery whose `X-Shopify-Topic` + `X-Shopify-Event-Id` (else `X-Shopify-Webhook-Id`)
//!    was acknowledged recently is acknowledged again without publishing;
//! 4. the payload is mapped ([`super::mapping`]); a store not in `shops`, bad JSON or a bad
//!    field goes to the dead-letter topic with the raw body and the reason, and the answer is
//!    still 200: Shopify resending the same bytes cannot help;
//! 5. events and dead letters are published and flushed; 200 only once Kafka acknowledged
//!    them, 503 if it did not within `ack_deadline` (Shopify retries; the deterministic event
//!    ids make the processor count a retry once).
//!
//! Topics: `orders/create` → `order.placed`; `orders/paid` → `order.paid` at the delivery's
//! `X-Shopify-Triggered-At` (when Shopify recorded the payment, the same on every retry; the
//! order's `processed_at` is normally its creation time; a delivery without a readable header
//! is dead-lettered); `orders/cancelled` → `order.cancelled`; `refunds/create` →
//! `order.refunded` (placed time from an earlier order delivery of this process; otherwise
//! dead-lettered as `order_unknown` — the same refund arrives with `orders/updated` and the
//! backfill under the same event id); `fulfillments/create` and `fulfillments/update` →
//! `order.shipped` (carrier, tracking number) and, once `shipment_status` is `delivered`,
//! `order.delivered` (see [`Mapper::fulfillment`]; the placed time comes from an earlier order
//! delivery, as for refunds, else `order_unknown`: shipments count on the order's date);
//! `orders/updated` → the fulfilments (`order.shipped`, `order.delivered`),
//! cancellation and refunds it shows within `updated_lookback` (not the payment: the order
//! does not say when it was paid). Other topics are acknowledged and counted as ignored; test
//! orders likewise.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use kpiflow_schemas::Channel;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::WebhookConfig;
use super::mapping::{Facts, Mapper, OrderLines};
use super::payload::{Fulfillment, Order, Refund, decode};
use super::{WEBHOOK_COMPONENT, WEBHOOK_NAME, WEBHOOK_SECTION};
use crate::connector::{Connector, RunStats, StopReason};
use crate::pull::Origin;
use crate::pull::secret::Secret;
use crate::push::health::PushHealth;
use crate::push::metrics::{PushMetrics, PushStats};
use crate::push::queue::{Delivery, Rejected};
use crate::push::receiver::{self, Mapped, PushMapper, Receiver, ReceiverOptions, header};
use crate::push::recent::RecentMap;
use crate::{IngestError, Publish};

/// Header names Shopify sends.
pub mod headers {
    /// The signature.
    pub const HMAC: &str = "x-shopify-hmac-sha256";
    /// `orders/create`, …
    pub const TOPIC: &str = "x-shopify-topic";
    /// `acme.myshopify.com`.
    pub const SHOP_DOMAIN: &str = "x-shopify-shop-domain";
    /// The event's id, the same on every retry.
    pub const EVENT_ID: &str = "x-shopify-event-id";
    /// The webhook delivery's id.
    pub const WEBHOOK_ID: &str = "x-shopify-webhook-id";
    /// When the event that triggered the delivery happened (RFC 3339, UTC), e.g.
    /// `2026-11-03T14:20:11.250Z`: for `orders/paid`, the payment.
    pub const TRIGGERED_AT: &str = "x-shopify-triggered-at";
}

/// The receiver; a [`Connector`] that serves until shutdown.
pub struct ShopifyWebhook {
    cfg: WebhookConfig,
    metrics: PushMetrics,
}

impl ShopifyWebhook {
    /// Validates `cfg`; nothing is read or bound yet.
    pub fn new(cfg: WebhookConfig) -> Result<ShopifyWebhook, IngestError> {
        cfg.validate()?;
        let origins = cfg.shops.values().map(|s| Origin {
            shop: s.shop.clone(),
            channel: Channel::Shopify,
            marketplace: s.marketplace.clone(),
            source_tz: s.time_zone,
        });
        let health = Arc::new(PushHealth::new(WEBHOOK_NAME, origins));
        Ok(ShopifyWebhook {
            cfg,
            metrics: PushMetrics::new(WEBHOOK_COMPONENT).with_health(health),
        })
    }

    /// Per-store health: source metrics and heartbeats.
    pub fn health(&self) -> &Arc<PushHealth> {
        self.metrics.health().expect("set in new")
    }

    /// The counters of this receiver.
    pub fn stats(&self) -> PushStats {
        self.metrics.snapshot()
    }

    /// Resolves the client secret and binds the listener.
    pub async fn bind(&self) -> Result<Receiver, IngestError> {
        let secret = self.cfg.client_secret.resolve(&secret_key())?;
        self.bind_with_secret(secret).await
    }

    /// Like [`ShopifyWebhook::bind`] with a secret obtained elsewhere.
    pub async fn bind_with_secret(&self, secret: Secret) -> Result<Receiver, IngestError> {
        let c = &self.cfg;
        let opts = ReceiverOptions {
            listen: c.listen,
            listen_key: format!("{WEBHOOK_SECTION}.listen"),
            path: c.path.clone(),
            signature_header: headers::HMAC.into(),
            max_body_bytes: c.max_body_bytes,
            ack_deadline: c.ack_deadline,
            recent_deliveries: c.recent_deliveries,
            queue_capacity: c.queue_capacity,
            http: c.http.clone(),
        };
        let mapper = Arc::new(ShopifyMapper {
            order_dates: RecentMap::new(c.recent_deliveries),
            lookback: TimeDelta::from_std(c.updated_lookback).unwrap_or(TimeDelta::MAX),
            cfg: c.clone(),
        });
        receiver::bind(opts, secret, mapper, self.metrics.clone()).await
    }
}

impl Connector for ShopifyWebhook {
    fn name(&self) -> &'static str {
        WEBHOOK_NAME
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(async move {
            let began = Instant::now();
            publisher.ensure_topics().await?;
            let receiver = self.bind().await?;
            tracing::info!(addr = %receiver.local_addr(), path = %self.cfg.path,
                "shopify webhook receiver listening");
            let beating =
                self.health()
                    .beat(publisher, self.cfg.heartbeat_interval, shutdown.clone());
            let (served, ()) = tokio::join!(receiver.serve(publisher, shutdown.clone()), beating);
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

/// The client secret's config key, named in errors.
fn secret_key() -> String {
    format!("{WEBHOOK_SECTION}.client_secret")
}

/// Builds the connector from its section (the registry's entry point, shared by `ingest` and
/// `check-config`). The secret is read again when the receiver binds; checking it here
/// refuses a missing one before any I/O.
pub(crate) fn build(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    let cfg = WebhookConfig::from_value(&section)?;
    let hook = ShopifyWebhook::new(cfg)?;
    hook.cfg.client_secret.check(&secret_key())?;
    Ok(Box::new(hook))
}

/// Shopify's half of the receiver.
struct ShopifyMapper {
    cfg: WebhookConfig,
    /// Order id → created_at, from order deliveries, for `refunds/create` and
    /// `fulfillments/*` (their payloads lack it).
    order_dates: RecentMap<DateTime<Utc>>,
    lookback: TimeDelta,
}

impl PushMapper for ShopifyMapper {
    fn delivery_id(&self, h: &HeaderMap) -> Option<String> {
        // One event can trigger several topics under one event id: the topic is part of the key.
        let topic = header(h, headers::TOPIC).unwrap_or_default();
        header(h, headers::EVENT_ID)
            .or_else(|| header(h, headers::WEBHOOK_ID))
            .map(|id| format!("{topic}:{id}"))
    }

    fn map(&self, h: &HeaderMap, body: &[u8]) -> Mapped {
        let topic = header(h, headers::TOPIC).unwrap_or_default();
        let domain = header(h, headers::SHOP_DOMAIN).unwrap_or_default();
        self.map_topic(topic, domain, header(h, headers::TRIGGERED_AT), body)
    }
}

impl ShopifyMapper {
    fn map_topic(
        &self,
        topic: &str,
        domain: &str,
        triggered_at: Option<&str>,
        body: &[u8],
    ) -> Mapped {
        let dead = |kind: &'static str, reason: String| {
            Mapped::Publish(Delivery {
                events: vec![],
                dead_letters: vec![Rejected {
                    kind,
                    reason,
                    raw: body.to_vec(),
                }],
            })
        };
        let facts = match topic {
            "orders/create" => Facts::Placed,
            "orders/paid" => match triggered_at.map(|t| (t, DateTime::parse_from_rfc3339(t))) {
                Some((_, Ok(at))) => Facts::Paid {
                    at: at.with_timezone(&Utc),
                },
                Some((t, Err(_))) => {
                    return dead(
                        "invalid",
                        format!(
                            "shopify {topic}: header X-Shopify-Triggered-At = {t:?}: expected an RFC 3339 time such as \"2026-11-03T14:20:11.250Z\" (the paid time)"
                        ),
                    );
                }
                None => {
                    return dead(
                        "invalid",
                        format!(
                            "shopify {topic}: header X-Shopify-Triggered-At is missing (the paid time)"
                        ),
                    );
                }
            },
            "orders/cancelled" => Facts::Cancelled,
            "orders/updated" => Facts::Updated {
                lookback: self.lookback,
            },
            "refunds/create" | "fulfillments/create" | "fulfillments/update" => Facts::All,
            _ => return Mapped::Ignore("ignored_topic"),
        };
        let Some(shop) = self.cfg.shops.get(domain) else {
            return dead(
                "unknown_shop",
                format!(
                    "shopify {topic}: header X-Shopify-Shop-Domain {domain:?} is not a store under {WEBHOOK_SECTION}.shops"
                ),
            );
        };
        let mapper = Mapper {
            shop,
            source: WEBHOOK_NAME,
            now: Utc::now(),
        };
        let events = if topic.starts_with("fulfillments/") {
            let f: Fulfillment = match decode(body) {
                Ok(f) => f,
                Err(e) => return dead("invalid", format!("shopify {topic}: {e}")),
            };
            let Some(order_id) = f.order_id else {
                return dead(
                    "invalid",
                    format!(
                        "shopify {topic}: fulfillment {}: field `order_id` is missing",
                        f.id
                    ),
                );
            };
            let Some(placed) = self.order_dates.get(&order_id.to_string()) else {
                return dead(
                    "order_unknown",
                    format!(
                        "shopify {topic}: fulfillment {} of order {order_id}: the order's created_at is unknown to this receiver (fulfillment payloads do not carry it; shipments and returns count on the order's date); the shipment also arrives with orders/updated and the shopify_orders backfill under the same event id",
                        f.id
                    ),
                );
            };
            // The payload is the fulfilment itself: every fact it shows is this delivery's.
            mapper.fulfillment(
                &order_id.to_string(),
                placed,
                &f,
                OrderLines::default(),
                &|_| true,
            )
        } else if topic == "refunds/create" {
            let refund: Refund = match decode(body) {
                Ok(r) => r,
                Err(e) => return dead("invalid", format!("shopify {topic}: {e}")),
            };
            let Some(placed) = self.order_dates.get(&refund.order_id.to_string()) else {
                return dead(
                    "order_unknown",
                    format!(
                        "shopify {topic}: refund {} of order {}: the order's created_at is unknown to this receiver (refund payloads do not carry it); the refund also arrives with orders/updated and the shopify_orders backfill under the same event id",
                        refund.id, refund.order_id
                    ),
                );
            };
            mapper
                .refund(&refund, placed, None)
                .map(|e| e.into_iter().collect())
        } else {
            let order: Order = match decode(body) {
                Ok(o) => o,
                Err(e) => return dead("invalid", format!("shopify {topic}: {e}")),
            };
            if order.test {
                return Mapped::Ignore("test_order");
            }
            self.order_dates
                .insert(&order.id.to_string(), order.created_at.0);
            mapper.order(&order, facts)
        };
        match events {
            Ok(events) => Mapped::Publish(Delivery {
                events,
                dead_letters: vec![],
            }),
            Err(e) => dead("invalid", format!("shopify {topic}: {e}")),
        }
    }
}
