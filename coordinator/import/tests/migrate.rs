//! Migrations of whole original configurations (fixtures under
//! `tests/fixtures/`), checked by parsing the generated YAML back.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use waldur_config_import::{ImportError, Options, SecretToWrite, migrate};

mod support;

use support::*;

#[test]
fn a_slurm_offering_with_all_roles_components_and_stomp_migrates() {
    let m = run("slurm-full.yaml");
    let c = coordinator(&m);
    assert_eq!(c["version"], 1);
    assert_eq!(c["timezone"], "Europe/Tallinn");
    assert_eq!(c["expose_backend_error_details"], false);

    let o = offering(&c, "Tartu HPC");
    assert_eq!(o["offering_uuid"], "5a1b2c3d4e5f40718293a4b5c6d7e8f9");
    assert_eq!(o["waldur"]["api_url"], "https://waldur.example.test/api/");
    assert_eq!(o["waldur"]["token_file"], "secrets/tartu-hpc.token");
    assert_eq!(o["waldur"]["verify_tls"], true);
    assert_eq!(
        o["tasks"],
        json!({"orders": true, "report": true, "membership": true, "events": true})
    );
    assert_eq!(
        o["backends"],
        json!({"orders": "tartu-hpc", "report": "tartu-hpc", "membership": "tartu-hpc"})
    );
    assert_eq!(
        o["events"]["stomp_url"],
        "wss://waldur.example.test/rmqws-stomp"
    );
    assert_eq!(o["intervals"]["orders_seconds"], 3600);
    assert_eq!(o["intervals"]["membership_seconds"], 3600);
    assert_eq!(o["intervals"]["report_seconds"], 1800);
    assert_eq!(
        o["backend_id"],
        json!({"check_uniqueness": true, "check_all_offerings": true, "max_retries": 7})
    );
    assert_eq!(o["reporting"]["periods"], 3);
    assert_eq!(
        o["membership"],
        json!({"homedir_umask": "0027", "create_homedirs": true})
    );
    assert_eq!(o["usernames"]["source"], "none");
    assert_eq!(
        o["resource_import"],
        json!({"enabled": true, "project_prefix": "tu_p_"})
    );

    let b = &c["backends"]["tartu-hpc"];
    assert_eq!(b["endpoint"], "https://127.0.0.1:50051");
    assert_eq!(b["instance"], "tartu-hpc");
    assert_eq!(
        b["tls"],
        json!({
            "ca": "/etc/waldur/pki/ca.pem",
            "cert": "/etc/waldur/pki/coordinator.pem",
            "key": "/etc/waldur/pki/coordinator.key"
        })
    );

    let s = server(&m);
    assert_eq!(s["version"], 1);
    assert_eq!(s["listen"], "0.0.0.0:50051");
    assert_eq!(
        s["tls"],
        json!({
            "ca": "/etc/waldur/pki/ca.pem",
            "cert": "/etc/waldur/pki/backend.pem",
            "key": "/etc/waldur/pki/backend.key",
            "allowed_clients": ["coordinator.local"]
        })
    );
    let i = instance(&s, "tartu-hpc");
    assert_eq!(i["type"], "slurm");
    let st = &i["settings"];
    assert_eq!(st["default_account_policy"], "individual");
    assert_eq!(st["cluster_name"], "rocket");
    assert_eq!(st["slurm_bin_path"], "/opt/slurm/bin");
    assert_eq!(st["qos_paused"], "paused");
    assert_eq!(st["soft_delete"], true);
    assert_eq!(st["default_homedir_umask"], "0027");
    assert_eq!(st["qos_management"]["max_jobs"], 10);
    assert_eq!(st["qos_management"]["max_wall"], "2880");
    assert_eq!(st["qos_management"]["additional_qos"], json!(["short"]));
    assert_eq!(st["homedir_quota"]["inode_softlimit"], "90000");
    assert_eq!(st["project_directory"]["permissions"], "770");
    assert_eq!(
        st["periodic_limits"],
        json!({"enabled": true, "limit_type": "GrpTRESMins"})
    );
    assert_eq!(
        st["components"]["cpu"],
        json!({
            "label": "CPU", "measured_unit": "k-Hours", "unit_factor": 60000,
            "accounting_type": "usage", "limit": 10, "description": "CPU time"
        })
    );
    assert_eq!(st["components"]["mem"]["unit_factor"], 61440);
    assert_eq!(
        st["components"]["node_hours"]["target_components"],
        json!({"cpu": {"factor": 128}, "mem": {"factor": 30720.5}})
    );

    assert_eq!(m.secrets.len(), 2);
    assert_eq!(
        secret(&m, "secrets/tartu-hpc.token").value,
        "tok-full-1f2e3d4c5b6a"
    );
    // The LDAP group settings come over; the bind password moves to a file.
    assert_eq!(
        st["ldap"],
        json!({
            "uri": "ldap://ldap.example.test",
            "bind_dn": "cn=admin,dc=example,dc=test",
            "base_dn": "dc=example,dc=test",
            "bind_password_file": "secrets/tartu-hpc.ldap-password"
        })
    );
    assert_eq!(
        secret(&m, "secrets/tartu-hpc.ldap-password").value,
        "ldap-bind-pass-9z8y7x"
    );
    assert!(!note_about(&m, &["backend_settings.ldap"]));
}

