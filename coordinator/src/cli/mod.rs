//! The command line: the `waldur-coordinator` subcommands and what each
//! runs. `main.rs` only parses, sets up telemetry and calls [`dispatch`].
//!
//! * [`check`]: PASS/FAIL per endpoint and backend, and a membership plan;
//! * [`plan`]: what a cycle would change;
//! * [`ops`]: load-components, diagnostics, home directories, usernames,
//!   resource limits;
//! * [`migrate`]: from the original agent's configuration;
//! * [`portal`]: a mock Helmholtz portal for trying the Helmholtz Cloud path;
//! * [`traces`]: a trace receiver that prints waterfalls in the terminal.

pub mod check;
pub mod migrate;
pub mod ops;
pub mod plan;
pub mod portal;
pub mod traces;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use waldur_runtime::secret::ProcessEnv;

use crate::config::Config;
use crate::runtime::Coordinator;
use crate::runtime::offering::TunnelPort;

/// Exit status of a config error (sysexits `EX_CONFIG`).
pub const EX_CONFIG: u8 = 64;
/// Exit status of a usage error.
pub const EX_USAGE: u8 = 2;

/// Coordinator of the Waldur site agent: processes marketplace orders
/// through backend servers over mutual TLS.
#[derive(Debug, Parser)]
#[command(version = waldur_runtime::version!())]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Receive traces (OTLP/gRPC) and print each finished one as a waterfall:
    /// the order, its Waldur requests and backend calls, the backend
    /// server's RPCs and the commands they ran, with offsets and durations.
    /// Point OTEL_EXPORTER_OTLP_ENDPOINT of both programs at it.
    ///
    /// Example: waldur-coordinator traces --listen 127.0.0.1:4317 --root order
    Traces {
        /// Address to receive on.
        #[arg(long, default_value = "127.0.0.1:4317")]
        listen: std::net::SocketAddr,
        /// Print only traces whose root span has this name (order,
        /// membership_cycle, usage_cycle, event, hca_request).
        #[arg(long)]
        root: Option<String>,
        /// A trace is printed once no span of it arrived for this long.
        #[arg(long, default_value_t = 2000)]
        quiet_ms: u64,
    },
    /// Print the status of a running coordinator: per offering and task the
    /// last cycle (when, how long, what it did or why it failed), the
    /// membership breaker, backend and broker links. Reads the admin port
    /// (`admin.listen` of the config, or --url).
    ///
    /// Example: waldur-coordinator status --config /etc/waldur/coordinator.yaml
    Status {
        /// Config file: its admin.listen is asked.
        #[arg(
            long,
            short,
            env = "WALDUR_COORDINATOR_CONFIG",
            required_unless_present = "url"
        )]
        config: Option<PathBuf>,
        /// The admin port's URL instead, for example http://127.0.0.1:9180.
        #[arg(long)]
        url: Option<String>,
        /// text or json.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
        /// Check only what needs no network: the file, its secrets,
        /// certificates, schemas and member tables.
        #[arg(long)]
        offline: bool,
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
    /// Print the man page, shell completions or the config's JSON Schema,
    /// generated from this program's definitions.
    #[command(subcommand)]
    Docs(waldur_runtime::cli::DocsCommand),
}

