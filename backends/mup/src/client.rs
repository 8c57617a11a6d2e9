//! The portal's REST API: HTTP Basic auth, timeouts, retries of transient
//! failures, and errors that name method, path and status. Credentials
//! travel only in the `Authorization` header, which no error or log line
//! ever shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use waldur_backend_sdk::BackendError;
use waldur_backend_sdk::secret::Secret;

/// Longest part of an answer's body quoted in an error.
const BODY_EXCERPT: usize = 500;

/// A failed call.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP method.
    pub method: Method,
    /// Path below the portal's host, percent-encoded.
    pub path: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong with a call.
#[derive(Debug, Clone)]
pub enum ErrorKind {
    /// No answer: connection refused or reset, timeout, TLS failure.
    Transport(String),
    /// An answer with an error status.
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A success status with a body that is not the JSON expected (an HTML
    /// page from a proxy, a cut text, another shape).
    Garbled(String),
}

impl ApiError {
    /// An answer that came back but cannot be used.
    pub fn garbled(method: Method, segments: &[&str], why: impl Into<String>) -> Self {
        Self {
            method,
            path: format!("/{}", segments.join("/")),
            kind: ErrorKind::Garbled(why.into()),
        }
    }

    /// The status code of an error answer.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The portal's API answered 404: the object is absent. A 404 whose
    /// body is not the API's JSON (a proxy's or web server's page) says
    /// nothing about the object, so it is not "absent".
    pub fn is_not_found(&self) -> bool {
        match &self.kind {
            ErrorKind::Status { status: 404, body } => body.trim_start().starts_with('{'),
            _ => false,
        }
    }

    /// A state that passes: the portal unreachable, overloaded, refusing
    /// our credentials or answering something that is not its API's JSON.
    /// The caller retries later and changes nothing meanwhile.
    pub fn is_passing(&self) -> bool {
        match &self.kind {
            ErrorKind::Transport(_) | ErrorKind::Garbled(_) => true,
            ErrorKind::Status { status, body } => {
                *status >= 500
                    || matches!(status, 401 | 403 | 408 | 429)
                    || (*status == 404 && !body.trim_start().starts_with('{'))
            }
        }
    }

    /// No answer at all: the portal is unreachable.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transport(_))
    }

    /// The error body contains `text` (case-insensitive).
    pub fn says(&self, text: &str) -> bool {
        match &self.kind {
            ErrorKind::Status { body, .. } => body.to_lowercase().contains(&text.to_lowercase()),
            _ => false,
        }
    }

