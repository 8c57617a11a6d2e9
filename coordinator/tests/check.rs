//! `waldur-coordinator check` on the usual mistakes: each failure names the
//! setting to fix, and a correct config passes.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{Options, TOKEN, World};

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
    let path = w
        .dir
        .path()
        .join(format!("c{}.yaml", rand::random::<u32>()));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
        .args(["check", "--config"])
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
