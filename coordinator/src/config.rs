//! The coordinator's configuration file.
//!
//! Strict and versioned (`version: 1`, unknown keys rejected); secrets come
//! from files or environment variables, never inline. Problems are reported
//! with the key to fix and make the binary exit 64 before anything starts.
//! `deploy/config/coordinator.example.yaml` is the commented reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use waldur_client::{Credentials, RetryConfig};

use serde::Deserialize;

use waldur_runtime::SettingError;
use waldur_runtime::secret::{Env, Secret};

/// The whole file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version; only 1 exists.
    pub version: u32,
    /// IANA zone for billing periods.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Show backend error details in Waldur (order and resource errors).
    #[serde(default = "yes")]
    pub expose_backend_error_details: bool,
    /// Retries of transient Waldur failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Backend servers by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// The offerings this coordinator serves.
    #[serde(default)]
    pub offerings: Vec<OfferingConfig>,
    /// The admin HTTP port (metrics, health, readiness); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The tunnel listener for backend servers that dial out; off when
    /// absent.
    #[serde(default)]
    pub tunnel: Option<TunnelConfig>,
    /// Helmholtz Cloud services answered over AMQP.
    #[serde(default)]
    pub helmholtz: crate::upstream::hca::HelmholtzConfig,
    /// Where relative paths in the file (schemas) start: the file's folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The tunnel listener: backend servers at sites without inbound ports
/// dial it, and it carries the calls to the backends whose `endpoint` is
/// `tunnel`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Address, for example `0.0.0.0:50052`.
    pub listen: std::net::SocketAddr,
    /// The coordinator's certificate as TLS server (issued with
    /// `pki issue-client --tunnel`), its key, and the site CA that signs the
    /// backend servers' certificates.
    pub tls: waldur_runtime::TlsFiles,
    /// Which backends each backend-server certificate identity (SAN) may
    /// serve: a certificate connecting for a backend not listed under it
    /// is refused.
    pub allowed: BTreeMap<String, Vec<String>>,
    /// Most calls in flight over one connection.
    #[serde(default = "default_backend_concurrency")]
    pub max_concurrency: usize,
}

/// The `endpoint` of a backend whose server dials the tunnel.
pub const TUNNEL_ENDPOINT: &str = "tunnel";

/// The admin HTTP port.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address, for example `0.0.0.0:9180`.
    pub listen: std::net::SocketAddr,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// Deadlines, in seconds.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// One Waldur HTTP request.
    pub waldur_seconds: u64,
    /// Backend identity and read calls.
    pub backend_read_seconds: u64,
    /// Backend mutations and usage reports.
    pub backend_mutate_seconds: u64,
    /// Establishing a backend connection.
    pub backend_connect_seconds: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            waldur_seconds: 60,
            backend_read_seconds: 10,
            backend_mutate_seconds: 120,
            backend_connect_seconds: 10,
        }
    }
}

impl TimeoutConfig {
    /// Waldur request timeout.
    pub fn waldur(&self) -> Duration {
        Duration::from_secs(self.waldur_seconds.max(1))
    }
}

/// How to reach one backend server.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `https://host:port`, or `tunnel` for a server that dials the
    /// coordinator's tunnel listener.
    pub endpoint: String,
    /// Name the server certificate must carry; default: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Instance name on that server.
    pub instance: String,
    /// Our client certificate, key and the site CA (a `tunnel` backend
    /// uses the tunnel's instead).
    #[serde(default)]
    pub tls: Option<waldur_runtime::TlsFiles>,
    /// Most calls in flight to this backend.
    #[serde(default = "default_backend_concurrency")]
    pub max_concurrency: usize,
}

fn default_backend_concurrency() -> usize {
    32
}

