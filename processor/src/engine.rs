//! The engine: de-duplicates, places measures in hour buckets, publishes changed windows.
//!
//! It does no I/O and reads no clock of its own: callers pass wall-clock instants in, so tests
//! and benchmarks drive it deterministically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_schemas::{
    AdPerformance, BreachEvent, Decimal, Event, EventBody, KpiUpdate, Money, Scope, Topic,
};

use crate::ProcessorConfig;
use crate::catalog::{self, Contribution, KPIS, MEASURES, Measure};
use crate::config::Lateness;
use crate::rule::RuleSet;
use crate::watermark::Watermarks;
use crate::window::{self, Hour, WindowSpec, hour_of};

/// Where a record came from: which topic family and partition (watermarks are per partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionId {
    /// The logical topic.
    pub topic: Topic,
    /// The partition number.
    pub partition: i32,
}

/// What [`Engine::apply`] did with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Counted in the aggregates.
    Counted,
    /// Another event with the same id was already counted; ignored.
    Duplicate,
    /// A newer version of this restatable fact was already applied; ignored.
    Superseded,
    /// Valid, but no KPI of the catalog uses it yet.
    Unused,
    /// Later than its kind's allowed lateness: not counted, to be dead-lettered.
    Late {
        /// Why, with the times involved.
        reason: String,
    },
    /// Not countable as it is (e.g. a currency the pipeline does not aggregate): dead-letter.
    Rejected {
        /// Short reason class for metrics, e.g. `currency`.
        kind: &'static str,
        /// The full reason.
        reason: String,
    },
}

/// What one flush publishes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    /// KPI values of every window whose value may have changed, oldest window end first.
    pub updates: Vec<KpiUpdate>,
    /// Breach transitions.
    pub breaches: Vec<BreachEvent>,
}

type Sums = [Decimal; MEASURES];

#[derive(Debug)]
struct ScopeState {
    scope: Scope,
    buckets: BTreeMap<Hour, Sums>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AdKey {
    scope: u32,
    platform: String,
    account: String,
    campaign: String,
    date: NaiveDate,
}

#[derive(Debug, Clone)]
struct AdVersion {
    as_of: DateTime<Utc>,
    /// Breaks ties between versions reported at the same `as_of`, so which one counts does
    /// not depend on the order they arrive in.
    event_id: String,
    hour: Hour,
    spend: Decimal,
    sales: Decimal,
}

/// The KPI engine's state and logic.
pub struct Engine {
    windows: Vec<WindowSpec>,
    lateness: Lateness,
    currency: String,
    watermarks: Watermarks,
    scopes: Vec<ScopeState>,
    scope_ids: HashMap<Scope, u32>,
    /// Event ids already counted, with the hour of their event time (for eviction).
    seen: HashMap<String, Hour>,
    /// The version of each restatable ad row that is currently counted.
    ads: HashMap<AdKey, AdVersion>,
    /// (scope, hour) buckets changed since the last flush.
    dirty: BTreeSet<(u32, Hour)>,
    /// Rolling windows ending at or before this hour have been published.
    frontier: Option<Hour>,
    /// The oldest hour with data while there was no frontier yet (its rolling windows wait).
    first_unpublished: Option<Hour>,
    rules: RuleSet,
    revision: u64,
    retention_hours: i64,
    evicted_at: Option<Hour>,
    scratch: Vec<Contribution>,
}

impl Engine {
    /// An empty engine for a validated configuration. `first_revision` seeds the revision
    /// counter; callers pass wall-clock microseconds so revisions keep growing across restarts.
    pub fn new(cfg: &ProcessorConfig, first_revision: u64) -> Engine {
        let windows = window::specs(cfg);
        let longest_window = windows
            .iter()
            .map(WindowSpec::max_hours)
            .max()
            .unwrap_or(25);
        let lateness_hours = cfg.lateness.max().as_secs().div_ceil(3600) as i64;
        Engine {
            lateness: cfg.lateness.clone(),
            currency: cfg.currency.clone(),
            watermarks: Watermarks::new(cfg.out_of_orderness, cfg.idle_timeout),
            scopes: Vec::new(),
            scope_ids: HashMap::new(),
            seen: HashMap::new(),
            ads: HashMap::new(),
            dirty: BTreeSet::new(),
            frontier: None,
            first_unpublished: None,
            rules: RuleSet::new(&cfg.rules),
            revision: first_revision,
            // A late fact may change any window that contains its bucket, so buckets live for
            // the lateness allowance plus one window, plus the hour in progress.
            retention_hours: lateness_hours + longest_window + 1,
            evicted_at: None,
            scratch: Vec::with_capacity(4),
            windows,
        }
    }

