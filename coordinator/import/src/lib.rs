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
//!   relative to `out_dir`, and the YAML names them by absolute path
//!   `out_dir/secrets/...`. A relative `out_dir` gets a note.
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
//! * Only backends with a Rust backend server move: `slurm`. An offering
//!   naming any other backend (moab, mup, waldur, cscs-dwdi, okd, rancher,
//!   ...) in `order_processing_backend`, `membership_sync_backend` or
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

mod out;
mod slurm;
mod value;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use value::{boolean, get, integer, key_text, kind, one_line, strict_text, text, untag};

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

/// Migrates the original configuration text.
pub fn migrate(original_yaml: &str, options: &Options) -> Result<Migration, ImportError> {
    let paths = Paths::new(options)?;
    let root = parse_root(original_yaml)?;
    let mut notes = Vec::new();
    if options.out_dir.is_relative() {
        notes.push(format!(
            "out_dir {:?} is relative, so token_file paths are relative to the coordinator's \
             working directory; an absolute out_dir is safer.",
            paths.out_dir
        ));
    }
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
        let migrated = o.migrate(&slug, &globals, &paths)?;
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

/// Generated paths, as text.
struct Paths {
    out_dir: String,
    pki_dir: PathBuf,
    out_path: PathBuf,
    listen_port: u16,
}

impl Paths {
    fn new(options: &Options) -> Result<Self, ImportError> {
        let utf8 = |p: &Path, option: &'static str| -> Result<String, ImportError> {
            match p.to_str() {
                Some(s) if !s.is_empty() && !s.chars().any(char::is_control) => Ok(s.to_owned()),
                _ => Err(ImportError::Options {
                    option,
                    message: "must be a non-empty UTF-8 path without control characters".into(),
                }),
            }
        };
        let out_dir = utf8(&options.out_dir, "out_dir")?;
        utf8(&options.pki_dir, "pki_dir")?;
        let e = &options.backend_endpoint;
        if !e.starts_with("https://") || value::url_host(e).is_none() {
            return Err(ImportError::Options {
                option: "backend_endpoint",
                message: format!(
                    "{:?} must be https://host:port (the coordinator only dials mutual TLS)",
                    one_line(e)
                ),
            });
        }
        let id = &options.coordinator_identity;
        if id.trim().is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImportError::Options {
                option: "coordinator_identity",
                message: "must be a certificate SAN such as coordinator.example.org".into(),
            });
        }
        Ok(Self {
            out_dir,
            pki_dir: options.pki_dir.clone(),
            out_path: options.out_dir.clone(),
            listen_port: value::url_port(e).unwrap_or(443),
        })
    }

    fn pki(&self, file: &str) -> String {
        self.pki_dir.join(file).to_string_lossy().into_owned()
    }

    fn out(&self, file: &str) -> String {
        self.out_path.join(file).to_string_lossy().into_owned()
    }

    fn client_tls(&self) -> out::TlsFiles {
        out::TlsFiles {
            ca: self.pki("ca.pem"),
            cert: self.pki("coordinator.pem"),
            key: self.pki("coordinator.key"),
        }
    }
}

fn coordinator_header(options: &Options, paths: &Paths, notes: &[String]) -> String {
    let mut h = String::new();
    h.push_str("# waldur-coordinator configuration, generated by waldur-config-import from the\n");
    h.push_str(&format!(
        "# waldur-site-agent configuration {}.\n",
        one_line(&options.source.to_string_lossy())
    ));
    h.push_str(
        "# Secrets are not in this file: each offering reads its API token (or OIDC client\n",
    );
    h.push_str("# secret) from the file named below, written with mode 0600. Review the notes,\n");
    h.push_str("# then run:\n");
    h.push_str(&format!(
        "#   waldur-coordinator check --config {}\n",
        one_line(&paths.out(COORDINATOR_FILE_NAME))
    ));
    if !notes.is_empty() {
        h.push_str("#\n# Migration notes:\n");
        for n in notes {
            h.push_str(&format!("#   - {}\n", one_line(n)));
        }
    }
    h.push('\n');
    h
}

