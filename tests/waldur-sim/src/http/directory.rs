//! Resource import, projects and SLURM periodic-usage policies.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::world::{Refusal, World, new_uuid, norm};

use super::Params;
use super::answer::{ApiAnswer, ok, param, required, sparse, str_field};

/// Answers the call if it is one of this family's, else `None`.
pub(super) fn route(
    w: &mut World,
    m: &str,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> Result<Option<ApiAnswer>, Refusal> {
    Ok(Some(match (m, seg) {
        ("GET", ["backend-resource-requests", id]) => {
            let r = w
                .import_requests
                .get(&norm(id))
                .ok_or_else(|| Refusal::NotFound("backend resource request".into()))?;
            ok(r.clone())
        }
        ("POST", ["backend-resource-requests", id, action]) => {
            let r = w
                .import_requests
                .get_mut(&norm(id))
                .ok_or_else(|| Refusal::NotFound("backend resource request".into()))?;
            let (from, to): (&[&str], &str) = match *action {
                "start_processing" => (&["Created"], "Processing"),
                "set_done" => (&["Processing"], "Done"),
                "set_erred" => (&["Created", "Processing"], "Erred"),
                _ => return Err(Refusal::NotFound("action".into())),
            };
            let state = r["state"].as_str().unwrap_or_default().to_owned();
            if !from.contains(&state.as_str()) {
                return Err(Refusal::Invalid(format!("request is {state}")));
            }
            r["state"] = json!(to);
            if *action == "set_erred" {
                r["error_message"] = json!(str_field(body, "error_message").unwrap_or(""));
            }
            ok(Value::Null)
        }
        ("GET", ["backend-resources"]) => {
            let want = |k: &str| param(params, k).map(norm);
            let (id, project, offering) = (
                param(params, "backend_id"),
                want("project_uuid"),
                want("offering_uuid"),
            );
            let items: Vec<Value> = w
                .backend_resources
                .values()
                .filter(|b| id.is_none_or(|i| b["backend_id"] == i))
                .filter(|b| {
                    project
                        .as_ref()
                        .is_none_or(|p| b["project_uuid"] == p.as_str())
                })
                .filter(|b| {
                    offering
                        .as_ref()
                        .is_none_or(|o| b["offering_uuid"] == o.as_str())
                })
                .cloned()
                .collect();
            ok(Value::Array(items))
        }
        ("POST", ["backend-resources"]) => {
            let id_of = |k: &str| {
                required(body, k)
                    .map(|v| norm(v.trim_end_matches('/').rsplit('/').next().unwrap_or(v)))
            };
            let (project, offering) = (id_of("project")?, id_of("offering")?);
            let name = required(body, "name")?;
            let p = w
                .projects
                .get(&project)
                .ok_or_else(|| Refusal::Invalid("project: object does not exist.".into()))?;
            let o = w
                .offerings
                .get(&offering)
                .ok_or_else(|| Refusal::Invalid("offering: object does not exist.".into()))?;
            let uuid = new_uuid();
            let now = jiff::Timestamp::now().to_string();
            let v = json!({
                "url": format!("http://sim/api/backend-resources/{uuid}/"), "uuid": uuid,
                "name": name, "created": now, "modified": now,
                "project": format!("http://sim/api/projects/{project}/"), "project_uuid": project,
                "project_name": p.name, "project_url": format!("http://sim/api/projects/{project}/"),
                "offering": format!("http://sim/api/marketplace-provider-offerings/{offering}/"),
                "offering_uuid": offering, "offering_name": o.name,
                "offering_url": format!("http://sim/api/marketplace-provider-offerings/{offering}/"),
                "backend_id": str_field(body, "backend_id").unwrap_or(""),
                "backend_metadata": body.and_then(|b| b.get("backend_metadata")).cloned().unwrap_or(json!({})),
            });
            w.backend_resources.insert(uuid, v.clone());
            (StatusCode::CREATED, v, Vec::new())
        }
        ("GET", ["projects"]) => {
            let slug = param(params, "slug");
            let items: Vec<Value> = w
                .projects
                .values()
                .filter(|p| slug.is_none_or(|s| p.slug == s))
                .map(|p| json!({"uuid": p.uuid, "url": format!("http://sim/api/projects/{}/", p.uuid), "name": p.name, "slug": p.slug}))
                .map(|v| sparse(v, params))
                .collect();
            ok(Value::Array(items))
        }
        (
            "POST",
            [
                "marketplace-slurm-periodic-usage-policies",
                _,
                "report-command-result",
            ],
        ) => {
            w.periodic_reports
                .push(body.cloned().unwrap_or(Value::Null));
            ok(json!({"status": "ok"}))
        }
        _ => return Ok(None),
    }))
}
