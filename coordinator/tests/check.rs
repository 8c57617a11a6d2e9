//! `waldur-coordinator check` on the usual mistakes: each failure names the
//! setting to fix, and a correct config passes.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{Options, TOKEN, World};
use waldur_backend_sdk::Backend;

fn config(w: &World, api: &str, server_name: &str) -> String {
    format!(
        r#"
version: 1
timeouts: {{waldur_seconds: 3, backend_read_seconds: 3, backend_connect_seconds: 2}}
retry: {{max_attempts: 1}}
{backends}offerings:
  - name: HPC
    offering_uuid: {offering}
    waldur: {{api_url: "{api}", token_env: WALDUR_TOKEN}}
    backends: {{orders: hpc}}
"#,
        backends = support::backends_yaml(w.dir.path(), w.port).replace(
            "server_name: localhost",
            &format!("server_name: {server_name}")
        ),
        offering = w.scenario.offering_uuid,
    )
}

fn check(w: &World, text: &str, token: &str) -> (bool, String) {
    command(w, "check", text, token)
}

fn command(w: &World, sub: &str, text: &str, token: &str) -> (bool, String) {
    let path = w
        .dir
        .path()
        .join(format!("c{}.yaml", rand::random::<u32>()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
        .args([sub, "--config"])
        .arg(&path)
        .env("WALDUR_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_setting_behind_each_usual_mistake() {
    let w = World::start(Options::default()).await;
    let api = format!("http://{}/api/", w.sim_addr);
    let run = |text: String, token: &'static str| {
        let w = &w;
        tokio::task::block_in_place(move || check(w, &text, token))
    };

    let (ok, out) = run(config(&w, &api, "localhost"), TOKEN);
    assert!(ok, "{out}");
    assert!(out.contains("PASS backend hpc: mutual TLS ok"), "{out}");
    // The test world's backend is the in-memory example: said loudly.
    assert!(
        out.contains("WARN backend hpc: instance hpc is the in-memory example backend"),
        "{out}"
    );

    // The backend's own self checks are lines of their own, in check and
    // in diagnostics.
    assert!(out.contains("PASS backend hpc: state:"), "{out}");
    let text = config(&w, &api, "localhost");
    let (ok, out) = tokio::task::block_in_place(|| command(&w, "diagnostics", &text, TOKEN));
    assert!(ok && out.contains("ok   backend hpc: state:"), "{out}");
    assert_eq!(
        out.matches("backend hpc: state:").count(),
        1,
        "once per backend: {out}"
    );
    assert!(!out.contains("STOMP"), "events are off: {out}");

    // With events on, the STOMP endpoint must answer: RabbitMQ's Web-STOMP
    // does, a closed port does not.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let with_events = |url: &str| {
        config(&w, &api, "localhost").replace(
            "    backends: {orders: hpc}\n",
            &format!(
                "    backends: {{orders: hpc}}\n    tasks: {{orders: true, events: true}}\n    events: {{stomp_url: '{url}'}}\n"
            ),
        )
    };
    let (ok, out) = run(with_events("ws://127.0.0.1:15674/ws"), TOKEN);
    assert!(
        ok && out.contains("PASS offering HPC: STOMP endpoint ws://127.0.0.1:15674/ws answers"),
        "{out}"
    );
    let (ok, out) = run(with_events(&format!("ws://{closed}/ws")), TOKEN);
    assert!(!ok && out.contains("(check events.stomp_url)"), "{out}");

    let (ok, out) = run(config(&w, &api, "localhost"), "wrong-token");
    assert!(
        !ok && out.contains("waldur.token_file / token_env"),
        "{out}"
    );
    assert!(!out.contains("wrong-token"), "{out}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, out) = run(
        config(&w, &format!("http://{closed}/api/"), "localhost"),
        TOKEN,
    );
    assert!(!ok && out.contains("check waldur.api_url"), "{out}");

    let (ok, out) = run(config(&w, &api, "not-the-server.example"), TOKEN);
    assert!(
        !ok && out.contains("backends.hpc.endpoint, server_name and tls files"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_waldur_7_orders_and_members_work_and_what_it_lacks_is_said_not_erred() {
    let w = World::start(Options::default()).await;
    w.sim.emulate_waldur_7();
    // An order completes; its members (offering users without a state, as
    // 7.0.7 sends them) join.
    let (resource, backend_id) = w.provisioned("legacy").await;
    let mut users = w.backend.get_resource(&backend_id).await.unwrap().users;
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    // Limits that differ cannot be written back (no set_limits): skipped,
    // the resource is not marked erred, and nothing is tried again and again.
    w.sim.world().resources.values_mut().for_each(|r| {
        if r.uuid == resource {
            r.limits = std::collections::BTreeMap::from([("cpu".into(), 999)]);
        }
    });
    let registry = || {
        w.sim
            .calls()
            .iter()
            .filter(|c| c.route.starts_with("marketplace-site-agent-"))
            .count()
    };
    let mut asked = None;
    for _ in 0..3 {
        let s = w.membership().await;
        assert_eq!(s.limits_pushed, 0, "{s:?}");
        assert!(s.erred.is_empty(), "{s:?}");
        w.cycle().await;
        // Each task asks for the registry once (one 404 page), then never again.
        assert_eq!(*asked.get_or_insert(registry()), registry());
    }
    assert_ne!(w.sim.resource(&resource).unwrap().state, "Erred");
    let calls = w.sim.calls();
    let set_limits = calls
        .iter()
        .filter(|c| c.route.ends_with("set_limits/"))
        .count();
    assert!(set_limits >= 1, "set_limits was tried");

    let api = format!("http://{}/api/", w.sim_addr);
    let (ok, out) =
        tokio::task::block_in_place(|| check(&w, &config(&w, &api, "localhost"), TOKEN));
    assert!(ok, "{out}");
    assert!(
        out.contains("Waldur Mastermind 7.0.7 (this agent is tested with 7.0.7 to 8.0.5)"),
        "{out}"
    );
    assert!(
        out.contains("WARN offering HPC: Waldur 7.0.7 lacks set_limits"),
        "{out}"
    );
    assert!(out.contains("lacks agent registration"), "{out}");
}
