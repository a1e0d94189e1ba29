//! The engine: de-duplicates, evaluates the catalog's measures over batches of events, keeps
//! hour buckets per scope, applies restatements as differences, publishes changed windows.
//!
//! It does no I/O and reads no clock of its own: callers pass wall-clock instants in, so tests
//! and benchmarks drive it deterministically.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kpiflow_schemas::{BreachEvent, Decimal, Event, EventBody, KpiUpdate, Money, Scope, Topic};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::catalog::{Catalog, DailyKind, GroupBy};
use crate::config::{Compiled, Lateness};
use crate::event_table;
use crate::event_table::{Bounds, Refusal};
use crate::fixed::{Fixed, decimal, fixed};
use crate::rule::RuleSet;
use crate::rule::trend::{Compare, TrendInput};
use crate::stock::{Placed, StockDays};
use crate::watermark::Watermarks;
use crate::window::{self, Hour, hour_of};
use crate::{ProcessorConfig, ProcessorError};

/// Where a record came from: which topic family and partition (watermarks are per partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionId {
    /// The logical topic.
    pub topic: Topic,
    /// The partition number.
    pub partition: i32,
}

impl PartitionId {
    /// Partition 0 of the event's topic: where a test or benchmark that has no Kafka says its
    /// events came from.
    pub fn zero_of(event: &Event) -> PartitionId {
        PartitionId {
            topic: event.body.topic(),
            partition: 0,
        }
    }
}

/// What [`Engine::apply`] did with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Counted in the aggregates.
    Counted,
    /// Another event with the same id was already counted; ignored.
    Duplicate,
    /// A newer version of this restated fact was already applied: not applied, and
    /// dead-lettered (`superseded`) so the arrival is visible.
    Superseded {
        /// Which versions, and which one stays.
        reason: String,
    },
    /// Valid, but no selected KPI uses it.
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

type Sums = Box<[Fixed]>;

/// An event id as remembered for deduplication: 16 bytes instead of the string.
pub type IdHash = u128;

/// The 128-bit SipHash-1-3 of an event id under fixed keys. Fixed, because checkpoints store
/// these and a restarted or upgraded engine must compute the same; 128 bits, because two ids
/// colliding would drop a fact: among 2^32 remembered ids the chance is about 2^-65.
pub fn id_hash(id: &str) -> IdHash {
    siphasher::sip128::SipHasher13::new()
        .hash(id.as_bytes())
        .as_u128()
}

#[derive(Debug)]
struct ScopeState {
    scope: Scope,
    level: GroupBy,
    /// The shop-level scope this one belongs to (itself for a shop).
    shop: u32,
    /// For a shop: the newest own time of any of its facts (drives its state's retention).
    newest: Option<DateTime<Utc>>,
    /// For a shop: its buckets (and its SKU and campaign scopes') before this hour are gone.
    kept_from: Hour,
    tz: Tz,
    hours: BTreeMap<Hour, Sums>,
    /// The same sums per UTC day, so long windows add days instead of hours.
    days: BTreeMap<i64, Sums>,
}

/// One counted version of a restated fact: what it added, so a newer version can take it back.
#[derive(Debug, Clone)]
struct Version {
    version: i64,
    event_id: String,
    newest_hour: Hour,
    added: Vec<(u32, Hour, u16, Decimal)>,
}

/// One gauge report (stock level) per key and hour: the largest version wins.
#[derive(Debug, Clone)]
struct Report {
    version: i64,
    event_id: String,
    values: Vec<(u16, Decimal)>,
}

/// Gauge reports of one scope, by (replace group, key) and hour.
type GaugeSeries = HashMap<(u16, String), BTreeMap<Hour, Report>>;

/// The KPI engine's state and logic.
pub struct Engine {
    catalog: Arc<Catalog>,
    default_tz: Tz,
    time_zones: HashMap<String, Tz>,
    lateness: Lateness,
    currency: String,
    watermarks: Watermarks,
    scopes: Vec<ScopeState>,
    scope_ids: HashMap<Scope, u32>,
    /// Event ids already counted, with their shop and the hour of their event time (for
    /// eviction).
    seen: FxHashMap<IdHash, (u32, Hour)>,
    /// Newest own time per stream (topic, shop scope, source): what lateness is judged by.
    clocks: HashMap<(Topic, u32, String), DateTime<Utc>>,
    /// The counted version of each restated fact, by (replace group, shop scope, key).
    replaced: HashMap<(u16, u32, String), Version>,
    /// Keys of `once` measures already counted, by (group, shop scope, key), with the newest
    /// hour they added to (for eviction).
    once: HashMap<(u16, u32, String), Hour>,
    /// Gauge reports by scope, (replace group, key), hour.
    gauges: HashMap<u32, GaugeSeries>,
    /// Daily stock levels carried forward per SKU and business day (`daily` measures).
    stock: StockDays,
    /// Landed unit costs per SKU and the units of cost measures they price.
    costs: crate::cost::Costs,
    /// FX rates into the pipeline currency.
    rates: Arc<crate::fx::Rates>,
    /// Orders refused for their currency, by (shop scope, order id): the hour of the refused
    /// fact (for eviction) and why. Their later facts are refused too.
    held_out: HashMap<(u32, String), (Hour, String)>,
    /// (scope, hour) buckets changed since the last flush, with the measures changed.
    dirty: BTreeMap<(u32, Hour), u64>,
    /// What the batch being applied adds, per (scope, hour, measure): summed in a hash map
    /// first, so each bucket is looked up once per batch instead of once per fact.
    pending: FxHashMap<(u32, Hour, u16), Fixed>,
    /// Rolling windows ending at or before this hour have been published.
    frontier: Option<Hour>,
    /// The oldest hour with data while there was no frontier yet (its rolling windows wait).
    first_unpublished: Option<Hour>,
    rules: RuleSet,
    /// Newest sign of life per (shop scope, source), for staleness rules.
    freshness: HashMap<(u32, String), DateTime<Utc>>,
    revision: u64,
    retention_hours: i64,
    /// How far a fact's event time may lie after its ingest time.
    max_event_ahead: chrono::Duration,
    /// How far a fact's event time may lie before its ingest time.
    max_event_age: chrono::Duration,
    /// The largest values one fact may carry (`[processor.bounds]`).
    bounds: Bounds,
    /// Measures kept per SKU and per campaign (those of KPIs grouped that way).
    sku_measures: u64,
    campaign_measures: u64,
    /// Amazon's own figures and the `*_vs_amazon` rows they give (engine_crosscheck.rs).
    crosschecks: crosscheck::CrossChecks,
    /// Per KPI, how long after a window's end its value settles (see [`KpiUpdate::final_at`]).
    settle: Vec<chrono::Duration>,
    /// (KPI, window) indexes a rule waits on (`on_settling = "wait"`): their windows are
    /// published once more when they become final, so the rule judges them.
    finalize: Vec<(usize, usize)>,
}

impl Engine {
    /// An engine for the built-in catalog and `cfg` (which must validate); for tests and
    /// benchmarks. `first_revision` seeds the revision counter.
    pub fn new(cfg: &ProcessorConfig, first_revision: u64) -> Engine {
        let compiled = cfg.compile().expect("a valid processor config");
        Engine::with(&compiled, first_revision)
    }

