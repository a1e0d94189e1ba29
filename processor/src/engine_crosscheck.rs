//! Cross-checks against Amazon's own Account Health figures: the reference values
//! (`account.health_metric`) the engine keeps, and the `<kpi>_vs_amazon` values it publishes.
//!
//! ```text
//!  account.health_metric ─► references: the newest report per (shop, metric, range)
//!  flush: rows whose reference arrived or whose buckets changed, once the watermark has
//!         passed the range's end ─► kpiflow's KPI over the range (the same buckets and formula
//!         as its windows) minus Amazon's rate ─► KpiUpdate `<kpi>_vs_amazon` ─► cross-check rules
//! ```
//!
//! | metric | checked against |
//! |---|---|
//! | `order_defect_rate_afn` + `order_defect_rate_mfn` | `order_defect_rate` (all orders: Amazon's figure is the two ranges' defects over their orders, summed; both are needed) |
//! | `late_shipment_rate` | `late_shipment_rate` |
//! | `pre_fulfilment_cancel_rate` | `cancellation_rate` |
//! | `valid_tracking_rate` | `valid_tracking_rate` |
//! | `on_time_delivery_rate` | `on_time_delivery_rate` (kpiflow counts units; Amazon's metric counts shipments) |
//!
//! A row's window is Amazon's range: its first day's midnight to the midnight after its last
//! day, in the reference's `source_tz`. Its `numerator` (and `value`) is kpiflow's rate minus
//! Amazon's, in rate points as a fraction (`0.25`: kpiflow's rate is 25 points above Amazon's;
//! the sign follows kpiflow); there is no denominator. `value` is absent when either side has
//! no rate (kpiflow counted nothing in the range, or only one of the two ODR figures came).
//!
//! A row is published only once the watermark has passed its range's end, so a replay or a
//! backfill still under way is not compared with Amazon's complete figure. It depends only on
//! the final buckets and the reference kept (the largest (`ingest_time`, `event_id`)), so it
//! is the same whatever the batching or the arrival order.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_schemas::{
    AccountHealthMetric, Decimal, Event, EventBody, HealthMetric, KpiUpdate, WindowKind, WindowRef,
};
use serde::{Deserialize, Serialize};

use super::{Applied, Engine, Outputs};
use crate::rule::crosscheck::{SUFFIX, Sides, WINDOW, checked_kpi};
use crate::window::{self, Hour, hour_start};

/// One reference value kept (what the comparison reads of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reference {
    ingest_time: DateTime<Utc>,
    event_id: String,
    numerator: Option<u64>,
    denominator: Option<u64>,
    /// Amazon's rate as its decimal text (the wire's `Decimal` reads only self-describing
    /// formats; checkpoints are postcard).
    rate: String,
}

/// A cross-check row: (shop scope, checked KPI, first day, last day).
type Row = (u32, String, NaiveDate, NaiveDate);

/// The references and the rows they give; checkpointed with the engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct CrossChecks {
    /// The reference kept per (shop scope, metric, first day, last day).
    references: BTreeMap<(u32, HealthMetric, NaiveDate, NaiveDate), Reference>,
    /// Each row's hours `[start, end)` and the zone its days were drawn in.
    rows: BTreeMap<Row, (Hour, Hour, String)>,
    /// Rows to publish (again) once the watermark has passed their end.
    stale: BTreeSet<Row>,
    /// The watermark's UTC day (days since the epoch) of the last sweep of evicted ranges.
    swept_day: Option<i64>,
}

impl Engine {
    /// Keeps a reference value; `None` for any other event. `Unused` when its KPI is not
    /// selected (nothing would read it); `Superseded` when a later report of the same metric
    /// and range is already kept.
    pub(super) fn reference(&mut self, event: &Event) -> Option<Applied> {
        let EventBody::AccountHealthMetric(m) = &event.body else {
            return None;
        };
        let kpi = checked_kpi(m.metric);
        if self.catalog.kpi(kpi).is_none() {
            return Some(Applied::Unused);
        }
        let shop = self.shop_scope(event);
        let h = &event.header;
        let key = (shop, m.metric, m.window_from, m.window_to);
        if let Some(old) = self.crosschecks.references.get(&key)
            && (&old.ingest_time, &old.event_id) >= (&h.ingest_time, &h.event_id)
        {
            return Some(Applied::Superseded {
                reason: format!(
                    "{} {}: a report of {} for {}..{} ingested {} is already kept (event {}); not applied",
                    event.schema(),
                    h.event_id,
                    m.metric.as_str(),
                    m.window_from,
                    m.window_to,
                    old.ingest_time.to_rfc3339(),
                    old.event_id,
                ),
            });
        }
        let day = window::business_day::BusinessDay { tz: h.source_tz.0 };
        let start = day.midnight(m.window_from);
        let end = m.window_to.succ_opt().map_or(start, |d| day.midnight(d));
        let row = (shop, kpi.to_string(), m.window_from, m.window_to);
        self.crosschecks
            .rows
            .insert(row.clone(), (start, end, h.source_tz.0.name().to_string()));
        self.crosschecks.stale.insert(row);
        self.crosschecks.references.insert(key, reference(h, m));
        Some(Applied::Counted)
    }

