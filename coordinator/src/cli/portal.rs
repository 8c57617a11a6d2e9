//! `mock-portal`: plays Helmholtz Cloud. Publishes a request to a
//! service's inbound queue with the properties the portal sets and prints
//! the reply.

use std::process::ExitCode;

use waldur_runtime::secret::ProcessEnv;

use super::{EX_CONFIG, EX_USAGE, MockPortal};
use crate::config::Config;

/// Sends one request and waits for its reply.
pub async fn mock_portal(args: MockPortal) -> ExitCode {
    use crate::upstream::hca::config::ServiceConfig;
    let service: ServiceConfig = match &args.config {
        Some(path) => {
            let config = match Config::load(path, &ProcessEnv) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let services = config.helmholtz.services;
            let found = match &args.service {
                Some(name) => services.into_iter().find(|s| &s.name == name),
                None if services.len() == 1 => services.into_iter().next(),
                None => None,
            };
            match found {
                Some(s) => s,
                None => {
                    eprintln!(
                        "error: name the helmholtz service with --service (the config has none or several)"
                    );
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
        None => match serde_norway::from_str("name: mock-portal\nresource_types: {}\n") {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (body, default_type) = if args.payload == "ping" {
        (b"{}".to_vec(), service.message_types.ping.clone())
    } else {
        let body = match std::fs::read(&args.payload) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", args.payload);
                return ExitCode::from(EX_USAGE);
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&body);
        let t = match &parsed {
            Ok(serde_json::Value::Object(o)) if o.is_empty() => service.message_types.ping.clone(),
            Ok(serde_json::Value::Object(o)) if o.len() == 1 && o.contains_key("id") => {
                service.message_types.deallocate.clone()
            }
            _ => service.message_types.allocate.clone(),
        };
        (body, t)
    };
    let message_type = args.message_type.unwrap_or(default_type);
    let correlation_id = args.correlation_id.unwrap_or_else(random_uuid);
    let (broker, service_id) = match (
        service.resolved_broker(&ProcessEnv),
        service.resolved_service_id(&ProcessEnv),
    ) {
        (Ok(b), Ok(id)) => (b, id),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let q = &service.queues;
    let mut portal =
        match crate::upstream::hca::Portal::connect(&broker, &service_id, &q.inbound, &q.outbound)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    if let Err(e) = portal.send(&message_type, &correlation_id, &body).await {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "sent {message_type} to {} (correlation id {correlation_id})",
        q.inbound
    );
    match portal
        .reply_to(
            &correlation_id,
            std::time::Duration::from_secs(args.timeout),
        )
        .await
    {
        Ok(Some(reply)) => {
            if reply.message_type == service.message_types.ping {
                println!("{}: still alive", reply.message_type);
            } else {
                println!("{} {}", reply.message_type, reply.body);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "error: no reply on {} within {} s: is the coordinator running with this service?",
                q.outbound, args.timeout
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
