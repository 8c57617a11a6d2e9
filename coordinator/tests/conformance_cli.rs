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
