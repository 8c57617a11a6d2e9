//! A POSIX group per allocation in an LDAP directory (`ldap:` settings),
//! for sites whose file systems and login nodes take groups from LDAP: the
//! group is made with the allocation, its `memberUid`s follow the
//! allocation's associations, and it goes with the allocation. Its
//! `gidNumber` owns the allocation's project directory.
//!
//! Every change first makes sure the directory answers (connect and bind),
//! so a directory that is down answers UNAVAILABLE before SLURM is touched;
//! what one call cannot finish (the directory failing between the two
//! systems' writes) the caller's re-issue finishes, as every step is
//! idempotent. A group's gidNumber is the lowest free one in the range,
//! chosen under a lock of this process (two backend servers writing one
//! directory would need their own ranges).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use waldur_backend_sdk::secret::{ProcessEnv, Secret};
use waldur_backend_sdk::{BackendError, BackendResult, SettingError};

/// LDAP result codes the backend treats as "already so".
const NO_SUCH_OBJECT: u32 = 32;
const NO_SUCH_ATTRIBUTE: u32 = 16;
const VALUE_EXISTS: u32 = 20;
const ENTRY_EXISTS: u32 = 68;

/// The `ldap:` settings (names as the original agent's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub uri: String,
    /// DN to bind as; it must be allowed to write groups.
    pub bind_dn: String,
    /// File holding the bind password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Environment variable holding the bind password.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// The directory's suffix, `dc=example,dc=org`.
    pub base_dn: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub use_starttls: bool,
    /// Where groups live, relative to `base_dn`.
    #[serde(default = "groups_ou")]
    pub groups_ou: String,
    /// Lowest gidNumber given to a group.
    #[serde(default = "range_start")]
    pub gid_range_start: u32,
    /// Highest gidNumber given to a group.
    #[serde(default = "range_end")]
    pub gid_range_end: u32,
    /// Object classes of an allocation's group.
    #[serde(default = "group_classes")]
    pub project_group_object_classes: Vec<String>,
    /// Connect and operation timeout, seconds.
    #[serde(default = "timeout")]
    pub timeout_seconds: u64,
}

fn groups_ou() -> String {
    "ou=Groups".into()
}
fn range_start() -> u32 {
    10_000
}
fn range_end() -> u32 {
    65_000
}
fn group_classes() -> Vec<String> {
    vec!["posixGroup".into(), "top".into()]
}
fn timeout() -> u64 {
    10
}

impl LdapSettings {
    /// Why the settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), SettingError> {
        let at = |k: &str, m: &str| Err(SettingError::new(format!("ldap.{k}"), m.to_owned()));
        if !(self.uri.starts_with("ldap://") || self.uri.starts_with("ldaps://")) {
            return at("uri", "must start with ldap:// or ldaps://");
        }
        if self.use_starttls && self.uri.starts_with("ldaps://") {
            return at("use_starttls", "an ldaps:// connection is TLS already");
        }
        if self.bind_password_file.is_some() == self.bind_password_env.is_some() {
            return at(
                "bind_password_file",
                "set exactly one of bind_password_file and bind_password_env",
            );
        }
        for (k, v) in [
            ("bind_dn", &self.bind_dn),
            ("base_dn", &self.base_dn),
            ("groups_ou", &self.groups_ou),
        ] {
            if !v.contains('=') {
                return at(k, "must be a DN (attribute=value, ...)");
            }
        }
        if self.gid_range_start == 0 || self.gid_range_start > self.gid_range_end {
            return at(
                "gid_range_start",
                "the gid range must be non-empty and start above 0",
            );
        }
        if self.project_group_object_classes.is_empty() {
            return at("project_group_object_classes", "name at least one class");
        }
        Ok(())
    }
}

/// The directory the groups live in.
#[derive(Debug)]
pub(crate) struct Directory {
    settings: LdapSettings,
    /// Choosing a free gidNumber and taking it are one step.
    allocating: tokio::sync::Mutex<()>,
}

