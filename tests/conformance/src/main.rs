//! `waldur-backend-conformance`: runs the conformance suite against a
//! backend server over mutual TLS and prints one line per case, ending with
//! `N passed, N failed, N skipped`. Exits 1 when a case failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tonic::transport::Endpoint;
use waldur_backend_conformance::{Fixtures, run_with};

/// Checks that a backend server honours the waldur.backend.v1 contract.
///
/// Example:
///   waldur-backend-conformance --endpoint https://127.0.0.1:50051 \
///     --ca pki/ca.pem --cert pki/coordinator.pem --key pki/coordinator.key \
///     --instance hpc --fixtures fixtures.yaml --junit conformance.xml
///   waldur-backend-conformance --list
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// List the cases (name, SPEC clause, capabilities and fixtures each
    /// needs) and exit; nothing is contacted.
    #[arg(long)]
    list: bool,
    /// Backend server URL, https://host:port.
    #[arg(long, required_unless_present = "list")]
    endpoint: Option<String>,
    /// Site CA certificate (PEM) that signed the server certificate.
    #[arg(long, required_unless_present = "list")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) whose SAN the server allows.
    #[arg(long, required_unless_present = "list")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, required_unless_present = "list")]
    key: Option<PathBuf>,
    /// Name the server certificate must carry; default: the endpoint's host.
    #[arg(long)]
    server_name: Option<String>,
    /// Backend instance to test.
    #[arg(long, required_unless_present = "list")]
    instance: Option<String>,
    /// Also write the results as JUnit XML to this file (for CI systems).
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Fixtures file (YAML): component keys, test users, slugs.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Repeat idempotent calls this often (default 2).
    #[arg(long)]
    repeat: Option<usize>,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run_cli(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_cli(args: Args) -> anyhow::Result<ExitCode> {
    if args.list {
        for case in waldur_backend_conformance::CASES {
            let needs: Vec<&str> = case
                .needs
                .iter()
                .map(|c| c.as_str_name().trim_start_matches("CAPABILITY_"))
                .collect();
            let fixture = case.fixture.as_ref().map(|f| f.name).unwrap_or("");
            println!(
                "{}\t{}\t{}\t{}",
                case.name,
                case.clause,
                needs.join(" "),
                fixture
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let required =
        |v: Option<PathBuf>, name: &str| v.ok_or_else(|| anyhow::anyhow!("--{name} is required"));
    let (ca, cert, key) = (
        required(args.ca.clone(), "ca")?,
        required(args.cert.clone(), "cert")?,
        required(args.key.clone(), "key")?,
    );
    let endpoint_text = args
        .endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--endpoint is required"))?;
    let instance = args
        .instance
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--instance is required"))?;
    let mut fixtures = match &args.fixtures {
        Some(path) => Fixtures::load(path).map_err(anyhow::Error::msg)?,
        None => Fixtures::default(),
    };
    fixtures.instance = instance;
    if let Some(n) = args.repeat {
        fixtures.repeat = n;
    }
    let endpoint = Endpoint::from_shared(endpoint_text.clone())
        .map_err(|e| anyhow::anyhow!("--endpoint {endpoint_text}: {e}"))?;
    let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
    let server_name = args.server_name.clone().unwrap_or(host);
    let tls = waldur_runtime::TlsFiles { ca, cert, key }.client_config(&server_name)?;
    let channel = endpoint
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint_text}: {e:?}"))?;
    let report = run_with(channel, fixtures, args.filter.as_deref(), |r| {
        print!("{}", r.line())
    })
    .await;
    print!("{}", report.summary());
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit())
            .map_err(|e| anyhow::anyhow!("--junit {}: {e}", path.display()))?;
    }
    Ok(if report.failed() == 0 && report.passed() > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
