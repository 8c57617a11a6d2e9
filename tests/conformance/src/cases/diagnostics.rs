//! Diagnostics and periodic settings.

use std::collections::HashMap;

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) async fn diagnostics_report_at_least_one_check(ctx: &mut Ctx) -> R {
    let d = ok(
        "GetDiagnostics",
        ctx.client
            .get_diagnostics(wire::GetDiagnosticsRequest {
                instance: ctx.instance(),
            })
            .await,
    )?;
    ensure(!d.checks.is_empty(), "no checks")?;
    for c in &d.checks {
        ensure(!c.name.is_empty(), "a check has no name")?;
        ensure(
            c.status != wire::CheckStatus::Unspecified as i32,
            format!("check {} has no status", c.name),
        )?;
    }
    Ok(())
}

pub(super) async fn periodic_settings_are_idempotent(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let settings = prost_types::Struct {
        fields: ctx
            .fx
            .periodic_settings
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    };
    let req = wire::ApplyPeriodicSettingsRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        settings: Some(settings),
    };
    ok(
        "ApplyPeriodicSettings",
        ctx.client.apply_periodic_settings(req.clone()).await,
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "ApplyPeriodicSettings",
            ctx.client.apply_periodic_settings(req.clone()).await,
        )?;
        ensure(
            again.actions.is_empty(),
            format!(
                "repeating the same settings acted again: {:?}",
                again.actions
            ),
        )?;
    }
    let r = ctx
        .client
        .apply_periodic_settings(wire::ApplyPeriodicSettingsRequest {
            instance: ctx.instance(),
            backend_id: id,
            settings: None,
        })
        .await;
    expect_code(
        "ApplyPeriodicSettings without settings",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

pub(super) fn json_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
