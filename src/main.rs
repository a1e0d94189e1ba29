//! `kpiflow`: the one command for every role of the pipeline.
//!
//! ```text
//!  kpiflow simulate ──► Kafka ──► kpiflow process ──► Kafka ──► kpiflow sink ──► Parquet, /metrics
//!  kpiflow ingest (platform APIs, webhooks, drop folders: [[connectors.*]]) ──► Kafka;
//!  kpiflow backfill: one date range
//!  kpiflow demo: a local broker and all three roles in one process, with a live view
//!  kpiflow alerts: breaches to Alertmanager / a signed webhook (also part of `kpiflow sink`)
//!  kpiflow query: DataFusion SQL over the Parquet tables
//! ```

// Printing results is this binary's job; the libraries log through tracing instead.
#![allow(clippy::print_stdout)]

mod config;
mod demo;
mod pull;
mod reconcile;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kpiflow_core::metrics::{self, Readiness};
use tokio_util::sync::CancellationToken;

use kpiflow_core::storage::Location;
use kpiflow_sink::TableStore;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "kpiflow",
    version,
    about = "Streaming KPIs and alerts for e-commerce sellers"
)]
struct Cli {
    /// Configuration file (TOML). Default: the embedded deploy/config/kpiflow.toml.
    #[arg(long, short, global = true, env = "KPIFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Override kafka.bootstrap_servers.
    #[arg(long, global = true, env = "KPIFLOW_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// Override `[metrics] listen` for this process (/metrics, /healthz, /readyz), e.g.
    /// 127.0.0.1:9465: several roles on one host share one config file, each on its own port.
    #[arg(
        long,
        global = true,
        env = "KPIFLOW_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything locally: a Kafka broker, the simulator, the processor and the sink,
    /// with a live view of KPIs and breaches. Ctrl-C stops it all.
    Demo {
        /// Stop after this long (e.g. 90s, 5m). Default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Port of the local broker the demo starts (ignored with --bootstrap).
        #[arg(long, default_value_t = 19092)]
        broker_port: u16,
        /// Folder for the Parquet output; the demo empties it first.
        #[arg(long, default_value = "kpiflow-data/demo")]
        data_dir: PathBuf,
    },
    /// Publish the simulator's stream ([simulate] section, flags override it) to Kafka.
    Simulate(SimulateArgs),
    /// Run the connectors of the [[connectors.<name>]] tables until Ctrl-C: API pollers,
    /// webhook receivers and drop-folder watchers (listed below).
    #[command(after_help = connectors_help())]
    Ingest {
        /// Run only these connectors, e.g. `shopify_webhook`. Default: every configured one.
        connectors: Vec<String>,
    },
    /// Pull a time range from one connector for one shop, with a progress bar and ETA.
    ///
    /// Like `ingest`, it serves /metrics, /healthz and /readyz on `[metrics] listen` (or
    /// --metrics-listen: give it its own port when ingest runs on the same host) with the
    /// connector's kpiflow_source_* series, and publishes a source.heartbeat for the shop after
    /// every step of pull.max_window. The live cursor is left alone.
    #[command(after_help = connectors_help())]
    Backfill {
        /// The connector, e.g. amazon_sp_orders.
        connector: String,
        /// The shop of the [[connectors.<connector>]] table to use.
        #[arg(long)]
        shop: String,
        /// Start: 2026-11-01T00:00:00Z, or a date (midnight UTC).
        #[arg(long, value_parser = pull::parse_time)]
        from: chrono::DateTime<chrono::Utc>,
        /// End (exclusive). Default: now.
        #[arg(long, value_parser = pull::parse_time)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Run the KPI engine: events in, KPI updates and breaches out.
    Process,
    /// Write KPI updates and breaches to Parquet and serve /metrics; also push breaches to
    /// the alert receivers enabled in [alerts].
    Sink,
    /// Push breaches to the alert receivers enabled in [alerts] (Alertmanager, webhook) only.
    Alerts,
    /// Run DataFusion SQL over the Parquet tables (kpi_values, kpi_latest, breaches).
    Query {
        /// The SQL, e.g. "SELECT kpi, shop, value FROM kpi_latest WHERE window_name = 'business_day'".
        sql: String,
        /// Output format.
        #[arg(long, default_value = "table")]
        format: kpiflow_sink::OutputFormat,
        /// Root of the Parquet tables: a folder or s3://bucket/prefix (with the S3 settings
        /// of [sink.object_store]). Default: [sink] dir.
        #[arg(long, value_parser = Location::parse)]
        dir: Option<Location>,
        /// Leave out table files whose Parquet footer cannot be read (truncated, damaged)
        /// instead of failing, and name them after the answer, which lacks their rows.
        #[arg(long)]
        skip_unreadable: bool,
    },
    /// Merge each table partition's small Parquet files (one per sink flush) into few large
    /// ones, keeping each kpi_values (key, revision) once (a crashed sink's replays); rows
    /// are committed in the merged file before the small ones are deleted.
    Compact {
        /// Only files older than this, e.g. "1h": the partitions the sink is filling now are
        /// left alone.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Root of the Parquet tables: a folder or s3://bucket/prefix (with the S3 settings
        /// of [sink.object_store]). Default: [sink] dir.
        #[arg(long, value_parser = Location::parse)]
        dir: Option<Location>,
    },
    /// Recompute the KPIs as batch SQL over the events archive and list the windows whose
    /// published values differ (exit code 1 when any do).
    ///
    /// An operator's tool: it evaluates the same catalog definitions as the stream, so it
    /// finds what the stream lost or doubled (and facts it refused as late), but it cannot
    /// catch a wrong definition. The independent check of the definitions is the test
    /// oracle (tests/oracle).
    Reconcile(reconcile::Args),
    /// Check a configuration file and exit: every section, and every [[connectors.*]] table
    /// built as `ingest` builds it (unknown keys, values, URLs, `env:`/`file:` credentials),
    /// without connecting to anything. Exit code 1 names the table, the key and the value.
    CheckConfig,
    /// Print the documented example configuration.
    ExampleConfig,
}

/// Command-line overrides of the `[simulate]` section.
#[derive(clap::Args)]
struct SimulateArgs {
    /// Seed of the deterministic stream.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of shops.
    #[arg(long)]
    shops: Option<u32>,
    /// Event-time span in days.
    #[arg(long)]
    days: Option<u32>,
    /// Events per second (wall clock); 0 for as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Stop after this much wall-clock time, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

impl SimulateArgs {
    fn apply(self, cfg: &mut kpiflow_ingest::SimulatorConfig) {
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.shops {
            cfg.shops = v;
        }
        if let Some(v) = self.days {
            cfg.days = v;
        }
        if let Some(v) = self.rate {
            cfg.rate = (v > 0.0).then_some(v);
        }
        if self.max_events.is_some() {
            cfg.max_events = self.max_events;
        }
        if self.duration.is_some() {
            cfg.duration = self.duration;
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: log files and collectors get plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// How long `kpiflow ingest`, `backfill`, `simulate` and `demo` may take to stop after the
/// signal: their connectors have no shutdown setting of their own.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Cancels `token` on Ctrl-C or SIGTERM and exits the process (code 3) if it is still running
/// `grace` after the signal (`key`: the setting that gave it, for the log), whatever it is
/// doing: a stage must answer SIGTERM even if its work is wedged (e.g. waiting for an
/// unreachable broker). Nothing is lost: as after a crash, no checkpoint or commit is written
/// past what was safe, and the inputs since the last commit are read again.
fn cancel_on_signal_within(
    token: CancellationToken,
    grace: std::time::Duration,
    key: &'static str,
) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("stopping: draining in-flight work");
        token.cancel();
        // A thread of its own: the runtime's workers may be the ones that are stuck.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            tracing::error!(
                grace = %humantime::format_duration(grace),
                "not stopped within {key} of the signal: exiting without a final checkpoint or commit (the inputs since the last commit are read again at restart)"
            );
            std::process::exit(3);
        });
    });
}

