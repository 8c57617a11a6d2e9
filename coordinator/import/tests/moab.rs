//! MOAB offerings of the original agent, migrated to `moab` instances.

mod support;

use support::*;

#[test]
fn a_moab_offering_becomes_a_moab_instance_with_its_deposit() {
    let m = run("moab.yaml");
    let c = coordinator(&m);
    let o = offering(&c, "MOAB deposits");
    assert_eq!(o["tasks"]["orders"], true);
    let s = server(&m);
    let inst = instance(&s, "moab-deposits");
    assert_eq!(inst["type"], "moab");
    let st = &inst["settings"];
    assert_eq!(st["project_prefix"], "p_");
    assert_eq!(st["allocation_prefix"], "a_");
    assert_eq!(st["soft_delete"], false);
    assert!(st.get("customer_prefix").is_none());
    assert!(st.get("default_account").is_none());
    let d = &st["components"]["deposit"];
    assert_eq!(d["label"], "Deposit (EUR)");
    assert_eq!(d["accounting_type"], "limit");
    assert_eq!(d["limit"], 1000);
    assert!(d.get("unit_factor").is_none());
    assert!(note_about(&m, &["customer_prefix", "no customer tier"]));
    assert!(note_about(&m, &["default_account", "ignored"]));
    assert!(note_about(&m, &["unit_factor", "never converted"]));
}

#[test]
fn a_moab_offering_without_a_deposit_component_stays_with_the_original_agent() {
    let text = "offerings:\n  - name: m\n    waldur_api_url: https://w.example/api/\n    waldur_api_token: t\n    waldur_offering_uuid: u\n    order_processing_backend: moab\n    backend_components: {cpu: {label: C, measured_unit: h, accounting_type: usage}}\n";
    let e = waldur_config_import::migrate(text, &waldur_config_import::Options::default())
        .map(|m| m.notes)
        .unwrap_err()
        .to_string();
    assert!(e.contains("deposit"), "{e}");
}
