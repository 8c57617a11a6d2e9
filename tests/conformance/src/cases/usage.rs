//! Usage reports, current and historical.

use std::collections::HashMap;

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) fn check_usage(ctx: &Ctx, usage: &wire::ResourceUsage) -> R {
    for key in &ctx.usage_components {
        ensure(
            usage.total.contains_key(key),
            format!("{}: total lacks usage component {key}", usage.backend_id),
        )?;
    }
    for (key, total) in &usage.total {
        let sum: f64 = usage.users.iter().filter_map(|u| u.usage.get(key)).sum();
        // SPEC 5.14.2: the total is the users' sum, or, for a backend that
        // documents usage attributed to no user, more; never less.
        let tolerance = 1e-6 * total.abs().max(1.0);
        let fits = if ctx.fx.usage_total_may_exceed_users {
            sum <= total + tolerance
        } else {
            (sum - total).abs() <= tolerance
        };
        ensure(
            fits,
            format!(
                "{}: total {key}={total} but users sum to {sum}",
                usage.backend_id
            ),
        )?;
        ensure(
            *total >= 0.0,
            format!("{}: negative total {key}={total}", usage.backend_id),
        )?;
    }
    let names: Vec<&String> = usage.users.iter().map(|u| &u.username).collect();
    let mut sorted = names.clone();
    sorted.sort();
    ensure(names == sorted, "users are not sorted by username")
}

pub(super) async fn usage_totals_equal_the_sum_of_users(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), ctx.users(2)).await?;
    let req = wire::GetUsageReportRequest {
        instance: ctx.instance(),
        backend_ids: vec![id.clone()],
        period: None,
        timezone: "UTC".into(),
    };
    let first = ok(
        "GetUsageReport",
        ctx.client.get_usage_report(req.clone()).await,
    )?;
    let mine = first
        .resources
        .iter()
        .find(|r| r.backend_id == id)
        .ok_or("created resource missing from the report")?;
    check_usage(ctx, mine)?;
    let again = ok("GetUsageReport", ctx.client.get_usage_report(req).await)?;
    let mine2 = again
        .resources
        .iter()
        .find(|r| r.backend_id == id)
        .ok_or("resource missing on repeat")?;
    check_usage(ctx, mine2)
}

pub(super) async fn usage_report_validates_its_input(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .get_usage_report(wire::GetUsageReportRequest {
            instance: ctx.instance(),
            backend_ids: vec![],
            period: None,
            timezone: String::new(),
        })
        .await;
    expect_code(
        "GetUsageReport without ids",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

pub(super) async fn historical_usage_reports_a_past_month(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), ctx.users(2)).await?;
    let period = wire::BillingPeriod {
        year: 2026,
        month: 1,
    };
    let req = wire::GetUsageReportRequest {
        instance: ctx.instance(),
        backend_ids: vec![id.clone()],
        period: Some(period),
        timezone: "UTC".into(),
    };
    let report = ok(
        "GetUsageReport",
        ctx.client.get_usage_report(req.clone()).await,
    )?;
    for u in &report.resources {
        check_usage(ctx, u)?;
    }
    let bad = wire::GetUsageReportRequest {
        period: Some(wire::BillingPeriod {
            year: 2026,
            month: 13,
        }),
        ..req
    };
    let r = ctx.client.get_usage_report(bad).await;
    expect_code(
        "GetUsageReport for month 13",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}
