//! HTTP: the Waldur API under `/api/` and the control API under `/_sim/`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::world::{
    ComponentUsage, Listed, Refusal, UsageItem, UserUsage, World, by_uuid, new_uuid, norm, uuid_eq,
    uuid_in, uuids,
};
use crate::{Call, Fault, NewOrder, Sim};

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

fn detail(status: StatusCode, text: &str) -> (StatusCode, Value) {
    (status, json!({"detail": text}))
}

fn refusal(r: Refusal) -> (StatusCode, Value) {
    match r {
        Refusal::NotFound(what) => detail(
            StatusCode::NOT_FOUND,
            &format!("No {what} matches the given query."),
        ),
        Refusal::Invalid(why) => detail(StatusCode::BAD_REQUEST, &why),
        Refusal::InvalidBody(body) => (StatusCode::BAD_REQUEST, body),
    }
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
    let (status, value, extra_headers) = if !authorised {
        let (s, v) = detail(StatusCode::UNAUTHORIZED, "Invalid token.");
        (s, v, Vec::new())
    } else {
        let mut world = sim.world_untouched();
        api(&mut world, &method, &segments, &params, body_json.as_ref())
    };
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

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn params_all<'a>(params: &'a Params, name: &str) -> Vec<&'a str> {
    // Repeated keys and comma-separated values (explode=false) both work.
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .collect()
}

/// Keeps only the `field=` keys of an object.
fn sparse(value: Value, params: &Params) -> Value {
    let fields = params_all(params, "field");
    match value {
        Value::Object(o) if !fields.is_empty() => Value::Object(
            o.into_iter()
                .filter(|(k, _)| fields.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

type ApiAnswer = (StatusCode, Value, Vec<(&'static str, String)>);

/// The page number (from 1) and size of a list request.
fn window(params: &Params) -> (usize, usize) {
    let size: usize = param(params, "page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let page: usize = param(params, "page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    (page, size)
}

/// The slice of `items` on the requested page.
fn on_page<'a, T>(items: &'a [T], params: &Params) -> &'a [T] {
    let (page, size) = window(params);
    let start = (page - 1).saturating_mul(size).min(items.len());
    let end = start.saturating_add(size).min(items.len());
    items.get(start..end).unwrap_or(&[])
}

/// A list answer: one page of values with `Link` and `x-result-count`.
fn list_answer(values: Vec<Value>, total: usize, params: &Params, path: &str) -> ApiAnswer {
    let (page, size) = window(params);
    let chunk: Vec<Value> = values.into_iter().map(|v| sparse(v, params)).collect();
    let mut headers = vec![("x-result-count", total.to_string())];
    if page.saturating_mul(size) < total {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "page") {
            q.append_pair(k, v);
        }
        q.append_pair("page", &(page + 1).to_string());
        headers.push((
            "link",
            format!("<http://sim/api/{path}?{}>; rel=\"next\"", q.finish()),
        ));
    }
    (StatusCode::OK, Value::Array(chunk), headers)
}

/// A paginated list answer: `items` are the filtered records; JSON is built
/// for the returned page only.
fn page<T>(items: Vec<T>, params: &Params, path: &str, to_json: impl Fn(&T) -> Value) -> ApiAnswer {
    let values = on_page(&items, params).iter().map(to_json).collect();
    list_answer(values, items.len(), params, path)
}

/// A list answer from cached positions of a map's matching records.
fn page_at<T>(
    map: &BTreeMap<String, T>,
    positions: &[(u32, u32)],
    params: &Params,
    path: &str,
    to_json: impl Fn(&T) -> Value,
) -> ApiAnswer {
    let values = at_positions(map, on_page(positions, params))
        .into_iter()
        .map(|(_, v)| to_json(v))
        .collect();
    list_answer(values, positions.len(), params, path)
}

/// The records of a map at ascending positions, with their second
/// position (walking the map, which touches no record's strings).
fn at_positions<'a, T>(
    map: &'a BTreeMap<String, T>,
    positions: &[(u32, u32)],
) -> Vec<(u32, &'a T)> {
    let mut out = Vec::with_capacity(positions.len());
    let mut it = map.values();
    let mut next = 0usize;
    let mut last: Option<(usize, &T)> = None;
    for &(p, sub) in positions {
        let p = p as usize;
        let record = match last {
            Some((at, v)) if at == p => Some(v),
            _ if p >= next => {
                let v = it.nth(p - next);
                next = p + 1;
                v
            }
            _ => map.values().nth(p),
        };
        if let Some(v) = record {
            last = Some((p, v));
            out.push((sub, v));
        }
    }
    out
}

/// Positions of an iterator's items passing `keep`.
fn positions_of<T>(items: impl Iterator<Item = T>, keep: impl Fn(&T) -> bool) -> Vec<(u32, u32)> {
    items
        .enumerate()
        .filter(|(_, t)| keep(t))
        .map(|(i, _)| (u32::try_from(i).unwrap_or(u32::MAX), 0))
        .collect()
}

/// The cache key of a list query: its collection and filters.
fn query_key(path: &str, params: &Params) -> String {
    let mut filters: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "page" | "page_size" | "field"))
        .collect();
    filters.sort();
    let mut key = path.to_owned();
    for (k, v) in filters {
        key.push('&');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

fn ok(v: Value) -> ApiAnswer {
    (StatusCode::OK, v, Vec::new())
}

fn status_ok(text: &str) -> ApiAnswer {
    ok(json!({"status": text}))
}

fn from(r: (StatusCode, Value)) -> ApiAnswer {
    (r.0, r.1, Vec::new())
}

fn str_field<'a>(body: Option<&'a Value>, name: &str) -> Option<&'a str> {
    body.and_then(|b| b.get(name)).and_then(Value::as_str)
}

/// A string field the request must carry, or DRF's 400.
fn required<'a>(body: Option<&'a Value>, name: &str) -> Result<&'a str, Refusal> {
    str_field(body, name)
        .ok_or_else(|| Refusal::Invalid(format!("{name}: This field is required.")))
}

