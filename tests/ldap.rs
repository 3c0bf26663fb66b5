//! Users from the directory (`[ldap]`, `sipcfg ldap sync`, the sync of a running server) against a real
//! OpenLDAP: each test starts its own `slapd` (Debian's slapd and ldap-utils; `.ci/run` installs them) in a
//! temporary folder on free loopback ports, with ldaps:// and StartTLS on the example server certificate.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDeployment;
use sipcfg::provision::authorize::{Refusal, device_config};
use sipcfg::provision::inventory::Inventory;
use sipcfg::provision::subject::Subject;
use sipcfg::store::sqlite::SqliteStore;

const SUFFIX: &str = "dc=example,dc=test";
const ROOT_DN: &str = "cn=admin,dc=example,dc=test";
const ROOT_PW: &str = "s3cret-ldap";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A slapd of its own, stopped when dropped.
struct Slapd {
    _dir: tempfile::TempDir,
    child: Child,
    ldap: u16,
    ldaps: u16,
}

impl Slapd {
    fn start() -> Slapd {
        let slapd = Path::new("/usr/sbin/slapd");
        assert!(
            slapd.exists() && Command::new("ldapadd").arg("--help").output().is_ok(),
            "these tests need OpenLDAP: apt-get install slapd ldap-utils (.ci/run installs them)"
        );
        let dir = tempfile::tempdir().unwrap();
        let certs = common::repo().join("certs-example");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/nis.schema\ninclude /etc/ldap/schema/inetorgperson.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {dir}/slapd.pid\n\
                 TLSCertificateFile {certs}/server.pem\nTLSCertificateKeyFile {certs}/server-key.pem\n\
                 TLSCACertificateFile {certs}/ca.pem\n\
                 database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\ndirectory {db}\n",
                dir = dir.path().display(),
                certs = certs.display(),
                db = db.display(),
            ),
        )
        .unwrap();
        let (ldap, ldaps) = (free_port(), free_port());
        // -d 0: in the foreground (a child this test can stop), logging nothing.
        let child = Command::new(slapd)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{ldap}/ ldaps://127.0.0.1:{ldaps}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Slapd { _dir: dir, child, ldap, ldaps };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.ldap_ok(&["ldapwhoami"], "").status.success() {
            assert!(Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s.change(
            "ldapadd",
            &format!(
                "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
                 dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n{}\n{}\n{}",
                person("lara", "Lara Dap", "Sales"),
                person("omar", "Omar Ldap", "Support"),
                // The id of a user made by hand in the example inventory.
                person("bwong", "B. Wong from the directory", "IT"),
            ),
        );
        s
    }

    fn ldap_ok(&self, cmd: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(cmd[0])
            .args(&cmd[1..])
            .args(["-x", "-H", &format!("ldap://127.0.0.1:{}", self.ldap), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// ldapadd / ldapmodify / ldapdelete with LDIF (or DNs) on standard input; must succeed.
    fn change(&self, cmd: &str, input: &str) {
        let out = self.ldap_ok(&[cmd], input);
        assert!(out.status.success(), "{cmd}: {}{}", text(&out.stdout), text(&out.stderr));
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn person(uid: &str, cn: &str, dept: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {uid}\n\
         mail: {uid}@example.test\ntelephoneNumber: +1 555 0100\ndepartmentNumber: {dept}\n"
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The example deployment with an `[ldap]` section (`extra` added to it), the bind password in a file.
struct Site {
    d: TempDeployment,
    config: String,
}

impl Site {
    fn new() -> Site {
        let d = TempDeployment::new();
        std::fs::write(d.path("example/ldap-password"), format!("{ROOT_PW}\n")).unwrap();
        let config = std::fs::read_to_string(d.path("example/sipcfg.toml")).unwrap();
        Site { d, config }
    }

    fn ldap(&self, url: &str, extra: &str) {
        let ca = common::repo().join("certs-example/ca.pem");
        std::fs::write(
            self.d.path("example/sipcfg.toml"),
            format!(
                "{}\n[ldap]\nurl = \"{url}\"\nca_file = \"{}\"\nbind_dn = \"{ROOT_DN}\"\n\
                 bind_password_file = \"ldap-password\"\nbase_dn = \"ou=people,{SUFFIX}\"\n\
                 filter = \"(&(objectClass=inetOrgPerson)(!(description=left)))\"\ninterval_minutes = 0\n{extra}\n",
                self.config,
                ca.display()
            ),
        )
        .unwrap();
    }

    fn sipcfg(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sipcfg"))
            .args(args)
            .arg("--config")
            .arg(self.d.path("example/sipcfg.toml"))
            .current_dir(self.d.path(""))
            .env("USER", "tester")
            .env_remove("SUDO_USER")
            .env_remove("SIPCFG_CONFIG")
            .env_remove("SIPCFG_STORE_URL")
            .output()
            .unwrap()
    }

    /// `sipcfg ldap sync ARGS`, which must succeed; its standard output.
    fn sync(&self, args: &[&str]) -> String {
        let out = self.sipcfg(&[&["ldap", "sync"], args].concat());
        assert!(out.status.success(), "ldap sync {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// `sipcfg ldap sync`, which must fail; its standard error.
    fn sync_fails(&self) -> String {
        let out = self.sipcfg(&["ldap", "sync"]);
        assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stderr)
    }

    fn inventory_path(&self) -> PathBuf {
        self.d.path("example/inventory.toml")
    }

    fn inventory(&self) -> Inventory {
        Inventory::load(&self.inventory_path()).unwrap()
    }

    fn inventory_text(&self) -> String {
        std::fs::read_to_string(self.inventory_path()).unwrap()
    }

    fn db(&self) -> SqliteStore {
        SqliteStore::open(&self.d.path("example/state/sipcfg.db")).unwrap()
    }
}

#[test]
fn a_sync_adds_updates_disables_and_leaves_hand_made_users() {
    let slapd = Slapd::start();
    let site = Site::new();
    site.ldap(&format!("ldaps://127.0.0.1:{}", slapd.ldaps), "");
    let before = site.inventory_text();

    // --dry-run: what would change, nothing written.
    let out = site.sync(&["--dry-run"]);
    assert!(out.contains("add     lara \"Lara Dap\""), "{out}");
    assert!(out.contains("add     omar \"Omar Ldap\""), "{out}");
    assert!(out.contains("skip    bwong (a user made by hand"), "{out}");
    assert_eq!(site.inventory_text(), before, "--dry-run writes nothing");

    // The first sync adds the directory's users, marked as such, with their attributes.
    let out = site.sync(&[]);
    assert!(out.contains("add     lara"), "{out}");
    let inventory = site.inventory();
    let lara = &inventory.users.get("lara").unwrap().doc;
    assert_eq!(
        (lara.name.as_str(), lara.department.as_str(), lara.mail.as_str(), lara.telephone.as_str()),
        ("Lara Dap", "Sales", "lara@example.test", "+1 555 0100")
    );
    assert_eq!(lara.source, "ldap");
    assert!(lara.enabled);
    let bwong = &inventory.users.get("bwong").unwrap().doc;
    assert!(bwong.source.is_empty() && bwong.name != "B. Wong from the directory", "hand-made: untouched");
    let trail = site.db().audit_trail(None, 100).unwrap();
    let e = trail.iter().find(|e| e.event.action == "ldap.sync").expect("the sync is audited");
    assert_eq!(e.event.actor, "cli:tester@".to_owned() + &e.event.address);
    assert!(e.event.detail.contains("2 added"), "{e:?}");
    // Again: nothing to change.
    let out = site.sync(&[]);
    assert!(!out.contains("add") && !out.contains("update"), "{out}");
    let text = site.inventory_text();
    assert!(!text.contains("enabled = true"), "enabled (the default) is not written: {text}");

    // lara gets a device; the directory changes omar's name.
    let text = site.inventory_text().replacen("owner = \"adoe\"", "owner = \"lara\"", 1);
    std::fs::write(site.inventory_path(), text).unwrap();
    let device =
        site.inventory().devices.values().find(|d| d.owner.as_deref() == Some("lara")).map(|d| d.name.clone()).unwrap();
    slapd.change(
        "ldapmodify",
        &format!("dn: uid=omar,ou=people,{SUFFIX}\nchangetype: modify\nreplace: cn\ncn: Omar Renamed\n"),
    );
    let out = site.sync(&[]);
    assert!(out.contains("update  omar \"Omar Renamed\""), "{out}");
    assert_eq!(site.inventory().users.get("omar").unwrap().name, "Omar Renamed");
    assert!(device_config(&site.inventory(), &Subject::User("lara".into()), &device).is_ok());

    // lara leaves the filter while she owns a device: disabled, kept, her tokens revoked and refused; omar
    // leaves the directory owning nothing: removed.
    let token = site.sipcfg(&["token", "--user", "lara"]);
    assert!(token.status.success(), "{}", text_of(&token));
    slapd.change(
        "ldapmodify",
        &format!("dn: uid=lara,ou=people,{SUFFIX}\nchangetype: modify\nadd: description\ndescription: left\n"),
    );
    slapd.change("ldapdelete", &format!("uid=omar,ou=people,{SUFFIX}\n"));
    let out = site.sync(&[]);
    assert!(out.contains("disable lara"), "{out}");
    assert!(out.contains("remove  omar"), "{out}");
    let inventory = site.inventory();
    let lara = &inventory.users.get("lara").unwrap().doc;
    assert!(!lara.enabled, "kept, disabled, while she owns a device");
    assert!(inventory.users.get("omar").is_none());
    assert!(inventory.users.get("jsmith").is_some_and(|u| u.enabled), "hand-made users stay");
    assert_eq!(device_config(&inventory, &Subject::User("lara".into()), &device).unwrap_err(), Refusal::UserDisabled);
    let revoked: Vec<String> = site.db().revocations(0).unwrap().into_iter().map(|(s, _)| s).collect();
    assert!(revoked.contains(&"user:lara".to_owned()), "{revoked:?}");
    assert!(revoked.contains(&"user:omar".to_owned()), "{revoked:?}");

    // Back in the filter: enabled again.
    slapd.change("ldapmodify", &format!("dn: uid=lara,ou=people,{SUFFIX}\nchangetype: modify\ndelete: description\n"));
    let out = site.sync(&[]);
    assert!(out.contains("update  lara"), "{out}");
    assert!(site.inventory().users.get("lara").unwrap().enabled);
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn failures_are_named_and_change_nothing() {
    let slapd = Slapd::start();
    let site = Site::new();

    // StartTLS on ldap://, with the CA file: a sync.
    site.ldap(&format!("ldap://localhost:{}", slapd.ldap), "starttls = true");
    site.sync(&[]);
    let synced = site.inventory_text();
    slapd.change("ldapdelete", &format!("uid=omar,ou=people,{SUFFIX}\n"));

    // A wrong bind password: named with the URL and the DN; nothing changes (omar is not removed).
    std::fs::write(site.d.path("example/ldap-password"), "wrong\n").unwrap();
    let e = site.sync_fails();
    assert!(e.contains(&format!("ldap://localhost:{}", slapd.ldap)), "{e}");
    assert!(e.contains(ROOT_DN) && e.contains("invalidCredentials") && e.contains("nothing changed"), "{e}");
    assert_eq!(site.inventory_text(), synced);
    std::fs::write(site.d.path("example/ldap-password"), format!("{ROOT_PW}\n")).unwrap();

    // A bad filter.
    site.ldap(&format!("ldaps://127.0.0.1:{}", slapd.ldaps), "");
    let conf = std::fs::read_to_string(site.d.path("example/sipcfg.toml")).unwrap();
    std::fs::write(
        site.d.path("example/sipcfg.toml"),
        conf.replace("(&(objectClass=inetOrgPerson)(!(description=left)))", "((uid=*)"),
    )
    .unwrap();
    let e = site.sync_fails();
    assert!(e.contains("search of \"ou=people,dc=example,dc=test\" with filter ((uid=*)"), "{e}");
    assert_eq!(site.inventory_text(), synced);

    // A certificate the CA file does not vouch for (the system's CAs instead): refused.
    site.ldap(&format!("ldaps://127.0.0.1:{}", slapd.ldaps), "");
    let conf = std::fs::read_to_string(site.d.path("example/sipcfg.toml")).unwrap();
    let conf: String = conf.lines().filter(|l| !l.starts_with("ca_file")).map(|l| format!("{l}\n")).collect();
    std::fs::write(site.d.path("example/sipcfg.toml"), conf).unwrap();
    let e = site.sync_fails();
    assert!(e.contains("cannot connect"), "{e}");
    assert_eq!(site.inventory_text(), synced);

    // An unreachable server (a closed port): named, within the timeout.
    let closed = free_port();
    site.ldap(&format!("ldap://127.0.0.1:{closed}"), "insecure = true\ntimeout_secs = 2");
    let started = Instant::now();
    let e = site.sync_fails();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(e.contains(&format!("ldap://127.0.0.1:{closed}: cannot connect (within 2 s)")), "{e}");
    assert_eq!(site.inventory_text(), synced);

    // Plain LDAP without StartTLS or insecure, and a password in the configuration: refused.
    site.ldap(&format!("ldap://127.0.0.1:{}", slapd.ldap), "");
    assert!(site.sync_fails().contains("plain LDAP would send the bind password"));
    site.ldap(&format!("ldaps://127.0.0.1:{}", slapd.ldaps), "bind_password = \"x\"");
    assert!(site.sync_fails().contains("ldap.bind_password: a password is never written in the configuration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_syncs_at_start_in_the_background() {
    let slapd = Slapd::start();
    let site = Site::new();
    site.ldap(&format!("ldaps://127.0.0.1:{}", slapd.ldaps), "");
    let conf = std::fs::read_to_string(site.d.path("example/sipcfg.toml")).unwrap();
    std::fs::write(site.d.path("example/sipcfg.toml"), conf.replace("interval_minutes = 0", "interval_minutes = 60"))
        .unwrap();
    let server = common::ServeProcess::start(&site.d.path("example/sipcfg.toml"), "info").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while site.inventory().users.get("lara").is_none_or(|u| u.source != "ldap") {
        assert!(Instant::now() < deadline, "no sync at start: {}", std::fs::read_to_string(&server.stderr).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let trail = site.db().audit_trail(None, 100).unwrap();
        if let Some(e) = trail.iter().find(|e| e.event.action == "ldap.sync") {
            assert_eq!(e.event.actor, "ldap:127.0.0.1");
            break;
        }
        assert!(Instant::now() < deadline, "the background sync is not audited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
}

/// A disabled user's token opens none of its devices (a Jabber client gets no file); enabled again, it does.
#[tokio::test]
async fn a_disabled_users_token_gets_no_file() {
    let d = TempDeployment::new();
    d.edit("example/inventory.toml", "name = \"John Smith\"\n", "name = \"John Smith\"\nenabled = false\n");
    let server = common::TestServer::with_config(d.config()).await;
    let token = server.token("user:jsmith");
    let r = server.client().get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, http::StatusCode::FORBIDDEN, "{}", r.text());
    server.shutdown().await;

    let d = TempDeployment::new();
    let server = common::TestServer::with_config(d.config()).await;
    let token = server.token("user:jsmith");
    let r = server.client().get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    server.shutdown().await;
}
