//! The SLURM backend: accounts, limits, associations and usage through the
//! `sacctmgr`/`sacct`/`scancel` command line.
//!
//! Batched across resources: a usage report for many allocations is one
//! `sacct`, a membership listing one `sacctmgr show account withassoc`
//! (members, limits and per-user limits of a page of allocations), and
//! an allocation with limits and users is created with at most five
//! commands (one association read, the missing accounts with limits on the
//! `add` line, all users in one `add user`). Creates arriving together are
//! made together ([`batch`](crate::batch)): an association read, a `show
//! user`, one `sacctmgr load` of every new account and its members, and a
//! second read that checks the result, whatever their number.
//!
//! The crate is split by what it manages:
//! * [`accounts`](crate::accounts) — the account tree, the listing every
//!   operation starts from, ownership (which accounts it may change);
//! * `resources` — create, read, list, delete, project moves; `batch` —
//!   creates made together; `access` — access levels;
//! * `limits` — unit conversion, resource and per-user limits;
//! * `members` — user associations;
//! * `filesystem` — project and home directories, quotas;
//! * `usage` — `sacct` reports;
//! * `periodic` — Waldur's periodic settings;
//! * [`cli`] — running the commands (no shell), [`parse`] — reading them,
//!   [`names`] — what may reach them.

mod access;
mod accounts;
mod batch;
pub mod cli;
mod diagnostics;
mod filesystem;
mod ldap;
mod limits;
mod members;
pub mod names;
pub mod parse;
mod periodic;
mod placement;
mod resources;
mod settings;
mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use waldur_backend_sdk::SettingError;

pub use ldap::LdapSettings;
pub use limits::{MAX_TRES_VALUE, prepaid_months};
pub use settings::{
    Accounting, Adopt, ComponentSettings, DefaultAccountPolicy, LimitType, QosManagement,
    QuotaProvider, SlurmSettings, TargetComponent,
};
use tokio::sync::OnceCell;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult};

use crate::cli::{ProcessRunner, Runner, Slurm};

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "slurm";

/// The SLURM backend of one cluster.
pub struct SlurmBackend {
    settings: Arc<SlurmSettings>,
    slurm: Arc<Slurm>,
    components: Vec<Component>,
    cluster_tres: OnceCell<BTreeSet<String>>,
    /// Creates waiting for [`HIERARCHY`], made together by its next holder.
    creates: batch::CreateQueue,
    /// The cluster flat files name (`cluster_name`, else slurmdbd's only
    /// cluster).
    flat_cluster: OnceCell<String>,
    /// A recent listing of the account tree, for placement checks.
    tree: placement::TreeCache,
    /// Homes of directory users, by username, once `getent` told them.
    homes: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The LDAP directory of allocation groups, when configured.
    directory: Option<Arc<ldap::Directory>>,
}

/// Customer and project accounts are shared between allocations, and
/// between the instances of one server (two offerings on one cluster share
/// customers): making them, and removing an emptied project, are serialised
/// so that a new allocation never races the removal of its parent (SLURM
/// drops the associations under a removed account).
pub(crate) static HIERARCHY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl std::fmt::Debug for SlurmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmBackend")
            .field("slurm", &self.slurm)
            .finish()
    }
}

impl SlurmBackend {
    /// A backend running commands through `runner`.
    pub fn new(settings: SlurmSettings, runner: Arc<dyn Runner>) -> Self {
        let slurm = Slurm::new(
            runner,
            &settings.slurm_bin_path,
            settings.cluster_name.clone(),
        )
        .with_read_limit(settings.max_concurrent_reads);
        let components = settings
            .components
            .iter()
            .map(|(key, c)| {
                let kind = match c.accounting_type {
                    Accounting::Limit => AccountingType::Limit,
                    Accounting::One => AccountingType::OneTime,
                    Accounting::Usage => AccountingType::Usage,
                };
                let mut component = Component {
                    key: key.clone(),
                    label: c.label.clone(),
                    measured_unit: c.measured_unit.clone(),
                    unit_factor: c.unit_factor,
                    accounting_type: kind as i32,
                    limit: c.limit.map(|l| l as i64),
                    is_prepaid: kind == AccountingType::OneTime,
                    ..Component::default()
                };
                c.waldur.apply(&mut component);
                component
            })
            .collect();
        let directory = settings
            .ldap
            .clone()
            .map(|l| Arc::new(ldap::Directory::new(l)));
        Self {
            settings: Arc::new(settings),
            slurm: Arc::new(slurm),
            components,
            cluster_tres: OnceCell::new(),
            creates: batch::CreateQueue::default(),
            flat_cluster: OnceCell::new(),
            tree: Default::default(),
            homes: Default::default(),
            directory,
        }
    }

