//! The golden scenario format (`processor/tests/scenarios/*.scenario`, described in that
//! folder's README): parsing a file into configuration, steps and expectations, and checking
//! what a run published against them. Shared by the in-process runs (`scenarios.rs`) and the
//! run through the `kpiflow` binary over a real broker (`tests/e2e/scenarios.rs`), so both
//! read the same expectations the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{Decimal, Event, KpiUpdate};
use serde_json::{Map, Value, json};

/// Header fields of an `event` line; everything else goes into the payload.
const HEADER: &[&str] = &[
    "id",
    "shop",
    "channel",
    "marketplace",
    "sku",
    "at",
    "source",
    "tz",
    "ingest",
];
const MONEY: &[&str] = &[
    "total",
    "amount",
    "spend",
    "attributed_sales",
    "purchase",
    "freight",
    "duties",
];
const INTEGERS: &[&str] = &[
    "units",
    "impressions",
    "clicks",
    "attributed_orders",
    "sellable",
    "inbound",
    "reserved",
    "unfulfillable",
    "rating",
    "records_published",
    "errors",
    "consecutive_failures",
    "numerator",
    "denominator",
];
const BOOLS: &[&str] = &["tracking_valid", "seller_fault"];

/// The identity of a published row: KPI, scope, window name and start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) kpi: String,
    pub(crate) window: String,
    pub(crate) start: DateTime<Utc>,
    pub(crate) shop: String,
    pub(crate) channel: String,
    pub(crate) marketplace: String,
    pub(crate) sku: Option<String>,
    pub(crate) campaign: Option<String>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} shop={} channel={} marketplace={}",
            self.kpi,
            self.window,
            self.start.format("%Y-%m-%dT%H:%M:%SZ"),
            self.shop,
            self.channel,
            self.marketplace
        )?;
        if let Some(s) = &self.sku {
            write!(f, " sku={s}")?;
        }
        if let Some(c) = &self.campaign {
            write!(f, " campaign={c}")?;
        }
        Ok(())
    }
}

impl Key {
    pub(crate) fn of(u: &KpiUpdate) -> Key {
        Key {
            kpi: u.kpi.clone(),
            window: u.window.name.clone(),
            start: u.window.start,
            shop: u.scope.shop.clone(),
            channel: u.scope.channel.to_string(),
            marketplace: u.scope.marketplace.clone(),
            sku: u.scope.sku.clone(),
            campaign: u.scope.campaign.clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Step {
    Event(Box<Event>),
    Flush(Duration),
    /// Flush, then checkpoint the engine (its state and the input read so far).
    Checkpoint,
    /// The processor dies: a new one restores the last checkpoint and reads again every
    /// event after it (Kafka redelivers what was not committed).
    Crash,
}

#[derive(Debug)]
pub(crate) struct Expect {
    pub(crate) line: usize,
    pub(crate) key: Key,
    /// `None`: the row must never be published.
    pub(crate) value: Option<(Decimal, Option<Decimal>)>,
    /// `withheld`: the row is published without a value although its denominator is not
    /// zero (a profit with units of unknown cost).
    pub(crate) withheld: bool,
    /// `settling` or `final`: what the row's `settling` must say (unchecked when absent).
    pub(crate) settling: Option<bool>,
}

#[derive(Debug, Default)]
pub(crate) struct Scenario {
    pub(crate) path: PathBuf,
    pub(crate) config: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) expects: Vec<Expect>,
    /// (kpi, window): every published row of these must have an `expect` line.
    pub(crate) exhaustive: Vec<(String, String)>,
    /// event id → dead-letter kind.
    pub(crate) dead: BTreeMap<String, String>,
    /// (state, rule, window start), in order.
    pub(crate) breaches: Vec<(String, String, DateTime<Utc>)>,
    /// Why the engine does not meet this scenario yet (an open rule of an issue): the
    /// scenario must then fail, and passing is reported so the line gets removed.
    pub(crate) pending: Option<String>,
}

fn fields(tokens: &[&str], line: usize) -> Result<Vec<(String, String)>, String> {
    tokens
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("line {line}: expected key=value, got {t:?}"))
        })
        .collect()
}

fn time(s: &str, line: usize) -> Result<DateTime<Utc>, String> {
    s.parse()
        .map_err(|e| format!("line {line}: {s:?} is not an RFC 3339 UTC time: {e}"))
}

fn decimal(s: &str, line: usize) -> Result<Decimal, String> {
    Decimal::parse(s).ok_or_else(|| format!("line {line}: {s:?} is not a decimal"))
}

fn payload_value(key: &str, v: &str, line: usize) -> Result<Value, String> {
    if v == "null" {
        return Ok(Value::Null);
    }
    if MONEY.contains(&key) {
        let (amount, currency) = v.split_once('@').unwrap_or((v, "USD"));
        return Ok(json!({ "amount": amount, "currency": currency }));
    }
    if INTEGERS.contains(&key) {
        return v
            .parse::<i64>()
            .map(Value::from)
            .map_err(|e| format!("line {line}: {key}={v}: {e}"));
    }
    if BOOLS.contains(&key) {
        return v
            .parse::<bool>()
            .map(Value::from)
            .map_err(|e| format!("line {line}: {key}={v}: {e}"));
    }
    Ok(Value::from(v))
}

