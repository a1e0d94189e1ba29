//! Binding and serving a receiver's routes next to its publish worker, with `/healthz`, as a
//! server that survives slow, idle and oversize clients.
//!
//! ```text
//!  accept ─► max_connections? ─► hyper http1 ─► head within ─► body within ─► Content-Length ─► routes
//!            (else closed,        (keep-alive,   header_read_    body_read_     ≤ max_body_bytes
//!             counted)             idle_timeout)  timeout         timeout (408)  (413, unread)
//! ```
//!
//! `axum::serve` has none of these limits; this loop is hyper-util's connection builder with a
//! semaphore at accept, a per-connection idle watchdog and a body middleware. A connection
//! over the limit is closed at once (the sender retries; Shopify backs off and retries for 4
//! hours), and the ones holding the slots are reclaimed within the timeouts, so a flood of
//! stalled clients delays real deliveries by at most the longest timeout instead of starving
//! them of file descriptors.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::{BodyTimedOut, BodyTooLarge, ConnectionRefused, HeaderTimedOut, IdleClosed};
use super::metrics::PushMetrics;
use super::queue::QueueWorker;
use crate::{IngestError, Publish};

/// How a receiver's HTTP server bounds slow, idle and numerous clients (the `http` table of
/// every receiver, e.g. `[connectors.shopify_webhook.http]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// A request head (request line and headers) must be complete within this, counted from
    /// accept or, on a kept-alive connection, from the previous response; else the connection
    /// is closed. Default 10 s.
    #[serde(
        default = "HttpLimits::default_header_read_timeout",
        with = "humantime_serde"
    )]
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this, counted from the end of the head; else 408 and
    /// the connection is closed. Default 10 s.
    #[serde(
        default = "HttpLimits::default_body_read_timeout",
        with = "humantime_serde"
    )]
    pub body_read_timeout: Duration,
    /// A connection with no request in progress that sends nothing for this long is closed (a
    /// kept-alive connection waiting for its next request, or a new one that sends nothing).
    /// At most `header_read_timeout`, whose timer also runs while a kept-alive connection
    /// waits. Default 5 s.
    #[serde(default = "HttpLimits::default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed at accept and counted
    /// (`kpiflow_http_refused_total{reason="connection_limit"}`) while the open ones keep
    /// working. Keep it well under the process's open-files limit. Default 256.
    #[serde(default = "HttpLimits::default_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Self::default_header_read_timeout(),
            body_read_timeout: Self::default_body_read_timeout(),
            idle_timeout: Self::default_idle_timeout(),
            max_connections: Self::default_max_connections(),
        }
    }
}

impl HttpLimits {
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_body_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_idle_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_max_connections() -> usize {
        256
    }

    /// Checks the values; `table` is this table's config key, e.g.
    /// `connectors.shopify_webhook.http` (errors name `<table>.<key>`).
    pub fn validate(&self, table: &str) -> Result<(), IngestError> {
        let key = |k: &str| format!("{table}.{k}");
        let shown = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        for (k, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
                return Err(IngestError::config(
                    key(k),
                    shown(d),
                    "must be between 100ms and 10m",
                ));
            }
        }
        if self.idle_timeout > self.header_read_timeout {
            return Err(IngestError::config(
                key("idle_timeout"),
                shown(self.idle_timeout),
                format!(
                    "must be at most header_read_timeout ({}): that timer also runs while a \
                     kept-alive connection waits",
                    shown(self.header_read_timeout)
                ),
            ));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(IngestError::config(
                key("max_connections"),
                self.max_connections.to_string(),
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}

/// Binds `addr` (port 0 picks a free one); `key` names the config key in errors.
pub async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| IngestError::config(key, format!("\"{addr}\""), format!("cannot listen: {e}")))
}

/// What the body middleware needs.
#[derive(Clone)]
struct BodyLimits {
    max_body_bytes: usize,
    timeout: Duration,
    metrics: PushMetrics,
}

/// What a receiver serves, and within which limits.
pub struct Site {
    /// The receiver's routes (`/healthz` is added).
    pub routes: Router,
    /// Timeouts and the connection limit.
    pub limits: HttpLimits,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// The receiver's counters (refusals and open connections are counted there too).
    pub metrics: PushMetrics,
}

/// Serves `site` plus `GET /healthz` on `listener` until `shutdown`, while `worker` publishes
/// what the handlers submit. On shutdown the listener stops accepting, requests in flight
/// finish (and are acknowledged or refused), idle connections close, then the worker drains
/// and returns.
pub async fn serve(
    listener: TcpListener,
    site: Site,
    worker: QueueWorker,
    publisher: &dyn Publish,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let Site {
        routes,
        limits,
        max_body_bytes,
        metrics,
    } = site;
    let body = BodyLimits {
        max_body_bytes,
        timeout: limits.body_read_timeout,
        metrics: metrics.clone(),
    };
    let app = routes
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(body, read_body));
    // `app` holds the only queue senders; once the accept loop and every connection are done
    // they are dropped and the worker returns after answering what was queued.
    let server = accept_loop(listener, app, limits, metrics, shutdown);
    let ((), ()) = tokio::join!(server, worker.run(publisher));
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: PushMetrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or memory: retrying at once would spin.
                metrics.error("io");
                tracing::warn!(component = metrics.component(), error = %e,
                    "accept failed; retrying in 100ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ConnectionRefused {
                metrics: &metrics,
                peer,
                limit: limits.max_connections,
            }
            .emit();
            // Closed unread: the kernel answers with a reset or FIN, the client sees at once
            // that it must retry, and this connection costs nothing more.
            drop(stream);
            continue;
        };
        let (app, limits, metrics, shutdown) = (
            app.clone(),
            limits.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            metrics.connections(1);
            connection(stream, peer, app, &limits, &metrics, shutdown).await;
            metrics.connections(-1);
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Serves one connection: hyper's http1 with its header timer, plus the idle watchdog.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &HttpLimits,
    metrics: &PushMetrics,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let tower = TowerToHyperService::new(app);
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let guard = Busy::new(busy.clone());
        let call = hyper::service::Service::call(&tower, req);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut closing = false;
    let result = loop {
        let idle_at = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => break r,
            () = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.is_idle(limits.idle_timeout) {
                    // Closes at once: no request is in progress.
                    IdleClosed { metrics, peer, timeout: limits.idle_timeout }.emit();
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            HeaderTimedOut {
                metrics,
                peer,
                timeout: limits.header_read_timeout,
            }
            .emit();
        } else {
            tracing::debug!(component = metrics.component(), %peer, error = %e,
                "connection ended with an error");
        }
    }
}

