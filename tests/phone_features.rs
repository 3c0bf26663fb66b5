//! What phones show and do: lines, speed dials, BLF speed dials, key expansion modules and phone service
//! URLs, for every one of the phone types. Each type renders every feature it supports into a well-formed
//! file, and refuses (naming the device and the key) every one it does not; golden files pin a few models'
//! whole files. `SIPCFG_BLESS=1 cargo test --test phone_features` rewrites the golden files after an
//! intended change (review the diff).

mod common;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use common::{TempDeployment, TestServer};
use http::StatusCode;
use sipcfg::provision::inventory::{Inventory, InventoryErrors};
use sipcfg::provision::model::{KEM_KEYS, PHONE_TYPES, PhoneType, Prefix};
use sipcfg::provision::render::Templates;

/// A cluster with one non-secure profile per phone type (so that files carry no certificate) and one user.
fn base() -> String {
    let mut s = String::from(
        r#"
[cluster]
name = "features"
call_managers = [{ address = "cucm1.example.test", name = "cucm1" }]
ntp_servers = ["ntp.example.test"]
time_zone = "W. Europe Standard/Daylight Time"
date_template = "D.M.Y"

[users.jsmith]
name = "John Smith"
"#,
    );
    for t in PHONE_TYPES {
        writeln!(
            s,
            "[profiles.\"{name}\"]\nphone_type = \"{name}\"\nsecurity_mode = \"non-secure\"\ntransport = \"tcp\"\n",
            name = t.name
        )
        .unwrap();
    }
    s
}

/// A device name of `t`'s prefix, distinct per `n`.
fn name_of(t: &PhoneType, n: usize) -> String {
    match t.prefix {
        Prefix::Sep => format!("SEP00AA{n:08X}"),
        p => format!("{p}USER{n}"),
    }
}

/// A device table of type `t` with `lines` lines, `sd` speed dials, `blf` BLF speed dials, `kems` modules
/// and `extra` keys.
fn device(t: &PhoneType, name: &str, lines: usize, sd: usize, blf: usize, kems: usize, extra: &str) -> String {
    let lines: Vec<String> =
        (1..=lines).map(|i| format!("{{ dn = \"{}\", label = \"Line {i}\" }}", 1000 + i)).collect();
    let sd: Vec<String> = (1..=sd).map(|i| format!("{{ number = \"{}\", label = \"SD {i}\" }}", 2000 + i)).collect();
    let blf: Vec<String> =
        (1..=blf).map(|i| format!("{{ destination = \"{}\", label = \"BLF {i}\" }}", 3000 + i)).collect();
    let mut s = format!(
        "[devices.{name}]\nmodel = \"{m}\"\nprofile = \"{m}\"\nowner = \"jsmith\"\nlines = [{}]\n",
        lines.join(", "),
        m = t.name
    );
    if !sd.is_empty() {
        writeln!(s, "speed_dials = [{}]", sd.join(", ")).unwrap();
    }
    if !blf.is_empty() {
        writeln!(s, "blf_speed_dials = [{}]", blf.join(", ")).unwrap();
    }
    if kems > 0 {
        writeln!(s, "key_expansion_modules = {kems}").unwrap();
    }
    s.push_str(extra);
    s.push('\n');
    s
}

fn parse(text: &str) -> Result<Inventory, InventoryErrors> {
    Inventory::parse(Path::new("features.toml"), text)
}

fn templates() -> Templates {
    Templates::load(&common::repo().join("templates"), None).expect("shipped templates load")
}

fn render(inventory: &Inventory, name: &str) -> String {
    let device = inventory.devices.values().find(|d| d.name.as_str() == name).expect("device");
    let xml = templates().render(inventory, device, &[]).expect("renders");
    sipcfg::provision::xml::check_well_formed(&xml).expect("well-formed");
    xml
}

