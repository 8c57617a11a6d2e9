//! Provider resources: list, read, the agent's writes, team and limits.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::world::{Listed, Refusal, World, norm, uuid_in, uuids};

use super::Params;
use super::answer::{
    ApiAnswer, ok, page_at, params_all, positions_of, query_key, sparse, status_ok, str_field,
};

/// Answers the call if it is one of this family's, else `None`.
pub(super) fn route(
    w: &mut World,
    m: &str,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> Result<Option<ApiAnswer>, Refusal> {
    Ok(Some(match (m, seg) {
        ("GET", ["marketplace-provider-resources"]) => {
            let path = "marketplace-provider-resources/";
            let offerings = uuids(&params_all(params, "offering_uuid"));
            let projects = uuids(&params_all(params, "project_uuid"));
            let states = params_all(params, "state");
            let positions = w.list_positions(Listed::Resources, query_key(path, params), |w| {
                positions_of(w.resources.values(), |r| {
                    (states.is_empty() || states.contains(&r.state.as_str()))
                        && uuid_in(&offerings, &r.offering_uuid)
                        && uuid_in(&projects, &r.project_uuid)
                })
            });
            page_at(&w.resources, &positions, params, path, |r| {
                w.resource_json(r)
            })
        }
        ("GET", ["marketplace-provider-resources", id]) => {
            let r = w
                .resources
                .get(&norm(id))
                .ok_or_else(|| Refusal::NotFound("resource".into()))?;
            ok(sparse(w.resource_json(r), params))
        }
        ("GET", ["marketplace-provider-resources", id, "team"]) => {
            let r = w
                .resources
                .get(&norm(id))
                .ok_or_else(|| Refusal::NotFound("resource".into()))?;
            ok(Value::Array(w.team_json(r)))
        }
        (
            "POST",
            [
                "marketplace-provider-resources",
                id,
                "set_membership_sync_statuses",
            ],
        ) => {
            let key = w.resource_mut(id)?.uuid.clone();
            let statuses = body
                .and_then(|b| b.get("statuses"))
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| Refusal::Invalid("statuses: This field is required.".into()))?;
            for s in &statuses {
                for field in ["username", "scope_type", "role_name", "state"] {
                    if s.get(field).and_then(Value::as_str).is_none() {
                        return Err(Refusal::Invalid(format!(
                            "statuses.{field}: This field is required."
                        )));
                    }
                }
            }
            let stored = statuses.len();
            w.membership_statuses.insert(key, statuses);
            ok(json!({"stored": stored, "skipped": []}))
        }
        ("POST", ["marketplace-provider-resources", id, action]) => {
            let r = w.resource_mut(id)?;
            match *action {
                "set_backend_id" => {
                    r.backend_id = str_field(body, "backend_id").unwrap_or("").to_owned();
                    status_ok("Resource backend_id has been changed.")
                }
                "set_limits" => {
                    let limits = body
                        .and_then(|b| b.get("limits"))
                        .and_then(Value::as_object)
                        .ok_or_else(|| {
                            Refusal::Invalid("limits: This field is required.".into())
                        })?;
                    let mut parsed = BTreeMap::new();
                    for (k, v) in limits {
                        let n = v.as_f64().ok_or_else(|| {
                            Refusal::Invalid(format!("limits.{k}: a number is required"))
                        })?;
                        parsed.insert(k.clone(), n.round() as i64);
                    }
                    r.limits = parsed;
                    status_ok("Resource limits have been changed.")
                }
                "set_backend_metadata" => {
                    let md = body
                        .and_then(|b| b.get("backend_metadata"))
                        .cloned()
                        .ok_or_else(|| {
                            Refusal::Invalid("backend_metadata: This field is required.".into())
                        })?;
                    r.backend_metadata = md;
                    status_ok("Resource backend_metadata has been changed.")
                }
                "set_endpoints" => {
                    let eps = body
                        .and_then(|b| b.get("endpoints"))
                        .and_then(Value::as_array)
                        .cloned()
                        .ok_or_else(|| {
                            Refusal::Invalid("endpoints: This field is required.".into())
                        })?;
                    r.endpoints = eps;
                    status_ok("Resource endpoints have been changed.")
                }
                "set_as_ok" => {
                    r.state = "OK".into();
                    ok(Value::Null)
                }
                "set_as_erred" => {
                    r.state = "Erred".into();
                    r.error_message = str_field(body, "error_message").unwrap_or("").to_owned();
                    ok(Value::Null)
                }
                "refresh_last_sync" => {
                    r.last_sync = Some(jiff::Timestamp::now().to_string());
                    ok(Value::Null)
                }
                _ => return Err(Refusal::NotFound("action".into())),
            }
        }
        _ => return Ok(None),
    }))
}
