//! The coordinator as a Helmholtz Cloud Agent on the real RabbitMQ
//! (127.0.0.1:5672, management API on 15672, both started by
//! `deploy/services.sh`): every test gets its own virtual host and user, a
//! backend server over mutual TLS, and plays the portal. The SLURM case
//! runs when `WALDUR_SLURM_CLUSTER` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::hca::{
    CLIMATE, Directory, Extra, Gated, Setup, ask, compute, compute_for, example, group, ldap_url,
    person,
};

/// The backend id in a `ResourceCreatedV1` answer (`hpc:<backend id>`).
fn backend_id_of(body: &serde_json::Value) -> String {
    let id = body["id"].as_str().unwrap_or_default();
    id.strip_prefix("hpc:")
        .unwrap_or_else(|| panic!("not an hpc id: {body}"))
        .to_owned()
}
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError};

#[tokio::test]
async fn a_ping_is_answered_with_a_ping_carrying_the_service_id() {
    let s = Setup::new(Arc::new(example())).await;
    let (c, run) = s.start().await;
    let mut portal = s.portal().await;
    let (ready, text) = waldur_coordinator::runtime::admin::readiness(&c).await;
    assert!(ready && text.contains("ok helmholtz test"), "{text}");
    let reply = ask(&mut portal, "PingV1", "ping-1", b"{}").await;
    assert_eq!(reply.message_type, "PingV1");
    assert_eq!(reply.correlation_id, "ping-1");
    assert_eq!(reply.service_id, s.service_id);
    s.stop_and_check_all_acknowledged(run).await;
}

#[tokio::test]
async fn an_allocation_creates_the_resource_with_derived_limits_and_answers_its_id() {
    let backend = example();
    let s = Setup::new(Arc::new(backend.clone())).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "alloc-1",
        &compute("climate-sim", 500),
    )
    .await;
    assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    assert_eq!(reply.correlation_id, "alloc-1");
    assert_eq!(reply.service_id, s.service_id);
    let id = backend_id_of(&reply.body);
    assert!(
        id.starts_with("hca_climate-sim_") && id.len() == "hca_climate-sim_".len() + 12,
        "{id}"
    );
    let r = backend.get_resource(&id).await.unwrap();
    assert_eq!(r.limits.get("cpu"), Some(&500));
    assert_eq!(r.limits.get("mem"), Some(&3));

    // Deallocation by that id removes it.
    let body = serde_json::to_vec(&reply.body).unwrap();
    let gone = ask(&mut portal, "ResourceDeallocateV1", "dealloc-1", &body).await;
    assert_eq!(
        gone.message_type, "ResourceDeallocatedV1",
        "{:?}",
        gone.body
    );
    assert_eq!(gone.body, reply.body);
    assert!(backend.get_resource(&id).await.is_err());
    assert_eq!(backend.resource_count(), 0);
    run.abort();
}

#[tokio::test]
async fn a_backend_refusal_is_answered_with_a_user_readable_error() {
    let s = Setup::new(Arc::new(example())).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    // The chat type asks for a `gpu` limit the backend does not know.
    let body = json!({
        "type": "ChatTeamSpecV1",
        "target_entity": {"user_id_target": "someone@login.helmholtz.de", "group_urn_target": null},
        "specification": {"team_name": "Climate Team", "invite_only": true}
    });
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "refused-1",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(reply.message_type, "ErrorV1");
    assert_eq!(reply.body["type"], "RequestRefused");
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.contains("gpu"), "{message}");
    for internal in ["127.0.0.1", "localhost", "hpc", "Status", "code:"] {
        assert!(!message.contains(internal), "{message} shows {internal}");
    }
    s.stop_and_check_all_acknowledged(run).await;
}

