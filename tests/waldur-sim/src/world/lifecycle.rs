//! Events, the order state machine and the JSON of orders, resources,
//! teams, usages and offering users.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

impl World {
    /// Queues an event for the subscribers of `offering` to `object_type`.
    pub fn emit(&mut self, object_type: &str, offering: &str, mut body: Value) {
        if !self.events_on {
            return;
        }
        if let Value::Object(o) = &mut body {
            o.entry("offering_uuid")
                .or_insert_with(|| Value::String(norm(offering)));
        }
        self.outbox.push(crate::events::Event {
            object_type: object_type.to_owned(),
            offering_uuid: norm(offering),
            body,
        });
    }

    /// Queues the order event Waldur sends on every order state change.
    pub fn emit_order(&mut self, uuid: &str) {
        if !self.events_on {
            return;
        }
        if let Some(o) = self.orders.get(&norm(uuid)) {
            let body =
                json!({"order_uuid": o.uuid, "order_state": o.state, "order_type": o.order_type});
            let offering = o.offering_uuid.clone();
            self.emit("order", &offering, body);
        }
    }

    /// Offerings with resources in a project.
    pub fn project_offerings(&self, project: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .resources
            .values()
            .filter(|r| uuid_eq(&r.project_uuid, project))
            .map(|r| norm(&r.offering_uuid))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Queues a user-role event for every offering used in the project.
    pub fn emit_role(&mut self, project: &str, user: &str, role: &str, granted: bool) {
        if !self.events_on {
            return;
        }
        let (project_name, username) = (
            self.projects
                .get(&norm(project))
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            self.users
                .get(&norm(user))
                .map(|u| u.username.clone())
                .unwrap_or_default(),
        );
        for offering in self.project_offerings(project) {
            let body = json!({"user_uuid": norm(user), "user_username": username, "project_uuid": norm(project), "project_name": project_name, "role_name": role, "granted": granted});
            self.emit("user_role", &offering, body);
        }
    }

    /// Queues a service or course account event (`create` or `delete`).
    pub fn emit_account(&mut self, uuid: &str, action: &str) {
        if !self.events_on {
            return;
        }
        let (a, course) = match (
            self.service_accounts.get(&norm(uuid)),
            self.course_accounts.get(&norm(uuid)),
        ) {
            (Some(a), _) => (a.clone(), false),
            (None, Some(a)) => (a.clone(), true),
            _ => return,
        };
        let kind = if course {
            "course_account"
        } else {
            "service_account"
        };
        let body = json!({"account_uuid": a.uuid, "account_username": a.username, "project_uuid": a.project_uuid, "action": action});
        for offering in self.project_offerings(&a.project_uuid) {
            self.emit(kind, &offering, body.clone());
        }
    }

    /// Queues a resource event.
    pub fn emit_resource(&mut self, resource: &str) {
        if !self.events_on {
            return;
        }
        if let Some(r) = self.resources.get(&norm(resource)) {
            let offering = r.offering_uuid.clone();
            self.emit("resource", &offering, json!({"resource_uuid": r.uuid}));
        }
    }

    pub(super) fn key<T>(map: &BTreeMap<String, T>, uuid: &str) -> Option<String> {
        let n = norm(uuid);
        map.contains_key(&n).then_some(n)
    }

    /// Looks an order up by UUID in either form.
    pub fn order_mut(&mut self, uuid: &str) -> Result<&mut Order, Refusal> {
        let k = Self::key(&self.orders, uuid).ok_or_else(|| Refusal::NotFound("order".into()))?;
        self.orders
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("order".into()))
    }

