//! Where allocations sit in the account tree, checked cheaply.
//!
//! The coordinator asks `SyncResourceProject` for every allocation of an
//! offering in a full pass (and for each one whose project or customer it
//! saw change). Reading the three accounts concerned for each call would
//! cost a `sacctmgr` per allocation, so the check is made against one
//! listing of the cluster's account rows, shared by the calls of the next
//! [`TREE_TTL`]. Only an allocation the snapshot shows out of place takes
//! the precise path: fresh reads, then the moves; a move drops the
//! snapshot. A snapshot can only be wrong about a change made in SLURM in
//! the last few seconds by someone else, and the next pass sees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::Ownership;
use crate::{SlurmBackend, args};

/// How long one listing answers placement checks.
pub(crate) const TREE_TTL: Duration = Duration::from_secs(30);

/// Account rows of the cluster: account → (parent, this backend's own).
#[derive(Debug, Default)]
pub(crate) struct Tree {
    accounts: HashMap<String, (String, bool)>,
}

impl Tree {
    /// Whether `id` is this backend's allocation under `project`, and
    /// `project` is under `customer` (when there is a customer tier) with
    /// `customer` present.
    pub(crate) fn in_place(&self, id: &str, project: &str, customer: Option<&str>) -> bool {
        let parent_of = |a: &str| self.accounts.get(a).map(|(p, _)| p.as_str());
        let ours = self.accounts.get(id).is_some_and(|(_, owned)| *owned);
        ours && parent_of(id) == Some(project)
            && match customer {
                Some(c) => parent_of(project) == Some(c) && parent_of(c).is_some(),
                None => parent_of(project).is_some(),
            }
    }
}

/// The last listing, if any, and when it was read.
pub(crate) type TreeCache = tokio::sync::Mutex<Option<(Instant, Arc<Tree>)>>;

impl SlurmBackend {
    /// A listing of the account rows at most [`TREE_TTL`] old, read once for
    /// all callers waiting; `None` when the listing fails (the caller then
    /// takes the precise path).
    pub(crate) async fn recent_tree(&self) -> Option<Arc<Tree>> {
        let mut cached = self.tree.lock().await;
        if let Some((at, tree)) = cached.as_ref()
            && at.elapsed() < TREE_TTL
        {
            return Some(tree.clone());
        }
        let out = match self
            .slurm
            .sacctmgr_read(args![
                "show",
                "account",
                "withassoc",
                crate::accounts::ASSOC_FORMAT
            ])
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!(error = %e.message, "account tree not listed; checking allocations one by one");
                return None;
            }
        };
        let mut tree = Tree::default();
        for line in crate::parse::rows(&out) {
            // A row that does not read is left out: its allocation is then
            // not in the snapshot and takes the precise path.
            let Ok(row) = crate::accounts::assoc(&line) else {
                continue;
            };
            if !row.user.is_empty() || (row.parent.is_empty() && row.account != "root") {
                continue;
            }
            let owned = matches!(self.ownership(&row), Ownership::Owned { .. });
            tree.accounts.insert(row.account, (row.parent, owned));
        }
        let tree = Arc::new(tree);
        *cached = Some((Instant::now(), tree.clone()));
        Some(tree)
    }

    /// Forgets the listing after a move of this backend's.
    pub(crate) async fn forget_tree(&self) {
        *self.tree.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(rows: &[(&str, &str, bool)]) -> Tree {
        Tree {
            accounts: rows
                .iter()
                .map(|(a, p, o)| ((*a).to_owned(), ((*p).to_owned(), *o)))
                .collect(),
        }
    }

    #[test]
    fn an_allocation_is_in_place_only_under_its_project_under_its_customer() {
        let t = tree(&[
            ("root", "", false),
            ("c_a", "root", false),
            ("c_b", "root", false),
            ("p_x", "c_a", false),
            ("a_1", "p_x", true),
            ("a_foreign", "p_x", false),
        ]);
        assert!(t.in_place("a_1", "p_x", Some("c_a")));
        // The project moved to another customer in Waldur.
        assert!(!t.in_place("a_1", "p_x", Some("c_b")));
        // The resource moved to another project.
        assert!(!t.in_place("a_1", "p_y", Some("c_a")));
        // Flat hierarchy: no customer tier.
        assert!(t.in_place("a_1", "p_x", None));
        // Not this backend's, or unknown: the precise path decides.
        assert!(!t.in_place("a_foreign", "p_x", Some("c_a")));
        assert!(!t.in_place("a_2", "p_x", Some("c_a")));
        // A customer missing from the tree is out of place too.
        assert!(!t.in_place("a_1", "p_x", Some("c_gone")));
    }
}
