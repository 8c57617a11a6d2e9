//! Migration of a `waldur-site-agent` configuration (the Python agent's YAML)
//! into a `waldur-coordinator` configuration, `waldur-backend-server`
//! configurations and the secrets both need.
//!
//! [`migrate`] reads the original text and returns a [`Migration`]: the
//! coordinator file, one backend-server file, the secrets to write (each a
//! file of its own, mode 0600, referenced by `token_file`) and notes, one
//! sentence each, on everything that was not carried over or changed. It
//! never writes files, never puts a secret into YAML or a note, and never
//! panics on any input. The output follows `coordinator/src/config.rs` and
//! `backend-server/src/config.rs` (both `deny_unknown_fields`) and, for the
//! instance `settings`, `backends/slurm/src/settings.rs`.
//!
//! # Decisions
//!
//! Files and names
//! * The coordinator file is [`COORDINATOR_FILE_NAME`] and the backend-server
//!   file [`BACKEND_SERVER_FILE_NAME`], both in `out_dir`; secrets are
//!   `secrets/<slug>.token` (and `secrets/<slug>.oidc-client-secret`)
//!   in `out_dir`, and the YAML names them by that relative path: the
//!   loaders resolve relative paths from the config file's folder, so the
//!   folder can move as a whole.
//! * `<slug>` is the offering name in lowercase letters, digits and `-`
//!   (at most 40 characters, `offering` when nothing is left), made unique
//!   with `-2`, `-3` ... . It is also the backend instance name and the
//!   coordinator `backends:` key of that offering.
//! * One backend-server file holds every instance: one instance per migrated
//!   offering (per offering and backend type). Offerings are never merged
//!   into one instance, even with identical settings, so each keeps its own
//!   components. Every coordinator backend uses
//!   [`Options::backend_endpoint`]; the server listens on `0.0.0.0` at that
//!   endpoint's port (50051 by default).
//! * TLS: the server uses `pki_dir/{ca.pem,backend.pem,backend.key}` and
//!   allows [`Options::coordinator_identity`]; the coordinator uses
//!   `pki_dir/{ca.pem,coordinator.pem,coordinator.key}`. No `server_name`
//!   is written: the endpoint's host must be in the server certificate.
//!
//! Which offerings move
//! * Only backends with a Rust backend server move: `slurm`, `moab` and
//!   `mup`. An offering naming any other backend (waldur, cscs-dwdi, okd,
//!   rancher, ...) in `order_processing_backend`, `membership_sync_backend` or
//!   `reporting_backend` (or, when none is set, in `backend_type`) is left
//!   out of every generated file, with a note to keep running the original
//!   agent for it. Half-migrating an offering would split it between two
//!   agents, and an instance of an unknown type would stop the whole backend
//!   server from starting.
//! * A SLURM offering is also left out when `backend_settings.execution_mode`
//!   is not `cli` (REST mode is not implemented) or `backend_components` is
//!   empty (the SLURM backend server needs its components; the original
//!   could take them from Waldur).
//! * An offering with none of the three role backends set ran nothing in the
//!   original and is left out with a note.
//! * If no offering can move, [`migrate`] fails with
//!   [`ImportError::NothingToMigrate`], naming the reasons.
//!
//! Offering keys
//! * `name`, `waldur_offering_uuid` (verbatim) and `waldur_api_url` (a `/`
//!   appended, as the original does) are required, as is a credential:
//!   `waldur_api_token`, or all of `oidc_token_url`, `oidc_client_id`,
//!   `oidc_client_secret`. A static token wins over OIDC, as in the original.
//! * `verify_ssl` (or, if it is absent, `waldur_verify_ssl`) becomes
//!   `waldur.verify_tls`.
//! * Tasks: `orders`, `report` and `membership` are on exactly when the
//!   corresponding `*_backend` key is set, whatever the mode the original ran
//!   in; `events` is on when `stomp_enabled` is true and a static token
//!   exists (STOMP logs in with it; with OIDC only, events are off and noted).
//! * With events on, `events.stomp_url` is written out: `wss://` when
//!   `websocket_use_tls` (default true) else `ws://`, host `stomp_ws_host` or
//!   the API host, port `stomp_ws_port` or, as the original did, 443 when
//!   `verify_ssl` else 80 (omitted when it is the scheme's default), path
//!   `stomp_ws_path` or `/rmqws-stomp`.
//! * Intervals are the original defaults (orders 300 s, report 1800 s,
//!   membership 300 s). With events on, order polling, and membership polling
//!   unless `stomp_membership_sync_enabled` is false, become hourly (3600 s),
//!   as the original's event mode relied on events plus an hourly sweep.
//! * `username_management_backend`: `base` (the default, which generates
//!   nothing) becomes `usernames.source: none`; any other (ldap,
//!   waldur-identity-bridge, ...) has no equivalent, becomes `none` too and
//!   is noted.
//! * `resource_import_enabled` becomes `resource_import.enabled`, with
//!   `backend_settings.project_prefix` as its `project_prefix`.
//! * `username_reconciliation_enabled`, `mqtt_enabled` and unknown keys are
//!   dropped with a note.
//!
//! Root keys
//! * `timezone` (default `UTC`) and `expose_backend_error_details` carry
//!   over; `reporting_periods` (1 to 12) becomes every offering's
//!   `reporting.periods`.
//! * `sentry_dsn`, `elastic_apm_server_url`, `global_proxy`, `log_level` and
//!   an enabled `log_shipping` have no equivalent and are noted when set;
//!   unknown root keys are noted too.
//!
//! `backend_settings`
//! * Coordinator keys: `check_backend_id_uniqueness`, `check_all_offerings`
//!   and `backend_id_max_retries` become `backend_id.*`;
//!   `default_homedir_umask` also becomes `membership.homedir_umask` and
//!   `enable_user_homedir_account_creation` also `membership.create_homedirs`.
//! * Every other key goes to the SLURM instance's `settings` only if the
//!   SLURM settings struct has it, nested structs (`qos_management`,
//!   `project_directory`, `homedir_quota`, `periodic_limits`) key by key.
//!   Values are converted to the struct's types (numbers to text where text
//!   is expected, `yes`/`no` to booleans, numeric text to numbers); a key
//!   the struct lacks, or a value that cannot be converted, is dropped with a
//!   note (`ldap`, `rest_api`, `enforce_offering_partitions`, ...). A name
//!   the SLURM backend will refuse (upper case, say) is kept, with a note.
//!   A `homedir_quota` without a valid provider is dropped.
//! * Null values count as unset and are left out.
//!
//! `backend_components`
//! * Become the SLURM instance's `components` map (by TRES name) with
//!   `label`, `measured_unit`, `unit_factor` (default 1), `accounting_type`
//!   (`usage`, `limit` or `one`), `limit` and `target_components`
//!   (`{factor}`). A missing label, measured unit or accounting type, or a
//!   factor that is not positive, is an error, as the original refused such
//!   components. Waldur-only component fields (`description`, `min_value`,
//!   prepaid durations, ...) and plugin fields are dropped with a note.
//!
//! Errors
//! * Invalid YAML, no `offerings`, and an offering without
//!   `waldur_offering_uuid`, `waldur_api_url`, `name` or credentials are
//!   [`ImportError`]s whose message names the key. Messages never contain a
//!   value from the input that could be a secret.

