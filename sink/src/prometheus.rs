//! Live KPI and breach gauges on `/metrics`: the current window of every series, open breaches.
//!
//! Prometheus is for "now": each KPI series (kpi, shop, channel, marketplace, window name)
//! shows its newest window only. A correction to an older window changes history, which lives
//! in Parquet; exporting it would make the live number jump back in time.

use std::collections::{HashMap, HashSet, VecDeque};

use kpiflow_core::metrics;
use kpiflow_schemas::{BreachEvent, BreachState, KpiUpdate, Severity};

use crate::config::PrometheusConfig;
use crate::current::{CurrentWindows, SeriesKey};

/// How many resolved breach ids are remembered to recognise a replayed `resolved` event.
const REMEMBERED_RESOLVED: usize = 10_000;

/// Applies KPI updates and breach events to the process-wide gauge families of
/// [`kpiflow_core::metrics`]: `kpiflow_kpi_value`, `_numerator`, `_denominator`,
/// `kpiflow_breaches_open` and `kpiflow_breach_events_total`.
///
/// Idempotent: the sink is at-least-once, so a replay after a restart may deliver an event
/// twice; a duplicate changes no gauge and counts no transition.
///
/// A cardinality guard ([`PrometheusConfig`]) keeps SKU- and campaign-level series off unless
/// asked for, and stops adding series at `max_series`; updates it cuts are counted in
/// `kpiflow_kpi_series_cut_total{reason}` (they still reach Parquet).
#[derive(Debug, Default)]
pub struct KpiGauges {
    guard: PrometheusConfig,
    /// Series exported so far (what the `max_series` limit counts), with the label values
    /// last exported for each: `team` and `priority` may change with a KPI's definition,
    /// and the old label set must then go.
    exported: HashMap<SeriesKey, Vec<String>>,
    windows: CurrentWindows,
    /// Firing breach ids per (rule, severity).
    open: HashMap<(String, Severity), HashSet<String>>,
    /// Recently resolved breach ids, oldest first, bounded by [`REMEMBERED_RESOLVED`].
    resolved: VecDeque<String>,
    resolved_set: HashSet<String>,
}

impl KpiGauges {
    /// Gauges with no series yet and the default guard (shop level only, 10 000 series).
    pub fn new() -> Self {
        Self::default()
    }

    /// Gauges with no series yet and the given cardinality guard.
    pub fn with_guard(guard: PrometheusConfig) -> Self {
        KpiGauges {
            guard,
            ..Self::default()
        }
    }

    /// KPI series exported.
    pub fn series(&self) -> usize {
        self.exported.len()
    }

    /// Whether the guard lets `u`'s series be exported; counts the cut otherwise.
    fn admitted_by_guard(&mut self, u: &KpiUpdate) -> bool {
        let reason = if u.scope.sku.is_some() && !self.guard.sku_labels {
            Some("sku")
        } else if u.scope.campaign.is_some() && !self.guard.campaign_labels {
            Some("campaign")
        } else {
            let key = SeriesKey::of(u);
            if self.exported.contains_key(&key) {
                None
            } else if self.exported.len() >= self.guard.max_series {
                Some("limit")
            } else {
                self.exported.insert(key, Vec::new());
                metrics::kpi_series().set(i64::try_from(self.exported.len()).unwrap_or(i64::MAX));
                None
            }
        };
        match reason {
            Some(r) => {
                metrics::kpi_series_cut().with_label_values(&[r]).inc();
                false
            }
            None => true,
        }
    }

    /// Exports `u` if it is for its series' current window; returns whether it did.
    ///
    /// A value of `None` (denominator zero) removes the value series instead of exporting a
    /// NaN or leaving the previous window's number up: no value is shown as a gap.
    pub fn apply_kpi(&mut self, u: &KpiUpdate) -> bool {
        if !self.admitted_by_guard(u) || !self.windows.admit(u) {
            return false;
        }
        let labels = [
            u.kpi.as_str(),
            u.owner.as_str(),
            u.priority.as_str(),
            u.scope.shop.as_str(),
            u.scope.channel.as_str(),
            u.scope.marketplace.as_str(),
            u.window.name.as_str(),
            u.scope.sku.as_deref().unwrap_or(""),
            u.scope.campaign.as_deref().unwrap_or(""),
        ];
        debug_assert_eq!(metrics::KPI_LABELS.len(), labels.len());
        if let Some(last) = self.exported.get_mut(&SeriesKey::of(u))
            && last.iter().map(String::as_str).ne(labels.iter().copied())
        {
            if !last.is_empty() {
                let old: Vec<&str> = last.iter().map(String::as_str).collect();
                // Removing a series that is not there is fine; the error only says so.
                drop(metrics::kpi_value().remove_label_values(&old));
                drop(metrics::kpi_numerator().remove_label_values(&old));
                drop(metrics::kpi_denominator().remove_label_values(&old));
            }
            *last = labels.iter().map(|l| l.to_string()).collect();
        }
        match u.value {
            Some(v) if v.is_finite() => metrics::kpi_value().with_label_values(&labels).set(v),
            // Removing a series that is not there is fine; the error only says so.
            _ => drop(metrics::kpi_value().remove_label_values(&labels)),
        }
        metrics::kpi_numerator()
            .with_label_values(&labels)
            .set(u.numerator.to_f64());
        match u.denominator {
            Some(d) => metrics::kpi_denominator()
                .with_label_values(&labels)
                .set(d.to_f64()),
            None => drop(metrics::kpi_denominator().remove_label_values(&labels)),
        }
        true
    }

