//! Waldur objects as the coordinator reads them. Field names follow the
//! official OpenAPI schema (8.0.5); every field has a default so a newer or
//! sparser (`field=`) answer still decodes. Unknown fields are ignored:
//! Waldur adds fields between versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{InvalidUuid, Uuid};

/// The state of an order (Waldur `OrderState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Awaiting the consumer's approval.
    PendingConsumer,
    /// Awaiting the provider's approval.
    PendingProvider,
    /// Awaiting the project's start.
    PendingProject,
    /// Awaiting its start date.
    PendingStartDate,
    /// Approved; the provider executes it.
    Executing,
    /// Finished.
    Done,
    /// Failed.
    Erred,
    /// Canceled by the consumer.
    Canceled,
    /// Rejected.
    Rejected,
    /// A state this client does not know (a newer Waldur), as Waldur spelt
    /// it: never acted on.
    Other(String),
    /// No state in the answer.
    #[default]
    Missing,
}

impl OrderState {
    const KNOWN: [(Self, &'static str); 9] = [
        (Self::PendingConsumer, "pending-consumer"),
        (Self::PendingProvider, "pending-provider"),
        (Self::PendingProject, "pending-project"),
        (Self::PendingStartDate, "pending-start-date"),
        (Self::Executing, "executing"),
        (Self::Done, "done"),
        (Self::Erred, "erred"),
        (Self::Canceled, "canceled"),
        (Self::Rejected, "rejected"),
    ];

    /// The state as Waldur spells it (the `state` filter of order lists).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            Self::Missing => "",
            known => Self::KNOWN
                .iter()
                .find(|(k, _)| k == known)
                .map_or("", |(_, s)| s),
        }
    }

    /// Whether nothing is left to do for it (done, erred, canceled,
    /// rejected).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Done | Self::Erred | Self::Canceled | Self::Rejected
        )
    }
}

impl From<&str> for OrderState {
    fn from(s: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, name)| *name == s)
            .map_or_else(|| Self::Other(s.to_owned()), |(k, _)| k.clone())
    }
}

/// The type of an order (Waldur `RequestTypes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum OrderType {
    /// A new resource.
    Create,
    /// New limits (or plan) for a resource.
    Update,
    /// The end of a resource.
    Terminate,
    /// A terminated resource brought back.
    Restore,
    /// A type this client does not know, as Waldur spelt it: refused, never
    /// guessed.
    Other(String),
    /// No type in the answer.
    #[default]
    Missing,
}

impl OrderType {
    /// The type as Waldur spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Terminate => "Terminate",
            Self::Restore => "Restore",
            Self::Other(s) => s,
            Self::Missing => "",
        }
    }
}

