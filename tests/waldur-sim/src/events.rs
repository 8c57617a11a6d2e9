//! Event publishing the way Waldur does it: each event subscription's queue
//! lives on the real RabbitMQ, in the vhost of the subscribing user, readable
//! by a RabbitMQ user named after the subscription whose password is the API
//! token; state changes publish a JSON body to the queues of matching
//! subscriptions (object type and offering).
//!
//! The simulator talks to RabbitMQ through its management HTTP API: queue
//! set-up and publishing are both plain requests, so a broker restart needs
//! no reconnect logic here. Publishing retries until the broker takes the
//! message, in order, so a restart mid-stream loses no event.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One event to publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Observable object type (`order`, `user_role`, `resource`, ...).
    pub object_type: String,
    /// The offering whose subscribers receive it (hex).
    pub offering_uuid: String,
    /// The message body.
    pub body: Value,
}

/// How to reach RabbitMQ's management API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broker {
    /// For example `http://127.0.0.1:15672`.
    pub management_url: String,
    /// An administrator (guest works from localhost).
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            management_url: "http://127.0.0.1:15672".into(),
            user: "guest".into(),
            password: "guest".into(),
        }
    }
}

/// A management API client.
#[derive(Clone)]
pub(crate) struct Management {
    broker: Broker,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Management {
    pub(crate) fn new(broker: Broker) -> Self {
        Self {
            broker,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn put(&self, path: &str, body: Value) -> Result<(), String> {
        let url = format!("{}/api/{path}", self.broker.management_url);
        let r = self
            .http
            .put(&url)
            .basic_auth(&self.broker.user, Some(&self.broker.password))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("rabbitmq management {path}: {e}"))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("rabbitmq management {path}: HTTP {}", r.status()))
        }
    }

    /// Vhost, user, permissions and durable queue, idempotently.
    pub(crate) async fn set_up_queue(
        &self,
        vhost: &str,
        login: &str,
        password: &str,
        queue: &str,
    ) -> Result<(), String> {
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        self.put(&format!("vhosts/{}", enc(vhost)), json!({}))
            .await?;
        self.put(
            &format!("users/{}", enc(login)),
            json!({"password": password, "tags": ""}),
        )
        .await?;
        self.put(
            &format!("permissions/{}/{}", enc(vhost), enc(login)),
            all.clone(),
        )
        .await?;
        self.put(
            &format!("permissions/{}/{}", enc(vhost), enc(&self.broker.user)),
            all,
        )
        .await?;
        self.put(
            &format!("queues/{}/{}", enc(vhost), enc(queue)),
            json!({"durable": true, "auto_delete": false}),
        )
        .await
    }

    /// Publishes to a queue through the default exchange; `Ok(false)` when
    /// the queue does not exist (nothing routed).
    pub(crate) async fn publish(
        &self,
        vhost: &str,
        queue: &str,
        body: &Value,
    ) -> Result<bool, String> {
        let url = format!(
            "{}/api/exchanges/{}/amq.default/publish",
            self.broker.management_url,
            enc(vhost)
        );
        let r = self
            .http
            .post(&url)
            .basic_auth(&self.broker.user, Some(&self.broker.password))
            .json(&json!({
                "properties": {"delivery_mode": 2, "content_type": "application/json"},
                "routing_key": queue,
                // A string body is sent as is (tests of malformed messages).
                "payload": match body {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                },
                "payload_encoding": "string",
            }))
            .send()
            .await
            .map_err(|e| format!("publish to {queue}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("publish to {queue}: HTTP {}", r.status()));
        }
        let answer: Value = r.json().await.map_err(|e| e.to_string())?;
        Ok(answer["routed"].as_bool().unwrap_or(false))
    }
}
