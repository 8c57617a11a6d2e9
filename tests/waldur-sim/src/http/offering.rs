//! The offering: details, components, user attributes and offering users.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::world::{Listed, Refusal, World, by_uuid, new_uuid, norm, uuid_eq, uuid_in, uuids};

use super::Params;
use super::answer::{
    ApiAnswer, SIM_EPOCH, ok, page, page_at, param, params_all, positions_of, query_key, required,
    sparse, str_field,
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
            let taken = w
                .resources
                .values()
                .any(|r| r.backend_id == backend_id && (all || norm(&r.offering_uuid) == offering));
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
            let o =
                by_uuid(&w.offerings, id).ok_or_else(|| Refusal::NotFound("offering".into()))?;
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
                    .map(|k| json!({"uuid": k.uuid, "name": k.name, "public_key": k.public_key}))
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
                return Ok(Some(page(
                    items,
                    params,
                    "marketplace-offering-users/",
                    |u| w.offering_user_json(u),
                )));
            }
            let path = "marketplace-offering-users/";
            let offerings = uuids(&params_all(params, "offering_uuid"));
            let users = uuids(&params_all(params, "user_uuid"));
            let positions = w.list_positions(Listed::OfferingUsers, query_key(path, params), |w| {
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
        _ => return Ok(None),
    }))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
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
