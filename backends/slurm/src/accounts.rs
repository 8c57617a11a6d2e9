//! The account tree (customer → project → allocation), the association
//! listing every operation starts from, and ownership: which accounts this
//! backend may change.
//!
//! Ownership. An allocation account this backend created carries a marker at
//! the end of its description: `[waldur:<resource uuid>]` (or `[waldur]` when
//! the resource is not known). Before any change the backend checks it, so a
//! request naming a customer or project account, an account outside the
//! configured prefix, or any account a person made by hand is refused
//! (FAILED_PRECONDITION, reason RESOURCE_NOT_MANAGED) and nothing runs on it.
//! Accounts the original Python agent made have no marker;
//! with `ownership.adopt_unmarked: by_prefix` (the default) one of the
//! original's shape (a name with the non-empty allocation prefix, under an
//! account with the project prefix that is also its organisation) is taken
//! over: the marker is written before its first change. A create never takes
//! over an account bound to no resource. `waldur-backend-server adopt` takes
//! over any account on purpose, except customer, project and root accounts
//! and names outside the allocation prefix.

use std::collections::{BTreeMap, BTreeSet};

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{BackendError, BackendResult};

use crate::limits::join_tres;
use crate::settings::Adopt;
use crate::{SlurmBackend, args, checked_account, names};

/// One association row of `show account withassoc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Assoc {
    pub account: String,
    pub description: String,
    pub organization: String,
    pub parent: String,
    pub user: String,
    pub grp_tres_mins: String,
    /// `GrpSubmitJobs`: empty for no limit.
    pub grp_submit: String,
    pub qos: String,
    /// `MaxTRESMins` (a user row's per-user limits): empty for none.
    pub max_tres_mins: String,
}

/// The listing of some accounts: their own rows and their users' rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows(pub Vec<Assoc>);

impl Assoc {
    /// `GrpTRESMins` as whole backend values by TRES.
    pub fn grp_limits(&self) -> BTreeMap<String, i64> {
        crate::parse::tres(&self.grp_tres_mins)
            .into_iter()
            .map(|(k, v)| (k.clone(), crate::parse::limit_value(&k, &v) as i64))
            .collect()
    }
}

impl Rows {
    /// The account's own row. An account listed without a parent has no
    /// association (only SLURM's `root` has none above it): a removal on
    /// one cluster (`cluster=` on every write) leaves the account itself
    /// behind. It is absent here, so it is added again (an `add account`
    /// of an existing account gives it its association back) instead of
    /// being taken for a parent that `sacctmgr` would refuse.
    pub fn account(&self, name: &str) -> Option<&Assoc> {
        self.0.iter().find(|a| {
            a.account == name && a.user.is_empty() && (!a.parent.is_empty() || a.account == "root")
        })
    }

    /// The account's user rows.
    pub fn users<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Assoc> + 'a {
        self.0
            .iter()
            .filter(move |a| a.account == name && !a.user.is_empty())
    }

    /// The account's members.
    pub fn members(&self, name: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|a| a.account == name && !a.user.is_empty())
            .map(|a| a.user.clone())
            .collect()
    }
}

/// What the backend may do with an existing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// It carries the marker (for this resource, when it names one).
    Owned { resource: Option<String> },
    /// An unmarked account of the original agent's shape, taken over on
    /// its first change.
    Adoptable,
    /// Not this backend's: why.
    Foreign(String),
}

/// The resource a description's ownership marker names (the SDK's marker,
/// shared by every backend).
pub(crate) use waldur_backend_sdk::ownership::{marker, uuid_hex};

/// A description with the marker of `resource`, cut to what `sacctmgr`
/// accepts.
pub(crate) fn marked(description: &str, resource: Option<&str>) -> String {
    let base = names::description(waldur_backend_sdk::ownership::unmarked(description));
    waldur_backend_sdk::ownership::marked(&base, resource)
}

/// The association listing's columns. The description is last: it is free
/// text, so whatever it holds cannot shift the other columns.
pub(crate) const ASSOC_FORMAT: &str =
    "format=account,org,parentname,user,grptresmins,grpsubmit,qos,maxtresmins,descr";

