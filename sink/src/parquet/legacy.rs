//! The `kpi_values` layout before issue 12 (`kpi=<id>/date=…/`, no `kpi` column): still read, rewritten by compaction.
//!
//! A sink writes `kpi_values/date=…/` files with a `kpi` column; folders of an older sink,
//! `kpi_values/kpi=<id>/date=…/`, hold files without it. DataFusion's listing skips files
//! whose path does not match a table's partition columns, so each layout is invisible to the
//! other's table: the query session lists the old one as a second table and unions the two
//! ([`crate::query`]), and only when [`present`] finds old files, so an up-to-date folder pays
//! nothing. `kpiflow compact` moves every old file's rows into its `date=` partition with the
//! `kpi` column taken from the folder name ([`crate::parquet::compact`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use super::store::TableStore;
use super::{DATE_COLUMN, FILE_EXTENSION, KPI_COLUMN, Table, kpi_values};
use crate::SinkError;

/// The folder level of the old layout, `kpi=<id>`.
const LEVEL: &str = "kpi=";

/// The old layout's partition columns: `kpi` (Utf8) then `date` (Date32).
pub fn partition_columns() -> Vec<(String, DataType)> {
    vec![
        (KPI_COLUMN.to_string(), DataType::Utf8),
        (DATE_COLUMN.to_string(), DataType::Date32),
    ]
}

/// The schema of the old layout's files: `kpi_values`'s without `kpi`.
pub fn file_schema() -> SchemaRef {
    let schema = kpi_values::schema();
    let fields = schema
        .fields()
        .iter()
        .filter(|f| f.name() != KPI_COLUMN)
        .cloned()
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Splits an old partition path, `kpi=gmv/date=2025-03-14`, into the KPI id and the current
/// partition path (`date=2025-03-14`); `None` for a current one.
pub fn split(partition: &str) -> Option<(&str, &str)> {
    let (level, rest) = partition.split_once('/')?;
    let kpi = level.strip_prefix(LEVEL)?;
    (!kpi.is_empty() && rest.starts_with(&format!("{DATE_COLUMN}="))).then_some((kpi, rest))
}

/// An old file's batch in the current schema: `kpi` (from its folder) prepended.
pub fn with_kpi(batch: &RecordBatch, kpi: &str) -> Result<RecordBatch, SinkError> {
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        kpi,
        batch.num_rows(),
    )));
    let columns = std::iter::once(ids)
        .chain(batch.columns().iter().cloned())
        .collect();
    RecordBatch::try_new(kpi_values::schema(), columns).map_err(|e| {
        SinkError::Internal(format!(
            "an old kpi_values file of kpi={kpi} does not match the table's schema: {e}"
        ))
    })
}

/// Whether `kpi_values` still holds committed files in the old layout (one listing of the
/// table's top level, then of the old folders only).
pub async fn present(tables: &TableStore) -> Result<bool, SinkError> {
    if tables.local().is_some_and(|dir| !dir.exists()) {
        return Ok(false);
    }
    let (store, root) = tables.object_store()?;
    let prefix = root.clone().join(Table::KpiValues.name());
    let top = match store.list_with_delimiter(Some(&prefix)).await {
        Ok(top) => top,
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(storage(format!("listing {prefix}"), e)),
    };
    for folder in top.common_prefixes {
        let old = folder
            .filename()
            .is_some_and(|name| name.starts_with(LEVEL));
        if old && has_committed_file(&store, &folder).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn has_committed_file(
    store: &Arc<dyn ObjectStore>,
    folder: &ObjectPath,
) -> Result<bool, SinkError> {
    let mut files = store.list(Some(folder));
    while let Some(meta) = files
        .try_next()
        .await
        .map_err(|e| storage(format!("listing {folder}"), e))?
    {
        let name = meta.location.filename().unwrap_or_default();
        if name.ends_with(FILE_EXTENSION) && !name.starts_with('.') {
            return Ok(true);
        }
    }
    Ok(false)
}

fn storage(context: String, e: object_store::Error) -> SinkError {
    kpiflow_core::CoreError::storage(context, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_partition_paths_split_into_the_kpi_and_the_date_partition() {
        assert_eq!(
            split("kpi=gmv/date=2025-03-14"),
            Some(("gmv", "date=2025-03-14"))
        );
        assert_eq!(split("date=2025-03-14"), None);
        assert_eq!(split("kpi=/date=2025-03-14"), None);
        assert_eq!(split("kpi=gmv"), None);
        assert_eq!(split("kpi=gmv/other=1"), None);
    }

    #[test]
    fn the_old_file_schema_is_the_current_one_without_kpi() {
        let old = file_schema();
        let current = kpi_values::schema();
        assert_eq!(old.fields().len() + 1, current.fields().len());
        assert!(old.field_with_name(KPI_COLUMN).is_err());
        assert_eq!(current.field(0).name(), KPI_COLUMN);
        assert_eq!(&old.fields()[..], &current.fields()[1..]);
    }
}