    /// Tracks a breach transition; returns `true` when it changed what is open (a duplicate
    /// returns `false` and counts nothing).
    pub fn apply_breach(&mut self, b: &BreachEvent) -> bool {
        let group = (b.rule.clone(), b.severity);
        let changed = match b.state {
            BreachState::Firing => {
                self.forget_resolved(&b.breach_id);
                self.open
                    .entry(group.clone())
                    .or_default()
                    .insert(b.breach_id.clone())
            }
            BreachState::Resolved => {
                let was_open = self
                    .open
                    .get_mut(&group)
                    .is_some_and(|ids| ids.remove(&b.breach_id));
                // A resolve whose firing came before the sink started (and was not restored)
                // is still a transition, unless it was just seen.
                let new = self.remember_resolved(&b.breach_id);
                was_open || new
            }
        };
        if changed {
            metrics::breach_events()
                .with_label_values(&[b.rule.as_str(), state_label(b.state)])
                .inc();
        }
        self.export_open(&group);
        changed
    }

    /// Marks breaches as open without counting transitions: the state rebuilt at start-up
    /// from the `breaches` table, whose firing events were consumed by an earlier run.
    pub fn restore_open(&mut self, firing: &[BreachEvent]) {
        for b in firing.iter().filter(|b| b.state == BreachState::Firing) {
            let group = (b.rule.clone(), b.severity);
            self.open
                .entry(group.clone())
                .or_default()
                .insert(b.breach_id.clone());
            self.export_open(&group);
        }
    }

    /// How many breaches of `rule` with `severity` are open.
    pub fn open_breaches(&self, rule: &str, severity: Severity) -> usize {
        self.open
            .get(&(rule.to_string(), severity))
            .map_or(0, HashSet::len)
    }