/// One bound connection; its driver stops when dropped.
struct Session {
    ldap: ldap3::Ldap,
    driver: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Session {
    /// The connection, for one operation with the timeout.
    fn op(&mut self) -> &mut ldap3::Ldap {
        self.ldap.with_timeout(self.timeout)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn down(uri: &str, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::not_ready(format!("ldap {uri}: {what}: {e}"))
}

impl Directory {
    pub(crate) fn new(settings: LdapSettings) -> Self {
        Self {
            settings,
            allocating: tokio::sync::Mutex::new(()),
        }
    }

    fn groups_base(&self) -> String {
        format!("{},{}", self.settings.groups_ou, self.settings.base_dn)
    }

    fn group_dn(&self, name: &str) -> String {
        format!("cn={},{}", ldap3::dn_escape(name), self.groups_base())
    }

    /// Connects and binds: UNAVAILABLE when the directory does not answer
    /// or refuses the bind.
    async fn session(&self) -> BackendResult<Session> {
        let s = &self.settings;
        let password = Secret::from_file_or_env(
            "ldap.bind_password",
            s.bind_password_file.as_deref(),
            s.bind_password_env.as_deref(),
            &ProcessEnv,
        )
        .map_err(|e| BackendError::not_ready(format!("ldap bind password: {e}")))?;
        let settings = ldap3::LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(s.timeout_seconds.max(1)))
            .set_starttls(s.use_starttls);
        let (conn, ldap) = ldap3::LdapConnAsync::with_settings(settings, &s.uri)
            .await
            .map_err(|e| down(&s.uri, "connect", e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap connection ended");
            }
        });
        let mut session = Session {
            ldap,
            driver,
            timeout: Duration::from_secs(s.timeout_seconds.max(1)),
        };
        session
            .op()
            .simple_bind(&s.bind_dn, password.expose())
            .await
            .and_then(ldap3::LdapResult::success)
            .map_err(|e| down(&s.uri, "bind", e))?;
        Ok(session)
    }

    /// Whether the directory answers and accepts the bind.
    pub(crate) async fn check(&self) -> BackendResult<()> {
        self.session().await.map(drop)
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::command_failed(format!("ldap {}: {what}: {e}", self.settings.uri))
    }

    /// The gidNumber of a group, if it exists.
    pub(crate) async fn gid(&self, name: &str) -> BackendResult<Option<u32>> {
        let mut s = self.session().await?;
        self.gid_in(&mut s, name).await
    }

    async fn gid_in(&self, s: &mut Session, name: &str) -> BackendResult<Option<u32>> {
        let filter = format!(
            "(&(objectClass=posixGroup)(cn={}))",
            ldap3::ldap_escape(name)
        );
        let (entries, _) = s
            .op()
            .search(
                &self.groups_base(),
                ldap3::Scope::Subtree,
                &filter,
                vec!["gidNumber"],
            )
            .await
            .and_then(ldap3::SearchResult::success)
            .map_err(|e| self.failed("reading a group", e))?;
        Ok(entries.into_iter().next().and_then(|e| {
            ldap3::SearchEntry::construct(e)
                .attrs
                .get("gidNumber")
                .and_then(|v| v.first())
                .and_then(|g| g.parse().ok())
        }))
    }

    /// Makes the group of an allocation unless it exists; its gidNumber.
    pub(crate) async fn ensure_group(&self, name: &str) -> BackendResult<u32> {
        let mut s = self.session().await?;
        let _held = self.allocating.lock().await;
        if let Some(gid) = self.gid_in(&mut s, name).await? {
            return Ok(gid);
        }
        let (entries, _) = s
            .op()
            .search(
                &self.groups_base(),
                ldap3::Scope::Subtree,
                "(gidNumber=*)",
                vec!["gidNumber"],
            )
            .await
            .and_then(ldap3::SearchResult::success)
            .map_err(|e| self.failed("reading the gidNumbers in use", e))?;
        let used: BTreeSet<u32> = entries
            .into_iter()
            .filter_map(|e| {
                ldap3::SearchEntry::construct(e)
                    .attrs
                    .get("gidNumber")
                    .and_then(|v| v.first())
                    .and_then(|g| g.parse().ok())
            })
            .collect();
        let st = &self.settings;
        let gid = (st.gid_range_start..=st.gid_range_end)
            .find(|g| !used.contains(g))
            .ok_or_else(|| {
                BackendError::command_failed(format!(
                    "ldap: no free gidNumber in {}..={}",
                    st.gid_range_start, st.gid_range_end
                ))
            })?;
        let classes: HashSet<String> = st.project_group_object_classes.iter().cloned().collect();
        let gid_text = gid.to_string();
        let attrs: Vec<(String, HashSet<String>)> = vec![
            ("objectClass".into(), classes),
            ("cn".into(), HashSet::from([name.to_owned()])),
            ("gidNumber".into(), HashSet::from([gid_text])),
        ];
        let added = s
            .op()
            .add(&self.group_dn(name), attrs)
            .await
            .map_err(|e| self.failed("adding a group", e))?;
        match added.rc {
            0 => {
                tracing::info!(group = name, gid, "ldap group made");
                Ok(gid)
            }
            // Made meanwhile by someone else: theirs stands.
            ENTRY_EXISTS => self
                .gid_in(&mut s, name)
                .await?
                .ok_or_else(|| self.failed("adding a group", "it exists but is not a posixGroup")),
            _ => Err(self.failed("adding a group", added)),
        }
    }

    /// Removes the group of an allocation; absent is success. A group of
    /// that name whose gidNumber is outside the range was not made here
    /// and is left alone.
    pub(crate) async fn delete_group(&self, name: &str) -> BackendResult<()> {
        let mut s = self.session().await?;
        let st = &self.settings;
        match self.gid_in(&mut s, name).await? {
            None => return Ok(()),
            Some(gid) if !(st.gid_range_start..=st.gid_range_end).contains(&gid) => {
                tracing::warn!(
                    group = name,
                    gid,
                    "ldap group outside the gid range left alone"
                );
                return Ok(());
            }
            Some(_) => {}
        }
        let r = s
            .op()
            .delete(&self.group_dn(name))
            .await
            .map_err(|e| self.failed("removing a group", e))?;
        match r.rc {
            0 => {
                tracing::info!(group = name, "ldap group removed");
                Ok(())
            }
            NO_SUCH_OBJECT => Ok(()),
            _ => Err(self.failed("removing a group", r)),
        }
    }

    /// Adds `users` to the group's memberUid; present ones are left alone.
    pub(crate) async fn add_members(&self, group: &str, users: &[String]) -> BackendResult<()> {
        self.change_members(group, users, true).await
    }

    /// Removes `users` from the group's memberUid; absent ones are fine.
    pub(crate) async fn remove_members(&self, group: &str, users: &[String]) -> BackendResult<()> {
        self.change_members(group, users, false).await
    }

    async fn change_members(&self, group: &str, users: &[String], add: bool) -> BackendResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let mut s = self.session().await?;
        let dn = self.group_dn(group);
        // One value per modify: a value already there (or already gone)
        // would fail a modify carrying several, and the others with it.
        for user in users {
            let values = HashSet::from([user.clone()]);
            let change = if add {
                ldap3::Mod::Add("memberUid".to_owned(), values)
            } else {
                ldap3::Mod::Delete("memberUid".to_owned(), values)
            };
            let r = s
                .op()
                .modify(&dn, vec![change])
                .await
                .map_err(|e| self.failed("changing group members", e))?;
            match (r.rc, add) {
                (0, _) | (VALUE_EXISTS, true) | (NO_SUCH_ATTRIBUTE, false) => {}
                // The group is gone: nobody is left to remove.
                (NO_SUCH_OBJECT, false) => return Ok(()),
                _ => return Err(self.failed("changing group members", r)),
            }
        }
        Ok(())
    }

