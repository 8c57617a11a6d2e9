//! The MOAB backend: deposit accounting through the MOAB Accounting Manager
//! (MAM) and its `mam-*` commands.
//!
//! Model (the original agent's, with its known defects fixed; see the
//! README): a project account `<project_prefix><project slug>` and, under it
//! (as organization), one allocation account per resource with exactly one
//! fund. The resource's only component is `deposit`: its limit is the total
//! deposited into the fund, and a limit change deposits or withdraws the
//! difference, so setting the same limit twice changes nothing. Usage is
//! what was charged to the account per user, read for every resource with
//! one `mam-list-usagerecords`. Members are the account's users.
//!
//! Ownership (SPEC §5.3a): the allocation and project accounts this backend
//! creates carry a marker at the end of their description; an account
//! without one is left alone, except an allocation account of the original
//! agent's shape (allocation prefix, organization with the project prefix)
//! when `adopt_unmarked` is on, which is taken over (marked) on its first
//! change.

pub mod mam;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use waldur_backend_sdk::command::{ProcessRunner, Runner};
use waldur_backend_sdk::ownership::{marked, marker, unmarked, uuid_hex};
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult, SettingError};

use mam::{AccountRow, FundRow, Mam};
pub use settings::{DEPOSIT, MoabSettings};

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "moab";

/// The MOAB backend of one accounting server.
#[derive(Debug)]
pub struct MoabBackend {
    settings: MoabSettings,
    mam: Mam,
    /// Held while a project account is looked up, made or removed together
    /// with the allocation account under it, so two requests of one project
    /// never race on it (the SDK locks per resource, not per project).
    projects: tokio::sync::Mutex<()>,
}

/// Whether this backend may act on an account, and for which resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ownership {
    /// Marked by this backend (the resource, when the marker names one).
    Owned(Option<String>),
    /// Made by the original agent; taken over on the first change.
    Adoptable,
    /// Someone else's: never touched.
    Foreign(String),
}

impl MoabBackend {
    /// A backend running `mam-*` through `runner`.
    pub fn new(settings: MoabSettings, runner: Arc<dyn Runner>) -> Self {
        let mam = Mam::new(
            runner,
            settings.mam_bin_dir.clone(),
            Duration::from_secs(settings.command_timeout_seconds),
        );
        Self {
            settings,
            mam,
            projects: tokio::sync::Mutex::new(()),
        }
    }

