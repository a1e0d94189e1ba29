//! JSON Schema documents generated from the Rust types; the files in `schemas/json/` are these.

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

use crate::{BreachEvent, DeadLetter, EventBody, EventHeader, KpiUpdate};

/// Every document as (file name, JSON Schema): one per canonical event schema and version,
/// plus the processor's outputs and the dead-letter record.
pub fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for &(name, version) in EventBody::SCHEMAS {
        let mut generator = SchemaGenerator::default();
        let payload = EventBody::payload_schema(name, &mut generator)
            .expect("every listed schema has a payload type");
        let mut root = to_value(generator.into_root_schema_for::<EventHeader>());
        root["title"] = json!(name);
        root["description"] = json!(format!(
            "kpiflow canonical event `{name}` version {version}: the common header plus `payload`."
        ));
        let props = root["properties"]
            .as_object_mut()
            .expect("header schema has properties");
        props.insert(
            "schema".into(),
            json!({"description": "Schema name.", "const": name}),
        );
        props.insert(
            "schema_version".into(),
            json!({"description": "Schema version.", "const": version}),
        );
        props.insert("payload".into(), to_value(payload));
        let required = root["required"]
            .as_array_mut()
            .expect("header schema lists required fields");
        for field in ["schema", "schema_version", "payload"] {
            required.push(json!(field));
        }
        docs.push((format!("{name}.v{version}.schema.json"), root));
    }
    docs.push(output::<KpiUpdate>("kpi.update.v1.schema.json"));
    docs.push(output::<BreachEvent>("breach.v1.schema.json"));
    docs.push(output::<DeadLetter>("deadletter.v1.schema.json"));
    docs
}

fn output<T: JsonSchema>(file: &str) -> (String, Value) {
    (
        file.to_string(),
        to_value(SchemaGenerator::default().into_root_schema_for::<T>()),
    )
}

fn to_value(schema: schemars::Schema) -> Value {
    schema.to_value()
}

/// Pretty JSON with a trailing newline, as the committed files are written.
pub fn render(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("JSON values serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The committed files must be exactly what the types generate: the two cannot drift.
    /// Run with `KPIFLOW_BLESS=1` after changing a type to rewrite them.
    #[test]
    fn committed_json_schemas_match_the_rust_types() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
        let bless = std::env::var_os("KPIFLOW_BLESS").is_some();
        let docs = documents();
        let mut stale = Vec::new();
        for (file, doc) in &docs {
            let path = dir.join(file);
            let want = render(doc);
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &want).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(file.clone());
            }
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".schema.json"))
                    .collect()
            })
            .unwrap_or_default();
        on_disk.retain(|n| !docs.iter().any(|(f, _)| f == n));
        assert!(
            stale.is_empty() && on_disk.is_empty(),
            "schemas/json is out of date (stale: {stale:?}, orphaned: {on_disk:?}); \
             run `KPIFLOW_BLESS=1 cargo test -p kpiflow-schemas` and commit the result"
        );
    }

    #[test]
    fn every_event_document_pins_its_schema_name() {
        for (file, doc) in documents() {
            if let Some(name) = doc["properties"]["schema"]["const"].as_str() {
                assert!(file.starts_with(name), "{file} documents {name}");
                assert!(
                    doc["required"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("payload"))
                );
            }
        }
    }
}
