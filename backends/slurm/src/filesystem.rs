//! Directories on the cluster: a shared directory per allocation, home
//! directories of members and their quotas. Problems are logged, never
//! fatal: an account matters more than its directory. Every file-system
//! look is async (`tokio::fs`), so no handler blocks a runtime thread.

use std::path::Path;

use waldur_backend_sdk::BackendError;
use waldur_backend_sdk::types::*;

use crate::settings::{GroupOwnerSource, QuotaProvider};
use crate::{SlurmBackend, args, names};

impl SlurmBackend {
    /// The allocation's shared directory.
    pub(crate) async fn project_directory(&self, allocation: &str) {
        let d = &self.settings.project_directory;
        let path = format!("{}/{allocation}", d.base_path.trim_end_matches('/'));
        let group = match (&d.group_name, d.group_owner_source) {
            (Some(g), GroupOwnerSource::GroupName) => g.clone(),
            _ => allocation.to_owned(),
        };
        let mut steps = vec![
            ("mkdir", args!["-p", path]),
            ("chmod", args![d.permissions, path]),
        ];
        if d.set_gid {
            steps.push(("chmod", args!["g+s", path]));
        }
        for (program, step) in steps {
            if let Err(e) = self.slurm.exec(program, step).await {
                tracing::warn!(path, error = %e.message, "project directory not set up");
                return;
            }
        }
        if let Err(e) = self
            .slurm
            .exec("chown", args![format!("{}:{group}", d.owner), path])
            .await
        {
            tracing::warn!(path, error = %e.message, "project directory owner not set");
        }
        if let (Some(q), Some(dir)) = (&d.lustre_quota, &self.directory) {
            match dir.gid(&group).await {
                Ok(Some(gid)) => {
                    for (program, a) in q.commands(gid, &path) {
                        if let Err(e) = self.slurm.exec(program, a).await {
                            tracing::warn!(path, gid, error = %e.message, "lustre project quota not set");
                            break;
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!(path, group, "no ldap group: lustre project quota not set")
                }
                Err(e) => {
                    tracing::warn!(path, error = %e.message, "lustre project quota not set")
                }
            }
        }
        if d.set_acl {
            let acl = format!("group:{group}:rwx,d:group:{group}:rwx");
            if let Err(e) = self
                .slurm
                .exec("setfacl", args!["-R", "-m", acl, path])
                .await
            {
                tracing::warn!(path, error = %e.message, "project directory ACL not set");
            }
        }
    }

    /// Applies the home directory quota of a user.
    async fn homedir_quota(&self, user: &str, home: &str) {
        let Some(q) = &self.settings.homedir_quota else {
            return;
        };
        let commands: Vec<(&str, Vec<String>)> = match q.provider {
            QuotaProvider::CephXattr => [
                ("ceph.quota.max_bytes", q.max_bytes),
                ("ceph.quota.max_files", q.max_files),
            ]
            .into_iter()
            .filter_map(|(attr, v)| v.map(|v| ("setfattr", args!["-n", attr, "-v", v, home])))
            .collect(),
            QuotaProvider::Xfs => {
                let Some(mount) = &q.mount_point else {
                    tracing::info!(
                        user,
                        "homedir_quota.mount_point is not set: xfs quota skipped"
                    );
                    return;
                };
                let parts: Vec<String> = [
                    ("bsoft", &q.block_softlimit),
                    ("bhard", &q.block_hardlimit),
                    ("isoft", &q.inode_softlimit),
                    ("ihard", &q.inode_hardlimit),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
                if parts.is_empty() {
                    return;
                }
                vec![(
                    "xfs_quota",
                    args![
                        "-x",
                        "-c",
                        format!("limit -u {} {user}", parts.join(" ")),
                        mount
                    ],
                )]
            }
            QuotaProvider::Lustre => {
                let Some(mount) = &q.mount_point else {
                    tracing::info!(
                        user,
                        "homedir_quota.mount_point is not set: lustre quota skipped"
                    );
                    return;
                };
                let mut a = args!["setquota", "-u", user];
                a.extend(crate::settings::lfs_limit_args([
                    &q.block_softlimit,
                    &q.block_hardlimit,
                    &q.inode_softlimit,
                    &q.inode_hardlimit,
                ]));
                a.push(mount.clone());
                vec![("lfs", a)]
            }
        };
        for (program, a) in commands {
            if let Err(e) = self.slurm.exec(program, a).await {
                tracing::warn!(user, error = %e.message, "home directory quota not applied");
            }
        }
    }

    /// Creates missing home directories (`mkhomedir_helper`) and applies
    /// the quota of the ones it made; an existing directory is UNCHANGED and
    /// its quota left as it is. Membership sync asks for every member each
    /// cycle, so finding a home is cheap: `homedir_base_path`, else
    /// /etc/passwd (read once per call), else `getent passwd` (directory
    /// users), asked once per user while the server runs.
    pub(crate) async fn homedirs(&self, usernames: Vec<String>, umask: &str) -> Vec<UserResult> {
        let mut out = Vec::with_capacity(usernames.len());
        let passwd = match &self.settings.homedir_base_path {
            Some(_) => String::new(),
            None => tokio::fs::read_to_string("/etc/passwd")
                .await
                .unwrap_or_default(),
        };
        for user in usernames {
            if !names::valid_user(&user) {
                out.push(UserResult::failed(
                    &user,
                    BackendError::invalid_field("usernames", "not a valid local username"),
                ));
                continue;
            }
            let home = match &self.settings.homedir_base_path {
                Some(base) => Some(format!("{}/{user}", base.trim_end_matches('/'))),
                None => match home_in(&passwd, &user) {
                    Some(h) => Some(h),
                    None => self.directory_home(&user).await,
                },
            };
            let existing = match &home {
                Some(h) => is_dir(h).await,
                None => false,
            };
            if existing {
                out.push(UserResult::unchanged(&user));
                continue;
            }
            match self
                .slurm
                .exec("/sbin/mkhomedir_helper", args![user, umask])
                .await
            {
                Ok(_) => {
                    let home = match home {
                        Some(h) => Some(h),
                        None => self.directory_home(&user).await,
                    };
                    if let Some(home) = home {
                        self.homedir_quota(&user, &home).await;
                    }
                    out.push(UserResult::applied(&user));
                }
                Err(e) => out.push(UserResult::failed(&user, e)),
            }
        }
        out
    }

    /// The home of a user /etc/passwd lacks, from the name service
    /// (`getent passwd`), remembered once known.
    async fn directory_home(&self, user: &str) -> Option<String> {
        if let Some(h) = self
            .homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
        {
            return Some(h.clone());
        }
        let out = self
            .slurm
            .exec("getent", args!["passwd", user])
            .await
            .ok()?;
        let home = home_in(&out.stdout, user)?;
        self.homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_owned(), home.clone());
        Some(home)
    }
}

async fn is_dir(path: &str) -> bool {
    tokio::fs::metadata(Path::new(path))
        .await
        .is_ok_and(|m| m.is_dir())
}

/// The home directory of `user` in passwd-format text.
fn home_in(passwd: &str, user: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 5 && !f[5].is_empty()).then(|| f[5].to_owned())
    })
}
