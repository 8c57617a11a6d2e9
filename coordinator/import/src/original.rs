//! The original configuration read and checked: root keys, one offering
//! at a time, and how each becomes an offering and an instance.

use serde_norway::{Mapping, Value};

use crate::value::{boolean, get, integer, key_text, kind, one_line, strict_text, text, untag};
use crate::{ImportError, SecretToWrite, invalid, moab, mup, out, slurm, value};

/// Root keys.
pub(crate) struct Globals {
    pub(crate) timezone: String,
    pub(crate) expose_backend_error_details: bool,
    pub(crate) reporting_periods: u32,
}

impl Globals {
    pub(crate) fn read(root: &Mapping, notes: &mut Vec<String>) -> Result<Self, ImportError> {
        let timezone = match get(root, "timezone") {
            None => "UTC".to_owned(),
            Some(v) => {
                let tz = strict_text(v).map_err(|m| invalid("timezone", m))?;
                let tz = tz.trim().to_owned();
                if tz.is_empty() || tz.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid("timezone", "must be an IANA time zone such as UTC"));
                }
                tz
            }
        };
        let expose_backend_error_details = match get(root, "expose_backend_error_details") {
            None => true,
            Some(v) => boolean(v).map_err(|m| invalid("expose_backend_error_details", m))?,
        };
        let reporting_periods = match get(root, "reporting_periods") {
            None => 2,
            Some(v) => match integer(v) {
                Ok(n @ 1..=12) => n as u32,
                Ok(_) => return Err(invalid("reporting_periods", "must be 1 to 12")),
                Err(m) => return Err(invalid("reporting_periods", m)),
            },
        };
        for (k, v) in root {
            let Some(key) = key_text(k) else {
                notes.push("a top-level key that is not text was dropped.".into());
                continue;
            };
            let set = match untag(v) {
                Value::Null => false,
                Value::String(s) => !s.trim().is_empty(),
                _ => true,
            };
            match key.as_str() {
                "offerings" | "timezone" | "expose_backend_error_details" | "reporting_periods" => {
                }
                "sentry_dsn" | "elastic_apm_server_url" if set => notes.push(format!(
                    "{key} is not carried over: the coordinator and backend server report \
                     errors only in their logs."
                )),
                "global_proxy" if set => notes.push(
                    "global_proxy is not carried over: the coordinator connects to Waldur \
                     directly (the original ignored it in event mode too)."
                        .into(),
                ),
                "log_level" if set => notes.push(
                    "log_level is not carried over: set RUST_LOG (for example RUST_LOG=info) in \
                     the services' environment instead."
                        .into(),
                ),
                "log_shipping" => {
                    let enabled = match untag(v) {
                        Value::Mapping(m) => get(m, "enabled").map(boolean) == Some(Ok(true)),
                        _ => false,
                    };
                    if enabled {
                        notes.push(
                            "log_shipping is not carried over: the coordinator does not ship \
                             its logs to Waldur."
                                .into(),
                        );
                    }
                }
                "sentry_dsn" | "elastic_apm_server_url" | "global_proxy" | "log_level" => {}
                other => notes.push(format!(
                    "top-level key {:?} is not a key of the original agent (which ignored \
                     it); dropped.",
                    one_line(other)
                )),
            }
        }
        Ok(Self {
            timezone,
            expose_backend_error_details,
            reporting_periods,
        })
    }
}

/// The roles, in the original's key names.
pub(crate) const ROLE_KEYS: [&str; 3] = [
    "order_processing_backend",
    "reporting_backend",
    "membership_sync_backend",
];

/// Keys of the original's offering model.
pub(crate) const OFFERING_KEYS: &[&str] = &[
    "name",
    "waldur_api_url",
    "waldur_api_token",
    "waldur_offering_uuid",
    "oidc_token_url",
    "oidc_client_id",
    "oidc_client_secret",
    "backend_type",
    "backend_settings",
    "backend_components",
    "websocket_use_tls",
    "stomp_enabled",
    "stomp_membership_sync_enabled",
    "stomp_ws_host",
    "stomp_ws_port",
    "stomp_ws_path",
    "order_processing_backend",
    "membership_sync_backend",
    "reporting_backend",
    "username_management_backend",
    "resource_import_enabled",
    "username_reconciliation_enabled",
    "verify_ssl",
    "waldur_verify_ssl",
];

