//! `sipcfg admin` (the accounts of the management API and the web console) and the audit trail of the
//! commands that change something, run as an administrator would: the real binary on a copy of the example
//! deployment, whose `[state]` database is then read directly.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::TempDeployment;
use sipcfg::auth::accounts::{AuditEntry, Role, verify_password};
use sipcfg::auth::digest;
use sipcfg::store::sqlite::SqliteStore;

/// `sipcfg ARGS --config …` as user `tester`, with `input` on standard input.
fn sipcfg_with_input(d: &TempDeployment, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(args)
        .arg("--config")
        .arg(d.path("example/sipcfg.toml"))
        .current_dir(d.path(""))
        .env("USER", "tester")
        .env_remove("SUDO_USER")
        .env_remove("SIPCFG_CONFIG")
        .env_remove("SIPCFG_STORE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn sipcfg(d: &TempDeployment, args: &[&str]) -> Output {
    sipcfg_with_input(d, args, "")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command that must succeed; its standard output.
fn ok(d: &TempDeployment, args: &[&str]) -> String {
    let out = sipcfg(d, args);
    assert!(out.status.success(), "sipcfg {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A command that must fail with exit status 1; its standard error.
fn fails(d: &TempDeployment, args: &[&str], input: &str) -> String {
    let out = sipcfg_with_input(d, args, input);
    assert_eq!(out.status.code(), Some(1), "sipcfg {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.stdout.is_empty(), "a refused command prints nothing on stdout: {}", text(&out.stdout));
    text(&out.stderr)
}

/// The only line of a command's standard output (a password or a token).
fn only_line(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is one line: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    lines[0].to_owned()
}

fn db(d: &TempDeployment) -> SqliteStore {
    SqliteStore::open(&d.path("example/state/sipcfg.db")).unwrap()
}

/// The audit trail, oldest first.
fn audit(d: &TempDeployment) -> Vec<AuditEntry> {
    let mut trail = db(d).audit_trail(None, 1000).unwrap();
    trail.reverse();
    trail
}

/// The last audit entry with `action`.
fn last(d: &TempDeployment, action: &str) -> AuditEntry {
    let trail = audit(d);
    trail
        .iter()
        .rev()
        .find(|e| e.event.action == action)
        .unwrap_or_else(|| panic!("no {action} in the audit trail: {trail:#?}"))
        .clone()
}

fn assert_from_the_cli(e: &AuditEntry) {
    assert!(e.event.actor.starts_with("cli:tester@"), "{e:?}");
    assert!(!e.event.address.is_empty(), "the host: {e:?}");
    let now = common::now();
    assert!((now - 60..=now + 1).contains(&e.event.at), "{e:?}");
}

#[test]
fn add_prints_only_a_generated_password_and_stores_its_argon2id_hash() {
    let d = TempDeployment::new();
    let out = sipcfg(&d, &["admin", "add", "alice", "--role", "admin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let password = only_line(&text(&out.stdout));
    assert_eq!(password.chars().count(), 20, "{password:?}");
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{password:?}");
    assert!(text(&out.stderr).contains("added account alice (admin)"), "{}", text(&out.stderr));

    let stored = db(&d).account("alice").unwrap().expect("the account is stored");
    assert_eq!(stored.account.role, Role::Admin);
    assert!(stored.password_hash.starts_with("$argon2id$"), "{}", stored.password_hash);
    assert!(!stored.password_hash.contains(&password), "the hash, not the password");
    assert!(verify_password(&password, &stored.password_hash));
    let raw = std::fs::read(d.path("example/state/sipcfg.db")).unwrap();
    assert!(!raw.windows(password.len()).any(|w| w == password.as_bytes()), "the password is nowhere in the database");

    let e = last(&d, "account.add");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "alice");
    assert!(e.event.detail.contains("role admin"), "{e:?}");
    assert!(!e.event.detail.contains(&password), "no secret in the audit trail");

    // A second account of that name is refused, and says how to change the password instead.
    let err = fails(&d, &["admin", "add", "alice", "--role", "operator"], "");
    assert!(err.contains("already exists") && err.contains("sipcfg admin passwd alice"), "{err}");
    let again = db(&d).account("alice").unwrap().unwrap();
    assert_eq!(again, stored, "untouched");

    let err = fails(&d, &["admin", "add", "a b", "--role", "operator"], "");
    assert!(err.contains("account name \"a b\""), "{err}");
    let out = sipcfg(&d, &["admin", "add", "bob", "--role", "root"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown role");
    assert!(text(&out.stderr).contains("admin, operator, read-only"), "{}", text(&out.stderr));
    assert_eq!(db(&d).accounts().unwrap().len(), 1);
    assert_eq!(audit(&d).iter().filter(|e| e.event.action == "account.add").count(), 1, "refusals are not changes");
}

#[test]
fn a_password_from_standard_input_must_be_long_enough() {
    let d = TempDeployment::new();
    let args = ["admin", "add", "bob", "--role", "operator", "--password-stdin"];
    let err = fails(&d, &args, "short pw\n");
    assert!(err.contains("8 characters") && err.contains("at least 12"), "{err}");
    let err = fails(&d, &args, "");
    assert!(err.contains("no password on standard input"), "{err}");
    assert!(db(&d).account("bob").unwrap().is_none(), "nothing added");

    let out = sipcfg_with_input(&d, &args, "correct horse battery\r\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", text(&out.stdout));
    let stored = db(&d).account("bob").unwrap().unwrap();
    assert_eq!(stored.account.role, Role::Operator);
    assert!(verify_password("correct horse battery", &stored.password_hash), "the line ending is not part of it");
    let e = last(&d, "account.add");
    assert!(e.event.detail.contains("password from standard input"), "{e:?}");
    assert!(!e.event.detail.contains("correct horse"), "{e:?}");

    // passwd: a new password from standard input ends the account's sessions.
    let session = digest(b"a session of bob");
    let now = common::now();
    db(&d).add_session(&session, "bob", "csrf", now, now + 3600).unwrap();
    assert!(db(&d).session(&session, now).unwrap().is_some());
    let out = sipcfg_with_input(&d, &["admin", "passwd", "bob", "--password-stdin"], "staple battery horse\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let hash = db(&d).account("bob").unwrap().unwrap().password_hash;
    assert!(verify_password("staple battery horse", &hash));
    assert!(!verify_password("correct horse battery", &hash));
    assert!(db(&d).session(&session, now).unwrap().is_none(), "its sessions are ended");
    let e = last(&d, "account.password");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "bob");
    assert!(!e.event.detail.contains("staple"), "{e:?}");

    // passwd without --password-stdin: a generated one, printed alone.
    let password = only_line(&ok(&d, &["admin", "passwd", "bob"]));
    assert_eq!(password.len(), 20);
    assert!(verify_password(&password, &db(&d).account("bob").unwrap().unwrap().password_hash));
    let err = fails(&d, &["admin", "passwd", "bob", "--password-stdin"], "too short\n");
    assert!(err.contains("at least 12"), "{err}");
    assert!(verify_password(&password, &db(&d).account("bob").unwrap().unwrap().password_hash), "unchanged");
    let err = fails(&d, &["admin", "passwd", "nobody"], "");
    assert!(err.contains("no account \"nobody\"") && err.contains("sipcfg admin list"), "{err}");
}

#[test]
fn token_prints_only_an_api_token_whose_digest_is_stored() {
    let d = TempDeployment::new();
    ok(&d, &["admin", "add", "robot", "--role", "operator"]);
    let out = sipcfg(&d, &["admin", "token", "robot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = only_line(&text(&out.stdout));
    assert!(token.starts_with("sipcfg_") && token.len() > 40, "{token}");
    assert!(text(&out.stderr).contains("Authorization: Bearer"), "{}", text(&out.stderr));
    let account = db(&d).api_token_account(&digest(token.as_bytes())).unwrap().expect("the digest is stored");
    assert_eq!((account.name.as_str(), account.role), ("robot", Role::Operator));
    let raw = std::fs::read(d.path("example/state/sipcfg.db")).unwrap();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()), "the token is nowhere in the database");

    let e = last(&d, "account.token");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "robot");
    assert!(!e.event.detail.contains(&token), "{e:?}");

    let second = only_line(&ok(&d, &["admin", "token", "robot"]));
    assert_ne!(second, token);
    assert!(db(&d).api_token_account(&digest(token.as_bytes())).unwrap().is_some(), "the first still works");

    let err = fails(&d, &["admin", "token", "nobody"], "");
    assert!(err.contains("no account \"nobody\""), "{err}");
}

#[test]
fn list_and_remove_keep_the_last_admin() {
    let d = TempDeployment::new();
    assert_eq!(ok(&d, &["admin", "list"]), "0 account(s)\n");
    ok(&d, &["admin", "add", "alice", "--role", "admin"]);
    ok(&d, &["admin", "add", "carol.reads", "--role", "read-only"]);
    ok(&d, &["admin", "add", "bob", "--role", "operator"]);
    let token = only_line(&ok(&d, &["admin", "token", "bob"]));

    let list = ok(&d, &["admin", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    let names: Vec<&str> = lines[..3].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol.reads"], "{list}");
    for (line, role) in lines[..3].iter().zip(["admin", "operator", "read-only"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], role, "{line}");
        assert_eq!(fields[2], "created", "{line}");
        assert!(fields[3].len() == 20 && fields[3].ends_with('Z') && fields[3].contains('T'), "RFC 3339: {line}");
    }
    assert_eq!(lines[3], "3 account(s)");
    assert!(!list.contains("argon2"), "never a hash");

    let out = ok(&d, &["admin", "remove", "bob"]);
    assert!(out.contains("removed account bob"), "{out}");
    assert!(db(&d).account("bob").unwrap().is_none());
    assert!(db(&d).api_token_account(&digest(token.as_bytes())).unwrap().is_none(), "its API tokens go with it");
    let e = last(&d, "account.remove");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "bob");
    let err = fails(&d, &["admin", "remove", "bob"], "");
    assert!(err.contains("no account \"bob\""), "{err}");

    // The last admin account stays; once there is another, it may go.
    let err = fails(&d, &["admin", "remove", "alice"], "");
    assert!(err.contains("alice is the last admin account") && err.contains("--role admin"), "{err}");
    assert!(db(&d).account("alice").unwrap().is_some());
    ok(&d, &["admin", "add", "dave", "--role", "admin"]);
    ok(&d, &["admin", "remove", "alice"]);
    ok(&d, &["admin", "remove", "carol.reads"]);
    let err = fails(&d, &["admin", "remove", "dave"], "");
    assert!(err.contains("last admin"), "{err}");
    assert_eq!(ok(&d, &["admin", "list"]).lines().count(), 2);
}

#[test]
fn without_a_store_accounts_are_refused_with_what_to_add() {
    let d = TempDeployment::new();
    // The configuration without its [state] section.
    let path = d.path("example/sipcfg.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let start = config.find("\n[state]").expect("the example has [state]");
    let end = config[start + 1..].find("\n[").map_or(config.len(), |i| start + 1 + i);
    let config = format!("{}{}", &config[..start], &config[end..]);
    // And without [console], which keeps its accounts in a store too.
    let start = config.find("\n[console]").expect("the example has [console]");
    let end = config[start + 1..].find("\n[").map_or(config.len(), |i| start + 1 + i);
    std::fs::write(&path, format!("{}{}", &config[..start], &config[end..])).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains("[state]"));

    for args in [
        &["admin", "add", "alice", "--role", "admin"][..],
        &["admin", "list"],
        &["admin", "token", "alice"],
        &["admin", "remove", "alice"],
    ] {
        let err = fails(&d, args, "");
        assert!(err.contains(&path.display().to_string()), "names the configuration: {err}");
        assert!(err.contains("no [state] database and no [store]"), "{err}");
        assert!(err.contains("Add a [state] section"), "{err}");
    }
    assert!(!d.path("example/state/sipcfg.db").exists(), "no database was created");
}

#[test]
fn commands_that_change_something_leave_an_audit_row_and_never_a_secret() {
    let d = TempDeployment::new();

    ok(&d, &["cluster", "set", "--sip-oauth-port", "5190", "--refresh-login-flow", "on"]);
    let e = last(&d, "cluster.set");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "cluster");
    assert!(e.event.detail.contains("sip_oauth_port = 5190"), "{e:?}");
    assert!(e.event.detail.contains("refresh_login_flow = true"), "{e:?}");
    let before = audit(&d).len();
    ok(&d, &["cluster", "show"]);
    assert_eq!(audit(&d).len(), before, "reading is not audited");

    ok(&d, &["sip-oauth-mode", "disable"]);
    let e = last(&d, "cluster.sip-oauth-mode");
    assert_from_the_cli(&e);
    assert_eq!(e.event.detail, "disabled");
    ok(&d, &["sip-oauth-mode", "enable"]);
    assert_eq!(last(&d, "cluster.sip-oauth-mode").event.detail, "enabled");

    let code = only_line(&ok(&d, &["activation-code", "create", "--device", "SEP001122334455"]));
    let e = last(&d, "activation-code.create");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "SEP001122334455");
    let list = ok(&d, &["activation-code", "list"]);
    let id = list.split_whitespace().next().unwrap().to_owned();
    assert!(e.event.detail.contains(&id), "the code's id: {e:?}");
    ok(&d, &["activation-code", "revoke", &id]);
    let e = last(&d, "activation-code.revoke");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, id);
    assert!(e.event.detail.contains("SEP001122334455"), "{e:?}");

    ok(&d, &["token", "revoke", "--device", "SEP001122334455"]);
    let e = last(&d, "token.revoke");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, "device:SEP001122334455");

    ok(&d, &["keys", "rotate"]);
    assert_from_the_cli(&last(&d, "keys.rotate"));
    ok(&d, &["keys", "regen", "--yes"]);
    let e = last(&d, "keys.regenerate");
    assert_from_the_cli(&e);
    assert!(ok(&d, &["keys", "list"]).contains(&e.event.target), "the new key's id: {e:?}");

    // The Phone-Edge-Trust CA out and back in.
    let ca = std::fs::read_dir(d.path("example/phone-edge-trust")).unwrap().next().unwrap().unwrap().path();
    let saved = d.path("ca.pem");
    std::fs::copy(&ca, &saved).unwrap();
    let sha256 = ok(&d, &["cert", "list"]).split_whitespace().next().unwrap().to_owned();
    ok(&d, &["cert", "remove", &sha256]);
    let e = last(&d, "cert.remove");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, format!("phone-edge-trust {sha256}"));
    ok(&d, &["cert", "add", "--purpose", "phone-edge-trust", saved.to_str().unwrap()]);
    let e = last(&d, "cert.add");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, format!("phone-edge-trust {sha256}"));

    ok(&d, &["import", "--dry-run", "example/phones-import.csv"]);
    assert!(audit(&d).iter().all(|e| e.event.action != "import"), "a dry run changes nothing");
    ok(&d, &["import", "example/phones-import.csv"]);
    let e = last(&d, "import");
    assert_from_the_cli(&e);
    assert_eq!(e.event.target, d.path("example/phones-import.csv").display().to_string());
    assert_eq!(e.event.detail, "4 added, 0 updated, 0 unchanged");

    // Never a code, a token or a password anywhere in the trail.
    for e in audit(&d) {
        let row = format!("{} {} {}", e.event.target, e.event.detail, e.event.actor);
        assert!(!row.contains(&code), "{row}");
    }
}

#[test]
fn the_admin_commands_have_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).current_dir(dir.path()).output().unwrap();
    let out = run(&["manpage", "--out", "man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in [
        "sipcfg-admin",
        "sipcfg-admin-add",
        "sipcfg-admin-token",
        "sipcfg-admin-list",
        "sipcfg-admin-remove",
        "sipcfg-admin-passwd",
    ] {
        let roff =
            std::fs::read_to_string(dir.path().join(format!("man/{page}.1"))).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.contains(&format!(".TH {page} 1")), "{page}:\n{roff}");
    }
    let add = std::fs::read_to_string(dir.path().join("man/sipcfg-admin-add.1")).unwrap();
    assert!(add.contains("password\\-stdin") && add.contains(".SH EXAMPLES"), "{add}");
    let out = run(&["completions", "bash"]);
    let script = text(&out.stdout);
    assert!(script.contains("--password-stdin") && script.contains("read-only"), "{script}");
}

