//! `waldur-coordinator`: thin binary; the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use waldur_coordinator::config::Config;
use waldur_coordinator::runner::Coordinator;
use waldur_coordinator::secret::ProcessEnv;

/// Coordinator of the Waldur site agent: processes marketplace orders
/// through backend servers over mutual TLS.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every enabled task until SIGTERM or SIGINT.
    ///
    /// Example: waldur-coordinator run --config /etc/waldur/coordinator.yaml
    Run {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_COORDINATOR_CONFIG")]
        config: PathBuf,
        /// Run one cycle of every enabled task, print a summary and exit
        /// (1 if a cycle failed).
        #[arg(long)]
        once: bool,
    },
    /// Publish the backend's components to the Waldur offering (create or
    /// update each one).
    ///
    /// Example: waldur-coordinator load-components -c coordinator.yaml --offering HPC
    LoadComponents(Ops),
    /// Check one offering end to end: token and permissions, offering,
    /// resources, offering users, open orders, each backend and its components.
    ///
    /// Example: waldur-coordinator diagnostics -c coordinator.yaml
    Diagnostics(Ops),
    /// Create home directories for every offering user in state OK.
    ///
    /// Example: waldur-coordinator create-homedirs -c coordinator.yaml
    CreateHomedirs(Ops),
    /// Run username generation for the offering users once.
    ///
    /// Example: waldur-coordinator sync-offering-users -c coordinator.yaml
    SyncOfferingUsers(Ops),
    /// Write the backend's resource limits to Waldur where they differ.
    ///
    /// Example: waldur-coordinator sync-resource-limits -c coordinator.yaml
    SyncResourceLimits(Ops),
    /// Validate the config and probe every Waldur endpoint and backend.
    ///
    /// Example: waldur-coordinator check --config /etc/waldur/coordinator.yaml
    Check {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_COORDINATOR_CONFIG")]
        config: PathBuf,
    },
    /// Site PKI: create a CA, issue server and client certificates.
    #[command(subcommand)]
    Pki(waldur_tls::cli::PkiCommand),
}

/// Arguments of the operator commands.
#[derive(Debug, clap::Args)]
struct Ops {
    /// Config file (YAML, version 1).
    #[arg(long, short, env = "WALDUR_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// Only this offering (name or UUID); repeatable; default all.
    #[arg(long)]
    offering: Vec<String>,
}

const EX_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Pki(cmd) => waldur_tls::cli::main(cmd),
        Command::Check { config } => {
            let Some((config, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            let ok = waldur_coordinator::check::run(&config, &coordinator).await;
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::LoadComponents(ops) => operate(ops, Op::LoadComponents).await,
        Command::Diagnostics(ops) => operate(ops, Op::Diagnostics).await,
        Command::CreateHomedirs(ops) => operate(ops, Op::CreateHomedirs).await,
        Command::SyncOfferingUsers(ops) => operate(ops, Op::SyncOfferingUsers).await,
        Command::SyncResourceLimits(ops) => operate(ops, Op::SyncResourceLimits).await,
        Command::Run { config, once } => {
            let Some((config, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            if once {
                return if coordinator.run_once().await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            let offerings: Vec<&str> = config.offerings.iter().map(|o| o.name.as_str()).collect();
            let backends: Vec<&String> = config.backends.keys().collect();
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                ?offerings,
                ?backends,
                "starting waldur-coordinator"
            );
            std::sync::Arc::new(coordinator)
                .run(waldur_backend_sdk::shutdown_signal())
                .await;
            ExitCode::SUCCESS
        }
    }
}

enum Op {
    LoadComponents,
    Diagnostics,
    CreateHomedirs,
    SyncOfferingUsers,
    SyncResourceLimits,
}

async fn operate(ops: Ops, op: Op) -> ExitCode {
    use waldur_coordinator::ops;
    let Some((_, coordinator)) = load(&ops.config) else {
        return ExitCode::from(EX_CONFIG);
    };
    let selected = match ops::select(&coordinator, &ops.offering) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let ok = match op {
        Op::LoadComponents => ops::load_components(&coordinator, &selected).await,
        Op::Diagnostics => ops::diagnostics(&coordinator, &selected).await,
        Op::CreateHomedirs => ops::create_homedirs(&coordinator, &selected).await,
        Op::SyncOfferingUsers => ops::sync_offering_users(&coordinator, &selected).await,
        Op::SyncResourceLimits => ops::sync_resource_limits(&coordinator, &selected).await,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

const EX_USAGE: u8 = 2;

fn load(path: &std::path::Path) -> Option<(Config, Coordinator)> {
    let config = match Config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match Coordinator::build(&config, &ProcessEnv) {
        Ok(c) => Some((config, c)),
        Err(e) => {
            eprintln!("error: invalid config {}: {e}", path.display());
            None
        }
    }
}

fn init_logging(format: LogFormat) {
    waldur_backend_sdk::telemetry::init_logging(matches!(format, LogFormat::Json));
}
