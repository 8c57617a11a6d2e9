//! Event mode for one offering: register the
//! subscriptions and queues, consume each queue over STOMP, and run the
//! reconciliation sweep that catches whatever events missed.
//!
//! Subscriptions, per role the offering has:
//! * order processing: `order` (and `resource_periodic_limits` when the
//!   backend applies periodic settings);
//! * membership sync: `user_role`, `resource`, `service_account`,
//!   `course_account`, `offering_user`, `offering_resources_sync`.
//!
//! plus `importable_resources` with `resource_import.enabled` and a backend
//! that lists its resources. (`resource_api_key_rotation` needs API-key RPCs
//! the contract does not define, so it is never subscribed.) Registration retries until Waldur answers; each queue has
//! its own consumer, which reconnects for ever.

use std::sync::Arc;
use std::time::Duration;
use waldur_runtime::span;

use tracing::Instrument;
use waldur_backend_api::types::Capability;

use super::handlers::{self, Handled};
use crate::runtime::{Coordinator, OfferingRuntime};
use waldur_client::WaldurError;
use waldur_client::ids::Uuid;
use waldur_client::types::OrderState;
use waldur_stomp::client::{self, ConsumerState, StompConfig};

/// The object types an offering subscribes to.
pub async fn object_types(o: &OfferingRuntime) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(t) = &o.orders {
        out.push("order");
        if o.config.resource_import.enabled
            && t.backend
                .has(Capability::ListResources)
                .await
                .unwrap_or(false)
        {
            out.push("importable_resources");
        }
        if t.backend
            .has(Capability::PeriodicSettings)
            .await
            .unwrap_or(false)
        {
            out.push("resource_periodic_limits");
        }
    }
    if o.membership.is_some() {
        out.extend([
            "user_role",
            "resource",
            "service_account",
            "course_account",
            "offering_user",
            "offering_resources_sync",
        ]);
    }
    out
}

async fn identity(o: &OfferingRuntime) -> Option<Uuid> {
    if let Some(t) = &o.orders {
        t.register().await;
        return t.identity().await;
    }
    if let Some(t) = &o.membership {
        t.register().await;
        return t.identity().await;
    }
    None
}

/// A queue to consume: (object type, STOMP settings).
async fn subscribe(
    o: &OfferingRuntime,
    identity: &Uuid,
    object_type: &str,
) -> Result<StompConfig, WaldurError> {
    let offering = &o.config.offering_uuid;
    let sub = o
        .waldur
        .register_event_subscription(identity, object_type)
        .await?;
    let garbled = |e: waldur_client::ids::InvalidUuid| {
        WaldurError::unexpected("POST", "register_event_subscription", e)
    };
    let sub_uuid = Uuid::parse("subscription.uuid", &sub.uuid).map_err(garbled)?;
    let user_uuid = Uuid::parse("subscription.user_uuid", &sub.user_uuid).map_err(garbled)?;
    let queue = o
        .waldur
        .create_queue(&sub_uuid, offering, object_type)
        .await?;
    let name = if queue.queue_name.is_empty() {
        format!("subscription_{sub_uuid}_offering_{offering}_{object_type}")
    } else {
        queue.queue_name
    };
    let settings = &o.config.events;
    let mut config = StompConfig::new(
        settings.url(&o.config.waldur.api_url),
        user_uuid.to_string(),
        sub_uuid.to_string(),
        o.stomp_passcode
            .clone()
            .unwrap_or_else(|| waldur_runtime::secret::Secret::new("")),
        name,
    );
    config.heartbeat = Duration::from_secs(settings.heartbeat_seconds.max(1));
    config.prefetch = settings.prefetch.max(1);
    config.max_backoff = Duration::from_secs(settings.max_backoff_seconds.max(1));
    config.max_frame_bytes = settings.max_frame_bytes;
    config.max_message_bytes = settings.max_message_bytes;
    Ok(config)
}