/// The same commands on the shared store of a cluster: the accounts, their tokens and the audit trail are in
/// PostgreSQL, where every node reads them.
#[tokio::test]
async fn accounts_and_the_audit_trail_live_in_the_shared_store() {
    use sipcfg::auth::accounts::AccountStore;
    use sipcfg::store::kek::Kek;
    use sipcfg::store::postgres::PgStore;

    let pg = common::pg::Postgres::start();
    pg.psql("CREATE DATABASE accounts OWNER sipcfg");
    let d = TempDeployment::new();
    let url = format!("{}/accounts", pg.url().rsplit_once('/').unwrap().0);
    d.append(
        "example/sipcfg.toml",
        &format!(
            "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\n",
            pg.password_file().display()
        ),
    );
    ok(&d, &["store", "init"]);
    let password = only_line(&ok(&d, &["admin", "add", "alice", "--role", "admin"]));
    let token = only_line(&ok(&d, &["admin", "token", "alice"]));
    assert!(ok(&d, &["admin", "list"]).starts_with("alice  admin      created "));
    let err = fails(&d, &["admin", "remove", "alice"], "");
    assert!(err.contains("last admin"), "{err}");
    ok(&d, &["cluster", "set", "--access-token-minutes", "30"]);
    assert!(!d.path("example/state/sipcfg.db").exists(), "nothing in [state]'s database");

    let config = d.config().store.expect("[store]");
    let store = PgStore::open(&config, Some(Kek::load(&config.key_file).unwrap())).unwrap();
    let stored = store.account("alice").await.unwrap().expect("in the shared store");
    assert!(stored.password_hash.starts_with("$argon2id$") && verify_password(&password, &stored.password_hash));
    let owner = store.api_token_account(&digest(token.as_bytes())).await.unwrap().expect("the token's digest");
    assert_eq!(owner.name, "alice");
    let mut trail = store.audit_trail(None, 50).await.unwrap();
    trail.reverse();
    let actions: Vec<&str> = trail.iter().map(|e| e.event.action.as_str()).collect();
    assert_eq!(actions, ["store.init", "account.add", "account.token", "cluster.set"], "{trail:#?}");
    for e in &trail {
        assert_from_the_cli(e);
        let row = format!("{} {}", e.event.target, e.event.detail);
        assert!(!row.contains(&password) && !row.contains(&token), "{row}");
    }
    assert_eq!(trail[0].event.target, url);
}

