//! HTTP: the Waldur API under `/api/` and the control API under `/_sim/`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::world::{Refusal, World, new_uuid, norm};
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
    let segments: Vec<&str> = api_path.split('/').filter(|s| !s.is_empty()).collect();
    let route = route_of(&segments);

    // Faults first: they model the network and Waldur's own failures.
    let fault = take_fault(&sim, method.as_str(), &path);
    if let Some(f) = &fault {
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if f.drop {
            record(&sim, &method, &route, 0, body_json, None);
            // A body that fails at once makes hyper abort the connection.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "connection dropped by fault injection",
                ))
            });
            return Response::new(Body::from_stream(stream));
        }
        if let Some(status) = f.status {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let value = json!({"detail": format!("injected fault {status}")});
            record(
                &sim,
                &method,
                &route,
                status,
                body_json,
                Some(value.clone()),
            );
            return json_response(code, &value);
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
        let mut world = sim.world();
        api(&mut world, &method, &segments, &params, body_json.as_ref())
    };
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

fn take_fault(sim: &Sim, method: &str, path: &str) -> Option<Fault> {
    let mut faults = sim.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let index = faults.iter().position(|f| {
        (f.method.is_empty() || f.method.eq_ignore_ascii_case(method))
            && path.contains(&f.path_contains)
    })?;
    let fault = faults[index].clone();
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

/// A paginated list answer with `Link` and `x-result-count`.
fn page(items: Vec<Value>, params: &Params, path: &str) -> ApiAnswer {
    let size: usize = param(params, "page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let page: usize = param(params, "page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|v| sparse(v, params))
        .collect();
    let mut headers = vec![("x-result-count", total.to_string())];
    if page * size < total {
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

fn api(
    w: &mut World,
    method: &Method,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> ApiAnswer {
    let m = method.as_str();
    let result: Result<ApiAnswer, Refusal> = (|| {
        Ok(match (m, seg) {
            ("GET", ["version"]) => ok(json!({"version": "8.0.5"})),
            ("GET", ["users", "me"]) => ok(sparse(
                json!({"uuid": SIM_USER_UUID, "username": "site-agent", "full_name": "Site Agent", "is_staff": false, "permissions": []}),
                params,
            )),

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
                            .is_none_or(|f| norm(&o.offering_uuid) == *f)
                    })
                    .filter(|o| states.is_empty() || states.contains(&o.state.as_str()))
                    .map(|o| w.order_json(o))
                    .collect();
                page(items, params, "marketplace-orders/")
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
                let offerings: Vec<String> = params_all(params, "offering_uuid")
                    .into_iter()
                    .map(norm)
                    .collect();
                let projects: Vec<String> = params_all(params, "project_uuid")
                    .into_iter()
                    .map(norm)
                    .collect();
                let states = params_all(params, "state");
                let items = w
                    .resources
                    .values()
                    .filter(|r| offerings.is_empty() || offerings.contains(&norm(&r.offering_uuid)))
                    .filter(|r| projects.is_empty() || projects.contains(&norm(&r.project_uuid)))
                    .filter(|r| states.is_empty() || states.contains(&r.state.as_str()))
                    .map(|r| w.resource_json(r))
                    .collect();
                page(items, params, "marketplace-provider-resources/")
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
                let backend_id = str_field(body, "backend_id").ok_or_else(|| {
                    Refusal::Invalid("backend_id: This field is required.".into())
                })?;
                let all = body
                    .and_then(|b| b.get("check_all_offerings"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let taken = w.resources.values().any(|r| {
                    r.backend_id == backend_id && (all || norm(&r.offering_uuid) == offering)
                });
                ok(json!({"is_unique": !taken}))
            }
            ("GET", ["marketplace-service-providers"]) => {
                let customer = param(params, "customer_uuid").map(norm);
                let items = w
                    .service_providers
                    .values()
                    .filter(|s| {
                        customer
                            .as_ref()
                            .is_none_or(|c| norm(&s.customer_uuid) == *c)
                    })
                    .map(|s| json!({"uuid": s.uuid, "customer_uuid": s.customer_uuid}))
                    .collect();
                page(items, params, "marketplace-service-providers/")
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
                let items = w
                    .offering_users
                    .values()
                    .filter(|u| offerings.is_empty() || offerings.contains(&norm(&u.offering_uuid)))
                    .filter(|u| states.is_empty() || states.contains(&u.state.as_str()))
                    .map(|u| w.offering_user_json(u))
                    .collect();
                page(items, params, "marketplace-offering-users/")
            }

            // ------------------------------------------- agent identities
            ("GET", ["marketplace-site-agent-identities"]) => {
                let name = param(params, "name");
                let items = w
                    .identities
                    .values()
                    .filter(|i| name.is_none_or(|n| i.name == n))
                    .map(identity_json)
                    .collect();
                page(items, params, "marketplace-site-agent-identities/")
            }
            ("POST", ["marketplace-site-agent-identities"]) => {
                let name = str_field(body, "name")
                    .ok_or_else(|| Refusal::Invalid("name: This field is required.".into()))?;
                let offering = str_field(body, "offering")
                    .ok_or_else(|| Refusal::Invalid("offering: This field is required.".into()))?;
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
                let name = str_field(body, "name")
                    .ok_or_else(|| Refusal::Invalid("name: This field is required.".into()))?;
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
                let name = str_field(body, "name")
                    .ok_or_else(|| Refusal::Invalid("name: This field is required.".into()))?;
                let backend_type = str_field(body, "backend_type").ok_or_else(|| {
                    Refusal::Invalid("backend_type: This field is required.".into())
                })?;
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
                let resource = param(params, "resource_uuid").map(norm);
                let period = param(params, "billing_period");
                let items = w
                    .usages
                    .values()
                    .filter(|u| {
                        resource
                            .as_ref()
                            .is_none_or(|r| norm(&u.resource_uuid) == *r)
                    })
                    .filter(|u| period.is_none_or(|p| u.billing_period == p))
                    .map(|u| w.usage_json(u))
                    .collect();
                page(items, params, "marketplace-component-usages/")
            }
            ("POST", ["marketplace-component-usages", "set_usage"]) => {
                let resource = str_field(body, "resource")
                    .ok_or_else(|| Refusal::Invalid("resource: This field is required.".into()))?;
                let resource = norm(resource);
                if !w.resources.contains_key(&resource) {
                    return Err(Refusal::Invalid("resource: object does not exist.".into()));
                }
                let date = str_field(body, "date")
                    .map(str::to_owned)
                    .unwrap_or_else(|| jiff::Timestamp::now().to_string());
                let period = format!("{}-01", date.get(..7).unwrap_or("1970-01"));
                let items = body
                    .and_then(|b| b.get("usages"))
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| Refusal::Invalid("usages: This field is required.".into()))?;
                for item in items {
                    let kind = item["type"]
                        .as_str()
                        .ok_or_else(|| Refusal::Invalid("usages.type: required".into()))?;
                    let amount = decimal(&item["amount"]).ok_or_else(|| {
                        Refusal::Invalid("usages.amount: a decimal is required".into())
                    })?;
                    let existing = w.usages.values_mut().find(|u| {
                        u.resource_uuid == resource
                            && u.component_type == kind
                            && u.billing_period == period
                    });
                    match existing {
                        Some(u) => {
                            u.usage = amount;
                            u.date = date.clone();
                        }
                        None => {
                            let u = crate::world::ComponentUsage {
                                uuid: new_uuid(),
                                resource_uuid: resource.clone(),
                                component_type: kind.to_owned(),
                                usage: amount,
                                date: date.clone(),
                                billing_period: period.clone(),
                                description: item["description"].as_str().unwrap_or("").to_owned(),
                                user_usages: BTreeMap::new(),
                            };
                            w.usages.insert(u.uuid.clone(), u);
                        }
                    }
                }
                (StatusCode::CREATED, Value::Null, Vec::new())
            }
            ("POST", ["marketplace-component-usages", id, "set_user_usages"]) => {
                let u = w
                    .usages
                    .get_mut(&norm(id))
                    .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
                let items = body
                    .and_then(|b| b.get("usages"))
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| Refusal::Invalid("usages: This field is required.".into()))?;
                for item in items {
                    let username = item["username"]
                        .as_str()
                        .ok_or_else(|| Refusal::Invalid("usages.username: required".into()))?;
                    let amount = decimal(&item["usage"]).unwrap_or_else(|| "0.00".into());
                    u.user_usages.insert(username.to_owned(), amount);
                }
                (StatusCode::CREATED, Value::Null, Vec::new())
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
                let kind = str_field(body, "observable_object_type").ok_or_else(|| {
                    Refusal::Invalid("observable_object_type: This field is required.".into())
                })?;
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
                let offering = str_field(body, "offering_uuid").ok_or_else(|| {
                    Refusal::Invalid("offering_uuid: This field is required.".into())
                })?;
                let kind = str_field(body, "object_type").ok_or_else(|| {
                    Refusal::Invalid("object_type: This field is required.".into())
                })?;
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
            _ => return Err(Refusal::NotFound("endpoint".into())),
        })
    })();
    result.unwrap_or_else(|r| from(refusal(r)))
}

/// The agent's Waldur user (the vhost of its event queues).
pub(crate) const SIM_USER_UUID: &str = "00000000000000000000000000005e1f";

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
fn control(
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
        _ => detail(StatusCode::NOT_FOUND, "unknown control endpoint"),
    }
}