    /// The watermark as of the last flush.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermarks.current()
    }

    /// Declares an input partition before reading it (see [`Watermarks::register`]).
    /// Partitions that do not drive the watermark (ad rows) are ignored.
    pub fn register_partition(&mut self, partition: PartitionId, now: Instant) {
        if partition.topic != Topic::Ads {
            self.watermarks.register(partition, now);
        }
    }

    /// Partitions quiet long enough that the reader should check whether it is at their end.
    pub fn quiet_partitions(&self, now: Instant) -> Vec<PartitionId> {
        self.watermarks.quiet_partitions(now)
    }

    /// Reports whether the reader is at the end of `partition`.
    pub fn set_caught_up(&mut self, partition: PartitionId, caught_up: bool) {
        self.watermarks.set_caught_up(partition, caught_up);
    }

    /// Number of (shop, hour) buckets held.
    pub fn state_buckets(&self) -> usize {
        self.scopes.iter().map(|s| s.buckets.len()).sum()
    }

    /// Number of event ids remembered for de-duplication.
    pub fn remembered_ids(&self) -> usize {
        self.seen.len()
    }

    fn allowance(&self, body: &EventBody) -> (&'static str, Duration) {
        match body.topic() {
            Topic::Ads => ("ads", self.lateness.ads),
            Topic::Logistics => ("logistics", self.lateness.logistics),
            _ if matches!(body, EventBody::OrderDefect(_)) => ("defects", self.lateness.defects),
            _ => ("orders", self.lateness.orders),
        }
    }

    fn scope_id(&mut self, event: &Event) -> u32 {
        let h = &event.header;
        let scope = Scope::shop(h.shop.clone(), h.channel, h.marketplace.clone());
        if let Some(id) = self.scope_ids.get(&scope) {
            return *id;
        }
        let id = self.scopes.len() as u32;
        self.scope_ids.insert(scope.clone(), id);
        self.scopes.push(ScopeState {
            scope,
            buckets: BTreeMap::new(),
        });
        id
    }

    fn check_currency(&self, event: &Event, field: &str, money: &Money) -> Result<(), Applied> {
        if money.currency == self.currency {
            return Ok(());
        }
        Err(Applied::Rejected {
            kind: "currency",
            reason: format!(
                "{}: field `{field}.currency`: {:?} is not the pipeline currency {:?} (FX conversion is not supported yet; set processor.currency)",
                event.schema(),
                money.currency,
                self.currency
            ),
        })
    }

    /// Applies one valid event read from `partition` at wall-clock `now`.
    pub fn apply(&mut self, event: &Event, partition: PartitionId, now: Instant) -> Applied {
        let h = &event.header;
        if self.seen.contains_key(&h.event_id) {
            return Applied::Duplicate;
        }
        let mut contributions = std::mem::take(&mut self.scratch);
        contributions.clear();
        let result = self.apply_inner(event, &mut contributions);
        self.scratch = contributions;
        if matches!(
            result,
            Applied::Counted | Applied::Superseded | Applied::Unused
        ) {
            self.seen.insert(h.event_id.clone(), hour_of(h.event_time));
            // Ad rows are dated by their report day and always arrive a day or more after it;
            // letting them drive the watermark would hold every window back by that delay.
            if partition.topic != Topic::Ads {
                self.watermarks.observe(partition, h.event_time, now);
            }
        }
        result
    }

    fn apply_inner(&mut self, event: &Event, out: &mut Vec<Contribution>) -> Applied {
        if let EventBody::OrderPlaced(o) = &event.body
            && let Err(rejected) = self.check_currency(event, "payload.total", &o.total)
        {
            return rejected;
        }
        if let EventBody::AdPerformance(ad) = &event.body {
            return self.apply_ad(event, ad);
        }
        catalog::contributions(event.header.event_time, &event.body, out);
        let Some(earliest) = out.iter().map(|c| c.at).min() else {
            return Applied::Unused;
        };
        if let Some(late) = self.lateness_check(event, earliest) {
            return late;
        }
        let scope = self.scope_id(event);
        for c in out.iter() {
            self.add(scope, hour_of(c.at), c.measure, c.amount);
        }
        Applied::Counted
    }

