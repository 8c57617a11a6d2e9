//! The simulator's state and Waldur's state rules.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// Whether a stored UUID (either form) equals `wanted` in [`norm`] form,
/// without allocating.
pub fn uuid_eq(stored: &str, wanted: &str) -> bool {
    if stored.len() == wanted.len() {
        return stored.eq_ignore_ascii_case(wanted);
    }
    stored
        .chars()
        .filter(|c| *c != '-')
        .flat_map(char::to_lowercase)
        .eq(wanted.chars())
}

/// A map entry by UUID in either form (no allocation when the key is
/// already normal).
pub fn by_uuid<'a, T>(map: &'a BTreeMap<String, T>, uuid: &str) -> Option<&'a T> {
    map.get(uuid).or_else(|| map.get(&norm(uuid)))
}

/// UUID filter values in normal form; `None` when there is no filter.
pub(crate) fn uuids(values: &[&str]) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| values.iter().map(|v| norm(v)).collect())
}

/// Whether a stored UUID passes a filter made by [`uuids`].
pub(crate) fn uuid_in(wanted: &Option<Vec<String>>, stored: &str) -> bool {
    wanted
        .as_ref()
        .is_none_or(|w| w.iter().any(|w| uuid_eq(stored, w)))
}

/// An amount as Waldur stores decimals: 2 places.
pub fn decimal2(n: f64) -> String {
    format!("{n:.2}")
}

/// The offering username fields exposed by default.
pub const DEFAULT_EXPOSED_FIELDS: [&str; 3] = ["username", "full_name", "email"];

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
    /// User attributes exposed to the provider (`user-attribute-config`).
    pub exposed_fields: Vec<String>,
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
    pub is_restricted: bool,
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
    /// Per-user usage by username.
    pub user_usages: BTreeMap<String, UserUsage>,
}

/// One user's share of a component usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserUsage {
    pub uuid: String,
    /// A decimal string, 2 places.
    pub usage: String,
    pub date: String,
    /// The offering user URL, if the reporter gave one.
    pub user: Option<String>,
}

/// A per-user component limit of a resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserLimit {
    pub uuid: String,
    pub resource_uuid: String,
    pub username: String,
    pub component_type: String,
    /// A decimal string, 2 places.
    pub limit: String,
}

/// A project service account or a course account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    pub uuid: String,
    pub project_uuid: String,
    pub username: String,
    /// `OK`, `Closed` or `Erred`.
    pub state: String,
    pub email: String,
    pub created: String,
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
    /// 400 with this body.
    InvalidBody(Value),
}

/// The text Waldur answers for usage in a past billing period.
pub const BACKFILL_REFUSAL: &str =
    "Usage reporting for backfilling past billing periods is not allowed.";

/// Lookup indexes, rebuilt from the maps when their sizes change (so direct
/// inserts into the public maps stay correct) and kept up to date by the
/// insert functions of [`World`].
#[derive(Debug, Clone, Default)]
struct Indexes {
    /// `resource/period/type` → usage uuid.
    usage_keys: BTreeMap<String, String>,
    usages_seen: usize,
    /// `resource/username/component` → limit uuid.
    limit_keys: BTreeMap<String, String>,
    limits_seen: usize,
    /// (offering, user) → offering user uuid.
    offering_user_of: HashMap<(String, String), String>,
    offering_users_seen: usize,
    /// username → user uuid.
    user_by_name: HashMap<String, String>,
    users_seen: usize,
    /// project → positions in `roles`.
    roles_by_project: HashMap<String, Vec<usize>>,
    roles_seen: usize,
}

fn usage_key(resource: &str, period: &str, kind: &str) -> String {
    format!("{}/{period}/{kind}", norm(resource))
}

fn limit_key(resource: &str, username: &str, component: &str) -> String {
    format!("{}/{username}/{component}", norm(resource))
}

/// The entries of an index whose key starts with `prefix`.
fn prefixed<'a>(
    index: &'a BTreeMap<String, String>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    index
        .range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
}

/// `YYYY-MM` of an ISO date or date-time.
pub fn month_of(date: &str) -> Option<&str> {
    let m = date.get(..7)?;
    let b = m.as_bytes();
    (b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5..].iter().all(u8::is_ascii_digit))
        .then_some(m)
}

/// The current UTC month, `YYYY-MM`.
pub fn current_month() -> String {
    jiff::Timestamp::now().to_string().chars().take(7).collect()
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
    /// Per-user component limits by uuid.
    pub user_limits: BTreeMap<String, UserLimit>,
    /// Project service accounts by uuid.
    pub service_accounts: BTreeMap<String, Account>,
    /// Course accounts by uuid.
    pub course_accounts: BTreeMap<String, Account>,
    /// Membership sync statuses reported per resource.
    pub membership_statuses: BTreeMap<String, Vec<Value>>,
    /// Refuse usage for billing periods before the current month.
    pub refuse_backfill: bool,
    /// Resource import requests by uuid (`state`: new, processing, done, erred).
    pub import_requests: BTreeMap<String, Value>,
    /// Importable backend resources by uuid.
    pub backend_resources: BTreeMap<String, Value>,
    /// Periodic-settings command results reported by the agent.
    pub periodic_reports: Vec<Value>,
    /// Events waiting to be published (only while publishing is on).
    #[serde(skip)]
    pub outbox: Vec<crate::events::Event>,
    /// Whether state changes queue events.
    #[serde(skip)]
    pub events_on: bool,
    #[serde(skip)]
    idx: Indexes,
    /// Moves on every possible change of anything.
    #[serde(skip)]
    generation: u64,
    /// Moves on API changes of one collection ([`Listed`]).
    #[serde(skip)]
    listed_generations: [u64; 4],
    /// Positions of the records matching a list query, by query.
    #[serde(skip)]
    list_cache: HashMap<String, CachedList>,
}

