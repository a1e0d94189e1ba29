//! Static threshold rules: above / below, a minimum denominator, hysteresis, a `for`
//! duration, a channel filter, one open breach per rule and scope.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{BreachEvent, BreachState, Channel, Decimal, KpiUpdate, RuleOp, Severity};
use serde::{Deserialize, Serialize};

use crate::ProcessorError;
use crate::catalog::Catalog;

/// One threshold rule (`[[processor.rules]]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRuleConfig {
    /// Unique rule id, e.g. `late_shipment_rate_high`; names the alert.
    pub id: String,
    /// The KPI watched (an id from the catalog, e.g. `late_shipment_rate`).
    pub kpi: String,
    /// The window watched, e.g. `rolling_24h` or `business_day`.
    pub window: String,
    /// `above` or `below`.
    pub op: RuleOp,
    /// The value that opens a breach (ratios as fractions: 0.04 for 4%).
    pub threshold: f64,
    /// The value at which an open breach resolves (hysteresis); default: `threshold`.
    #[serde(default)]
    pub resolve_at: Option<f64>,
    /// No verdict while the denominator is below this (no alert on a rate over 3 orders).
    /// Default 0. Only for ratio KPIs.
    #[serde(default)]
    pub min_denominator: u64,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default = "ThresholdRuleConfig::warning")]
    pub severity: Severity,
    /// Only fire once the condition has held this long (in event time, window end to window
    /// end), like Prometheus's `for`. Default `0s`: fire at once.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<std::time::Duration>,
    /// Channels the rule applies to (`amazon`, `walmart`, `shopify`, `tiktok_shop`); default all.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Runbook link, carried on breach events (and alert annotations).
    #[serde(default)]
    pub runbook_url: Option<String>,
}

impl ThresholdRuleConfig {
    fn warning() -> Severity {
        Severity::Warning
    }

    /// Checks the rule against the compiled catalog; `at` is its config path.
    pub fn validate(&self, at: &str, catalog: &Catalog) -> Result<(), ProcessorError> {
        if self.id.trim().is_empty() {
            return Err(ProcessorError::config(
                &format!("{at}.id"),
                &self.id,
                "must not be empty",
            ));
        }
        let Some(kpi) = catalog.kpi(&self.kpi) else {
            let known: Vec<&str> = catalog.kpis.iter().map(|k| k.id.as_str()).collect();
            return Err(ProcessorError::config(
                &format!("{at}.kpi"),
                &self.kpi,
                format!("unknown KPI; known KPIs are {}", known.join(", ")),
            ));
        };
        let windows: Vec<String> = kpi
            .windows
            .iter()
            .map(|w| catalog.windows[*w].name.clone())
            .collect();
        if !windows.contains(&self.window) {
            return Err(ProcessorError::config(
                &format!("{at}.window"),
                &self.window,
                format!(
                    "unknown window; configured windows are {}",
                    windows.join(", ")
                ),
            ));
        }
        if !self.threshold.is_finite() {
            return Err(ProcessorError::config(
                &format!("{at}.threshold"),
                self.threshold,
                "must be a finite number",
            ));
        }
        if let Some(r) = self.resolve_at {
            let wrong_side = match self.op {
                RuleOp::Above => r > self.threshold,
                RuleOp::Below => r < self.threshold,
            };
            if !r.is_finite() || wrong_side {
                return Err(ProcessorError::config(
                    &format!("{at}.resolve_at"),
                    r,
                    format!(
                        "must be a finite number on the healthy side of threshold {} (op {:?})",
                        self.threshold, self.op
                    ),
                ));
            }
        }
        if self.min_denominator > 0 && kpi.denominator.is_none() {
            return Err(ProcessorError::config(
                &format!("{at}.min_denominator"),
                self.min_denominator,
                format!("KPI {} has no denominator", kpi.id),
            ));
        }
        Ok(())
    }
}

/// A rule's memory for one scope; checkpointed with the engine.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeState {
    /// Start of the newest window evaluated; older windows (late corrections) do not move
    /// the breach state backwards in time.
    newest: Option<DateTime<Utc>>,
    /// The open breach's id.
    open: Option<String>,
    /// End of the first window of the current run of breaching values (for `for`).
    pending_since: Option<DateTime<Utc>>,
}

/// A threshold rule with its per-scope state.
#[derive(Debug)]
pub struct ThresholdRule {
    cfg: ThresholdRuleConfig,
    scopes: HashMap<u32, ScopeState>,
}

