//! What each Waldur event means (core spec §7.5). Handlers call the same
//! functions as the polling paths (process one order, sync a resource or a
//! project, a username pass), so an event only decides *when* work happens;
//! every handler is idempotent and a redelivered message is harmless.
//!
//! Messages for states that need no work are dropped without a REST call;
//! malformed bodies are reported as [`Handled::Invalid`] with the reason and
//! acknowledged by the caller (redelivering them would never help).

use serde_json::{Map, Value};

use crate::runner::OfferingRuntime;

/// Order states that need no work (the original's drop list).
const ORDER_STATES_IGNORED: [&str; 7] = [
    "done",
    "erred",
    "pending-consumer",
    "canceled",
    "rejected",
    "pending-project",
    "pending-start-date",
];

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

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, Handled> {
    text(body, key).ok_or_else(|| Handled::Invalid(format!("{key} is missing or not a string")))
}

/// Handles one message of `object_type` for offering `o`.
pub async fn handle(o: &OfferingRuntime, object_type: &str, body: &[u8]) -> Handled {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Handled::Invalid(format!("not JSON: {e}")),
    };
    let Value::Object(body) = value else {
        return Handled::Invalid("the body is not a JSON object".into());
    };
    match dispatch(o, object_type, &body).await {
        Ok(h) | Err(h) => h,
    }
}

async fn dispatch(
    o: &OfferingRuntime,
    object_type: &str,
    body: &Map<String, Value>,
) -> Result<Handled, Handled> {
    let failed = |e: &dyn std::fmt::Display| Handled::Failed(e.to_string());
    let membership = o.membership.as_ref().map(|t| &t.processor);
    match object_type {
        "order" => {
            let uuid = required(body, "order_uuid")?;
            if let Some(state) = text(body, "order_state")
                && ORDER_STATES_IGNORED.contains(&state)
            {
                return Ok(Handled::Dropped(format!("order {uuid} is {state}")));
            }
            let Some(t) = &o.orders else {
                return Ok(Handled::Dropped("order processing is off".into()));
            };
            let outcome = t
                .processor
                .process_by_uuid(uuid)
                .await
                .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!("order {uuid}: {outcome:?}")))
        }
        "user_role" => {
            let project = required(body, "project_uuid")?;
            if text(body, "user_uuid").is_some()
                && !body.get("granted").is_some_and(Value::is_boolean)
            {
                return Err(Handled::Invalid(
                    "granted is missing or not a boolean".into(),
                ));
            }
            let Some(m) = membership else {
                return Ok(Handled::Dropped("membership sync is off".into()));
            };
            let s = match (text(body, "user_uuid"), text(body, "resource_uuid")) {
                (None, Some(resource)) => m.sync_resource(resource).await,
                _ => m.sync_project(project).await,
            }
            .map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "project {project}: {} resources, {} added, {} removed",
                s.resources, s.users_added, s.users_removed
            )))
        }
        "resource" => {
            let uuid = required(body, "resource_uuid")?;
            let Some(m) = membership else {
                return Ok(Handled::Dropped("membership sync is off".into()));
            };
            let s = m.sync_resource(uuid).await.map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "resource {uuid}: {} access changes, {} member changes",
                s.access_changed,
                s.users_added + s.users_removed
            )))
        }
        "service_account" | "course_account" => {
            let project = required(body, "project_uuid")?;
            let action = text(body, "action").unwrap_or("create");
            if action != "create" && action != "delete" {
                return Err(Handled::Invalid(format!("unknown action {action:?}")));
            }
            let Some(m) = membership else {
                return Ok(Handled::Dropped("membership sync is off".into()));
            };
            let s = m.sync_project(project).await.map_err(|e| failed(&e))?;
            Ok(Handled::Done(format!(
                "{object_type} {action}: {} added, {} removed",
                s.users_added, s.users_removed
            )))
        }
        "offering_user" => {
            let action = required(body, "action")?;
            let Some(m) = membership else {
                return Ok(Handled::Dropped("membership sync is off".into()));
            };
            match action {
                "create" | "attribute_update" => {
                    let s = m.usernames_pass().await.map_err(|e| failed(&e))?;
                    Ok(Handled::Done(format!(
                        "offering users: {} assigned, {} pending",
                        s.assigned, s.pending
                    )))
                }
                "username_set" => {
                    let ids: Vec<String> = body
                        .get("resource_backend_ids")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    if ids.is_empty() {
                        return Ok(Handled::Dropped("no resources to add the user to".into()));
                    }
                    let s = m.sync_backend_ids(&ids).await.map_err(|e| failed(&e))?;
                    Ok(Handled::Done(format!(
                        "username set: {} added",
                        s.users_added
                    )))
                }
                "update" | "delete" => Ok(Handled::Dropped(format!("offering user {action}"))),
                other => Err(Handled::Invalid(format!("unknown action {other:?}"))),
            }
        }
        "offering_resources_sync" => {
            let mut done = Vec::new();
            if let Some(m) = membership {
                let s = m.run_cycle().await.map_err(|e| failed(&e))?;
                done.push(format!("{} resources synced", s.resources));
            }
            if let Some(t) = &o.orders {
                let r = t.processor.run_cycle().await.map_err(|e| failed(&e))?;
                done.push(format!("{} orders processed", r.outcomes.len()));
            }
            Ok(Handled::Done(done.join(", ")))
        }
        "resource_periodic_limits" => periodic_limits(o, body).await,
        "importable_resources" => {
            let request = required(body, "backend_resource_request_uuid")?;
            import(o, request).await
        }
        other => Err(Handled::Invalid(format!("unknown object type {other:?}"))),
    }
}