fn refusal(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const DEVICE_SERVICES: &str = "[devices.NAME.services]\ndirectory = \"https://dir.example.test/own\"\n";

#[test]
fn every_phone_type_renders_each_feature_it_supports() {
    // Three devices a type: every line it carries with every module it takes and URLs of its own; one line
    // and a speed dial; one line and a BLF speed dial (the last two where it has line keys).
    let mut text = base();
    for (n, t) in PHONE_TYPES.iter().enumerate() {
        let f = t.features;
        let name = name_of(t, n);
        let extra = if f.services { DEVICE_SERVICES.replace("NAME", &name) } else { String::new() };
        text.push_str(&device(t, &name, f.max_lines, 0, 0, f.max_kems, &extra));
        if f.line_keys > 0 {
            text.push_str(&device(t, &name_of(t, n + 100), 1, 1, 0, 0, ""));
            text.push_str(&device(t, &name_of(t, n + 200), 1, 0, 1, 0, ""));
        }
    }
    let inventory = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    for (n, t) in PHONE_TYPES.iter().enumerate() {
        let f = t.features;
        let xml = render(&inventory, &name_of(t, n));
        assert_eq!(xml.matches("<featureID>9</featureID>").count(), f.max_lines, "{}", t.name);
        assert_eq!(xml.matches("<addOnModule idx=").count(), f.max_kems, "{}", t.name);
        if f.max_kems > 0 {
            assert!(xml.contains(&format!("<deviceType>{}</deviceType>", f.kem_model)), "{}", t.name);
        } else {
            assert!(!xml.contains("<addOnModules>"), "{}", t.name);
        }
        assert_eq!(
            xml.contains("<directoryURL>https://dir.example.test/own</directoryURL>"),
            f.services,
            "{}: {xml}",
            t.name
        );
        assert_eq!(xml.contains("<directoryURL>"), f.services, "Jabber files carry no service URL: {}", t.name);
        if f.line_keys > 0 {
            let sd = render(&inventory, &name_of(t, n + 100));
            assert_eq!(sd.matches("<featureID>2</featureID>").count(), 1, "{}", t.name);
            assert!(sd.contains("<line button=\"2\">"), "{}: {sd}", t.name);
            let blf = render(&inventory, &name_of(t, n + 200));
            assert_eq!(blf.matches("<featureID>21</featureID>").count(), 1, "{}", t.name);
            assert!(blf.contains("<speedDialNumber>3001</speedDialNumber>"), "{}: {blf}", t.name);
        }
    }
}

#[test]
fn buttons_follow_the_lines_and_blf_carries_its_option() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 8851").unwrap();
    let text = base() + &device(t, "SEP00AA00000001", 2, 1, 1, 0, "");
    let xml = render(&parse(&text).unwrap(), "SEP00AA00000001");
    let sd = xml.find("<featureLabel>SD 1</featureLabel>").unwrap();
    let blf = xml.find("<featureLabel>BLF 1</featureLabel>").unwrap();
    assert!(xml[..sd].ends_with("<featureID>2</featureID>\n        "), "{xml}");
    assert!(xml[..sd].contains("<line button=\"3\">"), "speed dials follow the two lines: {xml}");
    assert!(xml[sd..blf].contains("<line button=\"4\">"), "{xml}");
    assert!(xml[blf..].starts_with("<featureLabel>BLF 1</featureLabel>\n        <speedDialNumber>3001</speedDialNumber>\n        <featureOptionMask>1</featureOptionMask>"), "{xml}");
    assert!(!xml[sd..blf].contains("featureOptionMask"), "a plain speed dial has no lamp: {xml}");
    // A label left out is the number.
    let text = base() + &device(t, "SEP00AA00000001", 1, 0, 0, 0, "speed_dials = [{ number = \"+4930123\" }]");
    let xml = render(&parse(&text).unwrap(), "SEP00AA00000001");
    assert!(xml.contains("<featureLabel>+4930123</featureLabel>"), "{xml}");
}

