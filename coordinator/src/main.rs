//! `waldur-coordinator`: thin binary; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Coordinator of the Waldur site agent: processes marketplace orders and
/// reports usage through backend servers over mutual TLS.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Site PKI: create a CA, issue server and client certificates.
    #[command(subcommand)]
    Pki(waldur_tls::cli::PkiCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Pki(cmd) => match waldur_tls::cli::run(cmd) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(64)
            }
        },
    }
}
