//! Who an allocation is for. A request names its requester in
//! `target_entity`: a person (`user_id_target`, their voPersonID) or a group
//! (`group_urn_target`). A resource type's `members:` list turns that into
//! local usernames, which are added with the resource (and go with it at
//! deallocation). Sources are tried in order; the first that knows the
//! requester decides, so a static table can override a directory.
//!
//! * `static` — a table in the config or in a YAML file beside it;
//! * `ldap` — a search by attribute in a directory: one entry for a user
//!   (its `username_attribute`), for a group every value of
//!   `member_attribute` of the matching entries (`memberUid` of a
//!   posixGroup, or `uid` of the users whose entitlement names the group).
//!
//! Nobody knowing the requester refuses the request before anything is
//! created; a directory that cannot be asked (down, timing out, refusing the
//! bind) leaves it queued until it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use waldur_runtime::SettingError;
use waldur_runtime::ldap_entry::attribute_values;
use waldur_runtime::secret::{Env, Secret};

/// Who a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A person, by voPersonID.
    User(String),
    /// A group, by URN.
    Group(String),
}

impl Requester {
    /// The id as the portal sent it.
    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Group(id) => id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Group(_) => "group",
        }
    }
}

/// One entry of a resource type's `members:` list: `{static: ...}` or
/// `{ldap: ...}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSourceConfig {
    /// A fixed table.
    #[serde(rename = "static", default)]
    pub table: Option<StaticConfig>,
    /// A directory search.
    #[serde(default)]
    pub ldap: Option<Box<LdapConfig>>,
}

/// `static:` — requester ids to usernames, inline or in a YAML file with
/// the same two keys (relative paths are relative to the config file).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// voPersonID → username.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Group URN → usernames.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// A YAML file holding `users:` and `groups:` instead.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `ldap:` — where and how to search.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub start_tls: bool,
    /// PEM bundle of CAs to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN to bind as; anonymous when unset.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the bind password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Variable holding the bind password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Where users are searched (and groups, unless `group_base_dn`).
    pub base_dn: String,
    /// Filter finding the requesting person; `{id}` is their voPersonID,
    /// escaped. Unset: this source does not resolve persons.
    #[serde(default)]
    pub user_filter: Option<String>,
    /// Where groups are searched; default `base_dn`.
    #[serde(default)]
    pub group_base_dn: Option<String>,
    /// Filter finding the requesting group's entries; `{id}` is the URN,
    /// escaped. Unset: this source does not resolve groups.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Attribute of a person's entry holding the username.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    /// Attribute of a group filter's entries holding member usernames.
    #[serde(default = "default_member_attribute")]
    pub member_attribute: String,
    /// Connect-and-search deadline, seconds.
    #[serde(default = "default_ldap_timeout")]
    pub timeout_seconds: u64,
}

fn default_username_attribute() -> String {
    "uid".into()
}

fn default_member_attribute() -> String {
    "memberUid".into()
}

fn default_ldap_timeout() -> u64 {
    10
}

/// Why the members could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Nobody knows the requester, or they map to no usable account: refuse.
    Unknown(String),
    /// A person matched more than one entry, or one entry with several
    /// usernames: refuse rather than guess.
    Ambiguous(String),
    /// The directory will not tell (a group larger than it lets us read):
    /// refuse, as asking again gets the same answer.
    Unreadable(String),
    /// A source could not be asked: try again later.
    Unavailable(String),
}

/// Members of one allocation at most: the contract's limit on a repeated
/// field.
const MAX_MEMBERS: usize = 10_000;

/// A resource type's member sources, resolved at start-up.
#[derive(Debug, Clone, Default)]
pub struct Members {
    sources: Vec<Source>,
}

#[derive(Debug, Clone)]
enum Source {
    Static {
        users: BTreeMap<String, String>,
        groups: BTreeMap<String, Vec<String>>,
    },
    Ldap(Arc<Ldap>),
}

