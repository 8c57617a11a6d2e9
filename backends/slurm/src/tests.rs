//! Unit tests with a scripted runner: the command lines the backend builds,
//! and its reading of sacctmgr's answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use waldur_backend_sdk::Backend;
use waldur_backend_sdk::types::*;

use crate::cli::{Output, Runner};
use crate::{SlurmBackend, SlurmSettings, prepaid_months};

/// Answers by the first matching substring of the joined command line;
/// records every command.
#[derive(Default)]
struct Scripted {
    answers: Vec<(&'static str, i32, &'static str)>,
    seen: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Runner for Scripted {
    async fn run(&self, program: &str, args: &[String]) -> std::io::Result<Output> {
        let line = format!(
            "{} {}",
            program.rsplit('/').next().unwrap_or(program),
            args.join(" ")
        );
        self.seen.lock().unwrap().push(line.clone());
        let (code, out) = self
            .answers
            .iter()
            .find(|(needle, _, _)| line.contains(needle))
            .map(|(_, c, o)| (*c, *o))
            .unwrap_or((0, ""));
        Ok(Output {
            code: Some(code),
            stdout: out.to_owned(),
            stderr: String::new(),
        })
    }
}

fn backend(settings: serde_json::Value, runner: Arc<Scripted>) -> SlurmBackend {
    SlurmBackend::new(SlurmSettings::parse(settings).unwrap(), runner)
}

fn base(extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "customer_prefix": "c_", "project_prefix": "p_", "allocation_prefix": "a_",
        "components": {"cpu": {"label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000, "accounting_type": "limit"}}
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// `show account withassoc` of an allocation this backend created.
const OWNED_RUN: &str =
    "a_run|p_proj|p_proj||||normal||run [waldur:00000000000000000000000000000abc]\n";

fn ctx() -> ResourceContext {
    ResourceContext {
        resource_uuid: "00000000-0000-0000-0000-000000000abc".into(),
        name: "Run".into(),
        slug: "run".into(),
        project_slug: "proj".into(),
        customer_slug: "cust".into(),
        ..ResourceContext::default()
    }
}

#[tokio::test]
async fn cluster_scoping_goes_before_set_and_sacct_gets_a_cluster_flag() {
    let runner = Arc::new(Scripted {
        answers: vec![("list tres", 0, "cpu||1\nmem||2\n")],
        ..Default::default()
    });
    let b = backend(
        base(serde_json::json!({"cluster_name": "hpc1"})),
        runner.clone(),
    );
    b.set_resource_access("a_run", AccessLevel::Full).await.ok();
    b.usage_report(UsageQuery {
        backend_ids: vec!["a_run".into()],
        period: None,
        timezone: None,
    })
    .await
    .unwrap();
    let seen = runner.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l
            .starts_with("sacctmgr --parsable2 --noheader show account withassoc")
            && l.ends_with("cluster=hpc1")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("sacct --parsable2 --noheader --cluster=hpc1 ")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_add_of_what_exists_and_a_no_op_modify_are_success_but_other_failures_are_errors() {
    let runner = Arc::new(Scripted {
        answers: vec![
            ("show account withassoc", 0, ""),
            ("list tres", 0, "cpu||1\n"),
            ("add account c_cust", 1, " Nothing new added.\n"),
            ("add account p_proj", 1, " Nothing new added.\n"),
            ("add account a_run", 0, " Adding Account(s)\n"),
        ],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let created = b
        .create_resource(CreateResource {
            backend_id: "a_run".into(),
            resource: ctx(),
            limits: Limits::from([("cpu".into(), 2)]),
            ..CreateResource::default()
        })
        .await
        .unwrap();
    assert_eq!(created.resource.limits["cpu"], 2);
    let seen = runner.seen.lock().unwrap().clone();
    let add = seen
        .iter()
        .find(|l| l.contains("add account a_run"))
        .unwrap();
    assert!(
        add.contains("GrpTRESMins=cpu=120000") && add.contains("parent=p_proj"),
        "{add}"
    );

    let failing = Arc::new(Scripted {
        answers: vec![
            ("show account withassoc", 0, OWNED_RUN),
            ("modify account", 1, " Unknown QOS 'x'\n"),
        ],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({"qos_paused": "x"})), failing);
    let err = b
        .set_resource_access("a_run", AccessLevel::Paused)
        .await
        .unwrap_err();
    assert_eq!(err.reason, "BACKEND_COMMAND_FAILED");
    assert!(err.message.contains("Unknown QOS"), "{}", err.message);
}

#[tokio::test]
async fn a_down_slurmdbd_is_unavailable_not_a_failed_order() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            1,
            "sacctmgr: error: Problem talking to the database: Connection refused\n",
        )],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner);
    let err = b.get_resource("a_run").await.unwrap_err();
    assert_eq!(err.reason, "BACKEND_NOT_READY", "{err:?}");
}

#[tokio::test]
async fn mapped_components_convert_limits_forward_and_usage_back() {
    let settings = base(serde_json::json!({"components": {
        "node_hours": {"label": "Node hours", "measured_unit": "h", "accounting_type": "limit",
                       "target_components": {"cpu": {"factor": 5}, "mem": {"factor": 10}}}
    }}));
    let runner = Arc::new(Scripted {
        answers: vec![
            ("list tres", 0, "cpu||1\nmem||2\n"),
            ("show account withassoc", 0, OWNED_RUN),
            ("sacct", 0, "a_run|cpu=1,mem=1M|08:20:00|alice\n"),
        ],
        ..Default::default()
    });
    let b = backend(settings, runner.clone());
    b.set_resource_limits("a_run", Limits::from([("node_hours".into(), 100)]), None)
        .await
        .unwrap();
    let seen = runner.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("set GrpTRESMins=cpu=500,mem=1000")),
        "{seen:?}"
    );
    let report = b
        .usage_report(UsageQuery {
            backend_ids: vec!["a_run".into()],
            period: None,
            timezone: None,
        })
        .await
        .unwrap();
    // 500 cpu-minutes / 5 + 500 MB-minutes / 10 = 150 node hours.
    assert_eq!(report[0].users["alice"]["node_hours"], 150.0);
}

#[test]
fn prepaid_months_count_calendar_months_and_a_started_one() {
    let at = |s: &str| -> Option<std::time::SystemTime> {
        Some(s.parse::<jiff::Timestamp>().unwrap().into())
    };
    let mut r = ctx();
    r.created = at("2026-01-15T00:00:00Z");
    r.end_date = at("2026-04-20T00:00:00Z");
    assert_eq!(prepaid_months(Some(&r)), 4);
    r.end_date = at("2026-04-10T00:00:00Z");
    assert_eq!(prepaid_months(Some(&r)), 3);
    r.end_date = at("2026-01-10T00:00:00Z");
    assert_eq!(prepaid_months(Some(&r)), 1);
    assert_eq!(prepaid_months(None), 1);
    let _ = BTreeMap::<String, i64>::new();
}

#[tokio::test]
async fn project_directories_and_partitions_shape_the_commands() {
    let runner = Arc::new(Scripted {
        answers: vec![("list tres", 0, "cpu||1\n")],
        ..Default::default()
    });
    let b = backend(
        base(serde_json::json!({
            "partitions": ["gpu", "cpu"],
            "project_directory": {"enabled": true, "base_path": "/srv/projects", "owner": "root"}
        })),
        runner.clone(),
    );
    b.create_resource(CreateResource {
        backend_id: "a_run".into(),
        resource: ctx(),
        users: vec![User::named("alice")],
        ..CreateResource::default()
    })
    .await
    .unwrap();
    let seen = runner.seen.lock().unwrap().clone();
    for want in [
        "mkdir -p /srv/projects/a_run",
        "chmod 770 /srv/projects/a_run",
        "chmod g+s /srv/projects/a_run",
        "chown root:a_run /srv/projects/a_run",
        "setfacl -R -m group:a_run:rwx,d:group:a_run:rwx /srv/projects/a_run",
    ] {
        assert!(seen.iter().any(|l| l == want), "{want} not in {seen:?}");
    }
    assert!(
        seen.iter().any(|l| l.contains("add user alice account=a_run") && l.contains("Partitions=cpu,gpu")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn home_directory_quotas_follow_the_provider() {
    let runner = Arc::new(Scripted::default());
    let b = backend(
        base(serde_json::json!({
            "homedir_base_path": "/nonexistent-homes",
            "homedir_quota": {"provider": "xfs", "mount_point": "/home", "block_softlimit": "9g", "block_hardlimit": "10g"}
        })),
        runner.clone(),
    );
    b.create_home_directories(vec!["alice".into()], None)
        .await
        .unwrap();
    let seen = runner.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"mkhomedir_helper alice 0077".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"xfs_quota -x -c limit -u bsoft=9g bhard=10g alice /home".to_owned()),
        "{seen:?}"
    );
}

#[test]
fn unsafe_or_unsupported_settings_are_refused() {
    let bad = base(
        serde_json::json!({"project_directory": {"enabled": true, "base_path": "relative/path"}}),
    );
    assert!(
        SlurmSettings::parse(bad)
            .unwrap_err()
            .to_string()
            .contains("base_path")
    );
    let bad = base(
        serde_json::json!({"homedir_quota": {"provider": "xfs", "mount_point": "/home; rm -rf /"}}),
    );
    assert!(SlurmSettings::parse(bad).is_err());
    // LDAP settings are strict: the username backend's keys of the
    // original, an inline password or a plain URL are refused.
    let ldap = |extra: serde_json::Value| {
        let mut l = serde_json::json!({
            "uri": "ldap://ldap.example", "bind_dn": "cn=admin,dc=x", "base_dn": "dc=x",
            "bind_password_env": "LDAP_PASSWORD"
        });
        for (k, v) in extra.as_object().unwrap() {
            l[k] = v.clone();
        }
        base(serde_json::json!({ "ldap": l }))
    };
    assert!(SlurmSettings::parse(ldap(serde_json::json!({}))).is_ok());
    for (extra, key) in [
        (serde_json::json!({"people_ou": "ou=People"}), "people_ou"),
        (
            serde_json::json!({"bind_password": "secret"}),
            "bind_password",
        ),
        (serde_json::json!({"uri": "http://x"}), "uri"),
        (
            serde_json::json!({"gid_range_start": 5, "gid_range_end": 1}),
            "gid_range",
        ),
    ] {
        let e = SlurmSettings::parse(ldap(extra)).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[tokio::test]
async fn waldur_component_fields_are_described_and_unknown_component_keys_refused() {
    let settings = base(serde_json::json!({"components": {"cpu": {
        "label": "CPU", "measured_unit": "k-Hours", "accounting_type": "limit",
        "description": "CPU time", "min_value": 1, "max_value": 500, "default_limit": 10,
        "limit_period": "total", "article_code": "HPC-CPU", "max_renewal_duration": 12
    }}}));
    let b = backend(settings, Arc::new(Scripted::default()));
    let c = &b.components().await.unwrap()[0];
    assert_eq!(c.description, "CPU time");
    assert_eq!((c.min_value, c.max_value), (Some(1.0), Some(500.0)));
    assert_eq!(c.default_limit, Some(10.0));
    assert_eq!(c.limit_period(), LimitPeriod::Total);
    assert_eq!(c.article_code, "HPC-CPU");
    assert_eq!(c.max_renewal_duration, Some(12));

    let typo = base(serde_json::json!({"components": {"cpu": {
        "label": "CPU", "measured_unit": "h", "accounting_type": "limit", "max_vaule": 5
    }}}));
    let err = SlurmSettings::parse(typo).unwrap_err().to_string();
    assert!(err.contains("components.cpu.max_vaule"), "{err}");
    let upside_down = base(serde_json::json!({"components": {"cpu": {
        "label": "CPU", "measured_unit": "h", "accounting_type": "limit",
        "min_value": 9, "max_value": 1
    }}}));
    assert!(SlurmSettings::parse(upside_down).is_err());
}

fn seen(runner: &Scripted) -> Vec<String> {
    runner.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn customer_project_and_hand_made_accounts_are_never_changed() {
    for (row, why) in [
        (
            "p_proj|p_proj|c_cust||||normal||climate\n",
            "project account",
        ),
        ("c_cust|c_cust|root||||normal||uni\n", "customer account"),
        (
            "a_mine|physics|root||||normal||by hand\n",
            "hand-made account",
        ),
        (
            "other_run|p_proj|p_proj||||normal||x [waldur]\n",
            "outside the prefix",
        ),
    ] {
        let account = row.split('|').next().unwrap().to_owned();
        let runner = Arc::new(Scripted {
            answers: vec![("show account withassoc", 0, row)],
            ..Default::default()
        });
        let b = backend(
            base(serde_json::json!({"qos_paused": "hold"})),
            runner.clone(),
        );
        let e = b
            .delete_resource(DeleteResource {
                backend_id: account.clone(),
                mode: DeletionMode::Hard,
                resource: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{why}: {e:?}");
        let e = b
            .set_resource_access(&account, AccessLevel::Paused)
            .await
            .unwrap_err();
        assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{why}: {e:?}");
        let e = b
            .remove_users(&account, vec!["alice".into()])
            .await
            .unwrap_err();
        assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{why}: {e:?}");
        let writes: Vec<String> = seen(&runner)
            .into_iter()
            .filter(|l| l.contains("--immediate") || l.starts_with("scancel"))
            .collect();
        assert!(writes.is_empty(), "{why}: {writes:?}");
    }
}

#[tokio::test]
async fn an_unmarked_account_of_the_original_agent_is_adopted_before_its_first_change() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            0,
            "a_run|p_proj|p_proj||||normal||weather run\n",
        )],
        ..Default::default()
    });
    let b = backend(
        base(serde_json::json!({"qos_paused": "hold"})),
        runner.clone(),
    );
    assert!(b.get_resource("a_run").await.is_ok(), "readable as it is");
    assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
    b.set_resource_access("a_run", AccessLevel::Paused)
        .await
        .unwrap();
    let writes: Vec<String> = seen(&runner)
        .into_iter()
        .filter(|l| l.contains("--immediate"))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes[0].contains("set description=weather run [waldur] where account=a_run"),
        "{writes:?}"
    );
    assert!(writes[1].contains("set qos=hold"), "{writes:?}");

    // With adoption off, the same account is refused.
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            0,
            "a_run|p_proj|p_proj||||normal||weather run\n",
        )],
        ..Default::default()
    });
    let b = backend(
        base(serde_json::json!({"qos_paused": "hold", "ownership": {"adopt_unmarked": "never"}})),
        runner,
    );
    let e = b
        .set_resource_access("a_run", AccessLevel::Paused)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("waldur-backend-server adopt"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn an_allocation_of_another_waldur_resource_is_already_taken() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            0,
            "a_run|p_proj|p_proj||||normal||run [waldur:0f0f0000000000000000000000000001]\n",
        )],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let e = b
        .create_resource(CreateResource {
            backend_id: "a_run".into(),
            resource: ctx(),
            ..CreateResource::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_ALREADY_EXISTS", "{e:?}");
    assert!(
        e.message.contains("0f0f0000000000000000000000000001"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn ids_with_upper_case_or_non_ascii_letters_are_refused_not_folded() {
    let b = backend(base(serde_json::json!({})), Arc::new(Scripted::default()));
    for id in ["A_run", "a_\u{212a}un", "a_rün"] {
        let e = b.get_resource(id).await.unwrap_err();
        assert_eq!(e.reason, "INVALID_FIELD", "{id}: {e:?}");
        assert_eq!(e.metadata["field"], "backend_id");
        let e = b
            .create_resource(CreateResource {
                backend_id: id.into(),
                resource: ctx(),
                ..CreateResource::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.reason, "INVALID_FIELD", "{id}: {e:?}");
    }
    // GenerateBackendId folds ASCII as SLURM would, but no other letter.
    assert_eq!(b.generate_backend_id("Run", None).unwrap(), "a_run");
    assert!(b.generate_backend_id("\u{212a}elvin", None).is_err());
}

#[tokio::test]
async fn limits_that_cannot_be_represented_are_refused_not_clamped() {
    let runner = Arc::new(Scripted {
        answers: vec![("show account withassoc", 0, OWNED_RUN)],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let e = b
        .set_resource_limits("a_run", Limits::from([("cpu".into(), i64::MAX / 2)]), None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, "INVALID_FIELD", "{e:?}");
    assert!(e.message.contains("cannot be represented"), "{}", e.message);
    let odd = backend(
        base(
            serde_json::json!({"components": {"cpu": {"label": "CPU", "measured_unit": "h",
            "unit_factor": 0.5, "accounting_type": "limit"}}}),
        ),
        runner.clone(),
    );
    let e = odd
        .set_resource_limits("a_run", Limits::from([("cpu".into(), 3)]), None)
        .await
        .unwrap_err();
    assert!(e.message.contains("read back as 2"), "{}", e.message);
    assert!(
        seen(&runner).iter().all(|l| !l.contains("GrpTRESMins=")),
        "nothing written"
    );
}

#[tokio::test]
async fn a_bar_in_a_description_cannot_shift_columns_and_a_short_row_is_not_absence() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            0,
            "a_run|p_proj|p_proj||||normal||lab | gpu [waldur:00000000000000000000000000000abc]\na_run|p_proj||alice|||||\n",
        )],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner);
    let info = b.get_resource("a_run").await.unwrap();
    assert_eq!(info.users, vec!["alice"]);
    assert!(info.description.starts_with("lab | gpu"), "{info:?}");

    let short = Arc::new(Scripted {
        answers: vec![("show account withassoc", 0, "a_run|p_proj|p_proj\n")],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), short.clone());
    let e = b
        .delete_resource(DeleteResource {
            backend_id: "a_run".into(),
            mode: DeletionMode::Hard,
            resource: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, "BACKEND_NOT_READY", "{e:?}");
    assert!(seen(&short).iter().all(|l| !l.contains("--immediate")));
}

#[tokio::test]
async fn an_account_bound_to_no_resource_is_not_taken_by_a_create() {
    for row in [
        "a_run|p_proj|p_proj||||normal||weather [waldur]\n",
        "a_run|p_proj|p_proj||||normal||weather run\n",
    ] {
        let runner = Arc::new(Scripted {
            answers: vec![("show account withassoc", 0, row)],
            ..Default::default()
        });
        let b = backend(base(serde_json::json!({})), runner.clone());
        let e = b
            .create_resource(CreateResource {
                backend_id: "a_run".into(),
                resource: ctx(),
                ..CreateResource::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.reason, "RESOURCE_ALREADY_EXISTS", "{row}: {e:?}");
        assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
    }
}

#[tokio::test]
async fn only_the_resource_the_marker_names_may_delete_the_account() {
    let runner = Arc::new(Scripted {
        answers: vec![("show account withassoc", 0, OWNED_RUN)],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let mut other = ctx();
    other.resource_uuid = "00000000-0000-0000-0000-000000000def".into();
    let e = b
        .delete_resource(DeleteResource {
            backend_id: "a_run".into(),
            mode: DeletionMode::Hard,
            resource: Some(other),
        })
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{e:?}");
    assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
}

#[tokio::test]
async fn a_hard_delete_leaves_a_project_account_it_did_not_make() {
    // The allocation sits under a department account made by hand (another
    // organisation); it goes, the department stays.
    let runner = Arc::new(Scripted {
        answers: vec![
            (
                "names=a_run",
                0,
                "a_run|p_dept|p_dept||||normal||run [waldur:00000000000000000000000000000abc]\n",
            ),
            (
                "names=p_dept",
                0,
                "p_dept|physics|root||||normal||department\n",
            ),
        ],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let d = b
        .delete_resource(DeleteResource {
            backend_id: "a_run".into(),
            mode: DeletionMode::Hard,
            resource: Some(ctx()),
        })
        .await
        .unwrap();
    assert!(d.existed);
    let removed: Vec<String> = seen(&runner)
        .into_iter()
        .filter(|l| l.contains("remove account"))
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].ends_with("name=a_run"), "{removed:?}");

    // A project account of our own shape with no other children goes too.
    let runner = Arc::new(Scripted {
        answers: vec![
            ("names=a_run", 0, OWNED_RUN),
            (
                "names=p_proj",
                0,
                "p_proj|p_proj|c_cust||||normal||climate\n",
            ),
        ],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    b.delete_resource(DeleteResource {
        backend_id: "a_run".into(),
        mode: DeletionMode::Hard,
        resource: Some(ctx()),
    })
    .await
    .unwrap();
    assert!(
        seen(&runner)
            .iter()
            .any(|l| l.contains("remove account") && l.ends_with("name=p_proj")),
        "{:?}",
        seen(&runner)
    );
}

#[tokio::test]
async fn without_an_allocation_prefix_nothing_is_adopted_unasked() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "show account withassoc",
            0,
            "run|p_proj|p_proj||||normal||weather run\n",
        )],
        ..Default::default()
    });
    let mut settings = base(serde_json::json!({"qos_paused": "hold"}));
    settings["allocation_prefix"] = "".into();
    let b = backend(settings, runner.clone());
    let e = b
        .set_resource_access("run", AccessLevel::Paused)
        .await
        .unwrap_err();
    assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{e:?}");
    assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
}

#[tokio::test]
async fn under_enforcement_the_access_level_is_read_from_grp_submit_jobs() {
    let enforced =
        || base(serde_json::json!({"qos_enforcement_enabled": true, "enforce_offering_qos": true}));
    for (submit, want) in [("", AccessLevel::Full), ("0", AccessLevel::Paused)] {
        let row: &'static str = Box::leak(
            format!(
                "a_run|p_proj|p_proj|||{submit}|normal||run [waldur:00000000000000000000000000000abc]\n"
            )
            .into_boxed_str(),
        );
        let runner = Arc::new(Scripted {
            answers: vec![("show account withassoc", 0, row)],
            ..Default::default()
        });
        let b = backend(enforced(), runner.clone());
        assert_eq!(b.get_resource("a_run").await.unwrap().access, Some(want));
        // Already there: nothing written.
        assert!(!b.set_resource_access("a_run", want).await.unwrap());
        assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
    }
}

#[tokio::test]
async fn adopt_refuses_customer_and_project_accounts_and_names_outside_the_prefix() {
    for row in [
        "p_proj|p_proj|c_cust||||normal||climate\n",
        "other|p_proj|p_proj||||normal||x\n",
    ] {
        let runner = Arc::new(Scripted {
            answers: vec![("show account withassoc", 0, row)],
            ..Default::default()
        });
        let b = backend(base(serde_json::json!({})), runner.clone());
        let name = row.split('|').next().unwrap().to_owned();
        let out = b.adopt(&[name]).await;
        let e = out[0].1.as_ref().unwrap_err();
        assert_eq!(e.reason, "RESOURCE_NOT_MANAGED", "{row}: {e:?}");
        assert!(seen(&runner).iter().all(|l| !l.contains("--immediate")));
    }
}

#[tokio::test]
async fn the_full_listing_reads_limits_and_per_user_limits_from_one_association_listing() {
    let runner = Arc::new(Scripted {
        answers: vec![
            ("list tres", 0, "cpu||1\n"),
            (
                "show account withassoc",
                0,
                "a_run|p_proj|p_proj||cpu=120000|||normal||run [waldur:00000000000000000000000000000abc]\n\
                 a_run|p_proj||alice|||normal|cpu=60000|run [waldur:00000000000000000000000000000abc]\n\
                 a_run|p_proj||bob|||normal||run [waldur:00000000000000000000000000000abc]\n",
            ),
        ],
        ..Default::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    let listing = b
        .list_resource_details(&["a_run".into(), "a_gone".into()])
        .await
        .unwrap();
    let d = &listing.details["a_run"];
    assert_eq!(d.resource.users, vec!["alice", "bob"]);
    assert_eq!(d.resource.limits["cpu"], 2);
    assert_eq!(d.user_limits["alice"]["cpu"], 1);
    assert!(!d.user_limits.contains_key("bob"));
    assert_eq!(listing.missing, vec!["a_gone".to_owned()]);
    // GetUserLimits reads the same listing.
    assert_eq!(b.get_user_limits("a_run").await.unwrap(), d.user_limits);
    let listings = seen(&runner)
        .iter()
        .filter(|l| l.contains("show account withassoc"))
        .count();
    assert_eq!(listings, 2, "one listing per call");
}

#[test]
fn only_users_left_with_the_default_account_alone_and_no_admin_level_are_released() {
    let users: Vec<String> = ["ann", "bob", "cid", "dan", "root", "eve"]
        .into_iter()
        .map(String::from)
        .collect();
    let listing = "ann|None|root\n\
                   bob|None|root\nbob|None|a_other\n\
                   cid|Operator|root\n\
                   root|Administrator|root\n\
                   eve|None|root\n";
    // dan is not listed (gone, or the listing was cut): left alone.
    assert_eq!(
        crate::members::idle_users(listing, &users, "root"),
        ["ann", "eve"]
    );
    assert!(crate::members::idle_users("", &users, "root").is_empty());
    assert!(crate::members::idle_users("garbled output", &users, "root").is_empty());
}

#[tokio::test]
async fn releasing_default_associations_lists_once_and_removes_only_the_idle_users() {
    let runner = Arc::new(Scripted {
        answers: vec![(
            "withassoc where name=",
            0,
            "ann|None|root\nbob|None|root\nbob|None|a_x\n",
        )],
        ..Scripted::default()
    });
    let b = backend(base(serde_json::json!({})), runner.clone());
    b.release_default_associations(&["ann".into(), "bob".into()])
        .await;
    let lines = seen(&runner);
    let removes: Vec<&String> = lines.iter().filter(|l| l.contains(" remove ")).collect();
    assert_eq!(removes.len(), 1, "{lines:?}");
    assert!(removes[0].contains("name=ann account=root"), "{lines:?}");

    // A failed listing removes nothing; a site that keeps them is left be.
    let failing = Arc::new(Scripted {
        answers: vec![("withassoc", 1, "slurmdbd down")],
        ..Scripted::default()
    });
    let b = backend(base(serde_json::json!({})), failing.clone());
    b.release_default_associations(&["ann".into()]).await;
    assert!(!seen(&failing).iter().any(|l| l.contains(" remove ")));
    let keeping = Arc::new(Scripted::default());
    let b = backend(
        base(serde_json::json!({"keep_default_association": true})),
        keeping.clone(),
    );
    b.release_default_associations(&["ann".into()]).await;
    assert!(seen(&keeping).is_empty());
}

#[test]
fn a_lustre_project_quota_is_set_on_the_group_gid_then_applied_to_the_directory() {
    let q: crate::settings::LustreQuota = serde_json::from_value(serde_json::json!({
        "mount_point": "/lustre", "block_softlimit": "9T", "block_hardlimit": "10T", "inode_hardlimit": "1000000"
    }))
    .unwrap();
    let joined: Vec<String> = q
        .commands(40123, "/lustre/projects/a_x")
        .into_iter()
        .map(|(p, a)| format!("{p} {}", a.join(" ")))
        .collect();
    assert_eq!(
        joined,
        [
            "lfs setquota -p 40123 -b 9T -B 10T -I 1000000 /lustre",
            "lfs project -p 40123 -r -s /lustre/projects/a_x"
        ]
    );
    // Without LDAP there is no gid to key the quota on: refused.
    let bad = base(serde_json::json!({"project_directory": {
        "enabled": true, "lustre_quota": {"block_hardlimit": "1T"}
    }}));
    let e = SlurmSettings::parse(bad).unwrap_err().to_string();
    assert!(e.contains("lustre_quota") && e.contains("ldap"), "{e}");
}
