//! Membership sync: make each resource on the backend match
//! Waldur, with Waldur as the source of truth for who and how much access,
//! and the backend as the source of truth for limits and metadata.
//!
//! A sync plans, checks, then acts, so nothing destructive happens on the
//! strength of an answer that might be wrong (changes that only add are
//! made page by page as they are planned, see step 3):
//!
//! 1. **Plan** ([`plan`], reads only). Once per offering: the resources,
//!    the offering users (after moving open ones through username
//!    generation, see [`crate::processors::usernames`]), the exposed attributes, service
//!    and course accounts and per-user limits; once per project: the team;
//!    once per page of `membership.page_size` resources, one page at a
//!    time: the backend's bulk read (`ListResourceUsers` with the full
//!    view: members, limits, metadata, access level, per-user limits).
//!    Then per resource, concurrently and bounded: `GetResource` and
//!    `GetUserLimits` only for what the bulk read did not answer, and the
//!    difference: members to add, remove and reconcile, the access
//!    level, the limits and metadata Waldur lacks, per-user limits to set.
//! 2. **Check** ([`breaker`]). No team member with an account for a
//!    resource that has members removes nobody. The blast-radius breaker
//!    counts the destructive changes of each kind (members removed,
//!    accesses reduced, per-user limits lowered, resources marked erred)
//!    against [`crate::config::SafetyConfig`]; when one kind exceeds its limit, every
//!    destructive change of the sync is withheld and the constructive ones
//!    go on. Event-driven syncs are judged against the whole offering,
//!    with what other event syncs did in the last hour.
//! 3. **Apply** ([`apply`]), per resource under the same per-resource lock
//!    as orders: add, remove, reconcile roles, set the access level, push
//!    metadata and limits to Waldur, set per-user limits; then
//!    `refresh_last_sync`, and `set_as_ok` for a resource that was Erred.
//!    A plan with nothing the breaker counts is applied as soon as its page
//!    is planned (the verdict could not change it); the others wait for the
//!    verdict on the whole cycle, and so do the failures of the others (the
//!    verdict says whether they may mark their resources erred). A cycle so
//!    holds one page of plans and those, not a plan per resource.
//!    A resource another sync changed since the plan was made waits for
//!    the next cycle. Erred marks are counted again once known, and held
//!    when there are too many.
//!
//! The plan is also what `waldur-coordinator plan` prints.
//!
//! A steady state costs one backend read per page (per resource, one or
//! two, from a backend without bulk reads) and per resource one Waldur
//! call (refresh_last_sync), plus one team read per project, and changes
//! nothing. A resource missing from the bulk read is confirmed with its own
//! `GetResource` before anything is done about it. A failure marks the
//! resource Erred with the error (as the original), except temporary ones
//! (Waldur 5xx, an unavailable backend), which are retried next cycle.

mod apply;
pub mod breaker;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use waldur_runtime::span;

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};
use tracing::Instrument;
use waldur_backend_api::types::{Capability, Outcome, ResourceDetails};

pub use breaker::{Destructive, Trip};
pub use plan::{ResourcePlan, UserLimitChange};

use self::apply::Finished;
use self::breaker::{Scope, Tally};
use crate::backend::BackendHandle;
use crate::config::OfferingConfig;
use crate::processors::placement::{Followed, Placements};
use crate::processors::step::StepError;
use crate::processors::team::OfferingUserIndex;
use crate::processors::usernames::{UsernameSummary, Usernames};
use waldur_client::ids::uuid_key;
use waldur_client::ids::{Uuid, same_uuid};
use waldur_client::types::{
    Account, AttributeConfig, Resource, TeamMember, UserUsageLimit, amount,
};
use waldur_client::{WaldurClient, WaldurError};

/// Users per CreateHomeDirectories call of a cycle.
const HOMEDIR_BATCH: usize = 200;

