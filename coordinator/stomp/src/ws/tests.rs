use super::*;

#[test]
fn the_accept_key_follows_rfc_6455() {
    // The example of RFC 6455 §1.3.
    let accept = base64(&sha1(
        format!("dGhlIHNhbXBsZSBub25jZQ=={ACCEPT_GUID}").as_bytes(),
    ));
    assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
}

fn conn_over(bytes: Vec<u8>, limits: Limits) -> WsConn {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let _ = server.write_all(&bytes).await;
        // Keep the server end open so the client never sees EOF early.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    WsConn {
        io: Box::new(client),
        buf: Vec::new(),
        limits,
        message: Vec::new(),
        message_size: 0,
        oversized: false,
        in_message: false,
        streaming: None,
        last_read: tokio::time::Instant::now(),
    }
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = encode_header(fin, opcode, payload.len() as u64, None);
    f.extend_from_slice(payload);
    f
}

const ROOMY: Limits = Limits {
    max_frame_bytes: 1 << 20,
    max_message_bytes: 1 << 20,
};

#[tokio::test]
async fn bytes_of_a_message_still_arriving_count_as_life() {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let mut c = WsConn {
        io: Box::new(client),
        buf: Vec::new(),
        limits: ROOMY,
        message: Vec::new(),
        message_size: 0,
        oversized: false,
        in_message: false,
        streaming: None,
        last_read: tokio::time::Instant::now(),
    };
    let whole = frame(true, 0x1, &[b'x'; 4000]);
    let (parts, last) = whole.split_at(3000);
    for part in parts.chunks(1000) {
        let before = tokio::time::Instant::now();
        server.write_all(part).await.unwrap();
        // Not whole yet: next() keeps waiting, but the bytes were seen.
        let waited = tokio::time::timeout(Duration::from_millis(50), c.next()).await;
        assert!(waited.is_err());
        assert!(c.last_read() >= before);
    }
    server.write_all(last).await.unwrap();
    assert!(matches!(c.next().await.unwrap(), Incoming::Message(m) if m.len() == 4000));
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_arrives_as_bytes() {
    let mut c = conn_over(frame(true, 0x1, b"MESSAGE\n\n\xff\xfe\0"), ROOMY);
    assert_eq!(
        c.next().await.unwrap(),
        Incoming::Message(b"MESSAGE\n\n\xff\xfe\0".to_vec())
    );
}

#[tokio::test]
async fn fragments_are_joined_around_a_ping_the_caller_answers() {
    let mut bytes = frame(false, 0x1, b"MESS");
    bytes.extend(frame(true, 0x9, b"hi"));
    bytes.extend(frame(true, 0x0, b"AGE"));
    let mut c = conn_over(bytes, ROOMY);
    assert_eq!(c.next().await.unwrap(), Incoming::Ping(b"hi".to_vec()));
    c.pong(b"hi").await.unwrap();
    assert_eq!(
        c.next().await.unwrap(),
        Incoming::Message(b"MESSAGE".to_vec())
    );
}

#[tokio::test]
async fn an_oversized_message_keeps_its_head_and_the_next_message_is_read() {
    let limits = Limits {
        max_frame_bytes: 1 << 10,
        max_message_bytes: 1 << 10,
    };
    let mut big = b"MESSAGE\nack:7\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 200_000));
    big.push(0);
    let mut bytes = frame(true, 0x1, &big);
    bytes.extend(frame(true, 0x1, b"next"));
    let mut c = conn_over(bytes, limits);
    match c.next().await.unwrap() {
        Incoming::Oversized { head, size } => {
            assert_eq!(size, big.len());
            assert!(head.starts_with(b"MESSAGE\nack:7\n\n"));
            assert!(head.len() <= HEAD_KEPT);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.next().await.unwrap(), Incoming::Message(b"next".to_vec()));
    assert!(c.buf.len() < HEAD_KEPT, "never buffered whole");
}

#[tokio::test]
async fn an_oversized_fragmented_message_is_dropped_across_fragments() {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 100,
    };
    let mut bytes = frame(false, 0x1, &[b'a'; 80]);
    bytes.extend(frame(false, 0x0, &[b'b'; 80]));
    bytes.extend(frame(true, 0x0, &[b'c'; 80]));
    bytes.extend(frame(true, 0x1, b"ok"));
    let mut c = conn_over(bytes, limits);
    match c.next().await.unwrap() {
        Incoming::Oversized { size, .. } => assert_eq!(size, 240),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.next().await.unwrap(), Incoming::Message(b"ok".to_vec()));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_from_the_server_never_panic_the_parser(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        frame_limit in 1usize..300,
        message_limit in 1usize..300,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut c = conn_over(Vec::new(), Limits {
                max_frame_bytes: frame_limit,
                max_message_bytes: message_limit,
            });
            // Feed the bytes in two pieces: a frame may straddle reads.
            let cut = bytes.len() / 2;
            for piece in [&bytes[..cut], &bytes[cut..]] {
                c.buf.extend_from_slice(piece);
                for _ in 0..64 {
                    match c.parse() {
                        Ok(Some(Parsed::Message(m))) => {
                            assert!(m.len() <= frame_limit.max(message_limit));
                        }
                        Ok(Some(Parsed::Oversized { head, .. })) => {
                            assert!(head.len() <= HEAD_KEPT);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        });
    }
}

#[tokio::test]
async fn a_close_frame_carries_its_code_and_reason() {
    let mut payload = 1008u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"policy");
    let mut c = conn_over(frame(true, 0x8, &payload), ROOMY);
    assert_eq!(
        c.next().await.unwrap(),
        Incoming::Closed(Some((1008, "policy".into())))
    );
}

#[tokio::test]
async fn a_masked_oversized_frame_keeps_its_head_readable() {
    let limits = Limits {
        max_frame_bytes: 8,
        max_message_bytes: 8,
    };
    let mask = [9, 8, 7, 6];
    let payload = b"MESSAGE\nack:5\n\nbody".to_vec();
    let mut f = encode_header(true, 0x1, payload.len() as u64, Some(mask));
    let mut masked = payload.clone();
    unmask(&mut masked, Some(mask));
    f.extend(masked);
    let mut c = conn_over(f, limits);
    assert_eq!(
        c.next().await.unwrap(),
        Incoming::Oversized {
            head: payload.clone(),
            size: payload.len()
        }
    );
}
