//! A stateful simulator of Waldur Mastermind.
//!
//! It serves the part of the REST API the coordinator uses, with Waldur's
//! state rules (pending-provider → executing on approve; done/erred only from
//! executing; a done Create makes the resource OK, a done Terminate makes it
//! Terminated), `Link` and `x-result-count` pagination, sparse `field=` sets
//! and token authentication. A control API under `/_sim/` seeds and inspects
//! state, records every call and injects faults (status codes, latency,
//! dropped connections) per endpoint. Answers follow the official OpenAPI
//! schema (8.0.5); `tests/openapi_contract.rs` here and in the coordinator
//! check it.
//!
//! Large lists stay fast: filters run on the records, JSON is built for the
//! returned page only, and the positions of a query's matches are cached
//! until the collection may have changed (any [`Sim::world`] access, or an
//! API call that writes to it), so paging through 50,000 records scans
//! them once. Usage records, offering users, users, roles and per-user
//! limits have lookup indexes.

pub mod contract;
pub mod events;
mod http;
mod scenario;
pub mod world;

pub use scenario::{CreatedOrder, NewOrder, Scenario};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use http::SIM_USER_UUID;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
pub use world::World;
use world::{new_uuid, norm};

/// A fault to inject into matching requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Fault {
    /// Only this method (`GET`, `POST` ...); empty matches all.
    pub method: String,
    /// Only paths containing this text.
    pub path_contains: String,
    /// Answer with this status instead of serving.
    pub status: Option<u16>,
    /// Wait this long first.
    pub latency_ms: u64,
    /// Drop the connection instead of answering.
    pub drop: bool,
    /// Apply this many times, then disappear (`None`: until cleared).
    pub times: Option<u32>,
    /// Answer with this raw body (an HTML page, a cut JSON text, `[]`)
    /// and `status` (default 200) instead of Waldur's answer.
    pub body: Option<String>,
    /// Serve the request first (its effect happens), then answer with the
    /// fault: the write went through, the answer was lost or garbled.
    pub after_serving: bool,
}

/// One recorded API request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    /// Method.
    pub method: String,
    /// Path below `/api/`, UUIDs replaced by `{uuid}`.
    pub route: String,
    /// Status answered.
    pub status: u16,
    /// Request body, if JSON.
    pub body: Option<Value>,
    /// Response body, if JSON.
    pub response: Option<Value>,
}

pub(crate) struct Shared {
    /// Answer as Waldur 7.0.7 does (see [`Sim::emulate_waldur_7`]).
    pub(crate) legacy: std::sync::atomic::AtomicBool,
    pub(crate) token: String,
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<Vec<Fault>>,
    /// Paths of requests a fault was applied to, on arrival.
    pub(crate) fault_hits: Mutex<Vec<String>>,
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) record_bodies: bool,
    pub(crate) oidc: Mutex<Option<(String, String)>>,
    pub(crate) user_agent: Mutex<Option<String>>,
    pub(crate) traceparents: Mutex<Vec<String>>,
    /// RabbitMQ management client while publishing is on.
    pub(crate) broker: Mutex<Option<events::Management>>,
    /// Events published so far.
    pub(crate) published: std::sync::atomic::AtomicU64,
}