fn event(schema: &str, tokens: &[&str], line: usize) -> Result<Event, String> {
    let mut header: BTreeMap<String, String> = BTreeMap::new();
    let mut payload = Map::new();
    for (k, v) in fields(tokens, line)? {
        if HEADER.contains(&k.as_str()) {
            header.insert(k, v);
        } else {
            payload.insert(k.clone(), payload_value(&k, &v, line)?);
        }
    }
    let get = |k: &str, default: &str| header.get(k).cloned().unwrap_or(default.to_string());
    let at = header
        .get("at")
        .ok_or_else(|| format!("line {line}: an event needs at=<event time>"))?;
    let id = header
        .get("id")
        .ok_or_else(|| format!("line {line}: an event needs id=<event id>"))?;
    let mut wire = json!({
        "event_id": id,
        "schema": schema,
        "schema_version": 1,
        "source": get("source", "scenario"),
        "shop": get("shop", "s1"),
        "channel": get("channel", "amazon"),
        "marketplace": get("marketplace", "ATVPDKIKX0DER"),
        "event_time": at,
        "source_tz": get("tz", "America/Los_Angeles"),
        "ingest_time": get("ingest", at),
        "payload": payload,
    });
    if let Some(sku) = header.get("sku") {
        wire["sku"] = Value::from(sku.as_str());
    }
    Event::from_json(wire.to_string().as_bytes())
        .map_err(|e| format!("line {line}: the event does not decode: {e}"))
}

fn key(tokens: &[&str], line: usize) -> Result<Key, String> {
    let [kpi, window, start, scope @ ..] = tokens else {
        return Err(format!(
            "line {line}: expected <kpi> <window> <window start> [shop=.. channel=.. marketplace=.. sku=.. campaign=..]"
        ));
    };
    let mut key = Key {
        kpi: kpi.to_string(),
        window: window.to_string(),
        start: time(start, line)?,
        shop: "s1".into(),
        channel: "amazon".into(),
        marketplace: "ATVPDKIKX0DER".into(),
        sku: None,
        campaign: None,
    };
    for (k, v) in fields(scope, line)? {
        match k.as_str() {
            "shop" => key.shop = v,
            "channel" => key.channel = v,
            "marketplace" => key.marketplace = v,
            "sku" => key.sku = Some(v),
            "campaign" => key.campaign = Some(v),
            other => return Err(format!("line {line}: unknown scope field {other:?}")),
        }
    }
    Ok(key)
}

pub(crate) fn parse(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut s = Scenario {
        path: path.to_path_buf(),
        ..Scenario::default()
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split(" #").next().unwrap_or("").trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = content.split_whitespace().collect();
        match tokens[0] {
            "config" => {
                s.config.push_str(content["config".len()..].trim());
                s.config.push('\n');
            }
            "event" => {
                let schema = tokens
                    .get(1)
                    .ok_or_else(|| format!("line {line}: event <schema> key=value ..."))?;
                let event = event(schema, &tokens[2..], line)?;
                s.steps.push(Step::Event(Box::new(event)));
            }
            "flush" => {
                let pause = match tokens.get(1) {
                    Some(d) => humantime::parse_duration(d.trim_start_matches('+'))
                        .map_err(|e| format!("line {line}: {d}: {e}"))?,
                    None => Duration::from_secs(1),
                };
                s.steps.push(Step::Flush(pause));
            }
            "checkpoint" => s.steps.push(Step::Checkpoint),
            "crash" => s.steps.push(Step::Crash),
            "expect" => {
                let eq = tokens.iter().position(|t| *t == "=").ok_or_else(|| {
                    format!("line {line}: expect ... = <numerator> [/ <denominator>]")
                })?;
                let key = key(&tokens[1..eq], line)?;
                let mut rhs = &tokens[eq + 1..];
                let (mut withheld, mut settling) = (false, None);
                while let Some(last) = rhs.last() {
                    match *last {
                        "withheld" => withheld = true,
                        "settling" => settling = Some(true),
                        "final" => settling = Some(false),
                        _ => break,
                    }
                    rhs = &rhs[..rhs.len() - 1];
                }
                let value = match rhs {
                    [n] => (decimal(n, line)?, None),
                    [n, "/", d] => (decimal(n, line)?, Some(decimal(d, line)?)),
                    _ => {
                        return Err(format!(
                            "line {line}: expected = <numerator> [/ <denominator>] [withheld] [settling|final]"
                        ));
                    }
                };
                s.expects.push(Expect {
                    line,
                    key,
                    value: Some(value),
                    withheld,
                    settling,
                });
            }
            "absent" => {
                let key = key(&tokens[1..], line)?;
                s.expects.push(Expect {
                    line,
                    key,
                    value: None,
                    withheld: false,
                    settling: None,
                });
            }
            "exhaustive" => match &tokens[1..] {
                [kpi, window] => s.exhaustive.push((kpi.to_string(), window.to_string())),
                _ => return Err(format!("line {line}: exhaustive <kpi> <window>")),
            },
            "dead" => match &tokens[1..] {
                [id, kind] => {
                    s.dead.insert(id.to_string(), kind.to_string());
                }
                _ => return Err(format!("line {line}: dead <event id> <kind>")),
            },
            "breach" => match &tokens[1..] {
                [state, rule, start] => {
                    s.breaches
                        .push((state.to_string(), rule.to_string(), time(start, line)?));
                }
                _ => {
                    return Err(format!(
                        "line {line}: breach <firing|resolved> <rule> <window start>"
                    ));
                }
            },
            "pending" => s.pending = Some(content["pending".len()..].trim().to_string()),
            other => return Err(format!("line {line}: unknown directive {other:?}")),
        }
    }
    Ok(s)
}

