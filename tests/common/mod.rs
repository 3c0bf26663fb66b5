//! Test harness: the real server on 127.0.0.1:0 with real TLS, and a client that speaks to it as a phone
//! would (HTTP/1.1 or HTTP/2 over TLS, trusting certs-example/ca.pem).
#![allow(dead_code)]

pub mod haproxy;
pub mod pg;
pub mod phone;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sipcfg::app::App;
use sipcfg::auth::signer::Signer;
use sipcfg::config::Config;
use sipcfg::ops::Monitor;
use sipcfg::provision::filename::DeviceName;
use sipcfg::provision::subject::Subject;
use sipcfg::util::stop::{StopHandle, stop_signal};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_config() -> Config {
    Config::load(&repo().join("example/sipcfg.toml")).expect("example config loads")
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub legacy_addr: Option<SocketAddr>,
    pub edge_addr: Option<SocketAddr>,
    /// The admin listener (plain HTTP: /metrics, /healthz, /readyz), unless the configuration turns it off.
    pub admin_addr: Option<SocketAddr>,
    /// The management API and web console (HTTPS), when the configuration has `[console]`.
    pub console_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    /// The counters and readiness the server reports (what `/metrics` and `/readyz` read).
    pub monitor: Monitor,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    watcher: Option<(StopHandle, Vec<tokio::task::JoinHandle<()>>)>,
    _state_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// The example deployment.
    pub async fn start() -> TestServer {
        TestServer::with_config(example_config()).await
    }

    /// The deployment of `config`, every configured listener bound on 127.0.0.1:0. A state database inside
    /// the repository is moved to a temporary folder, so tests never share or leave one.
    pub async fn with_config(mut config: Config) -> TestServer {
        let mut state_dir = None;
        if let Some(state) = &mut config.state
            && state.database.starts_with(repo())
        {
            let dir = tempfile::tempdir().unwrap();
            state.database = dir.path().join("sipcfg.db");
            state_dir = Some(dir);
        }
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.server.listen = local;
        if let Some(l) = &mut config.legacy {
            l.listen = local;
        }
        if let Some(e) = &mut config.edge {
            e.listen = local;
        }
        config.admin.listen = local;
        if let Some(c) = &mut config.console {
            c.listen = local;
        }
        let app = Arc::new(App::from_config(config).await.expect("server starts"));
        let monitor = Monitor::of(&app);
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let https = bind().await;
        let legacy = if app.config().legacy.is_some() { Some(bind().await) } else { None };
        let edge = if app.config().edge.is_some() { Some(bind().await) } else { None };
        let admin = if app.config().admin.enabled { Some(bind().await) } else { None };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
        let console = if app.config().console.is_some() { Some(bind().await) } else { None };
        let console_addr = console.as_ref().map(|l| l.local_addr().unwrap());
        let addr = https.local_addr().unwrap();
        let legacy_addr = legacy.as_ref().map(|l| l.local_addr().unwrap());
        let edge_addr = edge.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = sipcfg::server::Listeners { https, legacy, edge, admin, console };
        let task = tokio::spawn(sipcfg::server::run(listeners, app.clone(), monitor.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            legacy_addr,
            edge_addr,
            admin_addr,
            console_addr,
            app,
            monitor,
            stop: Some(stop),
            task: Some(task),
            watcher: None,
            _state_dir: state_dir,
        }
    }

    /// Starts the file watch (polling every 100 ms) and the token-state watch, as `sipcfg serve` does.
    pub fn watch_files(&mut self) {
        use sipcfg::ops::{reload, signals};
        let (stop, stopped) = stop_signal();
        let every = std::time::Duration::from_millis(100);
        let tasks = vec![
            tokio::spawn(reload::watch(
                self.app.clone(),
                self.monitor.clone(),
                every,
                signals::hangup(),
                stopped.clone(),
            )),
            tokio::spawn(reload::watch_state(self.app.clone(), every, stopped)),
        ];
        self.watcher = Some((stop, tasks));
    }

    /// A reload as the file watch makes it: counted, logged; whether it was taken.
    pub async fn reload_logged(&self) -> bool {
        sipcfg::ops::reload::reload_logged(&self.app, &self.monitor, "test").await
    }

    /// Begins a graceful shutdown (as SIGTERM does) without waiting for it: the listeners stop accepting,
    /// open requests go on, `/readyz` turns 503.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Whether the server has finished (every listener closed, open requests done).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Plain HTTP to the admin listener.
    pub fn admin_client(&self) -> Client {
        Client { addr: self.admin_addr.expect("admin listener on"), http2: false, tls: None }
    }

    /// `/metrics` now.
    pub async fn metrics(&self) -> Metrics {
        let r = self.admin_client().get("/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        Metrics(r.text())
    }

    /// Stops accepting and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    pub fn client(&self) -> Client {
        Client { addr: self.addr, http2: false, tls: Some(Arc::new(tls_client_config(b"http/1.1"))) }
    }

    pub fn h2_client(&self) -> Client {
        Client { addr: self.addr, http2: true, tls: Some(Arc::new(tls_client_config(b"h2"))) }
    }

    /// TLS to the phone port with the given client configuration (e.g. [`tls_client_config_trusting`]).
    pub fn client_with(&self, tls: rustls::ClientConfig) -> Client {
        Client { addr: self.addr, http2: false, tls: Some(Arc::new(tls)) }
    }

    /// Plain HTTP to the legacy listener.
    pub fn legacy_client(&self) -> Client {
        Client { addr: self.legacy_addr.expect("legacy listener configured"), http2: false, tls: None }
    }

    /// TLS to the edge listener with the given client configuration.
    pub fn edge_client(&self, tls: rustls::ClientConfig) -> Client {
        Client { addr: self.edge_addr.expect("edge listener configured"), http2: false, tls: Some(Arc::new(tls)) }
    }

    /// A token minted with the deployment's signing key.
    pub fn token(&self, subject: &str) -> String {
        let signer = Signer::from_config(&self.app.config().auth).unwrap();
        signer.mint(&subject_of(subject), 600).unwrap()
    }
}

/// A scrape of `/metrics` (Prometheus text format).
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of one series, written as in the exposition (`name{label="v",...}`); 0 when absent (a
    /// counter that has counted nothing yet is not listed).
    pub fn get(&self, series: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|_| panic!("{series}: bad value {v}")))
    }

    /// Whether a series or a `# TYPE` line of this name is there.
    pub fn has(&self, name: &str) -> bool {
        self.0.lines().any(|l| l.starts_with(name) || l.starts_with(&format!("# TYPE {name} ")))
    }
}

