//! The STOMP consumer against a fake Web-STOMP server that misbehaves:
//! silent after subscribing, or sending garbage.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use waldur_runtime::secret::Secret;
use waldur_stomp::client::StompConfig;

use support::{Consumer, QUEUE, until};

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
