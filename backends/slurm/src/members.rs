//! Members: user associations of an allocation, added in one `add user`
//! and removed in one `remove user`, their jobs cancelled first.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::settings::DefaultAccountPolicy;
use crate::{SlurmBackend, args, names};

/// One result per requested user (invalid names failed, members and
/// repeats unchanged, the rest applied) and the names to add.
pub(crate) fn sort_users(
    users: &[User],
    existing: &BTreeSet<String>,
) -> (Vec<UserResult>, Vec<String>) {
    let mut results = Vec::with_capacity(users.len());
    let mut to_add: Vec<String> = Vec::new();
    for u in users {
        if !names::valid_user(&u.username) {
            results.push(UserResult::failed(
                &u.username,
                BackendError::invalid_field(
                    "username",
                    format!("{:?} is not a valid local username", u.username),
                ),
            ));
        } else if existing.contains(&u.username) || to_add.contains(&u.username) {
            results.push(UserResult::unchanged(&u.username));
        } else {
            to_add.push(u.username.clone());
            results.push(UserResult::applied(&u.username));
        }
    }
    (results, to_add)
}

impl SlurmBackend {
    /// Adds the users that are not members yet with one `add user`; under
    /// QoS enforcement `attributes` (the resource's order form) may select
    /// the QoS and partition to grant.
    pub(crate) async fn add_members_with(
        &self,
        account: &str,
        users: &[User],
        existing: &BTreeSet<String>,
        umask: Option<&str>,
        attributes: Option<&JsonObject>,
    ) -> BackendResult<Vec<UserResult>> {
        let (mut results, to_add) = sort_users(users, existing);
        if to_add.is_empty() {
            return Ok(results);
        }
        let a = self.add_user_args(&[account.to_owned()], &to_add, attributes);
        if let Err(e) = self.slurm.sacctmgr_write(a).await {
            // One command for all: its failure fails each user it carried.
            for r in results.iter_mut().filter(|r| to_add.contains(&r.username)) {
                r.outcome = Outcome::Failed(e.clone());
            }
            return Ok(results);
        }
        self.new_homedirs(to_add, umask).await;
        Ok(results)
    }

    /// Home directories of users just added, when the backend makes them;
    /// a failure is logged (membership sync tries again).
    pub(crate) async fn new_homedirs(&self, users: Vec<String>, umask: Option<&str>) {
        if !self.settings.enable_user_homedir_account_creation || users.is_empty() {
            return;
        }
        let umask = umask
            .unwrap_or(&self.settings.default_homedir_umask)
            .to_owned();
        for r in self.homedirs(users, &umask).await {
            if let Outcome::Failed(e) = &r.outcome {
                tracing::warn!(user = %r.username, error = %e.message, "home directory not created");
            }
        }
    }

    /// `add user <users> account=<accounts> ...`: every user gets an
    /// association under every account, with the DefaultAccount policy and
    /// the partitions or QoS of the settings (or, under QoS enforcement, of
    /// the order form). Users and accounts are valid names already.
    pub(crate) fn add_user_args(
        &self,
        accounts: &[String],
        users: &[String],
        attributes: Option<&JsonObject>,
    ) -> Vec<String> {
        let mut a = args![
            "add",
            "user",
            users.join(","),
            format!("account={}", accounts.join(","))
        ];
        a.extend(self.user_settings(accounts, attributes));
        a
    }

    /// The settings of new user associations (everything after `account=`).
    /// Allocations whose users get the same settings can share one `add
    /// user`.
    pub(crate) fn user_settings(
        &self,
        accounts: &[String],
        attributes: Option<&JsonObject>,
    ) -> Vec<String> {
        let mut a = Vec::new();
        match self.settings.default_account_policy {
            DefaultAccountPolicy::Common => {
                a.push(format!("DefaultAccount={}", self.settings.default_account))
            }
            // Callers group allocations only when their settings agree,
            // and this one names each allocation: one account here.
            DefaultAccountPolicy::Individual => {
                if let Some(own) = accounts.first() {
                    a.push(format!("DefaultAccount={own}"))
                }
            }
            DefaultAccountPolicy::None => {}
        }
        let selected = |key: &str| {
            attributes
                .and_then(|a| a.get(key))
                .and_then(serde_json::Value::as_str)
                .filter(|v| names::valid_account(v))
                .map(str::to_owned)
        };
        match (self.settings.qos_enforced(), selected("qos")) {
            (true, Some(qos)) => {
                if let Some(p) =
                    selected("partition").or_else(|| self.settings.default_partition.clone())
                {
                    a.push(format!("Partitions={p}"));
                }
                a.push(format!("QosLevel={qos}"));
                a.push(format!("DefaultQOS={qos}"));
                a.push("Share=parent".into());
            }
            _ if !self.settings.partitions.is_empty() => {
                let mut parts = self.settings.partitions.clone();
                parts.sort();
                a.push(format!("Partitions={}", parts.join(",")));
                a.push("Share=parent".into());
            }
            _ => {
                // A single default partition goes without Share=parent,
                // as the original.
                match &self.settings.default_partition {
                    Some(p) => a.push(format!("Partition={p}")),
                    None => a.push("Share=parent".into()),
                }
            }
        }
        a
    }

