use super::*;

const NOW: &str = "2026-12-07 10:00:00";

fn mam(dir: &Path, line: &str) -> Outcome {
    let mut words = line.split(' ');
    let command = words.next().unwrap_or_default();
    let rest: Vec<String> = words.map(str::to_owned).collect();
    run(command, &rest, dir, NOW)
}

#[test]
fn raw_quiet_listings_have_no_header_and_fields_in_show_order() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        mam(d.path(), "mam-create-account -a p1 -d proj -o p1 --quiet").code,
        0
    );
    let out = mam(
        d.path(),
        "mam-list-accounts --raw --quiet --show Organization,Name",
    );
    assert_eq!(out, Outcome::ok("p1|p1\n".into()));
    let out = mam(d.path(), "mam-list-accounts --raw --show Name");
    assert_eq!(out.stdout, "Name\np1\n");
}

#[test]
fn unknown_and_duplicate_objects_exit_74_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let out = mam(d.path(), "mam-delete-account -a nope");
    assert_eq!(out.code, EXIT_BAD_REQUEST);
    assert_eq!(out.stdout, "Account nope does not exist\n");
    mam(d.path(), "mam-create-account -a a1");
    assert_eq!(
        mam(d.path(), "mam-create-account -a a1").stdout,
        "Account already exists\n"
    );
    assert_eq!(
        mam(d.path(), "mam-modify-account -a a1 --add-user +ghost").stdout,
        "User ghost does not exist\n"
    );
    assert_eq!(mam(d.path(), "mam-list-accounts -x 1").code, EXIT_USAGE);
}

#[test]
fn deposits_withdrawals_and_charges_move_allocated_and_balance() {
    let d = tempfile::tempdir().unwrap();
    mam(d.path(), "mam-create-user -u u1");
    mam(d.path(), "mam-create-account -a a1 -u u1");
    mam(d.path(), "mam-create-fund -a a1");
    assert_eq!(mam(d.path(), "mam-deposit -a a1 -z 100").code, 0);
    assert_eq!(
        mam(d.path(), "mam-deposit -a a1 -z -5").code,
        EXIT_BAD_REQUEST
    );
    assert_eq!(mam(d.path(), "mam-charge -J j1 -a a1 -u u1 -z 30").code, 0);
    let out = mam(
        d.path(),
        "mam-list-funds --raw --quiet -a a1 --show Id,Allocated,Balance",
    );
    assert_eq!(out.stdout, "1|100.00|70.00\n");
    assert_eq!(
        mam(d.path(), "mam-withdraw -f 1 -z 80").code,
        EXIT_INSUFFICIENT,
        "more than the balance"
    );
    assert_eq!(mam(d.path(), "mam-withdraw -f 1 -z 20").code, 0);
    let out = mam(
        d.path(),
        "mam-list-funds --raw --quiet -a a1 --show Allocated,Balance",
    );
    assert_eq!(out.stdout, "80.00|50.00\n");
    let out = mam(
        d.path(),
        "mam-list-usagerecords --raw --quiet --show Account,User,Charge -s 2026-12-01T00:00:00 -e 2026-12-31T23:59:59",
    );
    assert_eq!(out.stdout, "a1|u1|30.00\n");
    let out = mam(
        d.path(),
        "mam-list-usagerecords --raw --quiet --show Charge -e 2026-11-30",
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn a_refused_command_changes_nothing_and_an_injected_fault_is_returned() {
    let d = tempfile::tempdir().unwrap();
    mam(d.path(), "mam-create-account -a a1");
    mam(d.path(), "mam-create-fund -a a1");
    mam(d.path(), "mam-create-fund -a a1");
    // Two funds: the account alone does not say which.
    assert_eq!(
        mam(d.path(), "mam-deposit -a a1 -z 5").code,
        EXIT_BAD_REQUEST
    );
    let st = state::read(d.path()).unwrap();
    assert!(st.funds.values().all(|f| f.balance == 0.0));
    inject(d.path(), "mam-list-accounts", 1, "Failed sending message").unwrap();
    let out = mam(d.path(), "mam-list-accounts --raw --quiet");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (1, "Failed sending message\n")
    );
    inject(d.path(), "mam-list-accounts", 0, "").unwrap();
    assert_eq!(mam(d.path(), "mam-list-accounts --raw --quiet").code, 0);
}

#[test]
fn members_are_listed_comma_separated_and_removed() {
    let d = tempfile::tempdir().unwrap();
    for u in ["u1", "u2"] {
        mam(d.path(), &format!("mam-create-user -u {u}"));
    }
    mam(d.path(), "mam-create-account -a a1");
    mam(
        d.path(),
        "mam-modify-account -a a1 --add-user +u1 --add-user +u2",
    );
    let out = mam(
        d.path(),
        "mam-list-accounts --raw --quiet --show Name,Users",
    );
    assert_eq!(out.stdout, "a1|u1,u2\n");
    mam(d.path(), "mam-modify-account -a a1 --del-user u1");
    let out = mam(d.path(), "mam-list-users --raw --quiet -a a1 --show Name");
    assert_eq!(out.stdout, "u2\n");
}
