//! The coordinator against waldur-sim and the real SLURM backend server over
//! mutual TLS, on the cluster `deploy/services.sh` brings up (run when
//! `WALDUR_SLURM_CLUSTER` is set, as `deploy/test.sh` does): team changes in
//! Waldur become associations, a pause blocks job submission, usage of a
//! real job reaches Waldur, a project moved to another customer moves its
//! accounts.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::{Options, World};
use waldur_backend_example::ExampleBackend;
use waldur_backend_slurm::SlurmBackend;

fn enabled() -> bool {
    std::env::var_os("WALDUR_SLURM_CLUSTER").is_some()
}

/// A prefix unique to this run, so accounts and their usage from earlier
/// runs never mix with this one's.
fn run_prefix() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("e{:x}_", millis % 0xfffff)
}

async fn world() -> World {
    world_with(Options {
        waldur_timeout_seconds: 30,
        ..Options::default()
    })
    .await
}

async fn world_with(options: Options) -> World {
    let prefix = run_prefix();
    world_of(options, settings(&prefix, &prefix)).await
}

/// A world whose backend server hosts SLURM with these settings.
async fn world_of(options: Options, settings: serde_json::Value) -> World {
    let slurm = SlurmBackend::from_settings(settings).unwrap();
    World::start_with(options, ExampleBackend::default(), Arc::new(slurm)).await
}

/// The SLURM backend of a run whose accounts start with `prefix`, allocation
/// accounts with `allocation_prefix` (the same, unless a test misconfigures
/// it).
fn slurm(prefix: &str, allocation_prefix: &str) -> SlurmBackend {
    SlurmBackend::from_settings(settings(prefix, allocation_prefix)).unwrap()
}

/// The settings of [`slurm`].
fn settings(prefix: &str, allocation_prefix: &str) -> serde_json::Value {
    serde_json::json!({
        "customer_prefix": format!("{prefix}c_"),
        "project_prefix": format!("{prefix}p_"),
        "allocation_prefix": allocation_prefix,
        "qos_paused": "waldur_paused",
        "qos_downscaled": "waldur_downscaled",
        "components": {
            // Waldur units are CPU-minutes so a few seconds of job show.
            "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "unit_factor": 1, "accounting_type": "usage"},
            "mem": {"label": "Memory", "measured_unit": "GB-hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    })
}

/// 600 CPU-minutes: plenty for the tests' few seconds of jobs.
fn budget() -> std::collections::BTreeMap<String, i64> {
    std::collections::BTreeMap::from([("cpu".to_owned(), 600)])
}

fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn users_of(account: &str) -> Vec<String> {
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=user",
            &format!("accounts={account}"),
        ],
    );
    let mut users: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    users.sort();
    users
}

/// One column of an account's own association (the row without a user).
fn account_column(account: &str, column: &str) -> String {
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            &format!("format=user,{column}"),
            &format!("accounts={account}"),
        ],
    );
    out.lines()
        .find_map(|l| l.strip_prefix('|'))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The parent of an account, as its account-level association names it.
fn parent_of(account: &str) -> String {
    account_column(account, "parentname")
}

fn qos_of(account: &str) -> String {
    account_column(account, "qos")
}

fn submit(account: &str, seconds: u32) -> Result<String, String> {
    let (ok, out) = sh(
        "runuser",
        &[
            "-u",
            "alice",
            "--",
            "sbatch",
            "--parsable",
            &format!("--account={account}"),
            "-n1",
            "--mem=100M",
            "-t",
            "2",
            "-o",
            "/var/tmp/waldur-services/jobs/job-%j.out",
            "--wrap",
            &format!("sleep {seconds}"),
        ],
    );
    if ok {
        Ok(out.trim().to_owned())
    } else {
        Err(out)
    }
}

/// Waits for a condition that runs SLURM commands: checked every 250 ms.
async fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    support::until_every(what, limit, Duration::from_millis(250), cond).await
}