/// One offering.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferingConfig {
    /// Display name, for logs.
    pub name: String,
    /// Waldur offering UUID.
    pub offering_uuid: waldur_client::ids::Uuid,
    /// How to reach Waldur.
    pub waldur: WaldurConfig,
    /// Which tasks run.
    #[serde(default)]
    pub tasks: TaskConfig,
    /// Cycle intervals.
    #[serde(default)]
    pub intervals: IntervalConfig,
    /// Backend (a key of `backends`) per role.
    pub backends: RoleBackends,
    /// Backend id generation.
    #[serde(default)]
    pub backend_id: BackendIdConfig,
    /// Orders of different resources processed at once.
    #[serde(default = "default_order_concurrency")]
    pub order_concurrency: usize,
    /// Usage reporting.
    #[serde(default)]
    pub reporting: ReportingConfig,
    /// Membership sync.
    #[serde(default)]
    pub membership: MembershipConfig,
    /// Offering-user usernames.
    #[serde(default)]
    pub usernames: UsernameConfig,
    /// Event processing (STOMP over WebSocket on Waldur's RabbitMQ).
    #[serde(default)]
    pub events: EventsConfig,
    /// Import of resources that exist on the backend but not in Waldur.
    #[serde(default)]
    pub resource_import: ImportConfig,
    /// The blast-radius breaker.
    #[serde(default)]
    pub safety: SafetyConfig,
}

/// The blast-radius breaker: a cycle that would make more destructive
/// changes of one kind (members removed, accesses reduced, per-user limits
/// lowered, resources marked erred) than this allows makes none of them;
/// constructive work goes on. Explicit orders (Terminate) are not counted.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// A cycle may always make this many destructive changes of one kind.
    pub max_destructive: usize,
    /// Beyond `max_destructive`, at most this percentage of what exists
    /// (members, resources) may change in one cycle; 100 lets any share
    /// through, which switches the breaker off.
    pub max_destructive_percent: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_destructive: 5,
            max_destructive_percent: 10.0,
        }
    }
}

impl SafetyConfig {
    /// Whether `count` changes out of `existing` exceed the limits.
    pub fn exceeded(&self, count: usize, existing: usize) -> bool {
        let share = self.max_destructive_percent / 100.0 * existing as f64;
        count > self.max_destructive && count as f64 > share
    }
}

/// Resource import (Waldur's "importable resources" requests).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// Subscribe to import requests (needs a backend with LIST_RESOURCES).
    pub enabled: bool,
    /// Prefix of the backend's project accounts: a candidate's parent minus
    /// this prefix must be a Waldur project slug.
    pub project_prefix: String,
}

/// Event processing settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// STOMP-over-WebSocket URL; default `wss://<Waldur host>/rmqws-stomp`.
    pub stomp_url: Option<String>,
    /// Heart-beat interval both ways, seconds.
    pub heartbeat_seconds: u64,
    /// Messages RabbitMQ may send ahead of acknowledgement, per queue.
    pub prefetch: u32,
    /// Largest reconnect backoff, seconds.
    pub max_backoff_seconds: u64,
    /// Reconciliation sweep (stuck orders, offering users), seconds.
    pub reconcile_seconds: u64,
    /// Orders untouched this long are "stuck" for the sweep, seconds.
    pub stuck_after_seconds: u64,
    /// Health check of Waldur and the backends, seconds.
    pub health_seconds: u64,
    /// Largest WebSocket frame buffered, bytes.
    pub max_frame_bytes: usize,
    /// Largest event handled, bytes; a larger one is acknowledged without
    /// handling and logged with its size (never buffered whole).
    pub max_message_bytes: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            stomp_url: None,
            heartbeat_seconds: 10,
            prefetch: 16,
            max_backoff_seconds: 120,
            reconcile_seconds: 3600,
            stuck_after_seconds: 1800,
            health_seconds: 1800,
            max_frame_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
        }
    }
}

impl EventsConfig {
    /// The STOMP URL for an offering whose API is at `api_url`.
    pub fn url(&self, api_url: &str) -> String {
        if let Some(u) = &self.stomp_url {
            return u.clone();
        }
        let host = url::Url::parse(api_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        format!("wss://{host}/rmqws-stomp")
    }
}

/// Usage reporting settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// Months reported each cycle: the current one and `periods - 1` before
    /// it, oldest first (1 to 12; the original's `reporting_periods`).
    pub periods: u32,
    /// Resources written to Waldur at once.
    pub concurrency: usize,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        Self {
            periods: 2,
            concurrency: 16,
        }
    }
}

