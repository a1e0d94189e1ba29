//! The automation guard: `GET /v1/guard?shop=…&action=…` tells a repricing or bidding script
//! whether it may act for a shop, from the breaches open now.
//!
//! Sellers run scripts that reprice or change bids on their own; a serious anomaly (a stockout
//! spike, a late-shipment breach that risks the account) must pause them. The guard answers
//! `200 {"allow":true}` or `423 {"allow":false,"breaches":[…]}` while a breach of a configured
//! severity is open for that shop (and, when the request names one, that SKU or campaign), and
//! `503` while it is still rebuilding its state, so a restart never opens the gate early.
//!
//! **State.** Every open breach, by `breach_id`: rebuilt at start from the `breaches` table
//! (breaches whose firing event the topic no longer holds) and then from the whole breaches
//! topic, read from its beginning on every partition by a consumer of its own (not the sink's
//! group: two sinks sharing a group each see only part of the breaches, and a gate must know
//! them all). It answers once it has read to the end offsets the topic had at start.
//!
//! **Matching.** A breach pauses a request when its shop is the request's, its severity is in
//! `severities`, its rule pauses the action (`pauses`: rule id → actions; a rule not listed
//! pauses every action), and its scope covers the request: a shop-level breach covers every
//! request of the shop; a SKU's (or campaign's) breach covers requests naming that SKU
//! (campaign) and requests naming none, which act on the whole shop.
//!
//! **Webhook** (`[sink.guard.webhook]`, optional): once ready, the guard also pushes a signed
//! `pause` when a breach that pauses something opens and a `resume` when it resolves, and a
//! `sync` of every paused shop when it becomes ready; see [`crate::guard_webhook`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kpiflow_core::KafkaConfig;
use kpiflow_core::metrics;
use kpiflow_schemas::{BreachEvent, BreachState, Severity, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::SinkError;
use crate::guard_webhook::{self, Change, GuardWebhookConfig, Pausing, Push, Pusher};

/// `[sink.guard]`: the automation guard on the sink's HTTP listener (`[metrics] listen`).
///
/// ```toml
/// [sink.guard]
/// enabled = true
/// severities = ["critical"]
/// [sink.guard.pauses]
/// late_shipment_high = ["repricing"]        # this rule pauses repricing only
/// [sink.guard.webhook]                      # optional: push pause / resume (guard_webhook)
/// url = "https://automation.example.com/kpiflow/guard"
/// secret_env = "KPIFLOW_GUARD_WEBHOOK_SECRET"  # the variable holding the HMAC key
/// timeout = "10s"
/// max_attempts = 8
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Serve `GET /v1/guard`. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Breaches of these severities close the gate (`"info"`, `"warning"`, `"critical"`).
    /// Default: `["critical"]`.
    #[serde(default = "GuardConfig::default_severities")]
    pub severities: Vec<Severity>,
    /// Which actions a rule's breaches pause, by rule id: action names as the scripts ask
    /// (`repricing`, `bidding`, …; `"*"` is every action). A rule not listed pauses every
    /// action. Default: empty.
    #[serde(default)]
    pub pauses: BTreeMap<String, Vec<String>>,
    /// `[sink.guard.webhook]`: push signed pause / resume messages to a URL
    /// ([`GuardWebhookConfig`]). Default: none (no webhook).
    #[serde(default)]
    pub webhook: Option<GuardWebhookConfig>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: false,
            severities: Self::default_severities(),
            pauses: BTreeMap::new(),
            webhook: None,
        }
    }
}

impl GuardConfig {
    fn default_severities() -> Vec<Severity> {
        vec![Severity::Critical]
    }

    /// Checks every value before any I/O; errors name the key and the value. The webhook's
    /// key is not looked up here: every role reads the same file, and only the sink needs it
    /// in its environment (see [`GuardConfig::check_environment`]).
    pub fn validate(&self) -> Result<(), SinkError> {
        self.check_values()
    }

    /// What only the sink needs from its environment: the webhook's key, set and long
    /// enough. The sink checks it before it starts, and so does `kpiflow check-config`.
    pub fn check_environment(&self) -> Result<(), SinkError> {
        self.check_environment_with(&guard_webhook::process_env)
    }

    /// [`GuardConfig::check_environment`] with `env` for the environment.
    pub(crate) fn check_environment_with(
        &self,
        env: guard_webhook::EnvLookup<'_>,
    ) -> Result<(), SinkError> {
        match &self.webhook {
            Some(webhook) if self.enabled => webhook.key(env).map(drop),
            _ => Ok(()),
        }
    }

