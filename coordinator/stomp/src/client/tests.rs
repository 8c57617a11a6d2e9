use super::conn::{broker_error, negotiate, tls_config};
use super::*;

#[test]
fn heartbeats_are_negotiated_per_stomp_1_2() {
    let s = Duration::from_millis;
    assert_eq!(
        negotiate(10_000, Some("10000,10000")),
        (Some(s(10_000)), Some(s(10_000)))
    );
    // We send at max(cx, sy) and expect at max(cy, sx).
    assert_eq!(
        negotiate(1_000, Some("5000,2000")),
        (Some(s(2_000)), Some(s(5_000)))
    );
    assert_eq!(negotiate(1_000, Some("0,2000")), (Some(s(2_000)), None));
    assert_eq!(negotiate(1_000, Some("2000,0")), (None, Some(s(2_000))));
    assert_eq!(negotiate(0, Some("2000,2000")), (None, None));
    assert_eq!(negotiate(1_000, None), (None, None));
    assert_eq!(negotiate(1_000, Some("garbage")), (None, None));
    assert_eq!(
        negotiate(1_000, Some(" 3000 , 4000 ")),
        (Some(s(4_000)), Some(s(3_000)))
    );
}

#[test]
fn backoff_doubles_up_to_the_cap_with_at_most_a_quarter_of_jitter() {
    let s = Duration::from_secs;
    for (failures, base) in [(0, 1), (1, 2), (2, 4), (6, 64), (7, 120), (40, 120)] {
        for _ in 0..50 {
            let d = backoff(s(1), s(120), failures);
            assert!(
                d >= s(base) && d <= s(base).mul_f64(1.25),
                "{failures}: {d:?}"
            );
        }
    }
    let d = backoff(Duration::from_millis(50), Duration::from_millis(200), 10);
    assert!(d <= Duration::from_millis(250));
}

#[test]
fn defaults_match_the_original_agent() {
    let c = StompConfig::new("ws://h/ws", "v", "l", Secret::new("p"), "q");
    assert_eq!(c.heartbeat, Duration::from_secs(10));
    assert_eq!(c.prefetch, 16);
    assert_eq!(c.initial_backoff, Duration::from_secs(1));
    assert_eq!(c.max_backoff, Duration::from_secs(120));
    assert_eq!(c.max_frame_bytes, 4 << 20);
    assert!(!format!("{c:?}").contains("\"p\""));
}

#[test]
fn broker_errors_name_the_message_and_never_the_passcode() {
    let f = Frame::new("ERROR")
        .header("message", "Bad CONNECT")
        .body(&b"Access refused for user 'u' with passcode hunter2\n"[..]);
    let text = broker_error(&f, Some(&Secret::new("hunter2")));
    assert_eq!(
        text,
        "broker error: Bad CONNECT: Access refused for user 'u' with passcode <redacted>"
    );
}

#[test]
fn messages_expose_headers_and_the_redelivered_flag() {
    let m = Message::from_frame(
        Frame::new("MESSAGE")
            .header("destination", "/queue/q")
            .header("redelivered", "true")
            .body(&b"{}"[..]),
    );
    assert!(m.redelivered);
    assert_eq!(m.destination(), Some("/queue/q"));
    assert_eq!(m.header("missing"), None);
}

#[test]
fn a_tls_config_with_the_native_roots_is_built() {
    assert!(tls_config().is_ok());
}
