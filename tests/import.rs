//! `sipcfg import` (a CUCM BAT phone export into the inventory), `render --all --out`, and the man pages and
//! shell completions, run as an administrator (or a packaging script) would.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TempDeployment, TestServer};

const HEADER: &str = "DEVICE NAME,DESCRIPTION,DEVICE TYPE,DEVICE SECURITY PROFILE,OWNER USER ID,\
                      DIRECTORY NUMBER 1,DISPLAY 1,LINE TEXT LABEL 1,DIRECTORY NUMBER 2";

fn sipcfg(d: &TempDeployment, args: &[&str]) -> Output {
    let config = d.path("example/sipcfg.toml");
    Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(d.path(""))
        .output()
        .unwrap()
}

/// A command that needs no deployment, run where there is none.
fn sipcfg_anywhere(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).current_dir(dir).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn inventory_bytes(d: &TempDeployment) -> Vec<u8> {
    std::fs::read(d.path("example/inventory.toml")).unwrap()
}

fn no_temporary_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "temporary file {name} left in {}", dir.display());
    }
}

#[test]
fn the_example_csv_is_imported_in_place_and_its_devices_render() {
    let d = TempDeployment::new();
    let before = text(&inventory_bytes(&d));
    let out = sipcfg(&d, &["import", "example/phones-import.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("4 added, 0 updated, 0 unchanged"), "{}", text(&out.stdout));
    // DEVICE POOL is imported: "Default", CUCM's built-in pool, is the cluster's settings.
    assert!(!text(&out.stderr).contains("columns not imported"), "{}", text(&out.stderr));

    // Everything that was there is still there, comments included; the devices follow in the same layout.
    let after = text(&inventory_bytes(&d));
    assert!(after.starts_with(&before), "the existing inventory was changed");
    assert!(
        after.contains(
            "\n[devices.SEP00BB11228851]\nmodel = \"Cisco 8851\"\nprofile = \"Cisco 8851 - Encrypted OAuth\"\n\
             owner = \"dkim\"\ndescription = \"Daniel Kim - desk\"\nlines = [\n  \
             { dn = \"1005\", display_name = \"Daniel Kim\", label = \"1005 Daniel\" },\n  \
             { dn = \"1903\", display_name = \"Finance hunt\", label = \"Finance\" },\n]\n"
        ),
        "{after}"
    );
    no_temporary_files(&d.path("example"));

    let out = sipcfg(&d, &["render", "SEP00BB11228851.cnf.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    sipcfg::provision::xml::check_well_formed(&xml).unwrap();
    assert!(xml.contains("1903") && xml.contains("Finance hunt"), "{xml}");
    let out = sipcfg(&d, &["render", "CSFDKIM.cnf.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sipcfg(&d, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok, 25 device configurations rendered"), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_serves_imported_devices_without_a_restart() {
    let d = TempDeployment::new();
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let token = server.token("device:SEP00BB11228841");
    let client = server.client();
    assert_eq!(client.get("/SEP00BB11228841.cnf.xml", Some(&token)).await.status, http::StatusCode::FORBIDDEN);

    let out = sipcfg(&d, &["import", "example/phones-import.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.get("/SEP00BB11228841.cnf.xml", Some(&token)).await;
        if r.status == http::StatusCode::OK {
            assert!(r.text().contains("1006"), "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "the imported device was never served: {}", r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[test]
fn a_bad_csv_reports_every_bad_row_with_its_line_and_writes_nothing() {
    let d = TempDeployment::new();
    let before = inventory_bytes(&d);
    let csv = format!(
        "{HEADER}\n\
         SEP00BB1122884Z,Bad MAC,Cisco 8851,Cisco 8851 - Encrypted OAuth,dkim,1005,,,\n\
         SEP00BB11229971,Old phone,Cisco 9971,Cisco 8851 - Encrypted OAuth,dkim,1005,,,\n\
         SEP00BB11228852,Wrong profile,Cisco 8851,Cisco 8841 - Encrypted OAuth,dkim,1005,,,\n\
         SEP00BB11228853,Nobody's,Cisco 8851,Cisco 8851 - Encrypted OAuth,nobody,1005,,,\n\
         SEP00BB11228854,Good,Cisco 8851,Cisco 8851 - Encrypted OAuth,dkim,1005,,,\n\
         SEP00BB11228854,Twice,Cisco 8851,Cisco 8851 - Encrypted OAuth,dkim,1005,,,\n\
         SEP001122334466,Already there,Cisco 8841,Cisco 8841 - Encrypted OAuth,adoe,1002,,,\n\
         SEP00BB11228855,Gap,Cisco 8851,Cisco 8851 - Encrypted OAuth,,,,,1907\n\
         CSFNEW,Jabber,Cisco Unified Client Services Framework,Cisco Unified Client Services Framework - OAuth\n"
    );
    std::fs::write(d.path("bad.csv"), csv).unwrap();
    let out = sipcfg(&d, &["import", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "bad.csv: line 2 (SEP00BB1122884Z): device name \"SEP00BB1122884Z\": a SEP device name is SEP followed by the MAC",
        "bad.csv: line 3 (SEP00BB11229971): unknown device type \"Cisco 9971\"",
        "bad.csv: line 4 (SEP00BB11228852): profile \"Cisco 8841 - Encrypted OAuth\" belongs to phone type \"Cisco 8841\", not to \"Cisco 8851\"",
        "bad.csv: line 5 (SEP00BB11228853): unknown owner user \"nobody\" (add it first, or import with --create-users)",
        "bad.csv: line 7 (SEP00BB11228854): the device is also on line 6",
        "bad.csv: line 8 (SEP001122334466): the device is already in the inventory (give --update",
        "bad.csv: line 9 (SEP00BB11228855): DIRECTORY NUMBER 2 is set but DIRECTORY NUMBER 1 is empty",
        "bad.csv: line 10: the row has 4 fields, the header 9",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("line 6 "), "line 6 is valid:\n{err}");
    assert!(err.contains("bad.csv: 8 invalid row(s) of 9; nothing written to"), "{err}");
    assert!(text(&out.stdout).is_empty());
    assert_eq!(inventory_bytes(&d), before, "the inventory changed");
    no_temporary_files(&d.path("example"));
}

#[test]
fn create_users_adds_the_missing_owners_and_their_devices_in_one_write() {
    let d = TempDeployment::new();
    let csv = format!(
        "{HEADER}\n\
         SEP00BB11228861,New owner,Cisco 8851,Cisco 8851 - Encrypted OAuth,mnew,1101,,,\n\
         SEP00BB11228862,Same new owner,Cisco 8851,Cisco 8851 - Encrypted OAuth,mnew,1102,,,\n\
         SEP00BB11228863,Other new owner,Cisco 8851,Cisco 8851 - Encrypted OAuth,onew,1103,,,\n\
         SEP00BB11228864,Known owner,Cisco 8851,Cisco 8851 - Encrypted OAuth,jsmith,1104,,,\n"
    );
    std::fs::write(d.path("new.csv"), &csv).unwrap();
    // Without the option: refused, naming it.
    let before = inventory_bytes(&d);
    let out = sipcfg(&d, &["import", "new.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown owner user \"mnew\" (add it first, or import with --create-users)"));
    assert_eq!(inventory_bytes(&d), before);
    // A dry run says who would be created and writes nothing.
    let out = sipcfg(&d, &["import", "--create-users", "--dry-run", "new.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("would create 2 owner user(s)"), "{}", text(&out.stderr));
    assert_eq!(inventory_bytes(&d), before);
    // With it: two users (once each), four devices, one valid inventory.
    let out = sipcfg(&d, &["import", "--create-users", "new.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 added, 0 updated, 0 unchanged, 2 owner user(s) created"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("mnew, onew"), "{}", text(&out.stderr));
    let inventory = String::from_utf8(inventory_bytes(&d)).unwrap();
    assert_eq!(inventory.matches("[users.mnew]").count(), 1, "{inventory}");
    assert!(inventory.contains("[users.onew]\nname = \"onew\""), "{inventory}");
    let out = sipcfg(&d, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // An owner id that cannot be a user is still refused.
    std::fs::write(
        d.path("bad.csv"),
        format!("{HEADER}\nSEP00BB11228865,Bad,Cisco 8851,Cisco 8851 - Encrypted OAuth,a:b,1105,,,\n"),
    )
    .unwrap();
    let out = sipcfg(&d, &["import", "--create-users", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("owner user id \"a:b\" cannot be created"), "{}", text(&out.stderr));
}

#[test]
fn speed_dials_blf_and_modules_columns_are_imported_and_the_dropped_columns_named() {
    let d = TempDeployment::new();
    let header = "Device Name,Device Type,Device Security Profile,Owner User ID,CSS,Location,\
                  Directory Number 1,Speed Dial Number 1,Speed Dial Label 1,Speed Dial Number 2,Speed Dial Label 2,\
                  Busy Lamp Field Destination 1,Busy Lamp Field Label 1,Module 1,Module 2";
    let csv = format!(
        "{header}\n\
         SEP00BB11228871,Cisco 8851,Cisco 8851 - Encrypted OAuth,jsmith,CSS-Paris,Hub_None,1201,1000,Reception,,,1202,Anna,Cisco 8800 Key Expansion Module,\n\
         SEP00BB11228872,Cisco 8851,Cisco 8851 - Encrypted OAuth,jsmith,,,1203,,,+33140000000,,,,,\n"
    );
    std::fs::write(d.path("buttons.csv"), &csv).unwrap();
    let out = sipcfg(&d, &["import", "buttons.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("note: columns not imported: CSS, Location"), "{}", text(&out.stderr));
    let inventory = text(&inventory_bytes(&d));
    assert!(
        inventory.contains(
            "[devices.SEP00BB11228871]\nmodel = \"Cisco 8851\"\nprofile = \"Cisco 8851 - Encrypted OAuth\"\nowner = \"jsmith\"\n\
             lines = [{ dn = \"1201\" }]\nspeed_dials = [{ number = \"1000\", label = \"Reception\" }]\n\
             blf_speed_dials = [{ destination = \"1202\", label = \"Anna\" }]\nkey_expansion_modules = 1\n"
        ),
        "{inventory}"
    );
    // An empty speed dial is skipped: the second device's one speed dial came from column 2.
    assert!(inventory.contains("speed_dials = [{ number = \"+33140000000\" }]"), "{inventory}");
    let out = sipcfg(&d, &["render", "SEP00BB11228871.cnf.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("<deviceType>Cisco 8800 Key Expansion Module</deviceType>"));

    // An update with the module column empty removes the module; the other buttons stay (no columns).
    let csv = "Device Name,Device Type,Device Security Profile,Module 1\n\
               SEP00BB11228871,Cisco 8851,Cisco 8851 - Encrypted OAuth,\n";
    std::fs::write(d.path("update.csv"), csv).unwrap();
    let out = sipcfg(&d, &["import", "--update", "update.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inventory = text(&inventory_bytes(&d));
    assert!(!inventory.contains("key_expansion_modules"), "{inventory}");
    assert!(inventory.contains("label = \"Reception\""), "{inventory}");

    // Refused: a module of another type, a label without its number, more buttons than the phone has.
    let csv = "Device Name,Device Type,Device Security Profile,Directory Number 1,Speed Dial Number 1,Speed Dial Label 1,\
               Busy Lamp Field Destination 1,Module 1\n\
               SEP00BB11228873,Cisco 8851,Cisco 8851 - Encrypted OAuth,1301,,Orphan,,\n\
               SEP00BB11228874,Cisco 8851,Cisco 8851 - Encrypted OAuth,1302,,,,Cisco 8865 Key Expansion Module\n\
               SEP00AA11227811,Cisco 7811,Cisco 7811 - Authenticated TLS,1303,,,1304,\n";
    std::fs::write(d.path("bad.csv"), csv).unwrap();
    let out = sipcfg(&d, &["import", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "line 2 (SEP00BB11228873): SPEED DIAL LABEL 1 is set but SPEED DIAL NUMBER 1 is empty",
        "line 3 (SEP00BB11228874): MODULE 1 \"Cisco 8865 Key Expansion Module\": a Cisco 8851 takes the \"Cisco 8800 Key Expansion Module\"",
        "line 4 (SEP00AA11227811): blf_speed_dials: a Cisco 7811 has no line keys",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_csv_without_the_required_columns_is_refused_at_its_header() {
    let d = TempDeployment::new();
    let before = inventory_bytes(&d);
    std::fs::write(d.path("bad.csv"), "Name,Model\nSEP00BB11228851,Cisco 8851\n").unwrap();
    let out = sipcfg(&d, &["import", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.csv: line 1: the header has no \"DEVICE NAME\" column"), "{err}");
    assert!(err.contains("bad.csv: line 1: the header has no \"DEVICE SECURITY PROFILE\" column"), "{err}");
    assert!(err.contains("bad.csv: the header is not usable; nothing written"), "{err}");
    assert_eq!(inventory_bytes(&d), before);
}

#[test]
fn dry_run_checks_everything_and_writes_nothing() {
    let d = TempDeployment::new();
    let before = inventory_bytes(&d);
    let out = sipcfg(&d, &["import", "--dry-run", "example/phones-import.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("4 rows valid: 4 added, 0 updated, 0 unchanged (dry run: nothing written)"));
    assert_eq!(inventory_bytes(&d), before);
    no_temporary_files(&d.path("example"));

    // A dry run fails exactly as the import would.
    std::fs::write(d.path("bad.csv"), format!("{HEADER}\nSEP001122334455,,Cisco 8851,nope,,1,,,\n")).unwrap();
    let out = sipcfg(&d, &["import", "--dry-run", "bad.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 2 (SEP001122334455): unknown device security profile \"nope\""));
}

#[test]
fn existing_devices_are_updated_only_with_update() {
    let d = TempDeployment::new();
    let csv = format!("{HEADER}\nSEP0011223344FF,Spare - moved,Cisco 8841,Cisco 8841 - Encrypted OAuth,adoe,1002,,,\n");
    std::fs::write(d.path("update.csv"), csv).unwrap();
    let before = inventory_bytes(&d);
    let out = sipcfg(&d, &["import", "update.csv"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(inventory_bytes(&d), before);

    let out = sipcfg(&d, &["import", "--update", "update.csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 added, 1 updated, 0 unchanged"), "{}", text(&out.stdout));
    let inventory = sipcfg::provision::inventory::Inventory::load(&d.path("example/inventory.toml")).unwrap();
    let name = sipcfg::provision::filename::DeviceName::parse_canonical("SEP0011223344FF").unwrap();
    let device = inventory.device(&name).unwrap();
    assert_eq!(device.owner.as_deref(), Some("adoe"));
    assert_eq!(device.description, "Spare - moved");
    assert_eq!(device.lines.iter().map(|l| l.dn.as_str()).collect::<Vec<_>>(), ["1002"]);
    assert!(!device.enabled, "a key the CSV does not carry was lost");

    let out = sipcfg(&d, &["import", "--update", "update.csv"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("0 added, 0 updated, 1 unchanged"), "{}", text(&out.stdout));
}

#[test]
fn render_all_writes_one_well_formed_file_per_device() {
    let d = TempDeployment::new();
    let out_dir = d.path("rendered");
    let out = sipcfg(&d, &["render", "--all", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("21 device configuration files written, and XMLDefault.cnf.xml and caconfig.json"),
        "{}",
        text(&out.stdout)
    );
    let inventory = sipcfg::provision::inventory::Inventory::load(&d.path("example/inventory.toml")).unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut expected: Vec<String> = inventory.device_names_sorted().iter().map(|n| format!("{n}.cnf.xml")).collect();
    expected.extend(["XMLDefault.cnf.xml".to_owned(), "caconfig.json".to_owned()]);
    expected.sort();
    assert_eq!(files, expected);
    for f in files.iter().filter(|f| f.ends_with(".xml")) {
        let xml = std::fs::read_to_string(out_dir.join(f)).unwrap();
        sipcfg::provision::xml::check_well_formed(&xml).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // The same files `render FILE` prints (and the server serves).
    for f in ["SEP001122334455.cnf.xml", "XMLDefault.cnf.xml", "caconfig.json"] {
        let single = sipcfg(&d, &["render", f]);
        assert_eq!(std::fs::read(out_dir.join(f)).unwrap(), single.stdout, "{f}");
    }
}

#[test]
fn render_all_reports_every_device_that_fails_and_exits_1() {
    let d = TempDeployment::new();
    d.edit("example/inventory.toml", "display_name = \"Lobby\"", "display_name = \"Lob\\u0007by\"");
    d.edit("example/inventory.toml", "display_name = \"Warehouse\"", "display_name = \"Ware\\u0001house\"");
    let out_dir = d.path("rendered");
    let out = sipcfg(&d, &["render", "--all", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("SEPAABBCCDDEEFF") && err.contains("U+0007"), "{err}");
    assert!(err.contains("SEP00AA11228811") && err.contains("U+0001"), "{err}");
    assert!(
        err.contains("2 failed; 19 of 21 device configurations written, and XMLDefault.cnf.xml and caconfig.json"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 19 + 2);
    assert!(!out_dir.join("SEPAABBCCDDEEFF.cnf.xml").exists());
}

#[test]
fn manpage_writes_a_page_per_command_without_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = sipcfg_anywhere(dir.path(), &["manpage", "--out", "man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for page in ["sipcfg.1", "sipcfg-serve.1", "sipcfg-import.1", "sipcfg-render.1", "sipcfg-cluster-set.1"] {
        let roff = std::fs::read_to_string(dir.path().join("man").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let name = page.trim_end_matches(".1");
        assert!(roff.contains(&format!(".TH {name} 1")), "{page}:\n{roff}");
    }
    let top = std::fs::read_to_string(dir.path().join("man/sipcfg.1")).unwrap();
    assert!(top.contains("import") && top.contains("completions"), "{top}");
    assert!(!dir.path().join("man/sipcfg-help.1").exists());
}

#[test]
fn completions_print_a_script_for_every_shell_without_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = sipcfg_anywhere(dir.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("_sipcfg()") && script.contains("import") && script.contains("--dry-run"), "{script}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = sipcfg_anywhere(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("sipcfg"), "{shell}");
    }
    let out = sipcfg_anywhere(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
