//! One resource, locked: the calls that change it.

use waldur_backend_api::convert::{from_wire, json_to_struct, to_wire};
use waldur_backend_api::types::*;
use waldur_backend_proto::v1 as wire;
use waldur_runtime::KeyedGuard;

use super::{BackendCallError, BackendHandle, CallClass};

/// One resource, locked: the calls that change it. The lock is released
/// when the session is dropped.
pub struct ResourceSession {
    pub(super) _guard: KeyedGuard<String>,
    pub(super) handle: BackendHandle,
    pub(super) backend_id: String,
}

impl std::fmt::Debug for ResourceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceSession")
            .field("backend", &self.handle.inner.name)
            .field("backend_id", &self.backend_id)
            .finish()
    }
}

impl ResourceSession {
    /// The locked resource's backend id.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    fn id(&self) -> String {
        self.backend_id.clone()
    }

    /// Creates (or re-issues the creation of) the resource; the request's
    /// backend id is the session's.
    pub async fn create_resource(
        &self,
        mut request: CreateResource,
    ) -> Result<Created, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::Resources, "CreateResource").await?;
        request.backend_id = self.id();
        let r = h
            .call(
                "CreateResource",
                CallClass::Mutate,
                to_wire::create_resource(h.instance_name(), request),
                |mut c, r| async move { c.create_resource(r).await },
            )
            .await?;
        Ok(from_wire::created(r))
    }

    /// Deletes the resource with the instance's default mode (re-issue
    /// while not ready).
    pub async fn delete_resource(
        &self,
        resource: Option<ResourceContext>,
    ) -> Result<Deleted, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::Resources, "DeleteResource").await?;
        let request = DeleteResource {
            backend_id: self.id(),
            mode: DeletionMode::Unspecified,
            resource,
        };
        let r = h
            .call(
                "DeleteResource",
                CallClass::Mutate,
                to_wire::delete_resource(h.instance_name(), request),
                |mut c, r| async move { c.delete_resource(r).await },
            )
            .await?;
        Ok(from_wire::deleted(r))
    }

    /// Sets the resource's limits (re-issue while not ready).
    pub async fn set_resource_limits(
        &self,
        limits: Limits,
        resource: Option<ResourceContext>,
    ) -> Result<LimitsApplied, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::ResourceLimits, "SetResourceLimits")
            .await?;
        let r = h
            .call(
                "SetResourceLimits",
                CallClass::Mutate,
                wire::SetResourceLimitsRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    limits: to_wire::limits(limits),
                    resource: resource.map(to_wire::resource),
                },
                |mut c, r| async move { c.set_resource_limits(r).await },
            )
            .await?;
        Ok(from_wire::limits_applied(r))
    }

    /// Adds users (`homedir_umask` None: the backend's default).
    pub async fn add_users(
        &self,
        users: Vec<User>,
        homedir_umask: Option<&str>,
    ) -> Result<Vec<UserResult>, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::Membership, "AddUsers").await?;
        let r = h
            .call(
                "AddUsers",
                CallClass::Mutate,
                wire::AddUsersRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    users: to_wire::users(users),
                    homedir_umask: homedir_umask.unwrap_or_default().to_owned(),
                },
                |mut c, r| async move { c.add_users(r).await },
            )
            .await?;
        Ok(from_wire::user_results(r.results))
    }

    /// Removes users.
    pub async fn remove_users(
        &self,
        usernames: Vec<String>,
    ) -> Result<Vec<UserResult>, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::Membership, "RemoveUsers").await?;
        let r = h
            .call(
                "RemoveUsers",
                CallClass::Mutate,
                wire::RemoveUsersRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    usernames,
                },
                |mut c, r| async move { c.remove_users(r).await },
            )
            .await?;
        Ok(from_wire::user_results(r.results))
    }

    /// Brings existing members' roles in line with Waldur.
    pub async fn reconcile_user_roles(
        &self,
        users: Vec<User>,
    ) -> Result<Vec<UserResult>, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::RoleReconciliation, "ReconcileUserRoles")
            .await?;
        let r = h
            .call(
                "ReconcileUserRoles",
                CallClass::Mutate,
                wire::ReconcileUserRolesRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    users: to_wire::users(users),
                },
                |mut c, r| async move { c.reconcile_user_roles(r).await },
            )
            .await?;
        Ok(from_wire::user_results(r.results))
    }

    /// Sets the access level; true when it changed.
    pub async fn set_resource_access(&self, access: AccessLevel) -> Result<bool, BackendCallError> {
        let h = &self.handle;
        let cap = match access {
            AccessLevel::Paused => Capability::Pause,
            AccessLevel::Downscaled => Capability::Downscale,
            _ if h.has(Capability::Pause).await? => Capability::Pause,
            _ => Capability::Downscale,
        };
        h.require(cap, "SetResourceAccess").await?;
        let r = h
            .call(
                "SetResourceAccess",
                CallClass::Mutate,
                wire::SetResourceAccessRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    access: access.into(),
                },
                |mut c, r| async move { c.set_resource_access(r).await },
            )
            .await?;
        Ok(r.changed)
    }

    /// Moves the resource under its current project and customer; true
    /// when anything moved (PROJECT_SYNC).
    pub async fn sync_resource_project(
        &self,
        resource: ResourceContext,
    ) -> Result<bool, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::ProjectSync, "SyncResourceProject")
            .await?;
        let r = h
            .call(
                "SyncResourceProject",
                CallClass::Mutate,
                wire::SyncResourceProjectRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    resource: Some(to_wire::resource(resource)),
                },
                |mut c, r| async move { c.sync_resource_project(r).await },
            )
            .await?;
        Ok(r.changed)
    }

    /// Sets (or, with empty limits, removes) one user's limits.
    pub async fn set_user_limits(
        &self,
        username: &str,
        limits: Limits,
    ) -> Result<(), BackendCallError> {
        let h = &self.handle;
        h.require(Capability::UserLimits, "SetUserLimits").await?;
        h.call(
            "SetUserLimits",
            CallClass::Mutate,
            wire::SetUserLimitsRequest {
                instance: h.instance_name(),
                backend_id: self.id(),
                username: username.to_owned(),
                limits: to_wire::limits(limits),
            },
            |mut c, r| async move { c.set_user_limits(r).await },
        )
        .await?;
        Ok(())
    }

    /// Applies periodic settings; returns what was done.
    pub async fn apply_periodic_settings(
        &self,
        settings: JsonObject,
    ) -> Result<Vec<String>, BackendCallError> {
        let h = &self.handle;
        h.require(Capability::PeriodicSettings, "ApplyPeriodicSettings")
            .await?;
        let r = h
            .call(
                "ApplyPeriodicSettings",
                CallClass::Mutate,
                wire::ApplyPeriodicSettingsRequest {
                    instance: h.instance_name(),
                    backend_id: self.id(),
                    settings: Some(json_to_struct(settings)),
                },
                |mut c, r| async move { c.apply_periodic_settings(r).await },
            )
            .await?;
        Ok(r.actions)
    }
}
