//! Order processing (core spec §4) through the backend contract.
//!
//! One cycle lists the offering's `pending-provider` and `executing` orders,
//! groups them by resource and processes the groups concurrently (bounded):
//! orders of one resource run one after another, orders of different
//! resources in parallel.
//!
//! Error rules, as the original agent:
//! * backend not ready / retryable codes, and transient Waldur failures
//!   (5xx, 429, network) leave the order untouched; the next cycle retries;
//! * any other failure before provisioning started is logged and leaves the
//!   order pending;
//! * any other failure after provisioning started marks the order erred with
//!   a message that respects `expose_backend_error_details`.
//!
//! Waldur calls per Create order in steady state (the benchmark counts them):
//! resource, team, set_backend_id, set_limits (only if the backend's limits
//! differ), set_backend_metadata and set_endpoints (only if non-empty),
//! set_state_done; the offering, service provider keys, plans and offering
//! users are read once per cycle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};
use tonic::Code;
use tracing::Instrument;
use waldur_backend_api::types::{
    self as api, Capability, CreateResource, JsonObject, OrderDecision, OrderType, Outcome,
    ResourceContext, ResourceInfo, User,
};

use crate::backend::{BackendCallError, BackendHandle};
use crate::config::{BackendIdConfig, OfferingConfig};
use waldur_client::ids::{InvalidUuid, Uuid};
use waldur_client::types::{self, Order, Resource, order_state};
use waldur_client::{WaldurClient, WaldurError};

/// The message shown in Waldur when details are hidden.
pub const HIDDEN_ERROR: &str = "Internal backend error. Please contact the service provider.";

/// What happened to one order in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// Marked done.
    Done,
    /// Rejected by the backend's evaluation.
    Rejected,
    /// Still pending the provider (evaluation said wait).
    KeptPending,
    /// A slow backend is still working; the order stays executing.
    InProgress,
    /// A temporary problem; the order was left untouched.
    Deferred(String),
    /// Marked erred with this message.
    Erred(String),
    /// Nothing to do (already final, or a state the agent does not handle).
    Skipped,
}

/// What a cycle would do with one order (`waldur-coordinator plan`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderPlan {
    /// Order UUID.
    pub order: String,
    /// `Create`, `Update`, `Terminate`, `Restore`.
    pub order_type: String,
    /// Its state now.
    pub state: String,
    /// What the next cycle would do, in words.
    pub action: String,
}

/// Counts of a cycle's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Per order UUID.
    pub outcomes: BTreeMap<String, OrderOutcome>,
}

impl CycleReport {
    /// Orders with this outcome kind.
    pub fn count(&self, pred: impl Fn(&OrderOutcome) -> bool) -> usize {
        self.outcomes.values().filter(|o| pred(o)).count()
    }
}

