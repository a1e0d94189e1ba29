//! The automation guard's signed webhook (`[sink.guard.webhook]`): pushes `pause`, `resume` and
//! `sync` to a receiver, so automation learns of a pause without polling `GET /v1/guard`.
//!
//! ```text
//!   Guard::apply / set_ready ──► bounded queue (never blocks) ──► sender task ──► POST url
//!        (breaches consumer thread)                        in order, retries with backoff
//! ```
//!
//! **When.** Once the guard is ready ([`Guard::set_ready`](crate::Guard::set_ready)):
//! - `pause` when a breach that pauses something opens for a shop: its severity is one of
//!   `sink.guard.severities` (a breach of another severity sends nothing);
//! - `resume` when such a breach resolves (other breaches may still pause the shop: see
//!   `actions` and `paused_by`);
//! - at start, once the open breaches are read, one `sync` per shop that breaches pause now,
//!   then one `sync_complete` naming every paused shop. Transitions read while rebuilding are
//!   history and are not pushed. The same syncs follow, once the queue is empty, any push that
//!   was given up (`max_attempts` used) or dropped (queue full).
//!
//! **Body** (`Content-Type: application/json`), every message the shop's whole state after it:
//!
//! ```json
//! {
//!   "delivery_id": "0b6f3c1e-…",            // the same on every retry: de-duplicate on it
//!   "event": "pause",                        // "pause" | "resume" | "sync" | "sync_complete"
//!   "shop": "shop-1",
//!   "breach": {                              // pause and resume: the breach that changed
//!     "breach_id": "…", "rule": "lsr_high", "severity": "critical", "kpi": "…",
//!     "scope": {"shop": "shop-1", "channel": "amazon", "marketplace": "…", "sku": "…"},
//!     "window": {…}, "since": "2025-03-15T00:00:00Z", "message": "…",
//!     "actions": ["repricing"],              // what this breach pauses; ["*"] = every action
//!     "resolved_at": "2025-03-15T06:00:00Z"  // resume only
//!   },
//!   "actions": ["repricing"],                // paused for the shop now: [] none, ["*"] all
//!   "paused_by": [ {breach…} ],              // the breaches pausing the shop now (same form)
//!   "emitted_at": "2025-03-15T00:00:01.2Z"   // when the guard saw the change (fixed on retry)
//! }
//! ```
//!
//! `sync` has `shop`, `actions` and `paused_by` but no `breach`; `sync_complete` has only
//! `paused_shops` (every shop paused now) besides `delivery_id`, `event` and `emitted_at`.
//!
//! **Acting on it.** Treat `actions` as the shop's paused actions after the message: pause
//! them, resume the rest (a `resume` whose `actions` is not empty leaves those paused). A SKU's
//! or campaign's breach pauses the whole shop's requests that name no SKU, as the guard does;
//! a receiver that acts per SKU reads `paused_by[].scope`. Treat `sync` as authoritative
//! state, and on `sync_complete` resume every shop not in `paused_shops`: after a restart (or
//! a lost push) that is how a receiver that missed a `resume` learns it. Messages arrive in
//! order within one sink process; a receiver may ignore one whose `emitted_at` is older than
//! the last it applied for that shop.
//!
//! **Signature.** Headers `X-Kpiflow-Timestamp: <unix seconds>` and `X-Kpiflow-Signature:
//! sha256=<lowercase hex HMAC-SHA256(key, "<timestamp>.<raw body>")>`, as the breach alert
//! webhook ([`crate::alert::webhook`]) and Stripe / GitHub do; `X-Kpiflow-Delivery` repeats
//! `delivery_id`. The key is read from the environment variable `secret_env` names. Receivers
//! check with [`verify`] (constant time) and refuse timestamps more than a few minutes from
//! their clock, so a captured request cannot be replayed later.
//!
//! **Delivery.** One at a time, in order. Network errors, timeouts, 5xx, 408 and 429 are
//! retried with exponential backoff (`retry_initial` doubling up to `retry_max`) up to
//! `max_attempts`; another 4xx is refused for good (logged, counted `rejected`, not retried).
//! At shutdown the sender stops at once and what it still held is counted `abandoned`: the
//! next start's syncs tell the receiver the state. Outcomes are counted in
//! `kpiflow_guard_webhook_pushes_total{outcome}` ([`crate::internal_events::GuardPushed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use kpiflow_schemas::{BreachEvent, Scope, Severity, WindowRef};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::SinkError;
use crate::alert::{SignatureEncoding, post_json, redacted};
use crate::internal_events::{GuardPushOutcome, GuardPushed, GuardPushesAbandoned};

