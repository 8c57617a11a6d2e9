//! Conversions between the wire messages and the domain types.
//!
//! Server direction (this module): requests are validated into domain types
//! ([`create_resource`], [`users`], ...) and results become responses
//! ([`resource_info`], [`user_results`], ...). The limits are the ones
//! `proto/SPEC.md` ("Field limits") states; the conformance suite checks
//! them. Client direction: [`to_wire`] for requests, [`from_wire`] for
//! responses.

pub mod from_wire;
pub mod to_wire;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use waldur_backend_proto::v1 as wire;

use crate::types::*;
use crate::{BackendError, BackendResult};

/// Longest identifier (instance, backend id, username, UUID, slug, key), bytes.
pub const MAX_ID_LEN: usize = 255;
/// Longest free text (names, descriptions, messages, attribute values), bytes.
pub const MAX_TEXT_LEN: usize = 4096;
/// Most entries in one repeated or map field.
pub const MAX_ITEMS: usize = 10_000;

/// A required identifier: non-empty, at most [`MAX_ID_LEN`] bytes, no control
/// characters.
pub fn required_id(field: &str, value: String) -> BackendResult<String> {
    if value.is_empty() {
        return Err(BackendError::invalid_field(field, "is required"));
    }
    optional_id(field, value)
}

/// An optional identifier (may be empty).
pub fn optional_id(field: &str, value: String) -> BackendResult<String> {
    if value.len() > MAX_ID_LEN {
        return Err(BackendError::invalid_field(
            field,
            format!(
                "is {} bytes long, at most {MAX_ID_LEN} allowed",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(BackendError::invalid_field(
            field,
            "contains control characters",
        ));
    }
    Ok(value)
}

/// Optional free text.
pub fn text(field: &str, value: String) -> BackendResult<String> {
    if value.len() > MAX_TEXT_LEN {
        return Err(BackendError::invalid_field(
            field,
            format!(
                "is {} bytes long, at most {MAX_TEXT_LEN} allowed",
                value.len()
            ),
        ));
    }
    Ok(value)
}

fn count(field: &str, n: usize) -> BackendResult<()> {
    if n > MAX_ITEMS {
        return Err(BackendError::invalid_field(
            field,
            format!("has {n} entries, at most {MAX_ITEMS} allowed"),
        ));
    }
    Ok(())
}

/// A non-empty list of identifiers.
pub fn required_ids(field: &str, values: Vec<String>) -> BackendResult<Vec<String>> {
    if values.is_empty() {
        return Err(BackendError::invalid_field(
            field,
            "needs at least one entry",
        ));
    }
    count(field, values.len())?;
    values.into_iter().map(|v| required_id(field, v)).collect()
}

/// Limits: known-looking keys and non-negative values.
pub fn limits(field: &str, map: impl IntoIterator<Item = (String, i64)>) -> BackendResult<Limits> {
    let mut out = Limits::new();
    for (key, value) in map {
        let key = required_id(field, key)?;
        if value < 0 {
            return Err(BackendError::invalid_field(
                field,
                format!("limit for {key:?} is negative ({value})"),
            ));
        }
        out.insert(key, value);
    }
    count(field, out.len())?;
    Ok(out)
}

fn string_map(
    field: &str,
    map: impl IntoIterator<Item = (String, String)>,
) -> BackendResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        out.insert(required_id(field, k)?, text(field, v)?);
    }
    count(field, out.len())?;
    Ok(out)
}

fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A `SystemTime` as a protobuf timestamp (times before 1970 clamp to 0).
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: Option<prost_types::Struct>) -> JsonObject {
    s.map(|s| {
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect()
    })
    .unwrap_or_default()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(Some(s))),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect())
        }
    }
}

