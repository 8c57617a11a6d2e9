//! Domain types of the contract: what a backend receives and returns, and
//! what a client sends and gets back.
//!
//! They are the wire messages after validation: required fields are present,
//! strings are within size limits, enums are known, JSON is `serde_json`.
//! Plain enums and the component definition are the generated types
//! themselves, re-exported, because there is nothing to validate in them.

use std::collections::BTreeMap;
use std::time::SystemTime;

pub use waldur_backend_proto::v1::{
    AccessLevel, AccountingType, Capability, CheckStatus, Component, DeletionMode, Endpoint,
    LimitPeriod, OperationState, OrderDecision, OrderType,
};

use crate::BackendError;

/// Limits or quotas per component key, in Waldur units.
pub type Limits = BTreeMap<String, i64>;

/// Amounts per component key, in Waldur units.
pub type Amounts = BTreeMap<String, f64>;

/// A JSON object (attributes, metadata, settings).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Identity of a backend implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// Backend type, for example `slurm`.
    pub name: String,
    /// Implementation version.
    pub version: String,
    /// Version of the system behind it, if known.
    pub vendor_version: Option<String>,
}

/// Answer of a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// True when requests can be served now.
    pub ready: bool,
    /// Why not, for an operator.
    pub message: String,
}

impl Probe {
    /// Ready, nothing to say.
    pub fn ready() -> Self {
        Self {
            ready: true,
            message: String::new(),
        }
    }

    /// Not ready, with the reason.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            ready: false,
            message: message.into(),
        }
    }
}

/// Result of the self checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics {
    /// One entry per check.
    pub checks: Vec<DiagnosticCheck>,
    /// Free-form facts.
    pub info: BTreeMap<String, String>,
}

/// One diagnostic check.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticCheck {
    /// Stable short name.
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// What was seen.
    pub message: String,
}

impl DiagnosticCheck {
    /// How an operator's tool prints the outcome: PASS, WARN or FAIL (a
    /// status it does not know fails).
    pub fn word(&self) -> &'static str {
        match self.status {
            CheckStatus::Ok => "PASS",
            CheckStatus::Warning => "WARN",
            _ => "FAIL",
        }
    }
}

/// The Waldur resource a request is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceContext {
    /// Waldur resource UUID (always present).
    pub resource_uuid: String,
    /// Resource name.
    pub name: String,
    /// Resource slug.
    pub slug: String,
    /// Project UUID.
    pub project_uuid: String,
    /// Project slug.
    pub project_slug: String,
    /// Project name.
    pub project_name: String,
    /// Customer UUID.
    pub customer_uuid: String,
    /// Customer slug.
    pub customer_slug: String,
    /// Customer name.
    pub customer_name: String,
    /// Offering UUID.
    pub offering_uuid: String,
    /// Plan UUID.
    pub plan_uuid: String,
    /// Order form attributes.
    pub attributes: JsonObject,
    /// Creation time in Waldur.
    pub created: Option<SystemTime>,
    /// End date.
    pub end_date: Option<SystemTime>,
}

/// A team member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// Name on the backend (always present).
    pub username: String,
    /// Waldur user UUID.
    pub user_uuid: String,
    /// Waldur username.
    pub waldur_username: String,
    /// E-mail.
    pub email: String,
    /// Full name.
    pub full_name: String,
    /// Project role.
    pub role: String,
    /// Exposed attributes.
    pub attributes: BTreeMap<String, String>,
}

impl User {
    /// A user known only by backend username.
    pub fn named(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            ..Self::default()
        }
    }
}

/// Secrets that must never be printed; `Debug` shows only the keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {:?}>", self.0.keys().collect::<Vec<_>>())
    }
}

/// What a backend knows of a resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceInfo {
    /// Backend id.
    pub backend_id: String,
    /// Parent id.
    pub parent_id: String,
    /// Downstream id.
    pub effective_id: String,
    /// Description stored on the backend.
    pub description: String,
    /// Limits in Waldur units.
    pub limits: Limits,
    /// Metadata for Waldur.
    pub metadata: JsonObject,
    /// Endpoints for Waldur.
    pub endpoints: Vec<Endpoint>,
    /// Members.
    pub users: Vec<String>,
    /// Owner secrets.
    pub credentials: Secrets,
    /// Access level, if tracked.
    pub access: Option<AccessLevel>,
}