    fn lateness_check(&self, event: &Event, basis: DateTime<Utc>) -> Option<Applied> {
        let wm = self.watermarks.current()?;
        let (family, allowed) = self.allowance(&event.body);
        let behind = wm.signed_duration_since(basis);
        if behind.to_std().is_ok_and(|b| b > allowed) {
            return Some(Applied::Late {
                reason: format!(
                    "{} {}: basis time {} is {} behind the watermark {}; allowed lateness for {family} is {}",
                    event.schema(),
                    event.header.event_id,
                    basis.to_rfc3339(),
                    humantime::format_duration(behind.to_std().unwrap_or_default()),
                    wm.to_rfc3339(),
                    humantime::format_duration(allowed),
                ),
            });
        }
        None
    }

    /// Ad rows are restatable: the newest `as_of` per (platform, account, campaign, date)
    /// counts (the larger event id among equal `as_of`s), so a re-sent row adds only its
    /// difference from the version it replaces.
    fn apply_ad(&mut self, event: &Event, ad: &AdPerformance) -> Applied {
        for (field, money) in [
            ("payload.spend", &ad.spend),
            ("payload.attributed_sales", &ad.attributed_sales),
        ] {
            if let Err(rejected) = self.check_currency(event, field, money) {
                return rejected;
            }
        }
        if let Some(late) = self.lateness_check(event, event.header.event_time) {
            return late;
        }
        let scope = self.scope_id(event);
        let key = AdKey {
            scope,
            platform: ad.platform.clone(),
            account: ad.account_id.clone(),
            campaign: ad.campaign_id.clone(),
            date: ad.date,
        };
        let hour = hour_of(event.header.event_time);
        let new = AdVersion {
            as_of: ad.as_of,
            event_id: event.header.event_id.clone(),
            hour,
            spend: ad.spend.amount,
            sales: ad.attributed_sales.amount,
        };
        match self.ads.get(&key) {
            Some(old) if (&old.as_of, &old.event_id) >= (&new.as_of, &new.event_id) => {
                return Applied::Superseded;
            }
            Some(old) => {
                let old = old.clone();
                self.add(scope, old.hour, Measure::AdSpend, Decimal::ZERO - old.spend);
                self.add(scope, old.hour, Measure::AdSales, Decimal::ZERO - old.sales);
            }
            None => {}
        }
        self.add(scope, hour, Measure::AdSpend, new.spend);
        self.add(scope, hour, Measure::AdSales, new.sales);
        self.ads.insert(key, new);
        Applied::Counted
    }

    fn add(&mut self, scope: u32, hour: Hour, measure: Measure, amount: Decimal) {
        let sums = self.scopes[scope as usize]
            .buckets
            .entry(hour)
            .or_insert([Decimal::ZERO; MEASURES]);
        sums[measure.slot()] += amount;
        self.dirty.insert((scope, hour));
    }