/// Terminates the resource through Waldur: the backend removes the account
/// and its emptied parents.
async fn terminate(w: &World, resource: &str) {
    let (order, _) = w.order("Terminate", "executing", resource, serde_json::json!({}));
    w.until_state(&order, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_member_added_in_waldur_becomes_an_association_and_a_removed_one_goes() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("team sync", budget()).await;
    assert_eq!(users_of(&account), vec!["alice", "bob"]);

    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);
    let s = w.membership().await;
    assert_eq!(s.users_removed, 1, "{s:?}");
    assert_eq!(users_of(&account), vec!["alice"]);

    w.sim
        .grant_role(&w.scenario.project_uuid, &bob, "PROJECT.MEMBER");
    let s = w.membership().await;
    assert_eq!(s.users_added, 1, "{s:?}");
    assert_eq!(users_of(&account), vec!["alice", "bob"]);

    let s = w.membership().await;
    assert_eq!(
        s.backend_changes(),
        0,
        "a second sync changes nothing: {s:?}"
    );
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_moved_to_another_customer_moves_its_slurm_accounts_in_the_next_cycle() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("moving", budget()).await;
    let project = parent_of(&account);
    let prefix = project.split("p_").next().unwrap().to_owned();
    // The first cycle after a start asks about every resource: in place.
    let s = w.membership().await;
    assert_eq!((s.followed.checked, s.followed.moved), (1, 0), "{s:?}");

    w.sim.move_project(&w.scenario.project_uuid, "newowner");
    let s = w.membership().await;
    assert_eq!((s.followed.moved, s.followed.failed), (1, 0), "{s:?}");
    assert_eq!(parent_of(&project), format!("{prefix}c_newowner"));
    assert_eq!(parent_of(&account), project);
    assert_eq!(users_of(&account), vec!["alice", "bob"]);

    // Nothing moved since: nothing is asked.
    let s = w.membership().await;
    assert_eq!((s.followed.checked, s.followed.moved), (0, 0), "{s:?}");
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_resources_makes_an_allocation_lost_on_slurm_again_with_its_limits_and_team() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("lost", budget()).await;
    assert_eq!(users_of(&account), vec!["alice", "bob"]);
    // SLURM loses the allocation (a restored dump, an operator's mistake).
    sh(
        "sacctmgr",
        &[
            "-i",
            "remove",
            "user",
            "where",
            &format!("account={account}"),
        ],
    );
    sh(
        "sacctmgr",
        &[
            "-i",
            "remove",
            "account",
            "where",
            &format!("name={account}"),
        ],
    );
    assert!(users_of(&account).is_empty());

    // A plain cycle reports it and changes nothing.
    let s = w.membership().await;
    assert_eq!(s.missing_on_backend, vec![account.clone()], "{s:?}");
    assert!(parent_of(&account).is_empty());

    // The provider's "sync resources": made again, with limits and team.
    let m = &w.coordinator.offerings[0]
        .membership
        .as_ref()
        .unwrap()
        .processor;
    let s = m.run_cycle_recreating().await.unwrap();
    assert_eq!(s.recreated, vec![account.clone()], "{s:?}");
    assert!(s.missing_on_backend.is_empty(), "{s:?}");
    assert_eq!(users_of(&account), vec!["alice", "bob"]);
    assert_eq!(grp_tres_mins(&account), "cpu=600");
    let s = w.membership().await;
    assert!(
        s.missing_on_backend.is_empty() && s.backend_changes() == 0,
        "{s:?}"
    );
    terminate(&w, &resource).await;
}

/// `GrpTRESMins` of an account as sacctmgr shows it.
fn grp_tres_mins(account: &str) -> String {
    account_column(account, "grptresmins")
}

