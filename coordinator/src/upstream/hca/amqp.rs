//! The AMQP 0-9-1 side (lapin): one consumer per service on `to_hca`,
//! replies on `to_portal` with publisher confirms, reconnect with capped
//! backoff and jitter, and a [`Portal`] that plays Helmholtz Cloud for the
//! `mock-portal` subcommand and the tests.
//!
//! Delivery is at least once: a request is acknowledged only after the
//! broker confirmed its reply, so a crash or a lost connection before that
//! redelivers it, and provisioning by correlation id makes the second
//! handling answer with the same resource. A crash between the confirm and
//! the acknowledgement answers twice, with the same answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use waldur_runtime::span;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tracing::Instrument;

use super::config::ResolvedBroker;
use super::service::{HcaService, Outcome, Reply};

/// Connection state of one service's consumer (readiness, tests).
#[derive(Debug, Default)]
pub struct LinkState {
    connected: AtomicBool,
}

impl LinkState {
    /// True while consuming.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Why the broker link failed: the consumer reconnects, `check` and the
/// mock portal report it. Texts name the broker and user, never the
/// password, and point at the setting behind the usual refusals.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The CA bundle cannot be read.
    #[error("broker.ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer from the broker in time.
    #[error(
        "broker {at}: no answer within 15 s (check broker host, port and tls, or HCA_RABBITMQ_HOSTNAME, HCA_RABBITMQ_PORT, HCA_RABBITMQ_USE_SSL)"
    )]
    NoAnswer {
        /// `amqp(s)://user@host:port/vhost`.
        at: String,
    },
    /// The broker refused the connection, or it failed.
    #[error("broker {at}: {text}{hint}")]
    Connect {
        /// `amqp(s)://user@host:port/vhost`.
        at: String,
        /// The library's text, password scrubbed.
        text: String,
        /// The setting to check.
        hint: &'static str,
    },
    /// An AMQP operation failed.
    #[error("{what}: {source}")]
    Amqp {
        /// What was being done.
        what: String,
        /// The library's error.
        #[source]
        source: lapin::Error,
    },
    /// A published message came back: its queue does not exist.
    #[error("queue {0} does not exist: the reply was returned")]
    Unroutable(String),
    /// The broker refused a published message.
    #[error("the broker refused the {0}")]
    Nacked(&'static str),
    /// The broker ended a consumer.
    #[error("the broker closed the reply consumer")]
    ConsumerClosed,
    /// A reply that cannot be encoded.
    #[error("encoding the reply: {0}")]
    Encode(#[from] serde_json::Error),
}

fn amqp(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Amqp { what, source }
}

/// Opens a connection to the broker (TLS with the system roots or the
/// configured CA bundle). Errors name the host and user, never the password.
pub async fn connect(broker: &ResolvedBroker, name: &str) -> Result<Connection, LinkError> {
    let uri = AMQPUri {
        scheme: if broker.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: broker.username.clone(),
                password: broker.password.expose().to_owned(),
            },
            host: broker.host.clone(),
            port: broker.port,
        },
        vhost: broker.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(30),
            connection_timeout: Some(10_000),
            ..Default::default()
        },
    };
    let tls = match &broker.ca_file {
        Some(path) => lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: Some(std::fs::read_to_string(path).map_err(|source| {
                LinkError::CaFile {
                    path: path.display().to_string(),
                    source,
                }
            })?),
        },
        None => lapin::tcp::OwnedTLSConfig::default(),
    };
    let runtime = lapin::runtime::default_runtime().map_err(amqp("starting the amqp runtime"))?;
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let at = format!(
        "{}://{}@{}:{}/{}",
        if broker.tls { "amqps" } else { "amqp" },
        broker.username,
        broker.host,
        broker.port,
        broker.vhost
    );
    tokio::time::timeout(
        Duration::from_secs(15),
        Connection::connect_uri_with_config(uri, props, tls, runtime),
    )
    .await
    .map_err(|_| LinkError::NoAnswer { at: at.clone() })?
    .map_err(|e| {
        let text = scrub(&e.to_string(), broker);
        LinkError::Connect {
            hint: hint(&text),
            at,
            text,
        }
    })
}