pub fn subject_of(s: &str) -> Subject {
    match s.split_once(':') {
        Some(("device", d)) => Subject::Device(DeviceName::parse_loose(d).unwrap()),
        Some(("user", u)) => Subject::User(u.to_owned()),
        _ => panic!("bad subject {s}"),
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    http2: bool,
    /// None: plain HTTP.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One kept-alive connection.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.try_send(method, path, headers).await.expect("request answered")
    }

    /// A request that may fail (the server closed the connection, a refused client certificate).
    pub async fn try_send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        self.request(method, path, headers, Bytes::new()).await
    }

    /// A request with a body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let h2 = matches!(self, Conn::H2(_));
        let uri = if h2 { format!("https://localhost{path}") } else { path.to_owned() };
        let mut builder = Request::builder().method(method).uri(uri);
        if !h2 {
            builder = builder.header("host", "localhost");
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Full::new(body)).unwrap();
        let e = |e: hyper::Error| e.to_string();
        let response = match self {
            Conn::H1(s) => {
                s.ready().await.map_err(e)?;
                s.send_request(req).await.map_err(e)?
            }
            Conn::H2(s) => {
                s.ready().await.map_err(e)?;
                s.send_request(req).await.map_err(e)?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(e)?.to_bytes();
        Ok(Resp { status: parts.status, headers: parts.headers, body, version: parts.version })
    }
}

pub fn tls_client_config(alpn: &[u8]) -> rustls::ClientConfig {
    tls_client_config_trusting(&std::fs::read_to_string(repo().join("certs-example/ca.pem")).unwrap(), alpn)
}

/// A phone's TLS client configuration that trusts only the PEM certificates `roots` (as a phone trusts what
/// its Phone-Edge-Trust holds).
pub fn tls_client_config_trusting(roots_pem: &str, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

impl Client {
    /// Plain HTTP/1.1 to any address (an admin listener of a server started as a process).
    pub fn plain_to(addr: SocketAddr) -> Client {
        Client { addr, http2: false, tls: None }
    }

    /// HTTP/1.1 over TLS to any address (a server started as a process).
    pub fn tls_to(addr: SocketAddr) -> Client {
        Client { addr, http2: false, tls: Some(Arc::new(tls_client_config(b"http/1.1"))) }
    }

    /// Over TLS with this client configuration (a client certificate, other ALPN), HTTP/2 or HTTP/1.1.
    pub fn tls_with(addr: SocketAddr, tls: rustls::ClientConfig, http2: bool) -> Client {
        Client { addr, http2, tls: Some(Arc::new(tls)) }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send("GET", path, &headers).await
    }

    /// A form POST (`application/x-www-form-urlencoded`) on a fresh connection.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body: String = fields
            .iter()
            .map(|(k, v)| {
                format!("{}={}", k, v.replace('%', "%25").replace('&', "%26").replace('+', "%2B").replace('=', "%3D"))
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut conn = self.connect().await.expect("connects");
        conn.request("POST", path, &[("content-type", "application/x-www-form-urlencoded")], Bytes::from(body))
            .await
            .expect("answered")
    }

    /// One request on a fresh connection, as a booting phone makes it.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.connect().await.expect("connects").send(method, path, headers).await
    }

    /// A new connection (TLS handshake included); Err if the connection or handshake fails.
    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        let Some(tls) = &self.tls else {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            return Ok(Conn::H1(sender));
        };
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream =
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        if self.http2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::H1(sender))
        }
    }
}

