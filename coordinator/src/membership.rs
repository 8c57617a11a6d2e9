//! Membership sync (core spec §5): make each resource on the backend match
//! Waldur, with Waldur as the source of truth for who and how much access,
//! and the backend as the source of truth for limits and metadata.
//!
//! A cycle runs in two phases so that nothing destructive happens on the
//! strength of an answer that might be wrong:
//!
//! 1. **Plan** (reads only). Once per offering: the resources, the offering
//!    users (after moving open ones through username generation, see
//!    [`crate::usernames`]), the exposed attributes, service and course
//!    accounts and per-user limits; once per project: the team. Then per
//!    resource, concurrently and bounded: `GetResource` (members, limits,
//!    metadata, access level), `GetUserLimits` where needed, and the
//!    difference: members to add, remove and reconcile, the access level,
//!    the limits and metadata Waldur lacks, per-user limits to set.
//! 2. **Check**. An empty team answer never empties an allocation: its
//!    removals are withheld. The blast-radius breaker counts the cycle's
//!    destructive changes of each kind (members removed, accesses reduced,
//!    per-user limits lowered, resources marked erred) against
//!    [`SafetyConfig`]; when one kind exceeds its limit, every destructive
//!    change of the cycle is withheld and the constructive ones go on.
//! 3. **Apply**, per resource under the same per-resource lock as orders:
//!    add, remove, reconcile roles, set the access level, push metadata and
//!    limits to Waldur, set per-user limits; then `refresh_last_sync`, and
//!    `set_as_ok` for a resource that was Erred.
//!
//! The plan is also what `waldur-coordinator plan` prints. A plan computed
//! without the lock can be a moment old when applied; every change is
//! idempotent and the next cycle corrects what moved meanwhile.
//!
//! A steady state costs one backend read and two Waldur calls per resource
//! (team, refresh_last_sync) and changes nothing. A failure marks the
//! resource Erred with the error (as the original), except temporary ones
//! (Waldur 5xx, an unavailable backend), which are retried next cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};
use tonic::Code;
use tracing::Instrument;
use waldur_backend_proto::v1 as wire;

use crate::backend::{BackendCallError, BackendHandle};
use crate::config::{OfferingConfig, SafetyConfig};
use crate::orders::HIDDEN_ERROR;
use crate::team::{normalise_uuid, team_users, usable_offering_users};
use crate::usernames::{UsernameSummary, Usernames};
use crate::waldur::ids::{InvalidUuid, Uuid, same_uuid};
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

/// A kind of destructive change the breaker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destructive {
    /// Members removed from resources.
    MembersRemoved,
    /// Resources paused or downscaled.
    AccessReduced,
    /// Per-user limits lowered or cleared.
    UserLimitsLowered,
    /// Resources marked Erred in Waldur.
    ResourcesErred,
}

impl Destructive {
    /// The metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MembersRemoved => "members_removed",
            Self::AccessReduced => "access_reduced",
            Self::UserLimitsLowered => "user_limits_lowered",
            Self::ResourcesErred => "resources_erred",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::MembersRemoved => "members would be removed",
            Self::AccessReduced => "resources would be paused or downscaled",
            Self::UserLimitsLowered => "per-user limits would be lowered",
            Self::ResourcesErred => "resources would be marked erred",
        }
    }

    fn of_what(self) -> &'static str {
        match self {
            Self::MembersRemoved => "members",
            Self::AccessReduced | Self::ResourcesErred => "resources",
            Self::UserLimitsLowered => "members",
        }
    }
}

/// The breaker's verdict on a cycle that would do too much damage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trip {
    /// The first kind over its limit.
    pub kind: Destructive,
    /// Changes of that kind the cycle would make.
    pub count: usize,
    /// What exists of that kind (members, resources).
    pub existing: usize,
    /// The decision in words, with the commands that help.
    pub message: String,
}

/// One member's per-user limits to set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserLimitChange {
    /// The member.
    pub username: String,
    /// The full new limits (empty: cleared).
    pub limits: BTreeMap<String, i64>,
    /// True when a limit goes down or is cleared.
    pub lowered: bool,
}

