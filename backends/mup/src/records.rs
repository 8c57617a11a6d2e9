//! The portal's records as this backend reads them. Parsing is lenient
//! where MUP deployments differ (ids as numbers or strings, a project as an
//! id or an object, the two member shapes) and strict where a wrong reading
//! would act on the wrong thing (an allocation without an identifier, a
//! member without an id).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An id the portal gives as a number, a numeric string or an object with
/// an `id`.
fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => o.get("id").and_then(id_of),
        _ => None,
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    id_of(&v).ok_or_else(|| serde::de::Error::custom(format!("{v} is not an id")))
}

fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(number(&Value::deserialize(d)?).unwrap_or(0.0))
}

/// A number given as a JSON number or a numeric string.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A MUP project.
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    /// Portal id.
    #[serde(deserialize_with = "id")]
    pub id: i64,
    /// Title.
    #[serde(default, deserialize_with = "text")]
    pub title: String,
    /// Grant number: the key shared with the Waldur project.
    #[serde(default, deserialize_with = "text")]
    pub grant_number: String,
    /// Whether the project is active.
    #[serde(default)]
    pub active: bool,
}

/// A MUP allocation.
#[derive(Debug, Clone, Deserialize)]
pub struct Allocation {
    /// Portal id.
    #[serde(deserialize_with = "id")]
    pub id: i64,
    /// Allocation type (the partition or system it is for).
    #[serde(rename = "type", default, deserialize_with = "text")]
    pub kind: String,
    /// Identifier (the SLURM account the portal makes for it).
    pub identifier: String,
    /// Size in the portal's units.
    #[serde(default, deserialize_with = "amount")]
    pub size: f64,
    /// Used so far, in the portal's units.
    #[serde(default, deserialize_with = "amount")]
    pub used: f64,
    /// Whether it is active.
    #[serde(default)]
    pub active: bool,
    /// The project's id.
    #[serde(deserialize_with = "id")]
    pub project: i64,
}

/// A MUP user (or registration request).
#[derive(Debug, Clone, Deserialize)]
pub struct PortalUser {
    /// Portal id.
    #[serde(deserialize_with = "id")]
    pub id: i64,
    /// Username.
    #[serde(default, deserialize_with = "text")]
    pub username: String,
    /// E-mail.
    #[serde(default, deserialize_with = "text")]
    pub email: String,
    /// Keys; the MyAccess id is kept as one of them. `None` when the
    /// listing leaves them out.
    #[serde(default)]
    pub user_ssh_keys: Option<Vec<Value>>,
}

impl PortalUser {
    /// Whether `myaccessid` is among the user's keys; `None` when the record
    /// does not carry the keys.
    pub fn has_key(&self, myaccessid: &str) -> Option<bool> {
        let keys = self.user_ssh_keys.as_ref()?;
        Some(
            keys.iter()
                .any(|k| k.get("key").and_then(Value::as_str).map(str::trim) == Some(myaccessid)),
        )
    }
}

/// A project member, from either record shape the portal uses: the user
/// nested under `member`, or `username`/`email` at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Membership id (for toggle-status).
    pub id: i64,
    /// Active or deactivated.
    pub active: bool,
    /// The member's username ("" when not given).
    pub username: String,
    /// The member's e-mail ("" when not given).
    pub email: String,
}

impl Member {
    /// Reads one member record; `None` when it has no id.
    pub fn parse(v: &Value) -> Option<Self> {
        let id = v.get("id").and_then(id_of)?;
        let field = |key: &str| {
            let nested = v.get("member").and_then(|m| m.get(key));
            v.get(key)
                .or(nested)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Some(Self {
            id,
            active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
            username: field("username"),
            email: field("email"),
        })
    }

    /// Whether this member is `name` (by username, or by e-mail when the
    /// username is an address).
    pub fn is(&self, name: &str, email: &str) -> bool {
        (!self.username.is_empty() && self.username == name)
            || (!self.email.is_empty()
                && (self.email.eq_ignore_ascii_case(name)
                    || self.email.eq_ignore_ascii_case(email)))
    }
}

/// Reads a member list; a record without an id makes the whole list
/// unusable, so that a garbled answer never reads as "fewer members".
pub fn members(list: Vec<Value>) -> Result<Vec<Member>, String> {
    list.iter()
        .map(|v| Member::parse(v).ok_or_else(|| format!("a member record without an id: {v}")))
        .collect()
}

/// Usage of one allocation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Usage {
    /// Total used.
    #[serde(default, deserialize_with = "amount")]
    pub total: f64,
    /// Used per username.
    #[serde(default)]
    pub users: serde_json::Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_member_shapes_are_read() {
        let nested = Member::parse(&json!({"id": 3, "active": false, "member": {"id": 9, "username": "ada", "email": "ada@uni.pt"}})).unwrap();
        let flat = Member::parse(&json!({"id": "3", "active": false, "username": "ada", "email": "ada@uni.pt", "user_id": 9})).unwrap();
        assert_eq!(nested, flat);
        assert!(flat.is("ada", ""));
        assert!(flat.is("someone", "ADA@uni.pt"));
        assert!(!flat.is("bob", ""));
    }

    #[test]
    fn a_member_list_with_a_record_without_id_is_refused_whole() {
        assert!(
            members(vec![
                json!({"id": 1, "username": "a"}),
                json!({"username": "b"})
            ])
            .is_err()
        );
    }

    #[test]
    fn allocations_take_the_project_as_an_id_or_an_object() {
        let a: Allocation = serde_json::from_value(json!({"id": 1, "type": "x", "identifier": "alloc_1_cpu", "size": "10", "project": {"id": 4}})).unwrap();
        assert_eq!((a.project, a.size, a.active), (4, 10.0, false));
        assert!(serde_json::from_value::<Allocation>(json!({"id": 1, "project": 4})).is_err());
    }

    #[test]
    fn a_users_myaccessid_is_found_among_its_keys() {
        let u: PortalUser = serde_json::from_value(
            json!({"id": 1, "user_ssh_keys": [{"key": "cuid@myaccessid.org"}]}),
        )
        .unwrap();
        assert_eq!(u.has_key("cuid@myaccessid.org"), Some(true));
        assert_eq!(u.has_key("other"), Some(false));
        let bare: PortalUser = serde_json::from_value(json!({"id": 1})).unwrap();
        assert_eq!(bare.has_key("x"), None);
    }
}
