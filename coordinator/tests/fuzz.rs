//! Property tests of everything the coordinator parses from outside: event
//! bodies, Waldur JSON, Helmholtz Cloud payloads, config files, ids, the
//! STOMP salvage reader and secrets. Nothing panics, and what is refused
//! says why (naming the field where there is one).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use waldur_client::ids::Uuid;
use waldur_client::types::{OfferingUser, Order, Resource, TeamMember};
use waldur_coordinator::config::Config;
use waldur_coordinator::runtime::events::body::Event;
use waldur_coordinator::secret::MapEnv;
use waldur_stomp::codec as stomp;

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-f]{32}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("order_uuid".to_owned()),
                    Just("order_state".to_owned()),
                    Just("project_uuid".to_owned()),
                    Just("user_uuid".to_owned()),
                    Just("resource_uuid".to_owned()),
                    Just("granted".to_owned()),
                    Just("action".to_owned()),
                    Just("resource_backend_ids".to_owned()),
                    Just("settings".to_owned()),
                    Just("uuid".to_owned()),
                    Just("backend_id".to_owned()),
                    ".{0,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const OBJECT_TYPES: [&str; 11] = [
    "order",
    "user_role",
    "resource",
    "service_account",
    "course_account",
    "offering_user",
    "offering_resources_sync",
    "resource_periodic_limits",
    "importable_resources",
    "nonsense",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn event_bodies_of_arbitrary_json_never_panic_and_ids_are_checked(
        t in 0usize..OBJECT_TYPES.len(),
        body in json_value(),
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        match Event::parse(OBJECT_TYPES[t], &bytes) {
            Ok(Event::Order { order, .. }) => prop_assert_eq!(order.as_str().len(), 32),
            Ok(Event::Resource { resource }) => prop_assert_eq!(resource.as_str().len(), 32),
            Ok(_) => {}
            Err(why) => prop_assert!(!why.to_string().is_empty()),
        }
    }

    #[test]
    fn event_bodies_of_arbitrary_bytes_never_panic(
        t in 0usize..OBJECT_TYPES.len(),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Err(why) = Event::parse(OBJECT_TYPES[t], &bytes) {
            prop_assert!(!why.to_string().is_empty());
        }
    }

    #[test]
    fn waldur_objects_decode_or_refuse_without_panicking(body in json_value()) {
        let text = body.to_string();
        let _ = serde_json::from_str::<Vec<Order>>(&text);
        let _ = serde_json::from_str::<Order>(&text);
        let _ = serde_json::from_str::<Resource>(&text);
        let _ = serde_json::from_str::<Vec<TeamMember>>(&text);
        if let Ok(u) = serde_json::from_str::<OfferingUser>(&text) {
            // An id either checks out as a UUID or is refused naming the field.
            if let Err(e) = u.id() {
                prop_assert_eq!(e.field, "offering_user.uuid");
            }
        }
        if let Ok(o) = serde_json::from_str::<Order>(&text)
            && let Ok(id) = o.id()
        {
            prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn waldur_text_that_is_not_json_never_panics(text in ".{0,300}") {
        let _ = serde_json::from_str::<Vec<Order>>(&text);
        let _ = serde_json::from_str::<Resource>(&text);
    }

    #[test]
    fn uuids_parse_only_as_32_hex_digits(s in ".{0,40}") {
        if let Ok(u) = Uuid::parse("f", &s) {
            prop_assert_eq!(u.as_str().len(), 32);
            prop_assert!(u.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn the_stomp_salvage_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Some(f) = stomp::salvage(&bytes) {
            prop_assert!(!f.command.is_empty());
        }
        let _ = stomp::decode(&bytes, 1 << 20);
    }

    #[test]
    fn secret_values_are_one_line_without_blanks_or_refused(text in ".{0,60}\n?") {
        match waldur_runtime::secret_file::value("t", &text) {
            Ok(v) => prop_assert!(!v.is_empty() && !v.chars().any(char::is_whitespace)),
            Err(e) => prop_assert!(e.to_string().starts_with("t")),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn config_files_of_arbitrary_text_never_panic(text in "(version: 1\n)?(offerings:\n)?.{0,200}") {
        let env = MapEnv::from([("WALDUR_TOKEN", "t")]);
        if let Err(e) = Config::parse(&text, Path::new("c.yaml"), &env) {
            prop_assert!(e.to_string().starts_with("invalid config c.yaml: "));
        }
    }

    #[test]
    fn config_files_with_arbitrary_values_name_what_is_wrong(
        uuid in ".{0,40}",
        url in ".{0,30}",
        periods in any::<i64>(),
        umask in ".{0,6}",
        percent in any::<f64>(),
    ) {
        let text = format!(
            "version: 1\nbackends:\n  hpc:\n    endpoint: https://127.0.0.1:1\n    instance: hpc\n    tls: {{ca: /x, cert: /x, key: /x}}\nofferings:\n  - name: o\n    offering_uuid: {uuid:?}\n    waldur: {{api_url: {url:?}, token_env: WALDUR_TOKEN}}\n    backends: {{orders: hpc}}\n    reporting: {{periods: {periods}}}\n    membership: {{homedir_umask: {umask:?}}}\n    safety: {{max_destructive_percent: {percent}}}\n"
        );
        let env = MapEnv::from([("WALDUR_TOKEN", "t")]);
        if let Err(e) = Config::parse(&text, Path::new("c.yaml"), &env) {
            let m = e.to_string();
            prop_assert!(
                ["offering_uuid", "api_url", "periods", "homedir_umask", "max_destructive_percent", "line", "column"]
                    .iter()
                    .any(|k| m.contains(k)),
                "{}", m
            );
        }
    }
}

/// The Helmholtz `ComputeResourceSpecV1` resource type as the tests
/// configure it.
fn compute_type() -> waldur_coordinator::upstream::hca::mapping::ResourceType {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config: waldur_coordinator::upstream::hca::config::ResourceTypeConfig = serde_norway::from_str(
        "schema: deploy/hca/schemas/ComputeResourceSpecV1.json\nbackend: hpc\ntarget: any\nbackend_id: \"hca_{/specification/project_name}_{request_hash}\"\nproject: \"{/specification/project_name}\"\ncustomer: helmholtz\nlimits:\n  cpu: {from: /specification/cpu_hours}\n",
    )
    .unwrap();
    waldur_coordinator::upstream::hca::mapping::ResourceType::load(&config, &root).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn helmholtz_payloads_are_derived_or_refused_with_a_reason(
        body in json_value(),
        spec in json_value(),
        user in prop::option::of(".{0,20}"),
        group in prop::option::of(".{0,20}"),
        correlation in ".{0,40}",
    ) {
        let t = compute_type();
        let mut payload = body;
        if let Value::Object(o) = &mut payload {
            o.insert("specification".into(), spec);
            o.insert("target_entity".into(), json!({"user_id_target": user, "group_urn_target": group}));
        }
        match t.derive(&payload, &correlation, &format!("svc/{correlation}")) {
            Ok(d) => prop_assert!(!d.base.is_empty()),
            Err(r) => prop_assert!(!r.message.is_empty()),
        }
    }
}

#[test]
fn the_shipped_helmholtz_payload_derives() {
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/hca/payloads/ComputeResourceSpecV1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(compute_type().derive(&body, "c1", "svc/c1").is_ok());
}
