//! The three order types carried out: Create (and Restore) with the
//! resource's team, limits and published results, Update, Terminate; and the
//! per-cycle lookups they share (offering, plans, SSH keys).

use std::collections::BTreeMap;

use serde_json::Value;
use tonic::Code;
use waldur_backend_api::types::{
    self as api, Capability, CreateResource, JsonObject, OrderType, Outcome, ResourceContext,
    ResourceInfo, User,
};

use crate::config::BackendIdConfig;
use waldur_client::WaldurError;
use waldur_client::ids::Uuid;
use waldur_client::types::{self, Order, Resource};

use super::{CycleCache, Executed, OrderIds, OrderProcessor, PostProcess};
use crate::processors::step::StepError;

impl OrderProcessor {
    pub(super) async fn create(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<Executed, StepError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        let ctx = resource_context(&resource, order);

        // Idempotent path: the resource already has a backend id.
        if !resource.backend_id.is_empty() {
            let session = self.backend.lock(&resource.backend_id).await;
            if self
                .backend
                .get_resource(&resource.backend_id)
                .await?
                .is_some()
            {
                return Ok(Executed::Done {
                    post: Some(PostProcess {
                        backend_id: resource.backend_id.clone(),
                        resource: ids.resource.clone(),
                    }),
                });
            }
            // Gone from the backend (restore, or deleted by hand): re-create
            // it under the same name.
            let resp = session
                .create_resource(CreateResource {
                    resource: ctx,
                    limits: resource.limits.clone(),
                    ..CreateResource::default()
                })
                .await?;
            if !resp.ready {
                return Ok(Executed::InProgress);
            }
            return Ok(Executed::Done {
                post: Some(PostProcess {
                    backend_id: resource.backend_id.clone(),
                    resource: ids.resource.clone(),
                }),
            });
        }

        // Fresh path: resolve the context once, then find a free backend id.
        let team = self.waldur.resource_team(&ids.resource).await?;
        let users = self.team_users(&team, cache).await?;
        let plan_quotas = match &resource.plan_uuid {
            Some(plan) if !plan.is_empty() => self.plan_quotas(plan, cache).await?,
            _ => BTreeMap::new(),
        };
        let ssh_keys = self.ssh_keys(cache).await;
        let offering = self.offering(cache).await?;
        let project_slug_policy =
            offering.plugin_options[types::plugin_option::ACCOUNT_NAME_GENERATION_POLICY].as_str()
                == Some("project_slug");
        let limits: BTreeMap<String, i64> = if order.limits.is_empty() {
            resource.limits.clone()
        } else {
            order.limits.clone()
        };

        let naming = &self.offering.backend_id;
        let mut base = if project_slug_policy {
            resource.project_slug.clone()
        } else {
            resource.slug.clone()
        };
        if base.is_empty() {
            return Err(StepError::Failed(
                "the resource has neither slug nor project slug".into(),
            ));
        }
        let attempts = naming.max_retries.max(1);
        for attempt in 0..attempts {
            let backend_id = self.backend.generate_backend_id(&base, &ctx).await?;
            // The lock is held from the uniqueness check to set_backend_id,
            // so two resources processed at once cannot both take the id.
            let session = self.backend.lock(&backend_id).await;
            // Under the project_slug policy every resource of a project
            // starts from the same name: Waldur must be asked (the backend
            // cannot tell two resources of one project apart).
            if (naming.check_uniqueness || project_slug_policy)
                && !self.is_unique(&backend_id, naming).await?
            {
                base = format!("{}-{attempt}", resource.project_slug);
                continue;
            }
            let request = CreateResource {
                resource: ctx.clone(),
                limits: limits.clone(),
                users: users.clone(),
                plan_quotas: plan_quotas.clone(),
                ssh_keys: ssh_keys.clone(),
                ..CreateResource::default()
            };
            let resp = match session.create_resource(request).await {
                Ok(r) => r,
                // Taken by another resource on the backend: the next name.
                // (The original retried this only with uniqueness checks on;
                // trying the next name is always the useful answer.)
                Err(e) if e.code == Code::AlreadyExists => {
                    tracing::info!(
                        backend_id,
                        "backend id taken on the backend, trying the next one"
                    );
                    base = format!("{}-{attempt}", resource.project_slug);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for r in &resp.user_results {
                if let Outcome::Failed(e) = &r.outcome {
                    tracing::warn!(backend_id, user = %r.username, error = %e, "user not added at creation");
                }
            }
            if !resp.ready {
                if let Some(op) = &resp.operation_id
                    && &order.backend_id != op
                {
                    self.waldur.set_order_backend_id(&ids.order, op).await?;
                }
                return Ok(Executed::InProgress);
            }
            self.publish_created(&ids.resource, &resource, resp.resource, &backend_id)
                .await?;
            return Ok(Executed::Done { post: None });
        }
        Err(StepError::Failed(format!(
            "all {attempts} generated backend ids are already taken; change the resource or project slug"
        )))
    }

    /// Writes what the backend created back to Waldur.
    pub(super) async fn publish_created(
        &self,
        id: &Uuid,
        resource: &Resource,
        info: ResourceInfo,
        backend_id: &str,
    ) -> Result<(), StepError> {
        self.waldur.set_resource_backend_id(id, backend_id).await?;
        if !info.limits.is_empty()
            && info.limits != resource.limits
            && !self.waldur.lacks_set_limits()
        {
            match self.waldur.set_resource_limits(id, &info.limits).await {
                // An older Waldur cannot take them; the order is not at fault.
                Err(e) if e.is_missing_endpoint() => {}
                other => other?,
            }
        }
        let mut metadata = info.metadata;
        // The order's trace, so an operator can go from the resource in
        // Waldur to everything that happened to create it.
        if let Some(trace_id) = waldur_runtime::telemetry::current_trace_id() {
            metadata.insert("trace_id".into(), Value::String(trace_id));
        }
        // Credentials are for the resource owner: they go to Waldur with the
        // metadata and nowhere else (never into logs).
        for (k, v) in info.credentials.0 {
            metadata.insert(k, Value::String(v));
        }
        if !metadata.is_empty()
            && let Err(e) = self
                .waldur
                .set_resource_backend_metadata(id, &Value::Object(metadata))
                .await
        {
            tracing::warn!(resource = %resource.uuid, error = %e, "set_backend_metadata failed");
        }
        if !info.endpoints.is_empty() {
            let endpoints: Vec<Value> = info
                .endpoints
                .iter()
                .map(|e| serde_json::json!({"name": e.name, "url": e.url}))
                .collect();
            if let Err(e) = self
                .waldur
                .set_resource_endpoints(id, &Value::Array(endpoints))
                .await
            {
                tracing::warn!(resource = %resource.uuid, error = %e, "set_endpoints failed");
            }
        }
        Ok(())
    }

    pub(super) async fn update(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<Executed, StepError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        if resource.backend_id.is_empty() {
            return Err(StepError::Failed("the resource has no backend id".into()));
        }
        let mut new = order.limits.clone();
        if new.is_empty()
            && let Some(plan) = order.plan_uuid.as_deref().filter(|p| !p.is_empty())
        {
            new = self.plan_quotas(plan, cache).await?;
        }
        let prepaid = self.backend.prepaid().await?;
        if new.is_empty() && prepaid {
            // A renewal may carry no limits: the resource keeps its own.
            new = resource.limits.clone();
        }
        if new.is_empty() {
            tracing::warn!(order = %order.uuid, "update order without limits or plan quotas");
            return Ok(Executed::Done { post: None });
        }
        let mut ctx = resource_context(&resource, order);
        // A renewal moves the end date, and with it what a prepaid backend
        // grants for the months; the order's own date is the newest.
        if let Some(end) = timestamp(order.attributes.get("end_date").and_then(Value::as_str)) {
            ctx.end_date = Some(end);
        }
        if new == resource.limits && (!prepaid || ctx.created.is_none() || ctx.end_date.is_none()) {
            // Nothing changed, or a prepaid renewal whose months cannot be
            // counted (a missing date would count one): nothing to set.
            return Ok(Executed::Done { post: None });
        }
        let resp = self
            .backend
            .lock(&resource.backend_id)
            .await
            .set_resource_limits(new, Some(ctx))
            .await?;
        Ok(if resp.ready {
            Executed::Done { post: None }
        } else {
            Executed::InProgress
        })
    }

    pub(super) async fn terminate(
        &self,
        order: &Order,
        ids: &OrderIds,
    ) -> Result<Executed, StepError> {
        let resource = self.waldur.resource(&ids.resource).await?;
        if resource.backend_id.is_empty() {
            return Ok(Executed::Done { post: None });
        }
        let ctx = resource_context(&resource, order);
        let resp = self
            .backend
            .lock(&resource.backend_id)
            .await
            .delete_resource(Some(ctx))
            .await?;
        Ok(if resp.ready {
            Executed::Done { post: None }
        } else {
            Executed::InProgress
        })
    }

    /// Adds the team's OK offering users to a resource (post-processing).
    pub(super) async fn add_team(
        &self,
        resource: &Uuid,
        backend_id: &str,
        cache: &CycleCache,
    ) -> Result<(), StepError> {
        if !self.backend.has(Capability::Membership).await? {
            return Ok(());
        }
        let team = self.waldur.resource_team(resource).await?;
        let users = self.team_users(&team, cache).await?;
        if users.is_empty() {
            return Ok(());
        }
        let session = self.backend.lock(backend_id).await;
        for r in session.add_users(users, None).await? {
            if let Outcome::Failed(e) = &r.outcome {
                tracing::warn!(backend_id, user = %r.username, error = %e, "user not added");
            }
        }
        Ok(())
    }

    /// Team members with an offering user in state OK, as backend users.
    pub(super) async fn team_users(
        &self,
        team: &[types::TeamMember],
        cache: &CycleCache,
    ) -> Result<Vec<User>, StepError> {
        let usable = cache
            .offering_users
            .get_or_try_init(|| async {
                let list = self
                    .waldur
                    .offering_users(&self.offering.offering_uuid)
                    .await?;
                let exposed = types::AttributeConfig::default().exposed_fields;
                Ok::<_, WaldurError>(crate::processors::team::usable_offering_users(
                    list, &exposed,
                ))
            })
            .await?;
        let users = crate::processors::team::team_users(team, usable);
        Ok(users)
    }

    /// Asks the backend about a pending order, with what the original's
    /// evaluation saw: the order, its project and the project's team with
    /// roles (members with an OK offering user), so a backend can keep an
    /// order pending until, say, a PI exists. A backend that does not
    /// evaluate orders accepts them, and the team is not read.
    pub(super) async fn evaluate(
        &self,
        order: &Order,
        ids: &OrderIds,
        cache: &CycleCache,
    ) -> Result<api::Decision, StepError> {
        if !self.backend.has(Capability::OrderEvaluation).await? {
            return Ok(api::Decision {
                decision: api::OrderDecision::Accept,
                message: String::new(),
            });
        }
        let mut request = api_order(order);
        let team = self.waldur.resource_team(&ids.resource).await?;
        request.team = self.team_users(&team, cache).await?;
        Ok(self.backend.evaluate_order(request).await?)
    }

    pub(super) async fn offering<'c>(
        &self,
        cache: &'c CycleCache,
    ) -> Result<&'c types::ProviderOffering, StepError> {
        Ok(cache
            .offering
            .get_or_try_init(|| {
                self.waldur.provider_offering(
                    &self.offering.offering_uuid,
                    &["components", "customer_uuid", "plugin_options"],
                )
            })
            .await?)
    }

