//! The STOMP consumer against the real RabbitMQ (Web-STOMP on
//! 127.0.0.1:15674/ws, management API on 127.0.0.1:15672, both started by
//! `deploy/services.sh up`). Every test works in a vhost of its own, made
//! and removed through the management API.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use waldur_runtime::secret::Secret;
use waldur_stomp::client::{self, ConsumerState, Message, StompConfig};

const WS_URL: &str = "ws://127.0.0.1:15674/ws";
const API: &str = "http://127.0.0.1:15672/api";
const QUEUE: &str = "subscription_abc_offering_def_order";

/// A vhost of this test, removed on drop.
struct Vhost {
    name: String,
    http: reqwest::Client,
}

impl Vhost {
    /// A fresh vhost; `grant` gives guest its permissions at once.
    async fn new(grant: bool) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "stomp-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let v = Self {
            name,
            http: reqwest::Client::new(),
        };
        v.call(reqwest::Method::DELETE, &format!("vhosts/{}", v.name), None)
            .await;
        v.call(
            reqwest::Method::PUT,
            &format!("vhosts/{}", v.name),
            Some(json!({})),
        )
        .await
        .error_for_status()
        .unwrap();
        if grant {
            v.grant().await;
        }
        v
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{API}/{path}"))
            .basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn grant(&self) {
        self.call(
            reqwest::Method::PUT,
            &format!("permissions/{}/guest", self.name),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .error_for_status()
        .unwrap();
    }

    async fn declare(&self, queue: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("queues/{}/{queue}", self.name),
            Some(json!({"durable": true})),
        )
        .await
        .error_for_status()
        .unwrap();
    }

    async fn publish(&self, queue: &str, payload: &str) {
        let r: Value = self
            .call(
                reqwest::Method::POST,
                &format!("exchanges/{}/amq.default/publish", self.name),
                Some(json!({"properties": {}, "routing_key": queue, "payload": payload, "payload_encoding": "string"})),
            )
            .await
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["routed"], true, "{r}");
    }

    /// Publishes raw bytes (not necessarily UTF-8).
    async fn publish_bytes(&self, queue: &str, payload: &[u8]) {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut encoded = String::new();
        for chunk in payload.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    encoded.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    encoded.push('=');
                }
            }
        }
        let r: Value = self
            .call(
                reqwest::Method::POST,
                &format!("exchanges/{}/amq.default/publish", self.name),
                Some(json!({"properties": {}, "routing_key": queue, "payload": encoded, "payload_encoding": "base64"})),
            )
            .await
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["routed"], true, "{r}");
    }

    /// Messages ready or unacknowledged, as the management statistics say
    /// (they lag by up to the statistics interval).
    async fn messages(&self, queue: &str) -> Option<u64> {
        let r: Value = self
            .call(
                reqwest::Method::GET,
                &format!("queues/{}/{queue}", self.name),
                None,
            )
            .await
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        r["messages"].as_u64()
    }

    /// The messages ready in the queue right now (taken and requeued).
    async fn peek(&self, queue: &str) -> Vec<Value> {
        self.call(
            reqwest::Method::POST,
            &format!("queues/{}/{queue}/get", self.name),
            Some(json!({"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"})),
        )
        .await
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    /// The names of the broker's connections to this vhost.
    async fn connections(&self) -> Vec<String> {
        let all: Vec<Value> = self
            .call(reqwest::Method::GET, "connections", None)
            .await
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        all.iter()
            .filter(|c| c["vhost"] == self.name.as_str())
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    async fn close_connection(&self, name: &str) {
        let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let encoded = encoded.replace('+', "%20");
        let r = self
            .call(
                reqwest::Method::DELETE,
                &format!("connections/{encoded}"),
                None,
            )
            .await;
        assert!(
            r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND,
            "closing {name}: {}",
            r.status()
        );
    }

    fn config(&self, queue: &str) -> StompConfig {
        let mut c = StompConfig::new(WS_URL, &self.name, "guest", Secret::new("guest"), queue);
        c.initial_backoff = Duration::from_millis(50);
        c.max_backoff = Duration::from_millis(200);
        c.heartbeat = Duration::from_secs(2);
        c
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: remove the vhost from a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(format!("{API}/vhosts/{name}"))
                    .basic_auth("guest", Some("guest"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
    }
}

async fn until<F: Future<Output = bool>>(what: &str, limit: Duration, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running consumer that records the bodies it handled.
struct Consumer {
    state: ConsumerState,
    handled: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    fn start(config: StompConfig) -> Self {
        let state = ConsumerState::default();
        let handled = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let record = handled.clone();
        let task = tokio::spawn(client::consume(
            config,
            state.clone(),
            move |m: Message| {
                let record = record.clone();
                async move {
                    let body = match &m.refused {
                        Some(why) => format!("refused: {why}"),
                        None => String::from_utf8_lossy(&m.body).into_owned(),
                    };
                    record.lock().unwrap().push((body, m.redelivered));
                }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            state,
            handled,
            stop: Some(stop),
            task,
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }

    async fn connected(&self) {
        let state = self.state.clone();
        until("the consumer to subscribe", Duration::from_secs(20), || {
            let connected = state.connected();
            async move { connected }
        })
        .await;
    }

    async fn handled(&self, n: usize) {
        let handled = self.handled.clone();
        until(
            &format!("{n} messages handled"),
            Duration::from_secs(20),
            || {
                let len = handled.lock().unwrap().len();
                async move { len >= n }
            },
        )
        .await;
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the consumer stops")
            .unwrap();
    }
}

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

/// What the fake broker does once a client subscribed.
#[derive(Clone, Copy)]
enum AfterSubscribe {
    /// Nothing at all: no heart-beats, no frames (but it keeps reading).
    FallSilent,
    /// Sends a frame without its terminating NUL.
    SendGarbage,
}

/// A minimal Web-STOMP server on a free loopback port: answers CONNECT with
/// `heart-beat:300,300` and SUBSCRIBE with its receipt. Returns the URL and
/// the number of sessions that subscribed.
// tungstenite's handshake callback type fixes its large error type.
#[allow(clippy::result_large_err)]
async fn fake_broker(then: AfterSubscribe) -> (String, Arc<AtomicUsize>) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use waldur_stomp::codec::{self as stomp, Decoded, Frame};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let subscribed = Arc::new(AtomicUsize::new(0));
    let count = subscribed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let offer = |_: &Request, mut response: Response| {
                    response.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        HeaderValue::from_static("v12.stomp"),
                    );
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, offer).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    let Ws::Text(text) = m else { continue };
                    let Ok(Decoded::Frame(f)) = stomp::decode(text.as_bytes(), 1 << 20) else {
                        continue;
                    };
                    let reply = match f.command.as_str() {
                        "CONNECT" => Frame::new("CONNECTED")
                            .header("version", "1.2")
                            .header("heart-beat", "300,300"),
                        "SUBSCRIBE" => Frame::new("RECEIPT")
                            .header("receipt-id", f.get("receipt").unwrap_or_default()),
                        _ => continue,
                    };
                    let reply = String::from_utf8(reply.encode()).unwrap() + "\n";
                    if ws.send(Ws::text(reply)).await.is_err() {
                        return;
                    }
                    if f.command == "SUBSCRIBE" {
                        count.fetch_add(1, Ordering::SeqCst);
                        if let AfterSubscribe::SendGarbage = then {
                            let _ = ws.send(Ws::text("MESSAGE\nack:1\n\nno nul")).await;
                        }
                    }
                }
            });
        }
    });
    (url, subscribed)
}

