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
pub mod world;

use std::collections::BTreeMap;
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

/// UUIDs of a seeded scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scenario {
    /// Customer.
    pub customer_uuid: String,
    /// Project.
    pub project_uuid: String,
    /// Offering.
    pub offering_uuid: String,
    /// Plan.
    pub plan_uuid: String,
    /// Team members by Waldur username.
    pub users: BTreeMap<String, String>,
}

/// What a new order is for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NewOrder {
    /// `Create`, `Update`, `Terminate`, `Restore`.
    #[serde(rename = "type")]
    pub order_type: String,
    /// Initial state (`pending-provider` or `executing`).
    pub state: String,
    /// Offering (Create).
    pub offering_uuid: String,
    /// Project (Create).
    pub project_uuid: String,
    /// Existing resource (Update, Terminate, Restore).
    pub resource_uuid: String,
    /// New resource name (Create).
    pub name: String,
    /// Limits.
    pub limits: BTreeMap<String, i64>,
    /// Plan.
    pub plan_uuid: Option<String>,
    /// Order attributes (also the resource's, on Create).
    pub attributes: Value,
}

/// Created order and resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedOrder {
    /// Order UUID.
    pub order_uuid: String,
    /// Resource UUID.
    pub resource_uuid: String,
}

fn slugify(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
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
            }),
        }
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
    /// published to the queues of matching subscriptions (core spec §7.5
    /// bodies). Needs a Tokio runtime.
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

    /// Seeds a customer, a project, an offering with cpu/mem/storage
    /// components, a plan, a service provider with a key, and a team: each
    /// `(username, role, offering username)` becomes a user with a project
    /// role and, when an offering username is given, an OK offering user.
    pub fn seed_basic(
        &self,
        offering_uuid: Option<&str>,
        team: &[(&str, &str, Option<&str>)],
    ) -> Scenario {
        let mut w = self.world();
        let customer = world::Customer {
            uuid: new_uuid(),
            name: "Example University".into(),
            slug: "example-uni".into(),
        };
        let project = world::Project {
            uuid: new_uuid(),
            name: "Climate Modelling".into(),
            slug: "climate-modelling".into(),
            customer_uuid: customer.uuid.clone(),
        };
        let offering = world::Offering {
            uuid: offering_uuid.map(norm).unwrap_or_else(new_uuid),
            name: "HPC cluster".into(),
            customer_uuid: customer.uuid.clone(),
            components: vec![
                json!({"uuid": new_uuid(), "type": "cpu", "name": "CPU", "billing_type": "usage", "measured_unit": "k-Hours", "limit_amount": 10}),
                json!({"uuid": new_uuid(), "type": "mem", "name": "Memory", "billing_type": "usage", "measured_unit": "gb-Hours", "limit_amount": 100}),
                json!({"uuid": new_uuid(), "type": "storage", "name": "Storage", "billing_type": "limit", "measured_unit": "GB", "limit_amount": null}),
            ],
            plugin_options: json!({}),
            exposed_fields: world::DEFAULT_EXPOSED_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        };
        let plan = world::Plan {
            uuid: new_uuid(),
            name: "Standard".into(),
            offering_uuid: offering.uuid.clone(),
            quotas: BTreeMap::from([("storage".into(), 100.0)]),
        };
        let sp = world::ServiceProvider {
            uuid: new_uuid(),
            customer_uuid: customer.uuid.clone(),
            keys: vec![world::SshKey {
                uuid: new_uuid(),
                name: "provider key".into(),
                public_key:
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyForTheSimulatorOnly provider"
                        .into(),
            }],
        };
        let scenario = Scenario {
            customer_uuid: customer.uuid.clone(),
            project_uuid: project.uuid.clone(),
            offering_uuid: offering.uuid.clone(),
            plan_uuid: plan.uuid.clone(),
            users: BTreeMap::new(),
        };
        w.customers.insert(customer.uuid.clone(), customer);
        w.projects.insert(project.uuid.clone(), project);
        w.offerings.insert(offering.uuid.clone(), offering);
        w.plans.insert(plan.uuid.clone(), plan);
        w.service_providers.insert(sp.uuid.clone(), sp);
        let mut scenario = scenario;
        for (username, role, offering_username) in team {
            let user = w.add_user(
                username,
                &format!("{username}@example.org"),
                &format!("{username} example"),
            );
            if let Err(e) = w.grant_role(&scenario.project_uuid, &user, role) {
                tracing::warn!(?e, "seed_basic: role not granted");
            }
            if let Some(name) = offering_username {
                w.add_offering_user(&scenario.offering_uuid, &user, "OK", Some(name));
            }
            scenario.users.insert((*username).to_owned(), user);
        }
        scenario
    }

    /// Creates an order (and, for Create, its resource in state Creating).
    pub fn create_order(&self, new: NewOrder) -> Result<CreatedOrder, String> {
        let mut w = self.world();
        let now = jiff::Timestamp::now().to_string();
        let state = if new.state.is_empty() {
            "pending-provider".to_owned()
        } else {
            new.state.clone()
        };
        let resource_uuid = if new.order_type == "Create" {
            let offering = w
                .offerings
                .get(&norm(&new.offering_uuid))
                .ok_or("unknown offering")?
                .clone();
            if !w.projects.contains_key(&norm(&new.project_uuid)) {
                return Err("unknown project".into());
            }
            let name = if new.name.is_empty() {
                "allocation".to_owned()
            } else {
                new.name.clone()
            };
            let base = slugify(&name);
            let taken = |s: &str, w: &World| w.resources.values().any(|r| r.slug == s);
            let slug = std::iter::once(base.clone())
                .chain((1..).map(|i| format!("{base}-{i}")))
                .find(|s| !taken(s, &w))
                .unwrap_or(base);
            let r = world::Resource {
                uuid: new_uuid(),
                name,
                slug,
                offering_uuid: offering.uuid.clone(),
                project_uuid: norm(&new.project_uuid),
                plan_uuid: new.plan_uuid.clone(),
                state: "Creating".into(),
                limits: new.limits.clone(),
                attributes: if new.attributes.is_null() {
                    json!({})
                } else {
                    new.attributes.clone()
                },
                created: now.clone(),
                ..Default::default()
            };
            let uuid = r.uuid.clone();
            w.resources.insert(uuid.clone(), r);
            uuid
        } else {
            let r = w
                .resource_mut(&new.resource_uuid)
                .map_err(|_| "unknown resource")?;
            r.state = match new.order_type.as_str() {
                "Terminate" => "Terminating",
                "Restore" => "Creating",
                _ => "Updating",
            }
            .into();
            r.uuid.clone()
        };
        let offering_uuid = w
            .resources
            .get(&resource_uuid)
            .map(|r| r.offering_uuid.clone())
            .unwrap_or_default();
        let order = world::Order {
            uuid: new_uuid(),
            order_type: new.order_type.clone(),
            state,
            resource_uuid: resource_uuid.clone(),
            offering_uuid,
            limits: new.limits,
            plan_uuid: new.plan_uuid,
            attributes: if new.attributes.is_null() {
                json!({})
            } else {
                new.attributes
            },
            created: now.clone(),
            modified: now,
            created_by_username: "orderer".into(),
            created_by_full_name: "Order Placer".into(),
            ..Default::default()
        };
        let order_uuid = order.uuid.clone();
        w.orders.insert(order_uuid.clone(), order);
        w.emit_order(&order_uuid);
        Ok(CreatedOrder {
            order_uuid,
            resource_uuid,
        })
    }

    /// An order's state.
    pub fn order_state(&self, uuid: &str) -> Option<String> {
        self.world()
            .orders
            .get(&norm(uuid))
            .map(|o| o.state.clone())
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

    // ------------------------------------------------------------ bulk

    /// Seeds `resources` OK resources of an existing offering, each in a
    /// new project `bulk-{i}` of the offering's customer, named and
    /// slugged `bulk-{i}` with backend id `bulk_{i}` and limits
    /// `{cpu: 10}`; each project gets `users_per_resource` users
    /// `u{i}x{j}` (PROJECT.MEMBER) with OK offering users of that
    /// username. Returns the resource uuids in order.
    pub fn seed_bulk(
        &self,
        offering_uuid: &str,
        resources: usize,
        users_per_resource: usize,
    ) -> Vec<String> {
        let mut w = self.world();
        w.reindex();
        let Some(offering) = world::by_uuid(&w.offerings, offering_uuid).cloned() else {
            tracing::warn!(offering_uuid, "seed_bulk: unknown offering");
            return Vec::new();
        };
        let plan = w
            .plans
            .values()
            .find(|p| world::uuid_eq(&p.offering_uuid, &offering.uuid))
            .map(|p| p.uuid.clone());
        let now = jiff::Timestamp::now().to_string();
        let mut out = Vec::with_capacity(resources);
        for i in 0..resources {
            let project = world::Project {
                uuid: new_uuid(),
                name: format!("bulk-{i}"),
                slug: format!("bulk-{i}"),
                customer_uuid: offering.customer_uuid.clone(),
            };
            let r = world::Resource {
                uuid: new_uuid(),
                name: format!("bulk-{i}"),
                slug: format!("bulk-{i}"),
                offering_uuid: offering.uuid.clone(),
                project_uuid: project.uuid.clone(),
                plan_uuid: plan.clone(),
                state: "OK".into(),
                backend_id: format!("bulk_{i}"),
                limits: BTreeMap::from([("cpu".to_owned(), 10)]),
                attributes: json!({}),
                created: now.clone(),
                ..Default::default()
            };
            let project_uuid = project.uuid.clone();
            w.projects.insert(project.uuid.clone(), project);
            out.push(r.uuid.clone());
            w.resources.insert(r.uuid.clone(), r);
            for j in 0..users_per_resource {
                let name = format!("u{i}x{j}");
                let user = w.add_user(
                    &name,
                    &format!("{name}@example.org"),
                    &format!("{name} bulk"),
                );
                if let Err(e) = w.grant_role(&project_uuid, &user, "PROJECT.MEMBER") {
                    tracing::warn!(?e, "seed_bulk: role not granted");
                }
                w.add_offering_user(&offering.uuid, &user, "OK", Some(&name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::http::{Method, StatusCode};

    use super::*;

    /// Calls the API in-process: (status, body, x-result-count).
    fn call(
        sim: &Sim,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<usize>) {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // As the HTTP handler does: the API marks its own changes.
        let mut w = sim.world_untouched();
        let (status, value, headers) =
            http::api(&mut w, &method, &segments, &params, body.as_ref());
        let count = headers
            .iter()
            .find(|(k, _)| *k == "x-result-count")
            .and_then(|(_, v)| v.parse().ok());
        (status, value, count)
    }

    fn get(sim: &Sim, path: &str) -> (StatusCode, Value, Option<usize>) {
        call(sim, Method::GET, path, None)
    }

    fn post(sim: &Sim, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = call(sim, Method::POST, path, Some(body));
        (s, v)
    }

    fn team(sim: &Sim) -> Scenario {
        sim.seed_basic(
            None,
            &[
                ("alice", "PROJECT.MANAGER", Some("alice")),
                ("bob", "PROJECT.MEMBER", None),
            ],
        )
    }

    fn resource(sim: &Sim, s: &Scenario) -> String {
        let created = sim
            .create_order(NewOrder {
                order_type: "Create".into(),
                state: "executing".into(),
                offering_uuid: s.offering_uuid.clone(),
                project_uuid: s.project_uuid.clone(),
                name: "run".into(),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sim.world().set_done(&created.order_uuid), Ok(()));
        created.resource_uuid
    }

    #[test]
    fn team_changes_show_in_the_team_endpoint() {
        let sim = Sim::new("t");
        let s = team(&sim);
        let r = resource(&sim, &s);
        let carol = sim.add_user("carol", "carol@example.org");
        assert_eq!(sim.add_user("carol", "x@example.org"), carol);
        sim.grant_role(&s.project_uuid, &carol, "PROJECT.MEMBER");
        let ou = sim.add_offering_user(&s.offering_uuid, &carol, "Requested", None);
        let (_, body, _) = get(
            &sim,
            &format!("marketplace-provider-resources/{r}/team/?has_consent=true"),
        );
        let names: Vec<&str> = body
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["username"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(body[2]["offering_user_state"], "Requested");
        assert_eq!(body[1]["offering_user_state"], Value::Null);
        sim.revoke_role(&s.project_uuid, &s.users["alice"]);
        let (_, body, _) = get(&sim, &format!("marketplace-provider-resources/{r}/team/"));
        assert_eq!(body.as_array().map(Vec::len), Some(2));
        // The agent's username flow over the API.
        let (st, _) = post(
            &sim,
            &format!("marketplace-offering-users/{ou}/begin_creating/"),
            json!({}),
        );
        assert_eq!(st, StatusCode::OK);
        let (st, body) = post(
            &sim,
            &format!("marketplace-offering-users/{ou}/begin_creating/"),
            json!({}),
        );
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(body["detail"].is_string());
        let (st, body, _) = call(
            &sim,
            Method::PATCH,
            &format!("marketplace-offering-users/{ou}/"),
            Some(json!({"username": "carol7"})),
        );
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            (body["state"].as_str(), body["username"].as_str()),
            (Some("OK"), Some("carol7"))
        );
        assert_eq!(sim.offering_user(&ou).map(|o| o.state), Some("OK".into()));
        assert_eq!(
            sim.offering_user_of(&s.offering_uuid, &carol)
                .map(|o| o.uuid),
            Some(ou.clone())
        );
        // Flags and states.
        sim.set_resource_flags(&r, true, false);
        sim.set_restrict_member_access(&r, true);
        sim.set_resource_state(&r, "Erred");
        let res = sim.resource(&r).unwrap_or_default();
        assert!(res.paused && !res.downscaled && res.restrict_member_access);
        assert_eq!(res.state, "Erred");
        sim.set_plugin_options(
            &s.offering_uuid,
            json!({"username_generation_policy": "service_provider"}),
        );
        let (_, body, _) = get(
            &sim,
            &format!(
                "marketplace-provider-offerings/{}/?field=plugin_options",
                s.offering_uuid
            ),
        );
        assert_eq!(
            body,
            json!({"plugin_options": {"username_generation_policy": "service_provider"}})
        );
    }

    #[test]
    fn offering_user_list_filters() {
        let sim = Sim::new("t");
        let s = team(&sim);
        let bob = s.users["bob"].clone();
        let ou = sim.add_offering_user(&s.offering_uuid, &bob, "Pending account linking", None);
        sim.set_offering_user_restricted(&s.offering_uuid, true); // unknown: ignored
        let list = |q: &str| {
            get(
                &sim,
                &format!(
                    "marketplace-offering-users/?offering_uuid={}&{q}",
                    s.offering_uuid
                ),
            )
            .2
        };
        assert_eq!(list(""), Some(2));
        assert_eq!(list("state=OK"), Some(1));
        assert_eq!(list("state=OK,Pending%20account%20linking"), Some(2));
        assert_eq!(list("state=OK&state=Pending%20account%20linking"), Some(2));
        assert_eq!(list(&format!("user_uuid={bob}")), Some(1));
        assert_eq!(list("is_restricted=false"), Some(2));
        sim.set_offering_user_restricted(&ou, true);
        assert_eq!(list("is_restricted=false"), Some(1));
        assert_eq!(list("is_restricted=true"), Some(1));
        assert_eq!(
            get(&sim, "marketplace-offering-users/?is_restricted=maybe").0,
            StatusCode::BAD_REQUEST
        );
        let (_, body, _) = get(
            &sim,
            &format!("marketplace-offering-users/{ou}/?field=state&field=is_restricted"),
        );
        assert_eq!(
            body,
            json!({"state": "Pending account linking", "is_restricted": true})
        );
    }

    #[test]
    fn usage_endpoints_and_backfill() {
        let sim = Sim::new("t");
        let s = team(&sim);
        let r = resource(&sim, &s);
        let (st, _) = post(
            &sim,
            "marketplace-component-usages/set_usage/",
            json!({"resource": r, "date": "2026-11-05T00:00:00Z", "usages": [{"type": "cpu", "amount": "1.239"}, {"type": "mem", "amount": 4}]}),
        );
        assert_eq!(st, StatusCode::CREATED);
        let (st, _) = post(
            &sim,
            "marketplace-component-usages/set_usage/",
            json!({"resource": new_uuid(), "usages": []}),
        );
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let usages = sim.component_usages(&r);
        assert_eq!(usages.len(), 2);
        assert_eq!(usages[0].usage, "1.24");
        let cpu = usages[0].uuid.clone();
        let (st, _) = post(
            &sim,
            &format!("marketplace-component-usages/{cpu}/set_user_usages/"),
            json!({"usages": [{"username": "alice", "usage": "1.00", "date": "2026-11-05T00:00:00Z", "user": "http://sim/api/marketplace-offering-users/x/"}, {"username": "bob", "usage": "0.24"}]}),
        );
        assert_eq!(st, StatusCode::CREATED);
        let q = format!("resource_uuid={r}&component_usage__billing_period=2026-11-01");
        let (_, body, count) = get(&sim, &format!("marketplace-component-user-usages/?{q}"));
        assert_eq!(count, Some(2));
        assert_eq!(
            body[0]["component_usage"],
            format!("http://sim/api/marketplace-component-usages/{cpu}/")
        );
        assert_eq!(body[0]["usage"], 1.0);
        assert_eq!(body[0]["component_type"], "cpu");
        assert_eq!(body[0]["measured_unit"], "k-Hours");
        assert_eq!(get(&sim, &format!("marketplace-component-user-usages/?resource_uuid={r}&component_usage_billing_period=2026-10-01")).2, Some(0));
        assert_eq!(
            get(&sim, "marketplace-component-user-usages/?username=bob").2,
            Some(1)
        );
        assert_eq!(
            get(
                &sim,
                &format!(
                    "marketplace-component-user-usages/?offering_uuid={}&type=mem",
                    s.offering_uuid
                )
            )
            .2,
            Some(0)
        );
        assert_eq!(
            get(
                &sim,
                &format!(
                    "marketplace-component-usages/?offering_uuid={}&type=mem",
                    s.offering_uuid
                )
            )
            .2,
            Some(1)
        );
        assert_eq!(
            get(
                &sim,
                &format!("marketplace-component-usages/?offering_uuid={}", new_uuid())
            )
            .2,
            Some(0)
        );
        assert_eq!(
            get(
                &sim,
                "marketplace-component-usages/?billing_period=2026-11-01"
            )
            .2,
            Some(2)
        );
        sim.set_refuse_backfill(true);
        let (st, body) = post(
            &sim,
            "marketplace-component-usages/set_usage/",
            json!({"resource": r, "date": "2026-01-05T00:00:00Z", "usages": [{"type": "cpu", "amount": "1"}]}),
        );
        if current_month_is_after("2026-01") {
            assert_eq!(st, StatusCode::BAD_REQUEST);
            assert_eq!(body, json!({"non_field_errors": [world::BACKFILL_REFUSAL]}));
        }
    }

    fn current_month_is_after(month: &str) -> bool {
        *world::current_month() > *month
    }

    #[test]
    fn limits_accounts_components_and_statuses() {
        let sim = Sim::new("t");
        let s = team(&sim);
        let r = resource(&sim, &s);
        sim.set_user_limit(&r, "alice", "cpu", 12.5);
        sim.set_user_limit(&r, "alice", "cpu", 15.0);
        sim.set_user_limit(&r, "bob", "mem", 3.0);
        let (_, body, count) = get(
            &sim,
            &format!("component-user-usage-limits/?resource_uuid={r}"),
        );
        assert_eq!(count, Some(2));
        assert_eq!(body[0]["username"], "alice");
        assert_eq!(body[0]["limit"], "15.00");
        assert_eq!(
            body[0]["user"],
            format!("http://sim/api/users/{}/", s.users["alice"])
        );
        assert_eq!(
            get(&sim, "component-user-usage-limits/?component_type=mem").2,
            Some(1)
        );
        sim.clear_user_limits(&r);
        assert_eq!(
            get(
                &sim,
                &format!("component-user-usage-limits/?resource_uuid={r}")
            )
            .2,
            Some(0)
        );

        let sa = sim.add_service_account(&s.project_uuid, "svc1", "OK");
        sim.add_course_account(&s.project_uuid, "course1", "OK");
        let elsewhere = sim.seed_basic(None, &[]);
        sim.add_service_account(&elsewhere.project_uuid, "svc2", "OK");
        let path = format!(
            "marketplace-provider-offerings/{}/list_project_service_accounts/",
            s.offering_uuid
        );
        let (_, body, count) = get(&sim, &path);
        assert_eq!(count, Some(1));
        assert_eq!(
            (body[0]["username"].as_str(), body[0]["state"].as_str()),
            (Some("svc1"), Some("OK"))
        );
        sim.set_account_state(&sa, "Closed");
        assert_eq!(get(&sim, &path).1[0]["state"], "Closed");
        let (_, body, _) = get(
            &sim,
            &format!(
                "marketplace-provider-offerings/{}/list_course_accounts/",
                s.offering_uuid
            ),
        );
        assert_eq!(body[0]["project_uuid"], s.project_uuid);

        let o = &s.offering_uuid;
        let (st, _) = post(
            &sim,
            &format!("marketplace-provider-offerings/{o}/create_offering_component/"),
            json!({"type": "gpu", "name": "GPU", "billing_type": "usage", "measured_unit": "hours", "limit_period": "month", "limit_amount": 5}),
        );
        assert_eq!(st, StatusCode::CREATED);
        let (st, _) = post(
            &sim,
            &format!("marketplace-provider-offerings/{o}/create_offering_component/"),
            json!({"type": "gpu", "name": "GPU", "billing_type": "usage"}),
        );
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (_, body, _) = get(
            &sim,
            &format!("marketplace-provider-offerings/{o}/?field=components"),
        );
        let gpu = body["components"][3].clone();
        assert_eq!(gpu["type"], "gpu");
        let gpu_uuid = gpu["uuid"].as_str().unwrap_or_default().to_owned();
        assert!(!gpu_uuid.is_empty());
        let (st, _) = post(
            &sim,
            &format!("marketplace-provider-offerings/{o}/update_offering_component/"),
            json!({"uuid": gpu_uuid, "type": "gpu", "name": "GPU hours", "billing_type": "usage"}),
        );
        assert_eq!(st, StatusCode::OK);
        let (_, body, _) = get(
            &sim,
            &format!("marketplace-provider-offerings/{o}/?field=components"),
        );
        assert_eq!(
            (
                body["components"][3]["name"].as_str(),
                body["components"][3]["uuid"].as_str(),
                body["components"][3]["limit_amount"].as_i64()
            ),
            (Some("GPU hours"), Some(gpu_uuid.as_str()), Some(5))
        );
        let (st, _) = post(
            &sim,
            &format!("marketplace-provider-offerings/{o}/update_offering_component/"),
            json!({"uuid": new_uuid(), "type": "gpu", "name": "GPU", "billing_type": "usage"}),
        );
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = post(
            &sim,
            &format!("marketplace-provider-offerings/{o}/update_offering_component/"),
            json!({"uuid": gpu_uuid, "type": "cpu", "name": "GPU", "billing_type": "usage"}),
        );
        assert_eq!(st, StatusCode::BAD_REQUEST);

        let (_, body, _) = get(
            &sim,
            &format!("marketplace-provider-offerings/{o}/user-attribute-config/"),
        );
        assert_eq!(
            body["exposed_fields"],
            json!(["username", "full_name", "email"])
        );
        let (_, body, _) = get(&sim, "users/me/");
        assert_eq!(body["permissions"].as_array().map(Vec::len), Some(2));
        assert_eq!(body["permissions"][0]["role_name"], "OFFERING.MANAGER");

        let (st, body) = post(
            &sim,
            &format!("marketplace-provider-resources/{r}/set_membership_sync_statuses/"),
            json!({"statuses": [{"username": "alice", "scope_type": "project", "role_name": "PROJECT.MANAGER", "state": "synced"}]}),
        );
        assert_eq!(
            (st, body),
            (StatusCode::OK, json!({"stored": 1, "skipped": []}))
        );
        post(
            &sim,
            &format!("marketplace-provider-resources/{r}/set_membership_sync_statuses/"),
            json!({"statuses": []}),
        );
        assert!(sim.membership_statuses(&r).is_empty());
    }

    #[test]
    fn cached_list_positions_follow_changes() {
        let sim = Sim::new("t");
        let s = sim.seed_basic(None, &[]);
        sim.seed_bulk(&s.offering_uuid, 30, 1);
        let q = format!(
            "marketplace-offering-users/?offering_uuid={}&state=OK&page_size=10&page=2",
            s.offering_uuid
        );
        let (_, page2, count) = get(&sim, &q);
        assert_eq!(
            (count, page2.as_array().map(Vec::len)),
            (Some(30), Some(10))
        );
        // A change through the API drops the cached positions.
        let first = page2[0]["uuid"].as_str().unwrap_or_default().to_owned();
        post(
            &sim,
            &format!("marketplace-offering-users/{first}/set_error_creating/"),
            json!({}),
        );
        assert_eq!(
            sim.offering_user(&first).map(|o| o.state),
            Some("OK".into())
        );
        if let Some(o) = sim.world().offering_users.get_mut(&first) {
            o.state = "Creating".into();
        }
        let (_, page2, count) = get(&sim, &q);
        assert_eq!(count, Some(29));
        assert_ne!(page2[0]["uuid"], first.as_str());
        let (st, _) = post(
            &sim,
            &format!("marketplace-offering-users/{first}/set_error_creating/"),
            json!({}),
        );
        assert_eq!(st, StatusCode::OK);
        let (_, _, count) = get(&sim, &q.replace("state=OK", "state=Error%20creating"));
        assert_eq!(count, Some(1));
        // New records show at once, and pages do not overlap.
        let r = sim.seed_bulk(&s.offering_uuid, 1, 0);
        let list = |page: usize| {
            get(
                &sim,
                &format!(
                    "marketplace-provider-resources/?offering_uuid={}&page_size=16&page={page}",
                    s.offering_uuid
                ),
            )
        };
        let (_, one, count) = list(1);
        let (_, two, _) = list(2);
        assert_eq!(count, Some(31));
        let mut seen: Vec<String> = one
            .as_array()
            .into_iter()
            .chain(two.as_array())
            .flatten()
            .filter_map(|v| v["uuid"].as_str().map(str::to_owned))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 31);
        assert!(seen.contains(&r[0]));
    }

    #[test]
    fn control_api_mirrors() {
        let sim = Sim::new("t");
        let s = team(&sim);
        let r = resource(&sim, &s);
        let control = |m: Method, path: &str, body: Value| {
            http::control(&sim, &m, path, &Vec::new(), Some(body))
        };
        let (st, v) = control(
            Method::POST,
            "users",
            json!({"username": "dave", "email": "d@example.org"}),
        );
        assert_eq!(st, StatusCode::CREATED);
        let dave = v["uuid"].as_str().unwrap_or_default().to_owned();
        let role =
            json!({"project_uuid": s.project_uuid, "user_uuid": dave, "role": "PROJECT.ADMIN"});
        assert_eq!(
            control(Method::POST, "roles", role.clone()).0,
            StatusCode::CREATED
        );
        let (st, v) = control(
            Method::POST,
            "offering-users",
            json!({"offering_uuid": s.offering_uuid, "user_uuid": dave, "state": "OK", "username": "dave"}),
        );
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!(
            sim.offering_user(v["uuid"].as_str().unwrap_or_default())
                .and_then(|o| o.username),
            Some("dave".into())
        );
        let (_, t, _) = get(&sim, &format!("marketplace-provider-resources/{r}/team/"));
        assert_eq!(t.as_array().map(Vec::len), Some(3));
        assert_eq!(control(Method::DELETE, "roles", role).0, StatusCode::OK);
        let (_, t, _) = get(&sim, &format!("marketplace-provider-resources/{r}/team/"));
        assert_eq!(t.as_array().map(Vec::len), Some(2));
        let (st, v) = control(
            Method::POST,
            &format!("resources/{r}/flags"),
            json!({"paused": false, "downscaled": true}),
        );
        assert_eq!(
            (st, v),
            (StatusCode::OK, json!({"paused": false, "downscaled": true}))
        );
        assert_eq!(
            control(
                Method::POST,
                &format!("resources/{}/flags", new_uuid()),
                json!({})
            )
            .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            control(
                Method::POST,
                "roles",
                json!({"project_uuid": new_uuid(), "user_uuid": dave})
            )
            .0,
            StatusCode::NOT_FOUND
        );
        post(
            &sim,
            "marketplace-component-usages/set_usage/",
            json!({"resource": r, "date": "2026-11-05T00:00:00Z", "usages": [{"type": "cpu", "amount": "1"}]}),
        );
        let (st, v) = http::control(
            &sim,
            &Method::GET,
            "usages",
            &vec![("resource_uuid".into(), r.clone())],
            None,
        );
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v[0]["usage"], "1.00");
        assert_eq!(v[0]["billing_period"], "2026-11-01");
    }

    #[test]
    fn bulk_seeding_and_large_listings_answer_correctly() {
        // Figures are printed, not asserted: speed lives in the benchmarks.
        let sim = Sim::with_recording("t", false);
        let s = sim.seed_basic(None, &[]);
        let started = Instant::now();
        let resources = sim.seed_bulk(&s.offering_uuid, 10_000, 5);
        let seeding = started.elapsed();
        assert_eq!(resources.len(), 10_000);
        {
            let mut w = sim.world();
            assert_eq!(w.offering_users.len(), 50_000);
            assert_eq!(w.roles.len(), 50_000);
            // 40,000 usages and 100,000 user usages.
            for r in &resources {
                for date in ["2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"] {
                    let items = ["cpu", "mem"].map(|k| world::UsageItem {
                        component_type: k.into(),
                        amount: "1.00".into(),
                        description: String::new(),
                    });
                    let ids = w.set_usage(r, date, &items).unwrap_or_default();
                    if date.starts_with("2026-11") {
                        for id in ids {
                            let users = (0..5)
                                .map(|j| {
                                    (
                                        format!("user{j}"),
                                        world::UserUsage {
                                            usage: "0.20".into(),
                                            date: date.into(),
                                            ..Default::default()
                                        },
                                    )
                                })
                                .collect();
                            assert_eq!(w.set_user_usages(&id, users), Ok(()));
                        }
                    }
                }
            }
            assert_eq!(w.usages.len(), 40_000);
        }
        let r = &resources[4_321];
        let o = &s.offering_uuid;
        let mid = "page=50&page_size=100";
        let paths = [
            format!(
                "marketplace-provider-resources/?offering_uuid={o}&state=OK&state=Erred&page_size=100"
            ),
            format!("marketplace-provider-resources/?offering_uuid={o}&{mid}"),
            format!("marketplace-offering-users/?offering_uuid={o}&is_restricted=false&{mid}"),
            format!(
                "marketplace-offering-users/?offering_uuid={o}&user_uuid={}",
                sim.world().users.keys().next().cloned().unwrap_or_default()
            ),
            format!("marketplace-component-usages/?{mid}"),
            format!(
                "marketplace-component-usages/?offering_uuid={o}&billing_period=2026-11-01&{mid}"
            ),
            format!("marketplace-component-usages/?resource_uuid={r}&billing_period=2026-11-01"),
            format!("marketplace-component-user-usages/?{mid}"),
            format!("marketplace-component-user-usages/?offering_uuid={o}&{mid}"),
            format!(
                "marketplace-component-user-usages/?resource_uuid={r}&component_usage_billing_period=2026-11-01"
            ),
            format!("marketplace-provider-resources/{r}/team/"),
        ];
        for p in &paths {
            // After a change the filter table is rebuilt once.
            sim.world().touch();
            let started = Instant::now();
            get(&sim, p);
            let cold = started.elapsed();
            // The best of 3: a page is fast unless the machine is busy.
            let mut took = Duration::MAX;
            let (mut status, mut body) = (StatusCode::OK, Value::Null);
            for _ in 0..3 {
                let started = Instant::now();
                (status, body, _) = get(&sim, p);
                took = took.min(started.elapsed());
            }
            println!("{took:?} (after a change: {cold:?}) {p}");
            assert_eq!(status, StatusCode::OK, "{p}: {body}");
            assert!(body.as_array().is_some_and(|a| !a.is_empty()), "{p}");
        }
        let started = Instant::now();
        let (status, _) = post(
            &sim,
            "marketplace-component-usages/set_usage/",
            json!({"resource": r, "date": "2026-11-02T00:00:00Z", "usages": [{"type": "cpu", "amount": "3"}]}),
        );
        println!("{:?} set_usage", started.elapsed());
        assert_eq!(status, StatusCode::CREATED);
        println!("seed_bulk 10000 x 5: {seeding:?}");
        let first = sim.resource(&resources[0]).unwrap_or_default();
        assert_eq!(
            (
                first.slug.as_str(),
                first.backend_id.as_str(),
                first.state.as_str()
            ),
            ("bulk-0", "bulk_0", "OK")
        );
        let (_, team, _) = get(
            &sim,
            &format!("marketplace-provider-resources/{}/team/", resources[0]),
        );
        assert_eq!(team[4]["offering_user_username"], "u0x4");
        assert_eq!(team[4]["role"], "PROJECT.MEMBER");
    }
}
