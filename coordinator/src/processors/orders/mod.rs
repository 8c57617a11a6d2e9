//! Order processing through the backend contract.
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
use waldur_runtime::span;

use futures::StreamExt;
use tokio::sync::{Mutex, OnceCell};
use tonic::Code;
use tracing::Instrument;
use waldur_backend_api::types::OrderDecision;

use crate::backend::BackendHandle;
use crate::config::OfferingConfig;
use crate::processors::step::StepError;
use waldur_client::ids::{Uuid, same_uuid};
use waldur_client::types::{self, Order, OrderState, OrderType};
use waldur_client::{WaldurClient, WaldurError};

mod execute;

use execute::age;
pub use execute::resource_context;
pub(crate) use execute::timestamp;

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
    /// What it asks for.
    pub order_type: OrderType,
    /// Its state now.
    pub state: OrderState,
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

/// The message Waldur shows for a failed order, honouring
/// `expose_backend_error_details`.
fn waldur_message(e: &StepError, expose: bool) -> String {
    match e {
        _ if expose => e.to_string(),
        // A backend's own refusal is meant for the user; internal failures are not.
        StepError::Backend(b)
            if !matches!(b.code, Code::Internal | Code::Unknown | Code::DataLoss) =>
        {
            b.message.clone()
        }
        _ => HIDDEN_ERROR.to_owned(),
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
    /// Plan quotas by plan UUID. A cell per plan, so orders of the same
    /// plan running at once wait for one read instead of each making it.
    plans: Mutex<HashMap<String, Arc<OnceCell<Quotas>>>>,
}

/// A plan's quotas by component.
pub(super) type Quotas = BTreeMap<String, i64>;

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
                &[OrderState::PendingProvider, OrderState::Executing],
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
                &[OrderState::PendingProvider, OrderState::Executing],
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
                &[OrderState::PendingProvider, OrderState::Executing],
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
        let execution = match order.state {
            OrderState::PendingProvider => match self.evaluate(order, &ids, cache).await {
                Ok(d) => match d.decision {
                    OrderDecision::Accept => "approve, then ",
                    OrderDecision::Reject => {
                        return format!("reject: {}", d.message);
                    }
                    _ => return "keep pending (the backend says wait)".into(),
                },
                Err(e) => return format!("nothing yet: evaluation failed: {e}"),
            },
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
    ) -> Result<String, StepError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        let id = &resource.backend_id;
        Ok(match &order.order_type {
            OrderType::Create | OrderType::Restore if !id.is_empty() => {
                if self.backend.get_resource(id).await?.is_some() {
                    format!("mark done: {id} exists on the backend")
                } else {
                    format!("re-create {id} with limits {:?}", resource.limits)
                }
            }
            OrderType::Create | OrderType::Restore => {
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
            OrderType::Update => {
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
            OrderType::Terminate if id.is_empty() => {
                "mark done: the resource has no backend id".into()
            }
            OrderType::Terminate => format!("delete {id} (explicit: not counted by the breaker)"),
            OrderType::Other(t) => format!("mark erred: unsupported order type {t:?}"),
            OrderType::Missing => "mark erred: the order has no type".into(),
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
            span::ORDER,
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
        span.record(span::field::OUTCOME, label);
        if !matches!(outcome, OrderOutcome::Skipped) {
            let latency = matches!(outcome, OrderOutcome::Done)
                .then(|| age(created.as_deref()))
                .flatten();
            crate::metrics::order(&self.offering.name, order_type.as_str(), label, latency);
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
        match &order.state {
            OrderState::PendingProvider => {
                let decision = match self.evaluate(&order, &ids, cache).await {
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
                    _ => {
                        // Why it waits, for the consumer: said once, not
                        // rewritten every cycle.
                        if !decision.message.is_empty()
                            && decision.message != order.provider_message
                            && let Err(e) = self
                                .waldur
                                .set_order_provider_message(&ids.order, &decision.message)
                                .await
                        {
                            tracing::warn!(order = %order.uuid, error = %e, "provider message not left on the order");
                        }
                        return OrderOutcome::KeptPending;
                    }
                }
            }
            OrderState::Executing => {}
            s if s.is_final() => return OrderOutcome::Skipped,
            other => {
                tracing::warn!(order = %order.uuid, state = %other, "order in a state the agent does not handle");
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
                let message = waldur_message(&e, self.expose_errors);
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
    ) -> Result<Executed, StepError> {
        match &order.order_type {
            OrderType::Create | OrderType::Restore => self.create(order, ids, cache).await,
            OrderType::Update => self.update(order, ids, cache).await,
            OrderType::Terminate => self.terminate(order, ids).await,
            OrderType::Other(t) => Err(StepError::Failed(format!("unsupported order type {t:?}"))),
            OrderType::Missing => Err(StepError::Failed("the order has no type".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::execute::timestamp;
    use super::*;
    use crate::backend::BackendCallError;

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
        let refusal = StepError::Backend(BackendCallError {
            backend: "b".into(),
            rpc: "CreateResource",
            code: Code::InvalidArgument,
            reason: "INVALID_FIELD".into(),
            message: "name too long".into(),
            metadata: HashMap::new(),
        });
        assert_eq!(waldur_message(&refusal, false), "name too long");
        let internal = StepError::Failed("decode failed at /x".into());
        assert_eq!(waldur_message(&internal, false), HIDDEN_ERROR);
        assert!(waldur_message(&internal, true).contains("decode failed"));
    }

    #[test]
    fn dates_and_datetimes_become_timestamps() {
        assert!(timestamp(Some("2026-01-31")).is_some());
        assert!(timestamp(Some("2026-01-31T10:00:00Z")).is_some());
        assert!(timestamp(Some("garbage")).is_none());
    }
}
