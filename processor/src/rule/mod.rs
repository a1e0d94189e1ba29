//! Breach rules: one file per rule kind; [`RuleSet`] runs them over published KPI values.

pub mod threshold;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{BreachEvent, KpiUpdate};

use threshold::{ThresholdRule, ThresholdRuleConfig};

/// Every configured rule, with its per-scope state.
#[derive(Debug, Default)]
pub struct RuleSet {
    thresholds: Vec<ThresholdRule>,
}

impl RuleSet {
    /// Rules from validated configuration.
    pub fn new(configs: &[ThresholdRuleConfig]) -> RuleSet {
        RuleSet {
            thresholds: configs.iter().cloned().map(ThresholdRule::new).collect(),
        }
    }

    /// Evaluates the rules that watch `update`'s KPI and window; returns any transitions.
    /// `scope` is the engine's id for `update.scope`.
    pub fn evaluate(
        &mut self,
        scope: u32,
        update: &KpiUpdate,
        wall: DateTime<Utc>,
    ) -> Vec<BreachEvent> {
        self.thresholds
            .iter_mut()
            .filter_map(|r| r.evaluate(scope, update, wall))
            .collect()
    }
}
