//! The dial-out tunnel's opening: what a backend server and the
//! coordinator say to each other on a fresh mutual-TLS connection before
//! the connection turns into gRPC, with the backend server as the HTTP/2
//! server and the coordinator as the client.
//!
//! The backend server dials, and the TLS handshake (ALPN [`ALPN`]) proves
//! both identities with the site PKI as on a direct connection. Then one
//! line each way:
//!
//! ```text
//! backend server → coordinator:  WALDUR-TUNNEL 1 <backend>[,<backend>...]\n
//! coordinator → backend server:  OK\n   or   ERR <reason>\n (and it closes)
//! ```
//!
//! `<backend>` is the coordinator's name for a backend this server serves
//! (a key of its `backends:`); the coordinator refuses names the client
//! certificate is not allowed to serve. After `OK` the bytes are HTTP/2.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The ALPN protocol of the tunnel (the connection is not plain HTTP/2
/// until the opening lines are exchanged).
pub const ALPN: &[u8] = b"waldur-tunnel/1";

/// Longest opening line.
const MAX_LINE: usize = 4096;

/// Longest the opening may take.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// The hello's first words.
const HELLO: &str = "WALDUR-TUNNEL 1 ";

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes. Reads
/// byte by byte: nothing after the newline may be consumed, it is HTTP/2.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("connection closed during the opening: {e}"))?;
        if b == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            return Err("opening line too long".into());
        }
        line.push(b);
    }
    String::from_utf8(line).map_err(|_| "opening line is not UTF-8".into())
}

/// A backend name as the hello may carry it: what a config key can be.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Backend server side: announces `backends` and reads the answer.
pub async fn offer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    backends: &[String],
) -> Result<(), String> {
    if let Some(bad) = backends.iter().find(|b| !valid_name(b)) {
        return Err(format!("{bad:?} is not a backend name"));
    }
    let hello = format!("{HELLO}{}\n", backends.join(","));
    stream
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| format!("cannot send the opening: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot send the opening: {e}"))?;
    let answer = read_line(stream).await?;
    match answer.strip_prefix("ERR ") {
        Some(reason) => Err(format!("the coordinator refused the tunnel: {reason}")),
        None if answer == "OK" => Ok(()),
        None => Err(format!("unexpected answer to the opening: {answer:?}")),
    }
}

/// Coordinator side: reads the backend names a connection offers.
pub async fn read_offer<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<String>, String> {
    let line = read_line(stream).await?;
    let names = line
        .strip_prefix(HELLO)
        .ok_or_else(|| "not a tunnel opening".to_owned())?;
    let names: Vec<String> = names.split(',').map(str::to_owned).collect();
    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
        return Err(format!("{bad:?} is not a backend name"));
    }
    Ok(names)
}

/// Coordinator side: accepts the offer, or refuses it with `reason`.
pub async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    verdict: Result<(), &str>,
) -> std::io::Result<()> {
    let line = match verdict {
        Ok(()) => "OK\n".to_owned(),
        // One line: a reason never carries a newline into the protocol.
        Err(reason) => format!("ERR {}\n", reason.replace(['\r', '\n'], " ")),
    };
    stream.write_all(line.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_offer_accepted_leaves_the_stream_at_the_first_http2_byte() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let names = read_offer(&mut b).await.unwrap();
            answer(&mut b, Ok(())).await.unwrap();
            let mut rest = [0u8; 3];
            b.read_exact(&mut rest).await.unwrap();
            (names, rest)
        });
        offer(&mut a, &["hpc".into(), "gpu-1".into()])
            .await
            .unwrap();
        a.write_all(b"PRI").await.unwrap();
        let (names, rest) = server.await.unwrap();
        assert_eq!(names, ["hpc", "gpu-1"]);
        assert_eq!(&rest, b"PRI");
    }

    #[tokio::test]
    async fn a_refusal_reaches_the_backend_server_with_its_reason() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let _ = read_offer(&mut b).await;
            answer(&mut b, Err("cluster-a may not serve b\nnext")).await
        });
        let e = offer(&mut a, &["b".into()]).await.unwrap_err();
        assert!(e.contains("cluster-a may not serve b next"), "{e}");
    }

    #[tokio::test]
    async fn garbage_and_bad_names_are_refused() {
        for bad in [
            "GET / HTTP/1.1\n",
            "WALDUR-TUNNEL 1 a/b\n",
            "WALDUR-TUNNEL 1 \n",
        ] {
            let (mut a, mut b) = tokio::io::duplex(1024);
            a.write_all(bad.as_bytes()).await.unwrap();
            assert!(read_offer(&mut b).await.is_err(), "{bad:?}");
        }
        let (mut a, mut b) = tokio::io::duplex(16 * 1024);
        a.write_all(&[b'x'; 8000]).await.unwrap();
        assert!(read_offer(&mut b).await.is_err());
    }
}
