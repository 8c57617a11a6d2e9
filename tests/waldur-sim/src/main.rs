//! `waldur-sim`: serves the simulator on a local port.

use std::path::PathBuf;

use clap::Parser;

/// A stateful simulator of Waldur Mastermind for tests and the demo.
///
/// Example: waldur-sim --listen 127.0.0.1:8000 --token-file token.txt --seed-demo
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
    /// File holding the API token clients must send.
    #[arg(long)]
    token_file: PathBuf,
    /// Seed an offering with a team (prints the scenario as JSON).
    #[arg(long)]
    seed_demo: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read --token-file {}: {e}",
            args.token_file.display()
        )
    })?;
    let sim = waldur_sim::Sim::new(token.trim());
    if args.seed_demo {
        let scenario = sim.seed_basic(
            None,
            &[
                ("alice", "PROJECT.MANAGER", Some("alice")),
                ("bob", "PROJECT.MEMBER", Some("bob")),
            ],
        );
        println!("{}", serde_json::to_string(&scenario)?);
    }
    let addr = sim.serve(args.listen).await?;
    eprintln!("waldur-sim listening on http://{addr}/api/");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
