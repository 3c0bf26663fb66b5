//! The server's configuration file (TOML): where the inventory, templates, keys and certificates are, and
//! every limit. Relative paths are resolved against the directory of the configuration file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default HTTPS port of CUCM's TFTP service for secure downloads.
pub const DEFAULT_LISTEN: &str = "[::]:6971";
/// The admin listener's default address: loopback only, since it has no authentication.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9971";
/// The example deployment, used when `--config` is not given and sipcfg runs from the root of a source
/// checkout (paths relative to the working directory).
pub const EXAMPLE_CONFIG: &str = "example/sipcfg.toml";
/// The configuration of an installed sipcfg (the Debian package puts it there), used when `--config` is not
/// given outside a source checkout.
pub const INSTALLED_CONFIG: &str = "/etc/sipcfg/sipcfg.toml";
/// A file of this name next to a key marks it as an example key that must not be used in production.
pub const EXAMPLE_KEYS_MARKER: &str = "EXAMPLE-KEYS";
/// Common files larger than this are not served unless `files.max_file_bytes` says otherwise (firmware
/// images are a few tens of MB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Upper bound of the clock-skew leeway; a larger one would make `exp` meaningless.
pub const MAX_LEEWAY_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

/// Token algorithms sipcfg accepts. HMAC is absent on purpose: a shared secret would let every verifier mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum Algorithm {
    ES256,
    ES384,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

impl Algorithm {
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::EdDSA => J::EdDSA,
        }
    }

    pub fn from_jwt(alg: jsonwebtoken::Algorithm) -> Option<Algorithm> {
        use jsonwebtoken::Algorithm as J;
        Some(match alg {
            J::ES256 => Algorithm::ES256,
            J::ES384 => Algorithm::ES384,
            J::RS256 => Algorithm::RS256,
            J::RS384 => Algorithm::RS384,
            J::RS512 => Algorithm::RS512,
            J::PS256 => Algorithm::PS256,
            J::PS384 => Algorithm::PS384,
            J::PS512 => Algorithm::PS512,
            J::EdDSA => Algorithm::EdDSA,
            _ => return None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    tls: TlsConfig,
    auth: RawAuth,
    inventory: InventoryConfig,
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    files: FilesConfig,
    #[serde(default)]
    trust: TrustConfig,
    legacy: Option<LegacyConfig>,
    edge: Option<EdgeConfig>,
    state: Option<StateConfig>,
    store: Option<RawStore>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    observe: ObserveConfig,
    console: Option<ConsoleConfig>,
    ldap: Option<LdapConfig>,
}

/// The management API and the web console's default address: CUCM's administration port, loopback only.
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:8443";

/// The management API and the web console (`[console]`, or `serve --console-listen`): HTTPS with the
/// server's certificate, administrators' accounts in the token service's store (`[state]` or `[store]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// How long a console session lasts from its login.
    pub session_minutes: u32,
    /// Failed logins from one address, or for one account, within `login_window_secs`, past which logins
    /// are refused (429) until the window ends.
    pub login_failures: u32,
    pub login_window_secs: u32,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests' bodies (JSON, forms, CSV uploads) larger than this are refused (413).
    pub max_body_bytes: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: DEFAULT_CONSOLE_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8443))),
            session_minutes: 480,
            login_failures: 5,
            login_window_secs: 300,
            max_connections: 64,
            max_body_bytes: 8 << 20,
        }
    }
}

impl ConsoleConfig {
    pub fn session_secs(&self) -> i64 {
        i64::from(self.session_minutes) * 60
    }
}

/// Observe mode, for a pilot with real phones: what a client sends (request line, headers with every
/// credential redacted) and its TLS facts, logged once per subject and client address under the
/// `sipcfg::observe` target. Off by default; off, it costs nothing on the request path.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    pub enabled: bool,
    /// The (subject, client address) pairs remembered, so that each is logged once: memory stays bounded
    /// whatever reaches the port. Pairs beyond it are not logged (a warning says so, once).
    pub max_pairs: usize,
    /// Ask TLS clients of the phone port for a certificate (optional: the handshake goes on without one),
    /// to learn whether phones present their MIC or LSC. Any certificate is accepted and logged, never
    /// trusted. Off by default: it changes the handshake phones see (docs/decisions.md).
    pub request_client_certificate: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig { enabled: false, max_pairs: 4096, request_client_certificate: false }
    }
}

/// The admin listener (plain HTTP, no authentication): `/metrics`, `/healthz`, `/readyz`; and when
/// certificates are reported as expiring.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `false` turns the admin listener off (certificate expiry warnings are still logged).
    pub enabled: bool,
    /// Loopback by default: anyone who reaches it can read the metrics.
    pub listen: SocketAddr,
    /// Expiry warnings are logged from this many days before a certificate's end (server certificate
    /// chain, edge client CA, Phone-Edge-Trust).
    pub cert_warn_days: u32,
    /// `/readyz` answers 503 from this many days before the server certificate's end (0: once it expired).
    pub cert_unready_days: u32,
    /// How often certificates are checked for the warnings (besides at start and at each reload).
    pub cert_check_hours: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9971))),
            cert_warn_days: 30,
            cert_unready_days: 1,
            cert_check_hours: 6,
        }
    }
}