#[test]
fn every_phone_type_refuses_what_it_does_not_support() {
    for (n, t) in PHONE_TYPES.iter().enumerate() {
        let f = t.features;
        let name = name_of(t, n);
        let dev = |lines, sd, blf, kems, extra: &str| base() + &device(t, &name, lines, sd, blf, kems, extra);

        let e = refusal(&dev(f.max_lines + 1, 0, 0, 0, ""));
        assert!(e.contains(&name) && e.contains(&format!("{} lines", f.max_lines + 1)), "{}: {e}", t.name);

        let e = refusal(&dev(1, 0, 0, f.max_kems + 1, ""));
        assert!(e.contains("key_expansion_modules"), "{}: {e}", t.name);
        if f.max_kems == 0 {
            assert!(e.contains("takes no key expansion module"), "{}: {e}", t.name);
        }

        if f.line_keys == 0 {
            for (sd, blf, key) in [(1, 0, "speed_dials"), (0, 1, "blf_speed_dials")] {
                let e = refusal(&dev(1, sd, blf, 0, ""));
                assert!(e.contains(key) && e.contains("has no line keys"), "{}: {e}", t.name);
            }
        } else {
            // One button more than the phone and its largest set of modules have.
            let keys = f.line_keys + f.max_kems * KEM_KEYS;
            let e = refusal(&dev(1, keys - 1, 1, f.max_kems, ""));
            assert!(e.contains(&format!("need {} buttons", keys + 1)), "{}: {e}", t.name);
            // Exactly full is fine.
            parse(&dev(1, keys - 2, 1, f.max_kems, "")).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        }

        if !f.services {
            let e = refusal(&dev(1, 0, 0, 0, &DEVICE_SERVICES.replace("NAME", &name)));
            assert!(e.contains("does not use phone service URLs"), "{}: {e}", t.name);
        }
    }
}

#[test]
fn a_7811_has_one_line_and_no_module() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 7811").unwrap();
    let e = refusal(&(base() + &device(t, "SEP00AA00007811", 2, 0, 0, 0, "")));
    assert!(e.contains("2 lines, and a Cisco 7811 carries 1 line"), "{e}");
    let e = refusal(&(base() + &device(t, "SEP00AA00007811", 1, 0, 0, 1, "")));
    assert!(e.contains("a Cisco 7811 takes no key expansion module"), "{e}");
    let e = refusal(&(base() + &device(t, "SEP00AA00007811", 1, 0, 1, 0, "")));
    assert!(e.contains("blf_speed_dials: a Cisco 7811 has no line keys"), "{e}");
}

#[test]
fn buttons_a_module_would_hold_ask_for_the_module() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 8851").unwrap();
    let e = refusal(&(base() + &device(t, "SEP00AA00000001", 1, 4, 1, 0, "")));
    assert!(e.contains("need 6 buttons, and a Cisco 8851 with 0 key expansion modules has 5"), "{e}");
    assert!(e.contains("add a module (it takes up to 2)"), "{e}");
    parse(&(base() + &device(t, "SEP00AA00000001", 1, 4, 1, 1, ""))).unwrap();
}

