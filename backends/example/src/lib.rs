//! The in-memory reference backend.
//!
//! It implements every capability of the contract, keeps all state in memory
//! and is deterministic: the same requests give the same answers, usernames
//! and (synthetic) usage. The coordinator's tests, the demo and the
//! benchmarks run against it, and its source is the template for a new
//! backend (see this crate's README).
//!
//! Test hooks, all driven by data so they also work through a remote server:
//! * `settings.provisioning_delay_ms` makes create, delete and set-limits
//!   slow (CSI style `ready=false`, completion announced on `Watch`);
//! * a resource attribute `example_fail` of `invalid_argument`,
//!   `unavailable` or `internal` makes CreateResource fail that way;
//! * a resource attribute `example_decision` of `reject` or `pending` decides
//!   EvaluateOrder (default accept);
//! * an offering user whose e-mail domain is `link.required` or
//!   `validation.required` gets the matching "user action required" error.

mod service;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use waldur_backend_sdk::SettingError;

pub use settings::{ComponentSettings, ExampleSettings};
use tokio::sync::broadcast;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "example";

/// One resource as the example keeps it.
#[derive(Debug, Clone, Default)]
struct Resource {
    resource_uuid: String,
    parent_id: String,
    description: String,
    limits: Limits,
    users: BTreeMap<String, String>, // username -> role
    user_limits: BTreeMap<String, Limits>,
    access: Option<AccessLevel>,
    soft_deleted: bool,
    periodic: JsonObject,
}

/// A slow operation in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum OpKind {
    Create,
    Delete,
    SetLimits,
}

#[derive(Debug, Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    pending: BTreeMap<(OpKind, String), Instant>,
    usernames: BTreeMap<String, String>, // offering user uuid -> username
    homedirs: BTreeSet<String>,
    recorded_usage: BTreeMap<(String, String), Amounts>, // (backend id, user)
    ready: bool,
    /// Names that exist but are not this backend's.
    unmanaged: BTreeSet<String>,
}

/// The in-memory reference backend.
#[derive(Clone)]
pub struct ExampleBackend {
    settings: Arc<ExampleSettings>,
    components: Arc<Vec<Component>>,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
}

impl std::fmt::Debug for ExampleBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExampleBackend")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Default for ExampleBackend {
    fn default() -> Self {
        Self::new(ExampleSettings::default())
    }
}

impl ExampleBackend {
    /// A backend with these settings.
    pub fn new(settings: ExampleSettings) -> Self {
        let components = settings.components();
        let (events, _) = broadcast::channel(1024);
        let unmanaged = settings.unmanaged.iter().cloned().collect();
        Self {
            settings: Arc::new(settings),
            components: Arc::new(components),
            state: Arc::new(Mutex::new(State {
                ready: true,
                unmanaged,
                ..State::default()
            })),
            events,
        }
    }