    /// memberUid of each of `groups` that exists, in one search.
    pub(crate) async fn members(
        &self,
        groups: &[String],
    ) -> BackendResult<BTreeMap<String, BTreeSet<String>>> {
        let mut out = BTreeMap::new();
        if groups.is_empty() {
            return Ok(out);
        }
        let mut s = self.session().await?;
        for chunk in groups.chunks(200) {
            let filter = format!(
                "(&(objectClass=posixGroup)(|{}))",
                chunk
                    .iter()
                    .map(|g| format!("(cn={})", ldap3::ldap_escape(g.as_str())))
                    .collect::<String>()
            );
            let (entries, _) = s
                .op()
                .search(
                    &self.groups_base(),
                    ldap3::Scope::Subtree,
                    &filter,
                    vec!["cn", "memberUid"],
                )
                .await
                .and_then(ldap3::SearchResult::success)
                .map_err(|e| self.failed("reading group members", e))?;
            for e in entries {
                let mut attrs = ldap3::SearchEntry::construct(e).attrs;
                let Some(cn) = attrs.remove("cn").and_then(|v| v.into_iter().next()) else {
                    continue;
                };
                let members = attrs.remove("memberUid").unwrap_or_default();
                out.insert(cn, members.into_iter().collect());
            }
        }
        Ok(out)
    }
}