fn server_header(options: &Options, paths: &Paths) -> String {
    let host = value::url_host(&options.backend_endpoint).unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let pki = one_line(&paths.pki_dir.to_string_lossy());
    let mut h = String::new();
    h.push_str(
        "# waldur-backend-server configuration, generated by waldur-config-import from the\n",
    );
    h.push_str(&format!(
        "# waldur-site-agent configuration {}: one instance per migrated offering.\n",
        one_line(&options.source.to_string_lossy())
    ));
    h.push_str("# Certificates, if the site has none yet:\n");
    h.push_str(&format!(
        "#   waldur-backend-server pki init-ca --dir {pki}\n"
    ));
    h.push_str(&format!(
        "#   waldur-backend-server pki issue-server --dir {pki} --name {} --out backend\n",
        one_line(host)
    ));
    h.push_str(&format!(
        "#   waldur-backend-server pki issue-client --dir {pki} --name {} --out coordinator\n",
        one_line(&options.coordinator_identity)
    ));
    h.push_str(&format!(
        "# Then: waldur-backend-server check --config {}\n\n",
        one_line(&paths.out(BACKEND_SERVER_FILE_NAME))
    ));
    h
}

/// Root keys.
struct Globals {
    timezone: String,
    expose_backend_error_details: bool,
    reporting_periods: u32,
}

impl Globals {
    fn read(root: &Mapping, notes: &mut Vec<String>) -> Result<Self, ImportError> {
        let timezone = match get(root, "timezone") {
            None => "UTC".to_owned(),
            Some(v) => {
                let tz = strict_text(v).map_err(|m| invalid("timezone", m))?;
                let tz = tz.trim().to_owned();
                if tz.is_empty() || tz.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid("timezone", "must be an IANA time zone such as UTC"));
                }
                tz
            }
        };
        let expose_backend_error_details = match get(root, "expose_backend_error_details") {
            None => true,
            Some(v) => boolean(v).map_err(|m| invalid("expose_backend_error_details", m))?,
        };
        let reporting_periods = match get(root, "reporting_periods") {
            None => 2,
            Some(v) => match integer(v) {
                Ok(n @ 1..=12) => n as u32,
                Ok(_) => return Err(invalid("reporting_periods", "must be 1 to 12")),
                Err(m) => return Err(invalid("reporting_periods", m)),
            },
        };
        for (k, v) in root {
            let Some(key) = key_text(k) else {
                notes.push("a top-level key that is not text was dropped.".into());
                continue;
            };
            let set = match untag(v) {
                Value::Null => false,
                Value::String(s) => !s.trim().is_empty(),
                _ => true,
            };
            match key.as_str() {
                "offerings" | "timezone" | "expose_backend_error_details" | "reporting_periods" => {
                }
                "sentry_dsn" | "elastic_apm_server_url" if set => notes.push(format!(
                    "{key} is not carried over: the coordinator and backend server report \
                     errors only in their logs."
                )),
                "global_proxy" if set => notes.push(
                    "global_proxy is not carried over: the coordinator connects to Waldur \
                     directly (the original ignored it in event mode too)."
                        .into(),
                ),
                "log_level" if set => notes.push(
                    "log_level is not carried over: set RUST_LOG (for example RUST_LOG=info) in \
                     the services' environment instead."
                        .into(),
                ),
                "log_shipping" => {
                    let enabled = match untag(v) {
                        Value::Mapping(m) => get(m, "enabled").map(boolean) == Some(Ok(true)),
                        _ => false,
                    };
                    if enabled {
                        notes.push(
                            "log_shipping is not carried over: the coordinator does not ship \
                             its logs to Waldur."
                                .into(),
                        );
                    }
                }
                "sentry_dsn" | "elastic_apm_server_url" | "global_proxy" | "log_level" => {}
                other => notes.push(format!(
                    "top-level key {:?} is not a key of the original agent (which ignored \
                     it); dropped.",
                    one_line(other)
                )),
            }
        }
        Ok(Self {
            timezone,
            expose_backend_error_details,
            reporting_periods,
        })
    }
}

/// The roles, in the original's key names.
const ROLE_KEYS: [&str; 3] = [
    "order_processing_backend",
    "reporting_backend",
    "membership_sync_backend",
];

