//! The state rules, without HTTP.

use super::*;

fn world_with_resource() -> (World, String) {
    let mut w = World::default();
    let r = Resource {
        uuid: new_uuid(),
        state: "OK".into(),
        ..Default::default()
    };
    let uuid = r.uuid.clone();
    w.resources.insert(uuid.clone(), r);
    (w, uuid)
}

fn item(kind: &str, amount: &str) -> UsageItem {
    UsageItem {
        component_type: kind.into(),
        amount: amount.into(),
        description: String::new(),
    }
}

#[test]
fn set_usage_upserts_per_resource_type_and_month() {
    let (mut w, r) = world_with_resource();
    let first = w
        .set_usage(
            &r,
            "2026-11-05T00:00:00Z",
            &[item("cpu", "1.00"), item("mem", "2.00")],
        )
        .unwrap_or_default();
    let again = w
        .set_usage(&r, "2026-11-20T10:00:00Z", &[item("cpu", "3.50")])
        .unwrap_or_default();
    assert_eq!(again.first(), first.first(), "the record uuid stays");
    assert_eq!(w.usages.len(), 2);
    let cpu = w.usage_of(&r, "cpu", "2026-11-01").map(|u| u.usage.clone());
    assert_eq!(cpu.as_deref(), Some("3.50"));
    // A new month is a new record; listing is by period then type.
    w.set_usage(&r, "2026-12-01T00:00:00Z", &[item("cpu", "1.00")])
        .unwrap_or_default();
    let listed: Vec<(String, String)> = w
        .resource_usages(&r, None)
        .iter()
        .map(|u| (u.billing_period.clone(), u.component_type.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("2026-11-01".into(), "cpu".into()),
            ("2026-11-01".into(), "mem".into()),
            ("2026-12-01".into(), "cpu".into())
        ]
    );
    assert_eq!(w.resource_usages(&r, Some("2026-12-01")).len(), 1);
}

#[test]
fn set_usage_refuses_unknown_resources_bad_dates_and_backfill() {
    let (mut w, r) = world_with_resource();
    assert!(matches!(
        w.set_usage(&new_uuid(), "2026-11-01T00:00:00Z", &[item("cpu", "1.00")]),
        Err(Refusal::Invalid(_))
    ));
    assert!(matches!(
        w.set_usage(&r, "yesterday", &[item("cpu", "1.00")]),
        Err(Refusal::Invalid(_))
    ));
    w.refuse_backfill = true;
    let Err(Refusal::InvalidBody(body)) =
        w.set_usage(&r, "2000-01-01T00:00:00Z", &[item("cpu", "1.00")])
    else {
        panic!("backfill accepted");
    };
    assert!(
        body.to_string()
            .contains("backfilling past billing periods")
    );
    let now = jiff::Timestamp::now().to_string();
    assert!(w.set_usage(&r, &now, &[item("cpu", "1.00")]).is_ok());
    w.refuse_backfill = false;
    assert!(
        w.set_usage(&r, "2000-01-01T00:00:00Z", &[item("cpu", "1.00")])
            .is_ok()
    );
}

#[test]
fn indexes_survive_direct_inserts() {
    let (mut w, r) = world_with_resource();
    let u = ComponentUsage {
        uuid: new_uuid(),
        resource_uuid: r.clone(),
        component_type: "cpu".into(),
        usage: "1.00".into(),
        billing_period: "2026-01-01".into(),
        ..Default::default()
    };
    let uuid = u.uuid.clone();
    w.usages.insert(uuid.clone(), u);
    // Stale index: lookups fall back to scanning, and reindex repairs.
    assert_eq!(
        w.usage_of(&r, "cpu", "2026-01-01").map(|u| u.uuid.clone()),
        Some(uuid.clone())
    );
    let again = w
        .set_usage(&r, "2026-01-31T00:00:00Z", &[item("cpu", "2")])
        .unwrap_or_default();
    assert_eq!(again, [uuid]);
    assert_eq!(w.usages.len(), 1);
}

