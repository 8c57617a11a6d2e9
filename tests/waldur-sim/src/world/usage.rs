//! Usage records, per-user limits, service and course accounts, and their
//! JSON.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use super::*;

impl World {
    // -------------------------------------------------------------- usage

    /// The usage record of a resource, component and billing period
    /// (`YYYY-MM-01`).
    pub fn usage_of(&self, resource: &str, kind: &str, period: &str) -> Option<&ComponentUsage> {
        if self.idx.usages_seen == self.usages.len() {
            let uuid = self
                .idx
                .usage_keys
                .get(&usage_key(resource, period, kind))?;
            self.usages.get(uuid)
        } else {
            let resource = norm(resource);
            self.usages.values().find(|u| {
                uuid_eq(&u.resource_uuid, &resource)
                    && u.component_type == kind
                    && u.billing_period == period
            })
        }
    }

    /// The usage records of a resource, by billing period then type; only
    /// one billing period (`YYYY-MM-01`) when given.
    pub fn resource_usages(&self, resource: &str, period: Option<&str>) -> Vec<&ComponentUsage> {
        if self.idx.usages_seen == self.usages.len() {
            let prefix = match period {
                Some(p) => format!("{}/{p}/", norm(resource)),
                None => format!("{}/", norm(resource)),
            };
            prefixed(&self.idx.usage_keys, &prefix)
                .filter_map(|uuid| self.usages.get(uuid))
                .collect()
        } else {
            let resource = norm(resource);
            let mut out: Vec<&ComponentUsage> = self
                .usages
                .values()
                .filter(|u| uuid_eq(&u.resource_uuid, &resource))
                .filter(|u| period.is_none_or(|p| u.billing_period == p))
                .collect();
            out.sort_by(|a, b| {
                (&a.billing_period, &a.component_type).cmp(&(&b.billing_period, &b.component_type))
            });
            out
        }
    }

