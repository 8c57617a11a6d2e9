//! What one Helmholtz Cloud request turns into: the transport-free half of
//! the adapter. [`HcaService::handle`] takes a message's type, correlation id
//! and body and answers with the reply to publish, or with "try again later"
//! when the backend is temporarily unavailable (the message is then requeued
//! unanswered, so the user never sees a transient failure).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use tonic::Code;
use waldur_backend_api::reason;
use waldur_backend_api::types::{CreateResource, Outcome as UserOutcome, User};

use super::config::{ErrorTypeConfig, ResolvedBroker, ServiceConfig};
use super::mapping::{Refusal, ResourceType};
use super::members::{LookupError, Members, Requester};
use crate::backend::{BackendCallError, BackendHandle};
use waldur_runtime::SettingError;
use waldur_runtime::secret::Env;

/// A reply to publish on the outbound queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The AMQP `type` property.
    pub message_type: String,
    /// The JSON body.
    pub body: Value,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer, then acknowledge. `outcome` labels metrics and logs
    /// (`pong`, `created`, `deallocated`, or the error kind).
    Reply {
        /// The answer.
        reply: Reply,
        /// Short outcome label.
        outcome: &'static str,
    },
    /// Nothing to answer yet (backend unavailable, still provisioning):
    /// requeue and handle the request again later.
    Retry(String),
}

/// One configured service with its resource types resolved.
pub struct HcaService {
    /// The settings.
    pub config: ServiceConfig,
    /// Helmholtz Cloud's id of this service.
    pub service_id: String,
    /// Broker settings with the environment applied.
    pub broker: ResolvedBroker,
    types: BTreeMap<String, Type>,
    backends: BTreeMap<String, BackendHandle>,
}

/// A resource type ready to serve: schema and templates, its backend, and
/// who becomes its members.
struct Type {
    mapping: ResourceType,
    backend: BackendHandle,
    members: Members,
}

impl std::fmt::Debug for HcaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HcaService")
            .field("name", &self.config.name)
            .field("service_id", &self.service_id)
            .finish_non_exhaustive()
    }
}

impl HcaService {
    /// Resolves a service's settings: environment, schemas, backends.
    pub fn build(
        config: &ServiceConfig,
        env: &dyn Env,
        base_dir: &Path,
        backends: &BTreeMap<String, BackendHandle>,
    ) -> Result<Self, SettingError> {
        let service_id = config.resolved_service_id(env)?;
        let broker = config.resolved_broker(env)?;
        let mut types = BTreeMap::new();
        let mut used = BTreeMap::new();
        for (name, t) in &config.resource_types {
            let handle = backends.get(&t.backend).cloned().ok_or_else(|| {
                SettingError::new(
                    format!("resource_types.{name}.backend"),
                    format!("{:?} is not a key of backends", t.backend),
                )
            })?;
            let compiled = ResourceType::load(t, base_dir)
                .map_err(|e| e.within(format_args!("resource_types.{name}")))?;
            if let Some(title) = compiled.title.as_deref()
                && title != name
            {
                return Err(SettingError::new(
                    format!("resource_types.{name}"),
                    format!(
                        "the schema's title is {title:?}; requests name the type by that title, so the key must be the same"
                    ),
                ));
            }
            let members = Members::load(&t.members, base_dir, env)
                .map_err(|e| e.within(format_args!("resource_types.{name}")))?;
            used.insert(t.backend.clone(), handle.clone());
            types.insert(
                name.clone(),
                Type {
                    mapping: compiled,
                    backend: handle,
                    members,
                },
            );
        }
        check_errors(&config.errors)?;
        Ok(Self {
            config: config.clone(),
            service_id,
            broker,
            types,
            backends: used,
        })
    }

    /// The resource types with their backends, by name.
    pub fn resource_types(&self) -> impl Iterator<Item = (&str, &ResourceType, &BackendHandle)> {
        self.types
            .iter()
            .map(|(n, t)| (n.as_str(), &t.mapping, &t.backend))
    }

