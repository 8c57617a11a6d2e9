//! Operator commands, mirroring the original's CLIs: each
//! works offering by offering, prints one line per finding, isolates
//! failures per offering and returns whether everything succeeded.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use waldur_backend_api::types::{AccountingType, Capability, Component, LimitPeriod, Outcome};

use crate::backend::BackendHandle;
use crate::processors::usernames::Usernames;
use crate::runtime::{Coordinator, OfferingRuntime};
use waldur_client::ids::same_uuid;
use waldur_client::types::OrderState;
use waldur_client::types::offering_user_state;

fn line(ok: &mut bool, pass: bool, text: String) {
    println!("{} {text}", if pass { "ok  " } else { "FAIL" });
    *ok &= pass;
}

/// The backend's own self checks (GetDiagnostics) as (word, line): PASS,
/// WARN or FAIL per check, INFO per fact it reports; a backend without
/// them gives no lines.
pub async fn self_checks(b: &BackendHandle, who: &str) -> Vec<(&'static str, String)> {
    match b.diagnostics().await {
        Ok(Some(d)) => d
            .checks
            .iter()
            .map(|c| (c.word(), format!("{who}: {}: {}", c.name, c.message)))
            .chain(
                d.info
                    .iter()
                    .map(|(k, v)| ("INFO", format!("{who}: {k} = {v}"))),
            )
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => vec![("FAIL", format!("{who}: diagnostics: {e}"))],
    }
}

/// The offerings selected by `--offering` (all when empty); an unknown name
/// is an error naming the known ones.
pub fn select<'c>(
    coordinator: &'c Coordinator,
    names: &[String],
) -> Result<Vec<&'c OfferingRuntime>, String> {
    if names.is_empty() {
        return Ok(coordinator.offerings.iter().collect());
    }
    let mut out = Vec::new();
    for n in names {
        match coordinator
            .offerings
            .iter()
            .find(|o| &o.config.name == n || same_uuid(o.config.offering_uuid.as_str(), n))
        {
            Some(o) => out.push(o),
            None => {
                let known: Vec<&str> = coordinator
                    .offerings
                    .iter()
                    .map(|o| o.config.name.as_str())
                    .collect();
                return Err(format!("no offering named {n:?}; configured: {known:?}"));
            }
        }
    }
    Ok(out)
}

/// The backend of a role, falling back to the other roles' backends.
fn backend_for<'c>(
    coordinator: &'c Coordinator,
    o: &OfferingRuntime,
    roles: &[&str],
) -> Option<&'c BackendHandle> {
    roles.iter().find_map(|role| {
        let name = match *role {
            "orders" => o.config.backends.orders.as_ref(),
            "report" => o.config.backends.report.as_ref(),
            "usernames" => o.config.backends.usernames.as_ref(),
            _ => o.config.backends.membership.as_ref(),
        }?;
        coordinator.backends.get(name)
    })
}

fn accounting_type(c: &Component) -> &'static str {
    match c.accounting_type() {
        AccountingType::Limit => "limit",
        AccountingType::OneTime => "one",
        AccountingType::OnPlanSwitch => "few",
        _ => "usage",
    }
}

fn limit_period(p: LimitPeriod) -> Option<&'static str> {
    match p {
        LimitPeriod::Month => Some("month"),
        LimitPeriod::Quarterly => Some("quarterly"),
        LimitPeriod::Annual => Some("annual"),
        LimitPeriod::Total => Some("total"),
        _ => None,
    }
}

/// The Waldur component payload of a backend component.
pub fn component_payload(c: &Component) -> Value {
    let kind = accounting_type(c);
    let mut body = json!({
        "type": c.key,
        "name": c.label,
        "billing_type": kind,
        "measured_unit": c.measured_unit,
        "limit_amount": c.limit,
        "is_prepaid": c.is_prepaid || kind == "one",
        "is_boolean": c.is_boolean,
    });
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            body[k] = v;
        }
    };
    if !c.description.is_empty() {
        put("description", json!(c.description));
    }
    if !c.article_code.is_empty() {
        put("article_code", json!(c.article_code));
    }
    put("limit_period", json!(limit_period(c.limit_period())));
    put("min_value", json!(c.min_value));
    put("max_value", json!(c.max_value));
    put("max_available_limit", json!(c.max_available_limit));
    put("default_limit", json!(c.default_limit));
    put("min_prepaid_duration", json!(c.min_prepaid_duration));
    put("max_prepaid_duration", json!(c.max_prepaid_duration));
    put("prepaid_duration_step", json!(c.prepaid_duration_step));
    put("min_renewal_duration", json!(c.min_renewal_duration));
    put("max_renewal_duration", json!(c.max_renewal_duration));
    put("renewal_duration_step", json!(c.renewal_duration_step));
    body
}

