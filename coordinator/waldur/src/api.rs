//! The Waldur endpoints the coordinator uses, one method each.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ids::Uuid;
use super::types::*;
use super::{Query, WaldurClient, WaldurResult};

/// Any JSON answer we do not need to read.
type Ignored = serde::de::IgnoredAny;

impl WaldurClient {
    // -------------------------------------------------------------- version

    /// The Mastermind release (`GET version/`), for start-up and `check`.
    pub async fn version(&self) -> WaldurResult<String> {
        #[derive(serde::Deserialize)]
        struct Version {
            version: String,
        }
        let v: Version = self.get("version/", vec![]).await?;
        Ok(v.version)
    }

    // ------------------------------------------------------------- identity

    /// Agent identities named `name` (single page).
    pub async fn agent_identities(&self, name: &str) -> WaldurResult<Vec<AgentIdentity>> {
        self.get(
            "marketplace-site-agent-identities/",
            vec![("name", name.to_owned())],
        )
        .await
    }

    /// Creates an agent identity.
    pub async fn create_agent_identity(&self, body: &Value) -> WaldurResult<AgentIdentity> {
        self.post_create("marketplace-site-agent-identities/", body)
            .await
    }

    /// Replaces an agent identity.
    pub async fn update_agent_identity(
        &self,
        uuid: &Uuid,
        body: &Value,
    ) -> WaldurResult<AgentIdentity> {
        self.put(&format!("marketplace-site-agent-identities/{uuid}/"), body)
            .await
    }

    /// Registers (get-or-create) a service of an identity.
    pub async fn register_service(
        &self,
        identity: &Uuid,
        name: &str,
        mode: &str,
    ) -> WaldurResult<AgentService> {
        self.post(
            &format!("marketplace-site-agent-identities/{identity}/register_service/"),
            &json!({"name": name, "mode": mode}),
        )
        .await
    }

    /// Registers (get-or-create) a processor of a service.
    pub async fn register_processor(
        &self,
        service: &Uuid,
        name: &str,
        backend_type: &str,
        backend_version: &str,
    ) -> WaldurResult<()> {
        self.post_ignored(&format!("marketplace-site-agent-services/{service}/register_processor/"), &json!({"name": name, "backend_type": backend_type, "backend_version": backend_version})).await
    }

    // ------------------------------------------------------------- offering

    /// The provider offering with the given sparse fields.
    pub async fn provider_offering(
        &self,
        offering: &Uuid,
        fields: &[&str],
    ) -> WaldurResult<ProviderOffering> {
        let query: Query = fields.iter().map(|f| ("field", (*f).to_owned())).collect();
        self.get(
            &format!("marketplace-provider-offerings/{offering}/"),
            query,
        )
        .await
    }

    /// The service provider of a customer (single page, first entry).
    pub async fn service_provider(
        &self,
        customer_uuid: &Uuid,
    ) -> WaldurResult<Option<ServiceProvider>> {
        let list: Vec<ServiceProvider> = self
            .get(
                "marketplace-service-providers/",
                vec![
                    ("customer_uuid", customer_uuid.to_string()),
                    ("field", "uuid".into()),
                ],
            )
            .await?;
        Ok(list.into_iter().next())
    }

    /// The service provider's SSH keys (single page).
    pub async fn service_provider_keys(&self, sp: &Uuid) -> WaldurResult<Vec<SshKey>> {
        self.get(&format!("marketplace-service-providers/{sp}/keys/"), vec![])
            .await
    }

    /// A plan.
    pub async fn plan(&self, uuid: &Uuid) -> WaldurResult<Plan> {
        self.get(&format!("marketplace-plans/{uuid}/"), vec![])
            .await
    }

    /// Whether a backend id is unused.
    pub async fn check_unique_backend_id(
        &self,
        offering: &Uuid,
        backend_id: &str,
        check_all_offerings: bool,
    ) -> WaldurResult<bool> {
        let r: UniqueCheck = self
            .post(
                &format!("marketplace-provider-offerings/{offering}/check_unique_backend_id/"),
                &json!({"backend_id": backend_id, "check_all_offerings": check_all_offerings}),
            )
            .await?;
        Ok(r.is_unique)
    }

    // --------------------------------------------------------------- orders

