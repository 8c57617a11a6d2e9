//! Component usages and per-user usages, reads and writes.

use std::borrow::Cow;
use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::Value;

use crate::world::{
    ComponentUsage, Listed, Refusal, UsageItem, UserUsage, World, by_uuid, norm, uuid_eq, uuids,
};

use super::Params;
use super::answer::{
    ApiAnswer, at_positions, decimal, list_answer, ok, on_page, page, page_at, param, params_all,
    positions_of, query_key, required, sparse, str_field,
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
                return Ok(Some(page(
                    items,
                    params,
                    "marketplace-component-usages/",
                    |u| w.usage_json(u),
                )));
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
                return Ok(Some(page(items, params, path, |(u, name, uu)| {
                    w.user_usage_json(u, name, uu)
                })));
            }
            let positions = w.list_positions(Listed::UserUsages, query_key(path, params), |w| {
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
        _ => return Ok(None),
    }))
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
