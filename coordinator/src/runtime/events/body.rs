//! Event bodies decoded into meaning in one place: every id
//! is checked here, so nothing downstream handles raw JSON or puts an
//! unchecked string into a URL. Unknown keys are ignored, as Waldur adds
//! fields between versions.

use serde_json::{Map, Value};

use waldur_client::ids::{InvalidUuid, Uuid};

/// Order states that need no work (the original's drop list).
const ORDER_STATES_IGNORED: [&str; 7] = [
    "done",
    "erred",
    "pending-consumer",
    "canceled",
    "rejected",
    "pending-project",
    "pending-start-date",
];

/// One Waldur event, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An order changed; `None` when its state needs work.
    Order {
        /// The order.
        order: Uuid,
        /// A state that needs no work, if the event says so.
        settled: Option<String>,
    },
    /// A project role was granted or revoked.
    UserRole {
        /// The project.
        project: Uuid,
        /// Only this resource, when the event names one and no user.
        resource: Option<Uuid>,
    },
    /// A resource changed (for example paused).
    Resource {
        /// The resource.
        resource: Uuid,
    },
    /// A service or course account was created or closed.
    Account {
        /// `service_account` or `course_account`.
        kind: &'static str,
        /// `create` or `delete`.
        action: &'static str,
        /// The project.
        project: Uuid,
    },
    /// An offering user was created or its attributes changed.
    OfferingUserChanged,
    /// An offering user got a username, for these backend ids.
    UsernameSet {
        /// The resources to add the user to.
        backend_ids: Vec<String>,
    },
    /// An offering user was updated or deleted (no work).
    OfferingUserOther(&'static str),
    /// Waldur asks for a full sync of the offering.
    OfferingSync,
    /// Periodic settings for a resource.
    PeriodicLimits(PeriodicLimits),
    /// A resource import request.
    ImportRequest {
        /// The request.
        request: Uuid,
    },
}

/// The body of a `resource_periodic_limits` event.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicLimits {
    /// The Waldur resource (reported back to the policy).
    pub resource: Option<Uuid>,
    /// The policy to report to.
    pub policy: Option<Uuid>,
    /// The backend id, when present.
    pub backend_id: Option<String>,
    /// Whether the action is `apply_periodic_settings`.
    pub apply: bool,
    /// The settings.
    pub settings: Map<String, Value>,
}

/// Why an event body is unusable (redelivering it would never help).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("the body is not a JSON object")]
    NotObject,
    /// A field the event needs is absent or empty.
    #[error("{key} is missing or not a {expected}")]
    Missing {
        /// The field.
        key: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// A field is present with the wrong type.
    #[error("{key}: {found} is not a {expected}")]
    WrongType {
        /// The field.
        key: &'static str,
        /// What it holds.
        found: Value,
        /// The type it must have.
        expected: &'static str,
    },
    /// An id that is not a UUID.
    #[error(transparent)]
    InvalidId(#[from] InvalidUuid),
    /// An `action` this agent does not know.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// An object type this agent does not know.
    #[error("unknown object type {0:?}")]
    UnknownObjectType(String),
}

/// An event body: a JSON object whose fields are read as each event type
/// needs them (a field of an unexpected type elsewhere in the body does not
/// spoil the event).
struct Raw(Map<String, Value>);

impl Raw {
    /// A non-empty string field; anything else is absent.
    fn text(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A field that must be a non-empty string when present.
    fn string(&self, key: &'static str) -> Result<Option<&str>, BodyError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(BodyError::WrongType {
                key,
                found: other.clone(),
                expected: "string",
            }),
        }
    }

    fn uuid(&self, key: &'static str) -> Result<Uuid, BodyError> {
        let value = self.string(key)?.ok_or(BodyError::Missing {
            key,
            expected: "string",
        })?;
        Ok(Uuid::parse(key, value)?)
    }

    fn optional_uuid(&self, key: &'static str) -> Result<Option<Uuid>, BodyError> {
        Ok(self.string(key)?.map(|s| Uuid::parse(key, s)).transpose()?)
    }
}