    /// Marks the rows whose range holds a bucket changed since the last flush (call before
    /// the flush takes `dirty`).
    pub(super) fn touch_crosschecks(&mut self) {
        let c = &mut self.crosschecks;
        if c.rows.is_empty() {
            return;
        }
        // Only the rows of shops with changed buckets: one range lookup per such row.
        let mut scopes: Vec<u32> = self.dirty.keys().map(|(s, _)| *s).collect();
        scopes.dedup();
        for scope in scopes {
            let first = (scope, String::new(), NaiveDate::MIN, NaiveDate::MIN);
            for (row, (start, end, _)) in c.rows.range(first..).take_while(|(r, _)| r.0 == scope) {
                let Some(kpi) = self.catalog.kpi(&row.1) else {
                    continue;
                };
                let touched = self
                    .dirty
                    .range((scope, *start)..(scope, *end))
                    .any(|(_, mask)| mask & kpi.mask != 0);
                if touched {
                    c.stale.insert(row.clone());
                }
            }
        }
    }

    /// Publishes the stale rows whose range the watermark has passed, and judges them.
    pub(super) fn publish_crosschecks(
        &mut self,
        watermark: Option<DateTime<Utc>>,
        wall: DateTime<Utc>,
        out: &mut Outputs,
    ) {
        let Some(w) = watermark else { return };
        // Ranges whose buckets are gone cannot be summed any more: forget them, in one sweep
        // per day of watermark (a row about to be published is checked on its own below).
        let scopes = &self.scopes;
        let kept = |row: &Row, start: Hour| start >= scopes[row.0 as usize].kept_from;
        let c = &mut self.crosschecks;
        let day = w.timestamp().div_euclid(86_400);
        if c.swept_day != Some(day) {
            c.swept_day = Some(day);
            c.rows.retain(|row, (start, _, _)| kept(row, *start));
            c.references.retain(|(shop, metric, from, to), _| {
                c.rows
                    .contains_key(&(*shop, checked_kpi(*metric).to_string(), *from, *to))
            });
        }
        let ready: Vec<Row> = c
            .stale
            .iter()
            .filter(|row| {
                c.rows
                    .get(row)
                    .is_none_or(|(_, end, _)| hour_start(*end) <= w)
            })
            .cloned()
            .collect();
        for row in ready {
            self.crosschecks.stale.remove(&row);
            let Some((start, end, tz)) = self.crosschecks.rows.get(&row).cloned() else {
                continue;
            };
            if start < self.scopes[row.0 as usize].kept_from {
                continue;
            }
            let Some((update, sides)) = self.crosscheck_row(&row, start, end, tz, w, wall) else {
                continue;
            };
            out.breaches
                .extend(self.rules.evaluate_crosscheck(row.0, &update, &sides, wall));
            out.updates.push(update);
        }
    }

