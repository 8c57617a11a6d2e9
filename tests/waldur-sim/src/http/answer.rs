//! What every API family shares: query parameters, sparse fields, pages
//! and DRF's answers.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::world::Refusal;

use super::Params;

pub(super) fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn params_all<'a>(params: &'a Params, name: &str) -> Vec<&'a str> {
    // Repeated keys and comma-separated values (explode=false) both work.
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .collect()
}

/// Keeps only the `field=` keys of an object.
pub(super) fn sparse(value: Value, params: &Params) -> Value {
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

pub(super) type ApiAnswer = (StatusCode, Value, Vec<(&'static str, String)>);

/// The page number (from 1) and size of a list request.
pub(super) fn window(params: &Params) -> (usize, usize) {
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
pub(super) fn on_page<'a, T>(items: &'a [T], params: &Params) -> &'a [T] {
    let (page, size) = window(params);
    let start = (page - 1).saturating_mul(size).min(items.len());
    let end = start.saturating_add(size).min(items.len());
    items.get(start..end).unwrap_or(&[])
}

/// A list answer: one page of values with `Link` and `x-result-count`.
pub(super) fn list_answer(
    values: Vec<Value>,
    total: usize,
    params: &Params,
    path: &str,
) -> ApiAnswer {
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
pub(super) fn page<T>(
    items: Vec<T>,
    params: &Params,
    path: &str,
    to_json: impl Fn(&T) -> Value,
) -> ApiAnswer {
    let values = on_page(&items, params).iter().map(to_json).collect();
    list_answer(values, items.len(), params, path)
}

/// A list answer from cached positions of a map's matching records.
pub(super) fn page_at<T>(
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
pub(super) fn at_positions<'a, T>(
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
pub(super) fn positions_of<T>(
    items: impl Iterator<Item = T>,
    keep: impl Fn(&T) -> bool,
) -> Vec<(u32, u32)> {
    items
        .enumerate()
        .filter(|(_, t)| keep(t))
        .map(|(i, _)| (u32::try_from(i).unwrap_or(u32::MAX), 0))
        .collect()
}

/// The cache key of a list query: its collection and filters.
pub(super) fn query_key(path: &str, params: &Params) -> String {
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

pub(super) fn ok(v: Value) -> ApiAnswer {
    (StatusCode::OK, v, Vec::new())
}

pub(super) fn status_ok(text: &str) -> ApiAnswer {
    ok(json!({"status": text}))
}

pub(super) fn from(r: (StatusCode, Value)) -> ApiAnswer {
    (r.0, r.1, Vec::new())
}

pub(super) fn str_field<'a>(body: Option<&'a Value>, name: &str) -> Option<&'a str> {
    body.and_then(|b| b.get(name)).and_then(Value::as_str)
}

/// A string field the request must carry, or DRF's 400.
pub(super) fn required<'a>(body: Option<&'a Value>, name: &str) -> Result<&'a str, Refusal> {
    str_field(body, name)
        .ok_or_else(|| Refusal::Invalid(format!("{name}: This field is required.")))
}

/// Creation time of things the simulator has no history for.
pub(super) const SIM_EPOCH: &str = "2024-01-01T00:00:00Z";

/// A decimal amount from a JSON string or number, normalised to 2 places.
pub(super) fn decimal(v: &Value) -> Option<String> {
    let n = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    n.is_finite().then(|| format!("{n:.2}"))
}

pub(super) fn detail(status: StatusCode, text: &str) -> (StatusCode, Value) {
    (status, json!({"detail": text}))
}

pub(super) fn refusal(r: Refusal) -> (StatusCode, Value) {
    match r {
        Refusal::NotFound(what) => detail(
            StatusCode::NOT_FOUND,
            &format!("No {what} matches the given query."),
        ),
        Refusal::Invalid(why) => detail(StatusCode::BAD_REQUEST, &why),
        Refusal::InvalidBody(body) => (StatusCode::BAD_REQUEST, body),
    }
}
