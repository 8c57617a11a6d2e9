//! What each Waldur event means. Handlers call the same
//! functions as the polling paths (process one order, sync a resource or a
//! project, a username pass), so an event only decides *when* work happens;
//! every handler is idempotent and a redelivered message is harmless.
//!
//! Messages for states that need no work are dropped without a REST call;
//! malformed bodies are reported as [`Handled::Invalid`] with the reason and
//! acknowledged by the caller (redelivering them would never help).

use super::body::{Event, PeriodicLimits};
use crate::processors::step::StepError;
use crate::runtime::OfferingRuntime;
use waldur_client::ids::Uuid;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Work was done; a summary for the log.
    Done(String),
    /// Nothing to do for this message.
    Dropped(String),
    /// The body is unusable; the reason.
    Invalid(String),
    /// The work failed; the next event or the reconciliation sweep retries.
    Failed(String),
}

fn failed(e: &dyn std::fmt::Display) -> Handled {
    Handled::Failed(e.to_string())
}

/// Handles one message of `object_type` for offering `o`.
pub async fn handle(o: &OfferingRuntime, object_type: &str, body: &[u8]) -> Handled {
    match Event::parse(object_type, body) {
        Ok(event) => dispatch(o, event).await.unwrap_or_else(|h| h),
        Err(why) => Handled::Invalid(why.to_string()),
    }
}

async fn dispatch(o: &OfferingRuntime, event: Event) -> Result<Handled, Handled> {
    let membership = o.membership.as_ref().map(|t| &t.processor);
    let membership_off = || Ok(Handled::Dropped("membership sync is off".into()));
    match event {
        Event::Order {
            order,
            settled: Some(state),
        } => Ok(Handled::Dropped(format!("order {order} is {state}"))),
        Event::Order {
            order,
            settled: None,
        } => {
            let Some(t) = &o.orders else {
                return Ok(Handled::Dropped("order processing is off".into()));
            };
            let outcome = t
                .processor
                .process_by_uuid(&order)
                .await
                .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!("order {order}: {outcome:?}")))
        }
        Event::UserRole { project, resource } => {
            let Some(m) = membership else {
                return membership_off();
            };
            let s = match &resource {
                Some(resource) => m.sync_resource(resource).await,
                None => m.sync_project(&project).await,
            }
            .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "project {project}: {} resources, {} added, {} removed",
                s.resources, s.users_added, s.users_removed
            )))
        }
        Event::Resource { resource } => {
            let Some(m) = membership else {
                return membership_off();
            };
            let s = m.sync_resource(&resource).await.map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "resource {resource}: {} access changes, {} member changes, {} moved under its project",
                s.access_changed,
                s.users_added + s.users_removed,
                s.followed.moved
            )))
        }
        Event::Account {
            kind,
            action,
            project,
        } => {
            let Some(m) = membership else {
                return membership_off();
            };
            let s = m.sync_project(&project).await.map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "{kind} {action}: {} added, {} removed",
                s.users_added, s.users_removed
            )))
        }
        Event::OfferingUserChanged => {
            let Some(m) = membership else {
                return membership_off();
            };
            let s = m.usernames_pass().await.map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "offering users: {} assigned, {} pending",
                s.assigned, s.pending
            )))
        }
        Event::UsernameSet { backend_ids } => {
            let Some(m) = membership else {
                return membership_off();
            };
            if backend_ids.is_empty() {
                return Ok(Handled::Dropped("no resources to add the user to".into()));
            }
            let s = m
                .sync_backend_ids(&backend_ids)
                .await
                .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "username set: {} added",
                s.users_added
            )))
        }
        Event::OfferingUserOther(action) => Ok(Handled::Dropped(format!("offering user {action}"))),
        Event::OfferingSync => {
            let mut done = Vec::new();
            if let Some(m) = membership {
                let s = m.run_cycle_recreating().await.map_err(|e| failed(&e))?;
                done.push(format!(
                    "{} resources synced, {} made again on the backend",
                    s.resources,
                    s.recreated.len()
                ));
            }
            if let Some(t) = &o.orders {
                let r = t.processor.run_cycle().await.map_err(|e| failed(&e))?;
                done.push(format!("{} orders processed", r.outcomes.len()));
            }
            Ok(Handled::Done(done.join(", ")))
        }
        Event::PeriodicLimits(p) => Ok(periodic_limits(o, p).await),
        Event::ImportRequest { request } => import(o, &request).await,
    }
}

