//! Running the commands of the system behind a backend (`sacctmgr`,
//! `mam-*`, ...): no shell, arguments as a vector, the output captured.
//! Backends take a [`Runner`] so tests can script the answers.

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs programs. The real one spawns processes; tests script answers.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Runs `program` with `args`.
    async fn run(&self, program: &str, args: &[String]) -> std::io::Result<Output>;
}

/// Spawns real processes, in the C locale, with no standard input; a
/// process whose caller gave up (a timeout) is killed.
#[derive(Debug, Default)]
pub struct ProcessRunner;

#[async_trait::async_trait]
impl Runner for ProcessRunner {
    async fn run(&self, program: &str, args: &[String]) -> std::io::Result<Output> {
        let out = tokio::process::Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