/// The connectors a `[[connectors.<name>]]` table may name, from the registry, so `--help`
/// never lags behind it.
fn connectors_help() -> String {
    let width = kpiflow_ingest::connector::REGISTRY
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("Connectors:\n");
    for c in kpiflow_ingest::connector::REGISTRY {
        out.push_str(&format!("  {:width$}  {}\n", c.name, c.summary));
    }
    out
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain ("checking …: bad config: `key` = value: problem") rather
            // than a debug dump; RUST_LOG=debug and the logs carry the detail.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let demo = matches!(cli.command, Command::Demo { .. });
    init_tracing(if demo {
        "warn,kpiflow=info"
    } else {
        "info,rdkafka=warn,datafusion=warn"
    });
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(b) = &cli.bootstrap {
        cfg.kafka.bootstrap_servers = b.clone();
        cfg.kafka.validate().context("checking --bootstrap")?;
    }
    if let Some(listen) = cli.metrics_listen {
        cfg.metrics.listen = listen;
    }
    let shutdown = CancellationToken::new();
    match cli.command {
        Command::Demo {
            duration,
            broker_port,
            data_dir,
        } => {
            cancel_on_signal_within(shutdown.clone(), SHUTDOWN_GRACE, "the 30 s shutdown grace");
            demo::run(
                cfg,
                cli.bootstrap.is_some(),
                broker_port,
                data_dir,
                duration,
                shutdown,
            )
            .await
        }
        Command::Simulate(args) => {
            cancel_on_signal_within(shutdown.clone(), SHUTDOWN_GRACE, "the 30 s shutdown grace");
            args.apply(&mut cfg.simulate);
            cfg.simulate
                .validate()
                .context("checking the simulate flags")?;
            let publisher = kpiflow_ingest::publish::KafkaPublisher::new(
                &cfg.kafka,
                kpiflow_core::ComponentMetrics::new("ingest.simulator"),
            )?;
            let mut sim = kpiflow_ingest::connectors::simulator::Simulator::new(cfg.simulate)?;
            let stats = sim.run(&publisher, shutdown).await?;
            tracing::info!(?stats, "simulation published");
            Ok(())
        }
        Command::Ingest { connectors } => {
            cancel_on_signal_within(shutdown.clone(), SHUTDOWN_GRACE, "the 30 s shutdown grace");
            pull::ingest(cfg, &connectors, shutdown).await
        }
        Command::Backfill {
            connector,
            shop,
            from,
            to,
        } => {
            let to = to.unwrap_or_else(chrono::Utc::now);
            pull::backfill(cfg, &connector, &shop, from, to).await
        }
        Command::Process => {
            cancel_on_signal_within(
                shutdown.clone(),
                cfg.processor.shutdown_timeout,
                "processor.shutdown_timeout",
            );
            let readiness = Readiness::default();
            let ready = readiness.part("processor");
            readiness.watch_broker(&cfg.kafka, &shutdown)?;
            metrics::serve(cfg.metrics.listen, readiness, shutdown.clone()).await?;
            kpiflow_processor::run::run(&cfg.kafka, &cfg.processor, Some(ready), shutdown).await?;
            Ok(())
        }
        Command::Sink => {
            cancel_on_signal_within(
                shutdown.clone(),
                cfg.sink.shutdown_timeout,
                "sink.shutdown_timeout",
            );
            let readiness = Readiness::default();
            let ready = readiness.part("sink");
            readiness.watch_broker(&cfg.kafka, &shutdown)?;
            // The automation guard answers on the same listener (`[sink.guard]`).
            let guard = cfg
                .sink
                .guard
                .enabled
                .then(|| kpiflow_sink::Guard::new(&cfg.sink.guard));
            metrics::serve_with(
                cfg.metrics.listen,
                readiness.clone(),
                kpiflow_sink::guard::routes(guard.as_ref()),
                shutdown.clone(),
            )
            .await?;
            let sink = async {
                let result = kpiflow_sink::run(
                    &cfg.kafka,
                    &cfg.sink,
                    None,
                    guard,
                    Some(ready),
                    shutdown.clone(),
                )
                .await;
                // Either half failing stops the other: the process exits to be restarted.
                shutdown.cancel();
                result
            };
            let alerts = async {
                let result = kpiflow_sink::run_alerts(
                    &cfg.kafka,
                    &cfg.alerts,
                    Some(&readiness),
                    shutdown.clone(),
                )
                .await;
                if result.is_err() {
                    shutdown.cancel();
                }
                result
            };
            let (sink, alerts) = tokio::join!(sink, alerts);
            sink?;
            alerts?;
            Ok(())
        }
        Command::Alerts => {
            cancel_on_signal_within(
                shutdown.clone(),
                cfg.alerts.shutdown_timeout,
                "alerts.shutdown_timeout",
            );
            anyhow::ensure!(
                cfg.alerts.any_enabled(),
                "no alert receiver is enabled: set alerts.alertmanager.enabled or \
                 alerts.webhook.enabled to true"
            );
            let readiness = Readiness::default();
            readiness.watch_broker(&cfg.kafka, &shutdown)?;
            metrics::serve(cfg.metrics.listen, readiness.clone(), shutdown.clone()).await?;
            let stats =
                kpiflow_sink::run_alerts(&cfg.kafka, &cfg.alerts, Some(&readiness), shutdown)
                    .await?;
            tracing::info!(?stats, "alerts stopped");
            Ok(())
        }
        Command::Query {
            sql,
            format,
            dir,
            skip_unreadable,
        } => {
            let dir = dir.unwrap_or(cfg.sink.dir);
            let tables = TableStore::open(&dir, &cfg.sink.object_store)?;
            let options = kpiflow_sink::QueryOptions { skip_unreadable };
            let answer = kpiflow_sink::query_with(tables, &sql, options).await?;
            println!("{}", kpiflow_sink::format_batches(&answer.batches, format)?);
            if let Some(note) = answer.skipped_note() {
                // Under the table for a person; on stderr where stdout must stay CSV or JSON.
                match format {
                    kpiflow_sink::OutputFormat::Table => println!("{note}"),
                    _ => eprintln!("{note}"),
                }
            }
            Ok(())
        }
        Command::Compact { older_than, dir } => {
            let dir = dir.unwrap_or(cfg.sink.dir);
            let tables = TableStore::open(&dir, &cfg.sink.object_store)?;
            let stats =
                kpiflow_sink::parquet::compact::compact(&tables, older_than, cfg.sink.compression)
                    .await?;
            println!(
                "{tables}: merged {} small files into {} ({} rows) in {} partitions, \
                 dropping {} copies of kpi_values rows",
                stats.files_in, stats.files_out, stats.rows, stats.partitions, stats.copies_dropped
            );
            if stats.old_layout_files > 0 {
                println!(
                    "{tables}: moved {} kpi_values files of the old kpi=<id>/date=… layout \
                     into date=… partitions",
                    stats.old_layout_files
                );
            }
            Ok(())
        }
        Command::Reconcile(args) => reconcile::run(&cfg.processor, &cfg.sink, args).await,
        Command::CheckConfig => {
            // The sections were checked by Config::load; the connector tables are built by
            // the very function `ingest` builds them with, and dropped unused.
            let connectors = pull::build_all(&cfg, &[])?;
            // What only the sink reads from its environment (the guard webhook's key).
            cfg.sink.guard.check_environment()?;
            println!(
                "configuration OK ({} connector tables checked)",
                connectors.len()
            );
            Ok(())
        }
        Command::ExampleConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
    }
}