    /// An engine for a compiled configuration. `first_revision` seeds the revision counter;
    /// callers pass wall-clock microseconds so revisions keep growing across restarts.
    pub fn with(compiled: &Compiled, first_revision: u64) -> Engine {
        let cfg = &compiled.config;
        let catalog = Arc::clone(&compiled.catalog);
        let lateness_hours = (cfg.lateness.max() + cfg.lateness.lookback)
            .as_secs()
            .div_ceil(3600) as i64;
        let level_mask = |g: GroupBy| {
            catalog
                .kpis
                .iter()
                .filter(|k| k.config.group_by == g)
                .fold(0u64, |m, k| m | k.mask)
        };
        let mut engine = Engine {
            default_tz: compiled.default_tz,
            time_zones: compiled.time_zones.clone(),
            lateness: cfg.lateness.clone(),
            currency: cfg.currency.clone(),
            watermarks: Watermarks::new(cfg.out_of_orderness, cfg.idle_timeout),
            scopes: Vec::new(),
            scope_ids: HashMap::new(),
            seen: FxHashMap::default(),
            clocks: HashMap::new(),
            once: HashMap::new(),
            replaced: HashMap::new(),
            gauges: HashMap::new(),
            stock: StockDays::default(),
            costs: crate::cost::Costs::default(),
            rates: Arc::clone(&compiled.rates),
            held_out: HashMap::new(),
            dirty: BTreeMap::new(),
            pending: FxHashMap::default(),
            frontier: None,
            first_unpublished: None,
            rules: RuleSet::new(&compiled.rules, Instant::now()),
            freshness: HashMap::new(),
            revision: first_revision,
            // A fact may arrive up to its allowance after the newest of its stream, be booked
            // up to `lookback` before its own time, and change any window containing that
            // bucket: buckets live for all three, plus the hour in progress.
            retention_hours: lateness_hours + catalog.longest_window_hours() + 1,
            max_event_ahead: chrono::Duration::from_std(cfg.max_event_ahead)
                .unwrap_or(chrono::Duration::MAX),
            max_event_age: chrono::Duration::from_std(cfg.max_event_age)
                .unwrap_or(chrono::Duration::MAX),
            bounds: cfg.bounds.bounds(),
            sku_measures: level_mask(GroupBy::Sku),
            campaign_measures: level_mask(GroupBy::Campaign),
            crosschecks: Default::default(),
            settle: settle_delays(&catalog, &cfg.lateness),
            finalize: Vec::new(),
            catalog,
        };
        engine.finalize = engine
            .rules
            .waiting()
            .iter()
            .filter_map(|(kpi, window)| {
                let ki = engine.catalog.kpis.iter().position(|k| k.id == *kpi)?;
                let wi = engine
                    .catalog
                    .windows
                    .iter()
                    .position(|w| w.name == *window)?;
                Some((ki, wi))
            })
            .collect();
        engine
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The watermark as of the last flush.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermarks.current()
    }

    /// Declares an input partition before reading it (see [`Watermarks::register`]).
    /// Partitions that do not drive the watermark (ad rows, heartbeats) are ignored.
    pub fn register_partition(&mut self, partition: PartitionId, now: Instant) {
        if drives_watermark(partition.topic) {
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

    /// Number of (scope, hour) buckets held.
    pub fn state_buckets(&self) -> usize {
        self.scopes.iter().map(|s| s.hours.len()).sum()
    }

    /// Number of scopes (shop, SKU, campaign) held.
    pub fn state_scopes(&self) -> usize {
        self.scopes.len()
    }

    /// Number of event ids remembered for de-duplication.
    pub fn remembered_ids(&self) -> usize {
        self.seen.len()
    }

    fn allowance(&self, body: &EventBody) -> (&'static str, Duration) {
        allowance_of(&self.lateness, body.schema())
    }

    fn scope_id(&mut self, scope: Scope, level: GroupBy) -> u32 {
        if let Some(id) = self.scope_ids.get(&scope) {
            return *id;
        }
        // A SKU or campaign scope lives and is evicted with its shop: make the shop first.
        let shop = match level {
            GroupBy::Shop => None,
            _ => Some(self.scope_id(
                Scope::shop(scope.shop.clone(), scope.channel, scope.marketplace.clone()),
                GroupBy::Shop,
            )),
        };
        let id = self.scopes.len() as u32;
        let tz = self
            .time_zones
            .get(&scope.marketplace)
            .copied()
            .unwrap_or(self.default_tz);
        let kept_from = shop.map_or(Hour::MIN, |s| self.scopes[s as usize].kept_from);
        self.scope_ids.insert(scope.clone(), id);
        self.scopes.push(ScopeState {
            scope,
            level,
            shop: shop.unwrap_or(id),
            newest: None,
            kept_from,
            tz,
            hours: BTreeMap::new(),
            days: BTreeMap::new(),
        });
        id
    }

    /// The shop-level scope of an event's header.
    fn shop_scope(&mut self, event: &Event) -> u32 {
        let h = &event.header;
        self.scope_id(
            Scope::shop(h.shop.clone(), h.channel, h.marketplace.clone()),
            GroupBy::Shop,
        )
    }

    /// Converts money in another currency at the rate of the fact's business day (`None`:
    /// nothing to convert). A fact that cannot be converted is refused, and so is every later
    /// fact of its order: an order counts whole or not at all, so a CAD order refused for want
    /// of a rate never leaves a cancellation behind.
    fn convert_currency(&mut self, event: &Event) -> Result<Option<Event>, Applied> {
        let shop = self.shop_scope(event);
        let order = order_id(&event.body).map(|o| (shop, o.to_string()));
        if let Some(k) = &order
            && let Some((_, why)) = self.held_out.get(k)
        {
            return Err(Applied::Rejected {
                kind: "currency",
                reason: format!(
                    "{} {}: order {} of shop {} is held out ({why}); every fact of an order counts, or none does",
                    event.schema(),
                    event.header.event_id,
                    k.1,
                    event.header.shop,
                ),
            });
        }
        let foreign = money_fields(&event.body)
            .iter()
            .any(|(_, m)| m.currency != self.currency);
        if !foreign {
            return Ok(None);
        }
        // The fact's business day: an ad row's report day, else its own time in the shop's zone.
        let day = match &event.body {
            EventBody::AdPerformance(a) => a.date,
            _ => event
                .header
                .event_time
                .with_timezone(&self.scopes[shop as usize].tz)
                .date_naive(),
        };
        let mut converted = event.clone();
        for (field, m) in money_fields_mut(&mut converted.body) {
            if m.currency == self.currency {
                continue;
            }
            match self.rates.convert(m, day, &self.currency) {
                Ok(c) => *m = c,
                Err(why) => {
                    let reason = format!(
                        "{}: field `{field}.currency`: {:?} is not the pipeline currency {:?} and {why}",
                        event.schema(),
                        m.currency,
                        self.currency,
                    );
                    if let Some(k) = order {
                        let short = format!(
                            "{} {} was refused: {why}",
                            event.schema(),
                            event.header.event_id
                        );
                        self.held_out
                            .insert(k, (hour_of(event.header.event_time), short));
                    }
                    return Err(Applied::Rejected {
                        kind: "currency",
                        reason,
                    });
                }
            }
        }
        Ok(Some(converted))
    }

    /// Applies one valid event read from `partition` at wall-clock `now`. Batches are faster:
    /// see [`Engine::apply_batch`].
    pub fn apply(&mut self, event: &Event, partition: PartitionId, now: Instant) -> Applied {
        self.apply_batch(&[(event, partition)], now).remove(0)
    }

    /// Applies a batch of valid events (in arrival order) at wall-clock `now`; returns what
    /// happened to each. A record the catalog cannot evaluate (an expression that
    /// type-checked but fails on its values, e.g. a division by zero in a custom measure) is
    /// rejected as `unprocessable` alone: the batch is then applied one record at a time, so
    /// the others count as they would have, and the stage goes on.
    pub fn apply_batch(&mut self, events: &[(&Event, PartitionId)], now: Instant) -> Vec<Applied> {
        match self.try_apply_batch(events, now) {
            Ok(verdicts) => verdicts,
            // Evaluation fails before any state changes, so the records can be applied again.
            Err(e) if events.len() > 1 => {
                tracing::warn!(error = %e, records = events.len(), "a batch could not be evaluated; applying its records one at a time");
                events
                    .iter()
                    .map(|one| self.apply_batch(std::slice::from_ref(one), now).remove(0))
                    .collect()
            }
            Err(e) => {
                let event = events[0].0;
                vec![Applied::Rejected {
                    kind: "unprocessable",
                    reason: format!("{} {}: {e}", event.schema(), event.header.event_id),
                }]
            }
        }
    }

    /// [`Engine::apply_batch`], failing the whole batch when the catalog cannot evaluate it.
    fn try_apply_batch(
        &mut self,
        events: &[(&Event, PartitionId)],
        now: Instant,
    ) -> Result<Vec<Applied>, ProcessorError> {
        let mut verdicts: Vec<Option<Applied>> = vec![None; events.len()];
        let ids: Vec<IdHash> = events
            .iter()
            .map(|(e, _)| id_hash(&e.header.event_id))
            .collect();
        let mut in_batch: FxHashSet<IdHash> = FxHashSet::default();
        let mut rows: Vec<usize> = Vec::with_capacity(events.len());
        let mut converted: Vec<Option<Event>> = vec![None; events.len()];
        for (i, (event, _)) in events.iter().enumerate() {
            let id = ids[i];
            if self.seen.contains_key(&id) || !in_batch.insert(id) {
                verdicts[i] = Some(Applied::Duplicate);
            } else if let Err(refusal) = event_table::check_bounded(event, self.bounds) {
                let (kind, e) = match refusal {
                    Refusal::Invalid(e) => ("invalid", e),
                    Refusal::Implausible(e) => ("implausible", e),
                };
                verdicts[i] = Some(Applied::Rejected {
                    kind,
                    reason: format!("{} {}: {e}", event.schema(), event.header.event_id),
                });
            } else if let Some(rejected) = self.implausible(event) {
                verdicts[i] = Some(rejected);
            } else {
                match self.convert_currency(event) {
                    Ok(c) => {
                        converted[i] = c;
                        rows.push(i);
                    }
                    Err(rejected) => verdicts[i] = Some(rejected),
                }
            }
        }
        if !rows.is_empty() {
            let batch = event_table::to_batch(
                rows.iter()
                    .map(|i| converted[*i].as_ref().unwrap_or(events[*i].0)),
            )
            .map_err(|e| ProcessorError::Internal {
                what: "events batch".into(),
                problem: e.to_string(),
            })?;
            let schema_index: Vec<usize> = rows
                .iter()
                .map(|i| {
                    let s = events[*i].0.body.schema();
                    EventBody::SCHEMAS
                        .iter()
                        .position(|(n, _)| *n == s)
                        .unwrap_or(0)
                })
                .collect();
            let evaluated = Arc::clone(&self.catalog).evaluate(&batch, &schema_index)?;
            // Contributions arrive grouped by measure; regroup them by row.
            let mut by_row: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
            for (ci, c) in evaluated.contributions.iter().enumerate() {
                by_row[c.row as usize].push(ci);
            }
            for (r, &i) in rows.iter().enumerate() {
                let (event, partition) = events[i];
                let contributions: Vec<_> = by_row[r]
                    .iter()
                    .map(|ci| evaluated.contributions[*ci])
                    .collect();
                let verdict = self.apply_row(event, r, &contributions, &evaluated.keys);
                let verdict = self.reference(event).unwrap_or(verdict);
                if matches!(
                    verdict,
                    Applied::Counted | Applied::Superseded { .. } | Applied::Unused
                ) {
                    // A cost is the seller's reference data, recorded at any time: it is
                    // neither a sign of life of a source nor a clock.
                    let fact = !matches!(event.body, EventBody::CostChanged(_));
                    if fact && self.rules.watches_freshness() {
                        self.note_freshness(event);
                    }
                    let shop = self.shop_scope(event);
                    self.seen
                        .insert(ids[i], (shop, hour_of(event.header.event_time)));
                    if fact && drives_watermark(partition.topic) {
                        self.watermarks
                            .observe(partition, event.header.event_time, now);
                    }
                }
                verdicts[i] = Some(verdict);
            }
        }
        self.add_pending();
        Ok(verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Applied::Unused))
            .collect())
    }

