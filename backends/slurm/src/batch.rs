//! Creates made together. slurmdbd commits every `sacctmgr` change on its
//! own, at about half a second each on the reference cluster, whatever it
//! holds: forty `add` commands take twenty seconds, one `load` of twenty
//! accounts with three members each about one. So creates that arrive
//! while another is running wait for it (a lone create waits a moment for
//! others), and then the first of them makes all of them:
//!
//! 1. one association listing of every customer, project and allocation
//!    the creates need, and one `show user` of their members;
//! 2. one `sacctmgr load` of a flat file holding only the accounts that do
//!    not exist yet (customers, projects, allocations with their limits and
//!    ownership markers), parents before children, and the members of each
//!    new allocation when their associations take the plain settings
//!    (`Share=parent` and the common default account; a user SLURM does
//!    not know yet gets the default-account association `add user` would
//!    make);
//! 3. a second listing: every allocation must be under its project, marked
//!    for its resource, with its limits and members;
//! 4. the per-allocation QoS or project directory where configured, then
//!    one `add user` per distinct set of users and settings for members
//!    the file did not carry (partitions, QoS per association);
//! 5. each caller's answer, its own.
//!
//! `load` is only ever given accounts the listing just showed absent:
//! given an existing one, it would rewrite its description and limits; a
//! known user's line carries no default account, so it is left as it is.
//! `load` stops at the first line it cannot take and keeps what came
//! before, so the second listing decides: every create whose allocation is
//! not there as asked, whose allocation name is a customer or project
//! account of the batch, or whose `add user` failed is made again on its
//! own, with its own error in its answer; no other create pays for it. A
//! create that finds its allocation already there (a re-issue, an
//! interrupted batch) always goes on its own: that path checks ownership
//! and brings limits and members to the requested state, so an interrupted
//! batch is completed by the next attempt without duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::accounts::{Assoc, Ownership, Rows, marked};
use crate::limits::join_tres;
use crate::settings::DefaultAccountPolicy;
use crate::{SlurmBackend, args, names};

/// How long a lone create waits for others to join its batch: nothing next
/// to the half second each slurmdbd commit takes.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// A validated create waiting for its turn.
#[derive(Debug, Clone)]
pub(crate) struct NewAllocation {
    pub alloc: String,
    /// Backend limits (`GrpTRESMins`).
    pub limits: BTreeMap<String, i64>,
    pub customer: Option<String>,
    pub project: String,
    /// The resource UUID as the ownership marker writes it.
    pub uuid: Option<String>,
    pub req: CreateResource,
}

/// A create and where its answer goes.
pub(crate) struct Queued {
    job: NewAllocation,
    answer: tokio::sync::oneshot::Sender<BackendResult<Created>>,
}

/// Creates waiting for the hierarchy lock.
#[derive(Default)]
pub(crate) struct CreateQueue(std::sync::Mutex<Vec<Queued>>);

