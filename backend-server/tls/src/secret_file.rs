//! Secret files (API tokens, passwords): who may read them, and what a
//! value may look like.
//!
//! The ownership rule is PostgreSQL's for its server key: the file is
//! readable by the service user only (owner = the process's user, no group
//! or other bits), or it is owned by root and at most readable by its group
//! (`0640 root:waldur`, or a Kubernetes secret mounted `0440` with an
//! `fsGroup`). Anything more open is refused at start, naming the file and
//! the fix, as ssh refuses an open private key.
//!
//! The value is the file's text with one trailing newline removed; any other
//! whitespace is refused (a pasted token with a stray space or a second line
//! would otherwise fail every request as if Waldur were down).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a secret file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Other users can read or change the file.
    #[error(
        "{path} is {what} (mode {mode:04o}); run `chmod {fix} {path}` (readable by the service user only, or root-owned and readable by its group)"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Who has access that should not.
        what: &'static str,
        /// Its permission bits.
        mode: u32,
        /// The mode to set.
        fix: &'static str,
    },
    /// The file is empty.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: String,
    },
    /// The value holds whitespace other than one trailing newline.
    #[error(
        "{path}: the value contains whitespace (a space, tab or second line); a secret is one line without blanks"
    )]
    Whitespace {
        /// The file.
        path: String,
    },
}

/// Reads a secret file after checking who may read it.
pub fn read(path: &Path) -> Result<String, SecretFileError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| SecretFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    check_mode(&shown, meta.mode(), meta.uid(), process_uid())?;
    let text = std::fs::read_to_string(path).map_err(|e| SecretFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    value(&shown, &text)
}

/// The secret in `text`: one trailing newline (`\n` or `\r\n`) removed,
/// no other whitespace allowed.
pub fn value(shown: &str, text: &str) -> Result<String, SecretFileError> {
    let v = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if v.is_empty() {
        return Err(SecretFileError::Empty {
            path: shown.to_owned(),
        });
    }
    if v.chars().any(char::is_whitespace) {
        return Err(SecretFileError::Whitespace {
            path: shown.to_owned(),
        });
    }
    Ok(v.to_owned())
}

/// The PostgreSQL rule on the permission bits of a file owned by `owner`,
/// read by a process running as `me` (`None`: unknown, only other users'
/// access is checked).
fn check_mode(shown: &str, mode: u32, owner: u32, me: Option<u32>) -> Result<(), SecretFileError> {
    let bits = mode & 0o777;
    let too_open = |what, fix| SecretFileError::TooOpen {
        path: shown.to_owned(),
        what,
        mode: bits,
        fix,
    };
    if bits & 0o007 != 0 {
        return Err(too_open("accessible by other users", "600"));
    }
    if owner == 0 && me != Some(0) {
        // Root-owned: the service reads it through its group.
        if bits & 0o030 != 0 {
            return Err(too_open("writable or executable by its group", "640"));
        }
        return Ok(());
    }
    if bits & 0o070 != 0 {
        return Err(too_open("accessible by its group", "600"));
    }
    Ok(())
}

/// The effective user of this process: the owner of `/proc/self` (Linux),
/// without unsafe code or a libc binding.
fn process_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Creates `dir` (and parents) and makes it `0700` whatever the umask: it
/// holds keys.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_the_service_user_must_be_private() {
        assert!(check_mode("t", 0o600, 1000, Some(1000)).is_ok());
        assert!(check_mode("t", 0o400, 1000, Some(1000)).is_ok());
        let e = check_mode("t", 0o640, 1000, Some(1000)).unwrap_err();
        assert!(e.to_string().contains("chmod 600 t"), "{e}");
        assert!(e.to_string().contains("0640"), "{e}");
        assert!(check_mode("t", 0o604, 1000, Some(1000)).is_err());
    }

    #[test]
    fn a_root_owned_file_may_be_read_by_its_group_only() {
        assert!(check_mode("t", 0o640, 0, Some(999)).is_ok());
        assert!(check_mode("t", 0o440, 0, Some(999)).is_ok());
        assert!(check_mode("t", 0o660, 0, Some(999)).is_err());
        assert!(check_mode("t", 0o644, 0, Some(999)).is_err());
        // Root reading its own file: the group has no business with it.
        assert!(check_mode("t", 0o640, 0, Some(0)).is_err());
    }

    #[test]
    fn one_trailing_newline_is_trimmed_and_other_whitespace_refused() {
        assert_eq!(value("t", "abc\n").unwrap(), "abc");
        assert_eq!(value("t", "abc\r\n").unwrap(), "abc");
        assert_eq!(value("t", "abc").unwrap(), "abc");
        for bad in ["abc\n\n", " abc", "ab c", "abc\tx", "abc\ndef"] {
            assert!(
                matches!(value("t", bad), Err(SecretFileError::Whitespace { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            value("t", "\n"),
            Err(SecretFileError::Empty { .. })
        ));
    }

    #[test]
    fn an_open_token_file_is_refused_naming_the_file_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("chmod"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path).unwrap(), "secret");
    }

    #[test]
    fn a_private_dir_is_0700_whatever_the_umask_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&pki).unwrap();
        let mode = std::fs::metadata(&pki).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
