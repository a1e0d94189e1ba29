//! What was published from the file since the connector started: which rows a new version of
//! the file changes, and the version (event time) each change gets.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use kpiflow_schemas::Money;

use super::parse::CostRow;

/// A cost's values: what a change is judged on.
type Values = (Money, Option<Money>, Option<Money>);

/// The last published version of every (SKU, effective_from), in memory.
#[derive(Debug, Default)]
pub struct Published {
    costs: BTreeMap<(String, NaiveDate), (Values, DateTime<Utc>)>,
}

/// A row to publish, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    /// The row.
    pub row: &'a CostRow,
    /// Its event time.
    pub version: DateTime<Utc>,
}

fn values(row: &CostRow) -> Values {
    (
        row.purchase.clone(),
        row.freight.clone(),
        row.duties.clone(),
    )
}

impl Published {
    /// The rows of a file version read at `version` that need publishing: those never
    /// published, and those whose values differ from their last published version. A change
    /// is at `version`, but always at least a second after the version it replaces, so it
    /// wins even when the file was edited twice within a second or its modification time went
    /// back (a restored copy); the rest are left out (their last version still holds).
    pub fn changes<'a>(&self, rows: &'a [CostRow], version: DateTime<Utc>) -> Vec<Change<'a>> {
        rows.iter()
            .filter_map(|row| match self.costs.get(&row.key()) {
                None => Some(Change { row, version }),
                Some((v, _)) if *v == values(row) => None,
                Some((_, before)) => Some(Change {
                    row,
                    version: version.max(*before + TimeDelta::seconds(1)),
                }),
            })
            .collect()
    }

    /// Records `changes` as published (call once the publisher flushed them).
    pub fn commit(&mut self, changes: &[Change<'_>]) {
        for c in changes {
            self.costs.insert(c.row.key(), (values(c.row), c.version));
        }
    }

    /// How many costs were published.
    pub fn len(&self) -> usize {
        self.costs.len()
    }

    /// `true` before anything was published.
    pub fn is_empty(&self) -> bool {
        self.costs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sku: &str, purchase: &str, freight: Option<&str>) -> CostRow {
        CostRow {
            sku: sku.into(),
            effective_from: "2026-11-01".parse().unwrap(),
            purchase: Money::usd(purchase),
            freight: freight.map(Money::usd),
            duties: None,
            at: String::new(),
            raw: vec![],
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn skus_and_versions(c: &[Change<'_>]) -> Vec<(String, String)> {
        c.iter()
            .map(|c| (c.row.sku.clone(), c.version.to_rfc3339()))
            .collect()
    }

    #[test]
    fn first_every_row_then_only_the_changed_ones() {
        let mut p = Published::default();
        let first = [row("A", "1.00", None), row("B", "2.00", Some("0.50"))];
        let c = p.changes(&first, t("2026-10-28T09:00:00Z"));
        assert_eq!(
            skus_and_versions(&c),
            [
                ("A".into(), "2026-10-28T09:00:00+00:00".into()),
                ("B".into(), "2026-10-28T09:00:00+00:00".into())
            ]
        );
        p.commit(&c);
        assert_eq!(p.len(), 2);
        // The same values written differently ("1.0") are the same cost; B's freight changed,
        // C is new.
        let second = [
            row("A", "1.0", None),
            row("B", "2.00", Some("0.55")),
            row("C", "3.00", None),
        ];
        let c = p.changes(&second, t("2026-10-29T10:30:00Z"));
        assert_eq!(
            skus_and_versions(&c),
            [
                ("B".into(), "2026-10-29T10:30:00+00:00".into()),
                ("C".into(), "2026-10-29T10:30:00+00:00".into())
            ]
        );
        // Not committed (the publish failed): the same changes again.
        assert_eq!(p.changes(&second, t("2026-10-29T10:30:00Z")), c);
        p.commit(&c);
        assert!(
            p.changes(&second, t("2026-10-29T10:30:00Z")).is_empty(),
            "nothing changed since"
        );
    }

    #[test]
    fn a_change_is_always_newer_than_the_version_it_replaces() {
        let mut p = Published::default();
        let first = [row("A", "1.00", None)];
        let c = p.changes(&first, t("2026-10-28T09:00:00Z"));
        p.commit(&c);
        // Edited again within the same second, then a copy with an older time restored.
        let same_second = [row("A", "1.10", None)];
        let c = p.changes(&same_second, t("2026-10-28T09:00:00Z"));
        assert_eq!(
            skus_and_versions(&c),
            [("A".into(), "2026-10-28T09:00:01+00:00".into())]
        );
        p.commit(&c);
        let restored = [row("A", "1.00", None)];
        let c = p.changes(&restored, t("2026-10-01T00:00:00Z"));
        assert_eq!(
            skus_and_versions(&c),
            [("A".into(), "2026-10-28T09:00:02+00:00".into())]
        );
    }
}