impl Members {
    /// Loads every source: static files are read and their usernames
    /// checked, filters and the bind password checked, so a mistake stops
    /// start-up instead of refusing requests.
    pub fn load(
        configs: &[MemberSourceConfig],
        base_dir: &Path,
        env: &dyn Env,
    ) -> Result<Self, SettingError> {
        let mut sources = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let at = |e: SettingError| e.within(format_args!("members[{i}]"));
            sources.push(match (&c.table, &c.ldap) {
                (Some(s), None) => load_static(s, base_dir).map_err(at)?,
                (None, Some(l)) => {
                    Source::Ldap(Arc::new(Ldap::load(l, base_dir, env).map_err(at)?))
                }
                _ => {
                    return Err(SettingError::new(
                        format!("members[{i}]"),
                        "each entry is one source: static or ldap",
                    ));
                }
            });
        }
        Ok(Self { sources })
    }

    /// True when no source is configured: allocations get no members.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Asks every directory source for its `base_dn` (connect, bind,
    /// search): `(url, outcome)` per source, for `check`; `Ok(Some(_))` is
    /// a warning.
    pub async fn probe(&self) -> Vec<(String, Result<Option<String>, String>)> {
        let mut out = Vec::new();
        for source in &self.sources {
            if let Source::Ldap(l) = source {
                let c = &l.config;
                let deadline = Duration::from_secs(c.timeout_seconds);
                let found = tokio::time::timeout(
                    deadline,
                    l.search(&c.base_dn, ldap3::Scope::Base, "(objectClass=*)", "dn"),
                )
                .await;
                let outcome = match found {
                    Err(_) => Err(format!("no answer within {} s", c.timeout_seconds)),
                    Ok(Err(
                        LookupError::Unavailable(why)
                        | LookupError::Unknown(why)
                        | LookupError::Ambiguous(why)
                        | LookupError::Unreadable(why),
                    )) => Err(why),
                    Ok(Ok(entries)) if entries.is_empty() => {
                        Err(format!("base_dn {:?} does not exist", c.base_dn))
                    }
                    Ok(Ok(_)) => Ok(()),
                };
                let plain_bind = l.password.is_some() && l.tls.is_none();
                out.push((
                    c.url.clone(),
                    outcome.map(|()| {
                        plain_bind.then(|| {
                            "binds with its password over plain ldap:// (use ldaps:// or start_tls: true)".to_owned()
                        })
                    }),
                ));
            }
        }
        out
    }

    /// The local usernames of `who`, sorted and without duplicates. Sources
    /// are asked in order and the first that knows the requester decides; a
    /// source that cannot be asked stops the search (a later source must
    /// not decide what an earlier one might have said otherwise).
    pub async fn resolve(&self, who: &Requester) -> Result<Vec<String>, LookupError> {
        for source in &self.sources {
            let found = match source {
                Source::Static { users, groups } => match who {
                    Requester::User(id) => users.get(id).map(|u| vec![u.clone()]),
                    Requester::Group(urn) => groups.get(urn).cloned(),
                },
                Source::Ldap(l) => l.lookup(who).await?,
            };
            let Some(names) = found else { continue };
            let mut usable = BTreeSet::new();
            for name in names {
                let name = name.trim();
                if valid_username(name) {
                    usable.insert(name.to_owned());
                } else {
                    // One odd entry must not block a whole group; the
                    // directory's operators learn of it here.
                    tracing::warn!(requester = %clip(who.id()), username = %clip(name), "member source gave a username no backend could take; skipped");
                }
            }
            if usable.is_empty() {
                return Err(LookupError::Unknown(format!(
                    "{} {:?} has no members with a usable account at this service",
                    who.kind(),
                    clip(who.id())
                )));
            }
            if usable.len() > MAX_MEMBERS {
                return Err(LookupError::Unreadable(format!(
                    "{} {:?} has {} members, more than the {MAX_MEMBERS} an allocation can hold",
                    who.kind(),
                    clip(who.id()),
                    usable.len()
                )));
            }
            return Ok(usable.into_iter().collect());
        }
        Err(LookupError::Unknown(format!(
            "no account at this service is known for {} {:?}; ask the service's operators to register it",
            who.kind(),
            clip(who.id())
        )))
    }
}

/// A POSIX-style account name, as every backend takes it: letters, digits,
/// `_`, then also `.`, `-` and `@`; at most 255 bytes. Keeps DNs
/// (`uid=a,ou=b`), paths and spaces away from the backend.
fn valid_username(n: &str) -> bool {
    let mut chars = n.chars();
    n.len() <= 255
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
}

