//! Settings of the SLURM backend (an instance's `settings:` block), named as
//! the original agent's `backend_settings`: the account tree and its
//! prefixes, components and their TRES mapping, QoS (swap or per-association
//! enforcement, a QoS per allocation), project directories, home directories
//! and their quotas, periodic settings, and who owns which account. Unknown
//! keys are rejected, so a setting of the original that this backend does
//! not implement fails loudly at start instead of being silently ignored.

use std::collections::BTreeMap;
use waldur_backend_sdk::SettingError;
use waldur_backend_sdk::component::ComponentFields;

use serde::Deserialize;

/// One component: a SLURM TRES (`cpu`, `mem`, `gres/gpu` ...) sold in Waldur.
///
/// Besides its own keys it takes Waldur's optional component fields
/// (bounds, article code, prepaid durations ...), which `load-components`
/// publishes unchanged. Unknown keys are refused at parse time (serde's
/// `deny_unknown_fields` cannot be combined with a flattened struct, so
/// they are gathered in `unknown` and checked in [`SlurmSettings::parse`]).
#[derive(Debug, Clone, Deserialize)]
pub struct ComponentSettings {
    /// Display name in Waldur.
    pub label: String,
    /// Display unit in Waldur (`k-Hours`).
    pub measured_unit: String,
    /// Waldur value × unit_factor = TRES-minutes (mem: MB-minutes).
    #[serde(default = "one")]
    pub unit_factor: f64,
    /// How Waldur bills it.
    pub accounting_type: Accounting,
    /// Default limit in Waldur units (usage components: the fixed limit).
    #[serde(default)]
    pub limit: Option<f64>,
    /// Map this Waldur component onto other TRES with factors (the
    /// original's ComponentMapper); the factor includes the unit scaling.
    #[serde(default)]
    pub target_components: BTreeMap<String, TargetComponent>,
    /// Waldur's optional component fields, passed through.
    #[serde(flatten)]
    pub waldur: ComponentFields,
    /// Keys that are neither; refused by [`SlurmSettings::parse`].
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// One target TRES of a mapped component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetComponent {
    /// Waldur value × factor = TRES-minutes of this TRES.
    #[serde(default = "one")]
    pub factor: f64,
}

fn one() -> f64 {
    1.0
}

/// Waldur's billing type of a component.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Accounting {
    /// Metered by usage; at creation the configured fixed limit applies.
    Usage,
    /// Billed by the limit the user set.
    Limit,
    /// Prepaid: the limit covers every month the resource runs.
    One,
}

/// Which filesystem a home directory quota is set on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuotaProvider {
    /// CephFS extended attributes (`setfattr`).
    CephXattr,
    /// XFS project quotas (`xfs_quota`).
    Xfs,
    /// Lustre (`lfs setquota`).
    Lustre,
}

/// The limit a periodic setting changes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum LimitType {
    /// `GrpTRESMins` of the account.
    #[serde(rename = "GrpTRESMins")]
    GrpTresMins,
    /// `MaxTRESMins` of the account.
    #[serde(rename = "MaxTRESMins")]
    MaxTresMins,
    /// `GrpTRES` of the account.
    #[serde(rename = "GrpTRES")]
    GrpTres,
}

impl LimitType {
    /// The sacctmgr name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GrpTresMins => "GrpTRESMins",
            Self::MaxTresMins => "MaxTRESMins",
            Self::GrpTres => "GrpTRES",
        }
    }
}

/// Who owns the group of a project directory.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupOwnerSource {
    /// A group named like the allocation account.
    #[default]
    ProjectId,
    /// `group_name` when it is set (any value other than `project_id`, as
    /// the original read it).
    #[serde(other)]
    GroupName,
}

/// What to do with an allocation-shaped account that carries no ownership
/// marker (an account the original Python agent created).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Adopt {
    /// Take it over at its first change when its name has the (non-empty)
    /// allocation prefix and it sits under an account with the project
    /// prefix that is also its organisation (the original's shape): the
    /// marker is written before that change.
    #[default]
    ByPrefix,
    /// Never: only `waldur-backend-server adopt` takes accounts over.
    Never,
}

/// Which accounts this backend may change.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Ownership {
    /// Unmarked allocation-shaped accounts.
    pub adopt_unmarked: Adopt,
}

