//! The SLURM backend instance: `settings` from the original `backend_settings`
//! and `components` from `backend_components`, following
//! `backends/slurm/src/settings.rs` key by key. Every struct there has
//! `deny_unknown_fields`, so only the keys listed here are written.

use serde_norway::{Mapping, Value};

use crate::ImportError;
use crate::value::{boolean, float, get, integer, key_text, kind, text, umask, untag};

/// Instance type name.
pub(crate) const TYPE: &str = "slurm";

/// How a setting is converted.
#[derive(Clone, Copy)]
enum Kind {
    /// Text (numbers are spelt out).
    Text,
    /// Text that must be a SLURM account, QoS, partition or cluster name.
    Name,
    /// An octal umask.
    Umask,
    /// A boolean.
    Bool,
    /// A whole number.
    Int,
    /// A whole number, at least zero.
    UInt,
    /// A list of names.
    NameList,
    /// A list of text.
    TextList,
    /// One of these words (compared ignoring case, written as listed).
    OneOf(&'static [&'static str]),
    /// A nested settings struct.
    Map(&'static [(&'static str, Kind)]),
}

const LUSTRE_QUOTA: &[(&str, Kind)] = &[
    ("mount_point", Kind::Text),
    ("block_softlimit", Kind::Text),
    ("block_hardlimit", Kind::Text),
    ("inode_softlimit", Kind::Text),
    ("inode_hardlimit", Kind::Text),
];

/// The allocation-group keys of the original's `ldap` block; its bind
/// password moves to a secret file (`bind_password_file`).
const LDAP: &[(&str, Kind)] = &[
    ("uri", Kind::Text),
    ("bind_dn", Kind::Text),
    ("base_dn", Kind::Text),
    ("use_starttls", Kind::Bool),
    ("groups_ou", Kind::Text),
    ("gid_range_start", Kind::UInt),
    ("gid_range_end", Kind::UInt),
    ("project_group_object_classes", Kind::TextList),
];

/// Keys of the original's `ldap` block that configured its LDAP username
/// backend, which the SLURM backend server does not run.
const LDAP_USERNAME_KEYS: &[&str] = &[
    "people_ou",
    "uid_range_start",
    "uid_range_end",
    "default_login_shell",
    "default_home_base",
    "user_object_classes",
    "user_group_object_classes",
    "username_format",
    "remove_user_on_deactivate",
    "generate_vpn_password",
    "access_groups",
    "welcome_email",
    "waldur_username_attribute",
];

const QOS_MANAGEMENT: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("flags", Kind::Text),
    ("grp_tres", Kind::Text),
    ("max_jobs", Kind::Int),
    ("max_submit", Kind::Int),
    ("max_wall", Kind::Text),
    ("min_tres_per_job", Kind::Text),
    ("additional_qos", Kind::NameList),
];

const PROJECT_DIRECTORY: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("base_path", Kind::Text),
    ("owner", Kind::Text),
    ("permissions", Kind::Text),
    ("set_gid", Kind::Bool),
    ("set_acl", Kind::Bool),
    ("group_owner_source", Kind::Text),
    ("group_name", Kind::Text),
    ("lustre_quota", Kind::Map(LUSTRE_QUOTA)),
];

const HOMEDIR_QUOTA: &[(&str, Kind)] = &[
    ("provider", Kind::OneOf(&["ceph_xattr", "xfs", "lustre"])),
    ("max_bytes", Kind::UInt),
    ("max_files", Kind::UInt),
    ("mount_point", Kind::Text),
    ("block_softlimit", Kind::Text),
    ("block_hardlimit", Kind::Text),
    ("inode_softlimit", Kind::Text),
    ("inode_hardlimit", Kind::Text),
];

const PERIODIC_LIMITS: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    (
        "limit_type",
        Kind::OneOf(&["GrpTRESMins", "MaxTRESMins", "GrpTRES"]),
    ),
];

/// Every key of `SlurmSettings` except `components`.
const SETTINGS: &[(&str, Kind)] = &[
    ("default_account", Kind::Name),
    (
        "default_account_policy",
        Kind::OneOf(&["common", "individual", "none"]),
    ),
    ("root_account", Kind::Name),
    ("customer_prefix", Kind::Text),
    ("project_prefix", Kind::Text),
    ("allocation_prefix", Kind::Text),
    ("parent_account", Kind::Name),
    ("cluster_name", Kind::Name),
    ("slurm_bin_path", Kind::Text),
    ("qos_default", Kind::Name),
    ("qos_downscaled", Kind::Name),
    ("qos_paused", Kind::Name),
    ("default_partition", Kind::Name),
    ("soft_delete", Kind::Bool),
    ("enable_user_homedir_account_creation", Kind::Bool),
    ("default_homedir_umask", Kind::Umask),
    ("homedir_base_path", Kind::Text),
    ("qos_management", Kind::Map(QOS_MANAGEMENT)),
    ("ldap", Kind::Map(LDAP)),
    ("qos_enforcement_enabled", Kind::Bool),
    ("enforce_offering_qos", Kind::Bool),
    ("partitions", Kind::NameList),
    ("project_directory", Kind::Map(PROJECT_DIRECTORY)),
    ("homedir_quota", Kind::Map(HOMEDIR_QUOTA)),
    ("periodic_limits", Kind::Map(PERIODIC_LIMITS)),
];