/// When a connection last moved bytes, and how many requests it is handling.
struct Activity {
    began: Instant,
    /// Milliseconds after `began` of the last read or write.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Bytes arrived since the last request was handled: a head is on its way, and hyper's
    /// header timer, not the idle watchdog, decides about it.
    head_started: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            began: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.began.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.began + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    fn read(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.head_started.store(true, Ordering::Relaxed);
        }
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && !self.head_started.load(Ordering::Relaxed)
            && self.idle_deadline(idle) <= Instant::now()
    }
}

/// Marks a request in progress (the idle watchdog leaves the connection alone meanwhile).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Busy {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_started.store(false, Ordering::Relaxed);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes last moved.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refuses an announced oversize body unread (413), reads the whole body within
/// `body_read_timeout` (408) and up to `max_body_bytes` as it streams (413), then hands the
/// bytes to the routes. Refusals close the connection: the unread rest of the body cannot be
/// told apart from the next request.
async fn read_body(State(l): State<BodyLimits>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > l.max_body_bytes as u64) {
        return too_large(&l, announced);
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let read = tokio::time::timeout(l.timeout, async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
            if buf.len() + chunk.len() > l.max_body_bytes {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => {
            let req = Request::from_parts(parts, Body::from(Bytes::from(buf)));
            next.run(req).await
        }
        Ok(Err(StatusCode::PAYLOAD_TOO_LARGE)) => too_large(&l, None),
        Ok(Err(status)) => closing(status, "unreadable body\n"),
        Err(_) => {
            BodyTimedOut {
                metrics: &l.metrics,
                timeout: l.timeout,
                received: buf.len(),
            }
            .emit();
            closing(StatusCode::REQUEST_TIMEOUT, "body not received in time\n")
        }
    }
}

fn too_large(l: &BodyLimits, content_length: Option<u64>) -> Response {
    // Also a delivery refused before parsing, as it was counted before this server existed.
    l.metrics.received();
    l.metrics.rejected(super::events::reasons::TOO_LARGE);
    BodyTooLarge {
        metrics: &l.metrics,
        limit: l.max_body_bytes,
        content_length,
    }
    .emit();
    closing(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")
}

/// A refusal that also closes the connection.
fn closing(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONNECTION, "close")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(v: serde_json::Value) -> HttpLimits {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_hold_and_bad_values_are_named_with_their_key() {
        let t = "connectors.shopify_webhook.http";
        HttpLimits::default().validate(t).unwrap();
        assert_eq!(limits(serde_json::json!({})), HttpLimits::default());
        let err = |v| limits(v).validate(t).unwrap_err().to_string();
        assert_eq!(
            err(serde_json::json!({"header_read_timeout": "0s"})),
            "bad config: `connectors.shopify_webhook.http.header_read_timeout` = \"0s\": must be between 100ms and 10m"
        );
        assert_eq!(
            err(serde_json::json!({"body_read_timeout": "0s"})),
            "bad config: `connectors.shopify_webhook.http.body_read_timeout` = \"0s\": must be between 100ms and 10m"
        );
        assert_eq!(
            err(serde_json::json!({"idle_timeout": "20s"})),
            "bad config: `connectors.shopify_webhook.http.idle_timeout` = \"20s\": must be at most header_read_timeout (\"10s\"): that timer also runs while a kept-alive connection waits"
        );
        assert_eq!(
            err(serde_json::json!({"max_connections": 0})),
            "bad config: `connectors.shopify_webhook.http.max_connections` = 0: must be between 1 and 65536"
        );
        assert!(
            serde_json::from_value::<HttpLimits>(serde_json::json!({"idle": "1s"})).is_err(),
            "unknown keys are refused"
        );
    }
}
