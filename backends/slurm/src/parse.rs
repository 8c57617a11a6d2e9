//! Pure parsers for SLURM command output (`sacctmgr --parsable2`, `sacct`,
//! TRES strings, elapsed times). Nothing here panics on any input; the
//! property tests feed them arbitrary text.

use std::collections::BTreeMap;

/// `|`-separated rows of `--parsable2 --noheader` output; lines without a
/// `|` are ignored (sacctmgr's own messages).
pub fn rows(output: &str) -> Vec<Vec<&str>> {
    output
        .lines()
        .filter(|l| l.contains('|'))
        .map(|l| l.split('|').collect())
        .collect()
}

/// A TRES string `cpu=10,mem=60G,gres/gpu=2` as name → raw value text.
pub fn tres(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// SLURM integers with an optional binary suffix (`K`, `M`, `G`, `T`):
/// leading digits only, so `1.5G` reads as 1 GiB and text without digits
/// as 0. Saturates instead of overflowing.
pub fn int_with_suffix(s: &str) -> u64 {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let Ok(n) = digits.parse::<u64>() else {
        return 0;
    };
    let shift = match s[digits.len()..].chars().next() {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        Some('T') => 40,
        Some('P') => 50,
        _ => 0,
    };
    n.saturating_mul(1u64 << shift)
}

/// A limit value as sacctmgr shows it, in the TRES's base unit: `mem` in
/// MB (sacctmgr prints `60G`), everything else as is.
pub fn limit_value(tres: &str, raw: &str) -> u64 {
    let v = int_with_suffix(raw);
    if tres == "mem" {
        // With a suffix the value is in bytes; a bare number is already MB.
        if raw.chars().any(|c| c.is_ascii_alphabetic()) {
            v >> 20
        } else {
            v
        }
    } else {
        v
    }
}

/// sacct's `Elapsed` as minutes: `[D-]HH:MM:SS[.ffffff]`, hours may exceed 24.
/// Anything else is 0 minutes.
pub fn elapsed_minutes(s: &str) -> f64 {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => match d.parse::<u64>() {
            Ok(d) => (d, r),
            Err(_) => return 0.0,
        },
        None => (0, s),
    };
    let rest = rest.split('.').next().unwrap_or("");
    let mut parts = rest.split(':').map(|p| p.parse::<u64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(sec)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return 0.0;
    };
    let seconds = days
        .saturating_mul(86_400)
        .saturating_add(h.saturating_mul(3_600))
        .saturating_add(m.saturating_mul(60))
        .saturating_add(sec);
    seconds as f64 / 60.0
}

/// Raw usage: account → user → TRES → TRES-minutes (mem in MB-minutes).
pub type RawUsage = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// Sums `sacct --format=Account,ReqTRES,Elapsed,User` lines, keeping the
/// TRES in `wanted`. Requested TRES × elapsed minutes; `mem` is requested in
/// MB (`--noconvert` prints `mem=<n>M`), so it becomes MB-minutes.
///
/// This is the hot path of a usage report over many accounts: it borrows
/// from the input and allocates only for new account, user and TRES keys.
pub fn sacct_usage(output: &str, wanted: &[&str]) -> RawUsage {
    let mut out = RawUsage::new();
    for line in output.lines() {
        let mut fields = line.split('|');
        let (Some(account), Some(req), Some(elapsed), Some(user)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (account, user) = (account.trim(), user.trim());
        if account.is_empty() || user.is_empty() {
            continue;
        }
        let minutes = elapsed_minutes(elapsed);
        let mut per_tres: Option<&mut BTreeMap<String, f64>> = None;
        for pair in req.split(',') {
            let Some((name, raw)) = pair.split_once('=') else {
                continue;
            };
            let name = name.trim();
            if !wanted.contains(&name) {
                continue;
            }
            let value = limit_value(name, raw.trim()) as f64 * minutes;
            let map = match per_tres.take() {
                Some(m) => m,
                None => user_entry(&mut out, account, user),
            };
            match map.get_mut(name) {
                Some(v) => *v += value,
                None => {
                    map.insert(name.to_owned(), value);
                }
            }
            per_tres = Some(map);
        }
    }
    out
}

fn user_entry<'a>(
    out: &'a mut RawUsage,
    account: &str,
    user: &str,
) -> &'a mut BTreeMap<String, f64> {
    // Account names come back as SLURM stores them; compare lower-cased.
    let account = if account.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(account.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(account)
    };
    if !out.contains_key(account.as_ref()) {
        out.insert(account.clone().into_owned(), BTreeMap::new());
    }
    let users = out.get_mut(account.as_ref()).expect("inserted above");
    if !users.contains_key(user) {
        users.insert(user.to_owned(), BTreeMap::new());
    }
    users.get_mut(user).expect("inserted above")
}