#[test]
fn user_usages_are_upserted_per_username() {
    let (mut w, r) = world_with_resource();
    let ids = w
        .set_usage(&r, "2026-11-05T00:00:00Z", &[item("cpu", "5.00")])
        .unwrap_or_default();
    let id = ids.first().cloned().unwrap_or_default();
    let uu = |usage: &str, user: Option<&str>| UserUsage {
        usage: usage.into(),
        date: "2026-11-05T00:00:00Z".into(),
        user: user.map(str::to_owned),
        ..Default::default()
    };
    w.set_user_usages(
        &id,
        vec![("alice".into(), uu("1.00", Some("http://x/ou/1/")))],
    )
    .unwrap_or_default();
    let first = w.usages[&id].user_usages["alice"].uuid.clone();
    w.set_user_usages(
        &id,
        vec![
            ("alice".into(), uu("2.00", None)),
            ("bob".into(), uu("3.00", None)),
        ],
    )
    .unwrap_or_default();
    let alice = &w.usages[&id].user_usages["alice"];
    assert_eq!(alice.uuid, first);
    assert_eq!(alice.usage, "2.00");
    assert_eq!(alice.user.as_deref(), Some("http://x/ou/1/"));
    assert_eq!(w.usages[&id].user_usages.len(), 2);
    assert_eq!(
        w.set_user_usages(&new_uuid(), vec![]),
        Err(Refusal::NotFound("component usage".into()))
    );
}

#[test]
fn offering_user_state_machine() {
    let mut w = World::default();
    let user = w.add_user("alice", "alice@example.org", "Alice Example");
    let ou = w.add_offering_user(&new_uuid(), &user, "Requested", None);
    let act = |w: &mut World, a: &str| w.offering_user_action(&ou, a, "why", "http://c/");
    let state = |w: &World| w.offering_users[&ou].state.clone();
    // Wrong state: refused, unchanged.
    assert!(matches!(
        act(&mut w, "set_validation_complete"),
        Err(Refusal::Invalid(_))
    ));
    assert_eq!(state(&w), "Requested");
    assert_eq!(act(&mut w, "begin_creating"), Ok(()));
    assert_eq!(state(&w), "Creating");
    assert!(act(&mut w, "begin_creating").is_err());
    assert_eq!(act(&mut w, "set_pending_account_linking"), Ok(()));
    assert_eq!(state(&w), "Pending account linking");
    assert_eq!(w.offering_users[&ou].service_provider_comment, "why");
    assert_eq!(
        w.offering_users[&ou].service_provider_comment_url,
        "http://c/"
    );
    assert!(act(&mut w, "set_pending_account_linking").is_err());
    assert_eq!(act(&mut w, "set_pending_additional_validation"), Ok(()));
    assert_eq!(act(&mut w, "set_pending_account_linking"), Ok(()));
    assert!(act(&mut w, "set_error_creating").is_err());
    assert_eq!(act(&mut w, "set_validation_complete"), Ok(()));
    assert_eq!(state(&w), "OK");
    assert_eq!(w.offering_users[&ou].service_provider_comment, "");
    assert!(act(&mut w, "begin_creating").is_err());
    assert_eq!(
        act(&mut w, "no_such_action"),
        Err(Refusal::NotFound("action".into()))
    );
    // Error creating → Creating (retry) → username sets OK.
    let ou2 = w.add_offering_user(&new_uuid(), &user, "Requested", None);
    assert_eq!(
        w.offering_user_action(&ou2, "set_error_creating", "", ""),
        Ok(())
    );
    assert_eq!(w.offering_users[&ou2].state, "Error creating");
    assert_eq!(
        w.offering_user_action(&ou2, "begin_creating", "", ""),
        Ok(())
    );
    assert_eq!(w.set_offering_username(&ou2, Some("alice01")), Ok(()));
    assert_eq!(w.offering_users[&ou2].state, "OK");
    assert_eq!(w.offering_users[&ou2].username.as_deref(), Some("alice01"));
    // A username on a pending user does not complete validation.
    let ou3 = w.add_offering_user(&new_uuid(), &user, "Pending account linking", None);
    assert_eq!(w.set_offering_username(&ou3, Some("a")), Ok(()));
    assert_eq!(w.offering_users[&ou3].state, "Pending account linking");
    assert!(w.set_offering_username(&new_uuid(), Some("a")).is_err());
}