    /// A backend from a server config's `settings`, spawning real processes.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, SettingError> {
        Ok(Self::new(
            SlurmSettings::parse(value)?,
            Arc::new(ProcessRunner),
        ))
    }

    /// SLURM processes spawned so far (benchmarks and tests).
    pub fn spawned(&self) -> u64 {
        self.slurm.spawned()
    }

    /// Total time spent in SLURM commands so far.
    pub fn busy(&self) -> std::time::Duration {
        self.slurm.busy()
    }
}

/// A backend id as the request gives it: a valid SLURM account name as it
/// stands. Upper case and non-ASCII letters are refused, never folded: the
/// answer must name the id the request named.
fn checked_account(field: &str, name: String) -> BackendResult<String> {
    if names::valid_account(&name) {
        return Ok(name);
    }
    let why = if name.chars().any(|c| c.is_uppercase() || !c.is_ascii()) {
        "has upper case or non-ASCII letters (ids are not folded)"
    } else {
        "is not a valid SLURM account name"
    };
    Err(BackendError::invalid_field(
        field,
        format!("{name:?} {why}"),
    ))
}

/// A name the backend derives (prefix + slug): ASCII letters folded to
/// lower case as SLURM would, anything else refused.
fn folded_account(field: &str, name: &str) -> BackendResult<String> {
    checked_account(field, name.to_ascii_lowercase())
}

/// A backend id from a request about an existing resource.
fn account_id(backend_id: &str) -> BackendResult<String> {
    checked_account("backend_id", backend_id.to_owned())
}

#[cfg(test)]
mod tests;

#[async_trait::async_trait]
impl Backend for SlurmBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: None,
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        let mut caps = vec![
            Resources,
            ListResources,
            ResourceLimits,
            UserLimits,
            Metadata,
            Membership,
            UsageReport,
            HistoricalUsage,
            Diagnostics,
            ProjectSync,
        ];
        if self.settings.periodic_limits.enabled {
            caps.push(PeriodicSettings);
        }
        // A site that opted out of home directories gets none, from the
        // create-homedirs command or membership sync either.
        if self.settings.enable_user_homedir_account_creation {
            caps.push(HomeDirectories);
        }
        if self.settings.qos_paused.is_some() || self.settings.qos_enforced() {
            caps.push(Pause);
        }
        if self.settings.qos_downscaled.is_some() || self.settings.qos_enforced() {
            caps.push(Downscale);
        }
        caps
    }

    async fn probe(&self) -> BackendResult<Probe> {
        match self
            .slurm
            .sacctmgr_read(args!["show", "cluster", "format=cluster"])
            .await
        {
            Ok(_) => Ok(Probe::ready()),
            Err(e) => Ok(Probe::not_ready(e.message)),
        }
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.components.clone())
    }

    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        folded_account(
            "base_name",
            &format!("{}{}", self.settings.allocation_prefix, base_name),
        )
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        Ok(self.diagnose().await)
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        self.create(req).await
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        self.resource(backend_id).await
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        self.list(page).await
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        self.delete(req).await
    }

    async fn sync_resource_project(
        &self,
        backend_id: &str,
        resource: ResourceContext,
    ) -> BackendResult<bool> {
        self.sync_project(backend_id, resource).await
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        self.set_limits(backend_id, limits, resource).await
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        Ok(self.resource(backend_id).await?.limits)
    }

    async fn set_user_limits(
        &self,
        backend_id: &str,
        username: &str,
        limits: Limits,
    ) -> BackendResult<()> {
        self.set_user_limits_of(backend_id, username, limits).await
    }

    async fn get_user_limits(&self, backend_id: &str) -> BackendResult<BTreeMap<String, Limits>> {
        self.user_limits(backend_id).await
    }

    async fn set_resource_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        self.set_access(backend_id, access).await
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        Ok(self.resource(backend_id).await?.metadata)
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        self.add(backend_id, users, homedir_umask).await
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        self.remove(backend_id, usernames).await
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        self.members_of(backend_ids, false).await
    }

    async fn list_resource_details(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        self.members_of(backend_ids, true).await
    }

    async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let umask = umask.unwrap_or_else(|| self.settings.default_homedir_umask.clone());
        Ok(self.homedirs(usernames, &umask).await)
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        self.usage(query).await
    }

    async fn apply_periodic_settings(
        &self,
        backend_id: &str,
        settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        self.periodic(backend_id, settings).await
    }
}
