//! Staleness rules: a source (connector) sent nothing for longer than allowed.
//!
//! Freshness per (shop, source) is the newest of its records' `ingest_time` and its
//! heartbeats' `last_success`, so a connector that syncs successfully but finds no new orders
//! at night is not stale. Judged in wall-clock time at each flush, and only after the
//! processor has run for `max_silence` itself: while it replays history at start-up, old
//! records would otherwise all look stale.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    BreachEvent, BreachState, Channel, Decimal, Priority, RuleKind, RuleOp, Scope, Severity,
    WindowKind, WindowRef,
};
use serde::Deserialize;

use crate::ProcessorError;

/// One staleness rule (`[[processor.staleness_rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StalenessRuleConfig {
    /// Unique rule id.
    pub id: String,
    /// The source watched (the events' `source`, e.g. `amazon_sp_orders`), or `*` for every
    /// source seen.
    pub source: String,
    /// Silence longer than this opens a breach, e.g. `2h`.
    #[serde(with = "humantime_serde")]
    pub max_silence: Duration,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default = "warning")]
    pub severity: Severity,
    /// Team alerted. Default `operations`.
    #[serde(default = "operations")]
    pub owner: String,
    /// Channels the rule applies to; default all.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Runbook link.
    #[serde(default)]
    pub runbook_url: Option<String>,
}

fn warning() -> Severity {
    Severity::Warning
}

fn operations() -> String {
    "operations".into()
}

impl StalenessRuleConfig {
    /// Checks the rule; `at` is its config path.
    pub fn validate(&self, at: &str) -> Result<(), ProcessorError> {
        if self.id.trim().is_empty() {
            return Err(ProcessorError::config(
                &format!("{at}.id"),
                &self.id,
                "must not be empty",
            ));
        }
        if self.source.trim().is_empty() {
            return Err(ProcessorError::config(
                &format!("{at}.source"),
                &self.source,
                "name a source (e.g. \"amazon_sp_orders\") or \"*\"",
            ));
        }
        if self.max_silence < Duration::from_secs(60) {
            return Err(ProcessorError::config(
                &format!("{at}.max_silence"),
                humantime::format_duration(self.max_silence).to_string(),
                "must be at least 1m",
            ));
        }
        Ok(())
    }
}

/// A staleness rule with the breaches it holds open.
#[derive(Debug)]
pub struct StalenessRule {
    cfg: StalenessRuleConfig,
    /// (shop scope, source) → open breach id.
    open: HashMap<(u32, String), String>,
}

impl StalenessRule {
    /// A rule from validated configuration.
    pub fn new(cfg: StalenessRuleConfig) -> StalenessRule {
        StalenessRule {
            cfg,
            open: HashMap::new(),
        }
    }

    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// Open breaches, for checkpoints.
    pub fn state(&self) -> Vec<((u32, String), String)> {
        let mut out: Vec<_> = self
            .open
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        out
    }

    /// Restores open breaches from a checkpoint.
    pub fn restore(&mut self, state: Vec<((u32, String), String)>) {
        self.open = state.into_iter().collect();
    }

    /// How long the processor must have run before the rule judges.
    pub fn max_silence(&self) -> Duration {
        self.cfg.max_silence
    }

