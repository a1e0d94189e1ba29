//! `kpiflow reconcile`: recompute the catalog's KPIs as batch SQL over the events archive and
//! list where the stream's published values differ.

use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::prelude::ParquetReadOptions;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::reconcile::{Report, reconcile, rows};

/// Where the inputs are.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Folder of the events archive (Parquet with the `events` table schema). Default:
    /// `<sink dir>/events`.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Folder of the sink's Parquet tables (kpi_values). Default: [sink] dir.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Only these KPIs (repeat the flag). Default: every KPI found.
    #[arg(long)]
    pub(crate) kpi: Vec<String>,
    /// Output format of the differences.
    #[arg(long, default_value = "table")]
    pub(crate) format: kpiflow_sink::OutputFormat,
}

/// Runs the comparison over `events_dir` and the sink tables in `dir`.
pub(crate) async fn compare(
    processor: &ProcessorConfig,
    events_dir: &Path,
    dir: &Path,
    kpis: &[String],
) -> anyhow::Result<Report> {
    let compiled = processor.compile().context("compiling the KPI catalog")?;
    let ctx = kpiflow_sink::query::session(dir)
        .await
        .with_context(|| format!("opening the Parquet tables in {}", dir.display()))?;
    let schema = kpiflow_processor::event_table::schema();
    let events = events_dir
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", events_dir.display()))?;
    // The sink's session has the `events` table of its own folder; the archive may be
    // elsewhere (--events).
    ctx.deregister_table("events")
        .context("replacing the session's events table")?;
    ctx.register_parquet(
        "events",
        events,
        ParquetReadOptions::default().schema(schema.as_ref()),
    )
    .await
    .with_context(|| format!("reading the events archive in {events}"))?;
    Ok(reconcile(&ctx, &compiled.catalog, kpis).await?)
}

/// The command: prints the differences; fails (exit code 1) when there are any.
pub(crate) async fn run(
    processor: &ProcessorConfig,
    sink_dir: &Path,
    args: Args,
) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| sink_dir.to_path_buf());
    let events = args.events.unwrap_or_else(|| dir.join("events"));
    let report = compare(processor, &events, &dir, &args.kpi).await?;
    if !report.unknown_kpis.is_empty() {
        eprintln!(
            "skipped KPIs the catalog does not define: {}",
            report.unknown_kpis.join(", ")
        );
    }
    if report.differences.is_empty() {
        println!(
            "{} published windows match the batch recomputation",
            report.checked
        );
        return Ok(());
    }
    let table = rows(&report);
    match args.format {
        kpiflow_sink::OutputFormat::Json => {
            for r in &table {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        kpiflow_sink::OutputFormat::Csv => {
            println!("kpi,scope,window,start,end,stream,batch");
            for r in &table {
                println!(
                    "{},{},{},{},{},{},{}",
                    r["kpi"],
                    r["scope"],
                    r["window"],
                    r["start"],
                    r["end"],
                    r["stream"],
                    r["batch"]
                );
            }
        }
        _ => {
            let mut t = comfy_table::Table::new();
            t.set_header(["kpi", "scope", "window", "start", "end", "stream", "batch"]);
            for r in &table {
                t.add_row([
                    &r["kpi"],
                    &r["scope"],
                    &r["window"],
                    &r["start"],
                    &r["end"],
                    &r["stream"],
                    &r["batch"],
                ]);
            }
            println!("{t}");
        }
    }
    anyhow::bail!(
        "{} of {} published windows differ from the batch recomputation",
        report.differences.len(),
        report.checked
    )
}
