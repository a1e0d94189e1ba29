//! Cross-check rules: kpiflow's value of a KPI against the marketplace's own figure for the
//! same days (the `*_vs_amazon` KPIs), firing when they are further apart than a tolerance.
//!
//! A cross-check value is kpiflow's rate minus Amazon's, in rate points (a fraction: `0.012`
//! is 1.2 points). The rule fires when its magnitude exceeds `tolerance`, and resolves when it
//! is back within it or no longer computable (one side has no rate). Per scope and KPI there
//! is one live sequence of reporting ranges: a range older than the newest judged one is
//! superseded by it (Amazon's ranges slide by a day), and at most one breach is open.

use chrono::{DateTime, Utc};
use kpiflow_schemas::{
    BreachEvent, BreachState, Channel, HealthMetric, KpiUpdate, RuleKind, RuleOp, Severity,
};
use serde::Deserialize;

use super::threshold::{self, ThresholdRule, ThresholdRuleConfig};
use crate::ProcessorError;

/// The catalog KPIs that have a marketplace figure to be checked against.
pub const CHECKED_KPIS: [&str; 5] = [
    "order_defect_rate",
    "late_shipment_rate",
    "cancellation_rate",
    "valid_tracking_rate",
    "on_time_delivery_rate",
];

/// The suffix of a cross-check KPI id: `order_defect_rate_vs_amazon`.
pub const SUFFIX: &str = "_vs_amazon";

/// The window name of cross-check values: Amazon's reporting range.
pub const WINDOW: &str = "amazon_reporting_range";

/// The catalog KPI an Amazon Account Health metric is checked against (its cross-check KPI
/// is this id with [`SUFFIX`]); both ODR figures (AFN and MFN) check `order_defect_rate`.
pub fn checked_kpi(metric: HealthMetric) -> &'static str {
    match metric {
        HealthMetric::OrderDefectRateAfn | HealthMetric::OrderDefectRateMfn => "order_defect_rate",
        HealthMetric::LateShipmentRate => "late_shipment_rate",
        HealthMetric::PreFulfilmentCancelRate => "cancellation_rate",
        HealthMetric::ValidTrackingRate => "valid_tracking_rate",
        HealthMetric::OnTimeDeliveryRate => "on_time_delivery_rate",
    }
}

/// One cross-check rule (`[[processor.crosscheck_rules]]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossCheckRuleConfig {
    /// Unique rule id, e.g. `amazon_figures_differ`; names the alert.
    pub id: String,
    /// The KPIs checked (of `order_defect_rate`, `late_shipment_rate`, `cancellation_rate`,
    /// `valid_tracking_rate`, `on_time_delivery_rate`); default all five.
    #[serde(default)]
    pub kpis: Vec<String>,
    /// Largest allowed difference between kpiflow's rate and Amazon's, as a fraction:
    /// `0.005` (the default) is 0.5 percentage points.
    #[serde(default = "CrossCheckRuleConfig::default_tolerance")]
    pub tolerance: f64,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default = "CrossCheckRuleConfig::warning")]
    pub severity: Severity,
    /// Channels the rule applies to; default all (only Amazon publishes reference values).
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Runbook link, carried on breach events (and alert annotations).
    #[serde(default)]
    pub runbook_url: Option<String>,
}

impl CrossCheckRuleConfig {
    fn default_tolerance() -> f64 {
        0.005
    }
    fn warning() -> Severity {
        Severity::Warning
    }

    /// The KPIs this rule checks.
    pub fn checked(&self) -> Vec<String> {
        if self.kpis.is_empty() {
            CHECKED_KPIS.iter().map(|k| k.to_string()).collect()
        } else {
            self.kpis.clone()
        }
    }

    /// Checks the values; `at` is its config path.
    pub fn validate(&self, at: &str) -> Result<(), ProcessorError> {
        if self.id.trim().is_empty() {
            return Err(ProcessorError::config(
                &format!("{at}.id"),
                &self.id,
                "must not be empty",
            ));
        }
        for (i, k) in self.kpis.iter().enumerate() {
            if !CHECKED_KPIS.contains(&k.as_str()) {
                return Err(ProcessorError::config(
                    &format!("{at}.kpis[{i}]"),
                    k,
                    format!(
                        "no marketplace figure to check it against; checked KPIs are {}",
                        CHECKED_KPIS.join(", ")
                    ),
                ));
            }
        }
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err(ProcessorError::config(
                &format!("{at}.tolerance"),
                self.tolerance,
                "must be a finite fraction of at least 0 (0.005 is 0.5 percentage points)",
            ));
        }
        Ok(())
    }
}

/// Both sides of one cross-check value, for the breach message.
#[derive(Debug, Clone, PartialEq)]
pub struct Sides {
    /// The KPI checked, e.g. `order_defect_rate`.
    pub kpi: String,
    /// kpiflow's rate over the range, with its numerator and denominator.
    pub kpiflow: Option<(f64, String)>,
    /// Amazon's rate, with its counts where the report gave them.
    pub amazon: Option<(f64, String)>,
    /// The range as Amazon names it, e.g. `2026-09-23..2026-11-21`.
    pub range: String,
}

