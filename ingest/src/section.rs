//! Parsing a connector's config section with errors that name the key and quote the value
//! (never the value of a secret-like key).

use serde::de::DeserializeOwned;

use crate::IngestError;

/// Key fragments whose values are never quoted in errors.
const SECRET_HINTS: [&str; 4] = ["secret", "token", "password", "key"];

/// Parses `value` (the section called `section`, e.g. `connectors.shopify_webhook`) into `T`;
/// errors read `bad config: \`connectors.shopify_webhook.listen\` = "x": …`.
pub fn parse<T: DeserializeOwned>(
    section: &str,
    value: &serde_json::Value,
) -> Result<T, IngestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match path.as_str() {
            "." => section.to_string(),
            p => format!("{section}.{p}"),
        };
        let last = key
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // The whole section is never quoted: it may hold a secret written by mistake.
        let shown = if path == "." || SECRET_HINTS.iter().any(|h| last.contains(h)) {
            "(not shown)".to_string()
        } else {
            value_at(value, e.path())
        };
        IngestError::config(key, shown, e.into_inner().to_string())
    })
}

fn value_at(root: &serde_json::Value, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut cur = Some(root);
    for seg in path.iter() {
        cur = match (seg, cur) {
            (Segment::Seq { index }, Some(v)) => v.get(*index),
            (Segment::Map { key }, Some(v)) => v.get(key),
            (Segment::Enum { .. }, v) => v,
            _ => None,
        };
    }
    cur.map_or_else(|| "(missing)".to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        port: u16,
        client_secret: crate::pull::secret::SecretRef,
    }

    #[test]
    fn names_the_key_and_hides_secret_values() {
        let err = parse::<S>(
            "c",
            &serde_json::json!({"port": "x", "client_secret": "env:A"}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"bad config: `c.port` = "x": invalid type"#),
            "{err}"
        );
        let err = parse::<S>(
            "c",
            &serde_json::json!({"port": 1, "client_secret": "shpss_literal"}),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("shpss_literal"), "{err}");
        assert!(err.contains("`c.client_secret` = (not shown)"), "{err}");
    }
}
