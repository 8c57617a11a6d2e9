//! Running SLURM commands: no shell, arguments as a vector, exit codes
//! checked (not output), one tracing span per command, a process counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use waldur_backend_sdk::{BackendError, BackendResult};

pub use waldur_backend_sdk::command::{Output, ProcessRunner, Runner};
use waldur_backend_sdk::command::{Traced, traced};

/// The SLURM command line of one cluster.
pub struct Slurm {
    runner: Arc<dyn Runner>,
    bin: String,
    cluster: Option<String>,
    spawned: AtomicU64,
    /// Microseconds spent waiting for SLURM commands (benchmarks).
    busy_micros: AtomicU64,
    /// Bounds the `sacctmgr` reads running at once, whatever the number of
    /// requests the server is answering: slurmdbd serves association
    /// queries one connection each, and 22.05 was seen to fall over under
    /// sixteen of them plus writes.
    reads: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Slurm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slurm")
            .field("bin", &self.bin)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// slurmdbd answers concurrent association changes with "Unspecified
/// error" (seen on 22.05 with parallel `add`s), so every writing `sacctmgr`
/// of this process waits its turn; reads stay concurrent.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `sacctmgr` reads at once unless configured (`max_concurrent_reads`).
pub const DEFAULT_READS: usize = 2;

/// Whether a `sacctmgr` call changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    /// A write by the holder of a [`WriteTurn`].
    WriteInTurn,
}

/// This process's turn to write (see `WRITES`), held until dropped, so a
/// read and the write it decides are not separated by another write.
pub struct WriteTurn {
    _held: tokio::sync::MutexGuard<'static, ()>,
}

/// Messages that mean "SLURM is down or busy", not "the request is wrong".
const UNAVAILABLE_HINTS: &[&str] = &[
    "Unable to contact slurm controller",
    "Connection refused",
    "slurmdbd: Getting response",
    "Problem talking to the database",
    "Socket timed out",
    "Couldn't connect",
];

impl Slurm {
    /// Commands under `bin` (empty: PATH), scoped to `cluster` if given.
    pub fn new(runner: Arc<dyn Runner>, bin: &str, cluster: Option<String>) -> Self {
        Self {
            runner,
            bin: bin.trim_end_matches('/').to_owned(),
            cluster,
            spawned: AtomicU64::new(0),
            busy_micros: AtomicU64::new(0),
            reads: tokio::sync::Semaphore::new(DEFAULT_READS),
        }
    }

    /// At most `n` (at least one) `sacctmgr` reads at once.
    pub fn with_read_limit(mut self, n: usize) -> Self {
        self.reads = tokio::sync::Semaphore::new(n.max(1));
        self
    }

    /// SLURM processes spawned so far.
    pub fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Total time spent in SLURM commands so far (overlapping commands
    /// count twice).
    pub fn busy(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.busy_micros.load(Ordering::Relaxed))
    }

