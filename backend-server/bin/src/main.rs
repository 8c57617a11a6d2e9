//! `waldur-backend-server`: hosts the built-in backends named by `type:` in
//! its config behind mutual TLS. Thin by design: config, logging, wiring.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backends;

/// Backend server for the Waldur site agent: performs account, limit,
/// membership and usage operations on this cluster for the coordinator.
#[derive(Debug, Parser)]
#[command(version = waldur_runtime::version!(), propagate_version = true)]
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
    /// Serve the configured backend instances until SIGTERM or SIGINT.
    ///
    /// Example: waldur-backend-server serve --config /etc/waldur/backend-server.yaml
    Serve {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_BACKEND_SERVER_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config, load the certificates and probe every instance.
    ///
    /// Example: waldur-backend-server check --config /etc/waldur/backend-server.yaml
    Check {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_BACKEND_SERVER_CONFIG")]
        config: PathBuf,
        /// Check only the file, its certificates and the instances' settings:
        /// no probe of the systems behind them, no tunnel.
        #[arg(long)]
        offline: bool,
    },
    /// Take existing SLURM accounts over: write the ownership marker into
    /// their descriptions, so the instance may change and delete them. For
    /// accounts made by the original agent or by hand that the automatic
    /// adoption (`ownership.adopt_unmarked: by_prefix`) does not cover.
    ///
    /// Example: waldur-backend-server adopt -c /etc/waldur/backend-server.yaml --instance hpc hpc_alloc1 hpc_alloc2
    Adopt {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_BACKEND_SERVER_CONFIG")]
        config: PathBuf,
        /// The SLURM instance (its `name:` in the config).
        #[arg(long)]
        instance: String,
        /// The account names.
        #[arg(required = true)]
        accounts: Vec<String>,
    },
    /// Site PKI: create a CA, issue server and client certificates.
    #[command(subcommand)]
    Pki(waldur_runtime::cli::PkiCommand),
    /// Print the man page, shell completions or the config's JSON Schema,
    /// generated from this program's definitions.
    #[command(subcommand)]
    Docs(waldur_runtime::cli::DocsCommand),
}

