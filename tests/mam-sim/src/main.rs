//! `mam-sim`: answers as the `mam-*` command it is called as. See the crate
//! documentation and README.
//!
//! * `mam-sim install DIR` links every `mam-*` name in DIR to this binary;
//! * `mam-sim fail COMMAND CODE MESSAGE` makes COMMAND fail (code 0 clears);
//! * `mam-sim state` prints the state as JSON.
//!
//! The state lives in the directory named by `MAM_SIM_DIR`, or else in the
//! directory of the command as called (where `install` put the links);
//! `MAM_SIM_NOW`
//! (`YYYY-MM-DD hh:mm:ss`) fixes the time stamped on usage records, which
//! is otherwise the local time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv
        .first()
        .map(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let args = argv.get(1..).unwrap_or_default();
    if program == "mam-sim" {
        return admin(args);
    }
    // The state lives in MAM_SIM_DIR, or else beside the command called
    // (the directory `mam-sim install` linked it into).
    let beside = argv
        .first()
        .filter(|p| p.contains('/'))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf));
    let Some(dir) = state_dir().or(beside) else {
        println!(
            "MAM_SIM_DIR is not set and the command was not called by its path: the simulator needs a directory for its state"
        );
        return ExitCode::from(mam_sim::EXIT_USAGE);
    };
    let now = std::env::var("MAM_SIM_NOW")
        .unwrap_or_else(|_| jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S").to_string());
    let out = mam_sim::run(&program, args, &dir, &now);
    print!("{}", out.stdout);
    ExitCode::from(out.code)
}

fn state_dir() -> Option<PathBuf> {
    std::env::var_os("MAM_SIM_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn admin(args: &[String]) -> ExitCode {
    let usage = || {
        eprintln!(
            "usage: mam-sim install DIR | mam-sim fail COMMAND CODE [MESSAGE] | mam-sim state"
        );
        ExitCode::from(mam_sim::EXIT_USAGE)
    };
    match args {
        [cmd, dir] if cmd == "install" => match install(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot install into {dir}: {e}");
                ExitCode::FAILURE
            }
        },
        [cmd, command, code, message @ ..] if cmd == "fail" => {
            let (Some(dir), Ok(code)) = (state_dir(), code.parse::<u8>()) else {
                return usage();
            };
            match mam_sim::inject(&dir, command, code, &message.join(" ")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        [cmd] if cmd == "state" => {
            let Some(dir) = state_dir() else {
                return usage();
            };
            match mam_sim::state::read(&dir)
                .and_then(|s| serde_json::to_string_pretty(&s).map_err(std::io::Error::other))
            {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

/// Links every command name in `dir` to this binary (replacing old links).
fn install(dir: &Path) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    std::fs::create_dir_all(dir)?;
    for name in mam_sim::COMMANDS {
        let link = dir.join(name);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&me, &link)?;
    }
    Ok(())
}