pub(crate) fn api(
    w: &mut World,
    method: &Method,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> ApiAnswer {
    let m = method.as_str();
    if m != "GET" {
        // What the call may change, for the list cache.
        let touched: &[Listed] = match seg.first().copied().unwrap_or("") {
            "marketplace-offering-users" => &[Listed::OfferingUsers],
            "marketplace-component-usages" => &[Listed::Usages, Listed::UserUsages],
            "marketplace-provider-resources" | "marketplace-orders" => &[Listed::Resources],
            "marketplace-provider-offerings"
            | "marketplace-site-agent-identities"
            | "marketplace-site-agent-services"
            | "event-subscriptions" => &[],
            _ => &[
                Listed::OfferingUsers,
                Listed::Resources,
                Listed::Usages,
                Listed::UserUsages,
            ],
        };
        for which in touched {
            w.touch_listed(*which);
        }
    }
    w.reindex();
    let result: Result<ApiAnswer, Refusal> = (|| {
        Ok(match (m, seg) {
            ("GET", ["version"]) => ok(json!({"version": "8.0.5"})),
            ("GET", ["users", "me"]) => ok(sparse(me_json(w), params)),

            // ------------------------------------------------------ orders
            ("GET", ["marketplace-orders"]) => {
                let offering = param(params, "offering_uuid").map(norm);
                let states = params_all(params, "state");
                let items = w
                    .orders
                    .values()
                    .filter(|o| {
                        offering
                            .as_ref()
                            .is_none_or(|f| uuid_eq(&o.offering_uuid, f))
                    })
                    .filter(|o| states.is_empty() || states.contains(&o.state.as_str()))
                    .collect();
                page(items, params, "marketplace-orders/", |o| w.order_json(o))
            }
            ("GET", ["marketplace-orders", id]) => {
                let o = w
                    .orders
                    .get(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("order".into()))?;
                ok(sparse(w.order_json(o), params))
            }
            ("POST", ["marketplace-orders", id, "approve_by_provider"]) => {
                w.approve(id)?;
                ok(json!({"detail": "Order has been approved."}))
            }
            ("POST", ["marketplace-orders", id, "reject_by_provider"]) => {
                w.reject(
                    id,
                    str_field(body, "provider_rejection_comment").unwrap_or(""),
                )?;
                ok(Value::Null)
            }
            ("POST", ["marketplace-orders", id, "set_state_done"]) => {
                w.set_done(id)?;
                ok(Value::Null)
            }
            ("POST", ["marketplace-orders", id, "set_state_erred"]) => {
                w.set_erred(
                    id,
                    str_field(body, "error_message").unwrap_or(""),
                    str_field(body, "error_traceback").unwrap_or(""),
                )?;
                ok(Value::Null)
            }
            ("POST", ["marketplace-orders", id, "set_backend_id"]) => {
                let value = str_field(body, "backend_id").unwrap_or("");
                if value.is_empty() {
                    return Err(Refusal::Invalid(
                        "backend_id: This field may not be blank.".into(),
                    ));
                }
                w.order_mut(id)?.backend_id = value.to_owned();
                status_ok("Order backend_id has been changed.")
            }

            // --------------------------------------------------- resources
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

            // ---------------------------------------------------- offering
            ("GET", ["marketplace-provider-offerings", id]) => {
                let o = w
                    .offerings
                    .get(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("offering".into()))?;
                ok(sparse(
                    json!({
                        "uuid": o.uuid, "name": o.name, "customer_uuid": o.customer_uuid,
                        "components": o.components, "plugin_options": o.plugin_options,
                        "partitions": [], "state": "Active", "backend_id": "",
                    }),
                    params,
                ))
            }
            (
                "POST",
                [
                    "marketplace-provider-offerings",
                    id,
                    "check_unique_backend_id",
                ],
            ) => {
                let offering = norm(id);
                let backend_id = required(body, "backend_id")?;
                let all = body
                    .and_then(|b| b.get("check_all_offerings"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let taken = w.resources.values().any(|r| {
                    r.backend_id == backend_id && (all || norm(&r.offering_uuid) == offering)
                });
                ok(json!({"is_unique": !taken}))
            }
            (
                "GET",
                [
                    "marketplace-provider-offerings",
                    id,
                    "user-attribute-config",
                ],
            ) => {
                let o = by_uuid(&w.offerings, id)
                    .ok_or_else(|| Refusal::NotFound("offering".into()))?;
                ok(attribute_config_json(o))
            }
            (
                "POST",
                [
                    "marketplace-provider-offerings",
                    id,
                    "create_offering_component",
                ],
            ) => {
                let component = component_request(body, false)?;
                let o = w
                    .offerings
                    .get_mut(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("offering".into()))?;
                if o.components.iter().any(|c| c["type"] == component["type"]) {
                    return Err(Refusal::Invalid(format!(
                        "Offering component with type {} already exists.",
                        component["type"]
                    )));
                }
                let mut component = component;
                if let Value::Object(c) = &mut component {
                    c.insert("uuid".into(), new_uuid().into());
                }
                o.components.push(component);
                (StatusCode::CREATED, Value::Null, Vec::new())
            }
            (
                "POST",
                [
                    "marketplace-provider-offerings",
                    id,
                    "update_offering_component",
                ],
            ) => {
                let update = component_request(body, true)?;
                let wanted = norm(update["uuid"].as_str().unwrap_or(""));
                let o = w
                    .offerings
                    .get_mut(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("offering".into()))?;
                let index = o
                    .components
                    .iter()
                    .position(|c| c["uuid"].as_str().is_some_and(|u| uuid_eq(u, &wanted)))
                    .ok_or_else(|| Refusal::NotFound("offering component".into()))?;
                if o.components
                    .iter()
                    .enumerate()
                    .any(|(i, c)| i != index && c["type"] == update["type"])
                {
                    return Err(Refusal::Invalid(format!(
                        "Offering component with type {} already exists.",
                        update["type"]
                    )));
                }
                if let (Some(Value::Object(c)), Value::Object(u)) =
                    (o.components.get_mut(index), update)
                {
                    for (k, v) in u {
                        if k != "uuid" {
                            c.insert(k, v);
                        }
                    }
                }
                ok(Value::Null)
            }
            (
                "GET",
                [
                    "marketplace-provider-offerings",
                    id,
                    kind @ ("list_project_service_accounts" | "list_course_accounts"),
                ],
            ) => {
                if by_uuid(&w.offerings, id).is_none() {
                    return Err(Refusal::NotFound("offering".into()));
                }
                let course = *kind == "list_course_accounts";
                let projects = w.offering_projects(id);
                let project = param(params, "project_uuid").map(norm);
                let accounts = if course {
                    &w.course_accounts
                } else {
                    &w.service_accounts
                };
                let items = accounts
                    .values()
                    .filter(|a| projects.contains(&norm(&a.project_uuid)))
                    .filter(|a| project.as_ref().is_none_or(|p| uuid_eq(&a.project_uuid, p)))
                    .collect();
                page(
                    items,
                    params,
                    &format!("marketplace-provider-offerings/{id}/{kind}/"),
                    |a| w.account_json(a, course),
                )
            }
            ("GET", ["marketplace-service-providers"]) => {
                let customer = param(params, "customer_uuid").map(norm);
                let items = w
                    .service_providers
                    .values()
                    .filter(|s| {
                        customer
                            .as_ref()
                            .is_none_or(|c| uuid_eq(&s.customer_uuid, c))
                    })
                    .collect();
                page(
                    items,
                    params,
                    "marketplace-service-providers/",
                    |s| json!({"uuid": s.uuid, "customer_uuid": s.customer_uuid}),
                )
            }
            ("GET", ["marketplace-service-providers", id, "keys"]) => {
                let sp = w
                    .service_providers
                    .get(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("service provider".into()))?;
                ok(Value::Array(
                    sp.keys
                        .iter()
                        .map(
                            |k| json!({"uuid": k.uuid, "name": k.name, "public_key": k.public_key}),
                        )
                        .collect(),
                ))
            }
            ("GET", ["marketplace-plans", id]) => {
                let p = w
                    .plans
                    .get(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("plan".into()))?;
                ok(json!({"uuid": p.uuid, "name": p.name, "quotas": p.quotas}))
            }
            ("GET", ["marketplace-offering-users"]) => {
                let offerings: Vec<String> = params_all(params, "offering_uuid")
                    .into_iter()
                    .map(norm)
                    .collect();
                let states = params_all(params, "state");
                let user = param(params, "user_uuid").map(norm);
                let restricted = match param(params, "is_restricted") {
                    None => None,
                    Some(v) => Some(parse_bool(v).ok_or_else(|| {
                        Refusal::Invalid("is_restricted: Enter a valid boolean.".into())
                    })?),
                };
                if let (Some(user), [offering]) = (&user, offerings.as_slice()) {
                    // One user of one offering: the index.
                    let items: Vec<_> = w
                        .offering_user_of(offering, user)
                        .into_iter()
                        .filter(|u| states.is_empty() || states.contains(&u.state.as_str()))
                        .filter(|u| restricted.is_none_or(|r| u.is_restricted == r))
                        .collect();
                    return Ok(page(items, params, "marketplace-offering-users/", |u| {
                        w.offering_user_json(u)
                    }));
                }
                let path = "marketplace-offering-users/";
                let offerings = uuids(&params_all(params, "offering_uuid"));
                let users = uuids(&params_all(params, "user_uuid"));
                let positions =
                    w.list_positions(Listed::OfferingUsers, query_key(path, params), |w| {
                        positions_of(w.offering_users.values(), |u| {
                            restricted.is_none_or(|x| u.is_restricted == x)
                                && uuid_in(&offerings, &u.offering_uuid)
                                && uuid_in(&users, &u.user_uuid)
                                && (states.is_empty() || states.contains(&u.state.as_str()))
                        })
                    });
                page_at(&w.offering_users, &positions, params, path, |u| {
                    w.offering_user_json(u)
                })
            }
            ("GET", ["marketplace-offering-users", id]) => {
                let ou = by_uuid(&w.offering_users, id)
                    .ok_or_else(|| Refusal::NotFound("offering user".into()))?;
                ok(sparse(w.offering_user_json(ou), params))
            }
            ("PATCH", ["marketplace-offering-users", id]) => {
                if let Some(v) = body.and_then(|b| b.get("username")) {
                    let username = match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.as_str()),
                        _ => {
                            return Err(Refusal::Invalid("username: Not a valid string.".into()));
                        }
                    };
                    w.set_offering_username(id, username)?;
                }
                let ou = by_uuid(&w.offering_users, id)
                    .ok_or_else(|| Refusal::NotFound("offering user".into()))?;
                ok(w.offering_user_json(ou))
            }
            ("POST", ["marketplace-offering-users", id, action]) => {
                w.offering_user_action(
                    id,
                    action,
                    str_field(body, "comment").unwrap_or(""),
                    str_field(body, "comment_url").unwrap_or(""),
                )?;
                ok(Value::Null)
            }

            // ------------------------------------------- agent identities
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
                    return Ok(ok(service_json(s)));
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
                    return Ok(ok(existing.clone()));
                }
                s.processors.push(processor.clone());
                (StatusCode::CREATED, processor, Vec::new())
            }
            // ------------------------------------------------------- usage
            ("GET", ["marketplace-component-usages"]) => {
                let kind = param(params, "type");
                if let Some(resource) = param(params, "resource_uuid") {
                    let offering = offering_resources(w, param(params, "offering_uuid"));
                    let items = w
                        .resource_usages(resource, param(params, "billing_period"))
                        .into_iter()
                        .filter(|u| kind.is_none_or(|k| u.component_type == k))
                        .filter(|u| in_set(&offering, &u.resource_uuid))
                        .collect();
                    return Ok(page(items, params, "marketplace-component-usages/", |u| {
                        w.usage_json(u)
                    }));
                }
                let path = "marketplace-component-usages/";
                let positions = w.list_positions(Listed::Usages, query_key(path, params), |w| {
                    let filter = UsageFilter::new(w, params, "billing_period");
                    positions_of(w.usages.values(), |u| filter.keeps(u))
                });
                page_at(&w.usages, &positions, params, path, |u| w.usage_json(u))
            }
            ("GET", ["marketplace-component-usages", id]) => {
                let u = by_uuid(&w.usages, id)
                    .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
                ok(sparse(w.usage_json(u), params))
            }
            ("POST", ["marketplace-component-usages", "set_usage"]) => {
                let resource = required(body, "resource")?;
                let date = str_field(body, "date")
                    .map(str::to_owned)
                    .unwrap_or_else(|| jiff::Timestamp::now().to_string());
                let raw = body
                    .and_then(|b| b.get("usages"))
                    .and_then(Value::as_array)
                    .ok_or_else(|| Refusal::Invalid("usages: This field is required.".into()))?;
                let mut items = Vec::with_capacity(raw.len());
                for item in raw {
                    let kind = item["type"]
                        .as_str()
                        .filter(|k| !k.is_empty())
                        .ok_or_else(|| Refusal::Invalid("usages.type: required".into()))?;
                    let amount = decimal(&item["amount"]).ok_or_else(|| {
                        Refusal::Invalid("usages.amount: a decimal is required".into())
                    })?;
                    items.push(UsageItem {
                        component_type: kind.to_owned(),
                        amount,
                        description: item["description"].as_str().unwrap_or("").to_owned(),
                    });
                }
                w.set_usage(resource, &date, &items)?;
                (StatusCode::CREATED, Value::Null, Vec::new())
            }
            ("POST", ["marketplace-component-usages", id, "set_user_usages"]) => {
                let raw = body
                    .and_then(|b| b.get("usages"))
                    .and_then(Value::as_array)
                    .ok_or_else(|| Refusal::Invalid("usages: This field is required.".into()))?;
                let items = raw
                    .iter()
                    .map(user_usage_item)
                    .collect::<Result<Vec<_>, _>>()?;
                w.set_user_usages(id, items)?;
                (StatusCode::CREATED, Value::Null, Vec::new())
            }
            ("POST", ["marketplace-component-usages", id, "set_user_usage"]) => {
                let item = user_usage_item(body.unwrap_or(&Value::Null))?;
                w.set_user_usages(id, vec![item])?;
                (StatusCode::CREATED, Value::Null, Vec::new())
            }
            ("GET", ["marketplace-component-user-usages"]) => {
                let kind = param(params, "type").or_else(|| param(params, "component_type"));
                let username = param(params, "username");
                let period_param = if param(params, "component_usage__billing_period").is_some() {
                    "component_usage__billing_period"
                } else {
                    "component_usage_billing_period"
                };
                let path = "marketplace-component-user-usages/";
                if let Some(resource) = param(params, "resource_uuid") {
                    let offering = offering_resources(w, param(params, "offering_uuid"));
                    let items: Vec<(&ComponentUsage, &String, &UserUsage)> = w
                        .resource_usages(resource, param(params, period_param))
                        .into_iter()
                        .filter(|u| kind.is_none_or(|k| u.component_type == k))
                        .filter(|u| in_set(&offering, &u.resource_uuid))
                        .flat_map(|u| {
                            u.user_usages
                                .iter()
                                .filter(|(name, _)| username.is_none_or(|n| n == name.as_str()))
                                .map(move |(name, uu)| (u, name, uu))
                        })
                        .collect();
                    return Ok(page(items, params, path, |(u, name, uu)| {
                        w.user_usage_json(u, name, uu)
                    }));
                }
                let positions =
                    w.list_positions(Listed::UserUsages, query_key(path, params), |w| {
                        let filter = UsageFilter::new(w, params, period_param);
                        let mut out = Vec::new();
                        for (i, u) in w.usages.values().enumerate() {
                            if u.user_usages.is_empty() || !filter.keeps(u) {
                                continue;
                            }
                            let i = u32::try_from(i).unwrap_or(u32::MAX);
                            for (j, name) in u.user_usages.keys().enumerate() {
                                if username.is_none_or(|n| n == name.as_str()) {
                                    out.push((i, u32::try_from(j).unwrap_or(u32::MAX)));
                                }
                            }
                        }
                        out
                    });
                let values = at_positions(&w.usages, on_page(&positions, params))
                    .into_iter()
                    .filter_map(|(j, u)| {
                        let (name, uu) = u.user_usages.iter().nth(j as usize)?;
                        Some(w.user_usage_json(u, name, uu))
                    })
                    .collect();
                list_answer(values, positions.len(), params, path)
            }
            ("GET", ["component-user-usage-limits"]) => {
                let resource = param(params, "resource_uuid").map(norm);
                let offering = offering_resources(w, param(params, "offering_uuid"));
                let username = param(params, "username");
                let kind = param(params, "component_type");
                let candidates: Vec<&crate::world::UserLimit> = match &resource {
                    Some(r) => w.resource_user_limits(r),
                    None => w.user_limits.values().collect(),
                };
                let items = candidates
                    .into_iter()
                    .filter(|l| username.is_none_or(|n| l.username == n))
                    .filter(|l| kind.is_none_or(|k| l.component_type == k))
                    .filter(|l| in_set(&offering, &l.resource_uuid))
                    .collect();
                page(items, params, "component-user-usage-limits/", |l| {
                    w.user_limit_json(l)
                })
            }

            // ------------------------------------------ event subscriptions
            (
                "POST",
                [
                    "marketplace-site-agent-identities",
                    id,
                    "register_event_subscription",
                ],
            ) => {
                let identity = norm(id);
                if !w.identities.contains_key(&identity) {
                    return Err(Refusal::NotFound("identity".into()));
                }
                let kind = required(body, "observable_object_type")?;
                if let Some(s) = w
                    .event_subscriptions
                    .values()
                    .find(|s| s.identity == identity && s.observable_object_type == kind)
                {
                    return Ok(ok(subscription_json(s)));
                }
                let s = crate::world::EventSubscription {
                    uuid: new_uuid(),
                    identity,
                    observable_object_type: kind.to_owned(),
                    description: str_field(body, "description").unwrap_or("").to_owned(),
                    created: jiff::Timestamp::now().to_string(),
                    queues: Vec::new(),
                };
                let v = subscription_json(&s);
                w.event_subscriptions.insert(s.uuid.clone(), s);
                (StatusCode::CREATED, v, Vec::new())
            }
            ("POST", ["event-subscriptions", id, "create_queue"]) => {
                let s = w
                    .event_subscriptions
                    .get_mut(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("event subscription".into()))?;
                let offering = required(body, "offering_uuid")?;
                let kind = required(body, "object_type")?;
                if let Some(q) = s
                    .queues
                    .iter()
                    .find(|q| q["object_type"] == kind && q["offering_uuid"] == norm(offering))
                {
                    return Ok(ok(q.clone()));
                }
                let uuid = new_uuid();
                let queue = json!({
                    "uuid": uuid, "url": format!("http://sim/api/event-subscription-queues/{uuid}/"),
                    "event_subscription": format!("http://sim/api/event-subscriptions/{}/", s.uuid),
                    "event_subscription_uuid": s.uuid, "offering_uuid": norm(offering), "object_type": kind,
                    "queue_name": format!("subscription_{}_offering_{}_{}", s.uuid, norm(offering), kind),
                    "vhost": SIM_USER_UUID, "created": jiff::Timestamp::now().to_string(),
                });
                s.queues.push(queue.clone());
                (StatusCode::CREATED, queue, Vec::new())
            }
            // ------------------------------------------------ resource import
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
            _ => return Err(Refusal::NotFound("endpoint".into())),
        })
    })();
    result.unwrap_or_else(|r| from(refusal(r)))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The uuids of an offering's resources, in normal form (for filtering
