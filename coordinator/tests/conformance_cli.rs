//! The conformance CLI says why it could not test: an unknown instance or
//! a client identity the server does not allow is a FAIL line with the
//! reason, not a bare "0 passed, 1 failed".

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use waldur_backend_example::ExampleBackend;

fn conformance(dir: &std::path::Path, port: u16, instance: &str, client: &str) -> (bool, String) {
    let out = std::process::Command::new(support::workspace_binary("waldur-backend-conformance"))
        .arg("--endpoint")
        .arg(format!("https://127.0.0.1:{port}"))
        .args(["--server-name", "localhost", "--instance", instance])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join(format!("{client}.pem")))
        .arg("--key")
        .arg(dir.join(format!("{client}.key")))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_start_names_the_case_and_the_reason() {
    // The suite dials the server: dial-out mode does not apply.
    if support::tunnel_mode() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let _server =
        support::start_backend(dir.path(), port, Arc::new(ExampleBackend::default())).await;

    let (ok, text) =
        tokio::task::block_in_place(|| conformance(dir.path(), port, "nosuch", "client"));
    assert!(!ok);
    assert!(text.contains("FAIL capabilities_can_be_read"), "{text}");
    assert!(
        text.contains("UNKNOWN_INSTANCE") || text.contains("nosuch"),
        "{text}"
    );

    // The server's own certificate as client: an identity not allowed.
    let (ok, text) = tokio::task::block_in_place(|| conformance(dir.path(), port, "hpc", "server"));
    assert!(!ok);
    assert!(text.contains("FAIL capabilities_can_be_read"), "{text}");
    assert!(text.contains("not in tls.allowed_clients"), "{text}");
}

#[test]
fn the_cases_can_be_listed_without_a_server() {
    let out = std::process::Command::new(support::workspace_binary("waldur-backend-conformance"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() > 40, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("create_resource_is_idempotent\tSPEC 5.2")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_junit_xml_for_ci_systems() {
    if support::tunnel_mode() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::write_pki(dir.path());
    let port = support::free_port();
    let _server =
        support::start_backend(dir.path(), port, Arc::new(ExampleBackend::default())).await;
    let xml = dir.path().join("conformance.xml");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(support::workspace_binary("waldur-backend-conformance"))
            .arg("--endpoint")
            .arg(format!("https://127.0.0.1:{port}"))
            .args(["--server-name", "localhost", "--instance", "hpc"])
            .arg("--ca")
            .arg(dir.path().join("ca.pem"))
            .arg("--cert")
            .arg(dir.path().join("client.pem"))
            .arg("--key")
            .arg(dir.path().join("client.key"))
            .arg("--junit")
            .arg(&xml)
            .output()
            .unwrap()
    });
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(
        text.contains("<testsuite name=\"waldur-backend-conformance\""),
        "{text}"
    );
    assert!(
        text.contains("<testcase name=\"create_resource_is_idempotent\" classname=\"SPEC 5.2\""),
        "{text}"
    );
    // The example backend without fixtures skips the cases that need them.
    assert_eq!(
        out.status.success(),
        !text.contains("<failure"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
