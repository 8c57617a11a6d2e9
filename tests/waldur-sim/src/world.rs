//! The simulator's state and Waldur's state rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A fresh hex UUID (32 characters), unique within the process.
pub fn new_uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = jiff::Timestamp::now().as_nanosecond() as u64;
    format!("{:016x}{:016x}", t ^ 0x5a5a_5a5a_5a5a_5a5a, n)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Hyphen-less lower-case form: Waldur accepts both in paths and filters.
pub fn norm(uuid: &str) -> String {
    uuid.chars()
        .filter(|c| *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A customer (organisation).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Customer {
    pub uuid: String,
    pub name: String,
    pub slug: String,
}

/// A project.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Project {
    pub uuid: String,
    pub name: String,
    pub slug: String,
    pub customer_uuid: String,
}

/// A Waldur user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub uuid: String,
    pub username: String,
    pub full_name: String,
    pub email: String,
}

/// A project role grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    pub project_uuid: String,
    pub user_uuid: String,
    pub role: String,
}

/// An offering with its components and plugin options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Offering {
    pub uuid: String,
    pub name: String,
    pub customer_uuid: String,
    pub components: Vec<Value>,
    pub plugin_options: Value,
}

/// A plan with quotas.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub uuid: String,
    pub name: String,
    pub offering_uuid: String,
    pub quotas: BTreeMap<String, f64>,
}

/// A service provider with its SSH keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceProvider {
    pub uuid: String,
    pub customer_uuid: String,
    pub keys: Vec<SshKey>,
}

/// A service provider key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SshKey {
    pub uuid: String,
    pub name: String,
    pub public_key: String,
}

/// An offering user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OfferingUser {
    pub uuid: String,
    pub offering_uuid: String,
    pub user_uuid: String,
    pub username: Option<String>,
    pub state: String,
    pub service_provider_comment: String,
    pub service_provider_comment_url: String,
}

/// A marketplace resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    pub uuid: String,
    pub name: String,
    pub slug: String,
    pub offering_uuid: String,
    pub project_uuid: String,
    pub plan_uuid: Option<String>,
    pub state: String,
    pub backend_id: String,
    pub limits: BTreeMap<String, i64>,
    pub attributes: Value,
    pub backend_metadata: Value,
    pub endpoints: Vec<Value>,
    pub created: String,
    pub end_date: Option<String>,
    pub paused: bool,
    pub downscaled: bool,
    pub restrict_member_access: bool,
    pub error_message: String,
    pub last_sync: Option<String>,
}

/// A marketplace order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Order {
    pub uuid: String,
    #[serde(rename = "type")]
    pub order_type: String,
    pub state: String,
    pub resource_uuid: String,
    pub offering_uuid: String,
    pub limits: BTreeMap<String, i64>,
    pub plan_uuid: Option<String>,
    pub attributes: Value,
    pub backend_id: String,
    pub error_message: String,
    pub error_traceback: String,
    pub created: String,
    pub modified: String,
    pub completed_at: Option<String>,
    pub created_by_username: String,
    pub created_by_full_name: String,
    pub provider_rejection_comment: String,
}

/// An agent identity with its services and processors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub uuid: String,
    pub name: String,
    pub offering: String,
    pub version: Option<String>,
    pub last_restarted: Option<String>,
    pub dependencies: Value,
    pub created: String,
    pub modified: String,
}

/// An agent service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentService {
    pub uuid: String,
    pub identity: String,
    pub name: String,
    pub mode: Option<String>,
    pub processors: Vec<Value>,
    pub created: String,
}

/// A component usage of a resource in a billing period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ComponentUsage {
    pub uuid: String,
    pub resource_uuid: String,
    #[serde(rename = "type")]
    pub component_type: String,
    /// The amount as Waldur stores it (a decimal string, 2 places).
    pub usage: String,
    pub date: String,
    /// First day of the month, `YYYY-MM-01`.
    pub billing_period: String,
    pub description: String,
    /// Per-user usage: username → decimal string.
    pub user_usages: BTreeMap<String, String>,
}

/// An event subscription of an agent identity, with its queues.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventSubscription {
    pub uuid: String,
    pub identity: String,
    pub observable_object_type: String,
    pub description: String,
    pub created: String,
    pub queues: Vec<Value>,
}

/// Why a state change was refused (HTTP 400/404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 404.
    NotFound(String),
    /// 400 with a detail.
    Invalid(String),
}

/// Everything the simulator knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct World {
    pub customers: BTreeMap<String, Customer>,
    pub projects: BTreeMap<String, Project>,
    pub users: BTreeMap<String, User>,
    pub roles: Vec<Role>,
    pub offerings: BTreeMap<String, Offering>,
    pub plans: BTreeMap<String, Plan>,
    pub service_providers: BTreeMap<String, ServiceProvider>,
    pub offering_users: BTreeMap<String, OfferingUser>,
    pub resources: BTreeMap<String, Resource>,
    pub orders: BTreeMap<String, Order>,
    pub identities: BTreeMap<String, Identity>,
    pub services: BTreeMap<String, AgentService>,
    pub usages: BTreeMap<String, ComponentUsage>,
    pub event_subscriptions: BTreeMap<String, EventSubscription>,
}

impl World {
    fn key<T>(map: &BTreeMap<String, T>, uuid: &str) -> Option<String> {
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
            "provider_message": "",
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
        self.roles
            .iter()
            .filter(|role| norm(&role.project_uuid) == norm(&r.project_uuid))
            .filter_map(|role| {
                let u = self.users.get(&norm(&role.user_uuid))?;
                let ou = self.offering_users.values().find(|ou| {
                    norm(&ou.user_uuid) == norm(&u.uuid)
                        && norm(&ou.offering_uuid) == norm(&r.offering_uuid)
                });
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
        let r = self.resources.get(&norm(&u.resource_uuid));
        let amount: f64 = u.usage.parse().unwrap_or(0.0);
        json!({
            "uuid": u.uuid,
            "type": u.component_type,
            "name": u.component_type,
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

    /// The JSON of an offering user.
    pub fn offering_user_json(&self, ou: &OfferingUser) -> Value {
        let u = self.users.get(&norm(&ou.user_uuid));
        json!({
            "uuid": ou.uuid,
            "url": format!("http://sim/api/marketplace-offering-users/{}/", ou.uuid),
            "offering_uuid": ou.offering_uuid,
            "user_uuid": ou.user_uuid,
            "username": ou.username,
            "state": ou.state,
            "is_restricted": false,
            "user_username": u.map(|u| u.username.clone()).unwrap_or_default(),
            "user_full_name": u.map(|u| u.full_name.clone()).unwrap_or_default(),
            "user_email": u.map(|u| u.email.clone()).unwrap_or_default(),
            "service_provider_comment": ou.service_provider_comment,
            "service_provider_comment_url": ou.service_provider_comment_url,
        })
    }
}