/// A large collection whose list queries are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    OfferingUsers = 0,
    Resources = 1,
    Usages = 2,
    UserUsages = 3,
}

/// Positions (in map order; the second is the user usage within its
/// record) of the records matching a query, and the generations they are
/// valid for.
#[derive(Debug, Clone)]
struct CachedList {
    generations: (u64, u64),
    positions: std::sync::Arc<Vec<(u32, u32)>>,
}

/// Queries kept in the list cache at most.
const LIST_CACHE_SIZE: usize = 64;

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

/// An offering user action's allowed source states and target state.
fn offering_user_transition(action: &str) -> Option<(&'static [&'static str], &'static str)> {
    Some(match action {
        "begin_creating" => (&["Requested", "Error creating"], "Creating"),
        "set_pending_account_linking" => (
            &["Creating", "Pending additional validation"],
            "Pending account linking",
        ),
        "set_pending_additional_validation" => (
            &["Creating", "Pending account linking"],
            "Pending additional validation",
        ),
        "set_validation_complete" => (
            &["Pending account linking", "Pending additional validation"],
            "OK",
        ),
        "set_error_creating" => (&["Requested", "Creating"], "Error creating"),
        _ => return None,
    })
}

/// One item of a `set_usage` call.
#[derive(Debug, Clone, Default)]
pub struct UsageItem {
    /// Component type.
    pub component_type: String,
    /// Amount, a decimal string with 2 places.
    pub amount: String,
    /// Description (kept from the first report).
    pub description: String,
}

impl World {
    // ------------------------------------------------------------ indexes

    /// Notes a possible change of anything: cached list positions are
    /// dropped. [`crate::Sim::world`] does this.
    pub fn touch(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Notes an API change of one collection.
    pub(crate) fn touch_listed(&mut self, which: Listed) {
        let g = &mut self.listed_generations[which as usize];
        *g = g.wrapping_add(1);
    }

    /// The positions of the records matching a list query of a collection:
    /// cached until the collection may have changed, else `scan`ned.
    pub(crate) fn list_positions(
        &mut self,
        which: Listed,
        query: String,
        scan: impl FnOnce(&World) -> Vec<(u32, u32)>,
    ) -> std::sync::Arc<Vec<(u32, u32)>> {
        let generations = (self.generation, self.listed_generations[which as usize]);
        if let Some(c) = self.list_cache.get(&query)
            && c.generations == generations
        {
            return c.positions.clone();
        }
        let positions = std::sync::Arc::new(scan(self));
        if self.list_cache.len() >= LIST_CACHE_SIZE {
            self.list_cache.retain(|_, c| c.generations == generations);
            if self.list_cache.len() >= LIST_CACHE_SIZE {
                self.list_cache.clear();
            }
        }
        self.list_cache.insert(
            query,
            CachedList {
                generations,
                positions: positions.clone(),
            },
        );
        positions
    }

    /// Rebuilds the lookup indexes whose maps changed size behind the
    /// insert functions' back (direct edits of the public maps).
    pub fn reindex(&mut self) {
        if self.idx.usages_seen != self.usages.len() {
            let mut keys = BTreeMap::new();
            for u in self.usages.values() {
                keys.entry(usage_key(
                    &u.resource_uuid,
                    &u.billing_period,
                    &u.component_type,
                ))
                .or_insert_with(|| u.uuid.clone());
            }
            self.idx.usage_keys = keys;
            self.idx.usages_seen = self.usages.len();
        }
        if self.idx.limits_seen != self.user_limits.len() {
            let mut keys = BTreeMap::new();
            for l in self.user_limits.values() {
                keys.entry(limit_key(&l.resource_uuid, &l.username, &l.component_type))
                    .or_insert_with(|| l.uuid.clone());
            }
            self.idx.limit_keys = keys;
            self.idx.limits_seen = self.user_limits.len();
        }
        if self.idx.offering_users_seen != self.offering_users.len() {
            let mut of = HashMap::with_capacity(self.offering_users.len());
            for ou in self.offering_users.values() {
                of.entry((norm(&ou.offering_uuid), norm(&ou.user_uuid)))
                    .or_insert_with(|| ou.uuid.clone());
            }
            self.idx.offering_user_of = of;
            self.idx.offering_users_seen = self.offering_users.len();
        }
        if self.idx.users_seen != self.users.len() {
            let mut by_name = HashMap::with_capacity(self.users.len());
            for u in self.users.values() {
                by_name
                    .entry(u.username.clone())
                    .or_insert_with(|| u.uuid.clone());
            }
            self.idx.user_by_name = by_name;
            self.idx.users_seen = self.users.len();
        }
        if self.idx.roles_seen != self.roles.len() {
            self.rebuild_roles();
        }
    }

    fn rebuild_roles(&mut self) {
        let mut by_project: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in self.roles.iter().enumerate() {
            by_project.entry(norm(&r.project_uuid)).or_default().push(i);
        }
        self.idx.roles_by_project = by_project;
        self.idx.roles_seen = self.roles.len();
    }

    // -------------------------------------------------------------- users

    /// A user by Waldur username.
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        if self.idx.users_seen == self.users.len() {
            let uuid = self.idx.user_by_name.get(username)?;
            self.users.get(uuid).filter(|u| u.username == username)
        } else {
            self.users.values().find(|u| u.username == username)
        }
    }