    /// [`GuardConfig::validate`], then [`GuardConfig::check_environment_with`] `env`.
    #[cfg(test)]
    pub(crate) fn validate_with(&self, env: guard_webhook::EnvLookup<'_>) -> Result<(), SinkError> {
        self.check_values()?;
        self.check_environment_with(env)
    }

    fn check_values(&self) -> Result<(), SinkError> {
        let bad = |key: String, value: String, problem: &str| SinkError::Config {
            key,
            value,
            problem: problem.to_string(),
        };
        if self.enabled && self.severities.is_empty() {
            return Err(bad(
                "sink.guard.severities".into(),
                "[]".into(),
                "must name at least one severity, or the guard never pauses anything",
            ));
        }
        for (rule, actions) in &self.pauses {
            if actions.is_empty() {
                return Err(bad(
                    format!("sink.guard.pauses.{rule}"),
                    "[]".into(),
                    "must name at least one action (leave the rule out to pause every action)",
                ));
            }
            for a in actions {
                let name_ok = !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if a != "*" && !name_ok {
                    return Err(bad(
                        format!("sink.guard.pauses.{rule}"),
                        format!("{a:?}"),
                        "an action is lowercase letters, digits and `_`, or \"*\" for every action",
                    ));
                }
            }
        }
        if let Some(webhook) = &self.webhook {
            if !self.enabled {
                return Err(bad(
                    "sink.guard.webhook".into(),
                    "{…}".into(),
                    "pushes the guard's pauses, so it needs sink.guard.enabled = true",
                ));
            }
            webhook.validate()?;
        }
        Ok(())
    }

    /// What a breach of `rule` pauses: its actions sorted, or `["*"]`.
    fn paused_actions(&self, rule: &str) -> Vec<String> {
        match self.pauses.get(rule) {
            Some(actions) if !actions.iter().any(|a| a == "*") => {
                let mut actions = actions.clone();
                actions.sort();
                actions.dedup();
                actions
            }
            _ => vec!["*".into()],
        }
    }

    fn pauses(&self, rule: &str, action: &str) -> bool {
        self.pauses
            .get(rule)
            .is_none_or(|actions| actions.iter().any(|a| a == "*" || a == action))
    }
}

/// What a script asks: may `action` run for `shop` (and this SKU or campaign)?
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardQuery {
    /// The shop id, as in the canonical events.
    pub shop: Option<String>,
    /// The action, e.g. `repricing` or `bidding`.
    pub action: Option<String>,
    /// The SKU the action touches, if it touches one.
    pub sku: Option<String>,
    /// The ad campaign the action touches, if it touches one.
    pub campaign: Option<String>,
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The state is still being rebuilt: the script must wait (never "allow" too early).
    NotReady,
    /// No open breach pauses the action.
    Allow,
    /// These open breaches pause it (their firing events).
    Deny(Vec<BreachEvent>),
}

/// The routes a sink serves beside `/metrics`: `/v1/guard` when the guard is on, else none.
pub fn routes(guard: Option<&Guard>) -> Router {
    guard.map_or_else(Router::new, Guard::router)
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    /// The firing event of every open breach, by `breach_id`.
    open: HashMap<String, BreachEvent>,
}

/// The guard's shared state: the sink applies breaches to it, the HTTP route reads it.
#[derive(Debug, Clone)]
pub struct Guard {
    cfg: Arc<GuardConfig>,
    state: Arc<RwLock<State>>,
    /// The webhook's queue, once [`Guard::start_webhook`] started it.
    webhook: Arc<OnceLock<Pusher>>,
}

impl Guard {
    /// An empty guard, not ready until [`Guard::set_ready`].
    pub fn new(cfg: &GuardConfig) -> Guard {
        Guard {
            cfg: Arc::new(cfg.clone()),
            state: Arc::default(),
            webhook: Arc::default(),
        }
    }

