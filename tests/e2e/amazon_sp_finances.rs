//! `amazon_sp_finances` end to end: the connector backfills November 2026 from the fixture
//! SP-API (the two financial-event pages under `ingest/fixtures/amazon_sp_finances/`) into a
//! real broker, beside the placements `amazon_sp_orders` would publish for the same orders, and
//! the processor's refund rate and ODR are the values worked out by hand below; the fee lines
//! it reads and ignores (no built-in KPI reads them yet) are neither refused nor dead-lettered.
//!
//! By hand, from the fixtures (4 orders placed 2026-11-02 … 2026-11-05, all Amazon, none WFS):
//! - refunds: 113-3000001 (page 1) and 113-3000003 (page 2); the refund of 113-9999999 is
//!   dead-lettered (getOrder does not know the order) → 2 refunded orders of 4: refund rate
//!   2 / 4 (Amazon's refund rate counts any refund of any order).
//! - defects: a chargeback on 113-3000001, posted twice (one id: counted once), an A-to-z claim
//!   on 113-3000002 → 2 defective orders of 4: ODR 2 / 4.
//! - published: 14 facts (1 service fee, 4 sale fees, 2 refunds with 2 fee lines each, 1
//!   claim, 2 chargebacks); dead-lettered: 2 (the malformed PostedDate, the unknown order).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_ingest::Publish;
use kpiflow_ingest::connectors::amazon_sp_finances::{AmazonFinances, AmazonFinancesConfig};
use kpiflow_ingest::pull::{PullSettings, RateLimit};

use super::amazon_sp_finances_api::{ORDERS, server};
use super::by_hand::{self, ByHand};
use super::fixture::{lwa, pull_settings};

const SHOP: &str = "shop-amz-finances";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_finances_through_the_broker_give_refund_rate_and_odr_by_hand() {
    let (kafka, publisher) = by_hand::broker("amzfin").await;
    for (id, at, channel) in ORDERS {
        publisher
            .publish(&by_hand::amazon_placed(SHOP, id, at, channel, 1))
            .await
            .unwrap();
    }

    let api = server(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = AmazonFinancesConfig {
        shop: SHOP.into(),
        marketplace: "ATVPDKIKX0DER".into(),
        max_results_per_page: 100,
        get_order_rate_limit: RateLimit {
            rate: 1000.0,
            burst: 1000,
        },
        pull: PullSettings {
            max_window: Some(Duration::from_secs(31 * 24 * 3600)),
            ..pull_settings(&api, &dir.path().join("cursors"))
        },
        auth: lwa(&api, dir.path()),
    };
    // A fixed range: the undated service fee is timed at its start, before every other fact.
    let (from, to): (DateTime<Utc>, DateTime<Utc>) = (
        "2026-11-01T00:00:00Z".parse().unwrap(),
        "2026-12-01T00:00:00Z".parse().unwrap(),
    );
    let stats = AmazonFinances::build(cfg)
        .unwrap()
        .backfill(from, to, &publisher, |_| {})
        .await
        .expect("backfill delivered");
    assert_eq!((stats.published, stats.dead_lettered), (14, 2));

    let covering = by_hand::holding("2026-11-02T17:03:00Z", "2026-11-05T06:45:00Z");
    let want: &[ByHand] = &[
        ("refund_rate", "rolling_30d", 2, 4),
        ("refund_rate", "rolling_60d", 2, 4),
        ("order_defect_rate", "rolling_30d", 2, 4),
        ("order_defect_rate", "rolling_60d", 2, 4),
    ];
    let (run, latest) = by_hand::process(
        &kafka,
        &["refund_rate", "order_defect_rate"],
        &covering,
        want,
    )
    .await;
    by_hand::check(&latest, SHOP, &covering, want);
    assert_eq!(
        run.received,
        4 + 14 + 1,
        "placements, the connector's facts, a heartbeat"
    );
    assert_eq!(
        run.dead_lettered, 0,
        "nothing late, nothing refused: fees neither"
    );
    assert!(latest.values().all(|u| u.scope.shop == SHOP));
}