/// What a cycle would change on one resource (and, after the check, will).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourcePlan {
    /// Waldur resource UUID.
    pub resource: String,
    /// Backend id.
    pub backend_id: String,
    /// Members the backend has now.
    pub members: usize,
    /// Users to add.
    pub add: Vec<String>,
    /// Users to remove.
    pub remove: Vec<String>,
    /// Existing members whose roles are reconciled.
    pub reconcile: Vec<String>,
    /// The access level to set (`ACCESS_LEVEL_PAUSED` ...), when it changes.
    pub access: Option<String>,
    /// True when that change pauses or downscales.
    pub access_reduced: bool,
    /// Limits written to Waldur (the backend's), when they differ.
    pub limits_to_waldur: Option<BTreeMap<String, i64>>,
    /// Backend metadata written to Waldur, when it differs.
    pub metadata_to_waldur: bool,
    /// Per-user limits to set on the backend.
    pub user_limits: Vec<UserLimitChange>,
    /// Destructive changes held back, and why.
    pub withheld: Vec<String>,
    /// The resource would be marked erred with this message.
    pub error: Option<String>,
    /// A temporary problem: the resource waits for the next cycle.
    pub deferred: Option<String>,
    /// The backend has no resource with this backend id.
    pub missing: bool,
    #[serde(skip)]
    id: Option<Uuid>,
    #[serde(skip)]
    erred_in_waldur: bool,
    #[serde(skip)]
    new_users: Vec<wire::User>,
    #[serde(skip)]
    existing_users: Vec<wire::User>,
    #[serde(skip)]
    wanted: Vec<wire::User>,
    #[serde(skip)]
    access_level: Option<wire::AccessLevel>,
    #[serde(skip)]
    metadata: Option<(Map<String, Value>, Map<String, Value>)>,
    #[serde(skip)]
    report_statuses: bool,
}

impl ResourcePlan {
    /// True when the cycle would change nothing here.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.access.is_none()
            && self.limits_to_waldur.is_none()
            && !self.metadata_to_waldur
            && self.user_limits.is_empty()
            && self.withheld.is_empty()
            && self.error.is_none()
            && self.deferred.is_none()
            && !self.missing
    }
}

/// What one membership cycle would do, for `plan` and the breaker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MembershipPlan {
    /// Resources considered.
    pub resources: usize,
    /// Per resource with something to do.
    pub changes: Vec<ResourcePlan>,
    /// Offering users waiting for a username (assigned by the next cycle).
    pub usernames_pending: usize,
    /// The breaker's verdict.
    pub breaker: Option<Trip>,
}

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
    /// Destructive changes held back: (backend id, why).
    pub withheld: Vec<(String, String)>,
    /// The breaker's verdict, when it tripped.
    pub breaker: Option<Trip>,
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
    #[error("{0}")]
    InvalidId(#[from] InvalidUuid),
    #[error("the backend has no resource with this backend id")]
    Missing,
}

impl SyncError {
    fn is_temporary(&self) -> bool {
        match self {
            Self::Waldur(e) => e.is_transient(),
            Self::Backend(e) => e.is_retryable(),
            Self::InvalidId(_) | Self::Missing => false,
        }
    }

    fn is_missing(&self) -> bool {
        match self {
            Self::Missing => true,
            Self::Backend(e) => {
                e.code == Code::NotFound
                    && e.reason == waldur_backend_proto::reason::RESOURCE_NOT_FOUND
            }
            _ => false,
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
    usernames_pending: usize,
}

/// Whether a sync changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plan, check, apply.
    Apply,
    /// Plan and check only (`waldur-coordinator plan`).
    DryRun,
}

/// Syncs the resources of one offering.
pub struct MembershipProcessor {
    offering: Arc<OfferingConfig>,
    waldur: WaldurClient,
    backend: BackendHandle,
    usernames: Usernames,
    expose_errors: bool,
    /// Lets destructive changes through the breaker and the empty-team
    /// guard (`run --once --allow-destructive`).
    allow_destructive: AtomicBool,
    /// The breaker's last trip, until a full cycle passes.
    last_trip: std::sync::Mutex<Option<Trip>>,
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
            allow_destructive: AtomicBool::new(false),
            last_trip: std::sync::Mutex::new(None),
            statuses: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Username management of this offering (for `sync-offering-users`).
    pub fn usernames(&self) -> &Usernames {
        &self.usernames
    }