/// Runs event mode for offering `index` until the task is aborted.
pub async fn run(c: Arc<Coordinator>, index: usize) {
    let o = &c.offerings[index];
    let name = o.config.name.clone();
    let mut wait = Duration::from_secs(1);
    let identity = loop {
        match identity(o).await {
            Some(i) => break i,
            None => {
                tracing::warn!(offering = %name, retry_in = ?wait, "agent identity not registered; event processing waits");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(120));
            }
        }
    };
    let mut consumers = tokio::task::JoinSet::new();
    for object_type in object_types(o).await {
        let mut wait = Duration::from_secs(1);
        let config = loop {
            match subscribe(o, &identity, object_type).await {
                Ok(cfg) => break cfg,
                Err(e) => {
                    tracing::warn!(offering = %name, object_type, error = %e, retry_in = ?wait, "event subscription failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(120));
                }
            }
        };
        tracing::info!(offering = %name, object_type, queue = %config.queue, "consuming events");
        let state = ConsumerState::default();
        o.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((object_type, state.clone()));
        let c = c.clone();
        consumers.spawn(async move {
            let offering = &c.offerings[index];
            client::consume(
                config,
                state,
                |message| {
                    // Each event is the root of its own trace (an order it
                    // carries gets its own root span too).
                    let span = tracing::info_span!(parent: None, span::EVENT, offering = %offering.config.name, object_type);
                    async move {
                        let outcome = match &message.refused {
                            Some(why) => Handled::Invalid(why.clone()),
                            None => handlers::handle(offering, object_type, &message.body).await,
                        };
                        crate::metrics::event(
                            &offering.config.name,
                            object_type,
                            matches!(outcome, Handled::Invalid(_) | Handled::Failed(_)),
                        );
                        log(object_type, message.redelivered, &outcome);
                    }
                    .instrument(span)
                },
                std::future::pending::<()>(),
            )
            .await;
        });
    }
    reconcile(o).await;
}

fn log(object_type: &str, redelivered: bool, outcome: &Handled) {
    match outcome {
        Handled::Done(what) => {
            tracing::info!(object_type, redelivered, result = %what, "event handled")
        }
        Handled::Dropped(why) => tracing::debug!(object_type, reason = %why, "event needs no work"),
        Handled::Invalid(why) => {
            tracing::warn!(object_type, reason = %why, "malformed event acknowledged and dropped")
        }
        Handled::Failed(why) => {
            tracing::warn!(object_type, error = %why, "event handling failed; the reconciliation sweep retries")
        }
    }
}

/// The timers of event mode, for ever: the health check (Waldur answers,
/// backends ready) and the reconciliation sweep (open orders and offering
/// users that events did not settle).
async fn reconcile(o: &OfferingRuntime) {
    let settings = &o.config.events;
    let mut sweep = tokio::time::interval(Duration::from_secs(settings.reconcile_seconds.max(1)));
    let mut health = tokio::time::interval(Duration::from_secs(settings.health_seconds.max(1)));
    // The first tick of an interval is immediate; the initial pass is the
    // polling loops' first cycle, so skip it here.
    sweep.tick().await;
    health.tick().await;
    loop {
        tokio::select! {
            _ = health.tick() => health_check(o).await,
            _ = sweep.tick() => sweep_once(o).await,
        }
    }
}

async fn health_check(o: &OfferingRuntime) {
    let name = &o.config.name;
    match o
        .waldur
        .orders(&o.config.offering_uuid, &[OrderState::PendingProvider])
        .await
    {
        Ok(_) => tracing::debug!(offering = %name, "health check: waldur answers"),
        Err(e) => tracing::warn!(offering = %name, error = %e, "health check: waldur unreachable"),
    }
    let backends = [
        o.orders.as_ref().map(|t| &t.backend),
        o.membership.as_ref().map(|t| &t.backend),
    ];
    for b in backends.into_iter().flatten() {
        match b.probe().await {
            Ok(p) if p.ready => {}
            Ok(p) => {
                tracing::warn!(offering = %name, backend = b.name(), reason = %p.message, "health check: backend not ready")
            }
            Err(e) => {
                tracing::warn!(offering = %name, backend = b.name(), error = %e, "health check: backend unreachable")
            }
        }
    }
}

async fn sweep_once(o: &OfferingRuntime) {
    if let Some(t) = &o.orders {
        match t
            .processor
            .run_stuck_cycle(o.config.events.stuck_after_seconds)
            .await
        {
            Ok(r) if !r.outcomes.is_empty() => {
                tracing::info!(offering = %o.config.name, orders = r.outcomes.len(), "stuck orders reconciled")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(offering = %o.config.name, error = %e, "stuck order sweep failed")
            }
        }
    }
    if let Some(t) = &o.membership
        && let Err(e) = t.processor.usernames_pass().await
    {
        tracing::warn!(offering = %o.config.name, error = %e, "offering user sweep failed");
    }
}