    /// Worth retrying at once: the portal may answer differently in a
    /// moment.
    fn transient(&self) -> bool {
        match &self.kind {
            ErrorKind::Transport(_) => true,
            ErrorKind::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ErrorKind::Garbled(_) => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mup {} {}: ", self.method, self.path)?;
        match &self.kind {
            ErrorKind::Transport(e) => write!(f, "no answer: {e}"),
            ErrorKind::Status { status, body } => {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "{status} {reason}")?;
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            ErrorKind::Garbled(why) => write!(f, "unusable answer: {why}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for BackendError {
    /// A passing state is UNAVAILABLE (the coordinator retries and changes
    /// nothing); any other refusal is the portal's considered answer to
    /// this request (FAILED_PRECONDITION).
    fn from(e: ApiError) -> Self {
        if e.is_passing() {
            BackendError::not_ready(e.to_string())
        } else {
            BackendError::command_refused(e.to_string())
        }
    }
}

/// A client of one portal. `Debug` shows no credential.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
    username: String,
    password: Secret,
    retries: u32,
    calls: AtomicU64,
}

/// Options of [`Api::new`].
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Base URL (only scheme, host and port are used).
    pub base: url::Url,
    /// Basic auth user.
    pub username: String,
    /// Basic auth password.
    pub password: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after transient failures.
    pub retries: u32,
    /// Extra trusted CA (PEM).
    pub ca_pem: Option<Vec<u8>>,
}

impl Api {
    /// A client; fails only on an unusable CA certificate.
    pub fn new(o: ApiOptions) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(o.timeout)
            .connect_timeout(o.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("waldur-backend-mup/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &o.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| e.to_string())?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            base: o.base,
            username: o.username,
            password: o.password,
            retries: o.retries,
            calls: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far (retries included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `GET` and decode.
    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ApiError> {
        self.call(Method::GET, segments, None).await
    }

    /// `GET`; the API's 404 is `None`. Any other failure is an error, never
    /// "absent": an unreachable portal must not look like a missing project.
    /// A name that is `.` or `..` cannot be sent as a path segment (URLs
    /// resolve it away), so nothing by that name can be found.
    pub async fn find<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Option<T>, ApiError> {
        if segments.iter().any(|s| matches!(*s, "." | "..")) {
            return Ok(None);
        }
        match self.get(segments).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST` a JSON body and decode the answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, ApiError> {
        self.call(Method::POST, segments, Some(body)).await
    }

    /// `PUT` a JSON body and decode the answer.
    pub async fn put<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, ApiError> {
        self.call(Method::PUT, segments, Some(body)).await
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            // Every endpoint is absolute under the host: a path in the
            // configured URL is not part of it (the original agent's
            // behaviour, which sites' configs rely on).
            path.clear();
            path.extend(segments);
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let url = self.url(segments);
        let path = url.path().to_owned();
        // POST creates: repeated after a lost answer it could create twice,
        // so only a request that never left (connection refused) is retried.
        let idempotent = method != Method::POST;
        let mut attempt = 0;
        loop {
            let result = self.once(&method, &url, &path, body).await;
            match result {
                Err(Failure { error, sent })
                    if attempt < self.retries && error.transient() && (idempotent || !sent) =>
                {
                    attempt += 1;
                    let pause = Duration::from_millis(200 * (1 << attempt.min(5)));
                    tracing::warn!(method = %method, path = %path, attempt, error = %error, "mup call failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(Failure { error, .. }) => return Err(error),
                Ok(value) => {
                    return serde_json::from_value(value).map_err(|e| ApiError {
                        method: method.clone(),
                        path: path.clone(),
                        kind: ErrorKind::Garbled(format!("unexpected JSON shape: {e}")),
                    });
                }
            }
        }
    }

    async fn once(
        &self,
        method: &Method,
        url: &url::Url,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let fail = |kind, sent| Failure {
            error: ApiError {
                method: method.clone(),
                path: path.to_owned(),
                kind,
            },
            sent,
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .basic_auth(&self.username, Some(self.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let sent = !e.is_connect();
                // reqwest's text names the URL: scheme, host and path, never
                // the Authorization header.
                return Err(fail(ErrorKind::Transport(error_chain(&e)), sent));
            }
        };
        let status = response.status();
        let json_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(fail(ErrorKind::Transport(error_chain(&e)), true)),
        };
        if !status.is_success() {
            return Err(fail(
                ErrorKind::Status {
                    status: status.as_u16(),
                    body: excerpt(&bytes),
                },
                true,
            ));
        }
        if status == StatusCode::NO_CONTENT || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        if !json_type {
            return Err(fail(
                ErrorKind::Garbled(format!(
                    "status {} with a body that is not JSON: {}",
                    status.as_u16(),
                    excerpt(&bytes)
                )),
                true,
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            fail(
                ErrorKind::Garbled(format!("invalid JSON ({e}): {}", excerpt(&bytes))),
                true,
            )
        })
    }
}

struct Failure {
    error: ApiError,
    /// The request may have reached the portal.
    sent: bool,
}

/// The start of a body, on one line.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(BODY_EXCERPT) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// An error and its causes on one line (reqwest's own text hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> ApiError {
        ApiError {
            method: Method::GET,
            path: "/api/projects/list/".into(),
            kind,
        }
    }

    #[test]
    fn errors_name_method_path_and_status_and_map_to_the_contracts_codes() {
        let e = err(ErrorKind::Status {
            status: 400,
            body: "{\"grant_number\": [\"exists\"]}".into(),
        });
        assert_eq!(
            e.to_string(),
            "mup GET /api/projects/list/: 400 Bad Request: {\"grant_number\": [\"exists\"]}"
        );
        let refused: BackendError = e.into();
        assert_eq!(format!("{:?}", refused.code), "FailedPrecondition");
        for passing in [
            ErrorKind::Transport("connection refused".into()),
            ErrorKind::Garbled("html".into()),
            ErrorKind::Status {
                status: 503,
                body: String::new(),
            },
            ErrorKind::Status {
                status: 401,
                body: String::new(),
            },
            ErrorKind::Status {
                status: 404,
                body: "<html>not here</html>".into(),
            },
        ] {
            let b: BackendError = err(passing).into();
            assert_eq!(
                b.reason,
                waldur_backend_sdk::proto::reason::BACKEND_NOT_READY
            );
        }
    }

    #[test]
    fn only_the_apis_own_404_means_absent() {
        let api = err(ErrorKind::Status {
            status: 404,
            body: "{\"detail\": \"Not found.\"}".into(),
        });
        assert!(api.is_not_found() && !api.is_passing());
        let proxy = err(ErrorKind::Status {
            status: 404,
            body: "<html>Not Found</html>".into(),
        });
        assert!(!proxy.is_not_found() && proxy.is_passing());
    }

    #[test]
    fn long_bodies_are_cut_and_kept_on_one_line() {
        let body = format!("<html>\n{}</html>", "x".repeat(2000));
        let e = excerpt(body.as_bytes());
        assert!(e.chars().count() <= BODY_EXCERPT + 1);
        assert!(!e.contains('\n'));
    }
}
