//! The MOAB backend's behaviour on `mam-sim`: the model (accounts, one fund,
//! deposits), and each defect of the original agent it fixes.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use serde_json::json;
use support::{backend, mam, state};
use waldur_backend_moab::{MoabBackend, MoabSettings};
use waldur_backend_sdk::Backend;
use waldur_backend_sdk::command::ProcessRunner;
use waldur_backend_sdk::types::*;

const UUID: &str = "0f0f0000-0000-0000-0000-000000000001";

fn create(id: &str, deposit: i64, users: &[&str]) -> CreateResource {
    CreateResource {
        backend_id: id.into(),
        resource: ResourceContext {
            resource_uuid: UUID.into(),
            name: "My big project".into(),
            slug: "big".into(),
            project_slug: "proj".into(),
            project_name: "Project One".into(),
            ..ResourceContext::default()
        },
        limits: Limits::from([("deposit".into(), deposit)]),
        users: users
            .iter()
            .map(|u| User {
                username: (*u).into(),
                ..User::default()
            })
            .collect(),
        ..CreateResource::default()
    }
}

fn fund_of(dir: &std::path::Path, account: &str) -> (f64, f64) {
    let st = state(dir);
    let f = st.funds.values().find(|f| f.account == account).unwrap();
    (f.allocated, f.balance)
}

#[tokio::test]
async fn create_makes_the_project_and_allocation_accounts_one_fund_and_the_deposit() {
    let (b, dir) = backend(json!({}));
    let created = b
        .create_resource(create("a_big", 100, &["alice", "bob"]))
        .await
        .unwrap();
    assert!(created.ready);
    assert_eq!(created.resource.limits["deposit"], 100);
    let st = state(dir.path());
    let project = &st.accounts["p_proj"];
    assert_eq!(project.organization, "p_proj");
    let alloc = &st.accounts["a_big"];
    assert_eq!(alloc.organization, "p_proj");
    // A description with spaces reaches MAM as one argument, quotes and all
    // words intact.
    assert_eq!(
        alloc.description,
        "My big project [waldur:0f0f0000000000000000000000000001]"
    );
    assert_eq!(alloc.users, ["alice", "bob"]);
    assert_eq!(
        st.funds.values().filter(|f| f.account == "a_big").count(),
        1
    );
    assert_eq!(fund_of(dir.path(), "a_big"), (100.0, 100.0));
    // Re-issued: nothing new.
    b.create_resource(create("a_big", 100, &["alice", "bob"]))
        .await
        .unwrap();
    assert_eq!(fund_of(dir.path(), "a_big"), (100.0, 100.0));
    assert_eq!(state(dir.path()).funds.len(), 1);
}

#[tokio::test]
async fn setting_a_limit_moves_the_deposit_to_it_instead_of_adding_it_again() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 100, &["alice"]))
        .await
        .unwrap();
    let limits = |d: i64| Limits::from([("deposit".into(), d)]);
    b.set_resource_limits("a_big", limits(150), None)
        .await
        .unwrap();
    b.set_resource_limits("a_big", limits(150), None)
        .await
        .unwrap();
    assert_eq!(
        fund_of(dir.path(), "a_big"),
        (150.0, 150.0),
        "not 100 + 150 + 150"
    );
    mam(dir.path(), "mam-charge -J j1 -a a_big -u alice -z 40");
    b.set_resource_limits("a_big", limits(120), None)
        .await
        .unwrap();
    assert_eq!(fund_of(dir.path(), "a_big"), (120.0, 80.0));
    assert_eq!(b.get_resource_limits("a_big").await.unwrap(), limits(120));
    // Below what was charged: refused, nothing changed.
    let e = b
        .set_resource_limits("a_big", limits(10), None)
        .await
        .unwrap_err();
    assert!(e.message.contains("already charged"), "{e}");
    assert_eq!(fund_of(dir.path(), "a_big"), (120.0, 80.0));
}

