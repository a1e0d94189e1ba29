//! The automation guard through `kpiflow sink` and a real broker: a critical breach closes the
//! gate for its shop (423 with the breach), its resolve opens it again (200), and a sink
//! restarted while a breach is open never answers "allow" before it has read that breach.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_schemas::{BreachEvent, BreachState, Topic};

use super::cli::{free_port, get, kpiflow, write_config};
use super::crash::KillOnDrop;

/// The first golden breach (a critical late-shipment breach of shop-1) as `state`.
fn breach(state: BreachState) -> BreachEvent {
    let line = include_str!("../../sink/fixtures/breaches.jsonl")
        .lines()
        .next()
        .unwrap();
    let mut b = BreachEvent::from_json(line.as_bytes()).unwrap();
    b.state = state;
    b
}

async fn publish(kafka: &KafkaConfig, b: &BreachEvent) {
    let producer = kafka.producer().unwrap();
    let payload = serde_json::to_vec(b).unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&kafka.topics().name(Topic::Breaches))
                .key(&b.breach_id)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The status code and body of `GET /v1/guard?<query>`, once the listener answers.
fn ask(addr: SocketAddr, query: &str) -> Option<(u16, serde_json::Value)> {
    let response = get(addr, &format!("/v1/guard?{query}"))?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).ok()?))
}

/// Asks until the answer's status is `want`; fails after 60 s. Every answer before it must be
/// one of `meanwhile`.
fn until_status(addr: SocketAddr, query: &str, want: u16, meanwhile: &[u16]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, body)) = ask(addr, query) {
            if status == want {
                return body;
            }
            assert!(
                meanwhile.contains(&status),
                "{query}: answered {status} {body} while waiting for {want}"
            );
        }
        assert!(Instant::now() < deadline, "{query}: no {want} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_breach_closes_the_gate_for_its_shop_and_a_restart_never_opens_it_early() {
    let kafka = KafkaConfig {
        bootstrap_servers: super::bootstrap(),
        topic_prefix: format!("guard-{}", uuid::Uuid::new_v4().simple()),
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{}\"\n\
             [metrics]\nlisten = \"{addr}\"\n\
             [sink]\ndir = \"{}\"\nroll_interval = \"200ms\"\n\
             [sink.guard]\nenabled = true\n[sink.guard.pauses]\n\"lsr-above-4pct\" = [\"repricing\"]\n",
            kafka.bootstrap_servers,
            kafka.topic_prefix,
            dir.path().join("tables").display()
        ),
    );
    // Killed when dropped, so a failing assertion leaves no sink running.
    let sink = || {
        KillOnDrop(
            kpiflow(&config, &["sink"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let repricing = "shop=shop-1&action=repricing";
    let mut child = sink();
    // Nothing open: allowed, once the guard has read the (empty) topic.
    let body = until_status(addr, repricing, 200, &[503]);
    assert_eq!(body["allow"], true, "{body}");

    let firing = breach(BreachState::Firing);
    publish(&kafka, &firing).await;
    let body = until_status(addr, repricing, 423, &[200]);
    assert_eq!(body["allow"], false, "{body}");
    assert_eq!(body["breaches"][0]["breach_id"], firing.breach_id.as_str());
    assert_eq!(body["breaches"][0]["rule"], "lsr-above-4pct");
    // The rule pauses repricing only; another shop is not concerned.
    assert_eq!(ask(addr, "shop=shop-1&action=bidding").unwrap().0, 200);
    assert_eq!(ask(addr, "shop=shop-2&action=repricing").unwrap().0, 200);
    // A request that names no action is refused, naming the parameter.
    let (status, body) = ask(addr, "shop=shop-1").unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["error"], "missing query parameter `action`");

    // A restart while the breach is open: 503 until the guard has read it, then 423; never 200.
    super::terminate(&mut child);
    let mut child = sink();
    let body = until_status(addr, repricing, 423, &[503]);
    assert_eq!(body["breaches"][0]["breach_id"], firing.breach_id.as_str());

    publish(&kafka, &breach(BreachState::Resolved)).await;
    let body = until_status(addr, repricing, 200, &[423]);
    assert_eq!(body["allow"], true, "{body}");
    assert!(super::terminate(&mut child).success());
}