#[test]
fn offering_users_are_unique_per_offering_and_user() {
    let mut w = World::default();
    let user = w.add_user("bob", "bob@example.org", "Bob");
    assert_eq!(w.add_user("bob", "other@example.org", "B"), user);
    let offering = new_uuid();
    let a = w.add_offering_user(&offering, &user, "Requested", None);
    let b = w.add_offering_user(&offering, &user, "OK", Some("bob"));
    assert_eq!(a, b);
    assert_eq!(w.offering_users.len(), 1);
    assert_eq!(
        w.offering_user_of(&offering, &user)
            .map(|o| o.state.clone()),
        Some("OK".into())
    );
    assert!(w.offering_user_of(&new_uuid(), &user).is_none());
}

#[test]
fn roles_grant_change_and_revoke() {
    let mut w = World::default();
    let project = Project {
        uuid: new_uuid(),
        ..Default::default()
    };
    let p = project.uuid.clone();
    w.projects.insert(p.clone(), project);
    let alice = w.add_user("alice", "a@example.org", "A");
    let bob = w.add_user("bob", "b@example.org", "B");
    assert_eq!(w.grant_role(&p, &alice, "PROJECT.MEMBER"), Ok(()));
    assert_eq!(w.grant_role(&p, &bob, "PROJECT.MEMBER"), Ok(()));
    assert_eq!(w.grant_role(&p, &alice, "PROJECT.MANAGER"), Ok(()));
    let roles: Vec<(String, String)> = w
        .project_roles(&p)
        .iter()
        .map(|r| (r.user_uuid.clone(), r.role.clone()))
        .collect();
    assert_eq!(
        roles,
        [
            (alice.clone(), "PROJECT.MANAGER".into()),
            (bob.clone(), "PROJECT.MEMBER".into())
        ]
    );
    w.revoke_role(&p, &alice);
    assert_eq!(w.project_roles(&p).len(), 1);
    assert!(w.grant_role(&new_uuid(), &alice, "PROJECT.MEMBER").is_err());
    assert!(w.grant_role(&p, &new_uuid(), "PROJECT.MEMBER").is_err());
}

#[test]
fn user_limits_upsert_and_clear() {
    let (mut w, r) = world_with_resource();
    let a = w.set_user_limit(&r, "alice", "cpu", "10.00");
    let b = w.set_user_limit(&r, "alice", "cpu", "20.00");
    assert_eq!(a, b);
    w.set_user_limit(&r, "bob", "cpu", "5.00");
    let other = new_uuid();
    w.set_user_limit(&other, "bob", "cpu", "5.00");
    let limits: Vec<(String, String)> = w
        .resource_user_limits(&r)
        .iter()
        .map(|l| (l.username.clone(), l.limit.clone()))
        .collect();
    assert_eq!(
        limits,
        [
            ("alice".into(), "20.00".into()),
            ("bob".into(), "5.00".into())
        ]
    );
    w.clear_user_limits(&r);
    assert!(w.resource_user_limits(&r).is_empty());
    assert_eq!(w.resource_user_limits(&other).len(), 1);
}

#[test]
fn uuid_forms_compare_equal() {
    let n = new_uuid();
    let dashed = format!(
        "{}-{}-{}-{}-{}",
        &n[..8],
        &n[8..12],
        &n[12..16],
        &n[16..20],
        &n[20..]
    )
    .to_uppercase();
    assert!(uuid_eq(&dashed, &n));
    assert!(uuid_eq(&n, &n));
    assert!(!uuid_eq(&new_uuid(), &n));
    assert_eq!(month_of("2026-03-01T00:00:00Z"), Some("2026-03"));
    assert_eq!(month_of("26-3"), None);
}
