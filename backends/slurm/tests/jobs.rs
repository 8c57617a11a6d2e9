//! The SLURM backend with real jobs on the cluster from deploy/services.sh:
//! accounts and limits as sacctmgr shows them, usage of a real job in the
//! report, enforcement of limits and of pause/restore, the associations a
//! user keeps after their last allocation, and the self checks.

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use waldur_backend_sdk::Backend;
use waldur_backend_sdk::types::*;
use waldur_backend_slurm::SlurmBackend;

fn enabled() -> bool {
    std::env::var_os("WALDUR_SLURM_CLUSTER").is_some()
}

fn backend() -> SlurmBackend {
    SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "jc_",
        "project_prefix": "jp_",
        "allocation_prefix": "ja_",
        "qos_paused": "waldur_paused",
        "qos_downscaled": "waldur_downscaled",
        "components": {
            // unit_factor 1: Waldur units are CPU-minutes, so a short job shows.
            "cpu": {"label": "CPU", "measured_unit": "CPU-minutes", "unit_factor": 1, "accounting_type": "usage"},
            "mem": {"label": "Memory", "measured_unit": "GB-hours", "unit_factor": 61440, "accounting_type": "limit"}
        }
    }))
    .unwrap()
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

fn context(tag: &str) -> ResourceContext {
    ResourceContext {
        resource_uuid: format!("{tag:0>32}"),
        name: format!("job test {tag}"),
        slug: tag.to_owned(),
        project_slug: format!("proj{tag}"),
        customer_slug: "jobs".into(),
        ..ResourceContext::default()
    }
}

/// A tag unique to this run: accounts of earlier runs (and their jobs'
/// usage this month) never mix with this one's.
fn run_tag(tag: &str) -> String {
    use std::sync::OnceLock;
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{:x}", (nanos / 1_000_000) % 0xfffff)
    });
    format!("{tag}{run}")
}

async fn create(b: &SlurmBackend, tag: &str, limits: Limits) -> String {
    create_as(b, tag, limits, "alice").await
}

/// An allocation with `user` as its only member; its backend id.
async fn create_as(b: &SlurmBackend, tag: &str, limits: Limits, user: &str) -> String {
    let id = b.generate_backend_id(tag, None).unwrap();
    b.create_resource(CreateResource {
        backend_id: id.clone(),
        resource: context(tag),
        limits,
        users: vec![User::named(user)],
        ..CreateResource::default()
    })
    .await
    .unwrap();
    id
}

