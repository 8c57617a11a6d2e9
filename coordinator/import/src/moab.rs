//! MOAB offerings: the original agent's `backend_settings` and
//! `backend_components` as the settings of a `moab` backend-server instance.
//!
//! Kept: `project_prefix`, `allocation_prefix`, `soft_delete`, and the
//! `deposit` component (label, unit, accounting type, limit). Dropped with a
//! note: `customer_prefix` (MOAB accounts have no customer tier),
//! `default_account` (the original ignored it for MOAB), any other key, a
//! `unit_factor` (deposits are never converted) and any other component.

use serde_norway::{Mapping, Value};

use crate::ImportError;
use crate::slurm::{COORDINATOR_KEYS, Notes};
use crate::value::{boolean, get, integer, key_text, strict_text, untag};

/// The backend type, in both configs.
pub(crate) const TYPE: &str = "moab";

/// Why the offering cannot move to the MOAB backend server, if it cannot.
pub(crate) fn blocker(components: &Mapping) -> Option<String> {
    let has_deposit = components
        .keys()
        .any(|k| key_text(k).as_deref() == Some("deposit"));
    if has_deposit {
        None
    } else {
        Some(
            "backend_components has no deposit component, without which the original could \
             not start a MOAB backend"
                .into(),
        )
    }
}

/// The instance's settings without `components`.
pub(crate) fn settings(original: &Mapping, notes: &mut Notes<'_>) -> Mapping {
    let mut out = Mapping::new();
    for (k, v) in original {
        let Some(key) = key_text(k) else {
            notes.push("backend_settings has a key that is not text; dropped".into());
            continue;
        };
        if matches!(untag(v), Value::Null) || COORDINATOR_KEYS.contains(&key.as_str()) {
            continue;
        }
        let converted = match key.as_str() {
            "project_prefix" | "allocation_prefix" => strict_text(v).map(Value::String),
            "soft_delete" => boolean(v).map(Value::Bool),
            "customer_prefix" => {
                notes.push(
                    "backend_settings.customer_prefix dropped: MOAB accounts have no customer tier"
                        .into(),
                );
                continue;
            }
            "default_account" => {
                notes.push(
                    "backend_settings.default_account dropped: the original ignored it for MOAB"
                        .into(),
                );
                continue;
            }
            other => {
                notes.push(format!(
                    "backend_settings.{other} is not a setting of the MOAB backend server; dropped"
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
    out
}

/// The `deposit` component.
pub(crate) fn components(
    original: &Mapping,
    at: &str,
    notes: &mut Notes<'_>,
) -> Result<Mapping, ImportError> {
    let invalid = |key: String, message: String| ImportError::Invalid { key, message };
    let mut out = Mapping::new();
    for (k, v) in original {
        let Some(name) = key_text(k) else {
            return Err(invalid(at.into(), "has a component without a name".into()));
        };
        if name != "deposit" {
            notes.push(format!(
                "backend_components.{name} dropped: a MOAB account carries one deposit"
            ));
            continue;
        }
        let here = format!("{at}.deposit");
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
        let accounting_type = required("accounting_type")?.trim().to_ascii_lowercase();
        if !matches!(accounting_type.as_str(), "usage" | "limit" | "one" | "few") {
            return Err(invalid(
                format!("{here}.accounting_type"),
                format!("{accounting_type:?} is not usage, limit, one or few"),
            ));
        }
        d.insert("accounting_type".into(), Value::String(accounting_type));
        if let Some(limit) = get(c, "limit").filter(|l| !matches!(untag(l), Value::Null)) {
            match integer(limit) {
                Ok(l) => {
                    d.insert("limit".into(), Value::Number(l.into()));
                }
                Err(why) => notes.push(format!("backend_components.deposit.limit dropped: {why}")),
            }
        }
        if get(c, "unit_factor").is_some() {
            notes.push(
                "backend_components.deposit.unit_factor dropped: deposits are never converted (the original forced 1)"
                    .into(),
            );
        }
        out.insert("deposit".into(), Value::Mapping(d));
    }
    Ok(out)
}