    /// A fact dated more than `max_event_ahead` after it was ingested (a year typed wrong, a
    /// clock far off) or more than `max_event_age` before (an epoch or default date): counting
    /// it would move its shop's clock, and so the retention of all its state, into the future,
    /// or open windows decades back.
    fn implausible(&self, event: &Event) -> Option<Applied> {
        let h = &event.header;
        let ahead = h.event_time.signed_duration_since(h.ingest_time);
        let shown =
            |d: chrono::Duration| humantime::format_duration(d.to_std().unwrap_or_default());
        let (gap, side, bound, key) = if ahead > self.max_event_ahead {
            (ahead, "after", self.max_event_ahead, "max_event_ahead")
        } else if -ahead > self.max_event_age {
            (-ahead, "before", self.max_event_age, "max_event_age")
        } else {
            return None;
        };
        Some(Applied::Rejected {
            kind: "implausible",
            reason: format!(
                "{} {}: field `event_time` {} is {} {side} its ingest_time {}; at most {} is accepted (processor.{key})",
                event.schema(),
                h.event_id,
                h.event_time.to_rfc3339(),
                shown(gap),
                h.ingest_time.to_rfc3339(),
                shown(bound),
            ),
        })
    }

    /// Judges one decoded, new event: late by its own time, or booked before the retained
    /// state; else applies it and moves its stream's clock.
    fn apply_row(
        &mut self,
        event: &Event,
        row: usize,
        contributions: &[crate::catalog::Contribution],
        keys: &[Option<Vec<(String, i64)>>],
    ) -> Applied {
        let shop = self.shop_scope(event);
        let topic = event.body.topic();
        if topic == Topic::Health {
            // Heartbeats carry wall-clock time: they are signs of life, not facts.
            return self.apply_contributions(event, row, contributions, keys);
        }
        if let EventBody::CostChanged(cost) = &event.body {
            // Never late: a cost entered weeks after it took effect is still the cost.
            return self.apply_cost(event, cost, shop);
        }
        let own = event.header.event_time;
        let stream = (topic, shop, event.header.source.clone());
        if let Some(late) = self.lateness_check(event, self.clocks.get(&stream).copied()) {
            return late;
        }
        let earliest = contributions
            .iter()
            .filter_map(|c| self.booked_hour(shop, c))
            .min();
        if let Some(earliest) = earliest
            && let Some(late) = self.retention_check(event, shop, &stream, earliest)
        {
            return late;
        }
        let verdict = self.apply_contributions(event, row, contributions, keys);
        let clock = self.clocks.entry(stream).or_insert(own);
        *clock = (*clock).max(own);
        let s = &mut self.scopes[shop as usize];
        s.newest = Some(s.newest.map_or(own, |n| n.max(own)));
        if !self.stock.is_empty() {
            self.advance_stock(shop);
        }
        verdict
    }

