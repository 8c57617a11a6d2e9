//! `check`: one PASS/FAIL line per Waldur endpoint, STOMP endpoint (with
//! events on) and backend, with each backend's own self checks; then per
//! offering whether usernames can be made and a full membership plan
//! (GetResource, and GetUserLimits where supported, for every resource;
//! nothing changed) that FAILs when the blast-radius breaker would trip.

use crate::config::Config;
use crate::runtime::Coordinator;

/// Prints the checks; true when all passed.
pub async fn run(config: &Config, coordinator: &Coordinator) -> bool {
    // Servers that dial in get a moment to connect to this process's
    // tunnel listener (they retry with backoff, so a few seconds may not
    // be enough; /readyz of the running coordinator is the lasting view). First,
    // so that the plans and component checks below can reach them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while coordinator.backends.values().any(|b| {
        b.link_status()
            .is_some_and(|l| l.listening && l.connected_since.is_none())
    }) && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut ok = true;
    let mut line = |pass: bool, what: String| {
        println!("{} {what}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    };
    line(
        true,
        format!(
            "config parses ({} offerings, {} backends, {} helmholtz services)",
            config.offerings.len(),
            config.backends.len(),
            config.helmholtz.services.len()
        ),
    );
    let mut stomp_checked = std::collections::HashSet::new();
    for o in &coordinator.offerings {
        let name = &o.config.name;
        match o
            .waldur
            .provider_offering(&o.config.offering_uuid, &["uuid", "name"])
            .await
        {
            Ok(off) => {
                line(
                    true,
                    format!(
                        "offering {name}: waldur reachable, offering {:?} readable",
                        off.name
                    ),
                );
                version_lines(name, &o.waldur).await;
            }
            Err(e) => {
                let hint = match e.status() {
                    Some(401) => " (check the token: waldur.token_file / token_env)",
                    Some(403) | Some(404) => " (check offering_uuid and the token's permissions)",
                    None => " (check waldur.api_url and the network)",
                    _ => "",
                };
                line(false, format!("offering {name}: {e}{hint}"));
            }
        }
        let url = o.config.events.url(&o.config.waldur.api_url);
        if o.config.tasks.events && stomp_checked.insert(url.clone()) {
            // The handshake only: logging in needs the subscription the
            // running coordinator registers, which check must not create.
            match waldur_stomp::client::reachable(&url).await {
                Ok(()) => line(
                    true,
                    format!("offering {name}: STOMP endpoint {url} answers"),
                ),
                Err(e) => line(
                    false,
                    format!("offering {name}: STOMP endpoint {url}: {e} (check events.stomp_url)"),
                ),
            }
        }
    }
    // What the next membership cycle would remove, dry: a config that would
    // trip the breaker is better found now than by the first cycle.
    for o in &coordinator.offerings {
        let Some(t) = &o.membership else { continue };
        let name = &o.config.name;
        // Only where the provider names users: elsewhere Waldur does, and no
        // username source is asked.
        let provider_names = match o
            .waldur
            .provider_offering(&o.config.offering_uuid, &["plugin_options"])
            .await
        {
            Ok(off) => crate::processors::usernames::policy_allows(&off.plugin_options).is_ok(),
            Err(_) => false, // the offering line above says why
        };
        if provider_names {
            let source = o.config.usernames.source.as_str();
            match t.processor.usernames().misconfigured().await {
                Some(why) => line(false, format!("offering {name}: {why}")),
                None => line(
                    true,
                    format!("offering {name}: usernames made by usernames.source {source}"),
                ),
            }
        }
        match t.processor.plan().await {
            Ok(p) => match &p.breaker {
                None => line(
                    true,
                    format!(
                        "offering {name}: membership plan: {} resources, {} with changes, within the breaker's limits",
                        p.resources,
                        p.changes.len()
                    ),
                ),
                Some(trip) => line(false, format!("offering {name}: {}", trip.message)),
            },
            Err(e) => line(false, format!("offering {name}: membership plan: {e}")),
        }
    }
    for (i, (service, _)) in coordinator.hca.iter().enumerate() {
        let name = &service.config.name;
        let b = &service.broker;
        match crate::upstream::hca::amqp::connect(b, "waldur-coordinator check").await {
            Ok(conn) => {
                line(
                    true,
                    format!(
                        "helmholtz {name}: broker {}:{} vhost {} accepts {}",
                        b.host, b.port, b.vhost, b.username
                    ),
                );
                let q = &service.config.queues;
                if !service.config.declare_queues {
                    for (key, queue) in [("inbound", &q.inbound), ("outbound", &q.outbound)] {
                        // A passive declare on a channel of its own: a
                        // missing queue closes the channel it was asked on.
                        let exists = match conn.create_channel().await {
                            Ok(ch) => ch
                                .queue_declare(
                                    queue.as_str().into(),
                                    lapin::options::QueueDeclareOptions {
                                        passive: true,
                                        ..Default::default()
                                    },
                                    lapin::types::FieldTable::default(),
                                )
                                .await
                                .is_ok(),
                            Err(_) => false,
                        };
                        line(
                            exists,
                            if exists {
                                format!("helmholtz {name}: queue {queue} exists")
                            } else {
                                format!(
                                    "helmholtz {name}: queue {queue} does not exist in vhost {} (check helmholtz.services[{i}].queues.{key}, or set declare_queues: true for a broker of your own)",
                                    b.vhost
                                )
                            },
                        );
                    }
                }
                let _ = conn.close(200, "check done".into()).await;
            }
            Err(e) => line(
                false,
                format!("helmholtz {name} (helmholtz.services[{i}].broker): {e}"),
            ),
        }
    }
    // Limits a resource type derives must be components of its backend, or
    // every request would be refused with an error the user cannot fix.
    for (i, (service, _)) in coordinator.hca.iter().enumerate() {
        for type_name in service.types_without_members() {
            println!(
                "WARN helmholtz {}: {type_name} has no members: sources, so its allocations are made with nobody in them (helmholtz.services[{i}].resource_types.{type_name}.members)",
                service.config.name
            );
        }
        for (type_name, url, outcome) in service.probe_member_sources().await {
            let at = format!("helmholtz.services[{i}].resource_types.{type_name}.members");
            match outcome {
                Ok(warning) => {
                    line(
                        true,
                        format!(
                            "helmholtz {}: {type_name} member directory {url} answers",
                            service.config.name
                        ),
                    );
                    if let Some(warning) = warning {
                        println!(
                            "WARN helmholtz {}: {at}: {url} {warning}",
                            service.config.name
                        );
                    }
                }
                Err(why) => line(
                    false,
                    format!("helmholtz {}: {at}: {why}", service.config.name),
                ),
            }
        }
        for (type_name, t, backend) in service.resource_types() {
            let Ok(components) = backend.components().await else {
                continue; // the backend's own line below says why
            };
            let keys: Vec<&str> = components.iter().map(|c| c.key.as_str()).collect();
            let unknown: Vec<&String> = t
                .config
                .limits
                .keys()
                .filter(|k| !keys.contains(&k.as_str()))
                .collect();
            let at = format!("helmholtz.services[{i}].resource_types.{type_name}");
            if unknown.is_empty() {
                line(
                    true,
                    format!(
                        "helmholtz {}: {type_name} limits are components of backend {}",
                        service.config.name,
                        backend.name()
                    ),
                );
            } else {
                line(
                    false,
                    format!(
                        "helmholtz {}: {at}.limits: {unknown:?} are not components of backend {} (it has {})",
                        service.config.name,
                        backend.name(),
                        keys.join(", ")
                    ),
                );
            }
        }
    }
    for (name, backend) in &coordinator.backends {
        if let Some(link) = backend.link_status() {
            // `check` runs the tunnel listener only for its own few seconds
            // (none when a running coordinator holds the port): a server
            // that dials in is seen only if it connects meanwhile.
            if link.connected_since.is_none() {
                line(
                    false,
                    format!(
                        "backend {name}: dial-in through the tunnel, no server connected (the running coordinator's /readyz shows the link; check the server's connect: settings and tunnel.allowed)"
                    ),
                );
                continue;
            }
            line(
                true,
                format!(
                    "backend {name}: {}",
                    crate::runtime::admin::describe_link(&link)
                ),
            );
        }
        // The in-memory example backend answers everything and makes
        // nothing: loud, as a production config naming it is a mistake.
        if let Ok(info) = backend.info().await
            && info.name == "example"
        {
            println!(
                "WARN backend {name}: instance {} is the in-memory example backend: orders complete but no cluster account is ever made",
                backend.instance()
            );
        }
        match backend.probe().await {
            Ok(p) if p.ready => line(
                true,
                format!(
                    "backend {name}: mutual TLS ok, instance {} ready",
                    backend.instance()
                ),
            ),
            Ok(p) => line(false, format!("backend {name}: not ready: {}", p.message)),
            Err(e) => {
                line(
                    false,
                    format!(
                        "backend {name}: {e} (check backends.{name}.endpoint, server_name and tls files)"
                    ),
                );
                continue;
            }
        }
        match backend.capabilities().await {
            Ok(caps) => {
                // A set has no order; the contract's enum order reads best.
                let mut sorted: Vec<_> = caps.iter().collect();
                sorted.sort();
                let names: Vec<&str> = sorted
                    .into_iter()
                    .map(|c| c.as_str_name().trim_start_matches("CAPABILITY_"))
                    .collect();
                line(
                    true,
                    format!("backend {name}: capabilities {}", names.join(" ")),
                );
            }
            Err(e) => line(false, format!("backend {name}: capabilities: {e}")),
        }
        let who = format!("backend {name}");
        for (word, text) in crate::cli::ops::self_checks(backend, &who).await {
            match word {
                "PASS" => line(true, text),
                "FAIL" => line(false, text),
                _ => println!("{word} {text}"),
            }
        }
    }
    ok
}

/// The Waldur release, the range this agent was tried with, and what an
/// older server lacks (a WARN each: the agent does without them).
async fn version_lines(name: &str, waldur: &waldur_client::WaldurClient) {
    use waldur_client::compat;
    let (oldest, newest) = compat::TESTED;
    match waldur.version().await {
        Ok(v) => {
            println!(
                "INFO offering {name}: Waldur Mastermind {v} (this agent is tested with {oldest} to {newest})"
            );
            for warning in compat::warnings(&v) {
                println!("WARN offering {name}: {warning}");
            }
        }
        Err(e) => println!("WARN offering {name}: Waldur's version unknown: {e}"),
    }
}

/// `check --offline`: loading the config already read every secret, schema
/// and member table; what is left without network is the certificates.
pub fn offline(config: &Config) -> std::process::ExitCode {
    println!(
        "PASS config parses ({} offerings, {} backends, {} helmholtz services), secrets, schemas and member sources load",
        config.offerings.len(),
        config.backends.len(),
        config.helmholtz.services.len()
    );
    let mut ok = true;
    let tls = config
        .backends
        .iter()
        .filter_map(|(name, b)| b.tls.as_ref().map(|t| (format!("backend {name}"), t)))
        .chain(config.tunnel.iter().map(|t| ("tunnel".to_owned(), &t.tls)));
    for (what, files) in tls {
        match files.load() {
            Ok(_) => println!("PASS {what}: tls files load"),
            Err(e) => {
                ok = false;
                println!("FAIL {what}: {e}");
            }
        }
    }
    println!(
        "SKIP network checks (Waldur, backend servers, brokers, directories): run check without --offline"
    );
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