    /// Lets destructive changes through the breaker and the empty-team
    /// guard until switched off again (an operator's explicit decision).
    pub fn allow_destructive(&self, allow: bool) {
        self.allow_destructive.store(allow, Ordering::SeqCst);
    }

    /// The breaker's last trip, if the last full cycle tripped it.
    pub fn tripped(&self) -> Option<Trip> {
        self.last_trip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One full cycle over the offering's OK and Erred resources.
    pub async fn run_cycle(&self) -> Result<MembershipSummary, WaldurError> {
        let span =
            tracing::info_span!(parent: None, "membership_cycle", offering = %self.offering.name);
        let result = async {
            let resources = self.offering_resources().await?;
            self.sync_resources(resources).await
        }
        .instrument(span)
        .await;
        if let Ok(s) = &result {
            crate::metrics::membership_changes(
                &self.offering.name,
                s.users_added,
                s.users_removed,
                s.access_changed,
            );
            *self.last_trip.lock().unwrap_or_else(|p| p.into_inner()) = s.breaker.clone();
        }
        result
    }

    /// What a full cycle would change, changing nothing (usernames are not
    /// generated either).
    pub async fn plan(&self) -> Result<MembershipPlan, WaldurError> {
        let resources = self.offering_resources().await?;
        let resources = with_backend_id(resources);
        let cycle = self.load_cycle(Mode::DryRun).await?.0;
        let (plans, trip) = self.plan_resources(&resources, &cycle).await;
        Ok(MembershipPlan {
            resources: resources.len(),
            changes: plans.into_iter().filter(|p| !p.is_empty()).collect(),
            usernames_pending: cycle.usernames_pending,
            breaker: trip,
        })
    }

    async fn offering_resources(&self) -> Result<Vec<Resource>, WaldurError> {
        self.waldur
            .resources(
                &self.offering.offering_uuid,
                &["OK", "Erred"],
                &RESOURCE_FIELDS,
            )
            .await
    }

    /// Syncs the offering's resources in one project (events: a role granted
    /// or revoked, an account created or closed).
    pub async fn sync_project(&self, project: &Uuid) -> Result<MembershipSummary, WaldurError> {
        let resources = self
            .waldur
            .project_resources(
                &self.offering.offering_uuid,
                project,
                &["OK", "Erred"],
                &RESOURCE_FIELDS,
            )
            .await?;
        self.sync_resources(resources).await
    }

    /// Syncs one resource by UUID if it is OK or Erred (events: the resource
    /// changed, for example paused).
    pub async fn sync_resource(&self, uuid: &Uuid) -> Result<MembershipSummary, WaldurError> {
        let r = self.waldur.resource(uuid).await?;
        let same_offering = r.offering_uuid.is_empty()
            || same_uuid(&r.offering_uuid, self.offering.offering_uuid.as_str());
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
            .offering_resources()
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
        let resources = with_backend_id(resources);
        let mut summary = MembershipSummary {
            resources: resources.len(),
            ..Default::default()
        };
        // Usernames first, even without resources: users waiting for an
        // account must not wait for the first allocation.
        let (cycle, usernames) = self.load_cycle(Mode::Apply).await?;
        summary.usernames = usernames;
        if resources.is_empty() {
            return Ok(summary);
        }
        let (plans, trip) = self.plan_resources(&resources, &cycle).await;
        crate::metrics::breaker(&self.offering.name, trip.as_ref().map(|t| t.kind.as_str()));
        if let Some(t) = &trip {
            tracing::error!(
                offering = %self.offering.name,
                kind = t.kind.as_str(),
                count = t.count,
                existing = t.existing,
                "{}",
                t.message
            );
        }
        summary.breaker = trip;
        let limit = self.offering.membership.concurrency.max(1);
        let results: Vec<(ResourcePlan, Result<ResourceOutcome, SyncError>)> =
            futures::stream::iter(plans)
                .map(|plan| self.apply_owned(plan))
                .buffer_unordered(limit)
                .collect()
                .await;
        for (plan, result) in results {
            for why in &plan.withheld {
                summary
                    .withheld
                    .push((plan.backend_id.clone(), why.clone()));
            }
            self.finish(plan, result, &mut summary).await;
        }
        Ok(summary)
    }

    /// Bookkeeping in Waldur after one resource was applied.
    async fn finish(
        &self,
        plan: ResourcePlan,
        result: Result<ResourceOutcome, SyncError>,
        summary: &mut MembershipSummary,
    ) {
        let Some(id) = plan.id.clone() else {
            // Not even a valid id to mark erred: say so and move on.
            let why = plan.error.unwrap_or_default();
            tracing::error!(backend_id = %plan.backend_id, error = %why, "resource with an invalid id; not synced");
            summary.deferred.push((plan.resource, why));
            return;
        };
        match result {
            Ok(o) => {
                summary.absorb(o);
                if let Err(e) = self.waldur.refresh_last_sync(&id).await {
                    tracing::warn!(resource = %id, error = %e, "refresh_last_sync failed");
                }
                if plan.erred_in_waldur {
                    match self.waldur.set_resource_ok(&id).await {
                        Ok(()) => {
                            tracing::info!(resource = %id, "resource recovered");
                            summary.recovered += 1;
                        }
                        Err(e) => tracing::warn!(resource = %id, error = %e, "set_as_ok failed"),
                    }
                }
            }
            Err(e) if e.is_missing() => {
                tracing::warn!(resource = %id, backend_id = %plan.backend_id, "resource missing on the backend; not synced");
                summary.missing_on_backend.push(plan.backend_id);
            }
            Err(e) if e.is_temporary() => {
                tracing::warn!(resource = %id, error = %e, "membership sync deferred");
                summary.deferred.push((plan.resource, e.to_string()));
            }
            Err(e) => {
                if plan
                    .withheld
                    .iter()
                    .any(|w| w.starts_with(BREAKER_WITHHELD))
                {
                    tracing::warn!(resource = %id, error = %e, "membership sync failed; not marked erred while the breaker holds");
                    summary.deferred.push((plan.resource, e.to_string()));
                    return;
                }
                let message = if self.expose_errors {
                    e.to_string()
                } else {
                    HIDDEN_ERROR.to_owned()
                };
                tracing::error!(resource = %id, error = %e, "membership sync failed; marking the resource erred");
                if let Err(w) = self.waldur.set_resource_erred(&id, &message, "").await {
                    tracing::warn!(resource = %id, error = %w, "set_as_erred failed");
                }
                summary.erred.push((plan.resource, message));
            }
        }
    }

    async fn load_cycle(&self, mode: Mode) -> Result<(Cycle, UsernameSummary), WaldurError> {
        let offering_uuid = &self.offering.offering_uuid;
        let offering = self
            .waldur
            .provider_offering(offering_uuid, &["plugin_options"])
            .await?;
        let mut offering_users = self.waldur.offering_users(offering_uuid).await?;
        let usernames = match mode {
            Mode::Apply => {
                self.usernames
                    .process(&offering_users, &offering.plugin_options)
                    .await
            }
            Mode::DryRun => UsernameSummary::default(),
        };
        if usernames.changed() {
            offering_users = self.waldur.offering_users(offering_uuid).await?;
        }
        let usernames_pending = offering_users
            .iter()
            .filter(|u| !u.is_restricted && crate::usernames::is_open(&u.state))
            .count();
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
                usernames_pending,
            },
            usernames,
        ))
    }

    async fn team(
        &self,
        r: &Resource,
        id: &Uuid,
        cycle: &Cycle,
    ) -> Result<Vec<TeamMember>, WaldurError> {
        let cell = cycle
            .teams
            .lock()
            .await
            .entry(normalise_uuid(&r.project_uuid))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.waldur.resource_team(id))
            .await
            .cloned()
    }

    /// Plans every resource, then runs the empty-team guard and the breaker
    /// over the plans.
    async fn plan_resources(
        &self,
        resources: &[Resource],
        cycle: &Cycle,
    ) -> (Vec<ResourcePlan>, Option<Trip>) {
        let limit = self.offering.membership.concurrency.max(1);
        // Indices, not references: a closure over `&Resource` trips the
        // compiler's higher-ranked lifetime check on spawned futures.
        let mut plans: Vec<ResourcePlan> = futures::stream::iter(0..resources.len())
            .map(|i| self.plan_for(&resources[i], cycle))
            .buffered(limit)
            .collect()
            .await;
        let allow = self.allow_destructive.load(Ordering::SeqCst);
        let trip = breaker(&self.offering.safety, &plans).map(|(kind, count, existing)| {
            let message = format!(
                "membership cycle of offering {name}: {count} of {existing} {of} ({kind}) exceed the limit of {max} and {pct} %; {verdict}; `waldur-coordinator plan --offering {name}` shows the changes, `waldur-coordinator run --once --allow-destructive --offering {name}` lets one cycle through",
                name = self.offering.name,
                of = kind.of_what(),
                kind = kind.what(),
                max = self.offering.safety.max_destructive,
                pct = self.offering.safety.max_destructive_percent,
                verdict = if allow {
                    "let through as the operator asked"
                } else {
                    "every destructive change of this cycle is withheld"
                },
            );
            Trip {
                kind,
                count,
                existing,
                message,
            }
        });
        if !allow && let Some(t) = &trip {
            for plan in &mut plans {
                withhold_destructive(plan, &format!("{BREAKER_WITHHELD} ({})", t.kind.as_str()));
            }
        }
        (plans, trip)
    }

    /// The plan of one resource; a failure is part of the plan.
    async fn plan_for(&self, r: &Resource, cycle: &Cycle) -> ResourcePlan {
        let mut plan = ResourcePlan {
            resource: r.uuid.clone(),
            backend_id: r.backend_id.clone(),
            erred_in_waldur: r.state == "Erred",
            ..Default::default()
        };
        match self.plan_one(r, cycle, &mut plan).await {
            Ok(()) => {}
            Err(e) if e.is_missing() => plan.missing = true,
            Err(e) if e.is_temporary() => plan.deferred = Some(e.to_string()),
            Err(e) => plan.error = Some(e.to_string()),
        }
        plan
    }

    /// Reads what one resource needs and fills its plan. Reads only.
    async fn plan_one(
        &self,
        r: &Resource,
        cycle: &Cycle,
        plan: &mut ResourcePlan,
    ) -> Result<(), SyncError> {
        let id = r.id()?;
        plan.id = Some(id.clone());
        let info = self
            .backend
            .get_resource(&r.backend_id)
            .await?
            .ok_or(SyncError::Missing)?;
        plan.members = info.users.len();
        if self.backend.has(wire::Capability::Membership).await? {
            self.plan_users(r, &id, &info, cycle, plan).await?;
        }
        self.plan_access(r, &info, plan).await?;
        if self.backend.has(wire::Capability::Metadata).await? {
            let reported = waldur_backend_sdk::convert::struct_to_json(info.metadata.clone());
            let current = match &r.backend_metadata {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            plan.metadata_to_waldur = differs(&current, &reported);
            plan.metadata = Some((current, reported));
        }
        let limits: BTreeMap<String, i64> = info.limits.clone().into_iter().collect();
        if !limits.is_empty() && limits != r.limits {
            plan.limits_to_waldur = Some(limits);
        }
        if !r.restrict_member_access
            && let Some(all) = &cycle.user_limits
        {
            let keep: Vec<String> = plan
                .wanted
                .iter()
                .map(|u| u.username.clone())
                .filter(|u| !plan.remove.contains(u))
                .collect();
            if !keep.is_empty() {
                let empty = HashMap::new();
                let wanted = all.get(&normalise_uuid(&r.uuid)).unwrap_or(&empty);
                let current = self.backend.get_user_limits(&r.backend_id).await?;
                plan.user_limits = user_limit_changes(&keep, wanted, &current);
            }
        }
        Ok(())
    }

    /// Members to add, remove and reconcile.
    async fn plan_users(
        &self,
        r: &Resource,
        id: &Uuid,
        info: &wire::ResourceInfo,
        cycle: &Cycle,
        plan: &mut ResourcePlan,
    ) -> Result<(), SyncError> {
        let current: BTreeSet<&str> = info.users.iter().map(String::as_str).collect();
        if r.restrict_member_access {
            plan.remove = current.iter().map(|u| (*u).to_owned()).collect();
            return Ok(());
        }
        let team = self.team(r, id, cycle).await?;
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
        plan.new_users = wanted
            .iter()
            .filter(|u| !current.contains(u.username.as_str()))
            .cloned()
            .collect();
        plan.add = plan.new_users.iter().map(|u| u.username.clone()).collect();
        plan.remove = current
            .iter()
            .filter(|u| !wanted_names.contains(*u))
            .map(|u| (*u).to_owned())
            .collect();
        plan.existing_users = wanted
            .iter()
            .filter(|u| current.contains(u.username.as_str()) && !u.role.is_empty())
            .cloned()
            .collect();
        if !plan.existing_users.is_empty()
            && self
                .backend
                .has(wire::Capability::RoleReconciliation)
                .await?
        {
            plan.reconcile = plan
                .existing_users
                .iter()
                .map(|u| u.username.clone())
                .collect();
        } else {
            plan.existing_users.clear();
        }
        // An empty team (or no usable offering user at all) for a resource
        // that has members is far more often a Waldur bug, a permission
        // change or a proxy's empty answer than a project emptied on
        // purpose: never empty an allocation on its strength.
        if wanted.is_empty()
            && !current.is_empty()
            && !self.allow_destructive.load(Ordering::SeqCst)
        {
            plan.remove.clear();
            plan.withheld.push(format!(
                "waldur answered an empty team for a resource with {} members; nobody removed (`run --once --allow-destructive` removes them)",
                current.len()
            ));
        }
        plan.report_statuses = cycle
            .plugin_options
            .get("enable_membership_sync_status")
            .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        plan.wanted = wanted;
        Ok(())
    }

    async fn plan_access(
        &self,
        r: &Resource,
        info: &wire::ResourceInfo,
        plan: &mut ResourcePlan,
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
        plan.access = Some(wanted.as_str_name().to_owned());
        plan.access_level = Some(wanted);
        plan.access_reduced = wanted != wire::AccessLevel::Full
            && !(wanted == wire::AccessLevel::Downscaled
                && info.access == wire::AccessLevel::Paused as i32);
        Ok(())
    }

    async fn apply_owned(
        &self,
        plan: ResourcePlan,
    ) -> (ResourcePlan, Result<ResourceOutcome, SyncError>) {
        let result = self.apply(&plan).await;
        (plan, result)
    }

    /// Applies one resource's plan under its lock.
    async fn apply(&self, plan: &ResourcePlan) -> Result<ResourceOutcome, SyncError> {
        if plan.missing {
            return Err(SyncError::Missing);
        }
        if let Some(e) = &plan.deferred {
            return Err(SyncError::Backend(BackendCallError {
                backend: self.backend.name().to_owned(),
                rpc: "GetResource",
                code: Code::Unavailable,
                reason: String::new(),
                message: e.clone(),
                metadata: HashMap::new(),
            }));
        }
        if let Some(e) = &plan.error {
            return Err(SyncError::Backend(BackendCallError {
                backend: self.backend.name().to_owned(),
                rpc: "GetResource",
                code: Code::Internal,
                reason: String::new(),
                message: e.clone(),
                metadata: HashMap::new(),
            }));
        }
        let Some(id) = &plan.id else {
            return Ok(ResourceOutcome::default());
        };
        let backend_id = &plan.backend_id;
        let _guard = self.backend.lock(backend_id).await;
        let mut out = ResourceOutcome::default();
        let mut failures: HashMap<String, String> = HashMap::new();
        if !plan.new_users.is_empty() {
            let results = self
                .backend
                .add_users(
                    backend_id,
                    plan.new_users.clone(),
                    &self.offering.membership.homedir_umask,
                )
                .await?;
            for res in results {
                match wire::UserOutcome::try_from(res.outcome) {
                    Ok(wire::UserOutcome::Applied) => out.added += 1,
                    Ok(wire::UserOutcome::Failed) => {
                        tracing::warn!(%backend_id, user = %res.username, error = %res.message, "user not added");
                        out.user_failures += 1;
                        failures.insert(res.username, res.message);
                    }
                    _ => {}
                }
            }
        }
        if !plan.remove.is_empty() {
            for res in self
                .backend
                .remove_users(backend_id, plan.remove.clone())
                .await?
            {
                match wire::UserOutcome::try_from(res.outcome) {
                    Ok(wire::UserOutcome::Applied) => out.removed += 1,
                    Ok(wire::UserOutcome::Failed) => {
                        tracing::warn!(%backend_id, user = %res.username, error = %res.message, "user not removed");
                        out.user_failures += 1;
                    }
                    _ => {}
                }
            }
        }
        if !plan.existing_users.is_empty() {
            for res in self
                .backend
                .reconcile_user_roles(backend_id, plan.existing_users.clone())
                .await?
            {
                match wire::UserOutcome::try_from(res.outcome) {
                    Ok(wire::UserOutcome::Applied) => out.roles_changed += 1,
                    Ok(wire::UserOutcome::Failed) => {
                        tracing::warn!(%backend_id, user = %res.username, error = %res.message, "role not reconciled");
                        out.user_failures += 1;
                    }
                    _ => {}
                }
            }
        }
        if plan.report_statuses {
            self.report_statuses(id, &plan.wanted, &failures).await;
        }
        if let Some(level) = plan.access_level {
            out.access_changed = self.backend.set_resource_access(backend_id, level).await?;
            if out.access_changed {
                tracing::info!(resource = %id, %backend_id, access = level.as_str_name(), "access level changed");
            }
        }
        if let Some((current, reported)) = &plan.metadata {
            // A new access level changes what the backend reports.
            let reported = if out.access_changed {
                self.backend.get_resource_metadata(backend_id).await?
            } else {
                reported.clone()
            };
            if differs(current, &reported) {
                let mut merged = current.clone();
                merged.extend(reported);
                self.waldur
                    .set_resource_backend_metadata(id, &Value::Object(merged))
                    .await?;
                out.metadata_pushed = true;
            }
        }
        if let Some(limits) = &plan.limits_to_waldur {
            self.waldur.set_resource_limits(id, limits).await?;
            out.limits_pushed = true;
        }
        for change in &plan.user_limits {
            if failures.contains_key(&change.username) {
                continue;
            }
            match self
                .backend
                .set_user_limits(backend_id, &change.username, change.limits.clone())
                .await
            {
                Ok(()) => out.user_limits_set += 1,
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(%backend_id, user = %change.username, error = %e, "per-user limits not set")
                }
            }
        }
        Ok(out)
    }

    /// Full-replace status report, sent only when it changed.
    async fn report_statuses(
        &self,
        id: &Uuid,
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
        let key = id.to_string();
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
            .set_membership_sync_statuses(id, &statuses)
            .await
        {
            Ok(()) => {
                self.statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, statuses);
            }
            Err(e) => {
                tracing::warn!(resource = %id, error = %e, "membership sync statuses not reported")
            }
        }
    }
}

