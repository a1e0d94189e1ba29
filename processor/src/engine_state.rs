//! The engine's state as bytes: what a checkpoint holds, and how it comes back.
//!
//! Sums are stored per measure *name*, so a catalog that gained or lost measures since the
//! checkpoint still restores: known measures keep their sums, new ones start at zero, removed
//! ones are dropped. Wall-clock instants are not stored; restored partitions count as just
//! seen.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{Decimal, Scope, Topic};
use serde::{Deserialize, Serialize};

use super::{Engine, IdHash, Report, ScopeState, Version};
use crate::ProcessorError;
use crate::catalog::GroupBy;
use crate::fixed::Fixed;
use crate::rule::RuleSetState;
use crate::watermark::WatermarkState;
use crate::window::Hour;

/// Bumped when the layout below changes incompatibly. 2: per-stream clocks and per-shop
/// retention (lateness judged by each fact's own time). 3: rule state keeps the breaches
/// opened by corrections of closed calendar windows; daily stock levels. 4: Amazon's
/// account-health reference values and the cross-check rules' state. 5: remembered event ids
/// as their 128-bit hashes ([`super::id_hash`]). 6: landed costs per SKU and the units they
/// price ([`crate::cost`]).
const FORMAT: u32 = 6;

/// A decimal as rust_decimal's 16-byte form: exact and compact.
type Bytes16 = [u8; 16];

fn pack(d: Decimal) -> Bytes16 {
    d.0.serialize()
}

fn unpack(b: Bytes16) -> Decimal {
    Decimal(rust_decimal::Decimal::deserialize(b))
}

/// [`Scope`] without its wire attributes: postcard is not self-describing, so fields that
/// JSON skips when absent must always be written here.
#[derive(Debug, Serialize, Deserialize)]
struct ScopeKey {
    shop: String,
    channel: kpiflow_schemas::Channel,
    marketplace: String,
    sku: Option<String>,
    campaign: Option<String>,
}

impl From<&Scope> for ScopeKey {
    fn from(s: &Scope) -> Self {
        ScopeKey {
            shop: s.shop.clone(),
            channel: s.channel,
            marketplace: s.marketplace.clone(),
            sku: s.sku.clone(),
            campaign: s.campaign.clone(),
        }
    }
}

