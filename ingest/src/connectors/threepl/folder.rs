//! The CSV drop folder: each settled `*.csv` file is parsed, published and flushed, and only
//! then moved to `done/` (or `failed/`), so a crash mid-file means the file is read again, with
//! the same event ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::config::{DropConfig, ThreeplShop};
use super::records::{Kind, map};
use super::{COMPONENT, NAME, SECTION};
use crate::push::metrics::PushMetrics;
use crate::push::queue::{Delivery, Rejected, publish};
use crate::{IngestError, Publish};

/// Most bytes of a whole unreadable file kept in its dead letter (Kafka refuses huge records).
const MAX_RAW_FILE: usize = 64 * 1024;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// The file's name.
    pub file: String,
    /// Events published from it.
    pub events: usize,
    /// Rows (or the whole file) dead-lettered.
    pub dead_letters: usize,
    /// Where it was moved.
    pub moved_to: PathBuf,
}

/// A parsed file: what to publish, and whether the file as a whole was unusable.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    /// Events and dead letters.
    pub delivery: Delivery,
    /// `true` when the file could not be read as a whole (its reason is the one dead letter).
    pub failed: bool,
}

/// Parses one file's bytes. Rows that cannot be mapped become dead letters naming file, line,
/// column and value; a file without a usable header becomes one dead letter.
pub fn parse_file(
    name: &str,
    bytes: &[u8],
    shops: &BTreeMap<String, ThreeplShop>,
    now: DateTime<Utc>,
) -> ParsedFile {
    let whole = |reason: String| {
        let raw = bytes[..bytes.len().min(MAX_RAW_FILE)].to_vec();
        let reason = if bytes.len() > MAX_RAW_FILE {
            format!(
                "{reason} (payload: the first {MAX_RAW_FILE} of {} bytes)",
                bytes.len()
            )
        } else {
            reason
        };
        ParsedFile {
            delivery: Delivery {
                events: vec![],
                dead_letters: vec![Rejected {
                    kind: "invalid_file",
                    reason,
                    raw,
                }],
            },
            failed: true,
        }
    };
    // Spreadsheet exports often start with a byte-order mark.
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let columns: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect(),
        Err(e) => return whole(format!("file {name}: unreadable header: {e}")),
    };
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let Some(kind) = Kind::detect(&cols) else {
        return whole(format!(
            "file {name}: header {cols:?} names neither shipment milestones (a `milestone` column) nor stock levels (a `sellable` column)"
        ));
    };
    let missing = kind.missing(&cols);
    if !missing.is_empty() {
        return whole(format!(
            "file {name}: header lacks the column(s) {}",
            missing.join(", ")
        ));
    }
    let header_line = columns.join(",");
    let mut delivery = Delivery::default();
    for result in rdr.records() {
        let outcome = match result {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                Err((format!("file {name}, line {line}: {e}"), Vec::new()))
            }
            Ok(rec) => {
                let line = rec.position().map_or(0, |p| p.line());
                let raw = raw_row(&header_line, &rec);
                if rec.len() == columns.len() {
                    let row: BTreeMap<String, String> = columns
                        .iter()
                        .cloned()
                        .zip(rec.iter().map(str::to_string))
                        .collect();
                    map(kind, &row, shops, NAME, now)
                        .map_err(|fe| (format!("file {name}, line {line}, column {fe}"), raw))
                } else {
                    let (got, want) = (rec.len(), columns.len());
                    Err((
                        format!(
                            "file {name}, line {line}: {got} fields, but the header has {want}"
                        ),
                        raw,
                    ))
                }
            }
        };
        match outcome {
            Ok(event) => delivery.events.push(event),
            Err((reason, raw)) => delivery.dead_letters.push(Rejected {
                kind: "invalid",
                reason,
                raw,
            }),
        }
    }
    ParsedFile {
        delivery,
        failed: false,
    }
}

/// The row as CSV under its header, so the dead letter can be read on its own.
fn raw_row(header: &str, rec: &csv::StringRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(rec);
    let row = w.into_inner().unwrap_or_default();
    [header.as_bytes(), b"\n", &row].concat()
}

/// Watches one folder.
pub struct DropFolder {
    cfg: DropConfig,
    shops: Arc<BTreeMap<String, ThreeplShop>>,
    metrics: PushMetrics,
}