    /// Books the stock days of `shop` up to the business day of its newest fact.
    fn advance_stock(&mut self, shop: u32) {
        let s = &self.scopes[shop as usize];
        let Some(newest) = s.newest else { return };
        let tz = s.tz;
        let today = newest.with_timezone(&tz).date_naive();
        let catalog = Arc::clone(&self.catalog);
        let kind = |m: u16| daily_kind(&catalog, m);
        let day = window::business_day::BusinessDay { tz };
        let midnight = |d| day.midnight(d);
        for (scope, hour, m, v) in self.stock.advance(shop, today, &kind, &midnight) {
            self.add(scope, hour, m, v);
        }
    }

    /// Records a daily stock report (see [`crate::stock`]); `Ok(false)` when it names no SKU
    /// (a level per SKU cannot be placed), `Err` the newer report of that day that stays.
    fn apply_daily(
        &mut self,
        group: u16,
        shop: u32,
        event: &Event,
        location: String,
        version: i64,
        added: Vec<(u32, Hour, u16, Decimal)>,
    ) -> Result<bool, String> {
        let h = &event.header;
        let Some(sku) = h.sku.as_deref() else {
            return Ok(false);
        };
        let s = &self.scopes[shop as usize];
        let tz = s.tz;
        let today = s
            .newest
            .map_or(h.event_time, |n| n.max(h.event_time))
            .with_timezone(&tz)
            .date_naive();
        let placed = Placed {
            group,
            shop,
            sku,
            location,
            day: h.event_time.with_timezone(&tz).date_naive(),
            version,
            event_id: &h.event_id,
            values: added
                .iter()
                .filter(|a| a.0 == shop)
                .map(|a| (a.2, a.3))
                .collect(),
            targets: added.iter().map(|a| (a.2, a.0)).collect(),
        };
        let catalog = Arc::clone(&self.catalog);
        let kind = |m: u16| daily_kind(&catalog, m);
        let day = window::business_day::BusinessDay { tz };
        let midnight = |d| day.midnight(d);
        let deltas = self.stock.report(placed, today, &kind, &midnight)?;
        for (scope, hour, m, v) in deltas {
            self.add(scope, hour, m, v);
        }
        Ok(true)
    }

    fn apply_contributions(
        &mut self,
        event: &Event,
        row: usize,
        contributions: &[crate::catalog::Contribution],
        keys: &[Option<Vec<(String, i64)>>],
    ) -> Applied {
        let shop = self.shop_scope(event);
        let h = &event.header;
        let sku = h.sku.clone();
        let campaign = match &event.body {
            EventBody::AdPerformance(a) => Some(a.campaign_id.clone()),
            _ => None,
        };
        // The scopes a contribution to measure `m` lands in.
        let targets = |engine: &mut Engine, m: u16| -> Vec<u32> {
            let mut out = engine.shop_and_sku(shop, sku.as_deref(), m);
            let bit = 1u64 << m;
            if engine.campaign_measures & bit != 0
                && let Some(c) = &campaign
            {
                let mut s = engine.scopes[shop as usize].scope.clone();
                s.campaign = Some(c.clone());
                out.push(engine.scope_id(s, GroupBy::Campaign));
            }
            out
        };
        let catalog = Arc::clone(&self.catalog);
        let mut counted = false;
        // Plain measures add; restated ones are gathered per replace group first.
        let mut groups: BTreeMap<usize, Vec<(u32, Hour, u16, Decimal)>> = BTreeMap::new();
        for c in contributions {
            let measure = &catalog.measures[c.measure as usize];
            match measure.replace_group {
                None if measure.uncosted.is_some() => {
                    let Some(hour) = self.booked_hour(shop, c) else {
                        continue;
                    };
                    self.book_at_cost(shop, sku.as_deref(), hour, c.measure, c.value);
                    counted = true;
                }
                None => {
                    let Some(hour) = self.booked_hour(shop, c) else {
                        continue;
                    };
                    for scope in targets(self, c.measure) {
                        self.add(scope, hour, c.measure, c.value);
                    }
                    counted = true;
                }
                Some(g) => {
                    let entry = groups.entry(g).or_default();
                    if let Some(hour) = self.booked_hour(shop, c) {
                        for scope in targets(self, c.measure) {
                            entry.push((scope, hour, c.measure, c.value));
                        }
                    }
                }
            }
        }
        let mut superseded: Option<String> = None;
        for (g, added) in groups {
            let Some(Some(group_keys)) = keys.get(g) else {
                continue;
            };
            let (key, version) = group_keys[row].clone();
            let group = &catalog.replace_groups[g];
            if group.once {
                self.apply_once(g as u16, shop, key, added);
                counted = true;
                continue;
            }
            if group.daily {
                match self.apply_daily(g as u16, shop, event, key, version, added) {
                    Ok(applied) => counted |= applied,
                    Err(newer) => {
                        superseded.get_or_insert_with(|| {
                            format!(
                                "{} {}: an older report of this day than the one already counted ({newer}); not applied",
                                event.schema(),
                                h.event_id,
                            )
                        });
                    }
                }
                continue;
            }
            // A fact is restated only by a newer version of the same kind: the schema is
            // part of every key, so a refund never replaces a cancellation.
            let key = format!("{}\u{1f}{key}", event.schema());
            let outcome = if group.latest {
                self.apply_gauge(g as u16, key, version, &h.event_id, added)
            } else {
                self.apply_restated(g as u16, shop, key, version, &h.event_id, added)
            };
            match outcome {
                Ok(()) => counted = true,
                Err(newer) => {
                    superseded.get_or_insert_with(|| {
                        format!(
                            "{} {}: version {} of this fact is older than the one already counted ({newer}); not applied",
                            event.schema(),
                            h.event_id,
                            shown_version(version),
                        )
                    });
                }
            }
        }
        match (counted, superseded) {
            (true, _) => Applied::Counted,
            (false, Some(reason)) => Applied::Superseded { reason },
            (false, None) => Applied::Unused,
        }
    }

    /// The shop scope, and the SKU's scope when measure `m` is kept per SKU.
    fn shop_and_sku(&mut self, shop: u32, sku: Option<&str>, m: u16) -> Vec<u32> {
        let mut out = vec![shop];
        if self.sku_measures & (1u64 << m) != 0
            && let Some(sku) = sku
        {
            let mut s = self.scopes[shop as usize].scope.clone();
            s.sku = Some(sku.to_string());
            out.push(self.scope_id(s, GroupBy::Sku));
        }
        out
    }

    /// The business day (in the shop's zone) an hour belongs to.
    fn day_of(&self, shop: u32, hour: Hour) -> chrono::NaiveDate {
        window::hour_start(hour)
            .with_timezone(&self.scopes[shop as usize].tz)
            .date_naive()
    }

    /// Books `units` of cost measure `m` at the SKU's cost on the hour's business day, or to
    /// its uncosted units when none is known (or the fact names no SKU: it never will be).
    fn book_at_cost(&mut self, shop: u32, sku: Option<&str>, hour: Hour, m: u16, units: Decimal) {
        let uncosted = self.catalog.measures[m as usize]
            .uncosted
            .expect("a cost measure");
        let price = sku.and_then(|sku| {
            self.costs.book_units(shop, sku, hour, m, units);
            self.costs.price(shop, sku, self.day_of(shop, hour))
        });
        for scope in self.shop_and_sku(shop, sku, m) {
            match price {
                Some(p) => self.add(scope, hour, m, Decimal(units.0 * p.0)),
                None => self.add(scope, hour, uncosted, units),
            }
        }
    }

