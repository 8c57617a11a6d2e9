//! A stateful simulator of MUP, the Portuguese national project-allocation
//! portal, for the tests and CI of the MUP backend.
//!
//! It serves MUP's REST API under `/api/` with HTTP basic authentication:
//! projects (created inactive, activated separately), their allocations and
//! usage, memberships, users and registration requests, with Django REST
//! framework's answers (`{"detail": ...}`, `{"<field>": ["<message>"]}`).
//! A control API under `/_sim/` (no authentication) seeds and inspects the
//! state, switches between answer shapes seen in different deployments,
//! records every API call and injects faults (status codes, raw bodies,
//! latency, dropped connections). [`MupSim`] offers the same from Rust.
//!
//! The README of this crate lists what is simulated and what is not known
//! about the real MUP.

#![warn(missing_docs)]

mod http;
mod net;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use state::{Allocation, Member, Options, Project, Refusal, SshKey, State, Usage, User};

/// A fault to inject into matching `/api/` requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fault {
    /// Only this method (`GET`, `POST` ...); empty matches all.
    pub method: String,
    /// Only paths containing this text (as sent, or percent-decoded).
    pub path_contains: String,
    /// Answer with this status instead of serving (default 500 when only
    /// `after_serving` is set, 200 with a `body`).
    pub status: Option<u16>,
    /// Wait this long first (alone: delays the real answer).
    pub latency_ms: u64,
    /// Answer with this raw body (an HTML page, a cut JSON text, `[]`).
    pub body: Option<String>,
    /// Content type of `body`; default `text/html; charset=utf-8` when it
    /// starts with `<`, else `application/json`.
    pub content_type: Option<String>,
    /// Apply this many times, then disappear (`None`: until cleared).
    pub times: Option<u32>,
    /// Close the connection without answering.
    pub drop: bool,
    /// Serve the request first (its effect happens), then answer with the
    /// fault: the write went through, the answer was lost or garbled.
    pub after_serving: bool,
}

impl Fault {
    /// A fault answering `status` (with `{"detail": "injected fault N"}`).
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Only requests whose path contains `text`.
    pub fn on(mut self, text: &str) -> Self {
        self.path_contains = text.to_owned();
        self
    }

    /// Only requests of `method`.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Whether the fault replaces the answer (rather than only delaying it).
    pub(crate) fn answers(&self) -> bool {
        self.drop || self.body.is_some() || self.status.is_some() || self.after_serving
    }
}

/// One recorded API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Method.
    pub method: String,
    /// Path as sent (percent-encoded), without the query.
    pub path: String,
    /// Status answered; 0 when the connection was dropped.
    pub status: u16,
    /// Request body, when it was JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Answer body, when it was JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

pub(crate) struct Shared {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) state: Mutex<State>,
    pub(crate) faults: Mutex<Vec<Fault>>,
    /// Paths of requests a fault was applied to, on arrival.
    pub(crate) fault_hits: Mutex<Vec<String>>,
    pub(crate) calls: Mutex<Vec<Call>>,
}

/// Locks a mutex; a panic elsewhere while holding it leaves data a test
/// still wants to read, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A handle on a simulator, shared by its HTTP server and in-process tests.
#[derive(Clone)]
pub struct MupSim {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for MupSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MupSim")
            .field("username", &self.shared.username)
            .finish_non_exhaustive()
    }
}