    fn export_open(&self, group: &(String, Severity)) {
        let n = self.open.get(group).map_or(0, HashSet::len);
        metrics::breaches_open()
            .with_label_values(&[group.0.as_str(), group.1.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Remembers `id` as resolved; `false` when it already was.
    fn remember_resolved(&mut self, id: &str) -> bool {
        if !self.resolved_set.insert(id.to_string()) {
            return false;
        }
        self.resolved.push_back(id.to_string());
        if self.resolved.len() > REMEMBERED_RESOLVED
            && let Some(oldest) = self.resolved.pop_front()
        {
            self.resolved_set.remove(&oldest);
        }
        true
    }

    fn forget_resolved(&mut self, id: &str) {
        if self.resolved_set.remove(id) {
            self.resolved.retain(|r| r != id);
        }
    }
}

fn state_label(state: BreachState) -> &'static str {
    match state {
        BreachState::Firing => "firing",
        BreachState::Resolved => "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::{breach_fixtures, kpi_fixtures};

    /// The value of `metric` for `u`'s series in the exposition, if it is exported.
    /// (The registry is process-wide and tests run in parallel: each test uses its own names.)
    fn exposed(metric: &str, u: &KpiUpdate) -> Option<f64> {
        let want = [
            format!("kpi=\"{}\"", u.kpi),
            format!("shop=\"{}\"", u.scope.shop),
            format!("window=\"{}\"", u.window.name),
        ];
        kpiflow_core::metrics::render()
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn only_the_current_window_is_exported() {
        let mut fx = kpi_fixtures();
        for k in &mut fx {
            k.kpi = format!("gauge_test_{}", k.kpi);
        }
        let (rev1, rev2, older_window) = (&fx[0], &fx[1], &fx[2]);
        let mut g = KpiGauges::new();
        assert!(g.apply_kpi(rev2));
        assert!(!g.apply_kpi(rev1), "older revision of the current window");
        assert!(!g.apply_kpi(older_window), "late correction to yesterday");
        assert_eq!(exposed("kpiflow_kpi_value", rev2), Some(0.032));
        assert_eq!(exposed("kpiflow_kpi_numerator", rev2), Some(4.0));
        assert_eq!(exposed("kpiflow_kpi_denominator", rev2), Some(125.0));

        // The next window's value has no denominator yet: its value series goes away.
        let mut next = rev2.clone();
        next.window.start += chrono::Duration::days(1);
        next.value = None;
        next.revision = 1;
        assert!(g.apply_kpi(&next));
        assert_eq!(exposed("kpiflow_kpi_value", &next), None);
        assert_eq!(exposed("kpiflow_kpi_numerator", &next), Some(4.0));
    }

    #[test]
    fn the_guard_cuts_sku_campaign_and_series_beyond_the_limit() {
        let cut = |reason: &str| metrics::kpi_series_cut().with_label_values(&[reason]).get();
        let (sku0, campaign0, limit0) = (cut("sku"), cut("campaign"), cut("limit"));
        let mut base = kpi_fixtures().remove(1);
        base.kpi = "guard_test_kpi".into();
        let mut g = KpiGauges::with_guard(PrometheusConfig {
            sku_labels: false,
            campaign_labels: true,
            max_series: 2,
        });
        let mut sku = base.clone();
        sku.scope.sku = Some("SKU-1".into());
        assert!(!g.apply_kpi(&sku), "SKU series are off");
        assert_eq!(exposed("kpiflow_kpi_value", &sku), None);
        let mut campaign = base.clone();
        campaign.scope.campaign = Some("cmp-9".into());
        assert!(g.apply_kpi(&campaign), "campaign series are on");
        let line = kpiflow_core::metrics::render()
            .lines()
            .find(|l| l.starts_with("kpiflow_kpi_value{") && l.contains("guard_test_kpi"))
            .map(str::to_string)
            .unwrap();
        assert!(line.contains(r#"campaign="cmp-9""#), "{line}");
        assert!(g.apply_kpi(&base));
        let mut third = base.clone();
        third.scope.shop = "shop-over-the-limit".into();
        assert!(!g.apply_kpi(&third), "a third series is over the limit");
        assert!(
            g.apply_kpi(&base),
            "known series keep updating at the limit"
        );
        assert_eq!(g.series(), 2);
        // Other tests run in parallel and may cut too: at least ours were counted.
        assert!(cut("sku") > sku0);
        assert!(cut("limit") > limit0);
        assert!(cut("campaign") >= campaign0);
    }

    #[test]
    fn a_new_team_or_priority_replaces_the_series_labels() {
        let mut u = kpi_fixtures().remove(1);
        u.kpi = "relabel_test_kpi".into();
        let lines = || {
            kpiflow_core::metrics::render()
                .lines()
                .filter(|l| l.starts_with("kpiflow_kpi_value{") && l.contains("relabel_test_kpi"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let mut g = KpiGauges::new();
        assert!(g.apply_kpi(&u));
        assert_eq!(lines().len(), 1);
        u.owner = "warehouse".into();
        u.revision += 1;
        assert!(g.apply_kpi(&u));
        let now = lines();
        assert_eq!(now.len(), 1, "the old label set is gone: {now:?}");
        assert!(now[0].contains(r#"team="warehouse""#), "{now:?}");
    }

    #[test]
    fn open_breaches_follow_firing_and_resolve_idempotently() {
        let mut fx = breach_fixtures();
        for b in &mut fx {
            b.rule = format!("gauge_test_{}", b.rule);
        }
        let (firing, resolved) = (&fx[0], &fx[1]);
        let mut other = fx[0].clone();
        other.breach_id.push_str("-other-shop");
        let open = || {
            metrics::breaches_open()
                .with_label_values(&[firing.rule.as_str(), "critical"])
                .get()
        };
        let count = |state: &str| {
            metrics::breach_events()
                .with_label_values(&[firing.rule.as_str(), state])
                .get()
        };
        let mut g = KpiGauges::new();
        assert!(g.apply_breach(firing));
        assert!(!g.apply_breach(firing), "duplicate firing");
        assert_eq!(open(), 1);
        assert!(g.apply_breach(&other));
        assert_eq!(open(), 2);
        assert!(g.apply_breach(resolved));
        assert!(!g.apply_breach(resolved), "duplicate resolve");
        assert_eq!(open(), 1);
        assert_eq!(g.open_breaches(&firing.rule, Severity::Critical), 1);
        assert_eq!((count("firing"), count("resolved")), (2, 1));
    }

    #[test]
    fn restored_breaches_are_open_without_counting() {
        let mut b = breach_fixtures().remove(2);
        b.rule = "gauge_test_restore".into();
        let mut g = KpiGauges::new();
        g.restore_open(std::slice::from_ref(&b));
        let open = metrics::breaches_open()
            .with_label_values(&[b.rule.as_str(), "warning"])
            .get();
        assert_eq!(open, 1);
        assert!(!g.apply_breach(&b), "the replayed firing is a duplicate");
        let fired = metrics::breach_events()
            .with_label_values(&[b.rule.as_str(), "firing"])
            .get();
        assert_eq!(fired, 0);
    }
}