/// Policy for users' `DefaultAccount=`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAccountPolicy {
    /// `DefaultAccount=<default_account>`.
    #[default]
    Common,
    /// `DefaultAccount=<the allocation account>`.
    Individual,
    /// No `DefaultAccount=`.
    None,
}

/// The settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// Users' default account (policy `common`).
    #[serde(default = "root")]
    pub default_account: String,
    /// DefaultAccount policy.
    #[serde(default)]
    pub default_account_policy: DefaultAccountPolicy,
    /// Parent of customer accounts (default: `default_account`).
    #[serde(default)]
    pub root_account: Option<String>,
    /// Prefix of customer accounts.
    #[serde(default)]
    pub customer_prefix: String,
    /// Prefix of project accounts.
    #[serde(default)]
    pub project_prefix: String,
    /// Prefix of allocation accounts (the id is lower-cased).
    #[serde(default)]
    pub allocation_prefix: String,
    /// Flat hierarchy: project accounts directly under this account.
    #[serde(default)]
    pub parent_account: Option<String>,
    /// Scope every cluster-bound command (`cluster=`, `--cluster=`).
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Directory of sacctmgr, sacct, scancel, sinfo (empty: PATH).
    #[serde(default = "bin_path")]
    pub slurm_bin_path: String,
    /// QoS restored by SetResourceAccess FULL.
    #[serde(default = "normal")]
    pub qos_default: String,
    /// QoS of a downscaled resource (DOWNSCALE advertised only when set).
    #[serde(default)]
    pub qos_downscaled: Option<String>,
    /// QoS of a paused resource (PAUSE advertised only when set).
    #[serde(default)]
    pub qos_paused: Option<String>,
    /// Partition of new user associations.
    #[serde(default)]
    pub default_partition: Option<String>,
    /// Terminate keeps the account with zero limits.
    #[serde(default)]
    pub soft_delete: bool,
    /// A POSIX group per allocation in an LDAP directory.
    #[serde(default)]
    pub ldap: Option<crate::ldap::LdapSettings>,
    /// Keep the association under `default_account` that `DefaultAccount=`
    /// made (policy `common`) when a user leaves their last allocation.
    /// By default it is removed with the last allocation's association, so
    /// a user Waldur no longer grants anything keeps nothing on the
    /// cluster; sites that want such users to stay set this to true.
    #[serde(default)]
    pub keep_default_association: bool,
    /// Create home directories for added users.
    #[serde(default = "yes")]
    pub enable_user_homedir_account_creation: bool,
    /// umask for mkhomedir_helper.
    #[serde(default = "umask")]
    pub default_homedir_umask: String,
    /// Base of home directories (an existing `<base>/<user>` is left alone).
    #[serde(default)]
    pub homedir_base_path: Option<String>,
    /// The components, by TRES name.
    pub components: BTreeMap<String, ComponentSettings>,
    /// A QoS per allocation, created with it.
    #[serde(default)]
    pub qos_management: QosManagement,
    /// Per-association QoS model instead of the
    /// QoS swap: pause and downscale set `GrpSubmitJobs=0`, restore `-1`,
    /// and users added at creation get the QoS the order selected
    /// (resource attribute `qos`, optional `partition`).
    #[serde(default)]
    pub qos_enforcement_enabled: bool,
    /// Whether enforcement applies to this offering once enabled. The
    /// offering's `plugin_options.enforce_qos` is not on the wire, so the
    /// operator states it here; unset means off.
    #[serde(default)]
    pub enforce_offering_qos: Option<bool>,
    /// Partitions granted to new user associations (`Partitions=`, sorted);
    /// the original took them from the offering (`enforce_offering_partitions`).
    #[serde(default)]
    pub partitions: Vec<String>,
    /// A shared directory per allocation.
    #[serde(default)]
    pub project_directory: ProjectDirectory,
    /// Quota on created home directories.
    #[serde(default)]
    pub homedir_quota: Option<HomedirQuota>,
    /// Periodic settings from Waldur's SLURM usage policies.
    #[serde(default)]
    pub periodic_limits: PeriodicLimits,
    /// Which accounts the backend acts on.
    #[serde(default)]
    pub ownership: Ownership,
    /// `sacctmgr` reads running at once (slurmdbd's load), however many
    /// requests arrive together. Writes are always one at a time.
    #[serde(default = "reads")]
    pub max_concurrent_reads: usize,
}

