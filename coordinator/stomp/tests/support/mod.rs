//! What the STOMP tests share: a RabbitMQ vhost per test, a consumer run in
//! the background, and a deadline wait.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use waldur_runtime::secret::Secret;
use waldur_stomp::client::{self, ConsumerState, Message, StompConfig};

pub const WS_URL: &str = "ws://127.0.0.1:15674/ws";
pub const API: &str = "http://127.0.0.1:15672/api";
pub const QUEUE: &str = "subscription_abc_offering_def_order";

/// A vhost of this test, removed on drop.
pub struct Vhost {
    pub name: String,
    pub http: reqwest::Client,
}

impl Vhost {
    /// A fresh vhost; `grant` gives guest its permissions at once.
    pub async fn new(grant: bool) -> Self {
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

    pub async fn call(
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

    pub async fn grant(&self) {
        self.call(
            reqwest::Method::PUT,
            &format!("permissions/{}/guest", self.name),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .error_for_status()
        .unwrap();
    }

    pub async fn declare(&self, queue: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("queues/{}/{queue}", self.name),
            Some(json!({"durable": true})),
        )
        .await
        .error_for_status()
        .unwrap();
    }

    pub async fn publish(&self, queue: &str, payload: &str) {
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
    pub async fn publish_bytes(&self, queue: &str, payload: &[u8]) {
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
    pub async fn messages(&self, queue: &str) -> Option<u64> {
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
    pub async fn peek(&self, queue: &str) -> Vec<Value> {
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
    pub async fn connections(&self) -> Vec<String> {
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

    pub async fn close_connection(&self, name: &str) {
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

    pub fn config(&self, queue: &str) -> StompConfig {
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

pub async fn until<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running consumer that records the bodies it handled.
pub struct Consumer {
    pub state: ConsumerState,
    pub handled: Arc<Mutex<Vec<(String, bool)>>>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    pub fn start(config: StompConfig) -> Self {
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

    pub fn bodies(&self) -> Vec<String> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }

    pub async fn connected(&self) {
        let state = self.state.clone();
        until("the consumer to subscribe", Duration::from_secs(20), || {
            let connected = state.connected();
            async move { connected }
        })
        .await;
    }

    pub async fn handled(&self, n: usize) {
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

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the consumer stops")
            .unwrap();
    }
}
