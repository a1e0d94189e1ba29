//! The Shopify webhook receiver over real HTTP: signatures, body limit, retries, dead letters,
//! and (through a real broker) acknowledgement only after Kafka stored the events.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kpiflow_core::{ComponentMetrics, KafkaConfig};
use kpiflow_ingest::connectors::shopify::{ShopifyWebhook, WebhookConfig};
use kpiflow_ingest::pull::secret::{Secret, SecretRef};
use kpiflow_ingest::push::signature::sign;
use kpiflow_ingest::{KafkaPublisher, MemoryPublisher, Publish};
use kpiflow_schemas::{CancelledBy, DeadLetter, Event, EventBody, Money, Topic};
use tokio_util::sync::CancellationToken;

use super::push_http::{Response, post};

const SECRET: &str = "shpss_test_client_secret_0123456789";
const DOMAIN: &str = "acme-ceramics.myshopify.com";
const PATH: &str = "/webhooks/shopify";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/shopify")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn config() -> WebhookConfig {
    let v = serde_json::json!({
        "listen": "127.0.0.1:0",
        "client_secret": "env:KPIFLOW_TEST_UNUSED",
        "max_body_bytes": 16384,
        "ack_deadline": "3s",
        "shops": { DOMAIN: { "shop": "shop-003", "time_zone": "America/New_York" } },
    });
    WebhookConfig::from_value(&v).expect("valid test config")
}

/// A receiver serving on a free port with `publisher`, until the returned token is cancelled.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) hook: std::sync::Arc<ShopifyWebhook>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start(cfg: WebhookConfig, publisher: std::sync::Arc<dyn Publish>) -> Running {
    let hook = std::sync::Arc::new(ShopifyWebhook::new(cfg).expect("valid"));
    let bound = hook
        .bind_with_secret(Secret::new(SECRET))
        .await
        .expect("bind");
    let addr = bound.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        bound.serve(publisher.as_ref(), s).await.expect("serve");
    });
    Running {
        addr,
        hook,
        stop,
        task,
    }
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("receiver task");
    }
}

/// Posts `body` as Shopify would, signed with `secret` (`None`: no signature header),
/// triggered at 2026-11-02T17:03:01.123Z.
pub(crate) async fn deliver(
    addr: SocketAddr,
    topic: &str,
    event_id: &str,
    body: &[u8],
    signature: Option<String>,
) -> Response {
    let at = Some("2026-11-02T17:03:01.123Z");
    deliver_at(addr, topic, event_id, body, signature, at).await
}

/// [`deliver`] with `X-Shopify-Triggered-At` = `triggered_at` (`None`: no such header).
pub(crate) async fn deliver_at(
    addr: SocketAddr,
    topic: &str,
    event_id: &str,
    body: &[u8],
    signature: Option<String>,
    triggered_at: Option<&str>,
) -> Response {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Shopify-Topic", topic.to_string()),
        ("X-Shopify-Shop-Domain", DOMAIN.to_string()),
        ("X-Shopify-Event-Id", event_id.to_string()),
        ("X-Shopify-Webhook-Id", format!("wh-{event_id}")),
        ("X-Shopify-API-Version", "2025-10".to_string()),
    ];
    if let Some(at) = triggered_at {
        headers.push(("X-Shopify-Triggered-At", at.to_string()));
    }
    if let Some(sig) = signature {
        headers.push(("X-Shopify-Hmac-Sha256", sig));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(addr, PATH, &headers, body).await
}

pub(crate) fn signed(body: &[u8]) -> Option<String> {
    Some(sign(&Secret::new(SECRET), body))
}

