//! Trend rules: a KPI changed by more than a fraction against the same window a week or a
//! month earlier (WoW, MoM), or against a configured baseline (an industry benchmark).
//!
//! The change `(value - reference) / |reference|` is judged like a threshold (same `for`,
//! hysteresis, one open breach per rule and scope), so the two rule kinds share one state
//! machine: [`ThresholdRule`].

use kpiflow_schemas::{BreachEvent, Channel, KpiUpdate, RuleKind, RuleOp, Severity};
use serde::Deserialize;

use super::threshold::{ThresholdRule, ThresholdRuleConfig};
use crate::ProcessorError;
use crate::catalog::Catalog;

/// What a trend is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The same window one week earlier (WoW).
    WeekAgo,
    /// The same window one month earlier (MoM).
    MonthAgo,
    /// The rule's `baseline` value.
    Baseline,
}

/// How a window still in progress is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InProgress {
    /// Its complete hours so far against the same number of hours from the start of the
    /// reference window (like for like); no verdict before its first complete hour.
    #[default]
    SameElapsed,
    /// Not judged: only windows the watermark has passed.
    Skip,
}

/// What the engine measured for one trend verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendInput {
    /// Whether the window is still in progress (its end is after the watermark's hour).
    pub in_progress: bool,
    /// The window's value: whole, or over its complete hours while in progress.
    pub current: Option<f64>,
    /// The reference window's value over the same span (`None` for baselines).
    pub reference: Option<f64>,
}

/// Which way a change breaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movement {
    /// The KPI rose by more than `change`.
    Rise,
    /// The KPI fell by more than `change`.
    Fall,
}

/// One trend rule (`[[processor.trend_rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendRuleConfig {
    /// Unique rule id (shared with threshold rules' ids).
    pub id: String,
    /// KPI watched.
    pub kpi: String,
    /// Window watched.
    pub window: String,
    /// `week_ago`, `month_ago` or `baseline`.
    pub compare: Compare,
    /// The reference value when `compare = "baseline"`.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// `rise` or `fall`.
    pub movement: Movement,
    /// Relative change that opens a breach, as a fraction: 0.3 = 30%.
    pub change: f64,
    /// A window still in progress: `same_elapsed` (default) compares its complete hours with
    /// the same hours of the reference window; `skip` judges closed windows only.
    #[serde(default)]
    pub in_progress: InProgress,
    /// Relative change at which an open breach resolves (hysteresis); default `change`.
    #[serde(default)]
    pub resolve_change: Option<f64>,
    /// No verdict while the denominator is below this. Default 0.
    #[serde(default)]
    pub min_denominator: u64,
    /// No verdict while the reference value (the earlier window's, over the same span, or the
    /// baseline) is below this: a fall from 5 orders to 2 in a day's first night hours is
    /// noise, not a trend. In the KPI's unit (orders, dollars, a ratio). Default 0.
    #[serde(default)]
    pub min_reference: f64,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default = "warning")]
    pub severity: Severity,
    /// Only fire once the change has lasted this long (event time).
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<std::time::Duration>,
    /// Channels the rule applies to; default all.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Runbook link.
    #[serde(default)]
    pub runbook_url: Option<String>,
    /// `judge` (default) or `wait`: whether a value still settling is judged, or only the
    /// final one (see [`super::OnSettling`]).
    #[serde(default)]
    pub on_settling: super::OnSettling,
}

fn warning() -> Severity {
    Severity::Warning
}

impl TrendRuleConfig {
    /// The equivalent threshold on the change.
    fn as_threshold(&self) -> ThresholdRuleConfig {
        let sign = match self.movement {
            Movement::Rise => 1.0,
            Movement::Fall => -1.0,
        };
        ThresholdRuleConfig {
            id: self.id.clone(),
            kpi: self.kpi.clone(),
            window: self.window.clone(),
            op: match self.movement {
                Movement::Rise => RuleOp::Above,
                Movement::Fall => RuleOp::Below,
            },
            threshold: sign * self.change,
            resolve_at: self.resolve_change.map(|r| sign * r),
            min_denominator: self.min_denominator,
            severity: self.severity,
            for_: self.for_,
            channels: self.channels.clone(),
            runbook_url: self.runbook_url.clone(),
            // The trend rule itself decides whether to wait.
            on_settling: super::OnSettling::Judge,
        }
    }