impl AdminConfig {
    pub fn cert_check_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.cert_check_hours) * 3600)
    }
}

/// Whether two listener addresses would take the same port: equal, or the same port with either on a
/// wildcard address. Port 0 (any free port) never clashes.
pub fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Logs: human-readable on a terminal or JSON lines; and the audit log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`, for the log on standard error.
    #[serde(default)]
    pub format: LogFormat,
    /// The audit log: one JSON line per request (every download and every refusal: time, client address,
    /// channel, method, file, subject, status, reason). Never a token. Appended to; when the file at this
    /// path is renamed or removed (log rotation), the next one is opened within about a second.
    pub audit_file: Option<PathBuf>,
    /// Audit lines held in memory for the audit log's writer thread. When it is full, a request waits for
    /// room instead of losing its line (back-pressure). The writer holds up to as much again while writing.
    #[serde(default = "default_audit_buffer_bytes")]
    pub audit_buffer_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::default(), audit_file: None, audit_buffer_bytes: default_audit_buffer_bytes() }
    }
}

/// 4 MiB: about 12,000 access lines, more than the writer's 100 ms batch at 100,000 requests a second.
fn default_audit_buffer_bytes() -> usize {
    4 * 1024 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The token service's durable state. Without it, sipcfg only verifies tokens (no token endpoint).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The SQLite database (WAL mode). It holds signing keys: readable by sipcfg only.
    pub database: PathBuf,
    /// Failed grants allowed per client address within `failed_grant_window_secs` before 429.
    #[serde(default = "default_failed_grants")]
    pub max_failed_grants: u32,
    #[serde(default = "default_failed_window")]
    pub failed_grant_window_secs: i64,
    /// How often expired codes, tokens, revocations and retired keys are purged.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
    /// A refresh token presented again within this many seconds of its rotation, before its successor was
    /// used, is a client that lost the answer (it gets a valid answer and its family lives on); later, or
    /// after the successor was used, it is a replay and revokes the family. 0 turns retries off.
    #[serde(default = "default_reuse_grace")]
    pub reuse_grace_secs: u64,
}

/// The environment variable that gives (or replaces) `[store] url`.
pub const STORE_URL_ENV: &str = "SIPCFG_STORE_URL";

/// Users from the directory (`[ldap]`): end users synchronised from LDAP or Active Directory, like CUCM's
/// LDAP directory sync. docs/inventory.md, "Users from the directory".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://HOST[:PORT]`, or `ldap://HOST[:PORT]` with `starttls = true` (or `insecure = true`).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// Allow `ldap://` without StartTLS: the bind password and the directory cross the network in clear.
    /// For a test directory only.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of the CA certificates the directory server's certificate must chain to; without it, the
    /// system's trusted CAs.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The DN sipcfg binds as; without it, an anonymous bind.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the bind password (first line), readable by sipcfg only. Never the password itself
    /// in this file.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Refused with a clear message: the password goes in `bind_password_file`.
    #[serde(default)]
    bind_password: Option<toml::Value>,
    /// Where the users are searched (subtree), e.g. `ou=people,dc=example,dc=com`.
    pub base_dn: String,
    #[serde(default = "default_ldap_filter")]
    pub filter: String,
    #[serde(default)]
    pub attributes: LdapAttributes,
    /// Minutes between two scheduled syncs of a running server (the first at start); 0: only on demand
    /// (`sipcfg ldap sync`).
    #[serde(default = "default_ldap_interval")]
    pub interval_minutes: u64,
    /// Seconds allowed for the connection, the bind, and the search each.
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
}

impl LdapConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
    /// The host of the URL (for the audit trail's actor, `ldap:HOST`).
    pub fn host(&self) -> &str {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let hostport = rest.split('/').next().unwrap_or(rest);
        match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
        }
    }
}

/// Which directory attribute gives each field of a user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapAttributes {
    pub user_id: String,
    pub name: String,
    pub mail: String,
    pub telephone: String,
    pub department: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        LdapAttributes {
            user_id: "uid".into(),
            name: "cn".into(),
            mail: "mail".into(),
            telephone: "telephoneNumber".into(),
            department: "departmentNumber".into(),
        }
    }
}

fn default_ldap_filter() -> String {
    "(objectClass=inetOrgPerson)".into()
}
fn default_ldap_interval() -> u64 {
    60
}
fn default_ldap_timeout() -> u64 {
    10
}

