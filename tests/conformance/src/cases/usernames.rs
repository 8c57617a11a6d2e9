//! Generated usernames and user-action-required errors.

use tonic::Code;
use tonic_types::StatusExt;
use waldur_backend_proto::reason;
use waldur_backend_proto::v1::{self as wire};

use super::{R, ok};
use crate::{Ctx, ensure, expect_code};

pub(super) fn offering_user(ctx: &Ctx, n: u32, email: &str) -> wire::OfferingUser {
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

pub(super) async fn generated_usernames_are_stable(ctx: &mut Ctx) -> R {
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

pub(super) async fn user_action_required_errors_carry_comment_and_url(ctx: &mut Ctx) -> R {
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
