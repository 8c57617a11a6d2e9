//! Resource and per-user limits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire, Capability};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) async fn set_resource_limits_is_idempotent_and_full_state(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, ctx.some_limits(1), vec![]).await?;
    for value in [5, 7] {
        let want = ctx.some_limits(value);
        for _ in 0..ctx.fx.repeat() {
            set_limits_until_ready(ctx, &id, want.clone()).await?;
        }
        let got = ok(
            "GetResourceLimits",
            ctx.client
                .get_resource_limits(wire::GetResourceLimitsRequest {
                    instance: ctx.instance(),
                    backend_id: id.clone(),
                })
                .await,
        )?
        .limits;
        for (k, v) in &want {
            ensure(
                got.get(k) == Some(v),
                format!("limit {k}: want {v}, got {:?}", got.get(k)),
            )?;
        }
    }
    Ok(())
}

pub(super) async fn set_limits_until_ready(
    ctx: &mut Ctx,
    id: &str,
    limits: HashMap<String, i64>,
) -> R {
    let deadline = Instant::now() + ctx.fx.slow_timeout();
    loop {
        let r = ok(
            "SetResourceLimits",
            ctx.client
                .set_resource_limits(wire::SetResourceLimitsRequest {
                    instance: ctx.instance(),
                    backend_id: id.to_owned(),
                    limits: limits.clone(),
                    resource: None,
                })
                .await,
        )?;
        if r.ready {
            return Ok(());
        }
        ensure(
            ctx.has(Capability::SlowProvisioning),
            "ready=false without SLOW_PROVISIONING",
        )?;
        ensure(
            Instant::now() < deadline,
            "SetResourceLimits not ready in time",
        )?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn limits_of_a_missing_resource_are_not_found(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .set_resource_limits(wire::SetResourceLimitsRequest {
            instance: ctx.instance(),
            backend_id: "conf-absent-zz".into(),
            limits: HashMap::new(),
            resource: None,
        })
        .await;
    expect_code(
        "SetResourceLimits",
        r,
        Code::NotFound,
        Some(reason::RESOURCE_NOT_FOUND),
    )?;
    let r = ctx
        .client
        .get_resource_limits(wire::GetResourceLimitsRequest {
            instance: ctx.instance(),
            backend_id: "conf-absent-zz".into(),
        })
        .await;
    expect_code(
        "GetResourceLimits",
        r,
        Code::NotFound,
        Some(reason::RESOURCE_NOT_FOUND),
    )
    .map(drop)
}

pub(super) async fn user_limits_are_set_read_and_removed(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let users = ctx.users(1);
    let user = users[0].username.clone();
    let (id, _) = ctx.create(resource, HashMap::new(), users).await?;
    let want = ctx.some_limits(2);
    for _ in 0..ctx.fx.repeat() {
        ok(
            "SetUserLimits",
            ctx.client
                .set_user_limits(wire::SetUserLimitsRequest {
                    instance: ctx.instance(),
                    backend_id: id.clone(),
                    username: user.clone(),
                    limits: want.clone(),
                })
                .await,
        )?;
    }
    let got = ok(
        "GetUserLimits",
        ctx.client
            .get_user_limits(wire::GetUserLimitsRequest {
                instance: ctx.instance(),
                backend_id: id.clone(),
            })
            .await,
    )?;
    let mine = got
        .users
        .iter()
        .find(|u| u.username == user)
        .ok_or("user has no limits after set")?;
    for (k, v) in &want {
        ensure(
            mine.limits.get(k) == Some(v),
            format!("user limit {k}: want {v}, got {:?}", mine.limits.get(k)),
        )?;
    }
    ok(
        "SetUserLimits",
        ctx.client
            .set_user_limits(wire::SetUserLimitsRequest {
                instance: ctx.instance(),
                backend_id: id.clone(),
                username: user.clone(),
                limits: HashMap::new(),
            })
            .await,
    )?;
    let got = ok(
        "GetUserLimits",
        ctx.client
            .get_user_limits(wire::GetUserLimitsRequest {
                instance: ctx.instance(),
                backend_id: id,
            })
            .await,
    )?;
    let left = got
        .users
        .iter()
        .any(|u| u.username == user && !u.limits.is_empty());
    ensure(!left, "user limits still set after setting an empty map")
}
