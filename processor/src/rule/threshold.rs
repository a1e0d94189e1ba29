//! Static threshold rules: above / below, a minimum denominator, hysteresis, a `for`
//! duration, a channel filter, one open breach per rule and scope.

use std::collections::{BTreeMap, HashMap};

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
    /// `judge` (default) or `wait`: whether a value still settling (inputs that may still
    /// arrive or be restated) is judged, or only the final one (see [`super::OnSettling`]).
    #[serde(default)]
    pub on_settling: super::OnSettling,
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
///
/// The live sequence of windows (each newer than the last) has at most one open breach, the
/// episode: it fires on the window that crossed the threshold and resolves on a later healthy
/// (or empty) one. A calendar window older than the newest judged one is closed; a correction
/// to it (a late fact, a restatement) is judged on its own and may open a breach naming that
/// window, which resolves when a later correction makes the window healthy or empty.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeState {
    /// Start of the newest window evaluated: older ones are corrections of closed windows.
    newest: Option<DateTime<Utc>>,
    /// The open episode's breach id and the start of the window that opened it.
    open: Option<(String, DateTime<Utc>)>,
    /// End of the first window of the current run of breaching values (for `for`).
    pending_since: Option<DateTime<Utc>>,
    /// Breaches opened by corrections of closed calendar windows, by window start.
    corrections: BTreeMap<DateTime<Utc>, String>,
}