/// Keys the coordinator owns (see `crate::coordinator_settings`); they are
/// not SLURM settings and are left out without a note.
pub(crate) const COORDINATOR_KEYS: &[&str] = &[
    "check_backend_id_uniqueness",
    "check_all_offerings",
    "backend_id_max_retries",
];

/// Original keys the SLURM backend server does not implement, with why.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "execution_mode",
        "the SLURM backend server always runs the SLURM command-line tools",
    ),
    (
        "rest_api",
        "the slurmrestd (REST) mode is not supported by the SLURM backend server",
    ),
    (
        "enforce_offering_partitions",
        "the backend server does not see the offering's partitions, list them under partitions instead",
    ),
    (
        "components",
        "components are generated from backend_components",
    ),
    (
        "periodic_limits.emulator_mode",
        "the SLURM emulator's control API is not supported",
    ),
    (
        "periodic_limits.emulator_base_url",
        "the SLURM emulator's control API is not supported",
    ),
];

/// Why the offering cannot move to the SLURM backend server, if it cannot.
pub(crate) fn blocker(settings: &Mapping, components: &Mapping) -> Option<String> {
    if let Some(mode) = get(settings, "execution_mode")
        && text(mode).map(|m| m.trim().to_ascii_lowercase()).as_deref() != Ok("cli")
    {
        return Some(
            "backend_settings.execution_mode is not cli, and the SLURM backend server runs \
             only the command-line tools"
                .into(),
        );
    }
    if components.is_empty() {
        return Some(
            "backend_components is empty, and the SLURM backend server needs its components \
             listed"
                .into(),
        );
    }
    None
}

/// Where notes go: the offering's label and the list.
pub(crate) struct Notes<'a> {
    /// `offering "Name"`.
    pub label: &'a str,
    /// The notes.
    pub list: &'a mut Vec<String>,
}

impl Notes<'_> {
    pub(crate) fn push(&mut self, s: String) {
        self.list.push(format!("{}: {s}.", self.label));
    }
}

/// The instance's `settings` without `components`, and the LDAP bind
/// password to write to `password_file` (named by the caller).
pub(crate) fn settings(
    original: &Mapping,
    password_file: &str,
    notes: &mut Notes<'_>,
) -> (Mapping, Option<String>) {
    let mut original = original.clone();
    let mut password = None;
    if let Some(Value::Mapping(ldap)) = original.get_mut("ldap").map(untag_mut) {
        if let Some(v) = ldap.remove("bind_password") {
            match text(&v) {
                Ok(p) => password = Some(p),
                Err(why) => notes.push(format!(
                    "backend_settings.ldap.bind_password dropped: {why}"
                )),
            }
        }
        for key in LDAP_USERNAME_KEYS {
            if ldap.remove(*key).is_some() {
                notes.push(format!(
                    "backend_settings.ldap.{key} dropped: it configured the original's LDAP \
                     username backend, which the SLURM backend server does not run"
                ));
            }
        }
        for key in ["uri", "bind_dn", "base_dn"] {
            if get(ldap, key).is_none() {
                notes.push(format!(
                    "backend_settings.ldap.{key} is missing (the original needed it too); set it \
                     before starting the server"
                ));
            }
        }
    }
    let mut out = convert_map(&original, SETTINGS, "backend_settings", "", notes);
    if password.is_some()
        && let Some(Value::Mapping(ldap)) = out.get_mut("ldap")
    {
        ldap.insert(
            Value::String("bind_password_file".into()),
            Value::String(password_file.into()),
        );
    }
    (out, password)
}

/// The value under YAML tags, mutably.
fn untag_mut(v: &mut Value) -> &mut Value {
    match v {
        Value::Tagged(t) => untag_mut(&mut t.value),
        other => other,
    }
}