#[tokio::test]
async fn bad_requests_get_errors_are_acknowledged_and_the_next_good_one_is_served() {
    let backend = example();
    let s = Setup::new(Arc::new(backend.clone())).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let cases: [(&str, &str, Vec<u8>, &str); 7] = [
        ("ResourceAllocateV1", "bad-json", b"{not json".to_vec(), "SpecificationInvalid"),
        ("ResourceAllocateV1", "not-object", b"[1,2]".to_vec(), "SpecificationInvalid"),
        ("ResourceAllocateV1", "schema", compute("X", 0), "SpecificationInvalid"),
        (
            "ResourceAllocateV1",
            "unknown-type",
            br#"{"type": "QuantumComputerSpecV9", "target_entity": {"user_id_target": "u", "group_urn_target": null}, "specification": {}}"#.to_vec(),
            "UnknownResourceType",
        ),
        (
            "ResourceAllocateV1",
            "wrong-target",
            br#"{"type": "ComputeResourceSpecV1", "target_entity": {"user_id_target": "u", "group_urn_target": null}, "specification": {"project_name": "abc", "cpu_hours": 1}}"#.to_vec(),
            "SpecificationInvalid",
        ),
        ("SomethingElseV1", "unknown-message", b"{}".to_vec(), "UnknownMessageType"),
        ("ResourceDeallocateV1", "unknown-id", br#"{"id": "nowhere:x"}"#.to_vec(), "UnknownResource"),
    ];
    for (message_type, correlation_id, body, kind) in &cases {
        let reply = ask(&mut portal, message_type, correlation_id, body).await;
        assert_eq!(
            reply.message_type, "ErrorV1",
            "{correlation_id}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body["type"], *kind,
            "{correlation_id}: {:?}",
            reply.body
        );
        assert!(!reply.body["message"].as_str().unwrap().is_empty());
    }
    // The schema failure names the failing fields.
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "schema-2",
        &compute("X", 0),
    )
    .await;
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("/project_name") && message.contains("/cpu_hours"),
        "{message}"
    );
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "good",
        &compute("after-garbage", 10),
    )
    .await;
    assert_eq!(reply.message_type, "ResourceCreatedV1");
    assert_eq!(backend.resource_count(), 1);
    s.stop_and_check_all_acknowledged(run).await;
}

#[tokio::test]
async fn a_redelivered_request_is_answered_with_the_same_id_and_creates_nothing_more() {
    let backend = example();
    let s = Setup::new(Arc::new(backend.clone())).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let first = ask(
        &mut portal,
        "ResourceAllocateV1",
        "dup-1",
        &compute("dup-proj", 10),
    )
    .await;
    // The portal (or the broker) delivers the same request again.
    let second = ask(
        &mut portal,
        "ResourceAllocateV1",
        "dup-1",
        &compute("dup-proj", 10),
    )
    .await;
    assert_eq!(first.body, second.body);
    assert_eq!(second.message_type, "ResourceCreatedV1");
    assert_eq!(backend.resource_count(), 1);
    // Another request with the same specification is another resource.
    let third = ask(
        &mut portal,
        "ResourceAllocateV1",
        "dup-2",
        &compute("dup-proj", 10),
    )
    .await;
    assert_eq!(third.message_type, "ResourceCreatedV1", "{:?}", third.body);
    assert_ne!(third.body, first.body);
    assert_eq!(backend.resource_count(), 2);
    run.abort();
}

