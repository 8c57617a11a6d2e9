//! Conformance suite for the `waldur.backend.v1` contract.
//!
//! Like `csi-sanity`, it runs against any endpoint, whatever the language of
//! the backend: the `waldur-backend-conformance` CLI connects over mutual
//! TLS, and [`conformance_suite!`] instantiates it in-process for a Rust
//! backend through the real gRPC adapter over an in-memory duplex transport.
//!
//! Every case names the SPEC.md clause it enforces, is skipped when the
//! backend does not advertise the capability it needs, repeats idempotent
//! calls ([`Fixtures::repeat`] times) and deletes everything it created, also
//! when it fails.

mod cases;
mod fixtures;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub use fixtures::Fixtures;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use waldur_backend_proto::v1::backend_service_client::BackendServiceClient;
use waldur_backend_proto::v1::{self as wire, Capability};

pub use cases::CASES;

/// A case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed, with why.
    Failed(String),
    /// It did not apply: the capability it needs is not advertised.
    Skipped(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case name (states the behaviour).
    pub name: &'static str,
    /// SPEC.md clause.
    pub clause: &'static str,
    /// Outcome.
    pub outcome: Outcome,
}

impl CaseResult {
    /// One printable line, newline included.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Passed => format!("PASS {} ({})\n", self.name, self.clause),
            Outcome::Failed(why) => format!("FAIL {} ({}): {why}\n", self.name, self.clause),
            Outcome::Skipped(why) => format!("SKIP {}: {why}\n", self.name),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per case, in order.
    pub results: Vec<CaseResult>,
    /// Capabilities the instance advertised.
    pub advertised: Vec<Capability>,
    /// Capabilities at least one passing case exercised.
    pub exercised: BTreeSet<i32>,
}

impl Report {
    /// Number of passed cases.
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count()
    }
    /// Number of failed cases.
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .count()
    }
    /// Number of skipped cases.
    pub fn skipped(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .count()
    }

    /// Advertised capabilities no passing case exercised.
    pub fn unexercised(&self) -> Vec<Capability> {
        self.advertised
            .iter()
            // DECREASING_USAGE is a promise about data, not an RPC to call.
            .filter(|c| **c != Capability::DecreasingUsage)
            .filter(|c| !self.exercised.contains(&(**c as i32)))
            .copied()
            .collect()
    }

    /// The printable report, ending with the line `N passed, N failed, N skipped`.
    pub fn render(&self) -> String {
        let mut out: String = self.results.iter().map(CaseResult::line).collect();
        out.push_str(&self.summary());
        out
    }

    /// The results as JUnit XML: one test case per case (the SPEC clause as
    /// its class), failures and skips with their reasons.
    pub fn junit(&self) -> String {
        fn esc(s: &str) -> String {
            s.chars()
                .map(|c| match c {
                    '&' => "&amp;".to_owned(),
                    '<' => "&lt;".to_owned(),
                    '>' => "&gt;".to_owned(),
                    '"' => "&quot;".to_owned(),
                    '\'' => "&apos;".to_owned(),
                    c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => " ".to_owned(),
                    c => c.to_string(),
                })
                .collect()
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuite name=\"waldur-backend-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            self.results.len(),
            self.failed(),
            self.skipped()
        ));
        for r in &self.results {
            out.push_str(&format!(
                "  <testcase name=\"{}\" classname=\"{}\"",
                esc(r.name),
                esc(r.clause)
            ));
            match &r.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed(why) => out.push_str(&format!(
                    ">\n    <failure message=\"{0}\">{0}</failure>\n  </testcase>\n",
                    esc(why)
                )),
                Outcome::Skipped(why) => out.push_str(&format!(
                    ">\n    <skipped message=\"{}\"/>\n  </testcase>\n",
                    esc(why)
                )),
            }
        }
        out.push_str("</testsuite>\n");
        out
    }

    /// The closing lines: capabilities and `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let names = |caps: &[Capability]| {
            caps.iter()
                .map(|c| c.as_str_name().trim_start_matches("CAPABILITY_"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push_str(&format!(
            "capabilities advertised: {}\n",
            names(&self.advertised)
        ));
        let unexercised = self.unexercised();
        if !unexercised.is_empty() {
            out.push_str(&format!(
                "capabilities not exercised: {}\n",
                names(&unexercised)
            ));
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            self.passed(),
            self.failed(),
            self.skipped()
        ));
        out
    }
}