    /// Every resource type's directory sources asked for their base:
    /// `(type, url, outcome)`, for `check`.
    pub async fn probe_member_sources(
        &self,
    ) -> Vec<(String, String, Result<Option<String>, String>)> {
        let mut out = Vec::new();
        for (name, t) in &self.types {
            for (url, outcome) in t.members.probe().await {
                out.push((name.clone(), url, outcome));
            }
        }
        out
    }

    /// Resource types whose allocations get no members (no `members:`
    /// sources): `check` warns about them.
    pub fn types_without_members(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .filter(|(_, t)| t.members.is_empty())
            .map(|(n, _)| n.as_str())
    }

    /// Handles one request. Never fails: every problem is a reply or a retry.
    pub async fn handle(
        &self,
        message_type: Option<&str>,
        correlation_id: Option<&str>,
        body: &[u8],
    ) -> Outcome {
        let names = &self.config.message_types;
        let result = match message_type {
            Some(t) if t == names.ping => {
                return Outcome::Reply {
                    reply: Reply {
                        message_type: names.ping.clone(),
                        body: json!({}),
                    },
                    outcome: "pong",
                };
            }
            Some(t) if t == names.allocate => self.allocate(correlation_id, body).await,
            Some(t) if t == names.deallocate => self.deallocate(body).await,
            other => Err(Refusal::new(
                "UnknownMessageType",
                format!(
                    "this service does not handle {} messages",
                    match other {
                        Some(t) => format!("{:?}", clip_name(t)),
                        None => "untyped".into(),
                    }
                ),
            )
            .into()),
        };
        match result {
            Ok((reply, outcome)) => Outcome::Reply { reply, outcome },
            Err(Failure::Refused(r)) => Outcome::Reply {
                outcome: r.label,
                reply: Reply {
                    message_type: names.error.clone(),
                    body: json!({"type": r.kind, "message": r.message}),
                },
            },
            Err(Failure::Later(why)) => Outcome::Retry(why),
        }
    }