fn load_static(s: &StaticConfig, base_dir: &Path) -> Result<Source, SettingError> {
    let table = match &s.file {
        None => s.clone(),
        Some(_) if !s.users.is_empty() || !s.groups.is_empty() => {
            return Err(SettingError::new(
                "static",
                "give users/groups inline or a file, not both",
            ));
        }
        Some(file) => {
            let path = base_dir.join(file);
            let at = |why: String| {
                SettingError::new("static.file", format!("{}: {why}", path.display()))
            };
            let text = std::fs::read_to_string(&path).map_err(|e| at(e.to_string()))?;
            let table: StaticConfig =
                serde_norway::from_str(&text).map_err(|e| at(e.to_string()))?;
            if table.file.is_some() {
                return Err(at("a members file cannot name another file".into()));
            }
            table
        }
    };
    let named = table
        .users
        .iter()
        .map(|(id, u)| (format!("users.{id}"), u))
        .chain(
            table
                .groups
                .iter()
                .flat_map(|(id, us)| us.iter().map(move |u| (format!("groups.{id}"), u))),
        );
    for (at, username) in named {
        if !valid_username(username) {
            return Err(SettingError::new(
                format!("static.{at}"),
                format!("{username:?} is not an account name a backend could take"),
            ));
        }
    }
    Ok(Source::Static {
        users: table.users,
        groups: table.groups,
    })
}

