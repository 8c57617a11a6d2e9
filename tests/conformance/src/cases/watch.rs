//! Slow provisioning and the Watch stream.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use waldur_backend_proto::v1::{self as wire, Capability};

use super::{R, ok};
use crate::{Ctx, ensure, status_text};

pub(super) async fn slow_create_completes_when_re_issued_and_is_announced_on_watch(
    ctx: &mut Ctx,
) -> R {
    let resource = ctx.new_resource();
    let id = ctx.backend_id_for(&resource).await?;
    let mut events = ok(
        "Watch",
        ctx.client
            .watch(wire::WatchRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone()],
            })
            .await,
    )?;
    let (created_id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    ensure(created_id == id, "backend id changed")?;
    // The create finished; its completion must have been announced.
    let event = tokio::time::timeout(ctx.fx.slow_timeout(), events.next())
        .await
        .map_err(|_| "no Watch event for the slow create".to_owned())?
        .ok_or("Watch stream ended")?
        .map_err(|s| status_text("Watch", &s))?;
    ensure(
        event.backend_id == id,
        format!("event for {} instead of {id}", event.backend_id),
    )?;
    ensure(
        event.state == wire::OperationState::Succeeded as i32,
        format!("event state {}", event.state),
    )
}

pub(super) async fn watch_stream_opens_and_filters_by_resource(ctx: &mut Ctx) -> R {
    let stream = ok(
        "Watch",
        ctx.client
            .watch(wire::WatchRequest {
                instance: ctx.instance(),
                backend_ids: vec!["conf-quiet-zz".into()],
            })
            .await,
    )?;
    let mut stream = stream;
    // Nothing happens to this resource: the stream stays open and silent.
    match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        Err(_) => Ok(()),
        Ok(None) => Err("Watch stream ended on its own".into()),
        Ok(Some(Ok(e))) => Err(format!("unexpected event for {}", e.backend_id)),
        Ok(Some(Err(s))) => Err(status_text("Watch", &s)),
    }
}

pub(super) async fn fast_backends_answer_ready_at_once(ctx: &mut Ctx) -> R {
    if ctx.has(Capability::SlowProvisioning) {
        return Ok(());
    }
    let resource = ctx.new_resource();
    let (_, resp) = ctx.create(resource, HashMap::new(), vec![]).await?;
    ensure(resp.ready, "ready=false without SLOW_PROVISIONING")
}
