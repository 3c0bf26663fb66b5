//! The web console in a real browser (headless Chromium through chromedriver), as an administrator uses it:
//! log in (a wrong password first), find a device, give it an activation code and see the code and its QR
//! code, see the phone redeem it and download its file, revoke its tokens, preview an import with a bad
//! row, and the audit trail of it all; forms without their CSRF token and a read-only account's forged posts
//! refused, nothing changed; the device page readable on a phone and on a laptop, "Skip to content" first for
//! the keyboard. Chromium and chromedriver are required (Debian: `apt-get install chromium chromium-driver`;
//! .ci/run installs them): without them this test fails, it does not skip.
//!
//! `SIPCFG_SCREENSHOTS=1 cargo test --test console_browser` also writes docs/console-dashboard.png and
//! docs/console-device.png (1280x800) for the README.

mod common;
// Not in `common`: thirtyfour implements `Add<Key> for String`, which every test crate that loaded it would see,
// and `String + &String` would no longer compile there (tests/render_and_cache.rs has one).
#[path = "common/browser.rs"]
mod browser;

use std::time::Instant;

use browser::Browser;
use common::{TempDeployment, TestServer};
use http::StatusCode;
use serde_json::Value;
use sipcfg::auth::accounts::{Account, Role, hash_password};
use thirtyfour::Key;

const GRANT: &str = "urn:sipcfg:grant-type:activation-code";
const DEVICE: &str = "SEP001122334455";
const PASSWORD: &str = "correct horse battery";
const IMPORT_HEADER: &str = "DEVICE NAME,DESCRIPTION,DEVICE TYPE,DEVICE SECURITY PROFILE,OWNER USER ID,\
                             DIRECTORY NUMBER 1,DISPLAY 1,LINE TEXT LABEL 1,DIRECTORY NUMBER 2";

fn inventory(d: &TempDeployment) -> String {
    std::fs::read_to_string(d.path("example/inventory.toml")).unwrap()
}

/// Logs in through the form; `password` wrong: the error is shown and the login page stays.
async fn log_in(b: &Browser, name: &str, password: &str) {
    b.open("/login").await;
    b.type_into("#name", name).await;
    b.type_into("#password", password).await;
    b.click(".login button[type=submit]").await;
}

/// The State column of the device page's token families.
async fn family_states(b: &Browser) -> Vec<String> {
    b.js(
        "const section = [...document.querySelectorAll('main section')]
            .find(s => s.querySelector('h2')?.innerText === 'Token families');
         return Array.from(section.querySelectorAll('tbody tr td:last-child'), td => td.innerText);",
        vec![],
    )
    .await
}

