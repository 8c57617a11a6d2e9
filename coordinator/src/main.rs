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
enum Output {
    Text,
    Json,
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
        /// With --once: only this offering (name or UUID); repeatable.
        #[arg(long, requires = "once")]
        offering: Vec<String>,
        /// With --once: let this one cycle make the destructive changes the
        /// blast-radius breaker or the empty-team guard would withhold
        /// (check them first with `plan`).
        #[arg(long, requires = "once")]
        allow_destructive: bool,
    },
    /// Show what every enabled task would change, changing nothing: open
    /// orders and what each would do, members to add and remove per
    /// resource, access levels, limits, usage records to write, and whether
    /// the blast-radius breaker would hold the destructive part.
    ///
    /// Example: waldur-coordinator plan -c coordinator.yaml --offering HPC --output json
    Plan {
        /// Config file (YAML, version 1).
        #[arg(long, short, env = "WALDUR_COORDINATOR_CONFIG")]
        config: PathBuf,
        /// Only this offering (name or UUID); repeatable; default all.
        #[arg(long)]
        offering: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
    /// Play Helmholtz Cloud: publish a request to the service's inbound queue
    /// (`to_hca`) with the right properties and print the reply from
    /// `to_portal`. Broker settings come from `--config` or, like the
    /// original template's mock_portal.py, from the HCA_* variables.
    ///
    /// Example: waldur-coordinator mock-portal ping
    ///
    /// More: waldur-coordinator mock-portal deploy/hca/payloads/ComputeResourceSpecV1.json;
    /// waldur-coordinator mock-portal -c coordinator.yaml --service desy payload.json
    MockPortal(MockPortal),
    /// Migrate from the Python agent: read a waldur-site-agent configuration
    /// and write the coordinator config, the backend-server config and the
    /// token files for it, reporting everything that could not be carried
    /// over. Writes nothing if any target exists (unless --force).
    ///
    /// Example: waldur-coordinator import-config --from /etc/waldur-site-agent/config.yaml --out-dir /etc/waldur
    ImportConfig(ImportConfig),
    /// Site PKI: create a CA, issue server and client certificates.
    #[command(subcommand)]
    Pki(waldur_runtime::cli::PkiCommand),
}

