//! The receivers' HTTP server against slow, idle, oversize and numerous clients, over raw TCP
//! (the Shopify receiver stands for all: they share `push::server`).
//!
//! Every "closed within" is awaited: the client reads until EOF (or a reset) under a bound, and
//! fails if the connection is still open when the bound passes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kpiflow_ingest::MemoryPublisher;
use kpiflow_ingest::push::server::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::shopify::{Running, config, fixture, signed, start};

const PATH: &str = "/webhooks/shopify";
/// Slack for a loaded 2-core machine on top of a configured timeout.
const SLACK: Duration = Duration::from_secs(3);

/// Limits short enough for tests; `max_connections` as given.
fn limits(header: u64, body: u64, idle: u64, max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(header),
        body_read_timeout: Duration::from_millis(body),
        idle_timeout: Duration::from_millis(idle),
        max_connections,
    }
}

async fn receiver(http: HttpLimits) -> Running {
    let mut cfg = config();
    cfg.http = http;
    start(cfg, std::sync::Arc::new(MemoryPublisher::new())).await
}

/// Reads until the server closes the connection; panics if it is still open after `bound`.
/// Returns how long that took and what arrived before the close.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> (Duration, String) {
    let began = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        read.is_ok(),
        "connection still open after {bound:?}; received {text:?}"
    );
    (began.elapsed(), text)
}

/// Polls `cond` until it holds; panics after `bound` naming `what`.
async fn until(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A complete, signed `orders/create` delivery; `Connection: close` unless `keep_alive`.
fn signed_delivery(addr: SocketAddr, event_id: &str, keep_alive: bool) -> Vec<u8> {
    let sig = signed(&fixture("orders_create.json")).expect("signed");
    delivery(addr, event_id, keep_alive, &sig)
}

/// The `orders/create` delivery of [`signed_delivery`] carrying signature `sig`.
fn delivery(addr: SocketAddr, event_id: &str, keep_alive: bool, sig: &str) -> Vec<u8> {
    let body = fixture("orders_create.json");
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         X-Shopify-Topic: orders/create\r\nX-Shopify-Shop-Domain: acme-ceramics.myshopify.com\r\n\
         X-Shopify-Event-Id: {event_id}\r\nX-Shopify-Webhook-Id: wh-{event_id}\r\n\
         X-Shopify-Triggered-At: 2026-11-02T17:03:01.123Z\r\nX-Shopify-Hmac-Sha256: {sig}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Reads one response (head plus `Content-Length` body) off a kept-alive connection; returns
/// the status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(SLACK, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a full response: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("a content-length");
                if body.len() >= len {
                    return head.lines().next().unwrap_or_default().to_string();
                }
            }
        }
    })
    .await;
    read.expect("a response in time")
}

/// A connection that sent part of a request head and stalls.
async fn stalled_head(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Top").as_bytes())
        .await
        .expect("write");
    s
}

/// A request head announcing a body of 1,000,000,000 bytes (`Content-Length`), no body.
fn announced_oversize(addr: SocketAddr) -> Vec<u8> {
    format!("POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000000000\r\n\r\n")
        .into_bytes()
}