impl CreateQueue {
    fn push(&self, q: Queued) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(q);
    }

    fn take(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One `add user` shared by allocations whose users and settings agree.
type UserGroup = (Vec<String>, Vec<String>);

impl SlurmBackend {
    /// Queues a create; whoever holds the hierarchy lock next makes every
    /// queued create, this one included. A caller returns as soon as its
    /// answer is there, not when it gets the lock; if the holder that took
    /// its create is cancelled before answering (its own caller went away),
    /// the create is queued again: creates are idempotent.
    pub(crate) async fn create_queued(&self, job: NewAllocation) -> BackendResult<Created> {
        loop {
            let (answer, mut mine) = tokio::sync::oneshot::channel();
            self.creates.push(Queued {
                job: job.clone(),
                answer,
            });
            loop {
                tokio::select! {
                    biased;
                    answered = &mut mine => match answered {
                        Ok(result) => return result,
                        // Taken by a holder that was cancelled: again.
                        Err(_) => break,
                    },
                    hierarchy = crate::HIERARCHY.lock() => {
                        let mut batch = self.creates.take();
                        // A create alone may be the first of a wave (an
                        // orders cycle sends many at once): a moment's wait
                        // lets the rest join it instead of each waiting for
                        // the one before.
                        if batch.len() == 1 {
                            tokio::time::sleep(LINGER).await;
                            batch.extend(self.creates.take());
                        }
                        // Callers that went away are not made for nobody.
                        batch.retain(|q| !q.answer.is_closed());
                        if !batch.is_empty() {
                            self.run_batch(batch).await;
                        }
                        drop(hierarchy);
                    }
                }
            }
        }
    }

    /// Makes a batch of creates; every queued caller gets its answer.
    async fn run_batch(&self, mut batch: Vec<Queued>) {
        if batch.len() == 1 {
            if let Some(q) = batch.pop() {
                let result = self.create_one(q.job).await;
                let _ = q.answer.send(result);
            }
            return;
        }
        let (together, alone) = match self.made_together(&batch).await {
            Ok(split) => split,
            Err(e) => {
                tracing::warn!(creates = batch.len(), error = %e.message, "batched create not possible; creating one by one");
                (Vec::new(), (0..batch.len()).collect())
            }
        };
        let mut slots: Vec<Option<Queued>> = batch.into_iter().map(Some).collect();
        for (i, result) in together {
            if let Some(q) = slots[i].take() {
                let _ = q.answer.send(Ok(result));
            }
        }
        for i in alone {
            if let Some(q) = slots[i].take() {
                let result = self.create_one(q.job).await;
                let _ = q.answer.send(result);
            }
        }
    }

    /// Steps 1–3 of the module docs: the creates made (by batch index) and
    /// those left to be made on their own.
    async fn made_together(
        &self,
        batch: &[Queued],
    ) -> BackendResult<(Vec<(usize, Created)>, Vec<usize>)> {
        let cluster = self.load_cluster().await?;
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for q in batch {
            wanted.extend(Self::wanted(&q.job));
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        let existing = self.rows(&wanted).await?;

        // New allocations go in the file; an existing one, or a name two
        // creates of this batch share, goes on its own.
        let mut alone = Vec::new();
        let mut fresh = Vec::new();
        let mut names_seen = BTreeSet::new();
        // An allocation named like a customer or project account of this
        // batch would be skipped by `load` (a name it already made): on its
        // own, the per-create path refuses it.
        let tiers: BTreeSet<&str> = batch
            .iter()
            .flat_map(|q| q.job.customer.iter().chain([&q.job.project]))
            .map(String::as_str)
            .collect();
        for (i, q) in batch.iter().enumerate() {
            let j = &q.job;
            if existing.account(&j.alloc).is_some()
                || tiers.contains(j.alloc.as_str())
                || !names_seen.insert(j.alloc.clone())
            {
                alone.push(i);
            } else {
                fresh.push(i);
            }
        }
        if fresh.len() < 2 {
            alone.extend(fresh);
            alone.sort_unstable();
            return Ok((Vec::new(), alone));
        }

        // Members go in the file when their associations take the plain
        // settings; the others get `add user`.
        let mut results: BTreeMap<usize, Vec<UserResult>> = BTreeMap::new();
        let mut to_add: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for &i in &fresh {
            let (user_results, names) =
                crate::members::sort_users(&batch[i].job.req.users, &BTreeSet::new());
            results.insert(i, user_results);
            to_add.insert(i, names);
        }
        let plain = self.plain_user_settings();
        let known = match &plain {
            Some(_) => {
                let all: BTreeSet<String> = to_add.values().flatten().cloned().collect();
                self.known_users(&all).await?
            }
            None => BTreeSet::new(),
        };
        let mut in_file: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        if plain.is_some() {
            for &i in &fresh {
                let j = &batch[i].job;
                let settings = self.user_settings(
                    std::slice::from_ref(&j.alloc),
                    Some(&j.req.resource.attributes),
                );
                if Some(&settings) != plain.as_ref() {
                    continue;
                }
                in_file.insert(i, to_add.remove(&i).unwrap_or_default());
            }
        }
        // Users SLURM does not know yet are made as `add user` makes them:
        // under the common policy, with an association under the default
        // account that is also their default.
        let new_users: BTreeSet<&str> = in_file
            .values()
            .flatten()
            .map(String::as_str)
            .filter(|u| !known.contains(*u))
            .collect();

        let file = self.flat_file(&cluster, batch, &fresh, &existing, &in_file, &new_users);
        if let Err(e) = self.load(&file).await {
            tracing::warn!(accounts = fresh.len(), error = %e.message, "batched account load failed; checking what it made");
        }
        // Whatever load said, what counts is what is there: each allocation
        // under its project, marked for its resource, with its limits and
        // the members written for it. The rest is made again on its own.
        let after = self.rows(&wanted).await?;
        let mut made: Vec<usize> = fresh.clone();
        made.retain(|&i| {
            let members = after.members(&batch[i].job.alloc);
            self.made_as_asked(&after, &batch[i].job)
                && in_file
                    .get(&i)
                    .is_none_or(|users| users.iter().all(|u| members.contains(u)))
        });
        alone.extend(fresh.iter().filter(|i| !made.contains(i)));

        // The per-allocation QoS comes before any member can submit.
        let mut ready = Vec::with_capacity(made.len());
        for i in made {
            match self.allocation_extras(&batch[i].job.alloc).await {
                Ok(()) => ready.push(i),
                Err(e) => {
                    tracing::warn!(account = %batch[i].job.alloc, error = %e.message, "qos or project directory of a batched allocation failed; retrying it on its own");
                    alone.push(i);
                }
            }
        }
        let mut made = ready;
        let homedirs: Vec<String> = made
            .iter()
            .filter_map(|i| in_file.get(i))
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Some(&first) = made.first() {
            let umask = batch[first].job.req.homedir_umask.clone();
            self.new_homedirs(homedirs, umask.as_deref()).await;
        }

        // The other members: one `add user` per distinct set of users and
        // settings.
        let mut groups: BTreeMap<UserGroup, Vec<usize>> = BTreeMap::new();
        for &i in &made {
            let j = &batch[i].job;
            let Some(names) = to_add.remove(&i).filter(|n| !n.is_empty()) else {
                continue;
            };
            let mut users = names;
            users.sort();
            let settings = self.user_settings(
                std::slice::from_ref(&j.alloc),
                Some(&j.req.resource.attributes),
            );
            groups.entry((users, settings)).or_default().push(i);
        }
        for ((users, _), members) in groups {
            let accounts: Vec<String> = members
                .iter()
                .map(|&i| batch[i].job.alloc.clone())
                .collect();
            let first = &batch[members[0]].job;
            let a = self.add_user_args(&accounts, &users, Some(&first.req.resource.attributes));
            match self.slurm.sacctmgr_write(a).await {
                Ok(_) => {
                    let umask = first.req.homedir_umask.clone();
                    self.new_homedirs(users, umask.as_deref()).await;
                }
                Err(e) => {
                    tracing::warn!(allocations = accounts.len(), error = %e.message, "batched add user failed; adding per allocation");
                    // The accounts exist: each create's own path adds its
                    // users and reports its own failures.
                    for i in members {
                        results.remove(&i);
                        made.retain(|&m| m != i);
                        alone.push(i);
                    }
                }
            }
        }

        let mut together = Vec::new();
        for i in made {
            let j = &batch[i].job;
            let user_results = results.remove(&i).unwrap_or_default();
            together.push((
                i,
                self.created(
                    j.alloc.clone(),
                    j.project.clone(),
                    &j.req,
                    BTreeSet::new(),
                    user_results,
                ),
            ));
        }
        alone.sort_unstable();
        Ok((together, alone))
    }

    /// Whether a loaded allocation is there as the create asked: under its
    /// project, marked for its resource.
    fn made_as_asked(&self, rows: &Rows, job: &NewAllocation) -> bool {
        let limits: BTreeMap<String, i64> = rows
            .account(&job.alloc)
            .map(Assoc::grp_limits)
            .unwrap_or_default();
        let project_placed = rows
            .account(&job.project)
            .is_some_and(|p| job.customer.as_ref().is_none_or(|c| &p.parent == c));
        project_placed
            && limits == job.limits
            && rows.account(&job.alloc).is_some_and(|row| {
                row.parent == job.project
                    && matches!(self.ownership(row), Ownership::Owned { resource } if resource == job.uuid)
            })
    }

    /// The flat file of the accounts to make, parents first, then the
    /// `users` of each new allocation. Only accounts `existing` lacks are
    /// written.
    fn flat_file(
        &self,
        cluster: &str,
        batch: &[Queued],
        fresh: &[usize],
        existing: &Rows,
        users: &BTreeMap<usize, Vec<String>>,
        new_users: &BTreeSet<&str>,
    ) -> String {
        let mut customers: BTreeMap<&str, &str> = BTreeMap::new();
        let mut projects: BTreeMap<(String, &str), &str> = BTreeMap::new();
        let mut allocations: BTreeMap<&str, Vec<(usize, &NewAllocation)>> = BTreeMap::new();
        for &i in fresh {
            let j = &batch[i].job;
            if let Some(c) = &j.customer
                && existing.account(c).is_none()
            {
                customers.insert(c, &j.req.resource.customer_name);
            }
            if existing.account(&j.project).is_none() {
                let parent = j
                    .customer
                    .clone()
                    .or_else(|| self.settings.parent_account.clone())
                    .unwrap_or_else(|| self.settings.root_account().to_owned());
                projects.insert((parent, &j.project), &j.req.resource.project_name);
            }
            allocations.entry(&j.project).or_default().push((i, j));
        }
        let mut out = format!("Cluster - '{cluster}'\n");
        if !customers.is_empty() {
            out.push_str(&format!("Parent - '{}'\n", self.settings.root_account()));
            for (c, name) in customers {
                out.push_str(&account_line(c, name, c, &BTreeMap::new()));
            }
        }
        let mut parent_now = String::new();
        for ((parent, project), name) in projects {
            if parent != parent_now {
                out.push_str(&format!("Parent - '{parent}'\n"));
                parent_now = parent;
            }
            out.push_str(&account_line(project, name, project, &BTreeMap::new()));
        }
        for (project, jobs) in &allocations {
            out.push_str(&format!("Parent - '{project}'\n"));
            for (_, j) in jobs {
                let description = marked(&j.req.resource.name, j.uuid.as_deref());
                out.push_str(&account_line(&j.alloc, &description, project, &j.limits));
            }
        }
        if self.settings.default_account_policy == DefaultAccountPolicy::Common
            && !new_users.is_empty()
        {
            let default = &self.settings.default_account;
            out.push_str(&format!("Parent - '{default}'\n"));
            for u in new_users {
                out.push_str(&format!(
                    "User - '{u}':DefaultAccount='{default}':Fairshare=parent\n"
                ));
            }
        }
        for (i, j) in allocations.values().flatten() {
            let Some(names) = users.get(i).filter(|n| !n.is_empty()) else {
                continue;
            };
            out.push_str(&format!("Parent - '{}'\n", j.alloc));
            for u in names {
                // Fairshare=parent is `add user`'s Share=parent; nothing else
                // is written, so a known user's default account stays as it
                // is.
                out.push_str(&format!("User - '{u}':Fairshare=parent\n"));
            }
        }
        out
    }

    /// The settings `add user` would give every allocation's users when they
    /// are the plain ones a flat file can give too (`Share=parent`, and the
    /// common default account an existing user already has): no partitions,
    /// no QoS, no per-allocation default account.
    fn plain_user_settings(&self) -> Option<Vec<String>> {
        let s = &self.settings;
        if !s.partitions.is_empty()
            || s.default_partition.is_some()
            || s.qos_enforced()
            || s.qos_management.enabled
        {
            return None;
        }
        match s.default_account_policy {
            DefaultAccountPolicy::Common => Some(vec![
                format!("DefaultAccount={}", s.default_account),
                "Share=parent".into(),
            ]),
            DefaultAccountPolicy::None => Some(vec!["Share=parent".into()]),
            DefaultAccountPolicy::Individual => None,
        }
    }

    /// Which of these users SLURM has (one `show user` per ~100 KB of names).
    async fn known_users(&self, users: &BTreeSet<String>) -> BackendResult<BTreeSet<String>> {
        let users: Vec<String> = users.iter().cloned().collect();
        let mut known = BTreeSet::new();
        if users.is_empty() {
            return Ok(known);
        }
        for chunk in crate::usage::chunks(&users) {
            let out = self
                .slurm
                .sacctmgr_read(args!["show", "user", chunk, "format=user"])
                .await?;
            known.extend(
                out.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(known)
    }

    /// `sacctmgr load file=<flat file>`, as a write.
    async fn load(&self, text: &str) -> BackendResult<()> {
        let mut file = tempfile::Builder::new()
            .prefix("waldur-slurm-")
            .suffix(".cfg")
            .tempfile()
            .map_err(|e| BackendError::command_failed(format!("flat file not written: {e}")))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| BackendError::command_failed(format!("flat file not written: {e}")))?;
        let path = file.path().display().to_string();
        self.slurm
            .sacctmgr_write(args!["load", format!("file={path}")])
            .await
            .map(drop)
    }

    /// The cluster a flat file names: the configured one, else the only
    /// cluster slurmdbd knows (read once).
    async fn load_cluster(&self) -> BackendResult<String> {
        self.flat_cluster
            .get_or_try_init(|| async {
                let out = self
                    .slurm
                    .sacctmgr_read(args!["show", "cluster", "format=cluster"])
                    .await?;
                let clusters: Vec<&str> = out
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                // A `Cluster -` line naming a cluster slurmdbd does not know
                // would register it: the configured name must be listed.
                match (&self.settings.cluster_name, clusters.as_slice()) {
                    (Some(c), all) if all.contains(&c.as_str()) => Ok(c.clone()),
                    (Some(c), _) => Err(BackendError::not_ready(format!(
                        "slurmdbd does not know cluster {c:?}; creating accounts one by one"
                    ))),
                    (None, [one]) if names::valid_account(one) => Ok((*one).to_owned()),
                    (None, _) => Err(BackendError::not_ready(format!(
                        "slurmdbd knows {} clusters; set cluster_name to create accounts in batches",
                        clusters.len()
                    ))),
                }
            })
            .await
            .cloned()
    }
}

/// The longest description a flat file carries, in bytes.
const MAX_FLAT_DESCRIPTION: usize = 1000;

/// One `Account -` line. Names are valid account names already; the
/// description loses the quote that would end it (and what `description=`
/// loses on the command line).
fn account_line(
    name: &str,
    description: &str,
    organization: &str,
    limits: &BTreeMap<String, i64>,
) -> String {
    // sacctmgr reads the file in 4 KB lines, ends a line's text at `#` and
    // eats backslashes: none of them reaches it, and the text is capped.
    let description: String = names::description(description)
        .chars()
        .filter(|c| !matches!(c, '\'' | '#' | '\\'))
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= MAX_FLAT_DESCRIPTION).then_some(c)
        })
        .collect();
    let description = if description.is_empty() {
        name.to_owned()
    } else {
        description
    };
    let mut line =
        format!("Account - '{name}':Description='{description}':Organization='{organization}'");
    if !limits.is_empty() {
        line.push_str(&format!(":GrpTRESMins={}", join_tres(limits)));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_line_cannot_be_closed_early_by_its_description() {
        let line = account_line(
            "a_run",
            "it's a 'run' | x:y [waldur:ab]",
            "p_proj",
            &BTreeMap::from([("cpu".into(), 60)]),
        );
        assert_eq!(
            line,
            "Account - 'a_run':Description='its a run x:y [waldur:ab]':Organization='p_proj':GrpTRESMins=cpu=60\n"
        );
        let long = account_line(
            "a_l",
            &format!("#1 \\ {}", "é".repeat(2000)),
            "p",
            &BTreeMap::new(),
        );
        assert!(long.len() < MAX_FLAT_DESCRIPTION + 100, "{}", long.len());
        assert!(!long.contains('#') && !long.contains('\\'));
        assert_eq!(
            account_line("a_x", "''", "p", &BTreeMap::new()),
            "Account - 'a_x':Description='a_x':Organization='p'\n"
        );
    }
}
