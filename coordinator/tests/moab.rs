//! The coordinator against waldur-sim and the MOAB backend over mutual TLS,
//! the backend driving the real `mam-sim` binary (built with the workspace)
//! as its `mam-*` commands: a Create with a deposit becomes an account with
//! one fund holding it, an Update moves the deposit to the new limit,
//! charges reach Waldur per user, the team follows Waldur, and a Terminate
//! removes the account, its fund and the emptied project account.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use support::{Options, World};
use waldur_backend_example::ExampleBackend;
use waldur_backend_moab::MoabBackend;
use waldur_sim::NewOrder;

/// Runs one `mam-*` command from `bin`.
fn mam(bin: &Path, command: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join(command)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Moab {
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Moab {
    fn state(&self) -> mam_sim::state::State {
        mam_sim::state::read(&self.bin).unwrap()
    }

    /// (allocated, balance) of the account's one fund.
    fn fund(&self, account: &str) -> (f64, f64) {
        let st = self.state();
        let funds: Vec<_> = st.funds.values().filter(|f| f.account == account).collect();
        assert_eq!(funds.len(), 1, "one fund per account: {funds:?}");
        (funds[0].allocated, funds[0].balance)
    }
}

async fn world() -> (World, Moab) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let out = Command::new(support::workspace_binary("mam-sim"))
        .arg("install")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for user in ["alice", "bob"] {
        mam(&bin, "mam-create-user", &["-u", user]);
    }
    let backend = MoabBackend::from_settings(serde_json::json!({
        "project_prefix": "mp_",
        "allocation_prefix": "ma_",
        "mam_bin_dir": bin,
        "components": {
            "deposit": {"label": "Deposit", "measured_unit": "EUR", "accounting_type": "usage"}
        }
    }))
    .unwrap();
    let w = World::start_with(
        Options::default(),
        ExampleBackend::default(),
        Arc::new(backend),
    )
    .await;
    {
        let mut world = w.sim.world();
        let offering = world.offerings.get_mut(&w.scenario.offering_uuid).unwrap();
        offering.components.push(serde_json::json!({
            "uuid": "0d0d0000000000000000000000000001", "type": "deposit", "name": "Deposit",
            "billing_type": "usage", "measured_unit": "EUR", "limit_amount": null
        }));
    }
    (w, Moab { _dir: dir, bin })
}

fn deposit(amount: i64) -> BTreeMap<String, i64> {
    BTreeMap::from([("deposit".to_owned(), amount)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moab_allocation_lives_from_create_to_terminate_through_waldur_orders() {
    let (w, moab) = world().await;
    let (resource, account) = w.provisioned_with("moab run", deposit(100)).await;
    assert!(account.starts_with("ma_"), "{account}");
    let st = moab.state();
    let acc = &st.accounts[&account];
    assert!(acc.organization.starts_with("mp_"), "{acc:?}");
    assert_eq!(acc.users, ["alice", "bob"]);
    assert_eq!(moab.fund(&account), (100.0, 100.0));

    // Update: the deposit becomes the new limit, not the sum of both.
    let update = w
        .sim
        .create_order(NewOrder {
            order_type: "Update".into(),
            state: "executing".into(),
            offering_uuid: w.scenario.offering_uuid.clone(),
            project_uuid: w.scenario.project_uuid.clone(),
            resource_uuid: resource.clone(),
            limits: deposit(150),
            ..Default::default()
        })
        .unwrap();
    w.until_state(&update.order_uuid, "done").await;
    assert_eq!(moab.fund(&account), (150.0, 150.0));

    // Charges reach Waldur per user, in this month.
    mam(
        &moab.bin,
        "mam-charge",
        &["-J", "j1", "-a", &account, "-u", "alice", "-z", "12.5"],
    );
    mam(
        &moab.bin,
        "mam-charge",
        &["-J", "j2", "-a", &account, "-u", "bob", "-z", "7.25"],
    );
    w.report().await;
    let usages = w.sim.component_usages(&resource);
    let usage = usages
        .iter()
        .find(|u| u.component_type == "deposit")
        .unwrap_or_else(|| panic!("no deposit usage: {usages:?}"));
    assert_eq!(usage.usage, "19.75");
    assert_eq!(usage.user_usages["alice"].usage, "12.50");
    assert_eq!(usage.user_usages["bob"].usage, "7.25");
    let month = jiff::Zoned::now().strftime("%Y-%m-01").to_string();
    assert_eq!(usage.billing_period, month);

    // The team follows Waldur.
    let bob = w.scenario.users["bob"].clone();
    w.sim.revoke_role(&w.scenario.project_uuid, &bob);
    let s = w.membership().await;
    assert_eq!(s.users_removed, 1, "{s:?}");
    assert_eq!(moab.state().accounts[&account].users, ["alice"]);
    w.sim
        .grant_role(&w.scenario.project_uuid, &bob, "PROJECT.MEMBER");
    let s = w.membership().await;
    assert_eq!(s.users_added, 1, "{s:?}");
    assert_eq!(moab.state().accounts[&account].users, ["alice", "bob"]);

    // Terminate: account, fund and the emptied project account go.
    let (order, _) = w.order("Terminate", "executing", &resource, serde_json::json!({}));
    w.until_state(&order, "done").await;
    let st = moab.state();
    assert!(st.accounts.is_empty(), "{:?}", st.accounts);
    assert!(st.funds.is_empty(), "{:?}", st.funds);
}
