//! `kpiflow demo`: a local broker plus simulator, processor and sink in one process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use kpiflow_core::metrics::{self, Readiness};
use kpiflow_ingest::connectors::simulator::Simulator;
use kpiflow_ingest::publish::KafkaPublisher;
use kpiflow_sink::LiveView;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The broker script, found beside the sources this binary was built from.
fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kafka.sh")
}

/// Starts `kafka.sh run` on `port` with a fresh data folder; the script fetches the jars the
/// first time, with Maven's progress on the terminal.
fn start_broker(port: u16) -> anyhow::Result<Child> {
    let script = kafka_script();
    let data = std::env::var("KPIFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                .join(".cache/kpiflow")
        })
        .join(format!("demo-broker-{port}"));
    // The demo starts from an empty broker so that each run's KPIs are its own.
    let _ = std::fs::remove_dir_all(&data);
    eprintln!(
        "kpiflow demo: starting Apache Kafka on 127.0.0.1:{port} ({} run)",
        script.display()
    );
    Command::new(&script)
        .arg("run")
        .env("KPIFLOW_KAFKA_PORT", port.to_string())
        .env("KPIFLOW_KAFKA_DATA", &data)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", script.display()))
}

async fn stop_broker(mut child: Child) {
    if let Some(pid) = child.id() {
        // SIGTERM lets Kafka close its logs cleanly; SIGKILL only if it hangs.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Runs the demo until `shutdown` (Ctrl-C) or `duration`.
pub(crate) async fn run(
    mut cfg: Config,
    external_broker: bool,
    broker_port: u16,
    data_dir: PathBuf,
    duration: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let broker = if external_broker {
        None
    } else {
        cfg.kafka.bootstrap_servers = format!("127.0.0.1:{broker_port}");
        Some(start_broker(broker_port)?)
    };
    let result = run_pipeline(cfg, data_dir, duration, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(child) = broker {
        eprintln!("kpiflow demo: stopping the local broker");
        stop_broker(child).await;
    }
    result
}

async fn run_pipeline(
    mut cfg: Config,
    data_dir: PathBuf,
    duration: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // First start fetches the broker's jars: allow for a slow download.
    tokio::select! {
        r = cfg.kafka.wait_until_reachable(Duration::from_secs(600)) => r.context("waiting for the broker")?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("emptying the demo's data folder {}", data_dir.display()))?;
    }
    cfg.sink.dir = data_dir.clone().into();
    // The demo's broker starts empty, so old checkpoints would describe data that is gone.
    cfg.processor.checkpoint.dir = data_dir.join("state").into();
    if let Some(d) = duration {
        let token = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            token.cancel();
        });
    }

    let readiness = Readiness::default();
    let processor_ready = readiness.part("processor");
    let sink_ready = readiness.part("sink");
    readiness.watch_broker(&cfg.kafka, &shutdown)?;
    let (addr, _http) = metrics::serve(cfg.metrics.listen, readiness, shutdown.clone()).await?;
    let live = LiveView::default();

    let kafka = cfg.kafka.clone();
    let sink_cfg = cfg.sink.clone();
    let sink_live = live.clone();
    let sink_stop = shutdown.clone();
    let sink = tokio::spawn(async move {
        kpiflow_sink::run(
            &kafka,
            &sink_cfg,
            Some(sink_live),
            None,
            Some(sink_ready),
            sink_stop,
        )
        .await
    });
    let kafka = cfg.kafka.clone();
    let proc_cfg = cfg.processor.clone();
    let proc_stop = shutdown.clone();
    let processor = tokio::spawn(async move {
        kpiflow_processor::run::run(&kafka, &proc_cfg, Some(processor_ready), proc_stop).await
    });
    let publisher = KafkaPublisher::new(
        &cfg.kafka,
        kpiflow_core::ComponentMetrics::new("ingest.simulator"),
    )?;
    let mut sim = Simulator::new(cfg.simulate.clone())?;
    let sim_stop = shutdown.clone();
    let simulator = tokio::spawn(async move { sim.run(&publisher, sim_stop).await });

    eprintln!(
        "kpiflow demo: simulating {} shops over {} days; metrics on http://{addr}/metrics; Parquet under {}; Ctrl-C to stop",
        cfg.simulate.shops,
        cfg.simulate.days,
        data_dir.display()
    );
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                // Clear the screen and redraw: a live board, not a scrolling log.
                print!("\x1b[2J\x1b[H{}\n(metrics: http://{addr}/metrics · Parquet: {} · Ctrl-C to stop)\n", live.render(), data_dir.display());
            }
        }
    }
    let sim_result = simulator.await.context("simulator task")?;
    let proc_result = processor.await.context("processor task")?;
    let sink_result = sink.await.context("sink task")?;
    let sim_stats = sim_result?;
    proc_result?;
    sink_result?;
    eprintln!(
        "kpiflow demo: stopped after publishing {} events; query the results with\n  kpiflow query --dir {} \"SELECT kpi, shop, window_name, value FROM kpi_latest ORDER BY window_start DESC LIMIT 20\"",
        sim_stats.published,
        data_dir.display()
    );
    Ok(())
}