/// Membership sync settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// Resources synced at once.
    pub concurrency: usize,
    /// Resources read from the backend in one call (ListResourceUsers with
    /// the full view): a cycle over N resources makes N / page_size reads,
    /// one after another, where the backend supports bulk reads.
    pub page_size: usize,
    /// Octal umask for home directories the backend creates for new members.
    pub homedir_umask: String,
    /// Home directories of this offering's users: `create-homedirs`
    /// creates them, and each membership cycle re-ensures those of members
    /// who stay (one CreateHomeDirectories per page), so a directory whose
    /// creation failed is made again.
    pub create_homedirs: bool,
    /// Hours between passes that ask the backend to place every resource
    /// under its current project and customer (backends with PROJECT_SYNC);
    /// the first membership cycle after a start makes one. Between passes,
    /// resources seen to move and `resource` events are synced at once.
    /// 0: no passes.
    pub project_sync_hours: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            page_size: 500,
            homedir_umask: "0077".into(),
            create_homedirs: true,
            project_sync_hours: 24,
        }
    }
}

/// Who chooses the local username of a new offering user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsernameSource {
    /// The backend of `backends.usernames`, else the membership backend
    /// (GetUsername, then GenerateUsername); one without the USERNAMES
    /// capability is a config error `check` reports.
    Backend,
    /// Built in: the Waldur username, cleaned to a portable POSIX name, with
    /// `prefix` and a numeric suffix on collision.
    WaldurUsername,
    /// Nothing is generated (the original's `base` username backend); users
    /// wait in Requested until someone sets their username in Waldur.
    None,
}

impl UsernameSource {
    /// The name as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::WaldurUsername => "waldur_username",
            Self::None => "none",
        }
    }
}

/// Username generation for offering users.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UsernameConfig {
    /// The generator.
    pub source: UsernameSource,
    /// Prepended by the built-in generator, for example `hpc_`.
    pub prefix: String,
    /// Longest name the built-in generator makes (POSIX tools cope with 32).
    pub max_length: usize,
}

impl Default for UsernameConfig {
    fn default() -> Self {
        Self {
            source: UsernameSource::Backend,
            prefix: String::new(),
            max_length: 32,
        }
    }
}

fn default_order_concurrency() -> usize {
    16
}

/// Waldur connection of an offering.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaldurConfig {
    /// API URL, for example `https://waldur.example.com/api/`.
    pub api_url: String,
    /// File holding the API token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the API token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// OIDC client-credentials flow instead of a static token.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Verify Waldur's TLS certificate.
    #[serde(default = "yes")]
    pub verify_tls: bool,
}

/// OIDC client credentials.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
}

/// Which tasks run for an offering.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Order processing.
    pub orders: bool,
    /// Usage reporting.
    pub report: bool,
    /// Membership sync.
    pub membership: bool,
    /// Event processing (STOMP).
    pub events: bool,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            orders: true,
            report: false,
            membership: false,
            events: false,
        }
    }
}

/// Cycle intervals, in seconds.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IntervalConfig {
    /// Order processing.
    pub orders_seconds: u64,
    /// Usage reporting.
    pub report_seconds: u64,
    /// Membership sync.
    pub membership_seconds: u64,
}

impl Default for IntervalConfig {
    fn default() -> Self {
        Self {
            orders_seconds: 300,
            report_seconds: 1800,
            membership_seconds: 300,
        }
    }
}

/// Backend per role.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBackends {
    /// Order processing.
    pub orders: Option<String>,
    /// Usage reporting.
    #[serde(default)]
    pub report: Option<String>,
    /// Membership sync.
    #[serde(default)]
    pub membership: Option<String>,
    /// Usernames of new offering users (`usernames.source: backend`), when
    /// another backend than the membership one makes them: for example an
    /// LDAP directory's, while SLURM holds the accounts. Default: the
    /// membership backend.
    #[serde(default)]
    pub usernames: Option<String>,
}

