//! Self checks (`GetDiagnostics`, `waldur-backend-server check`,
//! `waldur-coordinator diagnostics` and `check`): everything the settings
//! name must exist in SLURM, or the first order or pause that needs it
//! fails far from its cause. Each check is one line an operator can act
//! on; a read that fails is a failed check, never a panic.

use std::collections::BTreeSet;

use waldur_backend_sdk::types::{CheckStatus, DiagnosticCheck, Diagnostics};

use crate::SlurmBackend;
use crate::args;

impl SlurmBackend {
    /// Runs every check; at most six SLURM processes.
    pub(crate) async fn diagnose(&self) -> Diagnostics {
        let mut d = Diagnostics::default();
        let mut check = |name: String, ok: bool, message: String| {
            d.checks.push(DiagnosticCheck {
                name,
                status: if ok {
                    CheckStatus::Ok
                } else {
                    CheckStatus::Failed
                },
                message,
            });
        };
        let s = &self.settings;
        match self.slurm.version().await {
            Ok(v) => check("slurm_version".into(), true, v),
            Err(e) => check("slurm_version".into(), false, e.message),
        }
        match self
            .names(args!["show", "cluster", "format=cluster,controlhost"])
            .await
        {
            Ok(clusters) => match &s.cluster_name {
                Some(c) => check(
                    "cluster".into(),
                    clusters.contains(c),
                    if clusters.contains(c) {
                        format!("cluster {c} is known to slurmdbd")
                    } else {
                        format!(
                            "cluster {c} is not known to slurmdbd (it knows {}): fix cluster_name",
                            join(&clusters)
                        )
                    },
                ),
                None => check(
                    "cluster".into(),
                    true,
                    "no cluster_name: commands act on every cluster of slurmdbd".into(),
                ),
            },
            Err(e) => check("cluster".into(), false, e.message),
        }
        let wanted = [s.default_account.clone(), s.root_account().to_owned()];
        match self.rows(&wanted).await {
            Ok(rows) => {
                for a in wanted.iter().collect::<BTreeSet<_>>() {
                    let ok = rows.account(a).is_some();
                    check(
                        format!("account_{a}"),
                        ok,
                        if ok {
                            format!("account {a} exists")
                        } else {
                            format!(
                                "account {a} is missing: create it or fix default_account/root_account"
                            )
                        },
                    );
                }
            }
            Err(e) => check("accounting".into(), false, e.message),
        }
        // Every QoS a setting names: the swap model writes them on pause,
        // downscale and restore, the per-allocation QoS adds the others.
        let mut qos: Vec<(&str, &str)> = vec![("qos_default", s.qos_default.as_str())];
        let mut named = BTreeSet::new();
        qos.extend(s.qos_paused.as_deref().map(|q| ("qos_paused", q)));
        qos.extend(s.qos_downscaled.as_deref().map(|q| ("qos_downscaled", q)));
        if s.qos_management.enabled {
            qos.extend(
                s.qos_management
                    .additional_qos
                    .iter()
                    .map(|q| ("qos_management.additional_qos", q.as_str())),
            );
        }
        match self
            .names(args!["show", "qos", "format=name,description"])
            .await
        {
            Ok(known) => {
                // One line per QoS, under the first setting that names it.
                for (setting, q) in qos.into_iter().filter(|(_, q)| named.insert(*q)) {
                    let ok = known.contains(q);
                    check(
                        format!("qos_{q}"),
                        ok,
                        if ok {
                            format!("{setting} {q} exists")
                        } else {
                            format!(
                                "{setting} {q} does not exist in SLURM: create it (sacctmgr add qos {q}) or fix {setting}"
                            )
                        },
                    );
                }
            }
            Err(e) => check("qos".into(), false, e.message),
        }
        let mut partitions: Vec<(&str, &str)> = s
            .default_partition
            .as_deref()
            .map(|p| ("default_partition", p))
            .into_iter()
            .collect();
        partitions.extend(s.partitions.iter().map(|p| ("partitions", p.as_str())));
        if !partitions.is_empty() {
            match self.partitions().await {
                Ok(known) => {
                    for (setting, p) in partitions {
                        let ok = known.contains(p);
                        check(
                            format!("partition_{p}"),
                            ok,
                            if ok {
                                format!("{setting} {p} exists")
                            } else {
                                format!(
                                    "{setting} {p} is not a partition of the cluster (it has {}): fix {setting}",
                                    join(&known)
                                )
                            },
                        );
                    }
                }
                Err(e) => check("partitions".into(), false, e.message),
            }
        }
        // What limits are written to: a component's own TRES, or the TRES
        // it is mapped onto.
        let tres = self.cluster_tres().await;
        let targets: BTreeSet<&String> = s
            .components
            .iter()
            .flat_map(|(key, c)| {
                if c.target_components.is_empty() {
                    vec![key]
                } else {
                    c.target_components.keys().collect()
                }
            })
            .collect();
        if tres.is_empty() {
            d.checks.push(DiagnosticCheck {
                name: "tres".into(),
                status: CheckStatus::Warning,
                message: "the cluster's TRES could not be listed; components not checked".into(),
            });
        } else {
            for key in targets {
                let ok = tres.contains(key);
                d.checks.push(DiagnosticCheck {
                    name: format!("tres_{key}"),
                    status: if ok {
                        CheckStatus::Ok
                    } else {
                        CheckStatus::Failed
                    },
                    message: if ok {
                        format!("TRES {key} exists")
                    } else {
                        format!(
                            "TRES {key} is not one of the cluster's ({}): fix components, or add it to AccountingStorageTRES",
                            tres.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    },
                });
            }
        }
        d.info
            .insert("cluster".into(), s.cluster_name.clone().unwrap_or_default());
        d.info.insert(
            "tres".into(),
            tres.iter().cloned().collect::<Vec<_>>().join(","),
        );
        d
    }

    /// The first column of a `sacctmgr show` listing (asked for two
    /// columns: parsable rows without a `|` are taken for messages).
    async fn names(
        &self,
        args: Vec<String>,
    ) -> waldur_backend_sdk::BackendResult<BTreeSet<String>> {
        let out = self.slurm.sacctmgr_read(args).await?;
        Ok(crate::parse::rows(&out)
            .into_iter()
            .filter_map(|r| r.first().map(|n| n.trim().to_owned()))
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// The partitions slurmctld knows, hidden ones too (`sinfo --all`,
    /// which asks the controller of `cluster_name`, not slurmdbd).
    async fn partitions(&self) -> waldur_backend_sdk::BackendResult<BTreeSet<String>> {
        let mut a = args!["--all", "--noheader", "--format=%R"];
        if let Some(c) = &self.settings.cluster_name {
            a.push(format!("--clusters={c}"));
        }
        let out = self.slurm.exec(&self.slurm.program("sinfo"), a).await?;
        Ok(out
            .stdout
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }
}

fn join(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
