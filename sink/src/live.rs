//! The latest KPI values and breach events in memory, rendered as text for the demo console.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use kpiflow_schemas::{BreachEvent, BreachState, KpiUpdate};

use crate::current::{CurrentWindows, SeriesKey};

/// Breach events kept by [`LiveView::new`].
pub const DEFAULT_BREACH_CAPACITY: usize = 20;

/// A shared, cheap-to-clone view of what the sink has seen: the current window's value of every
/// KPI series and the last breach events. The sink feeds it; a console task renders it.
#[derive(Debug, Clone)]
pub struct LiveView {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    windows: CurrentWindows,
    kpis: BTreeMap<SeriesKey, KpiUpdate>,
    breaches: VecDeque<BreachEvent>,
    capacity: usize,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView::new()
    }
}

impl LiveView {
    /// An empty view keeping the last [`DEFAULT_BREACH_CAPACITY`] breach events.
    pub fn new() -> Self {
        LiveView::with_breach_capacity(DEFAULT_BREACH_CAPACITY)
    }

    /// An empty view keeping the last `capacity` breach events.
    pub fn with_breach_capacity(capacity: usize) -> Self {
        LiveView {
            inner: Arc::new(Mutex::new(Inner {
                windows: CurrentWindows::default(),
                kpis: BTreeMap::new(),
                breaches: VecDeque::with_capacity(capacity),
                capacity,
            })),
        }
    }

    // The data stays consistent even if a holder panicked (every update is one insert), so a
    // poisoned lock is still usable; the console should keep showing numbers.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `u` if it is for its series' current window (older windows are ignored).
    pub fn apply_kpi(&self, u: &KpiUpdate) {
        let mut inner = self.lock();
        if inner.windows.admit(u) {
            inner.kpis.insert(SeriesKey::of(u), u.clone());
        }
    }

    /// Records a breach event, dropping the oldest beyond the capacity.
    pub fn apply_breach(&self, b: &BreachEvent) {
        let mut inner = self.lock();
        if inner.capacity == 0 {
            return;
        }
        if inner.breaches.len() == inner.capacity {
            inner.breaches.pop_front();
        }
        inner.breaches.push_back(b.clone());
    }

    /// The current value of every series, ordered by KPI, scope and window name.
    pub fn kpis(&self) -> Vec<KpiUpdate> {
        self.lock().kpis.values().cloned().collect()
    }

    /// The last breach events, newest first.
    pub fn recent_breaches(&self) -> Vec<BreachEvent> {
        self.lock().breaches.iter().rev().cloned().collect()
    }

    /// Two compact tables, KPIs then breaches, for a terminal.
    pub fn render(&self) -> String {
        let (kpis, breaches) = (self.kpis(), self.recent_breaches());
        let mut out = String::new();

        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "kpi",
            "scope",
            "window",
            "start (UTC)",
            "value",
            "numerator / denominator",
            "rev",
        ]);
        for k in &kpis {
            t.add_row(vec![
                Cell::new(&k.kpi),
                Cell::new(k.scope.to_string()),
                Cell::new(&k.window.name),
                Cell::new(k.window.start.format("%Y-%m-%d %H:%M")),
                Cell::new(format_value(k.value, &k.unit, k.currency.as_deref()))
                    .set_alignment(CellAlignment::Right),
                Cell::new(match k.denominator {
                    Some(d) => format!("{} / {d}", k.numerator),
                    None => k.numerator.to_string(),
                })
                .set_alignment(CellAlignment::Right),
                Cell::new(k.revision).set_alignment(CellAlignment::Right),
            ]);
        }
        out.push_str(&format!(
            "KPIs ({} series, current window)\n{t}\n",
            kpis.len()
        ));

        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "at (UTC)", "state", "severity", "rule", "scope", "value", "message",
        ]);
        for b in &breaches {
            let state = match b.state {
                BreachState::Firing => "FIRING",
                BreachState::Resolved => "resolved",
            };
            t.add_row(vec![
                Cell::new(b.at.format("%m-%d %H:%M:%S")),
                Cell::new(state),
                Cell::new(b.severity.as_str()),
                Cell::new(&b.rule),
                Cell::new(b.scope.to_string()),
                Cell::new(format_value(b.value, "", None)).set_alignment(CellAlignment::Right),
                Cell::new(&b.message),
            ]);
        }
        out.push_str(&format!("Breaches (last {})\n{t}\n", breaches.len()));
        out
    }
}

/// A value for humans: ratios as percentages, money with its currency, counts whole.
fn format_value(value: Option<f64>, unit: &str, currency: Option<&str>) -> String {
    match (value, unit) {
        (None, _) => "—".to_string(),
        (Some(v), "ratio") => format!("{:.2}%", v * 100.0),
        (Some(v), "money") => format!("{v:.2} {}", currency.unwrap_or(""))
            .trim_end()
            .to_string(),
        (Some(v), "count") => format!("{v:.0}"),
        (Some(v), _) => format!("{v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::{breach_fixtures, kpi_fixtures};

    #[test]
    fn keeps_the_current_window_and_the_last_breaches() {
        let view = LiveView::with_breach_capacity(2);
        let clone = view.clone();
        for k in kpi_fixtures() {
            clone.apply_kpi(&k);
        }
        for b in breach_fixtures() {
            clone.apply_breach(&b);
        }
        let kpis = view.kpis();
        // Six fixtures: two revisions and an older window of one series collapse to one.
        assert_eq!(kpis.len(), 4);
        let lsr = kpis.iter().find(|k| k.kpi == "late_shipment_rate").unwrap();
        assert_eq!(lsr.revision, 2);
        let breaches = view.recent_breaches();
        assert_eq!(breaches.len(), 2);
        assert_eq!(breaches[0].rule, "stockout-above-5pct", "newest first");

        let text = view.render();
        assert!(text.contains("3.20%"), "{text}");
        assert!(text.contains("12345.67 USD"), "{text}");
        assert!(text.contains("4 / 125"), "{text}");
        assert!(text.contains("FIRING"), "{text}");
        assert!(text.contains("amazon/ATVPDKIKX0DER/shop-1"), "{text}");
    }
}