/// One row of [`ASSOC_FORMAT`]. A row with too few columns is an error, never
/// "no such account": an account misread as absent would be reported gone.
pub(crate) fn assoc(r: &[&str]) -> BackendResult<Assoc> {
    let [
        account,
        org,
        parent,
        user,
        grp_tres_mins,
        grp_submit,
        qos,
        max_tres_mins,
        descr @ ..,
    ] = r
    else {
        return Err(BackendError::not_ready(format!(
            "sacctmgr printed an association row with {} columns where 9 were asked for",
            r.len()
        )));
    };
    if descr.is_empty() {
        return Err(BackendError::not_ready(
            "sacctmgr printed an association row without a description column",
        ));
    }
    Ok(Assoc {
        account: account.to_lowercase(),
        organization: org.to_lowercase(),
        parent: parent.to_lowercase(),
        user: (*user).to_owned(),
        grp_tres_mins: (*grp_tres_mins).to_owned(),
        grp_submit: (*grp_submit).to_owned(),
        qos: (*qos).to_owned(),
        max_tres_mins: (*max_tres_mins).to_owned(),
        description: descr.join("|"),
    })
}

pub(crate) fn not_managed(id: &str, why: &str) -> BackendError {
    BackendError::not_managed(id, why)
}

impl SlurmBackend {
    /// Associations of the given accounts (account rows and user rows), with
    /// their descriptions and organisations: one `sacctmgr` per ~100 KB of
    /// names.
    pub(crate) async fn rows(&self, accounts: &[String]) -> BackendResult<Rows> {
        let mut all = Vec::new();
        for chunk in crate::usage::chunks(accounts) {
            let out = self
                .slurm
                .sacctmgr_read(args![
                    "show",
                    "account",
                    "withassoc",
                    ASSOC_FORMAT,
                    "where",
                    format!("names={chunk}")
                ])
                .await?;
            for line in crate::parse::rows(&out) {
                all.push(assoc(&line)?);
            }
        }
        Ok(Rows(all))
    }

    /// Why an account row can never be an allocation of this backend, marker
    /// or not: outside the allocation prefix, or a customer, project or root
    /// account.
    fn never_an_allocation(&self, row: &Assoc) -> Option<String> {
        let s = &self.settings;
        let prefix = s.allocation_prefix.to_ascii_lowercase();
        if !row.account.starts_with(&prefix) {
            return Some(format!("its name lacks the allocation prefix {prefix:?}"));
        }
        let tier = [
            Some(s.default_account.as_str()),
            Some(s.root_account()),
            s.parent_account.as_deref(),
        ];
        (tier.contains(&Some(row.account.as_str())) || row.organization == row.account)
            .then(|| "it is a customer, project or root account".to_owned())
    }

    /// Whether `row` (an account row) is this backend's to change.
    pub(crate) fn ownership(&self, row: &Assoc) -> Ownership {
        let s = &self.settings;
        let prefix = s.allocation_prefix.to_ascii_lowercase();
        if let Some(why) = self.never_an_allocation(row) {
            return Ownership::Foreign(why);
        }
        if let Some(resource) = marker(&row.description) {
            return Ownership::Owned { resource };
        }
        if s.ownership.adopt_unmarked == Adopt::Never {
            return Ownership::Foreign(
                "it carries no ownership marker; take it over with `waldur-backend-server adopt`"
                    .into(),
            );
        }
        // sacctmgr gives a sub-account its parent as organisation unless told
        // otherwise, so "organisation = parent" alone fits any hand-made
        // sub-account: the names must carry both prefixes too.
        if prefix.is_empty() {
            return Ownership::Foreign(
                "it carries no ownership marker, and without an allocation prefix nothing is taken over unasked; use `waldur-backend-server adopt`".into(),
            );
        }
        let shaped = !row.parent.is_empty()
            && row.organization == row.parent
            && row
                .parent
                .starts_with(&s.project_prefix.to_ascii_lowercase())
            && row.parent != s.root_account()
            && Some(row.parent.as_str()) != s.parent_account.as_deref();
        if shaped {
            Ownership::Adoptable
        } else {
            Ownership::Foreign(
                "it carries no ownership marker and is not shaped like an allocation (under a project account that is its organisation)".into(),
            )
        }
    }