#[test]
fn coordinator_owned_settings_do_not_reach_the_slurm_instance() {
    let m = run("slurm-full.yaml");
    let s = server(&m);
    let st = &instance(&s, "tartu-hpc")["settings"];
    for key in [
        "check_backend_id_uniqueness",
        "check_all_offerings",
        "backend_id_max_retries",
    ] {
        assert!(st.get(key).is_none(), "{key} leaked into settings");
    }
}

#[test]
fn unknown_slurm_settings_are_dropped_with_a_note_each() {
    let m = run("slurm-full.yaml");
    let s = server(&m);
    let st = &instance(&s, "tartu-hpc")["settings"];
    for key in [
        "made_up_setting",
        "rest_api",
        "execution_mode",
        "enforce_offering_partitions",
    ] {
        assert!(st.get(key).is_none(), "{key} kept");
        assert!(
            note_about(&m, &["Tartu HPC", &format!("backend_settings.{key}")]),
            "no note for {key}: {:#?}",
            m.notes
        );
    }
    assert!(st["qos_management"].get("colour").is_none());
    assert!(note_about(&m, &["backend_settings.qos_management.colour"]));
    assert_eq!(
        st["project_directory"]["lustre_quota"],
        json!({"mount_point": "/gpfs"})
    );
    assert!(!note_about(
        &m,
        &["backend_settings.project_directory.lustre_quota"]
    ));
    assert!(st["periodic_limits"].get("emulator_mode").is_none());
    assert!(note_about(
        &m,
        &["backend_settings.periodic_limits.emulator_mode"]
    ));
}

#[test]
fn waldur_component_fields_are_carried_over_and_unread_ones_dropped_with_a_note() {
    let m = run("slurm-full.yaml");
    let s = server(&m);
    let cpu = &instance(&s, "tartu-hpc")["settings"]["components"]["cpu"];
    assert_eq!(cpu["description"], "CPU time");
    assert!(!note_about(&m, &["backend_components.cpu.description"]));
    assert!(cpu.get("unit_factor_reporting").is_none());
    assert!(note_about(
        &m,
        &["backend_components.cpu.unit_factor_reporting"]
    ));
}

#[test]
fn root_keys_without_an_equivalent_are_noted() {
    let m = run("slurm-full.yaml");
    assert!(note_about(&m, &["sentry_dsn"]));
    assert!(note_about(&m, &["log_level", "RUST_LOG"]));
    assert!(note_about(&m, &["mqtt_enabled", "Tartu HPC"]));
    assert!(
        !m.notes.iter().any(|n| n.contains("sentry.example.test")),
        "a note repeats the dsn"
    );
}

