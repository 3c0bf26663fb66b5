//! A real browser for the console's tests: headless Chromium driven through chromedriver (WebDriver), both
//! Debian's (`apt-get install chromium chromium-driver`; .ci/run installs them). Chromedriver is started here
//! on a port of its own choosing and ended with the browser; Chromium trusts the server's certificate by its
//! public key only (`--ignore-certificate-errors-spki-list`), not every certificate.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use thirtyfour::prelude::*;

/// What to tell whoever runs a browser test on a machine without the browser. The test fails: a console
/// that is never tested in a browser must not pass unnoticed.
const HOW_TO_INSTALL: &str = "the console's browser test needs headless Chromium and chromedriver: install them \
     with `apt-get install chromium chromium-driver` (Debian; .ci/run does), or point CHROMIUM and CHROMEDRIVER \
     at the binaries. This test fails rather than skips without them";

pub struct Browser {
    /// `None` once quit.
    driver: Option<WebDriver>,
    chromedriver: Child,
    /// `https://localhost:PORT`, the console.
    pub base: String,
}

impl std::ops::Deref for Browser {
    type Target = WebDriver;
    fn deref(&self) -> &WebDriver {
        self.driver.as_ref().expect("the browser is running")
    }
}

/// An executable: the environment variable `var` if set, else the first of `names` on PATH.
fn executable(var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{var}={} is not a file; {HOW_TO_INSTALL}", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} not found on PATH; {HOW_TO_INSTALL}", names.join(" or ")))
}

/// The base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's SPKI list wants it.
fn spki_sha256(cert_pem: &Path) -> String {
    use base64::Engine;
    let pem = std::fs::read(cert_pem).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("a PEM certificate");
    let cert = pem.parse_x509().expect("an X.509 certificate");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

impl Browser {
    /// Headless Chromium at 1280x800 on the console at `console` (its certificate `cert_pem`, for `localhost`).
    pub async fn start(console: SocketAddr, cert_pem: &Path) -> Browser {
        let chromium = executable("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = executable("CHROMEDRIVER", &["chromedriver"]);
        let mut child = Command::new(&chromedriver)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {HOW_TO_INSTALL}", chromedriver.display()));
        // It says which port it took on its standard output; the rest of that output is read and dropped so
        // that it never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let port: u16 = port.trim().trim_end_matches('.').parse().unwrap_or(0);
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) if port != 0 => port,
            other => {
                let _ = child.kill();
                panic!("chromedriver did not say its port ({other:?}); {HOW_TO_INSTALL}");
            }
        };

        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium.to_string_lossy()).unwrap();
        let spki = format!("--ignore-certificate-errors-spki-list={}", spki_sha256(cert_pem));
        for arg in [
            "--headless=new",
            // Root in a container: Chromium's sandbox needs user namespaces it may not have.
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,800",
            "--force-device-scale-factor=1",
            // As on a phone (and in a screenshot): scroll bars take no room from the page.
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--lang=en-US",
            // `localhost` (the certificate's name, and a secure context for __Host- cookies) is the
            // server on 127.0.0.1, whatever the resolver would say of ::1.
            "--host-resolver-rules=MAP localhost 127.0.0.1",
            &spki,
        ] {
            caps.add_arg(arg).unwrap();
        }
        let driver = match WebDriver::new(format!("http://127.0.0.1:{port}"), caps).await {
            Ok(d) => d,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver could not start {}: {e}; {HOW_TO_INSTALL}", chromium.display());
            }
        };
        Browser { driver: Some(driver), chromedriver: child, base: format!("https://localhost:{}", console.port()) }
    }

    /// Ends the browser and chromedriver.
    pub async fn quit(mut self) {
        if let Some(driver) = self.driver.take() {
            driver.quit().await.expect("the browser quits");
        }
    }

    /// Opens a console page (`path` from `/`) and waits for it to load.
    pub async fn open(&self, path: &str) {
        self.goto(format!("{}{path}", self.base)).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The result of a script run in the page (`return …`), `args` as its `arguments`.
    pub async fn js<T: DeserializeOwned>(&self, script: &str, args: Vec<Value>) -> T {
        let ret =
            self.execute(script.to_owned(), args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"));
        serde_json::from_value(ret.json().clone()).unwrap_or_else(|e| panic!("script result {}: {e}", ret.json()))
    }

    /// The result of an asynchronous script (it calls `arguments[arguments.length - 1]` with its result).
    pub async fn js_async<T: DeserializeOwned>(&self, script: &str, args: Vec<Value>) -> T {
        let ret = self
            .execute_async(script.to_owned(), args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"));
        serde_json::from_value(ret.json().clone()).unwrap_or_else(|e| panic!("script result {}: {e}", ret.json()))
    }

    /// The element `css`; fails naming the page if there is none.
    pub async fn el(&self, css: &str) -> WebElement {
        match self.find(By::Css(css)).await {
            Ok(e) => e,
            Err(e) => {
                let path = self.path().await;
                let text = self.text("body").await;
                panic!("no {css} on {path}: {e}\n--- the page says:\n{text}")
            }
        }
    }

    /// The rendered text of the first element `css` ("" if there is none).
    pub async fn text(&self, css: &str) -> String {
        self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", vec![css.into()]).await
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.js("return document.querySelectorAll(arguments[0]).length;", vec![css.into()]).await
    }

    /// Clicks `css`, something that loads a page (a link, a form's button), and waits for that page.
    pub async fn click(&self, css: &str) {
        let target = self.el(css).await;
        self.mark_page().await;
        target.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
        self.wait_for_new_page(css).await;
    }

    /// Marks the page shown, so that [`Browser::wait_for_new_page`] knows when another has replaced it.
    pub async fn mark_page(&self) {
        self.js::<Value>("window.__sipcfgOldPage = true; return null;", vec![]).await;
    }

    /// Waits until the page marked has been replaced by another, loaded (a click on a form's button may
    /// return before the browser has even sent the form).
    pub async fn wait_for_new_page(&self, after: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            // A script run while the page unloads may fail: not loaded yet.
            let loaded = self
                .execute("return !window.__sipcfgOldPage && document.readyState === 'complete';", vec![])
                .await
                .is_ok_and(|r| r.json() == &Value::Bool(true));
            if loaded {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no new page loaded after {after}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Types `text` into the field `css` as a person would (key by key), after emptying it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.el(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Presses a key in the page, wherever the focus is.
    pub async fn press(&self, key: Key) {
        self.action_chain().send_keys(key).perform().await.unwrap();
    }

    /// Sizes the window so that the page's viewport is `width` x `height` (headless Chromium's window still
    /// counts a toolbar's height).
    pub async fn resize(&self, width: u32, height: u32) {
        let viewport = async || self.js::<(u32, u32)>("return [window.innerWidth, window.innerHeight];", vec![]).await;
        self.set_window_rect(0, 0, width, height).await.unwrap();
        let (w, h) = viewport().await;
        if (w, h) != (width, height) {
            let window = self.get_window_rect().await.unwrap();
            let (extra_w, extra_h) = (window.width as i64 - i64::from(w), window.height as i64 - i64::from(h));
            self.set_window_rect(0, 0, (i64::from(width) + extra_w) as u32, (i64::from(height) + extra_h) as u32)
                .await
                .unwrap();
        }
        let inner = viewport().await;
        assert_eq!(inner, (width, height), "the viewport asked for");
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot_to(&self, path: &Path) {
        let png = self.screenshot_as_png().await.unwrap();
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test: the session is ended (which closes Chromium) before chromedriver is.
        drop(self.driver.take());
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}