/// The rule's memory for one checked KPI: the threshold rule's per scope.
pub type ScopedState = (String, Vec<(u32, threshold::ScopeState)>);

/// A cross-check rule: per checked KPI, a threshold rule on |kpiflow − Amazon| above
/// `tolerance` (its live sequence of windows, one open breach per scope, a resolve within
/// the tolerance or when no longer comparable), with the cross-check's own sentence.
#[derive(Debug)]
pub struct CrossCheckRule {
    cfg: CrossCheckRuleConfig,
    /// (checked KPI, the threshold rule on its `_vs_amazon` rows).
    inner: Vec<(String, ThresholdRule)>,
}

impl CrossCheckRule {
    /// A rule from validated configuration.
    pub fn new(cfg: CrossCheckRuleConfig) -> CrossCheckRule {
        let inner = cfg
            .checked()
            .into_iter()
            .map(|kpi| {
                let rule = ThresholdRule::new(ThresholdRuleConfig {
                    // Distinct per KPI, so two KPIs' ranges starting on one day are two breaches.
                    id: format!("{}|{kpi}", cfg.id),
                    kpi: format!("{kpi}{SUFFIX}"),
                    window: WINDOW.into(),
                    op: RuleOp::Above,
                    threshold: cfg.tolerance,
                    resolve_at: None,
                    min_denominator: 0,
                    severity: cfg.severity,
                    for_: None,
                    channels: cfg.channels.clone(),
                    runbook_url: cfg.runbook_url.clone(),
                    on_settling: super::OnSettling::Judge,
                });
                (kpi, rule)
            })
            .collect();
        CrossCheckRule { cfg, inner }
    }

    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// State, for checkpoints.
    pub fn state(&self) -> Vec<ScopedState> {
        self.inner
            .iter()
            .map(|(kpi, r)| (kpi.clone(), r.state()))
            .collect()
    }

    /// Restores state from a checkpoint (of the KPIs still checked).
    pub fn restore(&mut self, state: Vec<ScopedState>) {
        for (kpi, s) in state {
            if let Some((_, r)) = self.inner.iter_mut().find(|(k, _)| *k == kpi) {
                r.restore(s);
            }
        }
    }

    /// Judges one cross-check value `u` (of `sides.kpi`) for engine scope `scope`.
    pub fn evaluate(
        &mut self,
        scope: u32,
        u: &KpiUpdate,
        sides: &Sides,
        wall: DateTime<Utc>,
    ) -> Option<BreachEvent> {
        let (_, rule) = self.inner.iter_mut().find(|(k, _)| *k == sides.kpi)?;
        // Judged by the distance; published with its sign.
        let mut distance = u.clone();
        distance.value = u.value.map(f64::abs);
        let mut event = rule.evaluate(scope, &distance, wall)?;
        event.rule = self.cfg.id.clone();
        event.rule_kind = RuleKind::CrossCheck;
        event.value = u.value;
        event.baseline = sides.amazon.as_ref().map(|a| a.0);
        event.message = self.message(u, sides, event.state);
        Some(event)
    }