    /// Adds a user unless the username exists; returns the user's uuid.
    pub fn add_user(&mut self, username: &str, email: &str, full_name: &str) -> String {
        self.reindex();
        if let Some(u) = self.user_by_username(username) {
            return u.uuid.clone();
        }
        let user = User {
            uuid: new_uuid(),
            username: username.to_owned(),
            full_name: full_name.to_owned(),
            email: email.to_owned(),
        };
        let uuid = user.uuid.clone();
        self.idx
            .user_by_name
            .insert(username.to_owned(), uuid.clone());
        self.users.insert(uuid.clone(), user);
        self.idx.users_seen = self.users.len();
        uuid
    }

    /// Grants (or changes) a user's role in a project.
    pub fn grant_role(&mut self, project: &str, user: &str, role: &str) -> Result<(), Refusal> {
        self.reindex();
        let (project, user) = (norm(project), norm(user));
        if !self.projects.contains_key(&project) {
            return Err(Refusal::NotFound("project".into()));
        }
        if !self.users.contains_key(&user) {
            return Err(Refusal::NotFound("user".into()));
        }
        let positions = self
            .idx
            .roles_by_project
            .get(&project)
            .cloned()
            .unwrap_or_default();
        if let Some(i) = positions.into_iter().find(|i| {
            self.roles
                .get(*i)
                .is_some_and(|r| uuid_eq(&r.user_uuid, &user))
        }) && let Some(r) = self.roles.get_mut(i)
        {
            r.role = role.to_owned();
            self.emit_role(&project, &user, role, true);
            return Ok(());
        }
        self.roles.push(Role {
            project_uuid: project.clone(),
            user_uuid: user.clone(),
            role: role.to_owned(),
        });
        self.idx
            .roles_by_project
            .entry(project.clone())
            .or_default()
            .push(self.roles.len() - 1);
        self.idx.roles_seen = self.roles.len();
        self.emit_role(&project, &user, role, true);
        Ok(())
    }

    /// Removes a user's roles in a project (nothing to remove is fine).
    pub fn revoke_role(&mut self, project: &str, user: &str) {
        let (project, user) = (norm(project), norm(user));
        let revoked: Vec<String> = self
            .roles
            .iter()
            .filter(|r| uuid_eq(&r.project_uuid, &project) && uuid_eq(&r.user_uuid, &user))
            .map(|r| r.role.clone())
            .collect();
        self.roles
            .retain(|r| !(uuid_eq(&r.project_uuid, &project) && uuid_eq(&r.user_uuid, &user)));
        if !revoked.is_empty() {
            self.rebuild_roles();
        }
        for role in revoked {
            self.emit_role(&project, &user, &role, false);
        }
    }

