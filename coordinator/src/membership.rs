//! Membership sync (core spec §5): make each resource on the backend match
//! Waldur, with Waldur as the source of truth for who and how much access,
//! and the backend as the source of truth for limits and metadata.
//!
//! One cycle reads, once per offering: the resources, the offering users
//! (after moving open ones through username generation, see
//! [`crate::usernames`]), the exposed attributes, service and course accounts
//! and per-user limits; once per project: the team. Then per resource,
//! concurrently and bounded, under the same per-resource lock as orders:
//!
//! 1. `GetResource` (one read: members, limits, metadata, access level);
//! 2. members: add the team's new users, remove stale ones, reconcile roles
//!    (`restrict_member_access` removes everyone instead);
//! 3. access: `SetResourceAccess` only when the level differs from what the
//!    backend reports (paused, downscaled or full);
//! 4. backend metadata and limits pushed to Waldur only when they differ;
//! 5. per-user limits brought to Waldur's values;
//! 6. `refresh_last_sync`, and `set_as_ok` for a resource that was Erred.
//!
//! A steady state therefore costs one backend read and two Waldur calls per
//! resource (team, refresh_last_sync) and changes nothing. A failure marks
//! the resource Erred with the error (as the original), except temporary
//! ones (Waldur 5xx, an unavailable backend), which are retried next cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};
use tracing::Instrument;
use waldur_backend_proto::v1 as wire;

use crate::backend::{BackendCallError, BackendHandle};
use crate::config::OfferingConfig;
use crate::orders::HIDDEN_ERROR;
use crate::team::{normalise_uuid, team_users, usable_offering_users};
use crate::usernames::{UsernameSummary, Usernames};
use crate::waldur::types::{
    Account, AttributeConfig, Resource, TeamMember, UserUsageLimit, amount,
};
use crate::waldur::{WaldurClient, WaldurError};

/// Resource fields membership sync reads (the original's set, trimmed to
/// what is used).
pub const RESOURCE_FIELDS: [&str; 14] = [
    "uuid",
    "name",
    "slug",
    "state",
    "backend_id",
    "project_uuid",
    "project_slug",
    "customer_uuid",
    "customer_slug",
    "restrict_member_access",
    "backend_metadata",
    "limits",
    "paused",
    "downscaled",
];

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembershipSummary {
    /// Resources considered.
    pub resources: usize,
    /// Backend ids Waldur has but the backend does not.
    pub missing_on_backend: Vec<String>,
    /// Users added.
    pub users_added: usize,
    /// Users removed.
    pub users_removed: usize,
    /// Per-user failures (add, remove, roles).
    pub user_failures: usize,
    /// Roles changed on the backend.
    pub roles_changed: usize,
    /// Access levels changed (pause, downscale, restore).
    pub access_changed: usize,
    /// `set_limits` calls to Waldur.
    pub limits_pushed: usize,
    /// `set_backend_metadata` calls to Waldur.
    pub metadata_pushed: usize,
    /// Per-user limits set on the backend.
    pub user_limits_set: usize,
    /// Erred resources set back to OK.
    pub recovered: usize,
    /// Resources marked Erred: (uuid, message).
    pub erred: Vec<(String, String)>,
    /// Resources skipped for a temporary failure: (uuid, reason).
    pub deferred: Vec<(String, String)>,
    /// Username generation.
    pub usernames: UsernameSummary,
}

impl MembershipSummary {
    /// Changes made on the backend (the drift corrected).
    pub fn backend_changes(&self) -> usize {
        self.users_added
            + self.users_removed
            + self.roles_changed
            + self.access_changed
            + self.user_limits_set
    }

    fn absorb(&mut self, o: ResourceOutcome) {
        self.users_added += o.added;
        self.users_removed += o.removed;
        self.user_failures += o.user_failures;
        self.roles_changed += o.roles_changed;
        self.access_changed += usize::from(o.access_changed);
        self.limits_pushed += usize::from(o.limits_pushed);
        self.metadata_pushed += usize::from(o.metadata_pushed);
        self.user_limits_set += o.user_limits_set;
    }
}

