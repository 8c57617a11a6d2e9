//! Offering users and their usernames.
//!
//! Waldur creates an offering user in `Requested` when someone joins a
//! project that uses the offering; the provider's agent must give it a local
//! username. The state machine, as the original drives it:
//!
//! ```text
//! Requested ──begin_creating──▶ Creating ──PATCH username──▶ OK
//! Creating ──set_pending_account_linking / _additional_validation──▶ Pending *
//! Creating ──set_error_creating──▶ Error creating ──begin_creating──▶ Creating
//! Pending * ──set_validation_complete──▶ OK (then PATCH username)
//! ```
//!
//! Names come from the configured source: the backend's GetUsername then
//! GenerateUsername, or the built-in generator (the Waldur username cleaned to
//! a portable POSIX name, with a prefix and a numeric suffix on collision).
//! Two deliberate differences from the original: with no generator users are
//! left in `Requested` (the original moved them to `Creating` for ever), and
//! a retryable backend failure leaves the user alone instead of erring it.

use std::collections::HashSet;
use std::sync::Mutex;

use futures::StreamExt;
use serde_json::Value;
use tonic::Code;
use waldur_backend_api::reason;
use waldur_backend_api::types::{self as api, Capability};

use crate::backend::{BackendCallError, BackendHandle};
use crate::config::{UsernameConfig, UsernameSource};
use waldur_client::types::{OfferingUser, offering_user_state as st};
use waldur_client::{WaldurClient, WaldurError};

/// Users the generator works on.
pub const OPEN_STATES: [&str; 5] = [
    st::REQUESTED,
    st::CREATING,
    st::ERROR_CREATING,
    st::PENDING_ACCOUNT_LINKING,
    st::PENDING_ADDITIONAL_VALIDATION,
];

