//! A stateful simulator of Waldur Mastermind.
//!
//! It serves the part of the REST API the coordinator uses, with Waldur's
//! state rules (pending-provider → executing on approve; done/erred only from
//! executing; a done Create makes the resource OK, a done Terminate makes it
//! Terminated), `Link` and `x-result-count` pagination, sparse `field=` sets
//! and token authentication. A control API under `/_sim/` seeds and inspects
//! state, records every call and injects faults (status codes, latency,
//! dropped connections) per endpoint. Answers follow the official OpenAPI
//! schema (8.0.5); `tests/openapi_contract.rs` checks it.

mod http;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

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
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) record_bodies: bool,
    pub(crate) oidc: Mutex<Option<(String, String)>>,
    pub(crate) user_agent: Mutex<Option<String>>,
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
                calls: Mutex::new(Vec::new()),
                record_bodies,
                oidc: Mutex::new(None),
                user_agent: Mutex::new(None),
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

    /// The `User-Agent` of the last API request.
    pub fn last_user_agent(&self) -> Option<String> {
        self.shared
            .user_agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The state, locked.
    pub fn world(&self) -> MutexGuard<'_, World> {
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
        let mut users = BTreeMap::new();
        for (username, role, offering_username) in team {
            let user = world::User {
                uuid: new_uuid(),
                username: (*username).to_owned(),
                full_name: format!("{username} example"),
                email: format!("{username}@example.org"),
            };
            w.roles.push(world::Role {
                project_uuid: project.uuid.clone(),
                user_uuid: user.uuid.clone(),
                role: (*role).to_owned(),
            });
            if let Some(name) = offering_username {
                let ou = world::OfferingUser {
                    uuid: new_uuid(),
                    offering_uuid: offering.uuid.clone(),
                    user_uuid: user.uuid.clone(),
                    username: Some((*name).to_owned()),
                    state: "OK".into(),
                    ..Default::default()
                };
                w.offering_users.insert(ou.uuid.clone(), ou);
            }
            users.insert((*username).to_owned(), user.uuid.clone());
            w.users.insert(user.uuid.clone(), user);
        }
        let scenario = Scenario {
            customer_uuid: customer.uuid.clone(),
            project_uuid: project.uuid.clone(),
            offering_uuid: offering.uuid.clone(),
            plan_uuid: plan.uuid.clone(),
            users,
        };
        w.customers.insert(customer.uuid.clone(), customer);
        w.projects.insert(project.uuid.clone(), project);
        w.offerings.insert(offering.uuid.clone(), offering);
        w.plans.insert(plan.uuid.clone(), plan);
        w.service_providers.insert(sp.uuid.clone(), sp);
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
}