    /// Advances the watermark at wall-clock `now`, and returns the KPI values of every window
    /// that changed (or newly closed) since the last flush, plus breach transitions.
    /// `wall` stamps the outputs' `emitted_at`.
    pub fn flush(&mut self, now: Instant, wall: DateTime<Utc>) -> Outputs {
        let watermark = self.watermarks.advance(now);
        // The open rolling window (ending after the watermark's hour) is published too, so the
        // live value moves as data arrives; it is published again when it changes.
        let frontier = watermark.map(|w| hour_of(w) + 1);
        let mut windows: BTreeSet<(Hour, Hour, usize, u32)> = BTreeSet::new();
        if let Some(h) = self.dirty.iter().map(|(_, h)| *h).min() {
            self.first_unpublished = Some(self.first_unpublished.map_or(h, |f| f.min(h)));
        }
        for (scope, hour) in std::mem::take(&mut self.dirty) {
            for (wi, spec) in self.windows.iter().enumerate() {
                match spec {
                    WindowSpec::BusinessDay(day) => {
                        let (start, end) = day.day_of(hour);
                        windows.insert((end, start, wi, scope));
                    }
                    WindowSpec::Rolling(r) => {
                        let Some(f) = frontier else { continue };
                        for end in r.ends_containing(hour).take_while(|e| *e <= f) {
                            windows.insert((end, end - i64::from(r.hours), wi, scope));
                        }
                    }
                }
            }
        }
        if let Some(f) = frontier {
            // The first time, every window from the first data on (data may have arrived while
            // there was no watermark yet); then each newly reached end.
            let from = match self.frontier {
                Some(old) => old + 1,
                None => self.first_unpublished.map_or(f, |h| (h + 1).min(f)),
            };
            self.first_unpublished = None;
            for end in from..=f {
                for (wi, spec) in self.windows.iter().enumerate() {
                    let WindowSpec::Rolling(r) = spec else {
                        continue;
                    };
                    let start = end - i64::from(r.hours);
                    for (id, s) in self.scopes.iter().enumerate() {
                        // Also publish the first window after data left, so it reads zero.
                        if s.buckets.range(start - 1..end).next().is_some() {
                            windows.insert((end, start, wi, id as u32));
                        }
                    }
                }
            }
            self.frontier = Some(self.frontier.map_or(f, |old| old.max(f)));
        }

        let mut out = Outputs::default();
        let watermark_ts = watermark.unwrap_or(DateTime::<Utc>::MIN_UTC);
        for (end, start, wi, scope) in windows {
            let sums = self.sum(scope, start, end);
            let spec = &self.windows[wi];
            for kpi in KPIS {
                let numerator = sums[kpi.numerator.slot()];
                let denominator = kpi.denominator.map(|d| sums[d.slot()]);
                let value = match denominator {
                    Some(d) if d == Decimal::ZERO => None,
                    Some(d) => Some(numerator.to_f64() / d.to_f64()),
                    None => Some(numerator.to_f64()),
                };
                self.revision += 1;
                let update = KpiUpdate {
                    kpi: kpi.id.to_string(),
                    kpi_version: kpi.version,
                    unit: kpi.unit.to_string(),
                    direction: kpi.direction,
                    owner: kpi.owner.to_string(),
                    priority: kpiflow_schemas::Priority::Core,
                    scope: self.scopes[scope as usize].scope.clone(),
                    window: spec.window_ref(start, end, kpi.basis),
                    numerator,
                    denominator,
                    value,
                    currency: kpi.is_money().then(|| self.currency.clone()),
                    revision: self.revision,
                    watermark: watermark_ts,
                    emitted_at: wall,
                };
                out.breaches
                    .extend(self.rules.evaluate(scope, &update, wall));
                out.updates.push(update);
            }
        }
        if let Some(wm) = watermark {
            self.evict(hour_of(wm));
        }
        out
    }

    fn sum(&self, scope: u32, start: Hour, end: Hour) -> Sums {
        let mut sums = [Decimal::ZERO; MEASURES];
        for (_, bucket) in self.scopes[scope as usize].buckets.range(start..end) {
            for (acc, v) in sums.iter_mut().zip(bucket) {
                *acc += *v;
            }
        }
        sums
    }

    /// Drops state no fact within its allowed lateness can reach any more.
    fn evict(&mut self, watermark_hour: Hour) {
        if self.evicted_at == Some(watermark_hour) {
            return;
        }
        self.evicted_at = Some(watermark_hour);
        let cutoff = watermark_hour - self.retention_hours;
        for s in &mut self.scopes {
            s.buckets = s.buckets.split_off(&cutoff);
        }
        self.seen.retain(|_, h| *h >= cutoff);
        self.ads.retain(|_, v| v.hour >= cutoff);
    }
}