/// Signs arbitrary claims with a PEM key, for tokens the server must refuse.
pub fn sign(alg: jsonwebtoken::Algorithm, key_pem: &Path, kid: Option<&str>, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let pem = std::fs::read(key_pem).unwrap();
    let key = match alg {
        jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        jsonwebtoken::Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

pub fn now() -> i64 {
    sipcfg::util::time::unix_now() as i64
}

/// Claims the example deployment accepts, for `sub`; tests change one field at a time.
pub fn good_claims(sub: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": "https://sipcfg.example.test",
        "aud": "sipcfg",
        "sub": sub,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
    })
}

pub fn example_signing_key() -> PathBuf {
    repo().join("certs-example/token-signing-key.pem")
}

/// A copy of the example deployment in a temporary folder, so a test can change its files.
pub struct TempDeployment {
    pub dir: tempfile::TempDir,
}

impl TempDeployment {
    pub fn new() -> TempDeployment {
        let dir = tempfile::tempdir().unwrap();
        // A state folder left by a local `sipcfg serve` of the example is not part of the deployment.
        copy_dir_except(&repo().join("example"), &dir.path().join("example"), &["state"]);
        copy_dir(&repo().join("templates"), &dir.path().join("templates"));
        copy_dir(&repo().join("certs-example"), &dir.path().join("certs-example"));
        let d = TempDeployment { dir };
        // Tests run side by side: the console of each takes any free port.
        d.edit("example/sipcfg.toml", "listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\"");
        d
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn config(&self) -> Config {
        Config::load(&self.path("example/sipcfg.toml")).unwrap()
    }
    /// Replaces `from` with `to` in a file of the deployment (the text must be there).
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
    pub fn append(&self, rel: &str, more: &str) {
        let p = self.path(rel);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(more);
        std::fs::write(&p, text).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    copy_dir_except(from, to, &[]);
}

fn copy_dir_except(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if skip.iter().any(|s| entry.file_name() == *s) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `sipcfg serve` run as a process, for what is per process: the log subscriber, the audit log, standard
/// error. Its HTTPS and admin listeners are on free loopback ports; standard error goes to a file.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: PathBuf,
}

impl ServeProcess {
    /// Starts `sipcfg serve -c config` (with `SIPCFG_LOG` = `log`) on ports the kernel picks (every listener,
    /// so that tests running at once never race for a port) and waits until it accepts TLS connections.
    pub async fn start(config: &Path, log: &str) -> ServeProcess {
        let stderr = config.with_extension("stderr.log");
        let any = "127.0.0.1:0";
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sipcfg"))
            .args(["serve", "--listen", any, "--admin-listen", any, "--legacy-listen", any, "--config"])
            .arg(config)
            // The two lines that name the listeners' addresses, whatever else the test filters out.
            .env("SIPCFG_LOG", format!("{log},sipcfg::cli::serve=info,sipcfg::server::admin=info"))
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The log is text (`address=127.0.0.1:1234`) or JSON (`"address":"127.0.0.1:1234"`).
        let address_of = |text: &str, line: &str| -> Option<SocketAddr> {
            let line = text.lines().find(|l| l.contains(line))?;
            let (at, len) = match line.find("address=") {
                Some(at) => (at, "address=".len()),
                None => (line.find("\"address\":")?, "\"address\":".len()),
            };
            let rest = line[at + len..].trim_start_matches('"');
            rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '}').next()?.parse().ok()
        };
        let (addr, admin) = loop {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            if let (Some(a), Some(b)) =
                (address_of(&text, "serving configuration files over HTTPS"), address_of(&text, "serving /metrics"))
            {
                break (a, b);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the server exited ({status}) before serving:\n{text}");
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start:\n{text}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let served = ServeProcess { child, addr, admin, stderr };
        while served.client().connect().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the server does not accept:\n{}", served.log());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        served
    }

    pub fn client(&self) -> Client {
        Client::tls_to(self.addr)
    }

    /// `/metrics` now.
    pub async fn metrics(&self) -> Metrics {
        let r = Client::plain_to(self.admin).get("/metrics", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        Metrics(r.text())
    }

    /// What the server wrote on standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, as systemd stops it; the server must exit 0.
    pub fn stop(mut self) -> String {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert_eq!(self.child.wait().unwrap().code(), Some(0), "{}", self.log());
        self.log()
    }
}

impl Drop for ServeProcess {
    /// A test that failed half-way leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
