//! Secrets and environment access.
//!
//! A [`Secret`] never prints its value. Environment access goes through the
//! [`Env`] trait so tests feed maps instead of mutating the process
//! environment.

use std::collections::BTreeMap;
use std::path::Path;

use crate::setting::SettingError;

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

    /// Reads a secret from a file or an environment variable; exactly one
    /// must be configured. A file must be private to the service (see
    /// [`crate::secret_file`]); in both, one trailing newline is
    /// dropped and any other whitespace is a config error.
    pub fn from_file_or_env(
        what: &str,
        file: Option<&Path>,
        var: Option<&str>,
        env: &dyn Env,
    ) -> Result<Self, SettingError> {
        let file_key = || format!("{what}_file");
        let env_key = || format!("{what}_env");
        match (file, var) {
            (Some(path), None) => crate::secret_file::read(path)
                .map(Self::new)
                .map_err(|e| SettingError::new(file_key(), e)),
            (None, Some(name)) => match env.var(name) {
                Some(v) if !v.is_empty() => {
                    crate::secret_file::value(&format!("environment variable {name}"), &v)
                        .map(Self::new)
                        .map_err(|e| SettingError::new(env_key(), e))
                }
                _ => Err(SettingError::new(
                    env_key(),
                    format!("environment variable {name} is not set"),
                )),
            },
            (Some(_), Some(_)) => Err(SettingError::new(
                what,
                format!("set either {what}_file or {what}_env, not both"),
            )),
            (None, None) => Err(SettingError::new(
                what,
                format!("set {what}_file or {what}_env (inline secrets are not accepted)"),
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
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secret::from_file_or_env("token", Some(&path), None, &MapEnv::default()).unwrap();
        assert_eq!(s.expose(), "abc");
    }

    #[test]
    fn an_open_token_file_or_a_token_with_blanks_is_a_config_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e =
            Secret::from_file_or_env("token", Some(&path), None, &MapEnv::default()).unwrap_err();
        assert!(
            e.setting == "token_file" && e.reason.contains("chmod 600"),
            "{e}"
        );
        let env = MapEnv::from([("T", "ab c")]);
        let e = Secret::from_file_or_env("token", None, Some("T"), &env).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("whitespace") && !e.contains("ab c"), "{e}");
    }
}