/// The page has no horizontal overflow at this size, and "Skip to content" is the first stop of the Tab
/// key, shown when focused, and leads into the page's main content.
async fn check_layout_and_keyboard(b: &Browser, path: &str, width: u32, height: u32) {
    b.resize(width, height).await;
    b.open(path).await;
    let (scroll, inner): (u32, u32) =
        b.js("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];", vec![]).await;
    // And no element sticks out beyond the right edge (outside the boxes that scroll by themselves).
    let wide: Vec<String> = b
        .js(
            "return [...document.body.querySelectorAll('*')]
                .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                             && !e.closest('.scroll, pre, .skip'))
                .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);",
            vec![],
        )
        .await;
    assert!(
        scroll <= inner && wide.is_empty(),
        "{path} at {width}x{height}: the page is {scroll} px wide in a {inner} px viewport; beyond its right edge: {wide:?}"
    );

    b.press(Key::Tab).await;
    let focused: (String, String, f64) = b
        .js(
            "const e = document.activeElement; const r = e.getBoundingClientRect();
             return [e.innerText, e.getAttribute('href') || '', r.left];",
            vec![],
        )
        .await;
    assert_eq!((focused.0.as_str(), focused.1.as_str()), ("Skip to content", "#main"), "first Tab stop on {path}");
    assert!(focused.2 >= 0.0, "the focused skip link is on screen: left = {}", focused.2);
    b.press(Key::Enter).await;
    b.press(Key::Tab).await;
    let in_main: bool = b.js("return document.querySelector('main').contains(document.activeElement);", vec![]).await;
    assert!(in_main, "after Skip to content, Tab goes into the main content on {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_onboards_a_phone_and_refuses_what_it_must() {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("{:>6.2} s  {what}", started.elapsed().as_secs_f64());
    let screenshots = std::env::var_os("SIPCFG_SCREENSHOTS").is_some_and(|v| v == "1");

    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let accounts = server.app.accounts().expect("the example has a store for accounts").clone();
    for (name, role) in [("ada", Role::Admin), ("rita", Role::ReadOnly)] {
        let account = Account { name: name.into(), role, created: common::now() };
        assert!(accounts.add_account(&account, &hash_password(PASSWORD).unwrap()).await.unwrap());
    }
    let console = server.console_addr.expect("the example has a console");
    let b = Browser::start(console, &d.path("certs-example/server.pem")).await;
    b.resize(1280, 800).await;
    lap("server and browser started");

    // Log in: a wrong password first.
    b.open("/devices").await;
    assert_eq!(b.path().await, "/login", "a page without a session leads to the login");
    log_in(&b, "ada", "wrong horse battery").await;
    assert_eq!(b.text("p.error[role=alert]").await, "Unknown account or wrong password.");
    assert_eq!(b.el("#name").await.value().await.unwrap().as_deref(), Some("ada"), "the name is kept");
    assert_eq!(b.count("header.top").await, 0, "no console without a session");
    log_in(&b, "ada", PASSWORD).await;
    assert_eq!(b.path().await, "/");
    assert_eq!(b.text("h1").await, "Dashboard");
    assert_eq!(b.text(".me").await, "ada (admin)");
    let cookies = b.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name == "__Host-sipcfg_session").expect("the session cookie");
    assert_eq!((session.secure, session.http_only), (Some(true), Some(true)), "{session:?}");
    assert_eq!(format!("{:?}", session.same_site), "Some(Strict)");
    lap("logged in");

    // Find the device and open its page.
    b.click("nav a[href='/devices']").await;
    b.type_into("#q", "1122334455").await;
    b.click("form.search button[type=submit]").await;
    assert_eq!(b.path().await, "/devices?q=1122334455&status=");
    let rows: Vec<String> =
        b.js("return [...document.querySelectorAll('table.devices tbody tr')].map(r => r.innerText);", vec![]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("John Smith - desk") && rows[0].contains("new"), "{rows:?}");
    b.click(&format!("table.devices a[href='/devices/{DEVICE}']")).await;
    assert_eq!(b.path().await, format!("/devices/{DEVICE}"));
    assert!(b.text("h1").await.starts_with(DEVICE));
    assert_eq!(b.text("h1 .status").await, "new");
    lap("device found");

    // A form sent without its CSRF token is refused, and nothing changes.
    let before = inventory(&d);
    b.js::<Value>("document.querySelector(\"form[action$='/disable'] input[name=csrf]\").remove();", vec![]).await;
    b.click("form[action$='/disable'] button").await;
    assert_eq!(b.text("h1").await, "Forbidden");
    assert!(b.text("main").await.contains("CSRF token is missing or wrong"), "{}", b.text("main").await);
    // Nor does a script's POST without it, or with a wrong one.
    for token in [None, Some("not-the-token")] {
        let status: u16 = b
            .js_async(
                "const [path, token, done] = arguments;
                 fetch(path, {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                              body: token ? 'csrf=' + token : ''}).then(r => done(r.status));",
                vec![format!("/devices/{DEVICE}/disable").into(), token.into()],
            )
            .await;
        assert_eq!(status, 403, "a POST with CSRF token {token:?}");
    }
    assert_eq!(inventory(&d), before, "nothing written");
    b.open(&format!("/devices/{DEVICE}")).await;
    assert_eq!(b.text("h1 .status").await, "new", "still enabled");
    lap("posts without a CSRF token refused");

    // An activation code, shown once with its QR code.
    b.click("#create-code").await;
    let code = b.el("#activation-code").await.text().await.unwrap();
    assert_eq!(code.chars().filter(char::is_ascii_digit).count(), 16, "{code:?}");
    let qr: (u32, f64, f64) = b
        .js(
            "const s = document.querySelector('#activation-qr svg'); const r = s.getBoundingClientRect();
             return [s.querySelectorAll('rect, path').length, r.width, r.height];",
            vec![],
        )
        .await;
    assert!(qr.0 > 0 && qr.1 >= 150.0 && qr.2 >= 150.0, "the QR code is drawn, and big enough to scan: {qr:?}");
    assert!(b.text("main").await.contains("Shown once"));
    assert_eq!(b.text("h1 .status").await, "code-outstanding");
    if screenshots {
        b.screenshot_to(&common::repo().join("docs/console-device.png")).await;
    }
    // Readable on a laptop and on a phone with the code's section (the widest) shown.
    for (width, height) in [(1280, 800), (390, 844)] {
        b.resize(width, height).await;
        let (scroll, inner): (u32, u32) =
            b.js("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];", vec![]).await;
        assert!(scroll <= inner, "the device page with its code is {scroll} px wide at {inner} px");
    }
    b.resize(1280, 800).await;
    lap("activation code created");

    // The phone redeems it at /oauth/token and downloads its file.
    let phone = server.client();
    let r = phone.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tokens: Value = serde_json::from_slice(&r.body).unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let r = phone
        .send(
            "GET",
            &format!("/{DEVICE}.cnf.xml"),
            &[("authorization", &format!("Bearer {access}")), ("user-agent", "Cisco-CP8851/14.2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    b.open(&format!("/devices/{DEVICE}")).await;
    assert_eq!(b.text("h1 .status").await, "onboarded");
    let last = b.text("#last-download").await;
    assert!(
        last.contains(&format!("{DEVICE}.cnf.xml → 200 from 127.0.0.1 (Cisco-CP8851/14.2)")),
        "the last download is shown: {last:?}"
    );
    let families = family_states(&b).await;
    assert_eq!(families, ["live"]);
    assert_eq!(b.count("#activation-code, #activation-qr").await, 0, "the code is shown once only");

    // The dashboard counts it.
    b.resize(1280, 800).await;
    b.open("/").await;
    assert_eq!(b.text("a.card[href='/devices?status=onboarded'] .n").await, "1");
    assert!(b.text("main").await.contains("activation-code.create"), "recent changes");
    if screenshots {
        b.screenshot_to(&common::repo().join("docs/console-dashboard.png")).await;
    }
    lap("phone onboarded, shown on the device page and the dashboard");

    // Layout and keyboard, on a phone and on a laptop.
    check_layout_and_keyboard(&b, &format!("/devices/{DEVICE}"), 390, 844).await;
    check_layout_and_keyboard(&b, &format!("/devices/{DEVICE}"), 1280, 800).await;
    check_layout_and_keyboard(&b, "/", 390, 844).await;
    b.resize(1280, 800).await;
    lap("layout and keyboard checked");

    // Revoke its tokens: the family is revoked, the refresh token refused.
    b.open(&format!("/devices/{DEVICE}")).await;
    b.click("#revoke-tokens").await;
    assert_eq!(b.path().await, format!("/devices/{DEVICE}"));
    let families = family_states(&b).await;
    assert_eq!(families, ["revoked"]);
    assert_eq!(b.text("h1 .status").await, "new", "no longer onboarded");
    let r = phone.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "the revoked family's refresh token: {}", r.text());
    lap("tokens revoked");

    // Import: a bad row is shown and nothing is written; the good rows alone preview, then import.
    let good = "SEP00BB11228851,Daniel Kim - desk,Cisco 8851,Cisco 8851 - Encrypted OAuth,dkim,1005,Daniel Kim,,";
    let bad = "SEP00BB11228852,Spare,Cisco 9999,Cisco 8851 - Encrypted OAuth,,1302,,,";
    let before = inventory(&d);
    b.click("nav a[href='/import']").await;
    b.js::<Value>(
        "document.querySelector('#csv').value = arguments[0];",
        vec![format!("{IMPORT_HEADER}\n{good}\n{bad}\n").into()],
    )
    .await;
    b.click("#import-preview").await;
    let errors = b.text("#import-errors").await;
    assert!(errors.contains("Nothing was written"), "{errors}");
    assert!(errors.contains("(SEP00BB11228852): unknown device type \"Cisco 9999\""), "{errors}");
    assert!(errors.contains("1 invalid row(s) of 2; nothing written"), "{errors}");
    assert_eq!(b.count("#import-commit").await, 0, "no import offered");
    assert!(b.el("#csv").await.value().await.unwrap().unwrap().contains(bad), "the text is kept to fix");
    assert_eq!(inventory(&d), before, "a preview with a bad row writes nothing");
    b.js::<Value>(
        "document.querySelector('#csv').value = arguments[0];",
        vec![format!("{IMPORT_HEADER}\n{good}\n").into()],
    )
    .await;
    b.click("#import-preview").await;
    assert_eq!(b.count("#import-errors").await, 0);
    let report = b.text("#import-report").await;
    assert!(report.contains("Preview: nothing written yet") && report.contains("Added: SEP00BB11228851"), "{report}");
    assert_eq!(inventory(&d), before, "a preview writes nothing");
    b.click("#import-commit").await;
    assert!(b.text("#import-report").await.starts_with("Imported"), "{}", b.text("main").await);
    assert!(inventory(&d).contains("[devices.SEP00BB11228851]"), "written to the inventory");
    lap("import previewed, refused, imported");

    // A read-only account sees no form that changes something, and what it forges is refused.
    b.click("form.logout button").await;
    assert_eq!(b.path().await, "/login");
    log_in(&b, "rita", PASSWORD).await;
    assert_eq!(b.text(".me").await, "rita (read-only)");
    let before = inventory(&d);
    let another = "SEP00BB11228841,Eva Silva - desk,Cisco 8841,Cisco 8841 - Encrypted OAuth,esilva,1006,,,";
    for path in [format!("/devices/{DEVICE}"), "/import".into(), "/codes".into(), "/".into()] {
        b.open(&path).await;
        let forms: Vec<String> = b
            .js(
                "return [...document.querySelectorAll('form[method=post]')].map(f => f.getAttribute('action'))
                    .filter(a => a !== '/logout');",
                vec![],
            )
            .await;
        assert!(forms.is_empty(), "{path}: a read-only account sees forms {forms:?}");
        let says = match path.as_str() {
            "/import" => "Read-only accounts cannot import.",
            "/codes" => "Read-only accounts cannot create codes.",
            _ => "",
        };
        assert!(b.text("main").await.contains(says), "{path} says {says:?}");
    }
    b.open(&format!("/devices/{DEVICE}")).await;
    assert_eq!(b.count("#create-code, #revoke-tokens, a.button.danger").await, 0);
    // A form forged with the session's own CSRF token (from the logout form).
    b.mark_page().await;
    b.js::<Value>(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
         const t = document.createElement('input'); t.type = 'hidden'; t.name = 'csrf';
         t.value = document.querySelector('form.logout input[name=csrf]').value;
         f.append(t); document.body.append(f); f.submit();",
        vec![format!("/devices/{DEVICE}/disable").into()],
    )
    .await;
    b.wait_for_new_page("the forged form").await;
    assert_eq!(b.text("h1").await, "Forbidden");
    assert!(b.text("main").await.contains("\"rita\" is read-only"), "{}", b.text("main").await);
    for (path, body) in [
        (format!("/devices/{DEVICE}/code"), String::new()),
        (format!("/devices/{DEVICE}/revoke"), String::new()),
        ("/import".to_owned(), format!("commit=1&csv={}", urlencode(&format!("{IMPORT_HEADER}\n{another}\n")))),
    ] {
        let status: u16 = b
            .js_async(
                "const [path, body, done] = arguments;
                 const csrf = document.querySelector('form.logout input[name=csrf]').value;
                 fetch(path, {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                              body: 'csrf=' + csrf + (body ? '&' + body : '')}).then(r => done(r.status));",
                vec![path.clone().into(), body.into()],
            )
            .await;
        assert_eq!(status, 403, "read-only POST {path}");
    }
    assert_eq!(inventory(&d), before, "a read-only account changed the inventory");
    b.open(&format!("/devices/{DEVICE}")).await;
    assert_eq!(b.count("#activation-code").await, 0);
    assert_eq!(b.text("#last-download").await, last, "nothing changed");
    lap("read-only account refused");

    // The audit trail lists every change, by whom; none of the refused ones.
    b.open("/audit").await;
    let entries: Vec<Vec<String>> = b
        .js(
            "return [...document.querySelectorAll('#audit tbody tr')]
                .map(r => [...r.querySelectorAll('td')].slice(1, 5).map(td => td.innerText));",
            vec![],
        )
        .await;
    let expected: Vec<Vec<String>> = [
        ["admin:ada", "127.0.0.1", "import", "csv upload"],
        ["admin:ada", "127.0.0.1", "token.revoke", &format!("device:{DEVICE}")],
        ["admin:ada", "127.0.0.1", "activation-code.create", DEVICE],
    ]
    .iter()
    .map(|e| e.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    assert_eq!(entries, expected, "the audit trail, newest first");
    lap("audit trail checked");

    b.quit().await;
    lap("done");

    // Last, so that everything above is checked whatever it says: the bad row is on the CSV's line 3
    // (header, good row, bad row). A browser sends a textarea's text with CRLF line ends (as the HTML
    // standard says), and the csv crate's positions count such lines one short (BurntSushi/rust-csv#395).
    assert!(
        errors.contains("line 3 (SEP00BB11228852)"),
        "the import names the wrong line for a row of text with CRLF line ends:\n{errors}"
    );
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