    /// The role grants of a project.
    pub fn project_roles(&self, project: &str) -> Vec<&Role> {
        let project = norm(project);
        if self.idx.roles_seen == self.roles.len() {
            self.idx
                .roles_by_project
                .get(&project)
                .map(|positions| {
                    positions
                        .iter()
                        .filter_map(|i| self.roles.get(*i))
                        .filter(|r| uuid_eq(&r.project_uuid, &project))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.roles
                .iter()
                .filter(|r| uuid_eq(&r.project_uuid, &project))
                .collect()
        }
    }

    // ----------------------------------------------------- offering users

    /// Inserts an offering user, or updates the state (and the username,
    /// when given) of the existing one of that offering and user; returns
    /// its uuid.
    pub fn add_offering_user(
        &mut self,
        offering: &str,
        user: &str,
        state: &str,
        username: Option<&str>,
    ) -> String {
        self.reindex();
        let (offering, user) = (norm(offering), norm(user));
        if let Some(uuid) = self
            .idx
            .offering_user_of
            .get(&(offering.clone(), user.clone()))
            .cloned()
            && let Some(ou) = self.offering_users.get_mut(&uuid)
        {
            ou.state = state.to_owned();
            if let Some(name) = username {
                ou.username = Some(name.to_owned());
            }
            return uuid;
        }
        let ou = OfferingUser {
            uuid: new_uuid(),
            offering_uuid: offering.clone(),
            user_uuid: user.clone(),
            username: username.map(str::to_owned),
            state: state.to_owned(),
            ..Default::default()
        };
        let uuid = ou.uuid.clone();
        let body = json!({"offering_user_uuid": uuid, "user_uuid": user, "username": username, "action": "create", "attributes": {}, "changed_attributes": [], "resource_backend_ids": []});
        self.emit("offering_user", &offering, body);
        self.offering_users.insert(uuid.clone(), ou);
        self.idx
            .offering_user_of
            .insert((offering, user), uuid.clone());
        self.idx.offering_users_seen = self.offering_users.len();
        uuid
    }

    /// The offering user of a user in an offering.
    pub fn offering_user_of(&self, offering: &str, user: &str) -> Option<&OfferingUser> {
        let (offering, user) = (norm(offering), norm(user));
        if self.idx.offering_users_seen == self.offering_users.len() {
            let uuid = self.idx.offering_user_of.get(&(offering, user))?;
            self.offering_users.get(uuid)
        } else {
            self.offering_users
                .values()
                .find(|ou| uuid_eq(&ou.offering_uuid, &offering) && uuid_eq(&ou.user_uuid, &user))
        }
    }

    /// Looks an offering user up by UUID in either form.
    pub fn offering_user_mut(&mut self, uuid: &str) -> Result<&mut OfferingUser, Refusal> {
        let k = Self::key(&self.offering_users, uuid)
            .ok_or_else(|| Refusal::NotFound("offering user".into()))?;
        self.offering_users
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("offering user".into()))
    }

    /// A state action on an offering user (`begin_creating`,
    /// `set_pending_account_linking`, `set_pending_additional_validation`,
    /// `set_validation_complete`, `set_error_creating`).
    pub fn offering_user_action(
        &mut self,
        uuid: &str,
        action: &str,
        comment: &str,
        comment_url: &str,
    ) -> Result<(), Refusal> {
        let (from, to) =
            offering_user_transition(action).ok_or_else(|| Refusal::NotFound("action".into()))?;
        let ou = self.offering_user_mut(uuid)?;
        if !from.contains(&ou.state.as_str()) {
            return Err(Refusal::Invalid(format!(
                "Offering user is in state {}; {action} needs {}.",
                ou.state,
                from.join(" or ")
            )));
        }
        ou.state = to.to_owned();
        match action {
            "set_pending_account_linking" | "set_pending_additional_validation" => {
                ou.service_provider_comment = comment.to_owned();
                ou.service_provider_comment_url = comment_url.to_owned();
            }
            "set_validation_complete" => {
                ou.service_provider_comment.clear();
                ou.service_provider_comment_url.clear();
            }
            _ => {}
        }
        Ok(())
    }

    /// Sets an offering user's username; a `Requested` or `Creating` user
    /// with a non-empty username becomes `OK` (Waldur's auto-transition).
    pub fn set_offering_username(
        &mut self,
        uuid: &str,
        username: Option<&str>,
    ) -> Result<(), Refusal> {
        let ou = self.offering_user_mut(uuid)?;
        ou.username = username.map(str::to_owned);
        if username.is_some_and(|u| !u.is_empty())
            && (ou.state == "Requested" || ou.state == "Creating")
        {
            ou.state = "OK".into();
        }
        let (offering, user, ou_uuid) = (
            ou.offering_uuid.clone(),
            ou.user_uuid.clone(),
            ou.uuid.clone(),
        );
        if let Some(name) = username.filter(|u| self.events_on && !u.is_empty()) {
            let projects: Vec<String> = self
                .roles
                .iter()
                .filter(|r| uuid_eq(&r.user_uuid, &user))
                .map(|r| norm(&r.project_uuid))
                .collect();
            let ids: Vec<String> = self
                .resources
                .values()
                .filter(|r| uuid_eq(&r.offering_uuid, &offering))
                .filter(|r| projects.contains(&norm(&r.project_uuid)) && !r.backend_id.is_empty())
                .map(|r| r.backend_id.clone())
                .collect();
            let body = json!({"offering_user_uuid": ou_uuid, "user_uuid": user, "username": name, "action": "username_set", "attributes": {}, "changed_attributes": [], "resource_backend_ids": ids});
            self.emit("offering_user", &offering, body);
        }
        Ok(())
    }

    // -------------------------------------------------------------- usage

    /// The usage record of a resource, component and billing period
    /// (`YYYY-MM-01`).
    pub fn usage_of(&self, resource: &str, kind: &str, period: &str) -> Option<&ComponentUsage> {
        if self.idx.usages_seen == self.usages.len() {
            let uuid = self
                .idx
                .usage_keys
                .get(&usage_key(resource, period, kind))?;
            self.usages.get(uuid)
        } else {
            let resource = norm(resource);
            self.usages.values().find(|u| {
                uuid_eq(&u.resource_uuid, &resource)
                    && u.component_type == kind
                    && u.billing_period == period
            })
        }
    }

    /// The usage records of a resource, by billing period then type; only
    /// one billing period (`YYYY-MM-01`) when given.
    pub fn resource_usages(&self, resource: &str, period: Option<&str>) -> Vec<&ComponentUsage> {
        if self.idx.usages_seen == self.usages.len() {
            let prefix = match period {
                Some(p) => format!("{}/{p}/", norm(resource)),
                None => format!("{}/", norm(resource)),
            };
            prefixed(&self.idx.usage_keys, &prefix)
                .filter_map(|uuid| self.usages.get(uuid))
                .collect()
        } else {
            let resource = norm(resource);
            let mut out: Vec<&ComponentUsage> = self
                .usages
                .values()
                .filter(|u| uuid_eq(&u.resource_uuid, &resource))
                .filter(|u| period.is_none_or(|p| u.billing_period == p))
                .collect();
            out.sort_by(|a, b| {
                (&a.billing_period, &a.component_type).cmp(&(&b.billing_period, &b.component_type))
            });
            out
        }
    }

    /// Reports usage of a resource (`set_usage`): one record per resource,
    /// component and billing period (the month of `date`), updated in
    /// place. Refuses unknown resources, bad dates and, with
    /// `refuse_backfill`, months before the current one. Returns the
    /// record uuids.
    pub fn set_usage(
        &mut self,
        resource: &str,
        date: &str,
        items: &[UsageItem],
    ) -> Result<Vec<String>, Refusal> {
        self.reindex();
        let resource = norm(resource);
        if !self.resources.contains_key(&resource) {
            return Err(Refusal::Invalid(
                "resource: Object with uuid does not exist.".into(),
            ));
        }
        let month = month_of(date).ok_or_else(|| {
            Refusal::Invalid("date: Datetime has wrong format. Use ISO 8601.".into())
        })?;
        if self.refuse_backfill && *month < *current_month() {
            return Err(Refusal::InvalidBody(
                json!({"non_field_errors": [BACKFILL_REFUSAL]}),
            ));
        }
        let period = format!("{month}-01");
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let key = usage_key(&resource, &period, &item.component_type);
            if let Some(u) = self
                .idx
                .usage_keys
                .get(&key)
                .and_then(|uuid| self.usages.get_mut(uuid))
            {
                u.usage = item.amount.clone();
                u.date = date.to_owned();
                out.push(u.uuid.clone());
                continue;
            }
            let u = ComponentUsage {
                uuid: new_uuid(),
                resource_uuid: resource.clone(),
                component_type: item.component_type.clone(),
                usage: item.amount.clone(),
                date: date.to_owned(),
                billing_period: period.clone(),
                description: item.description.clone(),
                user_usages: BTreeMap::new(),
            };
            out.push(u.uuid.clone());
            self.idx.usage_keys.insert(key, u.uuid.clone());
            self.usages.insert(u.uuid.clone(), u);
            self.idx.usages_seen = self.usages.len();
        }
        Ok(out)
    }