/// records by `offering_uuid` without a lookup per record).
fn offering_resources<'a>(w: &'a World, offering: Option<&str>) -> Option<HashSet<Cow<'a, str>>> {
    let offering = norm(offering?);
    Some(
        w.resources
            .values()
            .filter(|r| uuid_eq(&r.offering_uuid, &offering))
            .map(|r| normal(&r.uuid))
            .collect(),
    )
}

/// A UUID in normal form, borrowed when it already is.
fn normal(uuid: &str) -> Cow<'_, str> {
    if uuid
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Cow::Borrowed(uuid)
    } else {
        Cow::Owned(norm(uuid))
    }
}

/// Whether a record's resource is in the `offering_resources` set (no
/// set: no filter).
fn in_set(set: &Option<HashSet<Cow<'_, str>>>, resource: &str) -> bool {
    set.as_ref().is_none_or(|s| s.contains(&normal(resource)))
}

/// The `offering_uuid`, `type` (or `component_type`) and billing-period
/// filters of usage lists.
struct UsageFilter<'a> {
    /// The offering's resources (normal form).
    resources: Option<HashSet<String>>,
    kind: Option<&'a str>,
    period: Option<&'a str>,
}

impl<'a> UsageFilter<'a> {
    fn new(w: &World, params: &'a Params, period_param: &str) -> Self {
        let resources = uuids(&params_all(params, "offering_uuid")).and_then(|offerings| {
            let of_offering = |r: &&crate::world::Resource| {
                offerings.iter().any(|o| uuid_eq(&r.offering_uuid, o))
            };
            // Every resource is of the offering: no need to look.
            if w.resources.values().filter(of_offering).count() == w.resources.len() {
                return None;
            }
            Some(
                w.resources
                    .values()
                    .filter(of_offering)
                    .map(|r| norm(&r.uuid))
                    .collect::<HashSet<String>>(),
            )
        });
        Self {
            resources,
            kind: param(params, "type").or_else(|| param(params, "component_type")),
            period: param(params, period_param),
        }
    }