    /// Starts the webhook's sender task when `[sink.guard.webhook]` is set (on the current
    /// Tokio runtime), reading its key from the environment; the task stops when `shutdown`
    /// is cancelled. Call it before the first [`Guard::apply`]; `None` without a webhook.
    pub fn start_webhook(
        &self,
        shutdown: CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, SinkError> {
        let Some(cfg) = &self.cfg.webhook else {
            return Ok(None);
        };
        let key = cfg.key(&guard_webhook::process_env)?;
        self.start_webhook_with_key(key, shutdown).map(Some)
    }

    /// [`Guard::start_webhook`] with the key given.
    pub(crate) fn start_webhook_with_key(
        &self,
        key: Vec<u8>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, SinkError> {
        let Some(cfg) = &self.cfg.webhook else {
            return Err(SinkError::Internal(
                "the guard's webhook started without [sink.guard.webhook]".into(),
            ));
        };
        // The sender re-syncs from the state itself; a weak handle lets the guard go.
        let state = Arc::downgrade(&self.state);
        let guard_cfg = self.cfg.clone();
        let snapshot = Box::new(move || {
            state.upgrade().map_or_else(Vec::new, |state| {
                let s = state.read().expect("guard state lock");
                syncs(&guard_cfg, &s)
            })
        });
        let (pusher, task) = guard_webhook::start(cfg, key, snapshot, shutdown)?;
        self.webhook
            .set(pusher)
            .map_err(|_| SinkError::Internal("the guard's webhook started twice".into()))?;
        Ok(task)
    }

    /// Applies one transition: a firing opens (or keeps open) its breach, a resolve closes it.
    /// Once ready, a breach that pauses something opening or closing queues a webhook push.
    pub fn apply(&self, b: &BreachEvent) {
        let mut s = self.state.write().expect("guard state lock");
        match b.state {
            BreachState::Firing => {
                if s.open.insert(b.breach_id.clone(), b.clone()).is_none() {
                    self.push_change(&s, Change::Pause, b);
                }
            }
            BreachState::Resolved => {
                if let Some(opened) = s.open.remove(&b.breach_id) {
                    let resume = Change::Resume { resolved_at: b.at };
                    self.push_change(&s, resume, &opened);
                }
            }
        }
    }

    /// Queues the push of `breach` (its firing event) opening or closing, if it pauses
    /// something; called with the state changed and its lock held, so pushes keep its order.
    fn push_change(&self, s: &State, change: Change, breach: &BreachEvent) {
        let Some(webhook) = self.webhook.get() else {
            return;
        };
        // Before ready, transitions are history: the syncs at set_ready tell the state.
        if !s.ready || !self.cfg.severities.contains(&breach.severity) {
            return;
        }
        let changed = Pausing {
            actions: self.cfg.paused_actions(&breach.rule),
            breach,
        };
        let paused_by = pausing(&self.cfg, s, &breach.scope.shop);
        webhook.push(guard_webhook::change(change, &changed, &paused_by));
    }

    /// From now on the guard answers; the webhook, if any, pushes one `sync` per paused shop
    /// and a `sync_complete`.
    pub fn set_ready(&self) {
        let mut s = self.state.write().expect("guard state lock");
        if std::mem::replace(&mut s.ready, true) {
            return;
        }
        if let Some(webhook) = self.webhook.get() {
            for push in syncs(&self.cfg, &s) {
                webhook.push(push);
            }
        }
    }

    /// The verdict for `shop`, `action` and the optional SKU and campaign.
    pub fn check(
        &self,
        shop: &str,
        action: &str,
        sku: Option<&str>,
        campaign: Option<&str>,
    ) -> Verdict {
        let s = self.state.read().expect("guard state lock");
        if !s.ready {
            return Verdict::NotReady;
        }
        let covers = |mine: &Option<String>, asked: Option<&str>| match (mine, asked) {
            (None, _) | (Some(_), None) => true,
            (Some(m), Some(a)) => m == a,
        };
        let mut pausing: Vec<BreachEvent> = s
            .open
            .values()
            .filter(|b| {
                b.scope.shop == shop
                    && self.cfg.severities.contains(&b.severity)
                    && self.cfg.pauses(&b.rule, action)
                    && covers(&b.scope.sku, sku)
                    && covers(&b.scope.campaign, campaign)
            })
            .cloned()
            .collect();
        if pausing.is_empty() {
            return Verdict::Allow;
        }
        pausing.sort_by(|a, b| (a.at, &a.breach_id).cmp(&(b.at, &b.breach_id)));
        Verdict::Deny(pausing)
    }

    /// `GET /v1/guard?shop=…&action=…[&sku=…][&campaign=…]`.
    pub fn router(&self) -> Router {
        let guard = self.clone();
        Router::new().route(
            "/v1/guard",
            get(
                move |q: Result<Query<GuardQuery>, axum::extract::rejection::QueryRejection>| {
                    let guard = guard.clone();
                    async move { guard.answer(q.ok().map(|Query(q)| q)) }
                },
            ),
        )
    }

    fn answer(&self, q: Option<GuardQuery>) -> axum::response::Response {
        let json = |status: StatusCode, body: serde_json::Value| {
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                format!("{body}\n"),
            )
                .into_response()
        };
        let Some(q) = q else {
            metrics::guard_answers()
                .with_label_values(&["bad_request"])
                .inc();
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "the query takes shop, action and optionally sku and campaign, and nothing else"}),
            );
        };
        let (Some(shop), Some(action)) = (q.shop.as_deref(), q.action.as_deref()) else {
            metrics::guard_answers()
                .with_label_values(&["bad_request"])
                .inc();
            let missing = if q.shop.is_none() { "shop" } else { "action" };
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("missing query parameter `{missing}`")}),
            );
        };
        let base = serde_json::json!({
            "shop": shop,
            "action": action,
            "sku": q.sku,
            "campaign": q.campaign,
        });
        let with = |mut v: serde_json::Value, extra: serde_json::Value| {
            if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        match self.check(shop, action, q.sku.as_deref(), q.campaign.as_deref()) {
            Verdict::NotReady => {
                metrics::guard_answers()
                    .with_label_values(&["not_ready"])
                    .inc();
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    with(
                        base,
                        serde_json::json!({"allow": false, "error": "the guard is still reading the open breaches; ask again"}),
                    ),
                )
            }
            Verdict::Allow => {
                metrics::guard_answers().with_label_values(&["allow"]).inc();
                json(
                    StatusCode::OK,
                    with(base, serde_json::json!({"allow": true})),
                )
            }
            Verdict::Deny(breaches) => {
                metrics::guard_answers().with_label_values(&["deny"]).inc();
                let breaches: Vec<serde_json::Value> = breaches
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "breach_id": b.breach_id,
                            "rule": b.rule,
                            "severity": b.severity,
                            "kpi": b.kpi,
                            "scope": b.scope,
                            "window": b.window,
                            "since": b.at,
                            "message": b.message,
                        })
                    })
                    .collect();
                json(
                    StatusCode::LOCKED,
                    with(
                        base,
                        serde_json::json!({"allow": false, "breaches": breaches}),
                    ),
                )
            }
        }
    }

    /// Rebuilds the state: `open` (the breaches table's open breaches), then the whole
    /// breaches topic from its beginning on a thread of its own, ready once it has read to the
    /// end offsets the topic had when it started; then follows the topic until `shutdown`.
    pub fn follow(
        &self,
        kafka: &KafkaConfig,
        open: &[BreachEvent],
        shutdown: CancellationToken,
    ) -> Result<std::thread::JoinHandle<()>, SinkError> {
        for b in open {
            self.apply(b);
        }
        let topic = kafka.topics().name(Topic::Breaches);
        let mut cfg = kafka.client_config()?;
        // No group: nothing is committed, every start reads the topic whole.
        cfg.set("group.id", format!("{}-guard", kafka.topic_prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| SinkError::kafka("creating the guard's consumer", e))?;
        let meta = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| SinkError::kafka(format!("reading the partitions of {topic}"), e))?;
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut list = TopicPartitionList::new();
        for p in meta.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .map_err(|e| SinkError::kafka(format!("reading the end of {topic}"), e))?;
            if high > low {
                ends.insert(p.id(), high);
            }
            list.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .map_err(|e| SinkError::kafka(format!("assigning {topic}"), e))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| SinkError::kafka(format!("assigning {topic}"), e))?;
        let guard = self.clone();
        if ends.is_empty() {
            guard.set_ready();
        }
        Ok(std::thread::spawn(move || {
            while !shutdown.is_cancelled() {
                let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "the guard could not read the breaches topic; retrying");
                        continue;
                    }
                };
                // An undecodable record is the sink's to dead-letter; the guard skips it.
                if let Some(b) = m.payload().and_then(|p| BreachEvent::from_json(p).ok()) {
                    guard.apply(&b);
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                    if ends.is_empty() {
                        tracing::info!("guard ready: the open breaches are read");
                        guard.set_ready();
                    }
                }
            }
        }))
    }
}