/// An LDAP source with its password read and its filters checked.
struct Ldap {
    config: LdapConfig,
    password: Option<Secret>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl Ldap {
    fn load(c: &LdapConfig, base_dir: &Path, env: &dyn Env) -> Result<Self, SettingError> {
        let err = |key: &str, why: String| SettingError::new(format!("ldap.{key}"), why);
        let tls_url = c.url.starts_with("ldaps://");
        if !tls_url && !c.url.starts_with("ldap://") {
            return Err(err(
                "url",
                format!("{:?} is not an ldap:// or ldaps:// url", c.url),
            ));
        }
        if url::Url::parse(&c.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_none_or(|h| h.is_empty())
        {
            return Err(err("url", format!("{:?} names no host", c.url)));
        }
        if tls_url && c.start_tls {
            return Err(err(
                "start_tls",
                "an ldaps:// url is TLS already; StartTLS is for ldap://".into(),
            ));
        }
        let tls = tls_url || c.start_tls;
        if c.ca_file.is_some() && !tls {
            return Err(err(
                "ca_file",
                "is only used with TLS: use an ldaps:// url or start_tls: true".into(),
            ));
        }
        if c.user_filter.is_none() && c.group_filter.is_none() {
            return Err(err(
                "user_filter",
                "set user_filter, group_filter or both; without either this source resolves no one"
                    .into(),
            ));
        }
        for (key, f) in [
            ("user_filter", &c.user_filter),
            ("group_filter", &c.group_filter),
        ] {
            if let Some(f) = f {
                if !f.contains("{id}") {
                    return Err(err(
                        key,
                        format!("{f:?} must contain {{id}}, the requester's id"),
                    ));
                }
                if ldap3::parse_filter(f.replace("{id}", "x")).is_err() {
                    return Err(err(key, format!("{f:?} is not an LDAP filter")));
                }
            }
        }
        if c.timeout_seconds == 0 {
            return Err(err("timeout_seconds", "must be at least 1".into()));
        }
        let password = match (&c.bind_dn, &c.password_file, &c.password_env) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(err(
                    "bind_dn",
                    "a password is set but no bind_dn to use it with".into(),
                ));
            }
            (Some(_), file, var) => {
                let file = file.as_ref().map(|f| base_dir.join(f));
                Some(Secret::from_file_or_env(
                    "ldap.password",
                    file.as_deref(),
                    var.as_deref(),
                    env,
                )?)
            }
        };
        let tls = if tls {
            let ca = c.ca_file.as_ref().map(|f| base_dir.join(f));
            let roots = waldur_runtime::tls::client_roots(ca.as_deref())
                .map_err(|e| err("ca_file", e.to_string()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| err("url", format!("tls: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self {
            config: c.clone(),
            password,
            tls,
        })
    }

    /// `Some(usernames)` when the directory knows the requester, `None`
    /// when this source has no filter for its kind or finds nothing.
    async fn lookup(&self, who: &Requester) -> Result<Option<Vec<String>>, LookupError> {
        let c = &self.config;
        let (base, filter, attribute) = match who {
            Requester::User(_) => match &c.user_filter {
                Some(f) => (&c.base_dn, f, &c.username_attribute),
                None => return Ok(None),
            },
            Requester::Group(_) => match &c.group_filter {
                Some(f) => (
                    c.group_base_dn.as_ref().unwrap_or(&c.base_dn),
                    f,
                    &c.member_attribute,
                ),
                None => return Ok(None),
            },
        };
        let filter = filter.replace("{id}", &ldap3::ldap_escape(who.id()));
        let deadline = Duration::from_secs(c.timeout_seconds);
        let entries = tokio::time::timeout(
            deadline,
            self.search(base, ldap3::Scope::Subtree, &filter, attribute),
        )
        .await
        .map_err(|_| {
            LookupError::Unavailable(format!(
                "ldap {}: no answer within {} s",
                c.url, c.timeout_seconds
            ))
        })??;
        // An entry that is a person gives one account name: several values
        // (aliases) would make one person several members.
        let one_each = matches!(who, Requester::User(_))
            || c.member_attribute
                .eq_ignore_ascii_case(&c.username_attribute);
        if one_each && let Some(e) = entries.iter().find(|v| v.len() > 1) {
            return Err(LookupError::Ambiguous(format!(
                "{} {:?}: a directory entry holds {} account names ({}); the service's operators must keep one",
                who.kind(),
                clip(who.id()),
                e.len(),
                clip(&e.join(", "))
            )));
        }
        match who {
            Requester::User(id) => match entries.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(one.clone())),
                _ => Err(LookupError::Ambiguous(format!(
                    "user {:?} matches {} directory entries; the service's operators must make it unique",
                    clip(id),
                    entries.len()
                ))),
            },
            Requester::Group(_) if entries.is_empty() => Ok(None),
            Requester::Group(_) => Ok(Some(entries.into_iter().flatten().collect())),
        }
    }

    /// One connection per lookup (requests are rare): bind, search in pages
    /// (so a large group is read whole, not cut at the server's size limit),
    /// unbind. Answers the values of `attribute` per matching entry.
    async fn search(
        &self,
        base: &str,
        scope: ldap3::Scope,
        filter: &str,
        attribute: &str,
    ) -> Result<Vec<Vec<String>>, LookupError> {
        let c = &self.config;
        let down = |what: &str, e: ldap3::LdapError| {
            LookupError::Unavailable(format!("ldap {} {what}: {e}", c.url))
        };
        let mut settings = ldap3::LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(c.timeout_seconds))
            .set_starttls(c.start_tls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(|e| down("connect", e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap connection ended");
            }
        });
        let result = async {
            if let (Some(dn), Some(pw)) = (&c.bind_dn, &self.password) {
                ldap.simple_bind(dn, pw.expose())
                    .await
                    .and_then(ldap3::LdapResult::success)
                    .map_err(|e| down("bind", e))?;
            }
            let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> = vec![
                Box::new(ldap3::adapters::EntriesOnly::new()),
                Box::new(ldap3::adapters::PagedResults::new(500)),
            ];
            let mut stream = ldap
                .streaming_search_with(adapters, base, scope, filter, vec![attribute])
                .await
                .map_err(|e| down("search", e))?;
            let mut entries = Vec::new();
            let mut unreadable = false;
            while let Some(entry) = stream.next().await.map_err(|e| down("search", e))? {
                if entries.len() > MAX_MEMBERS {
                    unreadable = true;
                    break;
                }
                match attribute_values(&entry.0, attribute) {
                    Some(values) => entries.push(values),
                    None => {
                        return Err(LookupError::Unavailable(format!(
                            "ldap {} answered an entry that could not be read",
                            c.url
                        )));
                    }
                }
            }
            if unreadable {
                return Err(LookupError::Unreadable(format!(
                    "more than {MAX_MEMBERS} directory entries match"
                )));
            }
            let done = stream.finish().await;
            match done.rc {
                0 => Ok(entries),
                // noSuchObject: the base is wrong, an operator's fix.
                32 => Err(LookupError::Unavailable(format!(
                    "ldap {}: {base:?} does not exist (check base_dn and group_base_dn)",
                    c.url
                ))),
                // sizeLimitExceeded, referral, adminLimitExceeded: asking
                // again gets the same answer.
                4 | 10 | 11 => Err(LookupError::Unreadable(format!(
                    "the directory does not let this service read all matching entries (result code {})",
                    done.rc
                ))),
                _ => Err(down("search", ldap3::LdapError::LdapResult { result: done })),
            }
        }
        .await;
        let _ = ldap.unbind().await;
        driver.abort();
        result
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use waldur_runtime::secret::MapEnv;

    fn members(yaml: &str) -> Result<Members, SettingError> {
        let configs: Vec<MemberSourceConfig> = serde_norway::from_str(yaml).unwrap();
        Members::load(&configs, Path::new("/nonexistent"), &MapEnv::default())
    }

    fn user(id: &str) -> Requester {
        Requester::User(id.into())
    }

    #[tokio::test]
    async fn the_first_source_that_knows_the_requester_decides() {
        let m = members(
            "- static: {users: {a@x: alice}}\n- static: {users: {a@x: other, b@x: bob}, groups: {'urn:g': [carol, bob, carol]}}\n",
        )
        .unwrap();
        assert_eq!(m.resolve(&user("a@x")).await.unwrap(), ["alice"]);
        assert_eq!(m.resolve(&user("b@x")).await.unwrap(), ["bob"]);
        assert_eq!(
            m.resolve(&Requester::Group("urn:g".into())).await.unwrap(),
            ["bob", "carol"]
        );
    }

    #[tokio::test]
    async fn an_unknown_requester_or_an_empty_group_is_refused_by_name() {
        let m = members("- static: {groups: {'urn:empty': []}}\n").unwrap();
        match m.resolve(&user("nobody@x")).await {
            Err(LookupError::Unknown(why)) => assert!(why.contains("nobody@x"), "{why}"),
            other => panic!("{other:?}"),
        }
        match m.resolve(&Requester::Group("urn:empty".into())).await {
            Err(LookupError::Unknown(why)) => assert!(why.contains("no members"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_static_username_no_backend_could_take_stops_start_up() {
        for bad in ["'al ice'", "'uid=al,ou=people'", "'../x'", "''"] {
            let e = members(&format!("- static: {{groups: {{g: [ok, {bad}]}}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("static.groups.g"), "{bad}: {e}");
        }
        assert!(valid_username("alice.b-c_d@x") && valid_username("_svc"));
    }

    #[test]
    fn ldap_settings_are_checked_at_load() {
        for (yaml, key) in [
            (
                "- ldap: {url: 'http://x', base_dn: 'dc=x', user_filter: '(uid={id})'}",
                "url",
            ),
            ("- ldap: {url: 'ldap://x', base_dn: 'dc=x'}", "user_filter"),
            (
                "- ldap: {url: 'ldap://x', base_dn: 'dc=x', user_filter: '(uid=x)'}",
                "{id}",
            ),
            (
                "- ldap: {url: 'ldap://x', base_dn: 'dc=x', group_filter: '(cn={id}'}",
                "group_filter",
            ),
            (
                "- ldap: {url: 'ldaps://x', start_tls: true, base_dn: 'dc=x', user_filter: '(uid={id})'}",
                "start_tls",
            ),
            (
                "- ldap: {url: 'ldap://x', base_dn: 'dc=x', user_filter: '(uid={id})', password_env: P}",
                "bind_dn",
            ),
            (
                "- ldap: {url: 'ldap://x', bind_dn: 'cn=r', base_dn: 'dc=x', user_filter: '(uid={id})', password_env: P}",
                "P",
            ),
            ("- static: {users: {a: b}, file: m.yaml}", "not both"),
            ("- static: {file: m.yaml}", "m.yaml"),
            (
                "- ldap: {url: 'ldap://x', ca_file: ca.pem, base_dn: 'dc=x', user_filter: '(uid={id})'}",
                "ca_file",
            ),
            (
                "- ldap: {url: 'ldap://', base_dn: 'dc=x', user_filter: '(uid={id})'}",
                "no host",
            ),
            ("- {}", "one source"),
        ] {
            let e = members(yaml).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_directory_means_later_not_unknown() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let m = members(&format!(
            "- ldap: {{url: 'ldap://127.0.0.1:{port}', base_dn: 'dc=x', user_filter: '(uid={{id}})', timeout_seconds: 2}}\n- static: {{users: {{a@x: alice}}}}\n"
        ))
        .unwrap();
        match m.resolve(&user("a@x")).await {
            Err(LookupError::Unavailable(why)) => assert!(why.contains("connect"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_directory_entry_is_an_error_not_a_panic() {
        use ldap3::asn1::{PL, StructureTag, TagClass};
        let prim = |b: &[u8]| StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(b.to_vec()),
        };
        let cons = |items: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id: 16,
            payload: PL::C(items),
        };
        let entry = |items: Vec<StructureTag>| StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(items),
        };
        let good = entry(vec![
            prim(b"uid=alice,dc=x"),
            cons(vec![cons(vec![prim(b"UID"), cons(vec![prim(b"alice")])])]),
        ]);
        assert_eq!(attribute_values(&good, "uid").unwrap(), ["alice"]);
        for bad in [
            prim(b"x"),
            entry(vec![prim(b"dn")]),
            entry(vec![prim(b"dn"), cons(vec![prim(b"uid")])]),
            entry(vec![prim(b"dn"), cons(vec![cons(vec![prim(b"uid")])])]),
            // a search reference (tag 19) is not an entry
            cons(vec![prim(b"dn"), cons(vec![])]),
        ] {
            assert_eq!(attribute_values(&bad, "uid"), None);
        }
    }
}
