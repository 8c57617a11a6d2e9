//! Planning: what one sync would change on each resource. Reads only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};
use waldur_backend_api::types::{AccessLevel, Capability, ResourceInfo, User};

use super::{Cycle, MembershipProcessor, StepError};
use crate::processors::team::team_users;
use waldur_client::ids::Uuid;
use waldur_client::ids::uuid_key;
use waldur_client::types::Resource;

/// One member's per-user limits to set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserLimitChange {
    /// The member.
    pub username: String,
    /// The full new limits (empty: cleared).
    pub limits: BTreeMap<String, i64>,
    /// True when an existing member's limit goes down, is cleared or is set
    /// where there was none.
    pub lowered: bool,
}

/// What a sync would change on one resource (and, after the checks, will).
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
    pub(super) id: Option<Uuid>,
    #[serde(skip)]
    pub(super) erred_in_waldur: bool,
    #[serde(skip)]
    pub(super) held_by_breaker: bool,
    /// The resource's sync generation when planned (see `apply`).
    #[serde(skip)]
    pub(super) generation: u64,
    #[serde(skip)]
    pub(super) new_users: Vec<User>,
    #[serde(skip)]
    pub(super) existing_users: Vec<User>,
    /// The team as backend users; kept only for membership statuses.
    #[serde(skip)]
    pub(super) wanted: Vec<User>,
    #[serde(skip)]
    pub(super) access_level: Option<AccessLevel>,
    /// Waldur's and the backend's metadata; kept only when applying may
    /// write it (it differs, or the access level changes).
    #[serde(skip)]
    pub(super) metadata: Option<(Map<String, Value>, Map<String, Value>)>,
    #[serde(skip)]
    pub(super) report_statuses: bool,
    /// Members the backend has and keeps: their home directories are
    /// re-ensured (taken once the page is planned).
    #[serde(skip)]
    pub(super) staying: Vec<String>,
}

