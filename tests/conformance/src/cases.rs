//! The cases. Each states a behaviour in its name and enforces a SPEC.md
//! clause; the list at the bottom says which capabilities each needs.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire, Capability};

use crate::{Case, Ctx, ensure, expect_code, status_text};

type R = Result<(), String>;

fn ok<T>(rpc: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, String> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| status_text(rpc, &s))
}

// ------------------------------------------------------------------ identity

async fn backend_info_names_the_instance_and_the_contract_version(ctx: &mut Ctx) -> R {
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

async fn capabilities_do_not_change_between_calls(ctx: &mut Ctx) -> R {
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

async fn probe_reports_ready(ctx: &mut Ctx) -> R {
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

async fn unknown_instance_is_not_found_with_reason(ctx: &mut Ctx) -> R {
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

async fn missing_instance_is_invalid_argument(ctx: &mut Ctx) -> R {
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

async fn oversized_instance_name_is_invalid_argument(ctx: &mut Ctx) -> R {
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

async fn components_have_keys_labels_units_and_types(ctx: &mut Ctx) -> R {
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

async fn generate_backend_id_is_a_pure_function(ctx: &mut Ctx) -> R {
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

async fn unadvertised_rpcs_answer_unimplemented(ctx: &mut Ctx) -> R {
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
                backend_ids: vec![id.clone()]
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

// ----------------------------------------------------------------- resources

async fn create_resource_is_idempotent(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let limits = ctx.some_limits(3);
    let (id, first) = ctx.create(resource.clone(), limits.clone(), vec![]).await?;
    let info = first
        .resource
        .ok_or("CreateResource returned no resource")?;
    ensure(
        info.backend_id == id,
        format!("created {} instead of {id}", info.backend_id),
    )?;
    let request = wire::CreateResourceRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        resource: Some(resource),
        limits: limits.clone(),
        ..Default::default()
    };
    for _ in 1..ctx.fx.repeat() {
        let again = ctx.create_until_ready(request.clone()).await?;
        let again = again.resource.ok_or("repeat returned no resource")?;
        ensure(again.backend_id == id, "repeat created another id")?;
    }
    let got = ok(
        "GetResource",
        ctx.client
            .get_resource(wire::GetResourceRequest {
                instance: ctx.instance(),
                backend_id: id.clone(),
            })
            .await,
    )?;
    let got = got.resource.ok_or("GetResource returned no resource")?;
    ensure(got.backend_id == id, "GetResource returned another id")?;
    if ctx.has(Capability::ListResources) {
        let page = ok(
            "ListResources",
            ctx.client
                .list_resources(wire::ListResourcesRequest {
                    instance: ctx.instance(),
                    page_size: 0,
                    ..Default::default()
                })
                .await,
        );
        // Only a sanity check here; paging has its own case.
        let _ = page?;
    }
    Ok(())
}

async fn create_with_an_id_owned_by_another_resource_is_already_exists(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource.clone(), HashMap::new(), vec![]).await?;
    let mut other = ctx.new_resource();
    other.project_slug = ctx.fx.alt_project_slug.clone();
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: id,
            resource: Some(other),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::AlreadyExists,
        Some(reason::RESOURCE_ALREADY_EXISTS),
    )
    .map(drop)
}

/// SPEC 7.1: an id the backend cannot use as it stands is refused; it is
/// never read as another (folded) id, so no answer names something the
/// request did not.
async fn an_identifier_is_never_folded(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let mut variants = vec![id.to_uppercase(), format!("{id}\u{212a}")];
    // The Kelvin sign folds to "k" under Unicode compatibility forms.
    if let Some(i) = id.find('k') {
        variants.push(format!("{}\u{212a}{}", &id[..i], &id[i + 1..]));
    }
    variants.retain(|v| v != &id);
    for asked in variants {
        let r = ctx
            .client
            .get_resource(wire::GetResourceRequest {
                instance: ctx.instance(),
                backend_id: asked.clone(),
            })
            .await;
        match r {
            Ok(found) => {
                let got = found.into_inner().resource.unwrap_or_default().backend_id;
                if got != asked {
                    return Err(format!(
                        "GetResource({asked:?}) answered the resource {got:?}: the id was folded"
                    ));
                }
            }
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => {}
            Err(s) => {
                return Err(format!(
                    "GetResource({asked:?}): expected NOT_FOUND or INVALID_ARGUMENT, got {}",
                    status_text("", &s)
                ));
            }
        }
    }
    Ok(())
}

/// SPEC 5.3a: every change to something the backend does not manage is
/// refused with RESOURCE_NOT_MANAGED, and afterwards it is still there.
async fn what_the_backend_does_not_manage_is_refused_and_left_alone(ctx: &mut Ctx) -> R {
    // The suite's creates make the tree the fixture names (for SLURM, the
    // project account).
    let resource = ctx.new_resource();
    ctx.create(resource, HashMap::new(), vec![]).await?;
    let id = ctx.fx.unmanaged_backend_id.clone();
    let refused = |rpc: &str, r: Result<(), tonic::Status>| {
        expect_code(
            rpc,
            r,
            Code::FailedPrecondition,
            Some(reason::RESOURCE_NOT_MANAGED),
        )
        .map(drop)
    };
    let instance = ctx.instance();
    let (membership, limits) = (
        ctx.has(Capability::Membership),
        ctx.has(Capability::ResourceLimits),
    );
    let user = ctx.fx.users[0].clone();
    let key = ctx.components.first().cloned().unwrap_or_default();
    let c = &mut ctx.client;
    refused(
        "GetResource",
        c.get_resource(wire::GetResourceRequest {
            instance: instance.clone(),
            backend_id: id.clone(),
        })
        .await
        .map(drop),
    )?;
    if membership {
        refused(
            "RemoveUsers",
            c.remove_users(wire::RemoveUsersRequest {
                instance: instance.clone(),
                backend_id: id.clone(),
                usernames: vec![user],
            })
            .await
            .map(drop),
        )?;
    }
    if limits {
        refused(
            "SetResourceLimits",
            c.set_resource_limits(wire::SetResourceLimitsRequest {
                instance: instance.clone(),
                backend_id: id.clone(),
                limits: HashMap::from([(key, 0)]),
                ..Default::default()
            })
            .await
            .map(drop),
        )?;
    }
    for mode in [wire::DeletionMode::Soft, wire::DeletionMode::Hard] {
        refused(
            "DeleteResource",
            c.delete_resource(wire::DeleteResourceRequest {
                instance: instance.clone(),
                backend_id: id.clone(),
                mode: mode as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        )?;
    }
    // Still there, still not managed.
    refused(
        "GetResource after the refusals",
        c.get_resource(wire::GetResourceRequest {
            instance,
            backend_id: id,
        })
        .await
        .map(drop),
    )
}

async fn get_missing_resource_is_not_found(ctx: &mut Ctx) -> R {
    let r = ctx
        .client
        .get_resource(wire::GetResourceRequest {
            instance: ctx.instance(),
            backend_id: "conf-absent-zz".into(),
        })
        .await;
    expect_code(
        "GetResource",
        r,
        Code::NotFound,
        Some(reason::RESOURCE_NOT_FOUND),
    )
    .map(drop)
}

async fn delete_resource_is_idempotent(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let first = ctx.delete(&id).await?;
    ensure(
        first.existed,
        "first delete says the resource did not exist",
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ctx.delete(&id).await?;
        ensure(
            !again.existed,
            "repeated delete says the resource still existed",
        )?;
    }
    let r = ctx
        .client
        .get_resource(wire::GetResourceRequest {
            instance: ctx.instance(),
            backend_id: id,
        })
        .await;
    expect_code("GetResource after delete", r, Code::NotFound, None).map(drop)
}

async fn delete_of_a_missing_resource_succeeds(ctx: &mut Ctx) -> R {
    let r = ctx.delete("conf-never-created-zz").await?;
    ensure(!r.existed, "existed=true for a resource that never existed")
}

async fn create_without_backend_id_is_invalid_argument(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: String::new(),
            resource: Some(resource),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn create_without_resource_uuid_is_invalid_argument(ctx: &mut Ctx) -> R {
    let mut resource = ctx.new_resource();
    let id = ctx.backend_id_for(&resource).await?;
    resource.resource_uuid.clear();
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: id,
            resource: Some(resource),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn create_with_an_oversized_backend_id_is_invalid_argument(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: "a".repeat(300),
            resource: Some(resource),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn create_with_an_unknown_component_is_invalid_argument(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let id = ctx.backend_id_for(&resource).await?;
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: id,
            resource: Some(resource),
            limits: HashMap::from([("no_such_component_zz".to_owned(), 1)]),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::InvalidArgument,
        Some(reason::UNKNOWN_COMPONENT),
    )
    .map(drop)
}

async fn create_with_a_negative_limit_is_invalid_argument(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let id = ctx.backend_id_for(&resource).await?;
    let Some(component) = ctx.components.first().cloned() else {
        return Ok(());
    };
    let r = ctx
        .client
        .create_resource(wire::CreateResourceRequest {
            instance: ctx.instance(),
            backend_id: id,
            resource: Some(resource),
            limits: HashMap::from([(component, -5)]),
            ..Default::default()
        })
        .await;
    expect_code(
        "CreateResource",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn soft_delete_keeps_the_resource_with_zero_limits(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, ctx.some_limits(4), vec![]).await?;
    let deadline = Instant::now() + ctx.fx.slow_timeout();
    for _ in 0..ctx.fx.repeat() {
        loop {
            let r = ok(
                "DeleteResource",
                ctx.client
                    .delete_resource(wire::DeleteResourceRequest {
                        instance: ctx.instance(),
                        backend_id: id.clone(),
                        mode: wire::DeletionMode::Soft as i32,
                        resource: None,
                    })
                    .await,
            )?;
            if r.ready {
                break;
            }
            ensure(Instant::now() < deadline, "soft delete not ready in time")?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let limits = ok(
        "GetResourceLimits",
        ctx.client
            .get_resource_limits(wire::GetResourceLimitsRequest {
                instance: ctx.instance(),
                backend_id: id,
            })
            .await,
    )?
    .limits;
    for c in &ctx.components {
        let v = limits.get(c).copied().unwrap_or(0);
        ensure(v == 0, format!("limit {c} is {v} after soft delete"))?;
    }
    Ok(())
}

async fn list_resources_pages_cover_every_resource_once(ctx: &mut Ctx) -> R {
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        let r = ctx.new_resource();
        ids.insert(ctx.create(r, HashMap::new(), vec![]).await?.0);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let page = ok(
            "ListResources",
            ctx.client
                .list_resources(wire::ListResourcesRequest {
                    instance: ctx.instance(),
                    parent_id: String::new(),
                    page_size: 1,
                    page_token: token.clone(),
                })
                .await,
        )?;
        ensure(
            page.resources.len() <= 1,
            format!("page_size 1 gave {}", page.resources.len()),
        )?;
        seen.extend(page.resources.into_iter().map(|r| r.backend_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    ensure(
        unique.len() == seen.len(),
        "a resource appeared on two pages",
    )?;
    let mut sorted = seen.clone();
    sorted.sort();
    ensure(sorted == seen, "resources are not ordered by backend id")?;
    for id in &ids {
        ensure(seen.contains(id), format!("{id} missing from the listing"))?;
    }
    Ok(())
}

async fn sync_resource_project_is_idempotent(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource.clone(), HashMap::new(), vec![]).await?;
    let mut moved = resource.clone();
    moved.project_slug = ctx.fx.alt_project_slug.clone();
    moved.project_name = "conformance project two".into();
    let req = wire::SyncResourceProjectRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        resource: Some(moved),
    };
    let first = ok(
        "SyncResourceProject",
        ctx.client.sync_resource_project(req.clone()).await,
    )?;
    ensure(
        first.changed,
        "moving to another project reported no change",
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "SyncResourceProject",
            ctx.client.sync_resource_project(req.clone()).await,
        )?;
        ensure(!again.changed, "repeating the move reported a change")?;
    }
    Ok(())
}

// -------------------------------------------------------------------- limits

async fn set_resource_limits_is_idempotent_and_full_state(ctx: &mut Ctx) -> R {
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

async fn set_limits_until_ready(ctx: &mut Ctx, id: &str, limits: HashMap<String, i64>) -> R {
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

async fn limits_of_a_missing_resource_are_not_found(ctx: &mut Ctx) -> R {
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

async fn user_limits_are_set_read_and_removed(ctx: &mut Ctx) -> R {
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

// ------------------------------------------------------------ access, status

async fn set_access_is_idempotent(ctx: &mut Ctx, level: wire::AccessLevel) -> R {
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

async fn pause_is_idempotent_and_reversible(ctx: &mut Ctx) -> R {
    set_access_is_idempotent(ctx, wire::AccessLevel::Paused).await
}

async fn downscale_is_idempotent_and_reversible(ctx: &mut Ctx) -> R {
    set_access_is_idempotent(ctx, wire::AccessLevel::Downscaled).await
}

async fn unspecified_access_level_is_invalid_argument(ctx: &mut Ctx) -> R {
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

async fn metadata_is_returned_for_existing_resources_only(ctx: &mut Ctx) -> R {
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

// ---------------------------------------------------------------- membership

fn outcomes(results: &[wire::UserResult]) -> Vec<(String, i32)> {
    results
        .iter()
        .map(|r| (r.username.clone(), r.outcome))
        .collect()
}

async fn add_users_is_idempotent_per_user(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let users = ctx.users(2);
    let req = wire::AddUsersRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        users: users.clone(),
        homedir_umask: String::new(),
    };
    let first = ok("AddUsers", ctx.client.add_users(req.clone()).await)?.results;
    ensure(
        first.len() == users.len(),
        format!("{} results for {} users", first.len(), users.len()),
    )?;
    for (u, r) in users.iter().zip(&first) {
        ensure(r.username == u.username, "results are not in request order")?;
        ensure(
            r.outcome == wire::UserOutcome::Applied as i32,
            format!("first add of {}: {:?} {}", u.username, r.outcome, r.message),
        )?;
    }
    for _ in 1..ctx.fx.repeat() {
        let again = ok("AddUsers", ctx.client.add_users(req.clone()).await)?.results;
        for (name, outcome) in outcomes(&again) {
            ensure(
                outcome == wire::UserOutcome::Unchanged as i32,
                format!("repeated add of {name} gave {outcome}"),
            )?;
        }
    }
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone()],
            })
            .await,
    )?;
    let members = &listing
        .resources
        .iter()
        .find(|r| r.backend_id == id)
        .ok_or("resource missing from ListResourceUsers")?
        .usernames;
    for u in &users {
        ensure(
            members.contains(&u.username),
            format!("{} not listed as member", u.username),
        )?;
    }
    Ok(())
}

async fn remove_users_is_idempotent_per_user(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let users = ctx.users(2);
    let (id, _) = ctx.create(resource, HashMap::new(), users.clone()).await?;
    let names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    let req = wire::RemoveUsersRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        usernames: vec![names[0].clone()],
    };
    let first = ok("RemoveUsers", ctx.client.remove_users(req.clone()).await)?.results;
    ensure(
        first.len() == 1 && first[0].outcome == wire::UserOutcome::Applied as i32,
        format!("first remove: {first:?}"),
    )?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok("RemoveUsers", ctx.client.remove_users(req.clone()).await)?.results;
        ensure(
            again.len() == 1 && again[0].outcome == wire::UserOutcome::Unchanged as i32,
            format!("repeated remove: {again:?}"),
        )?;
    }
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone()],
            })
            .await,
    )?;
    let members = &listing
        .resources
        .iter()
        .find(|r| r.backend_id == id)
        .ok_or("resource missing from ListResourceUsers")?
        .usernames;
    ensure(!members.contains(&names[0]), "removed user still listed")?;
    ensure(
        members.contains(&names[1]),
        "the other user was removed too",
    )
}

async fn list_resource_users_reports_missing_resources(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone(), "conf-absent-zz".into()],
            })
            .await,
    )?;
    ensure(
        listing.resources.iter().any(|r| r.backend_id == id),
        "existing resource not listed",
    )?;
    ensure(
        listing.missing_backend_ids == vec!["conf-absent-zz".to_owned()],
        format!("missing: {:?}", listing.missing_backend_ids),
    )
}

async fn membership_calls_validate_their_input(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let r = ctx
        .client
        .add_users(wire::AddUsersRequest {
            instance: ctx.instance(),
            backend_id: id.clone(),
            users: vec![],
            homedir_umask: String::new(),
        })
        .await;
    expect_code(
        "AddUsers without users",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )?;
    let r = ctx
        .client
        .add_users(wire::AddUsersRequest {
            instance: ctx.instance(),
            backend_id: id.clone(),
            users: vec![wire::User {
                username: "u".repeat(300),
                ..Default::default()
            }],
            homedir_umask: String::new(),
        })
        .await;
    expect_code(
        "AddUsers with an oversized username",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )?;
    let r = ctx
        .client
        .add_users(wire::AddUsersRequest {
            instance: ctx.instance(),
            backend_id: "conf-absent-zz".into(),
            users: ctx.users(1),
            homedir_umask: String::new(),
        })
        .await;
    expect_code(
        "AddUsers on a missing resource",
        r,
        Code::NotFound,
        Some(reason::RESOURCE_NOT_FOUND),
    )?;
    let r = ctx
        .client
        .list_resource_users(wire::ListResourceUsersRequest {
            instance: ctx.instance(),
            backend_ids: vec![],
        })
        .await;
    expect_code(
        "ListResourceUsers without ids",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn create_adds_the_requested_users(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let users = ctx.users(2);
    let (id, resp) = ctx.create(resource, HashMap::new(), users.clone()).await?;
    ensure(
        resp.user_results.len() == users.len(),
        format!(
            "{} user results for {} users",
            resp.user_results.len(),
            users.len()
        ),
    )?;
    for r in &resp.user_results {
        ensure(
            r.outcome != wire::UserOutcome::Failed as i32,
            format!("adding {} failed: {}", r.username, r.message),
        )?;
    }
    let got = ok(
        "GetResource",
        ctx.client
            .get_resource(wire::GetResourceRequest {
                instance: ctx.instance(),
                backend_id: id,
            })
            .await,
    )?;
    let members = got.resource.map(|r| r.users).unwrap_or_default();
    for u in &users {
        ensure(
            members.contains(&u.username),
            format!("{} not a member after create", u.username),
        )?;
    }
    Ok(())
}

async fn home_directories_are_created_once(ctx: &mut Ctx) -> R {
    let names: Vec<String> = ctx.users(2).into_iter().map(|u| u.username).collect();
    let req = wire::CreateHomeDirectoriesRequest {
        instance: ctx.instance(),
        usernames: names.clone(),
        umask: "0077".into(),
    };
    let first = ok(
        "CreateHomeDirectories",
        ctx.client.create_home_directories(req.clone()).await,
    )?
    .results;
    ensure(first.len() == names.len(), "one result per user expected")?;
    for r in &first {
        ensure(
            r.outcome != wire::UserOutcome::Failed as i32,
            format!("{}: {}", r.username, r.message),
        )?;
    }
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "CreateHomeDirectories",
            ctx.client.create_home_directories(req.clone()).await,
        )?
        .results;
        for (name, outcome) in outcomes(&again) {
            ensure(
                outcome == wire::UserOutcome::Unchanged as i32,
                format!("repeated homedir for {name} gave {outcome}"),
            )?;
        }
    }
    let r = ctx
        .client
        .create_home_directories(wire::CreateHomeDirectoriesRequest {
            instance: ctx.instance(),
            usernames: names,
            umask: "999".into(),
        })
        .await;
    expect_code(
        "CreateHomeDirectories with a bad umask",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn role_reconciliation_is_idempotent(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let users = ctx.users(2);
    let (id, _) = ctx.create(resource, HashMap::new(), users.clone()).await?;
    let managers: Vec<wire::User> = users
        .into_iter()
        .map(|u| wire::User {
            role: "PROJECT.MANAGER".into(),
            ..u
        })
        .collect();
    let req = wire::ReconcileUserRolesRequest {
        instance: ctx.instance(),
        backend_id: id,
        users: managers,
    };
    let first = ok(
        "ReconcileUserRoles",
        ctx.client.reconcile_user_roles(req.clone()).await,
    )?
    .results;
    for r in &first {
        ensure(
            r.outcome != wire::UserOutcome::Failed as i32,
            format!("{}: {}", r.username, r.message),
        )?;
    }
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "ReconcileUserRoles",
            ctx.client.reconcile_user_roles(req.clone()).await,
        )?
        .results;
        for (name, outcome) in outcomes(&again) {
            ensure(
                outcome == wire::UserOutcome::Unchanged as i32,
                format!("repeated reconcile for {name} gave {outcome}"),
            )?;
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- usage

fn check_usage(ctx: &Ctx, usage: &wire::ResourceUsage) -> R {
    for key in &ctx.usage_components {
        ensure(
            usage.total.contains_key(key),
            format!("{}: total lacks usage component {key}", usage.backend_id),
        )?;
    }
    for (key, total) in &usage.total {
        let sum: f64 = usage.users.iter().filter_map(|u| u.usage.get(key)).sum();
        let tolerance = 1e-6 * total.abs().max(1.0);
        ensure(
            (sum - total).abs() <= tolerance,
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

async fn usage_totals_equal_the_sum_of_users(ctx: &mut Ctx) -> R {
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

async fn usage_report_validates_its_input(ctx: &mut Ctx) -> R {
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

async fn historical_usage_reports_a_past_month(ctx: &mut Ctx) -> R {
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

// ----------------------------------------------------------------- usernames

fn offering_user(ctx: &Ctx, n: u32, email: &str) -> wire::OfferingUser {
    wire::OfferingUser {
        offering_user_uuid: format!("{:0>32}", format!("{}ff{n}", ctx.run_id)),
        user_uuid: format!("{:0>32}", format!("{}ee{n}", ctx.run_id)),
        waldur_username: format!("confuser{n}"),
        email: email.to_owned(),
        full_name: format!("Conformance User {n}"),
        first_name: "Conformance".into(),
        last_name: format!("User{n}"),
        ..Default::default()
    }
}

async fn generated_usernames_are_stable(ctx: &mut Ctx) -> R {
    let user = offering_user(ctx, 1, "conf1@example.invalid");
    let unknown = ok(
        "GetUsername",
        ctx.client
            .get_username(wire::GetUsernameRequest {
                instance: ctx.instance(),
                user: Some(offering_user(ctx, 99, "x@example.invalid")),
            })
            .await,
    )?;
    ensure(
        unknown.username.is_empty(),
        format!("unknown offering user has username {:?}", unknown.username),
    )?;
    let req = wire::GenerateUsernameRequest {
        instance: ctx.instance(),
        user: Some(user.clone()),
    };
    let first = ok(
        "GenerateUsername",
        ctx.client.generate_username(req.clone()).await,
    )?
    .username;
    ensure(!first.is_empty(), "empty username generated")?;
    for _ in 1..ctx.fx.repeat() {
        let again = ok(
            "GenerateUsername",
            ctx.client.generate_username(req.clone()).await,
        )?
        .username;
        ensure(again == first, format!("{first} then {again}"))?;
    }
    let known = ok(
        "GetUsername",
        ctx.client
            .get_username(wire::GetUsernameRequest {
                instance: ctx.instance(),
                user: Some(user),
            })
            .await,
    )?;
    ensure(
        known.username == first,
        format!("GetUsername says {:?}, generated {first}", known.username),
    )?;
    let r = ctx
        .client
        .generate_username(wire::GenerateUsernameRequest {
            instance: ctx.instance(),
            user: None,
        })
        .await;
    expect_code(
        "GenerateUsername without user",
        r,
        Code::InvalidArgument,
        Some(reason::INVALID_FIELD),
    )
    .map(drop)
}

async fn user_action_required_errors_carry_comment_and_url(ctx: &mut Ctx) -> R {
    let cases = [
        (
            ctx.fx.link_required_email.clone(),
            reason::ACCOUNT_LINKING_REQUIRED,
        ),
        (
            ctx.fx.validation_required_email.clone(),
            reason::ADDITIONAL_VALIDATION_REQUIRED,
        ),
    ];
    for (i, (email, want)) in cases.into_iter().enumerate() {
        if email.is_empty() {
            continue;
        }
        let user = offering_user(ctx, 10 + i as u32, &email);
        for _ in 0..ctx.fx.repeat() {
            let r = ctx
                .client
                .generate_username(wire::GenerateUsernameRequest {
                    instance: ctx.instance(),
                    user: Some(user.clone()),
                })
                .await;
            let s = expect_code("GenerateUsername", r, Code::FailedPrecondition, Some(want))?;
            let meta = s
                .get_details_error_info()
                .map(|i| i.metadata)
                .unwrap_or_default();
            ensure(
                meta.get("comment").is_some_and(|c| !c.is_empty()),
                format!("{want}: no comment"),
            )?;
            ensure(
                meta.contains_key("comment_url"),
                format!("{want}: no comment_url"),
            )?;
        }
    }
    Ok(())
}

// -------------------------------------------------------------------- orders

async fn order_evaluation_is_deterministic(ctx: &mut Ctx) -> R {
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

// ------------------------------------------------------- slow ops and watch

async fn slow_create_completes_when_re_issued_and_is_announced_on_watch(ctx: &mut Ctx) -> R {
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

async fn watch_stream_opens_and_filters_by_resource(ctx: &mut Ctx) -> R {
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

async fn fast_backends_answer_ready_at_once(ctx: &mut Ctx) -> R {
    if ctx.has(Capability::SlowProvisioning) {
        return Ok(());
    }
    let resource = ctx.new_resource();
    let (_, resp) = ctx.create(resource, HashMap::new(), vec![]).await?;
    ensure(resp.ready, "ready=false without SLOW_PROVISIONING")
}

// -------------------------------------------------------------- diagnostics

async fn diagnostics_report_at_least_one_check(ctx: &mut Ctx) -> R {
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

async fn periodic_settings_are_idempotent(ctx: &mut Ctx) -> R {
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

fn json_value(v: &serde_json::Value) -> prost_types::Value {
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

// --------------------------------------------------------------------- list

macro_rules! needs_fixture {
    () => {
        None
    };
    ($fx:ident) => {
        Some(crate::NeedsFixture {
            name: stringify!($fx),
            given: |fx| !fx.$fx.is_empty(),
        })
    };
}

macro_rules! cases {
    ($( $name:ident, $clause:literal, [$($cap:ident),*] $(, fixture $fx:ident)?; )*) => {
        /// Every case, in the order they run.
        pub static CASES: &[Case] = &[
            $( Case {
                name: stringify!($name),
                clause: $clause,
                needs: &[$(Capability::$cap),*],
                fixture: needs_fixture!($($fx)?),
                run: |ctx| Box::pin($name(ctx)),
            }, )*
        ];
    };
}

cases! {
    backend_info_names_the_instance_and_the_contract_version, "SPEC 4.1", [];
    capabilities_do_not_change_between_calls, "SPEC 4.2", [];
    probe_reports_ready, "SPEC 4.3", [];
    unknown_instance_is_not_found_with_reason, "SPEC 7.2", [];
    missing_instance_is_invalid_argument, "SPEC 7.1", [];
    oversized_instance_name_is_invalid_argument, "SPEC 7.1", [];
    components_have_keys_labels_units_and_types, "SPEC 4.4", [];
    generate_backend_id_is_a_pure_function, "SPEC 5.1", [];
    unadvertised_rpcs_answer_unimplemented, "SPEC 4.2", [];
    create_resource_is_idempotent, "SPEC 5.2", [Resources];
    create_with_an_id_owned_by_another_resource_is_already_exists, "SPEC 5.2", [Resources];
    get_missing_resource_is_not_found, "SPEC 5.3", [Resources];
    delete_resource_is_idempotent, "SPEC 5.4", [Resources];
    delete_of_a_missing_resource_succeeds, "SPEC 5.4", [Resources];
    create_without_backend_id_is_invalid_argument, "SPEC 7.1", [Resources];
    create_without_resource_uuid_is_invalid_argument, "SPEC 7.1", [Resources];
    create_with_an_oversized_backend_id_is_invalid_argument, "SPEC 7.1", [Resources];
    create_with_an_unknown_component_is_invalid_argument, "SPEC 7.1", [Resources];
    create_with_a_negative_limit_is_invalid_argument, "SPEC 7.1", [Resources];
    an_identifier_is_never_folded, "SPEC 7.1", [Resources];
    what_the_backend_does_not_manage_is_refused_and_left_alone, "SPEC 5.3a", [Resources], fixture unmanaged_backend_id;
    fast_backends_answer_ready_at_once, "SPEC 6.3", [Resources];
    create_adds_the_requested_users, "SPEC 5.2", [Resources, Membership];
    soft_delete_keeps_the_resource_with_zero_limits, "SPEC 5.4", [Resources, ResourceLimits];
    list_resources_pages_cover_every_resource_once, "SPEC 5.5", [Resources, ListResources];
    sync_resource_project_is_idempotent, "SPEC 5.6", [Resources, ProjectSync];
    set_resource_limits_is_idempotent_and_full_state, "SPEC 5.7", [Resources, ResourceLimits];
    limits_of_a_missing_resource_are_not_found, "SPEC 5.3", [ResourceLimits];
    user_limits_are_set_read_and_removed, "SPEC 5.8", [Resources, Membership, UserLimits];
    pause_is_idempotent_and_reversible, "SPEC 5.9", [Resources, Pause];
    downscale_is_idempotent_and_reversible, "SPEC 5.9", [Resources, Downscale];
    unspecified_access_level_is_invalid_argument, "SPEC 5.9", [Pause];
    metadata_is_returned_for_existing_resources_only, "SPEC 5.10", [Resources, Metadata];
    add_users_is_idempotent_per_user, "SPEC 5.11", [Resources, Membership];
    remove_users_is_idempotent_per_user, "SPEC 5.11", [Resources, Membership];
    list_resource_users_reports_missing_resources, "SPEC 5.11", [Resources, Membership];
    membership_calls_validate_their_input, "SPEC 7.1", [Resources, Membership];
    home_directories_are_created_once, "SPEC 5.12", [HomeDirectories];
    role_reconciliation_is_idempotent, "SPEC 5.13", [Resources, Membership, RoleReconciliation];
    usage_totals_equal_the_sum_of_users, "SPEC 5.14", [Resources, Membership, UsageReport];
    usage_report_validates_its_input, "SPEC 7.1", [UsageReport];
    historical_usage_reports_a_past_month, "SPEC 5.14", [Resources, Membership, HistoricalUsage];
    generated_usernames_are_stable, "SPEC 5.15", [Usernames];
    user_action_required_errors_carry_comment_and_url, "SPEC 5.15", [Usernames];
    order_evaluation_is_deterministic, "SPEC 5.16", [OrderEvaluation];
    slow_create_completes_when_re_issued_and_is_announced_on_watch, "SPEC 6.3", [Resources, SlowProvisioning, Watch];
    watch_stream_opens_and_filters_by_resource, "SPEC 6.4", [Watch];
    diagnostics_report_at_least_one_check, "SPEC 4.5", [Diagnostics];
    periodic_settings_are_idempotent, "SPEC 5.17", [Resources, PeriodicSettings];
}
