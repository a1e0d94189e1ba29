//! Several platforms end to end: the Amazon getOrders fixture server and a signed Shopify
//! webhook → connectors → a real broker → the real processor → the expected KPI values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kpiflow_core::ComponentMetrics;
use kpiflow_ingest::{KafkaPublisher, Publish};
use kpiflow_processor::ProcessorConfig;
use kpiflow_schemas::{KpiUpdate, Topic};
use rdkafka::Message;
use rust_decimal::Decimal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{amazon_sp_orders, shopify};

/// What the recorded getOrders pages should count: orders that are not `Pending` (Amazon
/// gives no total until payment) and whose `OrderTotal.Amount` is a decimal (one is
/// malformed on purpose and dead-lettered). Computed from the JSON, not from the connector.
fn amazon_expected() -> (usize, Decimal) {
    let (mut orders, mut total) = (0, Decimal::ZERO);
    for page in [
        "orders-page-1.json",
        "orders-page-2.json",
        "orders-page-3.json",
    ] {
        let bytes = super::fixture::fixture("amazon_sp_orders", page);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for o in v["payload"]["Orders"].as_array().unwrap() {
            if o["OrderStatus"] == "Pending" {
                continue;
            }
            let Some(amount) = o["OrderTotal"]["Amount"]
                .as_str()
                .and_then(|a| a.parse::<Decimal>().ok())
            else {
                continue;
            };
            orders += 1;
            total += amount;
        }
    }
    (orders, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_platforms_through_the_broker_give_the_expected_kpis() {
    let kafka = crate::kafka();
    kafka
        .wait_until_reachable(Duration::from_secs(30))
        .await
        .unwrap();
    let publisher =
        Arc::new(KafkaPublisher::new(&kafka, ComponentMetrics::new("ingest.pipeline")).unwrap());
    publisher.ensure_topics().await.unwrap();

    // Amazon: one sync of the three recorded pages.
    let mut t = super::rig::Rig::new(amazon_sp_orders::server(amazon_sp_orders::page).await);
    t.shop = "amazon-shop".into();
    let mut amazon = amazon_sp_orders::connector(&t);
    amazon.sync_once(publisher.as_ref()).await.unwrap();

    // Shopify: a signed orders/create delivery (shop-003 in the receiver's config).
    let hook = shopify::start(shopify::config(), publisher.clone()).await;
    let body = shopify::fixture("orders_create.json");
    let answer = shopify::deliver(
        hook.addr,
        "orders/create",
        "evt-1",
        &body,
        shopify::signed(&body),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    hook.stop().await;
    let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let shopify_total: Decimal = order["total_price"].as_str().unwrap().parse().unwrap();

    // The processor, until it has consumed everything.
    let state = tempfile::tempdir().unwrap();
    let cfg = ProcessorConfig {
        group_id: format!("{}-processor", kafka.topic_prefix),
        kpis: vec!["orders".into(), "gmv".into()],
        flush_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(500),
        checkpoint: kpiflow_processor::config::CheckpointConfig {
            dir: state.path().into(),
            interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..ProcessorConfig::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (kafka, cfg, stop) = (kafka.clone(), cfg.clone(), stop.clone());
        async move { kpiflow_processor::run::run(&kafka, &cfg, None, stop).await }
    });
    let topics = kafka.topics();
    let inputs: Vec<String> = Topic::EVENTS.iter().map(|t| topics.name(*t)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag = tokio::task::block_in_place(|| {
            kafka.group_lag(&cfg.group_id, &inputs, Duration::from_secs(10))
        });
        if let Ok(parts) = &lag
            && !parts.is_empty()
            && parts.iter().all(|p| p.lag() == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processor did not catch up: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();

    // Business-day values, newest revision per key, summed per shop.
    let consumer = crate::consumer(&kafka, &[Topic::KpiUpdates]);
    let mut latest: HashMap<String, KpiUpdate> = HashMap::new();
    let quiet = Duration::from_secs(3);
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Ok(Ok(m)) = tokio::time::timeout(quiet, consumer.recv()).await {
            let u = KpiUpdate::from_json(m.payload().unwrap()).unwrap();
            if latest
                .get(&u.key())
                .is_none_or(|old| u.revision > old.revision)
            {
                latest.insert(u.key(), u);
            }
            last = Instant::now();
        }
    }
    let day_sum = |shop: &str, kpi: &str| -> Decimal {
        latest
            .values()
            .filter(|u| u.scope.shop == shop && u.kpi == kpi && u.window.name == "business_day")
            .map(|u| u.numerator.0)
            .sum()
    };
    let (amazon_orders, amazon_total) = amazon_expected();
    assert!(
        amazon_orders >= 3,
        "the fixture holds several countable orders"
    );
    assert_eq!(
        day_sum("amazon-shop", "orders"),
        Decimal::from(amazon_orders)
    );
    assert_eq!(
        day_sum("amazon-shop", "gmv").normalize(),
        amazon_total.normalize()
    );
    assert_eq!(day_sum("shop-003", "orders"), Decimal::ONE);
    assert_eq!(
        day_sum("shop-003", "gmv").normalize(),
        shopify_total.normalize()
    );
}
