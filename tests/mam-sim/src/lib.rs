//! Stand-ins for the MOAB Accounting Manager's `mam-*` commands.
//!
//! One binary, `mam-sim`, answers as whichever command it is called as
//! (`mam-list-accounts`, `mam-deposit`, ...): `mam-sim install DIR` makes
//! those names as links to itself. Every command reads and writes one state
//! file in the directory named by `MAM_SIM_DIR`, under a lock, so concurrent
//! commands see one consistent accounting server. The output follows MAM's
//! conventions (see this crate's README for each command line and where it
//! comes from): `--raw` prints fields separated by `|` in `--show` order,
//! `--quiet` drops the header and success messages, a failure prints its
//! message on standard output and exits non-zero (74 for a bad request or
//! an unknown or duplicate object, 78 for an insufficient balance, 2 for a
//! usage error).
//!
//! For tests: `mam-sim fail COMMAND CODE MESSAGE` makes the next runs of
//! COMMAND fail that way (until `mam-sim fail COMMAND 0`), and the state
//! file counts the commands run.

pub mod args;
pub mod state;

use std::path::Path;

use args::{Args, UsageError};
use state::{Account, Fund, Locked, Record, State, User};

/// Every command the simulator answers as.
pub const COMMANDS: &[&str] = &[
    "mam-create-user",
    "mam-list-users",
    "mam-create-account",
    "mam-list-accounts",
    "mam-modify-account",
    "mam-delete-account",
    "mam-create-fund",
    "mam-list-funds",
    "mam-delete-fund",
    "mam-deposit",
    "mam-withdraw",
    "mam-charge",
    "mam-list-usagerecords",
];

/// Exit code of a bad request: unknown or duplicate object, bad value.
pub const EXIT_BAD_REQUEST: u8 = 74;
/// Exit code of an insufficient balance.
pub const EXIT_INSUFFICIENT: u8 = 78;
/// Exit code of a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the state cannot be read or written (the server's own
/// failure, as a database error would be).
pub const EXIT_STORAGE: u8 = 1;

/// What a command printed and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code.
    pub code: u8,
    /// Standard output.
    pub stdout: String,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self { code: 0, stdout }
    }

    fn fail(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            stdout: format!("{}\n", message.into()),
        }
    }
}

impl From<UsageError> for Outcome {
    fn from(e: UsageError) -> Self {
        Self::fail(EXIT_USAGE, e.0)
    }
}

/// A refusal of the accounting server.
type Refused = Outcome;

fn bad(message: impl Into<String>) -> Refused {
    Outcome::fail(EXIT_BAD_REQUEST, message)
}

/// A failure injected by `mam-sim fail`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Injected {
    code: u8,
    message: String,
}

const FAULTS_FILE: &str = "mam-faults.json";

/// Records (or clears, with code 0) an injected failure of `command`.
pub fn inject(dir: &Path, command: &str, code: u8, message: &str) -> std::io::Result<()> {
    let path = dir.join(FAULTS_FILE);
    let mut faults: std::collections::BTreeMap<String, Injected> =
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_default(),
            Err(_) => Default::default(),
        };
    if code == 0 {
        faults.remove(command);
    } else {
        faults.insert(
            command.to_owned(),
            Injected {
                code,
                message: message.to_owned(),
            },
        );
    }
    let text = serde_json::to_string(&faults).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

fn injected(dir: &Path, command: &str) -> Option<Injected> {
    let text = std::fs::read_to_string(dir.join(FAULTS_FILE)).ok()?;
    let faults: std::collections::BTreeMap<String, Injected> = serde_json::from_str(&text).ok()?;
    faults.get(command).cloned()
}