    pub(super) async fn plan_quotas(
        &self,
        plan: &str,
        cache: &CycleCache,
    ) -> Result<super::Quotas, StepError> {
        let cell = cache
            .plans
            .lock()
            .await
            .entry(plan.to_owned())
            .or_default()
            .clone();
        let quotas = cell
            .get_or_try_init(|| async {
                let plan_id = match Uuid::parse("plan_uuid", plan) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(error = %e, "plan quotas unavailable");
                        return Ok(BTreeMap::new());
                    }
                };
                match self.waldur.plan(&plan_id).await {
                    Ok(p) => Ok(p
                        .quotas
                        .into_iter()
                        .filter(|(_, v)| *v != 0.0)
                        .map(|(k, v)| (k, v.round() as i64))
                        .collect()),
                    // Not cached: the next order of this plan tries again.
                    Err(e) if e.is_transient() => Err(StepError::from(e)),
                    Err(e) => {
                        tracing::warn!(plan, error = %e, "plan quotas unavailable");
                        Ok(BTreeMap::new())
                    }
                }
            })
            .await?;
        Ok(quotas.clone())
    }

    /// Service provider SSH keys; failures give no keys (as the original).
    pub(super) async fn ssh_keys(&self, cache: &CycleCache) -> BTreeMap<String, String> {
        cache
            .ssh_keys
            .get_or_init(|| async {
                let result: Result<BTreeMap<String, String>, StepError> = async {
                    let offering = self.offering(cache).await?;
                    let customer = Uuid::parse("offering.customer_uuid", &offering.customer_uuid)?;
                    let Some(sp) = self.waldur.service_provider(&customer).await? else {
                        return Ok(BTreeMap::new());
                    };
                    let sp = Uuid::parse("service_provider.uuid", &sp.uuid)?;
                    let keys = self.waldur.service_provider_keys(&sp).await?;
                    Ok(keys.into_iter().map(|k| (k.uuid, k.public_key)).collect())
                }
                .await;
                result.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "service provider keys unavailable");
                    BTreeMap::new()
                })
            })
            .await
            .clone()
    }

    /// Whether Waldur knows no other resource with this backend id. A
    /// failed check fails the step (the original assumed "unique"): taking
    /// a name another resource holds is how two resources end up sharing
    /// one account.
    pub(super) async fn is_unique(
        &self,
        backend_id: &str,
        ids: &BackendIdConfig,
    ) -> Result<bool, WaldurError> {
        self.waldur
            .check_unique_backend_id(
                &self.offering.offering_uuid,
                backend_id,
                ids.check_all_offerings,
            )
            .await
    }
}

