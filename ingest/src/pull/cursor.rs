//! Durable checkpoints: one JSON file per (connector, shop), replaced atomically.
//!
//! A connector saves its high-water mark only after the publisher flushed every event the
//! mark covers (the Vector / rdkafka rule: store the offset after delivery). A crash between
//! the flush and the save re-reads a little, and the events' deterministic ids let the
//! processor drop what it already counted.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::IngestError;

/// What a connector remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The connector, e.g. `amazon_sp_orders`.
    pub connector: String,
    /// The shop.
    pub shop: String,
    /// Everything the platform changed before this instant has been published and flushed.
    pub high_water: DateTime<Utc>,
    /// When the cursor was saved (wall clock).
    pub saved_at: DateTime<Utc>,
}

/// A folder of cursor files, `<connector>--<shop>.json`.
#[derive(Debug, Clone)]
pub struct CursorStore {
    dir: PathBuf,
}

impl CursorStore {
    /// Cursors under `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> CursorStore {
        CursorStore { dir: dir.into() }
    }

    /// The file of (connector, shop); characters outside `[A-Za-z0-9._-]` in the shop id are
    /// written as `%XX`, so any shop id is a safe file name.
    pub fn path(&self, connector: &str, shop: &str) -> PathBuf {
        let mut name = format!("{connector}--");
        for b in shop.bytes() {
            if b.is_ascii_alphanumeric()
                || b == b'_'
                || b == b'-'
                || (b == b'.' && !name.ends_with('-'))
            {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    /// The saved cursor, or `None` when there is none yet. A file that cannot be read is an
    /// error (starting over silently would re-read or skip history).
    pub async fn load(&self, connector: &str, shop: &str) -> Result<Option<Cursor>, IngestError> {
        let path = self.path(connector, shop);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "reading", &e)),
        };
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|e| IngestError::External {
            system: "cursor store".into(),
            detail: format!(
                "{} is not a cursor file ({e}); fix or delete it (deleting re-reads the initial lookback)",
                path.display()
            ),
            retryable: false,
        })?;
        Ok(Some(cursor))
    }

    /// Replaces the cursor atomically: write a temporary file, fsync it, rename it over the
    /// old one, fsync the folder. A crash leaves the old cursor or the new one, never a torn file.
    pub async fn save(&self, cursor: &Cursor) -> Result<(), IngestError> {
        let path = self.path(&cursor.connector, &cursor.shop);
        let dir = self.dir.clone();
        let bytes = serde_json::to_vec_pretty(cursor)
            .map_err(|e| IngestError::Internal(format!("encoding a cursor: {e}")))?;
        tokio::task::spawn_blocking(move || write_atomically(&dir, &path, &bytes))
            .await
            .map_err(|e| IngestError::Internal(format!("the cursor writer panicked: {e}")))?
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", &e))?;
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the folder is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, "writing", &e)
    })
}

fn io_error(path: &Path, doing: &str, e: &std::io::Error) -> IngestError {
    IngestError::External {
        system: "cursor store".into(),
        detail: format!("{doing} {}: {e}", path.display()),
        retryable: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_replace_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::new(dir.path().join("cursors"));
        assert_eq!(
            store.load("amazon_sp_orders", "shop-1").await.unwrap(),
            None
        );
        let mut c = Cursor {
            connector: "amazon_sp_orders".into(),
            shop: "shop-1".into(),
            high_water: "2026-11-02T17:00:00Z".parse().unwrap(),
            saved_at: "2026-11-02T17:05:00Z".parse().unwrap(),
        };
        store.save(&c).await.unwrap();
        c.high_water = "2026-11-02T18:00:00Z".parse().unwrap();
        store.save(&c).await.unwrap();
        assert_eq!(
            store.load("amazon_sp_orders", "shop-1").await.unwrap(),
            Some(c)
        );
        // Only the cursor file remains: no temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("cursors"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["amazon_sp_orders--shop-1.json"]);
    }

    #[tokio::test]
    async fn a_corrupt_cursor_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::new(dir.path());
        std::fs::write(store.path("walmart_orders", "s"), b"{not json").unwrap();
        let err = store
            .load("walmart_orders", "s")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("walmart_orders--s.json is not a cursor file"),
            "{err}"
        );
    }

    #[test]
    fn shop_ids_become_safe_file_names() {
        let store = CursorStore::new("/c");
        assert_eq!(
            store.path("x", "../etc/pass wd").file_name().unwrap(),
            "x--%2E.%2Fetc%2Fpass%20wd.json"
        );
        assert_eq!(
            store
                .path("x", "my-shop.myshopify.com")
                .file_name()
                .unwrap(),
            "x--my-shop.myshopify.com.json"
        );
    }
}
