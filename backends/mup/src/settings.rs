//! Settings of the MUP backend (an instance's `settings:` block). Unknown
//! keys are rejected, so a setting of the original agent this backend does
//! not implement fails loudly at start instead of being ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use waldur_backend_sdk::SettingError;
use waldur_backend_sdk::secret::{Env, Secret};
use waldur_backend_sdk::types::{AccountingType, Component};

/// The backend's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MupSettings {
    /// Base URL of the portal. Every endpoint is an absolute `/api/...`
    /// path, so only scheme, host and port matter.
    pub api_url: String,
    /// HTTP Basic user.
    pub username: String,
    /// File holding the HTTP Basic password, private to the service (one
    /// trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password, when no file is given.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Extra CA certificate (PEM) trusted for the portal, besides the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest one HTTP request may take. An RPC makes a few requests and
    /// the coordinator gives a read 10 s by default: keep
    /// `timeout_seconds × (retries + 1)` within it.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Retries of a read or an idempotent write after a transient failure
    /// (no connection, timeout, 429, 502, 503, 504).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long a looked-up allocation's project and a user's portal id are
    /// remembered. Only positive answers are kept, and a stale entry is
    /// dropped as soon as the portal contradicts it.
    #[serde(default = "default_cache")]
    pub cache_seconds: u64,
    /// Research field id of new projects and users.
    #[serde(default = "one")]
    pub default_research_field: i64,
    /// Funding agency of new projects and users.
    #[serde(default = "fct")]
    pub default_agency: String,
    /// Prefix of allocation identifiers:
    /// `<prefix><resource UUID as 32 hex digits>_<component>`.
    #[serde(default = "alloc")]
    pub allocation_prefix: String,
    /// The component whose allocation identifier is the resource's backend
    /// id; unset: the first component in alphabetical order.
    #[serde(default)]
    pub primary_component: Option<String>,
    /// `max_storage` (GB) of new projects.
    #[serde(default = "thousand")]
    pub default_storage_limit: i64,
    /// Days from today to the end date of a new project.
    #[serde(default = "year")]
    pub project_duration_days: i64,
    /// A hard delete deactivates the project too once none of its
    /// allocations is active any more.
    #[serde(default = "yes")]
    pub deactivate_empty_projects: bool,
    /// Deletion keeps the allocations with size 0 instead of deactivating
    /// them (when the coordinator does not name a mode).
    #[serde(default)]
    pub soft_delete: bool,
    /// Salutation of a new user without a personal title.
    #[serde(default = "dr")]
    pub default_user_salutation: String,
    /// Gender of a new user whose gender is not known.
    #[serde(default = "other")]
    pub default_user_gender: String,
    /// Year of birth of a new user whose birth date is not known.
    #[serde(default = "birth_year")]
    pub default_user_birth_year: i64,
    /// Country of a new user whose country is not known.
    #[serde(default = "portugal")]
    pub default_user_country: String,
    /// Institution type of a new user whose organization type is not known.
    #[serde(default = "academic")]
    pub default_user_institution_type: String,
    /// Institution of a new user whose organization is not known.
    #[serde(default = "institution")]
    pub default_user_institution: String,
    /// Biography of new users.
    #[serde(default = "biography")]
    pub default_user_biography: String,
    /// `funding_agency_grant` of a new user is this prefix followed by the
    /// first ten characters of the username, upper-cased.
    #[serde(default = "grant_prefix")]
    pub user_funding_agency_prefix: String,
    /// Components: one allocation each.
    pub components: BTreeMap<String, ComponentSettings>,
}

/// One component: one allocation per resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// Display name in Waldur.
    pub label: String,
    /// Display unit in Waldur.
    pub measured_unit: String,
    /// Must be `limit`: MUP allocations are sized up front.
    pub accounting_type: String,
    /// Allocation size per Waldur unit.
    #[serde(default = "unit")]
    pub unit_factor: f64,
    /// The allocation `type` in MUP.
    #[serde(default = "deucalion")]
    pub mup_allocation_type: String,
    /// Default limit (Waldur units) when an order names none.
    #[serde(default)]
    pub limit: Option<i64>,
}

