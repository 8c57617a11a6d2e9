//! A typed client for the Waldur Mastermind REST API.
//!
//! * `Authorization: Token …`, or `Bearer …` from the OIDC client-credentials
//!   flow (cached until 30 s before expiry);
//! * `User-Agent: waldur-site-agent-<mode>/<version>`, as the original agent,
//!   so Waldur shows the agent as it always did;
//! * list-all pagination: `page_size=100`, then the `page` of each
//!   `Link: <…>; rel="next"`;
//! * repeated `field=` and `state=` query parameters;
//! * per-request timeout, and retries with capped exponential backoff and
//!   jitter for transient failures (5xx, 429, network), so a flaky Waldur
//!   never turns into an erred order.
//!
//! Tokens never appear in logs or errors: errors carry method, path, status
//! and at most 300 bytes of the response body.

mod api;
pub mod compat;
pub mod ids;
mod settings;
pub mod types;

pub use settings::{Credentials, RetryConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use waldur_runtime::SettingError;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::Instrument;

/// Told of every HTTP request: the path, the method and the status (or
/// `error` when no answer came), for metrics.
pub type RequestObserver = fn(path: &str, method: &str, status: &str);

/// Query parameters; keys may repeat (`state=a&state=b`).
pub type Query = Vec<(&'static str, String)>;

/// A failed Waldur call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waldur {method} {path}: {kind}")]
pub struct WaldurError {
    /// HTTP method.
    pub method: String,
    /// Path below the API root (no query, no host).
    pub path: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong with a Waldur call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ErrorKind {
    /// Waldur answered with an unexpected status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The request did not complete (connect, timeout, reset).
    #[error("network: {0}")]
    Network(String),
    /// A success status whose body is not JSON at all (an HTML maintenance
    /// page, a cut or empty body): Waldur or a proxy in front of it is not
    /// well, so it is transient like a 5xx.
    #[error("garbled response: {0}")]
    Garbled(String),
    /// Well-formed JSON of another shape than the schema says: retrying
    /// would get the same answer.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// The request could not be built (a bad path or body): our mistake,
    /// never retried.
    #[error("invalid request: {0}")]
    Request(String),
    /// The OIDC token could not be obtained.
    #[error("oidc: {0}")]
    Auth(String),
    /// A 404 page rather than DRF's JSON "not found": the route itself does
    /// not exist, so this Waldur is older than the call (or a proxy sends
    /// the path elsewhere). Never retried, and never a verdict on the
    /// object the call named.
    #[error(
        "no such endpoint (HTTP 404 page): a Waldur older than this feature, or an api_url that is not Waldur's API"
    )]
    NoSuchEndpoint,
}

impl WaldurError {
    /// 5xx, 429 and network failures: retry later, change nothing.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            // 401: the token is wrong or being rotated; it says nothing
            // about the order or resource at hand.
            ErrorKind::Status { status, .. } => *status >= 500 || *status == 429 || *status == 401,
            ErrorKind::Network(_) | ErrorKind::Auth(_) | ErrorKind::Garbled(_) => true,
            ErrorKind::Request(_) | ErrorKind::Unexpected(_) | ErrorKind::NoSuchEndpoint => false,
        }
    }

    /// Waldur has no such endpoint (an older release): a feature to do
    /// without, not a failure of the order or resource at hand.
    pub fn is_missing_endpoint(&self) -> bool {
        matches!(self.kind, ErrorKind::NoSuchEndpoint)
    }

    /// Waldur's answer on `path` holds something it should not (an id that
    /// is no UUID): the data is wrong, a retry would not help.
    pub fn unexpected(method: &str, path: &str, detail: impl std::fmt::Display) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            kind: ErrorKind::Unexpected(detail.to_string()),
        }
    }

    /// The HTTP status, when Waldur answered.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A Waldur path with ids replaced, so each endpoint is one label value:
/// `marketplace-orders/8f.../approve/` → `marketplace-orders/{id}/approve/`.
pub fn endpoint_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    path.split('/')
        .map(|seg| {
            let hexish = seg.len() >= 8 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            let numeric = !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit());
            if hexish || numeric { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Result of a Waldur call.
pub type WaldurResult<T> = Result<T, WaldurError>;

/// How long an endpoint answered with a 404 page counts as missing.
const MISSING_FOR: Duration = Duration::from_secs(3600);

/// A Waldur API client for one offering's credentials.
#[derive(Clone)]
pub struct WaldurClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: url::Url,
    credentials: Credentials,
    retry: RetryConfig,
    bearer: Mutex<Option<(String, Instant)>>,
    calls: AtomicU64,
    observer: Option<RequestObserver>,
    /// Endpoint templates this Waldur answered with a 404 page: each is
    /// logged once, and callers may skip what depends on them.
    missing: std::sync::Mutex<std::collections::BTreeMap<String, Instant>>,
}

impl std::fmt::Debug for WaldurClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaldurClient")
            .field("base", &self.inner.base.as_str())
            .finish()
    }
}

impl WaldurClient {
    /// A client for `api_url` (for example `https://waldur.example.com/api/`).
    pub fn new(
        api_url: &str,
        credentials: Credentials,
        mode: &str,
        timeout: Duration,
        retry: RetryConfig,
        verify_tls: bool,
    ) -> Result<Self, SettingError> {
        let mut base = url::Url::parse(api_url)
            .map_err(|e| SettingError::new("api_url", format!("{api_url:?}: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .user_agent(format!(
                "waldur-site-agent-{mode}/{}",
                env!("CARGO_PKG_VERSION")
            ))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .danger_accept_invalid_certs(!verify_tls)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| {
                SettingError::new("api_url", format!("cannot build the http client: {e}"))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                credentials,
                retry,
                bearer: Mutex::new(None),
                calls: AtomicU64::new(0),
                observer: None,
                missing: Default::default(),
            }),
        })
    }

    /// Tells `observer` of every request (set before the client is cloned).
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.observer = Some(observer);
        }
        self
    }

    fn observe(&self, path: &str, method: &str, status: &str) {
        if let Some(f) = self.inner.observer {
            f(path, method, status);
        }
    }

    /// HTTP requests sent so far (retries included).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    async fn authorization(&self) -> WaldurResult<String> {
        match &self.inner.credentials {
            Credentials::Token(t) => Ok(format!("Token {}", t.expose())),
            Credentials::Oidc {
                token_url,
                client_id,
                client_secret,
            } => {
                let mut cached = self.inner.bearer.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(format!("Bearer {token}"));
                }
                let err = |m: String| WaldurError {
                    method: "POST".into(),
                    path: "<oidc token endpoint>".into(),
                    kind: ErrorKind::Auth(m),
                };
                let resp = self
                    .inner
                    .http
                    .post(token_url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", client_secret.expose()),
                    ])
                    .send()
                    .await
                    .map_err(|e| err(format!("token request failed: {}", without_url(&e))))?;
                if !resp.status().is_success() {
                    return Err(err(format!("token endpoint answered {}", resp.status())));
                }
                let body: serde_json::Value = resp
                    .json()
                    .await
                    .map_err(|e| err(format!("token response: {e}")))?;
                let token = body["access_token"]
                    .as_str()
                    .ok_or_else(|| err("token response has no access_token".into()))?
                    .to_owned();
                let lifetime = body["expires_in"]
                    .as_u64()
                    .unwrap_or(300)
                    .saturating_sub(30);
                *cached = Some((
                    token.clone(),
                    Instant::now() + Duration::from_secs(lifetime),
                ));
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// Sends one request and reads its answer with `read`, retrying
    /// transient failures: 5xx, 429, network errors, and success answers
    /// that are not JSON at all (an HTML maintenance page, a cut or empty
    /// body). The request is repeated as it was: Waldur's reads and actions
    /// are idempotent. A `create` is not (its answer may be garbled after
    /// the object was made), so `once` sends it a single time; the caller
    /// looks before it creates again next cycle.
    async fn exchange<T>(
        &self,
        method: Method,
        path: &str,
        query: &[(&'static str, String)],
        body: Option<&serde_json::Value>,
        once: bool,
        read: impl Fn(StatusCode, &str) -> Result<T, ErrorKind>,
    ) -> WaldurResult<(T, reqwest::header::HeaderMap)> {
        let url = self.inner.base.join(path).map_err(|e| WaldurError {
            method: method.to_string(),
            path: path.to_owned(),
            kind: ErrorKind::Request(format!("bad path: {e}")),
        })?;
        let retry = self.inner.retry.policy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send_once(method.clone(), &url, path, query, body, attempt)
                .await
                .and_then(|(status, headers, text)| {
                    read(status, &text)
                        .map(|value| (value, headers))
                        .map_err(|kind| WaldurError {
                            method: method.to_string(),
                            path: path.to_owned(),
                            kind,
                        })
                });
            match result {
                Err(e) if e.is_transient() && !once && retry.again(attempt) => {
                    let backoff = retry.backoff(attempt);
                    tracing::warn!(method = %method, path, attempt, error = %e.kind, backoff_ms = backoff.as_millis() as u64, "transient waldur failure, retrying");
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &url::Url,
        path: &str,
        query: &[(&'static str, String)],
        body: Option<&serde_json::Value>,
        attempt: u32,
    ) -> WaldurResult<(StatusCode, reqwest::header::HeaderMap, String)> {
        let err = |kind| WaldurError {
            method: method.to_string(),
            path: path.to_owned(),
            kind,
        };
        let auth = self.authorization().await?;
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .query(query)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        // One client span per attempt, in the trace of the order or cycle
        // that makes it; the traceparent Waldur receives names this span.
        let span = tracing::info_span!(
            waldur_runtime::span::WALDUR_CALL,
            otel.kind = "client",
            http.method = %method,
            url.path = %endpoint_template(path),
            attempt,
            http.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let mut trace = reqwest::header::HeaderMap::new();
        waldur_runtime::telemetry::inject_http(&mut trace);
        drop(_entered);
        req = req.headers(trace);
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let resp = match req.send().instrument(span.clone()).await {
            Ok(r) => r,
            Err(e) => {
                span.record(waldur_runtime::span::field::HTTP_STATUS, 0);
                self.observe(path, method.as_str(), "error");
                return Err(err(ErrorKind::Network(without_url(&e))));
            }
        };
        let status = resp.status();
        span.record(waldur_runtime::span::field::HTTP_STATUS, status.as_u16());
        self.observe(path, method.as_str(), status.as_str());
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| err(ErrorKind::Network(without_url(&e))))?;
        // A 404 page (not DRF's JSON) on an endpoint older releases lack:
        // the feature is missing. Anywhere else a 404 stays an error.
        if status == StatusCode::NOT_FOUND
            && compat::optional(&endpoint_template(path))
            && serde_json::from_str::<serde_json::Value>(&text).is_err()
        {
            self.note_missing(path);
            return Err(err(ErrorKind::NoSuchEndpoint));
        }
        if !status.is_success() {
            return Err(err(ErrorKind::Status {
                status: status.as_u16(),
                body: truncate(&text, 300),
            }));
        }
        Ok((status, headers, text))
    }

    /// Remembers an endpoint this Waldur lacks; says so once.
    fn note_missing(&self, path: &str) {
        let template = endpoint_template(path);
        let new = self
            .inner
            .missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(template.clone(), Instant::now())
            .is_none();
        if new {
            tracing::warn!(endpoint = %template, "waldur lacks the endpoint (older than this agent); what needs it is skipped for an hour at a time");
        }
    }

    /// Whether this Waldur answered a path starting with `prefix` (below
    /// the API root, e.g. `marketplace-site-agent-`) with a 404 page within
    /// the last hour: the feature behind it is missing. An hour later it is
    /// tried again, so a Waldur upgraded meanwhile (or a proxy that served
    /// a 404 page during a redeploy) costs at most an hour.
    pub fn lacks(&self, prefix: &str) -> bool {
        let mut missing = self.inner.missing.lock().unwrap_or_else(|p| p.into_inner());
        missing.retain(|_, at| at.elapsed() < MISSING_FOR);
        missing
            .keys()
            .any(|t| t.trim_start_matches('/').starts_with(prefix))
    }

    /// An older Waldur without `set_limits` (seen within the hour).
    pub fn lacks_set_limits(&self) -> bool {
        self.lacks("marketplace-provider-resources/{id}/set_limits/")
    }

    /// An older Waldur without the agent registry (seen within the hour).
    pub fn lacks_agent_registry(&self) -> bool {
        self.lacks("marketplace-site-agent-")
    }

    /// GET and decode.
    async fn get<T: DeserializeOwned>(&self, path: &str, query: Query) -> WaldurResult<T> {
        let (value, _) = self
            .exchange(Method::GET, path, &query, None, false, decode)
            .await?;
        Ok(value)
    }

    /// POST a JSON body and decode the answer.
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> WaldurResult<T> {
        self.with_body(Method::POST, path, body).await
    }

    /// POST a JSON body that creates something, once: a garbled answer may
    /// follow a successful create, so it is not repeated (the caller looks
    /// for the object before creating it again).
    async fn post_create<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> WaldurResult<T> {
        let value = serde_json::to_value(body).map_err(|e| WaldurError {
            method: "POST".into(),
            path: path.to_owned(),
            kind: ErrorKind::Request(e.to_string()),
        })?;
        let (value, _) = self
            .exchange(Method::POST, path, &[], Some(&value), true, decode)
            .await?;
        Ok(value)
    }

    /// POST a JSON body whose answer is not needed (actions). Waldur answers
    /// these with JSON or with no content; anything else (an HTML page) is a
    /// proxy's and says nothing about whether the action happened.
    async fn post_ignored<B: Serialize>(&self, path: &str, body: &B) -> WaldurResult<()> {
        self.ignored(Method::POST, path, body).await
    }

    /// PATCH a JSON body whose answer is not needed, checked as for
    /// [`Self::post_ignored`].
    async fn patch_ignored<B: Serialize>(&self, path: &str, body: &B) -> WaldurResult<()> {
        self.ignored(Method::PATCH, path, body).await
    }

    async fn ignored<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> WaldurResult<()> {
        let value = serde_json::to_value(body).map_err(|e| WaldurError {
            method: method.to_string(),
            path: path.to_owned(),
            kind: ErrorKind::Request(e.to_string()),
        })?;
        self.exchange(method, path, &[], Some(&value), false, no_content)
            .await?;
        Ok(())
    }

    /// POST without a body (state transitions whose operation takes none);
    /// the answer is checked as for [`Self::post_ignored`].
    async fn post_empty(&self, path: &str) -> WaldurResult<()> {
        self.exchange(Method::POST, path, &[], None, false, no_content)
            .await?;
        Ok(())
    }

    /// PUT a JSON body.
    async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> WaldurResult<T> {
        self.with_body(Method::PUT, path, body).await
    }

    async fn with_body<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> WaldurResult<T> {
        let value = serde_json::to_value(body).map_err(|e| WaldurError {
            method: method.to_string(),
            path: path.to_owned(),
            kind: ErrorKind::Request(e.to_string()),
        })?;
        let (value, _) = self
            .exchange(method.clone(), path, &[], Some(&value), false, decode)
            .await?;
        Ok(value)
    }

    /// GET every page of a list.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Query,
    ) -> WaldurResult<Vec<T>> {
        let mut out = Vec::new();
        self.for_each_page(path, query, |items| out.extend(items))
            .await?;
        // A long list is kept for a whole cycle: not with a third spare.
        out.shrink_to_fit();
        Ok(out)
    }

    /// GET every page of a list, handing each page to `page_fn` as it
    /// arrives: a caller that keeps a digest of each item holds one page of
    /// full items at a time, not the whole list.
    pub async fn for_each_page<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Query,
        mut page_fn: impl FnMut(Vec<T>),
    ) -> WaldurResult<()> {
        let mut page: Option<String> = None;
        loop {
            let mut q = query.clone();
            q.push(("page_size", "100".into()));
            if let Some(p) = &page {
                q.push(("page", p.clone()));
            }
            let (items, headers): (Vec<T>, _) = self
                .exchange(Method::GET, path, &q, None, false, decode)
                .await?;
            page_fn(items);
            match next_page(&headers) {
                Some(p) if Some(&p) != page.as_ref() => page = Some(p),
                _ => return Ok(()),
            }
        }
    }
}

/// Reads a JSON answer of the expected shape: text that is not JSON (an
/// empty or cut body, an HTML page) is garbled, JSON of another shape is
/// unexpected.
fn decode<T: DeserializeOwned>(status: StatusCode, text: &str) -> Result<T, ErrorKind> {
    serde_json::from_str(text).map_err(|e| {
        let detail = if text.trim().is_empty() {
            format!("HTTP {status} with an empty body")
        } else {
            format!("{e} in {}", truncate(text, 200))
        };
        match e.classify() {
            serde_json::error::Category::Data => ErrorKind::Unexpected(detail),
            _ => ErrorKind::Garbled(detail),
        }
    })
}

/// Reads the answer of an action whose result is not used: no content or
/// any JSON.
fn no_content(status: StatusCode, text: &str) -> Result<(), ErrorKind> {
    if text.trim().is_empty() {
        return Ok(());
    }
    decode::<serde::de::IgnoredAny>(status, text).map(drop)
}

/// The `page` parameter of the `rel="next"` link, if any.
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let value = value.to_str().ok()?;
        for link in value.split(',') {
            let mut parts = link.split(';');
            let target = parts
                .next()?
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            if parts.any(|p| p.trim().replace(' ', "") == "rel=\"next\"") {
                let url = url::Url::parse(target).ok()?;
                return url
                    .query_pairs()
                    .find(|(k, _)| k == "page")
                    .map(|(_, v)| v.into_owned());
            }
        }
    }
    None
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A reqwest error without its URL (which could carry a query with secrets).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_lose_their_ids() {
        assert_eq!(
            super::endpoint_template(
                "/api/marketplace-orders/0f0e0d0c0b0a09080706050403020100/approve/?x=1"
            ),
            "/api/marketplace-orders/{id}/approve/"
        );
        assert_eq!(
            super::endpoint_template("/api/users/42/"),
            "/api/users/{id}/"
        );
        assert_eq!(
            super::endpoint_template("/api/marketplace-resources/"),
            "/api/marketplace-resources/"
        );
    }

    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            "<http://w/api/x/?page=1>; rel=\"prev\", <http://w/api/x/?page=3&page_size=100>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_page(&h).as_deref(), Some("3"));
        assert_eq!(next_page(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn only_5xx_429_and_network_failures_are_transient() {
        let e = |kind| WaldurError {
            method: "GET".into(),
            path: "x".into(),
            kind,
        };
        assert!(
            e(ErrorKind::Status {
                status: 503,
                body: String::new()
            })
            .is_transient()
        );
        assert!(
            e(ErrorKind::Status {
                status: 429,
                body: String::new()
            })
            .is_transient()
        );
        assert!(
            !e(ErrorKind::Status {
                status: 400,
                body: String::new()
            })
            .is_transient()
        );
        assert!(e(ErrorKind::Network("reset".into())).is_transient());
    }
}
