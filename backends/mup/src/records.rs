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

/// A size that may be unreadable: `None` rather than a made-up 0, so an
/// unreadable size never becomes a limit.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(number(&Value::deserialize(d)?).filter(|v| *v >= 0.0))
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
    /// Description; a project this backend made ends with its marker.
    #[serde(default, deserialize_with = "text")]
    pub description: String,
    /// Whether the project is active. Required: a project of unknown state
    /// is never activated or deactivated on a guess.
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
    /// Size in the portal's units; `None` when unreadable.
    #[serde(default, deserialize_with = "size")]
    pub size: Option<f64>,
    /// Used so far, as the portal gave it: written back unchanged when the
    /// allocation is edited.
    #[serde(default)]
    pub used: Value,
    /// Whether it is active. Required: an allocation of unknown state is
    /// neither a live resource nor a deleted one.
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
    /// Reads one member record; `None` when it has no id or its `active`
    /// flag is not a boolean.
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
        // No flag means active (listings of active members only leave it
        // out); a flag that is not a boolean is unreadable.
        let active = match v.get("active") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return None,
        };
        Some(Self {
            id,
            active,
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

/// Reads an allocation list. A record this backend cannot read (no id, no
/// identifier, no state) is someone else's as far as it is concerned: it is
/// skipped, and counted as `unreadable` so that a project holding one is
/// never taken for empty.
pub fn allocations(list: Vec<Value>) -> (Vec<Allocation>, usize) {
    let mut unreadable = 0;
    let read = list
        .into_iter()
        .filter_map(|v| match serde_json::from_value::<Allocation>(v) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an allocation record that cannot be read");
                unreadable += 1;
                None
            }
        })
        .collect();
    (read, unreadable)
}

/// Reads a member list; a record without an id makes the whole list
/// unusable, so that a garbled answer never reads as "fewer members".
pub fn members(list: Vec<Value>) -> Result<Vec<Member>, String> {
    list.iter()
        .map(|v| {
            Member::parse(v).ok_or_else(|| {
                format!("a member record without an id or a boolean active flag: {v}")
            })
        })
        .collect()
}

/// Usage of one allocation.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Total used.
    pub total: f64,
    /// Used per username, as given.
    pub users: serde_json::Map<String, Value>,
}

impl Usage {
    /// Reads a usage answer. It must carry a numeric `total` or a `users`
    /// object: an answer with neither (`{}`, a `detail` message) says
    /// nothing about usage and must never read as zero.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let total = match v.get("total") {
            None => None,
            Some(t) => Some(
                number(t)
                    .filter(|t| *t >= 0.0)
                    .ok_or_else(|| format!("total {t} is not a non-negative number"))?,
            ),
        };
        let users = match v.get("users") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => return Err(format!("users {other} is not an object")),
        };
        if total.is_none() && users.is_none() {
            return Err(format!("no total and no users in {v}"));
        }
        let users = users.unwrap_or_default();
        let sum: f64 = users.values().filter_map(number).sum();
        Ok(Self {
            total: total.unwrap_or(sum),
            users,
        })
    }
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
    fn allocations_take_the_project_as_an_id_or_an_object_and_never_invent_a_size() {
        let a: Allocation = serde_json::from_value(json!({"id": 1, "type": "x", "identifier": "alloc_1_cpu", "size": "10", "active": true, "project": {"id": 4}})).unwrap();
        assert_eq!((a.project, a.size, a.active), (4, Some(10.0), true));
        let b: Allocation = serde_json::from_value(
            json!({"id": 1, "identifier": "i", "size": null, "active": true, "project": 4}),
        )
        .unwrap();
        assert_eq!(b.size, None);
        assert!(
            serde_json::from_value::<Allocation>(json!({"id": 1, "project": 4, "active": true}))
                .is_err()
        );
        let (read, unreadable) = allocations(vec![
            json!({"id": 1, "identifier": "i", "active": true, "project": 4}),
            json!({"id": 2}),
        ]);
        assert_eq!((read.len(), unreadable), (1, 1));
    }

    #[test]
    fn a_usage_answer_without_numbers_is_unreadable_never_zero() {
        for bad in [
            json!({}),
            json!([]),
            json!({"detail": "Not found."}),
            json!({"total": null}),
            json!({"total": "n/a"}),
            json!({"users": [1]}),
        ] {
            assert!(Usage::parse(&bad).is_err(), "{bad}");
        }
        let u = Usage::parse(&json!({"users": {"a": 1.5, "b": "2"}})).unwrap();
        assert_eq!(u.total, 3.5);
        assert_eq!(Usage::parse(&json!({"total": "4"})).unwrap().total, 4.0);
    }

    #[test]
    fn a_member_with_a_flag_that_is_not_a_boolean_is_unreadable() {
        assert!(Member::parse(&json!({"id": 1, "active": "false"})).is_none());
        assert!(Member::parse(&json!({"id": 1, "active": 0})).is_none());
        assert!(Member::parse(&json!({"id": 1})).unwrap().active);
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