/// The problems of an `[ldap]` section: the key and what is wrong.
fn check_ldap(l: &LdapConfig) -> Result<(), (&'static str, String)> {
    if l.bind_password.is_some() {
        return Err((
            "ldap.bind_password",
            "a password is never written in the configuration: put it in a file readable by sipcfg only and name \
             it in ldap.bind_password_file"
                .into(),
        ));
    }
    let lower = l.url.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").unwrap_or(("", ""));
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || !matches!(scheme, "ldap" | "ldaps") {
        return Err((
            "ldap.url",
            format!("{:?}: give ldaps://HOST[:PORT] or ldap://HOST[:PORT] (with starttls)", l.url),
        ));
    }
    if scheme == "ldaps" && l.starttls {
        return Err(("ldap.starttls", "is for ldap:// URLs; ldaps:// is TLS from the start".into()));
    }
    if scheme == "ldap" && !l.starttls && !l.insecure {
        return Err((
            "ldap.url",
            format!(
                "{}: plain LDAP would send the bind password and the directory in clear: use ldaps://, or set \
                 starttls = true (or insecure = true for a test directory)",
                l.url
            ),
        ));
    }
    if l.bind_dn.is_some() != l.bind_password_file.is_some() {
        return Err((
            "ldap.bind_dn",
            "give bind_dn and bind_password_file together (neither: an anonymous bind)".into(),
        ));
    }
    if l.base_dn.trim().is_empty() {
        return Err(("ldap.base_dn", "must not be empty".into()));
    }
    if !(l.filter.starts_with('(') && l.filter.ends_with(')')) {
        return Err((
            "ldap.filter",
            format!("{:?}: an LDAP filter is in parentheses, e.g. (objectClass=inetOrgPerson)", l.filter),
        ));
    }
    let a = &l.attributes;
    if [&a.user_id, &a.name].iter().any(|v| v.trim().is_empty()) {
        return Err(("ldap.attributes", "user_id and name must name an attribute".into()));
    }
    if !(1..=300).contains(&l.timeout_secs) {
        return Err(("ldap.timeout_secs", format!("{} is outside 1-300", l.timeout_secs)));
    }
    if l.interval_minutes > 10_080 {
        return Err((
            "ldap.interval_minutes",
            format!("{} is above 10080 (a week); 0: only on demand", l.interval_minutes),
        ));
    }
    Ok(())
}

/// `[store]` as written: every key optional, since `SIPCFG_STORE_URL` may give the URL.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    password_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_store_connections")]
    max_connections: u32,
    #[serde(default = "default_store_timeout")]
    connect_timeout_secs: u64,
    #[serde(default = "default_store_resync")]
    resync_secs: u64,
}

/// The shared store of a cluster: PostgreSQL, which every node reads and writes. Without it, a node keeps its
/// inventory in files and its token state in SQLite (`[state]`). docs/cluster.md.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// `postgres://USER@HOST:PORT/DATABASE[?sslmode=...]`, without a password (it would end up in logs and
    /// process lists): the password is read from `password_file`.
    pub url: String,
    /// A file holding the database password (first line), readable by sipcfg only.
    pub password_file: Option<PathBuf>,
    /// The key-encryption key: 32 random bytes, base64. The private parts of the token-signing keys are
    /// stored encrypted with it (AES-256-GCM); every node needs the same file. `sipcfg store init` creates
    /// it when it does not exist. Default: `store.key` beside the configuration file.
    pub key_file: PathBuf,
    /// Connections each node keeps at most (1-100).
    pub max_connections: u32,
    /// How long a node waits for a connection before it reports the store unreachable (1-60 s): token
    /// grants answer 503 after that.
    pub connect_timeout_secs: u64,
    /// How often a node reads the change log even without a notification (1-300 s): what a lost
    /// notification costs at most.
    pub resync_secs: u64,
}

impl StoreConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_secs)
    }
}

fn default_store_connections() -> u32 {
    10
}
fn default_store_timeout() -> u64 {
    5
}
fn default_store_resync() -> u64 {
    5
}

/// Why `url` cannot name the shared store, or `None`. A URL with a password is refused: secrets never go
/// into URLs.
pub fn store_url_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) else {
        return Some(format!("{:?} is not a PostgreSQL URL: give postgres://USER@HOST:PORT/DATABASE", redact_url(url)));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((user_info, _)) = authority.rsplit_once('@')
        && user_info.contains(':')
    {
        return Some(format!(
            "{:?} holds a password: remove it and put it in [store] password_file (a URL ends up in logs and \
             process lists)",
            redact_url(url)
        ));
    }
    if url.contains("password=") {
        return Some(
            "the URL holds a password parameter: remove it and put the password in [store] password_file".into(),
        );
    }
    None
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.find("password=") {
        Some(at) => {
            let end = tail[at..].find('&').map_or(tail.len(), |e| at + e);
            format!("{}password=***{}", &tail[..at], &tail[end..])
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn default_failed_grants() -> u32 {
    10
}
fn default_failed_window() -> i64 {
    60
}
fn default_purge_interval() -> u64 {
    3600
}
/// `[state] reuse_grace_secs` when not set (and in a cluster without `[state]`).
pub const DEFAULT_REUSE_GRACE_SECS: u64 = 30;

fn default_reuse_grace() -> u64 {
    DEFAULT_REUSE_GRACE_SECS
}

/// Listener and connection limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTPS listener (CUCM's 6971).
    pub listen: SocketAddr,
    /// A TLS handshake that has not finished by then is dropped, so half-open clients cannot pile up.
    pub tls_handshake_timeout_secs: u64,
    /// Time allowed to send a request's headers (HTTP/1.1), against slowloris clients.
    pub header_read_timeout_secs: u64,
    /// Connections above this wait in the kernel's accept queue instead of exhausting memory or descriptors.
    pub max_connections: usize,
    /// Work in flight on the phone-facing listeners (TLS handshakes in progress and requests being served);
    /// past it new connections are closed before their handshake and requests get 503 with `Retry-After`.
    /// None: [`DEFAULT_IN_FLIGHT_PER_CPU`] per CPU the process may run on.
    pub max_in_flight: Option<usize>,
    /// Threads that serve connections. None: one per CPU the process may run on. With one, the runtime is
    /// tokio's single-threaded scheduler (no work stealing to pay for).
    pub worker_threads: Option<usize>,
    /// On shutdown, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// How often the inventory, templates and certificate stores are checked for changes.
    pub reload_poll_ms: u64,
    /// A connection on which nothing is read or written for this long is closed (idle keep-alive, slow
    /// readers).
    pub idle_timeout_secs: u64,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: streams reset by the client before the server saw them, per connection, before the
    /// connection is closed (rapid-reset, CVE-2023-44487).
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2: streams the server had to reset for protocol errors, per connection, before it is closed.
    pub h2_max_local_error_reset_streams: usize,
    /// Failed authentications (invalid token, or a file not the token's) per client address within
    /// `failed_auth_window_secs` before 429.
    pub max_failed_auth: u32,
    pub failed_auth_window_secs: i64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([0u16; 8], 6971))),
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            max_connections: 10_000,
            max_in_flight: None,
            worker_threads: None,
            shutdown_grace_secs: 10,
            reload_poll_ms: 1000,
            idle_timeout_secs: 30,
            max_header_bytes: 16 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_reset_streams: 50,
            max_failed_auth: 30,
            failed_auth_window_secs: 60,
        }
    }
}