    /// A backend from a server config's `settings`, spawning real processes.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, SettingError> {
        Ok(Self::new(
            MoabSettings::parse(value)?,
            Arc::new(ProcessRunner),
        ))
    }

    /// `mam-*` processes run so far (benchmarks and tests).
    pub fn spawned(&self) -> u64 {
        self.mam.spawned()
    }

    fn ownership(&self, row: &AccountRow) -> Ownership {
        let s = &self.settings;
        match marker(&row.description) {
            Some(resource) => Ownership::Owned(resource),
            None if s.adopt_unmarked
                && !s.allocation_prefix.is_empty()
                && row.name.starts_with(&s.allocation_prefix)
                && !row.organization.is_empty()
                && row.organization.starts_with(&s.project_prefix)
                && row.organization != row.name =>
            {
                Ownership::Adoptable
            }
            None => Ownership::Foreign("its description has no waldur marker".into()),
        }
    }

    /// An allocation account this backend may change, or the SPEC's error.
    async fn owned(&self, backend_id: &str) -> BackendResult<AccountRow> {
        let row = self
            .mam
            .accounts(Some(backend_id))
            .await?
            .into_iter()
            .find(|r| r.name == backend_id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        match self.ownership(&row) {
            // A bare marker is a project account: not a resource.
            Ownership::Owned(None) => Err(BackendError::not_managed(
                backend_id,
                "it is a project account",
            )),
            Ownership::Owned(Some(_)) | Ownership::Adoptable => Ok(row),
            Ownership::Foreign(why) => Err(BackendError::not_managed(backend_id, why)),
        }
    }

    /// The one fund of an account. An account without one is refused: only
    /// a (re-issued) create makes a fund, so an empty or filtered listing can
    /// never lead to a second fund and a second deposit.
    async fn fund(&self, account: &str) -> BackendResult<FundRow> {
        let mut funds = self.mam.funds(account).await?;
        match funds.len() {
            0 => Err(BackendError::command_refused(format!(
                "account {account} has no fund; re-issue its creation to make one"
            ))),
            1 => Ok(funds.remove(0)),
            n => Err(BackendError::command_refused(format!(
                "account {account} has {n} funds; this backend keeps exactly one per account"
            ))),
        }
    }

    /// Moves the fund's total deposit to `deposit`: deposits or withdraws
    /// the difference. Returns the deposit now in force.
    async fn set_deposit(&self, account: &str, deposit: i64) -> BackendResult<i64> {
        // MAM amounts are decimals; beyond 2^53 a deposit would not read back
        // as the value set.
        if deposit > (1_i64 << 53) {
            return Err(BackendError::invalid_field(
                "limits.deposit",
                format!("{deposit} is larger than an accounting amount can hold exactly"),
            ));
        }
        let fund = self.fund(account).await?;
        let wanted = deposit as f64;
        let delta = wanted - fund.allocated;
        if delta > 0.004 {
            self.mam.deposit(account, &fund.id, delta).await?;
        } else if delta < -0.004 {
            if fund.balance + 0.004 < -delta {
                return Err(BackendError::command_refused(format!(
                    "the deposit of {account} cannot go down to {deposit}: {:.2} of {:.2} is already charged",
                    fund.allocated - fund.balance,
                    fund.allocated
                )));
            }
            self.mam.withdraw(account, &fund.id, -delta).await?;
        }
        Ok(deposit)
    }

    fn info_of(&self, row: &AccountRow, deposit: Option<f64>) -> ResourceInfo {
        ResourceInfo {
            backend_id: row.name.clone(),
            parent_id: row.organization.clone(),
            description: unmarked(&row.description).to_owned(),
            limits: deposit
                .map(|d| Limits::from([(DEPOSIT.to_owned(), d.round() as i64)]))
                .unwrap_or_default(),
            users: row.users.clone(),
            ..ResourceInfo::default()
        }
    }

    /// Marks an adopted account with its resource before its first change.
    /// Without the resource's UUID it stays unmarked (and adoptable): a bare
    /// marker would make it look like a project account.
    async fn claim(&self, row: &AccountRow, resource: Option<&str>) -> BackendResult<()> {
        let Some(resource) = resource.and_then(uuid_hex) else {
            return Ok(());
        };
        if self.ownership(row) == Ownership::Adoptable {
            tracing::info!(account = %row.name, "taking over an account of the original agent");
            self.mam
                .set_description(&row.name, &marked(&row.description, Some(&resource)))
                .await?;
        }
        Ok(())
    }

    /// The project account of a resource, made (and marked) if missing.
    async fn ensure_project(&self, r: &ResourceContext) -> BackendResult<String> {
        if r.project_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.project_slug",
                "is required: the allocation account lives under its project's account",
            ));
        }
        let project = format!("{}{}", self.settings.project_prefix, r.project_slug);
        if !settings::valid_name(&project) {
            return Err(BackendError::invalid_field(
                "resource.project_slug",
                format!("{project:?} is not a name MAM accepts"),
            ));
        }
        let exists = self
            .mam
            .accounts(Some(&project))
            .await?
            .iter()
            .any(|a| a.name == project);
        if !exists {
            let description = marked(&one_line(&r.project_name), None);
            self.mam
                .create_account(&project, &description, &project)
                .await?;
        }
        Ok(project)
    }

    /// Adds users one by one: a user MAM does not know fails alone.
    async fn add_members(&self, row: &AccountRow, users: &[String]) -> Vec<UserResult> {
        let mut out = Vec::with_capacity(users.len());
        let mut members = row.users.clone();
        for u in users {
            let outcome = if members.contains(u) {
                Outcome::Unchanged
            } else if !settings::valid_name(u) {
                Outcome::Failed(BackendError::invalid_field(
                    "users",
                    format!("{u:?} is not a name MAM accepts"),
                ))
            } else {
                match self.mam.add_user(&row.name, u).await {
                    Ok(()) => {
                        members.push(u.clone());
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Failed(e),
                }
            };
            out.push(UserResult {
                username: u.clone(),
                outcome,
            });
        }
        out
    }

    /// Removes a project account this backend made once no other account
    /// is under it (the caller holds the project lock). A listing that does
    /// not show the project account marked as ours removes nothing.
    async fn remove_emptied_project(&self, project: &str, allocation: &str) -> BackendResult<()> {
        if project.is_empty() || project == allocation {
            return Ok(());
        }
        let all = self.mam.accounts(None).await?;
        let ours = all
            .iter()
            .any(|a| a.name == project && marker(&a.description) == Some(None));
        let used = all
            .iter()
            .any(|a| a.organization == project && a.name != project);
        if ours && !used {
            for f in self.mam.funds(project).await? {
                self.mam.delete_fund(&f.id).await?;
            }
            self.mam.delete_account(project).await?;
        }
        Ok(())
    }

    /// Month window strings `YYYY-MM-DDThh:mm:ss` in `zone`.
    fn window(
        &self,
        period: Option<BillingPeriod>,
        zone: Option<&str>,
    ) -> BackendResult<(String, String)> {
        let zone = zone
            .filter(|z| !z.is_empty())
            .unwrap_or(&self.settings.timezone);
        let tz = jiff::tz::TimeZone::get(zone)
            .map_err(|_| BackendError::invalid_field("timezone", format!("{zone:?} is unknown")))?;
        let (year, month) = match period {
            Some(p) => (p.year, p.month),
            None => {
                let now = jiff::Timestamp::now().to_zoned(tz);
                (
                    i32::from(now.year()),
                    u32::try_from(now.month()).unwrap_or(1),
                )
            }
        };
        let (Ok(y), Ok(m)) = (i16::try_from(year), i8::try_from(month)) else {
            return Err(BackendError::invalid_field("period", "not a month"));
        };
        let first = jiff::civil::Date::new(y, m, 1)
            .map_err(|e| BackendError::invalid_field("period", e))?;
        let last = first.last_of_month();
        Ok((format!("{first}T00:00:00"), format!("{last}T23:59:59")))
    }
}

