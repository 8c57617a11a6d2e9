//! The admin HTTP port (`admin.listen`): `/` and `/status.json` (the status
//! view of [`crate::runtime::status`]), `/metrics` (Prometheus),
//! `/healthz` (the process is alive: always 200, so a restart never fixes a
//! Waldur outage) and `/readyz` (Waldur answers for every offering, every
//! backend is ready, every enabled broker link is connected; 503 listing
//! what is not).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::runtime::Coordinator;

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: Arc<Coordinator>,
) -> std::io::Result<()> {
    let (page, json) = (coordinator.clone(), coordinator.clone());
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let c = page.clone();
                async move {
                    axum::response::Html(crate::runtime::status::html(
                        &crate::runtime::status::status(&c),
                    ))
                }
            }),
        )
        .route(
            "/status.json",
            get(move || {
                let c = json.clone();
                async move { axum::Json(crate::runtime::status::status(&c)) }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        waldur_runtime::exposition::CONTENT_TYPE,
                    )],
                    crate::metrics::encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let c = coordinator.clone();
                async move {
                    let (ready, text) = readiness(&c).await;
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, text)
                }
            }),
        );
    axum::serve(listener, app).await
}

pub use crate::runtime::status::describe_link;

/// Every readiness check, one line each (`ok ...` or `fail ...`).
pub async fn readiness(c: &Coordinator) -> (bool, String) {
    const LIMIT: Duration = Duration::from_secs(3);
    let mut lines = Vec::new();
    let waldur = futures::future::join_all(c.offerings.iter().map(|o| async move {
        let r = tokio::time::timeout(
            LIMIT,
            o.waldur
                .provider_offering(&o.config.offering_uuid, &["uuid"]),
        )
        .await;
        let problem = match r {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 3 s".to_owned()),
        };
        (format!("waldur {}", o.config.name), problem)
    }));
    let backends = futures::future::join_all(c.backends.iter().map(|(name, b)| async move {
        let problem = match tokio::time::timeout(LIMIT, b.probe()).await {
            Ok(Ok(p)) if p.ready => None,
            Ok(Ok(p)) => Some(format!("not ready: {}", p.message)),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 3 s".to_owned()),
        };
        // A dial-in backend says how it is connected.
        let label = match b.link_status() {
            None => format!("backend {name} (direct)"),
            Some(l) => format!("backend {name} ({})", describe_link(&l)),
        };
        (label, problem)
    }));
    let (waldur, backends) = futures::join!(waldur, backends);
    lines.extend(waldur);
    lines.extend(backends);
    for o in &c.offerings {
        if !o.config.tasks.events {
            continue;
        }
        // Every object type the offering subscribes to must be consuming,
        // not just the ones registered so far.
        let expected =
            tokio::time::timeout(LIMIT, crate::runtime::events::consumers::object_types(o)).await;
        let problem = {
            let consumers = o.consumers.lock().unwrap_or_else(|p| p.into_inner());
            let missing: Vec<&str> = match &expected {
                Ok(types) => types
                    .iter()
                    .copied()
                    .filter(|t| !consumers.iter().any(|(c, s)| c == t && s.connected()))
                    .collect(),
                Err(_) => vec!["(backend capabilities unknown)"],
            };
            (!missing.is_empty()).then(|| format!("not consuming: {}", missing.join(", ")))
        };
        lines.push((format!("events {}", o.config.name), problem));
    }
    for (service, link) in &c.hca {
        let problem = (!link.connected()).then(|| "not connected to the broker".to_owned());
        lines.push((format!("helmholtz {}", service.config.name), problem));
    }
    let ready = lines.iter().all(|(_, p)| p.is_none());
    let mut text: String = lines
        .iter()
        .map(|(what, p)| match p {
            None => format!("ok {what}\n"),
            Some(p) => format!("fail {what}: {p}\n"),
        })
        .collect();
    // A tripped breaker leaves the coordinator working (constructive work
    // goes on) but needs an operator: degraded, not unready.
    for o in &c.offerings {
        if let Some(t) = o.membership.as_ref().and_then(|m| m.processor.tripped()) {
            text.push_str(&format!(
                "degraded breaker {}: {}\n",
                o.config.name, t.message
            ));
        }
    }
    (ready, text)
}