#[test]
fn the_documented_example_configuration_migrates_its_slurm_offerings() {
    let m = run("agent-example.yaml");
    let c = coordinator(&m);
    let names: Vec<_> = c["offerings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["Basic SLURM", "Flat CPU cluster", "Prepaid HPC Allocation"]
    );
    let basic = offering(&c, "Basic SLURM");
    assert_eq!(basic["tasks"]["events"], false);
    assert!(basic.get("events").is_none());
    assert_eq!(basic["intervals"]["orders_seconds"], 300);
    assert_eq!(basic["waldur"]["api_url"], "http://localhost:8081/api/");

    let s = server(&m);
    let flat = &instance(&s, "flat-cpu-cluster")["settings"];
    assert_eq!(flat["parent_account"], "flatroot");
    assert_eq!(flat["customer_prefix"], "");
    assert_eq!(flat["ldap"]["uri"], "ldap://ldap.example.test");
    assert_eq!(
        flat["ldap"]["bind_password_file"],
        "secrets/flat-cpu-cluster.ldap-password"
    );
    // Its username backend was LDAP's: not run by the server, said.
    assert!(note_about(
        &m,
        &["Flat CPU cluster", "username_management_backend", "ldap"]
    ));

    let prepaid = &instance(&s, "prepaid-hpc-allocation")["settings"]["components"]["cpu"];
    assert_eq!(prepaid["accounting_type"], "one");
    assert_eq!(prepaid["min_prepaid_duration"], 1);
    assert!(!note_about(
        &m,
        &["backend_components.cpu.min_prepaid_duration"]
    ));

    // Its roles are unset: the original ran nothing for it.
    assert!(note_about(
        &m,
        &["MOAB deposits", "order_processing_backend", "not migrated"]
    ));
    assert_eq!(m.secrets.len(), 4); // three tokens and the flat cluster's LDAP password
    assert!(!m.secrets.iter().any(|s| s.value == "tok-moab-0004"));
    assert!(!m.coordinator_yaml.contains("MOAB deposits\n"));
    // Disabled extras are not worth a note.
    assert!(!note_about(&m, &["log_shipping"]));
    assert!(!note_about(&m, &["sentry_dsn"]));
}

#[test]
fn two_offerings_on_one_cluster_get_two_instances_behind_one_endpoint() {
    let m = run("shared-cluster-stomp.yaml");
    let c = coordinator(&m);
    let offerings = c["offerings"].as_array().unwrap();
    assert_eq!(offerings.len(), 2);
    // Same display name: slugs are made unique.
    assert_eq!(offerings[0]["backends"]["orders"], "cluster-a");
    assert_eq!(offerings[1]["backends"]["orders"], "cluster-a-2");
    assert_eq!(
        c["backends"]["cluster-a"]["endpoint"],
        c["backends"]["cluster-a-2"]["endpoint"]
    );
    assert_eq!(c["backends"]["cluster-a-2"]["instance"], "cluster-a-2");
    let s = server(&m);
    assert_eq!(s["instances"].as_array().unwrap().len(), 2);
    assert_eq!(
        instance(&s, "cluster-a")["settings"]["allocation_prefix"],
        "a_a_"
    );
    assert_eq!(
        instance(&s, "cluster-a-2")["settings"]["allocation_prefix"],
        "b_a_"
    );
    assert_ne!(
        offerings[0]["waldur"]["token_file"],
        offerings[1]["waldur"]["token_file"]
    );
    assert_eq!(secret(&m, "secrets/cluster-a.token").value, "tok-shared-a");
    assert_eq!(
        secret(&m, "secrets/cluster-a-2.token").value,
        "tok-shared-b"
    );
}

#[test]
fn stomp_endpoints_follow_the_original_host_port_and_tls_rules() {
    let m = run("shared-cluster-stomp.yaml");
    let c = coordinator(&m);
    let offerings = c["offerings"].as_array().unwrap();
    assert_eq!(
        offerings[0]["events"]["stomp_url"],
        "ws://mq.internal:15674/ws"
    );
    // websocket_use_tls defaults to true; verify_ssl false made the original dial port 80.
    assert_eq!(
        offerings[1]["events"]["stomp_url"],
        "wss://waldur.internal:80/rmqws-stomp"
    );
    assert!(note_about(&m, &["Cluster A", "verify_ssl", "port 80"]));
    assert_eq!(offerings[1]["waldur"]["verify_tls"], false);
    // Membership stays on polling when stomp_membership_sync_enabled is false.
    assert_eq!(offerings[1]["intervals"]["membership_seconds"], 300);
    assert_eq!(offerings[1]["intervals"]["orders_seconds"], 3600);
    assert_eq!(offerings[1]["tasks"]["report"], false);
    assert!(offerings[1]["backends"].get("report").is_none());
}

#[test]
fn offerings_with_unsupported_backends_are_left_to_the_original_agent() {
    let m = run("unsupported.yaml");
    let c = coordinator(&m);
    let offerings = c["offerings"].as_array().unwrap();
    assert_eq!(offerings.len(), 1);
    assert_eq!(offerings[0]["name"], "Plain SLURM");
    assert_eq!(
        offerings[0]["tasks"],
        json!({"orders": true, "report": false, "membership": false, "events": false})
    );
    assert!(note_about(
        &m,
        &[
            "OKD projects",
            "okd",
            "no backend server yet",
            "not migrated"
        ]
    ));
    assert!(note_about(
        &m,
        &["Federated", "waldur", "no backend server yet"]
    ));
    assert!(note_about(
        &m,
        &["Mixed SLURM + DWDI", "cscs-dwdi (reporting_backend)"]
    ));
    let s = server(&m);
    assert_eq!(s["instances"].as_array().unwrap().len(), 1);
    assert_eq!(m.secrets.len(), 1);
    assert_eq!(m.secrets[0].value, "tok-plain-4");
    // No key of a skipped offering is noted: only the skip itself.
    assert!(!note_about(
        &m,
        &["Federated", "username_management_backend"]
    ));
}