impl From<&str> for OrderType {
    fn from(s: &str) -> Self {
        match s {
            "Create" => Self::Create,
            "Update" => Self::Update,
            "Terminate" => Self::Terminate,
            "Restore" => Self::Restore,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Both enums travel as their Waldur spelling.
macro_rules! as_waldur_text {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

as_waldur_text!(OrderState);
as_waldur_text!(OrderType);

/// A marketplace order (`OrderDetails`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Order {
    /// Order UUID.
    pub uuid: String,
    /// What it asks for.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Where it stands.
    pub state: OrderState,
    /// Offering UUID.
    pub offering_uuid: String,
    /// The marketplace resource.
    pub marketplace_resource_uuid: String,
    /// Resource name.
    pub resource_name: String,
    /// Order backend id (async orders).
    pub backend_id: String,
    /// Requested limits.
    pub limits: BTreeMap<String, i64>,
    /// Plan.
    pub plan_uuid: Option<String>,
    /// Order form attributes.
    pub attributes: Value,
    /// Project.
    pub project_uuid: String,
    /// Project slug.
    pub project_slug: String,
    /// Customer.
    pub customer_uuid: String,
    /// Customer slug.
    pub customer_slug: String,
    /// Orderer's username.
    pub created_by_username: String,
    /// Orderer's name.
    pub created_by_full_name: String,
    /// Creation time (ISO 8601).
    pub created: Option<String>,
    /// Last change (ISO 8601).
    pub modified: Option<String>,
    /// Provider message.
    pub provider_message: String,
    /// Consumer message (not in 8.0.5's OrderDetails; read when present).
    pub consumer_message: String,
}

impl Order {
    /// The order's UUID, checked.
    pub fn id(&self) -> Result<Uuid, InvalidUuid> {
        Uuid::parse("order.uuid", &self.uuid)
    }

    /// The order's resource UUID, checked.
    pub fn resource_id(&self) -> Result<Uuid, InvalidUuid> {
        Uuid::parse(
            "order.marketplace_resource_uuid",
            &self.marketplace_resource_uuid,
        )
    }
}

/// A provider resource (`Resource`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Resource {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Slug.
    pub slug: String,
    /// State (`Creating`, `OK`, `Erred`, ...).
    pub state: String,
    /// Backend id, empty until set.
    pub backend_id: String,
    /// Offering.
    pub offering_uuid: String,
    /// Plan.
    pub plan_uuid: Option<String>,
    /// Project.
    pub project_uuid: String,
    /// Project slug.
    pub project_slug: String,
    /// Project name.
    pub project_name: String,
    /// Customer.
    pub customer_uuid: String,
    /// Customer slug.
    pub customer_slug: String,
    /// Customer name.
    pub customer_name: String,
    /// Limits.
    pub limits: BTreeMap<String, i64>,
    /// Attributes.
    pub attributes: Value,
    /// Created (ISO 8601).
    pub created: Option<String>,
    /// End date (YYYY-MM-DD).
    pub end_date: Option<String>,
    /// Members may not be added.
    pub restrict_member_access: bool,
    /// Paused.
    pub paused: bool,
    /// Downscaled.
    pub downscaled: bool,
    /// Backend metadata.
    pub backend_metadata: Value,
    /// Offering plugin options.
    pub offering_plugin_options: Value,
}

impl Resource {
    /// The resource's UUID, checked.
    pub fn id(&self) -> Result<Uuid, InvalidUuid> {
        Uuid::parse("resource.uuid", &self.uuid)
    }
}

/// A member of a resource's project team (`ProjectUser`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TeamMember {
    /// User UUID.
    pub uuid: String,
    /// Waldur username.
    pub username: String,
    /// Full name.
    pub full_name: String,
    /// Project role.
    pub role: String,
    /// E-mail.
    pub email: Option<String>,
    /// Offering username, if any.
    pub offering_user_username: Option<String>,
    /// Offering user state.
    pub offering_user_state: Option<String>,
}

/// An offering user (`OfferingUser`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct OfferingUser {
    /// UUID.
    pub uuid: String,
    /// URL.
    pub url: String,
    /// Waldur user UUID.
    pub user_uuid: String,
    /// Offering username.
    pub username: Option<String>,
    /// State (`Requested`, `Creating`, `OK`, ...).
    pub state: String,
    /// Waldur username.
    pub user_username: String,
    /// E-mail.
    pub user_email: String,
    /// Full name.
    pub user_full_name: String,
    /// First name.
    pub user_first_name: String,
    /// Last name.
    pub user_last_name: String,
    /// Hidden from the provider (never synced).
    pub is_restricted: bool,
    /// Every other field: the `user_<attribute>` values the offering exposes.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl OfferingUser {
    /// The offering user's UUID, checked.
    pub fn id(&self) -> Result<Uuid, InvalidUuid> {
        Uuid::parse("offering_user.uuid", &self.uuid)
    }
}

/// Offering-user states (Waldur `OfferingUserState`).
pub mod offering_user_state {
    /// Waiting for a username.
    pub const REQUESTED: &str = "Requested";
    /// The agent is creating the account.
    pub const CREATING: &str = "Creating";
    /// Has a username.
    pub const OK: &str = "OK";
    /// The user must link an existing account first.
    pub const PENDING_ACCOUNT_LINKING: &str = "Pending account linking";
    /// The user must pass additional validation first.
    pub const PENDING_ADDITIONAL_VALIDATION: &str = "Pending additional validation";
    /// Account creation failed; retried next cycle.
    pub const ERROR_CREATING: &str = "Error creating";
}

/// A component usage record (`ComponentUsage`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ComponentUsage {
    /// UUID.
    pub uuid: String,
    /// Component type.
    #[serde(rename = "type")]
    pub component_type: String,
    /// Amount: a decimal string or a number, depending on the Waldur version.
    pub usage: Value,
    /// Resource.
    pub resource_uuid: String,
    /// `YYYY-MM-01`.
    pub billing_period: String,
}

