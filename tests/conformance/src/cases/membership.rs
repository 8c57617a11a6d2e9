//! Members, home directories and role reconciliation.

use std::collections::{BTreeMap, HashMap};

use tonic::Code;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};
use waldur_backend_proto::v1::Capability;

pub(super) fn outcomes(results: &[wire::UserResult]) -> Vec<(String, i32)> {
    results
        .iter()
        .map(|r| (r.username.clone(), r.outcome))
        .collect()
}

/// The members ListResourceUsers reports for `id`.
async fn members_of(ctx: &mut Ctx, id: &str) -> Result<Vec<String>, String> {
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.to_owned()],
                ..Default::default()
            })
            .await,
    )?;
    Ok(listing
        .resources
        .into_iter()
        .find(|r| r.backend_id == id)
        .map(|r| r.usernames)
        .unwrap_or_default())
}

pub(super) async fn add_users_is_idempotent_per_user(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let users = ctx.users(2);
    let req = wire::AddUsersRequest {
        instance: ctx.instance(),
        backend_id: id.clone(),
        users: users.clone(),
        homedir_umask: String::new(),
    };
    // Where membership belongs to a shared tier (a MUP project holds the
    // members of all its resources), a fresh resource may already list
    // users: adding those changes nothing.
    let before = members_of(ctx, &id).await?;
    let first = ok("AddUsers", ctx.client.add_users(req.clone()).await)?.results;
    ensure(
        first.len() == users.len(),
        format!("{} results for {} users", first.len(), users.len()),
    )?;
    for (u, r) in users.iter().zip(&first) {
        ensure(r.username == u.username, "results are not in request order")?;
        let expected = if before.contains(&u.username) {
            wire::UserOutcome::Unchanged
        } else {
            wire::UserOutcome::Applied
        };
        ensure(
            r.outcome == expected as i32,
            format!(
                "first add of {}: {:?} {} (expected {expected:?})",
                u.username, r.outcome, r.message
            ),
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
                ..Default::default()
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

pub(super) async fn remove_users_is_idempotent_per_user(ctx: &mut Ctx) -> R {
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
                ..Default::default()
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

pub(super) async fn list_resource_users_reports_missing_resources(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let (id, _) = ctx.create(resource, HashMap::new(), vec![]).await?;
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone(), "conf-absent-zz".into()],
                ..Default::default()
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

pub(super) async fn the_full_listing_agrees_with_get_resource(ctx: &mut Ctx) -> R {
    let resource = ctx.new_resource();
    let users = ctx.users(2);
    let limits = if ctx.has(Capability::ResourceLimits) {
        ctx.some_limits(3)
    } else {
        HashMap::new()
    };
    let (id, _) = ctx.create(resource, limits, users.clone()).await?;
    if ctx.has(Capability::UserLimits) {
        let want = ctx.some_limits(2);
        ok(
            "SetUserLimits",
            ctx.client
                .set_user_limits(wire::SetUserLimitsRequest {
                    instance: ctx.instance(),
                    backend_id: id.clone(),
                    username: users[0].username.clone(),
                    limits: want,
                })
                .await,
        )?;
    }
    let listing = ok(
        "ListResourceUsers",
        ctx.client
            .list_resource_users(wire::ListResourceUsersRequest {
                instance: ctx.instance(),
                backend_ids: vec![id.clone(), "conf-absent-zz".into()],
                view: wire::ResourceView::Full as i32,
            })
            .await,
    )?;
    ensure(
        listing.missing_backend_ids == vec!["conf-absent-zz".to_owned()],
        format!("missing: {:?}", listing.missing_backend_ids),
    )?;
    let entry = listing
        .resources
        .into_iter()
        .find(|r| r.backend_id == id)
        .ok_or("resource missing from ListResourceUsers")?;
    // A backend without a bulk read answers usernames only: correct too.
    let Some(mut listed) = entry.resource else {
        return ensure(entry.user_limits.is_empty(), "user_limits without resource");
    };
    let mut got = ok(
        "GetResource",
        ctx.client
            .get_resource(wire::GetResourceRequest {
                instance: ctx.instance(),
                backend_id: id.clone(),
            })
            .await,
    )?
    .resource
    .ok_or("GetResource without a resource")?;
    listed.users.sort();
    got.users.sort();
    ensure(
        listed.users == entry.usernames,
        format!(
            "resource.users {:?} != usernames {:?}",
            listed.users, entry.usernames
        ),
    )?;
    // Secrets are never sent in bulk; the rest must match GetResource.
    ensure(
        listed.credentials.is_empty(),
        "the full listing carries credentials",
    )?;
    got.credentials.clear();
    ensure(
        listed == got,
        format!("full listing {listed:?} != GetResource {got:?}"),
    )?;
    if ctx.has(Capability::UserLimits) {
        let read = ok(
            "GetUserLimits",
            ctx.client
                .get_user_limits(wire::GetUserLimitsRequest {
                    instance: ctx.instance(),
                    backend_id: id.clone(),
                })
                .await,
        )?;
        let as_map = |l: Vec<wire::UserLimits>| -> BTreeMap<String, BTreeMap<String, i64>> {
            l.into_iter()
                .map(|u| (u.username, u.limits.into_iter().collect()))
                .collect()
        };
        let listed = as_map(entry.user_limits);
        let read = as_map(read.users);
        ensure(
            listed == read,
            format!("listed user limits {listed:?} != GetUserLimits {read:?}"),
        )?;
    }
    Ok(())
}

pub(super) async fn membership_calls_validate_their_input(ctx: &mut Ctx) -> R {
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
            ..Default::default()
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

pub(super) async fn create_adds_the_requested_users(ctx: &mut Ctx) -> R {
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

pub(super) async fn home_directories_are_created_once(ctx: &mut Ctx) -> R {
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

pub(super) async fn role_reconciliation_is_idempotent(ctx: &mut Ctx) -> R {
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
