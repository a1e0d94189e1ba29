//! Breach alerts end to end: Kafka → alert runner → a real Alertmanager / a signed webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use kpiflow_core::KafkaConfig;
use kpiflow_core::metrics::{self, Readiness};
use kpiflow_schemas::{BreachEvent, BreachState, Topic};
use kpiflow_sink::alert::webhook::{self, DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use kpiflow_sink::alert::{AlertStats, AlertsConfig, SignatureEncoding};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::daemons::{self, await_some};
use crate::{DEADLINE, await_committed, bootstrap, fixtures, produce};

fn kafka(id: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("alerttest-{id}"),
        partitions: 2,
        ..KafkaConfig::default()
    }
}

fn breaches() -> Vec<BreachEvent> {
    fixtures(
        include_str!("../../fixtures/breaches.jsonl"),
        BreachEvent::from_json,
    )
}

async fn publish(kafka: &KafkaConfig, b: &BreachEvent) {
    produce(
        kafka,
        Topic::Breaches,
        &b.breach_id,
        &serde_json::to_vec(b).unwrap(),
    )
    .await;
}

/// Starts the runner; returns its stop token, its readiness and its task.
fn start(
    kafka: &KafkaConfig,
    cfg: &AlertsConfig,
) -> (
    CancellationToken,
    Readiness,
    tokio::task::JoinHandle<Vec<AlertStats>>,
) {
    let stop = CancellationToken::new();
    let readiness = Readiness::default();
    let (k, c, s, r) = (kafka.clone(), cfg.clone(), stop.clone(), readiness.clone());
    let task = tokio::spawn(async move {
        kpiflow_sink::run_alerts(&k, &c, Some(&r), s)
            .await
            .expect("the alert runner runs until shutdown")
    });
    (stop, readiness, task)
}

/// The alerts Alertmanager returns whose `breach_id` label is `id`.
async fn am_alerts(am: &daemons::Daemon, id: &str) -> Vec<Value> {
    let Ok(r) = reqwest::get(am.url("/api/v2/alerts")).await else {
        return Vec::new();
    };
    let body = r.bytes().await.unwrap_or_default();
    let all: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    all.into_iter()
        .filter(|a| a["labels"]["breach_id"] == id)
        .collect()
}

fn write_errors(sink: &str) -> u64 {
    metrics::sink_write_errors()
        .with_label_values(&[sink])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_reach_a_real_alertmanager_after_an_outage_and_resolve() {
    let port = daemons::free_port();
    if daemons::binary("prometheus-alertmanager", "prometheus-alertmanager").is_none() {
        return;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = kafka(&id);
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().name(Topic::Breaches);
    let fx = breaches();
    let (mut firing, mut resolved) = (fx[0].clone(), fx[1].clone());
    // An id of its own, so that runs sharing an Alertmanager could never mix.
    firing.breach_id = format!("{}-{id}", firing.breach_id);
    resolved.breach_id = firing.breach_id.clone();
    firing.runbook_url = Some("https://runbooks.example/late-shipments".into());
    firing.scope.sku = Some("SKU-42".into());
    resolved.scope.sku = Some("SKU-42".into());
    firing.at = chrono::Utc::now() - chrono::Duration::minutes(5);
    resolved.at = chrono::Utc::now() - chrono::Duration::minutes(1);

    let mut cfg = AlertsConfig {
        group_id: format!("alerttest-{id}"),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        ..AlertsConfig::default()
    };
    cfg.alertmanager.enabled = true;
    cfg.alertmanager.url = format!("http://127.0.0.1:{port}");
    cfg.alertmanager.resend_interval = Duration::from_secs(1);
    let group = format!("{}.alertmanager", cfg.group_id);

    // Alertmanager is down: the firing breach is retried, and its offset stays uncommitted.
    let errors_before = write_errors("alertmanager");
    let (stop, readiness, task) = start(&kafka, &cfg);
    publish(&kafka, &firing).await;
    await_some(
        "failed deliveries while Alertmanager is down",
        DEADLINE,
        || async { (write_errors("alertmanager") >= errors_before + 2).then_some(()) },
        String::new,
    )
    .await;
    assert!(readiness.not_ready().is_empty(), "ready once rebuilt");
    let lag = tokio::task::block_in_place(|| {
        kafka.group_lag(&group, std::slice::from_ref(&topic), Duration::from_secs(5))
    })
    .unwrap();
    assert_eq!(
        lag.iter().map(|p| p.lag()).sum::<i64>(),
        1,
        "not committed before Alertmanager accepted it: {lag:?}"
    );

    // Alertmanager comes up on that port: the retried alert arrives, with every label.
    let Some(am) = daemons::alertmanager(port).await else {
        return;
    };
    let alert = await_some(
        "the firing alert in Alertmanager",
        DEADLINE,
        || async { am_alerts(&am, &firing.breach_id).await.into_iter().next() },
        || am.log(),
    )
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], firing.rule.as_str());
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], firing.owner.as_str());
    assert_eq!(labels["kpi"], "late_shipment_rate");
    assert_eq!(labels["shop"], "shop-1");
    assert_eq!(labels["channel"], "amazon");
    assert_eq!(labels["marketplace"], "ATVPDKIKX0DER");
    assert_eq!(labels["sku"], "SKU-42");
    assert!(labels.get("campaign").is_none());
    let notes = &alert["annotations"];
    assert_eq!(notes["summary"], firing.message.as_str());
    assert_eq!(notes["value"], "0.05");
    assert_eq!(notes["threshold"], "0.04");
    assert!(
        notes["window"]
            .as_str()
            .unwrap()
            .starts_with("rolling_24h 2025-03-14T00:00:00+00:00/"),
        "{notes}"
    );
    assert_eq!(
        notes["runbook_url"],
        "https://runbooks.example/late-shipments"
    );
    assert_eq!(alert["status"]["state"], "active");
    await_committed(&kafka, &group, std::slice::from_ref(&topic)).await;

    // Firing alerts are re-sent: Alertmanager's endsAt moves forward without new events.
    let first_end = alert["endsAt"].as_str().unwrap().to_string();
    await_some(
        "a re-send pushing endsAt forward",
        DEADLINE,
        || async {
            let a = am_alerts(&am, &firing.breach_id).await.into_iter().next()?;
            (a["endsAt"].as_str()? > first_end.as_str()).then_some(())
        },
        || am.log(),
    )
    .await;
    stop.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].delivered, stats[0].restored_open), (1, 0));
    assert!(stats[0].retries >= 2, "{stats:?}");

    // A restart rebuilds the open breach from the topic; the resolve then closes it.
    let (stop, _, task) = start(&kafka, &cfg);
    publish(&kafka, &resolved).await;
    await_some(
        "the resolved alert gone from Alertmanager's active alerts",
        DEADLINE,
        || async {
            am_alerts(&am, &firing.breach_id)
                .await
                .is_empty()
                .then_some(())
        },
        || am.log(),
    )
    .await;
    await_committed(&kafka, &group, std::slice::from_ref(&topic)).await;
    stop.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats[0].restored_open, 1, "{stats:?}");
    assert_eq!(stats[0].delivered, 1);
    let sent = metrics::alerts_sent()
        .with_label_values(&["alertmanager", "resolved"])
        .get();
    assert!(sent >= 1);
}