/// The default `server.max_in_flight` per CPU the process may run on: about 50 ms of boot-storm work
/// (a new TLS connection and its first request cost about 200 µs of one core), so that the requests the
/// server accepts under overload are still answered well within 100 ms.
pub const DEFAULT_IN_FLIGHT_PER_CPU: usize = 256;

impl ServerConfig {
    /// `max_in_flight`, or its default for the CPUs this process may run on (its affinity mask).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or_else(|| {
            DEFAULT_IN_FLIGHT_PER_CPU * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        })
    }
    /// `worker_threads`, or one per CPU this process may run on (its affinity mask).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn reload_poll(&self) -> Duration {
        Duration::from_millis(self.reload_poll_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// The server certificate chain and its private key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Session resumption (a stateful session cache, one TLS 1.3 ticket per full handshake). A phone fetches
    /// several files at boot, each on a new connection; resumption saves it (and us) the full handshake.
    #[serde(default = "default_true")]
    pub resumption: bool,
    /// Sessions kept for resumption (about 1 KiB each).
    #[serde(default = "default_session_cache_entries")]
    pub session_cache_entries: usize,
}

fn default_true() -> bool {
    true
}
fn default_session_cache_entries() -> usize {
    16384
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
    #[serde(default = "default_max_token_bytes")]
    max_token_bytes: usize,
    #[serde(default)]
    keys: Vec<VerifyKeyConfig>,
    jwks: Option<PathBuf>,
    signing: Option<SigningConfig>,
}

fn default_leeway() -> u64 {
    30
}
fn default_max_token_bytes() -> usize {
    8192
}

/// How bearer tokens are verified (and, optionally, minted).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// The only algorithms accepted; the token's `alg` header never widens this.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// Longer `Authorization` values are refused before any decoding.
    pub max_token_bytes: usize,
    /// Public keys (PEM), each pinned to one algorithm.
    pub keys: Vec<VerifyKeyConfig>,
    /// A JWKS file of public keys.
    pub jwks: Option<PathBuf>,
    /// The private key `sipcfg token` signs with.
    pub signing: Option<SigningConfig>,
}

impl AuthConfig {
    /// Whether tokens of an issuer other than sipcfg itself are accepted: a JWKS, or a key of `[[auth.keys]]`
    /// that is not the `[auth.signing]` key (the one `sipcfg token` signs with, recognised by its `kid`).
    pub fn has_external_issuer(&self) -> bool {
        let own_kid = self.signing.as_ref().map(|s| s.kid.as_deref());
        self.jwks.is_some()
            || self.keys.iter().any(|k| own_kid.is_none_or(|own| own.is_none() || own != k.kid.as_deref()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyConfig {
    /// Key id; when set, only tokens whose `kid` header names it are checked against this key.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub public_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub private_key: PathBuf,
    /// Lifetime of a minted token when `--ttl` is not given.
    #[serde(default = "default_token_ttl")]
    pub default_ttl_secs: u64,
}

fn default_token_ttl() -> u64 {
    3600
}

/// Where the inventory and templates are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    pub file: PathBuf,
    /// The shipped templates.
    pub templates: PathBuf,
    /// Local templates that replace shipped ones of the same relative name.
    pub templates_override: Option<PathBuf>,
}

/// Common files (ring lists, dial plans, locales, softkeys, firmware).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The file root; without it, only configuration files are served.
    pub root: Option<PathBuf>,
    pub max_file_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig { root: None, max_file_bytes: DEFAULT_MAX_FILE_BYTES }
    }
}

/// Certificate stores managed with `sipcfg cert`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Folder of the Phone-Edge-Trust certificates (at most 16), published to phones: the CA that issued the
    /// server certificate, or the server certificate itself when it is self-signed.
    pub phone_edge_trust: Option<PathBuf>,
    /// Folder of the Tomcat-trust certificates: what the edge listener checks Expressway-C client
    /// certificates against (with `edge.client_ca`, if set).
    pub tomcat_trust: Option<PathBuf>,
}