impl From<ScopeKey> for Scope {
    fn from(s: ScopeKey) -> Self {
        Scope {
            shop: s.shop,
            channel: s.channel,
            marketplace: s.marketplace,
            sku: s.sku,
            campaign: s.campaign,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ScopeSnapshot {
    scope: ScopeKey,
    level: GroupBy,
    shop: u32,
    newest: Option<DateTime<Utc>>,
    kept_from: Hour,
    /// (hour, [(measure slot in `EngineState::measures`, sum)]), zero sums left out.
    hours: Vec<(Hour, Vec<(u16, Bytes16)>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VersionSnapshot {
    group: u16,
    shop: u32,
    key: String,
    version: i64,
    event_id: String,
    newest_hour: Hour,
    added: Vec<(u32, Hour, u16, Bytes16)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReportSnapshot {
    scope: u32,
    group: u16,
    key: String,
    hour: Hour,
    version: i64,
    event_id: String,
    values: Vec<(u16, Bytes16)>,
}

/// Everything the engine knows that its input cannot cheaply give back.
#[derive(Debug, Serialize, Deserialize)]
struct EngineState {
    format: u32,
    /// Measure names, in the slot order used below.
    measures: Vec<String>,
    /// Replace groups, as `measure names joined by ","`, in the index order used below.
    groups: Vec<String>,
    scopes: Vec<ScopeSnapshot>,
    seen: Vec<(IdHash, (u32, Hour))>,
    /// (topic suffix, shop scope, source) → newest own time.
    clocks: Vec<((String, u32, String), DateTime<Utc>)>,
    replaced: Vec<VersionSnapshot>,
    /// (group, shop scope, key) → newest hour, of keys counted once.
    once: Vec<((u16, u32, String), Hour)>,
    gauges: Vec<ReportSnapshot>,
    /// Daily stock levels (measure and group numbers as in `measures` and `groups`).
    stock: crate::stock::StockDays,
    /// Landed costs per SKU and the units they price (measure numbers as in `measures`).
    costs: crate::cost::Costs,
    /// (shop scope, order id) → (hour, why) of orders refused for their currency.
    held_out: Vec<((u32, String), (Hour, String))>,
    freshness: Vec<((u32, String), DateTime<Utc>)>,
    frontier: Option<Hour>,
    first_unpublished: Option<Hour>,
    revision: u64,
    watermarks: WatermarkState,
    rules: RuleSetState,
    /// Reference values and cross-check rows (see `engine_crosscheck.rs`).
    crosschecks: super::crosscheck::CrossChecks,
}

/// Hash maps iterate in no fixed order; sorting keeps snapshots of equal states equal.
fn sorted<K: Ord, V>(items: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = items.collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Engine {
    /// The engine's state as bytes (postcard). Call after [`Engine::flush`]: changes not yet
    /// published are part of the state but their outputs are not.
    pub fn snapshot(&self) -> Vec<u8> {
        let measures = self
            .catalog
            .measures
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let groups = self
            .catalog
            .replace_groups
            .iter()
            .map(|g| self.group_name(g))
            .collect();
        let scopes = self
            .scopes
            .iter()
            .map(|s| ScopeSnapshot {
                scope: ScopeKey::from(&s.scope),
                level: s.level,
                shop: s.shop,
                newest: s.newest,
                kept_from: s.kept_from,
                hours: s
                    .hours
                    .iter()
                    .map(|(h, sums)| {
                        let values = sums
                            .iter()
                            .enumerate()
                            .filter(|(_, v)| **v != 0)
                            .map(|(m, v)| (m as u16, pack(crate::fixed::decimal(*v))))
                            .collect();
                        (*h, values)
                    })
                    .collect(),
            })
            .collect();
        let mut replaced: Vec<VersionSnapshot> = self
            .replaced
            .iter()
            .map(|((group, shop, key), v)| VersionSnapshot {
                group: *group,
                shop: *shop,
                key: key.clone(),
                version: v.version,
                event_id: v.event_id.clone(),
                newest_hour: v.newest_hour,
                added: v
                    .added
                    .iter()
                    .map(|(s, h, m, d)| (*s, *h, *m, pack(*d)))
                    .collect(),
            })
            .collect();
        replaced.sort_by(|a, b| (a.group, a.shop, &a.key).cmp(&(b.group, b.shop, &b.key)));
        let mut gauges = Vec::new();
        for (scope, series) in &self.gauges {
            for ((group, key), reports) in series {
                for (hour, r) in reports {
                    gauges.push(ReportSnapshot {
                        scope: *scope,
                        group: *group,
                        key: key.clone(),
                        hour: *hour,
                        version: r.version,
                        event_id: r.event_id.clone(),
                        values: r.values.iter().map(|(m, d)| (*m, pack(*d))).collect(),
                    });
                }
            }
        }
        gauges.sort_by(|a, b| {
            (a.scope, a.group, &a.key, a.hour).cmp(&(b.scope, b.group, &b.key, b.hour))
        });
        let state =
            EngineState {
                format: FORMAT,
                measures,
                groups,
                scopes,
                seen: sorted(self.seen.iter().map(|(k, h)| (*k, *h))),
                clocks: sorted(self.clocks.iter().map(|((t, shop, src), at)| {
                    ((t.suffix().to_string(), *shop, src.clone()), *at)
                })),
                replaced,
                once: sorted(self.once.iter().map(|(k, h)| (k.clone(), *h))),
                gauges,
                stock: self.stock.clone(),
                costs: self.costs.clone(),
                held_out: sorted(self.held_out.iter().map(|(k, v)| (k.clone(), v.clone()))),
                freshness: sorted(self.freshness.iter().map(|(k, t)| (k.clone(), *t))),
                frontier: self.frontier,
                first_unpublished: self.first_unpublished,
                revision: self.revision,
                watermarks: self.watermarks.state(),
                rules: self.rules.state(),
                crosschecks: self.crosschecks.clone(),
            };
        // Plain data into a Vec: encoding cannot fail.
        postcard::to_stdvec(&state).expect("engine state encodes")
    }

    fn group_name(&self, g: &crate::catalog::ReplaceGroup) -> String {
        g.measures
            .iter()
            .map(|m| self.catalog.measures[*m].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Restores a [`Engine::snapshot`] into this engine, which must be new (built for the
    /// current configuration); `now` is the wall-clock instant of the restore.
    pub fn restore(&mut self, bytes: &[u8], now: Instant) -> Result<(), ProcessorError> {
        // The format comes first, so an older layout is named rather than misread.
        if let Ok((format, _)) = postcard::take_from_bytes::<u32>(bytes)
            && format != FORMAT
            && format < 16
        {
            return Err(ProcessorError::Checkpoint {
                problem: format!(
                    "engine state format {format} is not the supported {FORMAT} (written by an older kpiflow); delete the checkpoints to rebuild the state from the topics"
                ),
            });
        }
        let state: EngineState =
            postcard::from_bytes(bytes).map_err(|e| ProcessorError::Checkpoint {
                problem: format!("cannot decode the engine state: {e}"),
            })?;
        let by_name: HashMap<&str, usize> = self
            .catalog
            .measures
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        // Old measure slot → new slot (None: the measure no longer exists).
        let slot: Vec<Option<u16>> = state
            .measures
            .iter()
            .map(|n| by_name.get(n.as_str()).map(|i| *i as u16))
            .collect();
        let map = |m: u16| slot.get(m as usize).copied().flatten();
        let group_names: Vec<String> = self
            .catalog
            .replace_groups
            .iter()
            .map(|g| self.group_name(g))
            .collect();
        let group: Vec<Option<u16>> = state
            .groups
            .iter()
            .map(|n| group_names.iter().position(|g| g == n).map(|i| i as u16))
            .collect();
        let map_group = |g: u16| group.get(g as usize).copied().flatten();
        let n = self.catalog.measures.len();
        self.scopes.clear();
        self.scope_ids.clear();
        for s in state.scopes {
            let scope = Scope::from(s.scope);
            let tz = self
                .time_zones
                .get(&scope.marketplace)
                .copied()
                .unwrap_or(self.default_tz);
            let mut hours: BTreeMap<Hour, Box<[Fixed]>> = BTreeMap::new();
            let mut days: BTreeMap<i64, Box<[Fixed]>> = BTreeMap::new();
            for (h, values) in s.hours {
                let bucket = hours
                    .entry(h)
                    .or_insert_with(|| vec![0; n].into_boxed_slice());
                let day = days
                    .entry(h.div_euclid(24))
                    .or_insert_with(|| vec![0; n].into_boxed_slice());
                for (m, v) in values {
                    if let Some(m) = map(m) {
                        let v = crate::fixed::fixed(unpack(v));
                        bucket[m as usize] += v;
                        day[m as usize] += v;
                    }
                }
            }
            self.scope_ids
                .insert(scope.clone(), self.scopes.len() as u32);
            self.scopes.push(ScopeState {
                scope,
                level: s.level,
                shop: s.shop,
                newest: s.newest,
                kept_from: s.kept_from,
                tz,
                hours,
                days,
            });
        }
        self.seen = state.seen.into_iter().collect();
        self.clocks = state
            .clocks
            .into_iter()
            .filter_map(|((suffix, shop, source), at)| {
                let topic = Topic::ALL.into_iter().find(|t| t.suffix() == suffix)?;
                Some(((topic, shop, source), at))
            })
            .collect();
        self.replaced = state
            .replaced
            .into_iter()
            .filter_map(|v| {
                let g = map_group(v.group)?;
                let added = v
                    .added
                    .into_iter()
                    .filter_map(|(s, h, m, d)| Some((s, h, map(m)?, unpack(d))))
                    .collect();
                Some((
                    (g, v.shop, v.key),
                    Version {
                        version: v.version,
                        event_id: v.event_id,
                        newest_hour: v.newest_hour,
                        added,
                    },
                ))
            })
            .collect();
        self.once = state
            .once
            .into_iter()
            .filter_map(|((g, shop, key), h)| Some(((map_group(g)?, shop, key), h)))
            .collect();
        self.gauges.clear();
        for r in state.gauges {
            let Some(g) = map_group(r.group) else {
                continue;
            };
            let values = r
                .values
                .into_iter()
                .filter_map(|(m, d)| Some((map(m)?, unpack(d))))
                .collect();
            self.gauges
                .entry(r.scope)
                .or_default()
                .entry((g, r.key))
                .or_default()
                .insert(
                    r.hour,
                    Report {
                        version: r.version,
                        event_id: r.event_id,
                        values,
                    },
                );
        }
        self.stock = state.stock.remap(&map_group, &map);
        self.costs = state.costs.remap(&map);
        self.held_out = state.held_out.into_iter().collect();
        self.freshness = state.freshness.into_iter().collect();
        self.frontier = state.frontier;
        self.first_unpublished = state.first_unpublished;
        self.revision = self.revision.max(state.revision);
        self.watermarks.restore(state.watermarks, now);
        self.rules.restore(state.rules);
        self.crosschecks = state.crosschecks;
        self.dirty.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessorConfig;
    use crate::engine::{Outputs, PartitionId};
    use kpiflow_ingest::connectors::simulator::{SimulatorConfig, generate};

    #[test]
    fn a_restored_engine_continues_exactly_like_the_original() {
        let cfg = ProcessorConfig::default();
        let sim = SimulatorConfig {
            shops: 3,
            days: 3,
            orders_per_shop_per_day: 40,
            ..SimulatorConfig::default()
        };
        let events = generate(&sim, "2026-11-01T07:00:00Z".parse().unwrap());
        let (first, rest) = events.split_at(events.len() / 2);
        let now = Instant::now();
        let apply = |e: &mut Engine, evs: &[kpiflow_schemas::Event]| -> Outputs {
            let batch: Vec<_> = evs
                .iter()
                .map(|ev| (ev, PartitionId::zero_of(ev)))
                .collect();
            e.apply_batch(&batch, now);
            e.flush(now, chrono::Utc::now())
        };
        let mut original = Engine::new(&cfg, 0);
        apply(&mut original, first);
        let bytes = original.snapshot();
        let mut restored = Engine::new(&cfg, 0);
        restored.restore(&bytes, now).unwrap();
        assert_eq!(restored.snapshot(), bytes, "a restore loses nothing");
        let a = apply(&mut original, rest);
        let b = apply(&mut restored, rest);
        let strip = |o: Outputs| -> Vec<_> {
            o.updates
                .into_iter()
                .map(|u| (u.key(), u.numerator, u.denominator, u.revision))
                .collect()
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn a_checkpoint_of_an_unknown_format_is_refused_naming_it() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let err = e
            .restore(&postcard::to_allocvec(&2u32).unwrap(), Instant::now())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("engine state format 2 is not the supported 6"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut e = Engine::new(&ProcessorConfig::default(), 0);
        let err = e.restore(b"not a checkpoint", Instant::now()).unwrap_err();
        assert!(
            err.to_string().contains("cannot decode the engine state"),
            "{err}"
        );
    }
}