    /// Reports usage of a resource (`set_usage`): one record per resource,
    /// component and billing period (the month of `date`), updated in
    /// place. Refuses unknown resources, bad dates and, with
    /// `refuse_backfill`, months before the current one. Returns the
    /// record uuids.
    pub fn set_usage(
        &mut self,
        resource: &str,
        date: &str,
        items: &[UsageItem],
    ) -> Result<Vec<String>, Refusal> {
        self.reindex();
        let resource = norm(resource);
        if !self.resources.contains_key(&resource) {
            return Err(Refusal::Invalid(
                "resource: Object with uuid does not exist.".into(),
            ));
        }
        let month = month_of(date).ok_or_else(|| {
            Refusal::Invalid("date: Datetime has wrong format. Use ISO 8601.".into())
        })?;
        if self.refuse_backfill && *month < *current_month() {
            return Err(Refusal::InvalidBody(
                json!({"non_field_errors": [BACKFILL_REFUSAL]}),
            ));
        }
        let period = format!("{month}-01");
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let key = usage_key(&resource, &period, &item.component_type);
            if let Some(u) = self
                .idx
                .usage_keys
                .get(&key)
                .and_then(|uuid| self.usages.get_mut(uuid))
            {
                u.usage = item.amount.clone();
                u.date = date.to_owned();
                out.push(u.uuid.clone());
                continue;
            }
            let u = ComponentUsage {
                uuid: new_uuid(),
                resource_uuid: resource.clone(),
                component_type: item.component_type.clone(),
                usage: item.amount.clone(),
                date: date.to_owned(),
                billing_period: period.clone(),
                description: item.description.clone(),
                user_usages: BTreeMap::new(),
            };
            out.push(u.uuid.clone());
            self.idx.usage_keys.insert(key, u.uuid.clone());
            self.usages.insert(u.uuid.clone(), u);
            self.idx.usages_seen = self.usages.len();
        }
        Ok(out)
    }

    /// Sets per-user usage on a usage record: one entry per username,
    /// updated in place (its uuid stays).
    pub fn set_user_usages(
        &mut self,
        usage: &str,
        items: Vec<(String, UserUsage)>,
    ) -> Result<(), Refusal> {
        let k = Self::key(&self.usages, usage)
            .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
        let u = self
            .usages
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("component usage".into()))?;
        for (username, new) in items {
            match u.user_usages.get_mut(&username) {
                Some(existing) => {
                    existing.usage = new.usage;
                    existing.date = new.date;
                    if new.user.is_some() {
                        existing.user = new.user;
                    }
                }
                None => {
                    let uuid = if new.uuid.is_empty() {
                        new_uuid()
                    } else {
                        new.uuid.clone()
                    };
                    u.user_usages.insert(username, UserUsage { uuid, ..new });
                }
            }
        }
        Ok(())
    }

    // --------------------------------------------------- per-user limits

    /// Sets (or replaces) a user's limit of a component on a resource;
    /// returns the limit's uuid.
    pub fn set_user_limit(
        &mut self,
        resource: &str,
        username: &str,
        component: &str,
        limit: &str,
    ) -> String {
        self.reindex();
        let key = limit_key(resource, username, component);
        if let Some(l) = self
            .idx
            .limit_keys
            .get(&key)
            .and_then(|uuid| self.user_limits.get_mut(uuid))
        {
            l.limit = limit.to_owned();
            return l.uuid.clone();
        }
        let l = UserLimit {
            uuid: new_uuid(),
            resource_uuid: norm(resource),
            username: username.to_owned(),
            component_type: component.to_owned(),
            limit: limit.to_owned(),
        };
        let uuid = l.uuid.clone();
        self.idx.limit_keys.insert(key, uuid.clone());
        self.user_limits.insert(uuid.clone(), l);
        self.idx.limits_seen = self.user_limits.len();
        uuid
    }

    /// Removes every per-user limit of a resource.
    pub fn clear_user_limits(&mut self, resource: &str) {
        let resource = norm(resource);
        self.user_limits
            .retain(|_, l| !uuid_eq(&l.resource_uuid, &resource));
        self.reindex();
    }

    /// The per-user limits of a resource, by username then component.
    pub fn resource_user_limits(&self, resource: &str) -> Vec<&UserLimit> {
        let resource = norm(resource);
        if self.idx.limits_seen == self.user_limits.len() {
            let prefix = format!("{resource}/");
            prefixed(&self.idx.limit_keys, &prefix)
                .filter_map(|uuid| self.user_limits.get(uuid))
                .collect()
        } else {
            self.user_limits
                .values()
                .filter(|l| uuid_eq(&l.resource_uuid, &resource))
                .collect()
        }
    }

    // ----------------------------------------------------------- accounts

    /// The project uuids (normal form) with a resource of an offering.
    pub fn offering_projects(&self, offering: &str) -> HashSet<String> {
        let offering = norm(offering);
        self.resources
            .values()
            .filter(|r| uuid_eq(&r.offering_uuid, &offering))
            .map(|r| norm(&r.project_uuid))
            .collect()
    }

    /// Sets the state of a service or course account.
    pub fn set_account_state(&mut self, uuid: &str, state: &str) -> Result<(), Refusal> {
        let k = norm(uuid);
        let account = match self.service_accounts.get_mut(&k) {
            Some(a) => a,
            None => self
                .course_accounts
                .get_mut(&k)
                .ok_or_else(|| Refusal::NotFound("account".into()))?,
        };
        account.state = state.to_owned();
        Ok(())
    }

    /// The component of an offering with this type.
    pub fn offering_component(&self, offering: &str, kind: &str) -> Option<&Value> {
        by_uuid(&self.offerings, offering)?
            .components
            .iter()
            .find(|c| c["type"] == kind)
    }

    // --------------------------------------------------------------- JSON

    /// The JSON of a per-user usage, as `ComponentUserUsage`.
    pub fn user_usage_json(&self, u: &ComponentUsage, username: &str, uu: &UserUsage) -> Value {
        let r = by_uuid(&self.resources, &u.resource_uuid);
        let p = r.and_then(|r| by_uuid(&self.projects, &r.project_uuid));
        let c = p.and_then(|p| by_uuid(&self.customers, &p.customer_uuid));
        let o = r.and_then(|r| by_uuid(&self.offerings, &r.offering_uuid));
        let unit = r
            .and_then(|r| self.offering_component(&r.offering_uuid, &u.component_type))
            .and_then(|c| c["measured_unit"].as_str())
            .unwrap_or("");
        let amount: f64 = uu.usage.parse().unwrap_or(0.0);
        let mut v = json!({
            "uuid": uu.uuid,
            "url": format!("http://sim/api/marketplace-component-user-usages/{}/", uu.uuid),
            "component_usage": format!("http://sim/api/marketplace-component-usages/{}/", u.uuid),
            "username": username,
            "usage": amount,
            "measured_unit": unit,
            "description": "",
            "created": uu.date,
            "modified": uu.date,
            "backend_id": "",
            "date": uu.date,
            "billing_period": u.billing_period,
            "component_type": u.component_type,
            "resource_uuid": u.resource_uuid,
            "resource_name": r.map(|r| r.name.clone()).unwrap_or_default(),
            "offering_uuid": o.map(|o| o.uuid.clone()).unwrap_or_default(),
            "offering_name": o.map(|o| o.name.clone()).unwrap_or_default(),
            "project_uuid": p.map(|p| p.uuid.clone()).unwrap_or_default(),
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
        });
        // `user` is a URL and not nullable in the schema: absent when unknown.
        if let (Some(user), Value::Object(o)) = (&uu.user, &mut v) {
            o.insert("user".into(), Value::String(user.clone()));
        }
        v
    }

    /// The JSON of a per-user limit, as `ComponentUserUsageLimit`; the
    /// schema's `user` is the user's URL, `username` carries the username.
    pub fn user_limit_json(&self, l: &UserLimit) -> Value {
        let r = by_uuid(&self.resources, &l.resource_uuid);
        let component = r
            .and_then(|r| self.offering_component(&r.offering_uuid, &l.component_type))
            .and_then(|c| c["uuid"].as_str())
            .unwrap_or("");
        let user = match self.user_by_username(&l.username) {
            Some(u) => format!("http://sim/api/users/{}/", u.uuid),
            None => format!("http://sim/api/users/?username={}", l.username),
        };
        json!({
            "uuid": l.uuid,
            "url": format!("http://sim/api/component-user-usage-limits/{}/", l.uuid),
            "resource": format!("http://sim/api/marketplace-resources/{}/", l.resource_uuid),
            "resource_uuid": l.resource_uuid,
            "component": component,
            "component_type": l.component_type,
            "user": user,
            "username": l.username,
            "limit": l.limit,
        })
    }

    /// The JSON of a service account (`ProjectServiceAccount`) or, with
    /// `course`, a course account (`CourseAccount`).
    pub fn account_json(&self, a: &Account, course: bool) -> Value {
        let p = by_uuid(&self.projects, &a.project_uuid);
        let c = p.and_then(|p| by_uuid(&self.customers, &p.customer_uuid));
        let project_uuid = p
            .map(|p| p.uuid.clone())
            .unwrap_or_else(|| a.project_uuid.clone());
        let mut v = json!({
            "uuid": a.uuid,
            "created": a.created,
            "modified": a.created,
            "username": a.username,
            "state": a.state,
            "email": a.email,
            "description": "",
            "error_message": "",
            "error_traceback": "",
            "project": project_uuid,
            "project_uuid": project_uuid,
            "project_name": p.map(|p| p.name.clone()).unwrap_or_default(),
            "customer_uuid": c.map(|c| c.uuid.clone()).unwrap_or_default(),
            "customer_name": c.map(|c| c.name.clone()).unwrap_or_default(),
        });
        if let Value::Object(o) = &mut v {
            if course {
                o.insert(
                    "url".into(),
                    format!("http://sim/api/marketplace-course-accounts/{}/", a.uuid).into(),
                );
                o.insert(
                    "project_slug".into(),
                    p.map(|p| p.slug.clone()).unwrap_or_default().into(),
                );
                // Projects have no dates here: the account's day, and no end.
                o.insert(
                    "project_start_date".into(),
                    a.created.chars().take(10).collect::<String>().into(),
                );
                o.insert("project_end_date".into(), "".into());
                let user = self.user_by_username(&a.username);
                o.insert(
                    "user_uuid".into(),
                    user.map(|u| u.uuid.clone()).unwrap_or_default().into(),
                );
            } else {
                o.insert(
                    "url".into(),
                    format!("http://sim/api/marketplace-service-accounts/{}/", a.uuid).into(),
                );
                o.insert("token".into(), Value::Null);
                o.insert("expires_at".into(), Value::Null);
                o.insert("preferred_identifier".into(), a.username.clone().into());
                o.insert(
                    "customer_abbreviation".into(),
                    c.map(|c| c.slug.clone()).unwrap_or_default().into(),
                );
            }
        }
        v
    }
}
