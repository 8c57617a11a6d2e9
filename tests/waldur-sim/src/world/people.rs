//! Indexes, users and roles, offering users.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use super::*;

impl World {
    // ------------------------------------------------------------ indexes

    /// Notes a possible change of anything: cached list positions are
    /// dropped. [`crate::Sim::world`] does this.
    pub fn touch(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Notes an API change of one collection.
    pub(crate) fn touch_listed(&mut self, which: Listed) {
        let g = &mut self.listed_generations[which as usize];
        *g = g.wrapping_add(1);
    }

    /// The positions of the records matching a list query of a collection:
    /// cached until the collection may have changed, else `scan`ned.
    pub(crate) fn list_positions(
        &mut self,
        which: Listed,
        query: String,
        scan: impl FnOnce(&World) -> Vec<(u32, u32)>,
    ) -> std::sync::Arc<Vec<(u32, u32)>> {
        let generations = (self.generation, self.listed_generations[which as usize]);
        if let Some(c) = self.list_cache.get(&query)
            && c.generations == generations
        {
            return c.positions.clone();
        }
        let positions = std::sync::Arc::new(scan(self));
        if self.list_cache.len() >= LIST_CACHE_SIZE {
            self.list_cache.retain(|_, c| c.generations == generations);
            if self.list_cache.len() >= LIST_CACHE_SIZE {
                self.list_cache.clear();
            }
        }
        self.list_cache.insert(
            query,
            CachedList {
                generations,
                positions: positions.clone(),
            },
        );
        positions
    }

    /// Rebuilds the lookup indexes whose maps changed size behind the
    /// insert functions' back (direct edits of the public maps).
    pub fn reindex(&mut self) {
        if self.idx.usages_seen != self.usages.len() {
            let mut keys = BTreeMap::new();
            for u in self.usages.values() {
                keys.entry(usage_key(
                    &u.resource_uuid,
                    &u.billing_period,
                    &u.component_type,
                ))
                .or_insert_with(|| u.uuid.clone());
            }
            self.idx.usage_keys = keys;
            self.idx.usages_seen = self.usages.len();
        }
        if self.idx.limits_seen != self.user_limits.len() {
            let mut keys = BTreeMap::new();
            for l in self.user_limits.values() {
                keys.entry(limit_key(&l.resource_uuid, &l.username, &l.component_type))
                    .or_insert_with(|| l.uuid.clone());
            }
            self.idx.limit_keys = keys;
            self.idx.limits_seen = self.user_limits.len();
        }
        if self.idx.offering_users_seen != self.offering_users.len() {
            let mut of = HashMap::with_capacity(self.offering_users.len());
            for ou in self.offering_users.values() {
                of.entry((norm(&ou.offering_uuid), norm(&ou.user_uuid)))
                    .or_insert_with(|| ou.uuid.clone());
            }
            self.idx.offering_user_of = of;
            self.idx.offering_users_seen = self.offering_users.len();
        }
        if self.idx.users_seen != self.users.len() {
            let mut by_name = HashMap::with_capacity(self.users.len());
            for u in self.users.values() {
                by_name
                    .entry(u.username.clone())
                    .or_insert_with(|| u.uuid.clone());
            }
            self.idx.user_by_name = by_name;
            self.idx.users_seen = self.users.len();
        }
        if self.idx.roles_seen != self.roles.len() {
            self.rebuild_roles();
        }
    }

    fn rebuild_roles(&mut self) {
        let mut by_project: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in self.roles.iter().enumerate() {
            by_project.entry(norm(&r.project_uuid)).or_default().push(i);
        }
        self.idx.roles_by_project = by_project;
        self.idx.roles_seen = self.roles.len();
    }

    // -------------------------------------------------------------- users

    /// A user by Waldur username.
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        if self.idx.users_seen == self.users.len() {
            let uuid = self.idx.user_by_name.get(username)?;
            self.users.get(uuid).filter(|u| u.username == username)
        } else {
            self.users.values().find(|u| u.username == username)
        }
    }

    /// Adds a user unless the username exists; returns the user's uuid.
    pub fn add_user(&mut self, username: &str, email: &str, full_name: &str) -> String {
        self.reindex();
        if let Some(u) = self.user_by_username(username) {
            return u.uuid.clone();
        }
        let user = User {
            uuid: new_uuid(),
            username: username.to_owned(),
            full_name: full_name.to_owned(),
            email: email.to_owned(),
        };
        let uuid = user.uuid.clone();
        self.idx
            .user_by_name
            .insert(username.to_owned(), uuid.clone());
        self.users.insert(uuid.clone(), user);
        self.idx.users_seen = self.users.len();
        uuid
    }

