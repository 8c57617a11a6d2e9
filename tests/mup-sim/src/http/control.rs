//! The control API under `/_sim/`: seeds and inspects state, switches
//! answer shapes, injects faults and lists recorded calls. No
//! authentication: it is for the test harness, never for the backend.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{UsageRequest, to_json};
use crate::{Fault, MupSim, Refusal};

use super::{Answer, parse_body, percent_decode};

/// A partial update of the answer-shape switches.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OptionsPatch {
    flat_members: Option<bool>,
    empty_user_create_answer: Option<bool>,
}

fn answer(status: StatusCode, result: Result<Value, Refusal>) -> Answer {
    match result {
        Ok(v) => Answer::new(status, v),
        Err(r) => r.into(),
    }
}

fn status(text: &str) -> Answer {
    Answer::new(StatusCode::OK, json!({ "status": text }))
}

/// Serves one control request (`rest` is the path below `/_sim/`).
pub(super) fn control(sim: &MupSim, method: &Method, rest: &str, bytes: &Bytes) -> Answer {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let body = if *method == Method::GET || *method == Method::DELETE {
        json!({})
    } else {
        match parse_body(bytes) {
            Ok(b) => b,
            Err(a) => return a,
        }
    };
    let allowed: &[Method] = match segments.as_slice() {
        ["state"] => &[Method::GET, Method::DELETE],
        ["seed" | "projects" | "users" | "allocations" | "members"] => &[Method::POST],
        ["projects", _, "activate" | "deactivate"] => &[Method::POST],
        ["users", _, "approve"] => &[Method::POST],
        ["allocations", _, "usage"] => &[Method::POST],
        ["options"] => &[Method::GET, Method::POST],
        ["faults"] => &[Method::GET, Method::POST, Method::DELETE],
        ["calls"] => &[Method::GET, Method::DELETE],
        _ => return Answer::not_found(),
    };
    if !allowed.contains(method) {
        return Answer::method_not_allowed(method, allowed);
    }
    let id = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Refusal::NotFound("Not found.".into()))
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["state"]) => Answer::new(StatusCode::OK, to_json(&*sim.state())),
        ("DELETE", ["state"]) => {
            sim.reset();
            status("reset")
        }
        (_, ["seed"]) => match sim.seed(&body) {
            Ok(()) => status("seeded"),
            Err(e) => Answer::detail(StatusCode::BAD_REQUEST, &e),
        },
        (_, ["projects"]) => answer(
            StatusCode::CREATED,
            sim.add_project_json(body).map(|p| to_json(&p)),
        ),
        (_, ["projects", p, action]) => answer(
            StatusCode::OK,
            id(p)
                .and_then(|p| sim.set_project_active(p, *action == "activate"))
                .map(|p| to_json(&p)),
        ),
        (_, ["users"]) => answer(
            StatusCode::CREATED,
            sim.add_user_json(body).map(|u| to_json(&u)),
        ),
        (_, ["users", u, _]) => answer(
            StatusCode::OK,
            id(u).and_then(|u| sim.approve_user(u)).map(|u| to_json(&u)),
        ),
        (_, ["allocations"]) => answer(
            StatusCode::CREATED,
            sim.add_allocation_json(body).map(|a| to_json(&a)),
        ),
        (_, ["allocations", identifier, _]) => {
            let Some(identifier) = percent_decode(identifier) else {
                return Answer::not_found();
            };
            let result = UsageRequest::from_value(&body).and_then(|r| {
                sim.state()
                    .set_usage(&identifier, r.users, r.total, r.unit)
                    .map(|u| to_json(&u))
            });
            answer(StatusCode::OK, result)
        }
        (_, ["members"]) => answer(
            StatusCode::CREATED,
            sim.state().seed_member(&body).map(|m| to_json(&m)),
        ),
        ("GET", ["options"]) => Answer::new(StatusCode::OK, to_json(&sim.state().options)),
        (_, ["options"]) => match OptionsPatch::deserialize(&body) {
            Ok(patch) => {
                let mut state = sim.state();
                if let Some(on) = patch.flat_members {
                    state.options.flat_members = on;
                }
                if let Some(on) = patch.empty_user_create_answer {
                    state.options.empty_user_create_answer = on;
                }
                Answer::new(StatusCode::OK, to_json(&state.options))
            }
            Err(e) => Answer::detail(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        ("GET", ["faults"]) => Answer::new(
            StatusCode::OK,
            json!({"faults": sim.faults(), "hits": sim.fault_hits()}),
        ),
        ("POST", ["faults"]) => match Fault::deserialize(&body) {
            Ok(f) => {
                sim.add_fault(f);
                Answer::new(StatusCode::CREATED, json!({"status": "added"}))
            }
            Err(e) => Answer::detail(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (_, ["faults"]) => {
            sim.clear_faults();
            status("cleared")
        }
        ("GET", ["calls"]) => Answer::new(StatusCode::OK, to_json(&sim.calls())),
        (_, ["calls"]) => {
            sim.reset_calls();
            status("cleared")
        }
        _ => Answer::not_found(),
    }
}
