//! `mup-sim`: serves the MUP simulator on a local port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

/// A stateful simulator of MUP's REST API for tests and CI.
///
/// Example: mup-sim serve --listen 127.0.0.1:8780 --username waldur --password-file pw.txt
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the API under /api/ and the control API under /_sim/ until
    /// SIGINT or SIGTERM.
    Serve(Serve),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8780")]
    listen: SocketAddr,
    /// Username clients must send (HTTP basic authentication).
    #[arg(long)]
    username: String,
    /// Password clients must send; without it and --password-file, the
    /// MUP_SIM_PASSWORD environment variable.
    #[arg(long, conflicts_with = "password_file")]
    password: Option<String>,
    /// File holding the password (a trailing line break is ignored).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// YAML or JSON file `{users, projects, allocations, members, usage}`
    /// to seed the state with at start.
    #[arg(long)]
    seed: Option<PathBuf>,
}

fn password(args: &Serve) -> anyhow::Result<String> {
    if let Some(p) = &args.password {
        return Ok(p.clone());
    }
    if let Some(file) = &args.password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --password-file {}", file.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    match std::env::var("MUP_SIM_PASSWORD") {
        Ok(p) => Ok(p),
        Err(_) => bail!("give --password, --password-file or MUP_SIM_PASSWORD"),
    }
}

fn read_seed(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --seed {}", file.display()))?;
    // JSON is almost always YAML too, but not quite (tabs, some escapes):
    // take a .json file as JSON.
    let doc = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?
    } else {
        serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", file.display()))?
    };
    Ok(doc)
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
async fn stopped() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Command::Serve(args) = Args::parse().command;
    let sim = mup_sim::MupSim::new(&args.username, &password(&args)?);
    if let Some(file) = &args.seed {
        let doc = read_seed(file)?;
        sim.seed(&doc)
            .map_err(|e| anyhow::anyhow!("cannot seed from {}: {e}", file.display()))?;
    }
    let addr = sim
        .serve(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("listening on {addr}");
    stopped().await?;
    tracing::info!("stopping");
    Ok(())
}
