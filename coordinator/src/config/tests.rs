use super::*;
use waldur_runtime::secret::MapEnv;

fn base() -> String {
    r#"
version: 1
backends:
  hpc:
    endpoint: https://127.0.0.1:50051
    server_name: localhost
    instance: hpc
    tls: {ca: /pki/ca.pem, cert: /pki/c.pem, key: /pki/c.key}
offerings:
  - name: HPC
    offering_uuid: 0f0f0000000000000000000000000001
    waldur:
      api_url: http://127.0.0.1:8000/api/
      token_env: WALDUR_TOKEN
    backends: {orders: hpc}
"#
    .into()
}

fn env() -> MapEnv {
    MapEnv::from([("WALDUR_TOKEN", "secret-token"), ("HCA_USERNAME", "svc")])
}

#[test]
fn a_minimal_config_parses_with_defaults() {
    let c = Config::parse(&base(), Path::new("c.yaml"), &env()).unwrap();
    assert!(c.offerings[0].tasks.orders);
    assert_eq!(c.timezone, "UTC");
    assert_eq!(c.offerings[0].intervals.orders_seconds, 300);
}

#[test]
fn unknown_keys_are_rejected() {
    let text = base().replace("offering_uuid:", "offering_uid: x\n    offering_uuid:");
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("offering_uid"), "{e}");
}

#[test]
fn a_missing_token_variable_is_reported_without_a_value() {
    let e = Config::parse(&base(), Path::new("c.yaml"), &MapEnv::default()).unwrap_err();
    assert!(e.to_string().contains("WALDUR_TOKEN is not set"), "{e}");
}

#[test]
fn plaintext_backend_endpoints_are_refused() {
    let text = base().replace("https://127.0.0.1:50051", "http://127.0.0.1:50051");
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("must be https://"), "{e}");
}

#[test]
fn a_role_naming_an_unknown_backend_is_refused() {
    let text = base().replace("{orders: hpc}", "{orders: nope}");
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(
        e.to_string().contains("\"nope\" is not a key of backends"),
        "{e}"
    );
    // The username role too, though no task of its own turns it on.
    let text = base().replace("{orders: hpc}", "{orders: hpc, usernames: nope}");
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(
        e.to_string()
            .contains("backends.usernames: \"nope\" is not a key"),
        "{e}"
    );
    let text = base().replace("{orders: hpc}", "{orders: hpc, usernames: hpc}");
    let c = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap();
    assert_eq!(c.offerings[0].backends.usernames.as_deref(), Some("hpc"));
}

#[test]
fn the_reference_config_parses() {
    let text = include_str!("../../../deploy/config/coordinator.example.yaml")
        .replace(
            "token_file: /etc/waldur/waldur-token",
            "token_env: WALDUR_TOKEN",
        )
        .replace(
            "password_file: /etc/waldur/hca-password",
            "password_env: WALDUR_TOKEN",
        )
        .replace(
            "password_file: /etc/waldur/ldap-password",
            "password_env: WALDUR_TOKEN",
        );
    // As shipped, apart from the secrets' files: no setting needs an
    // environment variable the reference does not name.
    let c = Config::parse(&text, Path::new("coordinator.example.yaml"), &env()).unwrap();
    assert!(c.offerings[0].tasks.report && c.offerings[0].tasks.membership);
    assert_eq!(
        c.offerings[0].usernames.source,
        UsernameSource::WaldurUsername
    );
    let hca = &c.helmholtz.services[0];
    assert_eq!(hca.queues.inbound, "to_hca");
    // The member sources load (filters, TLS, password) as written.
    let compute = &hca.resource_types["ComputeResourceSpecV1"];
    let members = crate::upstream::hca::members::Members::load(
        &compute.members,
        Path::new("/etc/waldur"),
        &env(),
    )
    .unwrap();
    assert!(!members.is_empty());
    assert_eq!(hca.errors["OUT_OF_BUDGET"].error_type, "BudgetExhausted");
}

