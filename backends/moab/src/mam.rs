//! The MOAB Accounting Manager's command line: every `mam-*` call the
//! backend makes, its arguments as a vector (a description with spaces stays
//! one argument), its output parsed from `--raw --quiet` listings (fields
//! separated by `|` in `--show` order, no header), its exit code checked.
//!
//! Failures: a command that cannot be found, that runs longer than the
//! configured timeout, or that exits with a code other than MAM's refusal
//! codes is UNAVAILABLE (the accounting server may be down: the caller
//! retries later); a refusal (74: bad request, unknown or duplicate object;
//! 78: insufficient balance) is FAILED_PRECONDITION with MAM's message.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use waldur_backend_sdk::command::{Output, Runner, traced};
use waldur_backend_sdk::{BackendError, BackendResult};

/// MAM's exit code for a bad request (unknown or duplicate object, bad value).
pub const EXIT_REFUSED: i32 = 74;
/// MAM's exit code for an insufficient balance.
pub const EXIT_INSUFFICIENT: i32 = 78;
/// A usage error (unknown option, missing value).
pub const EXIT_USAGE: i32 = 2;

/// One account of `mam-list-accounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRow {
    /// Name.
    pub name: String,
    /// Organization (the project account, for an allocation).
    pub organization: String,
    /// Members.
    pub users: Vec<String>,
    /// Description (with the ownership marker).
    pub description: String,
}

/// One fund of `mam-list-funds`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FundRow {
    /// Fund id.
    pub id: String,
    /// Deposits less withdrawals.
    pub allocated: f64,
    /// What is left to charge.
    pub balance: f64,
}

/// One usage record of `mam-list-usagerecords`.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// Account charged.
    pub account: String,
    /// User charged.
    pub user: String,
    /// Amount.
    pub amount: f64,
}

/// The `mam-*` commands of one accounting server.
pub struct Mam {
    runner: Arc<dyn Runner>,
    bin_dir: Option<PathBuf>,
    timeout: Duration,
    spawned: AtomicU64,
}

impl std::fmt::Debug for Mam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mam")
            .field("bin_dir", &self.bin_dir)
            .field("timeout", &self.timeout)
            .finish()
    }
}

const ACCOUNT_COLUMNS: &str = "Name,Organization,Users,Description";

impl Mam {
    /// Commands from `bin_dir` (or `PATH`), each allowed `timeout`.
    pub fn new(runner: Arc<dyn Runner>, bin_dir: Option<PathBuf>, timeout: Duration) -> Self {
        Self {
            runner,
            bin_dir,
            timeout,
            spawned: AtomicU64::new(0),
        }
    }