/// The prefix of every reason the breaker withholds a change for.
const BREAKER_WITHHELD: &str = "withheld by the blast-radius breaker";

fn with_backend_id(resources: Vec<Resource>) -> Vec<Resource> {
    resources
        .into_iter()
        .filter(|r| !r.backend_id.is_empty())
        .collect()
}

/// Whether merging `reported` over `current` changes anything.
fn differs(current: &Map<String, Value>, reported: &Map<String, Value>) -> bool {
    !reported.is_empty() && reported.iter().any(|(k, v)| current.get(k) != Some(v))
}

/// The first kind of destructive change over its limit: (kind, count,
/// existing).
fn breaker(safety: &SafetyConfig, plans: &[ResourcePlan]) -> Option<(Destructive, usize, usize)> {
    let members: usize = plans.iter().map(|p| p.members).sum();
    let resources = plans.len();
    let counts = [
        (
            Destructive::MembersRemoved,
            plans.iter().map(|p| p.remove.len()).sum::<usize>(),
            members,
        ),
        (
            Destructive::AccessReduced,
            plans.iter().filter(|p| p.access_reduced).count(),
            resources,
        ),
        (
            Destructive::UserLimitsLowered,
            plans
                .iter()
                .map(|p| p.user_limits.iter().filter(|c| c.lowered).count())
                .sum(),
            members,
        ),
        (
            Destructive::ResourcesErred,
            plans.iter().filter(|p| p.error.is_some()).count(),
            resources,
        ),
    ];
    counts
        .into_iter()
        .find(|(_, count, existing)| safety.exceeded(*count, *existing))
}