/// A description on one line (MAM keeps it in one field).
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[async_trait::async_trait]
impl Backend for MoabBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: None,
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        // No pause or downscale: MAM has no such state for an account.
        vec![
            Resources,
            ListResources,
            ResourceLimits,
            Membership,
            UsageReport,
            HistoricalUsage,
            Diagnostics,
        ]
    }

    async fn probe(&self) -> BackendResult<Probe> {
        Ok(match self.mam.ping().await {
            Ok(()) => Probe {
                ready: true,
                message: String::new(),
            },
            Err(e) => Probe {
                ready: false,
                message: e.message,
            },
        })
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.settings.components())
    }

    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        let id = format!("{}{base_name}", self.settings.allocation_prefix).to_lowercase();
        if settings::valid_name(&id) {
            Ok(id)
        } else {
            Err(BackendError::invalid_field(
                "base_name",
                format!("{id:?} is not a name MAM accepts"),
            ))
        }
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        let mut checks = Vec::new();
        let mut info = BTreeMap::new();
        match self.mam.accounts(None).await {
            Ok(rows) => {
                let ours = rows
                    .iter()
                    .filter(|r| matches!(self.ownership(r), Ownership::Owned(Some(_))))
                    .count();
                info.insert("allocation_accounts".into(), ours.to_string());
                checks.push(DiagnosticCheck {
                    name: "mam-list-accounts".into(),
                    status: CheckStatus::Ok,
                    message: format!(
                        "{} accounts, {ours} allocations of this backend",
                        rows.len()
                    ),
                });
            }
            Err(e) => checks.push(DiagnosticCheck {
                name: "mam-list-accounts".into(),
                status: CheckStatus::Failed,
                message: e.message,
            }),
        }
        if let Some(dir) = &self.settings.mam_bin_dir {
            info.insert("mam_bin_dir".into(), dir.display().to_string());
        }
        Ok(Diagnostics { checks, info })
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        let id = req.backend_id.clone();
        if !settings::valid_name(&id) {
            return Err(BackendError::invalid_field(
                "backend_id",
                format!("{id:?} is not a name MAM accepts"),
            ));
        }
        let uuid = uuid_hex(&req.resource.resource_uuid).ok_or_else(|| {
            BackendError::invalid_field("resource.resource_uuid", "is not a UUID")
        })?;
        // Made here: the project account and the allocation account under it,
        // while no other request of this backend touches project accounts.
        let project_guard = self.projects.lock().await;
        let existing = self
            .mam
            .accounts(Some(&id))
            .await?
            .into_iter()
            .find(|r| r.name == id);
        let (row, created) = match existing {
            Some(row) => match self.ownership(&row) {
                // Only a re-issued create of the same resource goes on.
                Ownership::Owned(Some(owner)) if owner == uuid => (row, false),
                Ownership::Owned(_) | Ownership::Adoptable => {
                    return Err(BackendError::already_exists(
                        &id,
                        "the account belongs to another resource",
                    ));
                }
                Ownership::Foreign(why) => {
                    return Err(BackendError::already_exists(&id, &why));
                }
            },
            None => {
                let project = self.ensure_project(&req.resource).await?;
                let description = marked(&one_line(&req.resource.name), Some(&uuid));
                self.mam.create_account(&id, &description, &project).await?;
                let row = AccountRow {
                    name: id.clone(),
                    organization: project,
                    users: Vec::new(),
                    description,
                };
                (row, true)
            }
        };
        drop(project_guard);
        // An interrupted create may have left the account without its fund.
        if self.mam.funds(&id).await?.is_empty() {
            self.mam.create_fund(&id).await?;
        }
        // No limit asked: the configured default; with neither, a re-issued
        // create leaves the deposit as it is.
        let default = self.settings.components.get(DEPOSIT).and_then(|c| c.limit);
        let deposit = match req.limits.get(DEPOSIT).copied().or(default) {
            Some(d) => Some(self.set_deposit(&id, d).await? as f64),
            None if created => Some(0.0),
            None => Some(self.fund(&id).await?.allocated),
        };
        let names: Vec<String> = req.users.iter().map(|u| u.username.clone()).collect();
        let user_results = self.add_members(&row, &names).await;
        let mut info = self.info_of(&row, deposit);
        info.users = row
            .users
            .iter()
            .cloned()
            .chain(
                user_results
                    .iter()
                    .filter(|r| matches!(r.outcome, Outcome::Applied))
                    .map(|r| r.username.clone()),
            )
            .collect();
        Ok(Created {
            resource: info,
            ready: true,
            operation_id: None,
            user_results,
        })
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let row = self.owned(backend_id).await?;
        let funds = self.mam.funds(backend_id).await?;
        let deposit = funds.iter().map(|f| f.allocated).sum::<f64>();
        Ok(self.info_of(&row, Some(deposit)))
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        let mut rows: Vec<ResourceInfo> = self
            .mam
            .accounts(None)
            .await?
            .iter()
            .filter(|r| {
                matches!(
                    self.ownership(r),
                    Ownership::Owned(Some(_)) | Ownership::Adoptable
                )
            })
            .map(|r| self.info_of(r, None))
            .collect();
        rows.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        Ok(page.page(rows, 500))
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let id = &req.backend_id;
        let row = match self.owned(id).await {
            Ok(row) => row,
            Err(e) if e.reason == waldur_backend_sdk::proto::reason::RESOURCE_NOT_FOUND => {
                // A delete re-issued after the account went (the first one was
                // cut off): the emptied project account may still be there.
                if let Some(r) = req.resource.as_ref().filter(|r| !r.project_slug.is_empty()) {
                    let _project_guard = self.projects.lock().await;
                    let project = format!("{}{}", self.settings.project_prefix, r.project_slug);
                    self.remove_emptied_project(&project, id).await?;
                }
                return Ok(Deleted {
                    ready: true,
                    operation_id: None,
                    existed: false,
                });
            }
            Err(e) => return Err(e),
        };
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            DeletionMode::Unspecified => self.settings.soft_delete,
        };
        if soft {
            let fund = self.fund(id).await?;
            if fund.balance > 0.004 {
                self.mam.withdraw(id, &fund.id, fund.balance).await?;
            }
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: true,
            });
        }
        // The funds are found while the account still exists (the original
        // looked them up after deleting it, and found nothing). The project
        // lock keeps a create of the same project from slipping in between
        // the listing below and the project account's removal.
        let _project_guard = self.projects.lock().await;
        let funds = self.mam.funds(id).await?;
        for f in &funds {
            self.mam.delete_fund(&f.id).await?;
        }
        self.mam.delete_account(id).await?;
        // The project account goes when no other account is under it, and
        // only if this backend made it.
        self.remove_emptied_project(&row.organization, id).await?;
        Ok(Deleted {
            ready: true,
            operation_id: None,
            existed: true,
        })
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        let row = self.owned(backend_id).await?;
        let resource_uuid = resource.as_ref().map(|r| r.resource_uuid.as_str());
        self.claim(&row, resource_uuid).await?;
        let mut applied = Limits::new();
        if let Some(&deposit) = limits.get(DEPOSIT) {
            applied.insert(DEPOSIT.into(), self.set_deposit(backend_id, deposit).await?);
        }
        Ok(LimitsApplied {
            limits: applied,
            ready: true,
            operation_id: None,
        })
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        self.owned(backend_id).await?;
        let deposit = self
            .mam
            .funds(backend_id)
            .await?
            .iter()
            .map(|f| f.allocated)
            .sum::<f64>();
        Ok(Limits::from([(DEPOSIT.to_owned(), deposit.round() as i64)]))
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        _homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let row = self.owned(backend_id).await?;
        self.claim(&row, None).await?;
        let names: Vec<String> = users.into_iter().map(|u| u.username).collect();
        Ok(self.add_members(&row, &names).await)
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let row = self.owned(backend_id).await?;
        self.claim(&row, None).await?;
        let mut out = Vec::with_capacity(usernames.len());
        for u in usernames {
            let outcome = if !row.users.contains(&u) {
                Outcome::Unchanged
            } else {
                match self.mam.del_user(backend_id, &u).await {
                    Ok(()) => Outcome::Applied,
                    Err(e) => Outcome::Failed(e),
                }
            };
            out.push(UserResult {
                username: u,
                outcome,
            });
        }
        Ok(out)
    }

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let rows = self.mam.accounts(None).await?;
        let by_name: BTreeMap<&str, &AccountRow> =
            rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for id in backend_ids {
            match by_name.get(id.as_str()) {
                Some(row)
                    if matches!(
                        self.ownership(row),
                        Ownership::Owned(Some(_)) | Ownership::Adoptable
                    ) =>
                {
                    let mut users = row.users.clone();
                    users.sort();
                    found.insert(id.clone(), users);
                }
                _ => missing.push(id.clone()),
            }
        }
        Ok(ResourceUsers {
            found,
            missing,
            ..ResourceUsers::default()
        })
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let (start, end) = self.window(query.period, query.timezone.as_deref())?;
        let wanted: BTreeSet<&str> = query.backend_ids.iter().map(String::as_str).collect();
        let mut per: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for c in self.mam.charges(&start, &end).await? {
            if wanted.contains(c.account.as_str()) {
                *per.entry(c.account).or_default().entry(c.user).or_default() += c.amount;
            }
        }
        let usage_components: Vec<String> = self
            .settings
            .components()
            .into_iter()
            .filter(|c| c.accounting_type == AccountingType::Usage as i32)
            .map(|c| c.key)
            .collect();
        Ok(query
            .backend_ids
            .iter()
            .map(|id| {
                let charged = per.remove(id).unwrap_or_default();
                let users: BTreeMap<String, Amounts> = charged
                    .iter()
                    .map(|(u, a)| (u.clone(), Amounts::from([(DEPOSIT.to_owned(), round2(*a))])))
                    .collect();
                let sum = round2(users.values().filter_map(|a| a.get(DEPOSIT)).sum());
                let mut total = Amounts::new();
                if sum > 0.0 || usage_components.iter().any(|c| c == DEPOSIT) {
                    total.insert(DEPOSIT.to_owned(), sum);
                }
                ResourceUsage {
                    backend_id: id.clone(),
                    total,
                    users,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_become_one_line_without_separators() {
        assert_eq!(one_line("My  big\nproject | two"), "My big project / two");
        assert_eq!(round2(0.1 + 0.2), 0.3);
    }
}