pub use crate::alert::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Pushes the queue holds while the sender is busy; beyond it a push is dropped and the
/// state re-synced once the queue is empty.
const QUEUE_CAPACITY: usize = 1024;
/// The shortest key accepted, as for the alert webhook.
const MIN_KEY_BYTES: usize = 16;

/// `[sink.guard.webhook]`: where the guard pushes pause and resume. Absent: no webhook.
///
/// ```toml
/// [sink.guard.webhook]
/// url = "https://automation.example.com/kpiflow/guard"
/// secret_env = "KPIFLOW_GUARD_WEBHOOK_SECRET"
/// timeout = "10s"
/// max_attempts = 8
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardWebhookConfig {
    /// Where to POST: an `http://` or `https://` URL. Required (no default); never logged past
    /// its host (a receiver may hold a token in the path).
    pub url: String,
    /// The name of the environment variable that holds the HMAC-SHA256 key (at least 16
    /// bytes); the key itself never goes in this file. Default: `"KPIFLOW_GUARD_WEBHOOK_SECRET"`.
    #[serde(default = "GuardWebhookConfig::default_secret_env")]
    pub secret_env: String,
    /// Longest wait for one request, 100ms to 5m. Default: `"10s"`.
    #[serde(
        default = "GuardWebhookConfig::default_timeout",
        with = "humantime_serde"
    )]
    pub timeout: Duration,
    /// Attempts per push (the first included), 1 to 100; a push still failing after them is
    /// given up and the state re-synced. Default: `8`.
    #[serde(default = "GuardWebhookConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// First wait before a retry; doubles up to `retry_max`. At least 10ms. Default: `"500ms"`.
    #[serde(
        default = "GuardWebhookConfig::default_retry_initial",
        with = "humantime_serde"
    )]
    pub retry_initial: Duration,
    /// Longest wait between two attempts, `retry_initial` to 1h. Default: `"1m"`.
    #[serde(
        default = "GuardWebhookConfig::default_retry_max",
        with = "humantime_serde"
    )]
    pub retry_max: Duration,
}

// The URL may hold a token: it never reaches a log line.
impl std::fmt::Debug for GuardWebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardWebhookConfig")
            .field("url", &"<redacted>")
            .field("secret_env", &self.secret_env)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

/// Looks up an environment variable: the process's in production, a map in tests.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<Vec<u8>>;

/// The process's environment.
pub(crate) fn process_env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(std::ffi::OsString::into_encoded_bytes)
}

