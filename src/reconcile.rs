//! `kpiflow reconcile`: recompute the catalog's KPIs as batch SQL over the events archive and
//! list where the stream's published values differ.

use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::prelude::ParquetReadOptions;
use kpiflow_core::storage::Location;
use kpiflow_processor::ProcessorConfig;
use kpiflow_processor::reconcile::{Report, reconcile, rows};
use kpiflow_sink::SinkConfig;
use kpiflow_sink::TableStore;

/// Where the inputs are.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Folder of the events archive (Parquet with the `events` table schema). Default: the
    /// `events` table of the sink's tables.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Root of the sink's Parquet tables: a folder or s3://bucket/prefix (with the S3
    /// settings of [sink.object_store]). Default: [sink] dir.
    #[arg(long, value_parser = Location::parse)]
    pub(crate) dir: Option<Location>,
    /// Only these KPIs (repeat the flag). Default: every KPI found.
    #[arg(long)]
    pub(crate) kpi: Vec<String>,
    /// Output format of the differences.
    #[arg(long, default_value = "table")]
    pub(crate) format: kpiflow_sink::OutputFormat,
}

/// Runs the comparison over the sink tables in `tables`, with the events archive of those
/// tables or, when given, the one in `events_dir`.
pub(crate) async fn compare(
    processor: &ProcessorConfig,
    tables: TableStore,
    events_dir: Option<&Path>,
    kpis: &[String],
) -> anyhow::Result<Report> {
    let compiled = processor.compile().context("compiling the KPI catalog")?;
    let ctx = kpiflow_sink::query::session(&tables)
        .await
        .with_context(|| format!("opening the Parquet tables in {tables}"))?;
    if let Some(events_dir) = events_dir {
        let schema = kpiflow_schemas::event_table::schema();
        let events = events_dir
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8", events_dir.display()))?;
        // The sink's session has the `events` table of its own root; this archive is elsewhere.
        ctx.deregister_table("events")
            .context("replacing the session's events table")?;
        ctx.register_parquet(
            "events",
            events,
            ParquetReadOptions::default().schema(schema.as_ref()),
        )
        .await
        .with_context(|| format!("reading the events archive in {events}"))?;
    }
    Ok(reconcile(&ctx, &compiled, kpis).await?)
}

/// The command: prints the differences; fails (exit code 1) when there are any.
pub(crate) async fn run(
    processor: &ProcessorConfig,
    sink: &SinkConfig,
    args: Args,
) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| sink.dir.clone());
    let tables = TableStore::open(&dir, &sink.object_store)?;
    let report = compare(processor, tables, args.events.as_deref(), &args.kpi).await?;
    if !report.unknown_kpis.is_empty() {
        eprintln!(
            "skipped KPIs the catalog does not define: {}",
            report.unknown_kpis.join(", ")
        );
    }
    if !report.daily_kpis.is_empty() {
        eprintln!(
            "skipped KPIs over daily stock levels carried forward between snapshots (the SQL recomputation does not rebuild them; tests/oracle does): {}",
            report.daily_kpis.join(", ")
        );
    }
    if !report.cost_kpis.is_empty() {
        eprintln!(
            "skipped KPIs over costs of goods, priced per SKU and day and repriced by costs dated back (the SQL recomputation does not rebuild them): {}",
            report.cost_kpis.join(", ")
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