/// A validated CreateResource request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateResource {
    /// Backend id to create.
    pub backend_id: String,
    /// The Waldur resource.
    pub resource: ResourceContext,
    /// Requested limits (empty: backend defaults).
    pub limits: Limits,
    /// Users to add.
    pub users: Vec<User>,
    /// Plan quotas.
    pub plan_quotas: Limits,
    /// SSH keys by key UUID.
    pub ssh_keys: BTreeMap<String, String>,
    /// Home directory umask.
    pub homedir_umask: Option<String>,
}

/// Result of CreateResource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Created {
    /// The resource.
    pub resource: ResourceInfo,
    /// False while still provisioning.
    pub ready: bool,
    /// Backend operation id.
    pub operation_id: Option<String>,
    /// One result per requested user.
    pub user_results: Vec<UserResult>,
}

/// A validated DeleteResource request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteResource {
    /// Backend id.
    pub backend_id: String,
    /// Soft or hard (`Unspecified`: instance default).
    pub mode: DeletionMode,
    /// The Waldur resource, when the coordinator knows it.
    pub resource: Option<ResourceContext>,
}

/// Result of DeleteResource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// False while still deleting.
    pub ready: bool,
    /// Backend operation id.
    pub operation_id: Option<String>,
    /// True when the resource existed before the call.
    pub existed: bool,
}

/// Result of SetResourceLimits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsApplied {
    /// Limits now in force.
    pub limits: Limits,
    /// False while still applying.
    pub ready: bool,
    /// Backend operation id.
    pub operation_id: Option<String>,
}

/// A page of ListResources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The resources, ordered by backend id.
    pub resources: Vec<ResourceInfo>,
    /// Token of the next page, if any.
    pub next_page_token: Option<String>,
}

/// Paging of ListResources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Only under this parent.
    pub parent_id: Option<String>,
    /// Page size (0: backend chooses).
    pub page_size: usize,
    /// Continuation token.
    pub page_token: Option<String>,
}

impl PageRequest {
    /// One page of `sorted` (resources in ascending backend id order): the
    /// keyset paging every backend can use. The token is the last backend id
    /// of the previous page, so a page never repeats or skips a resource that
    /// existed throughout; `default_size` applies when the caller left the
    /// size to the backend. The parent filter is applied here.
    pub fn page(
        &self,
        sorted: impl IntoIterator<Item = ResourceInfo>,
        default_size: usize,
    ) -> Page {
        let size = match self.page_size {
            0 => default_size.max(1),
            n => n,
        };
        let after = self.page_token.as_deref().unwrap_or("");
        let mut rest = sorted
            .into_iter()
            .filter(|r| r.backend_id.as_str() > after)
            .filter(|r| self.parent_id.as_ref().is_none_or(|p| &r.parent_id == p));
        let resources: Vec<ResourceInfo> = rest.by_ref().take(size).collect();
        let next_page_token = match rest.next() {
            Some(_) => resources.last().map(|r| r.backend_id.clone()),
            None => None,
        };
        Page {
            resources,
            next_page_token,
        }
    }
}

/// What happened to one user in a batch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The change was made.
    Applied,
    /// Nothing to do.
    Unchanged,
    /// It failed.
    Failed(BackendError),
}

/// One user's result in a batch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserResult {
    /// The user.
    pub username: String,
    /// What happened.
    pub outcome: Outcome,
}

impl UserResult {
    /// The change was made.
    pub fn applied(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            outcome: Outcome::Applied,
        }
    }
    /// Already in the wanted state.
    pub fn unchanged(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            outcome: Outcome::Unchanged,
        }
    }
    /// It failed.
    pub fn failed(username: impl Into<String>, error: BackendError) -> Self {
        Self {
            username: username.into(),
            outcome: Outcome::Failed(error),
        }
    }
}

/// Members of many resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceUsers {
    /// Members per existing resource.
    pub found: BTreeMap<String, Vec<String>>,
    /// Requested resources that do not exist.
    pub missing: Vec<String>,
    /// With the full view: what the backend read in bulk, per resource.
    /// A resource found but absent here is read one by one.
    pub details: BTreeMap<String, ResourceDetails>,
}

