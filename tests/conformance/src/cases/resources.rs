//! Resources: create, read, delete, list and project sync, and the validation of their input.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire, Capability};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code, status_text};

pub(super) async fn create_resource_is_idempotent(ctx: &mut Ctx) -> R {
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

pub(super) async fn create_with_an_id_owned_by_another_resource_is_already_exists(
    ctx: &mut Ctx,
) -> R {
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
pub(super) async fn an_identifier_is_never_folded(ctx: &mut Ctx) -> R {
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
pub(super) async fn what_the_backend_does_not_manage_is_refused_and_left_alone(ctx: &mut Ctx) -> R {
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

pub(super) async fn get_missing_resource_is_not_found(ctx: &mut Ctx) -> R {
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

pub(super) async fn delete_resource_is_idempotent(ctx: &mut Ctx) -> R {
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

pub(super) async fn delete_of_a_missing_resource_succeeds(ctx: &mut Ctx) -> R {
    let r = ctx.delete("conf-never-created-zz").await?;
    ensure(!r.existed, "existed=true for a resource that never existed")
}

pub(super) async fn create_without_backend_id_is_invalid_argument(ctx: &mut Ctx) -> R {
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

pub(super) async fn create_without_resource_uuid_is_invalid_argument(ctx: &mut Ctx) -> R {
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

pub(super) async fn create_with_an_oversized_backend_id_is_invalid_argument(ctx: &mut Ctx) -> R {
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

pub(super) async fn create_with_an_unknown_component_is_invalid_argument(ctx: &mut Ctx) -> R {
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

pub(super) async fn create_with_a_negative_limit_is_invalid_argument(ctx: &mut Ctx) -> R {
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

pub(super) async fn soft_delete_keeps_the_resource_with_zero_limits(ctx: &mut Ctx) -> R {
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

pub(super) async fn list_resources_pages_cover_every_resource_once(ctx: &mut Ctx) -> R {
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

pub(super) async fn sync_resource_project_is_idempotent(ctx: &mut Ctx) -> R {
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
