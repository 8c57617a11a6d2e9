//! Mirrors of the target formats (`coordinator/src/config.rs`,
//! `backend-server/src/config.rs`), serialised with serde_norway. Field
//! names and nesting follow those structs exactly; optional keys with a
//! sensible default are left out.

use std::collections::BTreeMap;

use serde::Serialize;

/// The coordinator's file.
#[derive(Debug, Serialize)]
pub(crate) struct Coordinator {
    pub version: u32,
    pub timezone: String,
    pub expose_backend_error_details: bool,
    /// Metrics, health and readiness, as the reference config has them.
    pub admin: Listen,
    pub backends: BTreeMap<String, Backend>,
    pub offerings: Vec<Offering>,
}

/// `admin:` of the coordinator, `metrics:` of the backend server.
#[derive(Debug, Serialize)]
pub(crate) struct Listen {
    pub listen: String,
}

/// `backends.<name>`.
#[derive(Debug, Serialize)]
pub(crate) struct Backend {
    pub endpoint: String,
    pub instance: String,
    pub tls: TlsFiles,
}

/// `waldur_runtime::TlsFiles`.
#[derive(Debug, Serialize)]
pub(crate) struct TlsFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// `offerings[]`.
#[derive(Debug, Serialize)]
pub(crate) struct Offering {
    pub name: String,
    pub offering_uuid: String,
    pub waldur: Waldur,
    pub tasks: Tasks,
    pub intervals: Intervals,
    pub backends: RoleBackends,
    pub backend_id: BackendId,
    pub reporting: Reporting,
    pub membership: Membership,
    pub usernames: Usernames,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Events>,
    pub resource_import: ResourceImport,
}

/// `offerings[].waldur`.
#[derive(Debug, Serialize)]
pub(crate) struct Waldur {
    pub api_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Oidc>,
    pub verify_tls: bool,
}

/// `offerings[].waldur.oidc`.
#[derive(Debug, Serialize)]
pub(crate) struct Oidc {
    pub token_url: String,
    pub client_id: String,
    pub client_secret_file: String,
}

/// `offerings[].tasks`.
#[derive(Debug, Serialize)]
pub(crate) struct Tasks {
    pub orders: bool,
    pub report: bool,
    pub membership: bool,
    pub events: bool,
}

/// `offerings[].intervals`.
#[derive(Debug, Serialize)]
pub(crate) struct Intervals {
    pub orders_seconds: u64,
    pub report_seconds: u64,
    pub membership_seconds: u64,
}

/// `offerings[].backends`.
#[derive(Debug, Serialize)]
pub(crate) struct RoleBackends {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
}

/// `offerings[].backend_id`.
#[derive(Debug, Serialize)]
pub(crate) struct BackendId {
    pub check_uniqueness: bool,
    pub check_all_offerings: bool,
    pub max_retries: u32,
}

/// `offerings[].reporting`.
#[derive(Debug, Serialize)]
pub(crate) struct Reporting {
    pub periods: u32,
}

/// `offerings[].membership`.
#[derive(Debug, Serialize)]
pub(crate) struct Membership {
    pub homedir_umask: String,
    pub create_homedirs: bool,
}

/// `offerings[].usernames`.
#[derive(Debug, Serialize)]
pub(crate) struct Usernames {
    pub source: &'static str,
}

/// `offerings[].events`.
#[derive(Debug, Serialize)]
pub(crate) struct Events {
    pub stomp_url: String,
}

/// `offerings[].resource_import`.
#[derive(Debug, Serialize)]
pub(crate) struct ResourceImport {
    pub enabled: bool,
    pub project_prefix: String,
}

/// The backend server's file.
#[derive(Debug, Serialize)]
pub(crate) struct Server {
    pub version: u32,
    pub listen: String,
    pub tls: ServerTls,
    pub metrics: Listen,
    pub instances: Vec<Instance>,
}

/// The server's `tls`.
#[derive(Debug, Serialize)]
pub(crate) struct ServerTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub allowed_clients: Vec<String>,
}

/// `instances[]`.
#[derive(Debug, Serialize)]
pub(crate) struct Instance {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub settings: serde_norway::Value,
}