    fn keeps(&self, u: &ComponentUsage) -> bool {
        self.period.is_none_or(|p| u.billing_period == p)
            && self.kind.is_none_or(|k| u.component_type == k)
            && self
                .resources
                .as_ref()
                .is_none_or(|rs| rs.contains(normal(&u.resource_uuid).as_ref()))
    }
}

/// One `{username, usage, date, user?}` item of `set_user_usage(s)`.
fn user_usage_item(item: &Value) -> Result<(String, UserUsage), Refusal> {
    let username = item["username"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Refusal::Invalid("usages.username: This field is required.".into()))?;
    let usage = match item.get("usage") {
        None | Some(Value::Null) => "0.00".to_owned(),
        Some(v) => decimal(v)
            .ok_or_else(|| Refusal::Invalid("usages.usage: A valid number is required.".into()))?,
    };
    Ok((
        username.to_owned(),
        UserUsage {
            uuid: String::new(),
            usage,
            date: item["date"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| jiff::Timestamp::now().to_string()),
            user: item["user"].as_str().map(str::to_owned),
        },
    ))
}

/// Fields of `OfferingComponentRequest` (and `uuid` for updates).
const COMPONENT_FIELDS: &[&str] = &[
    "billing_type",
    "type",
    "name",
    "description",
    "measured_unit",
    "unit_factor",
    "limit_period",
    "limit_amount",
    "article_code",
    "max_value",
    "min_value",
    "max_available_limit",
    "is_boolean",
    "default_limit",
    "is_prepaid",
    "overage_component",
    "min_prepaid_duration",
    "max_prepaid_duration",
];