/// Takes the destructive changes out of a plan, noting why.
fn withhold_destructive(plan: &mut ResourcePlan, why: &str) {
    let mut held = Vec::new();
    if !plan.remove.is_empty() {
        held.push(format!("removing {}", plan.remove.join(", ")));
        plan.remove.clear();
    }
    if plan.access_reduced {
        held.push(format!(
            "setting {}",
            plan.access.take().unwrap_or_default()
        ));
        plan.access_level = None;
        plan.access_reduced = false;
    }
    let lowered: Vec<String> = plan
        .user_limits
        .iter()
        .filter(|c| c.lowered)
        .map(|c| c.username.clone())
        .collect();
    if !lowered.is_empty() {
        held.push(format!("lowering the limits of {}", lowered.join(", ")));
        plan.user_limits.retain(|c| !c.lowered);
    }
    if plan.error.is_some() {
        held.push("marking the resource erred".into());
    }
    if !held.is_empty() {
        plan.withheld.push(format!("{why}: {}", held.join("; ")));
    }
}

/// Per-user limit changes for the members that stay: Waldur's limits where
/// they differ from the backend's, and clearing limits Waldur no longer has.
fn user_limit_changes(
    users: &[String],
    wanted: &HashMap<String, BTreeMap<String, i64>>,
    current: &BTreeMap<String, BTreeMap<String, i64>>,
) -> Vec<UserLimitChange> {
    let mut out = Vec::new();
    for user in users {
        let desired = wanted.get(user);
        let now = current.get(user).filter(|l| !l.is_empty());
        let target = match (desired, now) {
            (Some(d), n) if n != Some(d) => d.clone(),
            (None, Some(_)) => BTreeMap::new(),
            _ => continue,
        };
        let lowered = match now {
            None => false,
            Some(now) => {
                target.is_empty() || now.iter().any(|(k, v)| target.get(k).is_none_or(|t| t < v))
            }
        };
        out.push(UserLimitChange {
            username: user.clone(),
            limits: target,
            lowered,
        });
    }
    out
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

    fn plan(members: usize, remove: usize) -> ResourcePlan {
        ResourcePlan {
            members,
            remove: (0..remove).map(|i| format!("u{i}")).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_breaker_trips_only_over_both_the_count_and_the_share() {
        let safety = SafetyConfig::default();
        // 5 removals never trip, whatever the share.
        assert_eq!(breaker(&safety, &[plan(5, 5)]), None);
        // 6 of 100 is 6 %: under the share.
        assert_eq!(breaker(&safety, &[plan(100, 6)]), None);
        // 11 of 100 trips.
        assert_eq!(
            breaker(&safety, &[plan(60, 11), plan(40, 0)]),
            Some((Destructive::MembersRemoved, 11, 100))
        );
    }

    #[test]
    fn withholding_keeps_the_constructive_changes() {
        let mut p = ResourcePlan {
            add: vec!["new".into()],
            remove: vec!["old".into()],
            access: Some("ACCESS_LEVEL_PAUSED".into()),
            access_level: Some(wire::AccessLevel::Paused),
            access_reduced: true,
            user_limits: vec![
                UserLimitChange {
                    username: "a".into(),
                    limits: BTreeMap::new(),
                    lowered: true,
                },
                UserLimitChange {
                    username: "b".into(),
                    limits: BTreeMap::from([("cpu".into(), 9)]),
                    lowered: false,
                },
            ],
            ..Default::default()
        };
        withhold_destructive(&mut p, "held");
        assert_eq!(p.add, vec!["new"]);
        assert!(p.remove.is_empty() && p.access.is_none() && p.access_level.is_none());
        assert_eq!(p.user_limits.len(), 1);
        assert!(p.withheld[0].starts_with("held: removing old; setting ACCESS_LEVEL_PAUSED"));
    }

    #[test]
    fn lowering_or_clearing_a_users_limit_is_destructive_and_raising_is_not() {
        let current = BTreeMap::from([
            ("a".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
            ("b".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
            ("c".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
        ]);
        let wanted = HashMap::from([
            ("a".to_owned(), BTreeMap::from([("cpu".to_owned(), 5)])),
            ("b".to_owned(), BTreeMap::from([("cpu".to_owned(), 20)])),
        ]);
        let users = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let changes = user_limit_changes(&users, &wanted, &current);
        let lowered: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.username.as_str(), c.lowered))
            .collect();
        assert_eq!(lowered, vec![("a", true), ("b", false), ("c", true)]);
    }
}
