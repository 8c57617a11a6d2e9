//! The deployment files agree with the code: the metric list that
//! `deploy/check-deploy.sh` checks the Grafana dashboard against is exactly
//! what the binaries export, and the shipped configs parse.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

#[test]
fn the_deploy_check_lists_exactly_the_exported_metrics() {
    let script = repo("deploy/check-deploy.sh");
    let block = script
        .split("METRICS='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let listed: BTreeSet<&str> = block
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let exported: BTreeSet<&str> = waldur_coordinator::metrics::NAMES
        .iter()
        .chain(waldur_backend_sdk::metrics::NAMES)
        .copied()
        .collect();
    assert_eq!(listed, exported);
}

#[test]
fn the_dashboard_names_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/waldur-agent.json")).unwrap();
    let text = dashboard.to_string();
    let exported: Vec<&str> = waldur_coordinator::metrics::NAMES
        .iter()
        .chain(waldur_backend_sdk::metrics::NAMES)
        .copied()
        .collect();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("waldur_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !(name.starts_with("waldur_coordinator_") || name.starts_with("waldur_backend_")) {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exported.contains(&name.as_str()) || exported.contains(&base),
            "the dashboard queries {name}, which no binary exports"
        );
    }
    for name in &exported {
        assert!(
            text.contains(name.trim_end_matches("_total")),
            "{name} has no panel"
        );
    }
}

#[test]
fn the_helm_values_config_is_a_valid_coordinator_config() {
    let values: serde_norway::Value =
        serde_norway::from_str(&repo("deploy/helm/waldur-coordinator/values.yaml")).unwrap();
    let config = serde_norway::to_string(&values["config"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The chart mounts the token file; give the parse one.
    let config = config.replace(
        "/etc/waldur/secrets/WALDUR_TOKEN",
        &dir.path().join("t").display().to_string(),
    );
    std::fs::write(dir.path().join("t"), "token").unwrap();
    std::fs::set_permissions(
        dir.path().join("t"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let env = waldur_coordinator::secret::MapEnv::from([("WALDUR_TOKEN", "token")]);
    waldur_coordinator::config::Config::parse(&config, Path::new("values.yaml"), &env)
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
}

#[test]
fn the_container_docs_let_uid_65532_read_the_files_operator_md_lays_out() {
    // The images run as 65532; OPERATOR.md makes configs and keys 0640
    // root:waldur. Every documented `docker run` with /etc/waldur mounted
    // must add the waldur group, or the files cannot be read.
    let containers = repo("deploy/container/README.md");
    let operator = repo("deploy/OPERATOR.md");
    assert!(repo("deploy/container/Containerfile.coordinator").contains("USER 65532:65532"));
    assert!(operator.contains("| `/etc/waldur/coordinator.yaml` | 0640 root:waldur |"));
    let runs: Vec<&str> = containers
        .lines()
        .filter(|l| l.starts_with("docker run") && l.contains("/etc/waldur"))
        .collect();
    assert!(!runs.is_empty());
    for run in runs {
        assert!(run.contains("--group-add"), "{run}");
    }
}

/// The config schemas shipped next to the examples are the ones the
/// binaries generate from their config types, and the reference configs
/// validate against them (editors use them; see the first line of each
/// example).
#[test]
fn the_shipped_config_schemas_are_current_and_the_examples_follow_them() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    for (name, generated) in [
        (
            "coordinator",
            schemars::schema_for!(waldur_coordinator::config::Config),
        ),
        (
            "backend-server",
            schemars::schema_for!(waldur_backend_sdk::config::ServerConfig),
        ),
    ] {
        let shipped: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("{name}.schema.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            shipped,
            generated.to_value(),
            "deploy/config/{name}.schema.json is stale: regenerate with `waldur-{name} docs schema`"
        );
        let example = std::fs::read_to_string(root.join(format!("{name}.example.yaml"))).unwrap();
        assert!(
            example.starts_with(&format!(
                "# yaml-language-server: $schema={name}.schema.json\n"
            )),
            "{name}.example.yaml does not point editors at its schema"
        );
        let example: serde_json::Value = serde_norway::from_str(&example).unwrap();
        let validator = jsonschema::draft202012::new(&shipped).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(problems.is_empty(), "{name}.example.yaml: {problems:#?}");
    }
}