/// Arguments of `import-config`.
#[derive(Debug, clap::Args)]
pub struct ImportConfig {
    /// The waldur-site-agent YAML configuration.
    #[arg(long)]
    pub from: PathBuf,
    /// Where to write coordinator.yaml, backend-server.yaml and secrets/.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The backend server's address as the coordinator will dial it.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub backend_endpoint: String,
    /// Folder of the certificates (ca.pem, backend.*, coordinator.*).
    #[arg(long, default_value = "/etc/waldur/pki")]
    pub pki_dir: PathBuf,
    /// SAN of the coordinator's client certificate (allowed by the server).
    #[arg(long, default_value = "coordinator.local")]
    pub coordinator_identity: String,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `mock-portal`.
#[derive(Debug, clap::Args)]
pub struct MockPortal {
    /// A JSON payload file, or `ping`.
    pub payload: String,
    /// Coordinator config whose `helmholtz` service to use (default: the
    /// HCA_* environment).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Service name in that config (default: the only one).
    #[arg(long)]
    pub service: Option<String>,
    /// Message type (default: PingV1 for `ping` or an empty object, the
    /// deallocation type for a body holding only `id`, else the allocation
    /// type).
    #[arg(long = "type")]
    pub message_type: Option<String>,
    /// Correlation id (default: a random UUID).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Arguments of the operator commands.
#[derive(Debug, clap::Args)]
pub struct Ops {
    /// Config file (YAML, version 1).
    #[arg(long, short, env = "WALDUR_COORDINATOR_CONFIG")]
    pub config: PathBuf,
    /// Only this offering (name or UUID); repeatable; default all.
    #[arg(long)]
    pub offering: Vec<String>,
}

/// Runs one command; the exit code follows sysexits (64: config error,
/// 2: usage error).
pub async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Pki(cmd) => waldur_runtime::cli::main(cmd),
        Command::Docs(cmd) => waldur_runtime::cli::docs(
            cmd,
            <Cli as clap::CommandFactory>::command(),
            schemars::schema_for!(crate::config::Config),
        ),
        Command::MockPortal(args) => portal::mock_portal(args).await,
        Command::ImportConfig(args) => migrate::import_config(args),
        Command::Check { config, offline } => {
            let Some((config, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            if offline {
                return crate::cli::check::offline(&config);
            }
            let ok = crate::cli::check::run(&config, &coordinator).await;
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
        Command::Status {
            config,
            url,
            output,
        } => status(config, url, output).await,
        Command::Traces {
            listen,
            root,
            quiet_ms,
        } => traces::run(listen, root, std::time::Duration::from_millis(quiet_ms)).await,
        Command::Plan {
            config,
            offering,
            output,
        } => {
            let Some((_, coordinator)) = load(&config) else {
                return ExitCode::from(EX_CONFIG);
            };
            let selected = match crate::cli::ops::select(&coordinator, &offering) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let plans = crate::cli::plan::plan(&selected).await;
            match output {
                Output::Text => print!("{}", crate::cli::plan::render(&plans)),
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
            let Some((config, coordinator)) = load_with(&config, TunnelPort::Required) else {
                return ExitCode::from(EX_CONFIG);
            };
            if once {
                if let Err(e) = crate::cli::ops::select(&coordinator, &offering) {
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
                    if let Err(e) = crate::runtime::admin::serve(listener, c).await {
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
    use crate::cli::ops;
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

pub(crate) fn load(path: &std::path::Path) -> Option<(Config, Coordinator)> {
    load_with(path, TunnelPort::Shared)
}

/// As [`load`]; `run` needs the tunnel's port for itself.
pub(crate) fn load_with(path: &std::path::Path, port: TunnelPort) -> Option<(Config, Coordinator)> {
    let config = match Config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match Coordinator::build_with_tunnel(&config, &ProcessEnv, port) {
        Ok(c) => Some((config, c)),
        Err(e) => {
            eprintln!("error: invalid config {}: {e}", path.display());
            None
        }
    }
}

/// `status`: the admin port's /status.json, printed.
async fn status(config: Option<PathBuf>, url: Option<String>, output: Output) -> ExitCode {
    let base = match (url, config) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(path)) => {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::from(EX_CONFIG);
                }
            };
            // Only admin.listen is needed: no secrets are read.
            #[derive(serde::Deserialize)]
            struct Admin {
                admin: Option<crate::config::AdminConfig>,
            }
            let listen = match serde_norway::from_str::<Admin>(&text) {
                Ok(Admin { admin: Some(a) }) => a.listen,
                Ok(_) => {
                    eprintln!(
                        "error: {}: admin.listen is not set, so there is no status to read",
                        path.display()
                    );
                    return ExitCode::from(EX_CONFIG);
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let host = if listen.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            format!("http://{}", std::net::SocketAddr::new(host, listen.port()))
        }
        (None, None) => {
            eprintln!("error: give --config or --url");
            return ExitCode::from(EX_USAGE);
        }
    };
    let fetched = async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?
            .get(format!("{base}/status.json"))
            .send()
            .await?
            .error_for_status()?
            .json::<crate::runtime::status::Status>()
            .await
    }
    .await;
    match fetched {
        Ok(s) => {
            match output {
                Output::Text => print!("{}", crate::runtime::status::text(&s)),
                Output::Json => match serde_json::to_string_pretty(&s) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: no status from {base}: {e} (is the coordinator running, with admin.listen set?)"
            );
            ExitCode::FAILURE
        }
    }
}