    async fn allocate(
        &self,
        correlation_id: Option<&str>,
        body: &[u8],
    ) -> Result<(Reply, &'static str), Failure> {
        let body = Value::Object(parse_object(body)?);
        let Some(correlation_id) = correlation_id.filter(|c| !c.is_empty()) else {
            return Err(Refusal::new(
                "MissingCorrelationId",
                "the request has no correlation_id, so its answer could not be matched",
            )
            .into());
        };
        let type_name = match body.get("type") {
            Some(Value::String(t)) => t.as_str(),
            _ => {
                return Err(Refusal::new(
                    "SpecificationInvalid",
                    "the request has no resource type (field \"type\")",
                )
                .into());
            }
        };
        let Some(Type {
            mapping: rt,
            backend,
            members,
        }) = self.types.get(type_name)
        else {
            return Err(Refusal::new(
                "UnknownResourceType",
                format!(
                    "this service does not offer resources of type {:?}",
                    clip_name(type_name)
                ),
            )
            .into());
        };
        let key = format!("{}/{correlation_id}", self.service_id);
        let derived = rt.derive(&body, correlation_id, &key)?;
        // GenerateBackendId is a pure function: a redelivered request names
        // the resource it made before.
        let backend_id = backend
            .generate_backend_id(&derived.base, &derived.context)
            .await
            .map_err(|e| self.backend_failure(&e, &derived.base))?;
        let users = match self.members_of(members, &derived.requester).await {
            Ok(users) => users,
            // A requester nobody can map is refused before anything exists
            // on the backend. A redelivered request whose resource exists
            // (its answer was lost, or it was still provisioning) is
            // answered as before, whatever the sources say now: the portal
            // must never hear "created" and then an error for one request.
            Err(Failure::Refused(r)) => match backend.get_resource(&backend_id).await {
                Ok(Some(_)) => {
                    tracing::warn!(service = %self.config.name, backend_id, reason = %r.message, "members not resolvable now; the allocation exists and keeps the members it has");
                    Vec::new()
                }
                Ok(None) => return Err(r.into()),
                Err(e) => return Err(self.backend_failure(&e, &derived.base)),
            },
            Err(later) => return Err(later),
        };
        let wanted = users.len();
        // A redelivered request carries the same correlation id, hence the
        // same resource UUID and backend id: CreateResource finds the
        // resource it made before and answers OK (contract §5.2).
        let resp = backend
            .lock(&backend_id)
            .await
            .create_resource(CreateResource {
                resource: derived.context,
                limits: derived.limits,
                users,
                ..CreateResource::default()
            })
            .await
            .map_err(|e| self.backend_failure(&e, &derived.base))?;
        if !resp.ready {
            return Err(Failure::Later(format!(
                "{backend_id} is still being provisioned"
            )));
        }
        // A member the backend could not add for now: answer later, when
        // the redelivered request adds them (CreateResource brings an
        // existing resource to the requested state). A member it refuses is
        // the operators' to fix; but an allocation nobody can use is no
        // allocation: it is removed and the requester told.
        let mut refused = 0;
        for r in &resp.user_results {
            if let UserOutcome::Failed(e) = &r.outcome {
                if crate::backend::retryable(e.code) {
                    tracing::warn!(service = %self.config.name, backend_id, user = %r.username, error = %e.message, "member not added yet; the request will be retried");
                    return Err(Failure::Later(format!(
                        "{backend_id}: member {} not added yet",
                        r.username
                    )));
                }
                tracing::error!(service = %self.config.name, backend_id, user = %r.username, error = %e.message, "member could not be added to the allocation");
                refused += 1;
            }
        }
        if wanted > 0 && refused == wanted {
            backend
                .lock(&backend_id)
                .await
                .delete_resource(None)
                .await
                .map_err(|e| self.backend_failure(&e, &derived.base))?;
            return Err(Refusal::new(
                "MembersNotAdded",
                "the service could not give any of the requester's accounts access; its operators have been notified",
            )
            .into());
        }
        let id = format!("{}:{backend_id}", backend.name());
        tracing::info!(service = %self.config.name, correlation_id, id, "resource allocated");
        Ok((
            Reply {
                message_type: self.config.message_types.created.clone(),
                body: json!({"id": id}),
            },
            "created",
        ))
    }

    async fn deallocate(&self, body: &[u8]) -> Result<(Reply, &'static str), Failure> {
        let body = parse_object(body)?;
        let Some(Value::String(id)) = body.get("id") else {
            return Err(
                Refusal::new("SpecificationInvalid", "the request has no resource id").into(),
            );
        };
        let unknown = || {
            Refusal::new(
                "UnknownResource",
                format!("no resource {:?} at this service", clip_name(id)),
            )
        };
        let (backend_name, backend_id) = id.split_once(':').ok_or_else(unknown)?;
        let backend = self.backends.get(backend_name).ok_or_else(unknown)?;
        // Only what a Helmholtz request could have created may be removed:
        // the same backend usually serves Waldur offerings too.
        let ours = self
            .types
            .values()
            .any(|t| t.backend.name() == backend_name && t.mapping.could_have_made(backend_id));
        if backend_id.is_empty() || !ours {
            return Err(unknown().into());
        }
        let resp = backend
            .lock(backend_id)
            .await
            .delete_resource(None)
            .await
            .map_err(|e| self.backend_failure(&e, backend_id))?;
        if !resp.ready {
            return Err(Failure::Later(format!(
                "{backend_id} is still being removed"
            )));
        }
        tracing::info!(service = %self.config.name, id, existed = resp.existed, "resource deallocated");
        Ok((
            Reply {
                message_type: self.config.message_types.deallocated.clone(),
                body: json!({"id": id}),
            },
            "deallocated",
        ))
    }