/// A validated component body of `create_offering_component` or
/// `update_offering_component` (which needs `uuid`).
fn component_request(body: Option<&Value>, update: bool) -> Result<Value, Refusal> {
    let b = body
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::Invalid("a JSON object is required".into()))?;
    let kind = b
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::Invalid("type: This field is required.".into()))?;
    if kind.is_empty()
        || kind.len() > 50
        || !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/:".contains(c))
    {
        return Err(Refusal::Invalid(format!(
            "type: {kind:?} is not a valid component type."
        )));
    }
    if b.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(Refusal::Invalid("name: This field is required.".into()));
    }
    let billing = b.get("billing_type").and_then(Value::as_str).unwrap_or("");
    if !["fixed", "usage", "limit", "one", "few"].contains(&billing) {
        return Err(Refusal::Invalid(format!(
            "billing_type: \"{billing}\" is not a valid choice."
        )));
    }
    if let Some(period) = b.get("limit_period")
        && !period.is_null()
        && !["", "month", "quarterly", "annual", "total"].contains(&period.as_str().unwrap_or("?"))
    {
        return Err(Refusal::Invalid(format!(
            "limit_period: {period} is not a valid choice."
        )));
    }
    let mut out = serde_json::Map::new();
    for (k, v) in b {
        if COMPONENT_FIELDS.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    if update {
        let uuid = b
            .get("uuid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Refusal::Invalid("uuid: This field is required.".into()))?;
        out.insert("uuid".into(), uuid.into());
    }
    Ok(Value::Object(out))
}

/// The user attribute names an `OfferingUserAttributeConfig` can expose.
const USER_ATTRIBUTES: &[&str] = &[
    "username",
    "full_name",
    "email",
    "phone_number",
    "organization",
    "job_title",
    "affiliations",
    "gender",
    "personal_title",
    "place_of_birth",
    "country_of_residence",
    "nationality",
    "nationalities",
    "organization_country",
    "organization_type",
    "organization_registry_code",
    "eduperson_assurance",
    "civil_number",
    "birth_date",
    "identity_source",
    "active_isds",
];

fn attribute_config_json(o: &crate::world::Offering) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("uuid".into(), o.uuid.clone().into());
    v.insert("offering_uuid".into(), o.uuid.clone().into());
    v.insert("offering_name".into(), o.name.clone().into());
    v.insert("created".into(), SIM_EPOCH.into());
    v.insert("modified".into(), SIM_EPOCH.into());
    for a in USER_ATTRIBUTES {
        v.insert(
            format!("expose_{a}"),
            o.exposed_fields.iter().any(|f| f == a).into(),
        );
    }
    v.insert("exposed_fields".into(), json!(o.exposed_fields));
    v.insert(
        "is_default".into(),
        (o.exposed_fields == crate::world::DEFAULT_EXPOSED_FIELDS).into(),
    );
    Value::Object(v)
}

