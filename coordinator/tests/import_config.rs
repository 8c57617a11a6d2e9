//! `import-config` end to end: the binary reads an original
//! waldur-site-agent configuration and writes files that the real config
//! parsers accept (coordinator config, backend-server config, the SLURM
//! and MOAB backends' settings), secrets 0600, nothing overwritten without --force.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("import/tests/fixtures")
        .join(name)
}

fn import(from: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
        .arg("import-config")
        .arg("--from")
        .arg(from)
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn every_fixture_that_migrates_gives_configs_the_binaries_accept() {
    let mut migrated = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let from = entry.unwrap().path();
        let out = tempfile::tempdir().unwrap();
        let (ok, text) = import(&from, out.path(), &[]);
        if !ok {
            // Nothing in it can move (only backends without a server yet):
            // a clear reason, exit 64, no file.
            assert!(text.contains("error:"), "{}: {text}", from.display());
            assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
            continue;
        }
        migrated += 1;
        // The folder moves as a whole (as to /etc/waldur): secrets are named
        // relative to the configs, so they still load.
        let moved = tempfile::tempdir().unwrap();
        let out = {
            let to = moved.path().join("waldur");
            std::fs::rename(out.path(), &to).unwrap();
            to
        };
        let config = out.join("coordinator.yaml");
        let c = waldur_coordinator::config::Config::load(
            &config,
            &waldur_coordinator::secret::MapEnv::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        assert!(!c.offerings.is_empty());
        for o in &c.offerings {
            o.waldur
                .token(&waldur_coordinator::secret::MapEnv::default())
                .unwrap_or_else(|e| panic!("{}: {}: {e}", from.display(), o.name));
        }
        // The admin and metrics ports of the reference configs.
        assert_eq!(
            c.admin.as_ref().map(|a| a.listen.to_string()).as_deref(),
            Some("127.0.0.1:9180")
        );
        let server =
            waldur_backend_sdk::config::ServerConfig::load(&out.join("backend-server.yaml"))
                .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        assert_eq!(
            server
                .metrics
                .as_ref()
                .map(|m| m.listen.to_string())
                .as_deref(),
            Some("0.0.0.0:9181")
        );
        for inst in &server.instances {
            let built = match inst.kind.as_str() {
                "slurm" => waldur_backend_slurm::SlurmBackend::from_settings(inst.settings.clone())
                    .map(drop),
                "moab" => {
                    waldur_backend_moab::MoabBackend::from_settings(inst.settings.clone()).map(drop)
                }
                // Reads its password from the secret file import-config wrote.
                "mup" => {
                    waldur_backend_mup::MupBackend::from_settings(inst.settings.clone()).map(drop)
                }
                other => panic!("{}: unexpected type {other}", from.display()),
            };
            built.unwrap_or_else(|e| panic!("{}: {}: {e}", from.display(), inst.name));
            assert!(c.backends.values().any(|b| b.instance == inst.name));
        }
        for secret in std::fs::read_dir(out.join("secrets")).unwrap() {
            let mode = secret.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Tokens live in the secret files only.
        let original = std::fs::read_to_string(&from).unwrap();
        let yaml = std::fs::read_to_string(&config).unwrap();
        for line in original.lines().filter(|l| l.contains("waldur_api_token")) {
            let token = line.split(':').nth(1).unwrap().trim().trim_matches('"');
            if token.is_empty() {
                continue;
            }
            assert!(
                !yaml.contains(token),
                "{}: the token leaked into the config",
                from.display()
            );
            assert!(
                !text.contains(token),
                "{}: the token was printed",
                from.display()
            );
        }
    }
    assert!(migrated >= 3, "only {migrated} fixtures migrated");
}

#[test]
fn existing_files_are_kept_unless_forced_and_notes_are_printed() {
    let out = tempfile::tempdir().unwrap();
    let from = fixture("slurm-full.yaml");
    let (ok, text) = import(&from, out.path(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("note:") && text.contains("sentry_dsn"),
        "{text}"
    );
    std::fs::write(out.path().join("coordinator.yaml"), "mine").unwrap();
    let (ok, text) = import(&from, out.path(), &[]);
    assert!(!ok && text.contains("refusing to overwrite"), "{text}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("coordinator.yaml")).unwrap(),
        "mine"
    );
    let secret = std::fs::read_dir(out.path().join("secrets"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        out.path().join("secrets"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (ok, text) = import(&from, out.path(), &["--force"]);
    assert!(ok, "{text}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600, "--force tightens an existing secret");
    assert_eq!(mode(&out.path().join("secrets")), 0o700);
    assert!(
        std::fs::read_to_string(out.path().join("coordinator.yaml"))
            .unwrap()
            .contains("version: 1")
    );
}

#[test]
fn a_planted_symbolic_link_never_receives_a_token() {
    let out = tempfile::tempdir().unwrap();
    let elsewhere = out.path().join("elsewhere");
    std::fs::write(&elsewhere, "").unwrap();
    std::fs::create_dir_all(out.path().join("secrets")).unwrap();
    // The first offering's token file name, from a dry run.
    let dry = tempfile::tempdir().unwrap();
    assert!(import(&fixture("slurm-full.yaml"), dry.path(), &[]).0);
    let name = std::fs::read_dir(dry.path().join("secrets"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    std::os::unix::fs::symlink(&elsewhere, out.path().join("secrets").join(name)).unwrap();
    let (ok, text) = import(&fixture("slurm-full.yaml"), out.path(), &["--force"]);
    assert!(!ok && text.contains("symbolic link"), "{text}");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
}

#[test]
fn garbage_input_is_a_config_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("bad.yaml");
    std::fs::write(&from, "offerings: [ {name: x, : }").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_waldur-coordinator"))
        .args(["import-config", "--from"])
        .arg(&from)
        .arg("--out-dir")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error:"));
}