/// Periodic settings (`periodic_limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeriodicLimits {
    /// Accept ApplyPeriodicSettings (the capability is advertised only then).
    pub enabled: bool,
    /// Limit type when the payload names none.
    pub limit_type: LimitType,
}

impl Default for PeriodicLimits {
    fn default() -> Self {
        Self {
            enabled: false,
            limit_type: LimitType::GrpTresMins,
        }
    }
}

/// A shared project directory per allocation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectDirectory {
    /// Create it.
    pub enabled: bool,
    /// Parent directory.
    pub base_path: String,
    /// Owner user.
    pub owner: String,
    /// Octal mode.
    pub permissions: String,
    /// `chmod g+s`.
    pub set_gid: bool,
    /// Group ACL (`setfacl -R -m group:<g>:rwx,d:group:<g>:rwx`).
    pub set_acl: bool,
    /// Where the directory's group comes from.
    pub group_owner_source: GroupOwnerSource,
    /// Group when not taken from the allocation id.
    pub group_name: Option<String>,
    /// A Lustre project quota on the directory, keyed by its LDAP group's
    /// gidNumber (needs `ldap`).
    pub lustre_quota: Option<LustreQuota>,
}

/// `lfs setquota -p <gid>` limits of a project directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LustreQuota {
    /// The Lustre file system.
    #[serde(default = "valhalla")]
    pub mount_point: String,
    /// `-b`: block soft limit (`10T`, `500G`).
    #[serde(default)]
    pub block_softlimit: Option<String>,
    /// `-B`: block hard limit.
    #[serde(default)]
    pub block_hardlimit: Option<String>,
    /// `-i`: inode soft limit.
    #[serde(default)]
    pub inode_softlimit: Option<String>,
    /// `-I`: inode hard limit.
    #[serde(default)]
    pub inode_hardlimit: Option<String>,
}

fn valhalla() -> String {
    "/valhalla".into()
}

/// `lfs setquota` limit flags (`-b -B -i -I`) of the limits that are set:
/// block soft and hard, inode soft and hard, in that order.
pub(crate) fn lfs_limit_args(limits: [&Option<String>; 4]) -> Vec<String> {
    ["-b", "-B", "-i", "-I"]
        .into_iter()
        .zip(limits)
        .filter_map(|(flag, v)| v.as_ref().map(|v| [flag.to_owned(), v.clone()]))
        .flatten()
        .collect()
}

/// Refuses quota texts that could be read as more than a value by the
/// commands they reach (letters, digits, `/ _ - .` only; empty ones too
/// unless `allow_empty`).
fn check_quota_texts<'a>(
    key: &str,
    values: impl IntoIterator<Item = &'a String>,
    allow_empty: bool,
) -> Result<(), SettingError> {
    for v in values {
        if (v.is_empty() && !allow_empty)
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
        {
            return Err(SettingError::new(
                key,
                format!("{v:?} has characters that are not allowed"),
            ));
        }
    }
    Ok(())
}

impl LustreQuota {
    /// The two commands that put a directory under project `gid` with
    /// these limits: `lfs setquota -p` on the file system, then `lfs
    /// project -p -r -s` on the directory.
    pub fn commands(&self, gid: u32, path: &str) -> Vec<(&'static str, Vec<String>)> {
        let mut set = vec!["setquota".to_owned(), "-p".to_owned(), gid.to_string()];
        set.extend(lfs_limit_args([
            &self.block_softlimit,
            &self.block_hardlimit,
            &self.inode_softlimit,
            &self.inode_hardlimit,
        ]));
        set.push(self.mount_point.clone());
        let project = vec![
            "project".to_owned(),
            "-p".to_owned(),
            gid.to_string(),
            "-r".to_owned(),
            "-s".to_owned(),
            path.to_owned(),
        ];
        vec![("lfs", set), ("lfs", project)]
    }
}

impl Default for ProjectDirectory {
    fn default() -> Self {
        Self {
            enabled: false,
            base_path: "/valhalla/projects".into(),
            owner: "nobody".into(),
            permissions: "770".into(),
            set_gid: true,
            set_acl: true,
            group_owner_source: GroupOwnerSource::ProjectId,
            group_name: None,
            lustre_quota: None,
        }
    }
}

