//! `waldur-coordinator`: parses the command line, sets up telemetry and
//! runs the command; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use waldur_coordinator::cli::{Cli, Command, LogFormat, dispatch};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(cli.log_format, LogFormat::Json);
    // Traces are exported by the long-running command only.
    let service = match cli.command {
        Command::Run { once: false, .. } => "waldur-coordinator",
        _ => "",
    };
    waldur_runtime::telemetry::run_main(json, service, dispatch(cli.command))
}