    /// Parses settings from a server config's `settings` value.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, SettingError> {
        Ok(Self::new(ExampleSettings::parse(value)?))
    }

    /// Makes probes answer not ready (tests of health and retries).
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Records usage for a member (in-process tests of reporting).
    pub fn record_usage(&self, backend_id: &str, username: &str, component: &str, amount: f64) {
        let mut st = self.lock();
        *st.recorded_usage
            .entry((backend_id.to_owned(), username.to_owned()))
            .or_default()
            .entry(component.to_owned())
            .or_insert(0.0) += amount;
    }

    /// Removes a user's home directory, as an operator or a failed
    /// creation would leave it (tests); true when there was one.
    pub fn forget_home_directory(&self, user: &str) -> bool {
        self.lock().homedirs.remove(user)
    }

    /// Whether a user has a home directory (tests).
    pub fn has_home_directory(&self, user: &str) -> bool {
        self.lock().homedirs.contains(user)
    }

    /// Number of resources held (tests).
    pub fn resource_count(&self) -> usize {
        self.lock().resources.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data is still
        // consistent because every mutation is a single step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slow provisioning: true when the operation is complete. The first call
    /// starts the clock and schedules the completion event.
    fn operation_ready(&self, kind: OpKind, backend_id: &str) -> bool {
        let delay = Duration::from_millis(self.settings.provisioning_delay_ms);
        if delay.is_zero() {
            return true;
        }
        let key = (kind, backend_id.to_owned());
        let mut st = self.lock();
        match st.pending.get(&key) {
            Some(ready_at) if Instant::now() >= *ready_at => {
                st.pending.remove(&key);
                true
            }
            Some(_) => false,
            None => {
                st.pending.insert(key, Instant::now() + delay);
                let events = self.events.clone();
                let event = WatchEvent {
                    backend_id: backend_id.to_owned(),
                    operation_id: Some(operation_id(kind, backend_id)),
                    state: OperationState::Succeeded,
                    message: String::new(),
                    time: SystemTime::now(),
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = events.send(WatchEvent {
                        time: SystemTime::now(),
                        ..event
                    });
                });
                false
            }
        }
    }

    fn info_of(&self, backend_id: &str, r: &Resource) -> ResourceInfo {
        ResourceInfo {
            backend_id: backend_id.to_owned(),
            parent_id: r.parent_id.clone(),
            effective_id: String::new(),
            description: r.description.clone(),
            limits: r.limits.clone(),
            metadata: metadata_of(backend_id, r),
            endpoints: vec![Endpoint {
                name: "login".into(),
                url: format!("ssh://login.example.invalid/{backend_id}"),
            }],
            users: r.users.keys().cloned().collect(),
            credentials: Secrets(BTreeMap::from([(
                "initial_password".to_owned(),
                format!("ex-{:016x}", stable_hash(&[backend_id, &r.resource_uuid])),
            )])),
            access: r.access,
        }
    }

    fn default_limits(&self) -> Limits {
        self.components
            .iter()
            .filter_map(|c| c.limit.map(|l| (c.key.clone(), l)))
            .collect()
    }

    fn add_members(&self, r: &mut Resource, users: &[User]) -> Vec<UserResult> {
        users
            .iter()
            .map(|u| {
                if !valid_username(&u.username) {
                    return UserResult::failed(
                        &u.username,
                        BackendError::invalid_field("username", "is not a valid local username"),
                    );
                }
                match r.users.insert(u.username.clone(), u.role.clone()) {
                    Some(_) => UserResult::unchanged(&u.username),
                    None => UserResult::applied(&u.username),
                }
            })
            .collect()
    }

    fn usage_of(
        &self,
        backend_id: &str,
        r: &Resource,
        period: Option<BillingPeriod>,
        st: &State,
    ) -> ResourceUsage {
        let usage_keys: Vec<&str> = self
            .components
            .iter()
            .filter(|c| c.accounting_type() == AccountingType::Usage)
            .map(|c| c.key.as_str())
            .collect();
        let period_tag = period
            .map(|p| format!("{}-{:02}", p.year, p.month))
            .unwrap_or_default();
        let mut users: BTreeMap<String, Amounts> = BTreeMap::new();
        for username in r.users.keys() {
            let mut amounts = Amounts::new();
            for key in &usage_keys {
                let synthetic = if self.settings.synthetic_usage {
                    // Deterministic: 0.00 to 9.99 units per member and component.
                    (stable_hash(&[backend_id, username, key, &period_tag]) % 1000) as f64 / 100.0
                } else {
                    0.0
                };
                amounts.insert((*key).to_owned(), synthetic);
            }
            if period.is_none()
                && let Some(rec) = st
                    .recorded_usage
                    .get(&(backend_id.to_owned(), username.clone()))
            {
                for (k, v) in rec {
                    *amounts.entry(k.clone()).or_insert(0.0) += v;
                }
            }
            users.insert(username.clone(), amounts);
        }
        ResourceUsage::from_users(backend_id, usage_keys, users)
    }
}

/// RESOURCE_NOT_MANAGED for a name that is not this backend's.
fn managed(st: &State, backend_id: &str) -> BackendResult<()> {
    if st.unmanaged.contains(backend_id) {
        return Err(BackendError::not_managed(
            backend_id,
            "it exists, but this backend did not make it",
        ));
    }
    Ok(())
}

/// The resource, or RESOURCE_NOT_FOUND.
fn resource<'a>(st: &'a State, backend_id: &str) -> BackendResult<&'a Resource> {
    managed(st, backend_id)?;
    st.resources
        .get(backend_id)
        .ok_or_else(|| BackendError::resource_not_found(backend_id))
}

/// The resource for a change, or RESOURCE_NOT_FOUND.
fn resource_mut<'a>(st: &'a mut State, backend_id: &str) -> BackendResult<&'a mut Resource> {
    managed(st, backend_id)?;
    st.resources
        .get_mut(backend_id)
        .ok_or_else(|| BackendError::resource_not_found(backend_id))
}

fn operation_id(kind: OpKind, backend_id: &str) -> String {
    format!("{kind:?}-{backend_id}").to_lowercase()
}

fn metadata_of(backend_id: &str, r: &Resource) -> JsonObject {
    let mut m = JsonObject::new();
    m.insert("backend".into(), TYPE_NAME.into());
    m.insert("account".into(), backend_id.into());
    m.insert("member_count".into(), r.users.len().into());
    if let Some(a) = r.access {
        m.insert("access".into(), a.as_str_name().into());
    }
    m
}

/// FNV-1a over the parts: stable across runs and platforms.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Local usernames: start with a letter or underscore, then letters, digits,
/// `_`, `-` and `.`, at most 32 characters (the POSIX portable set).
fn valid_username(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_does_not_change_between_runs() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab"]), stable_hash(&["a", "b"]));
    }

    #[test]
    fn usernames_follow_the_portable_set() {
        assert!(valid_username("alice"));
        assert!(valid_username("_svc.x-1"));
        assert!(!valid_username("1alice"));
        assert!(!valid_username("al ice"));
        assert!(!valid_username(""));
    }
}
