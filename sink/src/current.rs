//! Which window is current per KPI series, shared by the live gauges and the live view.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kpiflow_schemas::{KpiUpdate, Scope};

/// A live series: one KPI for one scope and window definition, whatever the window's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) kpi: String,
    pub(crate) scope: Scope,
    pub(crate) window: String,
}

impl SeriesKey {
    pub(crate) fn of(u: &KpiUpdate) -> SeriesKey {
        SeriesKey {
            kpi: u.kpi.clone(),
            scope: u.scope.clone(),
            window: u.window.name.clone(),
        }
    }
}

/// Remembers, per series, the newest window start and the highest revision seen for it.
///
/// Late corrections to older windows and replayed older revisions are refused: a live
/// number must never jump back to a stale value. They still reach Parquet.
#[derive(Debug, Default)]
pub(crate) struct CurrentWindows {
    latest: HashMap<SeriesKey, (DateTime<Utc>, u64)>,
}

impl CurrentWindows {
    /// `true` when `u` is for the series' current (or a newer) window and not an older
    /// revision of it; the update then becomes the series' latest.
    pub(crate) fn admit(&mut self, u: &KpiUpdate) -> bool {
        let seen = (u.window.start, u.revision);
        match self.latest.get_mut(&SeriesKey::of(u)) {
            Some(latest) if seen < *latest => false,
            Some(latest) => {
                *latest = seen;
                true
            }
            None => {
                self.latest.insert(SeriesKey::of(u), seen);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::tests::kpi_fixtures;

    #[test]
    fn newer_windows_and_revisions_win() {
        let mut k = kpi_fixtures().remove(1);
        let mut cw = CurrentWindows::default();
        assert!(cw.admit(&k));
        assert!(cw.admit(&k), "a duplicate of the current value is harmless");
        k.revision -= 1;
        assert!(!cw.admit(&k), "an older revision of the current window");
        k.window.start -= chrono::Duration::days(1);
        k.revision = 99;
        assert!(!cw.admit(&k), "a correction to an older window");
        k.window.start += chrono::Duration::days(2);
        k.revision = 1;
        assert!(cw.admit(&k), "a newer window starts at any revision");
    }
}
