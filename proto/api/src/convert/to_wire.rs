//! Client direction, requests: domain values into wire messages.
//!
//! These are total: a client builds its requests from values it already
//! holds, so nothing here validates (the server does, and says which field
//! it refused).

use waldur_backend_proto::v1 as wire;

use super::{json_to_struct, to_timestamp};
use crate::types::*;

/// A resource context.
pub fn resource(r: ResourceContext) -> wire::ResourceContext {
    wire::ResourceContext {
        resource_uuid: r.resource_uuid,
        name: r.name,
        slug: r.slug,
        project_uuid: r.project_uuid,
        project_slug: r.project_slug,
        project_name: r.project_name,
        customer_uuid: r.customer_uuid,
        customer_slug: r.customer_slug,
        customer_name: r.customer_name,
        offering_uuid: r.offering_uuid,
        plan_uuid: r.plan_uuid,
        attributes: Some(json_to_struct(r.attributes)),
        created: r.created.map(to_timestamp),
        end_date: r.end_date.map(to_timestamp),
    }
}

/// A team member.
pub fn user(u: User) -> wire::User {
    wire::User {
        username: u.username,
        user_uuid: u.user_uuid,
        waldur_username: u.waldur_username,
        email: u.email,
        full_name: u.full_name,
        role: u.role,
        attributes: u.attributes.into_iter().collect(),
    }
}

/// Team members.
pub fn users(list: Vec<User>) -> Vec<wire::User> {
    list.into_iter().map(user).collect()
}

/// Limits.
pub fn limits(l: Limits) -> std::collections::HashMap<String, i64> {
    l.into_iter().collect()
}

/// A CreateResource request for `instance`.
pub fn create_resource(instance: String, r: CreateResource) -> wire::CreateResourceRequest {
    wire::CreateResourceRequest {
        instance,
        backend_id: r.backend_id,
        resource: Some(resource(r.resource)),
        limits: limits(r.limits),
        users: users(r.users),
        plan_quotas: limits(r.plan_quotas),
        ssh_keys: r.ssh_keys.into_iter().collect(),
        homedir_umask: r.homedir_umask.unwrap_or_default(),
    }
}

/// A DeleteResource request for `instance`.
pub fn delete_resource(instance: String, r: DeleteResource) -> wire::DeleteResourceRequest {
    wire::DeleteResourceRequest {
        instance,
        backend_id: r.backend_id,
        mode: r.mode.into(),
        resource: r.resource.map(resource),
    }
}

/// An offering user.
pub fn offering_user(u: OfferingUser) -> wire::OfferingUser {
    wire::OfferingUser {
        offering_user_uuid: u.offering_user_uuid,
        user_uuid: u.user_uuid,
        waldur_username: u.waldur_username,
        email: u.email,
        full_name: u.full_name,
        first_name: u.first_name,
        last_name: u.last_name,
        current_username: u.current_username,
        attributes: u.attributes.into_iter().collect(),
    }
}

/// An order to evaluate.
pub fn order(o: Order) -> wire::Order {
    wire::Order {
        order_uuid: o.order_uuid,
        r#type: o.order_type.into(),
        resource: Some(resource(o.resource)),
        limits: limits(o.limits),
        created_by_username: o.created_by_username,
        created_by_full_name: o.created_by_full_name,
        consumer_message: o.consumer_message,
        provider_message: o.provider_message,
        team: users(o.team),
    }
}

/// A billing month.
pub fn period(p: BillingPeriod) -> wire::BillingPeriod {
    wire::BillingPeriod {
        year: p.year,
        month: i32::try_from(p.month).unwrap_or_default(),
    }
}
