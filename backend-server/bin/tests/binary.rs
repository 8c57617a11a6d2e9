//! The real binary: config errors exit 64 before anything starts, and the
//! example backend it hosts passes the conformance suite over mutual TLS.

#![allow(clippy::unwrap_used)] // a test's input is its own

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Server, TestPki, connect, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_waldur-backend-server");

#[test]
fn a_config_with_an_unknown_key_exits_64_naming_the_key() {
    let pki = TestPki::new();
    let path = pki.path("bad.yaml");
    std::fs::write(
        &path,
        pki.server_config(1, "{}")
            .replace("listen:", "lisen: x\nlisten:"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
}

#[test]
fn an_unknown_backend_type_exits_64() {
    let pki = TestPki::new();
    let path = pki.path("bad.yaml");
    std::fs::write(
        &path,
        pki.server_config(1, "{}")
            .replace("type: example", "type: nosuch"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown type \"nosuch\""));
}

#[test]
fn bad_backend_settings_exit_64() {
    let pki = TestPki::new();
    let path = pki.path("bad.yaml");
    std::fs::write(&path, pki.server_config(1, "{bogus: 1}")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn a_missing_certificate_exits_64_naming_the_file() {
    let pki = TestPki::new();
    let path = pki.path("bad.yaml");
    let text = pki
        .server_config(free_port(), "{}")
        .replace("server.pem", "missing.pem");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
}

#[test]
fn pki_subcommands_issue_a_usable_ca_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["pki", "init-ca", "--dir", d],
        vec![
            "pki",
            "issue-server",
            "--dir",
            d,
            "--name",
            "localhost",
            "--san",
            "127.0.0.1",
            "--out",
            "server",
        ],
        vec![
            "pki",
            "issue-client",
            "--dir",
            d,
            "--name",
            "coordinator.test",
            "--out",
            "client",
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let again = Command::new(BIN)
        .args(["pki", "init-ca", "--dir", d])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "init-ca must not overwrite an existing CA key"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_passes_the_conformance_suite_over_mutual_tls_and_stops_on_sigterm() {
    let pki = TestPki::new();
    let port = free_port();
    let config = pki.write_config(
        port,
        "{provisioning_delay_ms: 100, unmanaged: [conf-by-hand]}",
    );
    let log = pki.dir.path().join("server.log");
    let mut child = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let channel = connect(&pki, port).await;
    let fixtures = waldur_backend_conformance::Fixtures {
        instance: "hpc".into(),
        users: vec!["alice".into(), "bob".into()],
        link_required_email: "x@link.required".into(),
        validation_required_email: "y@validation.required".into(),
        slow_timeout_seconds: 10,
        unmanaged_backend_id: "conf-by-hand".into(),
        ..Default::default()
    };
    let report = waldur_backend_conformance::run(channel, fixtures, None).await;
    let text = report.render();
    assert_eq!(report.failed(), 0, "{text}");
    assert_eq!(report.skipped(), 0, "{text}");
    assert!(report.unexercised().is_empty(), "{text}");

    // SIGTERM: graceful shutdown, exit 0.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    // Logs written to a file carry no terminal colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("starting waldur-backend-server"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}

#[test]
fn the_reference_config_is_valid_and_every_instance_builds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/backend-server.example.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let config =
        waldur_backend_sdk::config::ServerConfig::parse(&text, std::path::Path::new(path)).unwrap();
    let kinds: Vec<&str> = config.instances.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, ["example", "slurm", "moab", "mup"]);
    for inst in &config.instances {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(path)
            // The MUP instance reads its portal password from here.
            .env("MUP_PASSWORD", "example")
            .output()
            .unwrap();
        // `check` loads every instance before touching TLS files: a settings
        // problem would exit 64; the missing certificates give a FAIL line.
        assert_ne!(
            out.status.code(),
            Some(64),
            "{}: {}",
            inst.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_warns_about_an_example_instance_that_is_not_marked_as_a_demo() {
    let pki = TestPki::new();
    let config = pki.write_config(free_port(), "{allocation_prefix: hpc_}");
    let out = check(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WARN instance hpc: type example is the in-memory reference backend"),
        "{text}"
    );
    let demo = pki.write_config(free_port(), "{allocation_prefix: hpc_, demo: true}");
    assert!(!String::from_utf8_lossy(&check(&demo).stdout).contains("WARN"));
}

/// `check --config <config>`, run to its end.
fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_prints_each_instances_self_checks() {
    let pki = TestPki::new();
    let config = pki.write_config(free_port(), "{allocation_prefix: hpc_, demo: true}");
    let out = check(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PASS instance hpc: state:"), "{text}");
    assert!(text.contains("PASS instance hpc: ready:"), "{text}");
}

#[test]
fn version_names_the_commit_and_docs_print_a_man_page_and_completions() {
    let out = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(out(&["--version"]).contains(" (commit "));
    let man = out(&["docs", "man"]);
    for section in [
        ".TH waldur-backend-server 1",
        ".SH \"WALDUR-BACKEND-SERVER SERVE\"",
        ".SH \"WALDUR-BACKEND-SERVER ADOPT\"",
    ] {
        assert!(man.contains(section), "{section}");
    }
    assert!(out(&["docs", "completions", "bash"]).contains("serve"));
}
