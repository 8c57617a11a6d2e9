//! The dial-out tunnel on its own: backend servers (the SDK's server with
//! `connect:`) dial the coordinator's tunnel listener over mutual TLS. A
//! certificate serves only the backends it is bound to, a newer connection
//! replaces an older one, calls wait while no server is connected, a
//! restarted coordinator is dialed again, and the conformance suite passes
//! through the tunnel. (The whole end-to-end suite also runs in dial-out
//! mode: `WALDUR_TEST_TUNNEL=1`, see `support`.)

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use waldur_backend_example::ExampleBackend;
use waldur_backend_sdk::{Bound, Registry};
use waldur_coordinator::backend::{BackendHandle, TunnelHub};
use waldur_coordinator::config::Config;
use waldur_coordinator::secret::MapEnv;

/// A coordinator config with backends `a` and `b` through the tunnel on
/// `port`; the server certificate (`localhost`) may serve only `a`.
fn config(dir: &Path, port: u16) -> Config {
    let text = format!(
        "version: 1\ntimeouts: {{backend_read_seconds: 2, backend_connect_seconds: 1}}\ntunnel:\n  listen: 127.0.0.1:{port}\n  tls: {{ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key}}\n  allowed: {{localhost: [a], nobody.example.org: [b]}}\nbackends:\n  a: {{endpoint: tunnel, instance: hpc}}\n  b: {{endpoint: tunnel, instance: hpc}}\nofferings:\n  - name: HPC\n    offering_uuid: 0000000000000000000000000000000a\n    waldur: {{api_url: 'http://127.0.0.1:9/api/', token_env: T}}\n    backends: {{orders: a}}\n",
        d = dir.display()
    );
    Config::parse(&text, Path::new("c.yaml"), &MapEnv::from([("T", "token")])).unwrap()
}

fn hub(config: &Config) -> Arc<TunnelHub> {
    TunnelHub::bind(
        config.tunnel.as_ref().unwrap(),
        waldur_coordinator::runtime::offering::tunneled_backends(config),
    )
    .unwrap()
}

fn handle(config: &Config, hub: &Arc<TunnelHub>, name: &str) -> BackendHandle {
    BackendHandle::tunneled(name, &config.backends[name], &config.timeouts, hub.clone())
}

/// A backend server dialing the tunnel on `port`, claiming `backends`.
async fn dialer(dir: &Path, port: u16, backends: &str) -> Bound {
    let text = format!(
        "version: 1\nconnect: {{coordinator: 'https://127.0.0.1:{port}', server_name: coordinator.test, backends: [{backends}], max_backoff_seconds: 1}}\ntls:\n  ca: {d}/ca.pem\n  cert: {d}/server.pem\n  key: {d}/server.key\n  allowed_clients: [coordinator.test]\ninstances:\n  - name: hpc\n    type: example\n",
        d = dir.display()
    );
    let config = waldur_backend_sdk::config::ServerConfig::parse(&text, Path::new("s")).unwrap();
    waldur_backend_sdk::spawn(
        &config,
        Registry::single("hpc", Arc::new(ExampleBackend::default())).unwrap(),
    )
    .await
    .unwrap()
}

async fn until_connected(hub: &TunnelHub, name: &str, reconnects: u64) {
    support::until(
        &format!("{name} connected"),
        Duration::from_secs(20),
        || {
            let s = hub.status(name);
            s.connected_since.is_some() && s.reconnects >= reconnects
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_as_unavailable_until_the_server_dials_in_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let hub = hub(&config);
    let a = handle(&config, &hub, "a");
    let e = a.probe().await.unwrap_err();
    assert_eq!(e.code, tonic::Code::Unavailable, "{e}");
    assert!(e.message.contains("not connected"), "{e}");
    assert_eq!(a.link_status().unwrap().connected_since, None);

    let _server = dialer(dir.path(), port, "a").await;
    until_connected(&hub, "a", 0).await;
    assert!(a.probe().await.unwrap().ready);
    let status = a.link_status().unwrap();
    assert_eq!(status.peer.as_deref(), Some("localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_allowed_for_one_backend_that_claims_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let hub = hub(&config);
    // The same certificate, claiming b (which it may not serve) and then a.
    let _impostor = dialer(dir.path(), port, "b").await;
    let _honest = dialer(dir.path(), port, "a").await;
    until_connected(&hub, "a", 0).await;
    assert_eq!(hub.status("b").connected_since, None);
    let b = handle(&config, &hub, "b");
    assert_eq!(b.probe().await.unwrap_err().code, tonic::Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_replaces_the_older_and_a_restarted_server_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let hub = hub(&config);
    let a = handle(&config, &hub, "a");
    let first = dialer(dir.path(), port, "a").await;
    until_connected(&hub, "a", 0).await;
    let _second = dialer(dir.path(), port, "a").await;
    until_connected(&hub, "a", 1).await;
    assert!(a.probe().await.unwrap().ready);
    // The first server stops; the second serves (once it has dialed again,
    // if the first had just replaced it).
    first.shutdown().await.unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if a.probe().await.is_ok_and(|p| p.ready) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the remaining server never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_is_dialed_again_by_every_connected_server() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let first = hub(&config);
    let _server = dialer(dir.path(), port, "a").await;
    until_connected(&first, "a", 0).await;
    // The coordinator stops: its listener and connections go.
    drop(first);
    let mut again = None;
    support::until("the port is free again", Duration::from_secs(10), || {
        again = TunnelHub::bind(
            config.tunnel.as_ref().unwrap(),
            vec!["a".into(), "b".into()],
        )
        .ok();
        again.is_some()
    })
    .await;
    let again = again.unwrap();
    until_connected(&again, "a", 0).await;
    assert!(handle(&config, &again, "a").probe().await.unwrap().ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let hub = hub(&config);
    let _server = dialer(dir.path(), port, "a").await;
    until_connected(&hub, "a", 0).await;
    let fixtures = waldur_backend_conformance::Fixtures {
        instance: "hpc".into(),
        ..waldur_backend_conformance::Fixtures::default()
    };
    let report = waldur_backend_conformance::run(hub.channel("a").unwrap(), fixtures, None).await;
    let text = report.render();
    assert_eq!(report.failed(), 0, "{text}");
    assert!(report.passed() > 30, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_servers_check_reaches_the_tunnel_and_names_a_coordinator_it_does_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let config = config(dir.path(), port);
    let hub = hub(&config);
    let check = |allowed: &str| {
        let text = format!(
            "version: 1\nconnect: {{coordinator: 'https://127.0.0.1:{port}', server_name: coordinator.test, backends: [a]}}\ntls:\n  ca: {d}/ca.pem\n  cert: {d}/server.pem\n  key: {d}/server.key\n  allowed_clients: [{allowed}]\ninstances:\n  - name: hpc\n    type: example\n",
            d = dir.path().display()
        );
        let path = dir.path().join(format!("check-{allowed}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(support::workspace_binary("waldur-backend-server"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = tokio::task::block_in_place(|| check("coordinator.test"));
    assert!(ok, "{text}");
    assert!(text.contains("PASS tunnel: reached 127.0.0.1:"), "{text}");
    assert!(
        text.contains("the coordinator is coordinator.test"),
        "{text}"
    );
    let (ok, text) = tokio::task::block_in_place(|| check("someone.else"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("coordinator.test is not in tls.allowed_clients"),
        "{text}"
    );
    // A check only looks: it never becomes the backend's connection.
    assert_eq!(hub.status("a").connected_since, None);
}
