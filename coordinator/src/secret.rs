//! Secrets and environment access.
//!
//! A [`Secret`] never prints its value. Environment access goes through the
//! [`Env`] trait so tests feed maps instead of mutating the process
//! environment.

use std::collections::BTreeMap;
use std::path::Path;

/// A secret string: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (trimmed) or an environment variable;
    /// exactly one must be configured.
    pub fn from_file_or_env(
        what: &str,
        file: Option<&Path>,
        var: Option<&str>,
        env: &dyn Env,
    ) -> Result<Self, String> {
        match (file, var) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{what}_file {}: {e}", path.display()))?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(format!("{what}_file {} is empty", path.display()));
                }
                Ok(Self::new(value))
            }
            (None, Some(name)) => match env.var(name) {
                Some(v) if !v.trim().is_empty() => Ok(Self::new(v.trim())),
                _ => Err(format!(
                    "{what}_env: environment variable {name} is not set"
                )),
            },
            (Some(_), Some(_)) => Err(format!("set either {what}_file or {what}_env, not both")),
            (None, None) => Err(format!(
                "set {what}_file or {what}_env (inline secrets are not accepted)"
            )),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Read access to environment variables.
pub trait Env: Send + Sync {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed map, for tests.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl<const N: usize> From<[(&str, &str); N]> for MapEnv {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn a_secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "abc\n").unwrap();
        let s = Secret::from_file_or_env("token", Some(&path), None, &MapEnv::default()).unwrap();
        assert_eq!(s.expose(), "abc");
    }
}
