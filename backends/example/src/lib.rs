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

mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
pub use settings::{ComponentSettings, ExampleSettings};
use tokio::sync::broadcast;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult};

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
    pub fn from_settings(value: serde_json::Value) -> Result<Self, String> {
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

#[async_trait::async_trait]
impl Backend for ExampleBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: Some("in-memory".into()),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        let mut caps = vec![
            Resources,
            ListResources,
            ResourceLimits,
            UserLimits,
            Pause,
            Downscale,
            Metadata,
            Membership,
            HomeDirectories,
            RoleReconciliation,
            UsageReport,
            HistoricalUsage,
            Usernames,
            OrderEvaluation,
            Watch,
            Diagnostics,
            PeriodicSettings,
            ProjectSync,
        ];
        if self.settings.provisioning_delay_ms > 0 {
            caps.push(SlowProvisioning);
        }
        if self.settings.usage_may_decrease {
            caps.push(DecreasingUsage);
        }
        caps
    }

    async fn probe(&self) -> BackendResult<Probe> {
        Ok(if self.lock().ready {
            Probe::ready()
        } else {
            Probe::not_ready("set not ready by a test")
        })
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.components.as_ref().clone())
    }

    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        let id = format!("{}{}", self.settings.allocation_prefix, base_name).to_lowercase();
        if id.len() > 64 {
            return Err(BackendError::invalid_field(
                "base_name",
                "gives an id over 64 characters",
            ));
        }
        Ok(id)
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        let st = self.lock();
        Ok(Diagnostics {
            checks: vec![
                DiagnosticCheck {
                    name: "state".into(),
                    status: CheckStatus::Ok,
                    message: format!("{} resources in memory", st.resources.len()),
                },
                DiagnosticCheck {
                    name: "ready".into(),
                    status: if st.ready {
                        CheckStatus::Ok
                    } else {
                        CheckStatus::Failed
                    },
                    message: String::new(),
                },
            ],
            info: BTreeMap::from([("components".into(), self.components.len().to_string())]),
        })
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        match req
            .resource
            .attributes
            .get("example_fail")
            .and_then(|v| v.as_str())
        {
            Some("invalid_argument") => {
                return Err(BackendError::invalid_field(
                    "resource.attributes",
                    "example backend asked to refuse this order",
                ));
            }
            Some("unavailable") => return Err(BackendError::not_ready("example backend is busy")),
            Some("internal") => return Err(BackendError::command_failed("example command failed")),
            _ => {}
        }
        if !valid_account_name(&req.backend_id) {
            return Err(BackendError::invalid_field(
                "backend_id",
                "may only hold lower-case letters, digits, '_' and '-'",
            ));
        }
        let limits = if req.limits.is_empty() {
            self.default_limits()
        } else {
            req.limits.clone()
        };
        let (info, user_results) = {
            let mut st = self.lock();
            if st.unmanaged.contains(&req.backend_id) {
                return Err(BackendError::already_exists(
                    &req.backend_id,
                    "it exists and is not this backend's",
                ));
            }
            let r = match st.resources.get_mut(&req.backend_id) {
                Some(r) if r.resource_uuid != req.resource.resource_uuid => {
                    return Err(BackendError::already_exists(
                        &req.backend_id,
                        "it belongs to another Waldur resource",
                    ));
                }
                Some(r) => r,
                None => st
                    .resources
                    .entry(req.backend_id.clone())
                    .or_insert(Resource {
                        resource_uuid: req.resource.resource_uuid.clone(),
                        parent_id: req.resource.project_slug.clone(),
                        description: req.resource.name.clone(),
                        access: Some(AccessLevel::Full),
                        ..Resource::default()
                    }),
            };
            if !r.soft_deleted {
                r.limits = limits;
            }
            let results = self.add_members(r, &req.users);
            (self.info_of(&req.backend_id, r), results)
        };
        let ready = self.operation_ready(OpKind::Create, &req.backend_id);
        Ok(Created {
            resource: info,
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::Create, &req.backend_id)),
            user_results,
        })
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(self.info_of(backend_id, r))
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        let size = if page.page_size == 0 {
            100
        } else {
            page.page_size
        };
        let st = self.lock();
        let after = page.page_token.unwrap_or_default();
        let mut matching = st
            .resources
            .range::<String, _>((
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            ))
            .filter(|(_, r)| page.parent_id.as_ref().is_none_or(|p| &r.parent_id == p));
        let resources: Vec<ResourceInfo> = matching
            .by_ref()
            .take(size)
            .map(|(id, r)| self.info_of(id, r))
            .collect();
        let more = matching.next().is_some();
        let next_page_token = if more {
            resources.last().map(|r| r.backend_id.clone())
        } else {
            None
        };
        Ok(Page {
            resources,
            next_page_token,
        })
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let existed = {
            let st = self.lock();
            managed(&st, &req.backend_id)?;
            st.resources.contains_key(&req.backend_id)
        };
        if !existed {
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: false,
            });
        }
        let ready = self.operation_ready(OpKind::Delete, &req.backend_id);
        if ready {
            let soft = match req.mode {
                DeletionMode::Soft => true,
                DeletionMode::Hard => false,
                DeletionMode::Unspecified => self.settings.soft_delete,
            };
            let mut st = self.lock();
            if soft {
                if let Some(r) = st.resources.get_mut(&req.backend_id) {
                    r.soft_deleted = true;
                    for v in r.limits.values_mut() {
                        *v = 0;
                    }
                }
            } else {
                st.resources.remove(&req.backend_id);
            }
        }
        Ok(Deleted {
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::Delete, &req.backend_id)),
            existed,
        })
    }

    async fn sync_resource_project(
        &self,
        backend_id: &str,
        resource: ResourceContext,
    ) -> BackendResult<bool> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if resource.project_slug.is_empty() || r.parent_id == resource.project_slug {
            return Ok(false);
        }
        r.parent_id = resource.project_slug;
        Ok(true)
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        _resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        resource(&self.lock(), backend_id)?;
        let ready = self.operation_ready(OpKind::SetLimits, backend_id);
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if ready {
            r.limits = limits;
            r.soft_deleted = false;
        }
        Ok(LimitsApplied {
            limits: r.limits.clone(),
            ready,
            operation_id: (!ready).then(|| operation_id(OpKind::SetLimits, backend_id)),
        })
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(r.limits.clone())
    }

    async fn set_user_limits(
        &self,
        backend_id: &str,
        username: &str,
        limits: Limits,
    ) -> BackendResult<()> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        if !r.users.contains_key(username) {
            return Err(BackendError::invalid_field(
                "username",
                format!("{username} is not a member of {backend_id}"),
            ));
        }
        if limits.is_empty() {
            r.user_limits.remove(username);
        } else {
            r.user_limits.insert(username.to_owned(), limits);
        }
        Ok(())
    }

    async fn get_user_limits(&self, backend_id: &str) -> BackendResult<BTreeMap<String, Limits>> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(r.user_limits.clone())
    }

    async fn set_resource_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        let changed = r.access != Some(access);
        r.access = Some(access);
        Ok(changed)
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        let st = self.lock();
        let r = resource(&st, backend_id)?;
        Ok(metadata_of(backend_id, r))
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        _homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        Ok(self.add_members(r, &users))
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        Ok(usernames
            .into_iter()
            .map(|u| {
                r.user_limits.remove(&u);
                match r.users.remove(&u) {
                    Some(_) => UserResult::applied(u),
                    None => UserResult::unchanged(u),
                }
            })
            .collect())
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let st = self.lock();
        let mut out = ResourceUsers::default();
        for id in backend_ids {
            match st.resources.get(id) {
                Some(r) => {
                    out.found
                        .insert(id.clone(), r.users.keys().cloned().collect());
                }
                None => out.missing.push(id.clone()),
            }
        }
        Ok(out)
    }

    async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        _umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        Ok(usernames
            .into_iter()
            .map(|u| {
                if !valid_username(&u) {
                    let e = BackendError::invalid_field("usernames", "not a valid local username");
                    return UserResult::failed(u, e);
                }
                if st.homedirs.insert(u.clone()) {
                    UserResult::applied(u)
                } else {
                    UserResult::unchanged(u)
                }
            })
            .collect())
    }

    async fn reconcile_user_roles(
        &self,
        backend_id: &str,
        users: Vec<User>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        Ok(users
            .into_iter()
            .map(|u| match r.users.get_mut(&u.username) {
                None => UserResult::failed(
                    &u.username,
                    BackendError::invalid_field("users", format!("{} is not a member", u.username)),
                ),
                Some(role) if *role == u.role => UserResult::unchanged(&u.username),
                Some(role) => {
                    *role = u.role.clone();
                    UserResult::applied(&u.username)
                }
            })
            .collect())
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let st = self.lock();
        Ok(query
            .backend_ids
            .iter()
            .filter_map(|id| {
                st.resources
                    .get(id)
                    .map(|r| self.usage_of(id, r, query.period, &st))
            })
            .collect())
    }

    async fn get_username(&self, user: OfferingUser) -> BackendResult<Option<String>> {
        Ok(self.lock().usernames.get(&user.offering_user_uuid).cloned())
    }

    async fn generate_username(&self, user: OfferingUser) -> BackendResult<String> {
        let domain = user
            .email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default();
        match domain {
            "link.required" => {
                return Err(BackendError::account_linking_required(
                    "link your existing cluster account first",
                    Some("https://idm.example.invalid/link"),
                ));
            }
            "validation.required" => {
                return Err(BackendError::additional_validation_required(
                    "your affiliation needs to be validated",
                    Some("https://idm.example.invalid/validate"),
                ));
            }
            _ => {}
        }
        let mut st = self.lock();
        if let Some(existing) = st.usernames.get(&user.offering_user_uuid) {
            return Ok(existing.clone());
        }
        let source = [
            &user.waldur_username,
            &user.email,
            &user.full_name,
            &user.offering_user_uuid,
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .map(|s| s.split('@').next().unwrap_or_default())
        .unwrap_or_default();
        let cleaned: String = source
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect();
        let base = format!("{}{}", self.settings.username_prefix, cleaned);
        let base = if valid_username(&base) {
            base
        } else {
            format!("u{base}")
        };
        let taken: BTreeSet<&String> = st.usernames.values().collect();
        let name = std::iter::once(base.clone())
            .chain((1..).map(|i| format!("{base}{i}")))
            .find(|candidate| !taken.contains(candidate))
            .unwrap_or(base);
        st.usernames.insert(user.offering_user_uuid, name.clone());
        Ok(name)
    }

    async fn evaluate_order(&self, order: Order) -> BackendResult<Decision> {
        let hint = order
            .resource
            .attributes
            .get("example_decision")
            .and_then(|v| v.as_str());
        Ok(match hint {
            Some("reject") => Decision {
                decision: OrderDecision::Reject,
                message: "rejected by the example policy".into(),
            },
            Some("pending") => Decision {
                decision: OrderDecision::Pending,
                message: "waiting for the example policy".into(),
            },
            _ => Decision {
                decision: OrderDecision::Accept,
                message: String::new(),
            },
        })
    }

    async fn watch(
        &self,
        backend_ids: Vec<String>,
    ) -> BackendResult<BoxStream<'static, BackendResult<WatchEvent>>> {
        let wanted: BTreeSet<String> = backend_ids.into_iter().collect();
        let rx = self.events.subscribe();
        let stream = tokio_stream_from(rx)
            .filter(move |e| {
                let keep = wanted.is_empty() || wanted.contains(&e.backend_id);
                async move { keep }
            })
            .map(Ok)
            .boxed();
        Ok(stream)
    }

    async fn apply_periodic_settings(
        &self,
        backend_id: &str,
        settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        let mut st = self.lock();
        let r = resource_mut(&mut st, backend_id)?;
        let mut actions = Vec::new();
        for (k, v) in settings {
            if r.periodic.get(&k) != Some(&v) {
                actions.push(format!("set {k}={v} on {backend_id}"));
                r.periodic.insert(k, v);
            }
        }
        Ok(actions)
    }
}

/// Account names the example accepts (SLURM's rules, to be realistic).
fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// A broadcast receiver as a stream; lagging receivers skip what they missed
/// (the coordinator re-issues requests anyway, events are only hints).
fn tokio_stream_from(
    rx: broadcast::Receiver<WatchEvent>,
) -> impl futures::Stream<Item = WatchEvent> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
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
