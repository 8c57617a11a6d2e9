//! Order evaluation.

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) async fn order_evaluation_is_deterministic(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let order = wire::Order {
        order_uuid: format!("{:0>32}", format!("{}0d", ctx.run_id)),
        r#type: wire::OrderType::Create as i32,
        resource: Some(resource),
        ..Default::default()
    };
    let req = wire::EvaluateOrderRequest {
        instance: ctx.instance(),
        order: Some(order),
    };
    let first = ok(
        "EvaluateOrder",
        ctx.client.evaluate_order(req.clone()).await,
    )?;
    ensure(
        first.decision != wire::OrderDecision::Unspecified as i32,
        "no decision",
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "EvaluateOrder",
            ctx.client.evaluate_order(req.clone()).await,
        )?;
        ensure(
            again.decision == first.decision,
            "decision changed between identical calls",
        )?;
    }
    let r = ctx
        .client
        .evaluate_order(wire::EvaluateOrderRequest {
            instance: ctx.instance(),
            order: None,
        })
        .await;
    expect_code(
        "EvaluateOrder without order",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}
