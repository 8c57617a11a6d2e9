//! Access levels (pause, downscale) and metadata.

use std::collections::HashMap;

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) async fn set_access_is_idempotent(ctx: &mut Ctx, level: wire::AccessLevel) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let req = |access: wire::AccessLevel| wire::SetResourceAccessRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        access: access as i32,
    };
    let (set, full) = (req(level), req(wire::AccessLevel::Full));
    ok(
        "SetResourceAccess",
        ctx.client.set_resource_access(set.clone()).await,
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "SetResourceAccess",
            ctx.client.set_resource_access(set.clone()).await,
        )?;
        ensure(
            !again.changed,
            format!("repeating {level:?} reported a change"),
        )?;
    }
    let back = ok(
        "SetResourceAccess",
        ctx.client.set_resource_access(full.clone()).await,
    )?;
    ensure(back.changed, "returning to FULL reported no change")?;
    let again = ok(
        "SetResourceAccess",
        ctx.client.set_resource_access(full).await,
    )?;
    ensure(!again.changed, "repeating FULL reported a change")
}

pub(super) async fn pause_is_idempotent_and_reversible(ctx: &mut Ctx) -> R {
    set_access_is_idempotent(ctx, wire::AccessLevel::Paused).await
}

pub(super) async fn downscale_is_idempotent_and_reversible(ctx: &mut Ctx) -> R {
    set_access_is_idempotent(ctx, wire::AccessLevel::Downscaled).await
}

pub(super) async fn unspecified_access_level_is_invalid_argument(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .set_resource_access(wire::SetResourceAccessRequest {
            instance: ctx.instance(),
            backend_id: "conf-x".into(),
            access: wire::AccessLevel::Unspecified as i32,
        })
        .await;
    expect_code(
        "SetResourceAccess",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

pub(super) async fn metadata_is_returned_for_existing_resources_only(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    for _ in 0..ctx.fx.repeat() {
        ok(
            "GetResourceMetadata",
            ctx.client
                .get_resource_metadata(wire::GetResourceMetadataRequest {
                    instance: ctx.instance(),
                    backend_id: id.clone(),
                })
                .await,
        )?;
    }
    let r = ctx
        .client
        .get_resource_metadata(wire::GetResourceMetadataRequest {
            instance: ctx.instance(),
            backend_id: "conf-absent-zz".into(),
        })
        .await;
    expect_code(
        "GetResourceMetadata",
        r,
        Code::NotFound,
        Some(reason::RESOURCE_NOT_FOUND),
    )
    .map(drop)
}