/// A per-user component usage record (`ComponentUserUsage`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ComponentUserUsage {
    /// UUID.
    pub uuid: String,
    /// URL of the parent component usage.
    pub component_usage: String,
    /// Offering username.
    pub username: String,
    /// Amount.
    pub usage: Value,
}

impl ComponentUserUsage {
    /// The parent usage's UUID: the last path segment of its URL.
    pub fn parent_uuid(&self) -> String {
        self.component_usage
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    }
}

/// A per-user usage limit (`ComponentUserUsageLimit`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UserUsageLimit {
    /// Resource.
    pub resource_uuid: String,
    /// Offering username (newer Waldur versions).
    pub username: Option<String>,
    /// The user: a username in the versions the original agent reads.
    pub user: Value,
    /// Component type.
    pub component_type: String,
    /// The limit: a decimal string or a number.
    pub limit: Value,
}

/// A decimal amount Waldur sends as a string or a number.
pub fn amount(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// The offering's user attribute exposure (`user-attribute-config`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct AttributeConfig {
    /// Exposed attribute names (`username`, `full_name`, `email`, ...).
    pub exposed_fields: Vec<String>,
}

impl Default for AttributeConfig {
    fn default() -> Self {
        Self {
            exposed_fields: vec!["username".into(), "full_name".into(), "email".into()],
        }
    }
}

/// A project service account or a course account, sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Account {
    /// UUID.
    pub uuid: String,
    /// Username on the cluster.
    pub username: String,
    /// `OK`, `Closed` or `Erred`.
    pub state: String,
    /// Project.
    pub project_uuid: String,
}

/// The token's own user (`users/me`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Me {
    /// UUID.
    pub uuid: String,
    /// Username.
    pub username: String,
    /// Full name.
    pub full_name: String,
    /// Staff flag.
    pub is_staff: bool,
    /// Role grants.
    pub permissions: Vec<Value>,
}

/// An offering component (`OfferingComponent`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct OfferingComponent {
    /// UUID.
    pub uuid: String,
    /// Component key.
    #[serde(rename = "type")]
    pub component_type: String,
    /// Display name.
    pub name: String,
    /// Billing type.
    pub billing_type: String,
    /// Unit.
    pub measured_unit: String,
    /// Default limit.
    pub limit_amount: Option<i64>,
}

/// The provider offering (`ProviderOfferingDetails`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProviderOffering {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Owning customer.
    pub customer_uuid: String,
    /// Components.
    pub components: Vec<OfferingComponent>,
    /// Plugin options.
    pub plugin_options: Value,
}

/// A service provider, reduced to its UUID.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ServiceProvider {
    /// UUID.
    pub uuid: String,
}

/// A service provider SSH key (`SshKey`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SshKey {
    /// UUID.
    pub uuid: String,
    /// Public key.
    pub public_key: String,
}

/// A plan (`ProviderPlanDetails`), reduced to its quotas.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Plan {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Quotas per component.
    pub quotas: BTreeMap<String, f64>,
}

/// An agent identity (`AgentIdentity`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct AgentIdentity {
    /// UUID.
    pub uuid: String,
    /// Name (`agent-<offering>`).
    pub name: String,
}

/// An agent service (`AgentService`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct AgentService {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
}

/// Answer of check_unique_backend_id.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UniqueCheck {
    /// Whether the id is unused.
    pub is_unique: bool,
}

/// Plugin option names read from the offering.
pub mod plugin_option {
    /// `project_slug` makes backend ids come from the project slug.
    pub const ACCOUNT_NAME_GENERATION_POLICY: &str = "account_name_generation_policy";
}

/// An event subscription (`EventSubscription`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EventSubscription {
    /// UUID: the STOMP login.
    pub uuid: String,
    /// The subscribing user: the RabbitMQ vhost.
    pub user_uuid: String,
}

/// A subscription queue (`SubscriptionQueue`), sparse.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EventQueue {
    /// UUID.
    pub uuid: String,
    /// The RabbitMQ queue.
    pub queue_name: String,
    /// The RabbitMQ vhost, when Waldur says.
    pub vhost: String,
}