/// Quota on home directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomedirQuota {
    /// The filesystem kind.
    pub provider: QuotaProvider,
    /// ceph: `ceph.quota.max_bytes`.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// ceph: `ceph.quota.max_files`.
    #[serde(default)]
    pub max_files: Option<u64>,
    /// xfs and lustre: the filesystem.
    #[serde(default)]
    pub mount_point: Option<String>,
    /// Block soft limit (xfs `bsoft`, lustre `-b`).
    #[serde(default)]
    pub block_softlimit: Option<String>,
    /// Block hard limit.
    #[serde(default)]
    pub block_hardlimit: Option<String>,
    /// Inode soft limit.
    #[serde(default)]
    pub inode_softlimit: Option<String>,
    /// Inode hard limit.
    #[serde(default)]
    pub inode_hardlimit: Option<String>,
}

/// A QoS per allocation (`qos_management`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosManagement {
    /// Create the QoS.
    pub enabled: bool,
    /// QoS flags.
    pub flags: String,
    /// `GrpTRES` of the QoS, for example `cpu=64`.
    pub grp_tres: Option<String>,
    /// `MaxJobs`.
    pub max_jobs: Option<i64>,
    /// `MaxSubmit`.
    pub max_submit: Option<i64>,
    /// `MaxWall`, for example `2-00:00:00`.
    pub max_wall: Option<String>,
    /// `MinTRESPerJob`.
    pub min_tres_per_job: Option<String>,
    /// More QoS names added to the account's QoS list.
    pub additional_qos: Vec<String>,
}

impl Default for QosManagement {
    fn default() -> Self {
        Self {
            enabled: false,
            flags: "DenyOnLimit,NoDecay".into(),
            grp_tres: None,
            max_jobs: None,
            max_submit: None,
            max_wall: None,
            min_tres_per_job: None,
            additional_qos: Vec::new(),
        }
    }
}

/// Values that go into `sacctmgr` arguments: only these characters.
fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '=' | ',' | '/' | ':' | '-' | '_' | '.')
        })
}

fn reads() -> usize {
    crate::cli::DEFAULT_READS
}

fn root() -> String {
    "root".into()
}
fn bin_path() -> String {
    "/usr/bin".into()
}
fn normal() -> String {
    "normal".into()
}
fn yes() -> bool {
    true
}
fn umask() -> String {
    "0077".into()
}