mod moab;
mod mup;
mod original;
mod out;
mod paths;
mod slurm;
mod value;

use original::{Globals, Original};
use paths::{Paths, coordinator_header, server_header};

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde_norway::{Mapping, Value};

use value::{kind, one_line, untag};

/// File name of the coordinator configuration inside `out_dir`.
pub const COORDINATOR_FILE_NAME: &str = "coordinator.yaml";

/// File name of the backend-server configuration inside `out_dir`.
pub const BACKEND_SERVER_FILE_NAME: &str = "backend-server.yaml";

/// The result of a migration; nothing has been written yet.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The coordinator configuration (`version: 1`), with a commented header
    /// naming the source file and listing the notes.
    pub coordinator_yaml: String,
    /// Backend-server configurations (currently exactly one).
    pub backend_servers: Vec<BackendServerConfig>,
    /// Secrets to write, each to its own file with mode 0600.
    pub secrets: Vec<SecretToWrite>,
    /// What was not carried over or changed, one sentence each.
    pub notes: Vec<String>,
}

/// One backend-server configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendServerConfig {
    /// File name inside `out_dir`.
    pub file_name: String,
    /// The YAML text.
    pub yaml: String,
}

/// A secret the caller writes to `out_dir/file_name` with mode 0600; the
/// generated YAML references that path.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToWrite {
    /// Path relative to `out_dir`, for example `secrets/hpc.token`.
    pub file_name: String,
    /// The secret itself (never printed by `Debug`).
    pub value: String,
}