    /// Records a SKU's cost from its first day on, and reprices the units already booked on
    /// the days it covers: only the difference reaches the buckets.
    fn apply_cost(
        &mut self,
        event: &Event,
        cost: &kpiflow_schemas::CostChanged,
        shop: u32,
    ) -> Applied {
        let h = &event.header;
        // Validated: a cost names its SKU.
        let Some(sku) = h.sku.as_deref() else {
            return Applied::Unused;
        };
        let day = window::business_day::BusinessDay {
            tz: self.scopes[shop as usize].tz,
        };
        let midnight = |d| day.midnight(d);
        let repriced = match self.costs.change(
            shop,
            sku,
            cost.effective_from,
            cost.landed(),
            h.event_time,
            &h.event_id,
            &midnight,
        ) {
            Ok(r) => r,
            Err(newer) => {
                return Applied::Superseded {
                    reason: format!(
                        "{} {}: the cost of SKU {sku} from {} recorded at {} is older than the one already counted ({newer}); not applied",
                        event.schema(),
                        h.event_id,
                        cost.effective_from,
                        h.event_time.to_rfc3339(),
                    ),
                };
            }
        };
        for r in repriced {
            let uncosted = self.catalog.measures[r.measure as usize]
                .uncosted
                .expect("only cost measures are booked");
            let delta = Decimal(r.units.0 * (r.new.0 - r.old.unwrap_or(Decimal::ZERO).0));
            for scope in self.shop_and_sku(shop, Some(sku), r.measure) {
                self.add(scope, r.hour, r.measure, delta);
                if r.old.is_none() {
                    self.add(scope, r.hour, uncosted, Decimal::ZERO - r.units);
                }
            }
        }
        Applied::Counted
    }

    /// SKUs whose units sold include some of unknown cost (see [`crate::cost`]).
    pub fn skus_without_cost(&self) -> usize {
        let shops = &self.scopes;
        self.costs.skus_without_cost(&|shop, d| {
            window::business_day::BusinessDay {
                tz: shops[shop as usize].tz,
            }
            .midnight(d)
        })
    }

    /// Counts a key once: the first fact of `key` adds its contributions, later ones nothing.
    fn apply_once(
        &mut self,
        group: u16,
        shop: u32,
        key: String,
        added: Vec<(u32, Hour, u16, Decimal)>,
    ) {
        let Some(newest_hour) = added.iter().map(|a| a.1).max() else {
            return;
        };
        let k = (group, shop, key);
        if self.once.contains_key(&k) {
            return;
        }
        for (scope, hour, m, v) in added {
            self.add(scope, hour, m, v);
        }
        self.once.insert(k, newest_hour);
    }

    /// The hour a contribution is booked to: its instant's hour, or for a measure whose time
    /// is a date, the first hour of that business day in the shop's zone.
    fn booked_hour(&self, shop: u32, c: &crate::catalog::Contribution) -> Option<Hour> {
        let t = c.time?;
        if self.catalog.measures[c.measure as usize].time_is_date {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(
                i32::try_from(t).ok()?.checked_add(EPOCH_DAYS_FROM_CE)?,
            )?;
            let day = window::business_day::BusinessDay {
                tz: self.scopes[shop as usize].tz,
            };
            return Some(day.midnight(date));
        }
        Some(hour_of(DateTime::from_timestamp_micros(t)?))
    }

    /// Records a sign of life: a record's ingest time, or a heartbeat's last successful sync
    /// (a heartbeat from a connector whose syncs fail is not one).
    fn note_freshness(&mut self, event: &Event) {
        let h = &event.header;
        let fresh = match &event.body {
            EventBody::SourceHeartbeat(b) => b.last_success,
            _ => Some(h.ingest_time),
        };
        let Some(fresh) = fresh else { return };
        let shop = self.shop_scope(event);
        let slot = self
            .freshness
            .entry((shop, h.source.clone()))
            .or_insert(fresh);
        *slot = (*slot).max(fresh);
    }

    /// Replaces the counted version of a restated fact when this one is newer; else returns
    /// the newer version that stays. Only the difference reaches the buckets.
    fn apply_restated(
        &mut self,
        group: u16,
        shop: u32,
        key: String,
        version: i64,
        event_id: &str,
        added: Vec<(u32, Hour, u16, Decimal)>,
    ) -> Result<(), String> {
        let k = (group, shop, key);
        if let Some(old) = self.replaced.get(&k) {
            if (old.version, old.event_id.as_str()) >= (version, event_id) {
                return Err(format!(
                    "event {}, version {}",
                    old.event_id,
                    shown_version(old.version)
                ));
            }
            let old = self.replaced.remove(&k).expect("just found");
            for (scope, hour, m, v) in old.added {
                self.add(scope, hour, m, Decimal::ZERO - v);
            }
        }
        for (scope, hour, m, v) in &added {
            self.add(*scope, *hour, *m, *v);
        }
        let newest_hour = added.iter().map(|a| a.1).max().unwrap_or(Hour::MIN);
        self.replaced.insert(
            k,
            Version {
                version,
                event_id: event_id.to_string(),
                newest_hour,
                added,
            },
        );
        Ok(())
    }

    /// Records a gauge report (the newest per key and hour wins); windows read the newest
    /// report at or before their end.
    fn apply_gauge(
        &mut self,
        group: u16,
        key: String,
        version: i64,
        event_id: &str,
        added: Vec<(u32, Hour, u16, Decimal)>,
    ) -> Result<(), String> {
        let mut applied = false;
        let mut newer = None;
        let mut per_scope: BTreeMap<(u32, Hour), Vec<(u16, Decimal)>> = BTreeMap::new();
        for (scope, hour, m, v) in added {
            per_scope.entry((scope, hour)).or_default().push((m, v));
        }
        for ((scope, hour), values) in per_scope {
            let series = self
                .gauges
                .entry(scope)
                .or_default()
                .entry((group, key.clone()))
                .or_default();
            if let Some(old) = series.get(&hour)
                && (old.version, old.event_id.as_str()) >= (version, event_id)
            {
                newer = Some(format!(
                    "event {}, version {}",
                    old.event_id,
                    shown_version(old.version)
                ));
                continue;
            }
            let mask = values.iter().fold(0u64, |m, (i, _)| m | (1 << i));
            series.insert(
                hour,
                Report {
                    version,
                    event_id: event_id.to_string(),
                    values,
                },
            );
            *self.dirty.entry((scope, hour)).or_default() |= mask;
            applied = true;
        }
        match newer {
            Some(newer) if !applied => Err(newer),
            _ => Ok(()),
        }
    }

    /// Late: the event's own time is behind the newest of its stream by more than its kind's
    /// allowance. Depends only on the stream's order (one partition), never on timing.
    fn lateness_check(&self, event: &Event, newest: Option<DateTime<Utc>>) -> Option<Applied> {
        let newest = newest?;
        let own = event.header.event_time;
        let (family, allowed) = self.allowance(&event.body);
        let behind = newest.signed_duration_since(own).to_std().ok()?;
        (behind > allowed).then(|| Applied::Late {
            reason: format!(
                "{} {}: event time {} is {} behind the newest {family} fact of shop {} from source {} ({}); allowed lateness for {family} is {}",
                event.schema(),
                event.header.event_id,
                own.to_rfc3339(),
                humantime::format_duration(behind),
                event.header.shop,
                event.header.source,
                newest.to_rfc3339(),
                humantime::format_duration(allowed),
            ),
        })
    }