    /// Judges every (scope, source) freshness at wall-clock `wall`.
    pub fn evaluate(
        &mut self,
        freshness: &HashMap<(u32, String), DateTime<Utc>>,
        scopes: &dyn Fn(u32) -> Scope,
        wall: DateTime<Utc>,
    ) -> Vec<BreachEvent> {
        let mut out = Vec::new();
        let mut keys: Vec<&(u32, String)> = freshness.keys().collect();
        keys.sort();
        for key in keys {
            let (scope_id, source) = key;
            if self.cfg.source != "*" && *source != self.cfg.source {
                continue;
            }
            let scope = scopes(*scope_id);
            if !self.cfg.channels.is_empty() && !self.cfg.channels.contains(&scope.channel) {
                continue;
            }
            let fresh = freshness[key];
            let silence = (wall - fresh).to_std().unwrap_or_default();
            let stale = silence > self.cfg.max_silence;
            let transition = match (self.open.get(key), stale) {
                (None, true) => {
                    let id = format!(
                        "{}|{}|{}|{}",
                        self.cfg.id,
                        scope,
                        source,
                        fresh.to_rfc3339()
                    );
                    self.open.insert(key.clone(), id.clone());
                    Some((BreachState::Firing, id))
                }
                (Some(_), false) => self.open.remove(key).map(|id| (BreachState::Resolved, id)),
                _ => None,
            };
            if let Some((state, id)) = transition {
                out.push(self.event(id, state, scope, source, fresh, silence, wall));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        breach_id: String,
        state: BreachState,
        scope: Scope,
        source: &str,
        fresh: DateTime<Utc>,
        silence: Duration,
        wall: DateTime<Utc>,
    ) -> BreachEvent {
        let silence_s = silence.as_secs();
        let shown = humantime::format_duration(Duration::from_secs(silence_s));
        let message = match state {
            BreachState::Firing => format!(
                "No data from {source} for shop {} ({}) for {shown} (last at {}), over the {} allowed by rule {}.",
                scope.shop,
                scope.channel,
                fresh.to_rfc3339(),
                humantime::format_duration(self.cfg.max_silence),
                self.cfg.id
            ),
            BreachState::Resolved => format!(
                "{source} for shop {} ({}) is sending data again (last at {}); rule {} resolved.",
                scope.shop,
                scope.channel,
                fresh.to_rfc3339(),
                self.cfg.id
            ),
        };
        BreachEvent {
            breach_id,
            rule: self.cfg.id.clone(),
            rule_kind: RuleKind::Staleness,
            state,
            severity: self.cfg.severity,
            kpi: "source_freshness".into(),
            kpi_version: 1,
            owner: self.cfg.owner.clone(),
            priority: Priority::Core,
            unit: "seconds".into(),
            scope,
            window: WindowRef {
                kind: WindowKind::Rolling,
                name: format!("silence:{source}"),
                start: fresh,
                end: wall,
                time_zone: "UTC".into(),
                basis: "ingest".into(),
            },
            value: Some(silence_s as f64),
            numerator: Decimal::from_i64(silence_s as i64),
            denominator: None,
            op: RuleOp::Above,
            threshold: self.cfg.max_silence.as_secs_f64(),
            baseline: None,
            message,
            runbook_url: self.cfg.runbook_url.clone(),
            at: wall,
            emitted_at: wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_beyond_the_limit_fires_once_and_fresh_data_resolves() {
        let mut r = StalenessRule::new(StalenessRuleConfig {
            id: "orders_stale".into(),
            source: "amazon_sp_orders".into(),
            max_silence: Duration::from_secs(2 * 3600),
            severity: Severity::Critical,
            owner: "operations".into(),
            channels: vec![],
            runbook_url: None,
        });
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let scopes = |_: u32| Scope::shop("shop-1", Channel::Amazon, "ATVPDKIKX0DER");
        let mut fresh = HashMap::new();
        fresh.insert(
            (0, "amazon_sp_orders".to_string()),
            t("2026-11-02T10:00:00Z"),
        );
        fresh.insert((0, "amazon_ads".to_string()), t("2026-11-01T00:00:00Z"));
        assert!(
            r.evaluate(&fresh, &scopes, t("2026-11-02T11:59:00Z"))
                .is_empty()
        );
        let fired = r.evaluate(&fresh, &scopes, t("2026-11-02T12:30:00Z"));
        assert_eq!(fired.len(), 1, "only the watched source: {fired:?}");
        assert_eq!(fired[0].state, BreachState::Firing);
        assert_eq!(fired[0].value, Some(9000.0));
        assert!(
            fired[0]
                .message
                .starts_with("No data from amazon_sp_orders for shop shop-1"),
            "{}",
            fired[0].message
        );
        assert!(
            r.evaluate(&fresh, &scopes, t("2026-11-02T13:00:00Z"))
                .is_empty()
        );
        fresh.insert(
            (0, "amazon_sp_orders".to_string()),
            t("2026-11-02T12:55:00Z"),
        );
        let resolved = r.evaluate(&fresh, &scopes, t("2026-11-02T13:00:00Z"));
        assert_eq!(resolved[0].state, BreachState::Resolved);
        assert_eq!(resolved[0].breach_id, fired[0].breach_id);
    }
}