/// A signature for case functions.
pub type CaseFn = for<'a> fn(&'a mut Ctx) -> futures::future::BoxFuture<'a, Result<(), String>>;

/// One conformance case.
pub struct Case {
    /// Name stating the behaviour.
    pub name: &'static str,
    /// SPEC.md clause it enforces.
    pub clause: &'static str,
    /// Runs only when the backend advertises all of these.
    pub needs: &'static [Capability],
    /// Runs only when this fixture is given.
    pub fixture: Option<NeedsFixture>,
    /// The test.
    pub run: CaseFn,
}

/// A fixture a case cannot run without.
pub struct NeedsFixture {
    /// The fixture's key.
    pub name: &'static str,
    /// Whether the fixtures give it.
    pub given: fn(&Fixtures) -> bool,
}

/// What a case works with.
pub struct Ctx {
    /// The client.
    pub client: BackendServiceClient<Channel>,
    /// The fixtures.
    pub fx: Fixtures,
    /// Advertised capabilities.
    pub caps: BTreeSet<i32>,
    /// Component keys to use in limits.
    pub components: Vec<String>,
    /// Usage-type component keys.
    pub usage_components: Vec<String>,
    run_id: String,
    counter: u32,
    created: Vec<String>,
}

impl Ctx {
    /// True when the backend advertises `c`.
    pub fn has(&self, c: Capability) -> bool {
        self.caps.contains(&(c as i32))
    }

    /// The instance name.
    pub fn instance(&self) -> String {
        self.fx.instance.clone()
    }

    /// A fresh resource context with a unique slug and UUID.
    pub fn new_resource(&mut self) -> wire::ResourceContext {
        self.counter += 1;
        let slug = format!(
            "{}-{}-{}",
            self.fx.resource_prefix, self.run_id, self.counter
        );
        wire::ResourceContext {
            resource_uuid: format!("{:0>32}", format!("{}{:04}", self.run_id, self.counter)),
            name: format!("conformance resource {}", self.counter),
            slug,
            project_uuid: "0000000000000000000000000000c0f1".into(),
            project_slug: self.fx.project_slug.clone(),
            project_name: self.fx.project_name.clone(),
            customer_uuid: "0000000000000000000000000000c0f2".into(),
            customer_slug: self.fx.customer_slug.clone(),
            customer_name: "conformance customer".into(),
            ..Default::default()
        }
    }

    /// Asks the backend for the backend id of `resource`.
    pub async fn backend_id_for(
        &mut self,
        resource: &wire::ResourceContext,
    ) -> Result<String, String> {
        let resp = self
            .client
            .generate_backend_id(wire::GenerateBackendIdRequest {
                instance: self.instance(),
                base_name: resource.slug.clone(),
                resource: Some(resource.clone()),
            })
            .await
            .map_err(|s| status_text("GenerateBackendId", &s))?
            .into_inner();
        if resp.backend_id.is_empty() {
            return Err("GenerateBackendId returned an empty id".into());
        }
        Ok(resp.backend_id)
    }

    /// Creates a resource (re-issuing while `ready=false`) and records it
    /// for cleanup. Returns the backend id and the last response.
    pub async fn create(
        &mut self,
        resource: wire::ResourceContext,
        limits: std::collections::HashMap<String, i64>,
        users: Vec<wire::User>,
    ) -> Result<(String, wire::CreateResourceResponse), String> {
        let backend_id = self.backend_id_for(&resource).await?;
        let request = wire::CreateResourceRequest {
            instance: self.instance(),
            backend_id: backend_id.clone(),
            resource: Some(resource),
            limits,
            users,
            ..Default::default()
        };
        self.created.push(backend_id.clone());
        let resp = self.create_until_ready(request).await?;
        Ok((backend_id, resp))
    }

