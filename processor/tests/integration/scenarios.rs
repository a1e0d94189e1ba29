//! Golden KPI scenarios (`processor/tests/scenarios/*.scenario`): the engine's executable
//! specification, in the spirit of DataFusion's sqllogictest files.
//!
//! Each file states a configuration, input events in arrival order (with flushes between
//! batches), and the exact KPI rows, dead letters and breach transitions they must give.
//! Expected values are written by hand from the definitions (domain.md, the README); there is
//! no bless mode. The format is described in `processor/tests/scenarios/README.md` and read by
//! `scenario_file.rs`.
//!
//! Every scenario runs three times here, in-process: batched as written, one event per batch,
//! and all events in one batch. Final KPI values and dead letters must be the same in all
//! three (same input, same output, whatever the batching); breach transitions are checked as
//! written. A few also run over a real broker through the `kpiflow` binary
//! (`tests/e2e/scenarios.rs`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_processor::{Applied, Engine, PartitionId, ProcessorConfig};
use kpiflow_schemas::Event;

use super::scenario_file::{Key, Outcome, Scenario, Step, check, load};

/// How a run cuts the input into batches.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Batching {
    AsWritten,
    OneByOne,
    OneBatch,
}

fn verdict_kind(v: &Applied) -> Option<String> {
    match v {
        Applied::Counted | Applied::Duplicate | Applied::Unused => None,
        Applied::Superseded { .. } => Some("superseded".into()),
        Applied::Late { .. } => Some("late".into()),
        Applied::Rejected { kind, .. } => Some(kind.to_string()),
    }
}

fn config(s: &Scenario) -> Result<ProcessorConfig, String> {
    let cfg: ProcessorConfig = toml::from_str(&s.config).map_err(|e| format!("bad config: {e}"))?;
    cfg.compile().map_err(|e| format!("bad config: {e}"))?;
    Ok(cfg)
}

fn run(s: &Scenario, batching: Batching) -> Result<Outcome, String> {
    let cfg = config(s)?;
    let mut engine = Engine::new(&cfg, 0);
    let start = Instant::now();
    let wall0: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().expect("valid");
    let mut elapsed = Duration::ZERO;
    let mut out = Outcome::default();
    let mut pending: Vec<&Event> = Vec::new();
    let flush =
        |engine: &mut Engine, pending: &mut Vec<&Event>, elapsed: Duration, out: &mut Outcome| {
            let now = start + elapsed;
            let batch: Vec<(&Event, PartitionId)> = pending
                .iter()
                .map(|e| (*e, PartitionId::zero_of(e)))
                .collect();
            let verdicts = engine.apply_batch(&batch, now);
            for (e, v) in pending.iter().zip(&verdicts) {
                if let Some(kind) = verdict_kind(v) {
                    out.dead.insert(e.header.event_id.clone(), kind);
                }
            }
            pending.clear();
            let o = engine.flush(now, wall0 + chrono::Duration::from_std(elapsed).unwrap());
            for u in o.updates {
                out.latest.insert(Key::of(&u), u);
            }
            for b in o.breaches {
                out.breaches.push((
                    match b.state {
                        kpiflow_schemas::BreachState::Firing => "firing".to_string(),
                        kpiflow_schemas::BreachState::Resolved => "resolved".to_string(),
                    },
                    b.rule.clone(),
                    b.window.start,
                ));
            }
        };
    // The last checkpoint (as written only): the engine's bytes and the next step's index.
    let mut checkpoint: Option<(Vec<u8>, usize)> = None;
    for (index, step) in s.steps.iter().enumerate() {
        match step {
            Step::Checkpoint if batching == Batching::AsWritten => {
                elapsed += Duration::from_millis(10);
                flush(&mut engine, &mut pending, elapsed, &mut out);
                checkpoint = Some((engine.snapshot(), index + 1));
            }
            Step::Crash if batching == Batching::AsWritten => {
                // What was applied since the checkpoint is lost with the process; its
                // outputs already published stay on the topic (upserts).
                pending.clear();
                engine = Engine::new(&cfg, 0);
                let from = match &checkpoint {
                    Some((bytes, from)) => {
                        engine
                            .restore(bytes, start + elapsed)
                            .expect("the checkpoint restores");
                        *from
                    }
                    None => 0,
                };
                for replayed in &s.steps[from..index] {
                    if let Step::Event(e) = replayed {
                        pending.push(e);
                    }
                }
                elapsed += Duration::from_millis(10);
                flush(&mut engine, &mut pending, elapsed, &mut out);
            }
            Step::Checkpoint | Step::Crash => {}
            Step::Event(event) => {
                pending.push(event);
                if batching == Batching::OneByOne {
                    elapsed += Duration::from_millis(10);
                    flush(&mut engine, &mut pending, elapsed, &mut out);
                }
            }
            Step::Flush(pause) => {
                if batching == Batching::AsWritten {
                    elapsed += *pause;
                    flush(&mut engine, &mut pending, elapsed, &mut out);
                }
            }
        }
    }
    // The end of the input: every partition is read to its end and idle, so the watermark
    // reaches the newest event.
    elapsed += Duration::from_secs(1);
    flush(&mut engine, &mut pending, elapsed, &mut out);
    elapsed += cfg.idle_timeout + Duration::from_secs(1);
    for p in engine.quiet_partitions(start + elapsed) {
        engine.set_caught_up(p, true);
    }
    elapsed += Duration::from_secs(1);
    flush(&mut engine, &mut pending, elapsed, &mut out);
    Ok(out)
}

