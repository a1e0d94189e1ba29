//! Credentials: where they come from (`env:NAME`, `file:/path`) and a type that never prints them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::IngestError;

/// A credential (client secret, refresh token, access token). `Debug` prints `***` and there is
/// no `Display`, so a secret cannot end up in a log line or an error message by accident; the
/// value is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where a credential is read from, as written in the config: `env:NAME` (an environment
/// variable) or `file:/path` (a file, e.g. a mounted Kubernetes secret; one trailing newline is
/// ignored). Literal credentials are refused so they never sit in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// `env:NAME`.
    Env(String),
    /// `file:/path`.
    File(PathBuf),
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("env:")
            && !name.is_empty()
        {
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = s.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        // The value may be a pasted credential: do not echo it.
        Err(format!(
            "expected \"env:NAME\" or \"file:/path\" (credentials are never written into the \
             config file), got a value of {} characters",
            s.chars().count()
        ))
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl SecretRef {
    /// Checks that the credential can be read now (the variable is set, the file readable
    /// and not empty) without keeping it: connectors that read theirs only when they bind or
    /// on each request call this when built, so a missing credential is refused with the
    /// other config errors, before any I/O (and by `kpiflow check-config`).
    pub fn check(&self, key: &str) -> Result<(), IngestError> {
        self.resolve(key).map(drop)
    }

    /// Reads the credential; `key` is the config key, named in errors (with the reference,
    /// never the value).
    pub fn resolve(&self, key: &str) -> Result<Secret, IngestError> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                IngestError::config(
                    key,
                    format!("{:?}", self.to_string()),
                    format!("environment variable {name} is not set (or not UTF-8)"),
                )
            })?,
            SecretRef::File(path) => std::fs::read_to_string(path).map_err(|e| {
                IngestError::config(
                    key,
                    format!("{:?}", self.to_string()),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?,
        };
        let value = value
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v))
            .unwrap_or(&value);
        if value.is_empty() {
            return Err(IngestError::config(
                key,
                format!("{:?}", self.to_string()),
                "the credential is empty",
            ));
        }
        Ok(Secret::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("Atzr|very-secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "Atzr|very-secret");
    }

    #[test]
    fn references_parse_and_literals_are_refused_without_echo() {
        assert_eq!(
            SecretRef::try_from("env:LWA_SECRET".to_string()).unwrap(),
            SecretRef::Env("LWA_SECRET".into())
        );
        assert_eq!(
            SecretRef::try_from("file:/run/secrets/x".to_string()).unwrap(),
            SecretRef::File("/run/secrets/x".into())
        );
        let err = SecretRef::try_from("Atzr|pasted".to_string()).unwrap_err();
        assert!(!err.contains("Atzr"), "{err}");
        assert!(err.contains("env:NAME"), "{err}");
        assert!(SecretRef::try_from("env:".to_string()).is_err());
    }

    #[test]
    fn files_are_read_and_missing_variables_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let r = SecretRef::File(path);
        assert_eq!(r.resolve("auth.refresh_token").unwrap().expose(), "s3cr3t");
        let err = SecretRef::Env("KPIFLOW_TEST_SURELY_UNSET_VAR".into())
            .resolve("auth.client_secret")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "bad config: `auth.client_secret` = \"env:KPIFLOW_TEST_SURELY_UNSET_VAR\": \
             environment variable KPIFLOW_TEST_SURELY_UNSET_VAR is not set (or not UTF-8)"
        );
    }
}