/// Applies periodic settings and always reports the result to the policy.
async fn periodic_limits(
    o: &OfferingRuntime,
    body: &Map<String, Value>,
) -> Result<Handled, Handled> {
    let resource = text(body, "resource_uuid").unwrap_or_default();
    let policy = text(body, "policy_uuid");
    let (success, error, actions) = match (text(body, "backend_id"), text(body, "action")) {
        (Some(id), Some("apply_periodic_settings")) => {
            let settings = body
                .get("settings")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            match &o.orders {
                Some(t) => match t.backend.apply_periodic_settings(id, settings).await {
                    Ok(actions) => (true, String::new(), actions),
                    Err(e) => (false, e.to_string(), Vec::new()),
                },
                None => (false, "order processing is off".to_owned(), Vec::new()),
            }
        }
        _ => (
            false,
            "backend_id missing or action is not apply_periodic_settings".to_owned(),
            Vec::new(),
        ),
    };
    if let Some(policy) = policy
        && let Err(e) = o
            .waldur
            .report_periodic_result(policy, resource, success, &error, &actions)
            .await
    {
        tracing::warn!(error = %e, policy, "periodic settings result not reported");
    }
    if success {
        Ok(Handled::Done(format!(
            "periodic settings: {} actions",
            actions.len()
        )))
    } else {
        Ok(Handled::Failed(error))
    }
}

/// A resource import request (core spec §7.5 IMPORTABLE_RESOURCES): offer
/// every backend resource Waldur does not know, under the project its
/// parent account names, then close the request.
async fn import(o: &OfferingRuntime, request: &str) -> Result<Handled, Handled> {
    let Some(t) = &o.orders else {
        return Ok(Handled::Dropped("order processing is off".into()));
    };
    let w = &o.waldur;
    let failed = |e: &dyn std::fmt::Display| Handled::Failed(e.to_string());
    w.import_request(request).await.map_err(|e| failed(&e))?;
    w.import_request_step(request, "start_processing")
        .await
        .map_err(|e| failed(&e))?;
    let result: Result<usize, String> = async {
        let offering = &o.config.offering_uuid;
        let known: std::collections::HashSet<String> = w
            .resources(offering, &["OK", "Erred", "Creating"], &["backend_id"])
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| r.backend_id)
            .collect();
        let prefix = &o.config.resource_import.project_prefix;
        let mut offered = 0;
        for r in t.backend.list_resources().await.map_err(|e| e.to_string())? {
            if known.contains(&r.backend_id) {
                continue;
            }
            let Some(slug) = r.parent_id.strip_prefix(prefix.as_str()).filter(|s| !s.is_empty())
            else {
                continue;
            };
            let step = async {
                let Some(project) = w.project_by_slug(slug).await? else {
                    return Ok::<bool, crate::waldur::WaldurError>(false);
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
        Err(e) => {
            if let Err(w_err) = w.import_request_erred(request, &e).await {
                tracing::warn!(error = %w_err, "import request not marked erred");
            }
            Ok(Handled::Failed(e))
        }
    }
}