#[test]
fn a_file_with_only_unsupported_offerings_is_an_error_naming_them() {
    let text = "offerings:\n  - name: OKD only\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: okd\n    backend_settings: {token: okd-only-secret}\n";
    let e = migrate(text, &options()).unwrap_err();
    assert!(matches!(e, ImportError::NothingToMigrate(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("OKD only") && text.contains("okd"), "{text}");
    assert!(!text.contains("okd-only-secret"));
}

#[test]
fn an_oidc_offering_gets_a_client_secret_file_and_no_events() {
    let m = run("oidc.yaml");
    let c = coordinator(&m);
    let o = offering(&c, "OIDC cluster");
    assert!(o["waldur"].get("token_file").is_none());
    assert_eq!(
        o["waldur"]["oidc"],
        json!({
            "token_url": "https://idp.example.test/realms/w/protocol/openid-connect/token",
            "client_id": "site-agent",
            "client_secret_file": "secrets/oidc-cluster.oidc-client-secret"
        })
    );
    assert_eq!(o["tasks"]["events"], false);
    assert!(o.get("events").is_none());
    assert!(note_about(&m, &["OIDC cluster", "stomp_enabled", "OIDC"]));
    assert_eq!(
        secret(&m, "secrets/oidc-cluster.oidc-client-secret").value,
        "oidc-client-secret-5544"
    );
}

#[test]
fn secrets_never_appear_in_generated_yaml_or_notes() {
    let cases: &[(&str, &[&str])] = &[
        (
            "slurm-full.yaml",
            &[
                "tok-full-1f2e3d4c5b6a",
                "ldap-bind-pass-9z8y7x",
                "/etc/slurm/jwt",
            ],
        ),
        (
            "agent-example.yaml",
            &[
                "tok-basic-0001",
                "tok-flat-0002",
                "tok-prepaid-0003",
                "tok-moab-0004",
                "ldap-secret-flat",
            ],
        ),
        (
            "shared-cluster-stomp.yaml",
            &["tok-shared-a", "tok-shared-b"],
        ),
        (
            "unsupported.yaml",
            &[
                "tok-okd-1",
                "okd-token-123",
                "tok-fed-2",
                "tok-target-b",
                "dwdi-secret",
                "tok-plain-4",
            ],
        ),
        ("oidc.yaml", &["oidc-client-secret-5544"]),
        ("mup.yaml", &["tok-mup-1", "mup-password-123"]),
    ];
    for (file, secrets) in cases {
        let m = run(file);
        let mut texts = vec![m.coordinator_yaml.clone(), format!("{m:?}")];
        texts.extend(m.backend_servers.iter().map(|b| b.yaml.clone()));
        texts.extend(m.notes.iter().cloned());
        for s in *secrets {
            for t in &texts {
                assert!(!t.contains(s), "{file}: {s} leaked");
            }
        }
    }
}

#[test]
fn debug_output_of_a_secret_is_redacted() {
    let s = SecretToWrite {
        file_name: "secrets/x.token".into(),
        value: "hunter2".into(),
    };
    let text = format!("{s:?}");
    assert!(
        text.contains("secrets/x.token") && !text.contains("hunter2"),
        "{text}"
    );
}

#[test]
fn the_headers_name_the_source_and_are_comments() {
    let m = run("slurm-full.yaml");
    let first = m.coordinator_yaml.lines().next().unwrap();
    assert!(
        first.starts_with("# ") && first.contains("generated"),
        "{first}"
    );
    assert!(
        m.coordinator_yaml
            .contains("/etc/waldur/waldur-site-agent-config.yaml")
    );
    let head: Vec<_> = m
        .coordinator_yaml
        .lines()
        .take_while(|l| !l.starts_with("version:"))
        .collect();
    assert!(head.iter().all(|l| l.is_empty() || l.starts_with('#')));
    assert!(
        m.notes
            .iter()
            .all(|n| head.iter().any(|l| l.contains(n.as_str()))),
        "every note is in the header"
    );
    assert!(
        m.backend_servers[0]
            .yaml
            .contains("/etc/waldur/waldur-site-agent-config.yaml")
    );
}

#[test]
fn options_shape_endpoints_listen_port_and_pki_paths() {
    let o = Options {
        out_dir: PathBuf::from("/srv/w"),
        backend_endpoint: "https://hpc-head.example.test:6000".into(),
        pki_dir: PathBuf::from("/srv/pki"),
        coordinator_identity: "coord.example.test".into(),
        ..Options::default()
    };
    let m = migrate(&fixture("oidc.yaml"), &o).unwrap();
    let c = coordinator(&m);
    let b = &c["backends"]["oidc-cluster"];
    assert_eq!(b["endpoint"], "https://hpc-head.example.test:6000");
    assert_eq!(b["tls"]["cert"], "/srv/pki/coordinator.pem");
    let s = server(&m);
    assert_eq!(s["listen"], "0.0.0.0:6000");
    assert_eq!(s["tls"]["allowed_clients"], json!(["coord.example.test"]));
    assert_eq!(s["tls"]["key"], "/srv/pki/backend.key");

    let bad = Options {
        backend_endpoint: "http://127.0.0.1:50051".into(),
        ..Options::default()
    };
    let e = migrate(&fixture("oidc.yaml"), &bad).unwrap_err();
    assert!(e.to_string().contains("backend_endpoint"), "{e}");
}

#[test]
fn malformed_inputs_are_errors_naming_the_key() {
    let base = fixture("oidc.yaml");
    let cases: Vec<(String, &str)> = vec![
        ("offerings: [".into(), "invalid yaml"),
        ("".into(), "offerings"),
        ("timezone: UTC\n".into(), "offerings: is missing"),
        ("offerings: []\n".into(), "offerings: is empty"),
        ("offerings: 3\n".into(), "offerings: must be a list"),
        ("- a\n- b\n".into(), "must be a mapping"),
        ("offerings: [7]\n".into(), "offerings[0]: must be a mapping"),
        (
            base.replace(
                "    waldur_offering_uuid: \"9999999900000000000000000000000a\"\n",
                "",
            ),
            "offerings[0].waldur_offering_uuid: is missing",
        ),
        (
            base.replace(
                "    waldur_api_url: \"https://waldur.example.test/api/\"\n",
                "",
            ),
            "offerings[0].waldur_api_url: is missing",
        ),
        (
            base.replace(
                "\"https://waldur.example.test/api/\"",
                "\"ftp://waldur.example.test/\"",
            ),
            "offerings[0].waldur_api_url: must start with http",
        ),
        (
            base.replace("    oidc_client_id: \"site-agent\"\n", ""),
            "offerings[0].waldur_api_token",
        ),
        (
            base.replace("stomp_enabled: true", "stomp_enabled: maybe"),
            "offerings[0].stomp_enabled",
        ),
        (
            base.replace("        label: \"CPU\"\n", ""),
            "offerings[0].backend_components.cpu.label: is missing",
        ),
        (
            base.replace("accounting_type: \"usage\"", "accounting_type: \"hourly\""),
            "offerings[0].backend_components.cpu.accounting_type",
        ),
        (
            base.replace("unit_factor: 60000", "unit_factor: 0"),
            "offerings[0].backend_components.cpu.unit_factor",
        ),
        (
            format!("reporting_periods: 13\n{base}"),
            "reporting_periods",
        ),
        (
            base.replace(
                "backend_settings:\n      default_account: \"root\"\n",
                "backend_settings: 5\n",
            ),
            "offerings[0].backend_settings",
        ),
    ];
    for (text, expected) in cases {
        let e = migrate(&text, &options()).unwrap_err().to_string();
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        let first = e.chars().next().unwrap();
        assert!(!first.is_uppercase(), "{e}");
        assert!(!e.contains("oidc-client-secret-5544"), "{e}");
    }
}

#[test]
fn yaml_merge_keys_are_honoured() {
    let text = r#"
x-common: &common
  waldur_api_url: "https://waldur.example.test/api/"
  waldur_api_token: "tok-merge"
  order_processing_backend: slurm
  backend_components:
    cpu: {measured_unit: h, accounting_type: usage, label: CPU}
offerings:
  - <<: *common
    name: One
    waldur_offering_uuid: "1"
  - <<: *common
    name: Two
    waldur_offering_uuid: "2"
"#;
    let m = migrate(text, &options()).unwrap();
    let c = coordinator(&m);
    assert_eq!(c["offerings"].as_array().unwrap().len(), 2);
    assert_eq!(offering(&c, "Two")["tasks"]["orders"], true);
    assert!(note_about(&m, &["x-common"]));
}

/// Every key the migration writes exists in the target's serde structs
/// (read from their sources, so a rename on either side fails here).
#[test]
fn every_generated_key_is_a_field_of_the_target_config_structs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("target source exists");
    let coordinator_src =
        read("coordinator/src/config.rs") + &read("backend-server/runtime/src/tls.rs");
    let server_src = read("backend-server/src/config.rs");
    let slurm_src = read("backends/slurm/src/settings.rs")
        + &read("backend-server/src/component.rs")
        + &read("backends/slurm/src/ldap.rs");
    let known = |src: &str, key: &str| {
        src.contains(&format!("pub {key}:")) || src.contains(&format!("rename = \"{key}\""))
    };
    fn walk(v: &Value, path: &str, free: &[&str], out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let free_here = free.iter().any(|f| path.ends_with(f));
                    if !free_here {
                        out.push((path.to_owned(), k.clone()));
                    }
                    let next = if free_here {
                        format!("{path}.*")
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(child, &next, free, out);
                }
            }
            Value::Array(a) => a
                .iter()
                .for_each(|c| walk(c, &format!("{path}[]"), free, out)),
            _ => {}
        }
    }
    for file in [
        "slurm-full.yaml",
        "agent-example.yaml",
        "shared-cluster-stomp.yaml",
        "oidc.yaml",
    ] {
        let m = run(file);
        let mut keys = Vec::new();
        walk(&coordinator(&m), "", &[".backends"], &mut keys);
        for (path, key) in &keys {
            assert!(
                known(&coordinator_src, key),
                "{file}: coordinator {path}.{key}"
            );
        }
        let s = server(&m);
        for (k, v) in s.as_object().unwrap() {
            assert!(known(&server_src, k), "{file}: server {k}");
            if k == "instances" {
                for i in v.as_array().unwrap() {
                    for ik in i.as_object().unwrap().keys() {
                        assert!(known(&server_src, ik), "{file}: instance {ik}");
                    }
                    let mut keys = Vec::new();
                    walk(
                        &i["settings"],
                        "",
                        &[".components", "target_components"],
                        &mut keys,
                    );
                    for (path, key) in &keys {
                        assert!(known(&slurm_src, key), "{file}: slurm {path}.{key}");
                    }
                }
            } else {
                let mut keys = Vec::new();
                walk(v, k, &[], &mut keys);
                for (path, key) in &keys {
                    assert!(known(&server_src, key), "{file}: server {path}.{key}");
                }
            }
        }
    }
}

