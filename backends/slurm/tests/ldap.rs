//! The SLURM backend with an LDAP group per allocation, on the cluster and
//! the OpenLDAP directory `deploy/services.sh` brings up (run when
//! WALDUR_SLURM_CLUSTER and WALDUR_LDAP_URL are set, as deploy/test.sh
//! does): the group follows the allocation and its associations, a
//! directory that is down stops a change before SLURM is touched, and a
//! group entry lost on the way is made again by the next add.

#![allow(clippy::unwrap_used)] // a test's input is its own

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use waldur_backend_sdk::types::*;
use waldur_backend_sdk::{Backend, BackendResult};
use waldur_backend_slurm::SlurmBackend;

const BASE: &str = "dc=waldur,dc=test";
const ADMIN: &str = "cn=admin,dc=waldur,dc=test";
const PASSWORD: &str = "waldur-test";

fn enabled() -> Option<String> {
    std::env::var_os("WALDUR_SLURM_CLUSTER")?;
    std::env::var("WALDUR_LDAP_URL").ok()
}

/// A tag unique to this run.
fn tag() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{:x}", millis % 0xfffff)
}

fn backend(dir: &tempfile::TempDir, uri: &str) -> SlurmBackend {
    let password = dir.path().join("ldap-password");
    std::fs::write(&password, PASSWORD).unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    SlurmBackend::from_settings(serde_json::json!({
        "customer_prefix": "lc_",
        "project_prefix": "lp_",
        "allocation_prefix": "la_",
        "ldap": {
            "uri": uri,
            "bind_dn": ADMIN,
            "bind_password_file": password,
            "base_dn": BASE,
            "groups_ou": "ou=groups",
            "gid_range_start": 40000,
            "gid_range_end": 49999,
            "timeout_seconds": 3
        },
        "components": {"cpu": {"label": "CPU", "measured_unit": "m", "accounting_type": "limit"}}
    }))
    .unwrap()
}

fn context(tag: &str) -> ResourceContext {
    ResourceContext {
        resource_uuid: format!("{tag:0>32}"),
        name: format!("ldap test {tag}"),
        slug: tag.to_owned(),
        project_slug: format!("proj{tag}"),
        customer_slug: "ldap".into(),
        ..ResourceContext::default()
    }
}

fn create_request(b: &SlurmBackend, tag: &str, users: &[&str]) -> CreateResource {
    CreateResource {
        backend_id: b.generate_backend_id(tag, None).unwrap(),
        resource: context(tag),
        users: users.iter().map(|u| User::named(*u)).collect(),
        ..CreateResource::default()
    }
}

/// (gidNumber, sorted memberUid) of a group, or None when it is absent.
fn group(cn: &str) -> Option<(u32, Vec<String>)> {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            "ldap://127.0.0.1:389",
            "-D",
            ADMIN,
            "-w",
            PASSWORD,
        ])
        .args(["-LLL", "-b", &format!("ou=groups,{BASE}")])
        .arg(format!("(cn={cn})"))
        .args(["gidNumber", "memberUid"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let gid = text
        .lines()
        .find_map(|l| l.strip_prefix("gidNumber: "))?
        .trim()
        .parse()
        .unwrap();
    let mut members: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("memberUid: "))
        .map(|m| m.trim().to_owned())
        .collect();
    members.sort();
    Some((gid, members))
}