/// Why an order could not be executed.
#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("{0}")]
    Waldur(#[from] WaldurError),
    #[error("{0}")]
    Backend(#[from] BackendCallError),
    #[error("{0}")]
    InvalidId(#[from] InvalidUuid),
    #[error("{0}")]
    Other(String),
}

impl OrderError {
    /// Temporary: leave the order alone and retry next cycle.
    fn is_temporary(&self) -> bool {
        match self {
            Self::Waldur(e) => e.is_transient(),
            Self::Backend(e) => e.is_retryable(),
            Self::InvalidId(_) | Self::Other(_) => false,
        }
    }

    /// The message Waldur shows, honouring `expose_backend_error_details`.
    fn waldur_message(&self, expose: bool) -> String {
        match self {
            _ if expose => self.to_string(),
            // A backend's own refusal is meant for the user; internal failures are not.
            Self::Backend(e)
                if !matches!(e.code, Code::Internal | Code::Unknown | Code::DataLoss) =>
            {
                e.message.clone()
            }
            _ => HIDDEN_ERROR.to_owned(),
        }
    }
}

enum Executed {
    Done { post: Option<PostProcess> },
    InProgress,
}

/// Users to add after a Create/Restore completed through the idempotent path.
struct PostProcess {
    backend_id: String,
    resource: Uuid,
}

/// The checked ids of an order: nothing reaches a URL unchecked.
struct OrderIds {
    order: Uuid,
    resource: Uuid,
}

/// Processes the orders of one offering.
pub struct OrderProcessor {
    offering: Arc<OfferingConfig>,
    waldur: WaldurClient,
    backend: BackendHandle,
    expose_errors: bool,
}

/// What one cycle reads once and shares between orders.
#[derive(Default)]
struct CycleCache {
    offering: OnceCell<types::ProviderOffering>,
    ssh_keys: OnceCell<BTreeMap<String, String>>,
    offering_users: OnceCell<crate::processors::team::Usable>,
    plans: Mutex<HashMap<String, BTreeMap<String, i64>>>,
}

impl OrderProcessor {
    /// A processor for one offering.
    pub fn new(
        offering: Arc<OfferingConfig>,
        waldur: WaldurClient,
        backend: BackendHandle,
        expose_errors: bool,
    ) -> Self {
        Self {
            offering,
            waldur,
            backend,
            expose_errors,
        }
    }

    /// One cycle over the offering's open orders.
    pub async fn run_cycle(&self) -> Result<CycleReport, WaldurError> {
        let offering = &self.offering.offering_uuid;
        let orders = self
            .waldur
            .orders(
                offering,
                &[order_state::PENDING_PROVIDER, order_state::EXECUTING],
            )
            .await?;
        self.run_orders(orders).await
    }

    /// One cycle over the open orders untouched for `seconds` (the event
    /// mode's sweep: fresher orders are the event path's).
    pub async fn run_stuck_cycle(&self, seconds: u64) -> Result<CycleReport, WaldurError> {
        let cutoff = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(seconds as i64))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let orders = self
            .waldur
            .orders(
                &self.offering.offering_uuid,
                &[order_state::PENDING_PROVIDER, order_state::EXECUTING],
            )
            .await?
            .into_iter()
            .filter(|o| {
                o.modified
                    .as_deref()
                    .or(o.created.as_deref())
                    .and_then(|m| m.parse::<jiff::Timestamp>().ok())
                    .is_none_or(|m| m < cutoff)
            })
            .collect();
        self.run_orders(orders).await
    }

    async fn run_orders(&self, orders: Vec<Order>) -> Result<CycleReport, WaldurError> {
        let offering = &self.offering.offering_uuid;
        // Waldur filters by offering; checking again costs nothing and
        // guarantees an order of another offering is never touched.
        let mut groups: BTreeMap<String, Vec<Order>> = BTreeMap::new();
        for order in orders {
            if !order.offering_uuid.is_empty()
                && !same_uuid(&order.offering_uuid, offering.as_str())
            {
                tracing::warn!(order = %order.uuid, offering = %order.offering_uuid, "ignoring an order of another offering");
                continue;
            }
            groups
                .entry(order.marketplace_resource_uuid.clone())
                .or_default()
                .push(order);
        }
        let cache = CycleCache::default();
        let limit = self.offering.order_concurrency.max(1);
        let results: Vec<Vec<(String, OrderOutcome)>> = futures::stream::iter(groups.into_values())
            .map(|group| {
                let cache = &cache;
                async move {
                    let mut out = Vec::with_capacity(group.len());
                    for order in group {
                        let outcome = self.process_order(order.clone(), cache).await;
                        out.push((order.uuid, outcome));
                    }
                    out
                }
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        Ok(CycleReport {
            outcomes: results.into_iter().flatten().collect(),
        })
    }

    /// What the next cycle would do with each open order, changing nothing
    /// (reads Waldur; asks the backend only read-only questions).
    pub async fn plan(&self) -> Result<Vec<OrderPlan>, WaldurError> {
        let offering = &self.offering.offering_uuid;
        let orders = self
            .waldur
            .orders(
                offering,
                &[order_state::PENDING_PROVIDER, order_state::EXECUTING],
            )
            .await?;
        let cache = CycleCache::default();
        let mut out = Vec::new();
        for order in orders {
            if !order.offering_uuid.is_empty()
                && !same_uuid(&order.offering_uuid, offering.as_str())
            {
                continue;
            }
            let action = self.plan_order(&order, &cache).await;
            out.push(OrderPlan {
                order: order.uuid.clone(),
                order_type: order.order_type.clone(),
                state: order.state.clone(),
                action,
            });
        }
        Ok(out)
    }

    async fn plan_order(&self, order: &Order, cache: &CycleCache) -> String {
        let ids = match (order.id(), order.resource_id()) {
            (Ok(order), Ok(resource)) => OrderIds { order, resource },
            (Err(e), _) | (_, Err(e)) => return format!("nothing: invalid id ({e})"),
        };
        let execution = match order.state.as_str() {
            order_state::PENDING_PROVIDER => {
                match self.backend.evaluate_order(api_order(order)).await {
                    Ok(d) => match d.decision {
                        OrderDecision::Accept => "approve, then ",
                        OrderDecision::Reject => {
                            return format!("reject: {}", d.message);
                        }
                        _ => return "keep pending (the backend says wait)".into(),
                    },
                    Err(e) => return format!("nothing yet: evaluation failed: {e}"),
                }
            }
            _ => "",
        };
        let what = match self.describe_execution(order, &ids, cache).await {
            Ok(w) => w,
            Err(e) => format!("nothing yet: {e}"),
        };
        format!("{execution}{what}")
    }

    async fn describe_execution(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<String, OrderError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        let id = &resource.backend_id;
        Ok(match order.order_type.as_str() {
            "Create" | "Restore" if !id.is_empty() => {
                if self.backend.get_resource(id).await?.is_some() {
                    format!("mark done: {id} exists on the backend")
                } else {
                    format!("re-create {id} with limits {:?}", resource.limits)
                }
            }
            "Create" | "Restore" => {
                let ctx = resource_context(&resource, order);
                let candidate = self
                    .backend
                    .generate_backend_id(&resource.slug, &ctx)
                    .await?;
                let limits = if order.limits.is_empty() {
                    &resource.limits
                } else {
                    &order.limits
                };
                format!("create {candidate} (or the next free id) with limits {limits:?}")
            }
            "Update" => {
                let mut new = order.limits.clone();
                if new.is_empty()
                    && let Some(plan) = order.plan_uuid.as_deref().filter(|p| !p.is_empty())
                {
                    new = self.plan_quotas(plan, cache).await?;
                }
                if new.is_empty() || new == resource.limits {
                    "mark done: the limits do not change".into()
                } else {
                    format!(
                        "set the limits of {id} from {:?} to {new:?}",
                        resource.limits
                    )
                }
            }
            "Terminate" if id.is_empty() => "mark done: the resource has no backend id".into(),
            "Terminate" => format!("delete {id} (explicit: not counted by the breaker)"),
            other => format!("mark erred: unsupported order type {other:?}"),
        })
    }

    /// Processes one order by UUID (the event path): reads it fresh from
    /// Waldur, then exactly as a cycle would.
    pub async fn process_by_uuid(&self, uuid: &Uuid) -> Result<OrderOutcome, WaldurError> {
        let order = self.waldur.order(uuid).await?;
        if !order.offering_uuid.is_empty()
            && !same_uuid(&order.offering_uuid, self.offering.offering_uuid.as_str())
        {
            tracing::warn!(order = %order.uuid, offering = %order.offering_uuid, "ignoring an order of another offering");
            return Ok(OrderOutcome::Skipped);
        }
        Ok(self.process_order(order, &CycleCache::default()).await)
    }

    async fn process_order(&self, order: Order, cache: &CycleCache) -> OrderOutcome {
        // Each order is the root of its own trace, whatever cycle or event
        // brought it: one order, one trace across coordinator and backend.
        let span = tracing::info_span!(
            parent: None,
            "order",
            order = %order.uuid,
            r#type = %order.order_type,
            resource = %order.marketplace_resource_uuid,
            offering = %self.offering.name,
            outcome = tracing::field::Empty,
        );
        let order_type = order.order_type.clone();
        let created = order.created.clone();
        let outcome = self
            .process_order_inner(order, cache)
            .instrument(span.clone())
            .await;
        let label = match &outcome {
            OrderOutcome::Done => "done",
            OrderOutcome::Rejected => "rejected",
            OrderOutcome::KeptPending => "pending",
            OrderOutcome::InProgress => "in_progress",
            OrderOutcome::Deferred(_) => "deferred",
            OrderOutcome::Erred(_) => "erred",
            OrderOutcome::Skipped => "skipped",
        };
        span.record("outcome", label);
        if !matches!(outcome, OrderOutcome::Skipped) {
            let latency = matches!(outcome, OrderOutcome::Done)
                .then(|| age(created.as_deref()))
                .flatten();
            crate::metrics::order(&self.offering.name, &order_type, label, latency);
        }
        match &outcome {
            OrderOutcome::Deferred(why) => {
                tracing::warn!(parent: &span, reason = %why, "order deferred")
            }
            OrderOutcome::Erred(why) => tracing::warn!(parent: &span, error = %why, "order erred"),
            OrderOutcome::Skipped => {}
            other => tracing::info!(parent: &span, outcome = ?other, "order processed"),
        }
        outcome
    }

    async fn process_order_inner(&self, order: Order, cache: &CycleCache) -> OrderOutcome {
        // Ids from Waldur's answer go into URLs: check them first. An order
        // whose own id is garbage cannot even be marked erred.
        let ids = match (order.id(), order.resource_id()) {
            (Ok(order), Ok(resource)) => OrderIds { order, resource },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "order with an invalid id; not processed");
                return OrderOutcome::Skipped;
            }
        };
        match order.state.as_str() {
            order_state::PENDING_PROVIDER => {
                let decision = match self.backend.evaluate_order(api_order(&order)).await {
                    Ok(d) => d,
                    Err(e) => return OrderOutcome::Deferred(format!("evaluation failed: {e}")),
                };
                match decision.decision {
                    OrderDecision::Accept => {
                        if let Err(e) = self.waldur.approve_order(&ids.order).await {
                            return OrderOutcome::Deferred(format!("approval failed: {e}"));
                        }
                    }
                    OrderDecision::Reject => {
                        return match self
                            .waldur
                            .reject_order(&ids.order, &decision.message)
                            .await
                        {
                            Ok(()) => OrderOutcome::Rejected,
                            Err(e) => OrderOutcome::Deferred(format!("rejection failed: {e}")),
                        };
                    }
                    _ => return OrderOutcome::KeptPending,
                }
            }
            order_state::EXECUTING => {}
            order_state::DONE | order_state::ERRED => return OrderOutcome::Skipped,
            other => {
                tracing::warn!(order = %order.uuid, state = other, "order in a state the agent does not handle");
                return OrderOutcome::Skipped;
            }
        }
        match self.execute(&order, &ids, cache).await {
            Ok(Executed::InProgress) => OrderOutcome::InProgress,
            Ok(Executed::Done { post }) => {
                if let Err(e) = self.waldur.set_order_done(&ids.order).await {
                    // 4xx: Waldur already moved the order on (done by an
                    // earlier attempt whose answer was lost).
                    if e.is_transient() {
                        return OrderOutcome::Deferred(format!("set_state_done failed: {e}"));
                    }
                    tracing::warn!(order = %order.uuid, error = %e, "set_state_done refused; order is no longer executing");
                }
                if let Some(post) = post {
                    // Users are also added by membership sync; a failure here
                    // must not undo a done order.
                    if let Err(e) = self.add_team(&post.resource, &post.backend_id, cache).await {
                        tracing::warn!(order = %order.uuid, error = %e, "adding the team after creation failed");
                    }
                }
                OrderOutcome::Done
            }
            Err(e) if e.is_temporary() => OrderOutcome::Deferred(e.to_string()),
            Err(e) => {
                let message = e.waldur_message(self.expose_errors);
                let traceback = if self.expose_errors {
                    format!("{e:?}")
                } else {
                    String::new()
                };
                match self
                    .waldur
                    .set_order_erred(&ids.order, &message, &traceback)
                    .await
                {
                    Ok(()) => OrderOutcome::Erred(message),
                    Err(w) => OrderOutcome::Deferred(format!("{e}; set_state_erred failed: {w}")),
                }
            }
        }
    }

    async fn execute(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<Executed, OrderError> {
        match order.order_type.as_str() {
            "Create" | "Restore" => self.create(order, ids, cache).await,
            "Update" => self.update(order, ids, cache).await,
            "Terminate" => self.terminate(order, ids).await,
            other => Err(OrderError::Other(format!(
                "unsupported order type {other:?}"
            ))),
        }
    }

    async fn create(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<Executed, OrderError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        let ctx = resource_context(&resource, order);

        // Idempotent path: the resource already has a backend id.
        if !resource.backend_id.is_empty() {
            let session = self.backend.lock(&resource.backend_id).await;
            if self
                .backend
                .get_resource(&resource.backend_id)
                .await?
                .is_some()
            {
                return Ok(Executed::Done {
                    post: Some(PostProcess {
                        backend_id: resource.backend_id.clone(),
                        resource: ids.resource.clone(),
                    }),
                });
            }
            // Gone from the backend (restore, or deleted by hand): re-create
            // it under the same name.
            let resp = session
                .create_resource(CreateResource {
                    resource: ctx,
                    limits: resource.limits.clone(),
                    ..CreateResource::default()
                })
                .await?;
            if !resp.ready {
                return Ok(Executed::InProgress);
            }
            return Ok(Executed::Done {
                post: Some(PostProcess {
                    backend_id: resource.backend_id.clone(),
                    resource: ids.resource.clone(),
                }),
            });
        }

        // Fresh path: resolve the context once, then find a free backend id.
        let team = self.waldur.resource_team(&ids.resource).await?;
        let users = self.team_users(&team, cache).await?;
        let plan_quotas = match &resource.plan_uuid {
            Some(plan) if !plan.is_empty() => self.plan_quotas(plan, cache).await?,
            _ => BTreeMap::new(),
        };
        let ssh_keys = self.ssh_keys(cache).await;
        let offering = self.offering(cache).await?;
        let project_slug_policy =
            offering.plugin_options[types::plugin_option::ACCOUNT_NAME_GENERATION_POLICY].as_str()
                == Some("project_slug");
        let limits: BTreeMap<String, i64> = if order.limits.is_empty() {
            resource.limits.clone()
        } else {
            order.limits.clone()
        };

        let naming = &self.offering.backend_id;
        let mut base = if project_slug_policy {
            resource.project_slug.clone()
        } else {
            resource.slug.clone()
        };
        if base.is_empty() {
            return Err(OrderError::Other(
                "the resource has neither slug nor project slug".into(),
            ));
        }
        let attempts = naming.max_retries.max(1);
        for attempt in 0..attempts {
            let backend_id = self.backend.generate_backend_id(&base, &ctx).await?;
            // The lock is held from the uniqueness check to set_backend_id,
            // so two resources processed at once cannot both take the id.
            let session = self.backend.lock(&backend_id).await;
            // Under the project_slug policy every resource of a project
            // starts from the same name: Waldur must be asked (the backend
            // cannot tell two resources of one project apart).
            if (naming.check_uniqueness || project_slug_policy)
                && !self.is_unique(&backend_id, naming).await?
            {
                base = format!("{}-{attempt}", resource.project_slug);
                continue;
            }
            let request = CreateResource {
                resource: ctx.clone(),
                limits: limits.clone(),
                users: users.clone(),
                plan_quotas: plan_quotas.clone(),
                ssh_keys: ssh_keys.clone(),
                ..CreateResource::default()
            };
            let resp = match session.create_resource(request).await {
                Ok(r) => r,
                // Taken by another resource on the backend: the next name.
                // (The original retried this only with uniqueness checks on;
                // trying the next name is always the useful answer.)
                Err(e) if e.code == Code::AlreadyExists => {
                    tracing::info!(
                        backend_id,
                        "backend id taken on the backend, trying the next one"
                    );
                    base = format!("{}-{attempt}", resource.project_slug);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for r in &resp.user_results {
                if let Outcome::Failed(e) = &r.outcome {
                    tracing::warn!(backend_id, user = %r.username, error = %e, "user not added at creation");
                }
            }
            if !resp.ready {
                if let Some(op) = &resp.operation_id
                    && &order.backend_id != op
                {
                    self.waldur.set_order_backend_id(&ids.order, op).await?;
                }
                return Ok(Executed::InProgress);
            }
            self.publish_created(&ids.resource, &resource, resp.resource, &backend_id)
                .await?;
            return Ok(Executed::Done { post: None });
        }
        Err(OrderError::Other(format!(
            "all {attempts} generated backend ids are already taken; change the resource or project slug"
        )))
    }

    /// Writes what the backend created back to Waldur.
    async fn publish_created(
        &self,
        id: &Uuid,
        resource: &Resource,
        info: ResourceInfo,
        backend_id: &str,
    ) -> Result<(), OrderError> {
        self.waldur.set_resource_backend_id(id, backend_id).await?;
        if !info.limits.is_empty() && info.limits != resource.limits {
            self.waldur.set_resource_limits(id, &info.limits).await?;
        }
        let mut metadata = info.metadata;
        // The order's trace, so an operator can go from the resource in
        // Waldur to everything that happened to create it.
        if let Some(trace_id) = waldur_runtime::telemetry::current_trace_id() {
            metadata.insert("trace_id".into(), Value::String(trace_id));
        }
        // Credentials are for the resource owner: they go to Waldur with the
        // metadata and nowhere else (never into logs).
        for (k, v) in info.credentials.0 {
            metadata.insert(k, Value::String(v));
        }
        if !metadata.is_empty()
            && let Err(e) = self
                .waldur
                .set_resource_backend_metadata(id, &Value::Object(metadata))
                .await
        {
            tracing::warn!(resource = %resource.uuid, error = %e, "set_backend_metadata failed");
        }
        if !info.endpoints.is_empty() {
            let endpoints: Vec<Value> = info
                .endpoints
                .iter()
                .map(|e| serde_json::json!({"name": e.name, "url": e.url}))
                .collect();
            if let Err(e) = self
                .waldur
                .set_resource_endpoints(id, &Value::Array(endpoints))
                .await
            {
                tracing::warn!(resource = %resource.uuid, error = %e, "set_endpoints failed");
            }
        }
        Ok(())
    }

    async fn update(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<Executed, OrderError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        if resource.backend_id.is_empty() {
            return Err(OrderError::Other("the resource has no backend id".into()));
        }
        let mut new = order.limits.clone();
        if new.is_empty()
            && let Some(plan) = order.plan_uuid.as_deref().filter(|p| !p.is_empty())
        {
            new = self.plan_quotas(plan, cache).await?;
        }
        if new.is_empty() {
            tracing::warn!(order = %order.uuid, "update order without limits or plan quotas");
            return Ok(Executed::Done { post: None });
        }
        if new == resource.limits {
            return Ok(Executed::Done { post: None });
        }
        let ctx = resource_context(&resource, order);
        let resp = self
            .backend
            .lock(&resource.backend_id)
            .await
            .set_resource_limits(new, Some(ctx))
            .await?;
        Ok(if resp.ready {
            Executed::Done { post: None }
        } else {
            Executed::InProgress
        })
    }

    async fn terminate(&self, order: &Order, ids: &OrderIds) -> Result<Executed, OrderError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        if resource.backend_id.is_empty() {
            return Ok(Executed::Done { post: None });
        }
        let ctx = resource_context(&resource, order);
        let resp = self
            .backend
            .lock(&resource.backend_id)
            .await
            .delete_resource(Some(ctx))
            .await?;
        Ok(if resp.ready {
            Executed::Done { post: None }
        } else {
            Executed::InProgress
        })
    }

    /// Adds the team's OK offering users to a resource (post-processing).
    async fn add_team(
        &self,
        resource: &Uuid,
        backend_id: &str,
        cache: &CycleCache,
    ) -> Result<(), OrderError> {
        if !self.backend.has(Capability::Membership).await? {
            return Ok(());
        }
        let team = self.waldur.resource_team(resource).await?;
        let users = self.team_users(&team, cache).await?;
        if users.is_empty() {
            return Ok(());
        }
        let session = self.backend.lock(backend_id).await;
        for r in session.add_users(users, None).await? {
            if let Outcome::Failed(e) = &r.outcome {
                tracing::warn!(backend_id, user = %r.username, error = %e, "user not added");
            }
        }
        Ok(())
    }

    /// Team members with an offering user in state OK, as backend users.
    async fn team_users(
        &self,
        team: &[types::TeamMember],
        cache: &CycleCache,
    ) -> Result<Vec<User>, OrderError> {
        let usable = cache
            .offering_users
            .get_or_try_init(|| async {
                let list = self
                    .waldur
                    .offering_users(&self.offering.offering_uuid)
                    .await?;
                Ok::<_, WaldurError>(crate::processors::team::usable_offering_users(&list))
            })
            .await?;
        let exposed = types::AttributeConfig::default().exposed_fields;
        let users = crate::processors::team::team_users(team, usable, &exposed);
        Ok(users)
    }

    async fn offering<'c>(
        &self,
        cache: &'c CycleCache,
    ) -> Result<&'c types::ProviderOffering, OrderError> {
        Ok(cache
            .offering
            .get_or_try_init(|| {
                self.waldur.provider_offering(
                    &self.offering.offering_uuid,
                    &["components", "customer_uuid", "plugin_options"],
                )
            })
            .await?)
    }

    async fn plan_quotas(
        &self,
        plan: &str,
        cache: &CycleCache,
    ) -> Result<BTreeMap<String, i64>, OrderError> {
        if let Some(q) = cache.plans.lock().await.get(plan) {
            return Ok(q.clone());
        }
        let plan_id = match Uuid::parse("plan_uuid", plan) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "plan quotas unavailable");
                return Ok(BTreeMap::new());
            }
        };
        let quotas: BTreeMap<String, i64> = match self.waldur.plan(&plan_id).await {
            Ok(p) => p
                .quotas
                .into_iter()
                .filter(|(_, v)| *v != 0.0)
                .map(|(k, v)| (k, v.round() as i64))
                .collect(),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(plan, error = %e, "plan quotas unavailable");
                BTreeMap::new()
            }
        };
        cache
            .plans
            .lock()
            .await
            .insert(plan.to_owned(), quotas.clone());
        Ok(quotas)
    }

    /// Service provider SSH keys; failures give no keys (as the original).
    async fn ssh_keys(&self, cache: &CycleCache) -> BTreeMap<String, String> {
        cache
            .ssh_keys
            .get_or_init(|| async {
                let result: Result<BTreeMap<String, String>, OrderError> = async {
                    let offering = self.offering(cache).await?;
                    let customer = Uuid::parse("offering.customer_uuid", &offering.customer_uuid)?;
                    let Some(sp) = self.waldur.service_provider(&customer).await? else {
                        return Ok(BTreeMap::new());
                    };
                    let sp = Uuid::parse("service_provider.uuid", &sp.uuid)?;
                    let keys = self.waldur.service_provider_keys(&sp).await?;
                    Ok(keys.into_iter().map(|k| (k.uuid, k.public_key)).collect())
                }
                .await;
                result.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "service provider keys unavailable");
                    BTreeMap::new()
                })
            })
            .await
            .clone()
    }

    /// Whether Waldur knows no other resource with this backend id. A
    /// failed check fails the step (the original assumed "unique"): taking
    /// a name another resource holds is how two resources end up sharing
    /// one account.
    async fn is_unique(
        &self,
        backend_id: &str,
        ids: &BackendIdConfig,
    ) -> Result<bool, WaldurError> {
        self.waldur
            .check_unique_backend_id(
                &self.offering.offering_uuid,
                backend_id,
                ids.check_all_offerings,
            )
            .await
    }
}