#[test]
fn ldap_username_backend_keys_are_dropped_with_a_note_and_the_group_keys_kept() {
    let text = r#"
offerings:
  - name: Ldap
    waldur_api_url: "https://waldur.example.test/api/"
    waldur_api_token: "tok-ldap-1"
    waldur_offering_uuid: "7a1b2c3d4e5f40718293a4b5c6d7e8f9"
    order_processing_backend: slurm
    backend_type: slurm
    backend_settings:
      ldap:
        uri: ldap://ldap.test
        bind_dn: cn=a,dc=t
        bind_password: pw-77
        use_starttls: true
        groups_ou: ou=Groups
        gid_range_start: 5000
        people_ou: ou=People
        username_format: first_initial_lastname
        welcome_email: {smtp_host: mail}
    backend_components:
      cpu: {measured_unit: h, accounting_type: usage, label: CPU}
"#;
    let m = migrate(text, &options()).unwrap();
    let s = server(&m);
    let ldap = &s["instances"][0]["settings"]["ldap"];
    assert_eq!(ldap["use_starttls"], true);
    assert_eq!(ldap["gid_range_start"], 5000);
    assert_eq!(ldap["groups_ou"], "ou=Groups");
    for key in ["people_ou", "username_format", "welcome_email"] {
        assert!(ldap.get(key).is_none(), "{key} kept");
        assert!(note_about(
            &m,
            &[&format!("backend_settings.ldap.{key}"), "username backend"]
        ));
    }
    assert!(!note_about(&m, &["backend_settings.ldap dropped"]));
    // What the original needed too is said missing, not invented.
    assert!(note_about(
        &m,
        &["backend_settings.ldap.base_dn is missing"]
    ));
    assert!(ldap.get("base_dn").is_none());
}
