//! The command line of a `mam-*` command: `-x value` and `--long value`
//! options, the flags `--raw`, `--quiet` and `--full`, and `--show` with a
//! comma-separated column list. Options may repeat (`--add-user a
//! --add-user b`); each command says which it knows.

use std::collections::BTreeMap;

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, Vec<String>>,
    /// `--raw`: `|`-separated fields.
    pub raw: bool,
    /// `--quiet`: no header, no success message.
    pub quiet: bool,
}

/// A usage error (exit code 2, as getopt's).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl Args {
    /// Parses `args` against the options a command takes (`-a`, `--show`,
    /// ...). Every option takes one value, except the three flags.
    pub fn parse(args: &[String], known: &[&str]) -> Result<Self, UsageError> {
        let mut out = Self::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--raw" => out.raw = true,
                "--quiet" => out.quiet = true,
                "--full" => {}
                option if known.contains(&option) || option == "--show" => {
                    let value = it.next().ok_or_else(|| {
                        UsageError(format!("Option {option} requires an argument"))
                    })?;
                    out.values
                        .entry(option.to_owned())
                        .or_default()
                        .push(value.clone());
                }
                other => return Err(UsageError(format!("Unknown option: {other}"))),
            }
        }
        Ok(out)
    }

    /// The last value of an option.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.values
            .get(option)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a repeatable option, commas splitting further.
    pub fn all(&self, option: &str) -> Vec<String> {
        self.values
            .get(option)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A required option.
    pub fn required(&self, option: &str) -> Result<&str, UsageError> {
        self.get(option)
            .ok_or_else(|| UsageError(format!("Option {option} is required")))
    }

    /// The `--show` columns, or the command's defaults.
    pub fn show(&self, defaults: &[&str]) -> Vec<String> {
        match self.get("--show") {
            Some(list) => list.split(',').map(|c| c.trim().to_owned()).collect(),
            None => defaults.iter().map(|c| (*c).to_owned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn options_flags_and_repeats_are_read() {
        let a = Args::parse(
            &argv("--raw -a acc --add-user +u1 --add-user u2,u3 --quiet"),
            &["-a", "--add-user"],
        )
        .unwrap();
        assert!(a.raw && a.quiet);
        assert_eq!(a.get("-a"), Some("acc"));
        assert_eq!(a.all("--add-user"), ["+u1", "u2", "u3"]);
    }

    #[test]
    fn unknown_options_and_missing_values_are_usage_errors() {
        assert!(Args::parse(&argv("-x 1"), &["-a"]).is_err());
        assert!(Args::parse(&argv("-a"), &["-a"]).is_err());
    }
}