    /// Re-issues a create until it is ready or the slow timeout passes.
    pub async fn create_until_ready(
        &mut self,
        request: wire::CreateResourceRequest,
    ) -> Result<wire::CreateResourceResponse, String> {
        let deadline = Instant::now() + self.fx.slow_timeout();
        loop {
            let resp = self
                .client
                .create_resource(request.clone())
                .await
                .map_err(|s| status_text("CreateResource", &s))?
                .into_inner();
            if resp.ready {
                return Ok(resp);
            }
            if !self.has(Capability::SlowProvisioning) {
                return Err("CreateResource answered ready=false without SLOW_PROVISIONING".into());
            }
            if Instant::now() > deadline {
                return Err("CreateResource still not ready after the slow timeout".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes a resource (hard), re-issuing while `ready=false`.
    pub async fn delete(
        &mut self,
        backend_id: &str,
    ) -> Result<wire::DeleteResourceResponse, String> {
        let deadline = Instant::now() + self.fx.slow_timeout();
        let mut first_existed = None;
        loop {
            let resp = self
                .client
                .delete_resource(wire::DeleteResourceRequest {
                    instance: self.instance(),
                    backend_id: backend_id.to_owned(),
                    mode: wire::DeletionMode::Hard as i32,
                    resource: None,
                })
                .await
                .map_err(|s| status_text("DeleteResource", &s))?
                .into_inner();
            let existed = *first_existed.get_or_insert(resp.existed);
            if resp.ready {
                return Ok(wire::DeleteResourceResponse { existed, ..resp });
            }
            if Instant::now() > deadline {
                return Err("DeleteResource still not ready after the slow timeout".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Users from the fixtures, as wire users.
    pub fn users(&self, n: usize) -> Vec<wire::User> {
        self.fx
            .users
            .iter()
            .take(n)
            .map(|u| wire::User {
                username: u.clone(),
                role: "PROJECT.MEMBER".into(),
                ..Default::default()
            })
            .collect()
    }

    /// Limits of 1 on every fixture component.
    pub fn some_limits(&self, value: i64) -> std::collections::HashMap<String, i64> {
        self.components.iter().map(|c| (c.clone(), value)).collect()
    }

    async fn cleanup(&mut self) -> Result<(), String> {
        let ids = std::mem::take(&mut self.created);
        let mut errors = Vec::new();
        for id in ids.iter().rev() {
            if let Err(e) = self.delete(id).await {
                errors.push(format!("{id}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("cleanup failed: {}", errors.join("; ")))
        }
    }
}

/// Text of a status for failure messages.
pub fn status_text(rpc: &str, s: &tonic::Status) -> String {
    let reason = s
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default();
    format!("{rpc} failed: {:?} {reason} {}", s.code(), s.message())
}

/// Asserts that `result` failed with `code` (and, if given, `reason`).
pub fn expect_code<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: Option<&str>,
) -> Result<tonic::Status, String> {
    match result {
        Ok(v) => Err(format!("{what}: expected {code:?}, got success {v:?}")),
        Err(s) if s.code() != code => Err(format!(
            "{what}: expected {code:?}, got {}",
            status_text("", &s)
        )),
        Err(s) => {
            if let Some(want) = reason {
                let got = s
                    .get_details_error_info()
                    .map(|i| i.reason)
                    .unwrap_or_default();
                if got != want {
                    return Err(format!(
                        "{what}: expected ErrorInfo reason {want}, got {got:?}"
                    ));
                }
            }
            Ok(s)
        }
    }
}

/// Fails with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg.into()) }
}

/// Runs every case (or those whose name contains `filter`) against `channel`.
pub async fn run(channel: Channel, fx: Fixtures, filter: Option<&str>) -> Report {
    run_with(channel, fx, filter, |_| {}).await
}

/// Longest a case may take before it counts as failed (a hung RPC).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Like [`run`], calling `on_result` as each case finishes.
pub async fn run_with(
    channel: Channel,
    fx: Fixtures,
    filter: Option<&str>,
    mut on_result: impl FnMut(&CaseResult),
) -> Report {
    let mut client = BackendServiceClient::new(channel);
    let mut report = Report::default();
    let caps = match client
        .get_capabilities(wire::GetCapabilitiesRequest {
            instance: fx.instance.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner().capabilities,
        Err(s) => {
            // The first call: a wrong CA, an identity not allowed or an
            // unknown instance fails here, and the reason must be shown.
            let result = CaseResult {
                name: "capabilities_can_be_read",
                clause: "SPEC 4.2",
                outcome: Outcome::Failed(status_text("GetCapabilities", &s)),
            };
            on_result(&result);
            report.results.push(result);
            return report;
        }
    };
    report.advertised = caps
        .iter()
        .filter_map(|c| Capability::try_from(*c).ok())
        .collect();
    let components = match client
        .list_components(wire::ListComponentsRequest {
            instance: fx.instance.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner().components,
        Err(_) => Vec::new(),
    };
    let usage_components = components
        .iter()
        .filter(|c| c.accounting_type == wire::AccountingType::Usage as i32)
        .map(|c| c.key.clone())
        .collect();
    let limit_components = if fx.components.is_empty() {
        components.iter().map(|c| c.key.clone()).collect()
    } else {
        fx.components.clone()
    };
    let run_id = fx.run_id.clone().unwrap_or_else(fresh_run_id);
    let mut ctx = Ctx {
        client,
        caps: caps.iter().copied().collect(),
        components: limit_components,
        usage_components,
        fx,
        run_id,
        counter: 0,
        created: Vec::new(),
    };
    for case in CASES {
        if filter.is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let missing: Vec<&str> = case
            .needs
            .iter()
            .filter(|c| !ctx.has(**c))
            .map(|c| c.as_str_name())
            .collect();
        let unset = case.fixture.as_ref().filter(|f| !(f.given)(&ctx.fx));
        let outcome = if !missing.is_empty() {
            Outcome::Skipped(format!("not advertised: {}", missing.join(", ")))
        } else if let Some(f) = unset {
            Outcome::Skipped(format!("fixture {} not given", f.name))
        } else {
            let result = match tokio::time::timeout(CASE_TIMEOUT, (case.run)(&mut ctx)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", CASE_TIMEOUT.as_secs())),
            };
            let cleanup = ctx.cleanup().await;
            match (result, cleanup) {
                (Ok(()), Ok(())) => {
                    report
                        .exercised
                        .extend(case.needs.iter().map(|c| *c as i32));
                    Outcome::Passed
                }
                (Err(e), Ok(())) => Outcome::Failed(e),
                (Ok(()), Err(c)) => Outcome::Failed(c),
                (Err(e), Err(c)) => Outcome::Failed(format!("{e}; {c}")),
            }
        };
        let result = CaseResult {
            name: case.name,
            clause: case.clause,
            outcome,
        };
        on_result(&result);
        report.results.push(result);
    }
    report
}

/// A short id that keeps resource names of concurrent runs apart.
fn fresh_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:06x}",
        (nanos / 1000) as u64 & 0xff_ffff ^ u64::from(std::process::id())
    )
}

/// Instantiates the suite as a `#[tokio::test]` for an in-process Rust
/// backend: `$registry` is an expression giving a
/// `waldur_backend_sdk::Registry`, served over an in-memory duplex
/// transport through the real gRPC adapter.
#[macro_export]
macro_rules! conformance_suite {
    ($test_name:ident, $instance:expr, $registry:expr, $fixtures:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test_name() {
            let channel = waldur_backend_sdk::serve_duplex($registry)
                .await
                .expect("in-process server starts");
            let mut fixtures: $crate::Fixtures = $fixtures;
            fixtures.instance = ($instance).to_string();
            let report = $crate::run(channel, fixtures, None).await;
            let text = report.render();
            println!("{text}");
            assert_eq!(report.failed(), 0, "conformance failures:\n{text}");
            assert!(report.passed() > 0, "no case ran");
        }
    };
}