#[test]
fn bad_speed_dials_are_refused_with_their_place() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 8851").unwrap();
    for (value, expect) in [
        (r#"speed_dials = [{ number = "" }]"#, "speed_dials[1]: number must not be empty"),
        (r#"speed_dials = [{ number = "12 34" }]"#, "speed_dials[1]: number \"12 34\""),
        (r#"blf_speed_dials = [{ destination = "abc" }]"#, "blf_speed_dials[1]: destination \"abc\""),
    ] {
        let e = refusal(&(base() + &device(t, "SEP00AA00000001", 1, 0, 0, 0, value)));
        assert!(e.contains(expect), "{value}: {e}");
    }
    // A SIP URI is a destination too.
    parse(
        &(base()
            + &device(
                t,
                "SEP00AA00000001",
                1,
                0,
                0,
                0,
                r#"blf_speed_dials = [{ destination = "sip:reception@example.test" }]"#,
            )),
    )
    .unwrap();
}

#[test]
fn service_urls_resolve_key_by_key_device_then_pool_then_cluster() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 8841").unwrap();
    let text = base().replace(
        "[users.jsmith]",
        "[cluster.services]\n\
         directory = \"https://cluster.example.test/dir\"\n\
         services = \"https://cluster.example.test/services\"\n\
         messages = \"https://cluster.example.test/messages\"\n\n\
         [device_pools.paris.services]\n\
         services = \"https://paris.example.test/services\"\n\
         idle = \"https://paris.example.test/idle\"\n\
         idle_timeout = 600\n\n\
         [users.jsmith]",
    ) + &device(
        t,
        "SEP00AA00000001",
        1,
        0,
        0,
        0,
        "pool = \"paris\"\n[devices.SEP00AA00000001.services]\nmessages = \"https://own.example.test/vm\"",
    ) + &device(t, "SEP00AA00000002", 1, 0, 0, 0, "");
    let inventory = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let xml = render(&inventory, "SEP00AA00000001");
    for element in [
        "<directoryURL>https://cluster.example.test/dir</directoryURL>",
        "<servicesURL>https://paris.example.test/services</servicesURL>",
        "<idleURL>https://paris.example.test/idle</idleURL>",
        "<idleTimeout>600</idleTimeout>",
        "<messagesURL>https://own.example.test/vm</messagesURL>",
        "<authenticationURL></authenticationURL>",
    ] {
        assert!(xml.contains(element), "{element}: {xml}");
    }
    let xml = render(&inventory, "SEP00AA00000002");
    for element in [
        "<servicesURL>https://cluster.example.test/services</servicesURL>",
        "<messagesURL>https://cluster.example.test/messages</messagesURL>",
        "<idleURL></idleURL>",
        "<idleTimeout>0</idleTimeout>",
    ] {
        assert!(xml.contains(element), "{element}: {xml}");
    }
}

#[test]
fn bad_service_urls_are_refused_naming_the_level_and_key() {
    let t = PHONE_TYPES.iter().find(|t| t.name == "Cisco 8841").unwrap();
    let cases = [
        (
            "[cluster.services]\ndirectory = \"ftp://x.example.test/\"\n",
            "cluster",
            "services.directory \"ftp://x.example.test/\": a service URL starts with http:// or https://",
        ),
        (
            "[cluster.services]\nservices = \"https://admin:secret@x.example.test/\"\n",
            "cluster",
            "leave user:password@ out",
        ),
        (
            "[device_pools.p.services]\nidle_timeout = 60\n",
            "device pool \"p\"",
            "services.idle_timeout needs services.idle",
        ),
        (
            "[device_pools.p.services]\nidle = \"https://x.example.test/idle\"\nidle_timeout = 100000\n",
            "device pool \"p\"",
            "services.idle_timeout 100000 is over 86400",
        ),
    ];
    for (table, entry, expect) in cases {
        let text = base().replace("[users.jsmith]", &format!("{table}\n[users.jsmith]"));
        let e = refusal(&text);
        assert!(e.contains(entry) && e.contains(expect), "{table}: {e}");
    }
    let e = refusal(
        &(base()
            + &device(
                t,
                "SEP00AA00000001",
                1,
                0,
                0,
                0,
                "[devices.SEP00AA00000001.services]\ninformation = \"https://x.example.test/a b\"",
            )),
    );
    assert!(e.contains("SEP00AA00000001") && e.contains("services.information"), "{e}");
}

/// The golden files: whole files of a few models, so that any change to what a phone receives is seen in
/// review.
fn golden_inventory() -> String {
    let find = |name: &str| PHONE_TYPES.iter().find(|t| t.name == name).unwrap();
    let mut text = base().replace(
        "[users.jsmith]",
        "[cluster.services]\n\
         directory = \"https://directory.example.test/xmldirectory\"\n\
         services = \"https://services.example.test/phoneservices\"\n\n\
         [cm_groups.paris]\n\
         call_managers = [\"cucm1\"]\n\n\
         [date_time_groups.paris]\n\
         time_zone = \"Romance Standard/Daylight Time\"\n\
         time_format = \"24-hour\"\n\n\
         [device_pools.paris]\n\
         cm_group = \"paris\"\n\
         date_time_group = \"paris\"\n\n\
         [device_pools.paris.services]\n\
         idle = \"https://services.example.test/paris/idle\"\n\
         idle_timeout = 300\n\n\
         [users.jsmith]",
    );
    text.push_str(&device(find("Cisco 7811"), "SEP00AA00007811", 1, 0, 0, 0, ""));
    text.push_str(&device(
        find("Cisco 8851"),
        "SEP00AA00008851",
        2,
        2,
        4,
        1,
        "pool = \"paris\"\n[devices.SEP00AA00008851.services]\nmessages = \"https://vm.example.test/jsmith\"",
    ));
    text.push_str(&device(find("Cisco 7841"), "SEP00AA00007841", 3, 1, 0, 0, "pool = \"paris\""));
    text.push_str(&device(
        find("Cisco Unified Client Services Framework"),
        "CSFJSMITH",
        2,
        0,
        0,
        0,
        "pool = \"paris\"",
    ));
    text
}

fn golden_path(name: &str) -> PathBuf {
    common::repo().join("tests/golden").join(format!("{name}.cnf.xml"))
}

#[test]
fn golden_files() {
    let inventory = parse(&golden_inventory()).unwrap_or_else(|e| panic!("{e}"));
    let bless = std::env::var_os("SIPCFG_BLESS").is_some();
    let mut stale = Vec::new();
    for name in ["SEP00AA00007811", "SEP00AA00008851", "SEP00AA00007841", "CSFJSMITH"] {
        let xml = render(&inventory, name);
        let path = golden_path(name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &xml).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (SIPCFG_BLESS=1 writes it)", path.display()));
        if want != xml {
            stale.push(format!("{}:\n{}", path.display(), first_difference(&want, &xml)));
        }
    }
    assert!(
        stale.is_empty(),
        "rendered files differ from the golden files (SIPCFG_BLESS=1 rewrites them):\n{}",
        stale.join("\n")
    );
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}: want {w:?}\n          got  {g:?}", i + 1);
        }
    }
    format!("want {} lines, got {}", want.lines().count(), got.lines().count())
}