/// `load-components`: publishes the backend's components to each offering,
/// updating those Waldur has and creating the others.
pub async fn load_components(coordinator: &Coordinator, offerings: &[&OfferingRuntime]) -> bool {
    let mut ok = true;
    for o in offerings {
        let name = &o.config.name;
        let Some(backend) = backend_for(coordinator, o, &["orders", "report", "membership"]) else {
            line(&mut ok, false, format!("{name}: no backend configured"));
            continue;
        };
        let components = match backend.components().await {
            Ok(c) => c,
            Err(e) => {
                line(&mut ok, false, format!("{name}: backend components: {e}"));
                continue;
            }
        };
        let offering = match o
            .waldur
            .provider_offering(&o.config.offering_uuid, &["components"])
            .await
        {
            Ok(off) => off,
            Err(e) => {
                line(&mut ok, false, format!("{name}: offering: {e}"));
                continue;
            }
        };
        let existing: BTreeMap<&str, &waldur_client::types::OfferingComponent> = offering
            .components
            .iter()
            .map(|c| (c.component_type.as_str(), c))
            .collect();
        for c in &components {
            let mut body = component_payload(c);
            let result = match existing.get(c.key.as_str()) {
                Some(current) => {
                    body["uuid"] = json!(current.uuid);
                    o.waldur
                        .update_offering_component(&o.config.offering_uuid, &body)
                        .await
                        .map(|()| "updated")
                }
                None => o
                    .waldur
                    .create_offering_component(&o.config.offering_uuid, &body)
                    .await
                    .map(|()| "created"),
            };
            match result {
                Ok(what) => line(
                    &mut ok,
                    true,
                    format!(
                        "{name}: component {} {what} ({}, {})",
                        c.key, body["billing_type"], c.measured_unit
                    ),
                ),
                Err(e) => line(&mut ok, false, format!("{name}: component {}: {e}", c.key)),
            }
        }
        for key in existing.keys() {
            if !components.iter().any(|c| c.key == *key) {
                println!("note {name}: component {key} exists in Waldur but not on the backend");
            }
        }
    }
    ok
}

