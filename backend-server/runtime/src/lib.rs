//! What both binaries (the coordinator and the backend server) run on,
//! apart from the contract itself:
//!
//! * [`tls`] and [`pki`]: mutual TLS material, the site CA and certificate
//!   issuing ([`cli`] holds the `pki` subcommands);
//! * [`secret_file`]: who may read a secret file, and what a value may be;
//!   [`secret`]: a value that never prints, and environment access through a
//!   trait;
//! * [`telemetry`]: logs, OpenTelemetry export and W3C trace propagation
//!   over gRPC and HTTP;
//! * [`exposition`]: the OpenMetrics text of a registry;
//! * [`shutdown`]: the signals both stop on;
//! * [`SettingError`]: a setting that cannot be used, named by its path;
//! * [`span`]: span names and recorded field keys;
//! * [`KeyedLock`]: one mutation per resource in flight;
//! * [`RetryPolicy`]: capped exponential backoff with jitter.

pub mod cli;
pub mod exposition;
pub mod handshake;
pub mod keyed_lock;
pub mod ldap_entry;
pub mod pki;
pub mod retry;
pub mod secret;
pub mod secret_file;
pub mod setting;
pub mod shutdown;
pub mod span;
pub mod telemetry;
pub mod tls;
pub mod tunnel;

pub use keyed_lock::{KeyedGuard, KeyedLock};
pub use retry::RetryPolicy;
pub use setting::SettingError;
pub use tls::{TlsError, TlsFiles, TlsMaterial, leaf_identities, peer_identities};

/// Makes a relative `path` relative to `base`, the folder of the config file
/// that names it: a config and its secrets can move together, and a
/// service's working directory never decides which file is read.
pub fn rebase(path: &mut std::path::PathBuf, base: &std::path::Path) {
    if path.is_relative() && !path.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

/// The folder of the config file at `path`, absolute (so paths made from it
/// do not change meaning when joined again or read from another working
/// directory).
pub fn config_dir(path: &std::path::Path) -> std::path::PathBuf {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}
