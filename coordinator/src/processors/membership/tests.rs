use super::*;
use serde_json::json;

#[test]
fn user_limits_group_by_resource_and_user_truncate_and_leave_out_what_is_out_of_range() {
    let list = vec![
        UserUsageLimit {
            resource_uuid: "AA-BB".into(),
            username: Some("ada".into()),
            component_type: "cpu".into(),
            limit: json!("10.9"),
            ..Default::default()
        },
        UserUsageLimit {
            resource_uuid: "aabb".into(),
            user: json!("ada"),
            component_type: "mem".into(),
            limit: json!(5),
            ..Default::default()
        },
        UserUsageLimit {
            resource_uuid: "aabb".into(),
            user: json!("http://waldur/api/users/1/"),
            component_type: "mem".into(),
            limit: json!(5),
            ..Default::default()
        },
        UserUsageLimit {
            resource_uuid: "aabb".into(),
            username: Some("bob".into()),
            component_type: "cpu".into(),
            limit: json!(1e30),
            ..Default::default()
        },
        UserUsageLimit {
            resource_uuid: "aabb".into(),
            username: Some("bob".into()),
            component_type: "mem".into(),
            limit: json!(-1),
            ..Default::default()
        },
    ];
    let g = group_user_limits(list);
    assert_eq!(
        g["aabb"]["ada"],
        BTreeMap::from([("cpu".to_owned(), 10), ("mem".to_owned(), 5)])
    );
    assert_eq!(g["aabb"].len(), 1);
}
