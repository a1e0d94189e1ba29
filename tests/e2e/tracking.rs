//! Carrier tracking end to end: the real `aftership_webhook` and `track17_webhook` receivers
//! take signed pushes over HTTP into a real broker, beside the placements and shipments the
//! marketplaces' order connectors publish (built by hand, `by_hand::Seller`), and the
//! processor's on-time delivery rate is the value worked out by hand from domain.md: tracked
//! units delivered by the promised date / tracked units, seller-fulfilled, keyed on the
//! promised date.
//!
//! The pushes are built here in the shapes the receivers' module doc gives
//! (`ingest/src/connectors/tracking/`; AfterShip's legacy tracking fields and 17TRACK's v2.2
//! push, both unconfirmed against live traffic), and signed as it documents:
//! AfterShip `aftership-hmac-sha256: base64(HMAC-SHA256(body, secret))`, 17TRACK
//! `sign: hex(SHA256(body + "/" + key))` — computed with `hmac`/`sha2`, not the receiver's code.
//!
//! By hand, FBM Amazon shop (AfterShip, Pacific; its table names no marketplace): three MFN
//! orders of one unit, due 2026-11-04T07:59:59Z, promised (`LatestDeliveryDate`) by
//! 2026-11-09T07:59:59Z, the end of 2026-11-08 in Pacific (PST, UTC-8); AfterShip's
//! `expected_delivery` "2026-11-08" is the same instant. Amazon counts every FBM shipment as
//! tracked → 3 tracked units.
//! - 113-…01: in transit, out for delivery, delivered 2026-11-07T13:48-08:00 = 21:48Z, before
//!   the promise; the delivered push is retried twice (the same body, the same id) → 1.
//! - 113-…02: delivered 2026-11-10T11:30-08:00 = 19:30Z, after the promise → 0.
//! - 113-…03: its delivered push names no order (dead letter, `msg.order_id`); the push that
//!   does, delivered on time, carries a wrong signature (401, nothing published) → 0.
//! - rolling_30d: 1 / 3.
//!
//! Walmart shop (17TRACK, Chicago): two seller-fulfilled orders of one unit, promised
//! (`estimatedDeliveryDate`) by 2026-11-12T05:59:59Z, the end of 2026-11-11 in Chicago (CST,
//! UTC-6), which 17TRACK's `estimated_delivery_date.to` gives too; both shipped with a tracking
//! number → 2 tracked units.
//! - 108800000001: in transit, delivered 2026-11-10T10:15-06:00 = 16:15Z, before → 1.
//! - 108800000002: delivered 2026-11-12T11:02-06:00 = 17:02Z, after → 0; then a
//!   `TRACKING_STOPPED` push (acknowledged, nothing published).
//! - a delivered push without `data.tag` (dead letter); a wrong signature (401).
//! - rolling_30d: 1 / 2.
//!
//! TikTok Shop shop (17TRACK): one seller-fulfilled order, in transit and delivered. TikTok's
//! order search gives no promised delivery (`tiktok_shop_orders` publishes none), so its
//! shipment is not a tracked unit: 0 tracked units, no rate.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use hmac::{KeyInit, Mac};
use kpiflow_ingest::connectors::tracking::{Provider, TrackingConfig, TrackingWebhook};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_ingest::pull::secret::Secret;
use kpiflow_ingest::push::metrics::PushStats;
use kpiflow_ingest::{IngestError, Publish};
use kpiflow_schemas::{DeadLetter, Fulfilment, KpiUpdate, Topic};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::by_hand::{self, AMAZON, ByHand, Shipment, TIKTOK_SHOP, WALMART};
use super::push_http::post;
use super::read_all;
use super::shopify_fulfilments::{BEFORE_DELIVERY, DELIVERIES, StoreHook};

const AFTERSHIP_SECRET: &str = "aftership-e2e-webhook-secret";
const TRACK17_KEY: &str = "17track-e2e-security-key";
const FBM: &str = "shop-fbm-e2e";
const WALMART_SHOP: &str = "shop-walmart-e2e";
const TIKTOK: &str = "shop-tiktok-e2e";

