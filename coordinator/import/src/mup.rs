//! MUP offerings: the original agent's `backend_settings` and
//! `backend_components` as the settings of a `mup` backend-server instance.
//!
//! Kept: the portal's URL and user, the defaults of new projects and users,
//! `allocation_prefix`, and every component with its `unit_factor` and
//! `mup_allocation_type`. The password moves to a secret file referenced by
//! `password_file`. The first component becomes `primary_component`: the
//! original named a resource after the first allocation it made, in the
//! order the components were listed. Dropped with a note: `project_prefix`
//! and `default_allocation_type` (the original stored them but never used
//! them) and any other key.

use serde_norway::{Mapping, Value};

use crate::ImportError;
use crate::slurm::{COORDINATOR_KEYS, Notes};
use crate::value::{float, get, integer, key_text, strict_text, text, untag};

/// The backend type, in both configs.
pub(crate) const TYPE: &str = "mup";

/// Settings kept as text.
const TEXT: &[&str] = &[
    "api_url",
    "username",
    "default_agency",
    "allocation_prefix",
    "default_user_salutation",
    "default_user_gender",
    "default_user_country",
    "default_user_institution_type",
    "default_user_institution",
    "default_user_biography",
    "user_funding_agency_prefix",
];

/// Settings kept as integers.
const INTEGER: &[&str] = &[
    "default_research_field",
    "default_storage_limit",
    "default_user_birth_year",
];

/// Why the offering cannot move to the MUP backend server, if it cannot:
/// what the original itself refused to start without.
pub(crate) fn blocker(settings: &Mapping, components: &Mapping) -> Option<String> {
    for key in ["api_url", "username", "password"] {
        let set = get(settings, key)
            .and_then(|v| text(v).ok())
            .is_some_and(|t| !t.trim().is_empty());
        if !set {
            return Some(format!(
                "backend_settings.{key} is not set, without which the original could not start a MUP backend"
            ));
        }
    }
    if components.is_empty() {
        return Some(
            "backend_components is empty: a MUP resource is one allocation per component".into(),
        );
    }
    for (k, v) in components {
        let name = key_text(k).unwrap_or_default();
        let kind = match untag(v) {
            Value::Mapping(c) => get(c, "accounting_type").and_then(|t| text(t).ok()),
            _ => None,
        };
        if kind.as_deref().map(str::trim) != Some("limit") {
            return Some(format!(
                "backend_components.{name} is not accounting_type limit, which the original refused for MUP"
            ));
        }
    }
    None
}

/// The instance's settings without `components`, and the password to write
/// to `password_file` (named by the caller).
pub(crate) fn settings(
    original: &Mapping,
    password_file: &str,
    notes: &mut Notes<'_>,
) -> (Mapping, Option<String>) {
    let mut out = Mapping::new();
    let mut password = None;
    for (k, v) in original {
        let Some(key) = key_text(k) else {
            notes.push("backend_settings has a key that is not text; dropped".into());
            continue;
        };
        if matches!(untag(v), Value::Null) || COORDINATOR_KEYS.contains(&key.as_str()) {
            continue;
        }
        let converted = match key.as_str() {
            "password" => {
                match text(v) {
                    Ok(p) => {
                        password = Some(p);
                        out.insert(
                            Value::String("password_file".into()),
                            Value::String(password_file.into()),
                        );
                    }
                    Err(why) => notes.push(format!("backend_settings.password dropped: {why}")),
                }
                continue;
            }
            k if TEXT.contains(&k) => strict_text(v).map(Value::String),
            k if INTEGER.contains(&k) => integer(v).map(|i| Value::Number(i.into())),
            "project_prefix" | "default_allocation_type" => {
                notes.push(format!(
                    "backend_settings.{key} dropped: the original stored it but never used it for MUP"
                ));
                continue;
            }
            other => {
                notes.push(format!(
                    "backend_settings.{other} is not a setting of the MUP backend server; dropped"
                ));
                continue;
            }
        };
        match converted {
            Ok(value) => {
                out.insert(Value::String(key), value);
            }
            Err(why) => notes.push(format!("backend_settings.{key} dropped: {why}")),
        }
    }
    (out, password)
}

/// The components, and the first one's key (the primary component).
pub(crate) fn components(
    original: &Mapping,
    at: &str,
    notes: &mut Notes<'_>,
) -> Result<(Mapping, Option<String>), ImportError> {
    let invalid = |key: String, message: String| ImportError::Invalid { key, message };
    let mut out = Mapping::new();
    let mut first = None;
    for (k, v) in original {
        let Some(name) = key_text(k) else {
            return Err(invalid(at.into(), "has a component without a name".into()));
        };
        let here = format!("{at}.{name}");
        let Value::Mapping(c) = untag(v) else {
            return Err(invalid(here, "must be a mapping".into()));
        };
        let required = |key: &str| crate::required_text(c, &here, key);
        let mut d = Mapping::new();
        d.insert("label".into(), Value::String(required("label")?));
        d.insert(
            "measured_unit".into(),
            Value::String(required("measured_unit")?),
        );
        d.insert("accounting_type".into(), Value::String("limit".into()));
        if let Some(f) = get(c, "unit_factor").filter(|f| !matches!(untag(f), Value::Null)) {
            let factor = float(f).map_err(|m| invalid(format!("{here}.unit_factor"), m))?;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(invalid(
                    format!("{here}.unit_factor"),
                    "must be a positive number".into(),
                ));
            }
            d.insert("unit_factor".into(), crate::value::number(factor));
        }
        if let Some(t) = get(c, "mup_allocation_type").filter(|t| !matches!(untag(t), Value::Null))
        {
            d.insert(
                "mup_allocation_type".into(),
                Value::String(
                    text(t).map_err(|m| invalid(format!("{here}.mup_allocation_type"), m))?,
                ),
            );
        }
        if let Some(limit) = get(c, "limit").filter(|l| !matches!(untag(l), Value::Null)) {
            match integer(limit) {
                Ok(l) => {
                    d.insert("limit".into(), Value::Number(l.into()));
                }
                Err(why) => notes.push(format!("backend_components.{name}.limit dropped: {why}")),
            }
        }
        for key in c.keys().filter_map(key_text) {
            if !matches!(
                key.as_str(),
                "label"
                    | "measured_unit"
                    | "accounting_type"
                    | "unit_factor"
                    | "mup_allocation_type"
                    | "limit"
            ) {
                notes.push(format!(
                    "backend_components.{name}.{key} is not used by the MUP backend server; dropped"
                ));
            }
        }
        first.get_or_insert_with(|| name.clone());
        out.insert(Value::String(name), Value::Mapping(d));
    }
    Ok((out, first))
}
