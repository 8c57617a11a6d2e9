//! The `pki` subcommand shared by the binaries: create a site CA, issue
//! server and client certificates. `deploy/PKI.md` explains the workflow.

use std::path::PathBuf;

use crate::pki::{self, Usage, Validity};

/// Site PKI commands.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create the site CA: writes <dir>/ca.pem and <dir>/ca.key (0600).
    ///
    /// Example: waldur-backend-server pki init-ca --dir /etc/waldur/pki --name "Example HPC site CA"
    InitCa {
        /// Directory for the files.
        #[arg(long)]
        dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "waldur site CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a backend server certificate signed by <dir>/ca.*.
    ///
    /// Example: waldur-backend-server pki issue-server --dir /etc/waldur/pki --name hpc-admin.example.org --san 10.0.0.5
    IssueServer {
        /// Directory holding the CA; the certificate goes there too.
        #[arg(long)]
        dir: PathBuf,
        /// Host name clients dial (CN and first SAN).
        #[arg(long)]
        name: String,
        /// More SANs: host names or IP addresses.
        #[arg(long)]
        san: Vec<String>,
        /// File stem; default: the name.
        #[arg(long)]
        out: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Also valid as a TLS client: for a backend server that dials out
        /// to the coordinator's tunnel.
        #[arg(long)]
        tunnel: bool,
    },
    /// Issue a client (coordinator) certificate signed by <dir>/ca.*.
    ///
    /// Example: waldur-backend-server pki issue-client --dir /etc/waldur/pki --name coordinator.example.org
    IssueClient {
        /// Directory holding the CA; the certificate goes there too.
        #[arg(long)]
        dir: PathBuf,
        /// Identity (SAN) backend servers allow in tls.allowed_clients.
        #[arg(long)]
        name: String,
        /// More SANs: host names or IP addresses (with --tunnel, the names
        /// backend servers dial).
        #[arg(long)]
        san: Vec<String>,
        /// File stem; default: the name.
        #[arg(long)]
        out: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Also valid as a TLS server: for the coordinator's tunnel
        /// listener, which backend servers dial.
        #[arg(long)]
        tunnel: bool,
    },
}

/// Why a PKI command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiCommandError {
    /// Generating or signing failed.
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// The CA to sign with cannot be read.
    #[error("{0} (run pki init-ca first)")]
    NoCa(#[source] crate::TlsError),
    /// The files cannot be written.
    #[error("cannot write {what}: {source}{hint}")]
    Write {
        /// What was being written.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// Runs a PKI command; returns what to print.
pub fn run(cmd: PkiCommand) -> Result<String, PkiCommandError> {
    match cmd {
        PkiCommand::InitCa { dir, name, days } => {
            let ca = pki::create_ca(&name, Validity::days(days))?;
            pki::write(&dir, "ca", &ca).map_err(|source| PkiCommandError::Write {
                what: format!("CA into {}", dir.display()),
                source,
                hint: "",
            })?;
            Ok(format!("wrote {0}/ca.pem and {0}/ca.key", dir.display()))
        }
        PkiCommand::IssueServer {
            dir,
            name,
            san,
            out,
            days,
            tunnel,
        } => {
            let usage = if tunnel { Usage::Both } else { Usage::Server };
            issue(&dir, usage, &name, &san, out, days)
        }
        PkiCommand::IssueClient {
            dir,
            name,
            san,
            out,
            days,
            tunnel,
        } => {
            let usage = if tunnel { Usage::Both } else { Usage::Client };
            issue(&dir, usage, &name, &san, out, days)
        }
    }
}

fn issue(
    dir: &std::path::Path,
    usage: Usage,
    name: &str,
    sans: &[String],
    out: Option<String>,
    days: u32,
) -> Result<String, PkiCommandError> {
    let ca = pki::read(dir, "ca").map_err(PkiCommandError::NoCa)?;
    let issued = pki::issue(&ca, usage, name, sans, Validity::days(days))?;
    let stem = out.unwrap_or_else(|| name.to_owned());
    pki::write(dir, &stem, &issued).map_err(|source| PkiCommandError::Write {
        what: format!("{}/{stem}.key", dir.display()),
        source,
        hint: " (remove the old files to re-issue)",
    })?;
    Ok(format!(
        "wrote {0}/{stem}.pem and {0}/{stem}.key",
        dir.display()
    ))
}

/// Runs a PKI command as a binary's subcommand: prints the result, exit 0,
/// or the error and exit 64 (EX_USAGE).
pub fn main(cmd: PkiCommand) -> std::process::ExitCode {
    match run(cmd) {
        Ok(msg) => {
            println!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(64)
        }
    }
}

/// What both binaries say to `--version`: the release and the commit it
/// was built from.
#[macro_export]
macro_rules! version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("WALDUR_COMMIT"),
            ")"
        )
    };
}

/// Printing documentation generated from a binary's CLI definition, for
/// packages and for operators who install by hand.
#[derive(Debug, clap::Subcommand)]
pub enum DocsCommand {
    /// Print the shell completion script for SHELL.
    ///
    /// Example: waldur-coordinator docs completions bash > /usr/share/bash-completion/completions/waldur-coordinator
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), one section per subcommand.
    ///
    /// Example: waldur-coordinator docs man > /usr/share/man/man1/waldur-coordinator.1
    Man,
    /// Print the JSON Schema of the config file, for editors and validators.
    ///
    /// Example: waldur-coordinator docs schema > coordinator.schema.json
    Schema,
}

/// Writes what `cmd` asks for about the binary whose CLI is `command` and
/// whose config file `config_schema` describes, to stdout.
pub fn docs(
    cmd: DocsCommand,
    mut command: clap::Command,
    config_schema: schemars::Schema,
) -> std::process::ExitCode {
    let name = command.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    let written = match cmd {
        DocsCommand::Completions { shell } => {
            clap_complete::generate(shell, &mut command, name, &mut out);
            Ok(())
        }
        DocsCommand::Man => man_page(command, &mut out),
        DocsCommand::Schema => serde_json::to_string_pretty(&config_schema)
            .map_err(std::io::Error::other)
            .and_then(|text| std::io::Write::write_all(&mut out, format!("{text}\n").as_bytes())),
    };
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The top-level page, then one section per subcommand (clap_mangen writes
/// one page per command; a single file is what `man NAME` finds).
fn man_page(command: clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let command = command.disable_help_subcommand(true);
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let title = format!("{} {}", command.get_name(), sub.get_name()).to_uppercase();
        writeln!(out, ".SH \"{title}\"")?;
        let page = clap_mangen::Man::new(sub.clone());
        page.render_description_section(out)?;
        page.render_options_section(out)?;
        if sub.has_subcommands() {
            page.render_subcommands_section(out)?;
        }
    }
    Ok(())
}