/// AfterShip's documented signature: base64 of HMAC-SHA256 over the body, keyed with `secret`.
fn aftership_sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// 17TRACK's documented signature: lower-case hex SHA256 of the body, "/" and the key.
fn track17_sign(key: &str, body: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(body);
    h.update(b"/");
    h.update(key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One running receiver.
struct Hook {
    provider: Provider,
    hook: TrackingWebhook,
    addr: SocketAddr,
    stop: CancellationToken,
    serving: JoinHandle<Result<(), IngestError>>,
}

impl Hook {
    /// Starts `provider`'s receiver for the table `table` (listen and secret added).
    async fn start(provider: Provider, table: Value, publisher: Arc<KafkaPublisher>) -> Hook {
        let mut table = table;
        let t = table.as_object_mut().unwrap();
        t.insert("listen".into(), "127.0.0.1:0".into());
        t.insert("secret".into(), "env:KPIFLOW_TEST_UNUSED".into());
        let cfg = TrackingConfig::from_value(provider, &table).unwrap();
        let hook = TrackingWebhook::new(provider, cfg).unwrap();
        let secret = match provider {
            Provider::AfterShip => AFTERSHIP_SECRET,
            Provider::Track17 => TRACK17_KEY,
        };
        let bound = hook.bind_with_secret(Secret::new(secret)).await.unwrap();
        let addr = bound.local_addr();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let serving = tokio::spawn(async move { bound.serve(publisher.as_ref(), s).await });
        Hook {
            provider,
            hook,
            addr,
            stop,
            serving,
        }
    }

    /// Posts `push` signed with `secret`; returns the status.
    async fn post_signed(&self, push: &Value, secret: &str) -> u16 {
        let body = serde_json::to_vec(push).unwrap();
        let (path, header, sig) = match self.provider {
            Provider::AfterShip => (
                "/webhooks/aftership",
                "aftership-hmac-sha256",
                aftership_sign(secret, &body),
            ),
            Provider::Track17 => ("/webhooks/17track", "sign", track17_sign(secret, &body)),
        };
        post(self.addr, path, &[(header, &sig)], &body).await.status
    }

    /// Posts `push` correctly signed; it must be answered 200 (only once Kafka acknowledged).
    async fn push(&self, push: &Value) {
        let secret = match self.provider {
            Provider::AfterShip => AFTERSHIP_SECRET,
            Provider::Track17 => TRACK17_KEY,
        };
        assert_eq!(self.post_signed(push, secret).await, 200, "{push}");
    }

    async fn finish(self) -> PushStats {
        self.stop.cancel();
        self.serving.await.unwrap().unwrap();
        self.hook.stats()
    }
}

/// An AfterShip `tracking_update` push: `tag`, the order id (`None`: neither `order_id` nor
/// `order_number`), the checkpoints (time, tag) oldest first; a delivered one carries its
/// `shipment_delivery_date` (the last checkpoint's time) and `expected_delivery`.
fn aftership(
    tracking: &str,
    tag: &str,
    order_id: Option<&str>,
    expected: Option<&str>,
    checkpoints: &[(&str, &str)],
) -> Value {
    let delivered = (tag == "Delivered").then(|| checkpoints.last().unwrap().0);
    json!({
        "event": "tracking_update",
        "event_id": format!("e2e-{tracking}-{tag}"),
        "msg": {
            "tracking_number": tracking,
            "slug": "usps",
            "tag": tag,
            "order_id": order_id,
            "order_number": null,
            "expected_delivery": expected,
            "shipment_delivery_date": delivered,
            "checkpoints": checkpoints.iter().map(|(at, tag)| json!({
                "slug": "usps", "checkpoint_time": at, "tag": tag, "message": tag,
            })).collect::<Vec<_>>(),
        },
        "ts": 1_794_000_000,
    })
}

/// A 17TRACK `TRACKING_UPDATED` push: `status` reached at `at` (ISO with offset), the order id
/// as `tag` (`None`: null), the estimated delivery window's end `eta_to`.
fn track17(number: &str, status: &str, tag: Option<&str>, at: &str, eta_to: &str) -> Value {
    let utc = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "event": "TRACKING_UPDATED",
        "data": {
            "number": number,
            "carrier": 190008,
            "param": null,
            "tag": tag,
            "track_info": {
                "latest_status": {"status": status, "sub_status": format!("{status}_Other")},
                "latest_event": {"time_iso": at, "time_utc": utc, "description": status},
                "time_metrics": {"estimated_delivery_date": {
                    "source": "Official", "from": null, "to": eta_to}},
                "milestone": [],
            },
        },
    })
}