#[tokio::test]
async fn delete_removes_the_fund_found_before_the_account_and_the_emptied_project() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 100, &[])).await.unwrap();
    let deleted = b
        .delete_resource(DeleteResource {
            backend_id: "a_big".into(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap();
    assert!(deleted.existed);
    let st = state(dir.path());
    assert!(st.funds.is_empty(), "the fund went with the account");
    assert!(
        st.accounts.is_empty(),
        "the emptied project account went too"
    );
    let again = b
        .delete_resource(DeleteResource {
            backend_id: "a_big".into(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap();
    assert!(!again.existed);
}

#[tokio::test]
async fn usage_is_charged_per_user_in_the_requested_month() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 100, &["alice", "bob"]))
        .await
        .unwrap();
    mam(dir.path(), "mam-charge -J j1 -a a_big -u alice -z 12.5");
    mam(dir.path(), "mam-charge -J j2 -a a_big -u bob -z 7.25");
    mam(dir.path(), "mam-charge -J j3 -a a_big -u alice -z 0.25");
    let report = b
        .usage_report(UsageQuery {
            backend_ids: vec!["a_big".into(), "a_other".into()],
            period: Some(BillingPeriod {
                year: 2026,
                month: 12,
            }),
            timezone: Some("UTC".into()),
        })
        .await
        .unwrap();
    assert_eq!(report[0].users["alice"]["deposit"], 12.75);
    assert_eq!(report[0].users["bob"]["deposit"], 7.25);
    assert_eq!(report[0].total["deposit"], 20.0);
    assert!(report[1].users.is_empty());
    let november = b
        .usage_report(UsageQuery {
            backend_ids: vec!["a_big".into()],
            period: Some(BillingPeriod {
                year: 2026,
                month: 11,
            }),
            timezone: None,
        })
        .await
        .unwrap();
    assert!(november[0].users.is_empty());
    // One listing of every charge answered both months.
    assert!(b.spawned() > 0);
}

#[tokio::test]
async fn members_are_added_and_removed_and_an_unknown_mam_user_fails_alone() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 0, &[])).await.unwrap();
    let users = |names: &[&str]| -> Vec<User> {
        names
            .iter()
            .map(|u| User {
                username: (*u).into(),
                ..User::default()
            })
            .collect()
    };
    let r = b
        .add_users("a_big", users(&["alice", "ghost", "alice"]), None)
        .await
        .unwrap();
    assert_eq!(r[0].outcome, Outcome::Applied);
    assert!(
        matches!(&r[1].outcome, Outcome::Failed(e) if e.message.contains("User ghost does not exist"))
    );
    let listed = b
        .list_resource_users(&["a_big".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(listed.found["a_big"], ["alice"]);
    assert_eq!(listed.missing, ["nope"]);
    let r = b
        .remove_users("a_big", vec!["alice".into(), "bob".into()])
        .await
        .unwrap();
    assert_eq!(r[0].outcome, Outcome::Applied);
    assert_eq!(r[1].outcome, Outcome::Unchanged);
    assert!(state(dir.path()).accounts["a_big"].users.is_empty());
}

#[tokio::test]
async fn accounts_made_by_hand_are_never_touched_and_the_original_agents_are_taken_over() {
    let (b, dir) = backend(json!({}));
    mam(dir.path(), "mam-create-account -a handmade -d by-hand -o x");
    let e = b.get_resource("handmade").await.unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED");
    let e = b
        .create_resource(create("handmade", 1, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_ALREADY_EXISTS");
    // The original agent's shape: allocation prefix, project organization.
    mam(dir.path(), "mam-create-account -a a_old -d Old -o p_proj");
    mam(dir.path(), "mam-create-fund -a a_old");
    // Without the resource's UUID it is served but stays unmarked ...
    b.add_users(
        "a_old",
        vec![User {
            username: "alice".into(),
            ..User::default()
        }],
        None,
    )
    .await
    .unwrap();
    assert_eq!(state(dir.path()).accounts["a_old"].description, "Old");
    // ... and a change naming the resource marks it for that resource.
    let resource = ResourceContext {
        resource_uuid: UUID.into(),
        ..ResourceContext::default()
    };
    b.set_resource_limits(
        "a_old",
        Limits::from([("deposit".into(), 5)]),
        Some(resource),
    )
    .await
    .unwrap();
    let st = state(dir.path());
    assert_eq!(
        st.accounts["a_old"].description,
        "Old [waldur:0f0f0000000000000000000000000001]"
    );
    assert_eq!(b.get_resource("a_old").await.unwrap().limits["deposit"], 5);
    assert_eq!(st.accounts["handmade"].description, "by-hand");
}

#[tokio::test]
async fn a_failing_command_is_surfaced_with_its_exit_code_and_message() {
    let (b, dir) = backend(json!({}));
    mam_sim::inject(
        dir.path(),
        "mam-list-accounts",
        1,
        "Failed sending message: connection refused",
    )
    .unwrap();
    let e = b.get_resource("a_big").await.unwrap_err();
    assert_eq!(
        e.reason, "BACKEND_NOT_READY",
        "a server that is down is retried"
    );
    assert!(
        e.message
            .contains("mam-list-accounts exited with 1: Failed sending message"),
        "{e}"
    );
    let probe = b.probe().await.unwrap();
    assert!(probe.ready, "the probe lists funds, which still work");
}

#[tokio::test]
async fn a_missing_mam_binary_is_unavailable_naming_the_path() {
    let s = support::settings(json!({"mam_bin_dir": "/nonexistent/mam/bin"}));
    let b = MoabBackend::new(s, Arc::new(ProcessRunner));
    let e = b.get_resource("a_big").await.unwrap_err();
    assert_eq!(e.reason, "BACKEND_NOT_READY");
    assert!(
        e.message
            .contains("/nonexistent/mam/bin/mam-list-accounts: not found"),
        "{e}"
    );
    assert!(!b.probe().await.unwrap().ready);
}

#[test]
fn settings_need_exactly_a_deposit_component_and_reject_unknown_keys() {
    let parse = |v| MoabSettings::parse(v).map(drop).map_err(|e| e.to_string());
    let e = parse(json!({"components": {}})).unwrap_err();
    assert!(e.contains("deposit component is required"), "{e}");
    let e = parse(json!({"components": {"deposit": {"label": "D", "measured_unit": "EUR", "accounting_type": "limit"}, "cpu": {"label": "C", "measured_unit": "h", "accounting_type": "usage"}}})).unwrap_err();
    assert!(e.starts_with("components.cpu"), "{e}");
    let e = parse(json!({"components": {"deposit": {"label": "D", "measured_unit": "EUR", "accounting_type": "limit", "unit_factor": 100}}})).unwrap_err();
    assert!(e.contains("unit_factor"), "{e}");
    let e = parse(json!({"default_account": "root", "components": {}})).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn pause_and_downscale_are_not_advertised() {
    let (b, _dir) = backend(json!({}));
    let caps = b.capabilities();
    assert!(!caps.contains(&Capability::Pause));
    assert!(!caps.contains(&Capability::Downscale));
}

#[tokio::test]
async fn a_create_without_limits_uses_the_default_and_a_reissue_keeps_the_deposit() {
    let (b, dir) = backend(
        json!({"components": {"deposit": {"label": "D", "measured_unit": "EUR", "accounting_type": "limit", "limit": 40}}}),
    );
    let mut req = create("a_big", 0, &[]);
    req.limits.clear();
    b.create_resource(req.clone()).await.unwrap();
    assert_eq!(fund_of(dir.path(), "a_big"), (40.0, 40.0));
    let (b2, dir2) = backend(json!({}));
    b2.create_resource(create("a_big", 70, &[])).await.unwrap();
    b2.create_resource(req).await.unwrap();
    assert_eq!(
        fund_of(dir2.path(), "a_big"),
        (70.0, 70.0),
        "not withdrawn to 0"
    );
}

#[tokio::test]
async fn names_that_read_as_options_or_member_signs_are_refused() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 0, &[])).await.unwrap();
    let r = b
        .add_users(
            "a_big",
            ["-bob", "+bob", "a*"]
                .iter()
                .map(|u| User {
                    username: (*u).into(),
                    ..User::default()
                })
                .collect(),
            None,
        )
        .await
        .unwrap();
    assert!(
        r.iter().all(|r| matches!(r.outcome, Outcome::Failed(_))),
        "{r:?}"
    );
    assert!(state(dir.path()).accounts["a_big"].users.is_empty());
    let e = b
        .create_resource(create("-a_big", 0, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.reason, "INVALID_FIELD");
    let mut bad_uuid = create("a_x", 0, &[]);
    bad_uuid.resource.resource_uuid = "not-a-uuid".into();
    let e = b.create_resource(bad_uuid).await.unwrap_err();
    assert_eq!(e.reason, "INVALID_FIELD");
}

#[tokio::test]
async fn an_explicit_hard_delete_removes_even_when_soft_delete_is_the_default() {
    let (b, dir) = backend(json!({"soft_delete": true}));
    b.create_resource(create("a_big", 10, &[])).await.unwrap();
    let request = |mode| DeleteResource {
        backend_id: "a_big".into(),
        mode,
        resource: None,
    };
    b.delete_resource(request(DeletionMode::Unspecified))
        .await
        .unwrap();
    assert_eq!(
        fund_of(dir.path(), "a_big"),
        (0.0, 0.0),
        "soft: kept, emptied"
    );
    b.delete_resource(request(DeletionMode::Hard))
        .await
        .unwrap();
    assert!(state(dir.path()).accounts.is_empty());
}

#[tokio::test]
async fn creates_and_deletes_in_one_project_never_race_on_its_account() {
    let (b, dir) = backend(json!({}));
    let b = std::sync::Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = create(&format!("a_r{i}"), 1, &[]);
            req.resource.resource_uuid = format!("0f0f00000000000000000000000000{i:02}");
            b.create_resource(req).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let st = state(dir.path());
    assert_eq!(
        st.accounts.len(),
        7,
        "six allocations and one project account"
    );
}

#[tokio::test]
async fn a_delete_reissued_after_the_account_went_still_removes_the_emptied_project() {
    let (b, dir) = backend(json!({}));
    b.create_resource(create("a_big", 10, &[])).await.unwrap();
    // The first delete was cut off after the allocation account went.
    let fund = state(dir.path()).funds.keys().next().copied().unwrap();
    mam(dir.path(), &format!("mam-delete-fund -f {fund}"));
    mam(dir.path(), "mam-delete-account -a a_big");
    assert!(state(dir.path()).accounts.contains_key("p_proj"));
    let again = b
        .delete_resource(DeleteResource {
            backend_id: "a_big".into(),
            mode: DeletionMode::Hard,
            resource: Some(create("a_big", 0, &[]).resource),
        })
        .await
        .unwrap();
    assert!(!again.existed);
    assert!(
        state(dir.path()).accounts.is_empty(),
        "the emptied project went too"
    );
}

#[tokio::test]
async fn a_deposit_too_large_to_read_back_exactly_is_refused() {
    let (b, _dir) = backend(json!({}));
    b.create_resource(create("a_big", 10, &[])).await.unwrap();
    let e = b
        .set_resource_limits("a_big", Limits::from([("deposit".into(), i64::MAX)]), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, "INVALID_FIELD");
}
