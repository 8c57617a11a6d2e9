//! The Waldur API: one function per resource family, tried in turn.

use axum::http::Method;
use serde_json::{Value, json};

use crate::world::{Listed, Refusal, World, by_uuid};

use super::answer::refusal;
use super::answer::{ApiAnswer, SIM_EPOCH, from, ok, sparse};
use super::{
    Params, SIM_USER_UUID, directory, identities, offering, orders, resources, subscriptions, usage,
};

/// The families, in the order they are tried.
type Family =
    fn(&mut World, &str, &[&str], &Params, Option<&Value>) -> Result<Option<ApiAnswer>, Refusal>;
const FAMILIES: [Family; 7] = [
    orders::route,
    resources::route,
    offering::route,
    identities::route,
    usage::route,
    subscriptions::route,
    directory::route,
];

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
        match (m, seg) {
            ("GET", ["version"]) => return Ok(ok(json!({"version": "8.0.5"}))),
            ("GET", ["users", "me"]) => return Ok(ok(sparse(me_json(w), params))),
            _ => {}
        }
        for family in FAMILIES {
            if let Some(answer) = family(w, m, seg, params, body)? {
                return Ok(answer);
            }
        }
        Err(Refusal::NotFound("endpoint".into()))
    })();
    result.unwrap_or_else(|r| from(refusal(r)))
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