pub use waldur_client::ids::same_uuid;

fn timestamp(s: Option<&str>) -> Option<std::time::SystemTime> {
    let s = s?;
    let ts: jiff::Timestamp = s.parse().ok().or_else(|| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })?;
    Some(ts.into())
}

fn attributes(v: &Value) -> Option<JsonObject> {
    match v {
        Value::Object(o) => Some(o.clone()),
        _ => None,
    }
}

/// Time since an ISO 8601 instant (an order's creation), if it parses.
fn age(created: Option<&str>) -> Option<std::time::Duration> {
    let at: jiff::Timestamp = created?.parse().ok()?;
    let d = jiff::Timestamp::now().duration_since(at);
    std::time::Duration::try_from(d).ok()
}

/// The resource as the backend contract describes it.
pub fn resource_context(resource: &Resource, order: &Order) -> ResourceContext {
    let pick = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            a.to_owned()
        }
    };
    ResourceContext {
        resource_uuid: pick(&resource.uuid, &order.marketplace_resource_uuid),
        name: pick(&resource.name, &order.resource_name),
        slug: resource.slug.clone(),
        project_uuid: pick(&resource.project_uuid, &order.project_uuid),
        project_slug: pick(&resource.project_slug, &order.project_slug),
        project_name: resource.project_name.clone(),
        customer_uuid: pick(&resource.customer_uuid, &order.customer_uuid),
        customer_slug: pick(&resource.customer_slug, &order.customer_slug),
        customer_name: resource.customer_name.clone(),
        offering_uuid: pick(&resource.offering_uuid, &order.offering_uuid),
        plan_uuid: resource
            .plan_uuid
            .clone()
            .or_else(|| order.plan_uuid.clone())
            .unwrap_or_default(),
        attributes: attributes(&resource.attributes)
            .or_else(|| attributes(&order.attributes))
            .unwrap_or_default(),
        created: timestamp(resource.created.as_deref()),
        end_date: timestamp(resource.end_date.as_deref()),
    }
}

