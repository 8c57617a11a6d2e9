//! Identity and discovery: BackendInfo, capabilities, probe, components, instance validation and unadvertised RPCs.

use std::collections::BTreeSet;

use tonic::Code;
use tonic_types::StatusExt;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire, Capability};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) async fn backend_info_names_the_instance_and_the_contract_version(ctx: &mut Ctx) -> R {
    let req = wire::GetBackendInfoRequest {
        instance: ctx.instance(),
    };
    for _ in 0..ctx.fx.repeat() {
        let info = ok(
            "GetBackendInfo",
            ctx.client.get_backend_info(req.clone()).await,
        )?;
        ensure(!info.name.is_empty(), "name is empty")?;
        ensure(!info.version.is_empty(), "version is empty")?;
        ensure(
            info.instance == ctx.instance(),
            format!("instance is {:?}", info.instance),
        )?;
        ensure(
            info.contract_version == "1.0",
            format!("contract_version {:?}", info.contract_version),
        )?;
    }
    Ok(())
}

pub(super) async fn capabilities_do_not_change_between_calls(ctx: &mut Ctx) -> R {
    let req = wire::GetCapabilitiesRequest {
        instance: ctx.instance(),
    };
    let first = ok(
        "GetCapabilities",
        ctx.client.get_capabilities(req.clone()).await,
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "GetCapabilities",
            ctx.client.get_capabilities(req.clone()).await,
        )?;
        let a: BTreeSet<i32> = first.capabilities.iter().copied().collect();
        let b: BTreeSet<i32> = again.capabilities.iter().copied().collect();
        ensure(a == b, "capabilities changed between two calls")?;
    }
    ensure(
        !first
            .capabilities
            .contains(&(Capability::Unspecified as i32)),
        "CAPABILITY_UNSPECIFIED advertised",
    )
}

pub(super) async fn probe_reports_ready(ctx: &mut Ctx) -> R {
    let p = ok(
        "Probe",
        ctx.client
            .probe(wire::ProbeRequest {
                instance: ctx.instance(),
            })
            .await,
    )?;
    ensure(p.ready, format!("probe not ready: {}", p.message))
}

pub(super) async fn unknown_instance_is_not_found_with_reason(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .get_backend_info(wire::GetBackendInfoRequest {
            instance: "no-such-instance-zz".into(),
        })
        .await;
    expect_code(
        "GetBackendInfo",
        r,
        Code::NotFound,
        Some(reason::UNKNOWN_INSTANCE),
    )?;
    let r = ctx
        .client
        .get_resource(wire::GetResourceRequest {
            instance: "no-such-instance-zz".into(),
            backend_id: "x".into(),
        })
        .await;
    expect_code(
        "GetResource",
        r,
        Code::NotFound,
        Some(reason::UNKNOWN_INSTANCE),
    )
    .map(drop)
}

pub(super) async fn missing_instance_is_invalid_argument(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .probe(wire::ProbeRequest {
            instance: String::new(),
        })
        .await;
    let s = expect_code(
        "Probe",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )?;
    let field = s
        .get_details_error_info()
        .and_then(|i| i.metadata.get("field").cloned());
    ensure(
        field.as_deref() == Some("instance"),
        format!("ErrorInfo field is {field:?}"),
    )
}

