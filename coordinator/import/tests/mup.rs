//! MUP offerings of the original agent, migrated to `mup` instances.

mod support;

use support::*;

#[test]
fn a_mup_offering_becomes_a_mup_instance_with_its_password_in_a_secret_file() {
    let m = run("mup.yaml");
    let c = coordinator(&m);
    let o = offering(&c, "MUP HPC Allocation");
    assert_eq!(o["tasks"]["orders"], true);
    assert_eq!(o["tasks"]["membership"], true);
    assert_eq!(o["tasks"]["report"], true);
    let s = server(&m);
    let inst = instance(&s, "mup-hpc-allocation");
    assert_eq!(inst["type"], "mup");
    let st = &inst["settings"];
    assert_eq!(st["api_url"], "https://mup.example.test/");
    assert_eq!(st["username"], "someone");
    assert!(st.get("password").is_none());
    let file = st["password_file"].as_str().unwrap();
    assert!(
        file.ends_with("secrets/mup-hpc-allocation.mup-password"),
        "{file}"
    );
    assert_eq!(
        secret(&m, "secrets/mup-hpc-allocation.mup-password").value,
        "mup-password-123"
    );
    assert_eq!(st["default_research_field"], 3);
    assert_eq!(st["default_storage_limit"], 2000);
    assert_eq!(st["user_funding_agency_prefix"], "DEUCALION-");
    assert!(st.get("project_prefix").is_none());
    assert!(st.get("default_allocation_type").is_none());
    // The original named a resource after its first component's allocation,
    // in the order the components were listed.
    assert_eq!(st["primary_component"], "storage");
    let cpu = &st["components"]["cpu"];
    assert_eq!(cpu["unit_factor"], 1000.0);
    assert_eq!(cpu["accounting_type"], "limit");
    assert_eq!(cpu["mup_allocation_type"], "Deucalion x86_64");
    assert!(note_about(&m, &["project_prefix", "never used"]));
    assert!(note_about(&m, &["default_allocation_type", "never used"]));
}

#[test]
fn the_generated_mup_instance_starts_a_backend() {
    let m = run("mup.yaml");
    let s = server(&m);
    let inst = instance(&s, "mup-hpc-allocation");
    let mut settings = inst["settings"].clone();
    // Where the caller would write the secret.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "mup-password-123\n").unwrap();
    // A secret file must be private to the service.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    settings["password_file"] = serde_json::Value::String(path.to_string_lossy().into_owned());
    waldur_backend_mup::MupBackend::from_settings(settings).unwrap();
}

#[test]
fn a_mup_offering_the_original_could_not_start_stays_with_it() {
    for (why, text) in [
        (
            "password",
            "offerings:\n  - name: m\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: mup\n    backend_settings: {api_url: https://m.example/, username: u}\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: limit}}\n",
        ),
        (
            "accounting_type limit",
            "offerings:\n  - name: m\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: mup\n    backend_settings: {api_url: https://m.example/, username: u, password: p}\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: usage}}\n",
        ),
    ] {
        let e = waldur_config_import::migrate(text, &waldur_config_import::Options::default())
            .map(|m| m.notes)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
}
