//! Event subscriptions and their queues.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::world::{Refusal, World, new_uuid, norm};

use super::answer::{ApiAnswer, ok, required, str_field};
use super::{Params, SIM_USER_UUID};

/// Answers the call if it is one of this family's, else `None`.
pub(super) fn route(
    w: &mut World,
    m: &str,
    seg: &[&str],
    _params: &Params,
    body: Option<&Value>,
) -> Result<Option<ApiAnswer>, Refusal> {
    Ok(Some(match (m, seg) {
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
                return Ok(Some(ok(subscription_json(s))));
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
                return Ok(Some(ok(q.clone())));
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
        _ => return Ok(None),
    }))
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