/// `diagnostics`: one offering end to end.
pub async fn diagnostics(coordinator: &Coordinator, offerings: &[&OfferingRuntime]) -> bool {
    let mut ok = true;
    for o in offerings {
        let name = &o.config.name;
        let w = &o.waldur;
        println!("== offering {name} ({})", o.config.offering_uuid);
        println!("   waldur {}", o.config.waldur.api_url);
        match w.me().await {
            Ok(me) => line(
                &mut ok,
                true,
                format!(
                    "token works: user {} ({} role grants{})",
                    me.username,
                    me.permissions.len(),
                    if me.is_staff { ", staff" } else { "" }
                ),
            ),
            Err(e) => {
                let hint = match e.status() {
                    Some(401) => " (the token is wrong or expired: waldur.token_file / token_env)",
                    None => " (waldur unreachable: check waldur.api_url and the network)",
                    _ => "",
                };
                line(&mut ok, false, format!("token: {e}{hint}"));
                continue;
            }
        }
        let offering = match w
            .provider_offering(
                &o.config.offering_uuid,
                &["uuid", "name", "components", "plugin_options"],
            )
            .await
        {
            Ok(off) => {
                line(
                    &mut ok,
                    true,
                    format!(
                        "offering {:?} readable, {} components",
                        off.name,
                        off.components.len()
                    ),
                );
                Some(off)
            }
            Err(e) => {
                line(
                    &mut ok,
                    false,
                    format!("offering: {e} (check offering_uuid and the token's role on it)"),
                );
                None
            }
        };
        match w
            .resources(
                &o.config.offering_uuid,
                &["OK", "Erred"],
                &["uuid", "state"],
            )
            .await
        {
            Ok(list) => {
                let erred = list.iter().filter(|r| r.state == "Erred").count();
                line(
                    &mut ok,
                    true,
                    format!("{} resources ({erred} erred)", list.len()),
                );
            }
            Err(e) => line(&mut ok, false, format!("resources: {e}")),
        }
        match w.offering_users(&o.config.offering_uuid).await {
            Ok(list) => {
                let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
                for u in &list {
                    *by_state.entry(u.state.as_str()).or_default() += 1;
                }
                line(
                    &mut ok,
                    true,
                    format!("offering users by state {by_state:?}"),
                );
            }
            Err(e) => line(&mut ok, false, format!("offering users: {e}")),
        }
        match w
            .orders(
                &o.config.offering_uuid,
                &[OrderState::PendingProvider, OrderState::Executing],
            )
            .await
        {
            Ok(list) => line(&mut ok, true, format!("{} open orders", list.len())),
            Err(e) => line(&mut ok, false, format!("orders: {e}")),
        }
        let mut checked = std::collections::HashSet::new();
        for (role, backend_name) in [
            ("orders", &o.config.backends.orders),
            ("report", &o.config.backends.report),
            ("membership", &o.config.backends.membership),
            ("usernames", &o.config.backends.usernames),
        ] {
            let Some(backend_name) = backend_name else {
                continue;
            };
            let Some(b) = coordinator.backends.get(backend_name) else {
                continue;
            };
            match b.probe().await {
                Ok(p) if p.ready => {}
                Ok(p) => {
                    line(
                        &mut ok,
                        false,
                        format!("{role} backend {backend_name}: not ready: {}", p.message),
                    );
                    continue;
                }
                Err(e) => {
                    line(
                        &mut ok,
                        false,
                        format!(
                            "{role} backend {backend_name}: {e} (check backends.{backend_name}.endpoint, server_name and tls)"
                        ),
                    );
                    continue;
                }
            }
            let info = b
                .info()
                .await
                .map(|i| format!("{} {}", i.name, i.version))
                .unwrap_or_default();
            line(
                &mut ok,
                true,
                format!("{role} backend {backend_name}: {info} ready over mutual TLS"),
            );
            // A backend serving several roles checks itself once.
            if checked.insert(backend_name.clone()) {
                for (word, text) in self_checks(b, &format!("backend {backend_name}")).await {
                    match word {
                        "PASS" => line(&mut ok, true, text),
                        "FAIL" => line(&mut ok, false, text),
                        _ => println!("{word} {text}"),
                    }
                }
            }
            if let (Some(off), Ok(components)) = (&offering, b.components().await) {
                let missing: Vec<&str> = components
                    .iter()
                    .map(|c| c.key.as_str())
                    .filter(|k| !off.components.iter().any(|c| c.component_type == *k))
                    .collect();
                line(
                    &mut ok,
                    missing.is_empty(),
                    if missing.is_empty() {
                        format!("{role} backend components all defined in the offering")
                    } else {
                        format!(
                            "{role} backend components missing in the offering: {missing:?} (run load-components)"
                        )
                    },
                );
            }
        }
    }
    ok
}