    /// AddUsers.
    pub(crate) async fn add(
        &self,
        backend_id: &str,
        users: Vec<User>,
        homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let id = crate::account_id(backend_id)?;
        // A directory that is down stops the call before SLURM changes.
        if let Some(d) = &self.directory {
            d.check().await?;
        }
        let rows = self.owned(&id).await?;
        let members = rows.members(&id);
        let results = self
            .add_members_with(&id, &users, &members, homedir_umask.as_deref(), None)
            .await?;
        if let Some(d) = &self.directory {
            // Members already there too: their group entry may be missing.
            let now: Vec<String> = results
                .iter()
                .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
                .map(|r| r.username.clone())
                .collect();
            d.add_members(&id, &now).await?;
        }
        Ok(results)
    }

    /// RemoveUsers: their jobs cancelled, their associations removed.
    pub(crate) async fn remove(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let id = crate::account_id(backend_id)?;
        if let Some(d) = &self.directory {
            d.check().await?;
        }
        let rows = self.owned(&id).await?;
        let members = rows.members(&id);
        let present: Vec<String> = usernames
            .iter()
            .filter(|u| members.contains(u.as_str()))
            .cloned()
            .collect();
        let mut failure = None;
        if !present.is_empty() {
            for u in &present {
                if let Err(e) = self.slurm.scancel(args!["-u", u, "-A", id, "-f"]).await {
                    tracing::debug!(user = %u, error = %e.message, "no jobs cancelled");
                }
            }
            if let Err(e) = self
                .slurm
                .sacctmgr_write(args![
                    "remove",
                    "user",
                    "where",
                    format!("name={}", present.join(",")),
                    format!("account={id}")
                ])
                .await
            {
                failure = Some(e);
            }
        }
        if failure.is_none() {
            // Every name asked about, not only the present ones: a release
            // or a group removal that failed last time is tried again.
            let named: Vec<String> = usernames
                .iter()
                .filter(|u| names::valid_user(u))
                .cloned()
                .collect();
            if let Some(d) = &self.directory {
                d.remove_members(&id, &named).await?;
            }
            self.release_default_associations(&named).await;
        }
        Ok(usernames
            .into_iter()
            .map(|u| match (&failure, present.contains(&u)) {
                (Some(e), true) => UserResult::failed(u, e.clone()),
                (None, true) => UserResult::applied(u),
                _ => UserResult::unchanged(u),
            })
            .collect())
    }