impl fmt::Debug for SecretToWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretToWrite")
            .field("file_name", &self.file_name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Where the generated files will live and how the parts reach each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The original file, named in the generated headers.
    pub source: PathBuf,
    /// Directory the files will be written to (used in the generated paths;
    /// should be absolute).
    pub out_dir: PathBuf,
    /// The backend server's address as the coordinator dials it
    /// (`https://host:port`).
    pub backend_endpoint: String,
    /// Directory of the PEM files (`ca.pem`, `backend.*`, `coordinator.*`).
    pub pki_dir: PathBuf,
    /// SAN of the coordinator's client certificate, allowed by the server.
    pub coordinator_identity: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            source: PathBuf::from("waldur-site-agent-config.yaml"),
            out_dir: PathBuf::from("/etc/waldur"),
            backend_endpoint: "https://127.0.0.1:50051".into(),
            pki_dir: PathBuf::from("/etc/waldur/pki"),
            coordinator_identity: "coordinator.local".into(),
        }
    }
}

/// Why a configuration could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The text is not YAML.
    #[error("invalid yaml: {0}")]
    Yaml(String),
    /// A key is missing or has a value the original would refuse.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, for example `offerings[0].waldur_api_url`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Every offering was left out.
    #[error("nothing to migrate: {0}")]
    NothingToMigrate(String),
    /// An option cannot be used.
    #[error("option {option}: {message}")]
    Options {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The text of a required key of the mapping at `at` (a component's
/// `label`, say), or the error naming `<at>.<key>`.
pub(crate) fn required_text(
    c: &serde_norway::Mapping,
    at: &str,
    key: &str,
) -> Result<String, ImportError> {
    let v = value::get(c, key).ok_or_else(|| invalid(format!("{at}.{key}"), "is missing"))?;
    value::text(v).map_err(|m| invalid(format!("{at}.{key}"), m))
}

/// Migrates the original configuration text.
pub fn migrate(original_yaml: &str, options: &Options) -> Result<Migration, ImportError> {
    let paths = Paths::new(options)?;
    let root = parse_root(original_yaml)?;
    let mut notes = Vec::new();
    let globals = Globals::read(&root, &mut notes)?;
    let Some(list) = root.get("offerings").map(untag) else {
        return Err(invalid(
            "offerings",
            "is missing: the file configures no offering",
        ));
    };
    let list = match list {
        Value::Sequence(s) if !s.is_empty() => s,
        Value::Sequence(_) | Value::Null => {
            return Err(invalid(
                "offerings",
                "is empty: the file configures no offering",
            ));
        }
        other => {
            return Err(invalid(
                "offerings",
                format!("must be a list of offerings, found {}", kind(other)),
            ));
        }
    };
    let originals = list
        .iter()
        .enumerate()
        .map(|(i, v)| Original::read(i, v))
        .collect::<Result<Vec<_>, _>>()?;

    let mut coordinator = out::Coordinator {
        version: 1,
        timezone: globals.timezone.clone(),
        expose_backend_error_details: globals.expose_backend_error_details,
        admin: out::Listen {
            listen: "127.0.0.1:9180".into(),
        },
        backends: BTreeMap::new(),
        offerings: Vec::new(),
    };
    let mut instances = Vec::new();
    let mut secrets = Vec::new();
    let mut skipped = Vec::new();
    let mut slugs = HashSet::new();
    let mut uuids: Vec<(String, String)> = Vec::new();
    for o in originals {
        if let Some(reason) = o.blocker() {
            let note = format!(
                "{}: {reason}; the offering is not migrated, keep running the original agent \
                 for it.",
                o.label
            );
            skipped.push(note.clone());
            notes.push(note);
            continue;
        }
        let uuid = o.uuid.replace('-', "").to_ascii_lowercase();
        if let Some((_, first)) = uuids.iter().find(|(u, _)| *u == uuid) {
            notes.push(format!(
                "{} has the waldur_offering_uuid of {first}; both entries serve the same \
                 Waldur offering, check that this is intended.",
                o.label
            ));
        } else {
            uuids.push((uuid, o.label.clone()));
        }
        let slug = unique_slug(&o.name, &mut slugs);
        let migrated = o.migrate(&slug, &globals)?;
        coordinator.backends.insert(
            slug.clone(),
            out::Backend {
                endpoint: options.backend_endpoint.clone(),
                instance: slug.clone(),
                tls: paths.client_tls(),
            },
        );
        coordinator.offerings.push(migrated.offering);
        instances.push(migrated.instance);
        secrets.extend(migrated.secrets);
        notes.extend(migrated.notes);
    }
    if coordinator.offerings.is_empty() {
        return Err(ImportError::NothingToMigrate(
            skipped
                .iter()
                .map(|s| s.trim_end_matches('.'))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    notes.push(
        "intervals are the original's defaults (orders and membership every 5 minutes, report \
         every 30); if the original ran with WALDUR_SITE_AGENT_*_PERIOD_MINUTES set, change \
         intervals.* to match."
            .into(),
    );

    let server = out::Server {
        version: 1,
        listen: format!("0.0.0.0:{}", paths.listen_port),
        tls: out::ServerTls {
            ca: paths.pki("ca.pem"),
            cert: paths.pki("backend.pem"),
            key: paths.pki("backend.key"),
            allowed_clients: vec![options.coordinator_identity.clone()],
        },
        metrics: out::Listen {
            listen: "0.0.0.0:9181".into(),
        },
        instances,
    };
    let coordinator_yaml = format!(
        "{}{}",
        coordinator_header(options, &paths, &notes),
        to_yaml(&coordinator)?
    );
    let server_yaml = format!("{}{}", server_header(options, &paths), to_yaml(&server)?);
    Ok(Migration {
        coordinator_yaml,
        backend_servers: vec![BackendServerConfig {
            file_name: BACKEND_SERVER_FILE_NAME.into(),
            yaml: server_yaml,
        }],
        secrets,
        notes,
    })
}

fn to_yaml<T: serde::Serialize>(v: &T) -> Result<String, ImportError> {
    serde_norway::to_string(v).map_err(|e| ImportError::Yaml(format!("cannot write yaml: {e}")))
}

fn parse_root(text: &str) -> Result<Mapping, ImportError> {
    let mut v: Value =
        serde_norway::from_str(text).map_err(|e| ImportError::Yaml(one_line(&e.to_string())))?;
    v.apply_merge()
        .map_err(|e| ImportError::Yaml(one_line(&e.to_string())))?;
    match untag(&v) {
        Value::Mapping(m) => Ok(m.clone()),
        Value::Null => Err(invalid("offerings", "is missing: the file is empty")),
        other => Err(invalid(
            "(top level)",
            format!(
                "must be a mapping with an offerings list, found {}",
                kind(other)
            ),
        )),
    }
}

fn unique_slug(name: &str, taken: &mut HashSet<String>) -> String {
    let base = value::slug(name);
    let mut candidate = base.clone();
    let mut n = 1u32;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

#[cfg(test)]
mod tests;