/// What a run published: the newest row per key, the dead letters, breach transitions.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) latest: BTreeMap<Key, KpiUpdate>,
    pub(crate) dead: BTreeMap<String, String>,
    pub(crate) breaches: Vec<(String, String, DateTime<Utc>)>,
}

pub(crate) fn shown(n: &Decimal, d: &Option<Decimal>) -> String {
    match d {
        Some(d) => format!("{n} / {d}"),
        None => n.to_string(),
    }
}

pub(crate) fn same(a: &Decimal, b: &Decimal) -> bool {
    a.0.normalize() == b.0.normalize()
}

/// Checks one run against the file; returns the problems found. Breach transitions are
/// compared only when `breaches` is set (a run that batches as written).
pub(crate) fn check(s: &Scenario, out: &Outcome, breaches: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for e in &s.expects {
        match (out.latest.get(&e.key), &e.value) {
            (None, None) => {}
            (Some(u), None) => problems.push(format!(
                "line {}: {} should not be published, got {}",
                e.line,
                e.key,
                shown(&u.numerator, &u.denominator)
            )),
            (None, Some((n, d))) => problems.push(format!(
                "line {}: {} was never published (expected {})",
                e.line,
                e.key,
                shown(n, d)
            )),
            (Some(u), Some((n, d))) => {
                let den_ok = match (d, &u.denominator) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                };
                if !same(n, &u.numerator) || !den_ok {
                    problems.push(format!(
                        "line {}: {} = {}, expected {}",
                        e.line,
                        e.key,
                        shown(&u.numerator, &u.denominator),
                        shown(n, d)
                    ));
                }
                if let Some(settling) = e.settling
                    && u.settling != settling
                {
                    problems.push(format!(
                        "line {}: {} is {} (final at {:?}), expected {}",
                        e.line,
                        e.key,
                        if u.settling { "settling" } else { "final" },
                        u.final_at,
                        if settling { "settling" } else { "final" },
                    ));
                }
                // A value exactly when it is defined and not withheld.
                let defined = d.as_ref().is_none_or(|d| !same(d, &Decimal::ZERO));
                if u.value.is_some() != (defined && !e.withheld) {
                    problems.push(format!(
                        "line {}: {} has value {:?}, expected {}",
                        e.line,
                        e.key,
                        u.value,
                        if e.withheld {
                            "none (withheld)"
                        } else if defined {
                            "one"
                        } else {
                            "none"
                        }
                    ));
                }
            }
        }
    }
    let listed: BTreeSet<&Key> = s.expects.iter().map(|e| &e.key).collect();
    for (kpi, window) in &s.exhaustive {
        for (k, u) in &out.latest {
            if &k.kpi == kpi && &k.window == window && !listed.contains(k) {
                problems.push(format!(
                    "exhaustive {kpi} {window}: {k} = {} is published but has no expect line",
                    shown(&u.numerator, &u.denominator)
                ));
            }
        }
    }
    if out.dead != s.dead {
        problems.push(format!(
            "dead letters: got {:?}, expected {:?}",
            out.dead, s.dead
        ));
    }
    if breaches && out.breaches != s.breaches {
        let list = |b: &[(String, String, DateTime<Utc>)]| {
            b.iter()
                .map(|(st, r, w)| format!("breach {st} {r} {}", w.format("%Y-%m-%dT%H:%M:%SZ")))
                .collect::<Vec<_>>()
                .join("\n    ")
        };
        problems.push(format!(
            "breach transitions:\n  got:\n    {}\n  expected:\n    {}",
            list(&out.breaches),
            list(&s.breaches)
        ));
    }
    problems
}

/// Every scenario file under `dir`, parsed, in file-name order.
pub(crate) fn load(dir: &Path) -> Vec<Scenario> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| parse(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}