    /// Late too: the fact is booked (to its order's date, say) before the state still held —
    /// more than the retention before its own stream's newest fact, or before what its shop
    /// has already evicted.
    fn retention_check(
        &self,
        event: &Event,
        shop: u32,
        stream: &(Topic, u32, String),
        booked: Hour,
    ) -> Option<Applied> {
        let own_cutoff = self
            .clocks
            .get(stream)
            .map_or(Hour::MIN, |t| hour_of(*t) - self.retention_hours);
        let cutoff = own_cutoff.max(self.scopes[shop as usize].kept_from);
        (booked < cutoff).then(|| Applied::Late {
            reason: format!(
                "{} {}: booked at {}, before the state kept for shop {} (from {}: the longest lateness allowance plus lookback plus the longest window)",
                event.schema(),
                event.header.event_id,
                window::hour_start(booked).to_rfc3339(),
                event.header.shop,
                window::hour_start(cutoff).to_rfc3339(),
            ),
        })
    }

    /// Adds to a bucket, once the batch is applied (see [`Engine::add_pending`]). Nothing
    /// reads buckets while a batch is applied, so deferring the additions changes no verdict.
    fn add(&mut self, scope: u32, hour: Hour, measure: u16, amount: Decimal) {
        *self.pending.entry((scope, hour, measure)).or_default() += fixed(amount);
    }

    /// Moves the batch's sums into the hour and day buckets, and marks them changed (also
    /// when they net to zero: a fact and its retraction in one batch still changed a window).
    fn add_pending(&mut self) {
        let n = self.catalog.measures.len();
        let zero = || vec![0; n].into_boxed_slice();
        let mut pending: Vec<((u32, Hour, u16), Fixed)> = self.pending.drain().collect();
        // One bucket lookup per (scope, hour), not per measure.
        pending.sort_unstable_by_key(|(k, _)| *k);
        for chunk in pending.chunk_by(|a, b| (a.0.0, a.0.1) == (b.0.0, b.0.1)) {
            let (scope, hour, _) = chunk[0].0;
            let s = &mut self.scopes[scope as usize];
            let bucket = s.hours.entry(hour).or_insert_with(zero);
            let mut mask = 0u64;
            for ((_, _, m), v) in chunk {
                // Bounded amounts keep sums far inside i128; saturating, never wrapping, if a
                // custom measure multiplies its way out.
                bucket[*m as usize] = bucket[*m as usize].saturating_add(*v);
                mask |= 1 << m;
            }
            let day = s.days.entry(hour.div_euclid(24)).or_insert_with(zero);
            for ((_, _, m), v) in chunk {
                day[*m as usize] = day[*m as usize].saturating_add(*v);
            }
            *self.dirty.entry((scope, hour)).or_default() |= mask;
        }
    }