/// The optional plain-HTTP listener (CUCM's 6970).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    pub listen: SocketAddr,
}

/// The optional mutual-TLS listener for edge proxies (Expressway-C, Mobile and Remote Access).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    /// A PEM file of CA certificates a proxy's client certificate may chain to, besides the Tomcat-trust store
    /// (`[trust] tomcat_trust`); at least one of the two is required.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// The admitted proxies; a client certificate must match one of them.
    #[serde(default)]
    pub proxies: Vec<EdgeProxy>,
}

/// CUCM's Expressway-C entry: host, description, and the X.509 subject names of its certificate.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeProxy {
    pub host: String,
    #[serde(default)]
    pub description: String,
    /// Names the proxy's certificate may carry (a subject CN or DNS subject alternative name; an IP address
    /// SAN for an IP address); empty means the host.
    #[serde(default)]
    pub subject_names: Vec<String>,
}

/// A name a proxy's client certificate must carry, and where in the certificate it is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyName<'a> {
    /// An IP address (IPv6 with or without brackets): only an IP address subject alternative name matches.
    Ip(IpAddr),
    /// A host name: the subject CN or a DNS subject alternative name, in any letter case.
    Dns(&'a str),
}

impl<'a> ProxyName<'a> {
    pub fn parse(name: &'a str) -> ProxyName<'a> {
        let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        match bare.parse::<IpAddr>() {
            Ok(ip) => ProxyName::Ip(ip),
            Err(_) => ProxyName::Dns(name),
        }
    }

    /// Where the name is looked for, for people.
    pub fn matched_by(self) -> &'static str {
        match self {
            ProxyName::Ip(_) => "IP address SAN",
            ProxyName::Dns(_) => "DNS name SAN or subject CN",
        }
    }
}

impl EdgeProxy {
    /// The names a client certificate must carry one of: `subject_names`, or else `host`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let own = self.subject_names.is_empty().then_some(self.host.as_str());
        self.subject_names.iter().map(String::as_str).chain(own)
    }

    /// [`Self::names`], each with where a certificate must carry it.
    pub fn match_names(&self) -> impl Iterator<Item = ProxyName<'_>> {
        self.names().map(ProxyName::parse)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound of the rendered-config cache, in bytes held (packed files plus per-entry overhead).
    pub max_bytes: u64,
    /// Render every enabled device's configuration into the cache at start and after each reload, in the
    /// background, so that a boot storm finds them there.
    pub prerender: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_bytes: 256 * 1024 * 1024, prerender: true }
    }
}

/// The whole configuration, paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub inventory: InventoryConfig,
    pub cache: CacheConfig,
    pub files: FilesConfig,
    pub trust: TrustConfig,
    pub legacy: Option<LegacyConfig>,
    pub edge: Option<EdgeConfig>,
    pub state: Option<StateConfig>,
    /// The shared store of a cluster (PostgreSQL), when configured (`[store]` or `SIPCFG_STORE_URL`).
    pub store: Option<StoreConfig>,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub observe: ObserveConfig,
    /// The management API and the web console, when configured.
    pub console: Option<ConsoleConfig>,
    /// Users from the directory, when configured.
    pub ldap: Option<LdapConfig>,
    /// `serve --listen` and `--admin-listen`, kept so that a reload applies them to the file it reads again.
    pub overrides: Overrides,
}

/// Command-line settings that take precedence over the configuration file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// `--legacy-listen`: the plain-HTTP listener's address (it turns the listener on).
    pub legacy_listen: Option<SocketAddr>,
    /// `--edge-listen`: the edge listener's address (`[edge]` must be configured).
    pub edge_listen: Option<SocketAddr>,
    /// `--console-listen`: the console's address (it turns the console on).
    pub console_listen: Option<SocketAddr>,
}

impl Config {
    /// Puts `overrides` in force (and keeps them for reloads): `--listen` replaces `server.listen`,
    /// `--admin-listen` replaces `admin.listen` and turns the admin listener on.
    pub fn apply_overrides(&mut self, overrides: Overrides) {
        if let Some(l) = overrides.listen {
            self.server.listen = l;
        }
        if let Some(l) = overrides.admin_listen {
            self.admin.enabled = true;
            self.admin.listen = l;
        }
        if let Some(l) = overrides.legacy_listen {
            self.legacy = Some(LegacyConfig { listen: l });
        }
        if let (Some(l), Some(edge)) = (overrides.edge_listen, &mut self.edge) {
            edge.listen = l;
        }
        if let Some(l) = overrides.console_listen {
            self.console.get_or_insert_with(ConsoleConfig::default).listen = l;
        }
        self.overrides = overrides;
    }