impl Event {
    /// Decodes the body of an event of `object_type`; the error says why it
    /// is unusable (redelivering such a message would never help).
    pub fn parse(object_type: &str, body: &[u8]) -> Result<Self, BodyError> {
        let value: Value = serde_json::from_slice(body)?;
        let Value::Object(map) = value else {
            return Err(BodyError::NotObject);
        };
        let raw = Raw(map);
        match object_type {
            "order" => Ok(Self::Order {
                order: raw.uuid("order_uuid")?,
                settled: raw
                    .text("order_state")
                    .filter(|s| ORDER_STATES_IGNORED.contains(s))
                    .map(str::to_owned),
            }),
            "user_role" => {
                let project = raw.uuid("project_uuid")?;
                let user = raw.optional_uuid("user_uuid")?;
                if user.is_some() && !raw.0.get("granted").is_some_and(Value::is_boolean) {
                    return Err(BodyError::Missing {
                        key: "granted",
                        expected: "boolean",
                    });
                }
                let resource = raw.optional_uuid("resource_uuid")?;
                Ok(Self::UserRole {
                    project,
                    resource: resource.filter(|_| user.is_none()),
                })
            }
            "resource" => Ok(Self::Resource {
                resource: raw.uuid("resource_uuid")?,
            }),
            "service_account" | "course_account" => {
                let kind = if object_type == "service_account" {
                    "service_account"
                } else {
                    "course_account"
                };
                let action = match raw.string("action")?.unwrap_or("create") {
                    "create" => "create",
                    "delete" => "delete",
                    other => return Err(BodyError::UnknownAction(other.to_owned())),
                };
                Ok(Self::Account {
                    kind,
                    action,
                    project: raw.uuid("project_uuid")?,
                })
            }
            "offering_user" => match raw.string("action")?.ok_or(BodyError::Missing {
                key: "action",
                expected: "string",
            })? {
                "create" | "attribute_update" => Ok(Self::OfferingUserChanged),
                "username_set" => Ok(Self::UsernameSet {
                    backend_ids: match raw.0.get("resource_backend_ids") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(ids)) => ids
                            .iter()
                            .filter_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                            .collect(),
                        Some(other) => {
                            return Err(BodyError::WrongType {
                                key: "resource_backend_ids",
                                found: other.clone(),
                                expected: "list",
                            });
                        }
                    },
                }),
                "update" => Ok(Self::OfferingUserOther("update")),
                "delete" => Ok(Self::OfferingUserOther("delete")),
                other => Err(BodyError::UnknownAction(other.to_owned())),
            },
            "offering_resources_sync" => Ok(Self::OfferingSync),
            "resource_periodic_limits" => Ok(Self::PeriodicLimits(PeriodicLimits {
                resource: raw.optional_uuid("resource_uuid")?,
                policy: raw.optional_uuid("policy_uuid")?,
                backend_id: raw.string("backend_id")?.map(str::to_owned),
                apply: raw.text("action") == Some("apply_periodic_settings"),
                settings: match raw.0.get("settings") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(o)) => o.clone(),
                    Some(other) => {
                        return Err(BodyError::WrongType {
                            key: "settings",
                            found: other.clone(),
                            expected: "object",
                        });
                    }
                },
            })),
            "importable_resources" => Ok(Self::ImportRequest {
                request: raw.uuid("backend_resource_request_uuid")?,
            }),
            other => Err(BodyError::UnknownObjectType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0f0f0000000000000000000000000001";

    #[test]
    fn an_order_in_a_final_state_is_settled_and_others_need_work() {
        let e = Event::parse(
            "order",
            format!(r#"{{"order_uuid":"{U}","order_state":"done"}}"#).as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            e,
            Event::Order {
                settled: Some(_),
                ..
            }
        ));
        let e = Event::parse("order", format!(r#"{{"order_uuid":"{U}"}}"#).as_bytes()).unwrap();
        assert!(matches!(e, Event::Order { settled: None, .. }));
    }

    #[test]
    fn an_id_that_is_not_a_uuid_is_refused_naming_the_field() {
        let e = Event::parse("order", br#"{"order_uuid":"../../../etc/passwd"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("order_uuid: "), "{e}");
        let e = Event::parse("resource", br#"{"resource_uuid":42}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("resource_uuid: "), "{e}");
        // A field of another type that this event does not read is no harm.
        let body = format!(r#"{{"order_uuid":"{U}","backend_id":7}}"#);
        assert!(Event::parse("order", body.as_bytes()).is_ok());
        let e = Event::parse("resource_periodic_limits", br#"{"settings": "everything"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("settings: "), "{e}");
        let e = Event::parse(
            "importable_resources",
            br#"{"backend_resource_request_uuid":"x/../y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("backend_resource_request_uuid"), "{e}");
    }

    #[test]
    fn a_role_event_with_a_user_needs_a_boolean_granted() {
        let body = format!(r#"{{"project_uuid":"{U}","user_uuid":"{U}"}}"#);
        assert!(Event::parse("user_role", body.as_bytes()).is_err());
        let body = format!(r#"{{"project_uuid":"{U}","user_uuid":"{U}","granted":true}}"#);
        assert!(Event::parse("user_role", body.as_bytes()).is_ok());
    }

    #[test]
    fn garbage_bodies_are_refused_with_a_reason() {
        assert!(
            Event::parse("order", b"\xff\xfe")
                .unwrap_err()
                .to_string()
                .starts_with("not JSON")
        );
        assert_eq!(
            Event::parse("order", b"[1]").unwrap_err().to_string(),
            "the body is not a JSON object"
        );
        assert!(Event::parse("nonsense", b"{}").is_err());
    }
}