    /// Sets per-user usage on a usage record: one entry per username,
    /// updated in place (its uuid stays).
    pub fn set_user_usages(
        &mut self,
        usage: &str,
        items: Vec<(String, UserUsage)>,
    ) -> Result<(), Refusal> {
        let k = Self::key(&self.usages, usage)
            .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
        let u = self
            .usages
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
        for (username, new) in items {
            match u.user_usages.get_mut(&username) {
                Some(existing) => {
                    existing.usage = new.usage;
                    existing.date = new.date;
                    if new.user.is_some() {
                        existing.user = new.user;
                    }
                }
                None => {
                    let uuid = if new.uuid.is_empty() {
                        new_uuid()
                    } else {
                        new.uuid.clone()
                    };
                    u.user_usages.insert(username, UserUsage { uuid, ..new });
                }
            }
        }
        Ok(())
    }

    // --------------------------------------------------- per-user limits

    /// Sets (or replaces) a user's limit of a component on a resource;
    /// returns the limit's uuid.
    pub fn set_user_limit(
        &mut self,
        resource: &str,
        username: &str,
        component: &str,
        limit: &str,
    ) -> String {
        self.reindex();
        let key = limit_key(resource, username, component);
        if let Some(l) = self
            .idx
            .limit_keys
            .get(&key)
            .and_then(|uuid| self.user_limits.get_mut(uuid))
        {
            l.limit = limit.to_owned();
            return l.uuid.clone();
        }
        let l = UserLimit {
            uuid: new_uuid(),
            resource_uuid: norm(resource),
            username: username.to_owned(),
            component_type: component.to_owned(),
            limit: limit.to_owned(),
        };
        let uuid = l.uuid.clone();
        self.idx.limit_keys.insert(key, uuid.clone());
        self.user_limits.insert(uuid.clone(), l);
        self.idx.limits_seen = self.user_limits.len();
        uuid
    }

    /// Removes every per-user limit of a resource.
    pub fn clear_user_limits(&mut self, resource: &str) {
        let resource = norm(resource);
        self.user_limits
            .retain(|_, l| !uuid_eq(&l.resource_uuid, &resource));
        self.reindex();
    }

    /// The per-user limits of a resource, by username then component.
    pub fn resource_user_limits(&self, resource: &str) -> Vec<&UserLimit> {
        let resource = norm(resource);
        if self.idx.limits_seen == self.user_limits.len() {
            let prefix = format!("{resource}/");
            prefixed(&self.idx.limit_keys, &prefix)
                .filter_map(|uuid| self.user_limits.get(uuid))
                .collect()
        } else {
            self.user_limits
                .values()
                .filter(|l| uuid_eq(&l.resource_uuid, &resource))
                .collect()
        }
    }

    // ----------------------------------------------------------- accounts

    /// The project uuids (normal form) with a resource of an offering.
    pub fn offering_projects(&self, offering: &str) -> HashSet<String> {
        let offering = norm(offering);
        self.resources
            .values()
            .filter(|r| uuid_eq(&r.offering_uuid, &offering))
            .map(|r| norm(&r.project_uuid))
            .collect()
    }

    /// Sets the state of a service or course account.
    pub fn set_account_state(&mut self, uuid: &str, state: &str) -> Result<(), Refusal> {
        let k = norm(uuid);
        let account = match self.service_accounts.get_mut(&k) {
            Some(a) => a,
            None => self
                .course_accounts
                .get_mut(&k)
                .ok_or_else(|| Refusal::NotFound("account".into()))?,
        };
        account.state = state.to_owned();
        Ok(())
    }

    /// The component of an offering with this type.
    pub fn offering_component(&self, offering: &str, kind: &str) -> Option<&Value> {
        by_uuid(&self.offerings, offering)?
            .components
            .iter()
            .find(|c| c["type"] == kind)
    }

    // --------------------------------------------------------------- JSON