/// The order as the backend contract describes it (for EvaluateOrder).
fn api_order(order: &Order) -> api::Order {
    let order_type = match order.order_type.as_str() {
        "Create" => OrderType::Create,
        "Update" => OrderType::Update,
        "Terminate" => OrderType::Terminate,
        "Restore" => OrderType::Restore,
        _ => OrderType::Unspecified,
    };
    api::Order {
        order_uuid: order.uuid.clone(),
        order_type,
        resource: ResourceContext {
            resource_uuid: order.marketplace_resource_uuid.clone(),
            name: order.resource_name.clone(),
            project_uuid: order.project_uuid.clone(),
            project_slug: order.project_slug.clone(),
            customer_uuid: order.customer_uuid.clone(),
            customer_slug: order.customer_slug.clone(),
            offering_uuid: order.offering_uuid.clone(),
            plan_uuid: order.plan_uuid.clone().unwrap_or_default(),
            attributes: attributes(&order.attributes).unwrap_or_default(),
            ..ResourceContext::default()
        },
        limits: order.limits.clone(),
        created_by_username: order.created_by_username.clone(),
        created_by_full_name: order.created_by_full_name.clone(),
        consumer_message: order.consumer_message.clone(),
        provider_message: order.provider_message.clone(),
        team: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_compare_with_or_without_dashes() {
        assert!(same_uuid(
            "0F0F0000-0000-0000-0000-000000000001",
            "0f0f0000000000000000000000000001"
        ));
        assert!(!same_uuid("a", "b"));
    }

    #[test]
    fn hidden_errors_keep_a_backends_refusal_but_not_internals() {
        let refusal = OrderError::Backend(BackendCallError {
            backend: "b".into(),
            rpc: "CreateResource",
            code: Code::InvalidArgument,
            reason: "INVALID_FIELD".into(),
            message: "name too long".into(),
            metadata: HashMap::new(),
        });
        assert_eq!(refusal.waldur_message(false), "name too long");
        let internal = OrderError::Other("decode failed at /x".into());
        assert_eq!(internal.waldur_message(false), HIDDEN_ERROR);
        assert!(internal.waldur_message(true).contains("decode failed"));
    }

    #[test]
    fn dates_and_datetimes_become_timestamps() {
        assert!(timestamp(Some("2026-01-31")).is_some());
        assert!(timestamp(Some("2026-01-31T10:00:00Z")).is_some());
        assert!(timestamp(Some("garbage")).is_none());
    }
}