async fn cleanup(b: &SlurmBackend, id: &str) {
    let _ = b
        .delete_resource(DeleteResource {
            backend_id: id.into(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await;
}

fn submit(account: &str, minutes: &str, seconds: u32) -> Result<String, String> {
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
            minutes,
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

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn job_field(id: &str, field: &str) -> String {
    sh("squeue", &["-h", "-j", id, "-o", field])
        .1
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_places_the_account_under_its_parents_with_converted_limits_and_repeating_changes_nothing()
 {
    if !enabled() {
        return;
    }
    let b = backend();
    let limits = Limits::from([("mem".to_owned(), 2)]);
    let tag = run_tag("jt1");
    let project = format!("jp_proj{tag}");
    let id = create(&b, &tag, limits.clone()).await;
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account,parentname,user,grptresmins",
            &format!("accounts={id},{project},jc_jobs"),
        ],
    );
    assert!(out.contains(&format!("{project}|jc_jobs||")), "{out}");
    assert!(out.contains(&format!("{id}|{project}||")), "{out}");
    assert!(
        out.contains("mem=120G"),
        "2 GB-hours × 61440 = 122880 MB-minutes: {out}"
    );
    assert!(out.contains(&format!("{id}||alice|")), "{out}");
    let before = b.spawned();
    create(&b, &tag, limits).await;
    assert_eq!(b.spawned() - before, 1, "a repeated create only reads");
    cleanup(&b, &id).await;
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account",
            &format!("accounts={id},{project}"),
        ],
    );
    assert!(
        out.trim().is_empty(),
        "account and emptied project account removed: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_jobs_usage_appears_per_user_and_in_the_total_as_sacct_reports_it() {
    if !enabled() {
        return;
    }
    let b = backend();
    let id = create(&b, &run_tag("jt2"), Limits::new()).await;
    let job = submit(&id, "2", 3).unwrap();
    wait_for("the job in sacct", Duration::from_secs(120), || {
        sh(
            "sacct",
            &[
                "-nP",
                "-X",
                "-j",
                &job,
                &format!("--accounts={id}"),
                "--noconvert",
                "--format=State,ReqTRES",
            ],
        )
        .1
        // slurmdbd writes the state and the requested TRES at different
        // moments: wait for both.
        .lines()
        .any(|l| l.starts_with("COMPLETED|") && l.contains("cpu="))
    });
    // Scoped to the account: job ids restart with slurmctld, so a bare
    // `-j` can also match a job of an earlier run.
    let (_, out) = sh(
        "sacct",
        &[
            "-nP",
            "-X",
            "-j",
            &job,
            &format!("--accounts={id}"),
            "--noconvert",
            "--format=ReqTRES,ElapsedRaw",
        ],
    );
    let line = out
        .lines()
        .find(|l| l.contains("cpu="))
        .unwrap_or_else(|| panic!("no sacct record of job {job} in {id}: {out:?}"));
    let mut parts = line.trim().split('|');
    let (req, elapsed) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse::<f64>().unwrap(),
    );
    let cpus: f64 = req
        .split(',')
        .find_map(|p| p.strip_prefix("cpu="))
        .unwrap()
        .parse()
        .unwrap();
    let expected = (cpus * elapsed / 60.0 * 100.0).round() / 100.0;
    let report = b
        .usage_report(UsageQuery {
            backend_ids: vec![id.clone()],
            period: None,
            timezone: None,
        })
        .await
        .unwrap();
    let usage = &report[0];
    assert!(
        (usage.users["alice"]["cpu"] - expected).abs() < 0.011,
        "{usage:?} vs {expected}"
    );
    assert!((usage.total["cpu"] - usage.users["alice"]["cpu"]).abs() < 1e-9);
    cleanup(&b, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_budget_holds_jobs_until_the_limit_is_raised_and_pause_blocks_submission() {
    if !enabled() {
        return;
    }
    let b = backend();
    let id = create(&b, &run_tag("jt3"), Limits::new()).await;
    b.set_resource_limits(&id, Limits::from([("cpu".to_owned(), 0)]), None)
        .await
        .unwrap();
    let job = submit(&id, "1", 1).unwrap();
    wait_for(
        "the job held by AssocGrpCPUMinutesLimit",
        Duration::from_secs(60),
        || job_field(&job, "%r").contains("AssocGrpCPUMinutesLimit"),
    );
    b.set_resource_limits(&id, Limits::from([("cpu".to_owned(), 100)]), None)
        .await
        .unwrap();
    wait_for(
        "the job to run after the raise",
        Duration::from_secs(90),
        || {
            let state = job_field(&job, "%T");
            state.is_empty() || state == "RUNNING" || state == "COMPLETING"
        },
    );

    assert!(
        b.set_resource_access(&id, AccessLevel::Paused)
            .await
            .unwrap()
    );
    let refused = submit(&id, "1", 1);
    assert!(
        refused.is_err(),
        "a paused account accepted a job: {refused:?}"
    );
    assert!(
        b.set_resource_access(&id, AccessLevel::Downscaled)
            .await
            .unwrap()
    );
    let (_, qos) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account,user,qos",
            &format!("accounts={id}"),
        ],
    );
    assert!(qos.contains("waldur_downscaled"), "{qos}");
    assert!(b.set_resource_access(&id, AccessLevel::Full).await.unwrap());
    let job = submit(&id, "1", 1).expect("a restored account accepts jobs");
    let _ = sh("scancel", &[&job]);
    cleanup(&b, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_removes_the_association_and_soft_delete_keeps_zero_limits() {
    if !enabled() {
        return;
    }
    let b = backend();
    let id = create(&b, &run_tag("jt4"), Limits::from([("mem".to_owned(), 1)])).await;
    b.add_users(&id, vec![User::named("bob")], None)
        .await
        .unwrap();
    b.remove_users(&id, vec!["alice".into()]).await.unwrap();
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account,user",
            &format!("accounts={id}"),
        ],
    );
    assert!(!out.contains("|alice") && out.contains("|bob"), "{out}");
    b.delete_resource(DeleteResource {
        backend_id: id.clone(),
        mode: DeletionMode::Soft,
        resource: None,
    })
    .await
    .unwrap();
    let limits = b.get_resource_limits(&id).await.unwrap();
    assert_eq!(
        limits,
        BTreeMap::from([("cpu".to_owned(), 0), ("mem".to_owned(), 0)])
    );
    cleanup(&b, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_slurm_would_reject_and_sacctmgr_failures_are_clear_errors() {
    if !enabled() {
        return;
    }
    let b = backend();
    let bad = b.generate_backend_id("Bad Name;rm", None).unwrap_err();
    assert_eq!(bad.reason, "INVALID_FIELD");
    let mut ctx = context("jt5");
    ctx.project_slug = "x y".into();
    let err = b
        .create_resource(CreateResource {
            backend_id: "ja_jt5".into(),
            resource: ctx,
            ..CreateResource::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message.contains("resource.project_slug"),
        "{}",
        err.message
    );
    // A QoS SLURM does not know: sacctmgr's own message comes back.
    let b2 = SlurmBackend::from_settings(serde_json::json!({
        "allocation_prefix": "ja_", "customer_prefix": "jc_", "project_prefix": "jp_",
        "qos_paused": "no_such_qos",
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "usage"}}
    }))
    .unwrap();
    let id = create(&b2, &run_tag("jt6"), Limits::new()).await;
    let err = b2
        .set_resource_access(&id, AccessLevel::Paused)
        .await
        .unwrap_err();
    assert!(err.message.contains("sacctmgr failed"), "{}", err.message);
    cleanup(&b2, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_management_creates_a_qos_per_allocation_and_removes_it_with_the_account() {
    if !enabled() {
        return;
    }
    let b = SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "jc_", "project_prefix": "jp_", "allocation_prefix": "ja_",
        "qos_management": {"enabled": true, "max_jobs": 2, "max_wall": "01:00:00"},
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "limit"}}
    }))
    .unwrap();
    let id = create(&b, &run_tag("jt7"), Limits::new()).await;
    let (_, qos) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "qos",
            &id,
            "format=name,flags,maxjobs,maxwall",
        ],
    );
    assert!(
        qos.contains(&format!("{id}|DenyOnLimit,NoDecay|2|01:00:00")),
        "{qos}"
    );
    let (_, assoc) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account,user,defaultqos",
            &format!("accounts={id}"),
        ],
    );
    assert!(assoc.lines().any(|l| l == format!("{id}||{id}")), "{assoc}");
    // A repeated create changes nothing and does not fail on the existing QoS.
    create(&b, &run_tag("jt7"), Limits::new()).await;
    cleanup(&b, &id).await;
    let (_, qos) = sh("sacctmgr", &["-nP", "show", "qos", &id, "format=name"]);
    assert!(qos.trim().is_empty(), "{qos}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_qos_enforcement_pause_blocks_submission_and_restore_lifts_it_without_touching_qos() {
    if !enabled() {
        return;
    }
    let b = SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "jc_", "project_prefix": "jp_", "allocation_prefix": "ja_",
        "qos_enforcement_enabled": true, "enforce_offering_qos": true,
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "limit"}}
    }))
    .unwrap();
    let id = create(&b, &run_tag("jt8"), Limits::new()).await;
    assert!(
        b.set_resource_access(&id, AccessLevel::Paused)
            .await
            .unwrap()
    );
    assert!(
        !b.set_resource_access(&id, AccessLevel::Paused)
            .await
            .unwrap(),
        "repeating pause changes nothing"
    );
    assert!(
        submit(&id, "1", 1).is_err(),
        "GrpSubmitJobs=0 refuses submission"
    );
    assert!(b.set_resource_access(&id, AccessLevel::Full).await.unwrap());
    let job = submit(&id, "1", 1).expect("restored account accepts jobs");
    let _ = sh("scancel", &[&job]);
    let (_, qos) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account,user,qos",
            &format!("accounts={id}"),
        ],
    );
    assert!(!qos.contains("waldur_"), "{qos}");
    cleanup(&b, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_and_hand_made_accounts_are_never_changed_and_adopt_takes_one_over() {
    if !enabled() {
        return;
    }
    let b = backend();
    let tag = run_tag("jt9");
    let id = create(&b, &tag, Limits::new()).await;
    let project = format!("jp_proj{tag}");
    // The project account: the backend refuses every change to it.
    let e = b
        .delete_resource(DeleteResource {
            backend_id: project.clone(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{e:?}");
    let e = b
        .remove_users(&project, vec!["alice".into()])
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{e:?}");
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "account",
            "format=account",
            &format!("names={project}"),
        ],
    );
    assert!(
        out.contains(&project),
        "the project account is still there: {out}"
    );

    // An allocation made by hand under the prefix but with no marker and
    // the wrong shape is refused until an operator adopts it.
    let hand = format!("ja_hand{tag}");
    sh(
        "sacctmgr",
        &[
            "-i",
            "add",
            "account",
            &hand,
            "description=made by hand",
            "organization=physics",
            "parent=root",
        ],
    );
    let e = b.get_resource(&hand).await.unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{e:?}");
    let adopted = b.adopt(std::slice::from_ref(&hand)).await;
    assert!(matches!(adopted[0].1, Ok(true)), "{adopted:?}");
    assert!(b.get_resource(&hand).await.is_ok());
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "account",
            "format=descr",
            &format!("names={hand}"),
        ],
    );
    assert_eq!(out.trim(), "made by hand [waldur]");
    sh(
        "sacctmgr",
        &["-i", "remove", "account", "where", &format!("name={hand}")],
    );
    cleanup(&b, &id).await;
}