impl ThresholdRule {
    /// A rule from validated configuration.
    pub fn new(cfg: ThresholdRuleConfig) -> ThresholdRule {
        ThresholdRule {
            cfg,
            scopes: HashMap::new(),
        }
    }

    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// Per-scope state, for checkpoints.
    pub fn state(&self) -> Vec<(u32, ScopeState)> {
        let mut out: Vec<_> = self.scopes.iter().map(|(k, v)| (*k, v.clone())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Restores per-scope state from a checkpoint.
    pub fn restore(&mut self, state: Vec<(u32, ScopeState)>) {
        self.scopes = state.into_iter().collect();
    }

    /// Returns a transition when `update` opens or resolves this rule's breach for its scope.
    pub fn evaluate(
        &mut self,
        scope: u32,
        u: &KpiUpdate,
        wall: DateTime<Utc>,
    ) -> Option<BreachEvent> {
        if u.kpi != self.cfg.kpi || u.window.name != self.cfg.window {
            return None;
        }
        if !self.cfg.channels.is_empty() && !self.cfg.channels.contains(&u.scope.channel) {
            return None;
        }
        let state = self.scopes.entry(scope).or_default();
        if state.newest.is_some_and(|n| u.window.start < n) {
            return None;
        }
        state.newest = Some(u.window.start);
        let value = u.value?;
        let enough = u
            .denominator
            .is_none_or(|d| d >= Decimal::from_i64(self.cfg.min_denominator as i64));
        if !enough {
            return None;
        }
        let resolve_at = self.cfg.resolve_at.unwrap_or(self.cfg.threshold);
        let (breached, healthy) = match self.cfg.op {
            RuleOp::Above => (value > self.cfg.threshold, value <= resolve_at),
            RuleOp::Below => (value < self.cfg.threshold, value >= resolve_at),
        };
        let (state_now, id) = match &state.open {
            None if breached => {
                let since = *state.pending_since.get_or_insert(u.window.end);
                if let Some(hold) = self.cfg.for_
                    && (u.window.end - since).to_std().unwrap_or_default() < hold
                {
                    return None;
                }
                state.pending_since = None;
                let id = format!(
                    "{}|{}|{}",
                    self.cfg.id,
                    u.scope,
                    u.window.start.to_rfc3339()
                );
                state.open = Some(id.clone());
                (BreachState::Firing, id)
            }
            Some(_) if healthy => (BreachState::Resolved, state.open.take()?),
            None => {
                state.pending_since = None;
                return None;
            }
            _ => return None,
        };
        Some(self.event(u, id, state_now, wall))
    }

    fn event(
        &self,
        u: &KpiUpdate,
        breach_id: String,
        state: BreachState,
        wall: DateTime<Utc>,
    ) -> BreachEvent {
        let shown = |v: f64| match u.unit.as_str() {
            "ratio" => format!("{:.2}%", v * 100.0),
            "money" => format!("{v:.2} {}", u.currency.as_deref().unwrap_or("")),
            _ => format!("{v}"),
        };
        let value = u.value.unwrap_or(f64::NAN);
        let of = match u.denominator {
            Some(d) => format!(" ({} / {})", u.numerator, d),
            None => String::new(),
        };
        let side = match self.cfg.op {
            RuleOp::Above => "above",
            RuleOp::Below => "below",
        };
        let message = match state {
            BreachState::Firing => format!(
                "{} {} for shop {} ({}) is {}{of}, {side} the {} threshold of rule {}.",
                u.kpi,
                u.window.name,
                u.scope.shop,
                u.scope.channel,
                shown(value),
                shown(self.cfg.threshold),
                self.cfg.id
            ),
            BreachState::Resolved => format!(
                "{} {} for shop {} ({}) is back to {}{of}; rule {} resolved.",
                u.kpi,
                u.window.name,
                u.scope.shop,
                u.scope.channel,
                shown(value),
                self.cfg.id
            ),
        };
        BreachEvent {
            breach_id,
            rule: self.cfg.id.clone(),
            rule_kind: kpiflow_schemas::RuleKind::Threshold,
            state,
            severity: self.cfg.severity,
            kpi: u.kpi.clone(),
            kpi_version: u.kpi_version,
            owner: u.owner.clone(),
            priority: u.priority,
            unit: u.unit.clone(),
            scope: u.scope.clone(),
            window: u.window.clone(),
            value: u.value,
            numerator: u.numerator,
            denominator: u.denominator,
            op: self.cfg.op,
            threshold: self.cfg.threshold,
            baseline: None,
            message,
            runbook_url: self.cfg.runbook_url.clone(),
            at: u.window.end,
            emitted_at: wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{Channel, Direction, Scope, WindowKind, WindowRef};

    fn rule() -> ThresholdRule {
        ThresholdRule::new(ThresholdRuleConfig {
            id: "lsr".into(),
            kpi: "late_shipment_rate".into(),
            window: "rolling_24h".into(),
            op: RuleOp::Above,
            threshold: 0.04,
            resolve_at: Some(0.03),
            min_denominator: 20,
            severity: Severity::Critical,
            for_: None,
            channels: Vec::new(),
            runbook_url: None,
        })
    }

    fn update(hour: i64, late: i64, shipped: i64) -> KpiUpdate {
        let start = DateTime::from_timestamp(hour * 3600, 0).unwrap();
        KpiUpdate {
            kpi: "late_shipment_rate".into(),
            kpi_version: 1,
            unit: "ratio".into(),
            direction: Direction::LowerIsBetter,
            owner: "warehouse".into(),
            priority: kpiflow_schemas::Priority::Core,
            scope: Scope::shop("s", Channel::Amazon, "US"),
            window: WindowRef {
                kind: WindowKind::Rolling,
                name: "rolling_24h".into(),
                start,
                end: start + chrono::Duration::hours(24),
                time_zone: "UTC".into(),
                basis: "shipped".into(),
            },
            numerator: Decimal::from_i64(late),
            denominator: Some(Decimal::from_i64(shipped)),
            value: (shipped > 0).then(|| late as f64 / shipped as f64),
            currency: None,
            revision: hour as u64,
            watermark: start,
            emitted_at: start,
        }
    }

    #[test]
    fn fires_once_resolves_with_hysteresis_and_ignores_small_samples() {
        let mut r = rule();
        let now = Utc::now();
        assert!(
            r.evaluate(0, &update(1, 3, 10), now).is_none(),
            "10 shipments < min 20"
        );
        let fired = r.evaluate(0, &update(2, 3, 30), now).unwrap();
        assert_eq!(fired.state, BreachState::Firing);
        assert!(fired.message.contains("10.00%"), "{}", fired.message);
        assert!(
            r.evaluate(0, &update(3, 4, 30), now).is_none(),
            "already open"
        );
        assert!(
            r.evaluate(0, &update(4, 1, 29), now).is_none(),
            "3.4% is above resolve_at 3%"
        );
        // A late correction of an older window does not resolve the breach.
        assert!(r.evaluate(0, &update(1, 0, 30), now).is_none());
        let resolved = r.evaluate(0, &update(5, 0, 30), now).unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
        // Another shop has its own state.
        assert_eq!(
            r.evaluate(1, &update(5, 9, 30), now).unwrap().state,
            BreachState::Firing
        );
    }

    #[test]
    fn validation_names_the_key_and_lists_choices() {
        let catalog = Catalog::builtin();
        let mut cfg = rule().cfg;
        cfg.kpi = "lsr".into();
        let err = cfg.validate("rules[0]", &catalog).unwrap_err().to_string();
        assert!(
            err.contains("`processor.rules[0].kpi` = \"lsr\": unknown KPI; known KPIs are acos,"),
            "{err}"
        );
        let mut cfg = rule().cfg;
        cfg.resolve_at = Some(0.05);
        let err = cfg.validate("rules[0]", &catalog).unwrap_err().to_string();
        assert!(err.contains("resolve_at"), "{err}");
        let mut cfg = rule().cfg;
        cfg.window = "rolling_90d".into();
        let err = cfg.validate("rules[0]", &catalog).unwrap_err().to_string();
        assert!(
            err.contains("`processor.rules[0].window` = \"rolling_90d\": unknown window; configured windows are business_day, rolling_24h"),
            "{err}"
        );
    }

    #[test]
    fn a_for_duration_holds_the_breach_until_the_condition_lasted() {
        let mut r = rule();
        r.cfg.for_ = Some(std::time::Duration::from_secs(2 * 3600));
        let now = Utc::now();
        // Breaching at window ends 25h, 26h: not yet 2 hours.
        assert!(r.evaluate(0, &update(1, 9, 30), now).is_none());
        assert!(r.evaluate(0, &update(2, 9, 30), now).is_none());
        // A healthy value resets the clock.
        assert!(r.evaluate(0, &update(3, 0, 30), now).is_none());
        assert!(r.evaluate(0, &update(4, 9, 30), now).is_none());
        assert!(r.evaluate(0, &update(5, 9, 30), now).is_none());
        let fired = r.evaluate(0, &update(6, 9, 30), now).unwrap();
        assert_eq!(fired.state, BreachState::Firing);
        assert_eq!(fired.at, update(6, 9, 30).window.end);
    }

    #[test]
    fn a_channel_filter_ignores_other_channels() {
        let mut r = rule();
        r.cfg.channels = vec![Channel::Walmart];
        assert!(r.evaluate(0, &update(1, 9, 30), Utc::now()).is_none());
        r.cfg.channels = vec![Channel::Amazon];
        assert!(r.evaluate(0, &update(1, 9, 30), Utc::now()).is_some());
    }
}