    /// Commands run so far (benchmarks and tests).
    pub fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    fn program(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(dir) => dir.join(name).display().to_string(),
            None => name.to_owned(),
        }
    }

    /// Runs one command; its standard output on success.
    async fn call(&self, name: &str, args: Vec<String>) -> BackendResult<String> {
        let program = self.program(name);
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let run =
            tokio::time::timeout(self.timeout, traced(self.runner.as_ref(), &program, &args)).await;
        let out = match run.map(|t| t.result) {
            Err(_) => {
                return Err(BackendError::not_ready(format!(
                    "{name} did not finish within {:?}",
                    self.timeout
                )));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackendError::not_ready(format!(
                    "{program}: not found (check mam_bin_dir)"
                )));
            }
            Ok(Err(e)) => {
                return Err(BackendError::not_ready(format!("{program}: {e}")));
            }
            Ok(Ok(out)) => out,
        };
        check(name, out)
    }

    /// Accounts: one (`only`) or all.
    pub async fn accounts(&self, only: Option<&str>) -> BackendResult<Vec<AccountRow>> {
        let mut args = listing(ACCOUNT_COLUMNS);
        if let Some(name) = only {
            args.extend(["-a".to_owned(), name.to_owned()]);
        }
        let out = self.call("mam-list-accounts", args).await?;
        Ok(rows(&out).filter_map(|f| account_row(&f)).collect())
    }

    /// Runs a command that changes something: `options` as `flag value`
    /// pairs, then `--quiet` (no success message to read).
    async fn change(&self, name: &str, options: &[(&str, &str)]) -> BackendResult<()> {
        let mut args: Vec<String> = options
            .iter()
            .flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()])
            .collect();
        args.push("--quiet".into());
        self.call(name, args).await.map(drop)
    }

    /// Creates an account.
    pub async fn create_account(
        &self,
        name: &str,
        description: &str,
        organization: &str,
    ) -> BackendResult<()> {
        self.change(
            "mam-create-account",
            &[("-a", name), ("-d", description), ("-o", organization)],
        )
        .await
    }

    /// Rewrites an account's description (taking over an account marks it).
    pub async fn set_description(&self, account: &str, description: &str) -> BackendResult<()> {
        self.change(
            "mam-modify-account",
            &[("-a", account), ("-d", description)],
        )
        .await
    }

    /// Adds a member (`+user`: include).
    pub async fn add_user(&self, account: &str, user: &str) -> BackendResult<()> {
        let member = format!("+{user}");
        self.change(
            "mam-modify-account",
            &[("-a", account), ("--add-user", &member)],
        )
        .await
    }

    /// Removes a member.
    pub async fn del_user(&self, account: &str, user: &str) -> BackendResult<()> {
        self.change(
            "mam-modify-account",
            &[("-a", account), ("--del-user", user)],
        )
        .await
    }

    /// Deletes an account.
    pub async fn delete_account(&self, name: &str) -> BackendResult<()> {
        self.change("mam-delete-account", &[("-a", name)]).await
    }

    /// The funds of an account: those whose constraints name exactly it (a
    /// listing may also show funds the account may merely use).
    pub async fn funds(&self, account: &str) -> BackendResult<Vec<FundRow>> {
        let mut args = listing("Id,Constraints,Allocated,Balance");
        args.extend(["-a".to_owned(), account.to_owned()]);
        let out = self.call("mam-list-funds", args).await?;
        let own = format!("Account={account}");
        let mut funds = Vec::new();
        for f in rows(&out) {
            let [id, constraints, allocated, balance] = f.as_slice() else {
                return Err(garbled("mam-list-funds", &f.join("|")));
            };
            if !constraints.split(',').any(|c| c.trim() == own) {
                continue;
            }
            funds.push(FundRow {
                id: id.trim().to_owned(),
                allocated: amount("Allocated", allocated)?,
                balance: amount("Balance", balance)?,
            });
        }
        Ok(funds)
    }

    /// Creates the fund of an account.
    pub async fn create_fund(&self, account: &str) -> BackendResult<()> {
        self.change("mam-create-fund", &[("-a", account)]).await
    }

    /// Deletes a fund.
    pub async fn delete_fund(&self, id: &str) -> BackendResult<()> {
        self.change("mam-delete-fund", &[("-f", id)]).await
    }

    /// Deposits `amount` (> 0) into a fund.
    pub async fn deposit(&self, account: &str, fund: &str, amount: f64) -> BackendResult<()> {
        self.move_funds("mam-deposit", account, fund, amount).await
    }

    /// Withdraws `amount` (> 0) from a fund.
    pub async fn withdraw(&self, account: &str, fund: &str, amount: f64) -> BackendResult<()> {
        self.move_funds("mam-withdraw", account, fund, amount).await
    }

    async fn move_funds(
        &self,
        name: &str,
        account: &str,
        fund: &str,
        amount: f64,
    ) -> BackendResult<()> {
        let amount = format!("{amount:.2}");
        self.change(name, &[("-a", account), ("-f", fund), ("-z", &amount)])
            .await
    }

    /// Every charge between `start` and `end` (`YYYY-MM-DDThh:mm:ss`, the
    /// server's local time), all accounts at once.
    pub async fn charges(&self, start: &str, end: &str) -> BackendResult<Vec<Charge>> {
        let mut args = listing("Account,User,Charge");
        args.extend(["-s".into(), start.into(), "-e".into(), end.into()]);
        let out = self.call("mam-list-usagerecords", args).await?;
        rows(&out)
            .map(|f| match f.as_slice() {
                [account, user, charge] => Ok(Charge {
                    account: account.trim().to_owned(),
                    user: user.trim().to_owned(),
                    amount: amount("Charge", charge)?,
                }),
                _ => Err(garbled("mam-list-usagerecords", &f.join("|"))),
            })
            .collect()
    }

    /// Whether the accounting server answers (a listing that matches
    /// nothing).
    pub async fn ping(&self) -> BackendResult<()> {
        let mut args = listing("Id");
        args.extend(["-f".into(), "0".into()]);
        self.call("mam-list-funds", args).await.map(drop)
    }
}