/// The date `months` after an RFC 3339 timestamp's, same day.
fn months_after(created: &str, months: i32) -> String {
    let date: jiff::civil::Date = created[..10].parse().unwrap();
    date.checked_add(jiff::Span::new().months(months))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepaid_renewal_that_only_moves_the_end_date_sets_the_limits_for_the_new_months() {
    if !enabled() {
        return;
    }
    let prefix = run_prefix();
    let mut prepaid = settings(&prefix, &prefix);
    prepaid["components"] = serde_json::json!({
        "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "accounting_type": "one"}
    });
    let w = world_of(
        Options {
            waldur_timeout_seconds: 30,
            ..Options::default()
        },
        prepaid,
    )
    .await;
    let limits = std::collections::BTreeMap::from([("cpu".to_owned(), 100)]);
    let (resource, account) = w.provisioned_with("prepaid", limits.clone()).await;
    // No end date: one month's worth.
    assert_eq!(grp_tres_mins(&account), "cpu=100");
    let created = w.sim.resource(&resource).unwrap().created;

    // A renewal order with the same limits, the resource now ending in 3
    // months.
    w.sim
        .set_resource_end_date(&resource, Some(&months_after(&created, 3)));
    let order = w
        .sim
        .create_order(waldur_sim::NewOrder {
            order_type: "Update".into(),
            state: "executing".into(),
            offering_uuid: w.scenario.offering_uuid.clone(),
            project_uuid: w.scenario.project_uuid.clone(),
            resource_uuid: resource.clone(),
            limits: limits.clone(),
            ..Default::default()
        })
        .unwrap();
    w.until_state(&order.order_uuid, "done").await;
    assert_eq!(grp_tres_mins(&account), "cpu=300");

    // The end date moved again with no order (Waldur applied it after the
    // order): the next membership cycle follows.
    let s = w.membership().await;
    assert_eq!(s.followed.renewed, 0, "first sight is remembered: {s:?}");
    w.sim
        .set_resource_end_date(&resource, Some(&months_after(&created, 6)));
    let s = w.membership().await;
    assert_eq!((s.followed.renewed, s.followed.failed), (1, 0), "{s:?}");
    assert_eq!(grp_tres_mins(&account), "cpu=600");
    let s = w.membership().await;
    assert_eq!(s.followed.renewed, 0, "{s:?}");
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_resource_cannot_start_jobs_and_restored_it_can() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("pause sync", budget()).await;
    w.sim.set_resource_flags(&resource, true, false);
    let s = w.membership().await;
    assert_eq!(s.access_changed, 1, "{s:?}");
    assert_eq!(qos_of(&account), "waldur_paused");
    assert!(
        submit(&account, 1).is_err(),
        "a paused account refuses submission"
    );

    w.sim.set_resource_flags(&resource, false, false);
    let s = w.membership().await;
    assert_eq!(s.access_changed, 1, "{s:?}");
    let job = submit(&account, 1).expect("restored: jobs start again");
    sh("scancel", &[&job]);
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_a_real_job_reaches_waldur_under_cpu_for_this_month_and_user() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("usage sync", budget()).await;
    let job = submit(&account, 3).unwrap();
    // Scoped to this run's account (job ids restart with slurmctld), and
    // waited for until the record is complete: state, requested TRES and
    // elapsed time are written by slurmdbd at different moments.
    let query = || {
        sh(
            "sacct",
            &[
                "-nP",
                "-X",
                "-A",
                &account,
                "-j",
                &job,
                "--noconvert",
                "--format=State,ReqTRES,ElapsedRaw",
            ],
        )
        .1
        .lines()
        .find(|l| l.starts_with("COMPLETED|") && l.contains("cpu="))
        .map(|l| l.trim_start_matches("COMPLETED|").to_owned())
    };
    wait_for(
        "the job's complete record in sacct",
        Duration::from_secs(120),
        || query().is_some(),
    )
    .await;
    let line = query().unwrap();
    let mut parts = line.trim().split('|');
    let req = parts.next().unwrap().to_owned();
    let elapsed: f64 = parts.next().unwrap().parse().unwrap();
    let cpus: f64 = req
        .split(',')
        .find_map(|p| p.strip_prefix("cpu="))
        .unwrap()
        .parse()
        .unwrap();
    let expected = format!("{:.2}", (cpus * elapsed / 60.0 * 100.0).round() / 100.0);

    let s = w.report().await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let period = format!("{:04}-{:02}-01", now.year(), now.month());
    let cpu = w
        .sim
        .component_usages(&resource)
        .into_iter()
        .find(|u| u.billing_period == period && u.component_type == "cpu")
        .expect("a cpu usage record this month");
    assert_eq!(cpu.usage, expected);
    assert_eq!(cpu.user_usages["alice"].usage, expected);

    w.sim.reset_calls();
    let s = w.report().await;
    assert_eq!(s.totals_written, 0, "unchanged usage is not written again");
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_waldur_change_slurm_associations_and_qos_without_polling() {
    if !enabled() {
        return;
    }
    let w = world_with(Options {
        waldur_timeout_seconds: 30,
        tasks: "{orders: true, report: false, membership: true, events: true}",
        extra_offering_config: "    intervals: {orders_seconds: 3600, membership_seconds: 3600, report_seconds: 3600}\n    events: {stomp_url: 'ws://127.0.0.1:15674/ws', heartbeat_seconds: 2, max_backoff_seconds: 2}",
        ..Options::default()
    })
    .await;
    w.sim.enable_events(waldur_sim::events::Broker::default());
    let (resource, account) = w.provisioned_with("event sync", budget()).await;
    let (c, run) = w.spawn_running();
    let expected = waldur_coordinator::runtime::events::consumers::object_types(&c.offerings[0])
        .await
        .len();
    wait_for("consumers connected", Duration::from_secs(60), || {
        let consumers = c.offerings[0]
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        consumers.len() == expected && consumers.iter().all(|(_, s)| s.connected())
    })
    .await;

    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);
    wait_for("bob's association removed", Duration::from_secs(60), || {
        users_of(&account) == vec!["alice"]
    })
    .await;
    w.sim
        .grant_role(&w.scenario.project_uuid, &bob, "PROJECT.MEMBER");
    wait_for("bob's association back", Duration::from_secs(60), || {
        users_of(&account) == vec!["alice", "bob"]
    })
    .await;
    w.sim.set_resource_flags(&resource, true, false);
    wait_for("the pause QoS", Duration::from_secs(60), || {
        qos_of(&account) == "waldur_paused"
    })
    .await;
    w.sim.set_resource_flags(&resource, false, false);
    wait_for("the default QoS", Duration::from_secs(60), || {
        qos_of(&account) != "waldur_paused"
    })
    .await;
    // A project moved to another customer: the resource event moves it.
    let project = parent_of(&account);
    w.sim.move_project(&w.scenario.project_uuid, "eventowner");
    wait_for(
        "the project under its new customer",
        Duration::from_secs(60),
        || parent_of(&project).ends_with("c_eventowner"),
    )
    .await;
    run.abort();
    terminate(&w, &resource).await;
}

/// A world whose breaker lets at most two destructive changes of a kind
/// through per cycle.
async fn guarded_world() -> World {
    world_with(Options {
        waldur_timeout_seconds: 30,
        extra_offering_config: "    safety: {max_destructive: 2, max_destructive_percent: 10}\n",
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_slurm_an_empty_team_answer_removes_no_association() {
    if !enabled() {
        return;
    }
    let w = world().await;
    let (resource, account) = w.provisioned_with("empty team", budget()).await;
    w.sim.add_fault(waldur_sim::Fault {
        method: "GET".into(),
        path_contains: "/team/".into(),
        body: Some("[]".into()),
        ..Default::default()
    });
    let s = w.membership().await;
    assert_eq!(s.users_removed, 0, "{s:?}");
    assert_eq!(s.withheld.len(), 1, "{s:?}");
    assert_eq!(users_of(&account), vec!["alice", "bob"]);
    w.sim.clear_faults();
    terminate(&w, &resource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_slurm_a_shrunken_offering_user_list_trips_the_breaker_and_no_association_goes() {
    if !enabled() {
        return;
    }
    let w = guarded_world().await;
    let mut made = Vec::new();
    for name in ["shrunk one", "shrunk two", "shrunk three"] {
        made.push(w.provisioned_with(name, budget()).await);
    }
    let bob = w.scenario.users["bob"].clone();
    let ou = w
        .sim
        .offering_user_of(&w.scenario.offering_uuid, &bob)
        .unwrap();
    w.sim.set_offering_user_restricted(&ou.uuid, true);
    let s = w.membership().await;
    let trip = s.breaker.clone().expect("the breaker trips");
    assert_eq!((trip.count, trip.existing), (3, 6), "{trip:?}");
    assert_eq!(s.users_removed, 0, "{s:?}");
    for (_, account) in &made {
        assert_eq!(users_of(account), vec!["alice", "bob"]);
    }
    w.sim.set_offering_user_restricted(&ou.uuid, false);
    for (resource, _) in &made {
        terminate(&w, resource).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_slurm_a_misconfigured_allocation_prefix_trips_the_breaker_and_nothing_is_touched() {
    if !enabled() {
        return;
    }
    let mut w = guarded_world().await;
    let mut made = Vec::new();
    for name in ["prefix one", "prefix two", "prefix three"] {
        made.push(w.provisioned_with(name, budget()).await);
    }
    let prefix = made[0].1.split_inclusive('_').next().unwrap().to_owned();
    // The operator mistypes the allocation prefix: every account is now
    // outside it, and the backend refuses to touch any of them.
    let right = w.served.clone();
    w.stop_backend().await;
    w.served = Arc::new(slurm(&prefix, &format!("{prefix}typo_")));
    w.restart_backend().await;
    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);

    let s = w.membership().await;
    let trip = s.breaker.clone().expect("the breaker trips");
    assert_eq!(trip.kind.as_str(), "resources_erred", "{trip:?}");
    assert!(s.erred.is_empty(), "nothing marked erred: {s:?}");
    assert_eq!(s.users_removed, 0, "{s:?}");
    for (resource, account) in &made {
        assert_eq!(users_of(account), vec!["alice", "bob"]);
        assert_eq!(w.sim.resource(resource).unwrap().state, "OK");
    }

    w.stop_backend().await;
    w.served = right;
    w.restart_backend().await;
    w.sim
        .grant_role(&w.scenario.project_uuid, &bob, "PROJECT.MEMBER");
    for (resource, _) in &made {
        terminate(&w, resource).await;
    }
}
