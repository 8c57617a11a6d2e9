//! Settings of the MOAB backend (an instance's `settings:` block). Unknown
//! keys are rejected, so a setting of the original agent this backend does
//! not implement fails loudly at start instead of being ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use waldur_backend_sdk::SettingError;
use waldur_backend_sdk::types::{AccountingType, Component};

/// The one component a MOAB offering sells.
pub const DEPOSIT: &str = "deposit";

/// The backend's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoabSettings {
    /// Prefix of project accounts (`<prefix><project slug>`).
    #[serde(default)]
    pub project_prefix: String,
    /// Prefix of allocation accounts (`<prefix><resource slug>`, lower case).
    #[serde(default)]
    pub allocation_prefix: String,
    /// Deletion withdraws what is left and keeps the account.
    #[serde(default)]
    pub soft_delete: bool,
    /// Directory of the `mam-*` commands; unset: found on `PATH`.
    #[serde(default)]
    pub mam_bin_dir: Option<PathBuf>,
    /// Longest a `mam-*` command may run before it counts as unavailable.
    #[serde(default = "default_timeout")]
    pub command_timeout_seconds: u64,
    /// Time zone of usage windows (IANA) when a request names none; the
    /// accounting server stores times in its own local time, so this should
    /// be that zone.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Take over allocation accounts without a marker (made by the original
    /// agent) whose name has the allocation prefix and whose organization
    /// has the project prefix. Needs a non-empty allocation prefix.
    #[serde(default = "yes")]
    pub adopt_unmarked: bool,
    /// Components: exactly `deposit`.
    pub components: BTreeMap<String, ComponentSettings>,
}

/// The deposit component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// Display name in Waldur.
    pub label: String,
    /// Display unit in Waldur (the site's currency or credits).
    pub measured_unit: String,
    /// `usage`, `limit`, `one` or `few`.
    pub accounting_type: String,
    /// Deposits are never converted: must be 1 when given.
    #[serde(default)]
    pub unit_factor: Option<f64>,
    /// Default limit.
    #[serde(default)]
    pub limit: Option<i64>,
}

fn default_timeout() -> u64 {
    60
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// A name MAM keeps in one field and never reads as an option, a member
/// prefix (`+`, `-`, `^`) or a pattern: a letter or digit, then letters,
/// digits, `.`, `_`, `@` or `-`, at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// A prefix: the characters of a name, and it may end in anything a name
/// may contain (it may also be empty).
fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || valid_name(prefix)
}

fn accounting_type(s: &str) -> Option<AccountingType> {
    match s {
        "usage" => Some(AccountingType::Usage),
        "limit" => Some(AccountingType::Limit),
        "one" => Some(AccountingType::OneTime),
        "few" => Some(AccountingType::OnPlanSwitch),
        _ => None,
    }
}

impl MoabSettings {
    /// Parses and checks settings.
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        let s: Self =
            serde_json::from_value(value).map_err(|e| SettingError::new("settings", e))?;
        let Some(deposit) = s.components.get(DEPOSIT) else {
            return Err(SettingError::new(
                "components",
                "a deposit component is required: MOAB accounts are funded by deposits",
            ));
        };
        if let Some(other) = s.components.keys().find(|k| k.as_str() != DEPOSIT) {
            return Err(SettingError::new(
                format!("components.{other}"),
                "MOAB accounts carry one deposit; no other component is sold",
            ));
        }
        if accounting_type(&deposit.accounting_type).is_none() {
            return Err(SettingError::new(
                "components.deposit.accounting_type",
                format!(
                    "{:?} is not one of usage, limit, one, few",
                    deposit.accounting_type
                ),
            ));
        }
        if deposit.unit_factor.is_some_and(|f| f != 1.0) {
            return Err(SettingError::new(
                "components.deposit.unit_factor",
                "deposits are not converted: leave it out or set 1",
            ));
        }
        for (key, prefix) in [
            ("project_prefix", &s.project_prefix),
            ("allocation_prefix", &s.allocation_prefix),
        ] {
            if !valid_prefix(prefix) {
                return Err(SettingError::new(
                    key,
                    format!("{prefix:?} has characters MAM names may not have"),
                ));
            }
        }
        if s.command_timeout_seconds == 0 {
            return Err(SettingError::new(
                "command_timeout_seconds",
                "must be positive",
            ));
        }
        if jiff::tz::TimeZone::get(&s.timezone).is_err() {
            return Err(SettingError::new(
                "timezone",
                format!("{:?} is not an IANA time zone", s.timezone),
            ));
        }
        Ok(s)
    }

    /// The component definition.
    pub fn components(&self) -> Vec<Component> {
        self.components
            .iter()
            .map(|(key, c)| {
                let kind = accounting_type(&c.accounting_type).unwrap_or(AccountingType::Limit);
                Component {
                    key: key.clone(),
                    label: c.label.clone(),
                    measured_unit: c.measured_unit.clone(),
                    unit_factor: 1.0,
                    accounting_type: kind as i32,
                    limit: c.limit,
                    is_prepaid: kind == AccountingType::OneTime,
                    ..Component::default()
                }
            })
            .collect()
    }
}
