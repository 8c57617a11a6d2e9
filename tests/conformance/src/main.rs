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
///     --instance hpc --fixtures fixtures.yaml
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Backend server URL, https://host:port.
    #[arg(long)]
    endpoint: String,
    /// Site CA certificate (PEM) that signed the server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM) whose SAN the server allows.
    #[arg(long)]
    cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Name the server certificate must carry; default: the endpoint's host.
    #[arg(long)]
    server_name: Option<String>,
    /// Backend instance to test.
    #[arg(long)]
    instance: String,
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
    let mut fixtures = match &args.fixtures {
        Some(path) => Fixtures::load(path).map_err(anyhow::Error::msg)?,
        None => Fixtures::default(),
    };
    fixtures.instance = args.instance.clone();
    if let Some(n) = args.repeat {
        fixtures.repeat = n;
    }
    let endpoint = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| anyhow::anyhow!("--endpoint {}: {e}", args.endpoint))?;
    let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
    let server_name = args.server_name.clone().unwrap_or(host);
    let tls = waldur_runtime::TlsFiles {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    }
    .client_config(&server_name)?;
    let channel = endpoint
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e:?}", args.endpoint))?;
    let report = run_with(channel, fixtures, args.filter.as_deref(), |r| {
        print!("{}", r.line())
    })
    .await;
    print!("{}", report.summary());
    Ok(if report.failed() == 0 && report.passed() > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