    fn message(&self, u: &KpiUpdate, sides: &Sides, state: BreachState) -> String {
        let side = |s: &Option<(f64, String)>| match s {
            Some((v, of)) => format!("{:.2}%{of}", v * 100.0),
            None => "no rate".to_string(),
        };
        let points = |v: f64| format!("{:.2}", v * 100.0);
        let head = format!(
            "{} over Amazon's reporting range {} for shop {} ({}): kpiflow {}, Amazon {}",
            sides.kpi,
            sides.range,
            u.scope.shop,
            u.scope.channel,
            side(&sides.kpiflow),
            side(&sides.amazon),
        );
        match (state, u.value) {
            (BreachState::Firing, Some(v)) => format!(
                "{head}: {} points apart, more than the {}-point tolerance of rule {}.",
                points(v.abs()),
                points(self.cfg.tolerance),
                self.cfg.id
            ),
            (_, Some(v)) => format!(
                "{head}: {} points apart, within the {}-point tolerance; rule {} resolved.",
                points(v.abs()),
                points(self.cfg.tolerance),
                self.cfg.id
            ),
            (_, None) => format!(
                "{head}: no longer comparable; rule {} resolved.",
                self.cfg.id
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{Decimal, Direction, Priority, Scope, WindowKind, WindowRef};

    fn rule() -> CrossCheckRule {
        CrossCheckRule::new(CrossCheckRuleConfig {
            id: "amazon_figures_differ".into(),
            kpis: Vec::new(),
            tolerance: CrossCheckRuleConfig::default_tolerance(),
            severity: Severity::Warning,
            channels: Vec::new(),
            runbook_url: None,
        })
    }

    /// A cross-check value over a range starting on day `day` (UTC days, for brevity).
    fn update(day: i64, diff: Option<&str>) -> (KpiUpdate, Sides) {
        let start = DateTime::from_timestamp(day * 86_400, 0).unwrap();
        let u = KpiUpdate {
            kpi: "order_defect_rate_vs_amazon".into(),
            kpi_version: 1,
            unit: "ratio".into(),
            direction: Direction::LowerIsBetter,
            owner: "customer_service".into(),
            priority: Priority::Core,
            scope: Scope::shop("s", Channel::Amazon, "ATVPDKIKX0DER"),
            window: WindowRef {
                kind: WindowKind::Rolling,
                name: "amazon_reporting_range".into(),
                start,
                end: start + chrono::Duration::days(60),
                time_zone: "America/Los_Angeles".into(),
                basis: "placed".into(),
            },
            numerator: diff.map_or(Decimal::ZERO, |d| Decimal::parse(d).unwrap()),
            denominator: None,
            value: diff.map(|d| d.parse().unwrap()),
            currency: None,
            revision: day as u64,
            watermark: start,
            emitted_at: start,
            settling: false,
            final_at: None,
        };
        let sides = Sides {
            kpi: "order_defect_rate".into(),
            kpiflow: Some((0.5, " (2 / 4)".into())),
            amazon: Some((0.25, " (1 / 4)".into())),
            range: "2026-09-23..2026-11-21".into(),
        };
        (u, sides)
    }

    #[test]
    fn fires_beyond_the_tolerance_and_resolves_within_it() {
        let mut r = rule();
        let now = Utc::now();
        let (u, s) = update(1, Some("0.004"));
        assert!(
            r.evaluate(0, &u, &s, now).is_none(),
            "0.4 points is within 0.5"
        );
        let (u, s) = update(1, Some("-0.25"));
        let fired = r.evaluate(0, &u, &s, now).unwrap();
        assert_eq!(fired.state, BreachState::Firing);
        assert_eq!(fired.rule_kind, kpiflow_schemas::RuleKind::CrossCheck);
        assert_eq!(fired.baseline, Some(0.25));
        assert_eq!(
            (fired.rule.as_str(), fired.value),
            ("amazon_figures_differ", Some(-0.25))
        );
        assert!(
            fired
                .breach_id
                .starts_with("amazon_figures_differ|order_defect_rate|"),
            "{}",
            fired.breach_id
        );
        assert_eq!(
            fired.message,
            "order_defect_rate over Amazon's reporting range 2026-09-23..2026-11-21 for shop s (amazon): kpiflow 50.00% (2 / 4), Amazon 25.00% (1 / 4): 25.00 points apart, more than the 0.50-point tolerance of rule amazon_figures_differ."
        );
        assert!(r.evaluate(0, &u, &s, now).is_none(), "already open");
        // An older range is superseded by the newer one: not judged.
        let (u, s) = update(0, Some("0"));
        assert!(r.evaluate(0, &u, &s, now).is_none());
        let (u, s) = update(2, Some("0.005"));
        let resolved = r.evaluate(0, &u, &s, now).unwrap();
        assert_eq!(resolved.state, BreachState::Resolved);
        assert_eq!(resolved.breach_id, fired.breach_id);
        // A value that cannot be computed resolves an open breach and opens none.
        let (u, s) = update(3, Some("0.3"));
        assert_eq!(
            r.evaluate(0, &u, &s, now).unwrap().state,
            BreachState::Firing
        );
        let (u, s) = update(3, None);
        assert_eq!(
            r.evaluate(0, &u, &s, now).unwrap().state,
            BreachState::Resolved
        );
        assert!(r.evaluate(0, &u, &s, now).is_none());
    }

    #[test]
    fn kpis_and_channels_filter_and_validation_names_the_key() {
        let mut cfg = rule().cfg;
        cfg.kpis = vec!["late_shipment_rate".into()];
        let mut r = CrossCheckRule::new(cfg);
        let (u, s) = update(1, Some("0.3"));
        assert!(r.evaluate(0, &u, &s, Utc::now()).is_none());
        let mut cfg = rule().cfg;
        cfg.channels = vec![Channel::Walmart];
        assert!(
            CrossCheckRule::new(cfg)
                .evaluate(0, &u, &s, Utc::now())
                .is_none()
        );
        let mut cfg = rule().cfg;
        cfg.kpis = vec!["return_rate".into()];
        let err = cfg.validate("crosscheck_rules[0]").unwrap_err().to_string();
        assert!(
            err.contains("`processor.crosscheck_rules[0].kpis[0]` = \"return_rate\": no marketplace figure to check it against; checked KPIs are order_defect_rate,"),
            "{err}"
        );
        let mut cfg = rule().cfg;
        cfg.tolerance = -0.1;
        let err = cfg.validate("crosscheck_rules[0]").unwrap_err().to_string();
        assert!(err.contains("crosscheck_rules[0].tolerance"), "{err}");
    }
}