/// `create-homedirs`: home directories for every OK offering user.
pub async fn create_homedirs(coordinator: &Coordinator, offerings: &[&OfferingRuntime]) -> bool {
    let mut ok = true;
    for o in offerings {
        let name = &o.config.name;
        if !o.config.membership.create_homedirs {
            println!("skip {name}: membership.create_homedirs is false");
            continue;
        }
        let Some(backend) = backend_for(coordinator, o, &["membership", "orders"]) else {
            line(&mut ok, false, format!("{name}: no backend configured"));
            continue;
        };
        if !backend
            .has(Capability::HomeDirectories)
            .await
            .unwrap_or(false)
        {
            println!(
                "skip {name}: backend {} does not create home directories",
                backend.name()
            );
            continue;
        }
        let users = match o
            .waldur
            .offering_users_in(&o.config.offering_uuid, &[offering_user_state::OK])
            .await
        {
            Ok(u) => u,
            Err(e) => {
                line(&mut ok, false, format!("{name}: offering users: {e}"));
                continue;
            }
        };
        let names: Vec<String> = users
            .into_iter()
            .filter_map(|u| u.username.filter(|n| !n.is_empty()))
            .collect();
        if names.is_empty() {
            println!("skip {name}: no offering user with a username");
            continue;
        }
        let umask = Some(o.config.membership.homedir_umask.as_str()).filter(|u| !u.is_empty());
        match backend.create_home_directories(names, umask).await {
            Ok(results) => {
                let (mut created, mut there) = (0, 0);
                for r in &results {
                    match &r.outcome {
                        Outcome::Applied => created += 1,
                        Outcome::Unchanged => there += 1,
                        Outcome::Failed(e) => {
                            line(&mut ok, false, format!("{name}: {}: {e}", r.username));
                        }
                    }
                }
                line(
                    &mut ok,
                    true,
                    format!("{name}: {created} created, {there} already there"),
                );
            }
            Err(e) => line(&mut ok, false, format!("{name}: {e}")),
        }
    }
    ok
}

/// `sync-offering-users`: one username-generation pass per offering.
pub async fn sync_offering_users(
    coordinator: &Coordinator,
    offerings: &[&OfferingRuntime],
) -> bool {
    let mut ok = true;
    for o in offerings {
        let name = &o.config.name;
        let backend = backend_for(coordinator, o, &["usernames", "membership", "orders"]).cloned();
        let usernames = Usernames::new(
            &o.config.offering_uuid,
            o.waldur.clone(),
            backend,
            o.config.usernames.clone(),
        );
        let plugin_options = match o
            .waldur
            .provider_offering(&o.config.offering_uuid, &["plugin_options"])
            .await
        {
            Ok(off) => off.plugin_options,
            Err(e) => {
                line(&mut ok, false, format!("{name}: offering: {e}"));
                continue;
            }
        };
        let users = match o.waldur.offering_users(&o.config.offering_uuid).await {
            Ok(u) => u,
            Err(e) => {
                line(&mut ok, false, format!("{name}: offering users: {e}"));
                continue;
            }
        };
        let s = usernames.process(&users, &plugin_options).await;
        match s.skipped {
            Some(why) => println!("skip {name}: {why}"),
            None => line(
                &mut ok,
                true,
                format!(
                    "{name}: {} usernames assigned, {} waiting for the user, {} failed, {} deferred",
                    s.assigned, s.pending, s.failed, s.deferred
                ),
            ),
        }
    }
    ok
}

/// `sync-resource-limits`: the backend's limits written to Waldur where
/// they differ (the backend is the source of truth).
pub async fn sync_resource_limits(
    coordinator: &Coordinator,
    offerings: &[&OfferingRuntime],
) -> bool {
    let mut ok = true;
    for o in offerings {
        let name = &o.config.name;
        let Some(backend) = backend_for(coordinator, o, &["membership", "orders"]) else {
            line(&mut ok, false, format!("{name}: no backend configured"));
            continue;
        };
        let resources = match o
            .waldur
            .resources(
                &o.config.offering_uuid,
                &["OK", "Erred"],
                &["uuid", "backend_id", "limits"],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                line(&mut ok, false, format!("{name}: resources: {e}"));
                continue;
            }
        };
        let (mut pushed, mut same) = (0, 0);
        for r in resources.iter().filter(|r| !r.backend_id.is_empty()) {
            match backend.get_resource_limits(&r.backend_id).await {
                Ok(l) if l.is_empty() || l == r.limits => same += 1,
                Ok(l) => match r.id() {
                    Ok(id) => match o.waldur.set_resource_limits(&id, &l).await {
                        Ok(()) => pushed += 1,
                        Err(e) => line(&mut ok, false, format!("{name}: {}: {e}", r.backend_id)),
                    },
                    Err(e) => line(&mut ok, false, format!("{name}: {}: {e}", r.backend_id)),
                },
                Err(e) => line(&mut ok, false, format!("{name}: {}: {e}", r.backend_id)),
            }
        }
        line(
            &mut ok,
            true,
            format!(
                "{name}: limits updated in Waldur for {pushed} resources, {same} already equal"
            ),
        );
    }
    ok
}