/// The open breaches that pause `shop` (a breach of one of `severities`), oldest first.
fn pausing<'a>(cfg: &GuardConfig, s: &'a State, shop: &str) -> Vec<Pausing<'a>> {
    let mut out: Vec<Pausing<'a>> = s
        .open
        .values()
        .filter(|b| b.scope.shop == shop && cfg.severities.contains(&b.severity))
        .map(|b| Pausing {
            actions: cfg.paused_actions(&b.rule),
            breach: b,
        })
        .collect();
    out.sort_by(|a, b| (a.breach.at, &a.breach.breach_id).cmp(&(b.breach.at, &b.breach.breach_id)));
    out
}

/// The webhook's syncs of the state: one per paused shop, in shop order, then `sync_complete`.
fn syncs(cfg: &GuardConfig, s: &State) -> Vec<Push> {
    let mut shops: Vec<&str> = s
        .open
        .values()
        .filter(|b| cfg.severities.contains(&b.severity))
        .map(|b| b.scope.shop.as_str())
        .collect();
    shops.sort_unstable();
    shops.dedup();
    guard_webhook::syncs(shops.into_iter().map(|shop| (shop, pausing(cfg, s, shop))))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn breach(
        id: &str,
        rule: &str,
        severity: Severity,
        sku: Option<&str>,
    ) -> BreachEvent {
        let mut b = crate::parquet::tests::breach_fixtures().remove(0);
        b.breach_id = id.into();
        b.rule = rule.into();
        b.severity = severity;
        b.state = BreachState::Firing;
        b.scope.shop = "shop-1".into();
        b.scope.sku = sku.map(String::from);
        b.scope.campaign = None;
        b
    }

    fn guard(toml_text: &str) -> Guard {
        let cfg: GuardConfig = toml::from_str(toml_text).unwrap();
        cfg.validate().unwrap();
        let g = Guard::new(&cfg);
        g.set_ready();
        g
    }

    fn ids(v: Verdict) -> Vec<String> {
        match v {
            Verdict::Deny(b) => b.into_iter().map(|b| b.breach_id).collect(),
            Verdict::Allow => Vec::new(),
            Verdict::NotReady => vec!["not ready".into()],
        }
    }

    #[test]
    fn a_guard_not_yet_ready_never_allows() {
        let g = Guard::new(&GuardConfig::default());
        assert_eq!(
            g.check("shop-1", "repricing", None, None),
            Verdict::NotReady
        );
        g.set_ready();
        assert_eq!(g.check("shop-1", "repricing", None, None), Verdict::Allow);
    }

    #[test]
    fn a_critical_breach_pauses_its_shop_until_resolved() {
        let g = guard("");
        let b = breach("b1", "lsr_high", Severity::Critical, None);
        g.apply(&b);
        assert_eq!(ids(g.check("shop-1", "repricing", None, None)), ["b1"]);
        assert_eq!(
            ids(g.check("shop-1", "bidding", Some("SKU-9"), None)),
            ["b1"]
        );
        assert_eq!(g.check("shop-2", "repricing", None, None), Verdict::Allow);
        let mut resolved = b.clone();
        resolved.state = BreachState::Resolved;
        g.apply(&resolved);
        assert_eq!(g.check("shop-1", "repricing", None, None), Verdict::Allow);
    }

    #[test]
    fn severities_and_pauses_choose_what_closes_the_gate() {
        let g =
            guard("severities = [\"warning\", \"critical\"]\n[pauses]\nroas_low = [\"bidding\"]\n");
        g.apply(&breach("w", "lsr_high", Severity::Warning, None));
        g.apply(&breach("i", "gmv_info", Severity::Info, None));
        g.apply(&breach("r", "roas_low", Severity::Critical, None));
        // The info breach pauses nothing; roas_low pauses bidding only.
        assert_eq!(ids(g.check("shop-1", "repricing", None, None)), ["w"]);
        let mut both = ids(g.check("shop-1", "bidding", None, None));
        both.sort();
        assert_eq!(both, ["r", "w"]);
    }

    #[test]
    fn a_skus_breach_pauses_that_sku_and_the_whole_shop_not_other_skus() {
        let g = guard("");
        g.apply(&breach("s", "stockout", Severity::Critical, Some("SKU-1")));
        assert_eq!(
            ids(g.check("shop-1", "repricing", Some("SKU-1"), None)),
            ["s"]
        );
        assert_eq!(ids(g.check("shop-1", "repricing", None, None)), ["s"]);
        assert_eq!(
            g.check("shop-1", "repricing", Some("SKU-2"), None),
            Verdict::Allow
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let err = |t: &str| {
            toml::from_str::<GuardConfig>(t)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("[pauses]\nlsr_high = []"),
            "bad config: sink.guard.pauses.lsr_high = []: must name at least one action (leave the rule out to pause every action)"
        );
        assert!(
            err("[pauses]\nlsr_high = [\"Re Price\"]")
                .starts_with("bad config: sink.guard.pauses.lsr_high = \"Re Price\": an action is")
        );
        assert!(
            err("enabled = true\nseverities = []")
                .starts_with("bad config: sink.guard.severities = []")
        );
        assert!(toml::from_str::<GuardConfig>("enable = true").is_err());
    }
}

/// The webhook against a real HTTP receiver on 127.0.0.1 that records what it gets.
#[cfg(test)]
mod webhook_tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use serde_json::{Value, json};
    use tokio::sync::{Notify, mpsc};

    use super::tests::breach;
    use super::*;
    use crate::guard_webhook::verify;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// One request the receiver got.
    struct Got {
        timestamp: String,
        signature: String,
        delivery: String,
        body: Vec<u8>,
        json: Value,
    }

    struct Receiver {
        url: String,
        got: mpsc::UnboundedReceiver<Got>,
        /// Statuses to answer, in order; 200 once they are used up.
        answers: Arc<Mutex<VecDeque<u16>>>,
        /// Hold the next request (after recording it) until `release`.
        hold_next: Arc<AtomicBool>,
        release: Arc<Notify>,
    }

    async fn receiver() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, got) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let hold_next = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Notify::new());
        let (a, h, r) = (answers.clone(), hold_next.clone(), release.clone());
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (tx, a, h, r) = (tx.clone(), a.clone(), h.clone(), r.clone());
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    // Decided before the test can see the request, so what it sets next
                    // applies to the next request.
                    let hold = h.swap(false, Ordering::SeqCst);
                    let status = a.lock().unwrap().pop_front().unwrap_or(200);
                    let _ = tx.send(Got {
                        timestamp: header("x-kpiflow-timestamp"),
                        signature: header("x-kpiflow-signature"),
                        delivery: header("x-kpiflow-delivery"),
                        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        body: body.to_vec(),
                    });
                    if hold {
                        r.notified().await;
                    }
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
            answers,
            hold_next,
            release,
        }
    }

    impl Receiver {
        /// The next request, checked: signed with KEY at about now, its delivery header its
        /// body's `delivery_id`.
        async fn next(&mut self) -> Got {
            let g = tokio::time::timeout(Duration::from_secs(10), self.got.recv())
                .await
                .expect("a push within 10 s")
                .expect("the receiver runs");
            assert!(
                verify(KEY, &g.timestamp, &g.body, &g.signature),
                "bad signature {} over {}",
                g.signature,
                String::from_utf8_lossy(&g.body)
            );
            let ts: i64 = g.timestamp.parse().unwrap();
            assert!((chrono::Utc::now().timestamp() - ts).abs() < 60, "{ts}");
            assert_eq!(g.json["delivery_id"], g.delivery.as_str());
            assert_eq!(g.delivery.len(), 36, "a UUID: {}", g.delivery);
            assert!(
                g.json["emitted_at"]
                    .as_str()
                    .is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok()),
                "{}",
                g.json
            );
            g
        }

        /// The next request's body without `delivery_id` and `emitted_at`.
        async fn next_body(&mut self) -> Value {
            let mut v = self.next().await.json;
            let o = v.as_object_mut().unwrap();
            o.remove("delivery_id");
            o.remove("emitted_at");
            v
        }
    }

    /// A ready-to-start guard posting to `url`, short backoff; `extra` goes before the tables.
    fn webhook_guard(
        url: &str,
        extra: &str,
    ) -> (Guard, CancellationToken, tokio::task::JoinHandle<()>) {
        let cfg: GuardConfig = toml::from_str(&format!(
            "enabled = true\n{extra}\n[pauses]\nlsr_high = [\"repricing\", \"bidding\"]\n\
             [webhook]\nurl = \"{url}\"\nsecret_env = \"KPIFLOW_TEST_GUARD_KEY\"\n\
             timeout = \"5s\"\nretry_initial = \"10ms\"\nretry_max = \"40ms\"\n"
        ))
        .unwrap();
        cfg.validate_with(&|n| (n == "KPIFLOW_TEST_GUARD_KEY").then(|| KEY.to_vec()))
            .unwrap();
        let g = Guard::new(&cfg);
        let stop = CancellationToken::new();
        let task = g
            .start_webhook_with_key(KEY.to_vec(), stop.clone())
            .unwrap();
        (g, stop, task)
    }

    fn in_shop(mut b: BreachEvent, shop: &str) -> BreachEvent {
        b.scope.shop = shop.into();
        b
    }

    fn resolved(b: &BreachEvent) -> BreachEvent {
        let mut r = b.clone();
        r.state = BreachState::Resolved;
        r.at = "2025-03-15T06:00:00Z".parse().unwrap();
        r
    }

    fn pushes(outcome: &str) -> u64 {
        metrics::guard_webhook_pushes()
            .with_label_values(&[outcome])
            .get()
    }

    /// The fixture breach `b1` as the webhook shows it (values written out by hand).
    fn b1_shown() -> Value {
        json!({
            "breach_id": "b1",
            "rule": "lsr_high",
            "severity": "critical",
            "kpi": "late_shipment_rate",
            "scope": {"shop": "shop-1", "channel": "amazon", "marketplace": "ATVPDKIKX0DER"},
            "window": {
                "kind": "rolling", "name": "rolling_24h",
                "start": "2025-03-14T00:00:00Z", "end": "2025-03-15T00:00:00Z",
                "time_zone": "UTC", "basis": "shipped"
            },
            "since": "2025-03-15T00:00:00Z",
            "message": "late shipment rate 5.00% is above 4.00% for amazon/ATVPDKIKX0DER/shop-1",
            "actions": ["bidding", "repricing"]
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_critical_breach_pushes_a_signed_pause_then_a_resume() {
        let mut rx = receiver().await;
        let (g, _stop, _task) = webhook_guard(&rx.url, "");
        g.set_ready();
        // Nothing was open at start: the sync says no shop is paused.
        assert_eq!(
            rx.next_body().await,
            json!({"event": "sync_complete", "paused_shops": []})
        );

        let b1 = breach("b1", "lsr_high", Severity::Critical, None);
        g.apply(&b1);
        let pause = rx.next().await;
        let mut body = pause.json.clone();
        body.as_object_mut().unwrap().remove("delivery_id");
        body.as_object_mut().unwrap().remove("emitted_at");
        assert_eq!(
            body,
            json!({
                "event": "pause",
                "shop": "shop-1",
                "breach": b1_shown(),
                "actions": ["bidding", "repricing"],
                "paused_by": [b1_shown()],
            })
        );

        g.apply(&resolved(&b1));
        let resume = rx.next().await;
        assert_ne!(resume.delivery, pause.delivery, "each push has its own id");
        let mut shown = b1_shown();
        shown["resolved_at"] = json!("2025-03-15T06:00:00Z");
        let mut body = resume.json.clone();
        body.as_object_mut().unwrap().remove("delivery_id");
        body.as_object_mut().unwrap().remove("emitted_at");
        assert_eq!(
            body,
            json!({
                "event": "resume",
                "shop": "shop-1",
                "breach": shown,
                "actions": [],
                "paused_by": [],
            })
        );

        // Exactly those two: the next push is a later breach's pause (of every action: its
        // rule is not in `pauses`).
        g.apply(&in_shop(
            breach("b2", "stockout", Severity::Critical, None),
            "shop-2",
        ));
        let next = rx.next_body().await;
        assert_eq!(
            (&next["event"], &next["breach"]["breach_id"]),
            (&json!("pause"), &json!("b2"))
        );
        assert_eq!(next["actions"], json!(["*"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_receiver_gets_the_same_delivery_until_it_accepts_and_the_guard_still_answers()
     {
        let mut rx = receiver().await;
        let (g, stop, task) = webhook_guard(&rx.url, "");
        g.set_ready();
        assert_eq!(rx.next_body().await["event"], "sync_complete");
        // The HTTP route, on a real listener too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = format!(
            "http://{}/v1/guard?shop=shop-1&action=repricing",
            listener.local_addr().unwrap()
        );
        let router = g.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let retried = pushes("retried");

        rx.answers.lock().unwrap().extend([500, 500]);
        rx.hold_next.store(true, Ordering::SeqCst);
        let b1 = breach("b1", "lsr_high", Severity::Critical, None);
        g.apply(&b1);
        let first = rx.next().await;
        // The receiver holds the first attempt: the guard answers anyway, at once.
        let answer = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(&route)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("the guard answers while a push is in flight");
        assert_eq!(answer.status().as_u16(), 423);
        rx.release.notify_one();

        let (second, third) = (rx.next().await, rx.next().await);
        for again in [&second, &third] {
            assert_eq!(
                again.delivery, first.delivery,
                "a retry keeps its delivery id"
            );
            assert_eq!(again.body, first.body, "and its body");
        }
        assert_eq!(first.json["event"], "pause");
        assert!(pushes("retried") >= retried + 2);
        // Accepted the third time: no fourth copy, the next push is the next change.
        g.apply(&resolved(&b1));
        let next = rx.next().await;
        assert_eq!(next.json["event"], "resume");
        assert_ne!(next.delivery, first.delivery);

        // Shutdown stops the sender even while the receiver holds a request.
        rx.hold_next.store(true, Ordering::SeqCst);
        g.apply(&breach("b3", "lsr_high", Severity::Critical, None));
        assert_eq!(rx.next().await.json["event"], "pause");
        let abandoned = pushes("abandoned");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the sender stops at shutdown")
            .unwrap();
        assert!(pushes("abandoned") > abandoned);
        rx.release.notify_one();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_breach_of_a_severity_not_configured_pushes_nothing() {
        let mut rx = receiver().await;
        let (g, _stop, _task) = webhook_guard(&rx.url, "severities = [\"critical\"]");
        g.set_ready();
        assert_eq!(rx.next_body().await["event"], "sync_complete");

        let w1 = breach("w1", "lsr_high", Severity::Warning, None);
        g.apply(&w1);
        g.apply(&resolved(&w1));
        // Left open: it pauses nothing, so the shop's state leaves it out too.
        g.apply(&breach("w2", "lsr_high", Severity::Warning, None));
        g.apply(&breach("c1", "lsr_high", Severity::Critical, None));
        let next = rx.next_body().await;
        assert_eq!(next["event"], "pause");
        assert_eq!(next["breach"]["breach_id"], "c1", "{next}");
        let ids: Vec<&Value> = next["paused_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| &b["breach_id"])
            .collect();
        assert_eq!(ids, [&json!("c1")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rebuild_pushes_nothing_and_ready_syncs_each_paused_shop() {
        let mut rx = receiver().await;
        let (g, _stop, _task) = webhook_guard(&rx.url, "");
        // History, read before ready.
        g.apply(&breach("a1", "lsr_high", Severity::Critical, None));
        g.apply(&in_shop(
            breach("a2", "lsr_high", Severity::Critical, None),
            "shop-2",
        ));
        g.apply(&in_shop(
            breach("a3", "stockout", Severity::Critical, Some("SKU-1")),
            "shop-2",
        ));
        g.apply(&in_shop(
            breach("a4", "lsr_high", Severity::Warning, None),
            "shop-3",
        ));
        let a5 = in_shop(breach("a5", "lsr_high", Severity::Critical, None), "shop-4");
        g.apply(&a5);
        g.apply(&resolved(&a5));
        g.set_ready();

        // The first push is the first sync: nothing went out before ready.
        let s1 = rx.next_body().await;
        assert_eq!(s1["event"], "sync");
        assert_eq!(s1["shop"], "shop-1");
        assert_eq!(s1["actions"], json!(["bidding", "repricing"]));
        assert_eq!(s1["paused_by"][0]["breach_id"], "a1");
        assert!(s1.get("breach").is_none(), "{s1}");
        let s2 = rx.next_body().await;
        assert_eq!(
            (&s2["event"], &s2["shop"]),
            (&json!("sync"), &json!("shop-2"))
        );
        // stockout is not in `pauses`: it pauses every action.
        assert_eq!(s2["actions"], json!(["*"]));
        let ids: Vec<&Value> = s2["paused_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| &b["breach_id"])
            .collect();
        assert_eq!(ids, [&json!("a2"), &json!("a3")]);
        assert_eq!(s2["paused_by"][1]["scope"]["sku"], "SKU-1");
        assert_eq!(
            rx.next_body().await,
            json!({"event": "sync_complete", "paused_shops": ["shop-1", "shop-2"]})
        );
        // Ready once: a second call syncs nothing; the next push is the next change.
        g.set_ready();
        g.apply(&resolved(&breach(
            "a1",
            "lsr_high",
            Severity::Critical,
            None,
        )));
        let next = rx.next_body().await;
        assert_eq!(
            (&next["event"], &next["shop"]),
            (&json!("resume"), &json!("shop-1"))
        );
        assert_eq!(next["actions"], json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_given_up_is_followed_by_a_full_sync_and_a_refused_one_is_not_retried() {
        let mut rx = receiver().await;
        // max_attempts = 1: the first failure gives the push up.
        let cfg: GuardConfig = toml::from_str(&format!(
            "enabled = true\n[webhook]\nurl = \"{}\"\nmax_attempts = 1\n\
             retry_initial = \"10ms\"\nretry_max = \"20ms\"\n",
            rx.url
        ))
        .unwrap();
        let g = Guard::new(&cfg);
        let _task = g
            .start_webhook_with_key(KEY.to_vec(), CancellationToken::new())
            .unwrap();
        let failed = pushes("failed");
        g.apply(&breach("a1", "lsr_high", Severity::Critical, None));
        rx.answers.lock().unwrap().push_back(503);
        g.set_ready();
        let lost = rx.next().await;
        assert_eq!(lost.json["event"], "sync");
        assert_eq!(rx.next_body().await["event"], "sync_complete");
        // The queue is empty: the state goes out again, whole, as new deliveries.
        let again = rx.next().await;
        assert_eq!(
            (&again.json["event"], &again.json["shop"]),
            (&json!("sync"), &json!("shop-1"))
        );
        assert_ne!(again.delivery, lost.delivery);
        assert_eq!(
            rx.next_body().await,
            json!({"event": "sync_complete", "paused_shops": ["shop-1"]})
        );
        assert!(pushes("failed") > failed);

        // A 4xx is refused for good: not retried, and no re-sync follows.
        let rejected = pushes("rejected");
        rx.answers.lock().unwrap().push_back(400);
        g.apply(&breach("a2", "lsr_high", Severity::Critical, None));
        let refused = rx.next().await;
        assert_eq!(refused.json["breach"]["breach_id"], "a2");
        g.apply(&breach("a3", "lsr_high", Severity::Critical, None));
        let next = rx.next().await;
        assert_eq!(next.json["breach"]["breach_id"], "a3", "{}", next.json);
        assert!(pushes("rejected") > rejected);
    }
}