impl ResourcePlan {
    /// True when the sync would change nothing here.
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

impl MembershipProcessor {
    /// The plan of one resource; a failure is part of the plan.
    /// `generation` is the resource's sync generation when its backend
    /// state was read.
    pub(super) async fn plan_for(
        &self,
        r: &Resource,
        cycle: &Cycle,
        generation: u64,
    ) -> ResourcePlan {
        let mut plan = ResourcePlan {
            resource: r.uuid.clone(),
            backend_id: r.backend_id.clone(),
            erred_in_waldur: r.state == "Erred",
            generation,
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

    /// Reads what one resource needs and fills its plan.
    async fn plan_one(
        &self,
        r: &Resource,
        cycle: &Cycle,
        plan: &mut ResourcePlan,
    ) -> Result<(), StepError> {
        let id = r.id()?;
        plan.id = Some(id.clone());
        let (info, listed_user_limits) = match cycle.take_listed(&r.backend_id) {
            Some(d) => (d.resource, Some(d.user_limits)),
            None => (
                self.backend
                    .get_resource(&r.backend_id)
                    .await?
                    .ok_or(StepError::Missing)?,
                None,
            ),
        };
        plan.members = info.users.len();
        if self.backend.has(Capability::Membership).await? {
            self.plan_users(r, &id, &info, cycle, plan).await?;
        }
        self.plan_access(r, &info, plan).await?;
        if self.backend.has(Capability::Metadata).await? {
            let reported = info.metadata.clone();
            let current = match &r.backend_metadata {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            plan.metadata_to_waldur = differs(&current, &reported);
            // Kept for applying only when it may be written: it differs,
            // or a new access level changes what the backend reports.
            if plan.metadata_to_waldur || plan.access_level.is_some() {
                plan.metadata = Some((current, reported));
            }
        }
        // The backend's limits are the truth, except for prepaid components:
        // their backend values cover every month the resource runs, Waldur's
        // are per month, and the orders keep them in step.
        let prepaid = if info.limits.is_empty() {
            None
        } else {
            match self.backend.prepaid_components().await {
                Ok(p) => Some(p),
                // Members matter more than limits: only the write-back waits.
                Err(e) => {
                    tracing::warn!(backend_id = %r.backend_id, error = %e, "components unknown; limits not written back this cycle");
                    None
                }
            }
        };
        if let Some(prepaid) = prepaid {
            let mut merged = r.limits.clone();
            merged.extend(
                info.limits
                    .iter()
                    .filter(|(k, _)| !prepaid.contains(*k))
                    .map(|(k, v)| (k.clone(), *v)),
            );
            if merged != r.limits {
                plan.limits_to_waldur = Some(merged);
            }
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
                let wanted = all.get(&uuid_key(&r.uuid)).unwrap_or(&empty);
                let current = match listed_user_limits {
                    Some(l) => l,
                    None => self.backend.get_user_limits(&r.backend_id).await?,
                };
                plan.user_limits = user_limit_changes(&keep, &plan.add, wanted, &current);
            }
        }
        // Only the membership statuses read the whole team after planning;
        // a cycle over many resources does not keep a copy of every team.
        if !plan.report_statuses {
            plan.wanted = Vec::new();
        }
        Ok(())
    }

    /// Members to add, remove and reconcile.
    async fn plan_users(
        &self,
        r: &Resource,
        id: &Uuid,
        info: &ResourceInfo,
        cycle: &Cycle,
        plan: &mut ResourcePlan,
    ) -> Result<(), StepError> {
        let current: BTreeSet<&str> = info.users.iter().map(String::as_str).collect();
        if r.restrict_member_access {
            plan.remove = current.iter().map(|u| (*u).to_owned()).collect();
            return Ok(());
        }
        let team = self.team(r, id, cycle).await?;
        let mut wanted = team_users(&team, &cycle.usable);
        let from_team = wanted.len();
        let project = uuid_key(&r.project_uuid);
        for a in cycle
            .accounts
            .iter()
            .filter(|a| a.state == "OK" && !a.username.is_empty())
            .filter(|a| !project.is_empty() && uuid_key(&a.project_uuid) == project)
        {
            if !wanted.iter().any(|u| u.username == a.username) {
                wanted.push(User::named(a.username.clone()));
            }
        }
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|u| u.username.as_str()).collect();
        plan.new_users = wanted
            .iter()
            .filter(|u| !current.contains(u.username.as_str()))
            .cloned()
            .collect();
        plan.add = plan.new_users.iter().map(|u| u.username.clone()).collect();
        plan.staying = wanted
            .iter()
            .filter(|u| current.contains(u.username.as_str()))
            .map(|u| u.username.clone())
            .collect();
        plan.remove = current
            .iter()
            .filter(|u| !wanted_names.contains(*u))
            .map(|u| (*u).to_owned())
            .collect();
        // Role reconciliation needs who and which role, not the attributes.
        plan.existing_users = wanted
            .iter()
            .filter(|u| current.contains(u.username.as_str()) && !u.role.is_empty())
            .map(|u| User {
                attributes: Default::default(),
                ..u.clone()
            })
            .collect();
        if !plan.existing_users.is_empty()
            && self.backend.has(Capability::RoleReconciliation).await?
        {
            plan.reconcile = plan
                .existing_users
                .iter()
                .map(|u| u.username.clone())
                .collect();
        } else {
            plan.existing_users.clear();
        }
        // No team member with an account (an empty team answer, an empty
        // offering-user list) for a resource that has members is far more
        // often a Waldur bug, a permission change or a proxy's empty answer
        // than a project emptied on purpose: never remove anyone on its
        // strength (service and course accounts do not count as a team).
        if from_team == 0 && !plan.remove.is_empty() && !self.allowing() {
            plan.withheld.push(format!(
                "waldur answered no team member with an account for a resource with {} members; nobody removed (`run --once --allow-destructive` removes them)",
                current.len()
            ));
            plan.remove.clear();
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
        info: &ResourceInfo,
        plan: &mut ResourcePlan,
    ) -> Result<(), StepError> {
        let wanted = if r.paused {
            AccessLevel::Paused
        } else if r.downscaled {
            AccessLevel::Downscaled
        } else {
            AccessLevel::Full
        };
        if info.access == Some(wanted) {
            return Ok(());
        }
        let (pause, downscale) = (
            self.backend.has(Capability::Pause).await?,
            self.backend.has(Capability::Downscale).await?,
        );
        let supported = match wanted {
            AccessLevel::Paused => pause,
            AccessLevel::Downscaled => downscale,
            _ => pause || downscale,
        };
        if !supported {
            if wanted != AccessLevel::Full {
                tracing::warn!(resource = %r.uuid, access = wanted.as_str_name(), "the backend cannot apply this access level");
            }
            return Ok(());
        }
        plan.access = Some(wanted.as_str_name().to_owned());
        plan.access_level = Some(wanted);
        // A reduction is counted only from a level the backend reports: a
        // backend that cannot tell would otherwise count every paused
        // resource again each cycle.
        plan.access_reduced = match info.access {
            Some(AccessLevel::Full) => wanted != AccessLevel::Full,
            Some(AccessLevel::Downscaled) => wanted == AccessLevel::Paused,
            _ => false,
        };
        Ok(())
    }
}

/// Whether merging `reported` over `current` changes anything.
pub(super) fn differs(current: &Map<String, Value>, reported: &Map<String, Value>) -> bool {
    !reported.is_empty() && reported.iter().any(|(k, v)| current.get(k) != Some(v))
}

/// Per-user limit changes for the members that stay: Waldur's limits where
/// they differ from the backend's, and clearing limits Waldur no longer has.
/// A change is "lowered" for a member who is there already when a limit goes
/// down, is cleared, or appears where there was none.
pub(super) fn user_limit_changes(
    users: &[String],
    added: &[String],
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
        let lowered = !added.contains(user)
            && match now {
                None => !target.is_empty(),
                Some(now) => {
                    target.is_empty()
                        || now.iter().any(|(k, v)| target.get(k).is_none_or(|t| t < v))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_clearing_or_newly_limiting_a_member_is_destructive_and_raising_is_not() {
        let current = BTreeMap::from([
            ("a".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
            ("b".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
            ("c".to_owned(), BTreeMap::from([("cpu".to_owned(), 10)])),
        ]);
        let wanted = HashMap::from([
            ("a".to_owned(), BTreeMap::from([("cpu".to_owned(), 5)])),
            ("b".to_owned(), BTreeMap::from([("cpu".to_owned(), 20)])),
            ("d".to_owned(), BTreeMap::from([("cpu".to_owned(), 1)])),
            ("e".to_owned(), BTreeMap::from([("cpu".to_owned(), 1)])),
        ]);
        let users = ["a", "b", "c", "d", "e"].map(str::to_owned);
        let changes = user_limit_changes(&users, &["e".to_owned()], &wanted, &current);
        let lowered: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.username.as_str(), c.lowered))
            .collect();
        assert_eq!(
            lowered,
            vec![
                ("a", true),
                ("b", false),
                ("c", true),
                ("d", true),
                ("e", false)
            ]
        );
    }
}