    /// Advances the watermark at wall-clock `now`, and returns the KPI values of every window
    /// that changed (or newly closed) since the last flush, plus breach transitions.
    /// `wall` stamps the outputs' `emitted_at`.
    pub fn flush(&mut self, now: Instant, wall: DateTime<Utc>) -> Outputs {
        let watermark = self.watermarks.advance(now);
        // The open rolling window (ending after the watermark's hour) is published too, so the
        // live value moves as data arrives; it is published again when it changes.
        let frontier = watermark.map(|w| hour_of(w) + 1);
        let catalog = Arc::clone(&self.catalog);
        // (end, start, window, scope) → measures changed.
        let mut windows: BTreeMap<(Hour, Hour, usize, u32), u64> = BTreeMap::new();
        // Of those, the ones published only because they became final: unchanged, so only
        // the rules that waited for them judge them.
        let mut finals: std::collections::BTreeSet<(Hour, Hour, usize, u32)> = Default::default();
        if let Some(h) = self.dirty.keys().map(|(_, h)| *h).min() {
            self.first_unpublished = Some(self.first_unpublished.map_or(h, |f| f.min(h)));
        }
        let levels = self.level_windows();
        self.touch_crosschecks();
        for ((scope, hour), mask) in std::mem::take(&mut self.dirty) {
            let s = &self.scopes[scope as usize];
            for &wi in &levels[level_index(s.level)] {
                let def = &catalog.windows[wi];
                if let Some((start, end)) = window::calendar_window(def, s.tz, hour) {
                    *windows.entry((end, start, wi, scope)).or_default() |= mask;
                    continue;
                }
                let Some(f) = frontier else { continue };
                let newest_end = f - def.lag_hours;
                for end in (hour + 1..=hour + def.hours).take_while(|e| *e <= newest_end) {
                    *windows
                        .entry((end, end - def.hours, wi, scope))
                        .or_default() |= mask;
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
            for frontier_end in from..=f {
                for (id, s) in self.scopes.iter().enumerate() {
                    for &wi in &levels[level_index(s.level)] {
                        let def = &catalog.windows[wi];
                        // A calendar window the watermark has just passed is judged once
                        // more, whole: trends saw only its complete hours while it ran.
                        if let Some((start, end)) =
                            window::calendar_window(def, s.tz, frontier_end - 2)
                        {
                            if end == frontier_end - 1 {
                                // Only the KPIs whose measures have data in it.
                                let mask = s.hours.range(start..end).fold(0u64, |m, (_, b)| {
                                    b.iter()
                                        .enumerate()
                                        .filter(|(_, v)| **v != 0)
                                        .fold(m, |m, (i, _)| m | (1 << i))
                                });
                                if mask != 0 {
                                    *windows.entry((end, start, wi, id as u32)).or_default() |=
                                        mask;
                                }
                            }
                            continue;
                        }
                        let end = frontier_end - def.lag_hours;
                        let start = end - def.hours;
                        // Also publish the first window after data left, so it reads zero.
                        if s.hours.range(start - 1..end).next().is_some() {
                            windows.insert((end, start, wi, id as u32), u64::MAX);
                        }
                    }
                }
                self.windows_turning_final(frontier_end, &mut windows, &mut finals);
            }
            self.frontier = Some(self.frontier.map_or(f, |old| old.max(f)));
        }

        let mut out = Outputs::default();
        let watermark_ts = watermark.unwrap_or(DateTime::<Utc>::MIN_UTC);
        for ((end, start, wi, scope), mask) in windows {
            let only_final = finals.contains(&(end, start, wi, scope));
            let level = self.scopes[scope as usize].level;
            let kpis: Vec<usize> = catalog
                .kpis
                .iter()
                .enumerate()
                .filter(|(_, k)| {
                    k.config.group_by == level && k.windows.contains(&wi) && k.mask & mask != 0
                })
                .map(|(i, _)| i)
                .collect();
            if kpis.is_empty() {
                continue;
            }
            let sums = self.sum(scope, start, end);
            let window_days = Decimal(
                rust_decimal::Decimal::new(end - start, 0) / rust_decimal::Decimal::from(24),
            );
            let def = &catalog.windows[wi];
            for ki in kpis {
                let kpi = &catalog.kpis[ki];
                // Normalised so "2" is not published as "2.000000000" (the evaluation scale).
                let numerator = Decimal(kpi.numerator.eval(&sums, window_days).0.normalize());
                let denominator = kpi
                    .denominator
                    .as_ref()
                    .map(|d| Decimal(d.eval(&sums, window_days).0.normalize()));
                // Units of unknown cost: a profit without them would be wrong, so none.
                let uncosted = |sums: &[Decimal]| {
                    kpi.gate != 0
                        && sums
                            .iter()
                            .enumerate()
                            .any(|(i, v)| kpi.gate & (1 << i) != 0 && *v != Decimal::ZERO)
                };
                let value = match denominator {
                    _ if uncosted(&sums) => None,
                    Some(d) if d == Decimal::ZERO => None,
                    Some(d) => Some(numerator.to_f64() / d.to_f64()),
                    None => Some(numerator.to_f64()),
                };
                self.revision += 1;
                let s = &self.scopes[scope as usize];
                let update = KpiUpdate {
                    kpi: kpi.id.clone(),
                    kpi_version: kpi.config.version,
                    unit: kpi.config.unit.clone(),
                    direction: kpi.config.direction,
                    owner: kpi.config.owner.clone(),
                    priority: kpi.config.priority,
                    scope: s.scope.clone(),
                    window: window::window_ref(def, s.tz, start, end, &kpi.basis),
                    numerator,
                    denominator,
                    value,
                    currency: (kpi.config.unit == "money").then(|| self.currency.clone()),
                    revision: self.revision,
                    watermark: watermark_ts,
                    emitted_at: wall,
                    settling: false,
                    final_at: None,
                };
                let final_at = update
                    .window
                    .end
                    .checked_add_signed(self.settle[ki])
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                let update = KpiUpdate {
                    settling: watermark.is_none_or(|w| w < final_at),
                    final_at: Some(final_at),
                    ..update
                };
                // Trends compare like with like: a window still in progress only over its
                // complete hours (up to the watermark's hour), against as many hours from the
                // start of the reference window.
                let complete = watermark.map_or(start, |w| hour_of(w).clamp(start, end));
                let in_progress = complete < end;
                let value_over = |from: Hour, to: Hour| -> Option<f64> {
                    if to <= from {
                        return None;
                    }
                    let sums = self.sum(scope, from, to);
                    let days = Decimal(
                        rust_decimal::Decimal::new(to - from, 0) / rust_decimal::Decimal::from(24),
                    );
                    let n = kpi.numerator.eval(&sums, days);
                    match kpi.denominator.as_ref().map(|d| d.eval(&sums, days)) {
                        _ if uncosted(&sums) => None,
                        Some(d) if d == Decimal::ZERO => None,
                        Some(d) => Some(n.to_f64() / d.to_f64()),
                        None => Some(n.to_f64()),
                    }
                };
                let references: Vec<_> = self
                    .rules
                    .references_needed(&update)
                    .into_iter()
                    .map(|compare| {
                        let (ps, pe) = window::earlier(def, s.tz, start, end, compare);
                        let input = match (compare, in_progress) {
                            (Compare::Baseline, _) => TrendInput {
                                in_progress,
                                current: update.value,
                                reference: None,
                            },
                            (_, false) => TrendInput {
                                in_progress,
                                current: update.value,
                                reference: value_over(ps, pe),
                            },
                            (_, true) => TrendInput {
                                in_progress,
                                current: value_over(start, complete),
                                reference: value_over(ps, (ps + (complete - start)).min(pe)),
                            },
                        };
                        (compare, input)
                    })
                    .collect();
                out.breaches.extend(self.rules.evaluate(
                    scope,
                    &update,
                    &references,
                    wall,
                    only_final,
                ));
                out.updates.push(update);
            }
        }
        if self.rules.watches_freshness() {
            let scopes = &self.scopes;
            let lookup = |id: u32| scopes[id as usize].scope.clone();
            out.breaches.extend(
                self.rules
                    .evaluate_staleness(&self.freshness, &lookup, now, wall),
            );
        }
        self.publish_crosschecks(watermark, wall, &mut out);
        self.evict();
        out
    }

    /// The windows of waited-on (KPI, window) pairs that become final as the frontier reaches
    /// `frontier_end` (the watermark in its hour before it): those ending `settle` before that
    /// hour. Only windows with data; published with their KPI's measures as changed.
    fn windows_turning_final(
        &self,
        frontier_end: Hour,
        windows: &mut BTreeMap<(Hour, Hour, usize, u32), u64>,
        finals: &mut std::collections::BTreeSet<(Hour, Hour, usize, u32)>,
    ) {
        for &(ki, wi) in &self.finalize {
            let kpi = &self.catalog.kpis[ki];
            let def = &self.catalog.windows[wi];
            // Whole hours, rounded up: the watermark is then past `final_at`.
            let delay = (self.settle[ki].num_seconds() + 3599).div_euclid(3600);
            let end = frontier_end - 1 - delay;
            for (id, s) in self.scopes.iter().enumerate() {
                if s.level != kpi.config.group_by {
                    continue;
                }
                let (start, end) = match window::calendar_window(def, s.tz, end - 1) {
                    Some((start, e)) if e == end => (start, end),
                    Some(_) => continue,
                    None => (end - def.hours, end),
                };
                if s.hours.range(start..end).next().is_some() {
                    let key = (end, start, wi, id as u32);
                    match windows.get_mut(&key) {
                        Some(mask) => *mask |= kpi.mask,
                        None => {
                            windows.insert(key, kpi.mask);
                            finals.insert(key);
                        }
                    }
                }
            }
        }
    }

    /// Per scope level (shop, SKU, campaign), the windows its KPIs publish.
    fn level_windows(&self) -> [Vec<usize>; 3] {
        let mut out: [Vec<usize>; 3] = Default::default();
        for k in &self.catalog.kpis {
            let level = &mut out[level_index(k.config.group_by)];
            for w in &k.windows {
                if !level.contains(w) {
                    level.push(*w);
                }
            }
        }
        out
    }

    /// Window sums of every measure over `[start, end)`: edge hours plus whole UTC days, and
    /// gauges read at `end`.
    fn sum(&self, scope: u32, start: Hour, end: Hour) -> Vec<Decimal> {
        let n = self.catalog.measures.len();
        let mut fixed_sums: Vec<Fixed> = vec![0; n];
        let s = &self.scopes[scope as usize];
        let mut add = |bucket: &Sums| {
            for (acc, v) in fixed_sums.iter_mut().zip(bucket.iter()) {
                *acc += *v;
            }
        };
        let first_day = (start + 23).div_euclid(24);
        let last_day = end.div_euclid(24);
        if first_day >= last_day {
            s.hours.range(start..end).for_each(|(_, b)| add(b));
        } else {
            s.hours
                .range(start..first_day * 24)
                .for_each(|(_, b)| add(b));
            s.days.range(first_day..last_day).for_each(|(_, b)| add(b));
            s.hours.range(last_day * 24..end).for_each(|(_, b)| add(b));
        }
        let mut sums: Vec<Decimal> = fixed_sums.into_iter().map(decimal).collect();
        if let Some(series) = self.gauges.get(&scope) {
            for reports in series.values() {
                if let Some((_, r)) = reports.range(..end).next_back() {
                    for (m, v) in &r.values {
                        sums[*m as usize] += *v;
                    }
                }
            }
        }
        sums
    }

    /// Drops state no fact within its allowed lateness can reach any more, per shop: each
    /// shop keeps `retention_hours` before its own newest fact. Runs once a shop's cutoff has
    /// moved a day, so the sweep over remembered ids stays rare.
    fn evict(&mut self) {
        let mut cutoffs: HashMap<u32, Hour> = HashMap::new();
        for (id, s) in self.scopes.iter().enumerate() {
            if let Some(newest) = s.newest {
                let cutoff = hour_of(newest) - self.retention_hours;
                if cutoff >= s.kept_from.saturating_add(24) {
                    cutoffs.insert(id as u32, cutoff);
                }
            }
        }
        if cutoffs.is_empty() {
            return;
        }
        for (&shop, &cutoff) in &cutoffs {
            // The first business day whose midnight is still kept.
            let day = window::business_day::BusinessDay {
                tz: self.scopes[shop as usize].tz,
            };
            let mut first = window::hour_start(cutoff)
                .with_timezone(&day.tz)
                .date_naive();
            if day.midnight(first) < cutoff {
                first = first.succ_opt().unwrap_or(first);
            }
            self.stock.evict(shop, first);
            self.costs.evict(shop, cutoff);
        }
        for s in &mut self.scopes {
            let Some(&cutoff) = cutoffs.get(&s.shop) else {
                continue;
            };
            s.kept_from = cutoff;
            s.hours = s.hours.split_off(&cutoff);
            s.days = s.days.split_off(&(cutoff + 23).div_euclid(24));
        }
        let kept = |shop: &u32, hour: &Hour| cutoffs.get(shop).is_none_or(|c| hour >= c);
        self.seen.retain(|_, (shop, h)| kept(shop, h));
        self.replaced
            .retain(|(_, shop, _), v| kept(shop, &v.newest_hour));
        self.once.retain(|(_, shop, _), h| kept(shop, h));
        self.held_out.retain(|(shop, _), (h, _)| kept(shop, h));
        let shop_of: Vec<u32> = self.scopes.iter().map(|s| s.shop).collect();
        for (scope, series) in self.gauges.iter_mut() {
            let Some(&cutoff) = cutoffs.get(&shop_of[*scope as usize]) else {
                continue;
            };
            for reports in series.values_mut() {
                // Keep the newest report before the cutoff: windows still read it.
                let keep_from = reports.range(..cutoff).next_back().map(|(h, _)| *h);
                if let Some(k) = keep_from {
                    *reports = reports.split_off(&k);
                }
            }
        }
    }
}

/// The lateness family of an event schema and its allowance.
fn allowance_of(lateness: &Lateness, schema: &str) -> (&'static str, Duration) {
    match EventBody::topic_of(schema) {
        Some(Topic::Orders) if schema == "order.defect" => ("defects", lateness.defects),
        Some(Topic::Ads) => ("ads", lateness.ads),
        Some(Topic::Logistics | Topic::Health) => ("logistics", lateness.logistics),
        _ => ("orders", lateness.orders),
    }
}

/// Per KPI, how long after a window's end the facts it counts may still arrive: per measure
/// read, the longest allowance of its event kinds, plus `lookback` when it books facts at
/// another time than their own (a refund on its order's date: up to `lookback` before it).
/// A measure booked on a date (an ad row's report day) is timed at that day's start.
fn settle_delays(catalog: &Catalog, lateness: &Lateness) -> Vec<chrono::Duration> {
    let delay = |m: &crate::catalog::Measure| -> Duration {
        let own_time = m.config.time == "event_time" || m.time_is_date;
        let allowance = EventBody::SCHEMAS
            .iter()
            .zip(&m.schemas)
            .filter(|(_, read)| **read)
            .map(|((name, _), _)| allowance_of(lateness, name).1)
            .max()
            .unwrap_or_default();
        if own_time {
            allowance
        } else {
            allowance + lateness.lookback
        }
    };
    catalog
        .kpis
        .iter()
        .map(|k| {
            let longest = catalog
                .measures
                .iter()
                .enumerate()
                .filter(|(i, _)| k.mask & (1 << i) != 0)
                // An uncosted measure reads no events itself: its cost measure's say.
                .map(|(_, m)| {
                    match catalog.measures.iter().find(|c| {
                        c.uncosted
                            .is_some_and(|u| catalog.measures[u as usize].name == m.name)
                    }) {
                        Some(cost) => delay(cost),
                        None => delay(m),
                    }
                })
                .max()
                .unwrap_or_default();
            chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::MAX)
        })
        .collect()
}

/// The money of an event, with its field path.
fn money_fields(body: &EventBody) -> Vec<(&'static str, &Money)> {
    match body {
        EventBody::OrderPlaced(o) => vec![("payload.total", &o.total)],
        EventBody::OrderPaid(o) => vec![("payload.amount", &o.amount)],
        EventBody::OrderRefunded(o) => vec![("payload.amount", &o.amount)],
        EventBody::OrderFee(o) => vec![("payload.amount", &o.amount)],
        EventBody::CostChanged(c) => {
            let mut out = vec![("payload.purchase", &c.purchase)];
            out.extend(c.freight.as_ref().map(|m| ("payload.freight", m)));
            out.extend(c.duties.as_ref().map(|m| ("payload.duties", m)));
            out
        }
        EventBody::AdPerformance(a) => vec![
            ("payload.spend", &a.spend),
            ("payload.attributed_sales", &a.attributed_sales),
        ],
        _ => vec![],
    }
}

fn money_fields_mut(body: &mut EventBody) -> Vec<(&'static str, &mut Money)> {
    match body {
        EventBody::OrderPlaced(o) => vec![("payload.total", &mut o.total)],
        EventBody::OrderPaid(o) => vec![("payload.amount", &mut o.amount)],
        EventBody::OrderRefunded(o) => vec![("payload.amount", &mut o.amount)],
        EventBody::OrderFee(o) => vec![("payload.amount", &mut o.amount)],
        EventBody::CostChanged(c) => {
            let mut out = vec![("payload.purchase", &mut c.purchase)];
            out.extend(c.freight.as_mut().map(|m| ("payload.freight", m)));
            out.extend(c.duties.as_mut().map(|m| ("payload.duties", m)));
            out
        }
        EventBody::AdPerformance(a) => vec![
            ("payload.spend", &mut a.spend),
            ("payload.attributed_sales", &mut a.attributed_sales),
        ],
        _ => vec![],
    }
}

/// The order an order fact is about.
fn order_id(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::OrderPlaced(o) => Some(&o.order_id),
        EventBody::OrderPaid(o) => Some(&o.order_id),
        EventBody::OrderShipped(o) => Some(&o.order_id),
        EventBody::OrderDelivered(o) => Some(&o.order_id),
        EventBody::OrderCancelled(o) => Some(&o.order_id),
        EventBody::OrderReturned(o) => Some(&o.order_id),
        EventBody::OrderRefunded(o) => Some(&o.order_id),
        EventBody::OrderDefect(o) => Some(&o.order_id),
        EventBody::OrderFee(o) => o.order_id.as_deref(),
        _ => None,
    }
}

