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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
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

/// `[sink.guard]`: the automation guard on the sink's HTTP listener (`[metrics] listen`).
///
/// ```toml
/// [sink.guard]
/// enabled = true
/// severities = ["critical"]
/// [sink.guard.pauses]
/// late_shipment_high = ["repricing"]        # this rule pauses repricing only
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
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: false,
            severities: Self::default_severities(),
            pauses: BTreeMap::new(),
        }
    }
}

impl GuardConfig {
    fn default_severities() -> Vec<Severity> {
        vec![Severity::Critical]
    }

    /// Checks every value before any I/O; errors name the key and the value.
    pub fn validate(&self) -> Result<(), SinkError> {
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
        Ok(())
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
}

impl Guard {
    /// An empty guard, not ready until [`Guard::set_ready`].
    pub fn new(cfg: &GuardConfig) -> Guard {
        Guard {
            cfg: Arc::new(cfg.clone()),
            state: Arc::default(),
        }
    }

    /// Applies one transition: a firing opens (or keeps open) its breach, a resolve closes it.
    pub fn apply(&self, b: &BreachEvent) {
        let mut s = self.state.write().expect("guard state lock");
        match b.state {
            BreachState::Firing => {
                s.open.insert(b.breach_id.clone(), b.clone());
            }
            BreachState::Resolved => {
                s.open.remove(&b.breach_id);
            }
        }
    }

    /// From now on the guard answers.
    pub fn set_ready(&self) {
        self.state.write().expect("guard state lock").ready = true;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn breach(id: &str, rule: &str, severity: Severity, sku: Option<&str>) -> BreachEvent {
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