    /// The usernames the requester maps to, as backend users; none when
    /// the type has no member sources.
    async fn members_of(&self, members: &Members, who: &Requester) -> Result<Vec<User>, Failure> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        match members.resolve(who).await {
            Ok(names) => Ok(names.into_iter().map(User::named).collect()),
            Err(LookupError::Unknown(why)) => {
                tracing::warn!(service = %self.config.name, requester = %clip_name(who.id()), reason = %why, "requester has no local account");
                Err(Refusal::new("RequesterUnknown", why).into())
            }
            Err(LookupError::Ambiguous(why)) => {
                tracing::error!(service = %self.config.name, requester = %clip_name(who.id()), reason = %why, "requester is ambiguous");
                Err(Refusal::new("RequesterAmbiguous", why).into())
            }
            Err(LookupError::Unreadable(why)) => {
                tracing::error!(service = %self.config.name, requester = %clip_name(who.id()), reason = %why, "requester's members cannot be read");
                Err(Refusal::new(
                    "RequesterUnreadable",
                    format!(
                        "the members of {:?} cannot be read at this service; its operators have been notified",
                        clip_name(who.id())
                    ),
                )
                .into())
            }
            Err(LookupError::Unavailable(why)) => {
                tracing::warn!(service = %self.config.name, requester = %clip_name(who.id()), error = %why, "member source unavailable; the request will be retried");
                Err(Failure::Later(why))
            }
        }
    }

    /// What the user may see of a backend failure. Details go to the log
    /// only: backend messages can name hosts and commands. A reason listed
    /// under `errors:` shows the provider's type and text; a reason of the
    /// provider's own (not in the contract's table) shows as its type, like
    /// the original library's exception classes, with the backend's message
    /// cleaned of host names and paths.
    fn backend_failure(&self, e: &BackendCallError, name: &str) -> Failure {
        // Internal failures name hosts and commands: never shown, whatever
        // their reason.
        let showable = matches!(
            e.code,
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::AlreadyExists
        );
        let provider = showable && !reason::is_standard(&e.reason);
        if provider && let Some(t) = self.config.errors.get(&e.reason) {
            tracing::warn!(service = %self.config.name, error = %e, "backend refused the request");
            let message = t.message.clone().unwrap_or_else(|| user_text(&e.message));
            return Refusal::provider(t.error_type.clone(), message).into();
        }
        if provider && let Some(kind) = camel_case(&e.reason) {
            tracing::warn!(service = %self.config.name, error = %e, "backend refused the request");
            return Refusal::provider(kind, user_text(&e.message)).into();
        }
        if e.is_retryable() {
            tracing::warn!(service = %self.config.name, error = %e, "backend unavailable; the request will be retried");
            return Failure::Later(e.to_string());
        }
        tracing::warn!(service = %self.config.name, error = %e, "backend refused the request");
        match e.code {
            Code::AlreadyExists => Refusal::new(
                "ResourceAlreadyExists",
                format!(
                    "a resource named {name:?} already exists at this service; choose another name"
                ),
            ),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => Refusal::new(
                "RequestRefused",
                format!("the service refused the request: {}", user_text(&e.message)),
            ),
            _ => Refusal::new(
                "ProvisioningFailed",
                "the service could not provision the resource; its operators have been notified",
            ),
        }
        .into()
    }
}

enum Failure {
    Refused(Refusal),
    Later(String),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Refusal::new(
            "SpecificationInvalid",
            "the message body is not a JSON object",
        )),
        Err(e) => Err(Refusal::new(
            "SpecificationInvalid",
            format!("the message body is not valid JSON: {e}"),
        )),
    }
}

/// A backend's refusal as shown to users: one line, bounded, without
/// paths, URLs, host names or addresses (words with `/`, or with `.` or
/// `:` inside them).
fn user_text(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    let internal = |w: &str| {
        let inner = w.trim_end_matches(['.', ',', ':', ';', ')', '"', '\'']);
        w.contains('/') || inner.contains('.') || inner.contains(':')
    };
    let cleaned: Vec<&str> = line.split_whitespace().filter(|w| !internal(w)).collect();
    let text = cleaned.join(" ");
    if text.chars().count() > 300 {
        let cut: String = text.chars().take(300).collect();
        format!("{cut}…")
    } else if text.is_empty() {
        "no reason given".into()
    } else {
        text
    }
}