/// A chunked request with no `Content-Length` whose first chunk, 20,000 bytes (0x4e20),
/// passes the 16,384-byte limit of [`config`], and whose body never ends.
fn streamed_oversize(addr: SocketAddr) -> Vec<u8> {
    let mut req = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n4e20\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'x', 20_000));
    req.extend_from_slice(b"\r\n");
    req
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_within_header_read_timeout() {
    // idle 1s = header 1s would race two timers; the idle watchdog leaves a started head to
    // hyper's header timer anyway, and 500ms proves it: the close comes at 1s, not 0.5s.
    let r = receiver(limits(1000, 1000, 500, 16)).await;
    let mut s = stalled_head(r.addr).await;
    let (took, _) = closed_within(&mut s, Duration::from_secs(1) + SLACK).await;
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    until(SLACK, "header_timeout counted", || {
        r.hook.stats().refused.get("header_timeout") == Some(&1)
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_closed_within_body_read_timeout() {
    let r = receiver(limits(1000, 1000, 1000, 16)).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    // The head says 100 bytes; 10 arrive, then nothing.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        r.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (took, text) = closed_within(&mut s, Duration::from_secs(1) + SLACK).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    until(SLACK, "body_timeout counted", || {
        r.hook.stats().refused.get("body_timeout") == Some(&1)
    })
    .await;
    // Nothing reached the handler.
    assert_eq!(r.hook.stats().received, 0);
    r.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_within_idle_timeout() {
    let r = receiver(limits(3000, 1000, 1000, 16)).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(&signed_delivery(r.addr, "e-keep", true))
        .await
        .unwrap();
    let status = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Kept alive, then silent: closed by the 1s idle timeout, well before the 3s header timer.
    let (took, text) = closed_within(&mut s, Duration::from_secs(1) + SLACK).await;
    assert_eq!(text, "");
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    assert!(
        took < Duration::from_millis(2900),
        "the header timer closed it: {took:?}"
    );
    until(SLACK, "idle_timeout counted", || {
        r.hook.stats().refused.get("idle_timeout") == Some(&1)
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn an_announced_oversize_body_gets_413_before_it_is_sent() {
    // config() allows 16384 bytes. Only the head is sent; waiting for the body would end in a
    // 408 after the 30s body timeout, so a 413 within the slack was decided from the header.
    let r = receiver(limits(30_000, 30_000, 30_000, 16)).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(&announced_oversize(r.addr)).await.unwrap();
    let (_, text) = closed_within(&mut s, SLACK).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    let stats = r.hook.stats();
    assert_eq!(stats.refused.get("too_large"), Some(&1));
    assert_eq!(stats.rejected.get("too_large"), Some(&1));
    r.stop().await;
}

#[tokio::test]
async fn a_streamed_body_is_cut_at_max_body_bytes() {
    // No Content-Length: one 20000-byte chunk (0x4e20) passes the 16384-byte limit, and the
    // body never ends; the answer comes at the limit, not at the 30s body timeout.
    let r = receiver(limits(30_000, 30_000, 30_000, 16)).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(&streamed_oversize(r.addr)).await.unwrap();
    let (_, text) = closed_within(&mut s, SLACK).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    assert_eq!(r.hook.stats().refused.get("too_large"), Some(&1));
    r.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_are_closed_and_open_ones_keep_working() {
    // Policy: the limit keeps no headroom; a connection over it is closed at accept (Shopify
    // retries), the stalled ones holding the slots are reclaimed by the 2s header timer, and a
    // delivery after that is answered.
    let r = receiver(limits(2000, 2000, 2000, 4)).await;
    let mut working = TcpStream::connect(r.addr).await.unwrap();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_head(r.addr).await);
    }
    until(SLACK, "4 connections open", || {
        r.hook.stats().connections_open == 4
    })
    .await;

    let mut over = TcpStream::connect(r.addr).await.unwrap();
    let _ = over
        .write_all(&signed_delivery(r.addr, "e-over", false))
        .await;
    let (_, text) = closed_within(&mut over, SLACK).await;
    assert_eq!(text, "", "the fifth connection got an answer");
    assert_eq!(r.hook.stats().refused.get("connection_limit"), Some(&1));

    // An open connection is still served while the limit holds.
    working
        .write_all(&signed_delivery(r.addr, "e-open", true))
        .await
        .unwrap();
    assert_eq!(read_response(&mut working).await, "HTTP/1.1 200 OK");
    drop(working);

    for s in &mut stalled {
        closed_within(s, Duration::from_secs(2) + SLACK).await;
    }
    until(SLACK, "slots released", || {
        r.hook.stats().connections_open == 0
    })
    .await;
    let mut retry = TcpStream::connect(r.addr).await.unwrap();
    retry
        .write_all(&signed_delivery(r.addr, "e-retry", false))
        .await
        .unwrap();
    let (_, text) = closed_within(&mut retry, SLACK).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert_eq!(r.hook.stats().published, 2);
    r.stop().await;
}

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Sends `request` on a connection of its own and returns the status line of the answer.
async fn answer(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A 413 may come (and the connection close) before the whole request is written.
    let _ = s.write_all(request).await;
    let (_, text) = closed_within(&mut s, SLACK).await;
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn under_stalled_clients_bad_signatures_and_oversize_bodies_valid_deliveries_are_answered_in_little_memory()
 {
    // 300 stalled heads held open (timeouts 30s) while 20 deliveries with a bad signature, 20
    // oversize ones (10 announced, 10 streamed) and 20 valid ones arrive. Before the server had
    // limits, 450 stalled clients grew the process by 166 MB (~370 KiB each); now about 18 KiB
    // each were measured, and the bound, with room for the hostile deliveries, is 64 KiB each:
    // 300 × 64 KiB = 19200 KiB.
    const CLIENTS: usize = 300;
    const EACH: usize = 20;
    // The resident set is the whole process's: measured in a process of its own (this test
    // alone), since the tests running beside it in this one allocate too.
    if std::env::var_os("KPIFLOW_RSS_ALONE").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "integration::push_limits::under_stalled_clients_bad_signatures_and_oversize_bodies_valid_deliveries_are_answered_in_little_memory",
                "--test-threads=1",
            ])
            .env("KPIFLOW_RSS_ALONE", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let r = receiver(limits(30_000, 30_000, 30_000, 512)).await;
    // Warm up every kind of answer once so first-use allocations are not counted.
    let bad_signature = |id: &str| delivery(r.addr, id, false, "bm90IHRoZSBzaWduYXR1cmU=");
    let (announced, streamed) = (announced_oversize(r.addr), streamed_oversize(r.addr));
    assert!(
        answer(r.addr, &signed_delivery(r.addr, "e-warm", false))
            .await
            .contains(" 200 ")
    );
    assert!(
        answer(r.addr, &bad_signature("e-warm-bad"))
            .await
            .contains(" 401 ")
    );
    assert!(answer(r.addr, &announced).await.contains(" 413 "));
    until(SLACK, "warm-up connections closed", || {
        r.hook.stats().connections_open == 0
    })
    .await;
    let before = rss_kib();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(stalled_head(r.addr).await);
    }
    until(Duration::from_secs(10), "all clients accepted", || {
        r.hook.stats().connections_open == CLIENTS as u64
    })
    .await;
    // Interleaved, each on a connection of its own, while the stalled ones stay open.
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..EACH {
        for request in [
            bad_signature(&format!("e-bad-{i}")),
            if i % 2 == 0 {
                announced.clone()
            } else {
                streamed.clone()
            },
            signed_delivery(r.addr, &format!("e-valid-{i}"), false),
        ] {
            *statuses.entry(answer(r.addr, &request).await).or_default() += 1;
        }
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB for {CLIENTS} stalled clients and 60 deliveries");
    assert_eq!(
        statuses,
        [
            ("HTTP/1.1 200 OK".to_string(), EACH),
            ("HTTP/1.1 401 Unauthorized".to_string(), EACH),
            ("HTTP/1.1 413 Payload Too Large".to_string(), EACH),
        ]
        .into(),
    );
    let stats = r.hook.stats();
    // The warm-up delivery and the 20 valid ones, each published once.
    assert_eq!(stats.published, 1 + EACH as u64);
    assert_eq!(
        stats.connections_open, CLIENTS as u64,
        "the stalled clients are still held (the timeouts are 30 s)"
    );
    assert!(
        grown < (CLIENTS as u64) * 64,
        "RSS grew by {grown} KiB for {CLIENTS} stalled clients and {} hostile deliveries",
        2 * EACH
    );
    drop(clients);
    until(SLACK, "stalled clients gone", || {
        r.hook.stats().connections_open == 0
    })
    .await;
    r.stop().await;
}