pub(super) async fn oversized_instance_name_is_invalid_argument(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .probe(wire::ProbeRequest {
            instance: "i".repeat(300),
        })
        .await;
    expect_code(
        "Probe",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

pub(super) async fn components_have_keys_labels_units_and_types(ctx: &mut Ctx) -> R {
    let req = wire::ListComponentsRequest {
        instance: ctx.instance(),
    };
    let list = ok("ListComponents", ctx.client.list_components(req).await)?.components;
    let mut keys = BTreeSet::new();
    for c in &list {
        ensure(!c.key.is_empty(), "a component has no key")?;
        ensure(
            keys.insert(c.key.clone()),
            format!("component {} listed twice", c.key),
        )?;
        ensure(
            !c.label.is_empty(),
            format!("component {} has no label", c.key),
        )?;
        ensure(
            !c.measured_unit.is_empty(),
            format!("component {} has no unit", c.key),
        )?;
        ensure(
            c.accounting_type != wire::AccountingType::Unspecified as i32,
            format!("component {} has no accounting type", c.key),
        )?;
    }
    for wanted in &ctx.components {
        ensure(
            keys.contains(wanted),
            format!("fixture component {wanted} not listed"),
        )?;
    }
    Ok(())
}

pub(super) async fn generate_backend_id_is_a_pure_function(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let first = ctx.backend_id_for(&resource).await?;
    for _ in 1..ctx.fx.repeat() {
        let again = ctx.backend_id_for(&resource).await?;
        ensure(first == again, format!("{first} then {again}"))?;
    }
    let r = ctx
        .client
        .generate_backend_id(wire::GenerateBackendIdRequest {
            instance: ctx.instance(),
            base_name: String::new(),
            resource: None,
        })
        .await;
    expect_code("GenerateBackendId", r, Code::InvalidArgument, None).map(drop)
}

pub(super) async fn unadvertised_rpcs_answer_unimplemented(ctx: &mut Ctx) -> R {
    let inst = ctx.instance();
    let id = "conf-unadvertised".to_owned();
    let mut checked = 0;
    macro_rules! check {
        ($cap:expr, $rpc:literal, $call:expr) => {
            if !ctx.has($cap) {
                checked += 1;
                expect_code($rpc, $call.await, Code::Unimplemented, None)?;
            }
        };
    }
    check!(
        Capability::Diagnostics,
        "GetDiagnostics",
        ctx.client.get_diagnostics(wire::GetDiagnosticsRequest {
            instance: inst.clone()
        })
    );
    check!(
        Capability::Resources,
        "GetResource",
        ctx.client.get_resource(wire::GetResourceRequest {
            instance: inst.clone(),
            backend_id: id.clone()
        })
    );
    check!(
        Capability::ListResources,
        "ListResources",
        ctx.client.list_resources(wire::ListResourcesRequest {
            instance: inst.clone(),
            ..Default::default()
        })
    );
    check!(
        Capability::ResourceLimits,
        "GetResourceLimits",
        ctx.client
            .get_resource_limits(wire::GetResourceLimitsRequest {
                instance: inst.clone(),
                backend_id: id.clone()
            })
    );
    check!(
        Capability::UserLimits,
        "GetUserLimits",
        ctx.client.get_user_limits(wire::GetUserLimitsRequest {
            instance: inst.clone(),
            backend_id: id.clone()
        })
    );
    check!(
        Capability::Metadata,
        "GetResourceMetadata",
        ctx.client
            .get_resource_metadata(wire::GetResourceMetadataRequest {
                instance: inst.clone(),
                backend_id: id.clone()
            })
    );
    check!(
        Capability::Membership,
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: inst.clone(),
                backend_ids: vec![id.clone()],
                ..Default::default()
            })
    );
    check!(
        Capability::UsageReport,
        "GetUsageReport",
        ctx.client.get_usage_report(wire::GetUsageReportRequest {
            instance: inst.clone(),
            backend_ids: vec![id.clone()],
            ..Default::default()
        })
    );
    check!(
        Capability::Usernames,
        "GetUsername",
        ctx.client.get_username(wire::GetUsernameRequest {
            instance: inst.clone(),
            user: Some(wire::OfferingUser {
                offering_user_uuid: "x".into(),
                ..Default::default()
            })
        })
    );
    check!(
        Capability::Pause,
        "SetResourceAccess",
        ctx.client
            .set_resource_access(wire::SetResourceAccessRequest {
                instance: inst.clone(),
                backend_id: id.clone(),
                access: wire::AccessLevel::Paused as i32
            })
    );
    let _ = checked;
    Ok(())
}