#[test]
fn a_config_with_only_a_helmholtz_service_is_complete() {
    let text = r#"
version: 1
backends:
  hpc:
    endpoint: https://127.0.0.1:50051
    instance: hpc
    tls: {ca: /pki/ca.pem, cert: /pki/c.pem, key: /pki/c.key}
helmholtz:
  services:
    - name: s
      resource_types:
        T: {schema: t.json, backend: hpc, backend_id: "x_{/specification/n}_{request_hash}"}
"#;
    let env = MapEnv::from([
        ("HCA_USERNAME", "u"),
        ("HCA_PASSWORD", "p"),
        ("HCA_SERVICE", "svc"),
    ]);
    let c = Config::parse(text, Path::new("/etc/waldur/c.yaml"), &env).unwrap();
    assert!(c.offerings.is_empty());
    assert_eq!(c.base_dir, Path::new("/etc/waldur"));
    let e = Config::parse(
        &text.replace("backend: hpc", "backend: nope"),
        Path::new("c.yaml"),
        &env,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("\"nope\" is not a key of backends"),
        "{e}"
    );
    let e = Config::parse(
        text,
        Path::new("c.yaml"),
        &MapEnv::from([("HCA_SERVICE", "svc")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("HCA_USERNAME"), "{e}");
}

#[test]
fn reporting_periods_out_of_range_are_refused() {
    let text = base() + "    reporting: {periods: 13}\n";
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("reporting.periods"), "{e}");
}

#[test]
fn a_non_octal_umask_is_refused() {
    let text = base() + "    membership: {homedir_umask: \"0999\"}\n";
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("homedir_umask"), "{e}");
}

#[test]
fn username_settings_parse() {
    let text = base() + "    usernames: {source: waldur_username, prefix: hpc_}\n";
    let c = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap();
    assert_eq!(
        c.offerings[0].usernames.source,
        UsernameSource::WaldurUsername
    );
    assert_eq!(c.offerings[0].usernames.prefix, "hpc_");
}

#[test]
fn an_invalid_timezone_is_refused() {
    let text = base().replace("version: 1", "version: 1\ntimezone: Mars/Base");
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("Mars/Base"), "{e}");
}

#[test]
fn a_tunnel_backend_needs_the_tunnel_section_and_an_identity_that_may_serve_it() {
    let tunneled = base().replace(
        "    endpoint: https://127.0.0.1:50051\n    server_name: localhost\n    instance: hpc\n    tls: {ca: /pki/ca.pem, cert: /pki/c.pem, key: /pki/c.key}\n",
        "    endpoint: tunnel\n    instance: hpc\n",
    );
    let parse = |text: String| Config::parse(&text, Path::new("c.yaml"), &env());
    let e = parse(tunneled.clone()).unwrap_err();
    assert!(e.to_string().contains("needs the tunnel: section"), "{e}");
    let section = |allowed: &str| {
        format!(
            "tunnel:\n  listen: 0.0.0.0:50052\n  tls: {{ca: /pki/ca.pem, cert: /pki/t.pem, key: /pki/t.key}}\n  allowed: {{{allowed}}}\n{tunneled}"
        )
    };
    let e = parse(section("cluster.example.org: []")).unwrap_err();
    assert!(
        e.to_string().contains("no identity in tunnel.allowed"),
        "{e}"
    );
    let e = parse(section("cluster.example.org: [hpc, other]")).unwrap_err();
    assert!(
        e.to_string()
            .contains("tunnel.allowed.cluster.example.org: other is not a backend"),
        "{e}"
    );
    let c = parse(section("cluster.example.org: [hpc]")).unwrap();
    assert_eq!(c.backends["hpc"].endpoint, TUNNEL_ENDPOINT);
}

#[test]
fn a_direct_backend_still_needs_its_tls_files() {
    let text = base().replace(
        "    tls: {ca: /pki/ca.pem, cert: /pki/c.pem, key: /pki/c.key}\n",
        "",
    );
    let e = Config::parse(&text, Path::new("c.yaml"), &env()).unwrap_err();
    assert!(e.to_string().contains("backends.hpc.tls"), "{e}");
}
