//! Where durable files live: a local folder, or an S3-compatible bucket through `object_store`.
//!
//! The processor's checkpoints and the sink's Parquet tables are both configured with a
//! location string and an optional table of S3 settings:
//!
//! ```toml
//! [sink]
//! dir = "s3://kpiflow-data/prod"          # or a local folder: dir = "kpiflow-data"
//!
//! [sink.object_store]                     # only for s3:// locations
//! endpoint = "http://minio.internal:9000" # MinIO, Ceph, R2…; omit for AWS
//! region = "us-east-1"
//! allow_http = "true"
//! ```
//!
//! Settings are `object_store`'s S3 keys (`endpoint`, `region`, `allow_http`,
//! `virtual_hosted_style_request`, `timeout`, …, with or without an `aws_` prefix). The
//! standard `AWS_*` environment variables are read first and the table overrides them.
//! Credentials are refused in the table: they belong in the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), a web-identity token
//! or the instance role, so a config file can be committed and printed safely.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use url::Url;

use crate::CoreError;

/// S3 settings (`[… .object_store]` tables): `object_store` key → value.
pub type StoreOptions = BTreeMap<String, String>;

/// A configured location: a local folder or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on a local (or mounted) filesystem.
    Local(PathBuf),
    /// A prefix in an S3-compatible bucket.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The key prefix inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

impl Location {
    /// Parses a location: `s3://bucket[/prefix]`, or anything without a scheme as a local
    /// path. Other schemes (`gs://`, `az://`, `http://`…) are refused rather than taken for
    /// a folder named `gs:`.
    pub fn parse(raw: &str) -> Result<Location, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(raw)));
        };
        match scheme {
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err("names no bucket: expected s3://<bucket>[/<prefix>]".into());
                }
                let prefix = prefix.trim_matches('/');
                ObjectPath::parse(prefix).map_err(|e| format!("bad key prefix {prefix:?}: {e}"))?;
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                })
            }
            "file" => Ok(Location::Local(PathBuf::from(rest))),
            other => Err(format!(
                "scheme {other}:// is not supported: use a local folder or s3://<bucket>[/<prefix>] (S3-compatible stores such as MinIO, Ceph or R2 work through `endpoint`)"
            )),
        }
    }

    /// The location `name` below this one (a subfolder, or a longer key prefix).
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(name)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                },
            },
        }
    }

    /// The local folder, if this is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(dir) => Some(dir),
            Location::S3 { .. } => None,
        }
    }

    /// Checks `options` against this location before any I/O: a table only for `s3://`,
    /// only keys `object_store` knows, no credentials. `key` is the config key of the table
    /// (e.g. `sink.object_store`) for the messages.
    pub fn validate_options(&self, key: &str, options: &StoreOptions) -> Result<(), CoreError> {
        if let (Location::Local(dir), Some((name, value))) = (self, options.iter().next()) {
            return Err(CoreError::config(
                format!("{key}.{name}"),
                value,
                format!(
                    "S3 settings apply only to s3:// locations, and this one is the local folder {}",
                    dir.display()
                ),
            ));
        }
        for (name, value) in options {
            s3_key(&format!("{key}.{name}"), name, value)?;
        }
        Ok(())
    }

    /// Opens the store behind an `s3://` location ([`Bucket`]); `None` for a local folder.
    /// Validates `options` first (see [`Location::validate_options`]).
    pub fn open(&self, key: &str, options: &StoreOptions) -> Result<Option<Bucket>, CoreError> {
        self.validate_options(key, options)?;
        let Location::S3 { bucket, prefix } = self else {
            return Ok(None);
        };
        // The environment first (AWS_REGION, AWS_ENDPOINT_URL, credentials…), the file over it.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (name, value) in options {
            builder = builder.with_config(s3_key(&format!("{key}.{name}"), name, value)?, value);
        }
        let store = builder.build().map_err(|e| {
            CoreError::config(
                key,
                self.to_string(),
                format!("cannot set up the S3 client: {e}"),
            )
        })?;
        Ok(Some(Bucket {
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: ObjectPath::from(prefix.as_str()),
        }))
    }
}

/// Parses one S3 setting, refusing unknown keys and credentials.
fn s3_key(full_key: &str, name: &str, value: &str) -> Result<AmazonS3ConfigKey, CoreError> {
    let parsed: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().map_err(|_| {
        CoreError::config(
            full_key,
            value,
            "not an S3 setting of object_store (e.g. endpoint, region, allow_http, virtual_hosted_style_request, timeout)",
        )
    })?;
    // The customer-provided SSE key is a secret too, though it parses as an encryption key.
    let secret = matches!(
        parsed,
        AmazonS3ConfigKey::AccessKeyId
            | AmazonS3ConfigKey::SecretAccessKey
            | AmazonS3ConfigKey::Token
    ) || name.to_ascii_lowercase().contains("customer_key");
    if secret {
        // Never echo a credential back, even in an error.
        return Err(CoreError::config(
            full_key,
            "<redacted>",
            "credentials do not belong in the config file: set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment, or use a web identity / instance role",
        ));
    }
    Ok(parsed)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(dir) => write!(f, "{}", dir.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Location::parse(&raw)
            .map_err(|problem| serde::de::Error::custom(format!("{raw:?}: {problem}")))
    }
}