    /// Grants (or changes) a user's role in a project.
    pub fn grant_role(&mut self, project: &str, user: &str, role: &str) -> Result<(), Refusal> {
        self.reindex();
        let (project, user) = (norm(project), norm(user));
        if !self.projects.contains_key(&project) {
            return Err(Refusal::NotFound("project".into()));
        }
        if !self.users.contains_key(&user) {
            return Err(Refusal::NotFound("user".into()));
        }
        let positions = self
            .idx
            .roles_by_project
            .get(&project)
            .cloned()
            .unwrap_or_default();
        if let Some(i) = positions.into_iter().find(|i| {
            self.roles
                .get(*i)
                .is_some_and(|r| uuid_eq(&r.user_uuid, &user))
        }) && let Some(r) = self.roles.get_mut(i)
        {
            r.role = role.to_owned();
            self.emit_role(&project, &user, role, true);
            return Ok(());
        }
        self.roles.push(Role {
            project_uuid: project.clone(),
            user_uuid: user.clone(),
            role: role.to_owned(),
        });
        self.idx
            .roles_by_project
            .entry(project.clone())
            .or_default()
            .push(self.roles.len() - 1);
        self.idx.roles_seen = self.roles.len();
        self.emit_role(&project, &user, role, true);
        Ok(())
    }

    /// Removes a user's roles in a project (nothing to remove is fine).
    pub fn revoke_role(&mut self, project: &str, user: &str) {
        let (project, user) = (norm(project), norm(user));
        let revoked: Vec<String> = self
            .roles
            .iter()
            .filter(|r| uuid_eq(&r.project_uuid, &project) && uuid_eq(&r.user_uuid, &user))
            .map(|r| r.role.clone())
            .collect();
        self.roles
            .retain(|r| !(uuid_eq(&r.project_uuid, &project) && uuid_eq(&r.user_uuid, &user)));
        if !revoked.is_empty() {
            self.rebuild_roles();
        }
        for role in revoked {
            self.emit_role(&project, &user, &role, false);
        }
    }