/// What one window's value says, before any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Across the threshold.
    Breached,
    /// On the healthy side of `resolve_at`.
    Healthy,
    /// Between `resolve_at` and the threshold (hysteresis): no new breach, none resolved.
    Between,
    /// Fewer cases than `min_denominator`: no verdict at all.
    TooFew,
    /// No value at all (0 / 0): nothing to breach, so an open breach resolves.
    NoData,
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

    /// Its (KPI, window) when it waits for final values.
    pub fn waits_for(&self) -> Option<(String, String)> {
        (self.cfg.on_settling == super::OnSettling::Wait)
            .then(|| (self.cfg.kpi.clone(), self.cfg.window.clone()))
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

    /// Returns a transition when `update` opens or resolves one of this rule's breaches for
    /// its scope.
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
        if u.settling && self.cfg.on_settling == super::OnSettling::Wait {
            return None;
        }
        let verdict = self.verdict(u);
        let state = self.scopes.entry(scope).or_default();
        let start = u.window.start;
        if state.newest.is_some_and(|n| start < n) {
            // A rolling window older than the newest is superseded by it (the newest holds
            // the same recent facts); a closed calendar window is a period of its own.
            if !u.window.kind.is_calendar() {
                return None;
            }
            let (state_now, id) = Self::correct(&self.cfg.id, state, u, verdict)?;
            return Some(self.event(u, id, state_now, wall));
        }
        state.newest = Some(start);
        let (state_now, id) = match (&state.open, verdict) {
            (None, Verdict::Breached) => {
                let since = *state.pending_since.get_or_insert(u.window.end);
                if let Some(hold) = self.cfg.for_
                    && (u.window.end - since).to_std().unwrap_or_default() < hold
                {
                    return None;
                }
                state.pending_since = None;
                let id = format!("{}|{}|{}", self.cfg.id, u.scope, start.to_rfc3339());
                state.open = Some((id.clone(), start));
                (BreachState::Firing, id)
            }
            (Some(_), Verdict::Healthy | Verdict::NoData) => {
                state.pending_since = None;
                (BreachState::Resolved, state.open.take()?.0)
            }
            (None, Verdict::Healthy | Verdict::Between | Verdict::NoData) => {
                state.pending_since = None;
                return None;
            }
            _ => return None,
        };
        Some(self.event(u, id, state_now, wall))
    }

    /// A correction of the closed calendar window `u`: opens a breach naming it when it now
    /// breaches (unless the open episode already covers it), resolves that breach when it no
    /// longer does. Corrections ignore `for`: a closed window's value is final, not a flap.
    fn correct(
        rule: &str,
        state: &mut ScopeState,
        u: &KpiUpdate,
        verdict: Verdict,
    ) -> Option<(BreachState, String)> {
        let start = u.window.start;
        if state.corrections.contains_key(&start) {
            return match verdict {
                Verdict::Healthy | Verdict::NoData => {
                    Some((BreachState::Resolved, state.corrections.remove(&start)?))
                }
                _ => None,
            };
        }
        let in_episode = state.open.as_ref().is_some_and(|(_, from)| start >= *from);
        if verdict != Verdict::Breached || in_episode {
            return None;
        }
        // Distinct from a live breach the same window may have opened (and resolved) before.
        let id = format!("{rule}|{}|{}|corrected", u.scope, start.to_rfc3339());
        state.corrections.insert(start, id.clone());
        Some((BreachState::Firing, id))
    }

    fn verdict(&self, u: &KpiUpdate) -> Verdict {
        let Some(value) = u.value else {
            return Verdict::NoData;
        };
        let enough = u
            .denominator
            .is_none_or(|d| d >= Decimal::from_i64(self.cfg.min_denominator as i64));
        if !enough {
            return Verdict::TooFew;
        }
        let resolve_at = self.cfg.resolve_at.unwrap_or(self.cfg.threshold);
        let (breached, healthy) = match self.cfg.op {
            RuleOp::Above => (value > self.cfg.threshold, value <= resolve_at),
            RuleOp::Below => (value < self.cfg.threshold, value >= resolve_at),
        };
        if breached {
            Verdict::Breached
        } else if healthy {
            Verdict::Healthy
        } else {
            Verdict::Between
        }
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
            BreachState::Resolved if u.value.is_none() => format!(
                "{} {} for shop {} ({}) has no data any more{of}; rule {} resolved.",
                u.kpi, u.window.name, u.scope.shop, u.scope.channel, self.cfg.id
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
            on_settling: Default::default(),
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
            settling: false,
            final_at: None,
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

    /// `update` over calendar day `day` (UTC days, for brevity).
    fn day(day: i64, late: i64, shipped: i64) -> KpiUpdate {
        let mut u = update(day * 24, late, shipped);
        u.window.kind = WindowKind::BusinessDay;
        u.window.name = "business_day".into();
        u
    }

    fn day_rule() -> ThresholdRule {
        let mut r = rule();
        r.cfg.window = "business_day".into();
        r
    }

    #[test]
    fn a_correction_of_a_closed_day_opens_and_resolves_its_own_breach() {
        let mut r = day_rule();
        let now = Utc::now();
        assert!(r.evaluate(0, &day(1, 0, 30), now).is_none());
        assert!(r.evaluate(0, &day(2, 0, 30), now).is_none());
        // Day 1 is closed (day 2 was judged since); a late fact pushes it to 10%.
        let fired = r.evaluate(0, &day(1, 3, 30), now).unwrap();
        assert_eq!(fired.state, BreachState::Firing);
        assert_eq!(fired.window.start, day(1, 3, 30).window.start);
        assert!(
            fired.breach_id.ends_with("|corrected"),
            "{}",
            fired.breach_id
        );
        // Still breaching: nothing new. Between resolve_at and threshold: still open.
        assert!(r.evaluate(0, &day(1, 4, 30), now).is_none());
        assert!(r.evaluate(0, &day(1, 1, 29), now).is_none());
        // The live sequence is not affected by it.
        assert!(r.evaluate(0, &day(3, 0, 30), now).is_none());
        let resolved = r.evaluate(0, &day(1, 0, 30), now).unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
    }

    #[test]
    fn a_correction_inside_the_open_episode_adds_no_breach() {
        let mut r = day_rule();
        let now = Utc::now();
        let fired = r.evaluate(0, &day(1, 9, 30), now).unwrap();
        assert!(r.evaluate(0, &day(2, 9, 30), now).is_none());
        // Day 1 (which opened the episode) and day 2 are covered by the open breach.
        assert!(r.evaluate(0, &day(1, 12, 30), now).is_none());
        let resolved = r.evaluate(0, &day(3, 0, 30), now).unwrap();
        assert_eq!(resolved.breach_id, fired.breach_id);
        // After it resolved, a correction of day 2 is judged on its own.
        let again = r.evaluate(0, &day(2, 10, 30), now).unwrap();
        assert_eq!(again.state, BreachState::Firing);
        assert_ne!(again.breach_id, fired.breach_id);
    }

    #[test]
    fn older_rolling_windows_are_superseded_not_judged() {
        // A late fact re-publishes every rolling window it falls in: judging each would open
        // one breach per hour. The newest window speaks for the rule.
        let mut r = rule();
        let now = Utc::now();
        assert!(r.evaluate(0, &update(10, 0, 30), now).is_none());
        for hour in 1..10 {
            assert!(r.evaluate(0, &update(hour, 9, 30), now).is_none());
        }
    }

    #[test]
    fn a_window_restated_to_no_data_resolves_the_breach() {
        let mut r = day_rule();
        let now = Utc::now();
        let fired = r.evaluate(0, &day(1, 9, 30), now).unwrap();
        let resolved = r.evaluate(0, &day(1, 0, 0), now).unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
        assert!(resolved.message.contains("no data"), "{}", resolved.message);
        // A corrected closed day that empties resolves its own breach the same way.
        assert!(r.evaluate(0, &day(2, 0, 30), now).is_none());
        let late = r.evaluate(0, &day(1, 9, 30), now).unwrap();
        let emptied = r.evaluate(0, &day(1, 0, 0), now).unwrap();
        assert_eq!(emptied.breach_id, late.breach_id);
        assert_eq!(emptied.state, BreachState::Resolved);
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
