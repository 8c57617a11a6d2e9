//! Orders: list, read and the provider actions on them.

use serde_json::{Value, json};

use crate::world::{Refusal, World, norm, uuid_eq};

use super::Params;
use super::answer::{ApiAnswer, ok, page, param, params_all, sparse, status_ok, str_field};

/// Answers the call if it is one of this family's, else `None`.
pub(super) fn route(
    w: &mut World,
    m: &str,
    seg: &[&str],
    params: &Params,
    body: Option<&Value>,
) -> Result<Option<ApiAnswer>, Refusal> {
    Ok(Some(match (m, seg) {
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
        ("POST", ["marketplace-orders", id, "set_provider_info"]) => {
            let order = w.order_mut(id)?;
            if order.state != "pending-provider" && order.state != "pending-consumer" {
                return Err(Refusal::Invalid(format!(
                    "provider info can only be set on a pending order, this one is {}",
                    order.state
                )));
            }
            order.provider_message = str_field(body, "provider_message").unwrap_or("").to_owned();
            ok(json!({"detail": "Provider info has been updated."}))
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
        _ => return Ok(None),
    }))
}
