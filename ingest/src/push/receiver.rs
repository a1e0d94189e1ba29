//! The generic webhook receiver: signature, retry cache, mapping, publish queue (timeouts,
//! connection and body limits: [`super::server`]).
//! A platform supplies only a [`PushMapper`] (delivery id and payload → events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::PushMetrics;
use super::queue::{Delivery, PublishQueue, QueueWorker, publish_queue};
use super::recent::RecentIds;
use super::server::{HttpLimits, Site};
use super::{server, signature};
use crate::pull::secret::Secret;
use crate::{IngestError, Publish};

/// What a signed delivery turned into.
pub enum Mapped {
    /// Events and dead letters to publish before acknowledging.
    Publish(Delivery),
    /// Acknowledged without publishing, counted as `rejected` under this reason (a topic
    /// kpiflow does not use, a test order).
    Ignore(&'static str),
}

impl Mapped {
    /// A delivery that is one dead letter: `raw` could not be mapped, for `reason`.
    pub fn invalid(reason: String, raw: &[u8]) -> Mapped {
        Mapped::Publish(Delivery {
            events: vec![],
            dead_letters: vec![super::queue::Rejected {
                kind: "invalid",
                reason,
                raw: raw.to_vec(),
            }],
        })
    }
}

/// Checks the receiver values every push connector's config has; `key(name)` gives the
/// config key named in errors.
pub fn validate_options(
    key: impl Fn(&str) -> String,
    path: &str,
    signature_header: &str,
    max_body_bytes: usize,
    ack_deadline: Duration,
    recent_deliveries: usize,
    queue_capacity: usize,
) -> Result<(), IngestError> {
    let bad = |k: &str, v: String, p: &str| Err(IngestError::config(key(k), v, p));
    if !path.starts_with('/') {
        return bad("path", format!("{path:?}"), "must start with '/'");
    }
    if axum::http::HeaderName::from_bytes(signature_header.as_bytes()).is_err() {
        return bad(
            "signature_header",
            format!("{signature_header:?}"),
            "not a valid HTTP header name",
        );
    }
    if !(1024..=64 << 20).contains(&max_body_bytes) {
        return bad(
            "max_body_bytes",
            max_body_bytes.to_string(),
            "must be between 1024 and 67108864 (64 MiB)",
        );
    }
    if ack_deadline < Duration::from_millis(100) {
        return bad(
            "ack_deadline",
            format!("\"{}\"", humantime::format_duration(ack_deadline)),
            "must be at least 100ms",
        );
    }
    for (k, n) in [
        ("recent_deliveries", recent_deliveries),
        ("queue_capacity", queue_capacity),
    ] {
        if n == 0 {
            return bad(k, "0".into(), "must be at least 1");
        }
    }
    Ok(())
}

/// The platform-specific half of a receiver.
pub trait PushMapper: Send + Sync + 'static {
    /// The id that stays the same when the sender retries this delivery, if it sends one.
    fn delivery_id(&self, headers: &HeaderMap) -> Option<String>;

    /// Maps a delivery whose signature was verified. Never fails: what cannot be mapped
    /// becomes a dead letter in the returned delivery.
    fn map(&self, headers: &HeaderMap, body: &[u8]) -> Mapped;

    /// Checks the signature header's value against the raw body. The default is
    /// base64(HMAC-SHA256(body, secret)); a platform that signs otherwise overrides it.
    fn verify(
        &self,
        secret: &Secret,
        body: &[u8],
        header: Option<&[u8]>,
    ) -> Result<(), signature::SignatureError> {
        signature::verify(secret, body, header)
    }
}

/// How a receiver listens and answers.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The config key of `listen`, for errors.
    pub listen_key: String,
    /// The path deliveries are posted to.
    pub path: String,
    /// The header carrying the signature (see [`PushMapper::verify`]), lower case.
    pub signature_header: String,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Time from the request to Kafka's acknowledgement before answering 503.
    pub ack_deadline: Duration,
    /// Delivery ids remembered.
    pub recent_deliveries: usize,
    /// Deliveries waiting for the publisher.
    pub queue_capacity: usize,
    /// Timeouts and the connection limit of the HTTP server.
    pub http: HttpLimits,
}

struct Inner {
    secret: Secret,
    opts: ReceiverOptions,
    mapper: Arc<dyn PushMapper>,
    queue: PublishQueue,
    recent: RecentIds,
    metrics: PushMetrics,
}

/// A bound receiver, ready to serve.
pub struct Receiver {
    listener: TcpListener,
    site: Site,
    worker: QueueWorker,
}

/// Binds `opts.listen` and prepares the routes; nothing is served until [`Receiver::serve`].
pub async fn bind(
    opts: ReceiverOptions,
    secret: Secret,
    mapper: Arc<dyn PushMapper>,
    metrics: PushMetrics,
) -> Result<Receiver, IngestError> {
    let listener = server::bind(opts.listen, &opts.listen_key).await?;
    let (queue, worker) = publish_queue(opts.queue_capacity, metrics.clone());
    let path = opts.path.clone();
    let limit = opts.max_body_bytes;
    let limits = opts.http.clone();
    let inner = Arc::new(Inner {
        secret,
        recent: RecentIds::new(opts.recent_deliveries),
        opts,
        mapper,
        queue,
        metrics: metrics.clone(),
    });
    let routes = Router::new()
        .route(&path, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(inner);
    Ok(Receiver {
        listener,
        site: Site {
            routes,
            limits,
            max_body_bytes: limit,
            metrics,
        },
        worker,
    })
}

impl Receiver {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown`; in-flight deliveries are answered before it returns.
    pub async fn serve(
        self,
        publisher: &dyn Publish,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        server::serve(self.listener, self.site, self.worker, publisher, shutdown).await
    }
}

async fn receive(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, &'static str) {
    let began = Instant::now();
    s.metrics.received();
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            s.metrics.rejected("too_large");
            return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        Err(_) => {
            s.metrics.rejected("unreadable_body");
            return (StatusCode::BAD_REQUEST, "unreadable body\n");
        }
    };
    // Nothing of the body is looked at before its signature holds.
    let sig = headers
        .get(s.opts.signature_header.as_str())
        .map(|v| v.as_bytes());
    if let Err(e) = s.mapper.verify(&s.secret, &body, sig) {
        s.metrics.rejected(e.reason());
        return (StatusCode::UNAUTHORIZED, "invalid signature\n");
    }
    let delivery_id = s.mapper.delivery_id(&headers);
    if let Some(id) = &delivery_id
        && s.recent.contains(id)
    {
        s.metrics.duplicate();
        return (StatusCode::OK, "duplicate\n");
    }
    let delivery = match s.mapper.map(&headers, &body) {
        Mapped::Publish(d) => d,
        Mapped::Ignore(reason) => {
            s.metrics.rejected(reason);
            Delivery::default()
        }
    };
    if !(delivery.events.is_empty() && delivery.dead_letters.is_empty()) {
        let deadline = began + s.opts.ack_deadline;
        if let Err(e) = s.queue.submit(delivery, deadline).await {
            tracing::warn!(component = s.metrics.component(), error = %e,
                "delivery not acknowledged; answering 503 so the sender retries");
            return (StatusCode::SERVICE_UNAVAILABLE, "not stored yet, retry\n");
        }
    }
    if let Some(id) = &delivery_id {
        s.recent.insert(id, ());
    }
    (StatusCode::OK, "ok\n")
}

/// A header's value as trimmed text, if present and not empty.
pub fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