#[tokio::test]
async fn a_signed_order_is_published_and_bad_signatures_are_refused() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let body = fixture("orders_create.json");

    let wrong = sign(&Secret::new("someone-elses-secret"), &body);
    let resp = deliver(r.addr, "orders/create", "e-1", &body, Some(wrong)).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    let resp = deliver(r.addr, "orders/create", "e-1", &body, None).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    let mut tampered = body.clone();
    let at = String::from_utf8_lossy(&tampered).find("105.40").unwrap();
    tampered[at] = b'9'; // the total becomes 905.40, the signature stays the original's
    let resp = deliver(r.addr, "orders/create", "e-1", &tampered, signed(&body)).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    let resp = deliver(
        r.addr,
        "orders/create",
        "e-1",
        &body,
        Some("bm90IGEgdGFn".into()),
    )
    .await;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert!(publisher.events().is_empty() && publisher.dead_letters().is_empty());

    let resp = deliver(r.addr, "orders/create", "e-1", &body, signed(&body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let events = publisher.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.header.event_id, "shopify-5501234567890-placed");
    assert_eq!(e.header.shop, "shop-003");
    assert_eq!(e.header.source, "shopify_webhook");
    assert_eq!(e.header.source_tz.0.name(), "America/New_York");
    assert_eq!(
        e.header.event_time.to_rfc3339(),
        "2026-11-02T17:03:00+00:00"
    );
    let EventBody::OrderPlaced(p) = &e.body else {
        panic!("{e:?}")
    };
    assert_eq!(p.total, Money::usd("105.40"));
    assert_eq!(p.units, 3);

    // The store's heartbeat now shows the acknowledged delivery.
    let beats = r.hook.health().heartbeats();
    assert_eq!(beats.len(), 1);
    assert_eq!(beats[0].header.shop, "shop-003");
    let EventBody::SourceHeartbeat(b) = &beats[0].body else {
        panic!("{beats:?}")
    };
    assert_eq!(
        (b.connector.as_str(), b.records_published),
        ("shopify_webhook", 1)
    );
    assert!(b.last_success.is_some());
    assert_eq!(
        b.newest_event_time.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-11-02T17:03:00+00:00")
    );

    let stats = r.hook.stats();
    assert_eq!(stats.received, 5);
    assert_eq!(stats.published, 1);
    assert_eq!(stats.rejected["signature_mismatch"], 2);
    assert_eq!(stats.rejected["signature_missing"], 1);
    assert_eq!(stats.rejected["signature_malformed"], 1);
    r.stop().await;
}

#[tokio::test]
async fn a_retried_delivery_is_counted_once() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let body = fixture("orders_paid.json");
    for _ in 0..3 {
        let resp = deliver(r.addr, "orders/paid", "evt-paid-1", &body, signed(&body)).await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let events = publisher.events();
    assert_eq!(events.len(), 1, "published once: {events:?}");
    assert_eq!(events[0].header.event_id, "shopify-5501234567890-paid");
    assert_eq!(r.hook.stats().duplicates, 2);
    r.stop().await;

    // A receiver that restarted has forgotten the delivery: it publishes again, with the same
    // event id, which the processor counts once.
    let r = start(config(), publisher.clone()).await;
    let resp = deliver(r.addr, "orders/paid", "evt-paid-1", &body, signed(&body)).await;
    assert_eq!(resp.status, 200);
    let events = publisher.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].header.event_id, events[1].header.event_id);
    r.stop().await;
}

/// The paid basis: an order paid the next morning by bank deposit keeps its creation time as
/// `processed_at`; the `orders/paid` delivery's `X-Shopify-Triggered-At` is the paid time.
#[tokio::test]
async fn paid_is_the_time_the_paid_delivery_was_triggered() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let body = fixture("orders_paid.json");
    let at = Some("2026-11-03T14:20:11.250Z");
    let resp = deliver_at(r.addr, "orders/paid", "evt-p", &body, signed(&body), at).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let events = publisher.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].header.event_id, "shopify-5501234567890-paid");
    assert_eq!(
        events[0].header.event_time.to_rfc3339(),
        "2026-11-03T14:20:11.250+00:00",
        "not processed_at (2026-11-02T17:03:00Z)"
    );
    let EventBody::OrderPaid(p) = &events[0].body else {
        panic!("{events:?}")
    };
    assert_eq!(p.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
    assert_eq!(p.amount, Money::usd("105.40"));

    // Without a readable header there is no paid time: dead-lettered, named, still 200.
    for (id, at) in [("evt-p2", None), ("evt-p3", Some("yesterday"))] {
        let resp = deliver_at(r.addr, "orders/paid", id, &body, signed(&body), at).await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let reasons: Vec<String> = publisher
        .dead_letters()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "shopify orders/paid: header X-Shopify-Triggered-At is missing (the paid time)",
            "shopify orders/paid: header X-Shopify-Triggered-At = \"yesterday\": expected an RFC 3339 time such as \"2026-11-03T14:20:11.250Z\" (the paid time)",
        ]
    );
    assert_eq!(publisher.events().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn an_oversize_body_is_refused_with_413() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let mut big = fixture("orders_create.json");
    big.truncate(big.len() - 2);
    big.extend_from_slice(b", \"note\": \"");
    big.extend(std::iter::repeat_n(b'x', 20_000));
    big.extend_from_slice(b"\"}");
    let resp = deliver(r.addr, "orders/create", "e-big", &big, signed(&big)).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(publisher.events().is_empty());
    assert_eq!(r.hook.stats().rejected["too_large"], 1);
    r.stop().await;
}