/// Backend id generation (the original agent's backend settings).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackendIdConfig {
    /// Ask Waldur whether an id is unique before creating.
    pub check_uniqueness: bool,
    /// Uniqueness across all offerings.
    pub check_all_offerings: bool,
    /// Attempts when ids collide.
    pub max_retries: u32,
}

impl Default for BackendIdConfig {
    fn default() -> Self {
        Self {
            check_uniqueness: false,
            check_all_offerings: false,
            max_retries: 50,
        }
    }
}

/// A config problem: exit 64.
#[derive(Debug, thiserror::Error)]
#[error("invalid config {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What to fix.
    pub message: String,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path, env)
    }

    /// Relative file paths (secrets, certificates, schemas, CA bundles)
    /// become relative to the config file's folder.
    fn rebase_paths(&mut self) {
        use waldur_runtime::rebase;
        let base = self.base_dir.clone();
        for b in self.backends.values_mut() {
            if let Some(tls) = &mut b.tls {
                tls.rebase(&base);
            }
        }
        if let Some(t) = &mut self.tunnel {
            t.tls.rebase(&base);
        }
        for o in &mut self.offerings {
            if let Some(f) = &mut o.waldur.token_file {
                rebase(f, &base);
            }
            if let Some(oidc) = &mut o.waldur.oidc
                && let Some(f) = &mut oidc.client_secret_file
            {
                rebase(f, &base);
            }
        }
        for svc in &mut self.helmholtz.services {
            let b = &mut svc.broker;
            for f in [&mut b.ca_file, &mut b.username_file, &mut b.password_file]
                .into_iter()
                .flatten()
            {
                rebase(f, &base);
            }
            for t in svc.resource_types.values_mut() {
                rebase(&mut t.schema, &base);
            }
        }
    }

    /// Parses and checks config text.
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.into(),
            message,
        };
        let mut config: Self = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
        config.base_dir = waldur_runtime::config_dir(path);
        if config.version != 1 {
            return Err(err(format!(
                "version: {} is not supported, use 1",
                config.version
            )));
        }
        config.rebase_paths();
        if jiff::tz::TimeZone::get(&config.timezone).is_err() {
            return Err(err(format!(
                "timezone: {:?} is not an IANA time zone",
                config.timezone
            )));
        }
        if config.offerings.is_empty() && config.helmholtz.services.is_empty() {
            return Err(err(
                "offerings: configure at least one offering (or a helmholtz service)".into(),
            ));
        }
        for (i, s) in config.helmholtz.services.iter().enumerate() {
            let at = format!("helmholtz.services[{i}] ({})", s.name);
            s.resolved_service_id(env)
                .map_err(|m| err(m.within(&at).to_string()))?;
            s.resolved_broker(env)
                .map_err(|m| err(m.within(&at).to_string()))?;
            if s.resource_types.is_empty() {
                return Err(err(format!("{at}.resource_types: configure at least one")));
            }
            for (name, t) in &s.resource_types {
                if !config.backends.contains_key(&t.backend) {
                    return Err(err(format!(
                        "{at}.resource_types.{name}.backend: {:?} is not a key of backends",
                        t.backend
                    )));
                }
            }
        }
        if let Some(t) = &config.tunnel {
            for (identity, names) in &t.allowed {
                if let Some(other) = names.iter().find(|n| {
                    config
                        .backends
                        .get(*n)
                        .is_none_or(|b| b.endpoint != TUNNEL_ENDPOINT)
                }) {
                    return Err(err(format!(
                        "tunnel.allowed.{identity}: {other} is not a backend with endpoint: tunnel"
                    )));
                }
            }
        }
        for (name, b) in &config.backends {
            if b.endpoint == TUNNEL_ENDPOINT {
                // The name travels in the tunnel's opening line.
                if !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                {
                    return Err(err(format!(
                        "backends.{name}: a tunnel backend's name may hold only letters, digits, '-', '_' and '.'"
                    )));
                }
                let Some(t) = &config.tunnel else {
                    return Err(err(format!(
                        "backends.{name}.endpoint: tunnel needs the tunnel: section (where backend servers dial in)"
                    )));
                };
                if !t.allowed.values().any(|names| names.contains(name)) {
                    return Err(err(format!(
                        "backends.{name}: no identity in tunnel.allowed may serve it, so its server could never connect"
                    )));
                }
            } else if !b.endpoint.starts_with("https://") {
                return Err(err(format!(
                    "backends.{name}.endpoint: {:?} must be https:// (mutual TLS is required) or tunnel",
                    b.endpoint
                )));
            } else if b.tls.is_none() {
                return Err(err(format!(
                    "backends.{name}.tls: the client certificate, key and CA are required for a direct connection"
                )));
            }
            if name.contains(':') {
                return Err(err(format!(
                    "backends.{name}: a backend name must not contain ':'"
                )));
            }
            if b.instance.is_empty() {
                return Err(err(format!("backends.{name}.instance: must not be empty")));
            }
        }
        for (i, o) in config.offerings.iter().enumerate() {
            let at = format!("offerings[{i}] ({})", o.name);
            if !(0.0..=100.0).contains(&o.safety.max_destructive_percent) {
                return Err(err(format!(
                    "{at}.safety.max_destructive_percent: {} is out of range, use 0 to 100",
                    o.safety.max_destructive_percent
                )));
            }
            if !(1..=12).contains(&o.reporting.periods) {
                return Err(err(format!(
                    "{at}.reporting.periods: {} is out of range, use 1 to 12",
                    o.reporting.periods
                )));
            }
            let umask = &o.membership.homedir_umask;
            if umask.is_empty()
                || umask.len() > 4
                || !umask.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(err(format!(
                    "{at}.membership.homedir_umask: {umask:?} is not an octal umask such as \"0077\""
                )));
            }
            if o.tasks.events {
                if o.waldur.oidc.is_some() {
                    return Err(err(format!(
                        "{at}.tasks.events: event processing logs in to RabbitMQ with the API token; configure token_file or token_env"
                    )));
                }
                if let Some(u) = &o.events.stomp_url
                    && !(u.starts_with("ws://") || u.starts_with("wss://"))
                {
                    return Err(err(format!(
                        "{at}.events.stomp_url: {u:?} must start with ws:// or wss://"
                    )));
                }
            }
            if o.usernames.max_length < 3 + o.usernames.prefix.len() {
                return Err(err(format!(
                    "{at}.usernames.max_length: {} leaves no room after the prefix",
                    o.usernames.max_length
                )));
            }
            if !(o.waldur.api_url.starts_with("http://")
                || o.waldur.api_url.starts_with("https://"))
            {
                return Err(err(format!(
                    "{at}.waldur.api_url: must start with http:// or https://"
                )));
            }
            o.waldur
                .token(env)
                .map_err(|m| err(m.within(format_args!("{at}.waldur")).to_string()))?;
            for (role, name, enabled) in [
                ("orders", &o.backends.orders, o.tasks.orders),
                ("report", &o.backends.report, o.tasks.report),
                ("membership", &o.backends.membership, o.tasks.membership),
                ("usernames", &o.backends.usernames, false),
            ] {
                match name {
                    Some(n) if !config.backends.contains_key(n) => {
                        return Err(err(format!(
                            "{at}.backends.{role}: {n:?} is not a key of backends"
                        )));
                    }
                    None if enabled => {
                        return Err(err(format!(
                            "{at}.backends.{role}: the {role} task is on but names no backend"
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(config)
    }
}

impl WaldurConfig {
    /// Resolves the credentials from files or the environment.
    pub fn token(&self, env: &dyn Env) -> Result<Credentials, SettingError> {
        if let Some(oidc) = &self.oidc {
            let secret = Secret::from_file_or_env(
                "oidc.client_secret",
                oidc.client_secret_file.as_deref(),
                oidc.client_secret_env.as_deref(),
                env,
            )?;
            return Ok(Credentials::Oidc {
                token_url: oidc.token_url.clone(),
                client_id: oidc.client_id.clone(),
                client_secret: secret,
            });
        }
        let token = Secret::from_file_or_env(
            "token",
            self.token_file.as_deref(),
            self.token_env.as_deref(),
            env,
        )?;
        Ok(Credentials::Token(token))
    }
}

#[cfg(test)]
mod tests;