    /// The JSON of a per-user usage, as `ComponentUserUsage`.
    pub fn user_usage_json(&self, u: &ComponentUsage, username: &str, uu: &UserUsage) -> Value {
        let r = by_uuid(&self.resources, &u.resource_uuid);
        let p = r.and_then(|r| by_uuid(&self.projects, &r.project_uuid));
        let c = p.and_then(|p| by_uuid(&self.customers, &p.customer_uuid));
        let o = r.and_then(|r| by_uuid(&self.offerings, &r.offering_uuid));
        let unit = r
            .and_then(|r| self.offering_component(&r.offering_uuid, &u.component_type))
            .and_then(|c| c["measured_unit"].as_str())
            .unwrap_or("");
        let amount: f64 = uu.usage.parse().unwrap_or(0.0);
        let mut v = json!({
            "uuid": uu.uuid,
            "url": format!("http://sim/api/marketplace-component-user-usages/{}/", uu.uuid),
            "component_usage": format!("http://sim/api/marketplace-component-usages/{}/", u.uuid),
            "username": username,
            "usage": amount,
            "measured_unit": unit,
            "description": "",
            "created": uu.date,
            "modified": uu.date,
            "backend_id": "",
            "date": uu.date,
            "billing_period": u.billing_period,
            "component_type": u.component_type,
            "resource_uuid": u.resource_uuid,
            "resource_name": r.map(|r| r.name.clone()).unwrap_or_default(),
            "offering_uuid": o.map(|o| o.uuid.clone()).unwrap_or_default(),
            "offering_name": o.map(|o| o.name.clone()).unwrap_or_default(),
            "project_uuid": p.map(|p| p.uuid.clone()).unwrap_or_default(),
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
        });
        // `user` is a URL and not nullable in the schema: absent when unknown.
        if let (Some(user), Value::Object(o)) = (&uu.user, &mut v) {
            o.insert("user".into(), Value::String(user.clone()));
        }
        v
    }

    /// The JSON of a per-user limit, as `ComponentUserUsageLimit`; the
    /// schema's `user` is the user's URL, `username` carries the username.
    pub fn user_limit_json(&self, l: &UserLimit) -> Value {
        let r = by_uuid(&self.resources, &l.resource_uuid);
        let component = r
            .and_then(|r| self.offering_component(&r.offering_uuid, &l.component_type))
            .and_then(|c| c["uuid"].as_str())
            .unwrap_or("");
        let user = match self.user_by_username(&l.username) {
            Some(u) => format!("http://sim/api/users/{}/", u.uuid),
            None => format!("http://sim/api/users/?username={}", l.username),
        };
        json!({
            "uuid": l.uuid,
            "url": format!("http://sim/api/component-user-usage-limits/{}/", l.uuid),
            "resource": format!("http://sim/api/marketplace-resources/{}/", l.resource_uuid),
            "resource_uuid": l.resource_uuid,
            "component": component,
            "component_type": l.component_type,
            "user": user,
            "username": l.username,
            "limit": l.limit,
        })
    }