impl DropFolder {
    /// A watcher of `cfg.dir` (validated config expected).
    pub fn new(
        cfg: DropConfig,
        shops: Arc<BTreeMap<String, ThreeplShop>>,
        metrics: PushMetrics,
    ) -> DropFolder {
        DropFolder {
            cfg,
            shops,
            metrics,
        }
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> IngestError {
        self.metrics.error("io");
        IngestError::External {
            system: "3pl drop folder".into(),
            detail: format!("{what} {}: {e}", path.display()),
            retryable: true,
        }
    }

    /// Checks the folder exists and creates `done/` and `failed/`.
    pub async fn prepare(&self) -> Result<(), IngestError> {
        if !tokio::fs::metadata(&self.cfg.dir)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(IngestError::config(
                format!("{SECTION}.drop.dir"),
                format!("{:?}", self.cfg.dir.display().to_string()),
                "not an existing folder",
            ));
        }
        for d in [self.cfg.done(), self.cfg.failed()] {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|e| self.io("creating", &d, e))?;
        }
        Ok(())
    }

    /// The `*.csv` files that have not changed for `settle_time`, by name.
    async fn settled_files(&self) -> Result<Vec<PathBuf>, IngestError> {
        let dir = &self.cfg.dir;
        let mut rd = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| self.io("listing", dir, e))?;
        let now = SystemTime::now();
        let mut files = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| self.io("listing", dir, e))?
        {
            let path = entry.path();
            let is_csv = path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("csv"));
            let Ok(meta) = entry.metadata().await else {
                continue; // removed meanwhile
            };
            if !is_csv || !meta.is_file() {
                continue;
            }
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age >= self.cfg.settle_time);
            if settled {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Processes every settled file once. A file is moved only after its records were
    /// flushed; on an error the scan stops and the file stays for the next scan.
    pub async fn scan_once(
        &self,
        publisher: &dyn Publish,
    ) -> Result<Vec<FileOutcome>, IngestError> {
        let mut done = Vec::new();
        for path in self.settled_files().await? {
            done.push(self.process(&path, publisher).await?);
        }
        Ok(done)
    }

    async fn process(
        &self,
        path: &Path,
        publisher: &dyn Publish,
    ) -> Result<FileOutcome, IngestError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| self.io("reading", path, e))?;
        let parsed = parse_file(&name, &bytes, &self.shops, Utc::now());
        let d = &parsed.delivery;
        for _ in 0..d.events.len() + d.dead_letters.len() {
            self.metrics.received();
        }
        if let Err(e) = publish(publisher, COMPONENT, &[d]).await {
            self.metrics.failed(&[d]);
            return Err(e);
        }
        self.metrics.acknowledged(&[d]);
        let to_dir = if parsed.failed {
            self.cfg.failed()
        } else {
            self.cfg.done()
        };
        // Also done by `prepare`; again here in case the folder was removed meanwhile.
        tokio::fs::create_dir_all(&to_dir)
            .await
            .map_err(|e| self.io("creating", &to_dir, e))?;
        let moved_to = free_name(&to_dir, &name).await;
        tokio::fs::rename(path, &moved_to).await.map_err(|e| {
            self.io(
                "moving (keep done_dir and failed_dir on the same file system)",
                path,
                e,
            )
        })?;
        tracing::info!(file = %name, events = d.events.len(), dead_letters = d.dead_letters.len(),
            to = %moved_to.display(), "3pl file processed");
        Ok(FileOutcome {
            file: name,
            events: d.events.len(),
            dead_letters: d.dead_letters.len(),
            moved_to,
        })
    }

    /// Scans every `poll_interval` until `shutdown`. A failed scan is logged and retried at
    /// the next interval; only a configuration error ends the run.
    pub async fn run(
        &self,
        publisher: &dyn Publish,
        shutdown: CancellationToken,
    ) -> Result<(), IngestError> {
        self.prepare().await?;
        loop {
            tokio::select! {
                r = self.scan_once(publisher) => match r {
                    Ok(_) => {}
                    Err(e @ IngestError::Config { .. }) => return Err(e),
                    Err(e) => tracing::error!(error = %e, "3pl drop folder scan failed; the file stays and is read again"),
                },
                () = shutdown.cancelled() => return Ok(()),
            }
            tokio::select! {
                () = tokio::time::sleep(self.cfg.poll_interval) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// `dir/name`, or `dir/name.<n>` when a file of that name was processed before.
async fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if tokio::fs::metadata(&first).await.is_err() {
        return first;
    }
    let mut n = 1u32;
    loop {
        let p = dir.join(format!("{name}.{n}"));
        if tokio::fs::metadata(&p).await.is_err() {
            return p;
        }
        n += 1;
    }
}