    /// The role grants of a project.
    pub fn project_roles(&self, project: &str) -> Vec<&Role> {
        let project = norm(project);
        if self.idx.roles_seen == self.roles.len() {
            self.idx
                .roles_by_project
                .get(&project)
                .map(|positions| {
                    positions
                        .iter()
                        .filter_map(|i| self.roles.get(*i))
                        .filter(|r| uuid_eq(&r.project_uuid, &project))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.roles
                .iter()
                .filter(|r| uuid_eq(&r.project_uuid, &project))
                .collect()
        }
    }

    // ----------------------------------------------------- offering users

    /// Inserts an offering user, or updates the state (and the username,
    /// when given) of the existing one of that offering and user; returns
    /// its uuid.
    pub fn add_offering_user(
        &mut self,
        offering: &str,
        user: &str,
        state: &str,
        username: Option<&str>,
    ) -> String {
        self.reindex();
        let (offering, user) = (norm(offering), norm(user));
        if let Some(uuid) = self
            .idx
            .offering_user_of
            .get(&(offering.clone(), user.clone()))
            .cloned()
            && let Some(ou) = self.offering_users.get_mut(&uuid)
        {
            ou.state = state.to_owned();
            if let Some(name) = username {
                ou.username = Some(name.to_owned());
            }
            return uuid;
        }
        let ou = OfferingUser {
            uuid: new_uuid(),
            offering_uuid: offering.clone(),
            user_uuid: user.clone(),
            username: username.map(str::to_owned),
            state: state.to_owned(),
            ..Default::default()
        };
        let uuid = ou.uuid.clone();
        let body = json!({"offering_user_uuid": uuid, "user_uuid": user, "username": username, "action": "create", "attributes": {}, "changed_attributes": [], "resource_backend_ids": []});
        self.emit("offering_user", &offering, body);
        self.offering_users.insert(uuid.clone(), ou);
        self.idx
            .offering_user_of
            .insert((offering, user), uuid.clone());
        self.idx.offering_users_seen = self.offering_users.len();
        uuid
    }

    /// The offering user of a user in an offering.
    pub fn offering_user_of(&self, offering: &str, user: &str) -> Option<&OfferingUser> {
        let (offering, user) = (norm(offering), norm(user));
        if self.idx.offering_users_seen == self.offering_users.len() {
            let uuid = self.idx.offering_user_of.get(&(offering, user))?;
            self.offering_users.get(uuid)
        } else {
            self.offering_users
                .values()
                .find(|ou| uuid_eq(&ou.offering_uuid, &offering) && uuid_eq(&ou.user_uuid, &user))
        }
    }

    /// Looks an offering user up by UUID in either form.
    pub fn offering_user_mut(&mut self, uuid: &str) -> Result<&mut OfferingUser, Refusal> {
        let k = Self::key(&self.offering_users, uuid)
            .ok_or_else(|| Refusal::NotFound("offering user".into()))?;
        self.offering_users
            .get_mut(&k)
            .ok_or_else(|| Refusal::NotFound("offering user".into()))
    }

    /// A state action on an offering user (`begin_creating`,
    /// `set_pending_account_linking`, `set_pending_additional_validation`,
    /// `set_validation_complete`, `set_error_creating`).
    pub fn offering_user_action(
        &mut self,
        uuid: &str,
        action: &str,
        comment: &str,
        comment_url: &str,
    ) -> Result<(), Refusal> {
        let (from, to) =
            offering_user_transition(action).ok_or_else(|| Refusal::NotFound("action".into()))?;
        let ou = self.offering_user_mut(uuid)?;
        if !from.contains(&ou.state.as_str()) {
            return Err(Refusal::Invalid(format!(
                "Offering user is in state {}; {action} needs {}.",
                ou.state,
                from.join(" or ")
            )));
        }
        ou.state = to.to_owned();
        match action {
            "set_pending_account_linking" | "set_pending_additional_validation" => {
                ou.service_provider_comment = comment.to_owned();
                ou.service_provider_comment_url = comment_url.to_owned();
            }
            "set_validation_complete" => {
                ou.service_provider_comment.clear();
                ou.service_provider_comment_url.clear();
            }
            _ => {}
        }
        Ok(())
    }

    /// Sets an offering user's username; a `Requested` or `Creating` user
    /// with a non-empty username becomes `OK` (Waldur's auto-transition).
    pub fn set_offering_username(
        &mut self,
        uuid: &str,
        username: Option<&str>,
    ) -> Result<(), Refusal> {
        let ou = self.offering_user_mut(uuid)?;
        ou.username = username.map(str::to_owned);
        if username.is_some_and(|u| !u.is_empty())
            && (ou.state == "Requested" || ou.state == "Creating")
        {
            ou.state = "OK".into();
        }
        let (offering, user, ou_uuid) = (
            ou.offering_uuid.clone(),
            ou.user_uuid.clone(),
            ou.uuid.clone(),
        );
        if let Some(name) = username.filter(|u| self.events_on && !u.is_empty()) {
            let projects: Vec<String> = self
                .roles
                .iter()
                .filter(|r| uuid_eq(&r.user_uuid, &user))
                .map(|r| norm(&r.project_uuid))
                .collect();
            let ids: Vec<String> = self
                .resources
                .values()
                .filter(|r| uuid_eq(&r.offering_uuid, &offering))
                .filter(|r| projects.contains(&norm(&r.project_uuid)) && !r.backend_id.is_empty())
                .map(|r| r.backend_id.clone())
                .collect();
            let body = json!({"offering_user_uuid": ou_uuid, "user_uuid": user, "username": name, "action": "username_set", "attributes": {}, "changed_attributes": [], "resource_backend_ids": ids});
            self.emit("offering_user", &offering, body);
        }
        Ok(())
    }
}

/// An offering user action's allowed source states and target state.
fn offering_user_transition(action: &str) -> Option<(&'static [&'static str], &'static str)> {
    Some(match action {
        "begin_creating" => (&["Requested", "Error creating"], "Creating"),
        "set_pending_account_linking" => (
            &["Creating", "Pending additional validation"],
            "Pending account linking",
        ),
        "set_pending_additional_validation" => (
            &["Creating", "Pending account linking"],
            "Pending additional validation",
        ),
        "set_validation_complete" => (
            &["Pending account linking", "Pending additional validation"],
            "OK",
        ),
        "set_error_creating" => (&["Requested", "Creating"], "Error creating"),
        _ => return None,
    })
}
