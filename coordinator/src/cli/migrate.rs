//! `import-config`: writes what [`waldur_config_import::migrate`] made of a
//! `waldur-site-agent` configuration. Every target is checked before the
//! first is written: an existing file is refused without `force`, a
//! symbolic link always (a planted link must not receive a token). Files
//! are created exclusively unless forced; secrets are written 0600 in a
//! 0700 folder, configs 0640.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use waldur_config_import::{COORDINATOR_FILE_NAME, Migration};

/// Writes the migration below `out_dir`; returns the files written.
pub fn write(migration: &Migration, out_dir: &Path, force: bool) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<(PathBuf, &str, u32)> = vec![(
        out_dir.join(COORDINATOR_FILE_NAME),
        migration.coordinator_yaml.as_str(),
        0o640,
    )];
    for b in &migration.backend_servers {
        files.push((out_dir.join(&b.file_name), b.yaml.as_str(), 0o640));
    }
    for s in &migration.secrets {
        files.push((out_dir.join(&s.file_name), s.value.as_str(), 0o600));
    }
    let links: Vec<String> = files
        .iter()
        .filter(|(p, _, _)| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    if !links.is_empty() {
        return Err(format!(
            "refusing to write through symbolic links: {}",
            links.join(", ")
        ));
    }
    let mut existing = Vec::new();
    for (p, _, _) in &files {
        match p.try_exists() {
            Ok(false) => {}
            Ok(true) => existing.push(p.display().to_string()),
            // A file that cannot be checked is never overwritten blindly.
            Err(e) => {
                return Err(format!(
                    "{}: cannot tell whether it exists: {e}",
                    p.display()
                ));
            }
        }
    }
    if !existing.is_empty() && !force {
        return Err(format!(
            "refusing to overwrite {} (use --force)",
            existing.join(", ")
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for (path, text, mode) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            if *mode == 0o600 {
                // Also an existing folder: secrets are nobody else's.
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(*mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut f = options
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The mode applies only on creation: enforce it on overwrite too.
        f.set_permissions(std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _, _)| p).collect())
}

/// `import-config`: reads the original agent's configuration and writes
/// this project's, reporting what could not be carried over.
pub fn import_config(args: super::ImportConfig) -> std::process::ExitCode {
    let text = match std::fs::read_to_string(&args.from) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", args.from.display());
            return std::process::ExitCode::from(super::EX_USAGE);
        }
    };
    let out_dir = std::path::absolute(&args.out_dir).unwrap_or(args.out_dir.clone());
    let options = waldur_config_import::Options {
        source: args.from.clone(),
        out_dir: out_dir.clone(),
        backend_endpoint: args.backend_endpoint,
        pki_dir: args.pki_dir,
        coordinator_identity: args.coordinator_identity,
    };
    let migration = match waldur_config_import::migrate(&text, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}: {e}", args.from.display());
            return std::process::ExitCode::from(super::EX_CONFIG);
        }
    };
    match write(&migration, &out_dir, args.force) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            for n in &migration.notes {
                println!("note: {n}");
            }
            println!(
                "next: issue the certificates (deploy/PKI.md), then run `waldur-coordinator check --config {}`",
                out_dir
                    .join(waldur_config_import::COORDINATOR_FILE_NAME)
                    .display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
