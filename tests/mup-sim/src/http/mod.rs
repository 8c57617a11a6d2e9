//! HTTP: MUP's API under `/api/` and the control API under `/_sim/`.
//!
//! One fallback handler routes by hand rather than through axum's router:
//! MUP (Django) resolves the path first (404), then authenticates (401),
//! then checks the method (405), then parses the body (400), and the
//! answers must keep that order.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

mod api;
mod auth;
mod control;

use crate::net::Cutter;
use crate::{Call, Fault, MupSim, lock};

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) fn router(sim: MupSim) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// An answer before it becomes a response.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) headers: Vec<(HeaderName, String)>,
}

impl Answer {
    pub(crate) fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub(crate) fn detail(status: StatusCode, detail: &str) -> Self {
        Self::new(status, json!({ "detail": detail }))
    }

    pub(crate) fn not_found() -> Self {
        Self::detail(StatusCode::NOT_FOUND, "Not found.")
    }

    pub(crate) fn method_not_allowed(method: &Method, allowed: &[Method]) -> Self {
        let mut a = Self::detail(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method \"{method}\" not allowed."),
        );
        let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        a.headers.push((header::ALLOW, allow.join(", ")));
        a
    }

    fn into_response(self) -> Response {
        let mut r = json_response(self.status, &self.body);
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

impl From<crate::Refusal> for Answer {
    fn from(r: crate::Refusal) -> Self {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, r.body())
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A request body as JSON: empty is `{}` (as DRF reads it); anything else
/// must parse.
pub(crate) fn parse_body(bytes: &Bytes) -> Result<Value, Answer> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Answer::detail(StatusCode::BAD_REQUEST, &format!("JSON parse error - {e}")))
}

/// Percent-decodes a path segment; `None` when it is not UTF-8 or a `%`
/// escape is malformed.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(State(sim): State<MupSim>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let cutter = parts
        .extensions
        .get::<ConnectInfo<Cutter>>()
        .map(|c| c.0.clone());
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let detail = format!("request body unreadable: {e}");
            return Answer::detail(StatusCode::BAD_REQUEST, &detail).into_response();
        }
    };
    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return control::control(&sim, &parts.method, rest, &bytes).into_response();
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return Answer::not_found().into_response();
    };
    let method = parts.method.clone();
    let request_json: Option<Value> = serde_json::from_slice(&bytes).ok();

    // Faults first: they model the network and MUP's own failures.
    let fault = take_fault(&sim, method.as_str(), path);
    if let Some(f) = fault.as_ref().filter(|f| !f.after_serving) {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if f.answers() {
            return faulty(&sim, &method, path, request_json, f, cutter.as_ref());
        }
    }

    let answer = serve_api(&sim, &method, rest, &parts.headers, &bytes);
    tracing::debug!(%method, path, status = answer.status.as_u16(), "api call");

    if let Some(f) = fault.as_ref().filter(|f| f.after_serving) {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        return faulty(&sim, &method, path, request_json, f, cutter.as_ref());
    }
    record(
        &sim,
        Call {
            method: method.to_string(),
            path: path.to_owned(),
            status: answer.status.as_u16(),
            body: request_json,
            response: Some(answer.body.clone()),
        },
    );
    answer.into_response()
}

/// Resolves, authenticates and serves one API request.
fn serve_api(
    sim: &MupSim,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Answer {
    let Some((route, allowed)) = api::route(rest) else {
        return Answer::not_found();
    };
    if let Err(detail) = auth::check(headers, &sim.shared.username, &sim.shared.password) {
        let mut a = Answer::detail(StatusCode::UNAUTHORIZED, detail);
        a.headers
            .push((header::WWW_AUTHENTICATE, "Basic realm=\"api\"".to_owned()));
        return a;
    }
    if *method != allowed {
        return Answer::method_not_allowed(method, &[allowed]);
    }
    let body = if *method == Method::GET {
        json!({})
    } else {
        match parse_body(bytes) {
            Ok(b) => b,
            Err(a) => return a,
        }
    };
    let mut state = sim.state();
    api::serve(&mut state, route, &body)
}

/// The answer a fault gives instead of MUP's.
fn faulty(
    sim: &MupSim,
    method: &Method,
    path: &str,
    request_json: Option<Value>,
    f: &Fault,
    cutter: Option<&Cutter>,
) -> Response {
    let mut call = Call {
        method: method.to_string(),
        path: path.to_owned(),
        status: 0,
        body: request_json,
        response: None,
    };
    if f.drop {
        record(sim, call);
        match cutter {
            Some(c) => c.cut(),
            // Only `serve` builds the service, and it always adds one.
            None => tracing::warn!("no connection to drop; answering empty"),
        }
        return Response::new(Body::empty());
    }
    if let Some(raw) = &f.body {
        let status = f.status.unwrap_or(200);
        call.status = status;
        call.response = serde_json::from_str(raw).ok();
        record(sim, call);
        let content_type = f.content_type.clone().unwrap_or_else(|| {
            if raw.trim_start().starts_with('<') {
                "text/html; charset=utf-8".to_owned()
            } else {
                "application/json".to_owned()
            }
        });
        let mut resp = Response::new(Body::from(raw.clone()));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        return resp;
    }
    let status = f.status.unwrap_or(500);
    let value = json!({"detail": format!("injected fault {status}")});
    call.status = status;
    call.response = Some(value.clone());
    record(sim, call);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, &value);
    if let Some(ct) = f
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The first fault matching a request, counted down (and removed when used
/// up), and the request's path noted as a hit.
fn take_fault(sim: &MupSim, method: &str, path: &str) -> Option<Fault> {
    let decoded = percent_decode(path).unwrap_or_else(|| path.to_owned());
    let mut faults = lock(&sim.shared.faults);
    let index = faults.iter().position(|f| {
        (f.method.is_empty() || f.method.eq_ignore_ascii_case(method))
            && (path.contains(&f.path_contains) || decoded.contains(&f.path_contains))
    })?;
    let fault = faults[index].clone();
    lock(&sim.shared.fault_hits).push(path.to_owned());
    if let Some(times) = faults[index].times.as_mut() {
        *times = times.saturating_sub(1);
        if *times == 0 {
            faults.remove(index);
        }
    }
    Some(fault)
}

fn record(sim: &MupSim, call: Call) {
    let mut calls = lock(&sim.shared.calls);
    // A long soak must not grow without bound.
    if calls.len() >= 200_000 {
        calls.drain(..100_000);
    }
    calls.push(call);
}