/// Credentials of an offering.
pub(crate) enum Credential {
    Token(String),
    Oidc {
        token_url: String,
        client_id: String,
        client_secret: String,
    },
}

/// One original offering, read and checked.
pub(crate) struct Original {
    pub(crate) at: String,
    pub(crate) label: String,
    pub(crate) name: String,
    pub(crate) uuid: String,
    pub(crate) api_url: String,
    pub(crate) api_host: String,
    pub(crate) credential: Credential,
    pub(crate) backend_type: Option<String>,
    /// Orders, report, membership.
    pub(crate) roles: [Option<String>; 3],
    pub(crate) settings: Mapping,
    pub(crate) components: Mapping,
    pub(crate) stomp: bool,
    pub(crate) stomp_membership: Option<bool>,
    pub(crate) ws_host: Option<String>,
    pub(crate) ws_port: Option<u16>,
    pub(crate) ws_path: Option<String>,
    pub(crate) ws_tls: bool,
    pub(crate) username_backend: String,
    pub(crate) resource_import: bool,
    pub(crate) verify_ssl: bool,
    /// Notes about this offering's keys, kept only if it is migrated.
    pub(crate) notes: Vec<String>,
}

/// What one migrated offering contributes.
pub(crate) struct Migrated {
    pub(crate) offering: out::Offering,
    pub(crate) instance: out::Instance,
    pub(crate) secrets: Vec<SecretToWrite>,
    pub(crate) notes: Vec<String>,
}