    /// The rows of an existing allocation the backend may read:
    /// RESOURCE_NOT_FOUND when absent, RESOURCE_NOT_MANAGED when foreign.
    pub(crate) async fn readable(&self, id: &str) -> BackendResult<Rows> {
        let rows = self.rows(&[id.to_owned()]).await?;
        let row = rows
            .account(id)
            .ok_or_else(|| BackendError::resource_not_found(id))?;
        if let Ownership::Foreign(why) = self.ownership(row) {
            return Err(not_managed(id, &why));
        }
        Ok(rows)
    }

    /// As [`Self::readable`], for a change: an adoptable account gets its
    /// marker first.
    pub(crate) async fn owned(&self, id: &str) -> BackendResult<Rows> {
        let rows = self.readable(id).await?;
        if let Some(row) = rows.account(id)
            && self.ownership(row) == Ownership::Adoptable
        {
            self.mark(id, &row.description, None).await?;
            tracing::info!(account = id, "unmarked allocation account adopted");
        }
        Ok(rows)
    }

    /// Writes the ownership marker into an account's description (nothing
    /// when it is there already).
    async fn mark(&self, id: &str, description: &str, resource: Option<&str>) -> BackendResult<()> {
        let wanted = marked(description, resource);
        if wanted == description {
            return Ok(());
        }
        self.set_account(id, format!("description={wanted}")).await
    }

    /// `waldur-backend-server adopt`: marks existing accounts as this
    /// backend's, whatever their place in the tree (an operator's decision),
    /// but never one outside the allocation prefix or a customer, project or
    /// root account. Per account: true when marked now, false when it
    /// already was.
    pub async fn adopt(&self, ids: &[String]) -> Vec<(String, BackendResult<bool>)> {
        let mut out = Vec::new();
        for id in ids {
            let result = async {
                let id = checked_account("account", id.clone())?;
                let rows = self.rows(std::slice::from_ref(&id)).await?;
                let row = rows
                    .account(&id)
                    .ok_or_else(|| BackendError::resource_not_found(&id))?;
                if let Some(why) = self.never_an_allocation(row) {
                    return Err(not_managed(&id, &why));
                }
                if marker(&row.description).is_some() {
                    return Ok(false);
                }
                self.mark(&id, &row.description, None).await?;
                Ok(true)
            }
            .await;
            out.push((id.clone(), result));
        }
        out
    }

