//! Property tests of request validation: any wire request becomes a domain
//! request or is refused with INVALID_ARGUMENT naming the field; nothing
//! panics, whatever the strings, maps and numbers hold.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use waldur_backend_sdk::convert;
use waldur_backend_sdk::proto::v1 as wire;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        "[a-z_]{1,20}",
        "\\PC{250,260}",
        Just(String::new()),
        Just("\u{0}\u{7}\n".to_owned()),
        Just("x".repeat(5000)),
    ]
}

fn user() -> impl Strategy<Value = wire::User> {
    (
        text(),
        text(),
        text(),
        prop::collection::btree_map(text(), text(), 0..3),
    )
        .prop_map(|(username, role, email, attributes)| wire::User {
            username,
            role,
            email,
            attributes: attributes.into_iter().collect(),
            ..Default::default()
        })
}

fn context() -> impl Strategy<Value = Option<wire::ResourceContext>> {
    prop::option::of((text(), text(), text(), text()).prop_map(
        |(uuid, name, project, customer)| wire::ResourceContext {
            resource_uuid: uuid,
            name,
            project_slug: project,
            customer_slug: customer,
            ..Default::default()
        },
    ))
}

fn refused_names_a_field(e: &waldur_backend_sdk::BackendError) -> bool {
    e.reason == "INVALID_FIELD" && e.metadata.get("field").is_some_and(|f| !f.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn create_requests_are_validated_or_refused_naming_the_field(
        backend_id in text(),
        resource in context(),
        limits in prop::collection::btree_map(text(), any::<i64>(), 0..4),
        users in prop::collection::vec(user(), 0..4),
        umask in text(),
    ) {
        let request = wire::CreateResourceRequest {
            backend_id,
            resource,
            limits: limits.into_iter().collect(),
            users,
            homedir_umask: umask,
            ..Default::default()
        };
        match convert::create_resource(request) {
            Ok(r) => {
                prop_assert!(!r.backend_id.is_empty());
                prop_assert!(r.limits.values().all(|v| *v >= 0));
            }
            Err(e) => prop_assert!(refused_names_a_field(&e), "{:?}", e),
        }
    }

    #[test]
    fn orders_and_offering_users_are_validated_or_refused_naming_the_field(
        uuid in text(),
        kind in any::<i32>(),
        resource in context(),
        team in prop::collection::vec(user(), 0..3),
        email in text(),
    ) {
        let order = wire::Order {
            order_uuid: uuid.clone(),
            r#type: kind,
            resource,
            team,
            ..Default::default()
        };
        if let Err(e) = convert::order(Some(order)) {
            prop_assert!(refused_names_a_field(&e), "{:?}", e);
        }
        let user = wire::OfferingUser { offering_user_uuid: uuid, email, ..Default::default() };
        if let Err(e) = convert::offering_user("user", Some(user)) {
            prop_assert!(refused_names_a_field(&e), "{:?}", e);
        }
    }

    #[test]
    fn structs_of_any_json_survive_the_round_trip_without_panicking(
        n in any::<f64>(), s in ".{0,20}", b in any::<bool>()
    ) {
        let mut o = serde_json::Map::new();
        o.insert("n".into(), serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number));
        o.insert("s".into(), s.into());
        o.insert("b".into(), b.into());
        let back = convert::struct_to_json(Some(convert::json_to_struct(o.clone())));
        prop_assert_eq!(back, o);
    }
}