    /// Looks a resource up by UUID in either form.
    pub fn resource_mut(&mut self, uuid: &str) -> Result<&mut Resource, Refusal> {
        let k =
            Self::key(&self.resources, uuid).ok_or_else(|| Refusal::NotFound("resource".into()))?;
        self.resources
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("resource".into()))
    }

    /// pending-provider → executing.
    pub fn approve(&mut self, uuid: &str) -> Result<(), Refusal> {
        let o = self.order_mut(uuid)?;
        if o.state != "pending-provider" {
            return Err(Refusal::Invalid(format!(
                "order is {}, not pending-provider",
                o.state
            )));
        }
        o.state = "executing".into();
        o.modified = now();
        self.emit_order(uuid);
        Ok(())
    }

    /// pending-provider → rejected.
    pub fn reject(&mut self, uuid: &str, comment: &str) -> Result<(), Refusal> {
        let o = self.order_mut(uuid)?;
        if o.state != "pending-provider" {
            return Err(Refusal::Invalid(format!(
                "order is {}, not pending-provider",
                o.state
            )));
        }
        o.state = "rejected".into();
        o.provider_rejection_comment = comment.to_owned();
        o.modified = now();
        let (kind, resource) = (o.order_type.clone(), o.resource_uuid.clone());
        if kind == "Create"
            && let Ok(r) = self.resource_mut(&resource)
        {
            r.state = "Terminated".into();
        }
        self.emit_order(uuid);
        Ok(())
    }

    /// executing → done, with the resource consequences Waldur applies.
    pub fn set_done(&mut self, uuid: &str) -> Result<(), Refusal> {
        let o = self.order_mut(uuid)?;
        if o.state != "executing" {
            return Err(Refusal::Invalid(format!(
                "order is {}, not executing",
                o.state
            )));
        }
        o.state = "done".into();
        o.completed_at = Some(now());
        o.modified = now();
        let (kind, resource, limits, plan) = (
            o.order_type.clone(),
            o.resource_uuid.clone(),
            o.limits.clone(),
            o.plan_uuid.clone(),
        );
        let r = self.resource_mut(&resource)?;
        match kind.as_str() {
            "Create" | "Restore" => r.state = "OK".into(),
            "Update" => {
                r.state = "OK".into();
                if !limits.is_empty() {
                    r.limits = limits;
                }
                if plan.is_some() {
                    r.plan_uuid = plan;
                }
            }
            "Terminate" => r.state = "Terminated".into(),
            _ => {}
        }
        self.emit_order(uuid);
        Ok(())
    }

    /// executing → erred.
    pub fn set_erred(&mut self, uuid: &str, message: &str, traceback: &str) -> Result<(), Refusal> {
        let o = self.order_mut(uuid)?;
        if o.state != "executing" {
            return Err(Refusal::Invalid(format!(
                "order is {}, not executing",
                o.state
            )));
        }
        o.state = "erred".into();
        o.error_message = message.to_owned();
        o.error_traceback = traceback.to_owned();
        o.modified = now();
        let (kind, resource) = (o.order_type.clone(), o.resource_uuid.clone());
        let r = self.resource_mut(&resource)?;
        r.state = if kind == "Create" {
            "Erred".into()
        } else {
            "OK".into()
        };
        r.error_message = message.to_owned();
        self.emit_order(uuid);
        Ok(())
    }

    /// The JSON of an order, as `OrderDetails`.
    pub fn order_json(&self, o: &Order) -> Value {
        let r = self.resources.get(&norm(&o.resource_uuid));
        let p = r.and_then(|r| self.projects.get(&norm(&r.project_uuid)));
        let c = p.and_then(|p| self.customers.get(&norm(&p.customer_uuid)));
        json!({
            "uuid": o.uuid,
            "url": format!("http://sim/api/marketplace-orders/{}/", o.uuid),
            "type": o.order_type,
            "state": o.state,
            "offering_uuid": o.offering_uuid,
            "marketplace_resource_uuid": o.resource_uuid,
            "resource_uuid": o.resource_uuid,
            "resource_name": r.map(|r| r.name.clone()).unwrap_or_default(),
            "limits": o.limits,
            "plan_uuid": o.plan_uuid,
            "attributes": o.attributes,
            "backend_id": o.backend_id,
            "error_message": o.error_message,
            "error_traceback": o.error_traceback,
            "created": o.created,
            "modified": o.modified,
            "completed_at": o.completed_at,
            "created_by_username": o.created_by_username,
            "created_by_full_name": o.created_by_full_name,
            "project_uuid": p.map(|p| p.uuid.clone()).unwrap_or_default(),
            "project_slug": p.map(|p| p.slug.clone()).unwrap_or_default(),
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_slug": c.map(|c| c.slug.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
            "provider_message": o.provider_message,
        })
    }

    /// The JSON of a resource, as `Resource`.
    pub fn resource_json(&self, r: &Resource) -> Value {
        let p = self.projects.get(&norm(&r.project_uuid));
        let c = p.and_then(|p| self.customers.get(&norm(&p.customer_uuid)));
        let o = self.offerings.get(&norm(&r.offering_uuid));
        json!({
            "uuid": r.uuid,
            "url": format!("http://sim/api/marketplace-provider-resources/{}/", r.uuid),
            "name": r.name,
            "slug": r.slug,
            "state": r.state,
            "backend_id": r.backend_id,
            "effective_id": "",
            "offering_uuid": r.offering_uuid,
            "offering_plugin_options": o.map(|o| o.plugin_options.clone()).unwrap_or(Value::Null),
            "plan_uuid": r.plan_uuid,
            "project_uuid": r.project_uuid,
            "project_slug": p.map(|p| p.slug.clone()).unwrap_or_default(),
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_slug": c.map(|c| c.slug.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
            "limits": r.limits,
            "attributes": if r.attributes.is_null() { json!({}) } else { r.attributes.clone() },
            "backend_metadata": if r.backend_metadata.is_null() { json!({}) } else { r.backend_metadata.clone() },
            "endpoints": r.endpoints,
            "created": r.created,
            "end_date": r.end_date,
            "paused": r.paused,
            "downscaled": r.downscaled,
            "restrict_member_access": r.restrict_member_access,
        })
    }

    /// The team of a resource's project, as `ProjectUser` entries.
    pub fn team_json(&self, r: &Resource) -> Vec<Value> {
        self.project_roles(&r.project_uuid)
            .into_iter()
            .filter_map(|role| {
                let u = by_uuid(&self.users, &role.user_uuid)?;
                let ou = self.offering_user_of(&r.offering_uuid, &u.uuid);
                Some(json!({
                    "uuid": u.uuid,
                    "url": format!("http://sim/api/users/{}/", u.uuid),
                    "username": u.username,
                    "full_name": u.full_name,
                    "email": u.email,
                    "role": role.role,
                    "expiration_time": Value::Null,
                    "offering_user_username": ou.and_then(|o| o.username.clone()),
                    "offering_user_state": ou.map(|o| o.state.clone()),
                }))
            })
            .collect()
    }

    /// The JSON of a component usage, as `ComponentUsage`.
    pub fn usage_json(&self, u: &ComponentUsage) -> Value {
        let r = by_uuid(&self.resources, &u.resource_uuid);
        let component =
            r.and_then(|r| self.offering_component(&r.offering_uuid, &u.component_type));
        let amount: f64 = u.usage.parse().unwrap_or(0.0);
        json!({
            "uuid": u.uuid,
            "type": u.component_type,
            "name": component.and_then(|c| c["name"].as_str()).unwrap_or(&u.component_type),
            "measured_unit": component.and_then(|c| c["measured_unit"].as_str()).unwrap_or(""),
            "usage": amount,
            "date": u.date,
            "billing_period": u.billing_period,
            "description": u.description,
            "resource_uuid": u.resource_uuid,
            "resource_name": r.map(|r| r.name.clone()).unwrap_or_default(),
            "offering_uuid": r.map(|r| r.offering_uuid.clone()).unwrap_or_default(),
            "project_uuid": r.map(|r| r.project_uuid.clone()).unwrap_or_default(),
            "created": u.date,
            "recurring": false,
            "modified_by": Value::Null,
        })
    }

    /// The JSON of an offering user, as `OfferingUser`.
    pub fn offering_user_json(&self, ou: &OfferingUser) -> Value {
        let u = by_uuid(&self.users, &ou.user_uuid);
        let o = by_uuid(&self.offerings, &ou.offering_uuid);
        let c = o.and_then(|o| by_uuid(&self.customers, &o.customer_uuid));
        let full_name = u.map(|u| u.full_name.as_str()).unwrap_or("");
        let (first, last) = full_name.split_once(' ').unwrap_or((full_name, ""));
        json!({
            "uuid": ou.uuid,
            "url": format!("http://sim/api/marketplace-offering-users/{}/", ou.uuid),
            "user": format!("http://sim/api/users/{}/", ou.user_uuid),
            "offering": format!("http://sim/api/marketplace-provider-offerings/{}/", ou.offering_uuid),
            "offering_uuid": ou.offering_uuid,
            "offering_name": o.map(|o| o.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
            "user_uuid": ou.user_uuid,
            "username": ou.username,
            "state": ou.state,
            "is_restricted": ou.is_restricted,
            "user_username": u.map(|u| u.username.clone()).unwrap_or_default(),
            "user_full_name": full_name,
            "user_first_name": first,
            "user_last_name": last,
            "user_email": u.map(|u| u.email.clone()).unwrap_or_default(),
            "service_provider_comment": ou.service_provider_comment,
            "service_provider_comment_url": ou.service_provider_comment_url,
        })
    }
}