/// The setting behind the usual broker refusals.
fn hint(error: &str) -> &'static str {
    if error.contains("ACCESS_REFUSED") || error.contains("ACCESS-REFUSED") {
        " (check the broker user and password: broker username_*/password_* settings, or HCA_USERNAME and HCA_PASSWORD)"
    // rustls says "invalid peer certificate: certificate not valid for name":
    // the name check must come first.
    } else if error.contains("not valid for name") || error.contains("NotValidForName") {
        " (the broker's certificate does not name this host: broker.host must be a name the certificate carries)"
    } else if error.contains("invalid peer certificate") {
        " (the broker's certificate is not one this host trusts: check broker.ca_file, the CA bundle that signed it, and the certificate's dates)"
    } else if error.contains("NOT_ALLOWED") || error.contains("NOT-ALLOWED") {
        " (check broker.vhost, which defaults to the service id, HCA_SERVICE_ID, and the user's permissions on it)"
    } else {
        " (check broker host, port and tls, or HCA_RABBITMQ_HOSTNAME, HCA_RABBITMQ_PORT, HCA_RABBITMQ_USE_SSL)"
    }
}

/// Removes the password from a broker error, whatever the library put in it.
fn scrub(text: &str, broker: &ResolvedBroker) -> String {
    let p = broker.password.expose();
    if p.is_empty() {
        text.to_owned()
    } else {
        text.replace(p, "<redacted>")
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Consumes the service's inbound queue until `stop` turns true,
/// reconnecting after any failure with capped exponential backoff and
/// jitter. On stop no new request is taken, the running ones finish (30 s
/// at most) and acknowledge, then the connection is closed.
pub async fn run(
    service: Arc<HcaService>,
    state: Arc<LinkState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let max = Duration::from_secs(service.config.max_backoff_seconds.max(1));
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = consume(&service, &state, &mut stop).await;
        // A session that got as far as consuming was a good one: the next
        // reconnect starts from the shortest backoff again.
        if state.connected() {
            backoff = Duration::from_millis(500);
        }
        state.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Closed) => {
                tracing::warn!(service = %service.config.name, "broker closed the consumer; reconnecting")
            }
            Err(e) => {
                tracing::warn!(service = %service.config.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "helmholtz cloud broker unavailable")
            }
        }
        let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 4);
        tokio::select! {
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Resolves once `stop` is true (never, if its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How a consuming session ended without an error.
enum Ended {
    /// Asked to stop; in-flight requests finished.
    Stopped,
    /// The broker ended the consumer.
    Closed,
}

async fn consume(
    service: &Arc<HcaService>,
    state: &LinkState,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Ended, LinkError> {
    let cfg = &service.config;
    let conn = connect(&service.broker, &format!("waldur-coordinator {}", cfg.name)).await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(amqp("opening a channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("enabling publisher confirms"))?;
    channel
        .basic_qos(cfg.prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(amqp("setting the prefetch"))?;
    if cfg.declare_queues {
        for q in [&cfg.queues.inbound, &cfg.queues.outbound] {
            channel
                .queue_declare(q.as_str().into(), durable(), FieldTable::default())
                .await
                .map_err(amqp(format!("declaring queue {q}")))?;
        }
    }
    let mut consumer = channel
        .basic_consume(
            cfg.queues.inbound.as_str().into(),
            format!("waldur-coordinator-{}", cfg.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp(format!("consuming {}", cfg.queues.inbound)))?;
    state.connected.store(true, Ordering::Relaxed);
    tracing::info!(service = %cfg.name, queue = %cfg.queues.inbound, vhost = %service.broker.vhost, "consuming helmholtz cloud requests");
    // Requests run concurrently (at most `prefetch` are delivered unacked);
    // a request's handler owns its acknowledgement.
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let service = service.clone();
                    let channel = channel.clone();
                    running.spawn(async move { handle(&service, &channel, delivery).await });
                }
                Some(Err(e)) => return Err(amqp("consumer")(e)),
                None => return Ok(Ended::Closed),
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stopped(stop) => {
                // Take nothing new (unacknowledged prefetched requests go
                // back to the queue when the channel closes), let the
                // running ones answer and acknowledge.
                let _ = channel
                    .basic_cancel(consumer.tag(), lapin::options::BasicCancelOptions::default())
                    .await;
                let drained = tokio::time::timeout(Duration::from_secs(30), async {
                    while running.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    tracing::warn!(service = %cfg.name, "requests still running at shutdown; they will be redelivered");
                }
                let _ = conn.close(200, "shutting down".into()).await;
                tracing::info!(service = %cfg.name, "helmholtz cloud consumer stopped");
                return Ok(Ended::Stopped);
            }
        }
    }
}

async fn handle(service: &HcaService, channel: &Channel, delivery: lapin::message::Delivery) {
    let props = &delivery.properties;
    let message_type = props.kind().as_ref().map(|s| s.as_str().to_owned());
    let correlation_id = props
        .correlation_id()
        .as_ref()
        .map(|s| s.as_str().to_owned());
    let span = tracing::info_span!(
        parent: None,
        span::HCA_REQUEST,
        service = %service.config.name,
        message_type = message_type.as_deref().unwrap_or(""),
        correlation_id = correlation_id.as_deref().unwrap_or(""),
        redelivered = delivery.redelivered,
        outcome = tracing::field::Empty,
    );
    async {
        let outcome = service
            .handle(message_type.as_deref(), correlation_id.as_deref(), &delivery.data)
            .await;
        match outcome {
            Outcome::Reply { reply, outcome } => {
                tracing::Span::current().record(span::field::OUTCOME, outcome);
                crate::metrics::hca_request(&service.config.name, message_type.as_deref(), outcome);
                match publish(service, channel, &reply, correlation_id.as_deref()).await {
                    Ok(()) => {
                        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                            tracing::warn!(error = %e, "acknowledging the request failed; it will be redelivered and answered again");
                        } else if outcome == "pong" {
                            tracing::debug!("ping answered");
                        } else {
                            tracing::info!(outcome, "request answered");
                        }
                    }
                    Err(e) => {
                        // The outbound side is broken (queue missing, broker
                        // refusing): pause before the request comes back, or
                        // it would loop at full speed.
                        tracing::warn!(error = %e, "reply not confirmed; the request stays queued");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        let _ = delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
            }
            Outcome::Retry(why) => {
                tracing::Span::current().record(span::field::OUTCOME, "retry");
                crate::metrics::hca_request(&service.config.name, message_type.as_deref(), "retry");
                let attempt = attempts(&delivery.properties) + 1;
                let wait = retry_delay(attempt);
                tracing::info!(reason = %why, attempt, retry_in_s = wait.as_secs(), "request postponed");
                postpone(service, channel, delivery, attempt, wait).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// Header counting how often a request was postponed.
const ATTEMPTS_HEADER: &str = "x-waldur-attempts";

fn attempts(props: &BasicProperties) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER).cloned())
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// 2, 4, 8, ... seconds, at most 60.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(6)).min(60))
}

/// Puts a request the backend cannot serve yet at the tail of the inbound
/// queue: after `wait`, a copy (with the attempt count) is published and
/// confirmed, then the original is acknowledged. Requests behind it (pings,
/// other backends) are served meanwhile instead of queueing behind it, the
/// copy is a fresh message for quorum queues' delivery limits, and a crash
/// before the confirm leaves the original queued: nothing is lost.
async fn postpone(
    service: &HcaService,
    channel: &Channel,
    delivery: lapin::message::Delivery,
    attempt: u32,
    wait: Duration,
) {
    tokio::time::sleep(wait).await;
    let mut props = delivery.properties.clone();
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongUInt(attempt));
    props = props.with_headers(headers);
    let confirm = async {
        channel
            .basic_publish(
                "".into(),
                service.config.queues.inbound.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                props,
            )
            .await?
            .await
    }
    .await;
    match confirm {
        Ok(c) if c.is_ack() => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "acknowledging a postponed request failed; it may be handled twice");
            }
        }
        other => {
            tracing::warn!(result = ?other.map(|c| c.is_ack()), "postponing failed; the request goes back to the queue");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// Publishes a reply with the request's correlation id and the service id
/// header, and waits for the broker's confirm. An unroutable reply (no
/// outbound queue) is a failure, not a silent drop.
async fn publish(
    service: &HcaService,
    channel: &Channel,
    reply: &Reply,
    correlation_id: Option<&str>,
) -> Result<(), LinkError> {
    let body = serde_json::to_vec(&reply.body)?;
    let props = properties(&reply.message_type, correlation_id, &service.service_id);
    let confirm = channel
        .basic_publish(
            "".into(),
            service.config.queues.outbound.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            props,
        )
        .await
        .map_err(amqp("publishing the reply"))?
        .await
        .map_err(amqp("confirming the reply"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(LinkError::Unroutable(
            service.config.queues.outbound.clone(),
        )),
        Confirmation::Nack(_) => Err(LinkError::Nacked("reply")),
        Confirmation::NotRequested => Ok(()),
    }
}

fn properties(
    message_type: &str,
    correlation_id: Option<&str>,
    service_id: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "service_id".into(),
        AMQPValue::LongString(service_id.as_bytes().to_vec().into()),
    );
    let mut p = BasicProperties::default()
        .with_type(message_type.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(c) = correlation_id {
        p = p.with_correlation_id(c.into());
    }
    p
}

/// A message as the portal sees it.
#[derive(Debug, Clone)]
pub struct PortalMessage {
    /// The `type` property.
    pub message_type: String,
    /// The `correlation_id` property.
    pub correlation_id: String,
    /// The `service_id` header.
    pub service_id: String,
    /// The body.
    pub body: serde_json::Value,
}

/// Helmholtz Cloud's side of the protocol, for development and tests:
/// publishes requests to the inbound queue and reads replies from the
/// outbound one.
pub struct Portal {
    _conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    inbound: String,
    service_id: String,
}

impl Portal {
    /// Connects, declares both queues (durable) and starts reading replies.
    pub async fn connect(
        broker: &ResolvedBroker,
        service_id: &str,
        inbound: &str,
        outbound: &str,
    ) -> Result<Self, LinkError> {
        let conn = connect(broker, "waldur-coordinator mock-portal").await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("enabling publisher confirms"))?;
        for q in [inbound, outbound] {
            channel
                .queue_declare(q.into(), durable(), FieldTable::default())
                .await
                .map_err(amqp(format!("declaring queue {q}")))?;
        }
        let consumer = channel
            .basic_consume(
                outbound.into(),
                "mock-portal".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("consuming {outbound}")))?;
        Ok(Self {
            _conn: conn,
            channel,
            consumer,
            inbound: inbound.to_owned(),
            service_id: service_id.to_owned(),
        })
    }

    /// Messages ready in `queue` and consumers on it (a passive declare:
    /// exact, unlike the management API's sampled statistics).
    pub async fn queue_state(&self, queue: &str) -> Result<(u32, u32), LinkError> {
        let q = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("queue {queue}")))?;
        Ok((q.message_count(), q.consumer_count()))
    }

    /// Publishes a request (persistent, confirmed).
    pub async fn send(
        &self,
        message_type: &str,
        correlation_id: &str,
        body: &[u8],
    ) -> Result<(), LinkError> {
        let props = properties(message_type, Some(correlation_id), &self.service_id);
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.inbound.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .map_err(amqp("publishing the request"))?
            .await
            .map_err(amqp("confirming the request"))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(LinkError::Nacked("request"))
        }
    }

    /// The next reply (acknowledged), or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<PortalMessage>, LinkError> {
        let delivery = match tokio::time::timeout(timeout, self.consumer.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err(LinkError::ConsumerClosed),
            Ok(Some(Err(e))) => return Err(amqp("reading replies")(e)),
            Ok(Some(Ok(d))) => d,
        };
        let p = &delivery.properties;
        let text = |v: &Option<ShortString>| {
            v.as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default()
        };
        let service_id = p
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("service_id").cloned())
            .map(|v| match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        let message = PortalMessage {
            message_type: text(p.kind()),
            correlation_id: text(p.correlation_id()),
            service_id,
            body: serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
            }),
        };
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp("acknowledging a reply"))?;
        Ok(Some(message))
    }

    /// Waits for the reply to `correlation_id`, skipping others.
    pub async fn reply_to(
        &mut self,
        correlation_id: &str,
        timeout: Duration,
    ) -> Result<Option<PortalMessage>, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                None => return Ok(None),
                Some(m) if m.correlation_id == correlation_id => return Ok(Some(m)),
                Some(m) => {
                    tracing::debug!(correlation_id = %m.correlation_id, "skipping another reply")
                }
            }
        }
    }
}