pub(crate) fn timestamp(s: Option<&str>) -> Option<std::time::SystemTime> {
    let s = s?;
    let ts: jiff::Timestamp = s.parse().ok().or_else(|| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })?;
    Some(ts.into())
}

pub(super) fn attributes(v: &Value) -> Option<JsonObject> {
    match v {
        Value::Object(o) => Some(o.clone()),
        _ => None,
    }
}

/// Time since an ISO 8601 instant (an order's creation), if it parses.
pub(super) fn age(created: Option<&str>) -> Option<std::time::Duration> {
    let at: jiff::Timestamp = created?.parse().ok()?;
    let d = jiff::Timestamp::now().duration_since(at);
    std::time::Duration::try_from(d).ok()
}

/// The resource as the backend contract describes it.
pub fn resource_context(resource: &Resource, order: &Order) -> ResourceContext {
    let pick = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            a.to_owned()
        }
    };
    ResourceContext {
        resource_uuid: pick(&resource.uuid, &order.marketplace_resource_uuid),
        name: pick(&resource.name, &order.resource_name),
        slug: resource.slug.clone(),
        project_uuid: pick(&resource.project_uuid, &order.project_uuid),
        project_slug: pick(&resource.project_slug, &order.project_slug),
        project_name: resource.project_name.clone(),
        customer_uuid: pick(&resource.customer_uuid, &order.customer_uuid),
        customer_slug: pick(&resource.customer_slug, &order.customer_slug),
        customer_name: resource.customer_name.clone(),
        offering_uuid: pick(&resource.offering_uuid, &order.offering_uuid),
        plan_uuid: resource
            .plan_uuid
            .clone()
            .or_else(|| order.plan_uuid.clone())
            .unwrap_or_default(),
        attributes: attributes(&resource.attributes)
            .or_else(|| attributes(&order.attributes))
            .unwrap_or_default(),
        created: timestamp(resource.created.as_deref()),
        end_date: timestamp(resource.end_date.as_deref()),
    }
}

