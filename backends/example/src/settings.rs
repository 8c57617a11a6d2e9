//! Settings of the example backend (the `settings:` block of an instance).

use serde::Deserialize;
use waldur_backend_sdk::SettingError;
use waldur_backend_sdk::types::{AccountingType, Component};

/// Settings; every key is optional and unknown keys are rejected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExampleSettings {
    /// Prefix of generated backend ids.
    pub allocation_prefix: String,
    /// Prefix of generated usernames.
    pub username_prefix: String,
    /// Delete keeps the resource with zero limits unless the request says hard.
    pub soft_delete: bool,
    /// Create, delete and set-limits take this long (0: immediate).
    pub provisioning_delay_ms: u64,
    /// Members get deterministic synthetic usage.
    pub synthetic_usage: bool,
    /// Advertise DECREASING_USAGE.
    pub usage_may_decrease: bool,
    /// Component definitions; the default is cpu, mem and storage.
    pub components: Option<Vec<ComponentSettings>>,
    /// Backend ids that exist but are not this backend's (as a hand-made
    /// account would be): every request naming one is refused.
    pub unmanaged: Vec<String>,
    /// A demo or test setup: the backend server does not warn that nothing
    /// this backend does reaches a cluster.
    pub demo: bool,
    /// Answer ListResourceUsers' full view from the same read (false:
    /// members only, as a backend without bulk reads; the coordinator then
    /// reads each resource on its own).
    pub bulk_reads: bool,
    /// Advertise USERNAMES (false: a backend that does not make usernames,
    /// as SLURM).
    pub usernames: bool,
}

impl Default for ExampleSettings {
    fn default() -> Self {
        Self {
            allocation_prefix: String::new(),
            username_prefix: String::new(),
            soft_delete: false,
            provisioning_delay_ms: 0,
            synthetic_usage: true,
            usage_may_decrease: false,
            components: None,
            unmanaged: Vec::new(),
            demo: false,
            bulk_reads: true,
            usernames: true,
        }
    }
}

/// One component, in the original agent's `backend_components` terms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// Component type.
    pub key: String,
    /// Display name.
    pub label: String,
    /// Display unit.
    pub measured_unit: String,
    /// `usage`, `limit` or `one`.
    pub accounting_type: String,
    /// Waldur → backend factor.
    #[serde(default = "one")]
    pub unit_factor: f64,
    /// Default limit.
    #[serde(default)]
    pub limit: Option<i64>,
}

fn one() -> f64 {
    1.0
}

impl ExampleSettings {
    /// Parses a settings value (null means defaults).
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let s: Self =
            serde_json::from_value(value).map_err(|e| SettingError::new("settings", e))?;
        for c in s.components.iter().flatten() {
            accounting_type(&c.accounting_type)?;
            if c.key.is_empty() {
                return Err(SettingError::new("components", "key must not be empty"));
            }
        }
        Ok(s)
    }

    /// The component definitions.
    pub fn components(&self) -> Vec<Component> {
        let configured = self.components.clone().unwrap_or_else(|| {
            vec![
                ComponentSettings {
                    key: "cpu".into(),
                    label: "CPU".into(),
                    measured_unit: "k-Hours".into(),
                    accounting_type: "usage".into(),
                    unit_factor: 60000.0,
                    limit: Some(10),
                },
                ComponentSettings {
                    key: "mem".into(),
                    label: "Memory".into(),
                    measured_unit: "gb-Hours".into(),
                    accounting_type: "usage".into(),
                    unit_factor: 61440.0,
                    limit: Some(100),
                },
                ComponentSettings {
                    key: "storage".into(),
                    label: "Storage".into(),
                    measured_unit: "GB".into(),
                    accounting_type: "limit".into(),
                    unit_factor: 1.0,
                    limit: None,
                },
            ]
        });
        configured
            .into_iter()
            .map(|c| {
                let kind = accounting_type(&c.accounting_type).unwrap_or(AccountingType::Usage);
                Component {
                    key: c.key,
                    label: c.label,
                    measured_unit: c.measured_unit,
                    unit_factor: c.unit_factor,
                    accounting_type: kind as i32,
                    limit: c.limit,
                    is_prepaid: kind == AccountingType::OneTime,
                    ..Component::default()
                }
            })
            .collect()
    }
}

fn accounting_type(s: &str) -> Result<AccountingType, SettingError> {
    match s {
        "usage" => Ok(AccountingType::Usage),
        "limit" => Ok(AccountingType::Limit),
        "one" => Ok(AccountingType::OneTime),
        "few" => Ok(AccountingType::OnPlanSwitch),
        other => Err(SettingError::new(
            "components",
            format!("accounting_type {other:?} is not one of usage, limit, one, few"),
        )),
    }
}
