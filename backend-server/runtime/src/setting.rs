//! The error of a setting that cannot be used, naming it by its path in the
//! config file (`offerings[0].waldur.token_env`, `broker.ca_file`, ...) so
//! the operator knows which line to fix. Messages never contain a secret's
//! value.

use std::fmt::Display;

/// A setting that cannot be used: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    /// Its path in the config (dotted; `[i]` for list items).
    pub setting: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingError {
    /// The setting at `setting` is wrong for `reason`.
    pub fn new(setting: impl Into<String>, reason: impl Display) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.to_string(),
        }
    }

    /// The same error seen from an enclosing section: `parent.setting`.
    #[must_use]
    pub fn within(self, parent: impl Display) -> Self {
        Self {
            setting: format!("{parent}.{}", self.setting),
            reason: self.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_the_full_path_of_the_setting() {
        let e = SettingError::new("token_env", "environment variable T is not set")
            .within("offerings[0].waldur");
        assert_eq!(
            e.to_string(),
            "offerings[0].waldur.token_env: environment variable T is not set"
        );
    }
}