/// A JSON object as a protobuf `Struct`.
pub fn json_to_struct(obj: JsonObject) -> prost_types::Struct {
    prost_types::Struct {
        fields: obj
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A required resource context.
pub fn resource(field: &str, r: Option<wire::ResourceContext>) -> BackendResult<ResourceContext> {
    let r = r.ok_or_else(|| BackendError::invalid_field(field, "is required"))?;
    resource_context(field, r)
}

/// An optional resource context.
pub fn optional_resource(
    field: &str,
    r: Option<wire::ResourceContext>,
) -> BackendResult<Option<ResourceContext>> {
    r.map(|r| resource_context(field, r)).transpose()
}

fn resource_context(field: &str, r: wire::ResourceContext) -> BackendResult<ResourceContext> {
    let f = |name: &str| format!("{field}.{name}");
    Ok(ResourceContext {
        resource_uuid: required_id(&f("resource_uuid"), r.resource_uuid)?,
        name: text(&f("name"), r.name)?,
        slug: optional_id(&f("slug"), r.slug)?,
        project_uuid: optional_id(&f("project_uuid"), r.project_uuid)?,
        project_slug: optional_id(&f("project_slug"), r.project_slug)?,
        project_name: text(&f("project_name"), r.project_name)?,
        customer_uuid: optional_id(&f("customer_uuid"), r.customer_uuid)?,
        customer_slug: optional_id(&f("customer_slug"), r.customer_slug)?,
        customer_name: text(&f("customer_name"), r.customer_name)?,
        offering_uuid: optional_id(&f("offering_uuid"), r.offering_uuid)?,
        plan_uuid: optional_id(&f("plan_uuid"), r.plan_uuid)?,
        attributes: struct_to_json(r.attributes),
        created: timestamp(r.created),
        end_date: timestamp(r.end_date),
    })
}

/// A list of users (each with a username).
pub fn users(field: &str, list: Vec<wire::User>, required: bool) -> BackendResult<Vec<User>> {
    if required && list.is_empty() {
        return Err(BackendError::invalid_field(
            field,
            "needs at least one entry",
        ));
    }
    count(field, list.len())?;
    list.into_iter().map(|u| user(field, u)).collect()
}

fn user(field: &str, u: wire::User) -> BackendResult<User> {
    let f = |name: &str| format!("{field}.{name}");
    Ok(User {
        username: required_id(&f("username"), u.username)?,
        user_uuid: optional_id(&f("user_uuid"), u.user_uuid)?,
        waldur_username: optional_id(&f("waldur_username"), u.waldur_username)?,
        email: text(&f("email"), u.email)?,
        full_name: text(&f("full_name"), u.full_name)?,
        role: optional_id(&f("role"), u.role)?,
        attributes: string_map(&f("attributes"), u.attributes)?,
    })
}

/// A validated CreateResource request.
pub fn create_resource(r: wire::CreateResourceRequest) -> BackendResult<CreateResource> {
    Ok(CreateResource {
        backend_id: required_id("backend_id", r.backend_id)?,
        resource: resource("resource", r.resource)?,
        limits: limits("limits", r.limits)?,
        users: users("users", r.users, false)?,
        plan_quotas: limits("plan_quotas", r.plan_quotas)?,
        ssh_keys: string_map("ssh_keys", r.ssh_keys)?,
        homedir_umask: umask("homedir_umask", r.homedir_umask)?,
    })
}

/// An optional octal umask such as `0077`.
pub fn umask(field: &str, value: String) -> BackendResult<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    match u32::from_str_radix(&value, 8) {
        Ok(v) if v <= 0o777 => Ok(Some(value)),
        _ => Err(BackendError::invalid_field(
            field,
            format!("{value:?} is not an octal umask"),
        )),
    }
}

/// A validated offering user.
pub fn offering_user(field: &str, u: Option<wire::OfferingUser>) -> BackendResult<OfferingUser> {
    let u = u.ok_or_else(|| BackendError::invalid_field(field, "is required"))?;
    let f = |name: &str| format!("{field}.{name}");
    Ok(OfferingUser {
        offering_user_uuid: required_id(&f("offering_user_uuid"), u.offering_user_uuid)?,
        user_uuid: optional_id(&f("user_uuid"), u.user_uuid)?,
        waldur_username: optional_id(&f("waldur_username"), u.waldur_username)?,
        email: text(&f("email"), u.email)?,
        full_name: text(&f("full_name"), u.full_name)?,
        first_name: text(&f("first_name"), u.first_name)?,
        last_name: text(&f("last_name"), u.last_name)?,
        current_username: optional_id(&f("current_username"), u.current_username)?,
        attributes: string_map(&f("attributes"), u.attributes)?,
    })
}

/// A validated order.
pub fn order(o: Option<wire::Order>) -> BackendResult<Order> {
    let o = o.ok_or_else(|| BackendError::invalid_field("order", "is required"))?;
    let order_type = match wire::OrderType::try_from(o.r#type) {
        Ok(t) if t != wire::OrderType::Unspecified => t,
        _ => return Err(BackendError::invalid_field("order.type", "is required")),
    };
    Ok(Order {
        order_uuid: required_id("order.order_uuid", o.order_uuid)?,
        order_type,
        resource: resource("order.resource", o.resource)?,
        limits: limits("order.limits", o.limits)?,
        created_by_username: optional_id("order.created_by_username", o.created_by_username)?,
        created_by_full_name: text("order.created_by_full_name", o.created_by_full_name)?,
        consumer_message: text("order.consumer_message", o.consumer_message)?,
        provider_message: text("order.provider_message", o.provider_message)?,
        team: users("order.team", o.team, false)?,
    })
}

/// Wire form of resource information.
pub fn resource_info(r: ResourceInfo) -> wire::ResourceInfo {
    wire::ResourceInfo {
        backend_id: r.backend_id,
        parent_id: r.parent_id,
        effective_id: r.effective_id,
        description: r.description,
        limits: r.limits.into_iter().collect(),
        metadata: Some(json_to_struct(r.metadata)),
        endpoints: r.endpoints,
        users: r.users,
        credentials: r.credentials.0.into_iter().collect(),
        access: r.access.map(|a| a as i32).unwrap_or_default(),
    }
}

/// Wire form of per-user limits.
pub fn user_limits(users: BTreeMap<String, Limits>) -> Vec<wire::UserLimits> {
    users
        .into_iter()
        .map(|(username, limits)| wire::UserLimits {
            username,
            limits: limits.into_iter().collect(),
        })
        .collect()
}

/// Wire form of per-user results.
pub fn user_results(results: Vec<UserResult>) -> Vec<wire::UserResult> {
    results
        .into_iter()
        .map(|r| match r.outcome {
            Outcome::Applied => wire::UserResult {
                username: r.username,
                outcome: wire::UserOutcome::Applied as i32,
                ..Default::default()
            },
            Outcome::Unchanged => wire::UserResult {
                username: r.username,
                outcome: wire::UserOutcome::Unchanged as i32,
                ..Default::default()
            },
            Outcome::Failed(e) => wire::UserResult {
                username: r.username,
                outcome: wire::UserOutcome::Failed as i32,
                message: e.message,
                code: e.code as i32,
            },
        })
        .collect()
}

/// Wire form of a usage entry.
pub fn resource_usage(u: ResourceUsage) -> wire::ResourceUsage {
    wire::ResourceUsage {
        backend_id: u.backend_id,
        total: u.total.into_iter().collect(),
        users: u
            .users
            .into_iter()
            .map(|(username, usage)| wire::UserUsage {
                username,
                usage: usage.into_iter().collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_required_id_names_the_field() {
        let e = required_id("backend_id", String::new()).unwrap_err();
        assert_eq!(e.code, tonic::Code::InvalidArgument);
        assert_eq!(e.metadata["field"], "backend_id");
    }

    #[test]
    fn an_oversized_id_is_refused() {
        let e = required_id("username", "x".repeat(MAX_ID_LEN + 1)).unwrap_err();
        assert!(e.message.contains("at most 255"), "{}", e.message);
    }

    #[test]
    fn negative_limits_are_refused() {
        let e = limits("limits", [("cpu".to_owned(), -1)]).unwrap_err();
        assert!(e.message.contains("negative"));
    }

    #[test]
    fn json_survives_the_struct_round_trip() {
        let obj: JsonObject =
            serde_json::from_str(r#"{"a": 1.5, "b": "x", "c": [true, null], "d": {"e": "f"}}"#)
                .unwrap();
        assert_eq!(struct_to_json(Some(json_to_struct(obj.clone()))), obj);
    }

    #[test]
    fn umask_must_be_octal_and_at_most_0777() {
        assert_eq!(umask("u", "0077".into()).unwrap(), Some("0077".into()));
        assert!(umask("u", "0999".into()).is_err());
        assert!(umask("u", "7777".into()).is_err());
        assert_eq!(umask("u", String::new()).unwrap(), None);
    }
}