/// Keys of the original's offering model.
const OFFERING_KEYS: &[&str] = &[
    "name",
    "waldur_api_url",
    "waldur_api_token",
    "waldur_offering_uuid",
    "oidc_token_url",
    "oidc_client_id",
    "oidc_client_secret",
    "backend_type",
    "backend_settings",
    "backend_components",
    "websocket_use_tls",
    "stomp_enabled",
    "stomp_membership_sync_enabled",
    "stomp_ws_host",
    "stomp_ws_port",
    "stomp_ws_path",
    "order_processing_backend",
    "membership_sync_backend",
    "reporting_backend",
    "username_management_backend",
    "resource_import_enabled",
    "username_reconciliation_enabled",
    "verify_ssl",
    "waldur_verify_ssl",
];

/// Credentials of an offering.
enum Credential {
    Token(String),
    Oidc {
        token_url: String,
        client_id: String,
        client_secret: String,
    },
}

/// One original offering, read and checked.
struct Original {
    at: String,
    label: String,
    name: String,
    uuid: String,
    api_url: String,
    api_host: String,
    credential: Credential,
    backend_type: Option<String>,
    /// Orders, report, membership.
    roles: [Option<String>; 3],
    settings: Mapping,
    components: Mapping,
    stomp: bool,
    stomp_membership: Option<bool>,
    ws_host: Option<String>,
    ws_port: Option<u16>,
    ws_path: Option<String>,
    ws_tls: bool,
    username_backend: String,
    resource_import: bool,
    verify_ssl: bool,
    /// Notes about this offering's keys, kept only if it is migrated.
    notes: Vec<String>,
}

/// What one migrated offering contributes.
struct Migrated {
    offering: out::Offering,
    instance: out::Instance,
    secrets: Vec<SecretToWrite>,
    notes: Vec<String>,
}