/// Resource fields membership sync reads (the original's set, trimmed to
/// what is used).
pub const RESOURCE_FIELDS: [&str; 11] = [
    "uuid",
    "state",
    "backend_id",
    "project_uuid",
    "customer_uuid",
    "end_date",
    "restrict_member_access",
    "backend_metadata",
    "limits",
    "paused",
    "downscaled",
];

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

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembershipSummary {
    /// Resources considered.
    pub resources: usize,
    /// Backend ids Waldur has but the backend does not.
    pub missing_on_backend: Vec<String>,
    /// Backend ids made again by a forced sync.
    pub recreated: Vec<String>,
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
    /// Waldur's changes followed: resources placed under their project and
    /// customer, prepaid ones given limits for a new end date.
    pub followed: Followed,
    /// Home directories of existing members made again (they were gone,
    /// or their creation had failed).
    pub homedirs_created: usize,
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

    fn absorb(&mut self, o: &ResourceOutcome) {
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
    access_reduced: bool,
    limits_pushed: bool,
    metadata_pushed: bool,
    user_limits_set: usize,
    user_limits_lowered: usize,
}

/// What applying plans while planning gathers (see `plan_resources`).
struct Early<'a> {
    summary: &'a mut MembershipSummary,
    /// Users whose home directories were ensured this cycle.
    homedirs_ensured: std::collections::HashSet<String>,
    /// Removed, access reduced, limits lowered, marked erred.
    made: [usize; 4],
    /// Failed applies, finished once the verdict is known.
    failed: Vec<(ResourcePlan, Finished)>,
}

/// Per-user limits: resource uuid → username → component → limit.
type UserLimitMap = HashMap<String, HashMap<String, BTreeMap<String, i64>>>;

/// What a sync reads once and shares between resources.
struct Cycle {
    usable: crate::processors::team::Usable,
    plugin_options: Value,
    accounts: Vec<Account>,
    /// resource uuid → username → limits; None when unavailable.
    user_limits: Option<UserLimitMap>,
    teams: Mutex<HashMap<String, Arc<OnceCell<Vec<TeamMember>>>>>,
    /// Resources per team key not planned yet: a project's team is dropped
    /// once its last resource is planned, so a cycle holds the teams of the
    /// resources in flight, not of the whole offering.
    team_resources_left: std::sync::Mutex<HashMap<String, usize>>,
    usernames_pending: usize,
    /// What the backend's bulk read gave, by backend id; taken out as each
    /// resource is planned. A resource absent here is read on its own.
    listed: std::sync::Mutex<BTreeMap<String, ResourceDetails>>,
}

impl Cycle {
    /// The bulk read's answer for one resource, if it had one.
    fn take_listed(&self, backend_id: &str) -> Option<ResourceDetails> {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(backend_id)
    }
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
    /// What the breaker remembers between syncs.
    breaker: std::sync::Mutex<breaker::State>,
    /// Per backend id, how often a sync changed it (stale plans wait).
    generations: std::sync::Mutex<HashMap<String, u64>>,
    /// Last membership statuses reported per resource (sent only on change).
    statuses: std::sync::Mutex<HashMap<String, Vec<Value>>>,
    /// Where each resource was last seen (project sync).
    placements: Placements,
}

impl MembershipProcessor {
    /// A processor for one offering; `usernames_backend` makes usernames
    /// when it is not the membership backend.
    pub fn new(
        offering: Arc<OfferingConfig>,
        waldur: WaldurClient,
        backend: BackendHandle,
        usernames_backend: Option<BackendHandle>,
        expose_errors: bool,
    ) -> Self {
        let usernames = Usernames::new(
            &offering.offering_uuid,
            waldur.clone(),
            Some(usernames_backend.unwrap_or_else(|| backend.clone())),
            offering.usernames.clone(),
        );
        let placements = Placements::new(
            &offering.offering_uuid,
            waldur.clone(),
            backend.clone(),
            offering.membership.project_sync_hours,
        );
        Self {
            placements,
            offering,
            waldur,
            backend,
            usernames,
            expose_errors,
            allow_destructive: AtomicBool::new(false),
            breaker: std::sync::Mutex::new(breaker::State::default()),
            generations: std::sync::Mutex::new(HashMap::new()),
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

    fn allowing(&self) -> bool {
        self.allow_destructive.load(Ordering::SeqCst)
    }

    /// The standing trip: the last full cycle's, or an event sync's since.
    pub fn tripped(&self) -> Option<Trip> {
        self.breaker_state().trip.clone()
    }

    fn breaker_state(&self) -> std::sync::MutexGuard<'_, breaker::State> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn generation(&self, backend_id: &str) -> u64 {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(backend_id)
            .copied()
            .unwrap_or(0)
    }

    fn bump_generation(&self, backend_id: &str) {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.clear();
        }
        *g.entry(backend_id.to_owned()).or_insert(0) += 1;
    }

