//! The STOMP consumer against the real RabbitMQ (Web-STOMP on
//! 127.0.0.1:15674/ws, management API on 127.0.0.1:15672, both started by
//! `deploy/services.sh up`). Every test works in a vhost of its own, made
//! and removed through the management API.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use waldur_runtime::secret::Secret;
use waldur_stomp::client::{self, ConsumerState, Message};

use support::{Consumer, QUEUE, Vhost, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_and_after_connecting_are_handled_in_order_and_acked() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    for i in 0..3 {
        v.publish(QUEUE, &format!("m{i}")).await;
    }
    let c = Consumer::start(v.config(QUEUE));
    c.connected().await;
    for i in 3..6 {
        v.publish(QUEUE, &format!("m{i}")).await;
    }
    c.handled(6).await;
    let want: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    assert_eq!(c.bodies(), want);
    let state = c.state.clone();
    until("six acks", Duration::from_secs(10), || {
        let acked = state.acked();
        async move { acked == 6 }
    })
    .await;
    assert_eq!(state.received(), 6);
    assert_eq!(state.connects(), 1);
    c.stop().await;
    assert!(!state.connected());
    // Unacknowledged messages would be back in the queue after DISCONNECT.
    assert_eq!(v.peek(QUEUE).await, Vec::<Value>::new());
    let v = &v;
    until(
        "the queue to be empty",
        Duration::from_secs(30),
        || async move { v.messages(QUEUE).await == Some(0) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_handler_never_finished_is_redelivered_to_the_next_consumer() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    v.publish(QUEUE, "important").await;

    // The first consumer's handler blocks for ever; the test aborts the
    // consume task while the handler runs, as a crash would.
    let (started, mut seen) = mpsc::unbounded_channel::<(String, bool)>();
    let first_state = ConsumerState::default();
    let first = tokio::spawn(client::consume(
        v.config(QUEUE),
        first_state.clone(),
        move |m: Message| {
            let started = started.clone();
            async move {
                let _ = started.send((String::from_utf8(m.body).unwrap(), m.redelivered));
                std::future::pending::<()>().await;
            }
        },
        std::future::pending::<()>(),
    ));
    let (body, redelivered) = tokio::time::timeout(Duration::from_secs(20), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((body.as_str(), redelivered), ("important", false));
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(first_state.acked(), 0);

    let second = Consumer::start(v.config(QUEUE));
    second.handled(1).await;
    assert_eq!(
        second.handled.lock().unwrap().clone(),
        vec![("important".to_owned(), true)]
    );
    let state = second.state.clone();
    until(
        "the redelivered message to be acked",
        Duration::from_secs(10),
        || {
            let acked = state.acked();
            async move { acked == 1 }
        },
    )
    .await;
    second.stop().await;
    assert_eq!(v.peek(QUEUE).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wrong_credentials_the_consumer_retries_until_they_become_valid() {
    // The vhost exists but guest may not use it yet: CONNECT is refused.
    let v = Vhost::new(false).await;
    let c = Consumer::start(v.config(QUEUE));
    let state = c.state.clone();
    until("several refused attempts", Duration::from_secs(20), || {
        let attempts = state.attempts();
        async move { attempts >= 3 }
    })
    .await;
    assert_eq!(state.connects(), 0);
    assert!(!state.connected());
    assert!(!c.task.is_finished());

    v.grant().await;
    v.declare(QUEUE).await;
    c.connected().await;
    assert_eq!(state.connects(), 1);
    v.publish(QUEUE, "finally").await;
    c.handled(1).await;
    assert_eq!(c.bodies(), vec!["finally".to_owned()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_is_retried_until_it_exists() {
    let v = Vhost::new(true).await;
    let c = Consumer::start(v.config(QUEUE));
    let state = c.state.clone();
    until(
        "several failed subscriptions",
        Duration::from_secs(20),
        || {
            let attempts = state.attempts();
            async move { attempts >= 3 }
        },
    )
    .await;
    assert_eq!(state.connects(), 0);
    v.declare(QUEUE).await;
    v.publish(QUEUE, "late").await;
    c.handled(1).await;
    assert_eq!(c.bodies(), vec!["late".to_owned()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reconnects_after_the_broker_closes_the_connection() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    let c = Consumer::start(v.config(QUEUE));
    c.connected().await;
    v.publish(QUEUE, "before").await;
    c.handled(1).await;

    // The management API lists a connection once its statistics arrive.
    let mut names = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while names.is_empty() {
        assert!(Instant::now() < deadline, "the connection never showed up");
        tokio::time::sleep(Duration::from_millis(100)).await;
        names = v.connections().await;
    }
    for name in &names {
        v.close_connection(name).await;
    }
    let state = c.state.clone();
    until("a reconnect", Duration::from_secs(20), || {
        let (connects, connected) = (state.connects(), state.connected());
        async move { connects >= 2 && connected }
    })
    .await;
    v.publish(QUEUE, "after").await;
    c.handled(2).await;
    assert_eq!(c.bodies(), vec!["before".to_owned(), "after".to_owned()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_heartbeats_keep_an_idle_connection_up() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    let mut config = v.config(QUEUE);
    config.heartbeat = Duration::from_secs(1);
    let c = Consumer::start(config);
    c.connected().await;
    // Idle for well over twice the interval, in both directions: a side that
    // did not send its heart-beats would be dropped by the other.
    let idle_until = Instant::now() + Duration::from_millis(3_500);
    while Instant::now() < idle_until {
        assert!(c.state.connected(), "the connection dropped while idle");
        assert_eq!(c.state.connects(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v.publish(QUEUE, "still there").await;
    c.handled(1).await;
    assert_eq!(c.state.connects(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_running_handler_and_acks_its_message() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    v.publish(QUEUE, "slow").await;
    let state = ConsumerState::default();
    let (entered, mut entered_rx) = mpsc::unbounded_channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(client::consume(
        v.config(QUEUE),
        state.clone(),
        move |_m: Message| {
            let entered = entered.clone();
            let released = released.lock().unwrap().take();
            async move {
                let _ = entered.send(());
                if let Some(r) = released {
                    let _ = r.await;
                }
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(Duration::from_secs(20), entered_rx.recv())
        .await
        .unwrap()
        .unwrap();
    stop.send(()).unwrap();
    // The handler is still running: the consumer must not stop yet.
    let mut task = task;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut task)
            .await
            .is_err(),
        "the consumer stopped while its handler was running"
    );
    assert_eq!(state.acked(), 0);
    release.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.acked(), 1);
    assert!(!state.connected());
    assert_eq!(v.peek(QUEUE).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_utf8_is_handed_over_and_the_next_message_follows() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    v.publish_bytes(QUEUE, &[0xff, 0xfe, b'{']).await;
    v.publish(QUEUE, "after").await;
    let c = Consumer::start(v.config(QUEUE));
    c.handled(2).await;
    assert_eq!(
        c.bodies(),
        vec!["\u{fffd}\u{fffd}{".to_owned(), "after".to_owned()]
    );
    let state = c.state.clone();
    until("both acked", Duration::from_secs(10), || {
        let acked = state.acked();
        async move { acked == 2 }
    })
    .await;
    assert_eq!(state.connects(), 1, "no reconnect");
    c.stop().await;
    assert_eq!(v.peek(QUEUE).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_acknowledged_unhandled_and_the_queue_moves_on() {
    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    v.publish(QUEUE, &"x".repeat(300_000)).await;
    v.publish(QUEUE, "after").await;
    let mut config = v.config(QUEUE);
    config.max_frame_bytes = 4096;
    config.max_message_bytes = 4096;
    let c = Consumer::start(config);
    c.handled(2).await;
    let bodies = c.bodies();
    assert!(
        bodies[0].starts_with("refused: message of 300")
            && bodies[0].contains("exceeds events.max_message_bytes (4096)"),
        "{bodies:?}"
    );
    assert_eq!(bodies[1], "after");
    let state = c.state.clone();
    until("both acked", Duration::from_secs(10), || {
        let acked = state.acked();
        async move { acked == 2 }
    })
    .await;
    assert_eq!(state.connects(), 1, "no reconnect");
    c.stop().await;
    assert_eq!(v.peek(QUEUE).await, Vec::<Value>::new());
}

/// Log lines written by the code under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, from a global subscriber: a
/// thread-local one races the callsite interest cache of the other tests'
/// threads and sometimes misses lines.
fn logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

#[tokio::test]
async fn a_refused_login_is_logged_with_the_broker_message_and_never_the_passcode() {
    let logs = logs();

    let v = Vhost::new(true).await;
    v.declare(QUEUE).await;
    let passcode = format!("not-the-password-{}", std::process::id());
    let mut config = v.config(QUEUE);
    config.passcode = Secret::new(passcode.clone());
    let c = Consumer::start(config);
    let state = c.state.clone();
    until("two refused attempts", Duration::from_secs(20), || {
        let attempts = state.attempts();
        async move { attempts >= 2 }
    })
    .await;
    c.stop().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("stomp connection failed"), "{text}");
    assert!(text.contains("broker error"), "{text}");
    assert!(text.contains("attempt=2"), "{text}");
    assert!(!text.contains(&passcode), "{text}");
}