/// Runs an ldap-utils tool as the directory's admin, with `ldif` on its
/// standard input; true when it succeeded.
fn ldap_tool(program: &str, ldif: &str) -> bool {
    use std::io::Write;
    let mut child = Command::new(program)
        .args([
            "-x",
            "-H",
            "ldap://127.0.0.1:389",
            "-D",
            ADMIN,
            "-w",
            PASSWORD,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

fn drop_member(cn: &str, user: &str) {
    assert!(ldap_tool(
        "ldapmodify",
        &format!(
            "dn: cn={cn},ou=groups,{BASE}\nchangetype: modify\ndelete: memberUid\nmemberUid: {user}\n"
        )
    ));
}

async fn hard_delete(b: &SlurmBackend, id: &str) -> BackendResult<Deleted> {
    b.delete_resource(DeleteResource {
        backend_id: id.to_owned(),
        mode: DeletionMode::Hard,
        resource: None,
    })
    .await
}

fn account_exists(account: &str) -> bool {
    let out = Command::new("sacctmgr")
        .args(["-nP", "show", "account", account, "format=account"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocations_group_follows_it_and_its_members_and_goes_with_it() {
    let Some(uri) = enabled() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, &uri);
    let t = tag();
    let req = create_request(&b, &format!("g{t}"), &["alice", "bob"]);
    let id = req.backend_id.clone();
    b.create_resource(req.clone()).await.unwrap();
    let (gid, members) = group(&id).expect("the group is made with the allocation");
    assert!((40000..=49999).contains(&gid), "{gid}");
    assert_eq!(members, ["alice", "bob"]);
    // Re-issued: the same group, the same gid.
    b.create_resource(req).await.unwrap();
    assert_eq!(group(&id).unwrap().0, gid);

    b.remove_users(&id, vec!["bob".into()]).await.unwrap();
    assert_eq!(group(&id).unwrap().1, ["alice"]);

    // A group entry lost on the way: the association still counts, and an
    // add puts the entry back without touching the association.
    drop_member(&id, "alice");
    let listed = b
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(listed.found[&id], ["alice"], "{listed:?}");
    let r = b
        .add_users(&id, vec![User::named("alice")], None)
        .await
        .unwrap();
    assert_eq!(r[0].outcome, Outcome::Unchanged, "{r:?}");
    assert_eq!(group(&id).unwrap().1, ["alice"]);

    // A removal cut short after SLURM's write: the group still shows the
    // user, so the next RemoveUsers finishes it.
    assert!(
        Command::new("sacctmgr")
            .args([
                "-i",
                "remove",
                "user",
                "where",
                "name=alice",
                &format!("account={id}")
            ])
            .output()
            .unwrap()
            .status
            .success()
    );
    let listed = b
        .list_resource_users(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(listed.found[&id], ["alice"], "{listed:?}");
    b.remove_users(&id, vec!["alice".into()]).await.unwrap();
    assert_eq!(group(&id).unwrap().1, Vec::<String>::new());

    hard_delete(&b, &id).await.unwrap();
    assert!(group(&id).is_none(), "the group goes with the allocation");
    assert!(!account_exists(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_down_answers_unavailable_and_slurm_is_not_touched() {
    let Some(uri) = enabled() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = backend(&dir, &format!("ldap://{closed}"));
    let t = tag();
    let req = create_request(&down, &format!("d{t}"), &["alice"]);
    let id = req.backend_id.clone();
    let e = down.create_resource(req.clone()).await.unwrap_err();
    assert_eq!(e.code, tonic::Code::Unavailable, "{e:?}");
    assert!(!account_exists(&id), "nothing made in SLURM");

    // Made with the directory up, then changed with it down: refused.
    let up = backend(&dir, &uri);
    up.create_resource(req).await.unwrap();
    let e = down
        .add_users(&id, vec![User::named("bob")], None)
        .await
        .unwrap_err();
    assert_eq!(e.code, tonic::Code::Unavailable, "{e:?}");
    let e = hard_delete(&down, &id).await.unwrap_err();
    assert_eq!(e.code, tonic::Code::Unavailable, "{e:?}");
    assert!(account_exists(&id) && group(&id).is_some());
    hard_delete(&up, &id).await.unwrap();
    assert!(!account_exists(&id) && group(&id).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_group_with_the_allocations_name_is_refused_and_left_alone() {
    let Some(uri) = enabled() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, &uri);
    let t = tag();
    let req = create_request(&b, &format!("s{t}"), &["alice"]);
    let id = req.backend_id.clone();
    assert!(ldap_tool(
        "ldapadd",
        &format!(
            "dn: cn={id},ou=groups,{BASE}\nobjectClass: posixGroup\ncn: {id}\ngidNumber: 45999\nmemberUid: siteadmin\n"
        )
    ));
    let e = b.create_resource(req).await.unwrap_err();
    assert_eq!(e.code, tonic::Code::AlreadyExists, "{e:?}");
    assert!(!account_exists(&id), "nothing made in SLURM");
    // A delete of that name leaves the site's group alone.
    hard_delete(&b, &id).await.unwrap();
    assert_eq!(group(&id), Some((45999, vec!["siteadmin".to_owned()])));
    ldap_tool("ldapdelete", &format!("cn={id},ou=groups,{BASE}\n"));
}
