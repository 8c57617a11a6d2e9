//! The broker restarts in the middle of a stream of Helmholtz Cloud
//! requests, with creates slow enough that some are in flight: every
//! request sent before and after the restart is answered (a request whose
//! answer was confirmed just before the restart may be answered twice, with
//! the same id) and provisioned exactly once. Its own test binary, so the
//! restart disturbs no other test.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::hca::{Gated, Setup, compute, example};
use waldur_coordinator::upstream::hca::Portal;

async fn send(portal: &Portal, range: std::ops::Range<usize>) {
    for i in range {
        let id = format!("stream-{i}");
        portal
            .send("ResourceAllocateV1", &id, &compute(&id, 5))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_a_stream_loses_no_request() {
    let backend = example();
    let s = Setup::new(Arc::new(Gated::new(
        backend.clone(),
        Duration::from_millis(400),
        false,
    )))
    .await;
    let (_c, run) = s.start().await;
    let mut portal = s.portal().await;
    const N: usize = 12;
    send(&portal, 0..N / 2).await;
    let mut answered: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    fn note(
        answered: &mut std::collections::BTreeMap<String, Vec<serde_json::Value>>,
        m: waldur_coordinator::upstream::hca::PortalMessage,
    ) {
        assert_eq!(m.message_type, "ResourceCreatedV1", "{:?}", m.body);
        answered.entry(m.correlation_id).or_default().push(m.body);
    }
    // Two answered, the rest still being created or queued.
    let mut first = 0;
    while first < 2 {
        if let Some(m) = portal.next(Duration::from_secs(30)).await.unwrap() {
            note(&mut answered, m);
            first += 1;
        }
    }
    drop(portal);
    support::rabbitmqctl(&["stop_app"]);
    support::rabbitmqctl(&["start_app"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut portal = loop {
        match Portal::connect(&s.vhost.broker(), &s.service_id, "to_hca", "to_portal").await {
            Ok(p) => break p,
            Err(e) => {
                assert!(Instant::now() < deadline, "broker did not come back: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    send(&portal, N / 2..N).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..N).any(|i| !answered.contains_key(&format!("stream-{i}"))) {
        assert!(
            Instant::now() < deadline,
            "unanswered: {:?}",
            (0..N)
                .filter(|i| !answered.contains_key(&format!("stream-{i}")))
                .collect::<Vec<_>>()
        );
        if let Some(m) = portal.next(Duration::from_secs(5)).await.unwrap() {
            note(&mut answered, m);
        }
    }
    for (id, bodies) in &answered {
        assert!(
            bodies.iter().all(|b| b == &bodies[0]),
            "{id} answered differently: {bodies:?}"
        );
    }
    assert_eq!(backend.resource_count(), N);
    run.abort();
}