/// `sipcfg user`: end users without editing the inventory by hand, checked as a whole inventory and audited.
#[test]
fn users_are_added_listed_imported_and_removed_only_when_they_own_nothing() {
    let d = TempDeployment::new();
    let inventory = || std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    ok(&d, &["user", "add", "mmiller", "--name", "Mary Miller", "--department", "Sales"]);
    assert!(inventory().contains("[users.mmiller]\nname = \"Mary Miller\"\ndepartment = \"Sales\""), "{}", inventory());
    let err = fails(&d, &["user", "add", "mmiller", "--name", "Mary M."], "");
    assert!(err.contains("user \"mmiller\" exists: add --update"), "{err}");
    ok(&d, &["user", "add", "mmiller", "--name", "Mary M.", "--update"]);
    assert!(inventory().contains("name = \"Mary M.\""));
    let list = ok(&d, &["user", "list"]);
    assert!(
        list.lines().any(|l| l.starts_with("jsmith") && l.contains("John Smith") && l.ends_with("6 device(s)")),
        "{list}"
    );

    let err = fails(&d, &["user", "remove", "jsmith"], "");
    assert!(err.contains("owns 6 device(s)") && err.contains("SEP001122334455"), "{err}");
    let before = inventory();
    let csv = d.path("users.csv");
    std::fs::write(
        &csv,
        "USER ID,FIRST NAME,LAST NAME,DEPARTMENT,MAIL ID\nnn1,Nina,North,Ops,n@x\nmmiller,Mary,Miller,,\n",
    )
    .unwrap();
    let err = fails(&d, &["user", "import", csv.to_str().unwrap()], "");
    assert!(err.contains("line 3 (mmiller): the user exists (give --update"), "{err}");
    assert_eq!(inventory(), before, "nothing written");
    ok(&d, &["user", "import", "--update", csv.to_str().unwrap()]);
    assert!(inventory().contains("[users.nn1]\nname = \"Nina North\"\ndepartment = \"Ops\""), "{}", inventory());
    ok(&d, &["user", "remove", "nn1"]);
    assert!(!inventory().contains("[users.nn1]"));
    let actions: Vec<String> = audit(&d).iter().map(|e| e.event.action.clone()).collect();
    assert_eq!(actions, ["user.create", "user.update", "user.import", "user.delete"], "{actions:?}");
}

