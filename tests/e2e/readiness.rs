//! `/readyz` follows the broker: 200 while one answers, 503 naming `kafka` while it is down,
//! 200 again once it is back — through [`Readiness::watch_broker`], the probe every role runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_core::metrics::{self, Readiness};
use tokio_util::sync::CancellationToken;

use super::crash::{PRIVATE_BROKER, StopBroker, broker, private_port};
use super::push_http::{Response, request};

/// Asks `/readyz` until it answers `status`; panics after `bound` with the last answer.
async fn readyz_until(addr: SocketAddr, status: u16, bound: Duration) -> Response {
    let deadline = Instant::now() + bound;
    loop {
        let r = request(addr, "GET", "/readyz", &[], b"").await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not {status} within {bound:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_broker_is_down_and_200_once_it_is_back() {
    let _private = PRIVATE_BROKER.lock().await;
    let port = private_port();
    let data = tempfile::tempdir().unwrap();
    let bootstrap = broker("start", port, data.path());
    let _stop = StopBroker(port, data.path().to_path_buf());
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap,
        ..KafkaConfig::default()
    };
    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    readiness.watch_broker(&kafka, &shutdown).unwrap();
    let (addr, _http) = metrics::serve("127.0.0.1:0".parse().unwrap(), readiness, shutdown.clone())
        .await
        .unwrap();
    // The probe asks every 5s and waits 3s for an answer: a change shows within about 8s.
    readyz_until(addr, 200, Duration::from_secs(30)).await;
    broker("stop", port, data.path());
    let down = readyz_until(addr, 503, Duration::from_secs(30)).await;
    assert_eq!(down.body, "not ready: kafka\n");
    broker("start", port, data.path());
    let up = readyz_until(addr, 200, Duration::from_secs(60)).await;
    assert_eq!(up.body, "ready\n");
    shutdown.cancel();
}