fn listing(columns: &str) -> Vec<String> {
    vec![
        "--raw".into(),
        "--quiet".into(),
        "--show".into(),
        columns.into(),
    ]
}

/// The `|`-separated rows of a listing (blank lines skipped).
fn rows(out: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
}

/// `Name|Organization|Users|Description`; the description is last because
/// it is free text and may itself contain `|`.
fn account_row(fields: &[String]) -> Option<AccountRow> {
    let [name, organization, users, description @ ..] = fields else {
        return None;
    };
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(AccountRow {
        name: name.to_owned(),
        organization: organization.trim().to_owned(),
        users: members(users),
        description: description.join("|"),
    })
}

/// A `Users` field: comma-separated names; a `+` prefix (included) is
/// dropped, a `-` prefix (excluded) is not a member.
pub fn members(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty() && !u.starts_with('-'))
        .map(|u| u.trim_start_matches(['+', '^']).to_owned())
        .collect()
}

fn amount(column: &str, text: &str) -> BackendResult<f64> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(BackendError::command_failed(format!(
            "MAM printed {column} {text:?}, which is not a number"
        ))),
    }
}

fn garbled(command: &str, line: &str) -> BackendError {
    BackendError::command_failed(format!("{command} printed an unexpected line: {line:?}"))
}

/// Success, or the refusal or failure the exit code means, with MAM's
/// message (it prints failures on standard output).
fn check(name: &str, out: Output) -> BackendResult<String> {
    if out.code == Some(0) {
        return Ok(out.stdout);
    }
    let text: String = format!("{} {}", out.stdout.trim(), out.stderr.trim())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let text: String = text.chars().take(300).collect();
    let message = match out.code {
        Some(code) => format!("{name} exited with {code}: {text}"),
        None => format!("{name} was killed: {text}"),
    };
    match out.code {
        Some(EXIT_REFUSED | EXIT_INSUFFICIENT) => Err(BackendError::command_refused(message)),
        // A usage error is this backend's mistake: retrying cannot help.
        Some(EXIT_USAGE) => Err(BackendError::command_failed(message)),
        _ => Err(BackendError::not_ready(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_rows_keep_a_description_with_bars_and_read_members() {
        let f: Vec<String> = "a1|p1|+u1,u2,-u3|Big | project [waldur]"
            .split('|')
            .map(str::to_owned)
            .collect();
        let row = account_row(&f).unwrap();
        assert_eq!(row.users, ["u1", "u2"]);
        assert_eq!(row.description, "Big | project [waldur]");
        assert!(account_row(&["x".to_owned()]).is_none());
    }

    #[test]
    fn refusals_are_failed_preconditions_and_other_exits_unavailable() {
        let refused = check(
            "mam-deposit",
            Output {
                code: Some(74),
                stdout: "The deposit amount cannot be negative\n".into(),
                stderr: String::new(),
            },
        )
        .unwrap_err();
        assert_eq!(format!("{:?}", refused.code), "FailedPrecondition");
        assert!(
            refused
                .message
                .contains("exited with 74: The deposit amount cannot be negative")
        );
        let down = check(
            "mam-list-accounts",
            Output {
                code: Some(1),
                stdout: "Failed sending message".into(),
                stderr: String::new(),
            },
        )
        .unwrap_err();
        assert_eq!(
            down.reason,
            waldur_backend_sdk::proto::reason::BACKEND_NOT_READY
        );
    }
}
