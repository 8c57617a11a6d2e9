//! Settings of the Helmholtz Cloud adapter (`helmholtz:` in the coordinator
//! config).
//!
//! The original agent is configured by `HCA_*` environment variables; every
//! broker setting here falls back to them, so `helmholtz: {services: [{name:
//! x, resource_types: ...}]}` plus the variables is a complete config. Every
//! name the protocol spec marks as a design choice (queues, message types,
//! the virtual host) is a setting with the spec's default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::members::MemberSourceConfig;

use waldur_runtime::SettingError;
use waldur_runtime::secret::{Env, Secret};

/// The `helmholtz:` section.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmholtzConfig {
    /// One entry per Helmholtz Cloud service this site answers for.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

/// One Helmholtz Cloud service: its broker account and resource types.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Display name, for logs and metrics.
    pub name: String,
    /// The service's id in Helmholtz Cloud (the `service_id` header).
    /// Default: `$HCA_SERVICE_ID`, else `$HCA_SERVICE`.
    #[serde(default)]
    pub service_id: Option<String>,
    /// The broker connection.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// Queue names.
    #[serde(default)]
    pub queues: QueueNames,
    /// Message type names (the AMQP `type` property).
    #[serde(default)]
    pub message_types: MessageTypes,
    /// Requests handled at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Largest reconnect backoff, seconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
    /// Declare both queues (durable) at connect; the production broker has
    /// them already and may not allow it.
    #[serde(default)]
    pub declare_queues: bool,
    /// Resource types by schema title (the request's `type`).
    pub resource_types: BTreeMap<String, ResourceTypeConfig>,
    /// What the portal shows for a backend's refusal, by the reason the
    /// backend gave (`QUOTA_EXCEEDED`, ...); reasons not listed keep the
    /// defaults described in OPERATOR.md.
    #[serde(default)]
    pub errors: BTreeMap<String, ErrorTypeConfig>,
}

/// The `ErrorV1` a backend refusal becomes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorTypeConfig {
    /// `ErrorV1.type`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// `ErrorV1.message`; unset: the backend's own message, cleaned of
    /// host names and paths.
    #[serde(default)]
    pub message: Option<String>,
}

fn default_prefetch() -> u16 {
    8
}

fn default_max_backoff() -> u64 {
    60
}

/// How to reach the broker; every unset value comes from the `HCA_*`
/// environment, then from the default named.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host; `$HCA_RABBITMQ_HOSTNAME`, else `localhost`.
    pub host: Option<String>,
    /// Port; `$HCA_RABBITMQ_PORT`, else 5671 with TLS and 5672 without.
    pub port: Option<u16>,
    /// TLS (`amqps`); `$HCA_RABBITMQ_USE_SSL` (`True` in production), else false.
    pub tls: Option<bool>,
    /// PEM bundle of CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Virtual host; default: the service id.
    pub vhost: Option<String>,
    /// Broker user; `$HCA_USERNAME` unless a file or another variable is named.
    pub username_file: Option<PathBuf>,
    /// Variable holding the broker user.
    pub username_env: Option<String>,
    /// File holding the broker password.
    pub password_file: Option<PathBuf>,
    /// Variable holding the broker password; default `HCA_PASSWORD`.
    pub password_env: Option<String>,
}

/// Queue names (spec: `to_hca` inbound, `to_portal` outbound).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueNames {
    /// Portal → agent.
    pub inbound: String,
    /// Agent → portal.
    pub outbound: String,
}

impl Default for QueueNames {
    fn default() -> Self {
        Self {
            inbound: "to_hca".into(),
            outbound: "to_portal".into(),
        }
    }
}

/// Message type names.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MessageTypes {
    /// Liveness check, answered in kind.
    pub ping: String,
    /// Allocation request.
    pub allocate: String,
    /// Allocation answer.
    pub created: String,
    /// Failure answer.
    pub error: String,
    /// Deprovisioning request (its real name is not public).
    pub deallocate: String,
    /// Deprovisioning answer.
    pub deallocated: String,
}

impl Default for MessageTypes {
    fn default() -> Self {
        Self {
            ping: "PingV1".into(),
            allocate: "ResourceAllocateV1".into(),
            created: "ResourceCreatedV1".into(),
            error: "ErrorV1".into(),
            deallocate: "ResourceDeallocateV1".into(),
            deallocated: "ResourceDeallocatedV1".into(),
        }
    }
}