fn convert_map(
    original: &Mapping,
    fields: &[(&str, Kind)],
    at: &str,
    prefix: &str,
    notes: &mut Notes<'_>,
) -> Mapping {
    let mut out = Mapping::new();
    for (k, v) in original {
        let Some(key) = key_text(k) else {
            notes.push(format!(
                "{at} has a key that is not text ({}); dropped",
                kind(k)
            ));
            continue;
        };
        let path = format!("{prefix}{key}");
        if matches!(untag(v), Value::Null) {
            continue;
        }
        if prefix.is_empty() && COORDINATOR_KEYS.contains(&key.as_str()) {
            continue;
        }
        let Some((_, field)) = fields.iter().find(|(name, _)| *name == key) else {
            match NOT_SUPPORTED.iter().find(|(name, _)| *name == path) {
                Some((_, why)) => notes.push(format!("backend_settings.{path} dropped: {why}")),
                None => notes.push(format!(
                    "backend_settings.{path} is not a setting of the SLURM backend server; dropped"
                )),
            }
            continue;
        };
        match convert(*field, v, &path, notes) {
            Ok(value) => {
                out.insert(Value::String(key), value);
            }
            Err(why) => notes.push(format!("backend_settings.{path} dropped: {why}")),
        }
    }
    out
}

fn convert(kind_: Kind, v: &Value, path: &str, notes: &mut Notes<'_>) -> Result<Value, String> {
    match kind_ {
        Kind::Text => text(v).map(Value::String),
        Kind::Name => {
            let name = text(v)?;
            if !valid_name(&name) {
                notes.push(format!(
                    "backend_settings.{path} {name:?} is not a name the SLURM backend server \
                     accepts (lowercase letters, digits, _ - ., at most 64); kept, fix it \
                     before starting the server"
                ));
            }
            Ok(Value::String(name))
        }
        Kind::Umask => {
            let (mask, was_number) = umask(v)?;
            if was_number {
                notes.push(format!(
                    "backend_settings.{path} was written as a number; carried over as {mask:?}, \
                     check it is the umask you meant"
                ));
            }
            Ok(Value::String(mask))
        }
        Kind::Bool => boolean(v).map(Value::Bool),
        Kind::Int => integer(v).map(|i| Value::Number(i.into())),
        Kind::UInt => match integer(v)? {
            i if i >= 0 => Ok(Value::Number(i.into())),
            _ => Err("must not be negative".into()),
        },
        Kind::NameList => {
            let Value::Sequence(items) = untag(v) else {
                return Err(format!("expected a list, found {}", kind(v)));
            };
            let mut out = Vec::new();
            for item in items {
                let name = text(item)?;
                if !valid_name(&name) {
                    notes.push(format!(
                        "backend_settings.{path} entry {name:?} is not a name the SLURM \
                         backend server accepts; kept, fix it before starting the server"
                    ));
                }
                out.push(Value::String(name));
            }
            Ok(Value::Sequence(out))
        }
        Kind::TextList => {
            let Value::Sequence(items) = untag(v) else {
                return Err(format!("expected a list, found {}", kind(v)));
            };
            items
                .iter()
                .map(|i| text(i).map(Value::String))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Sequence)
        }
        Kind::OneOf(words) => {
            let word = text(v)?;
            words
                .iter()
                .find(|w| w.eq_ignore_ascii_case(word.trim()))
                .map(|w| Value::String((*w).to_owned()))
                .ok_or_else(|| format!("{word:?} is not one of {}", words.join(", ")))
        }
        Kind::Map(fields) => {
            let Value::Mapping(m) = untag(v) else {
                return Err(format!("expected a mapping, found {}", kind(v)));
            };
            let out = convert_map(m, fields, "backend_settings", &format!("{path}."), notes);
            if path == "homedir_quota" && !out.contains_key("provider") {
                return Err("it names no valid provider (ceph_xattr, xfs or lustre)".into());
            }
            Ok(Value::Mapping(out))
        }
    }
}

/// `backends/slurm/src/names.rs::valid_account`, the rule the backend
/// applies to account, QoS, partition and cluster names.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

/// Waldur component fields the original passed through to Waldur; the SLURM
/// backend describes them too, so they are carried over unchanged.
const WALDUR_FIELDS: &[&str] = &[
    "description",
    "min_value",
    "max_value",
    "max_available_limit",
    "default_limit",
    "limit_period",
    "article_code",
    "is_boolean",
    "is_prepaid",
    "min_prepaid_duration",
    "max_prepaid_duration",
    "prepaid_duration_step",
    "min_renewal_duration",
    "max_renewal_duration",
    "renewal_duration_step",
];