/// The `errors:` table: keys a backend could give of its own, values
/// a type name and, if set, a message.
fn check_errors(errors: &BTreeMap<String, ErrorTypeConfig>) -> Result<(), SettingError> {
    for (reason, e) in errors {
        let at = format!("errors.{reason}");
        if camel_case(reason).is_none() || reason::is_standard(reason) {
            return Err(SettingError::new(
                at,
                "is not a reason a backend could give of its own (upper snake case, like QUOTA_EXCEEDED, and not one of the contract's)",
            ));
        }
        if !is_type_name(&e.error_type) {
            return Err(SettingError::new(
                format!("{at}.type"),
                format!(
                    "{:?} is not a type name (letters and digits, starting with a letter, like QuotaExceeded)",
                    e.error_type
                ),
            ));
        }
        if e.message.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(SettingError::new(
                format!("{at}.message"),
                "is empty; leave it out to show the backend's own message",
            ));
        }
    }
    Ok(())
}

/// `QUOTA_EXCEEDED` → `QuotaExceeded`; `None` for anything that is not an
/// upper-snake reason.
fn camel_case(reason: &str) -> Option<String> {
    let ok = reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| {
        reason
            .split('_')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut cs = w.chars();
                let first = cs.next().map(|c| c.to_string()).unwrap_or_default();
                first + &cs.as_str().to_ascii_lowercase()
            })
            .collect()
    })
}

/// An `ErrorV1.type` an operator may configure: like a class name.
fn is_type_name(t: &str) -> bool {
    t.len() <= 64
        && t.starts_with(|c: char| c.is_ascii_alphabetic())
        && t.chars().all(|c| c.is_ascii_alphanumeric())
}

fn clip_name(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_reason_becomes_a_class_like_type() {
        assert_eq!(
            camel_case("QUOTA_EXCEEDED").as_deref(),
            Some("QuotaExceeded")
        );
        assert_eq!(camel_case("NO_GPU_2_LEFT").as_deref(), Some("NoGpu2Left"));
        assert_eq!(camel_case("quota exceeded"), None);
        assert_eq!(camel_case(""), None);
        assert!(is_type_name("QuotaExceeded") && !is_type_name("Quota Exceeded"));
    }

    #[test]
    fn the_errors_table_takes_only_provider_reasons_and_class_like_types() {
        let table = |yaml: &str| -> BTreeMap<String, ErrorTypeConfig> {
            serde_norway::from_str(yaml).unwrap()
        };
        assert!(check_errors(&table("QUOTA_EXCEEDED: {type: QuotaExceeded}")).is_ok());
        for (yaml, at) in [
            (
                "quota_exceeded: {type: QuotaExceeded}",
                "errors.quota_exceeded",
            ),
            (
                "RESOURCE_NOT_FOUND: {type: Gone}",
                "errors.RESOURCE_NOT_FOUND",
            ),
            ("QUOTA: {type: 'Quota Exceeded'}", "errors.QUOTA.type"),
            ("QUOTA: {type: Q, message: ' '}", "errors.QUOTA.message"),
        ] {
            let e = check_errors(&table(yaml)).unwrap_err().to_string();
            assert!(e.contains(at), "{yaml}: {e}");
        }
    }

    #[test]
    fn user_text_drops_paths_and_extra_lines() {
        assert_eq!(
            user_text("limit for unknown component gpu in /etc/slurm/x.conf\ntrace"),
            "limit for unknown component gpu in"
        );
        assert_eq!(
            user_text(
                "cannot reach slurmctld01.cluster.local at 10.0.0.5:6817 (see https://x.org/a)."
            ),
            "cannot reach at (see"
        );
        assert_eq!(user_text("quota exceeded."), "quota exceeded.");
        assert_eq!(user_text(""), "no reason given");
        assert!(user_text(&"x ".repeat(400)).ends_with('…'));
    }
}
