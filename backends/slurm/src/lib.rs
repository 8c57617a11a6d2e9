//! The SLURM backend: accounts, limits, associations and usage through the
//! `sacctmgr`/`sacct`/`scancel` command line (backends spec §2).
//!
//! Batched across resources: a usage report for many allocations is one
//! `sacct`, a membership listing one `sacctmgr show assoc`, and an
//! allocation with limits and users is created with at most five commands
//! (one association read, the missing accounts with limits on the `add`
//! line, all users in one `add user`).

pub mod cli;
pub mod names;
pub mod parse;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use settings::{
    ComponentSettings, DefaultAccountPolicy, QosManagement, SlurmSettings, TargetComponent,
};
use tokio::sync::OnceCell;
use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendError, BackendResult};

use crate::cli::{ProcessRunner, Runner, Slurm};
use crate::parse::{limit_value, round2, rows, tres};

/// The backend type name used in server configs.
pub const TYPE_NAME: &str = "slurm";

/// One association row (`format=account,parentname,user,grptresmins,qos`).
#[derive(Debug, Clone, Default)]
struct Assoc {
    account: String,
    parent: String,
    user: String,
    grp_tres_mins: String,
    qos: String,
}

/// The SLURM backend of one cluster.
pub struct SlurmBackend {
    settings: Arc<SlurmSettings>,
    slurm: Arc<Slurm>,
    components: Vec<Component>,
    cluster_tres: OnceCell<BTreeSet<String>>,
    /// Customer and project accounts are shared between allocations: their
    /// creation is serialised so two new allocations of one project do not
    /// race each other in slurmdbd.
    hierarchy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SlurmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmBackend")
            .field("slurm", &self.slurm)
            .finish()
    }
}

impl SlurmBackend {
    /// A backend running commands through `runner`.
    pub fn new(settings: SlurmSettings, runner: Arc<dyn Runner>) -> Self {
        let slurm = Slurm::new(
            runner,
            &settings.slurm_bin_path,
            settings.cluster_name.clone(),
        );
        let components = settings
            .components
            .iter()
            .map(|(key, c)| {
                let kind = match c.accounting_type.as_str() {
                    "limit" => AccountingType::Limit,
                    "one" => AccountingType::OneTime,
                    _ => AccountingType::Usage,
                };
                Component {
                    key: key.clone(),
                    label: c.label.clone(),
                    measured_unit: c.measured_unit.clone(),
                    unit_factor: c.unit_factor,
                    accounting_type: kind as i32,
                    limit: c.limit.map(|l| l as i64),
                    is_prepaid: kind == AccountingType::OneTime,
                    ..Component::default()
                }
            })
            .collect();
        Self {
            settings: Arc::new(settings),
            slurm: Arc::new(slurm),
            components,
            cluster_tres: OnceCell::new(),
            hierarchy: tokio::sync::Mutex::new(()),
        }
    }

    /// A backend from a server config's `settings`, spawning real processes.
    pub fn from_settings(value: serde_json::Value) -> Result<Self, String> {
        Ok(Self::new(
            SlurmSettings::parse(value)?,
            Arc::new(ProcessRunner),
        ))
    }

    /// SLURM processes spawned so far (benchmarks and tests).
    pub fn spawned(&self) -> u64 {
        self.slurm.spawned()
    }

    /// Total time spent in SLURM commands so far.
    pub fn busy(&self) -> std::time::Duration {
        self.slurm.busy()
    }

    fn component(&self, key: &str) -> Option<&ComponentSettings> {
        self.settings.components.get(key)
    }

    fn usage_keys(&self) -> Vec<&str> {
        self.settings
            .components
            .keys()
            .map(String::as_str)
            .collect()
    }