/// Whether an offering user in `state` waits for the agent.
pub fn is_open(state: &str) -> bool {
    OPEN_STATES.contains(&state)
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernameSummary {
    /// Usernames written to Waldur.
    pub assigned: usize,
    /// Users moved to a pending state (the user must act).
    pub pending: usize,
    /// Users moved to Error creating.
    pub failed: usize,
    /// Users left as they were for now (temporary failures).
    pub deferred: usize,
    /// Why nothing was done, if so.
    pub skipped: Option<String>,
}

impl UsernameSummary {
    /// Whether Waldur's offering users changed.
    pub fn changed(&self) -> bool {
        self.assigned + self.pending + self.failed > 0
    }
}

/// The outcome of asking for a name.
enum Generated {
    Name(String),
    LinkingRequired { comment: String, url: String },
    ValidationRequired { comment: String, url: String },
    Failed(String),
    Temporary(String),
}

/// Username management of one offering.
#[derive(Clone)]
pub struct Usernames {
    offering_uuid: waldur_client::ids::Uuid,
    waldur: WaldurClient,
    backend: Option<BackendHandle>,
    config: UsernameConfig,
    /// A configuration that can never name anyone was reported.
    misconfigured_said: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Why the offering does not let the provider name its users (the two
/// plugin options the original checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    /// Waldur, not the provider, names the users.
    #[error("the offering's username_generation_policy is {0:?}; Waldur names the users")]
    WaldurNames(String),
    /// The provider may not create offering users.
    #[error("the offering's plugin option service_provider_can_create_offering_user is not true")]
    ProviderMayNotCreate,
}

/// Whether the offering lets the provider create offering users; the error
/// names what is missing.
pub fn policy_allows(plugin_options: &Value) -> Result<(), PolicyRefusal> {
    let policy = plugin_options
        .get("username_generation_policy")
        .and_then(Value::as_str)
        .unwrap_or("service_provider");
    if policy != "service_provider" {
        return Err(PolicyRefusal::WaldurNames(policy.to_owned()));
    }
    let can_create = plugin_options
        .get("service_provider_can_create_offering_user")
        .is_some_and(truthy);
    if !can_create {
        return Err(PolicyRefusal::ProviderMayNotCreate);
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

impl Usernames {
    /// Username management for an offering; `backend` is the one asked for
    /// names when the source is `backend`.
    pub fn new(
        offering_uuid: &waldur_client::ids::Uuid,
        waldur: WaldurClient,
        backend: Option<BackendHandle>,
        config: UsernameConfig,
    ) -> Self {
        Self {
            offering_uuid: offering_uuid.clone(),
            waldur,
            backend,
            config,
            misconfigured_said: Default::default(),
        }
    }

    /// Why the configuration can never name anyone, if so: the source is
    /// the backend (the default) and the backend does not make usernames.
    /// A configuration error, said by `check` and once in the log, not a
    /// state every cycle waits in.
    pub async fn misconfigured(&self) -> Option<String> {
        if self.config.source != UsernameSource::Backend {
            return None;
        }
        match &self.backend {
            None => Some(
                "usernames.source is backend (the default) but the offering names no backend for usernames: set backends.usernames or backends.membership, or usernames.source".into(),
            ),
            Some(b) => match b.has(Capability::Usernames).await {
                Ok(false) => Some(format!(
                    "usernames.source is backend (the default) but backend {} does not make usernames (no USERNAMES capability): set usernames.source to waldur_username (the built-in generator) or none (Waldur names users), or name a backend that does in backends.usernames",
                    b.name()
                )),
                _ => None,
            },
        }
    }

    /// Why no name can be generated, if so.
    async fn unavailable(&self) -> Option<String> {
        match self.config.source {
            UsernameSource::None => Some("usernames.source is none".into()),
            UsernameSource::WaldurUsername => None,
            UsernameSource::Backend => match &self.backend {
                None => Some("no backend is configured for usernames".into()),
                Some(b) => match b.has(Capability::Usernames).await {
                    Ok(true) => None,
                    Ok(false) => Some(format!(
                        "backend {} does not advertise USERNAMES; set usernames.source: waldur_username to use the built-in generator",
                        b.name()
                    )),
                    Err(e) => Some(format!("backend capabilities unavailable: {e}")),
                },
            },
        }
    }

    /// Drives every open offering user of `users` one step through the
    /// state machine. `plugin_options` are the offering's.
    pub async fn process(&self, users: &[OfferingUser], plugin_options: &Value) -> UsernameSummary {
        let open: Vec<OfferingUser> = users
            .iter()
            .filter(|u| !u.is_restricted && OPEN_STATES.contains(&u.state.as_str()))
            .cloned()
            .collect();
        let taken = users
            .iter()
            .filter_map(|u| u.username.clone())
            .filter(|n| !n.is_empty())
            .collect();
        self.process_open(open, taken, plugin_options).await
    }

    /// As [`Self::process`], given the open offering users and every
    /// username already taken in the offering (what an index built a page
    /// at a time keeps).
    pub async fn process_open(
        &self,
        open: Vec<OfferingUser>,
        taken: HashSet<String>,
        plugin_options: &Value,
    ) -> UsernameSummary {
        if open.is_empty() {
            return UsernameSummary::default();
        }
        if let Err(why) = policy_allows(plugin_options) {
            tracing::debug!(offering = %self.offering_uuid, reason = %why, "usernames are not generated");
            return UsernameSummary {
                skipped: Some(why.to_string()),
                ..Default::default()
            };
        }
        if let Some(why) = self.misconfigured().await {
            if !self
                .misconfigured_said
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!(offering = %self.offering_uuid, users = open.len(), "config error: {why}");
            }
            return UsernameSummary {
                skipped: Some(why),
                ..Default::default()
            };
        }
        if let Some(why) = self.unavailable().await {
            tracing::warn!(offering = %self.offering_uuid, reason = %why, users = open.len(), "offering users wait for a username");
            return UsernameSummary {
                skipped: Some(why),
                ..Default::default()
            };
        }
        let taken: Mutex<HashSet<String>> = Mutex::new(taken);
        let outcomes: Vec<Result<Step, WaldurError>> = futures::stream::iter(open)
            .map(|u| {
                let taken = &taken;
                async move { self.advance(&u, taken).await }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut summary = UsernameSummary::default();
        for o in outcomes {
            match o {
                Ok(Step::Assigned) => summary.assigned += 1,
                Ok(Step::Pending) => summary.pending += 1,
                Ok(Step::Failed) => summary.failed += 1,
                Ok(Step::Unchanged) => summary.deferred += 1,
                Err(e) => {
                    // A wrong-state 400 means another worker moved the user
                    // first; Waldur is the judge, the next pass sees the truth.
                    tracing::warn!(error = %e, "offering user transition failed");
                    summary.deferred += 1;
                }
            }
        }
        summary
    }

    async fn advance(
        &self,
        u: &OfferingUser,
        taken: &Mutex<HashSet<String>>,
    ) -> Result<Step, WaldurError> {
        let w = &self.waldur;
        let id = match u.id() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "offering user with an invalid id; skipped");
                return Ok(Step::Unchanged);
            }
        };
        let mut state = u.state.as_str();
        if state == st::REQUESTED || state == st::ERROR_CREATING {
            w.offering_user_begin_creating(&id).await?;
            state = st::CREATING;
        }
        let pending =
            state == st::PENDING_ACCOUNT_LINKING || state == st::PENDING_ADDITIONAL_VALIDATION;
        match self.generate(u, taken).await {
            Generated::Name(name) => {
                if pending {
                    w.offering_user_validation_complete(&id).await?;
                }
                w.set_offering_username(&id, &name).await?;
                tracing::info!(offering_user = %u.uuid, user = %u.user_username, username = %name, "username assigned");
                Ok(Step::Assigned)
            }
            Generated::LinkingRequired { comment, url } => {
                if state == st::PENDING_ACCOUNT_LINKING {
                    return Ok(Step::Unchanged);
                }
                w.offering_user_pending_linking(&id, &comment, &url).await?;
                Ok(Step::Pending)
            }
            Generated::ValidationRequired { comment, url } => {
                if state == st::PENDING_ADDITIONAL_VALIDATION {
                    return Ok(Step::Unchanged);
                }
                w.offering_user_pending_validation(&id, &comment, &url)
                    .await?;
                Ok(Step::Pending)
            }
            Generated::Failed(why) => {
                tracing::warn!(offering_user = %u.uuid, error = %why, "username generation failed");
                if state == st::CREATING {
                    w.offering_user_error_creating(&id).await?;
                    return Ok(Step::Failed);
                }
                Ok(Step::Unchanged)
            }
            Generated::Temporary(why) => {
                tracing::info!(offering_user = %u.uuid, reason = %why, "username generation deferred");
                Ok(Step::Unchanged)
            }
        }
    }

    async fn generate(&self, u: &OfferingUser, taken: &Mutex<HashSet<String>>) -> Generated {
        match self.config.source {
            UsernameSource::WaldurUsername => {
                let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(existing) = u.username.as_deref().filter(|n| !n.is_empty()) {
                    return Generated::Name(existing.to_owned());
                }
                match derive_username(
                    &u.user_username,
                    &self.config.prefix,
                    self.config.max_length,
                    &taken,
                ) {
                    Some(name) => {
                        taken.insert(name.clone());
                        Generated::Name(name)
                    }
                    None => Generated::Failed(format!(
                        "no username can be derived from {:?}",
                        u.user_username
                    )),
                }
            }
            UsernameSource::Backend => {
                let Some(backend) = &self.backend else {
                    return Generated::Temporary("no backend".into());
                };
                let user = api_offering_user(u);
                match backend.get_username(user.clone()).await {
                    Ok(Some(known)) => return Generated::Name(known),
                    Ok(None) => {}
                    Err(e) => return classify(e),
                }
                match backend.generate_username(user).await {
                    Ok(n) if n.is_empty() => {
                        Generated::Failed("the backend generated an empty username".into())
                    }
                    Ok(n) => Generated::Name(n),
                    Err(e) => classify(e),
                }
            }
            UsernameSource::None => Generated::Temporary("no generator".into()),
        }
    }
}

enum Step {
    Assigned,
    Pending,
    Failed,
    Unchanged,
}

fn classify(e: BackendCallError) -> Generated {
    let comment = e
        .metadata
        .get("comment")
        .filter(|c| !c.is_empty())
        .cloned()
        .unwrap_or_else(|| e.message.clone());
    let url = e.metadata.get("comment_url").cloned().unwrap_or_default();
    if e.code == Code::FailedPrecondition && e.reason == reason::ACCOUNT_LINKING_REQUIRED {
        return Generated::LinkingRequired { comment, url };
    }
    if e.code == Code::FailedPrecondition && e.reason == reason::ADDITIONAL_VALIDATION_REQUIRED {
        return Generated::ValidationRequired { comment, url };
    }
    if e.is_retryable() {
        return Generated::Temporary(e.to_string());
    }
    Generated::Failed(e.to_string())
}

/// The offering user as the backend contract describes it.
pub fn api_offering_user(u: &OfferingUser) -> api::OfferingUser {
    api::OfferingUser {
        offering_user_uuid: u.uuid.clone(),
        user_uuid: u.user_uuid.clone(),
        waldur_username: u.user_username.clone(),
        email: u.user_email.clone(),
        full_name: u.user_full_name.clone(),
        first_name: u.user_first_name.clone(),
        last_name: u.user_last_name.clone(),
        current_username: u.username.clone().unwrap_or_default(),
        attributes: u
            .extra
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("user_")?;
                let value = match v {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((name.to_owned(), value))
            })
            .collect(),
    }
}

/// The built-in generator: the local part of the Waldur username, lower
/// case, `.`, `-` and spaces as `_`, other characters dropped, starting with
/// a letter, after `prefix`, at most `max_len` long, with `1`, `2`, ... on
/// collision (the suffix replaces the tail so the length holds).
pub fn derive_username(
    waldur_username: &str,
    prefix: &str,
    max_len: usize,
    taken: &HashSet<String>,
) -> Option<String> {
    let local = waldur_username.split('@').next().unwrap_or_default();
    let mut cleaned = String::new();
    for c in local.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' | '_' => cleaned.push(c),
            '.' | '-' | ' ' if !cleaned.ends_with('_') && !cleaned.is_empty() => cleaned.push('_'),
            _ => {}
        }
    }
    let cleaned = cleaned.trim_end_matches('_');
    if cleaned.is_empty() {
        return None;
    }
    let mut base = format!("{}{cleaned}", prefix.to_lowercase());
    if !base.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        base.insert(0, 'u');
    }
    let fit = |s: &str, room: usize| -> String { s.chars().take(room).collect() };
    let base = fit(&base, max_len);
    if !taken.contains(&base) {
        return Some(base);
    }
    (1..100_000u32)
        .map(|n| {
            let suffix = n.to_string();
            format!(
                "{}{suffix}",
                fit(&base, max_len.saturating_sub(suffix.len()))
            )
        })
        .find(|candidate| !taken.contains(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_portable() {
        let none = HashSet::new();
        assert_eq!(
            derive_username("Ada.Lovelace@uni.example", "", 32, &none).as_deref(),
            Some("ada_lovelace")
        );
        assert_eq!(
            derive_username("42cats", "", 32, &none).as_deref(),
            Some("u42cats")
        );
        assert_eq!(
            derive_username("ümlaut-user", "hpc_", 32, &none).as_deref(),
            Some("hpc_mlaut_user")
        );
        assert_eq!(derive_username("@@@", "", 32, &none), None);
    }

    #[test]
    fn collisions_get_a_suffix_within_the_length() {
        let taken: HashSet<String> = ["abcdef".to_string(), "abcde1".to_string()].into();
        assert_eq!(
            derive_username("abcdefgh", "", 6, &taken).as_deref(),
            Some("abcde2")
        );
    }

    #[test]
    fn the_policy_needs_both_plugin_options() {
        assert!(policy_allows(&serde_json::json!({})).is_err());
        assert!(
            policy_allows(&serde_json::json!({"service_provider_can_create_offering_user": true}))
                .is_ok()
        );
        assert!(
            policy_allows(&serde_json::json!({"username_generation_policy": "anonymized", "service_provider_can_create_offering_user": true}))
                .is_err()
        );
    }
}