    /// kpiflow's value of `row`'s KPI over its range against Amazon's figure.
    fn crosscheck_row(
        &mut self,
        row: &Row,
        start: Hour,
        end: Hour,
        tz: String,
        watermark: DateTime<Utc>,
        wall: DateTime<Utc>,
    ) -> Option<(KpiUpdate, Sides)> {
        let (scope, kpi_id, from, to) = row;
        let kpi = self.catalog.kpi(kpi_id)?;
        let sums = self.sum(*scope, start, end);
        let days =
            Decimal(rust_decimal::Decimal::new(end - start, 0) / rust_decimal::Decimal::from(24));
        let n = kpi.numerator.eval(&sums, days);
        let d = kpi.denominator.as_ref().map(|f| f.eval(&sums, days));
        let ours = match d {
            Some(d) => {
                n.0.checked_div(d.0)
                    .map(|v| (v, format!(" ({} / {})", n.0.normalize(), d.0.normalize())))
            }
            None => Some((n.0, String::new())),
        };
        let theirs = self.amazon_figure(*scope, kpi_id, *from, *to);
        let diff = match (&ours, &theirs) {
            (Some((a, _)), Some((b, _))) => Some((*a - *b).normalize()),
            _ => None,
        };
        let f64_of = |v: rust_decimal::Decimal| Decimal(v).to_f64();
        let sides = Sides {
            kpi: kpi_id.clone(),
            kpiflow: ours.map(|(v, of)| (f64_of(v), of)),
            amazon: theirs.map(|(v, of)| (f64_of(v), of)),
            range: format!("{from}..{to}"),
        };
        self.revision += 1;
        let update = KpiUpdate {
            kpi: format!("{kpi_id}{SUFFIX}"),
            kpi_version: kpi.config.version,
            unit: "ratio".into(),
            direction: kpi.config.direction,
            owner: kpi.config.owner.clone(),
            priority: kpi.config.priority,
            scope: self.scopes[*scope as usize].scope.clone(),
            window: WindowRef {
                kind: WindowKind::Rolling,
                name: WINDOW.into(),
                start: hour_start(start),
                end: hour_start(end),
                time_zone: tz,
                basis: kpi.basis.clone(),
            },
            numerator: Decimal(diff.unwrap_or_default()),
            denominator: None,
            value: diff.map(f64_of),
            currency: None,
            revision: self.revision,
            watermark,
            emitted_at: wall,
            settling: false,
            final_at: None,
        };
        Some((update, sides))
    }

