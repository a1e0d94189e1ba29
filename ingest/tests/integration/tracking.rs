//! The carrier tracking receivers (AfterShip, 17TRACK) through the real HTTP receiver: signed
//! pushes published, wrong signatures refused, delivered vs in transit, missing order ids
//! dead-lettered, a repeated push keeping its event id.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::connectors::tracking::{Provider, TrackingConfig, TrackingWebhook};
use kpiflow_ingest::pull::secret::Secret;
use kpiflow_ingest::push::signature::sign;
use kpiflow_schemas::{EventBody, Fulfilment, Milestone};
use sha2::Digest;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::push_http::post;

const AFTERSHIP_SECRET: &str = "aftership-webhook-secret";
const TRACK17_KEY: &str = "17track-security-key";

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct Running {
    hook: TrackingWebhook,
    addr: SocketAddr,
    publisher: Arc<MemoryPublisher>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), kpiflow_ingest::IngestError>>,
}

impl Running {
    async fn finish(self) -> TrackingWebhook {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.hook
    }
}

async fn start(provider: Provider, table: serde_json::Value, secret: &str) -> Running {
    let cfg = TrackingConfig::from_value(provider, &table).unwrap();
    let hook = TrackingWebhook::new(provider, cfg).unwrap();
    let receiver = hook.bind_with_secret(Secret::new(secret)).await.unwrap();
    let addr = receiver.local_addr();
    let publisher = Arc::new(MemoryPublisher::new());
    let stop = CancellationToken::new();
    let (p, s) = (publisher.clone(), stop.clone());
    let task = tokio::spawn(async move { receiver.serve(p.as_ref(), s).await });
    Running {
        hook,
        addr,
        publisher,
        stop,
        task,
    }
}