/// Newest rows of `kpi` in `window` for `shop` that `covering` accepts.
fn rows_of<'a>(
    latest: &'a std::collections::BTreeMap<String, KpiUpdate>,
    shop: &'a str,
    kpi: &'a str,
    covering: &'a dyn Fn(&KpiUpdate) -> bool,
) -> impl Iterator<Item = &'a KpiUpdate> {
    latest
        .values()
        .filter(move |u| u.kpi == kpi && u.scope.shop == shop && covering(u))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_tracking_through_the_broker_gives_on_time_delivery_by_hand() {
    let (kafka, publisher) = by_hand::broker("tracking").await;
    let publisher = Arc::new(publisher);

    // What the order connectors publish: placements and shipments, in time order.
    let fbm = |n: u32| format!("113-0000000-00000{n:02}");
    for n in 1..=3 {
        let placed = format!("2026-11-02T17:{:02}:00Z", 10 * (n - 1));
        let shipped = format!("2026-11-03T19:{:02}:00Z", 10 * (n - 1));
        let ship = Shipment {
            placed: &placed,
            shipped: &shipped,
            ship_by: "2026-11-04T07:59:59Z",
            deliver_by: Some("2026-11-09T07:59:59Z"),
            units: 1,
            tracking_id: None,
            tracking_valid: true,
        };
        for e in [
            AMAZON.placed(FBM, &fbm(n), &placed, Fulfilment::Merchant, 1),
            AMAZON.shipped(FBM, &fbm(n), &ship),
        ] {
            publisher.publish(&e).await.unwrap();
        }
    }
    let po = |n: u32| format!("10880000000{n}");
    let wm_tracking = |n: u32| format!("9261290100130436000{n:03}");
    for n in 1..=2 {
        let placed = format!("2026-11-03T15:{:02}:00Z", 10 * (n - 1));
        let shipped = format!("2026-11-04T18:{:02}:00Z", 10 * (n - 1));
        let tracking = wm_tracking(n);
        let ship = Shipment {
            placed: &placed,
            shipped: &shipped,
            ship_by: "2026-11-05T05:59:59Z",
            deliver_by: Some("2026-11-12T05:59:59Z"),
            units: 1,
            tracking_id: Some(&tracking),
            tracking_valid: true,
        };
        for e in [
            WALMART.placed(WALMART_SHOP, &po(n), &placed, Fulfilment::Merchant, 1),
            WALMART.shipped(WALMART_SHOP, &po(n), &ship),
        ] {
            publisher.publish(&e).await.unwrap();
        }
    }
    let tt_order = "577138291045001";
    let ship = Shipment {
        placed: "2026-11-02T01:00:00Z",
        shipped: "2026-11-03T07:10:00Z",
        ship_by: "2026-11-04T01:00:00Z",
        deliver_by: None,
        units: 1,
        tracking_id: Some("YT2531021266035577"),
        tracking_valid: true,
    };
    for e in [
        TIKTOK_SHOP.placed(TIKTOK, tt_order, ship.placed, Fulfilment::Merchant, 1),
        TIKTOK_SHOP.shipped(TIKTOK, tt_order, &ship),
    ] {
        publisher.publish(&e).await.unwrap();
    }

    // The FBM shop's parcels through AfterShip.
    let amz = Hook::start(
        Provider::AfterShip,
        json!({"shop": FBM, "channel": "amazon", "time_zone": "America/Los_Angeles"}),
        publisher.clone(),
    )
    .await;
    let picked_up = ("2026-11-03T15:30:00-08:00", "InTransit");
    let out_for_delivery = ("2026-11-07T06:10:00-08:00", "OutForDelivery");
    let on_time = ("2026-11-07T13:48:00-08:00", "Delivered");
    let parcel = |n: u32| format!("94001118992238175765{n:02}");
    let first = Some(fbm(1));
    amz.push(&aftership(
        &parcel(1),
        "InTransit",
        first.as_deref(),
        None,
        &[picked_up],
    ))
    .await;
    amz.push(&aftership(
        &parcel(1),
        "OutForDelivery",
        first.as_deref(),
        Some("2026-11-08"),
        &[picked_up, out_for_delivery],
    ))
    .await;
    let delivered = aftership(
        &parcel(1),
        "Delivered",
        first.as_deref(),
        Some("2026-11-08"),
        &[picked_up, out_for_delivery, on_time],
    );
    // AfterShip retries a push it saw no 200 for: here twice more, the same body.
    for _ in 0..3 {
        amz.push(&delivered).await;
    }
    amz.push(&aftership(
        &parcel(2),
        "Delivered",
        Some(&fbm(2)),
        Some("2026-11-08"),
        &[picked_up, ("2026-11-10T11:30:00-08:00", "Delivered")],
    ))
    .await;
    // The seller created parcel 3's tracking without the order: nothing to count it against.
    amz.push(&aftership(
        &parcel(3),
        "Delivered",
        None,
        Some("2026-11-08"),
        &[picked_up, ("2026-11-08T10:00:00-08:00", "Delivered")],
    ))
    .await;
    let forged = aftership(
        &parcel(3),
        "Delivered",
        Some(&fbm(3)),
        Some("2026-11-08"),
        &[picked_up, ("2026-11-08T10:00:00-08:00", "Delivered")],
    );
    assert_eq!(amz.post_signed(&forged, "not-the-secret").await, 401);
    let amz_stats = amz.finish().await;
    assert_eq!(
        (amz_stats.published, amz_stats.dead_lettered),
        (6, 1),
        "2 milestones, 3 copies of one delivery and another delivery; parcel 3 dead-lettered"
    );
    assert_eq!(amz_stats.rejected["signature_mismatch"], 1);

    // The Walmart shop's parcels through 17TRACK.
    let wm = Hook::start(
        Provider::Track17,
        json!({"shop": WALMART_SHOP, "channel": "walmart", "time_zone": "America/Chicago"}),
        publisher.clone(),
    )
    .await;
    let eta = "2026-11-11T23:59:59-06:00";
    let (one, two) = (Some(po(1)), Some(po(2)));
    for push in [
        track17(
            &wm_tracking(1),
            "InTransit",
            one.as_deref(),
            "2026-11-08T22:40:00-08:00",
            eta,
        ),
        track17(
            &wm_tracking(1),
            "Delivered",
            one.as_deref(),
            "2026-11-10T10:15:00-06:00",
            eta,
        ),
        track17(
            &wm_tracking(2),
            "Delivered",
            two.as_deref(),
            "2026-11-12T11:02:00-06:00",
            eta,
        ),
        json!({"event": "TRACKING_STOPPED", "data": {"number": wm_tracking(2), "carrier": 190008}}),
        track17(
            "LZ448702913CN",
            "Delivered",
            None,
            "2026-11-10T09:00:00-06:00",
            eta,
        ),
    ] {
        wm.push(&push).await;
    }
    let forged = track17(
        "LZ448702913CN",
        "Delivered",
        one.as_deref(),
        "2026-11-10T09:00:00-06:00",
        eta,
    );
    assert_eq!(wm.post_signed(&forged, "not-the-key").await, 401);
    let wm_stats = wm.finish().await;
    assert_eq!((wm_stats.published, wm_stats.dead_lettered), (3, 1));
    assert_eq!(wm_stats.rejected["not_a_tracking_update"], 1);
    assert_eq!(wm_stats.rejected["signature_mismatch"], 1);

    // The TikTok Shop shop's parcel through 17TRACK.
    let tt = Hook::start(
        Provider::Track17,
        json!({"shop": TIKTOK, "channel": "tiktok_shop", "time_zone": "America/Chicago"}),
        publisher.clone(),
    )
    .await;
    for (status, at) in [
        ("InTransit", "2026-11-08T22:40:00-08:00"),
        ("Delivered", "2026-11-10T11:02:00-06:00"),
    ] {
        tt.push(&track17(
            "YT2531021266035577",
            status,
            Some(tt_order),
            at,
            eta,
        ))
        .await;
    }
    let tt_stats = tt.finish().await;
    assert_eq!((tt_stats.published, tt_stats.dead_lettered), (2, 0));

    // The dead letters name the field, on the broker.
    let reasons: Vec<String> = read_all(&kafka, Topic::DeadLetter)
        .iter()
        .map(|d| serde_json::from_slice::<DeadLetter>(d).unwrap().reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "aftership webhook: field `msg.order_id`: missing or empty, and so is msg.order_number: set the order id on the tracking when creating it",
            "17track webhook: field `data.tag`: missing or empty: register the number with the order id as its tag",
        ]
    );

    // Every promise (and every delivery's deliver_by) falls from 2026-11-09T07:59:59Z to
    // 2026-11-12T05:59:59Z.
    let holds = by_hand::holding("2026-11-09T07:59:59Z", "2026-11-12T05:59:59Z");
    let want: [ByHand; 2] = [
        ("on_time_delivery_rate", "rolling_30d", 1, 3),
        ("on_time_delivery_rate", "rolling_30d", 1, 2),
    ];
    let (stats, latest) = by_hand::process(&kafka, &["on_time_delivery_rate"], &holds, &want).await;
    assert_eq!(
        stats.received,
        12 + 6 + 3 + 2,
        "6 placements and shipments (FBM), 4 (Walmart), 2 (TikTok); 6, 3 and 2 tracking events"
    );
    assert_eq!(stats.duplicates, 2, "the FBM delivered push, retried twice");
    assert_eq!(stats.dead_lettered, 0, "nothing late, nothing refused");
    for (shop, want) in [(FBM, &want[..1]), (WALMART_SHOP, &want[1..])] {
        let covering = |u: &KpiUpdate| u.scope.shop == shop && holds(u);
        by_hand::check(&latest, shop, &covering, want);
    }
    // The FBM shop's deliveries sit in the scope of its Amazon orders (ATVPDKIKX0DER), not in
    // one of their own.
    let everywhere = |_: &KpiUpdate| true;
    let scopes: std::collections::BTreeSet<String> =
        rows_of(&latest, FBM, "on_time_delivery_rate", &everywhere)
            .map(|u| u.scope.marketplace.clone())
            .collect();
    assert_eq!(scopes, ["ATVPDKIKX0DER".to_string()].into());
    // TikTok Shop: no tracked unit, so no rate.
    let tiktok: Vec<&KpiUpdate> =
        rows_of(&latest, TIKTOK, "on_time_delivery_rate", &holds).collect();
    assert!(
        tiktok
            .iter()
            .all(|u| u.value.is_none() && u.denominator.is_none_or(|d| d.0.is_zero())),
        "{tiktok:#?}"
    );
}

