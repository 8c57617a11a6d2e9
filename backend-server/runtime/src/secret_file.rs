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
    /// The file belongs to a user other than the service's or root.
    #[error(
        "{path} is owned by uid {owner}, neither this service's user nor root; `chown` it to one of them"
    )]
    Owner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
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

/// Reads a secret file after checking who may read it. The checks look at
/// the file that was opened, so a swap between check and read cannot slip
/// another file in. Symbolic links are followed (Kubernetes mounts secrets
/// through them); the rule applies to the file they lead to.
pub fn read(path: &Path) -> Result<String, SecretFileError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let failed = |e: std::io::Error| SecretFileError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    check_owner(&shown, meta.uid(), process_uid())?;
    check_mode(&shown, meta.mode(), meta.uid(), process_uid())?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(failed)?;
    value(&shown, &text)
}

/// The owner must be the process's user or root: a file of a third user is
/// that user's to change.
fn check_owner(shown: &str, owner: u32, me: Option<u32>) -> Result<(), SecretFileError> {
    match me {
        Some(me) if owner != me && owner != 0 => Err(SecretFileError::Owner {
            path: shown.to_owned(),
            owner,
        }),
        _ => Ok(()),
    }
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

/// A directory for keys: created `0700` (whatever the umask) when missing.
/// An existing one keeps its mode, which may let a group traverse it (a
/// shared `/etc/waldur/pki`), but one other users can write to is refused:
/// they could swap the keys.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let bits = meta.mode() & 0o777;
            if bits & 0o022 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is writable by other users (mode {bits:04o}); run `chmod go-w {}`",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
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
    fn a_file_of_a_third_user_is_refused() {
        assert!(check_owner("t", 1000, Some(1000)).is_ok());
        assert!(check_owner("t", 0, Some(1000)).is_ok());
        let e = check_owner("t", 1001, Some(1000)).unwrap_err();
        assert!(e.to_string().contains("uid 1001"), "{e}");
        assert!(check_owner("t", 1001, Some(0)).is_err());
    }

    #[test]
    fn a_new_key_dir_is_0700_and_an_existing_one_keeps_its_mode_unless_others_may_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("new/pki");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o750);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&shared).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
    }
}