    pub(crate) fn customer_account(&self, r: &ResourceContext) -> BackendResult<Option<String>> {
        if self.settings.parent_account.is_some() {
            return Ok(None);
        }
        if r.customer_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.customer_slug",
                "is required by the account hierarchy",
            ));
        }
        let name = format!("{}{}", self.settings.customer_prefix, r.customer_slug);
        crate::folded_account("resource.customer_slug", &name).map(Some)
    }

    pub(crate) fn project_account(&self, r: &ResourceContext) -> BackendResult<String> {
        if r.project_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.project_slug",
                "is required by the account hierarchy",
            ));
        }
        crate::folded_account(
            "resource.project_slug",
            &format!("{}{}", self.settings.project_prefix, r.project_slug),
        )
    }

    /// `add account`, with the limits on the same line.
    pub(crate) async fn add_account(
        &self,
        name: &str,
        description: &str,
        organization: &str,
        parent: &str,
        limits: &BTreeMap<String, i64>,
    ) -> BackendResult<()> {
        // An empty description makes sacctmgr fail ("Unspecified error").
        let description = Some(names::description(description))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| name.to_owned());
        let mut a = args![
            "add",
            "account",
            name,
            format!("description={description}"),
            format!("organization={organization}"),
            format!("parent={parent}")
        ];
        if !limits.is_empty() {
            a.push(format!("GrpTRESMins={}", join_tres(limits)));
        }
        match self.slurm.sacctmgr_write(a).await {
            Ok(_) => Ok(()),
            // Another process may have added it in the meantime (slurmdbd
            // answers a concurrent add with "Unspecified error"): if it
            // exists now under the wanted parent, that is success.
            Err(e) => match self.rows(&[name.to_owned()]).await {
                Ok(rows) if rows.account(name).is_some_and(|r| r.parent == parent) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// `modify account set <setting> where account=<account>`.
    pub(crate) async fn set_account(&self, account: &str, setting: String) -> BackendResult<()> {
        self.slurm
            .sacctmgr_write(args![
                "modify",
                "account",
                "set",
                setting,
                "where",
                format!("account={account}")
            ])
            .await
            .map(drop)
    }

    /// The customer and project accounts above an allocation, created when
    /// missing.
    pub(crate) async fn ensure_parents(
        &self,
        rows: &Rows,
        resource: &ResourceContext,
        customer: &Option<String>,
        project: &str,
    ) -> BackendResult<()> {
        if let Some(c) = customer
            && rows.account(c).is_none()
        {
            self.add_account(
                c,
                &resource.customer_name,
                c,
                self.settings.root_account(),
                &BTreeMap::new(),
            )
            .await?;
        }
        if rows.account(project).is_none() {
            let parent = customer
                .clone()
                .or_else(|| self.settings.parent_account.clone())
                .unwrap_or_default();
            self.add_account(
                project,
                &resource.project_name,
                project,
                &parent,
                &BTreeMap::new(),
            )
            .await?;
        }
        Ok(())
    }

    /// The per-allocation QoS (`qos_management`): created once, made the
    /// account's default, extra QoS added to its list.
    pub(crate) async fn ensure_allocation_qos(&self, account: &str) -> BackendResult<()> {
        let q = &self.settings.qos_management;
        let shown = self
            .slurm
            .sacctmgr_read(args!["show", "qos", account, "format=name"])
            .await?;
        if !shown.lines().any(|l| l.trim() == account) {
            self.slurm
                .sacctmgr_write(args![
                    "add",
                    "qos",
                    account,
                    "set",
                    format!("flags={}", q.flags)
                ])
                .await?;
            let options = [
                ("GrpTRES", q.grp_tres.clone()),
                ("MaxJobs", q.max_jobs.map(|v| v.to_string())),
                ("MaxSubmit", q.max_submit.map(|v| v.to_string())),
                ("MaxWall", q.max_wall.clone()),
                ("MinTRESPerJob", q.min_tres_per_job.clone()),
            ];
            for (name, value) in options {
                if let Some(v) = value {
                    self.slurm
                        .sacctmgr_write(args![
                            "modify",
                            "qos",
                            account,
                            "set",
                            format!("{name}={v}")
                        ])
                        .await?;
                }
            }
        }
        self.set_account(account, format!("qos+={account}")).await?;
        self.set_account(account, format!("defaultqos={account}"))
            .await?;
        for extra in &q.additional_qos {
            self.set_account(account, format!("qos+={extra}")).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_without_an_association_on_the_cluster_is_absent() {
        let row = |account: &str, parent: &str| Assoc {
            account: account.into(),
            parent: parent.into(),
            ..Assoc::default()
        };
        let rows = Rows(vec![
            row("root", ""),
            row("c_cust", "root"),
            row("p_left", ""),
        ]);
        assert!(rows.account("root").is_some());
        assert!(rows.account("c_cust").is_some());
        assert!(rows.account("p_left").is_none());
    }

    #[test]
    fn the_marker_names_the_resource_or_nobody() {
        let u = "0f0f0000000000000000000000000001";
        assert_eq!(marker(&format!("run [waldur:{u}]")), Some(Some(u.into())));
        assert_eq!(marker("run [waldur]"), Some(None));
        assert_eq!(marker("run"), None);
        assert_eq!(marker("run [waldur:short]"), None);
        assert_eq!(
            marked(
                "my run [waldur]",
                Some("0F0F0000-0000-0000-0000-000000000001")
            ),
            format!("my run [waldur:{u}]")
        );
        assert_eq!(marked("", None), "[waldur]");
        assert_eq!(marked("a \"b\"", None), "a b [waldur]");
    }
}
