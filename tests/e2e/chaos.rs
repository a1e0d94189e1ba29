//! The chaos suite: processors and a sink SIGKILLed at random while a long stream runs, the
//! broker restarted once and a second processor joining the group mid-stream; the final KPI
//! values, the sink's tables and the breach transitions must equal an uninterrupted run of the
//! same stream, and the independent oracle must agree. `scripts/chaos.sh` runs the long
//! version (≥ 300k events, ≥ 20 kills); `scripts/test.sh` runs this short one.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kpiflow_core::KafkaConfig;
use kpiflow_ingest::connectors::simulator::{Simulator, SimulatorConfig};
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_schemas::{BreachEvent, KpiUpdate, Topic};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::crash::{
    PRIVATE_BROKER, StopBroker, broker, kafka_sections, latest_updates, private_port,
};
use super::{assert_oracle_agrees, read_all, rows, wait_until_consumed};

/// The size of a run, from the environment (`scripts/chaos.sh` sets the long one).
struct Knobs {
    /// `KPIFLOW_CHAOS_KILLS`: SIGKILLs in all, of a processor member (a random one) and of the
    /// sink in turn.
    kills: usize,
    /// `KPIFLOW_CHAOS_SHOPS`, `KPIFLOW_CHAOS_DAYS`, `KPIFLOW_CHAOS_ORDERS` (per shop and day):
    /// the simulated span.
    shops: u32,
    days: u32,
    orders: u32,
    /// `KPIFLOW_CHAOS_SECONDS`: how long publishing the stream takes (the kills happen then).
    seconds: f64,
}

impl Knobs {
    fn from_env() -> Knobs {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
                Err(_) => default,
            }
        }
        Knobs {
            kills: var("KPIFLOW_CHAOS_KILLS", 6),
            shops: var("KPIFLOW_CHAOS_SHOPS", 4),
            days: var("KPIFLOW_CHAOS_DAYS", 3),
            orders: var("KPIFLOW_CHAOS_ORDERS", 60),
            seconds: var("KPIFLOW_CHAOS_SECONDS", 12.0),
        }
    }
}

/// One role of the pipeline run as its own `kpiflow` process, restarted after each kill.
struct Role {
    /// `process` or `sink`.
    command: &'static str,
    /// The processor's static member id (`processor.instance_id = "env:KPIFLOW_INSTANCE"`).
    instance: &'static str,
    config: PathBuf,
    child: Child,
    starts: usize,
    kills: usize,
}

impl Role {
    fn start(command: &'static str, instance: &'static str, config: &Path) -> Role {
        Role {
            command,
            instance,
            config: config.to_path_buf(),
            child: launch(command, instance, config, 0),
            starts: 1,
            kills: 0,
        }
    }

    /// SIGKILL (no flush, no checkpoint, no commit) and an immediate restart.
    fn kill_and_restart(&mut self) {
        self.running();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.kills += 1;
        self.child = launch(self.command, self.instance, &self.config, self.starts);
        self.starts += 1;
    }

    /// Fails if the process ended without being killed: no fault here may stop a stage.
    fn running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = log_path(&self.config, self.command, self.instance, self.starts - 1);
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{} {} exited by itself ({status}); its log ends:\n{}",
                self.command,
                self.instance,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// SIGTERM, and the clean exit it must give.
    fn stop(mut self) {
        self.running();
        let status = super::terminate(&mut self.child);
        assert!(
            status.success(),
            "{} {} did not stop cleanly on SIGTERM: {status}",
            self.command,
            self.instance
        );
    }
}

/// A failing test must not leave its processes running (they would hold the broker's topics
/// and whatever file descriptors the test runner had, e.g. a build lock).
impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the `n`-th start of a role logs: beside its config.
fn log_path(config: &Path, command: &str, instance: &str, n: usize) -> PathBuf {
    config.with_file_name(format!("{command}-{instance}-{n}.log"))
}