/// Runs `command` with `args` against the state in `dir`; `now` stamps
/// usage records (`YYYY-MM-DD hh:mm:ss`).
pub fn run(command: &str, args: &[String], dir: &Path, now: &str) -> Outcome {
    if let Some(f) = injected(dir, command) {
        return Outcome::fail(f.code, f.message);
    }
    let mut locked = match Locked::open(dir) {
        Ok(l) => l,
        Err(e) => {
            return Outcome::fail(
                EXIT_BAD_REQUEST,
                format!("Failed to read the accounting state: {e}"),
            );
        }
    };
    let before = locked.state.clone();
    *locked.state.calls.entry(command.to_owned()).or_default() += 1;
    let outcome = dispatch(&mut locked.state, command, args, now).unwrap_or_else(|refused| refused);
    if outcome.code != 0 {
        // A refused command changes nothing but the call count.
        let calls = locked.state.calls.clone();
        locked.state = before;
        locked.state.calls = calls;
    }
    if let Err(e) = locked.save() {
        return Outcome::fail(
            EXIT_BAD_REQUEST,
            format!("Failed to write the accounting state: {e}"),
        );
    }
    outcome
}

fn dispatch(st: &mut State, command: &str, args: &[String], now: &str) -> Result<Outcome, Refused> {
    match command {
        "mam-create-user" => create_user(st, &Args::parse(args, &["-u", "-A", "-d"])?),
        "mam-list-users" => list_users(st, &Args::parse(args, &["-u", "-a"])?),
        "mam-create-account" => create_account(st, &Args::parse(args, &["-a", "-d", "-o", "-u"])?),
        "mam-list-accounts" => list_accounts(st, &Args::parse(args, &["-a", "-u"])?),
        "mam-modify-account" => modify_account(
            st,
            &Args::parse(args, &["-a", "-d", "-o", "--add-user", "--del-user"])?,
        ),
        "mam-delete-account" => delete_account(st, &Args::parse(args, &["-a"])?),
        "mam-create-fund" => create_fund(st, &Args::parse(args, &["-a", "-n"])?),
        "mam-list-funds" => list_funds(st, &Args::parse(args, &["-f", "-a", "-u"])?),
        "mam-delete-fund" => delete_fund(st, &Args::parse(args, &["-f"])?),
        "mam-deposit" => deposit(st, &Args::parse(args, &["-f", "-a", "-z", "-d"])?),
        "mam-withdraw" => withdraw(st, &Args::parse(args, &["-f", "-a", "-z", "-d"])?),
        "mam-charge" => charge(
            st,
            &Args::parse(args, &["-J", "-a", "-u", "-z", "-t", "-m", "-P"])?,
            now,
        ),
        "mam-list-usagerecords" => list_usage(st, &Args::parse(args, &["-a", "-u", "-s", "-e"])?),
        other => Err(Outcome::fail(
            EXIT_USAGE,
            format!("{other}: not a MAM command"),
        )),
    }
}

/// A name MAM stores as one field: no blanks and no separator characters.
fn valid_name(kind: &str, name: &str) -> Result<(), Refused> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '+', '^'])
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '|' | ',' | '"' | '\'' | '=')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(format!("Invalid {kind} name {name:?}")))
    }
}

fn amount(args: &Args) -> Result<f64, Refused> {
    let text = args.required("-z")?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad(format!("Invalid amount {text:?}"))),
    }
}

fn money(v: f64) -> String {
    format!("{v:.2}")
}

/// Prints rows in `columns` order: `|`-separated under `--raw`, aligned
/// otherwise; a header unless `--quiet`.
fn table(args: &Args, columns: &[String], rows: Vec<Vec<String>>) -> Outcome {
    let mut out = String::new();
    if args.raw {
        if !args.quiet {
            out.push_str(&columns.join("|"));
            out.push('\n');
        }
        for row in rows {
            out.push_str(&row.join("|"));
            out.push('\n');
        }
        return Outcome::ok(out);
    }
    let mut widths: Vec<usize> = columns.iter().map(String::len).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end()
            .to_owned()
    };
    if !args.quiet {
        out.push_str(&line(columns));
        out.push('\n');
        let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&dashes));
        out.push('\n');
    }
    for row in rows {
        out.push_str(&line(&row));
        out.push('\n');
    }
    Outcome::ok(out)
}

/// A column this listing does not have.
fn unknown_column(column: &str) -> Refused {
    bad(format!("Invalid attribute {column}"))
}

