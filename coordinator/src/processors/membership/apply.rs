//! Applying: one resource's plan under its lock, then Waldur's bookkeeping.

use std::collections::HashMap;

use serde_json::{Value, json};
use waldur_backend_api::types::{Outcome, User, UserResult};

use super::plan::{ResourcePlan, differs};
use super::{MembershipProcessor, MembershipSummary, ResourceOutcome, StepError};
use crate::processors::orders::HIDDEN_ERROR;
use waldur_client::ids::Uuid;

/// Counts one user's result: `applied` when the change was made,
/// `failures` and the message when it failed.
fn tally(res: &UserResult, applied: &mut usize, failures: &mut usize) -> Option<String> {
    match &res.outcome {
        Outcome::Applied => {
            *applied += 1;
            None
        }
        Outcome::Unchanged => None,
        Outcome::Failed(e) => {
            *failures += 1;
            Some(e.message.clone())
        }
    }
}

/// What became of one resource, before Waldur hears of it.
pub(super) enum Finished {
    Synced(ResourceOutcome),
    Missing,
    Deferred(String),
    /// Would be marked erred with this error.
    Failed(StepError),
}

impl MembershipProcessor {
    pub(super) async fn apply_owned(&self, plan: ResourcePlan) -> (ResourcePlan, Finished) {
        let finished = match self.apply(&plan).await {
            Ok(o) => Finished::Synced(o),
            Err(e) if e.is_missing() => Finished::Missing,
            Err(e) if e.is_temporary() => Finished::Deferred(e.to_string()),
            Err(e) => Finished::Failed(e),
        };
        (plan, finished)
    }

    /// Applies one resource's plan under its lock.
    async fn apply(&self, plan: &ResourcePlan) -> Result<ResourceOutcome, StepError> {
        if plan.missing {
            return Err(StepError::Missing);
        }
        if let Some(e) = &plan.deferred {
            return Err(StepError::Deferred(e.clone()));
        }
        if let Some(e) = &plan.error {
            return Err(StepError::Failed(e.clone()));
        }
        let Some(id) = &plan.id else {
            return Ok(ResourceOutcome::default());
        };
        let backend_id = &plan.backend_id;
        let session = self.backend.lock(backend_id).await;
        // Another sync changed this resource since the plan was made: the
        // plan may be stale; the next cycle plans afresh.
        if self.generation(backend_id) != plan.generation {
            return Err(StepError::Deferred(
                "changed by another sync since it was planned".into(),
            ));
        }
        let mut out = ResourceOutcome::default();
        let mut failures: HashMap<String, String> = HashMap::new();
        let touched = !plan.new_users.is_empty()
            || !plan.remove.is_empty()
            || plan.access_level.is_some()
            || !plan.user_limits.is_empty();
        if touched {
            self.bump_generation(backend_id);
        }
        if !plan.new_users.is_empty() {
            let umask =
                Some(self.offering.membership.homedir_umask.as_str()).filter(|u| !u.is_empty());
            let results = session.add_users(plan.new_users.clone(), umask).await?;
            for res in results {
                if let Some(e) = tally(&res, &mut out.added, &mut out.user_failures) {
                    tracing::warn!(%backend_id, user = %res.username, error = %e, "user not added");
                    failures.insert(res.username, e);
                }
            }
        }
        if !plan.remove.is_empty() {
            for res in session.remove_users(plan.remove.clone()).await? {
                if let Some(e) = tally(&res, &mut out.removed, &mut out.user_failures) {
                    tracing::warn!(%backend_id, user = %res.username, error = %e, "user not removed");
                }
            }
        }
        if !plan.existing_users.is_empty() {
            for res in session
                .reconcile_user_roles(plan.existing_users.clone())
                .await?
            {
                if let Some(e) = tally(&res, &mut out.roles_changed, &mut out.user_failures) {
                    tracing::warn!(%backend_id, user = %res.username, error = %e, "role not reconciled");
                }
            }
        }
        if plan.report_statuses {
            self.report_statuses(id, &plan.wanted, &failures).await;
        }
        if let Some(level) = plan.access_level {
            out.access_changed = session.set_resource_access(level).await?;
            out.access_reduced = out.access_changed && plan.access_reduced;
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
        if let Some(limits) = plan
            .limits_to_waldur
            .as_ref()
            .filter(|_| !self.waldur.lacks_set_limits())
        {
            match self.waldur.set_resource_limits(id, limits).await {
                Ok(()) => out.limits_pushed = true,
                // An older Waldur cannot take them: done without (the
                // client said so once), the resource is not at fault.
                Err(e) if e.is_missing_endpoint() => {}
                Err(e) => return Err(e.into()),
            }
        }
        for change in &plan.user_limits {
            if failures.contains_key(&change.username) {
                continue;
            }
            match session
                .set_user_limits(&change.username, change.limits.clone())
                .await
            {
                Ok(()) => {
                    out.user_limits_set += 1;
                    out.user_limits_lowered += usize::from(change.lowered);
                }
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(%backend_id, user = %change.username, error = %e, "per-user limits not set")
                }
            }
        }
        Ok(out)
    }

    /// Tells Waldur what became of one resource. `hold_errors`: the breaker
    /// holds erred marks this sync (too many, or it tripped), so a failed
    /// resource waits for the next cycle instead.
    pub(super) async fn finish(
        &self,
        plan: ResourcePlan,
        finished: Finished,
        hold_errors: bool,
        summary: &mut MembershipSummary,
    ) {
        let Some(id) = plan.id.clone() else {
            // Not even a valid id to mark erred: say so and move on.
            let why = plan.error.unwrap_or_default();
            tracing::error!(backend_id = %plan.backend_id, error = %why, "resource with an invalid id; not synced");
            summary.deferred.push((plan.resource, why));
            return;
        };
        match finished {
            Finished::Synced(o) => {
                summary.absorb(&o);
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
            Finished::Missing => {
                tracing::warn!(resource = %id, backend_id = %plan.backend_id, "resource missing on the backend; not synced");
                summary.missing_on_backend.push(plan.backend_id);
            }
            Finished::Deferred(why) => {
                tracing::warn!(resource = %id, reason = %why, "membership sync deferred");
                summary.deferred.push((plan.resource, why));
            }
            Finished::Failed(e) if hold_errors => {
                tracing::warn!(resource = %id, error = %e, "membership sync failed; not marked erred while the breaker holds");
                summary.deferred.push((plan.resource, e.to_string()));
            }
            Finished::Failed(e) => {
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

    /// Full-replace status report, sent only when it changed.
    async fn report_statuses(
        &self,
        id: &Uuid,
        wanted: &[User],
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
