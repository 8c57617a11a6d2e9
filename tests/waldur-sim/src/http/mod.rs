//! HTTP: the Waldur API under `/api/` and the control API under `/_sim/`.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

mod answer;
mod api;
mod control;
mod directory;
mod identities;
mod offering;
mod orders;
mod resources;
mod subscriptions;
mod usage;

pub(crate) use api::api;
pub(crate) use control::control;

use answer::detail;
use control::oidc_token;

use crate::world::norm;
use crate::{Call, Fault, Sim};

pub(crate) fn router(sim: Sim) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

type Params = Vec<(String, String)>;

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn is_uuid(s: &str) -> bool {
    let n = norm(s);
    n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The route of a path, UUIDs replaced, for call counting.
fn route_of(segments: &[&str]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push_str(if is_uuid(s) { "{uuid}" } else { s });
        out.push('/');
    }
    out
}

async fn handle(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let params: Params = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    if let Some(rest) = path.strip_prefix("/_sim/") {
        let (status, value) = control(
            &sim,
            &method,
            rest.trim_end_matches('/'),
            &params,
            body_json,
        );
        return json_response(status, &value);
    }
    if path == "/oidc/token" && method == Method::POST {
        let (status, value) = oidc_token(&sim, &body);
        return json_response(status, &value);
    }
    let Some(api_path) = path.strip_prefix("/api/") else {
        return json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not found."}));
    };
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        *sim.shared
            .user_agent
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ua.to_owned());
    }
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        sim.shared
            .traceparents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tp.to_owned());
    }
    let segments: Vec<&str> = api_path.split('/').filter(|s| !s.is_empty()).collect();
    let route = route_of(&segments);

    // Faults first: they model the network and Waldur's own failures.
    let fault = take_fault(&sim, method.as_str(), &path);
    if let Some(f) = fault.as_ref().filter(|f| !f.after_serving) {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        // A fault of latency only delays the real answer.
        if f.drop || f.body.is_some() || f.status.is_some() {
            return faulty(&sim, &method, &route, body_json, f).await;
        }
    }

    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == format!("Token {}", sim.shared.token)
                || v == format!("Bearer {}", sim.shared.token)
        });
    let legacy = sim.shared.legacy.load(std::sync::atomic::Ordering::SeqCst);
    if authorised && legacy && !waldur_7_has(method.as_str(), &segments) {
        record(&sim, &method, &route, 404, body_json, None);
        let mut resp = Response::new(Body::from(DJANGO_404));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    let (status, mut value, extra_headers) = if !authorised {
        let (s, v) = detail(StatusCode::UNAUTHORIZED, "Invalid token.");
        (s, v, Vec::new())
    } else if legacy && segments.as_slice() == ["version"] {
        (StatusCode::OK, json!({"version": "7.0.7"}), Vec::new())
    } else {
        let mut world = sim.world_untouched();
        api(&mut world, &method, &segments, &params, body_json.as_ref())
    };
    if legacy {
        without_states(&mut value);
    }
    // A new queue must exist on the broker before the agent subscribes.
    let (status, value, extra_headers) = match (method.as_str(), segments.as_slice()) {
        ("POST", ["event-subscriptions", sub, "create_queue"]) if status.is_success() => {
            let broker = sim
                .shared
                .broker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let queue = value["queue_name"].as_str().unwrap_or_default().to_owned();
            match broker {
                Some(b) => match b
                    .set_up_queue(SIM_USER_UUID, &norm(sub), &sim.shared.token, &queue)
                    .await
                {
                    Ok(()) => (status, value, extra_headers),
                    Err(e) => {
                        tracing::warn!(error = %e, "queue not set up on the broker");
                        let (s, v) = detail(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "message broker unavailable",
                        );
                        (s, v, Vec::new())
                    }
                },
                None => (status, value, extra_headers),
            }
        }
        _ => (status, value, extra_headers),
    };
    if let Some(f) = fault.as_ref().filter(|f| f.after_serving) {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        return faulty(&sim, &method, &route, body_json, f).await;
    }
    record(
        &sim,
        &method,
        &route,
        status.as_u16(),
        body_json,
        Some(value.clone()),
    );
    let mut resp = json_response(status, &value);
    for (k, v) in extra_headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Django's page for a route it does not know (DEBUG off).
const DJANGO_404: &str = "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n";

/// Whether Waldur 7.0.7 has the route: not the agent registry, not
/// `set_limits`.
fn waldur_7_has(method: &str, segments: &[&str]) -> bool {
    let registry = segments
        .first()
        .is_some_and(|s| s.starts_with("marketplace-site-agent-"));
    let set_limits = matches!(
        (method, segments),
        ("POST", ["marketplace-provider-resources", _, "set_limits"])
    );
    !registry && !set_limits
}

/// Drops the offering-user states 7.0.7 does not have, from an object, a
/// list or a page of either.
fn without_states(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(without_states),
        Value::Object(o) => {
            if o.contains_key("offering_uuid") && o.contains_key("username") {
                o.remove("state");
            }
            o.remove("offering_user_state");
        }
        _ => {}
    }
}

/// The answer a fault gives instead of Waldur's.
async fn faulty(
    sim: &Sim,
    method: &Method,
    route: &str,
    body_json: Option<Value>,
    f: &Fault,
) -> Response {
    if f.drop {
        record(sim, method, route, 0, body_json, None);
        // A body that fails at once makes hyper abort the connection.
        let stream = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other(
                "connection dropped by fault injection",
            ))
        });
        return Response::new(Body::from_stream(stream));
    }
    if let Some(raw) = &f.body {
        let status = f.status.unwrap_or(200);
        record(sim, method, route, status, body_json, None);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut resp = Response::new(Body::from(raw.clone()));
        *resp.status_mut() = code;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    let status = f.status.unwrap_or(500);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let value = json!({"detail": format!("injected fault {status}")});
    record(sim, method, route, status, body_json, Some(value.clone()));
    json_response(code, &value)
}

fn take_fault(sim: &Sim, method: &str, path: &str) -> Option<Fault> {
    let mut faults = sim.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let index = faults.iter().position(|f| {
        (f.method.is_empty() || f.method.eq_ignore_ascii_case(method))
            && path.contains(&f.path_contains)
    })?;
    let fault = faults[index].clone();
    sim.shared
        .fault_hits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_owned());
    if let Some(times) = faults[index].times.as_mut() {
        *times = times.saturating_sub(1);
        if *times == 0 {
            faults.remove(index);
        }
    }
    Some(fault)
}

fn record(
    sim: &Sim,
    method: &Method,
    route: &str,
    status: u16,
    body: Option<Value>,
    response: Option<Value>,
) {
    let record_bodies = sim.shared.record_bodies;
    let mut calls = sim.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
    if calls.len() >= 200_000 {
        calls.drain(..100_000);
    }
    calls.push(Call {
        method: method.to_string(),
        route: route.to_owned(),
        status,
        body: if record_bodies { body } else { None },
        response: if record_bodies { response } else { None },
    });
}

/// The agent's Waldur user (the vhost of its event queues).
pub const SIM_USER_UUID: &str = "00000000000000000000000000005e1f";