/// The instance's `components`: a mapping by TRES name of
/// `{label, measured_unit, unit_factor, accounting_type, limit?, target_components?}`.
/// A component the original would have refused (no label, measured_unit or
/// valid accounting_type) is an error; so is a factor the backend refuses.
pub(crate) fn components(
    original: &Mapping,
    at: &str,
    notes: &mut Notes<'_>,
) -> Result<Mapping, ImportError> {
    let invalid = |key: String, message: String| ImportError::Invalid { key, message };
    let mut out = Mapping::new();
    for (k, v) in original {
        let name = match key_text(k) {
            Some(n) if !n.trim().is_empty() => n,
            _ => return Err(invalid(at.into(), "has a component without a name".into())),
        };
        let here = format!("{at}.{name}");
        let noted = format!("backend_components.{name}");
        let Value::Mapping(c) = untag(v) else {
            return Err(invalid(
                here,
                format!("must be a mapping, found {}", kind(v)),
            ));
        };
        let required = |key: &str| crate::required_text(c, &here, key);
        let label = required("label")?;
        let measured_unit = required("measured_unit")?;
        let accounting_type = required("accounting_type")?.trim().to_ascii_lowercase();
        if !matches!(accounting_type.as_str(), "usage" | "limit" | "one") {
            return Err(invalid(
                format!("{here}.accounting_type"),
                format!("{accounting_type:?} is not usage, limit or one"),
            ));
        }
        let positive = |key: &str, v: &Value| -> Result<f64, ImportError> {
            match float(v) {
                Ok(f) if f > 0.0 => Ok(f),
                Ok(_) => Err(invalid(
                    format!("{here}.{key}"),
                    "must be positive for the SLURM backend".into(),
                )),
                Err(m) => Err(invalid(format!("{here}.{key}"), m)),
            }
        };
        let unit_factor = match get(c, "unit_factor") {
            Some(v) => positive("unit_factor", v)?,
            None => 1.0,
        };
        let limit = match get(c, "limit") {
            Some(v) => Some(float(v).map_err(|m| invalid(format!("{here}.limit"), m))?),
            None => None,
        };
        let mut targets = Mapping::new();
        if let Some(t) = get(c, "target_components") {
            let Value::Mapping(t) = t else {
                return Err(invalid(
                    format!("{here}.target_components"),
                    format!("must be a mapping, found {}", kind(t)),
                ));
            };
            for (tk, tv) in t {
                let tres = match key_text(tk) {
                    Some(n) if !n.trim().is_empty() => n,
                    _ => {
                        return Err(invalid(
                            format!("{here}.target_components"),
                            "has a target without a name".into(),
                        ));
                    }
                };
                let there = format!("target_components.{tres}");
                let factor = match untag(tv) {
                    Value::Null => 1.0,
                    Value::Mapping(tm) => {
                        for key in tm.keys().filter_map(key_text) {
                            if key != "factor" {
                                notes.push(format!(
                                    "{noted}.{there}.{key} is not a field of the SLURM backend \
                                     server's target components; dropped"
                                ));
                            }
                        }
                        match get(tm, "factor") {
                            Some(f) => positive(&format!("{there}.factor"), f)?,
                            None => 1.0,
                        }
                    }
                    other => {
                        return Err(invalid(
                            format!("{here}.{there}"),
                            format!("must be a mapping with a factor, found {}", kind(other)),
                        ));
                    }
                };
                let mut tm = Mapping::new();
                tm.insert("factor".into(), crate::value::number(factor));
                targets.insert(Value::String(tres), Value::Mapping(tm));
            }
        }
        let mut passed = Mapping::new();
        for key in c.keys().filter_map(key_text) {
            let known = [
                "label",
                "measured_unit",
                "accounting_type",
                "unit_factor",
                "limit",
                "target_components",
            ];
            if known.contains(&key.as_str()) {
                continue;
            }
            if WALDUR_FIELDS.contains(&key.as_str()) {
                if let Some(v) = get(c, &key) {
                    passed.insert(Value::String(key.clone()), untag(v).clone());
                }
            } else if key == "unit_factor_reporting" {
                notes.push(format!(
                    "{noted}.{key} dropped: no code path of the original read it"
                ));
            } else {
                notes.push(format!(
                    "{noted}.{key} is not a component field of the SLURM backend server; dropped"
                ));
            }
        }
        let mut comp = Mapping::new();
        comp.insert("label".into(), Value::String(label));
        comp.insert("measured_unit".into(), Value::String(measured_unit));
        comp.insert("unit_factor".into(), crate::value::number(unit_factor));
        comp.insert("accounting_type".into(), Value::String(accounting_type));
        if let Some(l) = limit {
            comp.insert("limit".into(), crate::value::number(l));
        }
        if !targets.is_empty() {
            comp.insert("target_components".into(), Value::Mapping(targets));
        }
        comp.extend(passed);
        out.insert(Value::String(name), Value::Mapping(comp));
    }
    Ok(out)
}