impl Original {
    fn read(index: usize, v: &Value) -> Result<Self, ImportError> {
        let at = format!("offerings[{index}]");
        let Value::Mapping(m) = untag(v) else {
            return Err(invalid(at, format!("must be a mapping, found {}", kind(v))));
        };
        let key = |k: &str| format!("{at}.{k}");
        let opt_text = |k: &str| -> Result<Option<String>, ImportError> {
            match get(m, k) {
                None => Ok(None),
                Some(v) => {
                    let s = strict_text(v).map_err(|e| invalid(key(k), e))?;
                    let s = s.trim().to_owned();
                    Ok((!s.is_empty()).then_some(s))
                }
            }
        };
        let required = |k: &str, what: &str| -> Result<String, ImportError> {
            opt_text(k)?.ok_or_else(|| invalid(key(k), format!("is missing ({what})")))
        };
        let flag = |k: &str| -> Result<Option<bool>, ImportError> {
            get(m, k)
                .map(|v| boolean(v).map_err(|e| invalid(key(k), e)))
                .transpose()
        };
        let name = required("name", "every offering needs a name")?;
        let label = format!("offering {:?}", one_line(&name));
        let uuid = required("waldur_offering_uuid", "the offering's uuid in Waldur")?;
        if uuid.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                key("waldur_offering_uuid"),
                "must not contain spaces",
            ));
        }
        let mut api_url = required("waldur_api_url", "the Waldur API url")?;
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(invalid(
                key("waldur_api_url"),
                "must start with http:// or https://",
            ));
        }
        if !api_url.ends_with('/') {
            api_url.push('/');
        }
        let api_host = value::url_host(&api_url)
            .ok_or_else(|| invalid(key("waldur_api_url"), "names no host"))?;

        let mut notes = Vec::new();
        let token = opt_text("waldur_api_token")?;
        let oidc = [
            opt_text("oidc_token_url")?,
            opt_text("oidc_client_id")?,
            opt_text("oidc_client_secret")?,
        ];
        let credential = match (token, oidc) {
            (Some(t), oidc) => {
                if oidc.iter().any(Option::is_some) {
                    notes.push(format!(
                        "{label}: oidc_token_url, oidc_client_id and oidc_client_secret are not \
                         carried over: the static waldur_api_token takes precedence, as in the \
                         original."
                    ));
                }
                Credential::Token(t)
            }
            (None, [Some(token_url), Some(client_id), Some(client_secret)]) => {
                if !(token_url.starts_with("http://") || token_url.starts_with("https://")) {
                    return Err(invalid(
                        key("oidc_token_url"),
                        "must start with http:// or https://",
                    ));
                }
                Credential::Oidc {
                    token_url,
                    client_id,
                    client_secret,
                }
            }
            (None, _) => {
                return Err(invalid(
                    key("waldur_api_token"),
                    "is missing or empty, and oidc_token_url, oidc_client_id and \
                     oidc_client_secret are not all set",
                ));
            }
        };
        let role = |k: &str| -> Result<Option<String>, ImportError> {
            Ok(opt_text(k)?.map(|s| s.to_ascii_lowercase()))
        };
        let roles = [
            role(ROLE_KEYS[0])?,
            role(ROLE_KEYS[1])?,
            role(ROLE_KEYS[2])?,
        ];
        let backend_type = role("backend_type")?;
        let mapping = |k: &str| -> Result<Mapping, ImportError> {
            match get(m, k) {
                None => Ok(Mapping::new()),
                Some(Value::Mapping(x)) => Ok(x.clone()),
                Some(other) => Err(invalid(
                    key(k),
                    format!("must be a mapping, found {}", kind(other)),
                )),
            }
        };
        let settings = mapping("backend_settings")?;
        let components = mapping("backend_components")?;
        let ws_port = match get(m, "stomp_ws_port") {
            None => None,
            Some(v) => match integer(v) {
                Ok(p) => Some(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| invalid(key("stomp_ws_port"), "must be 1 to 65535"))?,
                ),
                Err(e) => return Err(invalid(key("stomp_ws_port"), e)),
            },
        };
        let ws_host = opt_text("stomp_ws_host")?;
        if let Some(h) = &ws_host
            && h.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
        {
            return Err(invalid(key("stomp_ws_host"), "must be a host name"));
        }
        let ws_path = opt_text("stomp_ws_path")?;
        if let Some(p) = &ws_path
            && p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(key("stomp_ws_path"), "must be a url path"));
        }
        let verify_ssl = match flag("verify_ssl")? {
            Some(v) => v,
            None => flag("waldur_verify_ssl")?.unwrap_or(true),
        };
        let username_backend = opt_text("username_management_backend")?
            .unwrap_or_else(|| "base".into())
            .to_ascii_lowercase();
        let stomp = flag("stomp_enabled")?.unwrap_or(false);
        let stomp_membership = flag("stomp_membership_sync_enabled")?;
        let resource_import = flag("resource_import_enabled")?.unwrap_or(false);
        if flag("username_reconciliation_enabled")? == Some(true) {
            notes.push(format!(
                "{label}: username_reconciliation_enabled is not carried over: the coordinator \
                 has no username reconciliation (it served Waldur federation)."
            ));
        }
        if get(m, "verify_ssl").is_none() && get(m, "waldur_verify_ssl").is_some() {
            notes.push(format!(
                "{label}: waldur_verify_ssl was used as waldur.verify_tls because verify_ssl is \
                 not set."
            ));
        }
        for k in m.keys() {
            match key_text(k) {
                Some(k) if OFFERING_KEYS.contains(&k.as_str()) => {}
                Some(k) if k == "mqtt_enabled" => notes.push(format!(
                    "{label}: mqtt_enabled is a legacy key (MQTT event processing no longer \
                     exists); dropped."
                )),
                Some(k) => notes.push(format!(
                    "{label}: {:?} is not an offering key of the original agent (which ignored \
                     it); dropped.",
                    one_line(&k)
                )),
                None => notes.push(format!("{label}: a key that is not text was dropped.")),
            }
        }
        let ws_tls = flag("websocket_use_tls")?.unwrap_or(true);
        Ok(Self {
            at: at.clone(),
            label,
            name,
            uuid,
            api_url,
            api_host,
            credential,
            backend_type,
            roles,
            settings,
            components,
            stomp,
            stomp_membership,
            ws_host,
            ws_port,
            ws_path,
            ws_tls,
            username_backend,
            resource_import,
            verify_ssl,
            notes,
        })
    }

    /// Why this offering stays with the original agent, if it does.
    fn blocker(&self) -> Option<String> {
        let mut unsupported: Vec<(&str, Vec<&str>)> = Vec::new();
        for (key, name) in ROLE_KEYS.iter().zip(&self.roles) {
            if let Some(n) = name
                && n != slurm::TYPE
            {
                match unsupported.iter_mut().find(|(t, _)| t == n) {
                    Some((_, keys)) => keys.push(key),
                    None => unsupported.push((n, vec![key])),
                }
            }
        }
        if !unsupported.is_empty() {
            let list = unsupported
                .iter()
                .map(|(t, keys)| format!("{} ({})", one_line(t), keys.join(", ")))
                .collect::<Vec<_>>();
            return Some(if list.len() == 1 {
                format!("backend type {} has no backend server yet", list[0])
            } else {
                format!(
                    "backend types {} have no backend server yet",
                    list.join(", ")
                )
            });
        }
        if self.roles.iter().all(Option::is_none) {
            return Some(match &self.backend_type {
                Some(t) if t != slurm::TYPE => {
                    format!(
                        "backend type {} (backend_type) has no backend server yet",
                        one_line(t)
                    )
                }
                _ => "none of order_processing_backend, reporting_backend and \
                      membership_sync_backend is set, so the original ran nothing for it"
                    .into(),
            });
        }
        slurm::blocker(&self.settings, &self.components)
    }

    fn migrate(
        mut self,
        slug: &str,
        globals: &Globals,
        paths: &Paths,
    ) -> Result<Migrated, ImportError> {
        let mut notes = std::mem::take(&mut self.notes);
        let label = self.label.clone();
        let mut secrets = Vec::new();

        if let Some(t) = &self.backend_type
            && t != slurm::TYPE
        {
            notes.push(format!(
                "{label}: backend_type {t} differs from the role backends (slurm); the role \
                 backends were used."
            ));
        }

        let events = self.stomp && matches!(self.credential, Credential::Token(_));
        let stomp_url = if events {
            Some(self.stomp_url(&mut notes))
        } else {
            None
        };
        let (token_file, oidc) = match self.credential {
            Credential::Token(t) => {
                let file = format!("secrets/{slug}.token");
                let path = paths.out(&file);
                secrets.push(SecretToWrite {
                    file_name: file,
                    value: t,
                });
                (Some(path), None)
            }
            Credential::Oidc {
                token_url,
                client_id,
                client_secret,
            } => {
                let file = format!("secrets/{slug}.oidc-client-secret");
                let path = paths.out(&file);
                secrets.push(SecretToWrite {
                    file_name: file,
                    value: client_secret,
                });
                (
                    None,
                    Some(out::Oidc {
                        token_url,
                        client_id,
                        client_secret_file: path,
                    }),
                )
            }
        };

        if self.stomp && !events {
            notes.push(format!(
                "{label}: stomp_enabled is not carried over (tasks.events: false): event \
                 processing logs in with a static waldur_api_token and this offering uses OIDC; \
                 orders are polled instead."
            ));
        }
        let [orders, report, membership] = self.roles;
        let membership_by_events = events && self.stomp_membership != Some(false);
        if self.stomp_membership == Some(true) && !self.stomp {
            notes.push(format!(
                "{label}: stomp_membership_sync_enabled is true but stomp_enabled is false, so \
                 the original synced no membership; membership is now polled."
            ));
        }
        if events && self.stomp_membership == Some(false) && membership.is_some() {
            notes.push(format!(
                "{label}: stomp_membership_sync_enabled: false keeps membership polling every \
                 300 s, but the coordinator also handles membership events; it has no switch \
                 to ignore them."
            ));
        }
        if events {
            notes.push(format!(
                "{label}: with stomp_enabled the coordinator still polls orders{} hourly \
                 (intervals: 3600 s) next to the events, where the original relied on events \
                 and an hourly sweep.",
                if membership_by_events && membership.is_some() {
                    " and membership"
                } else {
                    ""
                }
            ));
        }
        if self.resource_import && !self.stomp {
            notes.push(format!(
                "{label}: resource_import_enabled has no effect without stomp_enabled (as in \
                 the original: import requests arrive as events)."
            ));
        }

        let coord = coordinator_settings(&self.settings, &label, &mut notes);

        let username_source = "none";
        if self.username_backend != "base" {
            notes.push(format!(
                "{label}: username_management_backend {:?} has no equivalent; usernames are not \
                 generated (usernames.source: none), consider source: waldur_username.",
                one_line(&self.username_backend)
            ));
        }

        let mut slurm_notes = slurm::Notes {
            label: &label,
            list: &mut notes,
        };
        let mut settings = slurm::settings(&self.settings, &mut slurm_notes);
        let components = slurm::components(
            &self.components,
            &format!("{}.backend_components", self.at),
            &mut slurm_notes,
        )?;
        settings.insert("components".into(), Value::Mapping(components));

        let offering = out::Offering {
            name: self.name,
            offering_uuid: self.uuid,
            waldur: out::Waldur {
                api_url: self.api_url,
                token_file,
                oidc,
                verify_tls: self.verify_ssl,
            },
            tasks: out::Tasks {
                orders: orders.is_some(),
                report: report.is_some(),
                membership: membership.is_some(),
                events,
            },
            intervals: out::Intervals {
                orders_seconds: if events { 3600 } else { 300 },
                report_seconds: 1800,
                membership_seconds: if membership_by_events { 3600 } else { 300 },
            },
            backends: out::RoleBackends {
                orders: orders.map(|_| slug.to_owned()),
                report: report.map(|_| slug.to_owned()),
                membership: membership.map(|_| slug.to_owned()),
            },
            backend_id: coord.backend_id,
            reporting: out::Reporting {
                periods: globals.reporting_periods,
            },
            membership: coord.membership,
            usernames: out::Usernames {
                source: username_source,
            },
            events: stomp_url.map(|stomp_url| out::Events { stomp_url }),
            resource_import: out::ResourceImport {
                enabled: self.resource_import,
                project_prefix: coord.project_prefix,
            },
        };
        Ok(Migrated {
            offering,
            instance: out::Instance {
                name: slug.to_owned(),
                kind: slurm::TYPE,
                settings: Value::Mapping(settings),
            },
            secrets,
            notes,
        })
    }

    /// The URL the original's STOMP client dialled.
    fn stomp_url(&self, notes: &mut Vec<String>) -> String {
        let scheme = if self.ws_tls { "wss" } else { "ws" };
        let scheme_port = if self.ws_tls { 443 } else { 80 };
        let host = self
            .ws_host
            .clone()
            .unwrap_or_else(|| self.api_host.clone());
        let port = self
            .ws_port
            .unwrap_or(if self.verify_ssl { 443 } else { 80 });
        let path = match &self.ws_path {
            Some(p) if p.starts_with('/') => p.clone(),
            Some(p) => format!("/{p}"),
            None => "/rmqws-stomp".into(),
        };
        if self.ws_port.is_none() && port != scheme_port {
            notes.push(format!(
                "{}: the original took the STOMP port {port} from verify_ssl, not from \
                 websocket_use_tls; events.stomp_url keeps port {port}, check it.",
                self.label
            ));
        }
        if port == scheme_port {
            format!("{scheme}://{host}{path}")
        } else {
            format!("{scheme}://{host}:{port}{path}")
        }
    }
}