#[tokio::test]
async fn a_malformed_payload_is_dead_lettered_and_the_next_one_published() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    let bad = String::from_utf8(fixture("orders_create.json"))
        .unwrap()
        .replace("\"total_price\": \"105.40\"", "\"total_price\": 105.4");
    let resp = deliver(
        r.addr,
        "orders/create",
        "e-bad",
        bad.as_bytes(),
        signed(bad.as_bytes()),
    )
    .await;
    assert_eq!(
        resp.status, 200,
        "retrying the same bytes cannot help: {resp:?}"
    );
    let not_json = b"{\"id\": 1, \"created_at\":";
    let resp = deliver(
        r.addr,
        "orders/create",
        "e-bad2",
        not_json,
        signed(not_json),
    )
    .await;
    assert_eq!(resp.status, 200);
    let unknown_shop = fixture("orders_create.json");
    let sig = signed(&unknown_shop).unwrap();
    let resp = post(
        r.addr,
        PATH,
        &[
            ("X-Shopify-Topic", "orders/create"),
            ("X-Shopify-Shop-Domain", "stranger.myshopify.com"),
            ("X-Shopify-Event-Id", "e-stranger"),
            ("X-Shopify-Hmac-Sha256", &sig),
        ],
        &unknown_shop,
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");

    let good = fixture("orders_create.json");
    let resp = deliver(r.addr, "orders/create", "e-good", &good, signed(&good)).await;
    assert_eq!(resp.status, 200);

    let dls = publisher.dead_letters();
    assert_eq!(dls.len(), 3, "{dls:?}");
    assert_eq!(dls[0].stage, "ingest.shopify_webhook");
    assert_eq!(dls[0].reason_kind, "invalid");
    assert!(
        dls[0].reason.starts_with(
            "shopify orders/create: field `total_price`: expected a decimal string such as \"12.34\", got the JSON number 105.4"
        ),
        "{}",
        dls[0].reason
    );
    assert_eq!(dls[0].payload, bad, "the raw body is kept");
    assert!(dls[1].reason.contains("not JSON"), "{}", dls[1].reason);
    assert_eq!(dls[2].reason_kind, "unknown_shop");
    assert!(
        dls[2].reason.contains("\"stranger.myshopify.com\""),
        "{}",
        dls[2].reason
    );
    assert_eq!(publisher.events().len(), 1, "the receiver kept going");
    let s = r.hook.stats();
    assert_eq!((s.dead_lettered, s.published), (3, 1));
    r.stop().await;
}

#[tokio::test]
async fn lifecycle_topics_map_to_their_facts() {
    let publisher = std::sync::Arc::new(MemoryPublisher::new());
    let r = start(config(), publisher.clone()).await;
    // A refund for an order this receiver has not seen cannot be dated by order: dead letter.
    let refund = fixture("refunds_create.json");
    let resp = deliver(r.addr, "refunds/create", "e-r0", &refund, signed(&refund)).await;
    assert_eq!(resp.status, 200);
    for (topic, file, id) in [
        ("orders/create", "orders_create.json", "e-1"),
        ("orders/updated", "orders_updated_fulfilled.json", "e-2"),
        ("orders/cancelled", "orders_cancelled.json", "e-3"),
        ("refunds/create", "refunds_create.json", "e-4"),
        ("products/update", "orders_create.json", "e-5"),
    ] {
        let body = fixture(file);
        let resp = deliver(r.addr, topic, id, &body, signed(&body)).await;
        assert_eq!(resp.status, 200, "{topic}: {resp:?}");
    }
    let got: Vec<(String, &'static str)> = publisher
        .events()
        .iter()
        .map(|e| (e.header.event_id.clone(), e.schema()))
        .collect();
    assert_eq!(
        got,
        [
            ("shopify-5501234567890-placed".to_string(), "order.placed"),
            // orders/updated: paid more than a day before the update is not re-announced.
            (
                "shopify-5501234567890-shipped-5100000000001".to_string(),
                "order.shipped"
            ),
            (
                "shopify-5501234567891-cancelled".to_string(),
                "order.cancelled"
            ),
            (
                "shopify-5501234567890-refund-930000000001".to_string(),
                "order.refunded"
            ),
        ]
    );
    let events = publisher.events();
    let EventBody::OrderShipped(s) = &events[1].body else {
        panic!()
    };
    assert_eq!(s.tracking_id.as_deref(), Some("1Z999AA10123456784"));
    assert_eq!(
        s.ship_by.to_rfc3339(),
        "2026-11-04T17:03:00+00:00",
        "created_at + 2 days"
    );
    let EventBody::OrderCancelled(c) = &events[2].body else {
        panic!()
    };
    assert_eq!(c.cancelled_by, CancelledBy::Buyer);
    let EventBody::OrderRefunded(f) = &events[3].body else {
        panic!()
    };
    assert_eq!(
        f.amount,
        Money::usd("36.57"),
        "the failed transaction is not counted"
    );
    assert_eq!(f.placed_at.to_rfc3339(), "2026-11-02T17:03:00+00:00");
    let dls = publisher.dead_letters();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].reason_kind, "order_unknown");
    assert_eq!(r.hook.stats().rejected["ignored_topic"], 1);
    r.stop().await;
}