fn scenarios() -> Vec<Scenario> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios"))
}

#[test]
fn golden_scenarios_give_their_hand_computed_rows_in_every_batching() {
    let all = scenarios();
    assert!(!all.is_empty(), "no scenario files found");
    let mut report = String::new();
    let mut failed = 0;
    for s in &all {
        let name = s.path.file_name().unwrap().to_string_lossy().to_string();
        let mut problems = Vec::new();
        for batching in [Batching::AsWritten, Batching::OneByOne, Batching::OneBatch] {
            match run(s, batching) {
                Ok(out) => {
                    for p in check(s, &out, batching == Batching::AsWritten) {
                        problems.push(format!("[{batching:?}] {p}"));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        problems
            .dedup_by(|a, b| a.split_once("] ").map(|x| x.1) == b.split_once("] ").map(|x| x.1));
        if let Some(why) = &s.pending {
            if problems.is_empty() {
                failed += 1;
                let _ = writeln!(
                    report,
                    "FAILED  {name}: marked pending ({why}) but now passes: remove the pending line"
                );
            } else {
                let _ = writeln!(
                    report,
                    "pending {name}: {why} ({} differences)",
                    problems.len()
                );
            }
        } else if problems.is_empty() {
            let _ = writeln!(report, "ok      {name}");
        } else {
            failed += 1;
            let _ = writeln!(report, "FAILED  {name}");
            for p in problems {
                let _ = writeln!(report, "    {p}");
            }
        }
    }
    eprintln!("{report}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} scenarios failed:\n{report}",
        all.len()
    );
}

#[test]
fn every_catalog_kpi_and_window_has_a_scenario() {
    let all = scenarios();
    let expected: BTreeSet<(String, String)> = all
        .iter()
        .filter(|s| s.pending.is_none())
        .flat_map(|s| s.expects.iter())
        .filter(|e| e.value.is_some())
        .map(|e| (e.key.kpi.clone(), e.key.window.clone()))
        .collect();
    let catalog = kpiflow_processor::catalog::Catalog::builtin();
    let mut missing_kpis = Vec::new();
    for k in &catalog.kpis {
        if !expected.iter().any(|(kpi, _)| *kpi == k.id) {
            missing_kpis.push(k.id.clone());
        }
    }
    let mut missing_windows = Vec::new();
    for w in &catalog.windows {
        if !expected.iter().any(|(_, window)| *window == w.name) {
            missing_windows.push(w.name.clone());
        }
    }
    assert!(
        missing_kpis.is_empty() && missing_windows.is_empty(),
        "catalog KPIs without a scenario expect line: {missing_kpis:?}; windows without one: {missing_windows:?}"
    );
}