fn fake_config(url: &str) -> StompConfig {
    let mut c = StompConfig::new(url, "v", "l", Secret::new("p"), QUEUE);
    c.heartbeat = Duration::from_millis(300);
    c.initial_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(200);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_sending_heartbeats_is_left_and_reconnected() {
    let (url, subscribed) = fake_broker(AfterSubscribe::FallSilent).await;
    let c = Consumer::start(fake_config(&url));
    c.connected().await;
    let started = Instant::now();
    let state = c.state.clone();
    until(
        "a reconnect after the silence",
        Duration::from_secs(10),
        || {
            let connects = state.connects();
            async move { connects >= 2 }
        },
    )
    .await;
    // Declared dead after twice the negotiated 300 ms, not before.
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert!(subscribed.load(Ordering::SeqCst) >= 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_frame_is_acknowledged_with_its_reason_and_never_handled() {
    let (url, subscribed) = fake_broker(AfterSubscribe::SendGarbage).await;
    let c = Consumer::start(fake_config(&url));
    c.handled(1).await;
    let state = c.state.clone();
    until(
        "the malformed message acked",
        Duration::from_secs(10),
        || {
            let acked = state.acked();
            async move { acked == 1 }
        },
    )
    .await;
    let bodies = c.bodies();
    assert!(
        bodies[0].starts_with("refused: malformed frame"),
        "{bodies:?}"
    );
    assert_eq!(state.connects(), 1, "no reconnect");
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    c.stop().await;
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