#[cfg(test)]
#[path = "engine_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use kpiflow_schemas::{
        CancelledBy, Channel, EventHeader, Fulfilment, OrderCancelled, OrderPlaced, OrderShipped,
        SourceTz,
    };

    const P0: PartitionId = PartitionId {
        topic: Topic::Orders,
        partition: 0,
    };
    const ADS: PartitionId = PartitionId {
        topic: Topic::Ads,
        partition: 0,
    };

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn header(id: &str, at: &str) -> EventHeader {
        EventHeader {
            event_id: id.into(),
            source: "test".into(),
            shop: "shop-1".into(),
            channel: Channel::Amazon,
            marketplace: "ATVPDKIKX0DER".into(),
            sku: None,
            event_time: t(at),
            source_tz: SourceTz::US_PACIFIC,
            ingest_time: t(at),
        }
    }

    fn placed(id: &str, at: &str, amount: &str) -> Event {
        Event::new(
            header(id, at),
            OrderPlaced {
                order_id: format!("o-{id}"),
                total: Money::usd(amount),
                units: 1,
                fulfilment: Fulfilment::Fba,
                ship_by: None,
                deliver_by: None,
            },
        )
    }

    fn ad(id: &str, date: &str, as_of: &str, spend: &str, sales: &str) -> Event {
        let d: NaiveDate = date.parse().unwrap();
        let start = format!("{date}T08:00:00Z");
        Event::new(
            header(id, &start),
            AdPerformance {
                platform: "amazon_ads".into(),
                account_id: "a".into(),
                campaign_id: "c".into(),
                date: d,
                impressions: 100,
                clicks: 10,
                spend: Money::usd(spend),
                attributed_orders: 1,
                attributed_sales: Money::usd(sales),
                attribution_window: "7d".into(),
                as_of: t(as_of),
            },
        )
    }

    fn day_value(out: &Outputs, kpi: &str, day_start: &str) -> Option<(Decimal, Option<Decimal>)> {
        out.updates
            .iter()
            .rev()
            .find(|u| {
                u.kpi == kpi && u.window.name == "business_day" && u.window.start == t(day_start)
            })
            .map(|u| (u.numerator, u.denominator))
    }

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn duplicates_count_once_and_days_follow_pacific_time() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        // 07:30 UTC on Nov 3 is still Nov 2 in Los Angeles (UTC-8).
        assert_eq!(
            e.apply(&placed("a", "2026-11-03T07:30:00Z", "10.00"), P0, now),
            Applied::Counted
        );
        assert_eq!(
            e.apply(&placed("a", "2026-11-03T07:30:00Z", "10.00"), P0, now),
            Applied::Duplicate
        );
        assert_eq!(
            e.apply(&placed("b", "2026-11-03T08:30:00Z", "5.50"), P0, now),
            Applied::Counted
        );
        let out = e.flush(now, Utc::now());
        assert_eq!(
            day_value(&out, "gmv", "2026-11-02T08:00:00Z"),
            Some((d("10.00"), None))
        );
        assert_eq!(
            day_value(&out, "gmv", "2026-11-03T08:00:00Z"),
            Some((d("5.50"), None))
        );
        assert_eq!(
            day_value(&out, "aov", "2026-11-02T08:00:00Z"),
            Some((d("10.00"), Some(d("1"))))
        );
    }

    #[test]
    fn restated_ad_rows_replace_and_older_versions_are_ignored() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        assert_eq!(
            e.apply(
                &ad("r1", "2026-11-02", "2026-11-03T14:00:00Z", "10", "30"),
                ADS,
                now
            ),
            Applied::Counted
        );
        assert_eq!(
            e.apply(
                &ad("r3", "2026-11-02", "2026-11-05T14:00:00Z", "9", "45"),
                ADS,
                now
            ),
            Applied::Counted
        );
        // The day-2 version arrives after the day-3 one: it must not count.
        assert_eq!(
            e.apply(
                &ad("r2", "2026-11-02", "2026-11-04T14:00:00Z", "10", "40"),
                ADS,
                now
            ),
            Applied::Superseded
        );
        let out = e.flush(now, Utc::now());
        assert_eq!(
            day_value(&out, "roas", "2026-11-02T08:00:00Z"),
            Some((d("45"), Some(d("9"))))
        );
    }

    #[test]
    fn late_cancellations_correct_the_order_day_and_too_late_facts_are_refused() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        e.apply(&placed("a", "2026-11-02T18:00:00Z", "10.00"), P0, now);
        let first = e.flush(now, Utc::now());
        assert_eq!(
            day_value(&first, "cancellation_rate", "2026-11-02T08:00:00Z"),
            Some((d("0"), Some(d("1"))))
        );
        e.apply(&placed("b", "2026-11-04T18:00:00Z", "10.00"), P0, now);
        e.flush(now, Utc::now());
        let cancel = Event::new(
            header("c", "2026-11-04T19:00:00Z"),
            OrderCancelled {
                order_id: "o-a".into(),
                placed_at: t("2026-11-02T18:00:00Z"),
                cancelled_by: CancelledBy::Seller,
                reason: None,
            },
        );
        assert_eq!(e.apply(&cancel, P0, now), Applied::Counted);
        let second = e.flush(now, Utc::now());
        assert_eq!(
            day_value(&second, "cancellation_rate", "2026-11-02T08:00:00Z"),
            Some((d("1"), Some(d("1"))))
        );
        // Orders may be 3 days late by default; one placed 5 days before the watermark is not.
        let old = placed("z", "2026-10-30T12:00:00Z", "1.00");
        assert!(matches!(e.apply(&old, P0, now), Applied::Late { .. }));
    }

    #[test]
    fn late_shipments_and_rolling_windows() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        let ship = |id: &str, at: &str, ship_by: &str| {
            Event::new(
                header(id, at),
                OrderShipped {
                    order_id: id.into(),
                    placed_at: t("2026-11-01T00:00:00Z"),
                    ship_by: t(ship_by),
                    deliver_by: None,
                    units: 1,
                    carrier: None,
                    tracking_id: None,
                    tracking_valid: true,
                },
            )
        };
        e.apply(
            &ship("s1", "2026-11-02T10:30:00Z", "2026-11-02T12:00:00Z"),
            P0,
            now,
        );
        e.apply(
            &ship("s2", "2026-11-02T11:30:00Z", "2026-11-02T11:00:00Z"),
            P0,
            now,
        );
        e.apply(
            &ship("s3", "2026-11-03T12:30:00Z", "2026-11-03T13:00:00Z"),
            P0,
            now,
        );
        let out = e.flush(now, Utc::now());
        let rolling = |end: &str| {
            out.updates
                .iter()
                .rev()
                .find(|u| {
                    u.kpi == "late_shipment_rate"
                        && u.window.name == "rolling_24h"
                        && u.window.end == t(end)
                })
                .map(|u| (u.numerator, u.denominator))
        };
        // [Nov 2 10:00, Nov 3 10:00) holds s1 (on time) and s2 (late).
        assert_eq!(
            rolling("2026-11-03T10:00:00Z"),
            Some((d("1"), Some(d("2"))))
        );
        assert_eq!(
            rolling("2026-11-03T11:00:00Z"),
            Some((d("1"), Some(d("1"))))
        );
        // s2 has left and s3 is not in yet: an empty window reads 0 / 0.
        assert_eq!(
            rolling("2026-11-03T12:00:00Z"),
            Some((d("0"), Some(d("0"))))
        );
        assert_eq!(
            rolling("2026-11-03T13:00:00Z"),
            Some((d("0"), Some(d("1"))))
        );
        // The watermark is 12:25 on Nov 3, so the open window ends at 13:00 and none later.
        assert_eq!(rolling("2026-11-03T14:00:00Z"), None);
    }

    #[test]
    fn rolling_windows_of_data_read_before_the_first_watermark_are_published() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let now = Instant::now();
        let other = PartitionId {
            topic: Topic::Orders,
            partition: 1,
        };
        e.register_partition(other, now);
        e.apply(&placed("a", "2026-11-02T10:30:00Z", "1.00"), P0, now);
        // Partition 1 has not been read: no watermark, so no rolling window yet.
        let first = e.flush(now, Utc::now());
        assert!(
            first
                .updates
                .iter()
                .all(|u| u.window.name == "business_day")
        );
        e.apply(&placed("b", "2026-11-03T10:30:00Z", "1.00"), P0, now);
        e.apply(&placed("c", "2026-11-03T10:30:00Z", "1.00"), other, now);
        let second = e.flush(now, Utc::now());
        let ends: BTreeSet<DateTime<Utc>> = second
            .updates
            .iter()
            .filter(|u| u.kpi == "orders" && u.window.name == "rolling_24h")
            .map(|u| u.window.end)
            .collect();
        // Every window from order a's hour on, not only the newest.
        assert_eq!(ends.first(), Some(&t("2026-11-02T11:00:00Z")));
        assert_eq!(ends.last(), Some(&t("2026-11-03T11:00:00Z")));
        assert_eq!(ends.len(), 25);
    }

    #[test]
    fn other_currencies_are_rejected_with_the_field() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let mut ev = placed("a", "2026-11-02T18:00:00Z", "10.00");
        if let EventBody::OrderPlaced(o) = &mut ev.body {
            o.total.currency = "EUR".into();
        }
        match e.apply(&ev, P0, Instant::now()) {
            Applied::Rejected { kind, reason } => {
                assert_eq!(kind, "currency");
                assert!(reason.contains("payload.total.currency"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