    pub(crate) fn program(&self, name: &str) -> String {
        if self.bin.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.bin)
        }
    }

    /// Runs a program; a non-zero exit is an error carrying its message.
    pub async fn exec(&self, program: &str, args: Vec<String>) -> BackendResult<Output> {
        let binary = program.rsplit('/').next().unwrap_or(program).to_owned();
        if matches!(
            binary.as_str(),
            "sacctmgr" | "sacct" | "scancel" | "sinfo" | "sshare"
        ) {
            self.spawned.fetch_add(1, Ordering::Relaxed);
        }
        let Traced {
            result,
            elapsed,
            span,
        } = traced(self.runner.as_ref(), program, &args).await;
        self.busy_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let out = result.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                BackendError::not_ready(format!("command not found: {binary}"))
            }
            _ => BackendError::command_failed(format!("{binary}: {e}")),
        })?;
        if out.code == Some(0) {
            return Ok(out);
        }
        let text = format!("{}{}", out.stdout, out.stderr);
        let message = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let message: String = message.chars().take(500).collect();
        tracing::debug!(parent: &span, binary, code = ?out.code, "command failed");
        Err(if UNAVAILABLE_HINTS.iter().any(|h| text.contains(h)) {
            BackendError::not_ready(format!("{binary} cannot reach SLURM: {message}"))
        } else {
            BackendError::command_failed(format!("{binary} failed: {message}"))
        }
        .with_metadata("binary", binary))
    }

    /// `sacctmgr --parsable2 --noheader <args>`: a read, concurrent with
    /// other reads, cluster-scoped.
    pub async fn sacctmgr_read(&self, args: Vec<String>) -> BackendResult<String> {
        self.sacctmgr(args, Access::Read).await
    }

    /// `sacctmgr --parsable2 --noheader --immediate <args>`: a write, one at a
    /// time per process (slurmdbd's constraint), cluster-scoped. An `add` of
    /// what exists ("Nothing new added") and a `modify` that changes nothing
    /// ("Nothing modified") are success.
    pub async fn sacctmgr_write(&self, args: Vec<String>) -> BackendResult<String> {
        self.sacctmgr(args, Access::Write).await
    }

    /// Waits for this process's turn to write and keeps it.
    pub async fn write_turn(&self) -> WriteTurn {
        WriteTurn {
            _held: WRITES.lock().await,
        }
    }

    /// A `sacctmgr` write made while holding `turn`.
    pub async fn sacctmgr_write_in(
        &self,
        _turn: &WriteTurn,
        args: Vec<String>,
    ) -> BackendResult<String> {
        self.sacctmgr(args, Access::WriteInTurn).await
    }

    async fn sacctmgr(&self, mut args: Vec<String>, access: Access) -> BackendResult<String> {
        let immediate = access != Access::Read;
        if let Some(cluster) = &self.cluster {
            // A flat file names its cluster itself.
            let unscoped = args.first().is_some_and(|a| a == "load")
                || args
                    .iter()
                    .take(3)
                    .any(|a| matches!(a.as_str(), "qos" | "tres" | "cluster"));
            if !unscoped {
                let token = format!("cluster={cluster}");
                match args.iter().position(|a| a == "set") {
                    Some(i) => args.insert(i, token),
                    None => args.push(token),
                }
            }
        }
        let mut full = vec!["--parsable2".to_owned(), "--noheader".to_owned()];
        if immediate {
            full.push("--immediate".to_owned());
        }
        let verb = args.first().cloned().unwrap_or_default();
        full.extend(args);
        let _write = if access == Access::Write {
            Some(WRITES.lock().await)
        } else {
            None
        };
        // The semaphore is never closed, so acquiring only fails if it were;
        // a read then runs unbounded rather than not at all.
        let _read = if immediate {
            None
        } else {
            self.reads.acquire().await.ok()
        };
        match self.exec(&self.program("sacctmgr"), full).await {
            Ok(out) => Ok(out.stdout),
            Err(e) if verb == "add" && e.message.contains("Nothing new added") => Ok(String::new()),
            Err(e) if verb == "modify" && e.message.contains("Nothing modified") => {
                Ok(String::new())
            }
            Err(e) => Err(e),
        }
    }

    /// `sacct --parsable2 --noheader [--cluster=C] <args>`.
    pub async fn sacct(&self, args: Vec<String>) -> BackendResult<String> {
        let mut full = vec!["--parsable2".to_owned(), "--noheader".to_owned()];
        if let Some(cluster) = &self.cluster {
            full.push(format!("--cluster={cluster}"));
        }
        full.extend(args);
        Ok(self.exec(&self.program("sacct"), full).await?.stdout)
    }

    /// `scancel [--cluster=C] <args>`.
    pub async fn scancel(&self, args: Vec<String>) -> BackendResult<()> {
        let mut full = Vec::new();
        if let Some(cluster) = &self.cluster {
            full.push(format!("--cluster={cluster}"));
        }
        full.extend(args);
        self.exec(&self.program("scancel"), full).await.map(drop)
    }

    /// The SLURM version (`sinfo -V`).
    pub async fn version(&self) -> BackendResult<String> {
        Ok(self
            .exec(&self.program("sinfo"), vec!["-V".into()])
            .await?
            .stdout
            .trim()
            .to_owned())
    }
}

/// Builds an argument vector from string slices.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(::std::string::ToString::to_string(&$a)),*] };
}