    /// TRES the cluster knows (`list tres`, read once); empty when unknown.
    async fn cluster_tres(&self) -> &BTreeSet<String> {
        self.cluster_tres
            .get_or_init(|| async {
                match self.slurm.sacctmgr(args!["list", "tres"], false).await {
                    Ok(out) => rows(&out)
                        .into_iter()
                        .filter_map(|r| match (r.first(), r.get(1)) {
                            (Some(t), Some(n)) if !n.is_empty() => Some(format!("{t}/{n}")),
                            (Some(t), _) => Some((*t).to_owned()),
                            _ => None,
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot list TRES; limits are not filtered");
                        BTreeSet::new()
                    }
                }
            })
            .await
    }

    /// Waldur limits → backend `GrpTRESMins` values, unknown TRES dropped:
    /// passthrough components × unit_factor, mapped components onto their
    /// target TRES × factor (summed), prepaid (`one`) components × the
    /// number of months the resource runs. At creation usage-type components
    /// take their configured fixed limit, as the original agent.
    async fn backend_limits(
        &self,
        waldur: &Limits,
        creating: bool,
        resource: Option<&ResourceContext>,
    ) -> BTreeMap<String, i64> {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for (key, c) in &self.settings.components {
            let value = if creating && c.accounting_type == "usage" {
                c.limit.or_else(|| waldur.get(key).map(|v| *v as f64))
            } else {
                waldur.get(key).map(|v| *v as f64)
            };
            let Some(mut v) = value else { continue };
            if c.accounting_type == "one" {
                v *= prepaid_months(resource) as f64;
            }
            if c.target_components.is_empty() {
                *sums.entry(key.clone()).or_insert(0.0) += v * c.unit_factor;
            } else {
                for (target, t) in &c.target_components {
                    *sums.entry(target.clone()).or_insert(0.0) += v * t.factor;
                }
            }
        }
        let mut out: BTreeMap<String, i64> = sums.into_iter().map(|(k, v)| (k, v as i64)).collect();
        let known = self.cluster_tres().await;
        if !known.is_empty() {
            out.retain(|k, _| known.contains(k));
        }
        out
    }

    /// TRES the usage parser keeps: passthrough components and every target.
    fn usage_tres(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for (key, c) in &self.settings.components {
            if c.target_components.is_empty() {
                out.push(key.as_str());
            } else {
                out.extend(c.target_components.keys().map(String::as_str));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Raw TRES usage → Waldur amounts per component: passthrough ÷
    /// unit_factor rounded to 2 decimals; mapped: Σ target ÷ factor rounded
    /// to an integer (the original's reverse mapping).
    fn waldur_usage(&self, tres: &BTreeMap<String, f64>) -> Amounts {
        self.settings
            .components
            .iter()
            .map(|(key, c)| {
                let v = if c.target_components.is_empty() {
                    round2(tres.get(key).copied().unwrap_or(0.0) / c.unit_factor)
                } else {
                    c.target_components
                        .iter()
                        .map(|(t, tc)| tres.get(t).copied().unwrap_or(0.0) / tc.factor)
                        .sum::<f64>()
                        .round()
                };
                (key.clone(), v)
            })
            .collect()
    }

    /// `GrpTRESMins` text → Waldur limits of configured components.
    fn waldur_limits(&self, grp_tres_mins: &str) -> Limits {
        tres(grp_tres_mins)
            .into_iter()
            .filter_map(|(k, raw)| {
                let c = self.component(&k)?;
                Some((
                    k.clone(),
                    (limit_value(&k, &raw) as f64 / c.unit_factor) as i64,
                ))
            })
            .collect()
    }

    fn customer_account(&self, r: &ResourceContext) -> BackendResult<Option<String>> {
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
        checked_account("resource.customer_slug", name).map(Some)
    }

    fn project_account(&self, r: &ResourceContext) -> BackendResult<String> {
        if r.project_slug.is_empty() {
            return Err(BackendError::invalid_field(
                "resource.project_slug",
                "is required by the account hierarchy",
            ));
        }
        checked_account(
            "resource.project_slug",
            format!("{}{}", self.settings.project_prefix, r.project_slug),
        )
    }

    /// Associations of the given accounts (account rows and user rows).
    async fn assocs(&self, accounts: &[String]) -> BackendResult<Vec<Assoc>> {
        let mut all = Vec::new();
        for chunk in chunks(accounts) {
            let out = self
                .slurm
                .sacctmgr(
                    args![
                        "show",
                        "assoc",
                        "format=account,parentname,user,grptresmins,qos",
                        "where",
                        format!("accounts={chunk}")
                    ],
                    false,
                )
                .await?;
            all.extend(rows(&out).into_iter().map(|r| Assoc {
                account: r.first().map(|s| s.to_lowercase()).unwrap_or_default(),
                parent: r.get(1).map(|s| s.to_lowercase()).unwrap_or_default(),
                user: r.get(2).map(|s| (*s).to_owned()).unwrap_or_default(),
                grp_tres_mins: r.get(3).map(|s| (*s).to_owned()).unwrap_or_default(),
                qos: r.get(4).map(|s| (*s).to_owned()).unwrap_or_default(),
            }));
        }
        Ok(all)
    }

    /// Associations of one allocation account, or RESOURCE_NOT_FOUND when the
    /// account does not exist.
    /// The access level the account's QoS stands for, in the swap model;
    /// unknown (so the coordinator asks SetResourceAccess, which checks for
    /// itself) in the enforcement model or for a QoS set by hand.
    fn access_of(&self, qos: &str) -> Option<AccessLevel> {
        if self.settings.qos_enforced() {
            return None;
        }
        let s = &self.settings;
        if s.qos_paused.as_deref() == Some(qos) {
            Some(AccessLevel::Paused)
        } else if s.qos_downscaled.as_deref() == Some(qos) {
            Some(AccessLevel::Downscaled)
        } else if s.qos_default == qos {
            Some(AccessLevel::Full)
        } else {
            None
        }
    }

    async fn existing(&self, id: &str) -> BackendResult<Vec<Assoc>> {
        let rows = self.assocs(&[id.to_owned()]).await?;
        if Self::account_row(&rows, id).is_none() {
            return Err(BackendError::resource_not_found(id));
        }
        Ok(rows)
    }

    fn account_row<'a>(rows: &'a [Assoc], account: &str) -> Option<&'a Assoc> {
        rows.iter()
            .find(|a| a.account == account && a.user.is_empty())
    }

    async fn add_account(
        &self,
        name: &str,
        description: &str,
        organization: &str,
        parent: &str,
        limits: &BTreeMap<String, i64>,
    ) -> BackendResult<()> {
        let mut a = args![
            "add",
            "account",
            name,
            // An empty description makes sacctmgr fail ("Unspecified error").
            format!(
                "description={}",
                Some(names::description(description))
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| name.to_owned())
            ),
            format!("organization={organization}"),
            format!("parent={parent}")
        ];
        if !limits.is_empty() {
            a.push(format!("GrpTRESMins={}", join_tres(limits)));
        }
        match self.slurm.sacctmgr(a, true).await {
            Ok(_) => Ok(()),
            // Another process may have added it in the meantime (slurmdbd
            // answers a concurrent add with "Unspecified error"): if it
            // exists now under the wanted parent, that is success.
            Err(e) => match self.assocs(&[name.to_owned()]).await {
                Ok(rows) if Self::account_row(&rows, name).is_some_and(|r| r.parent == parent) => {
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// `modify account set <setting> where account=<account>`.
    async fn set_account(&self, account: &str, setting: String) -> BackendResult<()> {
        self.slurm
            .sacctmgr(
                args![
                    "modify",
                    "account",
                    "set",
                    setting,
                    "where",
                    format!("account={account}")
                ],
                true,
            )
            .await
            .map(drop)
    }

    /// The per-allocation QoS (`qos_management`): created once, made the
    /// account's default, extra QoS added to its list.
    async fn ensure_allocation_qos(&self, account: &str) -> BackendResult<()> {
        let q = &self.settings.qos_management;
        let shown = self
            .slurm
            .sacctmgr(args!["show", "qos", account, "format=name"], false)
            .await?;
        if !shown.lines().any(|l| l.trim() == account) {
            self.slurm
                .sacctmgr(
                    args!["add", "qos", account, "set", format!("flags={}", q.flags)],
                    true,
                )
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
                        .sacctmgr(
                            args!["modify", "qos", account, "set", format!("{name}={v}")],
                            true,
                        )
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

    /// Adds the users that are not members yet with one `add user`.
    async fn add_members(
        &self,
        account: &str,
        users: &[User],
        existing: &BTreeSet<String>,
        umask: Option<&str>,
    ) -> BackendResult<Vec<UserResult>> {
        self.add_members_with(account, users, existing, umask, None)
            .await
    }

    /// As [`Self::add_members`]; under QoS enforcement `attributes` (the
    /// resource's order form) may select the QoS and partition to grant.
    async fn add_members_with(
        &self,
        account: &str,
        users: &[User],
        existing: &BTreeSet<String>,
        umask: Option<&str>,
        attributes: Option<&JsonObject>,
    ) -> BackendResult<Vec<UserResult>> {
        let mut results = Vec::with_capacity(users.len());
        let mut to_add = Vec::new();
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
        if to_add.is_empty() {
            return Ok(results);
        }
        let mut a = args![
            "add",
            "user",
            to_add.join(","),
            format!("account={account}")
        ];
        match self.settings.default_account_policy {
            DefaultAccountPolicy::Common => {
                a.push(format!("DefaultAccount={}", self.settings.default_account))
            }
            DefaultAccountPolicy::Individual => a.push(format!("DefaultAccount={account}")),
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
        if let Err(e) = self.slurm.sacctmgr(a, true).await {
            // One command for all: its failure fails each user it carried.
            for r in results.iter_mut().filter(|r| to_add.contains(&r.username)) {
                r.outcome = Outcome::Failed(e.clone());
            }
            return Ok(results);
        }
        if self.settings.enable_user_homedir_account_creation {
            let umask = umask
                .unwrap_or(&self.settings.default_homedir_umask)
                .to_owned();
            for r in self.homedirs(to_add, &umask).await {
                if let Outcome::Failed(e) = &r.outcome {
                    tracing::warn!(user = %r.username, error = %e.message, "home directory not created");
                }
            }
        }
        Ok(results)
    }

    /// The allocation's shared directory; problems are logged, never fatal
    /// (the account matters more than its directory).
    async fn project_directory(&self, allocation: &str) {
        let d = &self.settings.project_directory;
        let path = format!("{}/{allocation}", d.base_path.trim_end_matches('/'));
        let group = match (&d.group_name, d.group_owner_source.as_str()) {
            (Some(g), source) if source != "project_id" => g.clone(),
            _ => allocation.to_owned(),
        };
        let mut steps = vec![
            ("mkdir", args!["-p", path]),
            ("chmod", args![d.permissions, path]),
        ];
        if d.set_gid {
            steps.push(("chmod", args!["g+s", path]));
        }
        for (program, step) in steps {
            if let Err(e) = self.slurm.exec(program, step).await {
                tracing::warn!(path, error = %e.message, "project directory not set up");
                return;
            }
        }
        if let Err(e) = self
            .slurm
            .exec("chown", args![format!("{}:{group}", d.owner), path])
            .await
        {
            tracing::warn!(path, error = %e.message, "project directory owner not set");
        }
        if d.set_acl {
            let acl = format!("group:{group}:rwx,d:group:{group}:rwx");
            if let Err(e) = self
                .slurm
                .exec("setfacl", args!["-R", "-m", acl, path])
                .await
            {
                tracing::warn!(path, error = %e.message, "project directory ACL not set");
            }
        }
    }

    /// Applies the home directory quota of a user; problems are logged.
    async fn homedir_quota(&self, user: &str, home: &str) {
        let Some(q) = &self.settings.homedir_quota else {
            return;
        };
        let commands: Vec<(&str, Vec<String>)> = match q.provider.as_str() {
            "ceph_xattr" => [
                ("ceph.quota.max_bytes", q.max_bytes),
                ("ceph.quota.max_files", q.max_files),
            ]
            .into_iter()
            .filter_map(|(attr, v)| v.map(|v| ("setfattr", args!["-n", attr, "-v", v, home])))
            .collect(),
            "xfs" => {
                let Some(mount) = &q.mount_point else {
                    tracing::info!(
                        user,
                        "homedir_quota.mount_point is not set: xfs quota skipped"
                    );
                    return;
                };
                let parts: Vec<String> = [
                    ("bsoft", &q.block_softlimit),
                    ("bhard", &q.block_hardlimit),
                    ("isoft", &q.inode_softlimit),
                    ("ihard", &q.inode_hardlimit),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
                if parts.is_empty() {
                    return;
                }
                vec![(
                    "xfs_quota",
                    args![
                        "-x",
                        "-c",
                        format!("limit -u {} {user}", parts.join(" ")),
                        mount
                    ],
                )]
            }
            _ => {
                let Some(mount) = &q.mount_point else {
                    tracing::info!(
                        user,
                        "homedir_quota.mount_point is not set: lustre quota skipped"
                    );
                    return;
                };
                let mut a = args!["setquota", "-u", user];
                for (flag, v) in [
                    ("-b", &q.block_softlimit),
                    ("-B", &q.block_hardlimit),
                    ("-i", &q.inode_softlimit),
                    ("-I", &q.inode_hardlimit),
                ] {
                    if let Some(v) = v {
                        a.push(flag.to_owned());
                        a.push(v.clone());
                    }
                }
                a.push(mount.clone());
                vec![("lfs", a)]
            }
        };
        for (program, a) in commands {
            if let Err(e) = self.slurm.exec(program, a).await {
                tracing::warn!(user, error = %e.message, "home directory quota not applied");
            }
        }
    }

    async fn homedirs(&self, usernames: Vec<String>, umask: &str) -> Vec<UserResult> {
        let mut out = Vec::with_capacity(usernames.len());
        for user in usernames {
            if !names::valid_user(&user) {
                out.push(UserResult::failed(
                    &user,
                    BackendError::invalid_field("usernames", "not a valid local username"),
                ));
                continue;
            }
            let existing = match &self.settings.homedir_base_path {
                Some(base) => std::path::Path::new(base).join(&user).is_dir(),
                None => home_of(&user).is_some_and(|h| std::path::Path::new(&h).is_dir()),
            };
            if existing {
                out.push(UserResult::unchanged(&user));
                continue;
            }
            match self
                .slurm
                .exec("/sbin/mkhomedir_helper", args![user, umask])
                .await
            {
                Ok(_) => {
                    let home = match &self.settings.homedir_base_path {
                        Some(base) => Some(format!("{}/{user}", base.trim_end_matches('/'))),
                        None => home_of(&user),
                    };
                    if let Some(home) = home {
                        self.homedir_quota(&user, &home).await;
                    }
                    out.push(UserResult::applied(&user));
                }
                Err(e) => out.push(UserResult::failed(&user, e)),
            }
        }
        out
    }

    fn month_window(&self, query: &UsageQuery) -> BackendResult<(String, String)> {
        let tz = match &query.timezone {
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                BackendError::invalid_field(
                    "timezone",
                    format!("{name:?} is not an IANA time zone"),
                )
            })?,
            None => jiff::tz::TimeZone::UTC,
        };
        let (year, month) = match query.period {
            Some(p) => (p.year as i16, p.month as i8),
            None => {
                let now = jiff::Timestamp::now().to_zoned(tz);
                (now.year(), now.month())
            }
        };
        let first = jiff::civil::Date::new(year, month, 1)
            .map_err(|e| BackendError::invalid_field("period", e.to_string()))?;
        Ok((
            format!("{first}T00:00:00"),
            format!("{}T23:59:59", first.last_of_month()),
        ))
    }
}

/// A backend id from a request about an existing resource: a name SLURM
/// could not hold cannot exist, so it is RESOURCE_NOT_FOUND.
fn account_id(backend_id: &str) -> BackendResult<String> {
    checked_account("backend_id", backend_id.to_owned())
        .map_err(|_| BackendError::resource_not_found(backend_id))
}

fn checked_account(field: &str, name: String) -> BackendResult<String> {
    let name = name.to_lowercase();
    if names::valid_account(&name) {
        Ok(name)
    } else {
        Err(BackendError::invalid_field(
            field,
            format!("{name:?} is not a valid SLURM account name"),
        ))
    }
}

/// Months a prepaid resource runs: whole calendar months from creation to
/// end, one more when the end day is later in its month, at least 1; 1 when
/// either date is unknown (backends spec §2.7).
pub fn prepaid_months(resource: Option<&ResourceContext>) -> i64 {
    let date = |t: std::time::SystemTime| {
        let ts = jiff::Timestamp::try_from(t).ok()?;
        Some(ts.to_zoned(jiff::tz::TimeZone::UTC).date())
    };
    let Some(r) = resource else { return 1 };
    let (Some(c), Some(e)) = (r.created.and_then(date), r.end_date.and_then(date)) else {
        return 1;
    };
    let months = (i64::from(e.year()) - i64::from(c.year())) * 12 + i64::from(e.month())
        - i64::from(c.month())
        + i64::from(e.day() > c.day());
    months.max(1)
}

/// Splits ids into comma-joined chunks of at most ~100 KB: one argument may
/// not exceed Linux's 128 KiB (MAX_ARG_STRLEN), and SPEC allows 10,000 ids.
fn chunks(ids: &[String]) -> Vec<String> {
    const MAX: usize = 100_000;
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for id in ids {
        if !current.is_empty() && current.len() + id.len() + 1 > MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn join_tres(limits: &BTreeMap<String, i64>) -> String {
    limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The home directory of a local user, from /etc/passwd.
fn home_of(user: &str) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 5).then(|| f[5].to_owned())
    })
}

#[cfg(test)]
mod tests;

#[async_trait::async_trait]
impl Backend for SlurmBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: TYPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor_version: None,
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        let mut caps = vec![
            Resources,
            ListResources,
            ResourceLimits,
            UserLimits,
            Metadata,
            Membership,
            HomeDirectories,
            UsageReport,
            HistoricalUsage,
            Diagnostics,
            ProjectSync,
        ];
        if self.settings.periodic_limits.enabled {
            caps.push(PeriodicSettings);
        }
        if self.settings.qos_paused.is_some() || self.settings.qos_enforced() {
            caps.push(Pause);
        }
        if self.settings.qos_downscaled.is_some() || self.settings.qos_enforced() {
            caps.push(Downscale);
        }
        caps
    }

    async fn probe(&self) -> BackendResult<Probe> {
        match self
            .slurm
            .sacctmgr(args!["show", "cluster", "format=cluster"], false)
            .await
        {
            Ok(_) => Ok(Probe::ready()),
            Err(e) => Ok(Probe::not_ready(e.message)),
        }
    }

    async fn components(&self) -> BackendResult<Vec<Component>> {
        Ok(self.components.clone())
    }

    fn generate_backend_id(
        &self,
        base_name: &str,
        _resource: Option<&ResourceContext>,
    ) -> BackendResult<String> {
        checked_account(
            "base_name",
            format!("{}{}", self.settings.allocation_prefix, base_name),
        )
    }

    async fn diagnostics(&self) -> BackendResult<Diagnostics> {
        let mut d = Diagnostics::default();
        let mut check = |name: &str, ok: bool, message: String| {
            d.checks.push(DiagnosticCheck {
                name: name.into(),
                status: if ok {
                    CheckStatus::Ok
                } else {
                    CheckStatus::Failed
                },
                message,
            });
        };
        match self.slurm.version().await {
            Ok(v) => check("slurm_version", true, v),
            Err(e) => check("slurm_version", false, e.message),
        }
        let wanted = [
            self.settings.default_account.clone(),
            self.settings.root_account().to_owned(),
        ];
        match self.assocs(&wanted).await {
            Ok(rows) => {
                for a in &wanted {
                    let ok = Self::account_row(&rows, a).is_some();
                    check(
                        &format!("account_{a}"),
                        ok,
                        if ok {
                            "exists".into()
                        } else {
                            format!("account {a} is missing: create it or fix the settings")
                        },
                    );
                }
            }
            Err(e) => check("accounting", false, e.message),
        }
        let tres = self.cluster_tres().await;
        for key in self.settings.components.keys() {
            check(
                &format!("tres_{key}"),
                tres.is_empty() || tres.contains(key),
                format!("component {key} against the cluster's TRES"),
            );
        }
        d.info.insert(
            "cluster".into(),
            self.settings.cluster_name.clone().unwrap_or_default(),
        );
        d.info.insert(
            "tres".into(),
            tres.iter().cloned().collect::<Vec<_>>().join(","),
        );
        Ok(d)
    }

    async fn create_resource(&self, req: CreateResource) -> BackendResult<Created> {
        let alloc = checked_account("backend_id", req.backend_id.clone())?;
        // Customer and project accounts are shared: a create and a delete of
        // the same project must not interleave (see `hierarchy`).
        let _hierarchy = self.hierarchy.lock().await;
        let customer = self.customer_account(&req.resource)?;
        let project = self.project_account(&req.resource)?;
        let mut wanted: Vec<String> = customer.iter().cloned().collect();
        wanted.push(project.clone());
        wanted.push(alloc.clone());
        let existing = self.assocs(&wanted).await?;
        let limits = self
            .backend_limits(&req.limits, true, Some(&req.resource))
            .await;

        match Self::account_row(&existing, &alloc) {
            Some(row) if row.parent != project => {
                return Err(BackendError::already_exists(
                    &alloc,
                    &format!("it belongs to {}", row.parent),
                ));
            }
            Some(row) => {
                // Same resource: bring the limits to the requested state.
                let current: BTreeMap<String, i64> = tres(&row.grp_tres_mins)
                    .into_iter()
                    .map(|(k, v)| (k.clone(), limit_value(&k, &v) as i64))
                    .collect();
                if !limits.is_empty() && limits.iter().any(|(k, v)| current.get(k) != Some(v)) {
                    self.slurm
                        .sacctmgr(
                            args![
                                "modify",
                                "account",
                                alloc,
                                "set",
                                format!("GrpTRESMins={}", join_tres(&limits))
                            ],
                            true,
                        )
                        .await?;
                }
            }
            None => {
                if let Some(c) = &customer
                    && Self::account_row(&existing, c).is_none()
                {
                    self.add_account(
                        c,
                        &req.resource.customer_name,
                        c,
                        self.settings.root_account(),
                        &BTreeMap::new(),
                    )
                    .await?;
                }
                if Self::account_row(&existing, &project).is_none() {
                    let parent = customer
                        .clone()
                        .or_else(|| self.settings.parent_account.clone())
                        .unwrap_or_default();
                    self.add_account(
                        &project,
                        &req.resource.project_name,
                        &project,
                        &parent,
                        &BTreeMap::new(),
                    )
                    .await?;
                }
                self.add_account(&alloc, &req.resource.name, &project, &project, &limits)
                    .await?;
            }
        }
        let members: BTreeSet<String> = existing
            .iter()
            .filter(|a| a.account == alloc && !a.user.is_empty())
            .map(|a| a.user.clone())
            .collect();
        if self.settings.qos_management.enabled {
            self.ensure_allocation_qos(&alloc).await?;
        }
        if self.settings.project_directory.enabled {
            self.project_directory(&alloc).await;
        }
        let user_results = self
            .add_members_with(
                &alloc,
                &req.users,
                &members,
                req.homedir_umask.as_deref(),
                Some(&req.resource.attributes),
            )
            .await?;
        let mut users: BTreeSet<String> = members;
        users.extend(
            user_results
                .iter()
                .filter(|r| r.outcome == Outcome::Applied)
                .map(|r| r.username.clone()),
        );
        // Waldur-unit limits as requested, plus the fixed limits of
        // usage-type components (the original's `_collect_resource_limits`).
        let mut waldur_limits = req.limits.clone();
        for (key, c) in &self.settings.components {
            if c.accounting_type == "usage"
                && let Some(l) = c.limit
            {
                waldur_limits.insert(key.clone(), l as i64);
            }
        }
        Ok(Created {
            resource: ResourceInfo {
                backend_id: alloc,
                parent_id: project,
                description: names::description(&req.resource.name),
                limits: waldur_limits,
                users: users.into_iter().collect(),
                ..ResourceInfo::default()
            },
            ready: true,
            operation_id: None,
            user_results,
        })
    }

    async fn get_resource(&self, backend_id: &str) -> BackendResult<ResourceInfo> {
        let id = account_id(backend_id)?;
        let rows = self.assocs(std::slice::from_ref(&id)).await?;
        let row = Self::account_row(&rows, &id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        let mut metadata = JsonObject::new();
        metadata.insert("qos".into(), row.qos.clone().into());
        Ok(ResourceInfo {
            backend_id: id.clone(),
            parent_id: row.parent.clone(),
            limits: self.waldur_limits(&row.grp_tres_mins),
            metadata,
            access: self.access_of(&row.qos),
            users: rows
                .iter()
                .filter(|a| a.account == id && !a.user.is_empty())
                .map(|a| a.user.clone())
                .collect(),
            ..ResourceInfo::default()
        })
    }

    async fn list_resources(&self, page: PageRequest) -> BackendResult<Page> {
        let out = self
            .slurm
            .sacctmgr(args!["list", "account", "format=account,descr,org"], false)
            .await?;
        let mut all: Vec<ResourceInfo> = rows(&out)
            .into_iter()
            .filter(|r| r.len() >= 3)
            .map(|r| ResourceInfo {
                backend_id: r[0].to_lowercase(),
                description: r[1].to_owned(),
                parent_id: r[2].to_lowercase(),
                ..ResourceInfo::default()
            })
            // Allocation accounts carry their project as organisation; the
            // hierarchy's own accounts are their own organisation.
            .filter(|r| {
                r.backend_id != r.parent_id
                    && r.backend_id
                        .starts_with(&self.settings.allocation_prefix.to_lowercase())
            })
            .filter(|r| page.parent_id.as_ref().is_none_or(|p| &r.parent_id == p))
            .collect();
        all.sort_by(|a, b| a.backend_id.cmp(&b.backend_id));
        let after = page.page_token.unwrap_or_default();
        let size = if page.page_size == 0 {
            500
        } else {
            page.page_size
        };
        let mut rest = all.into_iter().filter(|r| r.backend_id > after);
        let resources: Vec<ResourceInfo> = rest.by_ref().take(size).collect();
        let next_page_token = if rest.next().is_some() {
            resources.last().map(|r| r.backend_id.clone())
        } else {
            None
        };
        Ok(Page {
            resources,
            next_page_token,
        })
    }

    async fn delete_resource(&self, req: DeleteResource) -> BackendResult<Deleted> {
        let Ok(id) = checked_account("backend_id", req.backend_id.clone()) else {
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: false,
            });
        };
        let rows = self.assocs(std::slice::from_ref(&id)).await?;
        let Some(row) = Self::account_row(&rows, &id).cloned() else {
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: false,
            });
        };
        let soft = match req.mode {
            DeletionMode::Soft => true,
            DeletionMode::Hard => false,
            DeletionMode::Unspecified => self.settings.soft_delete,
        };
        let has_users = rows.iter().any(|a| a.account == id && !a.user.is_empty());
        // Both modes stop the work first: cancel jobs, drop the members.
        if has_users {
            if let Err(e) = self.slurm.scancel(args!["-A", id, "-f"]).await {
                tracing::warn!(account = %id, error = %e.message, "cancelling jobs before deletion failed");
            }
            self.slurm
                .sacctmgr(
                    args!["remove", "user", "where", format!("account={id}")],
                    true,
                )
                .await?;
        }
        if soft {
            let known = self.cluster_tres().await;
            let zeros: BTreeMap<String, i64> = self
                .usage_tres()
                .into_iter()
                .filter(|k| known.is_empty() || known.contains(*k))
                .map(|k| (k.to_owned(), 0))
                .collect();
            self.slurm
                .sacctmgr(
                    args![
                        "modify",
                        "account",
                        id,
                        "set",
                        format!("GrpTRESMins={}", join_tres(&zeros))
                    ],
                    true,
                )
                .await?;
            return Ok(Deleted {
                ready: true,
                operation_id: None,
                existed: true,
            });
        }
        self.slurm
            .sacctmgr(
                args!["remove", "account", "where", format!("name={id}")],
                true,
            )
            .await?;
        if self.settings.qos_management.enabled
            && let Err(e) = self
                .slurm
                .sacctmgr(args!["remove", "qos", "where", format!("name={id}")], true)
                .await
        {
            tracing::warn!(qos = %id, error = %e.message, "allocation QoS not removed");
        }
        let _hierarchy = self.hierarchy.lock().await;
        // Remove the project account once its last allocation is gone.
        let project = row.parent.clone();
        let is_project = self.settings.parent_account.as_deref() != Some(project.as_str())
            && project != self.settings.root_account()
            && !project.is_empty();
        if is_project {
            let out = self
                .slurm
                .sacctmgr(
                    args![
                        "list",
                        "account",
                        "format=account,org",
                        "where",
                        format!("organizations={project}")
                    ],
                    false,
                )
                .await?;
            let children = parse::rows(&out)
                .into_iter()
                .filter(|r| r.first().is_some_and(|a| a.to_lowercase() != project))
                .count();
            if children == 0 {
                self.slurm
                    .sacctmgr(
                        args!["remove", "account", "where", format!("name={project}")],
                        true,
                    )
                    .await?;
            }
        }
        Ok(Deleted {
            ready: true,
            operation_id: None,
            existed: true,
        })
    }

    async fn sync_resource_project(
        &self,
        backend_id: &str,
        resource: ResourceContext,
    ) -> BackendResult<bool> {
        let id = checked_account("backend_id", backend_id.to_owned())?;
        let customer = self.customer_account(&resource)?;
        let project = self.project_account(&resource)?;
        let mut wanted: Vec<String> = customer.iter().cloned().collect();
        wanted.push(project.clone());
        wanted.push(id.clone());
        let rows = self.assocs(&wanted).await?;
        let row = Self::account_row(&rows, &id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?
            .clone();
        let mut changed = false;
        if let Some(c) = &customer
            && Self::account_row(&rows, c).is_none()
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
        match Self::account_row(&rows, &project) {
            None => {
                let parent = customer
                    .clone()
                    .or_else(|| self.settings.parent_account.clone())
                    .unwrap_or_default();
                self.add_account(
                    &project,
                    &resource.project_name,
                    &project,
                    &parent,
                    &BTreeMap::new(),
                )
                .await?;
            }
            Some(p) => {
                if let Some(c) = &customer
                    && &p.parent != c
                {
                    self.slurm
                        .sacctmgr(
                            args![
                                "modify",
                                "account",
                                "where",
                                format!("name={project}"),
                                "set",
                                format!("parent={c}")
                            ],
                            true,
                        )
                        .await?;
                    changed = true;
                }
            }
        }
        if row.parent != project {
            self.slurm
                .sacctmgr(
                    args![
                        "modify",
                        "account",
                        "where",
                        format!("name={id}"),
                        "set",
                        format!("parent={project}"),
                        format!("organization={project}")
                    ],
                    true,
                )
                .await?;
            changed = true;
        }
        Ok(changed)
    }

    async fn set_resource_limits(
        &self,
        backend_id: &str,
        limits: Limits,
        resource: Option<ResourceContext>,
    ) -> BackendResult<LimitsApplied> {
        let id = account_id(backend_id)?;
        self.existing(&id).await?;
        let mut backend = self.backend_limits(&limits, false, resource.as_ref()).await;
        // Full state: configured components left out are cleared (-1).
        // Full state: usage-type components keep their configured fixed
        // limit; other TRES left out are cleared (-1).
        let mut fixed = Limits::new();
        for (key, c) in &self.settings.components {
            if c.accounting_type == "usage"
                && !limits.contains_key(key)
                && let Some(l) = c.limit
            {
                fixed.insert(key.clone(), l as i64);
            }
        }
        for (k, v) in self.backend_limits(&fixed, false, resource.as_ref()).await {
            backend.entry(k).or_insert(v);
        }
        let known = self.cluster_tres().await;
        for key in self.usage_tres() {
            if !backend.contains_key(key) && (known.is_empty() || known.contains(key)) {
                backend.insert(key.to_owned(), -1);
            }
        }
        self.slurm
            .sacctmgr(
                args![
                    "modify",
                    "account",
                    id,
                    "set",
                    format!("GrpTRESMins={}", join_tres(&backend))
                ],
                true,
            )
            .await?;
        let applied = limits
            .into_iter()
            .filter(|(k, _)| backend.get(k).is_some_and(|v| *v >= 0))
            .collect();
        Ok(LimitsApplied {
            limits: applied,
            ready: true,
            operation_id: None,
        })
    }

    async fn get_resource_limits(&self, backend_id: &str) -> BackendResult<Limits> {
        Ok(self.get_resource(backend_id).await?.limits)
    }

    async fn set_user_limits(
        &self,
        backend_id: &str,
        username: &str,
        limits: Limits,
    ) -> BackendResult<()> {
        let id = account_id(backend_id)?;
        if !names::valid_user(username) {
            return Err(BackendError::invalid_field(
                "username",
                "is not a valid local username",
            ));
        }
        let rows = self.existing(&id).await?;
        if !rows.iter().any(|a| a.account == id && a.user == username) {
            return Err(BackendError::invalid_field(
                "username",
                format!("{username} is not a member of {id}"),
            ));
        }
        let mut backend = self.backend_limits(&limits, false, None).await;
        for key in self.usage_tres() {
            backend.entry(key.to_owned()).or_insert(-1);
        }
        let known = self.cluster_tres().await;
        backend.retain(|k, _| known.is_empty() || known.contains(k));
        self.slurm
            .sacctmgr(
                args![
                    "modify",
                    "user",
                    username,
                    "where",
                    format!("account={id}"),
                    "set",
                    format!("MaxTRESMins={}", join_tres(&backend))
                ],
                true,
            )
            .await
            .map(drop)
    }

    async fn get_user_limits(&self, backend_id: &str) -> BackendResult<BTreeMap<String, Limits>> {
        let id = account_id(backend_id)?;
        let out = self
            .slurm
            .sacctmgr(
                args![
                    "show",
                    "association",
                    "where",
                    format!("accounts={id}"),
                    "format=Account,User,MaxTRESMins"
                ],
                false,
            )
            .await?;
        let rows = rows(&out);
        if rows.is_empty() {
            return Err(BackendError::resource_not_found(backend_id));
        }
        Ok(rows
            .into_iter()
            .filter(|r| r.len() >= 3 && !r[1].is_empty())
            .map(|r| (r[1].to_owned(), self.waldur_limits(r[2])))
            .filter(|(_, l)| !l.is_empty())
            .collect())
    }

    async fn set_resource_access(
        &self,
        backend_id: &str,
        access: AccessLevel,
    ) -> BackendResult<bool> {
        let id = account_id(backend_id)?;
        if self.settings.qos_enforced() {
            // Enforcement model: never touch QoS lists, block submission.
            self.existing(&id).await?;
            let value = if access == AccessLevel::Full {
                "-1"
            } else {
                "0"
            };
            let out = self
                .slurm
                .sacctmgr(
                    args![
                        "show",
                        "assoc",
                        "where",
                        format!("accounts={id}"),
                        "format=account,user,grpsubmit"
                    ],
                    false,
                )
                .await?;
            let current = parse::rows(&out)
                .into_iter()
                .find(|r| r.first() == Some(&id.as_str()) && r.get(1).is_some_and(|u| u.is_empty()))
                .and_then(|r| r.get(2).map(|v| v.to_string()))
                .unwrap_or_default();
            let wanted_now = if value == "-1" {
                current.is_empty()
            } else {
                current == value
            };
            if wanted_now {
                return Ok(false);
            }
            self.slurm
                .sacctmgr(
                    args![
                        "modify",
                        "account",
                        id,
                        "set",
                        format!("GrpSubmitJobs={value}")
                    ],
                    true,
                )
                .await?;
            return Ok(true);
        }
        let target = match access {
            AccessLevel::Paused => self.settings.qos_paused.clone(),
            AccessLevel::Downscaled => self.settings.qos_downscaled.clone(),
            _ => Some(self.settings.qos_default.clone()),
        }
        .ok_or_else(|| BackendError::unimplemented("SetResourceAccess"))?;
        let rows = self.assocs(std::slice::from_ref(&id)).await?;
        let row = Self::account_row(&rows, &id)
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        if row.qos == target {
            return Ok(false);
        }
        self.slurm
            .sacctmgr(
                args!["modify", "account", id, "set", format!("qos={target}")],
                true,
            )
            .await?;
        Ok(true)
    }

    async fn get_resource_metadata(&self, backend_id: &str) -> BackendResult<JsonObject> {
        Ok(self.get_resource(backend_id).await?.metadata)
    }

    async fn add_users(
        &self,
        backend_id: &str,
        users: Vec<User>,
        homedir_umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let id = account_id(backend_id)?;
        let rows = self.existing(&id).await?;
        let members = rows
            .iter()
            .filter(|a| a.account == id && !a.user.is_empty())
            .map(|a| a.user.clone())
            .collect();
        self.add_members(&id, &users, &members, homedir_umask.as_deref())
            .await
    }

    async fn remove_users(
        &self,
        backend_id: &str,
        usernames: Vec<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let id = account_id(backend_id)?;
        let rows = self.existing(&id).await?;
        let members: BTreeSet<&str> = rows
            .iter()
            .filter(|a| a.account == id && !a.user.is_empty())
            .map(|a| a.user.as_str())
            .collect();
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
                .sacctmgr(
                    args![
                        "remove",
                        "user",
                        "where",
                        format!("name={}", present.join(",")),
                        format!("account={id}")
                    ],
                    true,
                )
                .await
            {
                failure = Some(e);
            }
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

    async fn list_resource_users(&self, backend_ids: &[String]) -> BackendResult<ResourceUsers> {
        let valid: Vec<String> = backend_ids
            .iter()
            .filter(|i| names::valid_account(i))
            .cloned()
            .collect();
        let rows = if valid.is_empty() {
            Vec::new()
        } else {
            self.assocs(&valid).await?
        };
        let mut out = ResourceUsers::default();
        for id in backend_ids {
            if Self::account_row(&rows, id).is_some() {
                let users = rows
                    .iter()
                    .filter(|a| &a.account == id && !a.user.is_empty())
                    .map(|a| a.user.clone())
                    .collect();
                out.found.insert(id.clone(), users);
            } else {
                out.missing.push(id.clone());
            }
        }
        Ok(out)
    }

    async fn create_home_directories(
        &self,
        usernames: Vec<String>,
        umask: Option<String>,
    ) -> BackendResult<Vec<UserResult>> {
        let umask = umask.unwrap_or_else(|| self.settings.default_homedir_umask.clone());
        Ok(self.homedirs(usernames, &umask).await)
    }

    async fn usage_report(&self, query: UsageQuery) -> BackendResult<Vec<ResourceUsage>> {
        let ids: Vec<String> = query
            .backend_ids
            .iter()
            .filter(|i| names::valid_account(i))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (start, end) = self.month_window(&query)?;
        let mut out = String::new();
        for chunk in chunks(&ids) {
            out.push_str(
                &self
                    .slurm
                    .sacct(args![
                        "--noconvert",
                        "--truncate",
                        "--allocations",
                        "--allusers",
                        format!("--starttime={start}"),
                        format!("--endtime={end}"),
                        format!("--accounts={chunk}"),
                        "--format=Account,ReqTRES,Elapsed,User"
                    ])
                    .await?,
            );
        }
        let raw = parse::sacct_usage(&out, &self.usage_tres());
        let keys = self.usage_keys();
        Ok(ids
            .iter()
            .map(|id| {
                let users: BTreeMap<String, Amounts> = raw
                    .get(id)
                    .map(|per_user| {
                        per_user
                            .iter()
                            .map(|(user, tres)| (user.clone(), self.waldur_usage(tres)))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut usage = ResourceUsage::from_users(id.clone(), keys.iter().copied(), users);
                // The total is the sum of the rounded user amounts, rounded
                // once more so float noise does not show in Waldur.
                for v in usage.total.values_mut() {
                    *v = round2(*v);
                }
                usage
            })
            .collect())
    }

    async fn apply_periodic_settings(
        &self,
        backend_id: &str,
        settings: JsonObject,
    ) -> BackendResult<Vec<String>> {
        if !self.settings.periodic_limits.enabled {
            return Err(BackendError::unimplemented("ApplyPeriodicSettings"));
        }
        let id = account_id(backend_id)?;
        let out = self
            .slurm
            .sacctmgr(
                args![
                    "show",
                    "assoc",
                    "where",
                    format!("accounts={id}"),
                    "format=account,user,fairshare,grptresmins,maxtresmins,grptres"
                ],
                false,
            )
            .await?;
        let rows = rows(&out);
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&id.as_str()) && r.get(1).is_some_and(|u| u.is_empty()))
            .ok_or_else(|| BackendError::resource_not_found(backend_id))?;
        let mut actions = Vec::new();
        // 1. fairshare, when given and not zero.
        if let Some(fs) = settings
            .get("fairshare")
            .and_then(serde_json::Value::as_f64)
            .filter(|f| *f != 0.0)
        {
            let current: i64 = row.get(2).and_then(|v| v.parse().ok()).unwrap_or(-1);
            if current != fs as i64 {
                self.slurm
                    .sacctmgr(
                        args![
                            "modify",
                            "account",
                            id,
                            "set",
                            format!("fairshare={}", fs as i64)
                        ],
                        true,
                    )
                    .await?;
                actions.push(format!("set fairshare={} on {id}", fs as i64));
            }
        }
        // 2. limits: grp_tres_mins, or max_tres_mins when that is empty, of
        //    the payload's limit type (or the configured one); one modify per
        //    TRES whose value differs.
        let pick = |key: &str| {
            settings
                .get(key)
                .and_then(serde_json::Value::as_object)
                .filter(|m| !m.is_empty())
        };
        if let Some(limits) = pick("grp_tres_mins").or_else(|| pick("max_tres_mins")) {
            let limit_type = settings
                .get("limit_type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&self.settings.periodic_limits.limit_type)
                .to_owned();
            let column = match limit_type.as_str() {
                "GrpTRESMins" => 3,
                "MaxTRESMins" => 4,
                "GrpTRES" => 5,
                other => {
                    return Err(BackendError::invalid_field(
                        "settings.limit_type",
                        format!("{other:?} is not GrpTRESMins, MaxTRESMins or GrpTRES"),
                    ));
                }
            };
            let current = tres(row.get(column).copied().unwrap_or(""));
            for (k, v) in limits {
                let Some(target) = v.as_f64().map(|v| v as i64) else {
                    continue;
                };
                if !names::valid_account(&k.replace('/', "")) {
                    return Err(BackendError::invalid_field(
                        "settings",
                        format!("{k:?} is not a TRES name"),
                    ));
                }
                if current.get(k).map(|c| limit_value(k, c) as i64) != Some(target) {
                    self.slurm
                        .sacctmgr(
                            args![
                                "modify",
                                "account",
                                id,
                                "set",
                                format!("{limit_type}={k}={target}")
                            ],
                            true,
                        )
                        .await?;
                    actions.push(format!("set {limit_type}={k}={target} on {id}"));
                }
            }
        }
        // 3. RawUsage reset: always, when asked.
        if settings
            .get("reset_raw_usage")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            self.slurm
                .sacctmgr(args!["modify", "account", id, "set", "RawUsage=0"], true)
                .await?;
            actions.push(format!("reset RawUsage on {id}"));
        }
        Ok(actions)
    }
}
