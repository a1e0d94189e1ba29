//! Secrets named in the config as `env:NAME` or `file:/path`, resolved at start-up, never shown.

use std::path::PathBuf;

use serde::Deserialize;

use crate::IngestError;

/// Where a secret is read from. The config holds only this reference, never the secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SecretRef {
    /// `env:NAME`: the environment variable `NAME`.
    Env(String),
    /// `file:/path`: the file's content, one trailing newline removed (as written by
    /// Kubernetes secrets and `echo`).
    File(PathBuf),
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
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
        // The value is not echoed: whoever wrote a literal here may have written the secret.
        Err(
            "expected \"env:NAME\" or \"file:/path\" (the secret itself never goes in the \
             config file)"
                .to_string(),
        )
    }
}

/// A resolved secret. `Debug` shows no byte of it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret from bytes (tests, or secrets obtained elsewhere).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The bytes, for keying a MAC; never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl SecretRef {
    /// Reads the secret; `key` (e.g. `connectors.shopify_webhook.client_secret`) names it in
    /// errors, which say where the secret was looked for but never what it is.
    pub fn resolve(&self, key: &str) -> Result<Secret, IngestError> {
        let bytes = match self {
            SecretRef::Env(name) => std::env::var_os(name)
                .ok_or_else(|| {
                    IngestError::config(
                        key,
                        format!("\"env:{name}\""),
                        "the environment variable is not set",
                    )
                })?
                .into_encoded_bytes(),
            SecretRef::File(path) => {
                let mut b = std::fs::read(path).map_err(|e| {
                    IngestError::config(
                        key,
                        format!("\"file:{}\"", path.display()),
                        format!("cannot read the file: {e}"),
                    )
                })?;
                if b.last() == Some(&b'\n') {
                    b.pop();
                    if b.last() == Some(&b'\r') {
                        b.pop();
                    }
                }
                b
            }
        };
        if bytes.is_empty() {
            return Err(IngestError::config(
                key,
                format!("\"{self:?}\""),
                "the secret is empty",
            ));
        }
        Ok(Secret(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_and_file_and_refuses_literals_without_echoing_them() {
        assert_eq!(
            SecretRef::try_from("env:SHOPIFY_SECRET".to_string()).unwrap(),
            SecretRef::Env("SHOPIFY_SECRET".into())
        );
        assert_eq!(
            SecretRef::try_from("file:/run/secrets/s".to_string()).unwrap(),
            SecretRef::File("/run/secrets/s".into())
        );
        let err = SecretRef::try_from("shpss_0123456789".to_string()).unwrap_err();
        assert!(!err.contains("shpss"), "{err}");
        assert!(SecretRef::try_from("env:".to_string()).is_err());
    }

    #[test]
    fn resolves_files_trimming_one_newline_and_names_missing_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hush\n").unwrap();
        let s = SecretRef::File(path.clone()).resolve("k").unwrap();
        assert_eq!(s.expose(), b"hush");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");

        let err = SecretRef::Env("KPIFLOW_TEST_SURELY_UNSET_VAR".into())
            .resolve("connectors.x.secret")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad config: `connectors.x.secret` = \"env:KPIFLOW_TEST_SURELY_UNSET_VAR\": the environment variable is not set"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = SecretRef::File(path).resolve("k").unwrap_err();
        assert!(err.to_string().contains("the secret is empty"), "{err}");
    }
}
