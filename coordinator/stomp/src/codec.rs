//! A small STOMP 1.2 frame codec for one frame per WebSocket message, as
//! RabbitMQ's Web-STOMP plugin exchanges them.
//!
//! * [`Frame::encode`] writes `COMMAND\nname:value\n…\n\nbody\0`, escaping
//!   header names and values (`\\`, `\n`, `\r`, `\c`) except in `CONNECT`
//!   and `CONNECTED` frames, which STOMP 1.2 leaves unescaped, and adds a
//!   `content-length` header to a non-empty body.
//! * [`decode`] reads one WebSocket message: end-of-line characters alone
//!   are a heart-beat; a frame must end in NUL, optionally followed by
//!   end-of-line characters (RabbitMQ appends `\n`); `content-length` is
//!   honoured, so a body may contain NUL. It never panics, whatever the
//!   input.

use std::fmt::Write as _;

/// The `content-length` header name.
const CONTENT_LENGTH: &str = "content-length";

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECT`, `MESSAGE`, `ACK`, ...
    pub command: String,
    /// Headers in wire order; a repeated header keeps every occurrence.
    pub headers: Vec<(String, String)>,
    /// The body, possibly binary.
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame without headers or body.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of header `name`; the first occurrence wins (STOMP 1.2).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame on the wire, NUL-terminated. The command must be a STOMP
    /// command (printable ASCII); it is written as it is.
    ///
    /// `content-length` is always computed here: one set by the caller is
    /// replaced, and a non-empty body gets one. NUL cannot be represented
    /// in a header and is dropped; in `CONNECT` and `CONNECTED` frames,
    /// which are not escaped, so are CR and LF (and `:` in names).
    pub fn encode(&self) -> Vec<u8> {
        let raw = unescaped(&self.command);
        let mut out = String::with_capacity(64);
        out.push_str(&self.command);
        out.push('\n');
        for (name, value) in &self.headers {
            if name == CONTENT_LENGTH {
                continue;
            }
            if raw {
                out.extend(
                    name.chars()
                        .filter(|c| !matches!(c, '\0' | '\n' | '\r' | ':')),
                );
                out.push(':');
                out.extend(value.chars().filter(|c| !matches!(c, '\0' | '\n' | '\r')));
            } else {
                escape_into(&mut out, name);
                out.push(':');
                escape_into(&mut out, value);
            }
            out.push('\n');
        }
        if !self.body.is_empty() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{CONTENT_LENGTH}:{}", self.body.len());
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes.push(0);
        bytes
    }
}

/// STOMP 1.2: `CONNECT` and `CONNECTED` frames do not escape headers.
fn unescaped(command: &str) -> bool {
    command == "CONNECT" || command == "CONNECTED"
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            '\0' => {}
            c => out.push(c),
        }
    }
}

/// What one WebSocket message held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// End-of-line characters only: a heart-beat.
    Heartbeat,
    /// A frame.
    Frame(Frame),
}

/// Why a message is not a valid STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message is larger than allowed.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size seen (or announced by `content-length`).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The message ends (or has a NUL) before the blank line that ends the
    /// headers.
    #[error("frame ends inside its headers")]
    UnterminatedHeaders,
    /// The command is empty or has characters other than printable ASCII.
    #[error("invalid frame command")]
    BadCommand,
    /// A header line has no colon.
    #[error("header line without a colon")]
    MalformedHeader,
    /// An undefined escape sequence (or a lone backslash) in a header.
    #[error("invalid escape sequence in a header")]
    BadEscape,
    /// The command or a header is not UTF-8.
    #[error("command or header is not utf-8")]
    NotUtf8,
    /// `content-length` is not a decimal number of octets.
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    /// The body is not followed by NUL.
    #[error("frame is not terminated by a nul byte")]
    MissingNul,
    /// Something other than end-of-line characters follows the NUL.
    #[error("unexpected data after the end of the frame")]
    TrailingData,
}

/// Skips end-of-line sequences (`\n` or `\r\n`) at the start of `input`.
fn skip_eols(mut input: &[u8]) -> &[u8] {
    loop {
        match input {
            [b'\n', rest @ ..] => input = rest,
            [b'\r', b'\n', rest @ ..] => input = rest,
            _ => return input,
        }
    }
}

/// Splits off one line (without its `\n` or `\r\n`); an error if there is
/// no LF, or a NUL comes first.
fn line(input: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    let end = input
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .ok_or(FrameError::UnterminatedHeaders)?;
    let (line, rest) = input.split_at(end);
    let rest = match rest {
        [b'\n', rest @ ..] => rest,
        _ => return Err(FrameError::UnterminatedHeaders),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok((line, rest))
}

fn unescape(raw: &[u8]) -> Result<String, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::NotUtf8)?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('c') => out.push(':'),
                _ => return Err(FrameError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn verbatim(raw: &[u8]) -> Result<String, FrameError> {
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| FrameError::NotUtf8)
}

/// Decodes one WebSocket message of at most `max_frame` bytes.
pub fn decode(input: &[u8], max_frame: usize) -> Result<Decoded, FrameError> {
    if input.len() > max_frame {
        return Err(FrameError::TooLarge {
            size: input.len(),
            limit: max_frame,
        });
    }
    let rest = skip_eols(input);
    if rest.is_empty() {
        return Ok(Decoded::Heartbeat);
    }
    let (command, mut rest) = line(rest)?;
    if command.is_empty() || !command.iter().all(u8::is_ascii_graphic) {
        return Err(FrameError::BadCommand);
    }
    let command = verbatim(command)?;
    let raw = unescaped(&command);
    let mut headers = Vec::new();
    loop {
        let (header, after) = line(rest)?;
        rest = after;
        if header.is_empty() {
            break;
        }
        let colon = header
            .iter()
            .position(|&b| b == b':')
            .ok_or(FrameError::MalformedHeader)?;
        let (name, value) = header.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        let pair = if raw {
            (verbatim(name)?, verbatim(value)?)
        } else {
            (unescape(name)?, unescape(value)?)
        };
        headers.push(pair);
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == CONTENT_LENGTH)
        .map(|(_, v)| content_length(v, max_frame))
        .transpose()?;
    let (body, after) = match length {
        Some(n) => {
            if rest.len() < n {
                return Err(FrameError::MissingNul);
            }
            let (body, after) = rest.split_at(n);
            match after {
                [0, after @ ..] => (body, after),
                _ => return Err(FrameError::MissingNul),
            }
        }
        None => {
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(FrameError::MissingNul)?;
            let (body, after) = rest.split_at(nul);
            (body, after.get(1..).unwrap_or_default())
        }
    };
    if !skip_eols(after).is_empty() {
        return Err(FrameError::TrailingData);
    }
    Ok(Decoded::Frame(Frame {
        command,
        headers,
        body: body.to_vec(),
    }))
}

/// What can be read of a frame that does not decode: its command and the
/// header lines before anything breaks, read leniently (bytes that are not
/// UTF-8 replaced, escapes kept as they are), without its body. `None` when
/// not even a command line is there. The consumer uses it to find the ack
/// id of a MESSAGE it must acknowledge without handling.
pub fn salvage(input: &[u8]) -> Option<Frame> {
    let rest = skip_eols(input);
    let mut lines = rest.split(|&b| b == b'\n' || b == 0);
    let command = lines.next()?;
    let command = command.strip_suffix(b"\r").unwrap_or(command);
    if command.is_empty() || !command.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let mut frame = Frame::new(String::from_utf8_lossy(command).into_owned());
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let (name, value) = line.split_at(colon);
        frame.headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(&value[1..]).into_owned(),
        ));
    }
    Some(frame)
}

fn content_length(value: &str, max_frame: usize) -> Result<usize, FrameError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::BadContentLength(value.to_owned()));
    }
    let n: usize = value
        .parse()
        .map_err(|_| FrameError::BadContentLength(value.to_owned()))?;
    if n > max_frame {
        return Err(FrameError::TooLarge {
            size: n,
            limit: max_frame,
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn frame(input: &[u8]) -> Frame {
        match decode(input, MAX) {
            Ok(Decoded::Frame(f)) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn rabbitmq_connected_frame_with_trailing_newline() {
        let f = frame(b"CONNECTED\nserver:RabbitMQ/3.10.8\nsession:session-abc\nheart-beat:10000,10000\nversion:1.2\n\n\0\n");
        assert_eq!(f.command, "CONNECTED");
        assert_eq!(f.get("heart-beat"), Some("10000,10000"));
        assert_eq!(f.get("version"), Some("1.2"));
        assert!(f.body.is_empty());
    }

    #[test]
    fn rabbitmq_message_frame_uses_content_length() {
        let f = frame(
            b"MESSAGE\nsubscription:sub-0\ndestination:/queue/to_hca\nmessage-id:T_sub-0@@session-x@@1\nredelivered:false\nack:T_sub-0@@session-x@@1\ncontent-type:text/plain\ncontent-length:7\n\n{\"a\":1}\0\n",
        );
        assert_eq!(f.command, "MESSAGE");
        assert_eq!(f.get("ack"), Some("T_sub-0@@session-x@@1"));
        assert_eq!(f.body, b"{\"a\":1}");
    }

    #[test]
    fn a_body_may_contain_nul_when_content_length_is_given() {
        let f = frame(b"MESSAGE\ncontent-length:3\n\na\0b\0");
        assert_eq!(f.body, b"a\0b");
    }

    #[test]
    fn without_content_length_the_body_runs_to_the_first_nul() {
        let f = frame(b"MESSAGE\nx:y\n\nhello\0\n\n");
        assert_eq!(f.body, b"hello");
        assert_eq!(
            decode(b"MESSAGE\n\na\0b\0", MAX),
            Err(FrameError::TrailingData)
        );
    }

    #[test]
    fn end_of_line_characters_alone_are_a_heartbeat() {
        for input in [&b"\n"[..], b"\r\n", b"\n\n\r\n", b""] {
            assert_eq!(decode(input, MAX), Ok(Decoded::Heartbeat), "{input:?}");
        }
    }

    #[test]
    fn leading_heartbeats_before_a_frame_are_skipped_and_crlf_is_accepted() {
        let f = frame(b"\n\r\nRECEIPT\r\nreceipt-id:r-1\r\n\r\n\0\r\n");
        assert_eq!(f.command, "RECEIPT");
        assert_eq!(f.get("receipt-id"), Some("r-1"));
    }

    #[test]
    fn the_first_occurrence_of_a_header_wins() {
        let f = frame(b"MESSAGE\nfoo:1\nfoo:2\n\n\0");
        assert_eq!(f.get("foo"), Some("1"));
        assert_eq!(f.headers.len(), 2);
        assert_eq!(f.get("bar"), None);
    }

    #[test]
    fn header_values_are_unescaped_except_in_connected() {
        let f = frame(b"MESSAGE\na\\cb:x\\\\y\\nz\\r\n\n\0");
        assert_eq!(f.get("a:b"), Some("x\\y\nz\r"));
        let f = frame(b"CONNECTED\nkey:a\\cb\n\n\0");
        assert_eq!(f.get("key"), Some("a\\cb"));
    }

    #[test]
    fn a_value_may_contain_colons() {
        let f = frame(b"CONNECTED\nserver:a:b:c\n\n\0");
        assert_eq!(f.get("server"), Some("a:b:c"));
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"MESSAGE\n\nbody", FrameError::MissingNul),
            (b"MESSAGE\nx:y\n", FrameError::UnterminatedHeaders),
            (b"MESSAGE", FrameError::UnterminatedHeaders),
            (b"MESSAGE\0", FrameError::UnterminatedHeaders),
            (b"MESSAGE\nx:y\0\n\n", FrameError::UnterminatedHeaders),
            (b"MESSAGE\nnocolon\n\n\0", FrameError::MalformedHeader),
            (b"MESSAGE\nx:\\t\n\n\0", FrameError::BadEscape),
            (b"MESSAGE\nx:ab\\\n\n\0", FrameError::BadEscape),
            (b"MESS\xffAGE\n\n\0", FrameError::BadCommand),
            (b"MESS AGE\n\n\0", FrameError::BadCommand),
            (b"MESSAGE\nx:\xff\n\n\0", FrameError::NotUtf8),
            (b"\rMESSAGE\n\n\0", FrameError::BadCommand),
            (b"\r\n\r\n\r\r\n\n\0", FrameError::BadCommand),
            (
                b"MESSAGE\ncontent-length:x\n\n\0",
                FrameError::BadContentLength("x".into()),
            ),
            (
                b"MESSAGE\ncontent-length:+1\n\na\0",
                FrameError::BadContentLength("+1".into()),
            ),
            (
                b"MESSAGE\ncontent-length:\n\n\0",
                FrameError::BadContentLength(String::new()),
            ),
            (
                b"MESSAGE\ncontent-length:99999999999999999999999\n\n\0",
                FrameError::BadContentLength("99999999999999999999999".into()),
            ),
            (b"MESSAGE\ncontent-length:5\n\nab\0", FrameError::MissingNul),
            (b"MESSAGE\ncontent-length:1\n\nab\0", FrameError::MissingNul),
            (b"MESSAGE\n\nab\0x", FrameError::TrailingData),
            (b"MESSAGE\n\nab\0\nMESSAGE\n\n\0", FrameError::TrailingData),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode(input, MAX).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // "\r" is not a line ending on its own: it belongs to the command.
        assert!(decode(b"\r", MAX).is_err());
    }

    #[test]
    fn oversized_frames_are_rejected() {
        let f = Frame::new("SEND").body(vec![b'x'; 100]).encode();
        assert!(matches!(
            decode(&f, 50),
            Err(FrameError::TooLarge { limit: 50, .. })
        ));
        assert!(matches!(
            decode(b"MESSAGE\ncontent-length:1000\n\n\0", 100),
            Err(FrameError::TooLarge {
                size: 1000,
                limit: 100
            })
        ));
        assert!(decode(&f, f.len()).is_ok());
    }

    #[test]
    fn connect_is_encoded_exactly_as_rabbitmq_expects() {
        let f = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", "hca")
            .header("login", "hca_agent")
            .header("passcode", "hca:pass")
            .header("heart-beat", "0,0");
        assert_eq!(
            f.encode(),
            b"CONNECT\naccept-version:1.2\nhost:hca\nlogin:hca_agent\npasscode:hca:pass\nheart-beat:0,0\n\n\0"
        );
    }

    #[test]
    fn connect_headers_cannot_inject_lines() {
        let f = Frame::new("CONNECT").header("passcode", "a\nlogin:evil\r\0");
        assert_eq!(f.encode(), b"CONNECT\npasscode:alogin:evil\n\n\0");
    }

    #[test]
    fn other_frames_escape_headers_and_get_a_content_length() {
        let f = Frame::new("SEND")
            .header("a:b", "c\\d\ne\rf")
            .header("content-length", "999")
            .body(&b"hi"[..]);
        assert_eq!(
            f.encode(),
            b"SEND\na\\cb:c\\\\d\\ne\\rf\ncontent-length:2\n\nhi\0"
        );
        assert_eq!(
            Frame::new("ACK").header("id", "1").encode(),
            b"ACK\nid:1\n\n\0"
        );
    }

    fn command() -> impl Strategy<Value = String> {
        "[A-Z]{1,12}".prop_filter("connect frames are not escaped", |c| !unescaped(c))
    }

    fn text() -> impl Strategy<Value = String> {
        // Any text without NUL, with the characters escaping is about.
        proptest::collection::vec(
            prop_oneof![
                Just(':'),
                Just('\n'),
                Just('\r'),
                Just('\\'),
                Just('c'),
                Just('n'),
                any::<char>().prop_filter("nul", |c| *c != '\0'),
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(
            (
                text().prop_filter("computed", |k| k != CONTENT_LENGTH),
                text(),
            ),
            0..6,
        )
    }

    fn expected(headers: &[(String, String)], body: &[u8]) -> Vec<(String, String)> {
        let mut want = headers.to_vec();
        if !body.is_empty() {
            want.push((CONTENT_LENGTH.into(), body.len().to_string()));
        }
        want
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            command in command(),
            headers in headers(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            trailer in "(\n|\r\n){0,3}",
        ) {
            let f = Frame { command: command.clone(), headers: headers.clone(), body: body.clone() };
            let mut wire = f.encode();
            wire.extend_from_slice(trailer.as_bytes());
            let got = decode(&wire, MAX).unwrap();
            prop_assert_eq!(got, Decoded::Frame(Frame { command, headers: expected(&headers, &body), body }));
        }

        #[test]
        fn connect_frames_round_trip_without_escaping(
            connected in any::<bool>(),
            headers in proptest::collection::vec(("[a-z:-]{0,8}", "[ -~]{0,16}"), 0..6),
        ) {
            let command = if connected { "CONNECTED" } else { "CONNECT" };
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(k, v): (String, String)| (k.replace(':', ""), v))
                .filter(|(k, _)| k != CONTENT_LENGTH)
                .collect();
            let f = Frame { command: command.into(), headers: headers.clone(), body: Vec::new() };
            let got = decode(&f.encode(), MAX).unwrap();
            prop_assert_eq!(got, Decoded::Frame(f));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..512) {
            let _ = decode(&input, max);
        }

        #[test]
        fn mutated_frames_never_panic(
            command in command(),
            headers in headers(),
            body in proptest::collection::vec(any::<u8>(), 0..32),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), prop_oneof![Just(0u8), Just(b'\n'), Just(b'\r'), Just(b':'), Just(b'\\'), any::<u8>()]), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut wire = Frame { command, headers, body }.encode();
            for (at, byte) in edits {
                let i = at.index(wire.len());
                if let Some(b) = wire.get_mut(i) {
                    *b = byte;
                }
            }
            let _ = decode(&wire, MAX);
            let n = cut.index(wire.len() + 1);
            let _ = decode(wire.get(..n).unwrap_or_default(), MAX);
        }
    }
}