impl From<PathBuf> for Location {
    fn from(dir: PathBuf) -> Self {
        Location::Local(dir)
    }
}

impl From<&Path> for Location {
    fn from(dir: &Path) -> Self {
        Location::Local(dir.to_path_buf())
    }
}

/// An opened `s3://bucket/prefix`: the client and where keys start.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: ObjectPath,
}

impl Bucket {
    /// The client (shared; cheap to clone).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The key of `relative` (e.g. `kpi_values/date=…/part-….parquet`) under the prefix.
    pub fn key(&self, relative: &str) -> ObjectPath {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |key, part| key.join(part))
    }

    /// `s3://<bucket>/`, the URL DataFusion registers the client under.
    pub fn root_url(&self) -> Url {
        Url::parse(&format!("s3://{}/", self.bucket)).expect("bucket names form a URL")
    }

    /// The `s3://` URL of `relative` under the prefix, with a trailing `/` when `folder`.
    pub fn url(&self, relative: &str, folder: bool) -> String {
        let key = self.key(relative);
        let slash = if folder { "/" } else { "" };
        format!("s3://{}/{key}{slash}", self.bucket)
    }
}

/// For kpiflow's own tests: a fresh prefix `name-<random>` in the S3 test server that
/// `scripts/test.sh` starts (`deploy/local/s3.sh`; env `KPIFLOW_TEST_S3_ENDPOINT`, optional
/// `KPIFLOW_TEST_S3_BUCKET`, credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`),
/// with the settings to reach it. `None` (the caller skips) when no server is configured,
/// except in CI (`CI=true`), where that panics: a skipped S3 test must not pass CI.
#[doc(hidden)]
pub fn test_location(name: &str) -> Option<(Location, StoreOptions)> {
    let Ok(endpoint) = std::env::var("KPIFLOW_TEST_S3_ENDPOINT") else {
        let msg = "KPIFLOW_TEST_S3_ENDPOINT is not set (scripts/test.sh starts deploy/local/s3.sh and sets it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}: required in CI");
        }
        eprintln!("skipping the S3 part of this test: {msg}");
        return None;
    };
    let bucket = std::env::var("KPIFLOW_TEST_S3_BUCKET").unwrap_or_else(|_| "kpiflow-test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let location = Location::S3 {
        bucket,
        prefix: format!("{name}-{nanos:x}-{}", std::process::id()),
    };
    let options = StoreOptions::from([
        ("endpoint".to_string(), endpoint),
        ("allow_http".to_string(), "true".to_string()),
        ("region".to_string(), "us-east-1".to_string()),
    ]);
    Some((location, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        assert_eq!(
            Location::parse("kpiflow-data").unwrap(),
            Location::Local("kpiflow-data".into())
        );
        assert_eq!(
            Location::parse("file:///var/lib/kpiflow").unwrap(),
            Location::Local("/var/lib/kpiflow".into())
        );
        let s3 = Location::parse("s3://data/prod/").unwrap();
        assert_eq!(
            s3,
            Location::S3 {
                bucket: "data".into(),
                prefix: "prod".into()
            }
        );
        assert_eq!(s3.join("group-a").to_string(), "s3://data/prod/group-a");
        assert_eq!(
            Location::parse("s3://data").unwrap().join("x").to_string(),
            "s3://data/x"
        );
        assert!(
            Location::parse("s3:///x")
                .unwrap_err()
                .contains("names no bucket")
        );
        assert!(
            Location::parse("gs://b/x")
                .unwrap_err()
                .contains("gs:// is not supported")
        );
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn options_are_checked_before_any_io() {
        let s3 = Location::parse("s3://data/prod").unwrap();
        let opts = |k: &str, v: &str| StoreOptions::from([(k.to_string(), v.to_string())]);
        s3.validate_options(
            "sink.object_store",
            &opts("endpoint", "http://127.0.0.1:9000"),
        )
        .unwrap();
        s3.validate_options("sink.object_store", &opts("aws_allow_http", "true"))
            .unwrap();
        let err = s3
            .validate_options("sink.object_store", &opts("endpont", "http://x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bad config: `sink.object_store.endpont` = \"http://x\""),
            "{err}"
        );
        let err = s3
            .validate_options("sink.object_store", &opts("secret_access_key", "hunter2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_SECRET_ACCESS_KEY") && !err.contains("hunter2"),
            "{err}"
        );
        let local = Location::parse("kpiflow-data").unwrap();
        let err = local
            .validate_options("sink.object_store", &opts("region", "eu-west-1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only to s3:// locations"), "{err}");
    }

    #[test]
    fn keys_and_urls_sit_under_the_prefix() {
        let bucket = Location::parse("s3://data/prod")
            .unwrap()
            .open(
                "sink.object_store",
                &StoreOptions::from([("region".into(), "us-east-1".into())]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            bucket.key("kpi_values/kpi=gmv/x.parquet").as_ref(),
            "prod/kpi_values/kpi=gmv/x.parquet"
        );
        assert_eq!(bucket.url("kpi_values", true), "s3://data/prod/kpi_values/");
        assert_eq!(bucket.root_url().as_str(), "s3://data/");
    }
}