    /// One full cycle over the offering's OK and Erred resources.
    pub async fn run_cycle(&self) -> Result<MembershipSummary, WaldurError> {
        let span = tracing::info_span!(parent: None, span::MEMBERSHIP_CYCLE, offering = %self.offering.name);
        let result = async {
            let resources = self.offering_resources().await?;
            self.sync(resources, Scope::Full).await
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
        }
        result
    }

    /// The provider's "sync resources" request (`offering_resources_sync`):
    /// a full cycle, then every resource it found missing on the backend is
    /// made again with its Waldur limits (CreateResource, idempotent) and
    /// synced, which adds its team. A resource is only taken for missing
    /// once the backend's own GetResource said so, so a bulk read that
    /// left it out recreates nothing. A failed recreation marks the resource
    /// erred with the error, as the original does.
    pub async fn run_cycle_recreating(&self) -> Result<MembershipSummary, WaldurError> {
        let mut summary = self.run_cycle().await?;
        let missing = std::mem::take(&mut summary.missing_on_backend);
        if missing.is_empty()
            || !self
                .backend
                .has(Capability::Resources)
                .await
                .unwrap_or(false)
        {
            summary.missing_on_backend = missing;
            return Ok(summary);
        }
        let resources = self.offering_resources().await?;
        let mut recreated = Vec::new();
        for id in missing {
            let Some(uuid) = resources
                .iter()
                .find(|r| r.backend_id == id)
                .and_then(|r| r.id().ok())
            else {
                // Gone from Waldur since, or an id that is no UUID.
                summary.missing_on_backend.push(id);
                continue;
            };
            match self.recreate(&uuid).await {
                Ok(()) => {
                    tracing::info!(resource = %uuid, backend_id = %id, "resource missing on the backend made again");
                    recreated.push(id);
                }
                Err(e) if e.is_temporary() => {
                    tracing::warn!(resource = %uuid, backend_id = %id, error = %e, "resource missing on the backend not made again now; the next sync tries again");
                    summary.missing_on_backend.push(id);
                }
                Err(e) => {
                    tracing::warn!(resource = %uuid, backend_id = %id, error = %e, "resource missing on the backend not made again");
                    let message = if self.expose_errors {
                        e.to_string()
                    } else {
                        "the resource is missing on the backend and could not be made again".into()
                    };
                    if let Err(w) = self.waldur.set_resource_erred(&uuid, &message, "").await {
                        tracing::warn!(resource = %uuid, error = %w, "set_as_erred failed");
                    }
                    summary.erred.push((uuid.to_string(), message));
                    summary.missing_on_backend.push(id);
                }
            }
        }
        if !recreated.is_empty() {
            // What was made stays reported even if adding the teams waits
            // for the next cycle.
            match self.sync_backend_ids(&recreated).await {
                Ok(members) => summary.users_added += members.users_added,
                Err(e) => {
                    tracing::warn!(error = %e, "teams of the resources made again not added; the next cycle adds them")
                }
            }
            summary.recreated = recreated;
        }
        Ok(summary)
    }