/// Starts `kpiflow <command>` as member `instance`.
fn launch(command: &str, instance: &str, config: &Path, n: usize) -> Child {
    let log = std::fs::File::create(log_path(config, command, instance, n)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kpiflow"))
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("RUST_LOG", "info")
        .env("KPIFLOW_INSTANCE", instance)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The config every role of one run reads: processors with static membership and the late
/// shipment rule the simulated spike fires, a sink writing small files often.
fn config(dir: &Path, kafka: &KafkaConfig) -> PathBuf {
    let path = dir.join("kpiflow.toml");
    let prefix = &kafka.topic_prefix;
    let text = format!(
        r#"{kafka}
[processor]
group_id = "{prefix}-processor"
instance_id = "env:KPIFLOW_INSTANCE"
flush_interval = "200ms"
idle_timeout = "1s"
{rule}
[processor.checkpoint]
dir = "{state}"
interval = "300ms"

[sink]
dir = "{tables}"
group_id = "{prefix}-sink"
roll_interval = "300ms"
"#,
        kafka = kafka_sections(kafka),
        rule = super::LSR_RULE,
        state = dir.join("state").display(),
        tables = dir.join("tables").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Fresh topics (`<name>-<uuid>`, 3 partitions each) on `bootstrap`.
async fn topics(bootstrap: &str, name: &str) -> KafkaConfig {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        topic_prefix: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
        partitions: 3,
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await.unwrap();
    kafka
}

/// Publishes the simulator's stream (rate: `per_second`, `None` as fast as possible) to
/// `kafka`'s topics from a task; the task's result is the number of events published.
fn publish(
    kafka: &KafkaConfig,
    sim: &SimulatorConfig,
    per_second: Option<f64>,
) -> tokio::task::JoinHandle<u64> {
    let publisher = KafkaPublisher::new(
        kafka,
        kpiflow_core::ComponentMetrics::new("ingest.simulator"),
    )
    .unwrap();
    let sim = SimulatorConfig {
        rate: per_second,
        ..sim.clone()
    };
    tokio::spawn(async move {
        Simulator::with_start(sim, start_at())
            .unwrap()
            .run(&publisher, CancellationToken::new())
            .await
            .unwrap()
            .published
    })
}

fn start_at() -> chrono::DateTime<chrono::Utc> {
    "2026-11-02T08:00:00Z".parse().unwrap()
}

/// The input topics of `kafka`.
fn inputs(kafka: &KafkaConfig) -> Vec<String> {
    let topics = kafka.topics();
    Topic::EVENTS.iter().map(|t| topics.name(*t)).collect()
}

/// The distinct `(breach_id, state)` pairs on the breaches topic, checking that per rule and
/// scope they alternate firing / resolved; and how many records carried them (a replay after
/// a kill repeats a transition, which readers de-duplicate on that pair).
pub(crate) fn transitions(kafka: &KafkaConfig) -> (BTreeSet<(String, String)>, usize) {
    let raw = read_all(kafka, Topic::Breaches);
    let mut seen = BTreeSet::new();
    let mut open: HashMap<String, String> = HashMap::new();
    for record in &raw {
        let b = BreachEvent::from_json(record).unwrap();
        let state = format!("{:?}", b.state).to_lowercase();
        if !seen.insert((b.breach_id.clone(), state)) {
            continue;
        }
        let key = format!("{}|{}", b.rule, b.scope);
        match b.state {
            kpiflow_schemas::BreachState::Firing => assert!(
                open.insert(key.clone(), b.breach_id.clone()).is_none(),
                "{key} fired twice"
            ),
            kpiflow_schemas::BreachState::Resolved => assert_eq!(
                open.remove(&key),
                Some(b.breach_id.clone()),
                "{key} resolved a breach that was not open"
            ),
        }
    }
    (seen, raw.len())
}

/// The value of a KPI update as compared across runs: numerator and denominator, exact.
fn value(u: &KpiUpdate) -> (String, Option<String>) {
    (
        u.numerator.0.normalize().to_string(),
        u.denominator.map(|d| d.0.normalize().to_string()),
    )
}

/// Keys of `want` missing from `got`, and keys whose value differs.
fn lost_and_differing(
    want: &HashMap<String, KpiUpdate>,
    got: &HashMap<String, KpiUpdate>,
) -> (Vec<String>, Vec<String>) {
    let mut lost = Vec::new();
    let mut differing = Vec::new();
    for (key, w) in want {
        match got.get(key) {
            None => lost.push(key.clone()),
            Some(g) if value(g) != value(w) => differing.push(format!(
                "{key}: {:?}, uninterrupted {:?}",
                value(g),
                value(w)
            )),
            Some(_) => {}
        }
    }
    (lost, differing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_a_broker_restart_and_a_rebalance_lose_and_double_nothing() {
    let knobs = Knobs::from_env();
    // A broker of its own, to restart: the other tests share theirs.
    let _private = PRIVATE_BROKER.lock().await;
    let port = private_port();
    let data = tempfile::tempdir().unwrap();
    let bootstrap = broker("start", port, data.path());
    let _stop = StopBroker(port, data.path().to_path_buf());
    let sim = super::spiked_stream(23, knobs.shops, knobs.days, knobs.orders);
    let events = kpiflow_ingest::connectors::simulator::generate(&sim, start_at());

    // The chaos run: processor member-0 and a sink from the start, member-1 joining after a
    // third of the kills (a rebalance), the broker down for 3 s after half of them.
    let started = Instant::now();
    let kafka = topics(&bootstrap, "chaos").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &kafka);
    let stream = publish(&kafka, &sim, Some(events.len() as f64 / knobs.seconds));
    let mut processors = vec![Role::start("process", "member-0", &cfg)];
    let mut sink = Role::start("sink", "sink", &cfg);
    let mut rng = rand::rng();
    let gap = knobs.seconds / knobs.kills.max(1) as f64;
    let mut rebalanced_at = None;
    let mut broker_restarted_at = None;
    for i in 0..knobs.kills {
        if i == knobs.kills / 3 {
            processors.push(Role::start("process", "member-1", &cfg));
            rebalanced_at = Some(started.elapsed());
        }
        if i == knobs.kills / 2 {
            broker("stop", port, data.path());
            broker_restarted_at = Some(started.elapsed());
            // The outage itself: nothing to await, the broker is simply away this long.
            tokio::time::sleep(Duration::from_secs(3)).await;
            broker("start", port, data.path());
        }
        tokio::time::sleep(Duration::from_secs_f64(rng.random_range(0.5..1.5) * gap)).await;
        // Processors and the sink in turn; which processor, at random.
        if i % 2 == 0 {
            let member = rng.random_range(0..processors.len());
            processors[member].kill_and_restart();
        } else {
            sink.kill_and_restart();
        }
    }
    let published = stream.await.unwrap();
    assert_eq!(published, events.len() as u64);
    let publish_took = started.elapsed();
    wait_until_consumed(
        &kafka,
        &format!("{}-processor", kafka.topic_prefix),
        &inputs(&kafka),
        Duration::from_secs(600),
    )
    .await;
    super::topics::outputs_settle(&kafka, Duration::from_secs(3)).await;
    let outputs = [Topic::KpiUpdates, Topic::Breaches].map(|t| kafka.topics().name(t));
    wait_until_consumed(
        &kafka,
        &format!("{}-sink", kafka.topic_prefix),
        &outputs,
        Duration::from_secs(600),
    )
    .await;
    let kills: Vec<usize> = processors.iter().map(|p| p.kills).collect();
    let sink_kills = sink.kills;
    for p in processors {
        p.stop();
    }
    sink.stop();
    let chaos_took = started.elapsed();

    // The uninterrupted run: the same stream, as fast as it publishes, one processor.
    let started = Instant::now();
    let clean = topics(&bootstrap, "clean").await;
    let clean_dir = tempfile::tempdir().unwrap();
    let clean_cfg = config(clean_dir.path(), &clean);
    let processor = Role::start("process", "clean", &clean_cfg);
    assert_eq!(publish(&clean, &sim, None).await.unwrap(), published);
    wait_until_consumed(
        &clean,
        &format!("{}-processor", clean.topic_prefix),
        &inputs(&clean),
        Duration::from_secs(600),
    )
    .await;
    super::topics::outputs_settle(&clean, Duration::from_secs(3)).await;
    processor.stop();
    let clean_took = started.elapsed();

    // KPI values: every key of the uninterrupted run, with its value, and no other key.
    let want = latest_updates(&clean);
    let got = latest_updates(&kafka);
    let (lost, differing) = lost_and_differing(&want, &got);
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let updates = read_all(&kafka, Topic::KpiUpdates);
    let clean_updates = read_all(&clean, Topic::KpiUpdates).len();

    // The sink: kpi_latest holds the topic's newest revision of every key, once; kpi_values
    // each (key, revision) the topic carried, once.
    let tables = dir.path().join("tables");
    let sink_latest: HashMap<String, String> = rows(
        &tables,
        "SELECT key, CAST(revision AS VARCHAR) FROM kpi_latest",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    let sink_latest_rows = rows(&tables, "SELECT count(*) FROM kpi_latest").await[0][0]
        .parse::<usize>()
        .unwrap();
    let sink_lost = got
        .values()
        .filter(|u| sink_latest.get(&u.key()) != Some(&u.revision.to_string()))
        .count();
    let pairs: BTreeSet<(String, u64)> = updates
        .iter()
        .map(|raw| {
            let u = KpiUpdate::from_json(raw).unwrap();
            (u.key(), u.revision)
        })
        .collect();
    let sink_values = rows(&tables, "SELECT count(*) FROM kpi_values").await[0][0]
        .parse::<usize>()
        .unwrap();

    // Breaches: the same transitions as the uninterrupted run, each one (breach_id, state)
    // pair; the sink's table holds exactly those pairs.
    let (transitions_got, breach_records) = transitions(&kafka);
    let (transitions_want, clean_breach_records) = transitions(&clean);
    let sink_transitions: BTreeSet<(String, String)> =
        rows(&tables, "SELECT DISTINCT breach_id, state FROM breaches")
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();

    let table = format!(
        "\n| chaos suite ({events} events, {shops} shops, {days} days, 3 partitions) | uninterrupted | chaos |\n\
         |---|---:|---:|\n\
         | processor SIGKILLs (member-0, member-1) | 0 | {kills:?} |\n\
         | sink SIGKILLs | 0 | {sink_kills} |\n\
         | broker restarts (3 s down) | 0 | 1 at {broker:.1?} |\n\
         | second member joins (rebalance) | — | at {rebalance:.1?} |\n\
         | wall time (publishing took) | {clean_took:.1?} | {chaos_took:.1?} ({publish_took:.1?}) |\n\
         | KPI update records | {clean_updates} | {updates} |\n\
         | KPI keys | {want_keys} | {got_keys} |\n\
         | keys lost / values differing / keys extra | — | {lost} / {differing} / {extra} |\n\
         | sink `kpi_latest` rows (lost against the topic) | — | {sink_latest_rows} ({sink_lost}) |\n\
         | sink `kpi_values` rows (topic's distinct (key, revision)) | — | {sink_values} ({pairs}) |\n\
         | breach transitions, distinct (records) | {tw} ({clean_breach_records}) | {tg} ({breach_records}) |\n\
         | breach transitions in the sink's `breaches` | — | {ts} |\n",
        events = events.len(),
        shops = knobs.shops,
        days = knobs.days,
        broker = broker_restarted_at.unwrap_or_default(),
        rebalance = rebalanced_at.unwrap_or_default(),
        want_keys = want.len(),
        got_keys = got.len(),
        updates = updates.len(),
        lost = lost.len(),
        differing = differing.len(),
        extra = extra.len(),
        pairs = pairs.len(),
        tw = transitions_want.len(),
        tg = transitions_got.len(),
        ts = sink_transitions.len(),
    );
    eprintln!("{table}");
    assert!(want.len() > 1000, "only {} KPI keys", want.len());
    assert!(
        lost.is_empty() && differing.is_empty() && extra.is_empty(),
        "lost {:?}…, differing {:?}…, extra {:?}…",
        &lost[..lost.len().min(5)],
        &differing[..differing.len().min(5)],
        &extra[..extra.len().min(5)]
    );
    assert_eq!(sink_lost, 0, "kpi_latest lacks the newest revision of keys");
    assert_eq!(sink_latest_rows, got.len(), "kpi_latest has a key twice");
    assert_eq!(sink_values, pairs.len(), "kpi_values lost or doubled rows");
    assert!(
        !transitions_want.is_empty(),
        "the late-shipment spike opens a breach"
    );
    assert_eq!(transitions_got, transitions_want);
    assert_eq!(sink_transitions, transitions_got);
    // And the independent oracle agrees with every KPI the chaos run published.
    assert_oracle_agrees(&kafka, &events, &[]);
}
