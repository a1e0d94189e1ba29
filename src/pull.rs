//! `kpiflow ingest` (every configured connector until Ctrl-C), `kpiflow backfill` (one
//! connector, one shop, a time range, with a progress bar) and the connector half of
//! `kpiflow check-config`; all three build connectors through [`build_all`] / the registry,
//! so check-config refuses exactly what ingest would.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use kpiflow_core::ComponentMetrics;
use kpiflow_core::metrics::{self, Readiness};
use kpiflow_ingest::{Connector, KafkaPublisher};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Reads `2026-11-01T00:00:00Z` (RFC 3339) or `2026-11-01` (midnight UTC).
pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        .map_err(|_| {
            format!("expected a time such as 2026-11-01T00:00:00Z or a date such as 2026-11-01, got {s:?}")
        })
}

/// Builds every `[[connectors.<name>]]` table, or only those of the connectors in `only`:
/// each is parsed, validated and its credentials read, and nothing is connected or bound.
pub(crate) fn build_all(cfg: &Config, only: &[String]) -> anyhow::Result<Vec<Box<dyn Connector>>> {
    if let Some(missing) = only.iter().find(|n| !cfg.connectors.contains_key(*n)) {
        let configured: Vec<&String> = cfg.connectors.keys().collect();
        bail!(
            "no [[connectors.{missing}]] table in the configuration (configured: {configured:?})"
        );
    }
    let mut out = Vec::new();
    for (name, tables) in &cfg.connectors {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        for (i, table) in tables.iter().enumerate() {
            out.push(
                kpiflow_ingest::connector::build(name, table.clone())
                    .with_context(|| format!("building connectors.{name}[{i}]"))?,
            );
        }
    }
    Ok(out)
}

/// Serves /metrics, /healthz and /readyz on `[metrics] listen` (or `--metrics-listen`) until
/// `shutdown`; `/readyz` waits for the returned flag of `part`, and is false while no broker
/// answers (every connector, webhook receivers included, publishes to Kafka).
async fn serve_metrics(
    cfg: &Config,
    part: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<AtomicBool>> {
    let readiness = Readiness::default();
    let ready = readiness.part(part);
    readiness.watch_broker(&cfg.kafka, shutdown)?;
    let (addr, _) = metrics::serve(cfg.metrics.listen, readiness, shutdown.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(ready)
}

/// Runs every configured connector (or those named in `only`) until `shutdown`, serving
/// /metrics. One that fails stops the others, so the failure is seen at once.
pub(crate) async fn ingest(
    cfg: Config,
    only: &[String],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut connectors = build_all(&cfg, only)?;
    if connectors.is_empty() {
        bail!("no [[connectors.<name>]] tables in the configuration: nothing to ingest");
    }
    let ready = serve_metrics(&cfg, "ingest", &shutdown).await?;
    let publisher = KafkaPublisher::new(&cfg.kafka, ComponentMetrics::new("ingest.pull"))?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(connectors = connectors.len(), "connectors starting");
    let runs = connectors.iter_mut().map(|c| {
        let (publisher, shutdown) = (&publisher, shutdown.clone());
        async move {
            let r = c.run(publisher, shutdown.clone()).await;
            if r.is_err() {
                shutdown.cancel();
            }
            r
        }
    });
    let results = futures::future::join_all(runs).await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Pulls `[from, to)` from the `connector` table of `shop`, drawing a progress bar with ETA,
/// serving /metrics as ingest does (the connector's `kpiflow_source_*` series) and publishing a
/// `source.heartbeat` after every step (see `PullConnector::backfill`).
pub(crate) async fn backfill(
    cfg: Config,
    connector: &str,
    shop: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let tables = cfg.connectors.get(connector).with_context(|| {
        let known: Vec<&String> = cfg.connectors.keys().collect();
        format!("no [[connectors.{connector}]] table in the configuration (configured: {known:?})")
    })?;
    let table = tables
        .iter()
        .find(|t| t.get("shop").and_then(|s| s.as_str()) == Some(shop))
        .with_context(|| {
            let shops: Vec<&str> = tables
                .iter()
                .filter_map(|t| t.get("shop").and_then(|s| s.as_str()))
                .collect();
            format!(
                "no [[connectors.{connector}]] table has shop = {shop:?} (configured: {shops:?})"
            )
        })?;
    let mut c = kpiflow_ingest::connector::build(connector, table.clone())
        .with_context(|| format!("building connectors.{connector} for shop {shop:?}"))?;
    // Stops the endpoint when the backfill ends, however it ends.
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let ready = serve_metrics(&cfg, "backfill", &shutdown).await?;
    let publisher = KafkaPublisher::new(&cfg.kafka, ComponentMetrics::new("ingest.backfill"))?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let bar = indicatif::ProgressBar::new(10_000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta} {msg}",
        )
        .context("the progress bar template")?,
    );
    bar.set_prefix(format!("{connector} {shop}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let stats = kpiflow_ingest::pull::backfill(c.as_mut(), from, to, &publisher, |p| {
        bar.set_position((p.fraction() * 10_000.0).round() as u64);
        bar.set_message(format!(
            "up to {} · {} events, {} dead-lettered",
            p.done_until.format("%Y-%m-%d %H:%M"),
            p.counts.published,
            p.counts.dead_lettered
        ));
    })
    .await;
    bar.finish();
    let stats = stats?;
    tracing::info!(
        connector,
        shop,
        published = stats.published,
        dead_lettered = stats.dead_lettered,
        elapsed = ?stats.elapsed,
        "backfill delivered"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_parse() {
        assert_eq!(
            parse_time("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-01T08:00:00-08:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T16:00:00+00:00"
        );
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("\"yesterday\"")
        );
    }
}
