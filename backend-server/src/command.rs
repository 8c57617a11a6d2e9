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

/// A command that ran, as [`traced`] saw it.
pub struct Traced {
    /// What the runner answered.
    pub result: std::io::Result<Output>,
    /// How long it ran.
    pub elapsed: std::time::Duration,
    /// Its span (exit code and duration recorded), for follow-up events.
    pub span: tracing::Span,
}

/// Runs `program` in a `command` span (binary, arguments, exit code,
/// duration) and counts it in the command metrics by outcome (`ok`,
/// `failed`, `error` when it could not run).
pub async fn traced(runner: &dyn Runner, program: &str, args: &[String]) -> Traced {
    use tracing::Instrument;
    let binary = program.rsplit('/').next().unwrap_or(program);
    let span = tracing::info_span!(
        crate::span::COMMAND,
        otel.kind = "client",
        command.binary = %binary,
        command.args = %args.join(" "),
        command.exit_code = tracing::field::Empty,
        command.duration_ms = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = runner.run(program, args).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    span.record(
        crate::span::field::COMMAND_DURATION_MS,
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    );
    let outcome = match &result {
        Ok(o) if o.code == Some(0) => "ok",
        Ok(_) => "failed",
        Err(_) => "error",
    };
    if let Ok(o) = &result {
        span.record(crate::span::field::COMMAND_EXIT_CODE, o.code.unwrap_or(-1));
    }
    crate::metrics::command(binary, outcome, elapsed);
    Traced {
        result,
        elapsed,
        span,
    }
}
