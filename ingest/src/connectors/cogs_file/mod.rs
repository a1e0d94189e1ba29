//! `cogs_file`: the seller's costs of goods, read from one CSV or TOML file per shop and
//! published as `cost.changed` events (events.orders, keyed by shop), which the profit KPIs
//! price each unit ordered with.
//!
//! ```text
//!  costs.csv / costs.toml ─► parse ─► changed since last publish? ─► cost.changed ─► Publish + flush
//!   (mtime, size polled)     (bad rows: dead letters)  (in memory)     (event_time = mtime)
//! ```
//!
//! # File format
//!
//! CSV (`*.csv`): a header row, then one cost per row. Column names are case-sensitive, in any
//! order; an unknown or repeated column refuses the whole file (one `invalid_file` dead
//! letter), so a misspelt `frieght` is not silently ignored. Cells are trimmed; a UTF-8
//! byte-order mark is skipped.
//!
//! | column           | required | meaning                                                        |
//! |------------------|----------|----------------------------------------------------------------|
//! | `sku`            | yes      | the seller SKU, as the order connectors report it              |
//! | `effective_from` | yes      | first business day (in `time_zone`) the cost applies, `YYYY-MM-DD` |
//! | `purchase`       | yes      | purchase price of one unit, a decimal such as `6.40`           |
//! | `freight`        | no       | first-mile freight per unit (empty: not given)                  |
//! | `duties`         | no       | import duties per unit (empty: not given)                       |
//! | `currency`       | no       | ISO 4217 code of the row's amounts; empty: the table's `currency` |
//!
//! TOML (`*.toml`): `[[cost]]` tables with the same keys; amounts are quoted decimal strings
//! (a TOML number may have lost cents, so `purchase = 6.40` is refused), `effective_from` a
//! TOML date (`2026-11-01`) or a string. Any other top-level key refuses the whole file.
//!
//! Amounts are exact decimals, not negative. The landed cost of a unit is purchase + freight +
//! duties. Samples: `ingest/fixtures/cogs_file/`.
//!
//! # Dead letters
//!
//! A row that cannot be used is dead-lettered (`invalid`) naming the file, the line (CSV) or
//! the entry and its line (TOML: `[[cost]] entry 2 (line 9)`), the column, the value and the
//! rule, with the raw row; the other rows are published. A second row of the same SKU and
//! `effective_from` in one file is dead-lettered (`duplicate`) naming both lines; the first is
//! kept. Each version of the file read dead-letters its bad rows again.
//!
//! # Versions, ids and polling
//!
//! `event_time` is the file's modification time as read (UTC, whole seconds; the current time
//! if the file is dated in the future), `ingest_time` the time it was read. The id is
//! `cogs_file:<shop>:<sku>:<effective_from>:<event_time, RFC 3339>`, so reading an unchanged
//! file again (after a restart) republishes the same ids and times, which the processor counts
//! once, while an edit gives the rows it changed a later version, which replaces the earlier
//! one (for one SKU and day the later `event_time` counts).
//!
//! Every `poll_interval` the file's modification time and size are checked; when either
//! changed the file is read again and only the rows whose values differ from what this process
//! last published (or are new) are published: on start, every row. A changed row's version is
//! at least a second after the one it replaces (an edit within the same second, a copy
//! restored with an older time). A row removed from the file is not withdrawn: its cost holds
//! until a later `effective_from` of its SKU. A file that changed while it was read is read
//! again; write it elsewhere and rename it into place where you can. `poll_interval = "0s"`
//! reads the file once and stops.
//!
//! # Telemetry
//!
//! Metrics component `ingest.cogs_file` ([`PushMetrics`]: rows received, events published,
//! dead letters, `io` and `kafka` errors) and the per-shop `kpiflow_source_*` series. No
//! `source.heartbeat`: a cost file changes when the seller edits it, so its silence says
//! nothing about the shop's data.

pub mod config;
pub mod parse;
pub mod published;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use kpiflow_schemas::{CostChanged, Event, EventHeader};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{CogsFileConfig, Format};
pub use parse::{CostRow, ParsedFile};

use crate::connector::{Connector, RunStats, StopReason};
use crate::pull::Origin;
use crate::push::health::PushHealth;
use crate::push::metrics::{PushMetrics, PushStats};
use crate::push::queue::{Delivery, Rejected, publish};
use crate::{IngestError, Publish};
use published::Published;