#[derive(Debug, Default)]
struct ResourceOutcome {
    added: usize,
    removed: usize,
    user_failures: usize,
    roles_changed: usize,
    access_changed: bool,
    limits_pushed: bool,
    metadata_pushed: bool,
    user_limits_set: usize,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Waldur(#[from] WaldurError),
    #[error("{0}")]
    Backend(#[from] BackendCallError),
    #[error("the backend has no resource with this backend id")]
    Missing,
}

impl SyncError {
    fn is_temporary(&self) -> bool {
        match self {
            Self::Waldur(e) => e.is_transient(),
            Self::Backend(e) => e.is_retryable(),
            Self::Missing => false,
        }
    }
}

/// Per-user limits: resource uuid → username → component → limit.
type UserLimitMap = HashMap<String, HashMap<String, BTreeMap<String, i64>>>;

/// What a cycle reads once and shares between resources.
struct Cycle {
    usable: crate::team::Usable,
    exposed: Vec<String>,
    plugin_options: Value,
    accounts: Vec<Account>,
    /// resource uuid → username → limits; None when unavailable.
    user_limits: Option<UserLimitMap>,
    teams: Mutex<HashMap<String, Arc<OnceCell<Vec<TeamMember>>>>>,
}

/// Syncs the resources of one offering.
pub struct MembershipProcessor {
    offering: Arc<OfferingConfig>,
    waldur: WaldurClient,
    backend: BackendHandle,
    usernames: Usernames,
    expose_errors: bool,
    /// Last membership statuses reported per resource (sent only on change).
    statuses: std::sync::Mutex<HashMap<String, Vec<Value>>>,
}

impl MembershipProcessor {
    /// A processor for one offering.
    pub fn new(
        offering: Arc<OfferingConfig>,
        waldur: WaldurClient,
        backend: BackendHandle,
        expose_errors: bool,
    ) -> Self {
        let usernames = Usernames::new(
            &offering.offering_uuid,
            waldur.clone(),
            Some(backend.clone()),
            offering.usernames.clone(),
        );
        Self {
            offering,
            waldur,
            backend,
            usernames,
            expose_errors,
            statuses: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Username management of this offering (for `sync-offering-users`).
    pub fn usernames(&self) -> &Usernames {
        &self.usernames
    }

    /// One full cycle over the offering's OK and Erred resources.
    pub async fn run_cycle(&self) -> Result<MembershipSummary, WaldurError> {
        let span =
            tracing::info_span!(parent: None, "membership_cycle", offering = %self.offering.name);
        let result = self.cycle().instrument(span).await;
        if let Ok(s) = &result {
            crate::metrics::membership_changes(
                &self.offering.name,
                s.users_added,
                s.users_removed,
                s.access_changed,
            );
        }
        result
    }

    async fn cycle(&self) -> Result<MembershipSummary, WaldurError> {
        let resources = self
            .waldur
            .resources(
                &self.offering.offering_uuid,
                &["OK", "Erred"],
                &RESOURCE_FIELDS,
            )
            .await?;
        self.sync_resources(resources).await
    }

    /// Syncs the offering's resources in one project (events: a role granted
    /// or revoked, an account created or closed).
    pub async fn sync_project(&self, project_uuid: &str) -> Result<MembershipSummary, WaldurError> {
        let resources = self
            .waldur
            .project_resources(
                &self.offering.offering_uuid,
                project_uuid,
                &["OK", "Erred"],
                &RESOURCE_FIELDS,
            )
            .await?;
        self.sync_resources(resources).await
    }

    /// Syncs one resource by UUID if it is OK or Erred (events: the resource
    /// changed, for example paused).
    pub async fn sync_resource(&self, uuid: &str) -> Result<MembershipSummary, WaldurError> {
        let r = self.waldur.resource(uuid).await?;
        let same_offering = r.offering_uuid.is_empty()
            || crate::orders::same_uuid(&r.offering_uuid, &self.offering.offering_uuid);
        if !same_offering || !(r.state == "OK" || r.state == "Erred") {
            return Ok(MembershipSummary::default());
        }
        self.sync_resources(vec![r]).await
    }

    /// Syncs the offering's resources with these backend ids (events: a
    /// username was set).
    pub async fn sync_backend_ids(
        &self,
        backend_ids: &[String],
    ) -> Result<MembershipSummary, WaldurError> {
        let resources = self
            .waldur
            .resources(
                &self.offering.offering_uuid,
                &["OK", "Erred"],
                &RESOURCE_FIELDS,
            )
            .await?
            .into_iter()
            .filter(|r| backend_ids.contains(&r.backend_id))
            .collect();
        self.sync_resources(resources).await
    }

    /// One username-generation pass over the offering's users.
    pub async fn usernames_pass(&self) -> Result<UsernameSummary, WaldurError> {
        let offering = self
            .waldur
            .provider_offering(&self.offering.offering_uuid, &["plugin_options"])
            .await?;
        let users = self
            .waldur
            .offering_users(&self.offering.offering_uuid)
            .await?;
        Ok(self
            .usernames
            .process(&users, &offering.plugin_options)
            .await)
    }

    /// Syncs the given resources (those without a backend id are skipped).
    pub async fn sync_resources(
        &self,
        resources: Vec<Resource>,
    ) -> Result<MembershipSummary, WaldurError> {
        let resources: Vec<Resource> = resources
            .into_iter()
            .filter(|r| !r.backend_id.is_empty())
            .collect();
        let mut summary = MembershipSummary {
            resources: resources.len(),
            ..Default::default()
        };
        // Usernames first, even without resources: users waiting for an
        // account must not wait for the first allocation.
        let (cycle, usernames) = self.load_cycle().await?;
        summary.usernames = usernames;
        if resources.is_empty() {
            return Ok(summary);
        }
        let limit = self.offering.membership.concurrency.max(1);
        let results: Vec<(Resource, Result<ResourceOutcome, SyncError>)> =
            futures::stream::iter(resources)
                .map(|r| {
                    let cycle = &cycle;
                    async move {
                        let result = self.sync_one(&r, cycle).await;
                        (r, result)
                    }
                })
                .buffer_unordered(limit)
                .collect()
                .await;
        for (r, result) in results {
            match result {
                Ok(o) => {
                    summary.absorb(o);
                    if let Err(e) = self.waldur.refresh_last_sync(&r.uuid).await {
                        tracing::warn!(resource = %r.uuid, error = %e, "refresh_last_sync failed");
                    }
                    if r.state == "Erred" {
                        match self.waldur.set_resource_ok(&r.uuid).await {
                            Ok(()) => {
                                tracing::info!(resource = %r.uuid, "resource recovered");
                                summary.recovered += 1;
                            }
                            Err(e) => {
                                tracing::warn!(resource = %r.uuid, error = %e, "set_as_ok failed")
                            }
                        }
                    }
                }
                Err(SyncError::Missing) => {
                    tracing::warn!(resource = %r.uuid, backend_id = %r.backend_id, "resource missing on the backend; not synced");
                    summary.missing_on_backend.push(r.backend_id.clone());
                }
                Err(e) if e.is_temporary() => {
                    tracing::warn!(resource = %r.uuid, error = %e, "membership sync deferred");
                    summary.deferred.push((r.uuid.clone(), e.to_string()));
                }
                Err(e) => {
                    let message = if self.expose_errors {
                        e.to_string()
                    } else {
                        HIDDEN_ERROR.to_owned()
                    };
                    tracing::error!(resource = %r.uuid, error = %e, "membership sync failed; marking the resource erred");
                    if let Err(w) = self.waldur.set_resource_erred(&r.uuid, &message, "").await {
                        tracing::warn!(resource = %r.uuid, error = %w, "set_as_erred failed");
                    }
                    summary.erred.push((r.uuid.clone(), message));
                }
            }
        }
        Ok(summary)
    }

    async fn load_cycle(&self) -> Result<(Cycle, UsernameSummary), WaldurError> {
        let offering_uuid = &self.offering.offering_uuid;
        let offering = self
            .waldur
            .provider_offering(offering_uuid, &["plugin_options"])
            .await?;
        let mut offering_users = self.waldur.offering_users(offering_uuid).await?;
        let usernames = self
            .usernames
            .process(&offering_users, &offering.plugin_options)
            .await;
        if usernames.changed() {
            offering_users = self.waldur.offering_users(offering_uuid).await?;
        }
        let exposed = match self.waldur.attribute_config(offering_uuid).await {
            Ok(c) => c.exposed_fields,
            Err(e) => {
                tracing::debug!(error = %e, "user attribute config unavailable; using the defaults");
                AttributeConfig::default().exposed_fields
            }
        };
        let mut accounts = Vec::new();
        for (kind, result) in [
            (
                "service accounts",
                self.waldur.service_accounts(offering_uuid).await,
            ),
            (
                "course accounts",
                self.waldur.course_accounts(offering_uuid).await,
            ),
        ] {
            match result {
                Ok(a) => accounts.extend(a),
                Err(e) => tracing::warn!(error = %e, "{kind} unavailable; skipped this cycle"),
            }
        }
        let user_limits = if self
            .backend
            .has(wire::Capability::UserLimits)
            .await
            .unwrap_or(false)
        {
            match self.waldur.user_usage_limits(offering_uuid).await {
                Ok(list) => Some(group_user_limits(list)),
                Err(e) => {
                    tracing::warn!(error = %e, "per-user limits unavailable; skipped this cycle");
                    None
                }
            }
        } else {
            None
        };
        Ok((
            Cycle {
                usable: usable_offering_users(&offering_users),
                exposed,
                plugin_options: offering.plugin_options,
                accounts,
                user_limits,
                teams: Mutex::new(HashMap::new()),
            },
            usernames,
        ))
    }

    async fn team(&self, r: &Resource, cycle: &Cycle) -> Result<Vec<TeamMember>, WaldurError> {
        let cell = cycle
            .teams
            .lock()
            .await
            .entry(normalise_uuid(&r.project_uuid))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.waldur.resource_team(&r.uuid))
            .await
            .cloned()
    }

    async fn sync_one(&self, r: &Resource, cycle: &Cycle) -> Result<ResourceOutcome, SyncError> {
        let id = &r.backend_id;
        let _guard = self.backend.lock(id).await;
        let info = self
            .backend
            .get_resource(id)
            .await?
            .ok_or(SyncError::Missing)?;
        let mut out = ResourceOutcome::default();
        let mut synced_users: Vec<String> = Vec::new();
        if self.backend.has(wire::Capability::Membership).await? {
            synced_users = self.sync_users(r, &info, cycle, &mut out).await?;
        }
        self.sync_access(r, &info, &mut out).await?;
        self.sync_metadata(r, &info, out.access_changed, &mut out)
            .await?;
        let limits: BTreeMap<String, i64> = info.limits.clone().into_iter().collect();
        if !limits.is_empty() && limits != r.limits {
            self.waldur.set_resource_limits(&r.uuid, &limits).await?;
            out.limits_pushed = true;
        }
        if !r.restrict_member_access
            && let Some(all) = &cycle.user_limits
        {
            let empty = HashMap::new();
            let wanted = all.get(&normalise_uuid(&r.uuid)).unwrap_or(&empty);
            self.sync_user_limits(id, &synced_users, wanted, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Adds, removes and reconciles members; returns the members that should
    /// stay (for per-user limits).
    async fn sync_users(
        &self,
        r: &Resource,
        info: &wire::ResourceInfo,
        cycle: &Cycle,
        out: &mut ResourceOutcome,
    ) -> Result<Vec<String>, SyncError> {
        let id = &r.backend_id;
        let current: BTreeSet<&str> = info.users.iter().map(String::as_str).collect();
        if r.restrict_member_access {
            let everyone: Vec<String> = current.iter().map(|u| (*u).to_owned()).collect();
            if !everyone.is_empty() {
                self.remove(id, everyone, out).await?;
            }
            return Ok(Vec::new());
        }
        let team = self.team(r, cycle).await?;
        let mut wanted = team_users(&team, &cycle.usable, &cycle.exposed);
        let project = normalise_uuid(&r.project_uuid);
        for a in cycle
            .accounts
            .iter()
            .filter(|a| a.state == "OK" && !a.username.is_empty())
            .filter(|a| normalise_uuid(&a.project_uuid) == project)
        {
            if !wanted.iter().any(|u| u.username == a.username) {
                wanted.push(wire::User {
                    username: a.username.clone(),
                    ..Default::default()
                });
            }
        }
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|u| u.username.as_str()).collect();
        let new: Vec<wire::User> = wanted
            .iter()
            .filter(|u| !current.contains(u.username.as_str()))
            .cloned()
            .collect();
        let stale: Vec<String> = current
            .iter()
            .filter(|u| !wanted_names.contains(*u))
            .map(|u| (*u).to_owned())
            .collect();
        let existing: Vec<wire::User> = wanted
            .iter()
            .filter(|u| current.contains(u.username.as_str()) && !u.role.is_empty())
            .cloned()
            .collect();

        let mut failures: HashMap<String, String> = HashMap::new();
        if !new.is_empty() {
            let results = self
                .backend
                .add_users(id, new, &self.offering.membership.homedir_umask)
                .await?;
            for res in results {
                match wire::UserOutcome::try_from(res.outcome) {
                    Ok(wire::UserOutcome::Applied) => out.added += 1,
                    Ok(wire::UserOutcome::Failed) => {
                        tracing::warn!(backend_id = %id, user = %res.username, error = %res.message, "user not added");
                        out.user_failures += 1;
                        failures.insert(res.username, res.message);
                    }
                    _ => {}
                }
            }
        }
        if !stale.is_empty() {
            self.remove(id, stale, out).await?;
        }
        if !existing.is_empty()
            && self
                .backend
                .has(wire::Capability::RoleReconciliation)
                .await?
        {
            for res in self.backend.reconcile_user_roles(id, existing).await? {
                match wire::UserOutcome::try_from(res.outcome) {
                    Ok(wire::UserOutcome::Applied) => out.roles_changed += 1,
                    Ok(wire::UserOutcome::Failed) => {
                        tracing::warn!(backend_id = %id, user = %res.username, error = %res.message, "role not reconciled");
                        out.user_failures += 1;
                    }
                    _ => {}
                }
            }
        }
        if cycle
            .plugin_options
            .get("enable_membership_sync_status")
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
        {
            self.report_statuses(r, &wanted, &failures).await;
        }
        Ok(wanted
            .into_iter()
            .map(|u| u.username)
            .filter(|u| !failures.contains_key(u))
            .collect())
    }

    async fn remove(
        &self,
        id: &str,
        usernames: Vec<String>,
        out: &mut ResourceOutcome,
    ) -> Result<(), SyncError> {
        for res in self.backend.remove_users(id, usernames).await? {
            match wire::UserOutcome::try_from(res.outcome) {
                Ok(wire::UserOutcome::Applied) => out.removed += 1,
                Ok(wire::UserOutcome::Failed) => {
                    tracing::warn!(backend_id = %id, user = %res.username, error = %res.message, "user not removed");
                    out.user_failures += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Full-replace status report, sent only when it changed.
    async fn report_statuses(
        &self,
        r: &Resource,
        wanted: &[wire::User],
        failures: &HashMap<String, String>,
    ) {
        let statuses: Vec<Value> = wanted
            .iter()
            .filter(|u| !u.role.is_empty())
            .map(|u| match failures.get(&u.username) {
                Some(m) => json!({"username": u.username, "scope_type": "resource", "role_name": u.role, "state": "error", "message": m}),
                None => json!({"username": u.username, "scope_type": "resource", "role_name": u.role, "state": "synced"}),
            })
            .collect();
        let key = normalise_uuid(&r.uuid);
        let unchanged = self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|last| *last == statuses);
        if unchanged {
            return;
        }
        match self
            .waldur
            .set_membership_sync_statuses(&r.uuid, &statuses)
            .await
        {
            Ok(()) => {
                self.statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, statuses);
            }
            Err(e) => {
                tracing::warn!(resource = %r.uuid, error = %e, "membership sync statuses not reported")
            }
        }
    }

    async fn sync_access(
        &self,
        r: &Resource,
        info: &wire::ResourceInfo,
        out: &mut ResourceOutcome,
    ) -> Result<(), SyncError> {
        let wanted = if r.paused {
            wire::AccessLevel::Paused
        } else if r.downscaled {
            wire::AccessLevel::Downscaled
        } else {
            wire::AccessLevel::Full
        };
        if info.access == wanted as i32 {
            return Ok(());
        }
        let (pause, downscale) = (
            self.backend.has(wire::Capability::Pause).await?,
            self.backend.has(wire::Capability::Downscale).await?,
        );
        let supported = match wanted {
            wire::AccessLevel::Paused => pause,
            wire::AccessLevel::Downscaled => downscale,
            _ => pause || downscale,
        };
        if !supported {
            if wanted != wire::AccessLevel::Full {
                tracing::warn!(resource = %r.uuid, access = wanted.as_str_name(), "the backend cannot apply this access level");
            }
            return Ok(());
        }
        out.access_changed = self
            .backend
            .set_resource_access(&r.backend_id, wanted)
            .await?;
        if out.access_changed {
            tracing::info!(resource = %r.uuid, backend_id = %r.backend_id, access = wanted.as_str_name(), "access level changed");
        }
        Ok(())
    }

    /// Pushes backend metadata merged over Waldur's (keys the backend does not
    /// report, such as credentials or trace ids, stay), only when different.
    async fn sync_metadata(
        &self,
        r: &Resource,
        info: &wire::ResourceInfo,
        refetch: bool,
        out: &mut ResourceOutcome,
    ) -> Result<(), SyncError> {
        if !self.backend.has(wire::Capability::Metadata).await? {
            return Ok(());
        }
        let reported = if refetch {
            self.backend.get_resource_metadata(&r.backend_id).await?
        } else {
            waldur_backend_sdk::convert::struct_to_json(info.metadata.clone())
        };
        if reported.is_empty() {
            return Ok(());
        }
        let current: Map<String, Value> = match &r.backend_metadata {
            Value::Object(o) => o.clone(),
            _ => Map::new(),
        };
        let mut merged = current.clone();
        merged.extend(reported);
        if merged != current {
            self.waldur
                .set_resource_backend_metadata(&r.uuid, &Value::Object(merged))
                .await?;
            out.metadata_pushed = true;
        }
        Ok(())
    }

    async fn sync_user_limits(
        &self,
        id: &str,
        users: &[String],
        wanted: &HashMap<String, BTreeMap<String, i64>>,
        out: &mut ResourceOutcome,
    ) -> Result<(), SyncError> {
        if users.is_empty() {
            return Ok(());
        }
        let current = self.backend.get_user_limits(id).await?;
        for user in users {
            let desired = wanted.get(user);
            let now = current.get(user).filter(|l| !l.is_empty());
            let target = match (desired, now) {
                (Some(d), n) if n != Some(d) => d.clone(),
                (None, Some(_)) => BTreeMap::new(),
                _ => continue,
            };
            match self.backend.set_user_limits(id, user, target).await {
                Ok(()) => out.user_limits_set += 1,
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(backend_id = %id, user = %user, error = %e, "per-user limits not set")
                }
            }
        }
        Ok(())
    }
}

/// Waldur's per-user limits: resource → username → component → whole limit.
fn group_user_limits(list: Vec<UserUsageLimit>) -> UserLimitMap {
    let mut out = UserLimitMap::new();
    for l in list {
        let username = l.username.clone().filter(|u| !u.is_empty()).or_else(|| {
            l.user
                .as_str()
                .filter(|u| !u.is_empty() && !u.starts_with("http"))
                .map(str::to_owned)
        });
        let (Some(username), Some(limit)) = (username, amount(&l.limit)) else {
            tracing::warn!(resource = %l.resource_uuid, component = %l.component_type, "ignoring a per-user limit without username or amount");
            continue;
        };
        out.entry(normalise_uuid(&l.resource_uuid))
            .or_default()
            .entry(username)
            .or_default()
            .insert(l.component_type, limit.trunc() as i64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_limits_group_by_resource_and_user_and_truncate() {
        let list = vec![
            UserUsageLimit {
                resource_uuid: "AA-BB".into(),
                username: Some("ada".into()),
                component_type: "cpu".into(),
                limit: json!("10.9"),
                ..Default::default()
            },
            UserUsageLimit {
                resource_uuid: "aabb".into(),
                user: json!("ada"),
                component_type: "mem".into(),
                limit: json!(5),
                ..Default::default()
            },
            UserUsageLimit {
                resource_uuid: "aabb".into(),
                user: json!("http://waldur/api/users/1/"),
                component_type: "mem".into(),
                limit: json!(5),
                ..Default::default()
            },
        ];
        let g = group_user_limits(list);
        assert_eq!(
            g["aabb"]["ada"],
            BTreeMap::from([("cpu".to_owned(), 10), ("mem".to_owned(), 5)])
        );
        assert_eq!(g["aabb"].len(), 1);
    }
}
