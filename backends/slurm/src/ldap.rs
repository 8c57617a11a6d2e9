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
use waldur_backend_sdk::ldap_entry::attribute_values;
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
        Self { settings }
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

    /// Whether the directory answers, accepts the bind and holds the
    /// groups' branch (a wrong `groups_ou` is said here, not by every
    /// create).
    pub(crate) async fn check(&self) -> BackendResult<()> {
        let mut s = self.session().await?;
        let found = self
            .search(
                &mut s,
                &self.groups_base(),
                ldap3::Scope::Base,
                "(objectClass=*)",
                &["dn"],
            )
            .await?;
        if found.is_empty() {
            return Err(self.failed(
                "reading the groups branch",
                format!(
                    "{} does not exist: fix ldap.groups_ou or ldap.base_dn",
                    self.groups_base()
                ),
            ));
        }
        Ok(())
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::command_failed(format!("ldap {}: {what}: {e}", self.settings.uri))
    }

    /// Entries of a paged search (a directory's size limit does not cut
    /// it), each as the values of `attrs` in order; read without trusting
    /// the entries' shape. A base that does not exist is no entries.
    async fn search(
        &self,
        s: &mut Session,
        base: &str,
        scope: ldap3::Scope,
        filter: &str,
        attrs: &[&str],
    ) -> BackendResult<Vec<Vec<Vec<String>>>> {
        let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> = vec![
            Box::new(ldap3::adapters::EntriesOnly::new()),
            Box::new(ldap3::adapters::PagedResults::new(500)),
        ];
        let mut stream = s
            .op()
            .streaming_search_with(adapters, base, scope, filter, attrs.to_vec())
            .await
            .map_err(|e| self.failed("searching", e))?;
        let mut out = Vec::new();
        while let Some(entry) = stream
            .next()
            .await
            .map_err(|e| self.failed("searching", e))?
        {
            let mut values = Vec::with_capacity(attrs.len());
            for a in attrs {
                values.push(attribute_values(&entry.0, a).ok_or_else(|| {
                    self.failed(
                        "searching",
                        "the directory answered an entry that does not read",
                    )
                })?);
            }
            out.push(values);
        }
        let done = stream.finish().await;
        match done.rc {
            0 | NO_SUCH_OBJECT => Ok(out),
            rc => Err(self.failed("searching", format!("result code {rc}: {}", done.text))),
        }
    }

    /// (gidNumber, made by this backend) of a posixGroup, if it exists.
    async fn group_in(&self, s: &mut Session, name: &str) -> BackendResult<Option<(u32, bool)>> {
        let filter = format!(
            "(&(objectClass=posixGroup)(cn={}))",
            ldap3::ldap_escape(name)
        );
        let found = self
            .search(
                s,
                &self.groups_base(),
                ldap3::Scope::Subtree,
                &filter,
                &["gidNumber", "description"],
            )
            .await?;
        let Some(entry) = found.into_iter().next() else {
            return Ok(None);
        };
        let gid = entry
            .first()
            .and_then(|v| v.first())
            .and_then(|g| g.trim().parse().ok())
            .ok_or_else(|| {
                self.failed(
                    "reading a group",
                    format!("{name} has no numeric gidNumber"),
                )
            })?;
        let ours = entry
            .get(1)
            .is_some_and(|d| d.iter().any(|d| d == &marker(name)));
        Ok(Some((gid, ours)))
    }

    /// The gidNumber of an allocation's group, if it exists.
    pub(crate) async fn gid(&self, name: &str) -> BackendResult<Option<u32>> {
        let mut s = self.session().await?;
        Ok(self.group_in(&mut s, name).await?.map(|(gid, _)| gid))
    }

    /// Makes the group of an allocation unless this backend made it before;
    /// (gidNumber, made now). A group of that name the backend did not make
    /// (a site's own) is ALREADY_EXISTS: the caller takes the next name, and
    /// nobody joins a site's group through an order. A new group takes the
    /// gidNumber after the highest in the range that any entry of the
    /// directory uses (groups and accounts alike), so a freed number is not
    /// handed on to the next allocation while the range lasts.
    pub(crate) async fn ensure_group(&self, name: &str) -> BackendResult<(u32, bool)> {
        let mut s = self.session().await?;
        self.ensure_group_in(&mut s, name).await
    }

    async fn ensure_group_in(&self, s: &mut Session, name: &str) -> BackendResult<(u32, bool)> {
        let _held = ALLOCATING.lock().await;
        match self.group_in(s, name).await? {
            Some((gid, true)) => return Ok((gid, false)),
            Some((_, false)) => {
                return Err(BackendError::already_exists(
                    name,
                    "a directory group of that name exists that this backend did not make",
                ));
            }
            None => {}
        }
        let used: BTreeSet<u32> = self
            .search(
                s,
                &self.settings.base_dn,
                ldap3::Scope::Subtree,
                "(gidNumber=*)",
                &["gidNumber"],
            )
            .await?
            .into_iter()
            .filter_map(|e| e.first()?.first()?.trim().parse().ok())
            .collect();
        let st = &self.settings;
        let gid = next_gid(&used, st.gid_range_start, st.gid_range_end).ok_or_else(|| {
            BackendError::command_failed(format!(
                "ldap: no free gidNumber in {}..={}",
                st.gid_range_start, st.gid_range_end
            ))
        })?;
        let classes: HashSet<String> = st.project_group_object_classes.iter().cloned().collect();
        let attrs: Vec<(String, HashSet<String>)> = vec![
            ("objectClass".into(), classes),
            ("cn".into(), HashSet::from([name.to_owned()])),
            ("gidNumber".into(), HashSet::from([gid.to_string()])),
            ("description".into(), HashSet::from([marker(name)])),
        ];
        let added = s
            .op()
            .add(&self.group_dn(name), attrs)
            .await
            .map_err(|e| self.failed("adding a group", e))?;
        match added.rc {
            0 => {
                tracing::info!(group = name, gid, "ldap group made");
                Ok((gid, true))
            }
            ENTRY_EXISTS => Err(BackendError::already_exists(
                name,
                "a directory entry of that name exists that this backend did not make",
            )),
            _ => Err(self.failed("adding a group", added)),
        }
    }

    /// Removes the group of an allocation; absent is success, and so is a
    /// group this backend did not make, which is left alone.
    pub(crate) async fn delete_group(&self, name: &str) -> BackendResult<()> {
        let mut s = self.session().await?;
        match self.group_in(&mut s, name).await? {
            None => return Ok(()),
            Some((gid, false)) => {
                tracing::warn!(
                    group = name,
                    gid,
                    "ldap group this backend did not make left alone"
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

    /// Adds `users` to the memberUid of the allocation's group, making the
    /// group when it is missing (an allocation from before `ldap:` was set,
    /// or adopted); present ones are left alone.
    pub(crate) async fn add_members(&self, group: &str, users: &[String]) -> BackendResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let mut s = self.session().await?;
        self.ensure_group_in(&mut s, group).await?;
        self.change_members(&mut s, group, users, true).await
    }

    /// Removes `users` from the memberUid of the allocation's group; absent
    /// ones, an absent group and a group this backend did not make are fine.
    pub(crate) async fn remove_members(&self, group: &str, users: &[String]) -> BackendResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        let mut s = self.session().await?;
        if !matches!(self.group_in(&mut s, group).await?, Some((_, true))) {
            return Ok(());
        }
        self.change_members(&mut s, group, users, false).await
    }

    async fn change_members(
        &self,
        s: &mut Session,
        group: &str,
        users: &[String],
        add: bool,
    ) -> BackendResult<()> {
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

    /// memberUid of each of `groups` this backend made, in one search per
    /// 200 groups.
    pub(crate) async fn members(
        &self,
        groups: &[String],
    ) -> BackendResult<BTreeMap<String, BTreeSet<String>>> {
        let mut out = BTreeMap::new();
        if groups.is_empty() {
            return Ok(out);
        }
        let wanted: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
        let mut s = self.session().await?;
        for chunk in groups.chunks(200) {
            let filter = format!(
                "(&(objectClass=posixGroup)(|{}))",
                chunk
                    .iter()
                    .map(|g| format!("(cn={})", ldap3::ldap_escape(g.as_str())))
                    .collect::<String>()
            );
            let found = self
                .search(
                    &mut s,
                    &self.groups_base(),
                    ldap3::Scope::Subtree,
                    &filter,
                    &["cn", "memberUid", "description"],
                )
                .await?;
            for entry in found {
                let [cns, members, descriptions] = entry.as_slice() else {
                    continue;
                };
                // Any of its names (a group may carry several) that was
                // asked for, and only a group this backend made.
                for cn in cns.iter().filter(|c| wanted.contains(c.as_str())) {
                    if descriptions.iter().any(|d| d == &marker(cn)) {
                        out.insert(cn.clone(), members.iter().cloned().collect());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a group this backend made says in its description.
fn marker(name: &str) -> String {
    format!("waldur allocation {name}")
}

/// The gidNumber after the highest one in use within the range, else the
/// lowest free one (the range's top reached); `None` when none is free.
pub(crate) fn next_gid(used: &BTreeSet<u32>, start: u32, end: u32) -> Option<u32> {
    let highest = used.range(start..=end).next_back().copied();
    match highest {
        None => Some(start),
        Some(h) if h < end => Some(h + 1),
        Some(_) => (start..=end).find(|g| !used.contains(g)),
    }
}

/// Choosing a gidNumber and taking it are one step in this process, for
/// every instance it hosts.
static ALLOCATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_group_takes_the_number_after_the_highest_in_range_and_wraps_to_a_hole() {
        let used = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(next_gid(&used(&[]), 100, 105), Some(100));
        // Numbers outside the range do not count; a hole below is not reused.
        assert_eq!(next_gid(&used(&[7, 100, 102, 900]), 100, 105), Some(103));
        // The top reached: the lowest hole.
        assert_eq!(next_gid(&used(&[100, 102, 105]), 100, 105), Some(101));
        assert_eq!(next_gid(&used(&[100, 101, 102]), 100, 102), None);
    }
}
