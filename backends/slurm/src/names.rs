//! Names that reach SLURM commands. Commands never run through a shell, and
//! every name from outside is checked here first, so nothing from a request
//! can become an extra argument or option.

/// Account, QoS, partition and cluster names: a letter or digit, then
/// letters, digits, `_`, `-` or `.`, at most 64 characters. SLURM folds
/// account names to lower case; upper case is refused to keep ids exact.
pub fn valid_account(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

/// Local usernames (POSIX portable): a letter or `_`, then letters, digits,
/// `_`, `-`, `.`, at most 32 characters.
pub fn valid_user(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Text for `description=`: quotes, `|` and control characters removed,
/// whitespace runs collapsed. A newline or a `|` would break the rows of
/// `--parsable2` output, and descriptions come from resource names anyone
/// can choose.
pub fn description(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '"' | '|'))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_refuse_option_lookalikes_and_spaces() {
        assert!(valid_account("hpc_weather-run"));
        assert!(!valid_account("-x"));
        assert!(!valid_account("a b"));
        assert!(!valid_account("a=b"));
        assert!(!valid_account("Upper"));
        assert!(!valid_account(""));
    }

    #[test]
    fn descriptions_lose_quotes_newlines_and_bars() {
        assert_eq!(description("My \"Big\"\n\tProject"), "My Big Project");
        assert_eq!(description("lab | gpu\u{7}x"), "lab gpu x");
    }
}