fn done(args: &Args, message: String) -> Result<Outcome, Refused> {
    Ok(Outcome::ok(if args.quiet {
        String::new()
    } else {
        format!("{message}\n")
    }))
}

fn create_user(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let name = args.required("-u")?;
    valid_name("user", name)?;
    if st.users.contains_key(name) {
        return Err(bad("User already exists"));
    }
    st.users.insert(
        name.to_owned(),
        User {
            default_account: args.get("-A").unwrap_or_default().to_owned(),
            description: args.get("-d").unwrap_or_default().to_owned(),
        },
    );
    done(args, "Successfully created 1 user".into())
}

fn list_users(st: &State, args: &Args) -> Result<Outcome, Refused> {
    let columns = args.show(&["Name", "DefaultAccount", "Description"]);
    let member_of = args.get("-a");
    let mut rows = Vec::new();
    for (name, u) in &st.users {
        if args.get("-u").is_some_and(|w| w != name) {
            continue;
        }
        if let Some(a) = member_of
            && !st
                .accounts
                .get(a)
                .is_some_and(|acc| acc.users.contains(name))
        {
            continue;
        }
        let row = columns
            .iter()
            .map(|c| match c.as_str() {
                "Name" => Ok(name.clone()),
                "DefaultAccount" => Ok(u.default_account.clone()),
                "Description" => Ok(u.description.clone()),
                "Active" => Ok("True".into()),
                other => Err(unknown_column(other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(table(args, &columns, rows))
}

fn create_account(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let name = args.required("-a")?;
    valid_name("account", name)?;
    if st.accounts.contains_key(name) {
        return Err(bad("Account already exists"));
    }
    let users = args.all("-u");
    for u in &users {
        let u = u.trim_start_matches('+');
        if !st.users.contains_key(u) {
            return Err(bad(format!("User {u} does not exist")));
        }
    }
    st.accounts.insert(
        name.to_owned(),
        Account {
            description: args.get("-d").unwrap_or_default().to_owned(),
            organization: args.get("-o").unwrap_or_default().to_owned(),
            users: users
                .iter()
                .map(|u| u.trim_start_matches('+').to_owned())
                .collect(),
        },
    );
    done(args, "Successfully created 1 account".into())
}

fn list_accounts(st: &State, args: &Args) -> Result<Outcome, Refused> {
    let columns = args.show(&["Name", "Active", "Users", "Organization", "Description"]);
    let mut rows = Vec::new();
    for (name, a) in &st.accounts {
        if args.get("-a").is_some_and(|w| w != name) {
            continue;
        }
        if args
            .get("-u")
            .is_some_and(|u| !a.users.iter().any(|m| m == u))
        {
            continue;
        }
        let row = columns
            .iter()
            .map(|c| match c.as_str() {
                "Name" => Ok(name.clone()),
                "Active" => Ok("True".into()),
                "Users" => Ok(a.users.join(",")),
                "Organization" => Ok(a.organization.clone()),
                "Description" => Ok(a.description.clone()),
                other => Err(unknown_column(other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(table(args, &columns, rows))
}

fn account_mut<'a>(st: &'a mut State, name: &str) -> Result<&'a mut Account, Refused> {
    st.accounts
        .get_mut(name)
        .ok_or_else(|| bad(format!("Account {name} does not exist")))
}

fn modify_account(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let name = args.required("-a")?.to_owned();
    let adds: Vec<String> = args
        .all("--add-user")
        .iter()
        .map(|u| u.trim_start_matches('+').to_owned())
        .collect();
    for u in &adds {
        if !st.users.contains_key(u) {
            return Err(bad(format!("User {u} does not exist")));
        }
    }
    let dels = args.all("--del-user");
    let account = account_mut(st, &name)?;
    for u in &dels {
        if !account.users.contains(u) {
            return Err(bad(format!("User {u} is not a member of account {name}")));
        }
    }
    if let Some(d) = args.get("-d") {
        account.description = d.to_owned();
    }
    if let Some(o) = args.get("-o") {
        account.organization = o.to_owned();
    }
    for u in adds {
        if !account.users.contains(&u) {
            account.users.push(u);
        }
    }
    account.users.retain(|u| !dels.contains(u));
    done(args, "Successfully modified 1 account".into())
}

fn delete_account(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let name = args.required("-a")?;
    if st.accounts.remove(name).is_none() {
        return Err(bad(format!("Account {name} does not exist")));
    }
    done(args, "Successfully deleted 1 account".into())
}

fn create_fund(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let account = args.required("-a")?;
    if !st.accounts.contains_key(account) {
        return Err(bad(format!("Account {account} does not exist")));
    }
    st.last_fund += 1;
    let id = st.last_fund;
    st.funds.insert(
        id,
        Fund {
            name: args.get("-n").unwrap_or_default().to_owned(),
            account: account.to_owned(),
            allocated: 0.0,
            balance: 0.0,
        },
    );
    done(args, format!("Successfully created 1 fund: {id}"))
}

fn list_funds(st: &State, args: &Args) -> Result<Outcome, Refused> {
    let columns = args.show(&["Id", "Name", "Constraints", "Allocated", "Balance"]);
    let mut rows = Vec::new();
    for (id, f) in &st.funds {
        if args.get("-f").is_some_and(|w| w != id.to_string()) {
            continue;
        }
        if args.get("-a").is_some_and(|a| a != f.account) {
            continue;
        }
        if let Some(u) = args.get("-u")
            && !st
                .accounts
                .get(&f.account)
                .is_some_and(|a| a.users.iter().any(|m| m == u))
        {
            continue;
        }
        let row = columns
            .iter()
            .map(|c| match c.as_str() {
                "Id" => Ok(id.to_string()),
                "Name" => Ok(f.name.clone()),
                "Constraints" => Ok(format!("Account={}", f.account)),
                "Allocated" => Ok(money(f.allocated)),
                "Balance" => Ok(money(f.balance)),
                other => Err(unknown_column(other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(table(args, &columns, rows))
}

fn delete_fund(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let id = fund_id(args.required("-f")?)?;
    if st.funds.remove(&id).is_none() {
        return Err(bad(format!("Fund {id} does not exist")));
    }
    done(args, "Successfully deleted 1 fund".into())
}

fn fund_id(text: &str) -> Result<u64, Refused> {
    text.parse()
        .map_err(|_| bad(format!("Invalid fund id {text:?}")))
}

/// The fund `-f` names, or the one fund of account `-a`.
fn target_fund(st: &State, args: &Args) -> Result<u64, Refused> {
    if let Some(f) = args.get("-f") {
        let id = fund_id(f)?;
        let fund = st
            .funds
            .get(&id)
            .ok_or_else(|| bad(format!("Fund {id} does not exist")))?;
        if args.get("-a").is_some_and(|a| a != fund.account) {
            return Err(bad(format!("Fund {id} does not belong to the account")));
        }
        return Ok(id);
    }
    let account = args.required("-a")?;
    if !st.accounts.contains_key(account) {
        return Err(bad(format!("Account {account} does not exist")));
    }
    let ids: Vec<u64> = st
        .funds
        .iter()
        .filter(|(_, f)| f.account == account)
        .map(|(id, _)| *id)
        .collect();
    match ids.as_slice() {
        [one] => Ok(*one),
        [] => Err(bad(format!("No fund exists for account {account}"))),
        _ => Err(bad(format!(
            "Multiple funds exist for account {account}; specify one with -f"
        ))),
    }
}

fn deposit(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let z = amount(args)?;
    if z < 0.0 {
        return Err(bad("The deposit amount cannot be negative"));
    }
    let id = target_fund(st, args)?;
    let fund = st
        .funds
        .get_mut(&id)
        .ok_or_else(|| bad(format!("Fund {id} does not exist")))?;
    fund.allocated += z;
    fund.balance += z;
    done(
        args,
        format!("Successfully deposited {} credits into fund {id}", money(z)),
    )
}

fn withdraw(st: &mut State, args: &Args) -> Result<Outcome, Refused> {
    let z = amount(args)?;
    if z <= 0.0 {
        return Err(bad("Amount must be positive"));
    }
    let id = target_fund(st, args)?;
    let fund = st
        .funds
        .get_mut(&id)
        .ok_or_else(|| bad(format!("Fund {id} does not exist")))?;
    if fund.balance + 1e-9 < z {
        return Err(Outcome::fail(
            EXIT_INSUFFICIENT,
            "Insufficient balance to perform requested withdrawal",
        ));
    }
    fund.allocated -= z;
    fund.balance -= z;
    done(
        args,
        format!("Successfully withdrew {} credits from fund {id}", money(z)),
    )
}

fn charge(st: &mut State, args: &Args, now: &str) -> Result<Outcome, Refused> {
    let job = args.required("-J")?.to_owned();
    let account = args.required("-a")?.to_owned();
    let user = args.required("-u")?.to_owned();
    let z = amount(args)?;
    if z < 0.0 {
        return Err(bad("Amount must be positive"));
    }
    let a = st
        .accounts
        .get(&account)
        .ok_or_else(|| bad(format!("Account {account} does not exist")))?;
    if !st.users.contains_key(&user) {
        return Err(bad(format!("User {user} does not exist")));
    }
    if !a.users.contains(&user) {
        return Err(bad(format!(
            "User {user} is not a member of account {account}"
        )));
    }
    let fund = st
        .funds
        .values_mut()
        .find(|f| f.account == account && f.balance + 1e-9 >= z)
        .ok_or_else(|| {
            Outcome::fail(
                EXIT_INSUFFICIENT,
                "Insufficient funds: There are no valid allocations against which to issue the charge",
            )
        })?;
    fund.balance -= z;
    st.last_record += 1;
    st.records.push(Record {
        id: st.last_record,
        instance: job.clone(),
        account,
        user,
        charge: z,
        time: now.to_owned(),
    });
    done(
        args,
        format!("Successfully charged job {job} for {} credits", money(z)),
    )
}

/// A time bound of `-s`/`-e`: `YYYY-MM-DD`, `YYYY-MM-DD hh:mm:ss` or
/// `YYYY-MM-DDThh:mm:ss`, in a form that compares as text.
fn bound(text: &str, end: bool) -> Result<String, Refused> {
    let t = text.replace('T', " ");
    let valid = |s: &str| {
        let b = s.as_bytes();
        b.len() == 19
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
    };
    let full = match t.len() {
        10 if end => format!("{t} 23:59:59"),
        10 => format!("{t} 00:00:00"),
        _ => t,
    };
    if valid(&full) {
        Ok(full)
    } else {
        Err(bad(format!("Invalid time {text:?}")))
    }
}

fn list_usage(st: &State, args: &Args) -> Result<Outcome, Refused> {
    let columns = args.show(&["Id", "Instance", "Account", "User", "Charge", "StartTime"]);
    let start = args.get("-s").map(|s| bound(s, false)).transpose()?;
    let end = args.get("-e").map(|e| bound(e, true)).transpose()?;
    let mut rows = Vec::new();
    for r in &st.records {
        if args.get("-a").is_some_and(|a| a != r.account)
            || args.get("-u").is_some_and(|u| u != r.user)
            || start.as_deref().is_some_and(|s| r.time.as_str() < s)
            || end.as_deref().is_some_and(|e| r.time.as_str() > e)
        {
            continue;
        }
        let row = columns
            .iter()
            .map(|c| match c.as_str() {
                "Id" => Ok(r.id.to_string()),
                "Instance" => Ok(r.instance.clone()),
                "Account" => Ok(r.account.clone()),
                "User" => Ok(r.user.clone()),
                "Charge" => Ok(money(r.charge)),
                "StartTime" | "EndTime" | "CreationTime" => Ok(r.time.clone()),
                other => Err(unknown_column(other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(table(args, &columns, rows))
}

#[cfg(test)]
mod tests;
