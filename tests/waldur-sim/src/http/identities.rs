//! Site-agent identities and their services.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::world::{Refusal, World, new_uuid, norm};

use super::Params;
use super::answer::{ApiAnswer, ok, page, param, required, str_field};

/// Answers the call if it is one of this family's, else `None`.
pub(super) fn route(
    w: &mut World,
    m: &str,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> Result<Option<ApiAnswer>, Refusal> {
    Ok(Some(match (m, seg) {
        ("GET", ["marketplace-site-agent-identities"]) => {
            let name = param(params, "name");
            let items = w
                .identities
                .values()
                .filter(|i| name.is_none_or(|n| i.name == n))
                .collect();
            page(items, params, "marketplace-site-agent-identities/", |i| {
                identity_json(i)
            })
        }
        ("POST", ["marketplace-site-agent-identities"]) => {
            let name = required(body, "name")?;
            let offering = required(body, "offering")?;
            let now = jiff::Timestamp::now().to_string();
            let i = crate::world::Identity {
                uuid: new_uuid(),
                name: name.to_owned(),
                offering: offering.to_owned(),
                version: str_field(body, "version").map(str::to_owned),
                last_restarted: str_field(body, "last_restarted").map(str::to_owned),
                dependencies: body
                    .and_then(|b| b.get("dependencies"))
                    .cloned()
                    .unwrap_or(Value::Null),
                created: now.clone(),
                modified: now,
            };
            let v = identity_json(&i);
            w.identities.insert(i.uuid.clone(), i);
            (StatusCode::CREATED, v, Vec::new())
        }
        ("PUT", ["marketplace-site-agent-identities", id]) => {
            let i = w
                .identities
                .get_mut(&norm(id))
                .ok_or_else(|| Refusal::NotFound("identity".into()))?;
            i.version = str_field(body, "version").map(str::to_owned);
            i.last_restarted = str_field(body, "last_restarted").map(str::to_owned);
            i.modified = jiff::Timestamp::now().to_string();
            ok(identity_json(i))
        }
        ("POST", ["marketplace-site-agent-identities", id, "register_service"]) => {
            let identity = norm(id);
            if !w.identities.contains_key(&identity) {
                return Err(Refusal::NotFound("identity".into()));
            }
            let name = required(body, "name")?;
            if let Some(s) = w
                .services
                .values()
                .find(|s| s.identity == identity && s.name == name)
            {
                return Ok(Some(ok(service_json(s))));
            }
            let s = crate::world::AgentService {
                uuid: new_uuid(),
                identity,
                name: name.to_owned(),
                mode: str_field(body, "mode").map(str::to_owned),
                processors: Vec::new(),
                created: jiff::Timestamp::now().to_string(),
            };
            let v = service_json(&s);
            w.services.insert(s.uuid.clone(), s);
            (StatusCode::CREATED, v, Vec::new())
        }
        ("POST", ["marketplace-site-agent-services", id, "register_processor"]) => {
            let s = w
                .services
                .get_mut(&norm(id))
                .ok_or_else(|| Refusal::NotFound("service".into()))?;
            let name = required(body, "name")?;
            let backend_type = required(body, "backend_type")?;
            let uuid = new_uuid();
            let now = jiff::Timestamp::now().to_string();
            let processor = json!({
                "uuid": uuid, "url": format!("http://sim/api/marketplace-site-agent-processors/{uuid}/"),
                "name": name, "backend_type": backend_type,
                "backend_version": str_field(body, "backend_version"),
                "service": s.uuid, "service_name": s.name, "created": now, "modified": now,
            });
            if let Some(existing) = s.processors.iter().find(|p| p["name"] == name) {
                return Ok(Some(ok(existing.clone())));
            }
            s.processors.push(processor.clone());
            (StatusCode::CREATED, processor, Vec::new())
        }
        _ => return Ok(None),
    }))
}

fn identity_json(i: &crate::world::Identity) -> Value {
    json!({
        "uuid": i.uuid, "url": format!("http://sim/api/marketplace-site-agent-identities/{}/", i.uuid),
        "name": i.name, "offering": i.offering, "version": i.version, "last_restarted": i.last_restarted,
        "dependencies": i.dependencies, "created": i.created, "modified": i.modified, "services": [],
        "config_file_path": "", "config_file_content": "",
    })
}

fn service_json(s: &crate::world::AgentService) -> Value {
    json!({
        "uuid": s.uuid, "url": format!("http://sim/api/marketplace-site-agent-services/{}/", s.uuid),
        "identity": s.identity, "identity_name": "", "name": s.name, "mode": s.mode, "state": "Active",
        "processors": s.processors, "created": s.created, "modified": s.created,
    })
}