/// `GET users/me/`: the agent's user, offering manager of every offering.
fn me_json(w: &World) -> Value {
    let permissions: Vec<Value> = w
        .offerings
        .values()
        .map(|o| {
            let c = by_uuid(&w.customers, &o.customer_uuid);
            json!({
                "user_uuid": SIM_USER_UUID, "user_name": "Site Agent", "user_slug": "site-agent",
                "created": SIM_EPOCH, "expiration_time": Value::Null,
                "created_by_full_name": "", "created_by_username": "",
                "role_name": "OFFERING.MANAGER", "role_description": "Offering manager",
                "scope_type": "offering", "scope_uuid": o.uuid, "scope_name": o.name,
                "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
                "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "uuid": SIM_USER_UUID,
        "url": format!("http://sim/api/users/{SIM_USER_UUID}/"),
        "username": "site-agent",
        "full_name": "Site Agent",
        "email": "site-agent@example.org",
        "is_staff": false,
        "is_support": false,
        "is_active": true,
        "date_joined": SIM_EPOCH,
        "permissions": permissions,
    })
}

/// Creation time of things the simulator has no history for.
const SIM_EPOCH: &str = "2024-01-01T00:00:00Z";

/// The agent's Waldur user (the vhost of its event queues).
pub const SIM_USER_UUID: &str = "00000000000000000000000000005e1f";

/// A decimal amount from a JSON string or number, normalised to 2 places.
fn decimal(v: &Value) -> Option<String> {
    let n = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    n.is_finite().then(|| format!("{n:.2}"))
}

fn subscription_json(s: &crate::world::EventSubscription) -> Value {
    json!({
        "uuid": s.uuid, "url": format!("http://sim/api/event-subscriptions/{}/", s.uuid),
        "description": s.description, "user": format!("http://sim/api/users/{SIM_USER_UUID}/"),
        "user_uuid": SIM_USER_UUID, "user_username": "site-agent", "user_full_name": "Site Agent",
        "observable_objects": [{"object_type": s.observable_object_type}],
        "created": s.created, "modified": s.created,
        // The schema's oneOf of ipv4|ipv6 strings cannot be told apart without format
        // checks; null is valid and true of a local simulator.
        "source_ip": Value::Null,
    })
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

/// The OIDC client-credentials token endpoint (`POST /oidc/token`): answers
/// the API token as the access token when the client secret matches.
fn oidc_token(sim: &Sim, body: &Bytes) -> (StatusCode, Value) {
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