    /// Amazon's rate for a checked KPI over a range, with its counts for humans. ODR sums the
    /// AFN and MFN figures' defects and orders (kpiflow's ODR covers every order).
    fn amazon_figure(
        &self,
        scope: u32,
        kpi: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Option<(rust_decimal::Decimal, String)> {
        let get = |m: HealthMetric| self.crosschecks.references.get(&(scope, m, from, to));
        if kpi == "order_defect_rate" {
            let afn = get(HealthMetric::OrderDefectRateAfn)?;
            let mfn = get(HealthMetric::OrderDefectRateMfn)?;
            let n = afn.numerator? + mfn.numerator?;
            let d = afn.denominator? + mfn.denominator?;
            let rate =
                rust_decimal::Decimal::from(n).checked_div(rust_decimal::Decimal::from(d))?;
            return Some((rate, format!(" ({n} / {d}, AFN and MFN)")));
        }
        let metric = HealthMetric::ALL
            .into_iter()
            .find(|m| checked_kpi(*m) == kpi)?;
        let r = get(metric)?;
        let rate = Decimal::parse(&r.rate)?.0;
        let of = match (r.numerator, r.denominator) {
            (Some(n), Some(d)) => format!(" ({n} / {d})"),
            _ => String::new(),
        };
        Some((rate, of))
    }
}

fn reference(h: &kpiflow_schemas::EventHeader, m: &AccountHealthMetric) -> Reference {
    Reference {
        ingest_time: h.ingest_time,
        event_id: h.event_id.clone(),
        numerator: m.numerator,
        denominator: m.denominator,
        rate: m.rate.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::{DateTime, Utc};
    use kpiflow_schemas::{BreachState, Event};
    use serde_json::json;

    use crate::{Engine, PartitionId, ProcessorConfig};

    fn event(schema: &str, id: &str, at: &str, ingest: &str, payload: serde_json::Value) -> Event {
        let wire = json!({"event_id": id, "schema": schema, "schema_version": 1,
            "source": "test", "shop": "s1", "channel": "amazon", "marketplace": "ATVPDKIKX0DER",
            "event_time": at, "source_tz": "America/Los_Angeles", "ingest_time": ingest,
            "payload": payload});
        Event::from_json(wire.to_string().as_bytes()).unwrap()
    }

    fn placed(id: &str, at: &str, fulfilment: &str) -> Event {
        event(
            "order.placed",
            id,
            at,
            at,
            json!({"order_id": id,
            "total": {"amount": "10.00", "currency": "USD"}, "units": 1, "fulfilment": fulfilment}),
        )
    }

    /// Amazon's ODR for 2026-11-02 .. 2026-11-05, ingested on `ingest`.
    fn odr(id: &str, metric: &str, n: u64, d: u64, rate: &str, ingest: &str) -> Event {
        event(
            "account.health_metric",
            id,
            "2026-11-06T08:00:00Z",
            ingest,
            json!({
            "metric": metric, "window_from": "2026-11-02", "window_to": "2026-11-05",
            "numerator": n, "denominator": d, "rate": rate, "target_value": "0.01",
            "target_condition": "less_than", "status": "good"}),
        )
    }

    fn apply(e: &mut Engine, events: &[Event], now: Instant) -> crate::Outputs {
        let batch: Vec<_> = events
            .iter()
            .map(|ev| (ev, PartitionId::zero_of(ev)))
            .collect();
        e.apply_batch(&batch, now);
        let wall: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        e.flush(now, wall)
    }

    fn checks(o: &crate::Outputs) -> Vec<(String, Option<f64>)> {
        o.updates
            .iter()
            .filter(|u| u.kpi.ends_with(super::SUFFIX))
            .map(|u| (u.numerator.to_string(), u.value))
            .collect()
    }

    #[test]
    fn references_and_the_rules_memory_survive_a_checkpoint() {
        let cfg: ProcessorConfig = toml::from_str(
            r#"kpis = ["order_defect_rate"]
               crosscheck_rules = [{ id = "odr", kpis = ["order_defect_rate"] }]"#,
        )
        .unwrap();
        let t0 = Instant::now();
        let mut e = Engine::new(&cfg, 0);
        // A (FBA) and B (merchant) in the range; H on Nov 9 takes the watermark past its end.
        let orders = [
            placed("A", "2026-11-02T17:00:00Z", "fba"),
            placed("B", "2026-11-03T17:00:00Z", "merchant"),
            placed("H", "2026-11-09T17:00:00Z", "merchant"),
        ];
        apply(&mut e, &orders, t0);
        let refs = [
            odr(
                "afn",
                "order_defect_rate_afn",
                0,
                1,
                "0",
                "2026-11-12T14:00:00Z",
            ),
            odr(
                "mfn",
                "order_defect_rate_mfn",
                0,
                1,
                "0",
                "2026-11-12T14:00:00Z",
            ),
        ];
        let o = apply(&mut e, &refs, t0 + Duration::from_secs(1));
        // kpiflow 0 / 2 against Amazon (0 + 0) / (1 + 1): 0 apart.
        assert_eq!(checks(&o), [("0".to_string(), Some(0.0))]);
        let bytes = e.snapshot();
        let mut restored = Engine::new(&cfg, 0);
        restored.restore(&bytes, t0).unwrap();
        assert_eq!(restored.snapshot(), bytes, "the same state");
        // B's 1-star feedback: kpiflow 1 / 2 = 0.5 against Amazon's 0, from the restored
        // references: 0.5 apart, beyond 0.005.
        let fb = event(
            "order.defect",
            "fb-B",
            "2026-11-12T16:00:00Z",
            "2026-11-12T16:00:00Z",
            json!({"order_id": "B", "placed_at": "2026-11-03T17:00:00Z",
                   "kind": "negative_feedback", "rating": 1}),
        );
        let o = apply(&mut restored, &[fb], t0 + Duration::from_secs(2));
        assert_eq!(checks(&o), [("0.5".to_string(), Some(0.5))]);
        assert_eq!(o.breaches.len(), 1);
        assert_eq!(o.breaches[0].state, BreachState::Firing);
        // The open breach is in the checkpoint too: Amazon catching up resolves it.
        let again = restored.snapshot();
        let mut third = Engine::new(&cfg, 0);
        third.restore(&again, t0).unwrap();
        let later = odr(
            "mfn-2",
            "order_defect_rate_mfn",
            1,
            1,
            "1",
            "2026-11-14T14:00:00Z",
        );
        let o = apply(&mut third, &[later], t0 + Duration::from_secs(3));
        assert_eq!(checks(&o), [("0".to_string(), Some(0.0))]);
        assert_eq!(o.breaches[0].state, BreachState::Resolved);
    }

    #[test]
    fn a_reference_of_an_unselected_kpi_is_unused() {
        let cfg: ProcessorConfig = toml::from_str(r#"kpis = ["orders"]"#).unwrap();
        let mut e = Engine::new(&cfg, 0);
        let r = odr(
            "afn",
            "order_defect_rate_afn",
            0,
            1,
            "0",
            "2026-11-12T14:00:00Z",
        );
        let v = e.apply(&r, PartitionId::zero_of(&r), Instant::now());
        assert_eq!(v, crate::Applied::Unused);
    }
}