    /// Checks the rule against the compiled catalog; `at` is its config path.
    pub fn validate(&self, at: &str, catalog: &Catalog) -> Result<(), ProcessorError> {
        if !(self.change.is_finite() && self.change > 0.0) {
            return Err(ProcessorError::config(
                &format!("{at}.change"),
                self.change,
                "must be a positive fraction, e.g. 0.3 for 30%",
            ));
        }
        if let Some(r) = self.resolve_change
            && !(r.is_finite() && (0.0..=self.change).contains(&r))
        {
            return Err(ProcessorError::config(
                &format!("{at}.resolve_change"),
                r,
                format!("must be between 0 and change ({})", self.change),
            ));
        }
        if !(self.min_reference.is_finite() && self.min_reference >= 0.0) {
            return Err(ProcessorError::config(
                &format!("{at}.min_reference"),
                self.min_reference,
                "must be a number of at least 0",
            ));
        }
        self.as_threshold().validate(at, catalog)?;
        match (self.compare, self.baseline) {
            (Compare::Baseline, None) => Err(ProcessorError::config(
                &format!("{at}.baseline"),
                "",
                "compare = \"baseline\" needs a baseline value",
            )),
            (Compare::Baseline, Some(b)) if !b.is_finite() || b == 0.0 => {
                Err(ProcessorError::config(
                    &format!("{at}.baseline"),
                    b,
                    "must be a finite number other than 0",
                ))
            }
            (Compare::WeekAgo | Compare::MonthAgo, Some(b)) => Err(ProcessorError::config(
                &format!("{at}.baseline"),
                b,
                "only used with compare = \"baseline\"",
            )),
            _ => Ok(()),
        }
    }
}

/// A trend rule with its per-scope state.
#[derive(Debug)]
pub struct TrendRule {
    cfg: TrendRuleConfig,
    inner: ThresholdRule,
}

