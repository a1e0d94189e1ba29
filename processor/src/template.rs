//! KPI templates: named selections of KPIs with breach rules, for a business model
//! (`fba`, `overseas_warehouse`, `dtc`) or a marketplace's standards
//! (`amazon_account_health`, `walmart_seller_performance`).

use serde::Deserialize;

use crate::catalog::TEMPLATES;
use crate::rule::threshold::ThresholdRuleConfig;
use crate::rule::trend::TrendRuleConfig;

/// A template file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// One line for humans.
    pub description: String,
    /// KPI ids from the catalog.
    pub kpis: Vec<String>,
    /// Threshold breach rules.
    #[serde(default)]
    pub rules: Vec<ThresholdRuleConfig>,
    /// Trend breach rules.
    #[serde(default)]
    pub trend_rules: Vec<TrendRuleConfig>,
}

impl Template {
    /// A built-in template by name.
    pub fn builtin(name: &str) -> Option<Template> {
        let (_, text) = TEMPLATES.iter().find(|(n, _)| *n == name)?;
        // Built-in templates are checked by this crate's tests.
        Some(toml::from_str(text).expect("built-in templates parse"))
    }

    /// (KPI, window) pairs its rules watch.
    pub fn rule_windows(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|r| (r.kpi.clone(), r.window.clone()))
            .chain(
                self.trend_rules
                    .iter()
                    .map(|r| (r.kpi.clone(), r.window.clone())),
            )
            .collect()
    }
}
