//! Internal events of a receiver's HTTP server: each struct's `emit()` logs and counts one thing.
//!
//! Counted in `kpiflow_http_refused_total{component, reason}` (and [`PushStats::refused`]);
//! logged at most once a second per kind, since under a flood of slow clients one line per
//! connection would be the next resource to run out.
//!
//! [`PushStats::refused`]: super::metrics::PushStats::refused

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::metrics::PushMetrics;

/// The `reason` label of each event.
pub mod reasons {
    /// A connection arrived while `max_connections` were open and was closed at accept.
    pub const CONNECTION_LIMIT: &str = "connection_limit";
    /// A request head was not complete within `header_read_timeout`.
    pub const HEADER_TIMEOUT: &str = "header_timeout";
    /// A request body was not complete within `body_read_timeout`.
    pub const BODY_TIMEOUT: &str = "body_timeout";
    /// A body over `max_body_bytes`, by `Content-Length` or as it streamed in.
    pub const TOO_LARGE: &str = "too_large";
    /// A connection sent nothing for `idle_timeout` with no request in progress.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
}

/// True at most once a second per `last` (Unix milliseconds of the previous log line).
fn log_now(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    let prev = last.load(Ordering::Relaxed);
    now.saturating_sub(prev) >= 1000
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// A connection closed at accept because `max_connections` were open.
pub struct ConnectionRefused<'a> {
    /// The receiver's counters.
    pub metrics: &'a PushMetrics,
    /// Who connected.
    pub peer: SocketAddr,
    /// The configured limit.
    pub limit: usize,
}

impl ConnectionRefused<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        self.metrics.refused(reasons::CONNECTION_LIMIT);
        if log_now(&LAST) {
            tracing::warn!(component = self.metrics.component(), peer = %self.peer,
                limit = self.limit,
                "connection refused: max_connections open (slow or idle clients?)");
        }
    }
}

/// A request head that did not arrive within `header_read_timeout`; the connection is closed.
pub struct HeaderTimedOut<'a> {
    /// The receiver's counters.
    pub metrics: &'a PushMetrics,
    /// Who connected.
    pub peer: SocketAddr,
    /// The configured timeout.
    pub timeout: Duration,
}

impl HeaderTimedOut<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        self.metrics.refused(reasons::HEADER_TIMEOUT);
        if log_now(&LAST) {
            tracing::warn!(component = self.metrics.component(), peer = %self.peer,
                timeout = %humantime::format_duration(self.timeout),
                "connection closed: request head not received within header_read_timeout");
        }
    }
}

/// A request body that did not arrive within `body_read_timeout`; answered 408, closed.
pub struct BodyTimedOut<'a> {
    /// The receiver's counters.
    pub metrics: &'a PushMetrics,
    /// The configured timeout.
    pub timeout: Duration,
    /// Bytes received before the deadline.
    pub received: usize,
}

impl BodyTimedOut<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        self.metrics.refused(reasons::BODY_TIMEOUT);
        if log_now(&LAST) {
            tracing::warn!(component = self.metrics.component(),
                timeout = %humantime::format_duration(self.timeout), received = self.received,
                "request refused (408): body not received within body_read_timeout");
        }
    }
}

/// A body over `max_body_bytes`; answered 413, closed.
pub struct BodyTooLarge<'a> {
    /// The receiver's counters.
    pub metrics: &'a PushMetrics,
    /// The configured limit.
    pub limit: usize,
    /// The announced `Content-Length`, if that is how it was known.
    pub content_length: Option<u64>,
}

impl BodyTooLarge<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        self.metrics.refused(reasons::TOO_LARGE);
        if log_now(&LAST) {
            tracing::warn!(
                component = self.metrics.component(),
                limit = self.limit,
                content_length = self.content_length,
                "request refused (413): body larger than max_body_bytes"
            );
        }
    }
}

/// A connection closed after `idle_timeout` without a byte and with no request in progress:
/// the normal end of a kept-alive connection, so logged at debug level only.
pub struct IdleClosed<'a> {
    /// The receiver's counters.
    pub metrics: &'a PushMetrics,
    /// Who connected.
    pub peer: SocketAddr,
    /// The configured timeout.
    pub timeout: Duration,
}

impl IdleClosed<'_> {
    /// Logs (debug) and counts.
    pub fn emit(&self) {
        self.metrics.refused(reasons::IDLE_TIMEOUT);
        tracing::debug!(component = self.metrics.component(), peer = %self.peer,
            timeout = %humantime::format_duration(self.timeout), "idle connection closed");
    }
}