impl TrendRule {
    /// A rule from validated configuration.
    pub fn new(cfg: TrendRuleConfig) -> TrendRule {
        TrendRule {
            inner: ThresholdRule::new(cfg.as_threshold()),
            cfg,
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
    pub fn state(&self) -> Vec<(u32, super::threshold::ScopeState)> {
        self.inner.state()
    }

    /// Restores per-scope state from a checkpoint.
    pub fn restore(&mut self, state: Vec<(u32, super::threshold::ScopeState)>) {
        self.inner.restore(state);
    }

    /// Whether the rule watches `update`, and against what.
    pub fn reference_needed(&self, u: &KpiUpdate) -> Option<Compare> {
        (u.kpi == self.cfg.kpi && u.window.name == self.cfg.window).then_some(self.cfg.compare)
    }

    /// Judges `u` by `input` (the spans compared; the baseline for baseline rules).
    pub fn evaluate(
        &mut self,
        scope: u32,
        u: &KpiUpdate,
        input: TrendInput,
        wall: chrono::DateTime<chrono::Utc>,
    ) -> Option<BreachEvent> {
        if input.in_progress && self.cfg.in_progress == InProgress::Skip {
            return None;
        }
        if u.settling && self.cfg.on_settling == super::OnSettling::Wait {
            return None;
        }
        let (value, reference) = match self.cfg.compare {
            Compare::Baseline => (u.value, self.cfg.baseline),
            _ => (input.current, input.reference),
        };
        // No reference (or a zero one): no change to judge. No current value: in a window in
        // progress, no complete hour with data yet (no verdict); in a closed one, 0 / 0 (no
        // data, which resolves an open breach).
        let reference = reference.filter(|r| *r != 0.0 && r.abs() >= self.cfg.min_reference)?;
        if value.is_none() && input.in_progress {
            return None;
        }
        let change = value.map(|v| (v - reference) / reference.abs());
        let mut derived = u.clone();
        derived.value = change;
        let mut event = self.inner.evaluate(scope, &derived, wall)?;
        event.rule_kind = RuleKind::Trend;
        event.unit = "change".into();
        event.value = change;
        event.baseline = Some(reference);
        let against = match self.cfg.compare {
            Compare::WeekAgo => "the same window a week earlier",
            Compare::MonthAgo => "the same window a month earlier",
            Compare::Baseline => "the baseline",
        };
        let (u_kpi, u_window, shop, channel) =
            (&u.kpi, &u.window.name, &u.scope.shop, u.scope.channel);
        event.message = match (event.state, value, change) {
            (kpiflow_schemas::BreachState::Firing, Some(value), Some(change)) => format!(
                "{u_kpi} {u_window} for shop {shop} ({channel}) {} {:.1}% against {against} ({} → {}); rule {}.",
                if change >= 0.0 { "rose" } else { "fell" },
                change.abs() * 100.0,
                short(reference),
                short(value),
                self.cfg.id
            ),
            (kpiflow_schemas::BreachState::Resolved, Some(value), _) => format!(
                "{u_kpi} {u_window} for shop {shop} ({channel}) is back within {:.1}% of {against} ({} → {}); rule {} resolved.",
                self.cfg.resolve_change.unwrap_or(self.cfg.change) * 100.0,
                short(reference),
                short(value),
                self.cfg.id
            ),
            _ => format!(
                "{u_kpi} {u_window} for shop {shop} ({channel}) has no data any more; rule {} resolved.",
                self.cfg.id
            ),
        };
        Some(event)
    }
}

fn short(v: f64) -> String {
    format!("{v:.4}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use kpiflow_schemas::{
        BreachState, Decimal, Direction, Priority, Scope, WindowKind, WindowRef,
    };

    fn update(hour: i64, value: f64) -> KpiUpdate {
        let start = DateTime::from_timestamp(hour * 3600, 0).unwrap();
        KpiUpdate {
            kpi: "roas".into(),
            kpi_version: 1,
            unit: "ratio".into(),
            direction: Direction::HigherIsBetter,
            owner: "ads".into(),
            priority: Priority::Core,
            scope: Scope::shop("s", Channel::Amazon, "US"),
            window: WindowRef {
                kind: WindowKind::Rolling,
                name: "rolling_7d".into(),
                start,
                end: start + chrono::Duration::days(7),
                time_zone: "UTC".into(),
                basis: "ad_date".into(),
            },
            numerator: Decimal::from_i64(1),
            denominator: Some(Decimal::from_i64(1)),
            value: Some(value),
            currency: None,
            revision: 1,
            watermark: start,
            emitted_at: start,
            settling: false,
            final_at: None,
        }
    }

    /// A closed window of value `v` against `reference`.
    fn closed(v: f64, reference: Option<f64>) -> TrendInput {
        TrendInput {
            in_progress: false,
            current: Some(v),
            reference,
        }
    }

    fn rule(compare: Compare, baseline: Option<f64>) -> TrendRule {
        TrendRule::new(TrendRuleConfig {
            id: "roas_wow_drop".into(),
            kpi: "roas".into(),
            window: "rolling_7d".into(),
            compare,
            baseline,
            movement: Movement::Fall,
            change: 0.3,
            in_progress: InProgress::SameElapsed,
            resolve_change: Some(0.1),
            min_denominator: 0,
            min_reference: 0.0,
            severity: Severity::Warning,
            for_: None,
            channels: vec![],
            runbook_url: None,
            on_settling: Default::default(),
        })
    }

    #[test]
    fn a_fall_beyond_the_change_fires_and_a_recovery_resolves() {
        let mut r = rule(Compare::WeekAgo, None);
        let now = Utc::now();
        // 3.0 → 2.4 is -20%: within the rule.
        assert!(
            r.evaluate(0, &update(1, 2.4), closed(2.4, Some(3.0)), now)
                .is_none()
        );
        let fired = r
            .evaluate(0, &update(2, 1.8), closed(1.8, Some(3.0)), now)
            .unwrap();
        assert_eq!(fired.state, BreachState::Firing);
        assert_eq!(fired.rule_kind, RuleKind::Trend);
        assert_eq!(fired.baseline, Some(3.0));
        assert!((fired.value.unwrap() + 0.4).abs() < 1e-9);
        assert!(
            fired
                .message
                .contains("fell 40.0% against the same window a week earlier (3 → 1.8)"),
            "{}",
            fired.message
        );
        // -20% is not yet back within 10%.
        assert!(
            r.evaluate(0, &update(3, 2.4), closed(2.4, Some(3.0)), now)
                .is_none()
        );
        let resolved = r
            .evaluate(0, &update(4, 2.8), closed(2.8, Some(3.0)), now)
            .unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
        // No earlier window: no verdict.
        assert!(
            r.evaluate(0, &update(5, 0.1), closed(0.1, None), now)
                .is_none()
        );
    }

    #[test]
    fn a_window_in_progress_is_judged_on_its_elapsed_part_or_skipped() {
        let now = Utc::now();
        let partial = TrendInput {
            in_progress: true,
            current: Some(1.0),
            reference: Some(3.0),
        };
        // The whole day so far (2.4) is within the rule; its complete hours (1.0 against the
        // same hours a week earlier, 3.0) fell 67%.
        let mut r = rule(Compare::WeekAgo, None);
        let fired = r.evaluate(0, &update(1, 2.4), partial, now).unwrap();
        assert!((fired.value.unwrap() + 2.0 / 3.0).abs() < 1e-9);
        let mut skip = rule(Compare::WeekAgo, None);
        skip.cfg.in_progress = InProgress::Skip;
        assert!(skip.evaluate(0, &update(1, 2.4), partial, now).is_none());
        // No complete hour yet: no verdict.
        let first_minutes = TrendInput {
            current: None,
            ..partial
        };
        assert!(r.evaluate(0, &update(2, 0.1), first_minutes, now).is_none());
    }

    #[test]
    fn a_closed_window_without_data_resolves_the_breach() {
        let mut r = rule(Compare::WeekAgo, None);
        let now = Utc::now();
        let fired = r
            .evaluate(0, &update(1, 1.8), closed(1.8, Some(3.0)), now)
            .unwrap();
        // Restated to 0 / 0: nothing to compare, so nothing is breaching any more.
        let resolved = r
            .evaluate(
                0,
                &update(1, 0.0),
                TrendInput {
                    current: None,
                    ..closed(0.0, Some(3.0))
                },
                now,
            )
            .unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
        assert!(resolved.message.contains("no data"), "{}", resolved.message);
    }

    #[test]
    fn a_small_reference_gives_no_verdict() {
        let mut r = rule(Compare::WeekAgo, None);
        r.cfg.min_reference = 20.0;
        let now = Utc::now();
        // 5 -> 2 orders in the first hours of a day: -60%, but too few to judge.
        assert!(
            r.evaluate(0, &update(1, 2.0), closed(2.0, Some(5.0)), now)
                .is_none()
        );
        let fired = r
            .evaluate(0, &update(2, 10.0), closed(10.0, Some(40.0)), now)
            .unwrap();
        assert_eq!(fired.state, BreachState::Firing);
    }

    #[test]
    fn a_baseline_is_compared_without_history() {
        let mut r = rule(Compare::Baseline, Some(2.0));
        let fired = r
            .evaluate(0, &update(1, 1.2), closed(1.2, None), Utc::now())
            .unwrap();
        assert_eq!(fired.baseline, Some(2.0));
        assert!(
            fired.message.contains("against the baseline"),
            "{}",
            fired.message
        );
    }

    #[test]
    fn validation_names_key_and_value() {
        let catalog = Catalog::builtin();
        let mut cfg = rule(Compare::Baseline, None).cfg;
        let err = cfg
            .validate("trend_rules[0]", &catalog)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`processor.trend_rules[0].baseline`"), "{err}");
        cfg.baseline = Some(2.0);
        cfg.change = -0.2;
        let err = cfg
            .validate("trend_rules[0]", &catalog)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`processor.trend_rules[0].change` = -0.2"),
            "{err}"
        );
    }
}