impl SlurmSettings {
    /// Parses and checks settings.
    pub fn parse(value: serde_json::Value) -> Result<Self, SettingError> {
        let s: Self =
            serde_json::from_value(value).map_err(|e| SettingError::new("settings", e))?;
        if s.components.is_empty() {
            return Err(SettingError::new(
                "components",
                "configure at least one TRES component",
            ));
        }
        for (name, c) in &s.components {
            if let Some(key) = c.unknown.keys().next() {
                return Err(SettingError::new(
                    format!("components.{name}.{key}"),
                    "unknown field: a component takes label, measured_unit, unit_factor, \
                     accounting_type, limit, target_components and Waldur's component fields",
                ));
            }
            if let Err(why) = c.waldur.check() {
                return Err(SettingError::new(format!("components.{name}"), why));
            }
            // Prepaid is what accounting_type one means here: the limits
            // are multiplied by the months exactly for those components.
            if let Some(p) = c.waldur.is_prepaid
                && p != (c.accounting_type == Accounting::One)
            {
                return Err(SettingError::new(
                    format!("components.{name}.is_prepaid"),
                    "must match accounting_type (true exactly for one); leave it out",
                ));
            }
            if c.unit_factor <= 0.0 || !c.unit_factor.is_finite() {
                return Err(SettingError::new(
                    format!("components.{name}.unit_factor"),
                    "must be positive",
                ));
            }
            for (t, tc) in &c.target_components {
                if tc.factor <= 0.0 || !tc.factor.is_finite() {
                    return Err(SettingError::new(
                        format!("components.{name}.target_components.{t}.factor"),
                        "must be positive",
                    ));
                }
            }
        }
        if let Some(l) = &s.ldap {
            l.check()?;
        }
        match u32::from_str_radix(&s.default_homedir_umask, 8) {
            Ok(v) if v <= 0o777 => {}
            _ => {
                return Err(SettingError::new(
                    "default_homedir_umask",
                    format!("{:?} is not an octal umask", s.default_homedir_umask),
                ));
            }
        }
        for (key, name) in [
            ("default_account", Some(&s.default_account)),
            ("root_account", s.root_account.as_ref()),
            ("parent_account", s.parent_account.as_ref()),
            ("qos_default", Some(&s.qos_default)),
            ("qos_paused", s.qos_paused.as_ref()),
            ("qos_downscaled", s.qos_downscaled.as_ref()),
            ("default_partition", s.default_partition.as_ref()),
            ("cluster_name", s.cluster_name.as_ref()),
        ] {
            if let Some(n) = name
                && !crate::names::valid_account(n)
            {
                return Err(SettingError::new(
                    key,
                    format!("{n:?} is not a valid SLURM name"),
                ));
            }
        }
        for p in &s.partitions {
            if !crate::names::valid_account(p) {
                return Err(SettingError::new(
                    "partitions",
                    format!("{p:?} is not a valid partition name"),
                ));
            }
        }
        let d = &s.project_directory;
        if d.enabled {
            if !d.base_path.starts_with('/') || d.base_path.contains("..") {
                return Err(SettingError::new(
                    "project_directory.base_path",
                    "must be an absolute path without ..",
                ));
            }
            match u32::from_str_radix(&d.permissions, 8) {
                Ok(v) if v <= 0o7777 => {}
                _ => {
                    return Err(SettingError::new(
                        "project_directory.permissions",
                        format!("{:?} is not an octal mode", d.permissions),
                    ));
                }
            }
            for (key, v) in [
                ("owner", Some(&d.owner)),
                ("group_name", d.group_name.as_ref()),
            ] {
                if let Some(v) = v
                    && !crate::names::valid_user(v)
                {
                    return Err(SettingError::new(
                        format!("project_directory.{key}"),
                        format!("{v:?} is not a valid name"),
                    ));
                }
            }
        }
        if let Some(q) = &d.lustre_quota {
            if d.group_owner_source == GroupOwnerSource::GroupName {
                return Err(SettingError::new(
                    "project_directory.lustre_quota",
                    "needs group_owner_source: project_id (with one shared group every allocation would share one quota)",
                ));
            }
            if s.ldap.is_none() {
                return Err(SettingError::new(
                    "project_directory.lustre_quota",
                    "needs ldap: the quota is set on the gidNumber of the allocation's LDAP group",
                ));
            }
            check_quota_texts(
                "project_directory.lustre_quota",
                [
                    Some(&q.mount_point),
                    q.block_softlimit.as_ref(),
                    q.block_hardlimit.as_ref(),
                    q.inode_softlimit.as_ref(),
                    q.inode_hardlimit.as_ref(),
                ]
                .into_iter()
                .flatten(),
                false,
            )?;
        }
        if let Some(q) = &s.homedir_quota {
            check_quota_texts(
                "homedir_quota",
                [
                    &q.mount_point,
                    &q.block_softlimit,
                    &q.block_hardlimit,
                    &q.inode_softlimit,
                    &q.inode_hardlimit,
                ]
                .into_iter()
                .flatten(),
                true,
            )?;
        }
        let q = &s.qos_management;
        for (key, v) in [
            ("qos_management.flags", Some(&q.flags)),
            ("qos_management.grp_tres", q.grp_tres.as_ref()),
            ("qos_management.max_wall", q.max_wall.as_ref()),
            (
                "qos_management.min_tres_per_job",
                q.min_tres_per_job.as_ref(),
            ),
        ] {
            if let Some(v) = v
                && !valid_value(v)
            {
                return Err(SettingError::new(
                    key,
                    format!("{v:?} has characters sacctmgr values may not have"),
                ));
            }
        }
        for name in &q.additional_qos {
            if !crate::names::valid_account(name) {
                return Err(SettingError::new(
                    "qos_management.additional_qos",
                    format!("{name:?} is not a valid QoS name"),
                ));
            }
        }
        Ok(s)
    }

    /// True when the per-association QoS model applies.
    pub fn qos_enforced(&self) -> bool {
        self.qos_enforcement_enabled && self.enforce_offering_qos.unwrap_or(false)
    }

    /// Parent of customer accounts.
    pub fn root_account(&self) -> &str {
        self.root_account
            .as_deref()
            .unwrap_or(&self.default_account)
    }
}