/// 17TRACK's documented signature, computed here independently of the receiver's code.
fn sign17(body: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(body);
    h.update(b"/");
    h.update(TRACK17_KEY.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn aftership_signed_pushes_are_published_and_wrong_signatures_refused() {
    let r = start(
        Provider::AfterShip,
        serde_json::json!({
            "shop": "shop-001", "channel": "amazon", "time_zone": "America/New_York",
            "listen": "127.0.0.1:0", "secret": "env:KPIFLOW_TEST_UNUSED",
        }),
        AFTERSHIP_SECRET,
    )
    .await;
    let path = "/webhooks/aftership";
    let delivered = fixture("aftership/delivered.json");
    let good = sign(&Secret::new(AFTERSHIP_SECRET), &delivered);
    let wrong = sign(&Secret::new("not-the-secret"), &delivered);

    assert_eq!(post(r.addr, path, &[], &delivered).await.status, 401);
    let resp = post(
        r.addr,
        path,
        &[("aftership-hmac-sha256", &wrong)],
        &delivered,
    )
    .await;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert!(r.publisher.events().is_empty());
    assert!(r.publisher.dead_letters().is_empty());

    let resp = post(
        r.addr,
        path,
        &[("Aftership-Hmac-Sha256", &good)],
        &delivered,
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    // AfterShip retries a push it did not see acknowledged: the same bytes, the same id.
    let resp = post(
        r.addr,
        path,
        &[("aftership-hmac-sha256", &good)],
        &delivered,
    )
    .await;
    assert_eq!(resp.status, 200);

    for name in ["aftership/in_transit.json", "aftership/no_order_id.json"] {
        let body = fixture(name);
        let sig = sign(&Secret::new(AFTERSHIP_SECRET), &body);
        let resp = post(r.addr, path, &[("aftership-hmac-sha256", &sig)], &body).await;
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
    }

    let events = r.publisher.events();
    assert_eq!(events.len(), 3, "{events:?}");
    let delivered_id = "delivered-shop-001-9400111899223817576593";
    assert_eq!(events[0].header.event_id, delivered_id);
    assert_eq!(events[1].header.event_id, delivered_id);
    let EventBody::OrderDelivered(b) = &events[0].body else {
        panic!("{:?}", events[0].body)
    };
    assert_eq!(b.order_id, "112-4839201-5521934");
    assert_eq!(events[0].header.event_time, utc("2026-11-07T18:48:00Z"));
    assert_eq!(b.deliver_by, utc("2026-11-09T04:59:59Z"));
    assert_eq!(b.fulfilment, Some(Fulfilment::Merchant));

    assert_eq!(
        events[2].header.event_id,
        "aftership_webhook-shop-001-usps-9400111899223817576593-in_transit-1793837520"
    );
    let EventBody::ShipmentMilestone(m) = &events[2].body else {
        panic!("{:?}", events[2].body)
    };
    assert_eq!(m.milestone, Milestone::InTransit);
    assert_eq!(m.order_id.as_deref(), Some("WM-108844213"));

    let dls = r.publisher.dead_letters();
    assert_eq!(dls.len(), 1);
    assert_eq!(
        dls[0].reason,
        "aftership webhook: field `msg.order_id`: missing or empty, and so is msg.order_number: set the order id on the tracking when creating it"
    );
    let stats = r.finish().await.stats();
    assert_eq!(stats.rejected["signature_missing"], 1);
    assert_eq!(stats.rejected["signature_mismatch"], 1);
}

#[tokio::test]
async fn track17_pushes_signed_with_the_key_map_delivered_and_in_transit() {
    let r = start(
        Provider::Track17,
        serde_json::json!({
            "shop": "shop-004", "channel": "tiktok_shop", "time_zone": "America/Chicago",
            "fulfilment": "third_party", "listen": "127.0.0.1:0",
            "secret": "env:KPIFLOW_TEST_UNUSED",
        }),
        TRACK17_KEY,
    )
    .await;
    let path = "/webhooks/17track";
    let delivered = fixture("17track/delivered.json");
    let mut tampered = delivered.clone();
    tampered.extend_from_slice(b"\n");
    let resp = post(r.addr, path, &[("sign", &sign17(&delivered))], &tampered).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    // An AfterShip-style signature is not 17TRACK's.
    let hmac = sign(&Secret::new(TRACK17_KEY), &delivered);
    assert_eq!(
        post(r.addr, path, &[("sign", &hmac)], &delivered)
            .await
            .status,
        401
    );
    assert!(r.publisher.events().is_empty());

    for name in [
        "17track/in_transit.json",
        "17track/delivered.json",
        "17track/no_tag.json",
    ] {
        let body = fixture(name);
        let resp = post(r.addr, path, &[("sign", &sign17(&body))], &body).await;
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
    }
    let events = r.publisher.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].header.event_id,
        "track17_webhook-shop-004-190008-YT2531021266035577-in_transit-1794206400"
    );
    let EventBody::ShipmentMilestone(m) = &events[0].body else {
        panic!("{:?}", events[0].body)
    };
    assert_eq!(m.milestone, Milestone::InTransit);
    assert_eq!(m.warehouse, "17track");
    assert_eq!(
        events[1].header.event_id,
        "delivered-shop-004-YT2531021266035577"
    );
    let EventBody::OrderDelivered(b) = &events[1].body else {
        panic!("{:?}", events[1].body)
    };
    assert_eq!(b.order_id, "577138291045");
    // Delivered at 17:02Z, expected by the end of 2026-11-11 in Chicago: late.
    assert_eq!(events[1].header.event_time, utc("2026-11-12T17:02:00Z"));
    assert_eq!(b.deliver_by, utc("2026-11-12T05:59:59Z"));
    assert_eq!(b.fulfilment, Some(Fulfilment::ThirdParty));
    assert_eq!(events[1].header.shop, "shop-004");

    let dls = r.publisher.dead_letters();
    assert_eq!(dls.len(), 1);
    assert_eq!(
        dls[0].reason,
        "17track webhook: field `data.tag`: missing or empty: register the number with the order id as its tag"
    );
    let stats = r.finish().await.stats();
    assert_eq!(stats.rejected["signature_mismatch"], 1);
    assert_eq!(
        stats.rejected["signature_malformed"], 1,
        "base64 is not hex"
    );
}