    /// Makes one resource again on the backend with its Waldur limits.
    async fn recreate(&self, uuid: &Uuid) -> Result<(), StepError> {
        let r = self.waldur.resource(uuid).await?;
        let context = crate::processors::orders::resource_context(&r, &Default::default());
        let session = self.backend.lock(&r.backend_id).await;
        let created = session
            .create_resource(waldur_backend_api::types::CreateResource {
                resource: context,
                limits: r.limits.clone(),
                ..Default::default()
            })
            .await?;
        if !created.ready {
            return Err(StepError::Deferred(
                "the backend is still making it; the next sync finishes".into(),
            ));
        }
        Ok(())
    }

    /// What a full cycle would change, changing nothing (usernames are not
    /// generated either).
    pub async fn plan(&self) -> Result<MembershipPlan, WaldurError> {
        let resources = with_backend_id(self.offering_resources().await?);
        let cycle = self.load_cycle(Mode::DryRun).await?.0;
        let (plans, _, trip) = self
            .plan_resources(&resources, &cycle, Scope::Full, None)
            .await;
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
        self.sync(resources, Scope::Partial).await
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
        // A resource event may be a move or a renewal: the whole record is
        // at hand.
        let followed = self.placements.follow_one(&r).await;
        let mut summary = self.sync(vec![r], Scope::Partial).await?;
        summary.followed = followed;
        Ok(summary)
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
        self.sync(resources, Scope::Partial).await
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

    /// Plans, checks and applies (resources without a backend id are
    /// skipped).
    async fn sync(
        &self,
        resources: Vec<Resource>,
        scope: Scope,
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
        if scope == Scope::Full {
            summary.followed = self.placements.follow(&resources).await;
        }
        if resources.is_empty() {
            if scope == Scope::Full {
                self.breaker_state()
                    .record(scope, Tally::default(), [0; 4], None);
                self.breaker_gauge();
            }
            return Ok(summary);
        }
        let mut early = Early {
            summary: &mut summary,
            homedirs_ensured: Default::default(),
            made: [0; 4],
            failed: Vec::new(),
        };
        let (plans, planned, trip) = self
            .plan_resources(&resources, &cycle, scope, Some(&mut early))
            .await;
        let Early {
            mut made,
            failed: mut early_failed,
            ..
        } = early;
        // What is left to apply holds what applying needs; the offering's
        // resources and the cycle's indexes are not kept through the writes.
        drop(resources);
        drop(cycle);
        if let Some(t) = &trip {
            self.log_trip(t);
        }
        let limit = self.offering.membership.concurrency.max(1);
        let mut results: Vec<(ResourcePlan, Finished)> = futures::stream::iter(plans)
            .map(|plan| self.apply_owned(plan))
            .buffer_unordered(limit)
            .collect()
            .await;
        results.append(&mut early_failed);
        // Failures known only now count as erred marks too.
        let erring = results
            .iter()
            .filter(|(_, f)| matches!(f, Finished::Failed(_)))
            .count();
        let mut hold_errors = trip.is_some() && !self.allowing();
        if !hold_errors && erring > 0 {
            let after = Tally {
                changes: [0, 0, 0, erring],
                ..planned
            };
            let verdict = self
                .breaker_state()
                .judge(&self.offering.safety, scope, after);
            if let Some(v) = verdict
                && !self.allowing()
            {
                hold_errors = true;
                let t = breaker::message(&self.offering.name, &self.offering.safety, v, false);
                self.log_trip(&t);
                summary.breaker.get_or_insert(t);
            }
        }
        for (plan, finished) in results {
            self.settle(plan, finished, hold_errors, &mut summary, &mut made)
                .await;
        }
        if summary.breaker.is_none() {
            summary.breaker = trip;
        }
        self.breaker_state()
            .record(scope, planned, made, summary.breaker.clone());
        self.breaker_gauge();
        Ok(summary)
    }

    /// Finishes one applied plan: its withheld changes into the summary,
    /// what it made into `made` (removed, access reduced, limits lowered,
    /// marked erred), then [`Self::finish`].
    async fn settle(
        &self,
        plan: ResourcePlan,
        finished: Finished,
        hold_errors: bool,
        summary: &mut MembershipSummary,
        made: &mut [usize; 4],
    ) {
        for why in &plan.withheld {
            summary
                .withheld
                .push((plan.backend_id.clone(), why.clone()));
        }
        if let Finished::Synced(o) = &finished {
            made[0] += o.removed;
            made[1] += usize::from(o.access_reduced);
            made[2] += o.user_limits_lowered;
        }
        if matches!(finished, Finished::Failed(_)) && !hold_errors {
            made[3] += 1;
        }
        self.finish(plan, finished, hold_errors, summary).await;
    }

    /// Applies the plans the breaker does not weigh and finishes them,
    /// keeping failures back until the verdict says whether they may mark
    /// their resources erred.
    async fn apply_early(&self, plans: Vec<ResourcePlan>, early: &mut Early<'_>) {
        let limit = self.offering.membership.concurrency.max(1);
        let results: Vec<(ResourcePlan, Finished)> = futures::stream::iter(plans)
            .map(|plan| self.apply_owned(plan))
            .buffer_unordered(limit)
            .collect()
            .await;
        for (plan, finished) in results {
            if matches!(finished, Finished::Failed(_)) {
                early.failed.push((plan, finished));
            } else {
                self.settle(plan, finished, false, early.summary, &mut early.made)
                    .await;
            }
        }
    }

    fn log_trip(&self, t: &Trip) {
        tracing::error!(
            offering = %self.offering.name,
            kind = t.kind.as_str(),
            count = t.count,
            existing = t.existing,
            decision = %t.message,
            "blast-radius breaker tripped"
        );
    }

    /// The gauge follows the standing trip, as `/readyz` does.
    fn breaker_gauge(&self) {
        let trip = self.tripped();
        crate::metrics::breaker(&self.offering.name, trip.as_ref().map(|t| t.kind.as_str()));
    }

    /// Plans every resource a page at a time, then runs the breaker over
    /// the whole tally. With `early` (a sync, not a dry run), a plan the
    /// breaker does not weigh ([`breaker::weighs`]) is applied as soon as
    /// its page is planned: the verdict could not change it, and a cycle
    /// then holds the plans of one page and the few the breaker judges, not
    /// one per resource. Returns the plans left to apply (every plan, for a
    /// dry run), the tally of all and the trip.
    async fn plan_resources(
        &self,
        resources: &[Resource],
        cycle: &Cycle,
        scope: Scope,
        mut early: Option<&mut Early<'_>>,
    ) -> (Vec<ResourcePlan>, Tally, Option<Trip>) {
        let limit = self.offering.membership.concurrency.max(1);
        // Indices, not references: a closure over `&Resource` trips the
        // compiler's higher-ranked lifetime check on spawned futures.
        cycle.expect_teams(resources);
        // A page of resources at a time: its bulk read, then its plans, so
        // the cycle holds one page of backend answers, not the offering's.
        let mut plans: Vec<ResourcePlan> = Vec::new();
        let mut tally = Tally::default();
        let page = self.offering.membership.page_size.max(1);
        for start in (0..resources.len()).step_by(page) {
            let end = (start + page).min(resources.len());
            // Generations before the read: a sync that changes a resource
            // after it makes this page's answers stale, and its plan waits.
            let generations: Vec<u64> = resources[start..end]
                .iter()
                .map(|r| self.generation(&r.backend_id))
                .collect();
            self.read_listing(&resources[start..end], cycle).await;
            let generations = &generations;
            let planned: Vec<ResourcePlan> = futures::stream::iter(start..end)
                .map(|i| async move {
                    let plan = self
                        .plan_for(&resources[i], cycle, generations[i - start])
                        .await;
                    cycle.planned(&resources[i]).await;
                    plan
                })
                .buffered(limit)
                .collect()
                .await;
            for p in &planned {
                tally.add(p);
            }
            match early.as_deref_mut() {
                Some(early) => {
                    let staying: Vec<String> = planned
                        .iter()
                        .flat_map(|p| p.staying.iter().cloned())
                        .collect();
                    early.summary.homedirs_created += self
                        .ensure_homedirs(staying, &mut early.homedirs_ensured)
                        .await;
                    let (weighed, now): (Vec<_>, Vec<_>) =
                        planned.into_iter().partition(breaker::weighs);
                    plans.extend(weighed);
                    self.apply_early(now, early).await;
                }
                None => plans.extend(planned),
            }
        }
        let allow = self.allowing();
        // Judging remembers nothing: only `record` after applying does, so
        // a dry run leaves no trace in the breaker's memory.
        let verdict = self
            .breaker_state()
            .judge(&self.offering.safety, scope, tally);
        let trip =
            verdict.map(|v| breaker::message(&self.offering.name, &self.offering.safety, v, allow));
        if !allow && let Some(t) = &trip {
            for plan in &mut plans {
                breaker::withhold(
                    plan,
                    &format!("{} ({})", breaker::WITHHELD, t.kind.as_str()),
                );
            }
        }
        (plans, tally, trip)
    }

    /// Re-ensures the home directories of members who stay, once per user
    /// per cycle and in one call per page: a directory whose creation
    /// failed when the user was added (or that was removed since) is made
    /// again. Returns how many were made. Only with
    /// `membership.create_homedirs` and a backend with HOME_DIRECTORIES;
    /// failures are logged and tried again next cycle.
    async fn ensure_homedirs(
        &self,
        users: Vec<String>,
        done: &mut std::collections::HashSet<String>,
    ) -> usize {
        if users.is_empty()
            || !self.offering.membership.create_homedirs
            || !self
                .backend
                .has(Capability::HomeDirectories)
                .await
                .unwrap_or(false)
        {
            return 0;
        }
        let fresh: Vec<String> = users
            .into_iter()
            .filter(|u| done.insert(u.clone()))
            .collect();
        if fresh.is_empty() {
            return 0;
        }
        let umask = Some(self.offering.membership.homedir_umask.as_str()).filter(|u| !u.is_empty());
        let mut made = 0;
        // Bounded calls: a page can hold thousands of members.
        for chunk in fresh.chunks(HOMEDIR_BATCH) {
            made += self.homedir_batch(chunk.to_vec(), umask).await;
        }
        made
    }

    async fn homedir_batch(&self, users: Vec<String>, umask: Option<&str>) -> usize {
        match self.backend.create_home_directories(users, umask).await {
            Ok(results) => {
                let mut made = 0;
                for r in results {
                    match r.outcome {
                        Outcome::Applied => {
                            tracing::info!(user = %r.username, "missing home directory made");
                            made += 1;
                        }
                        Outcome::Failed(e) => tracing::warn!(
                            user = %r.username,
                            error = %e.message,
                            "home directory not made; tried again next cycle"
                        ),
                        Outcome::Unchanged => {}
                    }
                }
                made
            }
            Err(e) => {
                tracing::warn!(error = %e, "home directories not ensured; tried again next cycle");
                0
            }
        }
    }

    /// Reads one page of resources from the backend in one call, so the
    /// backend's load does not grow with the number of resources or the
    /// concurrency. A page that fails, or a backend without bulk reads,
    /// leaves its resources to be read one by one.
    async fn read_listing(&self, resources: &[Resource], cycle: &Cycle) {
        if !self
            .backend
            .has(Capability::Membership)
            .await
            .unwrap_or(false)
        {
            return;
        }
        let ids: Vec<String> = resources.iter().map(|r| r.backend_id.clone()).collect();
        match self.backend.list_resource_details(&ids).await {
            // This page's answers replace the last page's: one a resource
            // never took (it failed before) is not kept all cycle.
            Ok(listing) => {
                *cycle.listed.lock().unwrap_or_else(|p| p.into_inner()) = listing.details;
            }
            Err(e) => {
                cycle
                    .listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                tracing::warn!(resources = ids.len(), error = %e, "ListResourceUsers failed; reading these resources one by one");
            }
        }
    }

    /// The offering's users, read a page at a time into an index.
    async fn offering_user_index(
        &self,
        exposed: &[String],
    ) -> Result<OfferingUserIndex, WaldurError> {
        let mut index = OfferingUserIndex::default();
        self.waldur
            .offering_user_pages(&self.offering.offering_uuid, |page| {
                index.add_page(page, exposed)
            })
            .await?;
        Ok(index)
    }

    async fn load_cycle(&self, mode: Mode) -> Result<(Cycle, UsernameSummary), WaldurError> {
        let offering_uuid = &self.offering.offering_uuid;
        let offering = self
            .waldur
            .provider_offering(offering_uuid, &["plugin_options"])
            .await?;
        let exposed = match self.waldur.attribute_config(offering_uuid).await {
            Ok(c) => c.exposed_fields,
            Err(e) => {
                tracing::debug!(error = %e, "user attribute config unavailable; using the defaults");
                AttributeConfig::default().exposed_fields
            }
        };
        let mut index = self.offering_user_index(&exposed).await?;
        let mut usernames_pending = index.open.len();
        let usernames = match mode {
            Mode::Apply => {
                let open = std::mem::take(&mut index.open);
                let taken = std::mem::take(&mut index.taken);
                self.usernames
                    .process_open(open, taken, &offering.plugin_options)
                    .await
            }
            Mode::DryRun => UsernameSummary::default(),
        };
        if usernames.changed() {
            index = self.offering_user_index(&exposed).await?;
            usernames_pending = index.open.len();
        }
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
            .has(Capability::UserLimits)
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
                usable: index.usable,
                plugin_options: offering.plugin_options,
                accounts,
                user_limits,
                teams: Mutex::new(HashMap::new()),
                team_resources_left: std::sync::Mutex::new(HashMap::new()),
                usernames_pending,
                listed: std::sync::Mutex::new(BTreeMap::new()),
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
        let key = team_key(r);
        let cell = cycle.teams.lock().await.entry(key).or_default().clone();
        cell.get_or_try_init(|| self.waldur.resource_team(id))
            .await
            .cloned()
    }
}

/// The key a resource's team is read and cached under: its project (one
/// read per project); a resource without a project UUID gets its own read
/// rather than another project's team.
fn team_key(r: &Resource) -> String {
    match uuid_key(&r.project_uuid) {
        p if p.is_empty() => format!("resource {}", r.uuid),
        p => p,
    }
}

impl Cycle {
    /// Counts the resources each team is read for.
    fn expect_teams(&self, resources: &[Resource]) {
        let mut left = self
            .team_resources_left
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for r in resources {
            *left.entry(team_key(r)).or_insert(0) += 1;
        }
    }

    /// One resource was planned: its team goes once no other needs it.
    async fn planned(&self, r: &Resource) {
        let key = team_key(r);
        let done = {
            let mut left = self
                .team_resources_left
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match left.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    left.remove(&key);
                    true
                }
                None => false,
            }
        };
        if done {
            self.teams.lock().await.remove(&key);
        }
    }
}

fn with_backend_id(resources: Vec<Resource>) -> Vec<Resource> {
    resources
        .into_iter()
        .filter(|r| !r.backend_id.is_empty())
        .collect()
}

/// The largest per-user limit taken from Waldur (2^53: what a JSON number
/// holds exactly).
const MAX_USER_LIMIT: f64 = 9_007_199_254_740_992.0;

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
        // Refused, never clamped: a limit no backend can hold exactly is
        // left out (the member keeps what they have).
        if !(0.0..=MAX_USER_LIMIT).contains(&limit) {
            tracing::warn!(resource = %l.resource_uuid, component = %l.component_type, limit, "ignoring a per-user limit out of range");
            continue;
        }
        out.entry(uuid_key(&l.resource_uuid))
            .or_default()
            .entry(username)
            .or_default()
            .insert(l.component_type, limit.trunc() as i64);
    }
    out
}

#[cfg(test)]
mod tests;