/// Who a resource type may be requested for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetPolicy {
    /// A user (`user_id_target`) or a group (`group_urn_target`), not both.
    #[default]
    Any,
    /// Personal resources only.
    User,
    /// Group resources only.
    Group,
}

/// One resource type: its schema, backend and how the backend request is
/// derived from the message.
///
/// Templates are strings with placeholders: `{/json/pointer}` into the
/// request body (`/specification/...`, `/target_entity/...`), `{owner}` (the
/// group URN, else the user id), `{correlation_id}` and `{request_hash}`
/// (twelve hex digits of the service and correlation id: the part
/// that makes every request's name its own, required in `backend_id`). A template without placeholders is a constant.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceTypeConfig {
    /// JSON Schema (Draft 2020-12) of `specification`; relative paths are
    /// relative to the config file.
    pub schema: PathBuf,
    /// Backend (a key of `backends`).
    pub backend: String,
    /// Who may request it.
    #[serde(default)]
    pub target: TargetPolicy,
    /// Base of the backend id (given to GenerateBackendId); made a slug.
    pub backend_id: String,
    /// Resource name shown on the backend.
    #[serde(default)]
    pub name: Option<String>,
    /// Project tier (slug and name); made a slug for the slug.
    #[serde(default)]
    pub project: Option<String>,
    /// Customer tier (slug and name); made a slug for the slug.
    #[serde(default)]
    pub customer: Option<String>,
    /// Limits by component key, in Waldur units.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitSource>,
    /// How the requester becomes members, sources tried in order; empty:
    /// allocations are created without members.
    #[serde(default)]
    pub members: Vec<MemberSourceConfig>,
}

/// Where one limit comes from.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum LimitSource {
    /// A constant.
    Constant(i64),
    /// A number in the request, times `factor`.
    From {
        /// JSON pointer into the request body.
        from: String,
        /// Multiplier (default 1).
        #[serde(default = "one")]
        factor: f64,
        /// Value when the field is absent; absent and no default is an
        /// invalid specification.
        #[serde(default)]
        default: Option<f64>,
    },
}

fn one() -> f64 {
    1.0
}

/// A service's broker settings with the environment applied.
#[derive(Debug, Clone)]
pub struct ResolvedBroker {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS on.
    pub tls: bool,
    /// CA bundle instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Virtual host.
    pub vhost: String,
    /// User.
    pub username: String,
    /// Password.
    pub password: Secret,
}

impl ServiceConfig {
    /// The service id, from the config or `HCA_SERVICE_ID` / `HCA_SERVICE`.
    pub fn resolved_service_id(&self, env: &dyn Env) -> Result<String, SettingError> {
        self.service_id
            .clone()
            .or_else(|| env.var("HCA_SERVICE_ID"))
            .or_else(|| env.var("HCA_SERVICE"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SettingError::new("service_id", "not set (set it, or HCA_SERVICE_ID)"))
    }

    /// Broker settings with the `HCA_*` environment applied.
    pub fn resolved_broker(&self, env: &dyn Env) -> Result<ResolvedBroker, SettingError> {
        let b = &self.broker;
        let tls = match b.tls {
            Some(t) => t,
            None => match env.var("HCA_RABBITMQ_USE_SSL") {
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    SettingError::new(
                        "broker.tls",
                        format!("HCA_RABBITMQ_USE_SSL {v:?} is not true or false"),
                    )
                })?,
                None => false,
            },
        };
        let port = match b.port {
            Some(p) => p,
            None => match env.var("HCA_RABBITMQ_PORT") {
                Some(v) => v.trim().parse().map_err(|_| {
                    SettingError::new(
                        "broker.port",
                        format!("HCA_RABBITMQ_PORT {v:?} is not a port number"),
                    )
                })?,
                None if tls => 5671,
                None => 5672,
            },
        };
        let host = b
            .host
            .clone()
            .or_else(|| env.var("HCA_RABBITMQ_HOSTNAME"))
            .unwrap_or_else(|| "localhost".into());
        let username = broker_secret(
            "username",
            &b.username_file,
            &b.username_env,
            "HCA_USERNAME",
            env,
        )?
        .expose()
        .to_owned();
        let password = broker_secret(
            "password",
            &b.password_file,
            &b.password_env,
            "HCA_PASSWORD",
            env,
        )?;
        let vhost = match &b.vhost {
            Some(v) => v.clone(),
            None => self.resolved_service_id(env)?,
        };
        Ok(ResolvedBroker {
            host,
            port,
            tls,
            ca_file: b.ca_file.clone(),
            vhost,
            username,
            password,
        })
    }
}

