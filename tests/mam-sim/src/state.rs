//! The accounting state every command shares: one JSON file under the
//! simulator's directory, read and written under an exclusive lock so
//! concurrent commands behave as they would against one MAM server.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A MAM user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Default account (may be empty).
    #[serde(default)]
    pub default_account: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// A MAM account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Organization.
    #[serde(default)]
    pub organization: String,
    /// Member user names.
    #[serde(default)]
    pub users: Vec<String>,
}

/// A fund, constrained to one account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Fund {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The account it belongs to (`Account=<name>` constraint).
    pub account: String,
    /// Sum of deposits less withdrawals.
    #[serde(default)]
    pub allocated: f64,
    /// What is left: allocated less charges.
    #[serde(default)]
    pub balance: f64,
}

/// One usage record: a charge for a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Record id.
    pub id: u64,
    /// The job (`-J`).
    pub instance: String,
    /// Account charged.
    pub account: String,
    /// User charged.
    pub user: String,
    /// Amount charged.
    pub charge: f64,
    /// When (`YYYY-MM-DD hh:mm:ss`, the simulator's local time).
    pub time: String,
}

/// Everything the simulator knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Accounts by name.
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    /// Funds by id.
    #[serde(default)]
    pub funds: BTreeMap<u64, Fund>,
    /// Usage records.
    #[serde(default)]
    pub records: Vec<Record>,
    /// The last fund id given.
    #[serde(default)]
    pub last_fund: u64,
    /// The last record id given.
    #[serde(default)]
    pub last_record: u64,
    /// Commands run, by name (benchmarks and tests count them).
    #[serde(default)]
    pub calls: BTreeMap<String, u64>,
}

/// The state of `dir`, locked until dropped.
pub struct Locked {
    /// Held for the lock only.
    _lock: File,
    path: PathBuf,
    /// The state as read.
    pub state: State,
}

/// The file name of the state inside the simulator's directory.
pub const STATE_FILE: &str = "mam-state.json";
const LOCK_FILE: &str = "mam-state.lock";

impl Locked {
    /// Locks the state of `dir` (a lock file of its own, so the state file
    /// can be replaced whole) and reads it.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        lock.lock()?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                serde_json::from_str(&text).map_err(std::io::Error::other)?
            }
            Ok(_) => State::default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            _lock: lock,
            path,
            state,
        })
    }

    /// Writes the state to a new file and renames it over the old one, so a
    /// command killed mid-write leaves the previous state intact.
    pub fn save(&mut self) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.state).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// Reads the state of `dir` without changing it (tests and benchmarks).
pub fn read(dir: &Path) -> std::io::Result<State> {
    Locked::open(dir).map(|l| l.state)
}