/// Arguments of `import-config`.
#[derive(Debug, clap::Args)]
struct ImportConfig {
    /// The waldur-site-agent YAML configuration.
    #[arg(long)]
    from: PathBuf,
    /// Where to write coordinator.yaml, backend-server.yaml and secrets/.
    #[arg(long)]
    out_dir: PathBuf,
    /// The backend server's address as the coordinator will dial it.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    backend_endpoint: String,
    /// Folder of the certificates (ca.pem, backend.*, coordinator.*).
    #[arg(long, default_value = "/etc/waldur/pki")]
    pki_dir: PathBuf,
    /// SAN of the coordinator's client certificate (allowed by the server).
    #[arg(long, default_value = "coordinator.local")]
    coordinator_identity: String,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// Arguments of `mock-portal`.
#[derive(Debug, clap::Args)]
struct MockPortal {
    /// A JSON payload file, or `ping`.
    payload: String,
    /// Coordinator config whose `helmholtz` service to use (default: the
    /// HCA_* environment).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Service name in that config (default: the only one).
    #[arg(long)]
    service: Option<String>,
    /// Message type (default: PingV1 for `ping` or an empty object, the
    /// deallocation type for a body holding only `id`, else the allocation
    /// type).
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Correlation id (default: a random UUID).
    #[arg(long)]
    correlation_id: Option<String>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
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
    let json = matches!(cli.log_format, LogFormat::Json);
    // Traces are exported by the long-running command only.
    let service = match cli.command {
        Command::Run { once: false, .. } => "waldur-coordinator",
        _ => "",
    };
    waldur_runtime::telemetry::run_main(json, service, run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Pki(cmd) => waldur_runtime::cli::main(cmd),
        Command::MockPortal(args) => mock_portal(args).await,
        Command::ImportConfig(args) => import_config(args),
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
        Command::Plan {
            config,
            offering,
            output,
        } => {
            let Some((_, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            let selected = match waldur_coordinator::ops::select(&coordinator, &offering) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let plans = waldur_coordinator::plan::plan(&selected).await;
            match output {
                Output::Text => print!("{}", waldur_coordinator::plan::render(&plans)),
                Output::Json => match serde_json::to_string_pretty(&plans) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            if plans.iter().any(|p| !p.errors.is_empty()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run {
            config,
            once,
            offering,
            allow_destructive,
        } => {
            let Some((config, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            if once {
                if let Err(e) = waldur_coordinator::ops::select(&coordinator, &offering) {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
                return if coordinator
                    .run_once_with(&offering, allow_destructive)
                    .await
                {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            let coordinator = std::sync::Arc::new(coordinator);
            if let Some(admin) = &config.admin {
                let listener = match tokio::net::TcpListener::bind(admin.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("error: admin.listen {}: {e}", admin.listen);
                        return ExitCode::from(EX_CONFIG);
                    }
                };
                let c = coordinator.clone();
                tokio::spawn(async move {
                    if let Err(e) = waldur_coordinator::admin::serve(listener, c).await {
                        tracing::error!(error = %e, "admin endpoint stopped");
                    }
                });
            }
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                offerings = %summary(&config),
                backends = ?config.backends.keys().collect::<Vec<_>>(),
                helmholtz = ?config.helmholtz.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                admin = %config
                    .admin
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), |a| a.listen.to_string()),
                tracing = trace_export_on(),
                "starting waldur-coordinator"
            );
            coordinator.run(waldur_runtime::shutdown::signal()).await;
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

fn import_config(args: ImportConfig) -> ExitCode {
    let text = match std::fs::read_to_string(&args.from) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", args.from.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    let out_dir = std::path::absolute(&args.out_dir).unwrap_or(args.out_dir.clone());
    let options = waldur_config_import::Options {
        source: args.from.clone(),
        out_dir: out_dir.clone(),
        backend_endpoint: args.backend_endpoint,
        pki_dir: args.pki_dir,
        coordinator_identity: args.coordinator_identity,
    };
    let migration = match waldur_config_import::migrate(&text, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}: {e}", args.from.display());
            return ExitCode::from(EX_CONFIG);
        }
    };
    match waldur_coordinator::migrate::write(&migration, &out_dir, args.force) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            for n in &migration.notes {
                println!("note: {n}");
            }
            println!(
                "next: issue the certificates (deploy/PKI.md), then run `waldur-coordinator check --config {}`",
                out_dir
                    .join(waldur_config_import::COORDINATOR_FILE_NAME)
                    .display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn mock_portal(args: MockPortal) -> ExitCode {
    use waldur_coordinator::hca::config::ServiceConfig;
    let service: ServiceConfig = match &args.config {
        Some(path) => {
            let config = match Config::load(path, &ProcessEnv) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let services = config.helmholtz.services;
            let found = match &args.service {
                Some(name) => services.into_iter().find(|s| &s.name == name),
                None if services.len() == 1 => services.into_iter().next(),
                None => None,
            };
            match found {
                Some(s) => s,
                None => {
                    eprintln!(
                        "error: name the helmholtz service with --service (the config has none or several)"
                    );
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
        None => match serde_norway::from_str("name: mock-portal\nresource_types: {}\n") {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (body, default_type) = if args.payload == "ping" {
        (b"{}".to_vec(), service.message_types.ping.clone())
    } else {
        let body = match std::fs::read(&args.payload) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", args.payload);
                return ExitCode::from(EX_USAGE);
            }
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&body);
        let t = match &parsed {
            Ok(serde_json::Value::Object(o)) if o.is_empty() => service.message_types.ping.clone(),
            Ok(serde_json::Value::Object(o)) if o.len() == 1 && o.contains_key("id") => {
                service.message_types.deallocate.clone()
            }
            _ => service.message_types.allocate.clone(),
        };
        (body, t)
    };
    let message_type = args.message_type.unwrap_or(default_type);
    let correlation_id = args.correlation_id.unwrap_or_else(random_uuid);
    let (broker, service_id) = match (
        service.resolved_broker(&ProcessEnv),
        service.resolved_service_id(&ProcessEnv),
    ) {
        (Ok(b), Ok(id)) => (b, id),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let q = &service.queues;
    let mut portal = match waldur_coordinator::hca::Portal::connect(
        &broker,
        &service_id,
        &q.inbound,
        &q.outbound,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = portal.send(&message_type, &correlation_id, &body).await {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "sent {message_type} to {} (correlation id {correlation_id})",
        q.inbound
    );
    match portal
        .reply_to(
            &correlation_id,
            std::time::Duration::from_secs(args.timeout),
        )
        .await
    {
        Ok(Some(reply)) => {
            if reply.message_type == service.message_types.ping {
                println!("{}: still alive", reply.message_type);
            } else {
                println!("{} {}", reply.message_type, reply.body);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "error: no reply on {} within {} s: is the coordinator running with this service?",
                q.outbound, args.timeout
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `HPC[orders,membership,events] Cloud[report]`: offerings with their tasks.
fn summary(config: &Config) -> String {
    config
        .offerings
        .iter()
        .map(|o| {
            let t = &o.tasks;
            let on: Vec<&str> = [
                (t.orders, "orders"),
                (t.report, "report"),
                (t.membership, "membership"),
                (t.events, "events"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            format!("{}[{}]", o.name, on.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn trace_export_on() -> bool {
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

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