/// sysexits EX_USAGE: the config or the command line is wrong.
const EX_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(cli.log_format, LogFormat::Json);
    // Traces are exported by the long-running command only.
    let service = match cli.command {
        Command::Serve { .. } => "waldur-backend-server",
        _ => "",
    };
    waldur_backend_sdk::telemetry::run_main(json, service, run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Pki(cmd) => waldur_runtime::cli::main(cmd),
        Command::Docs(cmd) => waldur_runtime::cli::docs(
            cmd,
            <Cli as clap::CommandFactory>::command(),
            schemars::schema_for!(waldur_backend_sdk::config::ServerConfig),
        ),
        Command::Adopt {
            config,
            instance,
            accounts,
        } => adopt(&config, &instance, &accounts).await,
        Command::Check { config, offline } => {
            let Some((config, registry)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            let mut ok = true;
            match config.tls.files().load() {
                Ok(_) => println!("PASS tls files load ({})", config.tls.cert.display()),
                Err(e) => {
                    println!("FAIL tls: {e}");
                    ok = false;
                }
            }
            for inst in &config.instances {
                if let Some(why) = backends::not_for_production(&inst.kind, &inst.settings) {
                    println!("WARN instance {}: {why}", inst.name);
                }
            }
            if offline {
                println!("PASS instances' settings load ({})", config.instances.len());
                println!(
                    "SKIP probes of the instances and the tunnel: run check without --offline"
                );
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            if config.connect.is_some() {
                match waldur_backend_sdk::reach_coordinator(&config).await {
                    Ok(seen) => println!("PASS {seen}"),
                    Err(e) => {
                        println!("FAIL tunnel: {e} (check connect: and tls)");
                        ok = false;
                    }
                }
            }
            for (name, probe) in registry.probe_all().await {
                if probe.ready {
                    println!("PASS instance {name} ready");
                } else {
                    println!("FAIL instance {name} not ready: {}", probe.message);
                    ok = false;
                }
            }
            for (name, d) in registry.diagnose_all().await {
                for c in &d.checks {
                    ok &= c.word() != "FAIL";
                    println!("{} instance {name}: {}: {}", c.word(), c.name, c.message);
                }
                for (k, v) in &d.info {
                    println!("INFO instance {name}: {k} = {v}");
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Serve { config } => {
            let Some((config, registry)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            let names: Vec<String> = config
                .instances
                .iter()
                .map(|i| format!("{}:{}", i.name, i.kind))
                .collect();
            let metrics = config.metrics.as_ref().map(|m| m.listen);
            if let Some(addr) = metrics {
                match waldur_backend_sdk::metrics::bind(addr).await {
                    Ok(l) => {
                        tokio::spawn(async move {
                            if let Err(e) = waldur_backend_sdk::metrics::serve(l).await {
                                tracing::error!(error = %e, "metrics endpoint stopped");
                            }
                        });
                    }
                    Err(e) => {
                        eprintln!("error: metrics.listen {addr}: {e}");
                        return ExitCode::from(EX_CONFIG);
                    }
                }
            }
            for inst in &config.instances {
                if let Some(why) = backends::not_for_production(&inst.kind, &inst.settings) {
                    tracing::warn!(instance = %inst.name, "{why}");
                }
            }
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                listen = ?config.listen,
                connect = ?config.connect.as_ref().map(|c| &c.coordinator),
                metrics = ?metrics,
                instances = ?names,
                allowed_clients = ?config.tls.allowed_clients,
                tracing = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some(),
                "starting waldur-backend-server"
            );
            match waldur_backend_sdk::serve(
                &config,
                registry,
                waldur_backend_sdk::shutdown_signal(),
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ waldur_backend_sdk::ServeError::Tls(_)) => {
                    tracing::error!(error = %e, "cannot start: fix tls.ca, tls.cert or tls.key");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `adopt`: marks accounts of a SLURM instance as its own.
async fn adopt(path: &std::path::Path, instance: &str, accounts: &[String]) -> ExitCode {
    let config = match waldur_backend_sdk::config::ServerConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let Some(inst) = config.instances.iter().find(|i| i.name == instance) else {
        eprintln!("error: {}: no instance named {instance:?}", path.display());
        return ExitCode::from(EX_CONFIG);
    };
    if inst.kind != waldur_backend_slurm::TYPE_NAME {
        eprintln!(
            "error: instance {instance} is of type {}, adopt is for slurm",
            inst.kind
        );
        return ExitCode::from(EX_CONFIG);
    }
    let backend = match waldur_backend_slurm::SlurmBackend::from_settings(inst.settings.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: invalid config {}: instances[{instance}]: {e}",
                path.display()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut ok = true;
    for (account, result) in backend.adopt(accounts).await {
        match result {
            Ok(true) => println!("adopted {account}"),
            Ok(false) => println!("{account} was already this backend's"),
            Err(e) => {
                ok = false;
                println!("FAIL {account}: {}", e.message);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads the config and builds the instances; prints the problem and
/// returns `None` when anything is wrong, before any port is bound.
fn load(
    path: &std::path::Path,
) -> Option<(
    waldur_backend_sdk::config::ServerConfig,
    waldur_backend_sdk::Registry,
)> {
    let config = match waldur_backend_sdk::config::ServerConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut builder = waldur_backend_sdk::Registry::builder();
    for inst in &config.instances {
        let backend = match backends::build(&inst.kind, inst.settings.clone()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!(
                    "error: invalid config {}: instances[{}]: {e}",
                    path.display(),
                    inst.name
                );
                return None;
            }
        };
        builder = match builder.add(&inst.name, backend) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: invalid config {}: {e}", path.display());
                return None;
            }
        };
    }
    Some((config, builder.build()))
}