/// `sipcfg device-pool`, `cm-group` and `date-time-group` on one server: a site built as a CUCM administrator
/// builds it (the groups, then the pool), in the inventory file, whose comments and layout stay; every change
/// checked as a whole inventory and audited; nothing in use removed.
#[test]
fn device_pools_and_their_groups_are_set_shown_and_removed_from_the_command_line() {
    let d = TempDeployment::new();
    let file = d.path("example/inventory.toml");
    let inventory = || std::fs::read_to_string(&file).unwrap();
    let original = inventory();

    let err = fails(&d, &["device-pool", "set", "DP Paris", "--cm-group", "CMG Paris"], "");
    assert!(err.contains("device pool \"DP Paris\": unknown cm_group \"CMG Paris\""), "{err}");
    let err = fails(&d, &["cm-group", "set", "CMG Paris", "--call-managers", "cucm-sub1,cucm-nope"], "");
    assert!(err.contains("cm group \"CMG Paris\": unknown call manager \"cucm-nope\""), "{err}");
    let err = fails(&d, &["cm-group", "set", "CMG Paris"], "");
    assert!(err.contains("a new CM group needs --call-managers"), "{err}");
    assert_eq!(inventory(), original, "nothing written");

    ok(&d, &["cm-group", "set", "CMG Paris", "--call-managers", "cucm-sub1, cucm-pub"]);
    let time = [
        "--time-zone",
        "Romance Standard/Daylight Time",
        "--date-format",
        "D/M/Y",
        "--time-format",
        "24-hour",
        "--ntp-servers",
        "ntp1.paris.example.test,ntp2.paris.example.test",
    ];
    ok(&d, &[&["date-time-group", "set", "Paris"][..], &time].concat());
    let pool = ["--cm-group", "CMG Paris", "--date-time-group", "Paris", "--user-locale", "French_France"];
    ok(&d, &[&["pool", "set", "DP Paris"][..], &pool].concat());
    ok(&d, &["device-pool", "set", "DP Paris", "--description", "Paris office"]);
    let text = inventory();
    assert!(text.starts_with(&original), "the file's comments and layout are kept:\n{text}");
    assert!(
        text.contains(
            "[device_pools.\"DP Paris\"]\ncm_group = \"CMG Paris\"\ndate_time_group = \"Paris\"\n\
             user_locale = \"French_France\"\ndescription = \"Paris office\"\n"
        ),
        "{text}"
    );
    assert_eq!(
        ok(&d, &["device-pool", "show", "DP Paris"]),
        "[device_pools.\"DP Paris\"]\ncm_group = \"CMG Paris\"\ndate_time_group = \"Paris\"\n\
         user_locale = \"French_France\"\ndescription = \"Paris office\"\n# used by 0 device(s)\n"
    );
    let list = ok(&d, &["cm-group", "list"]);
    assert!(list.starts_with("CMG Paris  cucm-sub1, cucm-pub  used by 1 device pool(s)"), "{list}");

    // A device in the pool renders with the site's time; what it uses cannot go.
    std::fs::write(
        &file,
        inventory().replace("[devices.SEP001122334455]\n", "[devices.SEP001122334455]\npool = \"DP Paris\"\n"),
    )
    .unwrap();
    let xml = ok(&d, &["render", "SEP001122334455.cnf.xml"]);
    assert!(xml.contains("<timeZone>Romance Standard/Daylight Time</timeZone>"), "{xml}");
    assert!(xml.contains("ntp2.paris.example.test"), "{xml}");
    // The pool's phone service URLs, from the command line.
    let idle = ["--idle-url", "https://intranet.paris.example.test/idle", "--idle-timeout", "300"];
    ok(&d, &[&["device-pool", "set", "DP Paris"][..], &idle].concat());
    let xml = ok(&d, &["render", "SEP001122334455.cnf.xml"]);
    assert!(xml.contains("<idleURL>https://intranet.paris.example.test/idle</idleURL>"), "{xml}");
    assert!(xml.contains("<idleTimeout>300</idleTimeout>"), "{xml}");
    let err = fails(&d, &["device-pool", "set", "DP Paris", "--directory-url", "ftp://x.example.test/"], "");
    assert!(err.contains("services.directory \"ftp://x.example.test/\": a service URL starts with http"), "{err}");
    ok(&d, &["device-pool", "set", "DP Paris", "--idle-url", "", "--idle-timeout", ""]);
    assert!(!inventory().contains("idle"), "{}", inventory());
    let err = fails(&d, &["device-pool", "remove", "DP Paris"], "");
    assert!(
        err.contains("device pool \"DP Paris\" is used by 1 device (SEP001122334455): move it to another pool"),
        "{err}"
    );
    let err = fails(&d, &["date-time-group", "remove", "Paris"], "");
    assert!(err.contains("date/time group \"Paris\" is used by 1 device pool (\"DP Paris\")"), "{err}");
    let err = fails(&d, &["device-pool", "remove", "DP Pariss"], "");
    assert!(err.contains("no device pool named \"DP Pariss\" (did you mean \"DP Paris\"?)"), "{err}");

    // Moved out, everything goes, and the file is as it was.
    std::fs::write(&file, inventory().replace("pool = \"DP Paris\"\n", "")).unwrap();
    ok(&d, &["device-pool", "remove", "DP Paris"]);
    ok(&d, &["cm-group", "remove", "CMG Paris"]);
    ok(&d, &["date-time-group", "remove", "Paris"]);
    assert_eq!(inventory(), original);

    let trail = audit(&d);
    let actions: Vec<&str> = trail.iter().map(|e| e.event.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "cm-group.create",
            "date-time-group.create",
            "device-pool.create",
            "device-pool.update",
            "device-pool.update",
            "device-pool.update",
            "device-pool.delete",
            "cm-group.delete",
            "date-time-group.delete"
        ]
    );
    for e in &trail {
        assert_from_the_cli(e);
    }
    assert_eq!(trail[2].event.target, "DP Paris");
    assert!(trail[2].event.detail.contains("cm_group = \"CMG Paris\""), "{:?}", trail[2]);
}