/// The order as the backend contract describes it (for EvaluateOrder).
pub(super) fn api_order(order: &Order) -> api::Order {
    let order_type = match &order.order_type {
        types::OrderType::Create => OrderType::Create,
        types::OrderType::Update => OrderType::Update,
        types::OrderType::Terminate => OrderType::Terminate,
        types::OrderType::Restore => OrderType::Restore,
        types::OrderType::Other(_) | types::OrderType::Missing => OrderType::Unspecified,
    };
    api::Order {
        order_uuid: order.uuid.clone(),
        order_type,
        resource: ResourceContext {
            resource_uuid: order.marketplace_resource_uuid.clone(),
            name: order.resource_name.clone(),
            project_uuid: order.project_uuid.clone(),
            project_slug: order.project_slug.clone(),
            customer_uuid: order.customer_uuid.clone(),
            customer_slug: order.customer_slug.clone(),
            offering_uuid: order.offering_uuid.clone(),
            plan_uuid: order.plan_uuid.clone().unwrap_or_default(),
            attributes: attributes(&order.attributes).unwrap_or_default(),
            ..ResourceContext::default()
        },
        limits: order.limits.clone(),
        created_by_username: order.created_by_username.clone(),
        created_by_full_name: order.created_by_full_name.clone(),
        consumer_message: order.consumer_message.clone(),
        provider_message: order.provider_message.clone(),
        team: Vec::new(),
    }
}