impl Original {
    pub(crate) fn read(index: usize, v: &Value) -> Result<Self, ImportError> {
        let at = format!("offerings[{index}]");
        let Value::Mapping(m) = untag(v) else {
            return Err(invalid(at, format!("must be a mapping, found {}", kind(v))));
        };
        let key = |k: &str| format!("{at}.{k}");
        let opt_text = |k: &str| -> Result<Option<String>, ImportError> {
            match get(m, k) {
                None => Ok(None),
                Some(v) => {
                    let s = strict_text(v).map_err(|e| invalid(key(k), e))?;
                    let s = s.trim().to_owned();
                    Ok((!s.is_empty()).then_some(s))
                }
            }
        };
        let required = |k: &str, what: &str| -> Result<String, ImportError> {
            opt_text(k)?.ok_or_else(|| invalid(key(k), format!("is missing ({what})")))
        };
        let flag = |k: &str| -> Result<Option<bool>, ImportError> {
            get(m, k)
                .map(|v| boolean(v).map_err(|e| invalid(key(k), e)))
                .transpose()
        };
        let name = required("name", "every offering needs a name")?;
        let label = format!("offering {:?}", one_line(&name));
        let uuid = required("waldur_offering_uuid", "the offering's uuid in Waldur")?;
        if uuid.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                key("waldur_offering_uuid"),
                "must not contain spaces",
            ));
        }
        let mut api_url = required("waldur_api_url", "the Waldur API url")?;
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(invalid(
                key("waldur_api_url"),
                "must start with http:// or https://",
            ));
        }
        if !api_url.ends_with('/') {
            api_url.push('/');
        }
        let api_host = value::url_host(&api_url)
            .ok_or_else(|| invalid(key("waldur_api_url"), "names no host"))?;

        let mut notes = Vec::new();
        let token = opt_text("waldur_api_token")?;
        let oidc = [
            opt_text("oidc_token_url")?,
            opt_text("oidc_client_id")?,
            opt_text("oidc_client_secret")?,
        ];
        let credential = match (token, oidc) {
            (Some(t), oidc) => {
                if oidc.iter().any(Option::is_some) {
                    notes.push(format!(
                        "{label}: oidc_token_url, oidc_client_id and oidc_client_secret are not \
                         carried over: the static waldur_api_token takes precedence, as in the \
                         original."
                    ));
                }
                Credential::Token(t)
            }
            (None, [Some(token_url), Some(client_id), Some(client_secret)]) => {
                if !(token_url.starts_with("http://") || token_url.starts_with("https://")) {
                    return Err(invalid(
                        key("oidc_token_url"),
                        "must start with http:// or https://",
                    ));
                }
                Credential::Oidc {
                    token_url,
                    client_id,
                    client_secret,
                }
            }
            (None, _) => {
                return Err(invalid(
                    key("waldur_api_token"),
                    "is missing or empty, and oidc_token_url, oidc_client_id and \
                     oidc_client_secret are not all set",
                ));
            }
        };
        let role = |k: &str| -> Result<Option<String>, ImportError> {
            Ok(opt_text(k)?.map(|s| s.to_ascii_lowercase()))
        };
        let roles = [
            role(ROLE_KEYS[0])?,
            role(ROLE_KEYS[1])?,
            role(ROLE_KEYS[2])?,
        ];
        let backend_type = role("backend_type")?;
        let mapping = |k: &str| -> Result<Mapping, ImportError> {
            match get(m, k) {
                None => Ok(Mapping::new()),
                Some(Value::Mapping(x)) => Ok(x.clone()),
                Some(other) => Err(invalid(
                    key(k),
                    format!("must be a mapping, found {}", kind(other)),
                )),
            }
        };
        let settings = mapping("backend_settings")?;
        let components = mapping("backend_components")?;
        let ws_port = match get(m, "stomp_ws_port") {
            None => None,
            Some(v) => match integer(v) {
                Ok(p) => Some(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| invalid(key("stomp_ws_port"), "must be 1 to 65535"))?,
                ),
                Err(e) => return Err(invalid(key("stomp_ws_port"), e)),
            },
        };
        let ws_host = opt_text("stomp_ws_host")?;
        if let Some(h) = &ws_host
            && h.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
        {
            return Err(invalid(key("stomp_ws_host"), "must be a host name"));
        }
        let ws_path = opt_text("stomp_ws_path")?;
        if let Some(p) = &ws_path
            && p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(key("stomp_ws_path"), "must be a url path"));
        }
        let verify_ssl = match flag("verify_ssl")? {
            Some(v) => v,
            None => flag("waldur_verify_ssl")?.unwrap_or(true),
        };
        let username_backend = opt_text("username_management_backend")?
            .unwrap_or_else(|| "base".into())
            .to_ascii_lowercase();
        let stomp = flag("stomp_enabled")?.unwrap_or(false);
        let stomp_membership = flag("stomp_membership_sync_enabled")?;
        let resource_import = flag("resource_import_enabled")?.unwrap_or(false);
        if flag("username_reconciliation_enabled")? == Some(true) {
            notes.push(format!(
                "{label}: username_reconciliation_enabled is not carried over: the coordinator \
                 has no username reconciliation (it served Waldur federation)."
            ));
        }
        if get(m, "verify_ssl").is_none() && get(m, "waldur_verify_ssl").is_some() {
            notes.push(format!(
                "{label}: waldur_verify_ssl was used as waldur.verify_tls because verify_ssl is \
                 not set."
            ));
        }
        for k in m.keys() {
            match key_text(k) {
                Some(k) if OFFERING_KEYS.contains(&k.as_str()) => {}
                Some(k) if k == "mqtt_enabled" => notes.push(format!(
                    "{label}: mqtt_enabled is a legacy key (MQTT event processing no longer \
                     exists); dropped."
                )),
                Some(k) => notes.push(format!(
                    "{label}: {:?} is not an offering key of the original agent (which ignored \
                     it); dropped.",
                    one_line(&k)
                )),
                None => notes.push(format!("{label}: a key that is not text was dropped.")),
            }
        }
        let ws_tls = flag("websocket_use_tls")?.unwrap_or(true);
        Ok(Self {
            at: at.clone(),
            label,
            name,
            uuid,
            api_url,
            api_host,
            credential,
            backend_type,
            roles,
            settings,
            components,
            stomp,
            stomp_membership,
            ws_host,
            ws_port,
            ws_path,
            ws_tls,
            username_backend,
            resource_import,
            verify_ssl,
            notes,
        })
    }

    /// The backend type the roles name (the first one set; `blocker`
    /// refuses mixed types).
    pub(crate) fn kind(&self) -> &'static str {
        match self.roles.iter().flatten().next().map(String::as_str) {
            Some(moab::TYPE) => moab::TYPE,
            Some(mup::TYPE) => mup::TYPE,
            _ => slurm::TYPE,
        }
    }

    /// Why this offering stays with the original agent, if it does.
    pub(crate) fn blocker(&self) -> Option<String> {
        let mut unsupported: Vec<(&str, Vec<&str>)> = Vec::new();
        for (key, name) in ROLE_KEYS.iter().zip(&self.roles) {
            if let Some(n) = name
                && n != slurm::TYPE
                && n != moab::TYPE
                && n != mup::TYPE
            {
                match unsupported.iter_mut().find(|(t, _)| t == n) {
                    Some((_, keys)) => keys.push(key),
                    None => unsupported.push((n, vec![key])),
                }
            }
        }
        if !unsupported.is_empty() {
            let list = unsupported
                .iter()
                .map(|(t, keys)| format!("{} ({})", one_line(t), keys.join(", ")))
                .collect::<Vec<_>>();
            return Some(if list.len() == 1 {
                format!("backend type {} has no backend server yet", list[0])
            } else {
                format!(
                    "backend types {} have no backend server yet",
                    list.join(", ")
                )
            });
        }
        let types: std::collections::BTreeSet<&str> =
            self.roles.iter().flatten().map(String::as_str).collect();
        if types.len() > 1 {
            return Some(format!(
                "its roles name different backend types ({}); one backend server instance \
                 serves one type",
                types.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.roles.iter().all(Option::is_none) {
            return Some(match &self.backend_type {
                Some(t) if t != slurm::TYPE && t != moab::TYPE && t != mup::TYPE => {
                    format!(
                        "backend type {} (backend_type) has no backend server yet",
                        one_line(t)
                    )
                }
                _ => "none of order_processing_backend, reporting_backend and \
                      membership_sync_backend is set, so the original ran nothing for it"
                    .into(),
            });
        }
        match self.kind() {
            moab::TYPE => moab::blocker(&self.components),
            mup::TYPE => mup::blocker(&self.settings, &self.components),
            _ => slurm::blocker(&self.settings, &self.components),
        }
    }

    pub(crate) fn migrate(
        mut self,
        slug: &str,
        globals: &Globals,
    ) -> Result<Migrated, ImportError> {
        let mut notes = std::mem::take(&mut self.notes);
        let label = self.label.clone();
        let mut secrets = Vec::new();

        let kind = self.kind();
        if let Some(t) = &self.backend_type
            && t != kind
        {
            notes.push(format!(
                "{label}: backend_type {t} differs from the role backends ({kind}); the role \
                 backends were used."
            ));
        }

        let events = self.stomp && matches!(self.credential, Credential::Token(_));
        let stomp_url = if events {
            Some(self.stomp_url(&mut notes))
        } else {
            None
        };
        let (token_file, oidc) = match self.credential {
            Credential::Token(t) => {
                // Relative to the config file, which lives in out_dir too.
                let file = format!("secrets/{slug}.token");
                let path = file.clone();
                secrets.push(SecretToWrite {
                    file_name: file,
                    value: t,
                });
                (Some(path), None)
            }
            Credential::Oidc {
                token_url,
                client_id,
                client_secret,
            } => {
                let file = format!("secrets/{slug}.oidc-client-secret");
                let path = file.clone();
                secrets.push(SecretToWrite {
                    file_name: file,
                    value: client_secret,
                });
                (
                    None,
                    Some(out::Oidc {
                        token_url,
                        client_id,
                        client_secret_file: path,
                    }),
                )
            }
        };

        if self.stomp && !events {
            notes.push(format!(
                "{label}: stomp_enabled is not carried over (tasks.events: false): event \
                 processing logs in with a static waldur_api_token and this offering uses OIDC; \
                 orders are polled instead."
            ));
        }
        let [orders, report, membership] = self.roles;
        let membership_by_events = events && self.stomp_membership != Some(false);
        if self.stomp_membership == Some(true) && !self.stomp {
            notes.push(format!(
                "{label}: stomp_membership_sync_enabled is true but stomp_enabled is false, so \
                 the original synced no membership; membership is now polled."
            ));
        }
        if events && self.stomp_membership == Some(false) && membership.is_some() {
            notes.push(format!(
                "{label}: stomp_membership_sync_enabled: false keeps membership polling every \
                 300 s, but the coordinator also handles membership events; it has no switch \
                 to ignore them."
            ));
        }
        if events {
            notes.push(format!(
                "{label}: with stomp_enabled the coordinator still polls orders{} hourly \
                 (intervals: 3600 s) next to the events, where the original relied on events \
                 and an hourly sweep.",
                if membership_by_events && membership.is_some() {
                    " and membership"
                } else {
                    ""
                }
            ));
        }
        if self.resource_import && !self.stomp {
            notes.push(format!(
                "{label}: resource_import_enabled has no effect without stomp_enabled (as in \
                 the original: import requests arrive as events)."
            ));
        }

        let coord = coordinator_settings(&self.settings, &label, &mut notes);

        let username_source = "none";
        if self.username_backend != "base" {
            notes.push(format!(
                "{label}: username_management_backend {:?} has no equivalent; usernames are not \
                 generated (usernames.source: none), consider source: waldur_username.",
                one_line(&self.username_backend)
            ));
        }

        let mut slurm_notes = slurm::Notes {
            label: &label,
            list: &mut notes,
        };
        let at = format!("{}.backend_components", self.at);
        let (mut settings, components) = match kind {
            moab::TYPE => (
                moab::settings(&self.settings, &mut slurm_notes),
                moab::components(&self.components, &at, &mut slurm_notes)?,
            ),
            mup::TYPE => {
                let file = format!("secrets/{slug}.mup-password");
                let (mut settings, password) =
                    mup::settings(&self.settings, &file, &mut slurm_notes);
                if let Some(value) = password {
                    secrets.push(SecretToWrite {
                        file_name: file,
                        value,
                    });
                }
                let (components, first) = mup::components(&self.components, &at, &mut slurm_notes)?;
                if let Some(first) = first {
                    settings.insert("primary_component".into(), Value::String(first));
                }
                (settings, components)
            }
            _ => {
                let file = format!("secrets/{slug}.ldap-password");
                let (settings, password) = slurm::settings(&self.settings, &file, &mut slurm_notes);
                if let Some(value) = password {
                    secrets.push(SecretToWrite {
                        file_name: file,
                        value,
                    });
                }
                (
                    settings,
                    slurm::components(&self.components, &at, &mut slurm_notes)?,
                )
            }
        };
        settings.insert("components".into(), Value::Mapping(components));

        let offering = out::Offering {
            name: self.name,
            offering_uuid: self.uuid,
            waldur: out::Waldur {
                api_url: self.api_url,
                token_file,
                oidc,
                verify_tls: self.verify_ssl,
            },
            tasks: out::Tasks {
                orders: orders.is_some(),
                report: report.is_some(),
                membership: membership.is_some(),
                events,
            },
            intervals: out::Intervals {
                orders_seconds: if events { 3600 } else { 300 },
                report_seconds: 1800,
                membership_seconds: if membership_by_events { 3600 } else { 300 },
            },
            backends: out::RoleBackends {
                orders: orders.map(|_| slug.to_owned()),
                report: report.map(|_| slug.to_owned()),
                membership: membership.map(|_| slug.to_owned()),
            },
            backend_id: coord.backend_id,
            reporting: out::Reporting {
                periods: globals.reporting_periods,
            },
            membership: coord.membership,
            usernames: out::Usernames {
                source: username_source,
            },
            events: stomp_url.map(|stomp_url| out::Events { stomp_url }),
            resource_import: out::ResourceImport {
                enabled: self.resource_import,
                project_prefix: coord.project_prefix,
            },
        };
        Ok(Migrated {
            offering,
            instance: out::Instance {
                name: slug.to_owned(),
                kind,
                settings: Value::Mapping(settings),
            },
            secrets,
            notes,
        })
    }

    /// The URL the original's STOMP client dialled.
    pub(crate) fn stomp_url(&self, notes: &mut Vec<String>) -> String {
        let scheme = if self.ws_tls { "wss" } else { "ws" };
        let scheme_port = if self.ws_tls { 443 } else { 80 };
        let host = self
            .ws_host
            .clone()
            .unwrap_or_else(|| self.api_host.clone());
        let port = self
            .ws_port
            .unwrap_or(if self.verify_ssl { 443 } else { 80 });
        let path = match &self.ws_path {
            Some(p) if p.starts_with('/') => p.clone(),
            Some(p) => format!("/{p}"),
            None => "/rmqws-stomp".into(),
        };
        if self.ws_port.is_none() && port != scheme_port {
            notes.push(format!(
                "{}: the original took the STOMP port {port} from verify_ssl, not from \
                 websocket_use_tls; events.stomp_url keeps port {port}, check it.",
                self.label
            ));
        }
        if port == scheme_port {
            format!("{scheme}://{host}{path}")
        } else {
            format!("{scheme}://{host}:{port}{path}")
        }
    }
}

/// The `backend_settings` keys the coordinator owns.
pub(crate) struct CoordinatorSettings {
    pub(crate) backend_id: out::BackendId,
    pub(crate) membership: out::Membership,
    pub(crate) project_prefix: String,
}

pub(crate) fn coordinator_settings(
    settings: &Mapping,
    label: &str,
    notes: &mut Vec<String>,
) -> CoordinatorSettings {
    let mut flag = |key: &str, default: bool| match get(settings, key).map(boolean) {
        None => default,
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            notes.push(format!(
                "{label}: backend_settings.{key} is not carried over ({e}); the default \
                 {default} applies."
            ));
            default
        }
    };
    let check_uniqueness = flag("check_backend_id_uniqueness", false);
    let check_all_offerings = flag("check_all_offerings", false);
    let create_homedirs = flag("enable_user_homedir_account_creation", true);
    let max_retries = match get(settings, "backend_id_max_retries").map(integer) {
        None => 50,
        Some(Ok(n)) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
        Some(_) => {
            notes.push(format!(
                "{label}: backend_settings.backend_id_max_retries is not a positive whole \
                 number; backend_id.max_retries is 50."
            ));
            50
        }
    };
    let homedir_umask = match get(settings, "default_homedir_umask").map(value::umask) {
        None => "0077".into(),
        Some(Ok((mask, _))) => mask,
        Some(Err(e)) => {
            notes.push(format!(
                "{label}: backend_settings.default_homedir_umask is not carried over ({e}); \
                 membership.homedir_umask is \"0077\"."
            ));
            "0077".into()
        }
    };
    let project_prefix = match get(settings, "project_prefix").map(text) {
        Some(Ok(p)) => p,
        _ => String::new(),
    };
    CoordinatorSettings {
        backend_id: out::BackendId {
            check_uniqueness,
            check_all_offerings,
            max_retries,
        },
        membership: out::Membership {
            homedir_umask,
            create_homedirs,
        },
        project_prefix,
    }
}