/// The same commands in a cluster: the pools live in the shared store's cluster document, which they change
/// (the inventory file is not touched), checked and audited there.
#[tokio::test]
async fn device_pools_change_in_the_shared_store() {
    use sipcfg::store::kek::Kek;
    use sipcfg::store::postgres::PgStore;

    let pg = common::pg::Postgres::start();
    pg.psql("CREATE DATABASE pools OWNER sipcfg");
    let d = TempDeployment::new();
    let url = format!("{}/pools", pg.url().rsplit_once('/').unwrap().0);
    d.append(
        "example/sipcfg.toml",
        &format!(
            "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\n",
            pg.password_file().display()
        ),
    );
    ok(&d, &["store", "init"]);
    let file = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();

    ok(&d, &["cm-group", "set", "CMG Paris", "--call-managers", "cucm-sub1,cucm-pub"]);
    ok(&d, &["date-time-group", "set", "Paris", "--time-zone", "Romance Standard/Daylight Time"]);
    ok(&d, &["device-pool", "set", "DP Paris", "--cm-group", "CMG Paris", "--date-time-group", "Paris"]);
    let err = fails(&d, &["device-pool", "set", "DP Lyon", "--cm-group", "CMG Lyon"], "");
    assert!(err.contains("device pool \"DP Lyon\": unknown cm_group \"CMG Lyon\""), "{err}");
    let err = fails(&d, &["cm-group", "remove", "CMG Paris"], "");
    assert!(err.contains("is used by 1 device pool (\"DP Paris\")"), "{err}");
    assert!(ok(&d, &["device-pool", "list"]).starts_with("DP Paris  cm_group CMG Paris"), "read from the store");

    let config = d.config().store.expect("[store]");
    let store = PgStore::open(&config, Some(Kek::load(&config.key_file).unwrap())).unwrap();
    let stored = store.snapshot().await.unwrap().deployment.inventory;
    assert_eq!(stored.device_pools["DP Paris"].cm_group.as_deref(), Some("CMG Paris"));
    assert_eq!(stored.cm_groups["CMG Paris"].call_managers, ["cucm-sub1", "cucm-pub"]);
    assert_eq!(stored.date_time_groups["Paris"].time_zone.as_deref(), Some("Romance Standard/Daylight Time"));
    assert_eq!(stored.cluster.name, "example-cluster", "the cluster's settings stay beside them");
    assert!(!stored.devices.is_empty(), "and the devices");

    ok(&d, &["device-pool", "remove", "DP Paris"]);
    ok(&d, &["cm-group", "remove", "CMG Paris"]);
    let stored = store.snapshot().await.unwrap().deployment.inventory;
    assert!(stored.device_pools.is_empty() && stored.cm_groups.is_empty());
    assert!(stored.date_time_groups.contains_key("Paris"));
    assert_eq!(std::fs::read_to_string(d.path("example/inventory.toml")).unwrap(), file, "the file is not the store");

    use sipcfg::auth::accounts::AccountStore;
    let mut trail = store.audit_trail(None, 50).await.unwrap();
    trail.reverse();
    let actions: Vec<&str> = trail.iter().map(|e| e.event.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "store.init",
            "cm-group.create",
            "date-time-group.create",
            "device-pool.create",
            "device-pool.delete",
            "cm-group.delete"
        ],
        "{trail:#?}"
    );
}
