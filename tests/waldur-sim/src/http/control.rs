//! The control API under `/_sim/` and the OIDC token endpoint.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Fault, NewOrder, Sim};

use super::Params;
use super::answer::{detail, param, refusal};

/// The OIDC client-credentials token endpoint (`POST /oidc/token`): answers
/// the API token as the access token when the client secret matches.
pub(super) fn oidc_token(sim: &Sim, body: &Bytes) -> (StatusCode, Value) {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let expected = sim
        .shared
        .oidc
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match expected {
        Some((id, secret))
            if form.get("grant_type").map(String::as_str) == Some("client_credentials")
                && form.get("client_id") == Some(&id)
                && form.get("client_secret") == Some(&secret) =>
        {
            (
                StatusCode::OK,
                json!({"access_token": sim.shared.token, "token_type": "Bearer", "expires_in": 300}),
            )
        }
        _ => (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"})),
    }
}

/// The control API.
pub(crate) fn control(
    sim: &Sim,
    method: &Method,
    path: &str,
    params: &Params,
    body: Option<Value>,
) -> (StatusCode, Value) {
    match (method.as_str(), path) {
        ("GET", "state") => (
            StatusCode::OK,
            serde_json::to_value(&*sim.world()).unwrap_or(Value::Null),
        ),
        ("POST", "seed/basic") => {
            let offering = body
                .as_ref()
                .and_then(|b| b.get("offering_uuid"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let team: Vec<(String, String, Option<String>)> = body
                .as_ref()
                .and_then(|b| b.get("team"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            (
                                m["username"].as_str().unwrap_or("user").to_owned(),
                                m["role"].as_str().unwrap_or("PROJECT.MEMBER").to_owned(),
                                m["offering_username"].as_str().map(str::to_owned),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let team_refs: Vec<(&str, &str, Option<&str>)> = team
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_deref()))
                .collect();
            let scenario = sim.seed_basic(offering.as_deref(), &team_refs);
            (
                StatusCode::OK,
                serde_json::to_value(scenario).unwrap_or(Value::Null),
            )
        }
        ("POST", "orders") => {
            let new: NewOrder = match body.map(serde_json::from_value).transpose() {
                Ok(Some(n)) => n,
                Ok(None) => return detail(StatusCode::BAD_REQUEST, "a JSON body is required"),
                Err(e) => return detail(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match sim.create_order(new) {
                Ok(c) => (
                    StatusCode::CREATED,
                    serde_json::to_value(c).unwrap_or(Value::Null),
                ),
                Err(e) => detail(StatusCode::BAD_REQUEST, &e),
            }
        }
        ("POST", "faults") => match body.map(serde_json::from_value::<Fault>) {
            Some(Ok(f)) => {
                sim.add_fault(f);
                (StatusCode::CREATED, json!({"status": "added"}))
            }
            Some(Err(e)) => detail(StatusCode::BAD_REQUEST, &e.to_string()),
            None => detail(StatusCode::BAD_REQUEST, "a JSON body is required"),
        },
        ("DELETE", "faults") => {
            sim.clear_faults();
            (StatusCode::OK, json!({"status": "cleared"}))
        }
        ("GET", "calls") => {
            let calls = sim.calls();
            let mut routes: BTreeMap<String, usize> = BTreeMap::new();
            for c in &calls {
                *routes
                    .entry(format!("{} {}", c.method, c.route))
                    .or_default() += 1;
            }
            let detail = param(params, "detail").is_some();
            (
                StatusCode::OK,
                json!({"total": calls.len(), "routes": routes, "calls": if detail { serde_json::to_value(&calls).unwrap_or(Value::Null) } else { Value::Null }}),
            )
        }
        ("DELETE", "calls") => {
            sim.reset_calls();
            (StatusCode::OK, json!({"status": "cleared"}))
        }
        ("POST", "users") => {
            let Some(username) = body_str(&body, "username").filter(|u| !u.is_empty()) else {
                return detail(StatusCode::BAD_REQUEST, "username is required");
            };
            let email = body_str(&body, "email")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{username}@example.org"));
            let uuid = sim.add_user(username, &email);
            (StatusCode::CREATED, json!({"uuid": uuid}))
        }
        ("POST", "roles") => {
            let (Some(project), Some(user)) = (
                body_str(&body, "project_uuid"),
                body_str(&body, "user_uuid"),
            ) else {
                return detail(
                    StatusCode::BAD_REQUEST,
                    "project_uuid and user_uuid are required",
                );
            };
            let role = body_str(&body, "role").unwrap_or("PROJECT.MEMBER");
            match sim.world().grant_role(project, user, role) {
                Ok(()) => (StatusCode::CREATED, json!({"status": "granted"})),
                Err(r) => refusal(r),
            }
        }
        ("DELETE", "roles") => {
            let (Some(project), Some(user)) = (
                body_str(&body, "project_uuid"),
                body_str(&body, "user_uuid"),
            ) else {
                return detail(
                    StatusCode::BAD_REQUEST,
                    "project_uuid and user_uuid are required",
                );
            };
            sim.revoke_role(project, user);
            (StatusCode::OK, json!({"status": "revoked"}))
        }
        ("POST", "offering-users") => {
            let (Some(offering), Some(user)) = (
                body_str(&body, "offering_uuid"),
                body_str(&body, "user_uuid"),
            ) else {
                return detail(
                    StatusCode::BAD_REQUEST,
                    "offering_uuid and user_uuid are required",
                );
            };
            let state = body_str(&body, "state").unwrap_or("Requested");
            let uuid = sim.add_offering_user(offering, user, state, body_str(&body, "username"));
            (StatusCode::CREATED, json!({"uuid": uuid}))
        }
        ("GET", "usages") => {
            let Some(resource) = param(params, "resource_uuid") else {
                return detail(StatusCode::BAD_REQUEST, "resource_uuid is required");
            };
            (
                StatusCode::OK,
                serde_json::to_value(sim.component_usages(resource)).unwrap_or(Value::Null),
            )
        }
        ("POST", p) if p.starts_with("resources/") && p.ends_with("/flags") => {
            let uuid = p
                .trim_start_matches("resources/")
                .trim_end_matches("/flags");
            let flag = |name: &str| {
                body.as_ref()
                    .and_then(|b| b.get(name))
                    .and_then(Value::as_bool)
            };
            let mut w = sim.world();
            match w.resource_mut(uuid) {
                Ok(r) => {
                    if let Some(v) = flag("paused") {
                        r.paused = v;
                    }
                    if let Some(v) = flag("downscaled") {
                        r.downscaled = v;
                    }
                    (
                        StatusCode::OK,
                        json!({"paused": r.paused, "downscaled": r.downscaled}),
                    )
                }
                Err(r) => refusal(r),
            }
        }
        _ => detail(StatusCode::NOT_FOUND, "unknown control endpoint"),
    }
}

fn body_str<'a>(body: &'a Option<Value>, name: &str) -> Option<&'a str> {
    body.as_ref()
        .and_then(|b| b.get(name))
        .and_then(Value::as_str)
}
