//! The coordinator binary refuses bad configs with exit code 64 before
//! starting anything.

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_waldur-coordinator");

fn run_with(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("WALDUR_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "version: 1\nbackends:\n  hpc:\n    endpoint: https://127.0.0.1:1\n    instance: hpc\n    tls: {ca: /x/ca.pem, cert: /x/c.pem, key: /x/c.key}\nofferings:\n  - name: o\n    offering_uuid: 0f0f0000000000000000000000000001\n    waldur: {api_url: 'http://127.0.0.1:1/api/', token_env: WALDUR_TOKEN_FOR_TEST_UNSET}\n    backends: {orders: hpc}\n";

#[test]
fn a_config_with_an_unknown_key_exits_64_naming_the_key() {
    let (code, err) = run_with(&GOOD.replace("version: 1", "version: 1\nbogus_key: 1"));
    assert_eq!(code, Some(64));
    assert!(err.contains("bogus_key"), "{err}");
}

#[test]
fn a_missing_token_exits_64_naming_the_variable() {
    let (code, err) = run_with(GOOD);
    assert_eq!(code, Some(64));
    assert!(err.contains("WALDUR_TOKEN_FOR_TEST_UNSET"), "{err}");
}

#[test]
fn missing_tls_files_exit_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let text = GOOD.replace(
        "token_env: WALDUR_TOKEN_FOR_TEST_UNSET",
        &format!("token_file: {}/token", dir.path().display()),
    );
    let (code, err) = run_with(&text);
    assert_eq!(code, Some(64));
    assert!(err.contains("backends.hpc.tls"), "{err}");
}

#[test]
fn a_token_file_readable_by_others_exits_64_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let text = GOOD.replace(
        "token_env: WALDUR_TOKEN_FOR_TEST_UNSET",
        &format!("token_file: {}", token.display()),
    );
    let (code, err) = run_with(&text);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&token.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        "run",
        "plan",
        "check",
        "load-components",
        "diagnostics",
        "create-homedirs",
        "sync-offering-users",
        "sync-resource-limits",
        "mock-portal",
        "import-config",
    ] {
        let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub} --help failed");
        assert!(
            text.contains("Example: waldur-coordinator"),
            "{sub} --help lacks an example:\n{text}"
        );
    }
}

#[test]
fn version_names_the_commit_and_docs_print_a_man_page_and_completions() {
    let out = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let version = out(&["--version"]);
    assert!(
        version.starts_with(&format!(
            "waldur-coordinator {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    let man = out(&["docs", "man"]);
    assert!(man.contains(".TH waldur-coordinator 1"), "{man}");
    // Every subcommand has its section in the one page.
    for sub in ["RUN", "CHECK", "PLAN", "IMPORT-CONFIG", "PKI", "DOCS"] {
        assert!(
            man.contains(&format!(".SH \"WALDUR-COORDINATOR {sub}\"")),
            "{sub}"
        );
    }
    let bash = out(&["docs", "completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("import-config"),
        "{bash}"
    );
    assert!(out(&["docs", "completions", "zsh"]).contains("#compdef waldur-coordinator"));
}

#[test]
fn check_offline_passes_a_config_whose_files_load_with_paths_relative_to_it_and_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    for args in [
        vec!["pki", "init-ca", "--dir"],
        vec![
            "pki",
            "issue-client",
            "--name",
            "coordinator.test",
            "--out",
            "client",
            "--dir",
        ],
    ] {
        let out = Command::new(BIN).args(&args).arg(&pki).output().unwrap();
        assert!(out.status.success(), "{args:?}");
    }
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/token"), "t").unwrap();
    std::fs::set_permissions(
        dir.path().join("secrets/token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // Relative paths, and a Waldur and backend nobody answers for.
    let text = GOOD
        .replace(
            "tls: {ca: /x/ca.pem, cert: /x/c.pem, key: /x/c.key}",
            "tls: {ca: pki/ca.pem, cert: pki/client.pem, key: pki/client.key}",
        )
        .replace(
            "token_env: WALDUR_TOKEN_FOR_TEST_UNSET",
            "token_file: secrets/token",
        );
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    let out = Command::new(BIN)
        .current_dir("/")
        .args(["check", "--offline", "--config"])
        .arg(dir.path().join("c.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS config parses (1 offerings, 1 backends"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS backend hpc: tls files load"),
        "{stdout}"
    );
    assert!(stdout.contains("SKIP network checks"), "{stdout}");
}