/// One parcel reported delivered by the store (`shopify_webhook`, `shipment_status:
/// delivered`) and by AfterShip (the same tracking number) counts once, and as the store
/// counts it: the store knows the fulfilment's units and its own promise, the push neither.
///
/// By hand, as in `shopify_fulfilments.rs`: tracked units 3 (#1042, UPS 1Z999AA10123456784,
/// promised 2026-11-07T17:03Z) + 1 (#1045, promised 20:40Z) = 4; #1042 delivered on
/// 2026-11-05, before its promise → 3 on time; #1045 late → 3 / 4. AfterShip reports #1042's
/// delivery first (it is the one that learns it from the carrier), 2026-11-05T14:12:30-05:00,
/// expected "2026-11-06"; counted as an `order.delivered` it would have been the parcel's first
/// report and made the rate 1 unit / 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parcel_the_store_and_aftership_both_report_delivered_counts_once_as_the_store_counts_it()
{
    const SHOP: &str = "shop-shopify-tracked-e2e";
    let (kafka, publisher) = by_hand::broker("trackshop").await;
    let publisher = Arc::new(publisher);
    let store = StoreHook::start(SHOP, publisher.clone()).await;
    let aftership_hook = Hook::start(
        Provider::AfterShip,
        json!({"shop": SHOP, "channel": "shopify", "time_zone": "America/New_York"}),
        publisher.clone(),
    )
    .await;
    for (topic, file) in BEFORE_DELIVERY {
        store.post(topic, file).await;
    }
    aftership_hook
        .push(&aftership(
            "1Z999AA10123456784",
            "Delivered",
            Some("5501234567890"),
            Some("2026-11-06"),
            &[
                ("2026-11-03T09:00:00-05:00", "InTransit"),
                ("2026-11-05T14:12:30-05:00", "Delivered"),
            ],
        ))
        .await;
    for (topic, file) in DELIVERIES {
        store.post(topic, file).await;
    }
    let tracked = aftership_hook.finish().await;
    assert_eq!((tracked.published, tracked.dead_lettered), (1, 0));
    let stored = store.finish().await;
    assert_eq!((stored.published, stored.dead_lettered), (10, 0));

    let covering = by_hand::holding("2026-11-07T17:03:00Z", "2026-11-07T23:05:00Z");
    let want: [ByHand; 1] = [("on_time_delivery_rate", "rolling_30d", 3, 4)];
    let (stats, latest) =
        by_hand::process(&kafka, &["on_time_delivery_rate"], &covering, &want).await;
    by_hand::check(&latest, SHOP, &covering, &want);
    assert_eq!(
        (stats.received, stats.duplicates, stats.dead_lettered),
        (11, 2, 0),
        "the store's 10 events (#1042's shipment twice again) and AfterShip's milestone"
    );
}
