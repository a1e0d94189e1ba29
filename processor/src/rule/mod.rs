//! Breach rules: one file per rule kind; [`RuleSet`] runs them over published KPI values.

pub mod crosscheck;
pub mod staleness;
pub mod threshold;
pub mod trend;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_schemas::{BreachEvent, KpiUpdate, Scope};
use serde::{Deserialize, Serialize};

/// What a threshold or trend rule does with a value still settling
/// ([`KpiUpdate::settling`]): judge it as it is (`judge`, the default: a late-shipment spike is
/// worth an alert today), or wait until the window is final (`wait`: a ratio whose inputs are
/// restated for days, such as ROAS while ad attribution settles). A waiting rule's windows
/// are published once more when they become final, so it does judge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSettling {
    /// Judge every value, settling or final.
    #[default]
    Judge,
    /// Judge final values only.
    Wait,
}

use crosscheck::{CrossCheckRule, CrossCheckRuleConfig, Sides};
use staleness::{StalenessRule, StalenessRuleConfig};
use threshold::{ThresholdRule, ThresholdRuleConfig};
use trend::{Compare, TrendInput, TrendRule, TrendRuleConfig};

/// Every configured rule, by kind.
#[derive(Debug, Clone, Default)]
pub struct RuleConfigs {
    /// Static thresholds.
    pub thresholds: Vec<ThresholdRuleConfig>,
    /// Changes against an earlier window or a baseline.
    pub trends: Vec<TrendRuleConfig>,
    /// Silent sources.
    pub staleness: Vec<StalenessRuleConfig>,
    /// kpiflow's values against the marketplace's own figures.
    pub crosschecks: Vec<CrossCheckRuleConfig>,
}

/// The rules' memory, by rule id (a rule removed from the configuration loses its state; a
/// new one starts empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSetState {
    thresholds: Vec<(String, Vec<(u32, threshold::ScopeState)>)>,
    trends: Vec<(String, Vec<(u32, threshold::ScopeState)>)>,
    staleness: Vec<(String, Vec<OpenStaleness>)>,
    crosschecks: Vec<(String, Vec<crosscheck::ScopedState>)>,
}

/// An open staleness breach: ((shop scope, source), breach id).
type OpenStaleness = ((u32, String), String);

/// Every configured rule, with its per-scope state.
#[derive(Debug)]
pub struct RuleSet {
    thresholds: Vec<ThresholdRule>,
    trends: Vec<TrendRule>,
    staleness: Vec<StalenessRule>,
    crosschecks: Vec<CrossCheckRule>,
    started: Instant,
}

impl RuleSet {
    /// Rules from validated configuration; `started` is when the processor started (staleness
    /// rules wait their `max_silence` after it).
    pub fn new(configs: &RuleConfigs, started: Instant) -> RuleSet {
        RuleSet {
            thresholds: configs
                .thresholds
                .iter()
                .cloned()
                .map(ThresholdRule::new)
                .collect(),
            trends: configs.trends.iter().cloned().map(TrendRule::new).collect(),
            staleness: configs
                .staleness
                .iter()
                .cloned()
                .map(StalenessRule::new)
                .collect(),
            crosschecks: configs
                .crosschecks
                .iter()
                .cloned()
                .map(CrossCheckRule::new)
                .collect(),
            started,
        }
    }

    /// The rules' memory, for checkpoints.
    pub fn state(&self) -> RuleSetState {
        RuleSetState {
            thresholds: self
                .thresholds
                .iter()
                .map(|r| (r.id().to_string(), r.state()))
                .collect(),
            trends: self
                .trends
                .iter()
                .map(|r| (r.id().to_string(), r.state()))
                .collect(),
            staleness: self
                .staleness
                .iter()
                .map(|r| (r.id().to_string(), r.state()))
                .collect(),
            crosschecks: self
                .crosschecks
                .iter()
                .map(|r| (r.id().to_string(), r.state()))
                .collect(),
        }
    }

