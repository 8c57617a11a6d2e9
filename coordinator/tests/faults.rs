//! The fault matrix: the real `waldur-coordinator` and `waldur-backend-server`
//! binaries, a Waldur simulator, RabbitMQ and (when `WALDUR_SLURM_CLUSTER` is
//! set) the real SLURM cluster, driven through one fault at a time. Each row
//! creates orders, injects the fault while they are processed, lets the
//! system settle and counts what was lost: orders not done, erred or
//! duplicated on the backend, usage records lost or doubled, members
//! wrongly removed. Every loss column must be zero; the table is printed
//! (RELIABILITY.md records it) and the program fails otherwise.
//!
//! Run alone: `cargo test -p waldur-coordinator --test faults` (after
//! `cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "faults/lab.rs"]
mod lab;
mod support;

use lab::{Kind, Lab, Losses};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use waldur_sim::Fault;

const SETTLE: Duration = Duration::from_secs(60);

fn slurm_on() -> bool {
    std::env::var_os("WALDUR_SLURM_CLUSTER").is_some()
}

/// Waits until `cond` holds, failing the row with `what` after `secs`.
async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the offering's order queue has a consumer (the coordinator
/// subscribed), from RabbitMQ's management API.
async fn subscribed(offering: &str) -> bool {
    let http = reqwest::Client::new();
    let hex = offering.replace('-', "");
    let Ok(resp) = http
        .get(format!(
            "http://127.0.0.1:15672/api/queues/{}",
            waldur_sim::SIM_USER_UUID
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    else {
        return false;
    };
    let queues: Vec<serde_json::Value> = resp.json().await.unwrap_or_default();
    queues.iter().any(|q| {
        q["name"]
            .as_str()
            .is_some_and(|n| n.contains(&hex) && n.ends_with("_order"))
            && q["consumers"].as_u64().unwrap_or(0) > 0
    })
}

/// SLURM commands through wrappers: a flag file makes `sacctmgr` fail as it
/// does when slurmdbd is unreachable, or hang (only on command lines holding
/// the text the `.hang` file holds; an empty file: every call). A hanging
/// call leaves `<tool>.entered` behind, so the test knows it is in one.
fn slurm_wrappers(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sacctmgr", "sacct", "scancel", "sinfo"] {
        let script = format!(
            "#!/bin/sh\nif [ -e {flags}/{tool}.fail ]; then echo 'sacctmgr: error: Problem talking to the database: Connection refused' >&2; exit 1; fi\nif [ -e {flags}/{tool}.hang ]; then case \" $* \" in *\"$(cat {flags}/{tool}.hang)\"*) touch {flags}/{tool}.entered; sleep 20;; esac; fi\nexec /usr/bin/{tool} \"$@\"\n",
            flags = dir.display()
        );
        let path = bin.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    bin
}

fn slurm_kind(tag: &str) -> (Kind, tempfile::TempDir) {
    let flags = tempfile::tempdir().unwrap();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let prefix = format!("f{tag}{:x}_", millis % 0xfffff);
    let bin = slurm_wrappers(flags.path());
    (Kind::Slurm { prefix, bin }, flags)
}

fn waldur_fault(
    method: &str,
    path: &str,
    status: Option<u16>,
    body: Option<&str>,
    times: u32,
) -> Fault {
    Fault {
        method: method.into(),
        path_contains: path.into(),
        status,
        body: body.map(str::to_owned),
        times: Some(times),
        ..Default::default()
    }
}

/// Publishes raw bytes (base64 `payload`) to the offering's order event
/// queue through RabbitMQ's management API, `times` times: bodies no
/// Waldur would send, for example not UTF-8.
async fn publish_raw_order_event(offering: &str, payload: &str, times: usize) {
    let http = reqwest::Client::new();
    let vhost = waldur_sim::SIM_USER_UUID;
    let hex = offering.replace('-', "");
    let queues: Vec<serde_json::Value> = http
        .get(format!("http://127.0.0.1:15672/api/queues/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue = queues
        .iter()
        .filter_map(|q| q["name"].as_str())
        .find(|n| n.contains(&hex) && n.ends_with("_order"))
        .expect("the order queue")
        .to_owned();
    for _ in 0..times {
        http.post(format!(
            "http://127.0.0.1:15672/api/exchanges/{vhost}/amq.default/publish"
        ))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"properties": {}, "routing_key": queue, "payload": payload, "payload_encoding": "base64"}))
        .send()
        .await
        .unwrap();
    }
}

/// A row: runs `f` in a fresh lab and settles.
async fn row<F, Fut>(name: &str, kind: Kind, events: bool, f: F) -> (String, Losses, Duration)
where
    F: FnOnce(Lab) -> Fut,
    Fut: std::future::Future<Output = Lab>,
{
    let started = Instant::now();
    let lab = Lab::start(kind, events).await;
    let mut lab = f(lab).await;
    lab.sim.clear_faults();
    if lab.coordinator.is_none() {
        lab.start_coordinator();
    }
    let losses = lab.settle().await;
    if losses.lost() > 0 {
        for log in ["coordinator", "backend"] {
            let text = std::fs::read_to_string(lab.dir.path().join(format!("{log}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- {name}: last lines of the {log} log");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    lab.clean_up().await;
    (name.to_owned(), losses, started.elapsed())
}

/// Waldur faults while three orders are processed.
async fn waldur(name: &str, faults: Vec<Fault>) -> (String, Losses, Duration) {
    row(name, Kind::Example, false, |mut lab| async move {
        let injected: usize = faults.iter().map(|f| f.times.unwrap_or(1) as usize).sum();
        for f in faults {
            lab.sim.add_fault(f);
        }
        for i in 0..3 {
            lab.order(&format!("{name} {i}"));
        }
        lab.start_coordinator();
        // The row is about what happens once every fault was served.
        until("the faults to be served", 60, || {
            lab.sim.fault_hits().len() >= injected
        })
        .await;
        lab
    })
    .await
}

/// The coordinator killed while a request to `route` is held.
async fn kill_at(
    name: &str,
    kind: Kind,
    state: &str,
    method: &str,
    route: &str,
) -> (String, Losses, Duration) {
    let (state, method, route) = (state.to_owned(), method.to_owned(), route.to_owned());
    row(name, kind, false, |mut lab| async move {
        lab.hold(&method, &route, 5_000);
        lab.order_in("killed mid order", &state);
        lab.start_coordinator();
        assert!(lab.seen(&route).await, "{route} never called");
        lab.kill_coordinator();
        lab.sim.clear_faults();
        lab
    })
    .await
}

/// The month ends while a report cycle runs (in process: the clock is
/// injected): the current period waits; afterwards each month holds exactly
/// the backend's usage of that month, once.
async fn month_change() -> (String, Losses, Duration) {
    use waldur_backend_sdk::Backend;
    use waldur_backend_sdk::types::UsageQuery;
    use waldur_coordinator::clock::ManualClock;
    let started = Instant::now();
    let clock = ManualClock::new("2026-11-30T23:59:58Z".parse().unwrap());
    let w = support::World::start(support::Options {
        clock: Some(clock.clone()),
        ..support::Options::default()
    })
    .await;
    let (resource, id) = w.provisioned("midnight").await;
    clock.tick_by(jiff::SignedDuration::from_secs(1));
    for _ in 0..3 {
        w.report().await;
    }
    let records = w.sim.component_usages(&resource);
    let (mut lost, mut doubled) = (0, 0);
    // No month holds two records of a component, and the month that is
    // current at the end holds the backend's current usage. (The example
    // backend cannot say what November looked like while it was current, so
    // November's amounts are not compared.)
    for period in ["2026-11-01", "2026-12-01"] {
        for k in ["cpu", "mem"] {
            let n = records
                .iter()
                .filter(|r| r.billing_period == period && r.component_type == k)
                .count();
            doubled += n.saturating_sub(1);
        }
    }
    let query = UsageQuery {
        backend_ids: vec![id.clone()],
        period: None,
        timezone: None,
    };
    let truth = w.backend.usage_report(query).await.unwrap();
    for (k, v) in &truth[0].total {
        let want = format!("{v:.2}");
        let has = records
            .iter()
            .find(|r| r.billing_period == "2026-12-01" && &r.component_type == k)
            .map(|r| r.usage.as_str());
        if *v != 0.0 && has != Some(want.as_str()) {
            lost += 1;
        }
    }
    let losses = Losses {
        orders: 1,
        done: 1,
        usage_lost: lost,
        usage_doubled: doubled,
        ..Losses::default()
    };
    (
        "month changes between reading and writing usage".into(),
        losses,
        started.elapsed(),
    )
}

fn print(rows: &[(String, Losses, Duration)]) -> bool {
    println!(
        "\n{:<52} {:>6} {:>5} {:>6} {:>9} {:>11} {:>11} {:>14} {:>15} {:>8}",
        "fault",
        "orders",
        "done",
        "erred",
        "not done",
        "duplicated",
        "usage lost",
        "usage doubled",
        "members removed",
        "seconds"
    );
    let mut ok = true;
    for (name, l, took) in rows {
        ok &= l.lost() == 0;
        println!(
            "{:<52} {:>6} {:>5} {:>6} {:>9} {:>11} {:>11} {:>14} {:>15} {:>8.1}",
            name,
            l.orders,
            l.done,
            l.erred,
            l.not_done,
            l.duplicated,
            l.usage_lost,
            l.usage_doubled,
            l.members_removed,
            took.as_secs_f64()
        );
    }
    ok
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut rows = Vec::new();
    macro_rules! run {
        ($name:expr, $e:expr) => {
            if want($name) {
                eprintln!("fault matrix: {}", $name);
                rows.push($e.await);
            }
        };
    }
    run!(
        "waldur 5xx on writes",
        waldur(
            "waldur 5xx on writes",
            vec![waldur_fault("POST", "marketplace-", Some(503), None, 6)]
        )
    );
    run!(
        "waldur 429 on reads",
        waldur(
            "waldur 429 on reads",
            vec![waldur_fault("GET", "marketplace-", Some(429), None, 6)]
        )
    );
    run!(
        "waldur timeouts (answers after the client gave up)",
        waldur(
            "waldur timeouts (answers after the client gave up)",
            vec![Fault {
                method: "GET".into(),
                path_contains: "marketplace-provider-resources/".into(),
                latency_ms: 4_000,
                times: Some(3),
                ..Default::default()
            }]
        )
    );
    run!(
        "waldur HTML maintenance page with 200",
        waldur(
            "waldur HTML maintenance page with 200",
            vec![waldur_fault(
                "POST",
                "set_backend_id",
                None,
                Some("<html>down for maintenance</html>"),
                4
            )]
        )
    );
    run!(
        "waldur cut JSON and empty bodies",
        waldur(
            "waldur cut JSON and empty bodies",
            vec![
                waldur_fault(
                    "GET",
                    "marketplace-orders/",
                    None,
                    Some("[{\"uuid\": \"0f"),
                    2
                ),
                waldur_fault("GET", "/team/", None, Some(""), 2),
            ]
        )
    );
    run!(
        "waldur empty lists (team, offering users)",
        row(
            "waldur empty lists (team, offering users)",
            Kind::Example,
            false,
            |mut lab| async move {
                for i in 0..3 {
                    lab.order(&format!("empty lists {i}"));
                }
                lab.start_coordinator();
                let orders: Vec<String> = lab.orders.iter().map(|(o, _)| o.clone()).collect();
                until("the orders to be done", 60, || {
                    orders
                        .iter()
                        .all(|o| lab.sim.order_state(o).as_deref() == Some("done"))
                })
                .await;
                lab.sim
                    .add_fault(waldur_fault("GET", "/team/", None, Some("[]"), 30));
                lab.sim.add_fault(waldur_fault(
                    "GET",
                    "marketplace-offering-users/",
                    None,
                    Some("[]"),
                    30,
                ));
                // Membership cycles ran on the empty answers: both were
                // served more than once.
                until("membership cycles on empty answers", 60, || {
                    let hits = lab.sim.fault_hits();
                    hits.iter().filter(|p| p.contains("/team/")).count() >= 3
                        && hits.iter().filter(|p| p.contains("offering-users")).count() >= 2
                })
                .await;
                lab
            }
        )
    );
    run!(
        "connection dropped mid-answer",
        waldur(
            "connection dropped mid-answer",
            vec![Fault {
                path_contains: "marketplace-".into(),
                drop: true,
                times: Some(5),
                ..Default::default()
            }]
        )
    );
    run!(
        "coordinator killed after evaluating (before approve)",
        kill_at(
            "coordinator killed after evaluating (before approve)",
            Kind::Example,
            "pending-provider",
            "POST",
            "approve_by_provider"
        )
    );
    run!(
        "coordinator killed before done",
        kill_at(
            "coordinator killed before done",
            Kind::Example,
            "executing",
            "POST",
            "set_state_done"
        )
    );
    run!(
        "coordinator killed after set_backend_id",
        kill_at(
            "coordinator killed after set_backend_id",
            Kind::Example,
            "executing",
            "POST",
            "set_backend_metadata"
        )
    );
    run!(
        "rabbitmq restarted while events flow",
        row(
            "rabbitmq restarted while events flow",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for i in 0..3 {
                    lab.order(&format!("broker {i}"));
                }
                support::rabbitmqctl(&["stop_app"]);
                for i in 3..5 {
                    lab.order(&format!("broker {i}"));
                }
                support::rabbitmqctl(&["start_app"]);
                lab
            }
        )
    );
    run!(
        "stomp heartbeats lost (coordinator frozen 8 s)",
        row(
            "stomp heartbeats lost (coordinator frozen 8 s)",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                lab.signal_coordinator("-STOP");
                for i in 0..3 {
                    lab.order(&format!("frozen {i}"));
                }
                tokio::time::sleep(Duration::from_secs(8)).await;
                lab.signal_coordinator("-CONT");
                lab
            }
        )
    );
    run!(
        "poison events (not UTF-8, not an object, a path as id)",
        row(
            "poison events (not UTF-8, not an object, a path as id)",
            Kind::Example,
            true,
            |mut lab| async move {
                lab.start_coordinator();
                let offering = lab.scenario.offering_uuid.clone();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !subscribed(&offering).await {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never subscribed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                lab.sim.emit_raw("order", &offering, json!("not an object"));
                lab.sim.emit_raw(
                    "order",
                    &offering,
                    json!({"order_uuid": "../../etc/passwd"}),
                );
                publish_raw_order_event(&offering, "//79", 8).await;
                for i in 0..3 {
                    lab.order(&format!("after poison {i}"));
                }
                lab
            }
        )
    );
    if slurm_on() {
        let (kind, flags) = slurm_kind("a");
        run!(
            "coordinator killed after the slurm account was made",
            kill_at(
                "coordinator killed after the slurm account was made",
                kind,
                "executing",
                "POST",
                "set_backend_id"
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("b");
        let dir = flags.path().to_owned();
        run!(
            "backend server killed mid-create (slurm)",
            row(
                "backend server killed mid-create (slurm)",
                kind,
                false,
                |mut lab| async move {
                    // Killed while `sacctmgr add account` of the allocation
                    // runs: the account may or may not exist afterwards.
                    std::fs::write(dir.join("sacctmgr.hang"), " add account ").unwrap();
                    lab.order("backend killed");
                    lab.start_coordinator();
                    until("sacctmgr add account", 60, || {
                        dir.join("sacctmgr.entered").try_exists().unwrap_or(false)
                    })
                    .await;
                    lab.kill_backend();
                    std::fs::remove_file(dir.join("sacctmgr.hang")).unwrap();
                    lab.start_backend().await;
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("c");
        let dir = flags.path().to_owned();
        run!(
            "sacctmgr failing for 6 s",
            row(
                "sacctmgr failing for 6 s",
                kind,
                false,
                |mut lab| async move {
                    std::fs::write(dir.join("sacctmgr.fail"), "").unwrap();
                    for i in 0..2 {
                        lab.order(&format!("sacctmgr failing {i}"));
                    }
                    lab.start_coordinator();
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    std::fs::remove_file(dir.join("sacctmgr.fail")).unwrap();
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("d");
        let dir = flags.path().to_owned();
        run!(
            "sacctmgr hanging for 20 s",
            row(
                "sacctmgr hanging for 20 s",
                kind,
                false,
                |mut lab| async move {
                    std::fs::write(dir.join("sacctmgr.hang"), "").unwrap();
                    lab.order("sacctmgr hanging");
                    lab.start_coordinator();
                    until("a hanging sacctmgr", 60, || {
                        dir.join("sacctmgr.entered").try_exists().unwrap_or(false)
                    })
                    .await;
                    std::fs::remove_file(dir.join("sacctmgr.hang")).unwrap();
                    lab
                }
            )
        );
        drop(flags);
        let (kind, flags) = slurm_kind("e");
        run!(
            "slurmdbd down for 8 s",
            row("slurmdbd down for 8 s", kind, false, |mut lab| async move {
                // Where deploy/services.sh keeps its state.
                let run = std::env::var("WALDUR_RUN")
                    .unwrap_or_else(|_| "/var/tmp/waldur-services".into());
                let pid_file = format!("{run}/run/slurm/slurmdbd.pid");
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
                assert!(!pid.trim().is_empty(), "no slurmdbd pid in {pid_file}");
                assert!(
                    Command::new("kill")
                        .arg(pid.trim())
                        .status()
                        .unwrap()
                        .success()
                );
                let sacctmgr_ok = || {
                    Command::new("sacctmgr")
                        .args(["-n", "show", "cluster"])
                        .output()
                        .is_ok_and(|o| o.status.success())
                };
                until("sacctmgr to fail with slurmdbd down", 30, || !sacctmgr_ok()).await;
                for i in 0..2 {
                    lab.order(&format!("slurmdbd down {i}"));
                }
                lab.start_coordinator();
                tokio::time::sleep(Duration::from_secs(8)).await;
                Command::new("/usr/sbin/slurmdbd").status().unwrap();
                until("slurmdbd to come back", 60, sacctmgr_ok).await;
                lab
            })
        );
        drop(flags);
    } else {
        eprintln!("fault matrix: WALDUR_SLURM_CLUSTER is not set; the SLURM rows are skipped");
    }
    run!(
        "month changes between reading and writing usage",
        month_change()
    );
    let ok = print(&rows);
    if !ok {
        eprintln!("fault matrix: losses above");
        std::process::exit(1);
    }
}