#[tokio::test]
async fn healthz_answers() {
    let r = start(config(), std::sync::Arc::new(MemoryPublisher::new())).await;
    let resp = super::push_http::request(r.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok\n"));
    r.stop().await;
}

/// Through a real broker: 200 means the events are in Kafka, readable by a consumer; the
/// secret comes from a file as configured.
#[tokio::test]
async fn acknowledged_deliveries_are_in_kafka() {
    let kafka = crate::kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .expect("broker reachable");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client_secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut cfg = config();
    cfg.client_secret = SecretRef::File(secret_file);
    let hook = ShopifyWebhook::new(cfg).unwrap();
    let bound = hook.bind().await.expect("bind with the file secret");
    let addr = bound.local_addr();
    let publisher =
        KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.shopify_webhook")).unwrap();
    publisher.ensure_topics().await.unwrap();
    let stop = CancellationToken::new();
    let client = async {
        let bodies = [
            ("orders/create", "orders_create.json"),
            ("orders/paid", "orders_paid.json"),
        ];
        for (i, (topic, file)) in bodies.iter().enumerate() {
            let body = fixture(file);
            let resp = deliver(addr, topic, &format!("k-{i}"), &body, signed(&body)).await;
            assert_eq!(resp.status, 200, "{resp:?}");
        }
        let bad = b"[]";
        let resp = deliver(addr, "orders/paid", "k-bad", bad, signed(bad)).await;
        assert_eq!(resp.status, 200);
        stop.cancel();
    };
    let (served, ()) = tokio::join!(bound.serve(&publisher, stop.clone()), client);
    served.unwrap();

    let consumer = crate::consumer(&kafka, &[Topic::Orders, Topic::DeadLetter]);
    let got = crate::read(&kafka, &consumer, 3).await;
    let mut ids = Vec::new();
    for (topic, key, payload) in got {
        match topic {
            Topic::Orders => {
                assert_eq!(key, "shop-003");
                ids.push(Event::from_json(&payload).unwrap().header.event_id);
            }
            Topic::DeadLetter => {
                let dl: DeadLetter = serde_json::from_slice(&payload).unwrap();
                assert_eq!(dl.payload, "[]");
                assert_eq!(dl.reason_kind, "invalid");
            }
            other => panic!("unexpected topic {other:?}"),
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        ["shopify-5501234567890-paid", "shopify-5501234567890-placed"]
    );
    assert_eq!(hook.stats().published, 2);
}

/// When Kafka does not acknowledge within the deadline the answer is 503, so Shopify retries.
#[tokio::test]
async fn no_acknowledgement_from_kafka_means_503() {
    let kafka = KafkaConfig {
        bootstrap_servers: "127.0.0.1:1".into(),
        client: [("message.timeout.ms".to_string(), "60000".to_string())].into(),
        ..KafkaConfig::default()
    };
    let publisher: std::sync::Arc<dyn Publish> = std::sync::Arc::new(
        KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.test_503")).unwrap(),
    );
    let mut cfg = config();
    cfg.ack_deadline = Duration::from_millis(300);
    let r = start(cfg, publisher).await;
    let body = fixture("orders_create.json");
    let resp = deliver(r.addr, "orders/create", "e-1", &body, signed(&body)).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(r.hook.stats().published, 0);
    // Stopping waits for the worker, which waits up to message.timeout.ms for the lost record;
    // the test ends without stopping.
    r.stop.cancel();
}
