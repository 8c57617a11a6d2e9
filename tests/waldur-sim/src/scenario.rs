//! Seeding: the scenario a test starts from, orders placed by a customer,
//! and bulk offerings for the benchmarks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Sim;
use crate::world::{self, World, new_uuid, norm};

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