#[tokio::test]
async fn deallocation_refuses_resources_helmholtz_did_not_create() {
    let backend = example();
    let s = Setup::new(Arc::new(backend.clone())).await;
    // A Waldur-managed account on the same backend.
    backend
        .create_resource(CreateResource {
            backend_id: "hpc_weather-run".into(),
            resource: ResourceContext {
                resource_uuid: "0f".repeat(16),
                ..Default::default()
            },
            limits: Default::default(),
            users: vec![],
            plan_quotas: Default::default(),
            ssh_keys: Default::default(),
            homedir_umask: None,
        })
        .await
        .unwrap();
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    for id in [
        "hpc:hpc_weather-run",
        "hpc:hca_climate-sim",
        "hpc:hca_x_0123456789",
    ] {
        let body = serde_json::to_vec(&json!({"id": id})).unwrap();
        let reply = ask(&mut portal, "ResourceDeallocateV1", id, &body).await;
        assert_eq!(
            reply.body["type"], "UnknownResource",
            "{id}: {:?}",
            reply.body
        );
    }
    assert!(backend.get_resource("hpc_weather-run").await.is_ok());
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_while_the_backend_is_down_is_answered_once_it_is_back_and_pings_still_are() {
    let backend = example();
    let mut s = Setup::new(Arc::new(backend.clone())).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    s.stop_backend().await;
    portal
        .send("ResourceAllocateV1", "down-1", &compute("down-proj", 10))
        .await
        .unwrap();
    // Postponed, not refused: no answer while the backend is away, and the
    // requests behind it are served meanwhile.
    let ping = ask(&mut portal, "PingV1", "ping-while-down", b"{}").await;
    assert_eq!(ping.message_type, "PingV1");
    assert!(
        portal
            .reply_to("down-1", Duration::from_secs(3))
            .await
            .unwrap()
            .is_none(),
        "answered while the backend was down"
    );
    s.restart_backend().await;
    let reply = portal
        .reply_to("down-1", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("no answer after the backend came back");
    assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    assert_eq!(backend.resource_count(), 1);
    run.abort();
}

#[tokio::test]
async fn a_coordinator_killed_after_creating_answers_after_restart_with_one_account() {
    let inner = example();
    // The first CreateResource never answers after creating: the
    // coordinator is "killed" while it waits.
    let s = Setup::new(Arc::new(Gated::new(inner.clone(), Duration::ZERO, true))).await;
    let mut portal = s.portal().await;
    portal
        .send("ResourceAllocateV1", "crash-1", &compute("crash-proj", 42))
        .await
        .unwrap();

    // The real binary, killed with SIGKILL once the backend holds the account.
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
            .args(["run", "--config"])
            .arg(s.dir.path().join("coordinator.yaml"))
            .env("HCA_USERNAME", &s.vhost.user)
            .env("HCA_PASSWORD", &s.vhost.password)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut child = start();
    support::until(
        "the backend to see the create",
        Duration::from_secs(30),
        || inner.resource_count() > 0,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        portal
            .next(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "answered before the kill"
    );

    let mut child = start();
    let reply = portal
        .reply_to("crash-1", Duration::from_secs(30))
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let reply = reply.expect("no answer after the restart");
    assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    assert!(
        backend_id_of(&reply.body).starts_with("hca_crash-proj_"),
        "{:?}",
        reply.body
    );
    assert_eq!(inner.resource_count(), 1);
}

#[tokio::test]
async fn an_allocation_on_slurm_creates_the_account_with_the_derived_limits() {
    if std::env::var_os("WALDUR_SLURM_CLUSTER").is_none() {
        eprintln!("skipped: WALDUR_SLURM_CLUSTER is not set");
        return;
    }
    let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
    let slurm = waldur_backend_slurm::SlurmBackend::from_settings(json!({
        "customer_prefix": format!("h{tag}c_"),
        "project_prefix": format!("h{tag}p_"),
        "allocation_prefix": "",
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "unit_factor": 1, "accounting_type": "usage"},
            "mem": {"label": "Memory", "measured_unit": "GB-hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    }))
    .unwrap();
    let s = Setup::new(Arc::new(slurm)).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let project = format!("p{tag}");
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "slurm-1",
        &compute(&project, 700),
    )
    .await;
    assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    let account = backend_id_of(&reply.body);
    assert!(account.starts_with(&format!("hca_{project}_")), "{account}");
    let out = std::process::Command::new("sacctmgr")
        .args(["-nP", "show", "assoc", "where"])
        .arg(format!("account={account}"))
        .args(["format=account,parentname,grptresmins"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{account}|")))
        .unwrap_or_else(|| panic!("no account {account}: {text}"));
    assert!(row.contains(&format!("h{tag}p_{project}")), "{row}");
    assert!(row.contains("cpu=700"), "{row}");
    // A redelivery changes nothing; deallocation removes the account.
    let again = ask(
        &mut portal,
        "ResourceAllocateV1",
        "slurm-1",
        &compute(&project, 700),
    )
    .await;
    assert_eq!(again.body, reply.body);
    let gone = ask(
        &mut portal,
        "ResourceDeallocateV1",
        "slurm-2",
        &serde_json::to_vec(&reply.body).unwrap(),
    )
    .await;
    assert_eq!(
        gone.message_type, "ResourceDeallocatedV1",
        "{:?}",
        gone.body
    );
    let out = std::process::Command::new("sacctmgr")
        .args(["-nP", "show", "account", &account])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_portal_subcommand_pings_and_allocates_with_the_shipped_payloads() {
    let backend = example();
    let s = Setup::new(Arc::new(backend.clone())).await;
    let (_c, run) = s.start().await;
    let portal = |payload: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
            .args(["mock-portal", "--config"])
            .arg(s.dir.path().join("coordinator.yaml"))
            .arg(payload)
            .env("HCA_USERNAME", &s.vhost.user)
            .env("HCA_PASSWORD", &s.vhost.password)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let payloads = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hca/payloads");
    let (ok, out) = tokio::task::block_in_place(|| portal("ping"));
    assert!(ok && out.contains("PingV1: still alive"), "{out}");
    let file = payloads.join("PingV1.json");
    let (ok, out) = tokio::task::block_in_place(|| portal(file.to_str().unwrap()));
    assert!(ok && out.contains("PingV1: still alive"), "{out}");
    let file = payloads.join("ComputeResourceSpecV1.json");
    let (ok, out) = tokio::task::block_in_place(|| portal(file.to_str().unwrap()));
    assert!(
        ok && out.contains(r#"ResourceCreatedV1 {"id":"hpc:hca_climate-sim_"#),
        "{out}"
    );
    assert_eq!(backend.resource_count(), 1);
    // Deallocate with the id just answered, as the portal would.
    let answer = out
        .lines()
        .find_map(|l| l.strip_prefix("ResourceCreatedV1 "))
        .unwrap();
    let file = s.dir.path().join("dealloc.json");
    std::fs::write(&file, answer).unwrap();
    let (ok, out) = tokio::task::block_in_place(|| portal(file.to_str().unwrap()));
    assert!(ok && out.contains("ResourceDeallocatedV1"), "{out}");
    assert_eq!(backend.resource_count(), 0);
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_broker_setting_to_fix_when_the_login_is_refused() {
    let s = Setup::new(Arc::new(example())).await;
    let strict = s.dir.path().join("strict.yaml");
    std::fs::write(
        &strict,
        std::fs::read_to_string(s.dir.path().join("coordinator.yaml"))
            .unwrap()
            .replace("declare_queues: true", "declare_queues: false"),
    )
    .unwrap();
    let check_with = |config: &std::path::Path, password: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
            .args(["check", "--config"])
            .arg(config)
            .env("HCA_USERNAME", &s.vhost.user)
            .env("HCA_PASSWORD", password)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let check = |password: &str| check_with(&s.dir.path().join("coordinator.yaml"), password);
    // Queues the portal has not created yet are named with the setting.
    let missing = tokio::task::block_in_place(|| check_with(&strict, &s.vhost.password));
    assert!(
        missing.contains("FAIL helmholtz test: queue to_hca does not exist")
            && missing.contains("queues.inbound"),
        "{missing}"
    );
    let _portal = s.portal().await; // declares both queues, as the portal's broker has them
    let present = tokio::task::block_in_place(|| check_with(&strict, &s.vhost.password));
    assert!(
        present.contains("PASS helmholtz test: queue to_portal exists"),
        "{present}"
    );
    let good = tokio::task::block_in_place(|| check(&s.vhost.password));
    assert!(good.contains("PASS helmholtz test: broker"), "{good}");
    assert!(
        good.contains("PASS helmholtz test: ComputeResourceSpecV1 limits are components"),
        "{good}"
    );
    // The chat type's `gpu` limit is a mistake of the config, named as such.
    assert!(
        good.contains(
            "resource_types.ChatTeamSpecV1.limits: [\"gpu\"] are not components of backend hpc"
        ),
        "{good}"
    );
    let bad = tokio::task::block_in_place(|| check("wrong-password"));
    assert!(bad.contains("FAIL helmholtz test"), "{bad}");
    assert!(bad.contains("HCA_PASSWORD"), "{bad}");
    assert!(!bad.contains("wrong-password"), "{bad}");
}

/// Static members of the compute type, open to persons and groups.
fn static_members() -> Extra {
    Extra {
        compute_target: Some("any"),
        compute: format!(
            "          members:\n            - static:\n                users: {{\"alice-id@helmholtz.de\": alice}}\n                groups: {{\"{CLIMATE}\": [carol, bob]}}\n"
        ),
        ..Extra::default()
    }
}

#[tokio::test]
async fn a_requester_becomes_the_members_and_an_unknown_one_gets_an_error_and_nothing() {
    let backend = example();
    let s = Setup::with(Arc::new(backend.clone()), static_members()).await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let for_group = ask(
        &mut portal,
        "ResourceAllocateV1",
        "m-1",
        &compute("climate", 10),
    )
    .await;
    assert_eq!(
        for_group.message_type, "ResourceCreatedV1",
        "{:?}",
        for_group.body
    );
    let id = backend_id_of(&for_group.body);
    assert_eq!(
        backend.get_resource(&id).await.unwrap().users,
        ["bob", "carol"]
    );

    let body = compute_for(&person("alice-id@helmholtz.de"), "alice-sim", 10);
    let for_alice = ask(&mut portal, "ResourceAllocateV1", "m-2", &body).await;
    assert_eq!(
        for_alice.message_type, "ResourceCreatedV1",
        "{:?}",
        for_alice.body
    );
    let alice_id = backend_id_of(&for_alice.body);
    assert_eq!(
        backend.get_resource(&alice_id).await.unwrap().users,
        ["alice"]
    );

    for (cid, target) in [
        ("m-3", person("stranger@helmholtz.de")),
        (
            "m-4",
            group("urn:geant:helmholtz.de:group:unknown#login.helmholtz.de"),
        ),
    ] {
        let reply = ask(
            &mut portal,
            "ResourceAllocateV1",
            cid,
            &compute_for(&target, "nobody", 10),
        )
        .await;
        assert_eq!(reply.message_type, "ErrorV1");
        assert_eq!(reply.body["type"], "RequesterUnknown", "{:?}", reply.body);
        let message = reply.body["message"].as_str().unwrap();
        let named = target["user_id_target"]
            .as_str()
            .or(target["group_urn_target"].as_str())
            .unwrap();
        assert!(message.contains(named), "{message}");
    }
    assert_eq!(
        backend.resource_count(),
        2,
        "nothing is created for an unknown requester"
    );

    let gone = ask(
        &mut portal,
        "ResourceDeallocateV1",
        "m-5",
        &serde_json::to_vec(&for_group.body).unwrap(),
    )
    .await;
    assert_eq!(
        gone.message_type, "ResourceDeallocatedV1",
        "{:?}",
        gone.body
    );
    assert_eq!(backend.resource_count(), 1);
    s.stop_and_check_all_acknowledged(run).await;
}

#[tokio::test]
async fn a_providers_own_refusal_reaches_the_portal_as_its_type_or_as_configured() {
    let refusals = vec![
        BackendError::new(
            tonic::Code::FailedPrecondition,
            "QUOTA_EXCEEDED",
            "the group's quota of 100 TB on /gpfs/work is used up",
        ),
        BackendError::new(
            tonic::Code::FailedPrecondition,
            "OUT_OF_BUDGET",
            "budget 2026 spent (ledger db01.internal)",
        ),
        BackendError::new(
            tonic::Code::Internal,
            "DISK_ON_FIRE",
            "sacctmgr on head01.cluster failed",
        ),
    ];
    let backend = example();
    let s = Setup::with(
        Arc::new(Gated::refusing(backend.clone(), refusals)),
        Extra {
            service: "      errors:\n        OUT_OF_BUDGET: {type: BudgetExhausted, message: \"your group's budget for this year is spent\"}\n".into(),
            ..Extra::default()
        },
    )
    .await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let mut answers = Vec::new();
    for i in 0..3 {
        let reply = ask(
            &mut portal,
            "ResourceAllocateV1",
            &format!("e-{i}"),
            &compute(&format!("proj{i}"), 10),
        )
        .await;
        assert_eq!(reply.message_type, "ErrorV1", "{:?}", reply.body);
        answers.push((
            reply.body["type"].as_str().unwrap().to_owned(),
            reply.body["message"].as_str().unwrap().to_owned(),
        ));
    }
    // The provider's reason as a class-like type, its message without the path.
    assert_eq!(answers[0].0, "QuotaExceeded");
    assert_eq!(answers[0].1, "the group's quota of 100 TB on is used up");
    // A configured reason: the provider's type and text.
    assert_eq!(
        answers[1],
        (
            "BudgetExhausted".into(),
            "your group's budget for this year is spent".into()
        )
    );
    // An internal failure stays generic, whatever its reason: its text names hosts.
    assert_eq!(answers[2].0, "ProvisioningFailed");
    assert!(!answers[2].1.contains("head01"), "{}", answers[2].1);
    assert_eq!(backend.resource_count(), 0);
    s.stop_and_check_all_acknowledged(run).await;
}

#[tokio::test]
async fn helmholtz_users_and_groups_from_ldap_become_slurm_associations_and_leave_with_the_account()
{
    let (Some(url), Some(_)) = (ldap_url(), std::env::var_os("WALDUR_SLURM_CLUSTER")) else {
        eprintln!("skipped: WALDUR_LDAP_URL or WALDUR_SLURM_CLUSTER is not set");
        return;
    };
    let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
    let urn = format!("urn:geant:helmholtz.de:group:ldap{tag}#login.helmholtz.de");
    let (ann, ben, cem) = (
        format!("ann{tag}"),
        format!("ben{tag}"),
        format!("cem{tag}"),
    );
    let mut dir = Directory::connect(&url).await;
    dir.person(&ann, &format!("{ann}@helmholtz.de"), &[&urn])
        .await;
    dir.person(&ben, &format!("{ben}@helmholtz.de"), &[&urn, "urn:other"])
        .await;
    dir.person(&cem, &format!("{cem}@helmholtz.de"), &[]).await;

    let slurm = waldur_backend_slurm::SlurmBackend::from_settings(json!({
        "customer_prefix": format!("h{tag}c_"),
        "project_prefix": format!("h{tag}p_"),
        "allocation_prefix": "",
        "components": {
            "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "unit_factor": 1, "accounting_type": "usage"},
            "mem": {"label": "Memory", "measured_unit": "GB-hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    }))
    .unwrap();
    let members = format!(
        "          members:\n            - ldap:\n                url: {url}\n                bind_dn: cn=admin,dc=waldur,dc=test\n                password_env: TEST_LDAP_PASSWORD\n                base_dn: ou=people,dc=waldur,dc=test\n                user_filter: \"(&(objectClass=posixAccount)(voPersonID={{id}}))\"\n                group_filter: \"(&(objectClass=posixAccount)(eduPersonEntitlement={{id}}))\"\n                member_attribute: uid\n"
    );
    let s = Setup::with(
        Arc::new(slurm),
        Extra {
            compute_target: Some("any"),
            compute: members,
            ..Extra::default()
        },
    )
    .await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let users_of = |account: &str| -> Vec<String> {
        let out = std::process::Command::new("sacctmgr")
            .args(["-nP", "show", "assoc", "where"])
            .arg(format!("account={account}"))
            .args(["format=user"])
            .output()
            .unwrap();
        let mut users: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        users.sort();
        users
    };

    // A group: every person entitled to it, nobody else.
    let g = ask(
        &mut portal,
        "ResourceAllocateV1",
        "l-1",
        &compute_for(&group(&urn), &format!("g{tag}"), 100),
    )
    .await;
    assert_eq!(g.message_type, "ResourceCreatedV1", "{:?}", g.body);
    let g_account = backend_id_of(&g.body);
    assert_eq!(users_of(&g_account), [ann.clone(), ben.clone()]);
    // A person: that person alone.
    let p = ask(
        &mut portal,
        "ResourceAllocateV1",
        "l-2",
        &compute_for(
            &person(&format!("{cem}@helmholtz.de")),
            &format!("u{tag}"),
            100,
        ),
    )
    .await;
    assert_eq!(p.message_type, "ResourceCreatedV1", "{:?}", p.body);
    let p_account = backend_id_of(&p.body);
    assert_eq!(users_of(&p_account), [cem]);
    // Somebody the directory does not know: an error, and no account.
    let unknown = ask(
        &mut portal,
        "ResourceAllocateV1",
        "l-3",
        &compute_for(&person("ghost@helmholtz.de"), &format!("x{tag}"), 100),
    )
    .await;
    assert_eq!(
        unknown.body["type"], "RequesterUnknown",
        "{:?}",
        unknown.body
    );
    let out = std::process::Command::new("sacctmgr")
        .args(["-nP", "show", "account", "format=account"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("x{tag}")));
    // Deallocation takes the members with the account.
    for (cid, answer, account) in [("l-4", &g, &g_account), ("l-5", &p, &p_account)] {
        let gone = ask(
            &mut portal,
            "ResourceDeallocateV1",
            cid,
            &serde_json::to_vec(&answer.body).unwrap(),
        )
        .await;
        assert_eq!(
            gone.message_type, "ResourceDeallocatedV1",
            "{:?}",
            gone.body
        );
        assert!(
            users_of(account).is_empty(),
            "{account} still has {:?}",
            users_of(account)
        );
    }
    run.abort();
    dir.clean_up().await;
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_or_for_another_name_is_refused_naming_the_setting() {
    let Some(ca) = support::hca::amqps_ca() else {
        eprintln!("skipped: WALDUR_AMQPS_CA is not set");
        return;
    };
    let vhost = support::hca::Vhost::create().await;
    let good = vhost.broker();
    assert_eq!(good.ca_file.as_deref(), Some(ca.as_path()));
    waldur_coordinator::upstream::hca::amqp::connect(&good, "test")
        .await
        .expect("the right CA and name connect");

    let other = tempfile::tempdir().unwrap();
    support::write_pki(other.path());
    let mut wrong_ca = good.clone();
    wrong_ca.ca_file = Some(other.path().join("ca.pem"));
    let e = waldur_coordinator::upstream::hca::amqp::connect(&wrong_ca, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("broker.ca_file"), "{e}");

    let mut wrong_name = good.clone();
    wrong_name.host = "127.0.0.1".into();
    let e = waldur_coordinator::upstream::hca::amqp::connect(&wrong_name, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("broker.host"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_asks_each_member_directory_and_names_a_missing_base() {
    let Some(url) = ldap_url() else {
        eprintln!("skipped: WALDUR_LDAP_URL is not set");
        return;
    };
    let source = |base: &str| {
        format!(
            "            - ldap: {{url: \"{url}\", bind_dn: \"cn=admin,dc=waldur,dc=test\", password_env: TEST_LDAP_PASSWORD, base_dn: \"{base}\", user_filter: \"(voPersonID={{id}})\"}}\n"
        )
    };
    let extra = Extra {
        compute: format!(
            "          members:\n{}{}",
            source("ou=people,dc=waldur,dc=test"),
            source("ou=nowhere,dc=waldur,dc=test")
        ),
        ..Extra::default()
    };
    let s = Setup::with(Arc::new(example()), extra).await;
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
            .args(["check", "--config"])
            .arg(s.dir.path().join("coordinator.yaml"))
            .env("HCA_USERNAME", &s.vhost.user)
            .env("HCA_PASSWORD", &s.vhost.password)
            .env("TEST_LDAP_PASSWORD", "waldur-test")
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "PASS helmholtz test: ComputeResourceSpecV1 member directory {url} answers"
        )),
        "{text}"
    );
    assert!(
        text.contains("FAIL helmholtz test: helmholtz.services[0].resource_types.ComputeResourceSpecV1.members: ")
            && text.contains("ou=nowhere"),
        "{text}"
    );
    assert!(
        text.contains("binds with its password over plain ldap://"),
        "{text}"
    );
    // The chat type has no sources: said, as a warning.
    assert!(
        text.contains("WARN helmholtz test: ChatTeamSpecV1 has no members"),
        "{text}"
    );
}

/// Forwards 127.0.0.1:`port` to the test directory once started: a
/// directory that is "down" until the test brings it up.
async fn directory_proxy(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:389").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_request_waits_while_the_directory_is_down_and_is_answered_once_it_is_back() {
    let Some(url) = ldap_url() else {
        eprintln!("skipped: WALDUR_LDAP_URL is not set");
        return;
    };
    let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
    let dee = format!("dee{tag}");
    let mut dir = Directory::connect(&url).await;
    dir.person(&dee, &format!("{dee}@helmholtz.de"), &[]).await;
    let port = support::free_port();
    let backend = example();
    let s = Setup::with(
        Arc::new(backend.clone()),
        Extra {
            compute_target: Some("any"),
            compute: format!(
                "          members:\n            - ldap: {{url: \"ldap://127.0.0.1:{port}\", base_dn: \"ou=people,dc=waldur,dc=test\", user_filter: \"(voPersonID={{id}})\", timeout_seconds: 2}}\n"
            ),
            ..Extra::default()
        },
    )
    .await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let body = compute_for(&person(&format!("{dee}@helmholtz.de")), "dee-sim", 10);
    portal
        .send("ResourceAllocateV1", "dir-1", &body)
        .await
        .unwrap();
    // Postponed, not refused, and nothing made meanwhile.
    let ping = ask(&mut portal, "PingV1", "ping-while-dir-down", b"{}").await;
    assert_eq!(ping.message_type, "PingV1");
    assert!(
        portal
            .reply_to("dir-1", Duration::from_secs(3))
            .await
            .unwrap()
            .is_none(),
        "answered while the directory was down"
    );
    assert_eq!(backend.resource_count(), 0);
    let proxy = directory_proxy(port).await;
    let reply = portal
        .reply_to("dir-1", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("no answer after the directory came back");
    assert_eq!(reply.message_type, "ResourceCreatedV1", "{:?}", reply.body);
    let id = backend_id_of(&reply.body);
    assert_eq!(backend.get_resource(&id).await.unwrap().users, [dee]);
    run.abort();
    proxy.abort();
    dir.clean_up().await;
}

#[tokio::test]
async fn a_posix_group_naming_the_urn_gives_its_member_uids() {
    let Some(url) = ldap_url() else {
        eprintln!("skipped: WALDUR_LDAP_URL is not set");
        return;
    };
    use waldur_coordinator::upstream::hca::members::{MemberSourceConfig, Members, Requester};
    let tag = format!("{:x}", rand::random::<u32>() & 0xfffff);
    let urn = format!("urn:geant:helmholtz.de:group:posix{tag}#login.helmholtz.de");
    let mut dir = Directory::connect(&url).await;
    dir.posix_group(&format!("g{tag}"), &urn, &["eve", "fay", "not a name"])
        .await;
    let configs: Vec<MemberSourceConfig> = serde_norway::from_str(&format!(
        "- ldap: {{url: \"{url}\", base_dn: \"ou=groups,dc=waldur,dc=test\", group_filter: \"(&(objectClass=posixGroup)(description={{id}}))\"}}\n"
    ))
    .unwrap();
    let members = Members::load(
        &configs,
        std::path::Path::new("/"),
        &waldur_coordinator::secret::MapEnv::default(),
    )
    .unwrap();
    // memberUid is the default member attribute; a value no backend could
    // take is skipped, not a reason to refuse the group.
    assert_eq!(
        members.resolve(&Requester::Group(urn)).await.unwrap(),
        ["eve", "fay"]
    );
    dir.clean_up().await;
}

#[tokio::test]
async fn an_allocation_whose_members_the_backend_all_refuses_is_removed_and_refused() {
    let backend = example();
    let s = Setup::with(
        Arc::new(Gated::refusing_members(backend.clone())),
        static_members(),
    )
    .await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    let reply = ask(
        &mut portal,
        "ResourceAllocateV1",
        "nm-1",
        &compute("nomembers", 10),
    )
    .await;
    assert_eq!(reply.message_type, "ErrorV1", "{:?}", reply.body);
    assert_eq!(reply.body["type"], "MembersNotAdded");
    assert_eq!(
        backend.resource_count(),
        0,
        "an allocation nobody can use is not left behind"
    );
    s.stop_and_check_all_acknowledged(run).await;
}
