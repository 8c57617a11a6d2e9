//! People: portal users found or registered, and the MUP project's members.
//!
//! Membership belongs to the MUP project, so all resources of one grant
//! share their members. A member's portal username is what the coordinator
//! sees, so a person the portal knows under another username than their
//! offering username is refused with a message rather than added: listed
//! under the portal name, they would be removed and re-added every cycle.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::MupBackend;
use crate::records::{Member, PortalUser};
use crate::resources::Lists;

/// Active members' usernames (e-mail for a member without one), sorted.
pub(crate) fn active_names(members: &[Member]) -> Vec<String> {
    let set: BTreeSet<String> = members
        .iter()
        .filter(|m| m.active)
        .map(|m| {
            if m.username.is_empty() {
                m.email.clone()
            } else {
                m.username.clone()
            }
        })
        .filter(|n| !n.is_empty())
        .collect();
    set.into_iter().collect()
}

/// The refusal for a person the portal knows under another username.
fn known_as(user: &User, portal_name: &str) -> BackendError {
    BackendError::command_refused(format!(
        "mup knows {} as {portal_name:?}, not {:?}: give the offering user the portal's username (membership is listed by it)",
        if user.email.is_empty() {
            &user.username
        } else {
            &user.email
        },
        user.username
    ))
}

impl MupBackend {
    /// The portal user of a Waldur user: found by e-mail, else by username
    /// (only when the portal has no other e-mail for it), else registered
    /// (a request the portal's staff approve). The Waldur username is added
    /// as MyAccess id when missing.
    pub(crate) async fn ensure_user(
        &self,
        user: &User,
        institution: &str,
    ) -> BackendResult<PortalUser> {
        let email = user.email.trim();
        let key = if email.is_empty() {
            &user.username
        } else {
            email
        };
        if let Some(u) = self.users.get(key) {
            return Ok(u);
        }
        let mut found = None;
        if !email.is_empty() {
            found = self.api.user_by_email(email).await?;
        }
        if found.is_none() && !user.username.is_empty() {
            found = self.api.user_by_username(&user.username).await?;
            if let Some(u) = &found
                && !email.is_empty()
                && !u.email.is_empty()
                && !u.email.eq_ignore_ascii_case(email)
            {
                return Err(BackendError::command_refused(format!(
                    "mup username {:?} belongs to another person ({}), not to {email}",
                    user.username, u.email
                )));
            }
        }
        let portal_user = match found {
            Some(u) => u,
            None if email.is_empty() => {
                return Err(BackendError::command_refused(format!(
                    "{} has no mup account and no e-mail address to register one with",
                    user.username
                )));
            }
            None => self.register(user, email, institution).await?,
        };
        self.ensure_myaccessid(&portal_user, user.waldur_username.trim())
            .await;
        self.users.put(key, portal_user.clone());
        Ok(portal_user)
    }

    async fn register(
        &self,
        user: &User,
        email: &str,
        institution: &str,
    ) -> BackendResult<PortalUser> {
        let body = crate::people::registration(&self.settings, user, email, institution);
        match self.api.register(&body).await {
            Ok(Some(u)) => {
                tracing::info!(user = %user.username, mup_user = u.id, "registered a mup user (awaiting approval)");
                return Ok(u);
            }
            // Some portals answer without the new user: found below.
            Ok(None) => {}
            // Registered by a call whose answer was lost: found below. Any
            // other refusal (a username taken by someone else, a field the
            // portal rejects) is the portal's answer.
            Err(e) if e.status() == Some(400) && e.says("email") && e.says("already exists") => {}
            Err(e) => return Err(e.into()),
        }
        self.api
            .registrations()
            .await?
            .into_iter()
            .filter(|r| r.email.eq_ignore_ascii_case(email))
            .max_by_key(|r| r.id)
            .ok_or_else(|| {
                BackendError::not_ready(format!(
                    "mup accepted the registration of {email} but lists no request for it yet"
                ))
            })
    }