    /// Restores the memory of the rules that still exist.
    pub fn restore(&mut self, state: RuleSetState) {
        for (id, s) in state.thresholds {
            if let Some(r) = self.thresholds.iter_mut().find(|r| r.id() == id) {
                r.restore(s);
            }
        }
        for (id, s) in state.trends {
            if let Some(r) = self.trends.iter_mut().find(|r| r.id() == id) {
                r.restore(s);
            }
        }
        for (id, s) in state.staleness {
            if let Some(r) = self.staleness.iter_mut().find(|r| r.id() == id) {
                r.restore(s);
            }
        }
        for (id, s) in state.crosschecks {
            if let Some(r) = self.crosschecks.iter_mut().find(|r| r.id() == id) {
                r.restore(s);
            }
        }
    }

    /// (KPI, window) pairs a rule with `on_settling = "wait"` watches: their windows are
    /// published again when they become final.
    pub fn waiting(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .thresholds
            .iter()
            .filter_map(ThresholdRule::waits_for)
            .chain(self.trends.iter().filter_map(TrendRule::waits_for))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What trend rules compare `update` with: the earlier windows (`week_ago`,
    /// `month_ago`), and `Baseline` when only a baseline rule watches it.
    pub fn references_needed(&self, update: &KpiUpdate) -> Vec<Compare> {
        let mut out: Vec<Compare> = self
            .trends
            .iter()
            .filter_map(|r| r.reference_needed(update))
            .collect();
        out.sort_by_key(|c| *c as u8);
        out.dedup();
        out
    }

    /// Evaluates the rules that watch `update`'s KPI and window; returns any transitions.
    /// `scope` is the engine's id for `update.scope`; `references` holds what the engine
    /// measured for each comparison asked for by [`RuleSet::references_needed`].
    /// `waiting_only`: the value is published again only because it became final, so only the
    /// rules that waited for it judge it (the others judged it already).
    pub fn evaluate(
        &mut self,
        scope: u32,
        update: &KpiUpdate,
        references: &[(Compare, TrendInput)],
        wall: DateTime<Utc>,
        waiting_only: bool,
    ) -> Vec<BreachEvent> {
        let mut out: Vec<BreachEvent> = self
            .thresholds
            .iter_mut()
            .filter(|r| !waiting_only || r.waits_for().is_some())
            .filter_map(|r| r.evaluate(scope, update, wall))
            .collect();
        for r in &mut self.trends {
            if waiting_only && r.waits_for().is_none() {
                continue;
            }
            let Some(compare) = r.reference_needed(update) else {
                continue;
            };
            let Some((_, input)) = references.iter().find(|(c, _)| *c == compare) else {
                continue;
            };
            out.extend(r.evaluate(scope, update, *input, wall));
        }
        out
    }

    /// Judges a cross-check value (`*_vs_amazon`) of engine scope `scope`.
    pub fn evaluate_crosscheck(
        &mut self,
        scope: u32,
        update: &KpiUpdate,
        sides: &Sides,
        wall: DateTime<Utc>,
    ) -> Vec<BreachEvent> {
        self.crosschecks
            .iter_mut()
            .filter_map(|r| r.evaluate(scope, update, sides, wall))
            .collect()
    }

    /// Judges source freshness at wall-clock `wall` (processing time `now`).
    pub fn evaluate_staleness(
        &mut self,
        freshness: &HashMap<(u32, String), DateTime<Utc>>,
        scopes: &dyn Fn(u32) -> Scope,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Vec<BreachEvent> {
        let ran = now.saturating_duration_since(self.started);
        let mut out = Vec::new();
        for r in &mut self.staleness {
            if ran >= r.max_silence().min(Duration::from_secs(24 * 3600)) {
                out.extend(r.evaluate(freshness, scopes, wall));
            }
        }
        out
    }

    /// Whether any staleness rule exists (the engine tracks freshness only then).
    pub fn watches_freshness(&self) -> bool {
        !self.staleness.is_empty()
    }
}
