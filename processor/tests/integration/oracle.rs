//! The engine against the independent oracle (`tests/oracle`, Python, written from domain.md)
//! on a simulated stream long enough for the real delays: returns 1 to 4 weeks after
//! delivery, defects up to 90 days after shipment, ad rows restated for 14 days, 3PL orders
//! shipping days after purchase. (The end-to-end test compares the oracle over the broker on
//! a shorter stream.)

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kpiflow_ingest::connectors::simulator::{SimulatorConfig, generate};
use kpiflow_processor::{Applied, Engine, PartitionId, ProcessorConfig};
use kpiflow_schemas::EventBody;

#[test]
fn five_weeks_of_late_facts_agree_with_the_oracle() {
    let start: DateTime<Utc> = "2026-10-05T07:00:00Z".parse().unwrap();
    let sim = SimulatorConfig {
        seed: 5,
        shops: 4,
        days: 35,
        orders_per_shop_per_day: 40,
        ..SimulatorConfig::default()
    };
    let events = generate(&sim, start);
    // The stream really is as late as reality: the oracle comparison means nothing otherwise.
    let days = |a: DateTime<Utc>, b: DateTime<Utc>| (a - b).num_days();
    let mut late_returns = 0;
    let mut late_defects = 0;
    let mut late_ad_rows = 0;
    let mut slow_shipments = 0;
    for e in &events {
        match &e.body {
            EventBody::OrderReturned(r) if days(e.header.event_time, r.placed_at) >= 21 => {
                late_returns += 1
            }
            EventBody::OrderDefect(d) if days(e.header.event_time, d.placed_at) >= 14 => {
                late_defects += 1
            }
            EventBody::AdPerformance(a) if days(a.as_of, e.header.event_time) >= 14 => {
                late_ad_rows += 1
            }
            EventBody::OrderShipped(s) if days(e.header.event_time, s.placed_at) >= 3 => {
                slow_shipments += 1
            }
            _ => {}
        }
    }
    assert!(
        late_returns > 5 && late_defects > 0 && late_ad_rows > 20 && slow_shipments > 100,
        "returns 3+ weeks after the order {late_returns}, defects 2+ weeks {late_defects}, ad rows restated on day 14 {late_ad_rows}, shipments 3+ days {slow_shipments}"
    );

    eprintln!(
        "{} events: {late_returns} returns 3+ weeks after the order, {late_defects} defects 2+ weeks, {late_ad_rows} ad rows restated on day 14, {slow_shipments} shipments 3+ days after purchase",
        events.len()
    );
    // The whole built-in catalog, in batches, flushed as a processor would.
    let cfg = ProcessorConfig::default();
    let mut engine = Engine::new(&cfg, 0);
    let t0 = Instant::now();
    let mut now = t0;
    let wall: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut updates = Vec::new();
    let mut refused = Vec::new();
    for chunk in events.chunks(400) {
        let batch: Vec<_> = chunk.iter().map(|e| (e, PartitionId::zero_of(e))).collect();
        for (e, v) in chunk.iter().zip(engine.apply_batch(&batch, now)) {
            assert!(
                !matches!(v, Applied::Late { .. } | Applied::Rejected { .. }),
                "{}: {v:?}",
                e.header.event_id
            );
            if matches!(v, Applied::Superseded { .. }) {
                refused.push(e.header.event_id.clone());
            }
        }
        now += Duration::from_millis(100);
        updates.extend(engine.flush(now, wall).updates);
    }
    // The end of the input: every partition read to its end and idle.
    now += cfg.idle_timeout + Duration::from_secs(1);
    for p in engine.quiet_partitions(now) {
        engine.set_caught_up(p, true);
    }
    updates.extend(engine.flush(now, wall).updates);

    super::oracle_cli::assert_oracle_agrees_with(
        &events,
        updates.iter().map(|u| serde_json::to_vec(u).unwrap()),
        &refused,
        &[],
    );
}