fn default_timeout() -> u64 {
    5
}
fn default_retries() -> u32 {
    1
}
fn default_cache() -> u64 {
    60
}
fn one() -> i64 {
    1
}
fn fct() -> String {
    "FCT".into()
}
fn alloc() -> String {
    "alloc_".into()
}
fn thousand() -> i64 {
    1000
}
fn year() -> i64 {
    365
}
fn yes() -> bool {
    true
}
fn dr() -> String {
    "Dr.".into()
}
fn other() -> String {
    "Other".into()
}
fn birth_year() -> i64 {
    1990
}
fn portugal() -> String {
    "Portugal".into()
}
fn academic() -> String {
    "Academic".into()
}
fn institution() -> String {
    "Research Institution".into()
}
fn biography() -> String {
    "Researcher using Waldur site agent for resource allocation".into()
}
fn grant_prefix() -> String {
    "WALDUR-SITE-AGENT-".into()
}
fn unit() -> f64 {
    1.0
}
fn deucalion() -> String {
    "Deucalion x86_64".into()
}

/// A component key or prefix: it ends up inside an allocation identifier,
/// which the portal also uses as a SLURM account name.
fn identifier_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl MupSettings {
    /// Parses and checks settings.
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        let s: Self =
            serde_json::from_value(value).map_err(|e| SettingError::new("settings", e))?;
        let url = url::Url::parse(&s.api_url)
            .map_err(|e| SettingError::new("api_url", format!("{:?}: {e}", s.api_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SettingError::new(
                "api_url",
                "must be an http or https URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SettingError::new(
                "api_url",
                "must not carry credentials: set username and password_file or password_env",
            ));
        }
        if s.username.is_empty() {
            return Err(SettingError::new("username", "must not be empty"));
        }
        if s.password_file.is_some() == s.password_env.is_some() {
            return Err(SettingError::new(
                "password_file",
                "the portal's password is required: set exactly one of password_file and password_env",
            ));
        }
        if s.timeout_seconds == 0 {
            return Err(SettingError::new("timeout_seconds", "must be positive"));
        }
        if !(1..=36_500).contains(&s.project_duration_days) {
            return Err(SettingError::new(
                "project_duration_days",
                "must be between 1 and 36500: a new project ends this many days after today",
            ));
        }
        if s.default_storage_limit < 0 {
            return Err(SettingError::new(
                "default_storage_limit",
                "must not be negative",
            ));
        }
        if s.components.is_empty() {
            return Err(SettingError::new(
                "components",
                "at least one component is required: each becomes one MUP allocation",
            ));
        }
        if !identifier_safe(&s.allocation_prefix) {
            return Err(SettingError::new(
                "allocation_prefix",
                "may hold only letters, digits, '_', '-' and '.'",
            ));
        }
        for (key, c) in &s.components {
            let field = |f: &str| format!("components.{key}.{f}");
            if key.is_empty() || !identifier_safe(key) {
                return Err(SettingError::new(
                    format!("components.{key}"),
                    "a component key may hold only letters, digits, '_', '-' and '.'",
                ));
            }
            if c.accounting_type != "limit" {
                return Err(SettingError::new(
                    field("accounting_type"),
                    format!(
                        "{:?}: MUP allocations are sized up front, so every component must be \"limit\"",
                        c.accounting_type
                    ),
                ));
            }
            if !(c.unit_factor.is_finite() && c.unit_factor > 0.0) {
                return Err(SettingError::new(
                    field("unit_factor"),
                    "must be a positive number",
                ));
            }
            if c.mup_allocation_type.is_empty() {
                return Err(SettingError::new(
                    field("mup_allocation_type"),
                    "must not be empty",
                ));
            }
            if c.limit.is_some_and(|l| l < 0) {
                return Err(SettingError::new(field("limit"), "must not be negative"));
            }
        }
        if let Some(p) = &s.primary_component
            && !s.components.contains_key(p)
        {
            return Err(SettingError::new(
                "primary_component",
                format!("{p:?} is not one of the components"),
            ));
        }
        Ok(s)
    }

    /// The password, read from its file or variable.
    pub fn password(&self, env: &dyn Env) -> Result<Secret, SettingError> {
        Secret::from_file_or_env(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            env,
        )
    }

    /// Allocation size per Waldur unit of `component` (1 for a component
    /// that is not configured; callers check the key first).
    pub fn factor(&self, component: &str) -> f64 {
        self.components
            .get(component)
            .map_or(1.0, |c| c.unit_factor)
    }

    /// The component whose allocation names the resource.
    pub fn primary(&self) -> &str {
        self.primary_component
            .as_deref()
            .or_else(|| self.components.keys().next().map(String::as_str))
            .unwrap_or_default()
    }

    /// Request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// Component definitions for Waldur.
    pub fn component_list(&self) -> Vec<Component> {
        self.components
            .iter()
            .map(|(key, c)| Component {
                key: key.clone(),
                label: c.label.clone(),
                measured_unit: c.measured_unit.clone(),
                unit_factor: c.unit_factor,
                accounting_type: AccountingType::Limit as i32,
                limit: c.limit,
                ..Component::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "api_url": "https://mup.example.org",
            "username": "agent",
            "password_env": "MUP_PASSWORD",
            "components": {"cpu": {"label": "CPU", "measured_unit": "k-hours", "accounting_type": "limit", "unit_factor": 1000}}
        })
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut v = base();
        v[key] = value;
        v
    }

    #[test]
    fn defaults_follow_the_original_agent() {
        let s = MupSettings::parse(base()).unwrap();
        assert_eq!(s.default_agency, "FCT");
        assert_eq!(s.allocation_prefix, "alloc_");
        assert_eq!(s.components["cpu"].mup_allocation_type, "Deucalion x86_64");
        assert_eq!(s.primary(), "cpu");
    }

    #[test]
    fn a_component_that_is_not_limit_based_is_refused() {
        let v = with(
            "components",
            json!({"cpu": {"label": "CPU", "measured_unit": "h", "accounting_type": "usage"}}),
        );
        let e = MupSettings::parse(v).unwrap_err().to_string();
        assert!(e.contains("components.cpu.accounting_type"), "{e}");
    }

    #[test]
    fn credentials_in_the_url_or_no_password_source_are_refused() {
        let e = MupSettings::parse(with("api_url", json!("https://u:p@mup.example.org")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_url") && !e.contains("u:p"), "{e}");
        let mut v = base();
        v.as_object_mut().unwrap().remove("password_env");
        let e = MupSettings::parse(v).unwrap_err().to_string();
        assert!(e.contains("password_file"), "{e}");
    }

    #[test]
    fn unknown_keys_and_unknown_primary_components_are_refused() {
        assert!(MupSettings::parse(with("project_prefix", json!("waldur_"))).is_err());
        let e = MupSettings::parse(with("primary_component", json!("gpu")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("primary_component"), "{e}");
    }

    #[test]
    fn the_password_comes_from_the_named_variable_and_must_not_be_empty() {
        use waldur_backend_sdk::secret::MapEnv;
        let s = MupSettings::parse(base()).unwrap();
        let env = MapEnv::from([("MUP_PASSWORD", "s3cret")]);
        assert_eq!(s.password(&env).unwrap().expose(), "s3cret");
        let empty = MapEnv::from([("MUP_PASSWORD", "")]);
        assert!(s.password(&empty).is_err());
        let unset = MapEnv::from([("OTHER", "x")]);
        assert!(
            s.password(&unset)
                .unwrap_err()
                .to_string()
                .contains("MUP_PASSWORD")
        );
    }

    #[test]
    fn project_defaults_that_would_make_every_creation_fail_are_refused() {
        assert!(MupSettings::parse(with("project_duration_days", json!(0))).is_err());
        assert!(MupSettings::parse(with("project_duration_days", json!(10_000_000))).is_err());
        assert!(MupSettings::parse(with("default_storage_limit", json!(-1))).is_err());
    }
}