    /// The settings a reload does not apply (see docs/configuration.md, "Reload or restart") that differ
    /// between `self` (in force) and `new`, by their configuration key.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let admin = |c: &Config| (c.admin.enabled, c.admin.listen);
        let edge_listen = |c: &Config| c.edge.as_ref().map(|e| e.listen);
        [
            ("[server]", self.server != new.server),
            ("[cache]", self.cache != new.cache),
            ("[legacy]", self.legacy != new.legacy),
            // Removing [edge] is applied (edge connections are refused); adding or moving it is not.
            ("[edge] listen", new.edge.is_some() && edge_listen(self) != edge_listen(new)),
            ("[state]", self.state != new.state),
            ("[store]", self.store != new.store),
            ("[log]", self.log != new.log),
            ("[observe]", self.observe != new.observe),
            ("[admin] enabled, listen", admin(self) != admin(new)),
            ("[console]", self.console != new.console),
            ("[ldap]", self.ldap != new.ldap),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Reads the configuration file; `SIPCFG_STORE_URL`, when set, gives `[store] url`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let store_url = std::env::var(STORE_URL_ENV).ok().filter(|u| !u.trim().is_empty());
        Config::parse_with(path, &text, store_url)
    }

    /// Parses a configuration file's text, without looking at the environment.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(path, text, None)
    }

    /// Parses a configuration file's text; `store_url` (from `SIPCFG_STORE_URL`) replaces `[store] url`.
    pub fn parse_with(path: &Path, text: &str, store_url: Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: toml_message(text, &e) })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let invalid = |key, message: String| ConfigError::Invalid { path: path.to_owned(), key, message };

        let a = raw.auth;
        if a.algorithms.is_empty() {
            return Err(invalid("auth.algorithms", "name at least one algorithm".into()));
        }
        if a.leeway_secs > MAX_LEEWAY_SECS {
            return Err(invalid(
                "auth.leeway_secs",
                format!("{} is above the maximum of {MAX_LEEWAY_SECS}", a.leeway_secs),
            ));
        }
        if !(512..=65536).contains(&a.max_token_bytes) {
            return Err(invalid("auth.max_token_bytes", "must be between 512 and 65536".into()));
        }
        if a.issuer.is_empty() || a.audience.is_empty() {
            return Err(invalid("auth.issuer", "issuer and audience must not be empty".into()));
        }
        if a.keys.is_empty() && a.jwks.is_none() {
            return Err(invalid(
                "auth.keys",
                "configure at least one verification key (auth.keys or auth.jwks)".into(),
            ));
        }
        for k in &a.keys {
            if !a.algorithms.contains(&k.algorithm) {
                return Err(invalid(
                    "auth.keys",
                    format!(
                        "key {} uses {:?}, which auth.algorithms does not allow",
                        k.public_key.display(),
                        k.algorithm
                    ),
                ));
            }
        }
        if let Some(s) = &a.signing
            && !(60..=86_400 * 30).contains(&s.default_ttl_secs)
        {
            return Err(invalid("auth.signing.default_ttl_secs", "must be between 60 and 2592000".into()));
        }
        let auth = AuthConfig {
            issuer: a.issuer,
            audience: a.audience,
            algorithms: a.algorithms,
            leeway_secs: a.leeway_secs,
            max_token_bytes: a.max_token_bytes,
            keys: a.keys.into_iter().map(|k| VerifyKeyConfig { public_key: at(k.public_key), ..k }).collect(),
            jwks: a.jwks.map(at),
            signing: a.signing.map(|s| SigningConfig { private_key: at(s.private_key), ..s }),
        };

        let server = raw.server;
        if server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1".into()));
        }
        if let Some(n) = server.max_in_flight
            && !(1..=1_000_000).contains(&n)
        {
            return Err(invalid("server.max_in_flight", format!("{n} is outside 1-1000000")));
        }
        if let Some(n) = server.worker_threads
            && !(1..=1024).contains(&n)
        {
            return Err(invalid("server.worker_threads", format!("{n} is outside 1-1024")));
        }
        for (key, v) in [
            ("server.tls_handshake_timeout_secs", server.tls_handshake_timeout_secs),
            ("server.header_read_timeout_secs", server.header_read_timeout_secs),
        ] {
            if !(1..=300).contains(&v) {
                return Err(invalid(key, "must be between 1 and 300 seconds".into()));
            }
        }
        let limits: [(&'static str, u64, std::ops::RangeInclusive<u64>); 6] = [
            ("server.idle_timeout_secs", server.idle_timeout_secs, 1..=3600),
            ("server.max_header_bytes", server.max_header_bytes as u64, 8192..=1_048_576),
            ("server.h2_max_concurrent_streams", u64::from(server.h2_max_concurrent_streams), 1..=1000),
            ("server.h2_max_pending_reset_streams", server.h2_max_pending_reset_streams as u64, 1..=10_000),
            ("server.h2_max_local_error_reset_streams", server.h2_max_local_error_reset_streams as u64, 1..=10_000),
            ("server.max_failed_auth", u64::from(server.max_failed_auth), 1..=1_000_000),
        ];
        for (key, v, range) in limits {
            if !range.contains(&v) {
                return Err(invalid(key, format!("{v} is outside {}-{}", range.start(), range.end())));
            }
        }
        if !(1..=86_400).contains(&server.failed_auth_window_secs) {
            return Err(invalid("server.failed_auth_window_secs", "must be between 1 and 86400".into()));
        }
        if !(50..=60_000).contains(&server.reload_poll_ms) {
            return Err(invalid("server.reload_poll_ms", "must be between 50 and 60000".into()));
        }
        if !(4096..=1 << 30).contains(&raw.log.audit_buffer_bytes) {
            return Err(invalid(
                "log.audit_buffer_bytes",
                format!(
                    "{} is outside 4096-1073741824 (the default, 4194304, suits most sites)",
                    raw.log.audit_buffer_bytes
                ),
            ));
        }
        if raw.cache.max_bytes < 1024 * 1024 {
            return Err(invalid("cache.max_bytes", "must be at least 1 MiB".into()));
        }
        if !(1..=10_000_000).contains(&raw.tls.session_cache_entries) {
            return Err(invalid("tls.session_cache_entries", "must be between 1 and 10000000".into()));
        }
        if let Some(s) = &raw.state {
            if !(1..=100_000).contains(&s.max_failed_grants) {
                return Err(invalid("state.max_failed_grants", "must be between 1 and 100000".into()));
            }
            if !(1..=86_400).contains(&s.failed_grant_window_secs) {
                return Err(invalid("state.failed_grant_window_secs", "must be between 1 and 86400".into()));
            }
            if !(10..=86_400).contains(&s.purge_interval_secs) {
                return Err(invalid("state.purge_interval_secs", "must be between 10 and 86400".into()));
            }
            if s.reuse_grace_secs > 600 {
                return Err(invalid(
                    "state.reuse_grace_secs",
                    format!(
                        "{} is above 600: a longer window gives a stolen refresh token as long to be replayed",
                        s.reuse_grace_secs
                    ),
                ));
            }
        }
        if let Some(edge) = &raw.edge {
            if edge.proxies.is_empty() {
                return Err(invalid("edge.proxies", "the edge listener needs at least one proxy entry".into()));
            }
            for proxy in &edge.proxies {
                if proxy.host.trim().is_empty() || proxy.subject_names.iter().any(|n| n.trim().is_empty()) {
                    return Err(invalid(
                        "edge.proxies",
                        format!("proxy {:?}: host and every subject name must not be empty", proxy.host),
                    ));
                }
            }
            // With a shared store, Tomcat-trust is in it.
            let shared = raw.store.is_some() || store_url.is_some();
            if edge.client_ca.is_none() && raw.trust.tomcat_trust.is_none() && !shared {
                return Err(invalid(
                    "edge.client_ca",
                    "the edge listener needs the CAs of the Expressway-C certificates: set [trust] tomcat_trust \
                     (a folder managed with `sipcfg cert add --purpose tomcat-trust`) or edge.client_ca (a PEM file)"
                        .into(),
                ));
            }
            if listeners_clash(edge.listen, server.listen) {
                return Err(invalid("edge.listen", format!("takes the port of server.listen ({})", server.listen)));
            }
        }
        if let Some(legacy) = &raw.legacy {
            let others = [("server.listen", Some(server.listen)), ("edge.listen", raw.edge.as_ref().map(|e| e.listen))];
            for (key, addr) in others {
                if let Some(addr) = addr
                    && listeners_clash(legacy.listen, addr)
                {
                    return Err(invalid("legacy.listen", format!("takes the port of {key} ({addr})")));
                }
            }
        }
        let admin = &raw.admin;
        if !(1..=365).contains(&admin.cert_warn_days) {
            return Err(invalid("admin.cert_warn_days", "must be between 1 and 365".into()));
        }
        if admin.cert_unready_days > admin.cert_warn_days {
            return Err(invalid(
                "admin.cert_unready_days",
                format!("must be between 0 and admin.cert_warn_days ({})", admin.cert_warn_days),
            ));
        }
        if !(1..=168).contains(&admin.cert_check_hours) {
            return Err(invalid("admin.cert_check_hours", "must be between 1 and 168".into()));
        }
        if !(1..=1_000_000).contains(&raw.observe.max_pairs) {
            return Err(invalid(
                "observe.max_pairs",
                format!("{} is outside 1-1000000 (the default, 4096, is plenty for a pilot)", raw.observe.max_pairs),
            ));
        }

        if let Some(l) = &raw.ldap {
            check_ldap(l).map_err(|(key, message)| invalid(key, message))?;
        }

        let store = match (raw.store, store_url) {
            (None, None) => None,
            (raw_store, env_url) => {
                let from_env = env_url.is_some();
                let raw_store = raw_store.unwrap_or(RawStore {
                    max_connections: default_store_connections(),
                    connect_timeout_secs: default_store_timeout(),
                    resync_secs: default_store_resync(),
                    ..RawStore::default()
                });
                let key = if from_env { STORE_URL_ENV } else { "store.url" };
                let url = env_url.or(raw_store.url).ok_or_else(|| {
                    invalid("store.url", format!("give the PostgreSQL URL here or in {STORE_URL_ENV}"))
                })?;
                if let Some(problem) = store_url_problem(&url) {
                    return Err(invalid(key, problem));
                }
                let ranges: [(&'static str, u64, std::ops::RangeInclusive<u64>); 3] = [
                    // One connection stays with the notification listener: 2 is the least that serves grants.
                    ("store.max_connections", u64::from(raw_store.max_connections), 2..=100),
                    ("store.connect_timeout_secs", raw_store.connect_timeout_secs, 1..=60),
                    ("store.resync_secs", raw_store.resync_secs, 1..=300),
                ];
                for (key, v, range) in ranges {
                    if !range.contains(&v) {
                        return Err(invalid(key, format!("{v} is outside {}-{}", range.start(), range.end())));
                    }
                }
                Some(StoreConfig {
                    url,
                    password_file: raw_store.password_file.map(at),
                    key_file: at(raw_store.key_file.unwrap_or_else(|| PathBuf::from("store.key"))),
                    max_connections: raw_store.max_connections,
                    connect_timeout_secs: raw_store.connect_timeout_secs,
                    resync_secs: raw_store.resync_secs,
                })
            }
        };

        Config {
            path: path.to_owned(),
            server,
            tls: TlsConfig { certificate: at(raw.tls.certificate), private_key: at(raw.tls.private_key), ..raw.tls },
            auth,
            inventory: InventoryConfig {
                file: at(raw.inventory.file),
                templates: at(raw.inventory.templates),
                templates_override: raw.inventory.templates_override.map(at),
            },
            cache: raw.cache,
            files: FilesConfig { root: raw.files.root.map(at), ..raw.files },
            trust: TrustConfig {
                phone_edge_trust: raw.trust.phone_edge_trust.map(at),
                tomcat_trust: raw.trust.tomcat_trust.map(at),
            },
            legacy: raw.legacy,
            edge: raw.edge.map(|e| EdgeConfig { client_ca: e.client_ca.map(at), ..e }),
            state: raw.state.map(|s| StateConfig { database: at(s.database), ..s }),
            store,
            log: LogConfig { audit_file: raw.log.audit_file.map(at), ..raw.log },
            admin: raw.admin,
            observe: raw.observe,
            console: raw.console,
            ldap: raw.ldap.map(|l| LdapConfig {
                ca_file: l.ca_file.map(at),
                bind_password_file: l.bind_password_file.map(at),
                ..l
            }),
            overrides: Overrides::default(),
        }
        .checked_listeners()
    }

    /// The admin listener never shares a port with a listener phones use (`server`, `legacy`, `edge`).
    /// Checked at load, and again by `serve` after `--listen` or `--admin-listen` changed an address.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        let invalid = |key, message| ConfigError::Invalid { path: self.path.clone(), key, message };
        if self.console.is_some() && self.state.is_none() && self.store.is_none() {
            return Err(invalid(
                "console",
                "the console keeps administrators' accounts in the token service's store: add [state] (one node) \
                 or [store] (a cluster), or remove [console]"
                    .into(),
            ));
        }
        if let Some(c) = &self.console {
            let range = |key, v: u64, lo: u64, hi: u64| {
                if (lo..=hi).contains(&v) { Ok(()) } else { Err(invalid(key, format!("{v} is outside {lo}-{hi}"))) }
            };
            range("console.session_minutes", u64::from(c.session_minutes), 5, 10_080)?;
            range("console.login_failures", u64::from(c.login_failures), 1, 1000)?;
            range("console.login_window_secs", u64::from(c.login_window_secs), 10, 86_400)?;
            range("console.max_connections", c.max_connections as u64, 1, 10_000)?;
            range("console.max_body_bytes", c.max_body_bytes as u64, 1024, 1 << 30)?;
        }
        if self.overrides.edge_listen.is_some() && self.edge.is_none() {
            return Err(invalid(
                "edge.listen",
                "--edge-listen was given but the configuration has no [edge] section (its client CA and proxies)"
                    .into(),
            ));
        }
        let o = &self.overrides;
        let named = |key: &'static str, flag: &'static str, overridden: bool| {
            if overridden { format!("{key} (from {flag})") } else { key.to_owned() }
        };
        let listeners = [
            ("server.listen", named("server.listen", "--listen", o.listen.is_some()), Some(self.server.listen)),
            (
                "legacy.listen",
                named("legacy.listen", "--legacy-listen", o.legacy_listen.is_some()),
                self.legacy.as_ref().map(|l| l.listen),
            ),
            (
                "edge.listen",
                named("edge.listen", "--edge-listen", o.edge_listen.is_some()),
                self.edge.as_ref().map(|e| e.listen),
            ),
            (
                "admin.listen",
                named("admin.listen", "--admin-listen", o.admin_listen.is_some()),
                self.admin.enabled.then_some(self.admin.listen),
            ),
            (
                "console.listen",
                named("console.listen", "--console-listen", o.console_listen.is_some()),
                self.console.as_ref().map(|c| c.listen),
            ),
        ];
        for (i, (key, name, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            for (_, other_name, other) in &listeners[..i] {
                let Some(other) = other else { continue };
                if listeners_clash(*addr, *other) {
                    let why = if *key == "admin.listen" {
                        ": the admin listener has no authentication and must never be reachable on a port phones use"
                    } else {
                        ""
                    };
                    return Err(invalid(
                        key,
                        format!("{name} {addr} takes the port of {other_name} ({other}){why}; give it another port"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn checked_listeners(self) -> Result<Config, ConfigError> {
        self.check_listeners()?;
        Ok(self)
    }

    /// Key files of this configuration that carry the example-keys marker (public keys in the repository).
    pub fn example_key_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.tls.private_key.clone()];
        files.extend(self.auth.signing.iter().map(|s| s.private_key.clone()));
        files.extend(self.auth.keys.iter().map(|k| k.public_key.clone()));
        files.retain(|f| f.parent().is_some_and(|d| d.join(EXAMPLE_KEYS_MARKER).exists()));
        files
    }
}

/// A TOML error as `line L, column C: message`.
pub(crate) fn toml_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
