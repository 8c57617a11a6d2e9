//! The trait a Rust backend implements.

use futures::stream::BoxStream;

use crate::types::*;
use crate::{BackendError, BackendResult};

/// A backend: the cluster-facing half of the system.
///
/// The SDK calls these methods after it has
/// * found the instance the request names,
/// * checked that the instance advertises the capability the RPC needs
///   (otherwise the caller gets UNIMPLEMENTED and the method is not called),
/// * validated the request (required fields, sizes, known components,
///   non-negative limits),
/// * serialised mutating calls on the same resource.
///
/// Every method MUST be idempotent as `proto/SPEC.md` describes: the
/// coordinator re-issues requests after timeouts and restarts. Optional
/// methods answer UNIMPLEMENTED by default and never panic.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Name, version and vendor version of the implementation.
    fn info(&self) -> BackendInfo;

    /// What this instance supports. Must not change while the server runs.
    fn capabilities(&self) -> Vec<Capability>;

    /// Whether the instance can serve requests now.
    async fn probe(&self) -> BackendResult<Probe>;

    /// Component definitions. The SDK also uses them to reject limits and
    /// usage for unknown components.
    async fn components(&self) -> BackendResult<Vec<Component>>;

    /// Backend id for a base name. The default lower-cases the base name,
    /// which is what the original agent did with an empty prefix.
    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        Ok(base_name.to_lowercase())
    }

    /// Self checks (DIAGNOSTICS).
    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        Err(BackendError::unimplemented("GetDiagnostics"))
    }

    /// Creates a resource idempotently (RESOURCES).
    async fn create_resource(&self, _request: CreateResource) -> BackendResult<Created> {
        Err(BackendError::unimplemented("CreateResource"))
    }

    /// One resource with its users, or RESOURCE_NOT_FOUND (RESOURCES).
    async fn get_resource(&self, _backend_id: &str) -> BackendResult<ResourceInfo> {
        Err(BackendError::unimplemented("GetResource"))
    }

    /// A page of resources ordered by backend id (LIST_RESOURCES).
    async fn list_resources(&self, _page: PageRequest) -> BackendResult<Page> {
        Err(BackendError::unimplemented("ListResources"))
    }

    /// Deletes a resource; absent is success (RESOURCES).
    async fn delete_resource(&self, _request: DeleteResource) -> BackendResult<Deleted> {
        Err(BackendError::unimplemented("DeleteResource"))
    }

    /// Moves a resource under its current project and customer; returns
    /// whether anything moved (PROJECT_SYNC).
    async fn sync_resource_project(
        &self,
        _backend_id: &str,
        _resource: ResourceContext,
    ) -> BackendResult<bool> {
        Err(BackendError::unimplemented("SyncResourceProject"))
    }

    /// Sets the full limits of a resource (RESOURCE_LIMITS).
    async fn set_resource_limits(
        &self,
        _backend_id: &str,
        _limits: Limits,
        _resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        Err(BackendError::unimplemented("SetResourceLimits"))
    }

    /// The limits a resource has (RESOURCE_LIMITS).
    async fn get_resource_limits(&self, _backend_id: &str) -> BackendResult<Limits> {
        Err(BackendError::unimplemented("GetResourceLimits"))
    }

    /// Sets one user's full limits; empty removes them (USER_LIMITS).
    async fn set_user_limits(
        &self,
        _backend_id: &str,
        _username: &str,
        _limits: Limits,
    ) -> BackendResult<()> {
        Err(BackendError::unimplemented("SetUserLimits"))
    }

    /// Per-user limits of a resource, by username (USER_LIMITS).
    async fn get_user_limits(
        &self,
        _backend_id: &str,
    ) -> BackendResult<std::collections::BTreeMap<String, Limits>> {
        Err(BackendError::unimplemented("GetUserLimits"))
    }

    /// Sets the access level; returns whether it changed (PAUSE/DOWNSCALE).
    async fn set_resource_access(
        &self,
        _backend_id: &str,
        _access: AccessLevel,
    ) -> BackendResult<bool> {
        Err(BackendError::unimplemented("SetResourceAccess"))
    }

    /// Metadata for Waldur (METADATA).
    async fn get_resource_metadata(&self, _backend_id: &str) -> BackendResult<JsonObject> {
        Err(BackendError::unimplemented("GetResourceMetadata"))
    }

    /// Adds users, one result each in request order (MEMBERSHIP).
    async fn add_users(
        &self,
        _backend_id: &str,
        _users: Vec<User>,
        _homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        Err(BackendError::unimplemented("AddUsers"))
    }

    /// Removes users, one result each in request order (MEMBERSHIP).
    async fn remove_users(
        &self,
        _backend_id: &str,
        _usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        Err(BackendError::unimplemented("RemoveUsers"))
    }

    /// Members of many resources at once (MEMBERSHIP).
    async fn list_resource_users(&self, _backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        Err(BackendError::unimplemented("ListResourceUsers"))
    }

    /// As [`Backend::list_resource_users`], plus `details` for the resources
    /// the backend can read in bulk (ListResourceUsers with the full view).
    /// The default reads members only, which is always correct: the caller
    /// then reads each resource on its own.
    async fn list_resource_details(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        self.list_resource_users(backend_ids).await
    }

    /// Creates home directories (HOME_DIRECTORIES).
    async fn create_home_directories(
        &self,
        _usernames: Vec<String>,
        _umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        Err(BackendError::unimplemented("CreateHomeDirectories"))
    }

    /// Aligns members' backend roles with their Waldur roles
    /// (ROLE_RECONCILIATION).
    async fn reconcile_user_roles(
        &self,
        _backend_id: &str,
        _users: Vec<User>,
    ) -> BackendResult<Vec<UserResult>> {
        Err(BackendError::unimplemented("ReconcileUserRoles"))
    }

    /// Usage of many resources (USAGE_REPORT, HISTORICAL_USAGE).
    async fn usage_report(&self, _query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        Err(BackendError::unimplemented("GetUsageReport"))
    }

    /// The known username of an offering user, if any (USERNAMES).
    async fn get_username(&self, _user: OfferingUser) -> BackendResult<Option<String>> {
        Err(BackendError::unimplemented("GetUsername"))
    }

    /// The username of an offering user, created if needed (USERNAMES).
    async fn generate_username(&self, _user: OfferingUser) -> BackendResult<String> {
        Err(BackendError::unimplemented("GenerateUsername"))
    }

    /// Decides a pending order (ORDER_EVALUATION).
    async fn evaluate_order(&self, _order: Order) -> BackendResult<Decision> {
        Err(BackendError::unimplemented("EvaluateOrder"))
    }

    /// Completion events of slow operations (WATCH). An empty list means all
    /// resources.
    async fn watch(
        &self,
        _backend_ids: Vec<String>,
    ) -> BackendResult<BoxStream<'static, BackendResult<WatchEvent>>> {
        Err(BackendError::unimplemented("Watch"))
    }

    /// Applies periodic settings; returns the actions taken
    /// (PERIODIC_SETTINGS).
    async fn apply_periodic_settings(
        &self,
        _backend_id: &str,
        _settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        Err(BackendError::unimplemented("ApplyPeriodicSettings"))
    }
}
