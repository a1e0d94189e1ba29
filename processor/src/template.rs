//! KPI templates: named selections of KPIs with breach rules, for a business model
//! (`fba`, `overseas_warehouse`, `dtc`) or a marketplace's standards
//! (`amazon_account_health`, `walmart_seller_performance`).

use serde::Deserialize;

use crate::catalog::TEMPLATES;
use crate::rule::crosscheck::CrossCheckRuleConfig;
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
    /// Cross-check rules (kpiflow's values against the marketplace's own figures).
    #[serde(default)]
    pub crosscheck_rules: Vec<CrossCheckRuleConfig>,
}

impl Template {
    /// A built-in template by name.
    pub fn builtin(name: &str) -> Option<Template> {
        let (_, text) = TEMPLATES.iter().find(|(n, _)| *n == name)?;
        // Built-in templates are checked by this crate's tests.
        Some(toml::from_str(text).expect("built-in templates parse"))
    }

    /// A template file (an edited copy of a built-in one); errors name the file and the problem.
    pub fn from_file(path: &std::path::Path) -> Result<Template, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        toml::from_str(&text).map_err(|e| format!("not a template: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessorConfig;

    #[test]
    fn an_edited_copy_is_used_and_a_broken_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-fba.toml");
        let edited = TEMPLATES[0]
            .1
            .replace("threshold = 0.05", "threshold = 0.08");
        std::fs::write(&path, edited).unwrap();
        let cfg = ProcessorConfig {
            templates: vec![path.display().to_string()],
            ..Default::default()
        };
        let compiled = cfg.compile().unwrap();
        let stockout = compiled
            .rules
            .thresholds
            .iter()
            .find(|r| r.id == "stockout_above_5pct")
            .unwrap();
        assert_eq!(stockout.threshold, 0.08);
        std::fs::write(&path, "kpis = 3").unwrap();
        let err = cfg.compile().unwrap_err().to_string();
        assert!(
            err.contains("`processor.templates[0]`") && err.contains("not a template"),
            "{err}"
        );
    }
}