/// One resource as a bulk read saw it: what GetResource and GetUserLimits
/// would answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceDetails {
    /// The resource, with its users.
    pub resource: ResourceInfo,
    /// Per-user limits by username (empty without USER_LIMITS).
    pub user_limits: BTreeMap<String, Limits>,
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingPeriod {
    /// Year.
    pub year: i32,
    /// Month 1..=12.
    pub month: u32,
}

/// A validated usage query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// The resources (at least one).
    pub backend_ids: Vec<String>,
    /// A past month, or `None` for the current one.
    pub period: Option<BillingPeriod>,
    /// IANA zone for month boundaries; `None` means UTC.
    pub timezone: Option<String>,
}

/// Usage of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceUsage {
    /// Backend id.
    pub backend_id: String,
    /// Total per component (sum of users).
    pub total: Amounts,
    /// Per user.
    pub users: BTreeMap<String, Amounts>,
}

impl ResourceUsage {
    /// A usage entry whose total is computed as the sum of `users`, with
    /// every key of `components` present (0 when unused), as SPEC requires.
    pub fn from_users<'a>(
        backend_id: impl Into<String>,
        components: impl IntoIterator<Item = &'a str>,
        users: BTreeMap<String, Amounts>,
    ) -> Self {
        let mut total: Amounts = components
            .into_iter()
            .map(|k| (k.to_owned(), 0.0))
            .collect();
        for amounts in users.values() {
            for (k, v) in amounts {
                *total.entry(k.clone()).or_insert(0.0) += v;
            }
        }
        Self {
            backend_id: backend_id.into(),
            total,
            users,
        }
    }
}

/// A Waldur offering user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferingUser {
    /// Offering user UUID (always present).
    pub offering_user_uuid: String,
    /// Waldur user UUID.
    pub user_uuid: String,
    /// Waldur username.
    pub waldur_username: String,
    /// E-mail.
    pub email: String,
    /// Full name.
    pub full_name: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Username Waldur holds now.
    pub current_username: String,
    /// Exposed attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A pending-provider order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Order UUID.
    pub order_uuid: String,
    /// Order type.
    pub order_type: OrderType,
    /// The resource.
    pub resource: ResourceContext,
    /// Requested limits.
    pub limits: Limits,
    /// Orderer's Waldur username.
    pub created_by_username: String,
    /// Orderer's name.
    pub created_by_full_name: String,
    /// Consumer message.
    pub consumer_message: String,
    /// Provider message.
    pub provider_message: String,
    /// Project team.
    pub team: Vec<User>,
}

/// Decision on a pending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Accept, reject or keep pending.
    pub decision: OrderDecision,
    /// Why.
    pub message: String,
}

/// A completion event of a slow operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Resource.
    pub backend_id: String,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Succeeded or failed.
    pub state: OperationState,
    /// Details.
    pub message: String,
    /// When.
    pub time: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(id: &str, parent: &str) -> ResourceInfo {
        ResourceInfo {
            backend_id: id.into(),
            parent_id: parent.into(),
            ..ResourceInfo::default()
        }
    }

    #[test]
    fn pages_follow_each_other_by_the_last_id_and_cover_everything_once() {
        let all: Vec<ResourceInfo> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| resource(id, "p"))
            .collect();
        let mut request = PageRequest {
            page_size: 2,
            ..PageRequest::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = request.page(all.clone(), 100);
            seen.extend(page.resources.iter().map(|r| r.backend_id.clone()));
            match page.next_page_token {
                Some(token) => request.page_token = Some(token),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_page_keeps_only_the_requested_parent_and_uses_the_default_size() {
        let all = vec![resource("a", "x"), resource("b", "y"), resource("c", "x")];
        let request = PageRequest {
            parent_id: Some("x".into()),
            ..PageRequest::default()
        };
        let page = request.page(all, 1);
        assert_eq!(page.resources, vec![resource("a", "x")]);
        assert_eq!(page.next_page_token.as_deref(), Some("a"));
    }
}