/// Rounds to 2 decimals, ties to even on the binary value (as the original's
/// Python `round(x, 2)`).
pub fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tres_strings_split_on_the_first_equals_sign() {
        let t = tres("cpu=64,mem=512G,gres/gpu=4,broken");
        assert_eq!(t["cpu"], "64");
        assert_eq!(t["gres/gpu"], "4");
        assert!(!t.contains_key("broken"));
    }

    #[test]
    fn suffixes_are_binary_and_fractions_are_cut() {
        assert_eq!(int_with_suffix("2K"), 2048);
        assert_eq!(int_with_suffix("60G"), 60 << 30);
        assert_eq!(int_with_suffix("1.5G"), 1);
        assert_eq!(int_with_suffix("x"), 0);
        assert_eq!(limit_value("mem", "60G"), 61_440);
        assert_eq!(limit_value("mem", "61440"), 61_440);
        assert_eq!(limit_value("cpu", "600"), 600);
    }

    #[test]
    fn elapsed_forms_become_minutes() {
        assert_eq!(elapsed_minutes("01:00:00"), 60.0);
        assert_eq!(elapsed_minutes("1-00:00:00"), 1440.0);
        assert_eq!(elapsed_minutes("850:00:00"), 51_000.0);
        assert_eq!(elapsed_minutes("00:00:30.500"), 0.5);
        assert_eq!(elapsed_minutes("00:30"), 0.0);
        assert_eq!(elapsed_minutes("x-01:00:00"), 0.0);
    }

    #[test]
    fn sacct_lines_sum_requested_tres_times_minutes_per_account_and_user() {
        // Recorded from this cluster: `sacct --parsable2 --noheader --noconvert
        // --allocations --allusers --format=Account,ReqTRES,Elapsed,User`.
        let out = "proj_a|billing=1,cpu=1,mem=100M,node=1|00:00:05|alice\n\
                   proj_a|billing=2,cpu=2,mem=2048M,node=1|00:01:00|alice\n\
                   PROJ_A|billing=64,cpu=64,mem=524288M,node=1|08:00:00|bob\n\
                   junk line without separators\n";
        let u = sacct_usage(out, &["cpu", "mem"]);
        let alice = &u["proj_a"]["alice"];
        assert!((alice["cpu"] - (5.0 / 60.0 + 2.0)).abs() < 1e-9);
        assert!((alice["mem"] - (100.0 * 5.0 / 60.0 + 2048.0)).abs() < 1e-9);
        assert_eq!(u["proj_a"]["bob"]["cpu"], 30_720.0);
        assert_eq!(u["proj_a"]["bob"]["mem"], 251_658_240.0);
        assert!(!u["proj_a"]["bob"].contains_key("billing"));
    }

    #[test]
    fn rounding_to_two_decimals_ties_to_even_on_the_binary_value() {
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(1.005), 1.0);
        assert_eq!(round2(2.675), 2.67);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_text(s in ".{0,200}") {
            let _ = rows(&s);
            let _ = tres(&s);
            let _ = int_with_suffix(&s);
            let _ = elapsed_minutes(&s);
            let _ = sacct_usage(&s, &["cpu", "mem"]);
        }

        #[test]
        fn sacct_lines_of_arbitrary_fields_never_panic(a in "[a-z|]{0,10}", r in "[a-z0-9=,/.MGK]{0,30}", e in "[0-9:.-]{0,15}", u in ".{0,10}") {
            let _ = sacct_usage(&format!("{a}|{r}|{e}|{u}"), &["cpu", "mem"]);
        }
    }
}