/// What a SKU-day of measure `m` adds (only `daily` measures are asked).
fn daily_kind(catalog: &Catalog, m: u16) -> DailyKind {
    catalog.measures[m as usize]
        .daily
        .unwrap_or(DailyKind::Level)
}

/// Days from 0001-01-01 to 1970-01-01 (Arrow dates count from the epoch, chrono from CE).
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A restatement version (microseconds) as a time.
fn shown_version(v: i64) -> String {
    DateTime::from_timestamp_micros(v).map_or_else(|| v.to_string(), |t| t.to_rfc3339())
}

fn drives_watermark(topic: Topic) -> bool {
    // Ad rows are dated by their report day and always arrive a day or more after it, and
    // heartbeats carry wall-clock time: letting either drive the watermark would hold windows
    // back (ads) or push them ahead of the data (heartbeats during a replay).
    !matches!(topic, Topic::Ads | Topic::Health)
}

fn level_index(g: GroupBy) -> usize {
    match g {
        GroupBy::Shop => 0,
        GroupBy::Sku => 1,
        GroupBy::Campaign => 2,
    }
}

#[path = "engine_crosscheck.rs"]
mod crosscheck;

#[path = "engine_state.rs"]
mod state;

#[cfg(test)]
#[path = "engine_proptests.rs"]
mod proptests;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