/// Through the real server: a phone downloading its file over TLS sees its pool's service URLs, its own
/// override, its buttons and its module.
#[tokio::test]
async fn a_phone_downloads_its_buttons_module_and_service_urls() {
    let d = TempDeployment::new();
    d.append(
        "example/inventory.toml",
        "\n[cluster.services]\ndirectory = \"https://directory.example.test/xmldirectory\"\n\
         \n[devices.SEP001122334455.services]\nidle = \"https://idle.example.test/jsmith\"\nidle_timeout = 120\n",
    );
    d.edit(
        "example/inventory.toml",
        "[devices.SEP001122334455]\n",
        "[devices.SEP001122334455]\nkey_expansion_modules = 1\n\
         blf_speed_dials = [{ destination = \"1002\", label = \"Anna\" }]\n",
    );
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let xml = r.text();
    for element in [
        "<directoryURL>https://directory.example.test/xmldirectory</directoryURL>",
        "<idleURL>https://idle.example.test/jsmith</idleURL>",
        "<idleTimeout>120</idleTimeout>",
        "<featureLabel>Anna</featureLabel>",
        "<featureOptionMask>1</featureOptionMask>",
        "<deviceType>Cisco 8800 Key Expansion Module</deviceType>",
    ] {
        assert!(xml.contains(element), "{element}: {xml}");
    }
}
