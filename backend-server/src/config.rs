//! The backend server's configuration file.
//!
//! Strict and versioned: `version: 1` is required and unknown keys are
//! errors, so a typo never silently disables a setting. Backend-specific
//! `settings` are handed to the backend, which parses them as strictly.
//! `deploy/backend-server.example.yaml` is the commented reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Address to listen on, for example `0.0.0.0:50051`; the coordinator
    /// dials in. Optional when `connect` is set.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Dial out to the coordinator's tunnel instead (or as well, while
    /// migrating): for sites whose cluster hosts accept no inbound
    /// connection.
    #[serde(default)]
    pub connect: Option<ConnectConfig>,
    /// Mutual TLS settings.
    pub tls: TlsConfig,
    /// Health probing.
    #[serde(default)]
    pub health: HealthConfig,
    /// Prometheus metrics (`/metrics` over plain HTTP); off when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Hosted backend instances.
    pub instances: Vec<InstanceConfig>,
}

/// Mutual TLS settings of the server.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Site CA that signs client certificates.
    pub ca: PathBuf,
    /// Server certificate (chain).
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// SAN names (DNS or URI) of clients allowed to call; others get
    /// PERMISSION_DENIED.
    pub allowed_clients: Vec<String>,
}

impl TlsConfig {
    /// The three PEM files.
    pub fn files(&self) -> waldur_runtime::TlsFiles {
        waldur_runtime::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Dial-out to the coordinator's tunnel listener.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// The tunnel listener, `https://host:port`.
    pub coordinator: String,
    /// Name the coordinator's certificate must carry; default: the host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The coordinator's names for the backends this server serves (keys
    /// of its `backends:`); its tunnel allowlist must let this server's
    /// certificate serve each.
    pub backends: Vec<String>,
    /// Longest wait between reconnection attempts, before jitter.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

fn default_max_backoff() -> u64 {
    30
}

impl ConnectConfig {
    /// `(host, port)` of the coordinator's tunnel listener.
    pub fn address(&self) -> Result<(String, u16), String> {
        let rest = self
            .coordinator
            .strip_prefix("https://")
            .ok_or_else(|| format!("{:?} must start with https://", self.coordinator))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{:?} must name a port", self.coordinator))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{:?} has no valid port", self.coordinator))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{:?} has no host", self.coordinator));
        }
        Ok((host.to_owned(), port))
    }

    /// The name the coordinator's certificate must carry.
    pub fn server_name(&self) -> String {
        match &self.server_name {
            Some(n) => n.clone(),
            None => self.address().map(|(h, _)| h).unwrap_or_default(),
        }
    }
}

/// The metrics endpoint.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener, for example `0.0.0.0:9181`.
    pub listen: SocketAddr,
}

/// How the gRPC health service is kept current.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between probes of every instance.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_seconds: u64,
}

fn default_probe_interval() -> u64 {
    10
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval_seconds: default_probe_interval(),
        }
    }
}

impl HealthConfig {
    /// The probe interval (at least one second).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.probe_interval_seconds.max(1))
    }
}

/// One hosted instance.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Name requests use in their `instance` field.
    pub name: String,
    /// Backend type, for example `example` or `slurm`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Backend-specific settings, parsed by the backend.
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// A configuration problem; the binary exits 64 (EX_USAGE) on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// YAML syntax or schema error (the message names the key and line).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is wrong.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl ServerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Relative paths are relative to the config file's folder: the TLS
        // files, and the `*_file` settings of instances (secrets).
        let base = &waldur_runtime::config_dir(path);
        for p in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            waldur_runtime::rebase(p, base);
        }
        for inst in &mut config.instances {
            if let serde_json::Value::Object(settings) = &mut inst.settings {
                for (key, value) in settings.iter_mut() {
                    if let (true, serde_json::Value::String(p)) = (key.ends_with("_file"), &*value)
                    {
                        let mut file = std::path::PathBuf::from(p);
                        waldur_runtime::rebase(&mut file, base);
                        *value = serde_json::Value::String(file.to_string_lossy().into_owned());
                    }
                }
            }
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if config.version != 1 {
            return Err(invalid(format!(
                "version: {} is not supported, this server reads version 1",
                config.version
            )));
        }
        if config.listen.is_none() && config.connect.is_none() {
            return Err(invalid(
                "listen or connect: set at least one (listen: the coordinator dials in; connect: this server dials out to the coordinator's tunnel)".into(),
            ));
        }
        if let Some(c) = &config.connect {
            c.address()
                .map_err(|e| invalid(format!("connect.coordinator: {e}")))?;
            if c.backends.is_empty() {
                return Err(invalid(
                    "connect.backends: name the coordinator's backends this server serves".into(),
                ));
            }
        }
        if config.tls.allowed_clients.is_empty() {
            return Err(invalid(
                "tls.allowed_clients: name at least one client identity (SAN)".into(),
            ));
        }
        if config.instances.is_empty() {
            return Err(invalid(
                "instances: configure at least one backend instance".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for inst in &config.instances {
            if inst.name.is_empty() || inst.name.len() > crate::convert::MAX_ID_LEN {
                return Err(invalid(format!(
                    "instances: name {:?} must have 1 to 255 bytes",
                    inst.name
                )));
            }
            if !seen.insert(inst.name.as_str()) {
                return Err(invalid(format!(
                    "instances: name {:?} is used twice",
                    inst.name
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: 1
listen: 127.0.0.1:50051
tls:
  ca: /etc/pki/ca.pem
  cert: /etc/pki/server.pem
  key: /etc/pki/server.key
  allowed_clients: [coordinator.test]
instances:
  - name: hpc
    type: example
    settings: {components: []}
"#;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn a_complete_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.instances[0].kind, "example");
        assert_eq!(c.health.interval(), Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = GOOD.replace("listen:", "listne: x\nlisten:");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn other_versions_are_rejected() {
        let err = parse(&GOOD.replace("version: 1", "version: 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version: 2 is not supported"), "{err}");
    }

    #[test]
    fn duplicate_instance_names_are_rejected() {
        let text = format!("{GOOD}  - name: hpc\n    type: example\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn a_server_needs_listen_or_connect_and_a_dial_target_must_be_https_with_a_port() {
        let none = GOOD.replace("listen: 127.0.0.1:50051\n", "");
        assert!(
            parse(&none)
                .unwrap_err()
                .to_string()
                .contains("listen or connect")
        );
        let dial = none.replace(
            "tls:",
            "connect: {coordinator: \"https://coord.example.org:50052\", backends: [hpc]}\ntls:",
        );
        let c = parse(&dial).unwrap();
        let connect = c.connect.unwrap();
        assert_eq!(
            connect.address().unwrap(),
            ("coord.example.org".into(), 50052)
        );
        assert_eq!(connect.server_name(), "coord.example.org");
        for bad in ["http://coord:1", "https://coord", "https://:5"] {
            let text = none.replace(
                "tls:",
                &format!("connect: {{coordinator: \"{bad}\", backends: [hpc]}}\ntls:"),
            );
            assert!(parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_allowlist_is_rejected() {
        let err = parse(&GOOD.replace("[coordinator.test]", "[]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_clients"), "{err}");
    }
}