impl MupSim {
    /// A simulator accepting `Authorization: Basic` with these credentials.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                username: username.to_owned(),
                password: password.to_owned(),
                state: Mutex::new(State::default()),
                faults: Mutex::new(Vec::new()),
                fault_hits: Mutex::new(Vec::new()),
                calls: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Serves on `addr` (port 0 picks one) until the runtime stops; returns
    /// the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = http::router(self.clone()).into_make_service_with_connect_info::<net::Cutter>();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(net::CuttableListener(listener), app).await {
                tracing::error!(error = %e, "mup-sim stopped");
            }
        });
        Ok(local)
    }

    /// The state, locked: read or change it directly. The server waits for
    /// the lock, so do not hold it across an `.await` on a request.
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> State {
        self.state().clone()
    }

    /// Forgets all data, options, faults and recorded calls.
    pub fn reset(&self) {
        *self.state() = State::default();
        self.clear_faults();
        lock(&self.shared.fault_hits).clear();
        self.reset_calls();
    }

    /// Seeds from a document `{users, projects, allocations, members,
    /// usage}` (each a list, each optional; see the README), in that order.
    /// Stops at the first refusal, naming the entry; what came before stays.
    pub fn seed(&self, doc: &Value) -> Result<(), String> {
        self.state().seed(doc)
    }

    // --------------------------------------------------------- projects

    /// Adds a project with defaults for the other fields; returns its id.
    ///
    /// # Panics
    ///
    /// When the grant number is taken or blank: a mistake in the test.
    pub fn add_project(&self, grant: &str, title: &str, pi_email: &str, active: bool) -> i64 {
        let body = json!({"grant_number": grant, "title": title, "pi": pi_email, "active": active});
        match self.add_project_json(body) {
            Ok(p) => p.id,
            Err(e) => panic!("mup-sim: cannot add project {grant}: {e}"),
        }
    }

    /// Adds a project from a project object (as `POST /_sim/projects`):
    /// `grant_number` required, `active` default true, the PI need not be a
    /// user.
    pub fn add_project_json(&self, project: Value) -> Result<Project, Refusal> {
        self.state().seed_project(&project)
    }

    /// Activates or deactivates a project (MUP's separate activation step).
    pub fn set_project_active(&self, id: i64, active: bool) -> Result<Project, Refusal> {
        self.state().set_project_active(id, active)
    }

    /// A project by id.
    pub fn project(&self, id: i64) -> Option<Project> {
        self.state().project(id).cloned()
    }

    /// A project by grant number.
    pub fn project_by_grant(&self, grant: &str) -> Option<Project> {
        self.state().project_by_grant(grant).cloned()
    }

    /// Every project.
    pub fn projects(&self) -> Vec<Project> {
        self.state().projects.clone()
    }

    // ------------------------------------------------------------ users

    /// Adds an approved, active user; a user with this username and email
    /// answers its id. Returns the user's id.
    ///
    /// # Panics
    ///
    /// When MUP would refuse the user (taken email or username, an email
    /// without `@`): a mistake in the test.
    pub fn add_user(&self, username: &str, email: &str) -> i64 {
        self.add_user_approved(username, email, true)
    }

    /// As [`MupSim::add_user`], but a pending registration request (not
    /// approved, inactive).
    ///
    /// # Panics
    ///
    /// As [`MupSim::add_user`].
    pub fn add_user_request(&self, username: &str, email: &str) -> i64 {
        self.add_user_approved(username, email, false)
    }

    fn add_user_approved(&self, username: &str, email: &str, approved: bool) -> i64 {
        let mut state = self.state();
        if let Some(u) = state.user_by_username(username)
            && u.email == email
        {
            return u.id;
        }
        let body = json!({"username": username, "email": email, "approved": approved});
        match state.seed_user(&body) {
            Ok(u) => u.id,
            Err(e) => panic!("mup-sim: cannot add user {username}: {e}"),
        }
    }

    /// Adds a user from a user object (as `POST /_sim/users`): `username`
    /// and `email` required, names optional, `approved` default true, other
    /// fields kept.
    pub fn add_user_json(&self, user: Value) -> Result<User, Refusal> {
        self.state().seed_user(&user)
    }

    /// Approves a registration request; the user becomes active.
    pub fn approve_user(&self, id: i64) -> Result<User, Refusal> {
        self.state().approve_user(id)
    }

    /// A user by id.
    pub fn user(&self, id: i64) -> Option<User> {
        self.state().user(id).cloned()
    }

    /// A user by email (exact match).
    pub fn user_by_email(&self, email: &str) -> Option<User> {
        self.state().user_by_email(email).cloned()
    }

    /// A user by username.
    pub fn user_by_username(&self, username: &str) -> Option<User> {
        self.state().user_by_username(username).cloned()
    }

    /// Every user, approved or not, in registration order.
    pub fn users(&self) -> Vec<User> {
        self.state().users.clone()
    }

    // ------------------------------------------------------ allocations

    /// Adds an active allocation to a project, active or not (as
    /// `POST /_sim/allocations`).
    pub fn add_allocation(
        &self,
        project_id: i64,
        kind: &str,
        identifier: &str,
        size: i64,
    ) -> Result<Allocation, Refusal> {
        self.add_allocation_json(json!({
            "project": project_id, "type": kind, "identifier": identifier, "size": size
        }))
    }

    /// Adds an allocation from an allocation object naming its project by
    /// `project` (id) or `project_grant`.
    pub fn add_allocation_json(&self, allocation: Value) -> Result<Allocation, Refusal> {
        self.state().seed_allocation(&allocation)
    }

    /// An allocation by identifier.
    pub fn allocation(&self, identifier: &str) -> Option<Allocation> {
        self.state().allocation_by_identifier(identifier).cloned()
    }

    /// The allocations of a project (none for an unknown project).
    pub fn allocations(&self, project_id: i64) -> Vec<Allocation> {
        self.state()
            .allocations
            .iter()
            .filter(|a| a.project == project_id)
            .cloned()
            .collect()
    }

    /// Replaces an allocation's usage per user; the answered total is
    /// `total` or, without it, the sum. The allocation's `used` becomes
    /// the total, rounded.
    pub fn set_usage<I, K>(
        &self,
        identifier: &str,
        users: I,
        total: Option<f64>,
    ) -> Result<Usage, Refusal>
    where
        I: IntoIterator<Item = (K, f64)>,
        K: Into<String>,
    {
        let users: BTreeMap<String, f64> = users.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self.state().set_usage(identifier, users, total, None)
    }

    /// Sets the unit usage answers carry for an allocation (default
    /// `core-hours`).
    pub fn set_usage_unit(&self, identifier: &str, unit: &str) -> Result<Usage, Refusal> {
        let mut state = self.state();
        let usage = state
            .allocation_by_identifier(identifier)
            .and_then(|a| state.usage.get(&a.id))
            .cloned()
            .unwrap_or_default();
        state.set_usage(identifier, usage.users, usage.total, Some(unit.to_owned()))
    }

    /// The usage of an allocation, when set.
    pub fn usage(&self, identifier: &str) -> Option<Usage> {
        let state = self.state();
        let a = state.allocation_by_identifier(identifier)?;
        state.usage.get(&a.id).cloned()
    }

    // ---------------------------------------------------------- members

    /// Adds a membership (as `POST /_sim/members`).
    pub fn add_member(
        &self,
        project_id: i64,
        user_id: i64,
        active: bool,
    ) -> Result<Member, Refusal> {
        self.state()
            .seed_member(&json!({"project": project_id, "user_id": user_id, "active": active}))
    }

    /// The memberships of a project, active and inactive.
    pub fn members(&self, project_id: i64) -> Vec<Member> {
        self.state()
            .members
            .iter()
            .filter(|m| m.project == project_id)
            .cloned()
            .collect()
    }

    // ---------------------------------------------------------- options

    /// Member listings answer the flat shape `{id, active, user_id,
    /// username, email}` (on) or the nested `{id, active, member}` (off,
    /// the default).
    pub fn set_flat_members(&self, on: bool) {
        self.state().options.flat_members = on;
    }

    /// `POST /api/user/` answers 201 with `{}` (on) or the user (off, the
    /// default).
    pub fn set_empty_user_create_answer(&self, on: bool) {
        self.state().options.empty_user_create_answer = on;
    }

    // ----------------------------------------------------------- faults

    /// Adds a fault; the first matching fault applies to a request.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The faults still in force.
    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults).clone()
    }

    /// Paths of the requests faults were applied to, recorded as they
    /// arrived (a delayed request shows here before it is answered).
    pub fn fault_hits(&self) -> Vec<String> {
        lock(&self.shared.fault_hits).clone()
    }

    // ------------------------------------------------------------ calls

    /// API calls recorded so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.calls).clone()
    }

    /// Number of API calls recorded so far.
    pub fn call_count(&self) -> usize {
        lock(&self.shared.calls).len()
    }

    /// Forgets recorded calls.
    pub fn reset_calls(&self) {
        lock(&self.shared.calls).clear();
    }
}

#[cfg(test)]
mod tests;