impl GuardWebhookConfig {
    fn default_secret_env() -> String {
        "KPIFLOW_GUARD_WEBHOOK_SECRET".into()
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_max_attempts() -> u32 {
        8
    }
    fn default_retry_initial() -> Duration {
        Duration::from_millis(500)
    }
    fn default_retry_max() -> Duration {
        Duration::from_secs(60)
    }

    /// Checks every value before any I/O; errors name the key (`sink.guard.webhook.…`) and
    /// the value. Whether the key's variable is set is [`GuardWebhookConfig::key`]'s to say.
    pub(crate) fn validate(&self) -> Result<(), SinkError> {
        let bad = |key: &str, value: String, problem: String| SinkError::Config {
            key: format!("sink.guard.webhook.{key}"),
            value,
            problem,
        };
        let dur = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            // The URL may hold a token: name the problem, not the value.
            Ok(_) => {
                return Err(bad(
                    "url",
                    "<redacted>".into(),
                    "must be an http:// or https:// URL with a host".into(),
                ));
            }
            Err(e) => return Err(bad("url", "<redacted>".into(), format!("not a URL ({e})"))),
        }
        self.check_name()?;
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(300) {
            return Err(bad(
                "timeout",
                dur(self.timeout),
                "must be between 100ms and 5m".into(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(bad(
                "max_attempts",
                self.max_attempts.to_string(),
                "must be between 1 and 100".into(),
            ));
        }
        if self.retry_initial < Duration::from_millis(10) {
            return Err(bad(
                "retry_initial",
                dur(self.retry_initial),
                "must be at least 10ms".into(),
            ));
        }
        if self.retry_max < self.retry_initial || self.retry_max > Duration::from_secs(3600) {
            return Err(bad(
                "retry_max",
                dur(self.retry_max),
                format!(
                    "must be at least retry_initial ({}) and at most 1h",
                    humantime::format_duration(self.retry_initial)
                ),
            ));
        }
        Ok(())
    }

    /// The HMAC key, from the variable `secret_env` names; errors name the key and the
    /// variable, never the secret.
    pub(crate) fn key(&self, env: EnvLookup<'_>) -> Result<Vec<u8>, SinkError> {
        self.check_name()?;
        let var = &self.secret_env;
        let bad = |problem: String| SinkError::Config {
            key: "sink.guard.webhook.secret_env".into(),
            value: format!("{var:?}"),
            problem,
        };
        match env(var) {
            None => Err(bad(format!(
                "environment variable {var} is not set (it must hold the webhook's HMAC key)"
            ))),
            Some(key) if key.is_empty() => Err(bad(format!(
                "environment variable {var} is empty (it must hold the webhook's HMAC key)"
            ))),
            Some(key) if key.len() < MIN_KEY_BYTES => Err(bad(format!(
                "the key in environment variable {var} must be at least {MIN_KEY_BYTES} bytes long"
            ))),
            Some(key) => Ok(key),
        }
    }

    /// `secret_env` names a variable (letters, digits and `_`), never holds the secret.
    fn check_name(&self) -> Result<(), SinkError> {
        let var = &self.secret_env;
        let name_ok = var
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name_ok {
            return Ok(());
        }
        // Likely the secret itself: never print it back.
        Err(SinkError::Config {
            key: "sink.guard.webhook.secret_env".into(),
            value: "<redacted>".into(),
            problem: "must be the name of an environment variable (letters, digits and \
                      `_`), not the secret itself"
                .into(),
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The `X-Kpiflow-Signature` value of `body` signed at `timestamp` (Unix seconds):
/// `sha256=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    crate::alert::webhook::sign(secret, timestamp, body, SignatureEncoding::Hex)
}

/// Whether `signature_header` (`sha256=<hex>`) is the HMAC-SHA256 under `secret` of
/// `timestamp_header`, a dot and the raw `body`, compared in constant time. A receiver also
/// refuses a timestamp far from its clock (a replay).
pub fn verify(secret: &[u8], timestamp_header: &str, body: &[u8], signature_header: &str) -> bool {
    let Some(tag) = signature_header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp_header.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// A breach pausing a shop, with what it pauses (action names, or `["*"]`).
#[derive(Debug, Clone)]
pub(crate) struct Pausing<'a> {
    pub(crate) breach: &'a BreachEvent,
    pub(crate) actions: Vec<String>,
}

/// What changed: a breach opened, or a breach resolved (at the given time).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    Pause,
    Resume { resolved_at: DateTime<Utc> },
}

/// One message, built once: its body (and so its `delivery_id`) is the same on every retry.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    delivery_id: String,
    event: &'static str,
    shop: Option<String>,
    body: Vec<u8>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    delivery_id: &'a str,
    #[serde(flatten)]
    message: Message<'a>,
    emitted_at: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Message<'a> {
    Pause(ShopChange<'a>),
    Resume(ShopChange<'a>),
    Sync(ShopState<'a>),
    SyncComplete { paused_shops: Vec<&'a str> },
}

#[derive(Serialize)]
struct ShopChange<'a> {
    shop: &'a str,
    breach: Summary<'a>,
    #[serde(flatten)]
    state: ShopState<'a>,
}

#[derive(Serialize)]
struct ShopState<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    shop: Option<&'a str>,
    actions: Vec<String>,
    paused_by: Vec<Summary<'a>>,
}

/// A breach as the guard's `423` answer shows it, plus what it pauses.
#[derive(Serialize)]
struct Summary<'a> {
    breach_id: &'a str,
    rule: &'a str,
    severity: Severity,
    kpi: &'a str,
    scope: &'a Scope,
    window: &'a WindowRef,
    since: DateTime<Utc>,
    message: &'a str,
    actions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<DateTime<Utc>>,
}

fn summary<'a>(p: &'a Pausing<'a>, resolved_at: Option<DateTime<Utc>>) -> Summary<'a> {
    let b = p.breach;
    Summary {
        breach_id: &b.breach_id,
        rule: &b.rule,
        severity: b.severity,
        kpi: &b.kpi,
        scope: &b.scope,
        window: &b.window,
        since: b.at,
        message: &b.message,
        actions: &p.actions,
        resolved_at,
    }
}

/// The union of what `paused_by` pauses, sorted; `["*"]` when one of them pauses everything.
fn union(paused_by: &[Pausing<'_>]) -> Vec<String> {
    let mut actions: Vec<String> = paused_by.iter().flat_map(|p| p.actions.clone()).collect();
    if actions.iter().any(|a| a == "*") {
        return vec!["*".into()];
    }
    actions.sort();
    actions.dedup();
    actions
}

fn state<'a>(paused_by: &'a [Pausing<'a>]) -> ShopState<'a> {
    ShopState {
        shop: None,
        actions: union(paused_by),
        paused_by: paused_by.iter().map(|p| summary(p, None)).collect(),
    }
}

fn build(event: &'static str, shop: Option<&str>, message: Message<'_>) -> Push {
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&Envelope {
        delivery_id: &delivery_id,
        message,
        emitted_at: Utc::now(),
    })
    // Strings, numbers and timestamps only: encoding cannot fail.
    .expect("a guard push encodes");
    Push {
        delivery_id,
        event,
        shop: shop.map(String::from),
        body,
    }
}

/// `pause` or `resume` of `breach` for its shop, which `paused_by` pauses after the change.
pub(crate) fn change(change: Change, breach: &Pausing<'_>, paused_by: &[Pausing<'_>]) -> Push {
    let shop = breach.breach.scope.shop.as_str();
    let (event, resolved_at) = match change {
        Change::Pause => ("pause", None),
        Change::Resume { resolved_at } => ("resume", Some(resolved_at)),
    };
    let c = ShopChange {
        shop,
        breach: summary(breach, resolved_at),
        state: state(paused_by),
    };
    let message = match change {
        Change::Pause => Message::Pause(c),
        Change::Resume { .. } => Message::Resume(c),
    };
    build(event, Some(shop), message)
}

/// The syncs of the current state: one `sync` per paused shop (in shop order), then
/// `sync_complete`.
pub(crate) fn syncs<'a>(shops: impl IntoIterator<Item = (&'a str, Vec<Pausing<'a>>)>) -> Vec<Push> {
    let mut out = Vec::new();
    let mut paused_shops = Vec::new();
    for (shop, paused_by) in shops {
        let mut s = state(&paused_by);
        s.shop = Some(shop);
        out.push(build("sync", Some(shop), Message::Sync(s)));
        paused_shops.push(shop);
    }
    out.push(build(
        "sync_complete",
        None,
        Message::SyncComplete { paused_shops },
    ));
    out
}

/// The guard's end of the queue: pushing never blocks.
#[derive(Debug)]
pub(crate) struct Pusher {
    tx: mpsc::Sender<Push>,
    resync: Arc<AtomicBool>,
}

impl Pusher {
    /// Queues `push`; when the queue is full, drops it and asks for a re-sync.
    pub(crate) fn push(&self, push: Push) {
        match self.tx.try_send(push) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(p)) => {
                self.resync.store(true, Ordering::SeqCst);
                GuardPushed::of(&p, GuardPushOutcome::Dropped, 0, Some("the queue is full")).emit();
            }
            // The sender stopped (shutdown): the next start syncs.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl GuardPushed<'_> {
    fn of<'a>(
        p: &'a Push,
        outcome: GuardPushOutcome,
        attempt: u32,
        reason: Option<&'a str>,
    ) -> GuardPushed<'a> {
        GuardPushed {
            outcome,
            event: p.event,
            delivery_id: &p.delivery_id,
            shop: p.shop.as_deref(),
            attempt,
            reason,
        }
    }
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Rejected,
    GivenUp,
    Cancelled,
}

struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    target: String,
    key: Vec<u8>,
    max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
    resync: Arc<AtomicBool>,
    /// The syncs of the guard's state now.
    snapshot: Box<dyn Fn() -> Vec<Push> + Send + Sync>,
}

/// Starts the sender task on the current Tokio runtime; it stops when `shutdown` is cancelled.
pub(crate) fn start(
    cfg: &GuardWebhookConfig,
    key: Vec<u8>,
    snapshot: Box<dyn Fn() -> Vec<Push> + Send + Sync>,
    shutdown: CancellationToken,
) -> Result<(Pusher, tokio::task::JoinHandle<()>), SinkError> {
    let url = reqwest::Url::parse(&cfg.url).map_err(|e| SinkError::Config {
        key: "sink.guard.webhook.url".into(),
        value: "<redacted>".into(),
        problem: format!("not a URL ({e})"),
    })?;
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| SinkError::Internal(format!("building the guard webhook's client: {e}")))?;
    // Series exist from the start at zero, for rate() and the dashboards.
    for outcome in GuardPushOutcome::ALL {
        let _ =
            kpiflow_core::metrics::guard_webhook_pushes().with_label_values(&[outcome.as_str()]);
    }
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let resync = Arc::new(AtomicBool::new(false));
    let sender = Sender {
        client,
        target: format!("guard webhook {}", redacted(&url)),
        url,
        key,
        max_attempts: cfg.max_attempts,
        retry_initial: cfg.retry_initial,
        retry_max: cfg.retry_max,
        resync: resync.clone(),
        snapshot,
    };
    let task = tokio::spawn(sender.run(rx, shutdown));
    Ok((Pusher { tx, resync }, task))
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Push>, shutdown: CancellationToken) {
        let mut in_flight = 0;
        loop {
            let push = match rx.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // A push was lost: once everything older is out, send the state whole.
                    if self.resync.swap(false, Ordering::SeqCst) {
                        let syncs = (self.snapshot)();
                        let total = syncs.len();
                        for (i, p) in syncs.iter().enumerate() {
                            match self.deliver(p, &shutdown).await {
                                Outcome::Cancelled => {
                                    in_flight = total - i;
                                    break;
                                }
                                Outcome::GivenUp => {
                                    self.resync.store(true, Ordering::SeqCst);
                                    self.pause_after_giving_up(&shutdown).await;
                                    break;
                                }
                                Outcome::Delivered | Outcome::Rejected => {}
                            }
                        }
                        if shutdown.is_cancelled() {
                            break;
                        }
                        continue;
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        p = rx.recv() => match p {
                            Some(p) => p,
                            None => break,
                        },
                    }
                }
            };
            match self.deliver(&push, &shutdown).await {
                Outcome::Cancelled => {
                    in_flight = 1;
                    break;
                }
                Outcome::GivenUp => {
                    self.resync.store(true, Ordering::SeqCst);
                    self.pause_after_giving_up(&shutdown).await;
                }
                Outcome::Delivered | Outcome::Rejected => {}
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        rx.close();
        let mut left = in_flight;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        GuardPushesAbandoned { count: left }.emit();
    }

    /// After a push used all its attempts the receiver is likely down: wait `retry_max`
    /// before the next, so a receiver that refuses connections is not hammered.
    async fn pause_after_giving_up(&self, shutdown: &CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(self.retry_max) => {}
        }
    }

    async fn deliver(&self, push: &Push, shutdown: &CancellationToken) -> Outcome {
        let mut wait = self.retry_initial;
        for attempt in 1..=self.max_attempts {
            // Signed per attempt: a retry after a long outage must not carry a stale stamp.
            let timestamp = Utc::now().timestamp();
            let request = self
                .client
                .post(self.url.clone())
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, sign(&self.key, timestamp, &push.body))
                .header(DELIVERY_HEADER, &push.delivery_id);
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Outcome::Cancelled,
                r = post_json(request, &self.target, push.body.clone()) => r,
            };
            let reason = match result {
                Ok(()) => {
                    GuardPushed::of(push, GuardPushOutcome::Delivered, attempt, None).emit();
                    return Outcome::Delivered;
                }
                Err(e @ SinkError::AlertRejected { .. }) => {
                    let reason = e.to_string();
                    GuardPushed::of(push, GuardPushOutcome::Rejected, attempt, Some(&reason))
                        .emit();
                    return Outcome::Rejected;
                }
                Err(e) => e.to_string(),
            };
            if attempt == self.max_attempts {
                GuardPushed::of(push, GuardPushOutcome::Failed, attempt, Some(&reason)).emit();
                return Outcome::GivenUp;
            }
            GuardPushed::of(push, GuardPushOutcome::Retried, attempt, Some(&reason)).emit();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Outcome::Cancelled,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.retry_max);
        }
        // max_attempts is at least 1 (validated), so the loop returned.
        GuardPushed::of(
            push,
            GuardPushOutcome::Failed,
            0,
            Some("no attempt allowed"),
        )
        .emit();
        Outcome::GivenUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// An environment where only `KPIFLOW_TEST_GUARD_KEY` (a good key), `SHORT` and `EMPTY`
    /// are set.
    fn env(name: &str) -> Option<Vec<u8>> {
        match name {
            "KPIFLOW_TEST_GUARD_KEY" => Some(KEY.to_vec()),
            "SHORT" => Some(b"tiny".to_vec()),
            "EMPTY" => Some(Vec::new()),
            _ => None,
        }
    }

    fn err(toml_text: &str) -> String {
        let cfg: crate::GuardConfig = toml::from_str(toml_text).unwrap();
        cfg.validate_with(&env).unwrap_err().to_string()
    }

    const OK: &str = "enabled = true\n[webhook]\nurl = \"https://hooks.example.com/T0K3N\"\n\
                      secret_env = \"KPIFLOW_TEST_GUARD_KEY\"\n";

    #[test]
    fn defaults_are_the_documented_values() {
        let cfg: crate::GuardConfig = toml::from_str(OK).unwrap();
        cfg.validate_with(&env).unwrap();
        let wh = cfg.webhook.unwrap();
        assert_eq!(wh.timeout, Duration::from_secs(10));
        assert_eq!(wh.max_attempts, 8);
        assert_eq!(wh.retry_initial, Duration::from_millis(500));
        assert_eq!(wh.retry_max, Duration::from_secs(60));
        let cfg: crate::GuardConfig =
            toml::from_str("[webhook]\nurl = \"http://h.example\"").unwrap();
        assert_eq!(
            cfg.webhook.unwrap().secret_env,
            "KPIFLOW_GUARD_WEBHOOK_SECRET"
        );
        // No table, no webhook.
        let cfg: crate::GuardConfig = toml::from_str("enabled = true").unwrap();
        assert_eq!(cfg.webhook, None);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let with = |extra: &str| err(&format!("{OK}{extra}"));
        let m = err(
            "enabled = true\n[webhook]\nurl = \"ftp://h.example/T0K3N\"\n\
                     secret_env = \"KPIFLOW_TEST_GUARD_KEY\"",
        );
        assert_eq!(
            m,
            "bad config: sink.guard.webhook.url = <redacted>: \
             must be an http:// or https:// URL with a host"
        );
        let m = err("enabled = true\n[webhook]\nurl = \"not a url T0K3N\"\n\
                     secret_env = \"KPIFLOW_TEST_GUARD_KEY\"");
        assert!(
            m.starts_with("bad config: sink.guard.webhook.url = <redacted>: not a URL")
                && !m.contains("T0K3N"),
            "{m}"
        );
        // Every role validates the file; only the sink (and check-config) needs the key.
        let unset: crate::GuardConfig =
            toml::from_str(&OK.replace("KPIFLOW_TEST_GUARD_KEY", "KPIFLOW_TEST_UNSET_KEY"))
                .unwrap();
        unset.validate().unwrap();
        assert!(unset.check_environment().is_err());
        let m = err(&OK.replace("KPIFLOW_TEST_GUARD_KEY", "KPIFLOW_TEST_UNSET_KEY"));
        assert_eq!(
            m,
            "bad config: sink.guard.webhook.secret_env = \"KPIFLOW_TEST_UNSET_KEY\": environment \
             variable KPIFLOW_TEST_UNSET_KEY is not set (it must hold the webhook's HMAC key)"
        );
        let m = err(&OK.replace("KPIFLOW_TEST_GUARD_KEY", "EMPTY"));
        assert!(
            m.starts_with("bad config: sink.guard.webhook.secret_env = \"EMPTY\": environment variable EMPTY is empty"),
            "{m}"
        );
        let m = err(&OK.replace("KPIFLOW_TEST_GUARD_KEY", "SHORT"));
        assert!(
            m.contains("sink.guard.webhook.secret_env") && m.contains("at least 16 bytes"),
            "{m}"
        );
        // A secret pasted where its variable's name belongs is refused and not printed back.
        let m = err(&OK.replace("KPIFLOW_TEST_GUARD_KEY", "s3cr3t-value!"));
        assert!(
            m.starts_with(
                "bad config: sink.guard.webhook.secret_env = <redacted>: must be the name"
            ) && !m.contains("s3cr3t"),
            "{m}"
        );
        assert_eq!(
            with("max_attempts = 0"),
            "bad config: sink.guard.webhook.max_attempts = 0: must be between 1 and 100"
        );
        assert_eq!(
            with("timeout = \"10ms\""),
            "bad config: sink.guard.webhook.timeout = \"10ms\": must be between 100ms and 5m"
        );
        assert_eq!(
            with("retry_initial = \"1s\"\nretry_max = \"500ms\""),
            "bad config: sink.guard.webhook.retry_max = \"500ms\": \
             must be at least retry_initial (1s) and at most 1h"
        );
        assert!(
            with("retry_initial = \"1ms\"")
                .starts_with("bad config: sink.guard.webhook.retry_initial")
        );
        // The webhook pushes the guard's state: without the guard it would push nothing.
        assert!(
            err(&OK.replace("enabled = true\n", ""))
                .starts_with("bad config: sink.guard.webhook = {…}: pushes the guard's pauses"),
        );
        assert!(
            toml::from_str::<crate::GuardConfig>("[webhook]\nurl = \"http://h\"\nsecret = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<crate::GuardConfig>("[webhook]\nsecret_env = \"X\"").is_err());
        assert!(toml::from_str::<crate::GuardConfig>(&format!("{OK}timeout = \"soon\"")).is_err());
    }

    #[test]
    fn the_process_environment_is_what_check_environment_reads() {
        let cfg: crate::GuardConfig = toml::from_str(&OK.replace(
            "KPIFLOW_TEST_GUARD_KEY",
            "KPIFLOW_TEST_SURELY_UNSET_GUARD_KEY",
        ))
        .unwrap();
        let m = cfg.check_environment().unwrap_err().to_string();
        assert!(
            m.contains("KPIFLOW_TEST_SURELY_UNSET_GUARD_KEY is not set"),
            "{m}"
        );
    }

    #[test]
    fn the_url_never_reaches_debug_output() {
        let cfg: crate::GuardConfig = toml::from_str(OK).unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("T0K3N") && shown.contains("KPIFLOW_TEST_GUARD_KEY"),
            "{shown}"
        );
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let body = br#"{"event":"pause"}"#;
        // Reference: python3 -c "import hmac,hashlib; print(hmac.new(KEY,
        //   b'1700000000.{\"event\":\"pause\"}', hashlib.sha256).hexdigest())"
        let sig = sign(KEY, 1_700_000_000, body);
        assert_eq!(
            sig,
            "sha256=7f0779457d45042c8384b4bd2bce368842f20d13d14f02f67997404067fa1653"
        );
        assert!(verify(KEY, "1700000000", body, &sig));
        assert!(
            !verify(KEY, "1700000000", br#"{"event":"resume"}"#, &sig),
            "body tampered"
        );
        assert!(!verify(KEY, "1700000001", body, &sig), "timestamp moved");
        assert!(
            !verify(b"another key of 16+ bytes", "1700000000", body, &sig),
            "wrong key"
        );
        assert!(
            !verify(KEY, "1700000000", body, &sig.to_uppercase()),
            "prefix is sha256="
        );
        assert!(
            !verify(KEY, "1700000000", body, &sig[..sig.len() - 2]),
            "truncated"
        );
        assert!(!verify(KEY, "1700000000", body, "sha256=zz"), "not hex");
        assert!(!verify(
            KEY,
            "1700000000",
            body,
            sig.trim_start_matches("sha256=")
        ));
    }

    #[test]
    fn a_change_carries_the_breach_and_the_shops_state() {
        let mut b = crate::parquet::tests::breach_fixtures().remove(0);
        b.breach_id = "b1".into();
        b.rule = "lsr_high".into();
        let mut other = b.clone();
        other.breach_id = "b0".into();
        other.rule = "stockout".into();
        let changed = Pausing {
            breach: &b,
            actions: vec!["repricing".into()],
        };
        let paused_by = [
            Pausing {
                breach: &other,
                actions: vec!["*".into()],
            },
            changed.clone(),
        ];
        let push = change(Change::Pause, &changed, &paused_by);
        let v: serde_json::Value = serde_json::from_slice(&push.body).unwrap();
        assert_eq!(v["delivery_id"], push.delivery_id.as_str());
        assert_eq!(v["event"], "pause");
        assert_eq!(v["shop"], "shop-1");
        assert_eq!(v["breach"]["breach_id"], "b1");
        assert_eq!(v["breach"]["actions"], serde_json::json!(["repricing"]));
        assert!(v["breach"].get("resolved_at").is_none());
        // One breach pauses every action: so is the shop.
        assert_eq!(v["actions"], serde_json::json!(["*"]));
        assert_eq!(v["paused_by"][0]["breach_id"], "b0");
        assert_eq!(v["paused_by"][1]["breach_id"], "b1");
        let all = syncs([("shop-1", paused_by.to_vec())]);
        let kinds: Vec<serde_json::Value> = all
            .iter()
            .map(|p| serde_json::from_slice::<serde_json::Value>(&p.body).unwrap()["event"].clone())
            .collect();
        assert_eq!(kinds, ["sync", "sync_complete"]);
    }
}