    /// Adds the MyAccess id to a user who lacks it. Failures are logged
    /// only: the membership does not depend on it.
    async fn ensure_myaccessid(&self, user: &PortalUser, myaccessid: &str) {
        if myaccessid.is_empty() {
            return;
        }
        let has = match user.has_key(myaccessid) {
            Some(has) => has,
            None => match self.api.user(user.id).await {
                Ok(full) => full.has_key(myaccessid).unwrap_or(false),
                Err(e) => {
                    tracing::warn!(mup_user = user.id, error = %e, "cannot read a mup user's myaccessid");
                    return;
                }
            },
        };
        if !has && let Err(e) = self.api.set_myaccessid(user.id, myaccessid).await {
            tracing::warn!(mup_user = user.id, error = %e, "cannot set a mup user's myaccessid");
        }
    }

    /// Makes each user an active member of `project`, one result each.
    pub(crate) async fn add_members(
        &self,
        project: i64,
        users: &[User],
        institution: &str,
    ) -> Vec<UserResult> {
        let mut members = match self.api.members(project).await {
            Ok(m) => m,
            Err(e) => {
                let e = BackendError::from(e);
                return users
                    .iter()
                    .map(|u| UserResult::failed(&u.username, e.clone()))
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            out.push(
                match self.add_member(project, u, institution, &mut members).await {
                    Ok(true) => UserResult::applied(&u.username),
                    Ok(false) => UserResult::unchanged(&u.username),
                    Err(e) => UserResult::failed(&u.username, e),
                },
            );
        }
        out
    }

    /// Whether anything changed.
    async fn add_member(
        &self,
        project: i64,
        u: &User,
        institution: &str,
        members: &mut Vec<Member>,
    ) -> BackendResult<bool> {
        if let Some(m) = members.iter_mut().find(|m| m.is(&u.username, &u.email)) {
            if !m.username.is_empty() && m.username != u.username {
                return Err(known_as(u, &m.username));
            }
            if m.active {
                return Ok(false);
            }
            self.api.set_member_active(project, m.id, true).await?;
            m.active = true;
            return Ok(true);
        }
        let portal_user = self.ensure_user(u, institution).await?;
        if !portal_user.username.is_empty() && portal_user.username != u.username {
            return Err(known_as(u, &portal_user.username));
        }
        let email = if portal_user.email.is_empty() {
            u.email.clone()
        } else {
            portal_user.email.clone()
        };
        match self.api.add_member(project, &portal_user, &email).await {
            Ok(v) => {
                if let Some(m) = Member::parse(&v) {
                    members.push(m);
                }
                Ok(true)
            }
            // Added by a call whose answer was lost, or a deactivated
            // membership the listing did not match: read again.
            Err(e) if e.says("already a member") => {
                *members = self.api.members(project).await?;
                match members
                    .iter_mut()
                    .find(|m| m.is(&portal_user.username, &portal_user.email))
                {
                    Some(m) if !m.active => {
                        self.api.set_member_active(project, m.id, true).await?;
                        m.active = true;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deactivates each named member (never deletes), one result each.
    pub(crate) async fn remove_members(
        &self,
        project: i64,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let members = self.api.members(project).await?;
        let mut out = Vec::with_capacity(usernames.len());
        for name in usernames {
            match members.iter().find(|m| m.active && m.is(&name, "")) {
                None => out.push(UserResult::unchanged(name)),
                Some(m) => match self.api.set_member_active(project, m.id, false).await {
                    Ok(()) => out.push(UserResult::applied(name)),
                    Err(e) => out.push(UserResult::failed(name, e.into())),
                },
            }
        }
        Ok(out)
    }

    /// Members of many resources: each project's members read once.
    pub(crate) async fn list_members(
        &self,
        backend_ids: &[String],
    ) -> BackendResult<ResourceUsers> {
        let mut out = ResourceUsers::default();
        let mut by_project: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut lists = Lists::new();
        for id in backend_ids {
            match self.locate_with(id, &mut lists).await {
                Ok(l) => by_project.entry(l.project).or_default().push(id.clone()),
                Err(e) if crate::is_absent(&e) => out.missing.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
        for (project, ids) in by_project {
            let names = active_names(&self.api.members(project).await?);
            for id in ids {
                out.found.insert(id, names.clone());
            }
        }
        Ok(out)
    }
}