/// The `backend_settings` keys the coordinator owns.
struct CoordinatorSettings {
    backend_id: out::BackendId,
    membership: out::Membership,
    project_prefix: String,
}

fn coordinator_settings(
    settings: &Mapping,
    label: &str,
    notes: &mut Vec<String>,
) -> CoordinatorSettings {
    let mut flag = |key: &str, default: bool| match get(settings, key).map(boolean) {
        None => default,
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            notes.push(format!(
                "{label}: backend_settings.{key} is not carried over ({e}); the default \
                 {default} applies."
            ));
            default
        }
    };
    let check_uniqueness = flag("check_backend_id_uniqueness", false);
    let check_all_offerings = flag("check_all_offerings", false);
    let create_homedirs = flag("enable_user_homedir_account_creation", true);
    let max_retries = match get(settings, "backend_id_max_retries").map(integer) {
        None => 50,
        Some(Ok(n)) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
        Some(_) => {
            notes.push(format!(
                "{label}: backend_settings.backend_id_max_retries is not a positive whole \
                 number; backend_id.max_retries is 50."
            ));
            50
        }
    };
    let homedir_umask = match get(settings, "default_homedir_umask").map(value::umask) {
        None => "0077".into(),
        Some(Ok((mask, _))) => mask,
        Some(Err(e)) => {
            notes.push(format!(
                "{label}: backend_settings.default_homedir_umask is not carried over ({e}); \
                 membership.homedir_umask is \"0077\"."
            ));
            "0077".into()
        }
    };
    let project_prefix = match get(settings, "project_prefix").map(text) {
        Some(Ok(p)) => p,
        _ => String::new(),
    };
    CoordinatorSettings {
        backend_id: out::BackendId {
            check_uniqueness,
            check_all_offerings,
            max_retries,
        },
        membership: out::Membership {
            homedir_umask,
            create_homedirs,
        },
        project_prefix,
    }
}

#[cfg(test)]
mod tests;