/// What the in-process webhook receiver saw.
#[derive(Default)]
struct Received {
    /// Requests answered 503 on purpose (the first two).
    refused: usize,
    /// Accepted bodies.
    accepted: Vec<Value>,
    /// Delivery header of each accepted body.
    delivery_ids: Vec<String>,
    /// Requests whose signature did not verify.
    bad_signatures: usize,
}

const SECRET: &str = "test-secret-of-at-least-16-bytes";

/// Serves `app` on a free local port; returns its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Alerts to the webhook at `url` only, signed with [`SECRET`], retried quickly.
fn webhook_config(group_id: String, url: String) -> AlertsConfig {
    let mut cfg = AlertsConfig {
        group_id,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..AlertsConfig::default()
    };
    cfg.webhook.enabled = true;
    cfg.webhook.url = url;
    cfg.webhook.secret = SECRET.into();
    cfg
}

async fn receive(state: Arc<Mutex<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let verified = webhook::verify(
        SECRET.as_bytes(),
        SignatureEncoding::Base64,
        &header(TIMESTAMP_HEADER),
        &header(SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
        300,
    );
    let mut s = state.lock().unwrap();
    if verified.is_err() {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if s.refused < 2 {
        s.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let json: Value = serde_json::from_slice(&body).unwrap();
    if json["breach"]["rule"] == "poison" {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    s.delivery_ids.push(header(DELIVERY_HEADER));
    s.accepted.push(json);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_signed_bodies_in_order_through_retries() {
    let state = Arc::new(Mutex::new(Received::default()));
    let app = {
        let state = state.clone();
        axum::Router::new().route(
            "/hooks/T0K3N",
            axum::routing::post(move |h: HeaderMap, b: Bytes| receive(state.clone(), h, b)),
        )
    };
    let addr = serve(app).await;

    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = kafka(&id);
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().name(Topic::Breaches);
    let fx = breaches();
    let mut poison = fx[2].clone();
    poison.rule = "poison".into();
    // One breach's events share a key (its id), so they arrive in order.
    for b in [&fx[0], &poison, &fx[1]] {
        publish(&kafka, b).await;
    }
    produce(&kafka, Topic::Breaches, "junk", b"not json").await;

    let mut cfg = webhook_config(
        format!("webhooktest-{id}"),
        format!("http://{addr}/hooks/T0K3N"),
    );
    cfg.webhook.signature_encoding = SignatureEncoding::Base64;
    let (stop, _, task) = start(&kafka, &cfg);
    let group = format!("{}.webhook", cfg.group_id);
    await_committed(&kafka, &group, std::slice::from_ref(&topic)).await;
    stop.cancel();
    let stats = task.await.unwrap();

    let s = std::mem::take(&mut *state.lock().unwrap());
    assert_eq!(s.bad_signatures, 0);
    assert_eq!(s.refused, 2);
    let ids: Vec<String> = [&fx[0], &fx[1]]
        .iter()
        .map(|b| webhook::delivery_id(b))
        .collect();
    assert_eq!(s.delivery_ids, ids, "firing then resolved, each once");
    assert_eq!(s.accepted[0]["id"], ids[0].as_str());
    assert_eq!(
        serde_json::from_value::<BreachEvent>(s.accepted[1]["breach"].clone()).unwrap(),
        fx[1]
    );
    assert_eq!(fx[1].state, BreachState::Resolved);
    assert!(
        s.accepted[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING critical] lsr-above-4pct"),
        "{}",
        s.accepted[0]["text"]
    );
    assert_eq!(stats[0].delivered, 2);
    assert_eq!(stats[0].retries, 2);
    assert_eq!(
        stats[0].dead_lettered, 2,
        "junk and the refused poison: {stats:?}"
    );

    // The refused breach is on the dead-letter topic with the receiver's answer.
    let letters = read_dead_letters(&kafka, &id, 2).await;
    let refused = letters
        .iter()
        .find(|l| l.reason_kind == "rejected")
        .expect("a rejected dead letter");
    assert_eq!(refused.stage, "alerts.webhook");
    assert!(
        refused.reason.contains("HTTP 422") && !refused.reason.contains("T0K3N"),
        "{}",
        refused.reason
    );
    assert!(letters.iter().any(|l| l.reason_kind == "invalid"));
}

/// A breach still being retried when shutdown comes is not committed (the driver's
/// `Verdict::Stop`): the next start delivers it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_still_retried_at_shutdown_is_delivered_after_the_restart() {
    /// The receiver: 503 while `down`, then 200, noting each accepted delivery id.
    #[derive(Default)]
    struct Hook {
        down: bool,
        refused: usize,
        accepted: Vec<String>,
    }
    let state = Arc::new(Mutex::new(Hook {
        down: true,
        ..Hook::default()
    }));
    let app = {
        let state = state.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |h: HeaderMap| {
                let state = state.clone();
                async move {
                    let mut s = state.lock().unwrap();
                    if s.down {
                        s.refused += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let id = h.get(DELIVERY_HEADER).unwrap().to_str().unwrap();
                    s.accepted.push(id.to_string());
                    StatusCode::OK
                }
            }),
        )
    };
    let addr = serve(app).await;

    let id = uuid::Uuid::new_v4().simple().to_string();
    let kafka = kafka(&id);
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().name(Topic::Breaches);
    let firing = breaches()[0].clone();
    publish(&kafka, &firing).await;
    let cfg = webhook_config(format!("stoptest-{id}"), format!("http://{addr}/hook"));
    let group = format!("{}.webhook", cfg.group_id);

    let (stop, _, task) = start(&kafka, &cfg);
    let deadline = std::time::Instant::now() + DEADLINE;
    while state.lock().unwrap().refused < 2 {
        assert!(std::time::Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats[0].delivered, 0);
    assert!(stats[0].retries >= 2, "{stats:?}");
    let lag: i64 = tokio::task::block_in_place(|| {
        kafka.group_lag(&group, std::slice::from_ref(&topic), Duration::from_secs(5))
    })
    .unwrap()
    .iter()
    .map(kpiflow_core::PartitionLag::lag)
    .sum();
    assert_eq!(lag, 1, "the undelivered breach is not committed");

    state.lock().unwrap().down = false;
    let (stop, _, task) = start(&kafka, &cfg);
    await_committed(&kafka, &group, std::slice::from_ref(&topic)).await;
    stop.cancel();
    let stats = task.await.unwrap();
    assert_eq!(stats[0].delivered, 1);
    assert_eq!(
        state.lock().unwrap().accepted,
        vec![webhook::delivery_id(&firing)],
        "delivered after the restart, once"
    );
}

async fn read_dead_letters(
    kafka: &KafkaConfig,
    id: &str,
    n: usize,
) -> Vec<kpiflow_schemas::DeadLetter> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let consumer: StreamConsumer = kafka.consumer(&format!("webhooktest-{id}-dlq")).unwrap();
    let topic = kafka.topics().name(Topic::DeadLetter);
    consumer.subscribe(&[&topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letters on {topic}", out.len()))
            .unwrap();
        out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
    }
    out
}