/// The registry name, also the events' `source`.
pub const NAME: &str = "cogs_file";
/// The metrics component and dead-letter stage.
pub const COMPONENT: &str = "ingest.cogs_file";
/// The config section.
pub const SECTION: &str = "connectors.cogs_file";

/// Reads of a file that changed while it was read, before the last one is used anyway.
const READ_ATTEMPTS: usize = 3;

/// What one read of the file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// The version read: the file's modification time (UTC, whole seconds, at most now).
    pub version: DateTime<Utc>,
    /// Events published: rows new or changed since the last publish.
    pub published: usize,
    /// Rows equal to what was published before, not published again.
    pub unchanged: usize,
    /// Rows (or the whole file) dead-lettered.
    pub dead_letters: usize,
    /// `true` when the file could not be read as a whole.
    pub failed: bool,
}

/// The connector: one shop's cost file, read whenever it changes, until shutdown.
pub struct CogsFile {
    cfg: CogsFileConfig,
    format: Format,
    marketplace: String,
    metrics: PushMetrics,
    published: Published,
    /// Modification time and size of the last version handled (published or refused).
    seen: Option<(SystemTime, u64)>,
    reads: watch::Sender<Option<FileRead>>,
}

impl CogsFile {
    /// Validates `cfg`; nothing is read yet.
    pub fn new(cfg: CogsFileConfig) -> Result<CogsFile, IngestError> {
        cfg.validate()?;
        let format = cfg.format().ok_or_else(|| {
            IngestError::Internal("validate lets only .csv and .toml paths through".into())
        })?;
        let marketplace = cfg.marketplace();
        let origin = Origin {
            shop: cfg.shop.clone(),
            channel: cfg.channel,
            marketplace: marketplace.clone(),
            source_tz: cfg.time_zone,
        };
        let health = Arc::new(PushHealth::new(NAME, [origin]));
        Ok(CogsFile {
            cfg,
            format,
            marketplace,
            metrics: PushMetrics::new(COMPONENT).with_health(health),
            published: Published::default(),
            seen: None,
            reads: watch::channel(None).0,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> PushStats {
        self.metrics.snapshot()
    }

    /// The latest read, updated once its records are flushed (or the read failed as a whole);
    /// `None` before the first.
    pub fn reads(&self) -> watch::Receiver<Option<FileRead>> {
        self.reads.subscribe()
    }

    fn io(&self, what: &str, e: std::io::Error) -> IngestError {
        self.metrics.error("io");
        IngestError::External {
            system: "cost file".into(),
            detail: format!("{what} {}: {e}", self.cfg.path.display()),
            retryable: true,
        }
    }

    /// Checks the file exists (a configuration error otherwise).
    pub async fn prepare(&self) -> Result<(), IngestError> {
        if !tokio::fs::metadata(&self.cfg.path)
            .await
            .is_ok_and(|m| m.is_file())
        {
            return Err(IngestError::config(
                format!("{SECTION}.path"),
                format!("{:?}", self.cfg.path.display().to_string()),
                "not an existing file",
            ));
        }
        Ok(())
    }

    /// Modification time and size.
    async fn stat(&self) -> Result<(SystemTime, u64), IngestError> {
        let meta = tokio::fs::metadata(&self.cfg.path)
            .await
            .map_err(|e| self.io("reading the metadata of", e))?;
        let modified = meta
            .modified()
            .map_err(|e| self.io("reading the modification time of", e))?;
        Ok((modified, meta.len()))
    }

    /// Reads the file if its modification time or size changed since the last version
    /// handled, and publishes its new and changed rows and its dead letters (flushed). `None`
    /// when nothing changed. After an error the same version is read again next time.
    pub async fn check(
        &mut self,
        publisher: &dyn Publish,
    ) -> Result<Option<FileRead>, IngestError> {
        let mut seen = self.stat().await?;
        if self.seen == Some(seen) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        for _ in 0..READ_ATTEMPTS {
            bytes = tokio::fs::read(&self.cfg.path)
                .await
                .map_err(|e| self.io("reading", e))?;
            let after = self.stat().await?;
            if after == seen {
                break;
            }
            tracing::debug!(file = %self.cfg.path.display(), "cost file changed while read; reading again");
            seen = after;
        }
        let now = Utc::now();
        let version = version(seen.0, now);
        let parsed = parse::parse(self.format, &self.file_name(), &bytes, &self.cfg.currency);
        let changes = self.published.changes(&parsed.rows, version);
        let unchanged = parsed.rows.len() - changes.len();
        let mut delivery = Delivery {
            events: Vec::with_capacity(changes.len()),
            dead_letters: parsed.dead_letters.clone(),
        };
        let mut publishing = Vec::with_capacity(changes.len());
        for c in changes {
            let event = self.event(c.row, c.version, now);
            match event.validate() {
                Ok(()) => {
                    delivery.events.push(event);
                    publishing.push(c);
                }
                // The parser checks what the schema does; this is a second line of defence.
                Err(e) => delivery.dead_letters.push(Rejected {
                    kind: "invalid",
                    reason: format!("file {}, {}: {e}", self.file_name(), c.row.at),
                    raw: c.row.raw.clone(),
                }),
            }
        }
        for _ in 0..parsed.rows.len() + parsed.dead_letters.len() {
            self.metrics.received();
        }
        if let Err(e) = publish(publisher, COMPONENT, &[&delivery]).await {
            self.metrics.failed(&[&delivery]);
            return Err(e);
        }
        self.metrics.acknowledged(&[&delivery]);
        self.published.commit(&publishing);
        self.seen = Some(seen);
        let read = FileRead {
            version,
            published: delivery.events.len(),
            unchanged,
            dead_letters: delivery.dead_letters.len(),
            failed: parsed.failed,
        };
        tracing::info!(file = %self.cfg.path.display(), version = %version.to_rfc3339(),
            published = read.published, unchanged = read.unchanged,
            dead_letters = read.dead_letters, failed = read.failed, "cost file read");
        self.reads.send_replace(Some(read.clone()));
        Ok(Some(read))
    }

    /// The file's name, as dead letters name it.
    fn file_name(&self) -> String {
        file_name(&self.cfg.path)
    }

    /// The `cost.changed` event of `row` at `version`.
    pub fn event(&self, row: &CostRow, version: DateTime<Utc>, now: DateTime<Utc>) -> Event {
        let shop = &self.cfg.shop;
        let time = version.to_rfc3339_opts(SecondsFormat::Secs, true);
        Event::new(
            EventHeader {
                event_id: format!("{NAME}:{shop}:{}:{}:{time}", row.sku, row.effective_from),
                source: NAME.into(),
                shop: shop.clone(),
                channel: self.cfg.channel,
                marketplace: self.marketplace.clone(),
                sku: Some(row.sku.clone()),
                event_time: version,
                source_tz: self.cfg.time_zone,
                ingest_time: now,
            },
            CostChanged {
                effective_from: row.effective_from,
                purchase: row.purchase.clone(),
                freight: row.freight.clone(),
                duties: row.duties.clone(),
            },
        )
    }

    /// Reads the file once, or whenever it changes until `shutdown`. A failed read is logged
    /// and tried again at the next interval; only a configuration error ends the run.
    async fn watch(
        &mut self,
        publisher: &dyn Publish,
        shutdown: CancellationToken,
    ) -> Result<StopReason, IngestError> {
        self.prepare().await?;
        if self.cfg.once() {
            return tokio::select! {
                r = self.check(publisher) => r.map(|_| StopReason::Exhausted),
                () = shutdown.cancelled() => Ok(StopReason::Shutdown),
            };
        }
        loop {
            tokio::select! {
                r = self.check(publisher) => match r {
                    Ok(_) => {}
                    Err(e @ IngestError::Config { .. }) => return Err(e),
                    Err(e) => tracing::error!(error = %e, file = %self.cfg.path.display(),
                        "cost file not read; trying again at the next interval"),
                },
                () = shutdown.cancelled() => return Ok(StopReason::Shutdown),
            }
            tokio::select! {
                () = tokio::time::sleep(self.cfg.poll_interval) => {}
                () = shutdown.cancelled() => return Ok(StopReason::Shutdown),
            }
        }
    }
}

/// The version of a file modified at `modified`, read at `now`: UTC, whole seconds, never
/// after `now` (the processor refuses facts too far ahead of their ingest time).
pub fn version(modified: SystemTime, now: DateTime<Utc>) -> DateTime<Utc> {
    let whole = |t: DateTime<Utc>| DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    whole(DateTime::<Utc>::from(modified)).min(whole(now))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Connector for CogsFile {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(
        &'a mut self,
        publisher: &'a dyn Publish,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<RunStats, IngestError>> {
        Box::pin(async move {
            let began = Instant::now();
            publisher.ensure_topics().await?;
            let stop = self.watch(publisher, shutdown).await?;
            let s = self.stats();
            Ok(RunStats {
                published: s.published,
                dead_lettered: s.dead_lettered,
                stop,
                elapsed: began.elapsed(),
            })
        })
    }
}

/// Builds the connector from its section (the registry's entry point).
pub(crate) fn build(section: serde_json::Value) -> Result<Box<dyn Connector>, IngestError> {
    Ok(Box::new(CogsFile::new(CogsFileConfig::from_value(
        &section,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryPublisher;
    use kpiflow_schemas::{Channel, Decimal, EventBody, Money, SourceTz};
    use std::time::Duration;

    const CSV: &str = "sku,effective_from,purchase,freight,duties,currency\n\
                       SKU-7,2026-11-01,6.40,1.15,0.45,\n\
                       SKU-7,2026-12-01,6.10,,,\n\
                       MUG-12,2026-11-01,-3.20,,,\n";

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn config(path: &Path) -> CogsFileConfig {
        CogsFileConfig::from_value(&serde_json::json!({
            "path": path, "shop": "shop-001", "channel": "amazon",
            "time_zone": "Asia/Shanghai", "poll_interval": "0s",
        }))
        .unwrap()
    }

    /// Writes `text` to `path` with modification time `mtime`.
    fn write(path: &Path, text: &str, mtime: &str) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(t(mtime).into()).unwrap();
    }

    fn usd(a: &str) -> Money {
        Money::usd(a)
    }

    fn expected(
        id: &str,
        sku: &str,
        event_time: &str,
        ingest_time: DateTime<Utc>,
        cost: CostChanged,
    ) -> Event {
        Event::new(
            EventHeader {
                event_id: id.into(),
                source: "cogs_file".into(),
                shop: "shop-001".into(),
                channel: Channel::Amazon,
                marketplace: "ATVPDKIKX0DER".into(),
                sku: Some(sku.into()),
                event_time: t(event_time),
                source_tz: SourceTz(chrono_tz::Asia::Shanghai),
                ingest_time,
            },
            cost,
        )
    }

    #[tokio::test]
    async fn a_csv_file_becomes_exactly_these_events_and_its_bad_row_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.csv");
        write(&path, CSV, "2026-10-28T09:00:00.750Z");
        let mut c = CogsFile::new(config(&path)).unwrap();
        let p = MemoryPublisher::new();
        let read = c.check(&p).await.unwrap().expect("first read");
        assert_eq!(
            read,
            FileRead {
                version: t("2026-10-28T09:00:00Z"),
                published: 2,
                unchanged: 0,
                dead_letters: 1,
                failed: false,
            }
        );
        let events = p.events();
        let ingest = events[0].header.ingest_time;
        assert!(ingest > t("2026-12-01T00:00:00Z"), "ingest_time is now");
        assert_eq!(
            events,
            [
                expected(
                    "cogs_file:shop-001:SKU-7:2026-11-01:2026-10-28T09:00:00Z",
                    "SKU-7",
                    "2026-10-28T09:00:00Z",
                    ingest,
                    CostChanged {
                        effective_from: "2026-11-01".parse().unwrap(),
                        purchase: usd("6.40"),
                        freight: Some(usd("1.15")),
                        duties: Some(usd("0.45")),
                    }
                ),
                expected(
                    "cogs_file:shop-001:SKU-7:2026-12-01:2026-10-28T09:00:00Z",
                    "SKU-7",
                    "2026-10-28T09:00:00Z",
                    ingest,
                    CostChanged {
                        effective_from: "2026-12-01".parse().unwrap(),
                        purchase: usd("6.10"),
                        freight: None,
                        duties: None,
                    }
                ),
            ]
        );
        let EventBody::CostChanged(first) = &events[0].body else {
            panic!()
        };
        assert_eq!(first.landed(), Decimal::parse("8.00").unwrap());
        let dl = p.dead_letters();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].stage, "ingest.cogs_file");
        assert_eq!(dl[0].reason_kind, "invalid");
        assert_eq!(
            dl[0].reason,
            "file costs.csv, line 4, column `purchase` = \"-3.20\": must not be negative"
        );
        assert_eq!(
            (
                c.stats().received,
                c.stats().published,
                c.stats().dead_lettered
            ),
            (3, 2, 1)
        );
        // Unchanged: not read again.
        assert_eq!(c.check(&p).await.unwrap(), None);
        assert_eq!(p.events().len(), 2);
        assert_eq!(*c.reads().borrow(), Some(read));
    }

    #[tokio::test]
    async fn a_toml_file_gives_the_same_events_as_the_csv_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.toml");
        let toml = "[[cost]]\nsku = \"SKU-7\"\neffective_from = 2026-11-01\npurchase = \"6.40\"\n\
                    freight = \"1.15\"\nduties = \"0.45\"\n";
        write(&path, toml, "2026-10-28T09:00:00Z");
        let mut c = CogsFile::new(config(&path)).unwrap();
        let p = MemoryPublisher::new();
        c.check(&p).await.unwrap();
        let events = p.events();
        assert_eq!(
            events,
            [expected(
                "cogs_file:shop-001:SKU-7:2026-11-01:2026-10-28T09:00:00Z",
                "SKU-7",
                "2026-10-28T09:00:00Z",
                events[0].header.ingest_time,
                CostChanged {
                    effective_from: "2026-11-01".parse().unwrap(),
                    purchase: usd("6.40"),
                    freight: Some(usd("1.15")),
                    duties: Some(usd("0.45")),
                }
            )]
        );
        assert!(p.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn the_golden_sample_is_what_the_connector_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.csv");
        write(
            &path,
            "sku,effective_from,purchase,freight,duties\nSKU-7,2026-11-01,6.40,1.15,0.45\n",
            "2026-10-28T09:00:00Z",
        );
        let c = CogsFile::new(config(&path)).unwrap();
        let parsed = parse::parse(
            Format::Csv,
            "costs.csv",
            &std::fs::read(&path).unwrap(),
            "USD",
        );
        let e = c.event(
            &parsed.rows[0],
            t("2026-10-28T09:00:00Z"),
            t("2026-10-28T09:00:01Z"),
        );
        let golden: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../schemas/fixtures/events/cost.changed.json"
        ))
        .unwrap();
        let mine: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        let without_id = |mut v: serde_json::Value| {
            v.as_object_mut().unwrap().remove("event_id");
            v
        };
        assert_eq!(without_id(mine), without_id(golden));
        assert_eq!(
            e.header.event_id,
            "cogs_file:shop-001:SKU-7:2026-11-01:2026-10-28T09:00:00Z"
        );
        e.validate().unwrap();
    }

    #[test]
    fn a_file_dated_in_the_future_is_versioned_now() {
        let now = t("2026-12-05T10:00:00.400Z");
        let future = t("2027-01-01T00:00:00Z");
        assert_eq!(version(future.into(), now), t("2026-12-05T10:00:00Z"));
        let past = t("2026-10-28T09:00:00.999Z");
        assert_eq!(version(past.into(), now), t("2026-10-28T09:00:00Z"));
    }

    #[tokio::test]
    async fn a_failed_publish_reads_the_same_version_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.csv");
        write(&path, CSV, "2026-10-28T09:00:00Z");
        let mut c = CogsFile::new(config(&path)).unwrap();
        let broken = MemoryPublisher::failing_after(1);
        let err = c.check(&broken).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(*c.reads().borrow(), None);
        let p = MemoryPublisher::new();
        let read = c.check(&p).await.unwrap().expect("read again");
        assert_eq!((read.published, read.dead_letters), (2, 1));
    }

    #[tokio::test]
    async fn a_missing_file_is_a_config_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.csv");
        let mut c = CogsFile::new(config(&path)).unwrap();
        let err = c
            .run(&MemoryPublisher::new(), CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "bad config: `connectors.cogs_file.path` = {:?}: not an existing file",
                path.display().to_string()
            )
        );
    }

    #[tokio::test]
    async fn read_once_publishes_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.csv");
        write(&path, CSV, "2026-10-28T09:00:00Z");
        let mut c = crate::connector::build(
            NAME,
            serde_json::json!({"path": path, "shop": "shop-001", "channel": "amazon",
                               "poll_interval": "0s"}),
        )
        .unwrap();
        let p = MemoryPublisher::new();
        let stats =
            tokio::time::timeout(Duration::from_secs(30), c.run(&p, CancellationToken::new()))
                .await
                .expect("stops by itself")
                .unwrap();
        assert_eq!(
            (stats.published, stats.dead_lettered, stats.stop),
            (2, 1, StopReason::Exhausted)
        );
        assert_eq!(p.events().len(), 2);
    }
}