/// A handle on a simulator: shared by the HTTP server and in-process tests.
#[derive(Clone)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulator accepting `Authorization: Token <token>`.
    pub fn new(token: &str) -> Self {
        Self::with_recording(token, true)
    }

    /// As [`Sim::new`]; `record_bodies=false` keeps only method, route and
    /// status of each call (benchmarks).
    pub fn with_recording(token: &str, record_bodies: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                token: token.to_owned(),
                world: Mutex::new(World::default()),
                faults: Mutex::new(Vec::new()),
                fault_hits: Mutex::new(Vec::new()),
                calls: Mutex::new(Vec::new()),
                record_bodies,
                oidc: Mutex::new(None),
                user_agent: Mutex::new(None),
                traceparents: Mutex::new(Vec::new()),
                broker: Mutex::new(None),
                published: std::sync::atomic::AtomicU64::new(0),
                legacy: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Answers as Waldur 7.0.7 does where it differs from 8.0.5 in what the
    /// agent uses: `version/` says 7.0.7; `set_limits` and the agent
    /// registry (`marketplace-site-agent-*`) do not exist (Django's HTML 404
    /// page, as for any unknown route); offering users and team members
    /// carry no state.
    pub fn emulate_waldur_7(&self) {
        self.shared
            .legacy
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Serves on `addr` (port 0 picks one); returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let app = http::router(self.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "waldur-sim stopped");
            }
        });
        Ok(local)
    }

    /// Enables `POST /oidc/token` for this client id and secret.
    pub fn enable_oidc(&self, client_id: &str, client_secret: &str) {
        *self.shared.oidc.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((client_id.to_owned(), client_secret.to_owned()));
    }

    /// Publishes events to RabbitMQ from now on: queues created through
    /// `create_queue` are declared on the broker, and state changes are
    /// published to the queues of matching subscriptions, with the bodies
    /// Waldur sends. Needs a Tokio runtime.
    pub fn enable_events(&self, broker: events::Broker) {
        *self.shared.broker.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(events::Management::new(broker));
        self.world().events_on = true;
        let sim = self.clone();
        tokio::spawn(async move { sim.publish_loop().await });
    }

    /// Events published so far.
    pub fn events_published(&self) -> u64 {
        self.shared
            .published
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the agent for a forced offering sync (the provider's "sync
    /// resources" button).
    pub fn request_offering_sync(&self, offering_uuid: &str) {
        let body = json!({"requested_by_user_uuid": http::SIM_USER_UUID});
        self.world()
            .emit("offering_resources_sync", offering_uuid, body);
    }

    /// Creates a resource import request for an offering and publishes the
    /// `importable_resources` event; returns the request uuid.
    pub fn request_import(&self, offering_uuid: &str) -> String {
        let uuid = new_uuid();
        let mut w = self.world();
        w.import_requests.insert(
            uuid.clone(),
            json!({"uuid": uuid, "offering_uuid": norm(offering_uuid), "state": "Created"}),
        );
        w.emit(
            "importable_resources",
            offering_uuid,
            json!({"backend_resource_request_uuid": uuid}),
        );
        uuid
    }

    /// Queues an arbitrary body for the subscribers of `object_type` (tests
    /// of malformed messages).
    pub fn emit_raw(&self, object_type: &str, offering_uuid: &str, body: Value) {
        let mut w = self.world();
        if w.events_on {
            w.outbox.push(events::Event {
                object_type: object_type.to_owned(),
                offering_uuid: norm(offering_uuid),
                body,
            });
        }
    }

    async fn publish_loop(self) {
        loop {
            let (batch, queues) = {
                let mut w = self.world();
                if w.outbox.is_empty() {
                    (Vec::new(), Vec::new())
                } else {
                    let batch = std::mem::take(&mut w.outbox);
                    let queues: Vec<(String, String, String)> = w
                        .event_subscriptions
                        .values()
                        .flat_map(|s| {
                            s.queues.iter().map(|q| {
                                (
                                    s.observable_object_type.clone(),
                                    q["offering_uuid"].as_str().unwrap_or_default().to_owned(),
                                    q["queue_name"].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                        })
                        .collect();
                    (batch, queues)
                }
            };
            if batch.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                continue;
            }
            let Some(broker) = self
                .shared
                .broker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            else {
                return;
            };
            for event in batch {
                for (_, _, queue) in queues.iter().filter(|(kind, offering, _)| {
                    *kind == event.object_type && *offering == event.offering_uuid
                }) {
                    let mut wait = std::time::Duration::from_millis(50);
                    // In order and until the broker takes it: a broker
                    // restart delays events, it does not lose them.
                    loop {
                        match broker
                            .publish(http::SIM_USER_UUID, queue, &event.body)
                            .await
                        {
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "event not published; retrying");
                                tokio::time::sleep(wait).await;
                                wait = (wait * 2).min(std::time::Duration::from_secs(2));
                            }
                        }
                    }
                    self.shared
                        .published
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Every W3C `traceparent` header received, in order.
    pub fn traceparents(&self) -> Vec<String> {
        self.shared
            .traceparents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `User-Agent` of the last API request.
    pub fn last_user_agent(&self) -> Option<String> {
        self.shared
            .user_agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The state, locked (assumed changed: cached list query results are
    /// dropped).
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world_untouched();
        w.touch();
        w
    }

    /// The state, locked, for callers that say whether they change it.
    pub(crate) fn world_untouched(&self) -> MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a fault.
    pub fn add_fault(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Paths of the requests faults were applied to, recorded as they
    /// arrived (a held request shows here before it is answered).
    pub fn fault_hits(&self) -> Vec<String> {
        self.shared
            .fault_hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Calls recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of calls recorded so far.
    pub fn call_count(&self) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Forgets recorded calls.
    pub fn reset_calls(&self) {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// An order's state.
    pub fn order_state(&self, uuid: &str) -> Option<String> {
        self.world()
            .orders
            .get(&norm(uuid))
            .map(|o| o.state.clone())
    }

    /// How many orders are in `state`.
    pub fn orders_in_state(&self, state: &str) -> usize {
        self.world_untouched()
            .orders
            .values()
            .filter(|o| o.state == state)
            .count()
    }

    /// A snapshot of a resource.
    pub fn resource(&self, uuid: &str) -> Option<world::Resource> {
        self.world().resources.get(&norm(uuid)).cloned()
    }

    /// A snapshot of an order.
    pub fn order(&self, uuid: &str) -> Option<world::Order> {
        self.world().orders.get(&norm(uuid)).cloned()
    }

    // ---------------------------------------------------------- usage

    /// Refuse usage for months before the current UTC month, as Waldur
    /// does for usage-billed components and non-staff tokens (400
    /// `backfilling past billing periods`).
    pub fn set_refuse_backfill(&self, on: bool) {
        self.world().refuse_backfill = on;
    }

    /// The usage records of a resource, all periods, by billing period
    /// then type.
    pub fn component_usages(&self, resource_uuid: &str) -> Vec<world::ComponentUsage> {
        let mut w = self.world();
        w.reindex();
        w.resource_usages(resource_uuid, None)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Sets (or replaces) a user's limit of a component on a resource.
    pub fn set_user_limit(&self, resource_uuid: &str, username: &str, component: &str, limit: f64) {
        self.world()
            .set_user_limit(resource_uuid, username, component, &world::decimal2(limit));
    }

    /// Removes every per-user limit of a resource.
    pub fn clear_user_limits(&self, resource_uuid: &str) {
        self.world().clear_user_limits(resource_uuid);
    }

    /// The per-user limits of a resource, by username then component.
    pub fn user_limits(&self, resource_uuid: &str) -> Vec<world::UserLimit> {
        let mut w = self.world();
        w.reindex();
        w.resource_user_limits(resource_uuid)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The membership sync statuses last reported for a resource.
    pub fn membership_statuses(&self, resource_uuid: &str) -> Vec<Value> {
        self.world()
            .membership_statuses
            .get(&norm(resource_uuid))
            .cloned()
            .unwrap_or_default()
    }

    // -------------------------------------------------- offering users

    /// Adds an offering user (or, if the user has one in the offering,
    /// sets its state and, when given, its username); returns its uuid.
    pub fn add_offering_user(
        &self,
        offering_uuid: &str,
        user_uuid: &str,
        state: &str,
        username: Option<&str>,
    ) -> String {
        self.world()
            .add_offering_user(offering_uuid, user_uuid, state, username)
    }

    /// A snapshot of an offering user.
    pub fn offering_user(&self, uuid: &str) -> Option<world::OfferingUser> {
        world::by_uuid(&self.world().offering_users, uuid).cloned()
    }

    /// A snapshot of the offering user of a user in an offering.
    pub fn offering_user_of(
        &self,
        offering_uuid: &str,
        user_uuid: &str,
    ) -> Option<world::OfferingUser> {
        let mut w = self.world();
        w.reindex();
        w.offering_user_of(offering_uuid, user_uuid).cloned()
    }

    /// Marks an offering user restricted (or not).
    pub fn set_offering_user_restricted(&self, uuid: &str, restricted: bool) {
        match self.world().offering_user_mut(uuid) {
            Ok(ou) => ou.is_restricted = restricted,
            Err(e) => tracing::warn!(?e, uuid, "set_offering_user_restricted"),
        }
    }

    // ------------------------------------------------------------ team

    /// Adds a user (`full_name` "<username> example"); an existing
    /// username answers the existing user's uuid.
    pub fn add_user(&self, username: &str, email: &str) -> String {
        self.world()
            .add_user(username, email, &format!("{username} example"))
    }

    /// Grants (or changes) a user's role in a project.
    pub fn grant_role(&self, project_uuid: &str, user_uuid: &str, role: &str) {
        if let Err(e) = self.world().grant_role(project_uuid, user_uuid, role) {
            tracing::warn!(?e, project_uuid, user_uuid, "grant_role");
        }
    }

    /// Removes a user's roles in a project.
    pub fn revoke_role(&self, project_uuid: &str, user_uuid: &str) {
        self.world().revoke_role(project_uuid, user_uuid);
    }

    fn with_resource(&self, uuid: &str, what: &str, f: impl FnOnce(&mut world::Resource)) {
        match self.world().resource_mut(uuid) {
            Ok(r) => f(r),
            Err(e) => tracing::warn!(?e, uuid, what),
        }
    }

    /// Sets a resource's `paused` and `downscaled` flags.
    pub fn set_resource_flags(&self, resource_uuid: &str, paused: bool, downscaled: bool) {
        self.with_resource(resource_uuid, "set_resource_flags", |r| {
            r.paused = paused;
            r.downscaled = downscaled;
        });
        self.world().emit_resource(resource_uuid);
    }

    /// Moves a project to a customer named `slug` (made if new), as
    /// Waldur's staff can; emits a `resource` event for each resource of
    /// the project, as Waldur does when a resource's customer changes.
    /// Returns the customer's UUID.
    pub fn move_project(&self, project_uuid: &str, slug: &str) -> String {
        let mut w = self.world();
        let customer = match w.customers.values().find(|c| c.slug == slug) {
            Some(c) => c.uuid.clone(),
            None => {
                let uuid = world::new_uuid();
                w.customers.insert(
                    world::norm(&uuid),
                    world::Customer {
                        uuid: uuid.clone(),
                        name: format!("Customer {slug}"),
                        slug: slug.to_owned(),
                    },
                );
                uuid
            }
        };
        if let Some(p) = w.projects.get_mut(&world::norm(project_uuid)) {
            p.customer_uuid = customer.clone();
        }
        let resources: Vec<String> = w
            .resources
            .values()
            .filter(|r| world::uuid_eq(&r.project_uuid, project_uuid))
            .map(|r| r.uuid.clone())
            .collect();
        for r in resources {
            w.emit_resource(&r);
        }
        customer
    }

    /// Sets a resource's end date (`YYYY-MM-DD`, or none), as a renewal
    /// does once its order is done; emits a `resource` event.
    pub fn set_resource_end_date(&self, resource_uuid: &str, end_date: Option<&str>) {
        self.with_resource(resource_uuid, "set_resource_end_date", |r| {
            r.end_date = end_date.map(str::to_owned);
        });
        self.world().emit_resource(resource_uuid);
    }

    /// Sets a resource's `restrict_member_access`.
    pub fn set_restrict_member_access(&self, resource_uuid: &str, restrict: bool) {
        self.with_resource(resource_uuid, "set_restrict_member_access", |r| {
            r.restrict_member_access = restrict;
        });
        self.world().emit_resource(resource_uuid);
    }

    /// Sets a resource's state.
    pub fn set_resource_state(&self, resource_uuid: &str, state: &str) {
        self.with_resource(resource_uuid, "set_resource_state", |r| {
            r.state = state.to_owned();
        });
    }

    /// Replaces an offering's plugin options.
    pub fn set_plugin_options(&self, offering_uuid: &str, options: Value) {
        match self.world().offerings.get_mut(&norm(offering_uuid)) {
            Some(o) => o.plugin_options = options,
            None => tracing::warn!(offering_uuid, "set_plugin_options: unknown offering"),
        }
    }

    /// Replaces an offering's exposed user attributes.
    pub fn set_exposed_fields(&self, offering_uuid: &str, fields: &[&str]) {
        match self.world().offerings.get_mut(&norm(offering_uuid)) {
            Some(o) => o.exposed_fields = fields.iter().map(|f| (*f).to_owned()).collect(),
            None => tracing::warn!(offering_uuid, "set_exposed_fields: unknown offering"),
        }
    }

    // -------------------------------------------------------- accounts

    fn add_account(&self, course: bool, project_uuid: &str, username: &str, state: &str) -> String {
        let a = world::Account {
            uuid: new_uuid(),
            project_uuid: norm(project_uuid),
            username: username.to_owned(),
            state: state.to_owned(),
            email: format!("{username}@example.org"),
            created: jiff::Timestamp::now().to_string(),
        };
        let uuid = a.uuid.clone();
        let mut w = self.world();
        let map = if course {
            &mut w.course_accounts
        } else {
            &mut w.service_accounts
        };
        map.insert(uuid.clone(), a);
        w.emit_account(&uuid, "create");
        uuid
    }

    /// Adds a project service account (state `OK`, `Closed` or `Erred`).
    pub fn add_service_account(&self, project_uuid: &str, username: &str, state: &str) -> String {
        self.add_account(false, project_uuid, username, state)
    }

    /// Adds a course account (state `OK`, `Closed` or `Erred`).
    pub fn add_course_account(&self, project_uuid: &str, username: &str, state: &str) -> String {
        self.add_account(true, project_uuid, username, state)
    }

    /// Sets the state of a service or course account.
    pub fn set_account_state(&self, uuid: &str, state: &str) {
        let mut w = self.world();
        match w.set_account_state(uuid, state) {
            Ok(()) => {
                let action = if state == "OK" { "create" } else { "delete" };
                w.emit_account(uuid, action);
            }
            Err(e) => tracing::warn!(?e, uuid, "set_account_state"),
        }
    }
}

#[cfg(test)]
mod tests;