    /// Orders of an offering in the given states (list-all).
    pub async fn orders(&self, offering: &Uuid, states: &[OrderState]) -> WaldurResult<Vec<Order>> {
        let mut query: Query = vec![("offering_uuid", offering.to_string())];
        query.extend(states.iter().map(|s| ("state", s.as_str().to_owned())));
        self.list_all("marketplace-orders/", query).await
    }

    /// One order.
    pub async fn order(&self, uuid: &Uuid) -> WaldurResult<Order> {
        self.get(&format!("marketplace-orders/{uuid}/"), vec![])
            .await
    }

    /// Approves a pending-provider order.
    pub async fn approve_order(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-orders/{uuid}/approve_by_provider/"),
            &json!({}),
        )
        .await
    }

    /// Leaves a message for the consumer on a pending order (why it waits).
    pub async fn set_order_provider_message(&self, uuid: &Uuid, message: &str) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-orders/{uuid}/set_provider_info/"),
            &json!({"provider_message": message}),
        )
        .await
    }

    /// Rejects a pending-provider order.
    pub async fn reject_order(&self, uuid: &Uuid, comment: &str) -> WaldurResult<()> {
        let body = if comment.is_empty() {
            json!({})
        } else {
            json!({"provider_rejection_comment": comment})
        };
        self.post_ignored(
            &format!("marketplace-orders/{uuid}/reject_by_provider/"),
            &body,
        )
        .await
    }

    /// Marks an executing order done.
    pub async fn set_order_done(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!("marketplace-orders/{uuid}/set_state_done/"))
            .await
    }

    /// Marks an executing order erred.
    pub async fn set_order_erred(
        &self,
        uuid: &Uuid,
        message: &str,
        traceback: &str,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-orders/{uuid}/set_state_erred/"),
            &json!({"error_message": message, "error_traceback": traceback}),
        )
        .await
    }

    /// Sets the order's backend id (slow operations, for display).
    pub async fn set_order_backend_id(&self, uuid: &Uuid, backend_id: &str) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-orders/{uuid}/set_backend_id/"),
            &json!({"backend_id": backend_id}),
        )
        .await
    }

    // ------------------------------------------------------------ resources

    /// One provider resource.
    pub async fn resource(&self, uuid: &Uuid) -> WaldurResult<Resource> {
        self.get(&format!("marketplace-provider-resources/{uuid}/"), vec![])
            .await
    }

    /// The team of a resource's project (single page).
    pub async fn resource_team(&self, uuid: &Uuid) -> WaldurResult<Vec<TeamMember>> {
        self.get(
            &format!("marketplace-provider-resources/{uuid}/team/"),
            vec![],
        )
        .await
    }

    /// Sets the resource's backend id.
    pub async fn set_resource_backend_id(&self, uuid: &Uuid, backend_id: &str) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_backend_id/"),
            &json!({"backend_id": backend_id}),
        )
        .await
    }

    /// Sets the resource's limits.
    pub async fn set_resource_limits(
        &self,
        uuid: &Uuid,
        limits: &BTreeMap<String, i64>,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_limits/"),
            &json!({"limits": limits}),
        )
        .await
    }

    /// Sets the resource's backend metadata.
    pub async fn set_resource_backend_metadata(
        &self,
        uuid: &Uuid,
        metadata: &Value,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_backend_metadata/"),
            &json!({"backend_metadata": metadata}),
        )
        .await
    }

    /// Sets the resource's endpoints. Not in Waldur 8.0.5's schema; newer
    /// Waldur versions have it, and the original agent calls it.
    pub async fn set_resource_endpoints(&self, uuid: &Uuid, endpoints: &Value) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_endpoints/"),
            &json!({"endpoints": endpoints}),
        )
        .await
    }

    // -------------------------------------------------------- offering users

    /// Offering users of an offering that are not restricted (list-all).
    pub async fn offering_users(&self, offering: &Uuid) -> WaldurResult<Vec<OfferingUser>> {
        let mut out = Vec::new();
        self.offering_user_pages(offering, |page| out.extend(page))
            .await?;
        Ok(out)
    }

    /// The offering's unrestricted offering users, a page at a time.
    pub async fn offering_user_pages(
        &self,
        offering: &Uuid,
        page_fn: impl FnMut(Vec<OfferingUser>),
    ) -> WaldurResult<()> {
        self.for_each_page(
            "marketplace-offering-users/",
            vec![
                ("offering_uuid", offering.to_string()),
                ("is_restricted", "false".into()),
            ],
            page_fn,
        )
        .await
    }

    /// Offering users of an offering in the given states (list-all).
    pub async fn offering_users_in(
        &self,
        offering: &Uuid,
        states: &[&str],
    ) -> WaldurResult<Vec<OfferingUser>> {
        let mut query: Query = vec![
            ("offering_uuid", offering.to_string()),
            ("is_restricted", "false".into()),
        ];
        query.extend(states.iter().map(|s| ("state", (*s).to_owned())));
        self.list_all("marketplace-offering-users/", query).await
    }

    /// Requested / Error creating → Creating.
    pub async fn offering_user_begin_creating(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!(
            "marketplace-offering-users/{uuid}/begin_creating/"
        ))
        .await
    }

    /// → Pending account linking, with what the user must do.
    pub async fn offering_user_pending_linking(
        &self,
        uuid: &Uuid,
        comment: &str,
        comment_url: &str,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-offering-users/{uuid}/set_pending_account_linking/"),
            &json!({"comment": comment, "comment_url": comment_url}),
        )
        .await
    }

    /// → Pending additional validation, with what the user must do.
    pub async fn offering_user_pending_validation(
        &self,
        uuid: &Uuid,
        comment: &str,
        comment_url: &str,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-offering-users/{uuid}/set_pending_additional_validation/"),
            &json!({"comment": comment, "comment_url": comment_url}),
        )
        .await
    }

    /// Pending * → OK.
    pub async fn offering_user_validation_complete(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!(
            "marketplace-offering-users/{uuid}/set_validation_complete/"
        ))
        .await
    }

    /// Creating → Error creating.
    pub async fn offering_user_error_creating(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!(
            "marketplace-offering-users/{uuid}/set_error_creating/"
        ))
        .await
    }

    /// Sets the offering username (Waldur moves Creating users to OK).
    pub async fn set_offering_username(&self, uuid: &Uuid, username: &str) -> WaldurResult<()> {
        self.patch_ignored(
            &format!("marketplace-offering-users/{uuid}/"),
            &json!({"username": username}),
        )
        .await
    }

    /// Which user attributes the offering exposes.
    pub async fn attribute_config(&self, offering: &Uuid) -> WaldurResult<AttributeConfig> {
        self.get(
            &format!("marketplace-provider-offerings/{offering}/user-attribute-config/"),
            vec![],
        )
        .await
    }

    // -------------------------------------------------------- resources (bulk)

    /// Provider resources of an offering in the given states (list-all).
    pub async fn resources(
        &self,
        offering: &Uuid,
        states: &[&str],
        fields: &[&str],
    ) -> WaldurResult<Vec<Resource>> {
        let mut out = Vec::new();
        self.resource_pages(offering, states, fields, |page| out.extend(page))
            .await?;
        out.shrink_to_fit();
        Ok(out)
    }

    /// The same list a page at a time, for a caller that keeps a digest.
    pub async fn resource_pages(
        &self,
        offering: &Uuid,
        states: &[&str],
        fields: &[&str],
        page_fn: impl FnMut(Vec<Resource>),
    ) -> WaldurResult<()> {
        let mut query: Query = vec![("offering_uuid", offering.to_string())];
        query.extend(states.iter().map(|s| ("state", (*s).to_owned())));
        query.extend(fields.iter().map(|f| ("field", (*f).to_owned())));
        self.for_each_page("marketplace-provider-resources/", query, page_fn)
            .await
    }

    /// Marks the resource as synced now.
    pub async fn refresh_last_sync(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!(
            "marketplace-provider-resources/{uuid}/refresh_last_sync/"
        ))
        .await
    }

    /// Erred → OK.
    pub async fn set_resource_ok(&self, uuid: &Uuid) -> WaldurResult<()> {
        self.post_empty(&format!("marketplace-provider-resources/{uuid}/set_as_ok/"))
            .await
    }

    /// → Erred with a message.
    pub async fn set_resource_erred(
        &self,
        uuid: &Uuid,
        message: &str,
        traceback: &str,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_as_erred/"),
            &json!({"error_message": message, "error_traceback": traceback}),
        )
        .await
    }

    /// Full-replace report of how each member's access was synced. Newer
    /// than Waldur 8.0.5; only sent when the offering enables it.
    pub async fn set_membership_sync_statuses(
        &self,
        uuid: &Uuid,
        statuses: &[Value],
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-resources/{uuid}/set_membership_sync_statuses/"),
            &json!({"statuses": statuses}),
        )
        .await
    }

    /// Project service accounts of the offering's projects (list-all).
    pub async fn service_accounts(&self, offering: &Uuid) -> WaldurResult<Vec<Account>> {
        self.list_all(
            &format!("marketplace-provider-offerings/{offering}/list_project_service_accounts/"),
            vec![],
        )
        .await
    }

    /// Course accounts of the offering's projects (list-all).
    pub async fn course_accounts(&self, offering: &Uuid) -> WaldurResult<Vec<Account>> {
        self.list_all(
            &format!("marketplace-provider-offerings/{offering}/list_course_accounts/"),
            vec![],
        )
        .await
    }

    // ----------------------------------------------------------------- usage

    /// Every component usage of an offering in a billing period, a page at
    /// a time: one read per offering and period instead of one per
    /// resource, and the caller keeps what it needs of each record.
    pub async fn component_usage_pages(
        &self,
        offering: &Uuid,
        billing_period: &str,
        page_fn: impl FnMut(Vec<ComponentUsage>),
    ) -> WaldurResult<()> {
        self.for_each_page(
            "marketplace-component-usages/",
            vec![
                ("offering_uuid", offering.to_string()),
                ("billing_period", billing_period.to_owned()),
                ("field", "uuid".into()),
                ("field", "type".into()),
                ("field", "usage".into()),
                ("field", "resource_uuid".into()),
                ("field", "billing_period".into()),
            ],
            page_fn,
        )
        .await
    }

    /// Every per-user usage of an offering in a billing period, a page at a
    /// time.
    pub async fn component_user_usage_pages(
        &self,
        offering: &Uuid,
        billing_period: &str,
        page_fn: impl FnMut(Vec<ComponentUserUsage>),
    ) -> WaldurResult<()> {
        self.for_each_page(
            "marketplace-component-user-usages/",
            vec![
                ("offering_uuid", offering.to_string()),
                ("component_usage__billing_period", billing_period.to_owned()),
                ("field", "uuid".into()),
                ("field", "component_usage".into()),
                ("field", "username".into()),
                ("field", "usage".into()),
            ],
            page_fn,
        )
        .await
    }

    /// Sets a resource's usage totals for the period `date` falls in.
    pub async fn set_usage(
        &self,
        resource: &Uuid,
        usages: &[(String, String)],
        date: &str,
    ) -> WaldurResult<()> {
        let usages: Vec<Value> = usages
            .iter()
            .map(|(k, amount)| json!({"type": k, "amount": amount}))
            .collect();
        self.post_ignored(
            "marketplace-component-usages/set_usage/",
            &json!({"usages": usages, "resource": resource, "date": date}),
        )
        .await
    }

    /// Sets the per-user amounts of one component usage record.
    pub async fn set_user_usages(&self, usage: &Uuid, items: &[Value]) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-component-usages/{usage}/set_user_usages/"),
            &json!({"usages": items}),
        )
        .await
    }

    /// Per-user usage limits of every resource of an offering (list-all).
    pub async fn user_usage_limits(&self, offering: &Uuid) -> WaldurResult<Vec<UserUsageLimit>> {
        self.list_all(
            "component-user-usage-limits/",
            vec![("offering_uuid", offering.to_string())],
        )
        .await
    }

    // ------------------------------------------------------------ operations

    /// The token's user.
    pub async fn me(&self) -> WaldurResult<Me> {
        self.get("users/me/", vec![]).await
    }

    /// Creates an offering component.
    pub async fn create_offering_component(
        &self,
        offering: &Uuid,
        body: &Value,
    ) -> WaldurResult<()> {
        let _: Ignored = self
            .post_create(
                &format!("marketplace-provider-offerings/{offering}/create_offering_component/"),
                body,
            )
            .await?;
        Ok(())
    }

    /// Updates an offering component (`body` carries its `uuid`).
    pub async fn update_offering_component(
        &self,
        offering: &Uuid,
        body: &Value,
    ) -> WaldurResult<()> {
        self.post_ignored(
            &format!("marketplace-provider-offerings/{offering}/update_offering_component/"),
            body,
        )
        .await
    }

    // ----------------------------------------------------------------- events

    /// Registers (get-or-create) an event subscription of the identity.
    pub async fn register_event_subscription(
        &self,
        identity: &Uuid,
        object_type: &str,
    ) -> WaldurResult<EventSubscription> {
        self.post(
            &format!("marketplace-site-agent-identities/{identity}/register_event_subscription/"),
            &json!({"observable_object_type": object_type, "description": format!("{object_type} events for the site agent")}),
        )
        .await
    }

    /// Creates (get-or-create) the subscription's queue for an offering.
    pub async fn create_queue(
        &self,
        subscription: &Uuid,
        offering: &Uuid,
        object_type: &str,
    ) -> WaldurResult<EventQueue> {
        self.post(
            &format!("event-subscriptions/{subscription}/create_queue/"),
            &json!({"offering_uuid": offering, "object_type": object_type}),
        )
        .await
    }

    /// Resources of an offering in one project, in the given states.
    pub async fn project_resources(
        &self,
        offering: &Uuid,
        project: &Uuid,
        states: &[&str],
        fields: &[&str],
    ) -> WaldurResult<Vec<Resource>> {
        let mut query: Query = vec![
            ("offering_uuid", offering.to_string()),
            ("project_uuid", project.to_string()),
        ];
        query.extend(states.iter().map(|s| ("state", (*s).to_owned())));
        query.extend(fields.iter().map(|f| ("field", (*f).to_owned())));
        self.list_all("marketplace-provider-resources/", query)
            .await
    }

    /// Reports the outcome of periodic settings to Waldur's policy.
    pub async fn report_periodic_result(
        &self,
        policy: &Uuid,
        resource: &Uuid,
        success: bool,
        error_message: &str,
        commands: &[String],
    ) -> WaldurResult<()> {
        self.post_ignored(&format!("marketplace-slurm-periodic-usage-policies/{policy}/report-command-result/"), &json!({"resource_uuid": resource, "success": success, "error_message": error_message, "commands_executed": commands})).await
    }

    // ---------------------------------------------------------- resource import

    /// A resource import request.
    pub async fn import_request(&self, uuid: &Uuid) -> WaldurResult<Value> {
        self.get(&format!("backend-resource-requests/{uuid}/"), vec![])
            .await
    }

    /// Moves an import request on: `start_processing` or `set_done`.
    pub async fn import_request_step(&self, uuid: &Uuid, step: &'static str) -> WaldurResult<()> {
        self.post_empty(&format!("backend-resource-requests/{uuid}/{step}/"))
            .await
    }

    /// Marks an import request erred.
    pub async fn import_request_erred(&self, uuid: &Uuid, message: &str) -> WaldurResult<()> {
        self.post_ignored(
            &format!("backend-resource-requests/{uuid}/set_erred/"),
            &json!({"error_message": message, "error_traceback": ""}),
        )
        .await
    }

    /// The project with this slug, if any.
    pub async fn project_by_slug(&self, slug: &str) -> WaldurResult<Option<String>> {
        let list: Vec<Value> = self
            .get(
                "projects/",
                vec![("slug", slug.to_owned()), ("field", "uuid".into())],
            )
            .await?;
        Ok(list
            .first()
            .and_then(|p| p["uuid"].as_str())
            .map(str::to_owned))
    }

    /// Whether an importable backend resource is already offered.
    pub async fn backend_resource_exists(
        &self,
        backend_id: &str,
        project: &Uuid,
        offering: &Uuid,
    ) -> WaldurResult<bool> {
        let list: Vec<Value> = self
            .list_all(
                "backend-resources/",
                vec![
                    ("backend_id", backend_id.to_owned()),
                    ("project_uuid", project.to_string()),
                    ("offering_uuid", offering.to_string()),
                ],
            )
            .await?;
        Ok(!list.is_empty())
    }

    /// Offers a backend resource for import into a project.
    pub async fn create_backend_resource(
        &self,
        backend_id: &str,
        project: &Uuid,
        offering: &Uuid,
        limits: &BTreeMap<String, i64>,
    ) -> WaldurResult<()> {
        let _: Ignored = self.post_create("backend-resources/", &json!({"name": backend_id, "project": project, "offering": offering, "backend_id": backend_id, "backend_metadata": {"limits": limits}})).await?;
        Ok(())
    }
}