    /// Removes the association under `default_account` of each user whose
    /// only association left is that one. `add user ... DefaultAccount=`
    /// made it beside the first allocation's (policy `common`); once the
    /// user has no allocation it would keep them on the cluster for ever.
    /// SLURM drops a user with their last association, so users with an
    /// admin level (operators, coordinators) and `root` are never touched.
    /// Acts only on what one listing positively shows (a failed or empty
    /// listing removes nothing) and holds the write turn from the listing
    /// to the removal, so an addition of this process cannot slip between
    /// them. Best effort: a failure is logged, the removal it follows stands.
    pub(crate) async fn release_default_associations(&self, users: &[String]) {
        let s = &self.settings;
        if users.is_empty()
            || s.keep_default_association
            || s.default_account_policy != DefaultAccountPolicy::Common
        {
            return;
        }
        let default = s.default_account.as_str();
        let turn = self.slurm.write_turn().await;
        let listing = match self
            .slurm
            .sacctmgr_read(args![
                "show",
                "user",
                "withassoc",
                "where",
                format!("name={}", users.join(",")),
                "format=User,AdminLevel,Account"
            ])
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e.message, "default account associations not checked");
                return;
            }
        };
        let idle = idle_users(&listing, users, default);
        if idle.is_empty() {
            return;
        }
        let remove = |names: &[&str]| {
            args![
                "remove",
                "user",
                "where",
                format!("name={}", names.join(",")),
                format!("account={default}")
            ]
        };
        if self
            .slurm
            .sacctmgr_write_in(&turn, remove(&idle))
            .await
            .is_ok()
        {
            tracing::info!(users = ?idle, account = default, "default account associations of users without allocations removed");
            return;
        }
        // One user SLURM refuses (a job still running under the default
        // account) must not keep the others.
        for user in idle {
            match self.slurm.sacctmgr_write_in(&turn, remove(&[user])).await {
                Ok(_) => tracing::info!(
                    user,
                    account = default,
                    "default account association of a user without allocations removed"
                ),
                Err(e) => {
                    tracing::warn!(user, error = %e.message, "default account association not removed")
                }
            }
        }
    }

    /// ListResourceUsers: one listing for all; accounts the backend does not
    /// manage count as missing. With `full`, the same listing also gives
    /// each allocation's row and its members' `MaxTRESMins` (the full view).
    pub(crate) async fn members_of(
        &self,
        backend_ids: &[String],
        full: bool,
    ) -> BackendResult<ResourceUsers> {
        let valid: Vec<String> = backend_ids
            .iter()
            .filter(|i| names::valid_account(i))
            .cloned()
            .collect();
        let rows = if valid.is_empty() {
            crate::accounts::Rows::default()
        } else {
            self.rows(&valid).await?
        };
        let mut out = ResourceUsers::default();
        for id in backend_ids {
            match rows.account(id) {
                Some(row)
                    if !matches!(self.ownership(row), crate::accounts::Ownership::Foreign(_)) =>
                {
                    out.found
                        .insert(id.clone(), rows.members(id).into_iter().collect());
                    if full {
                        let details = ResourceDetails {
                            resource: self.info(&rows, id, row),
                            user_limits: self.user_limits_in(&rows, id),
                        };
                        out.details.insert(id.clone(), details);
                    }
                }
                _ => out.missing.push(id.clone()),
            }
        }
        self.only_grouped(&mut out).await?;
        Ok(out)
    }

    /// With an LDAP directory, a member is a user with an association or
    /// in the allocation's group: a removal cut short between the two (the
    /// directory failing after SLURM's write) still shows the user, so the
    /// next cycle's RemoveUsers finishes it. One directory search per call.
    async fn only_grouped(&self, out: &mut ResourceUsers) -> BackendResult<()> {
        let Some(d) = &self.directory else {
            return Ok(());
        };
        let ids: Vec<String> = out.found.keys().cloned().collect();
        let groups = d.members(&ids).await?;
        for (id, users) in out.found.iter_mut() {
            let Some(grouped) = groups.get(id) else {
                continue;
            };
            union(users, grouped);
            if let Some(details) = out.details.get_mut(id) {
                union(&mut details.resource.users, grouped);
            }
        }
        Ok(())
    }
}

/// Adds the group's members to a sorted member list.
pub(crate) fn union(users: &mut Vec<String>, grouped: &BTreeSet<String>) {
    users.extend(grouped.iter().cloned());
    users.sort();
    users.dedup();
}

/// Users of a `show user withassoc format=User,AdminLevel,Account` listing
/// whose only association is under `default`, leaving out `root` and users
/// with an admin level. A user the listing does not show is left alone.
pub(crate) fn idle_users<'a>(listing: &str, users: &'a [String], default: &str) -> Vec<&'a str> {
    let mut seen: BTreeMap<&str, (bool, Vec<&str>)> = BTreeMap::new();
    for row in crate::parse::rows(listing) {
        if let [user, admin, account, ..] = row.as_slice()
            && !user.is_empty()
        {
            let entry = seen.entry(user).or_default();
            entry.0 |= !matches!(*admin, "" | "None");
            entry.1.push(account);
        }
    }
    users
        .iter()
        .map(String::as_str)
        .filter(|u| *u != "root")
        .filter(|u| {
            seen.get(u).is_some_and(|(admin, accounts)| {
                !admin && !accounts.is_empty() && accounts.iter().all(|a| *a == default)
            })
        })
        .collect()
}
