//! The simulator's state and Waldur's state rules.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub provider_message: String,
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

mod lifecycle;
mod people;
mod usage;

#[cfg(test)]
mod tests;