/// Applies periodic settings and reports the result to the policy when the
/// event names both policy and resource (the report needs both).
async fn periodic_limits(o: &OfferingRuntime, p: PeriodicLimits) -> Handled {
    let (success, error, actions) = match (&p.backend_id, p.apply) {
        (Some(id), true) => match &o.orders {
            Some(t) => match t
                .backend
                .lock(id)
                .await
                .apply_periodic_settings(p.settings)
                .await
            {
                Ok(actions) => (true, String::new(), actions),
                Err(e) => (false, e.to_string(), Vec::new()),
            },
            None => (false, "order processing is off".to_owned(), Vec::new()),
        },
        _ => (
            false,
            "backend_id missing or action is not apply_periodic_settings".to_owned(),
            Vec::new(),
        ),
    };
    if let (Some(policy), Some(resource)) = (&p.policy, &p.resource)
        && let Err(e) = o
            .waldur
            .report_periodic_result(policy, resource, success, &error, &actions)
            .await
    {
        tracing::warn!(error = %e, %policy, "periodic settings result not reported");
    }
    if success {
        Handled::Done(format!("periodic settings: {} actions", actions.len()))
    } else {
        Handled::Failed(error)
    }
}

/// A resource import request (IMPORTABLE_RESOURCES): offer
/// every backend resource Waldur does not know, under the project its
/// parent account names, then close the request.
async fn import(o: &OfferingRuntime, request: &Uuid) -> Result<Handled, Handled> {
    let Some(t) = &o.orders else {
        return Ok(Handled::Dropped("order processing is off".into()));
    };
    let w = &o.waldur;
    w.import_request(request).await.map_err(|e| failed(&e))?;
    w.import_request_step(request, "start_processing")
        .await
        .map_err(|e| failed(&e))?;
    let result: Result<usize, StepError> = async {
        let offering = &o.config.offering_uuid;
        let known: std::collections::HashSet<String> = w
            .resources(offering, &["OK", "Erred", "Creating"], &["backend_id"])
            .await?
            .into_iter()
            .map(|r| r.backend_id)
            .collect();
        let prefix = &o.config.resource_import.project_prefix;
        let mut offered = 0;
        for r in t.backend.list_resources().await? {
            if known.contains(&r.backend_id) {
                continue;
            }
            let Some(slug) = r.parent_id.strip_prefix(prefix.as_str()).filter(|s| !s.is_empty())
            else {
                continue;
            };
            let step = async {
                let Some(project) = w.project_by_slug(slug).await? else {
                    return Ok::<bool, waldur_client::WaldurError>(false);
                };
                let Ok(project) = Uuid::parse("project.uuid", &project) else {
                    tracing::warn!(slug, "project with an invalid uuid; resource not offered");
                    return Ok(false);
                };
                if w.backend_resource_exists(&r.backend_id, &project, offering).await? {
                    return Ok(false);
                }
                let mut limits: std::collections::BTreeMap<String, i64> =
                    r.limits.clone().into_iter().collect();
                if limits.is_empty()
                    && let Ok(l) = t.backend.get_resource_limits(&r.backend_id).await
                {
                    limits = l;
                }
                w.create_backend_resource(&r.backend_id, &project, offering, &limits)
                    .await?;
                Ok(true)
            };
            match step.await {
                Ok(true) => offered += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(backend_id = %r.backend_id, error = %e, "importable resource not offered"),
            }
        }
        Ok(offered)
    }
    .await;
    match result {
        Ok(n) => {
            w.import_request_step(request, "set_done")
                .await
                .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!("{n} importable resources offered")))
        }
        // Waldur or the backend unavailable: the request stays open and the
        // next event or sweep tries again.
        Err(e) if e.is_temporary() => Ok(Handled::Failed(e.to_string())),
        Err(e) => {
            let e = e.to_string();
            if let Err(w_err) = w.import_request_erred(request, &e).await {
                tracing::warn!(error = %w_err, "import request not marked erred");
            }
            Ok(Handled::Failed(e))
        }
    }
}
