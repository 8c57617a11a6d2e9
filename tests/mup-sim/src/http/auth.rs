//! HTTP basic authentication with the answers of DRF's
//! `BasicAuthentication`.

use axum::http::{HeaderMap, header};

const NOT_PROVIDED: &str = "Authentication credentials were not provided.";
const INVALID: &str = "Invalid username/password.";
const NO_CREDENTIALS: &str = "Invalid basic header. No credentials provided.";
const SPACES: &str = "Invalid basic header. Credentials string should not contain spaces.";
const NOT_BASE64: &str = "Invalid basic header. Credentials not correctly base64 encoded.";

/// Checks the `Authorization` header; the error is the 401 detail.
pub(super) fn check(
    headers: &HeaderMap,
    username: &str,
    password: &str,
) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(NOT_PROVIDED);
    };
    let words: Vec<&[u8]> = value
        .as_bytes()
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
        .collect();
    // Another scheme is not basic authentication at all: DRF then finds no
    // credentials.
    match words.as_slice() {
        [scheme, ..] if !scheme.eq_ignore_ascii_case(b"basic") => Err(NOT_PROVIDED),
        [] => Err(NOT_PROVIDED),
        [_] => Err(NO_CREDENTIALS),
        [_, encoded] => {
            let decoded = base64_decode(encoded).ok_or(NOT_BASE64)?;
            // DRF tries UTF-8, then Latin-1 (every byte a code point).
            let text = String::from_utf8(decoded.clone())
                .unwrap_or_else(|_| decoded.iter().map(|b| char::from(*b)).collect());
            let (user, pass) = text.split_once(':').unwrap_or((text.as_str(), ""));
            if user == username && pass == password {
                Ok(())
            } else {
                Err(INVALID)
            }
        }
        _ => Err(SPACES),
    }
}

/// Standard base64 (padding optional); `None` when malformed.
pub(crate) fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    let trimmed = match input {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        all => all,
    };
    if input.ends_with(b"=") && !input.len().is_multiple_of(4) {
        return None;
    }
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= sextet(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Standard base64 with padding (tests build headers with it).
#[cfg(test)]
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (acc >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0u8..=255).collect();
        for n in 0..12 {
            let encoded = base64_encode(&data[..n]);
            assert_eq!(base64_decode(encoded.as_bytes()).unwrap(), &data[..n]);
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(base64_decode(unpadded.as_bytes()).unwrap(), &data[..n]);
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode(b"a").is_none());
        assert!(base64_decode(b"ab!d").is_none());
        assert!(base64_decode(b"ab=").is_none());
    }

    #[test]
    fn answers_follow_drf_basic_authentication() {
        let check_with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            check(&h, "user", "pass")
        };
        assert_eq!(check(&HeaderMap::new(), "user", "pass"), Err(NOT_PROVIDED));
        assert_eq!(check_with("Basic dXNlcjpwYXNz"), Ok(()));
        assert_eq!(check_with("basic dXNlcjpwYXNz"), Ok(()));
        assert_eq!(check_with("Token abc"), Err(NOT_PROVIDED));
        assert_eq!(check_with("Basic"), Err(NO_CREDENTIALS));
        assert_eq!(check_with("Basic a b"), Err(SPACES));
        assert_eq!(check_with("Basic ***"), Err(NOT_BASE64));
        let wrong = format!("Basic {}", base64_encode(b"user:other"));
        assert_eq!(check_with(&wrong), Err(INVALID));
    }
}