    /// The JSON of a service account (`ProjectServiceAccount`) or, with
    /// `course`, a course account (`CourseAccount`).
    pub fn account_json(&self, a: &Account, course: bool) -> Value {
        let p = by_uuid(&self.projects, &a.project_uuid);
        let c = p.and_then(|p| by_uuid(&self.customers, &p.customer_uuid));
        let project_uuid = p
            .map(|p| p.uuid.clone())
            .unwrap_or_else(|| a.project_uuid.clone());
        let mut v = json!({
            "uuid": a.uuid,
            "created": a.created,
            "modified": a.created,
            "username": a.username,
            "state": a.state,
            "email": a.email,
            "description": "",
            "error_message": "",
            "error_traceback": "",
            "project": project_uuid,
            "project_uuid": project_uuid,
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
        });
        if let Value::Object(o) = &mut v {
            if course {
                o.insert(
                    "url".into(),
                    format!("http://sim/api/marketplace-course-accounts/{}/", a.uuid).into(),
                );
                o.insert(
                    "project_slug".into(),
                    p.map(|p| p.slug.clone()).unwrap_or_default().into(),
                );
                // Projects have no dates here: the account's day, and no end.
                o.insert(
                    "project_start_date".into(),
                    a.created.chars().take(10).collect::<String>().into(),
                );
                o.insert("project_end_date".into(), "".into());
                let user = self.user_by_username(&a.username);
                o.insert(
                    "user_uuid".into(),
                    user.map(|u| u.uuid.clone()).unwrap_or_default().into(),
                );
            } else {
                o.insert(
                    "url".into(),
                    format!("http://sim/api/marketplace-service-accounts/{}/", a.uuid).into(),
                );
                o.insert("token".into(), Value::Null);
                o.insert("expires_at".into(), Value::Null);
                o.insert("preferred_identifier".into(), a.username.clone().into());
                o.insert(
                    "customer_abbreviation".into(),
                    c.map(|c| c.slug.clone()).unwrap_or_default().into(),
                );
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_with_resource() -> (World, String) {
        let mut w = World::default();
        let r = Resource {
            uuid: new_uuid(),
            state: "OK".into(),
            ..Default::default()
        };
        let uuid = r.uuid.clone();
        w.resources.insert(uuid.clone(), r);
        (w, uuid)
    }

    fn item(kind: &str, amount: &str) -> UsageItem {
        UsageItem {
            component_type: kind.into(),
            amount: amount.into(),
            description: String::new(),
        }
    }

    #[test]
    fn set_usage_upserts_per_resource_type_and_month() {
        let (mut w, r) = world_with_resource();
        let first = w
            .set_usage(
                &r,
                "2026-11-05T00:00:00Z",
                &[item("cpu", "1.00"), item("mem", "2.00")],
            )
            .unwrap_or_default();
        let again = w
            .set_usage(&r, "2026-11-20T10:00:00Z", &[item("cpu", "3.50")])
            .unwrap_or_default();
        assert_eq!(again.first(), first.first(), "the record uuid stays");
        assert_eq!(w.usages.len(), 2);
        let cpu = w.usage_of(&r, "cpu", "2026-11-01").map(|u| u.usage.clone());
        assert_eq!(cpu.as_deref(), Some("3.50"));
        // A new month is a new record; listing is by period then type.
        w.set_usage(&r, "2026-12-01T00:00:00Z", &[item("cpu", "1.00")])
            .unwrap_or_default();
        let listed: Vec<(String, String)> = w
            .resource_usages(&r, None)
            .iter()
            .map(|u| (u.billing_period.clone(), u.component_type.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                ("2026-11-01".into(), "cpu".into()),
                ("2026-11-01".into(), "mem".into()),
                ("2026-12-01".into(), "cpu".into())
            ]
        );
        assert_eq!(w.resource_usages(&r, Some("2026-12-01")).len(), 1);
    }

    #[test]
    fn set_usage_refuses_unknown_resources_bad_dates_and_backfill() {
        let (mut w, r) = world_with_resource();
        assert!(matches!(
            w.set_usage(&new_uuid(), "2026-11-01T00:00:00Z", &[item("cpu", "1.00")]),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            w.set_usage(&r, "yesterday", &[item("cpu", "1.00")]),
            Err(Refusal::Invalid(_))
        ));
        w.refuse_backfill = true;
        let Err(Refusal::InvalidBody(body)) =
            w.set_usage(&r, "2000-01-01T00:00:00Z", &[item("cpu", "1.00")])
        else {
            panic!("backfill accepted");
        };
        assert!(
            body.to_string()
                .contains("backfilling past billing periods")
        );
        let now = jiff::Timestamp::now().to_string();
        assert!(w.set_usage(&r, &now, &[item("cpu", "1.00")]).is_ok());
        w.refuse_backfill = false;
        assert!(
            w.set_usage(&r, "2000-01-01T00:00:00Z", &[item("cpu", "1.00")])
                .is_ok()
        );
    }

    #[test]
    fn indexes_survive_direct_inserts() {
        let (mut w, r) = world_with_resource();
        let u = ComponentUsage {
            uuid: new_uuid(),
            resource_uuid: r.clone(),
            component_type: "cpu".into(),
            usage: "1.00".into(),
            billing_period: "2026-01-01".into(),
            ..Default::default()
        };
        let uuid = u.uuid.clone();
        w.usages.insert(uuid.clone(), u);
        // Stale index: lookups fall back to scanning, and reindex repairs.
        assert_eq!(
            w.usage_of(&r, "cpu", "2026-01-01").map(|u| u.uuid.clone()),
            Some(uuid.clone())
        );
        let again = w
            .set_usage(&r, "2026-01-31T00:00:00Z", &[item("cpu", "2")])
            .unwrap_or_default();
        assert_eq!(again, [uuid]);
        assert_eq!(w.usages.len(), 1);
    }

    #[test]
    fn user_usages_are_upserted_per_username() {
        let (mut w, r) = world_with_resource();
        let ids = w
            .set_usage(&r, "2026-11-05T00:00:00Z", &[item("cpu", "5.00")])
            .unwrap_or_default();
        let id = ids.first().cloned().unwrap_or_default();
        let uu = |usage: &str, user: Option<&str>| UserUsage {
            usage: usage.into(),
            date: "2026-11-05T00:00:00Z".into(),
            user: user.map(str::to_owned),
            ..Default::default()
        };
        w.set_user_usages(
            &id,
            vec![("alice".into(), uu("1.00", Some("http://x/ou/1/")))],
        )
        .unwrap_or_default();
        let first = w.usages[&id].user_usages["alice"].uuid.clone();
        w.set_user_usages(
            &id,
            vec![
                ("alice".into(), uu("2.00", None)),
                ("bob".into(), uu("3.00", None)),
            ],
        )
        .unwrap_or_default();
        let alice = &w.usages[&id].user_usages["alice"];
        assert_eq!(alice.uuid, first);
        assert_eq!(alice.usage, "2.00");
        assert_eq!(alice.user.as_deref(), Some("http://x/ou/1/"));
        assert_eq!(w.usages[&id].user_usages.len(), 2);
        assert_eq!(
            w.set_user_usages(&new_uuid(), vec![]),
            Err(Refusal::NotFound("component usage".into()))
        );
    }

    #[test]
    fn offering_user_state_machine() {
        let mut w = World::default();
        let user = w.add_user("alice", "alice@example.org", "Alice Example");
        let ou = w.add_offering_user(&new_uuid(), &user, "Requested", None);
        let act = |w: &mut World, a: &str| w.offering_user_action(&ou, a, "why", "http://c/");
        let state = |w: &World| w.offering_users[&ou].state.clone();
        // Wrong state: refused, unchanged.
        assert!(matches!(
            act(&mut w, "set_validation_complete"),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(state(&w), "Requested");
        assert_eq!(act(&mut w, "begin_creating"), Ok(()));
        assert_eq!(state(&w), "Creating");
        assert!(act(&mut w, "begin_creating").is_err());
        assert_eq!(act(&mut w, "set_pending_account_linking"), Ok(()));
        assert_eq!(state(&w), "Pending account linking");
        assert_eq!(w.offering_users[&ou].service_provider_comment, "why");
        assert_eq!(
            w.offering_users[&ou].service_provider_comment_url,
            "http://c/"
        );
        assert!(act(&mut w, "set_pending_account_linking").is_err());
        assert_eq!(act(&mut w, "set_pending_additional_validation"), Ok(()));
        assert_eq!(act(&mut w, "set_pending_account_linking"), Ok(()));
        assert!(act(&mut w, "set_error_creating").is_err());
        assert_eq!(act(&mut w, "set_validation_complete"), Ok(()));
        assert_eq!(state(&w), "OK");
        assert_eq!(w.offering_users[&ou].service_provider_comment, "");
        assert!(act(&mut w, "begin_creating").is_err());
        assert_eq!(
            act(&mut w, "no_such_action"),
            Err(Refusal::NotFound("action".into()))
        );
        // Error creating → Creating (retry) → username sets OK.
        let ou2 = w.add_offering_user(&new_uuid(), &user, "Requested", None);
        assert_eq!(
            w.offering_user_action(&ou2, "set_error_creating", "", ""),
            Ok(())
        );
        assert_eq!(w.offering_users[&ou2].state, "Error creating");
        assert_eq!(
            w.offering_user_action(&ou2, "begin_creating", "", ""),
            Ok(())
        );
        assert_eq!(w.set_offering_username(&ou2, Some("alice01")), Ok(()));
        assert_eq!(w.offering_users[&ou2].state, "OK");
        assert_eq!(w.offering_users[&ou2].username.as_deref(), Some("alice01"));
        // A username on a pending user does not complete validation.
        let ou3 = w.add_offering_user(&new_uuid(), &user, "Pending account linking", None);
        assert_eq!(w.set_offering_username(&ou3, Some("a")), Ok(()));
        assert_eq!(w.offering_users[&ou3].state, "Pending account linking");
        assert!(w.set_offering_username(&new_uuid(), Some("a")).is_err());
    }

    #[test]
    fn offering_users_are_unique_per_offering_and_user() {
        let mut w = World::default();
        let user = w.add_user("bob", "bob@example.org", "Bob");
        assert_eq!(w.add_user("bob", "other@example.org", "B"), user);
        let offering = new_uuid();
        let a = w.add_offering_user(&offering, &user, "Requested", None);
        let b = w.add_offering_user(&offering, &user, "OK", Some("bob"));
        assert_eq!(a, b);
        assert_eq!(w.offering_users.len(), 1);
        assert_eq!(
            w.offering_user_of(&offering, &user)
                .map(|o| o.state.clone()),
            Some("OK".into())
        );
        assert!(w.offering_user_of(&new_uuid(), &user).is_none());
    }

    #[test]
    fn roles_grant_change_and_revoke() {
        let mut w = World::default();
        let project = Project {
            uuid: new_uuid(),
            ..Default::default()
        };
        let p = project.uuid.clone();
        w.projects.insert(p.clone(), project);
        let alice = w.add_user("alice", "a@example.org", "A");
        let bob = w.add_user("bob", "b@example.org", "B");
        assert_eq!(w.grant_role(&p, &alice, "PROJECT.MEMBER"), Ok(()));
        assert_eq!(w.grant_role(&p, &bob, "PROJECT.MEMBER"), Ok(()));
        assert_eq!(w.grant_role(&p, &alice, "PROJECT.MANAGER"), Ok(()));
        let roles: Vec<(String, String)> = w
            .project_roles(&p)
            .iter()
            .map(|r| (r.user_uuid.clone(), r.role.clone()))
            .collect();
        assert_eq!(
            roles,
            [
                (alice.clone(), "PROJECT.MANAGER".into()),
                (bob.clone(), "PROJECT.MEMBER".into())
            ]
        );
        w.revoke_role(&p, &alice);
        assert_eq!(w.project_roles(&p).len(), 1);
        assert!(w.grant_role(&new_uuid(), &alice, "PROJECT.MEMBER").is_err());
        assert!(w.grant_role(&p, &new_uuid(), "PROJECT.MEMBER").is_err());
    }

    #[test]
    fn user_limits_upsert_and_clear() {
        let (mut w, r) = world_with_resource();
        let a = w.set_user_limit(&r, "alice", "cpu", "10.00");
        let b = w.set_user_limit(&r, "alice", "cpu", "20.00");
        assert_eq!(a, b);
        w.set_user_limit(&r, "bob", "cpu", "5.00");
        let other = new_uuid();
        w.set_user_limit(&other, "bob", "cpu", "5.00");
        let limits: Vec<(String, String)> = w
            .resource_user_limits(&r)
            .iter()
            .map(|l| (l.username.clone(), l.limit.clone()))
            .collect();
        assert_eq!(
            limits,
            [
                ("alice".into(), "20.00".into()),
                ("bob".into(), "5.00".into())
            ]
        );
        w.clear_user_limits(&r);
        assert!(w.resource_user_limits(&r).is_empty());
        assert_eq!(w.resource_user_limits(&other).len(), 1);
    }

    #[test]
    fn uuid_forms_compare_equal() {
        let n = new_uuid();
        let dashed = format!(
            "{}-{}-{}-{}-{}",
            &n[..8],
            &n[8..12],
            &n[12..16],
            &n[16..20],
            &n[20..]
        )
        .to_uppercase();
        assert!(uuid_eq(&dashed, &n));
        assert!(uuid_eq(&n, &n));
        assert!(!uuid_eq(&new_uuid(), &n));
        assert_eq!(month_of("2026-03-01T00:00:00Z"), Some("2026-03"));
        assert_eq!(month_of("26-3"), None);
    }
}