/// A broker credential from its file or variable, else from the original
/// agent's variable (`HCA_USERNAME`, `HCA_PASSWORD`).
fn broker_secret(
    what: &str,
    file: &Option<PathBuf>,
    var: &Option<String>,
    default_var: &str,
    env: &dyn Env,
) -> Result<Secret, SettingError> {
    let what = format!("broker.{what}");
    match (file, var) {
        (None, None) => Secret::from_file_or_env(&what, None, Some(default_var), env),
        (f, v) => Secret::from_file_or_env(&what, f.as_deref(), v.as_deref(), env),
    }
}

/// `True`/`true`/`1`/`yes` and their opposites (the original reads Python
/// booleans from the environment).
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waldur_runtime::secret::MapEnv;

    fn service() -> ServiceConfig {
        serde_norway::from_str(
            "name: s\nresource_types:\n  T: {schema: t.json, backend: hpc, backend_id: x}\n",
        )
        .unwrap()
    }

    #[test]
    fn the_broker_comes_from_the_hca_environment_like_the_original() {
        let env = MapEnv::from([
            ("HCA_USERNAME", "svc"),
            ("HCA_PASSWORD", "pw"),
            ("HCA_SERVICE", "svc-42"),
            ("HCA_RABBITMQ_USE_SSL", "True"),
            ("HCA_RABBITMQ_HOSTNAME", "broker.example.org"),
        ]);
        let b = service().resolved_broker(&env).unwrap();
        assert_eq!(
            (
                b.host.as_str(),
                b.port,
                b.tls,
                b.vhost.as_str(),
                b.username.as_str()
            ),
            ("broker.example.org", 5671, true, "svc-42", "svc")
        );
        assert_eq!(b.password.expose(), "pw");
    }

    #[test]
    fn config_values_win_over_the_environment() {
        let mut s = service();
        s.broker.port = Some(6000);
        s.broker.vhost = Some("vo".into());
        s.service_id = Some("id-1".into());
        let env = MapEnv::from([
            ("HCA_USERNAME", "svc"),
            ("HCA_PASSWORD", "pw"),
            ("HCA_RABBITMQ_PORT", "7000"),
            ("HCA_SERVICE_ID", "other"),
        ]);
        let b = s.resolved_broker(&env).unwrap();
        assert_eq!((b.port, b.vhost.as_str(), b.tls), (6000, "vo", false));
        assert_eq!(s.resolved_service_id(&env).unwrap(), "id-1");
    }

    #[test]
    fn a_missing_password_names_the_variable() {
        let env = MapEnv::from([("HCA_USERNAME", "svc"), ("HCA_SERVICE_ID", "x")]);
        let e = service().resolved_broker(&env).unwrap_err();
        assert!(e.to_string().contains("HCA_PASSWORD"), "{e}");
    }

    #[test]
    fn a_garbled_port_or_flag_is_an_error_not_a_default() {
        let env = MapEnv::from([
            ("HCA_USERNAME", "svc"),
            ("HCA_PASSWORD", "pw"),
            ("HCA_SERVICE_ID", "x"),
            ("HCA_RABBITMQ_PORT", "56x"),
        ]);
        assert!(
            service()
                .resolved_broker(&env)
                .unwrap_err()
                .to_string()
                .contains("HCA_RABBITMQ_PORT")
        );
        let env = MapEnv::from([
            ("HCA_USERNAME", "svc"),
            ("HCA_PASSWORD", "pw"),
            ("HCA_SERVICE_ID", "x"),
            ("HCA_RABBITMQ_USE_SSL", "maybe"),
        ]);
        assert!(
            service()
                .resolved_broker(&env)
                .unwrap_err()
                .to_string()
                .contains("USE_SSL")
        );
    }
}