/// The accounts a user has associations under, as sacctmgr lists them.
fn user_accounts(user: &str) -> Vec<String> {
    let (_, out) = sh(
        "sacctmgr",
        &[
            "-nP",
            "show",
            "assoc",
            "format=account",
            &format!("users={user}"),
        ],
    );
    let mut accounts: Vec<String> = out.lines().map(str::to_owned).collect();
    accounts.sort();
    accounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_leaving_their_last_allocation_loses_the_default_account_association_unless_kept() {
    if !enabled() {
        return;
    }
    let b = backend();
    let user = run_tag("dflu");
    let first = create_as(&b, &run_tag("jd1"), Limits::new(), &user).await;
    let second = create_as(&b, &run_tag("jd2"), Limits::new(), &user).await;
    let mut both = vec![first.clone(), second.clone(), "root".to_owned()];
    both.sort();
    assert_eq!(user_accounts(&user), both, "DefaultAccount=root adds root");

    b.remove_users(&first, vec![user.clone()]).await.unwrap();
    let mut left = vec![second.clone(), "root".to_owned()];
    left.sort();
    assert_eq!(
        user_accounts(&user),
        left,
        "one allocation left: root stays"
    );
    b.remove_users(&second, vec![user.clone()]).await.unwrap();
    assert!(
        user_accounts(&user).is_empty(),
        "{:?}",
        user_accounts(&user)
    );

    // Terminating the last allocation releases it too.
    b.add_users(&first, vec![User::named(&user)], None)
        .await
        .unwrap();
    cleanup(&b, &first).await;
    assert!(
        user_accounts(&user).is_empty(),
        "{:?}",
        user_accounts(&user)
    );

    // A site that keeps it.
    let settings = serde_json::json!({
        "customer_prefix": "jc_", "project_prefix": "jp_", "allocation_prefix": "ja_",
        "keep_default_association": true,
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "usage"}}
    });
    let keeping = SlurmBackend::from_settings(settings).unwrap();
    keeping
        .add_users(&second, vec![User::named(&user)], None)
        .await
        .unwrap();
    keeping
        .remove_users(&second, vec![user.clone()])
        .await
        .unwrap();
    assert_eq!(user_accounts(&user), ["root"]);
    sh(
        "sacctmgr",
        &["-i", "remove", "user", "where", &format!("name={user}")],
    );
    cleanup(&b, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_checks_name_every_missing_qos_partition_and_cluster_and_pass_when_all_exist() {
    if !enabled() {
        return;
    }
    let good = SlurmBackend::from_settings(serde_json::json!({
        "cluster_name": "test",
        "qos_paused": "waldur_paused",
        "qos_downscaled": "waldur_downscaled",
        "default_partition": "debug",
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "usage"}}
    }))
    .unwrap();
    let d = good.diagnostics().await.unwrap();
    let failed: Vec<_> = d
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Ok)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for name in [
        "cluster",
        "qos_normal",
        "qos_waldur_paused",
        "partition_debug",
        "account_root",
    ] {
        assert!(d.checks.iter().any(|c| c.name == name), "no {name}: {d:#?}");
    }

    let elsewhere = SlurmBackend::from_settings(serde_json::json!({
        "cluster_name": "nosuchcluster",
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "usage"}}
    }))
    .unwrap();
    let d = elsewhere.diagnostics().await.unwrap();
    let cluster = d.checks.iter().find(|c| c.name == "cluster").unwrap();
    assert!(
        cluster.status == CheckStatus::Failed && cluster.message.contains("nosuchcluster"),
        "{d:#?}"
    );

    let bad = SlurmBackend::from_settings(serde_json::json!({
        "cluster_name": "test",
        "qos_paused": "nosuchqos",
        "default_partition": "nosuchpart",
        "default_account": "nosuchaccount",
        "root_account": "root",
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "usage"}}
    }))
    .unwrap();
    let d = bad.diagnostics().await.unwrap();
    let failed: BTreeMap<&str, &str> = d
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .map(|c| (c.name.as_str(), c.message.as_str()))
        .collect();
    assert!(
        failed["qos_nosuchqos"].contains("qos_paused"),
        "{failed:#?}"
    );
    assert!(
        failed["partition_nosuchpart"].contains("debug"),
        "{failed:#?}"
    );
    assert!(failed.contains_key("account_nosuchaccount"), "{failed:#?}");
}
