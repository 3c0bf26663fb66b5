//! A throwaway PostgreSQL cluster for integration tests: the cluster tests (issue 14) need a real shared
//! store, started by the test itself, with the app's role authenticated by SCRAM over TCP as in production.
//! Also the installer shared with `haproxy.rs`: Debian's packages, installed on first use when we are root.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster on 127.0.0.1:`port()`, in a temporary directory that `Drop` removes.
///
/// Roles: `postgres`, a superuser reachable only over the Unix socket in that directory (trust: for
/// `psql`, the harness's admin channel); `sipcfg`, owner of database `sipcfg`, reachable only over TCP from
/// 127.0.0.1 with its password (scram-sha-256).
pub struct Postgres {
    bin: PathBuf,
    /// Holds the data directory (`data/`), the server log (`log`) and the Unix socket.
    dir: tempfile::TempDir,
    /// Holds the password file, readable by the current user (the cluster's directory belongs to `postgres`).
    secret_dir: tempfile::TempDir,
    port: u16,
    password: String,
}

impl Postgres {
    /// Creates and starts a cluster, installing PostgreSQL first if it is missing (as root only).
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let root = is_root();
        // As root, the cluster belongs to `postgres` (initdb and the server refuse to run as root), so its
        // directory must be reachable by that user: /tmp, whatever TMPDIR says.
        let base = if root { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        let dir = tempfile::Builder::new().prefix("sipcfg-pg-").tempdir_in(&base).expect("a temporary directory");
        if root {
            run_checked(
                Command::new("chown").arg("postgres:postgres").arg(dir.path()),
                "chown the cluster's directory",
            );
        }
        let data = dir.path().join("data");
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.current_dir(dir.path()).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        run_checked(&mut initdb, "initdb");
        // Only the superuser over the socket is trusted; the app's role must present its password over TCP.
        std::fs::write(
            data.join("pg_hba.conf"),
            "# sipcfg test harness\n\
             local all postgres trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("read postgresql.conf");
        conf.push_str("\ninclude 'harness.conf'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write postgresql.conf");

        let password = random_hex(16);
        let secret_dir = tempfile::Builder::new().prefix("sipcfg-pgpass-").tempdir().expect("a temporary directory");
        std::fs::write(secret_dir.path().join("password"), format!("{password}\n")).expect("write the password file");

        let mut pg = Postgres { bin, dir, secret_dir, port: 0, password };
        // A free port can be taken by someone else between our probe and the server's bind: try another.
        for attempt in 1..=5 {
            pg.port = free_port();
            pg.write_settings();
            let out = pg.pg_ctl_start();
            if out.status.success() {
                break;
            }
            let log = pg.log();
            let taken = log.contains("Address already in use") || log.contains("could not bind");
            if !taken || attempt == 5 {
                panic!(
                    "PostgreSQL did not start on port {} ({}):\n{}\n--- server log ---\n{log}",
                    pg.port,
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // `pg` exists from here on, so a failure below still stops the server (Drop).
        let sql =
            format!("CREATE ROLE sipcfg LOGIN PASSWORD '{}';\nCREATE DATABASE sipcfg OWNER sipcfg;\n", pg.password);
        pg.psql(&sql);
        pg
    }

    /// `postgres://sipcfg@127.0.0.1:PORT/sipcfg`: no password (see `password_file`, `url_with_password`).
    pub fn url(&self) -> String {
        format!("postgres://sipcfg@127.0.0.1:{}/sipcfg", self.port)
    }

    /// The same with the password (hex, so it needs no escaping).
    pub fn url_with_password(&self) -> String {
        format!("postgres://sipcfg:{}@127.0.0.1:{}/sipcfg", self.password, self.port)
    }

    /// Role `sipcfg`'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A file holding the password and a newline, in a directory of its own, readable by the current user.
    pub fn password_file(&self) -> PathBuf {
        self.secret_dir.path().join("password")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (for panic messages and assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// A clean shutdown (`pg_ctl stop -m fast`: clients are disconnected); `start_again` brings it back.
    pub fn stop(&self) {
        let out = self.pg_ctl_stop("fast");
        assert!(out.status.success(), "pg_ctl stop failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    /// A crash (`pg_ctl stop -m immediate`: no shutdown checkpoint, so the next start runs recovery).
    pub fn kill(&self) {
        let out = self.pg_ctl_stop("immediate");
        assert!(out.status.success(), "pg_ctl stop failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    /// Starts the stopped (or killed) cluster again, on the same port.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "PostgreSQL did not start again on port {}: {}\n--- server log ---\n{}",
            self.port,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Runs `sql` (one or more statements, each in its own transaction unless it says otherwise) as the
    /// superuser over the Unix socket, in database `postgres`, and returns the output: unaligned, tuples
    /// only, `|` between columns. Panics with psql's stderr if a statement fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// The same in `database` (`sipcfg`: the app's tables, as the superuser).
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        use std::io::Write;
        // The script goes through stdin: no password on a command line, and statements such as
        // CREATE DATABASE that refuse a transaction block work (`-c` would send one implicit transaction).
        let mut child = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs");
        child.stdin.take().expect("psql's stdin").write_all(sql.as_bytes()).expect("write to psql");
        let out = child.wait_with_output().expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed ({}) on:\n{sql}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything this harness changes in the server's configuration; rewritten when the port changes.
    fn write_settings(&self) {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             password_encryption = 'scram-sha-256'\n\
             # A throwaway cluster: speed over durability.\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            self.port,
            self.dir.path().display()
        );
        std::fs::write(self.data().join("harness.conf"), settings).expect("write harness.conf");
    }

    fn pg_ctl_start(&self) -> Output {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.current_dir(self.dir.path())
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"]);
        output(&mut cmd, "pg_ctl start")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.current_dir(self.dir.path()).arg("-D").arg(self.data()).args(["-w", "-t", "60", "-m", mode, "stop"]);
        output(&mut cmd, "pg_ctl stop")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fails harmlessly when the server is already stopped; TempDir then removes the directory.
        let _ = self.pg_ctl_stop("immediate");
    }
}

/// The bin directory of the newest PostgreSQL under /usr/lib/postgresql, installed if there is none.
fn postgres_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = newest_postgres() {
            return bin;
        }
        apt_install(&["postgresql"], || newest_postgres().is_some());
        newest_postgres().expect("PostgreSQL's binaries under /usr/lib/postgresql/*/bin after installing postgresql")
    })
    .clone()
}

fn newest_postgres() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // "15", or "9.6" on very old systems: compare as numbers.
            let version: Vec<u32> =
                entry.file_name().to_str()?.split('.').map(|part| part.parse().ok()).collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// Installs Debian `packages` unless `present()` already holds. Root only: otherwise panics saying what to
/// install. Several test binaries may run at once, so one installs while the others wait on a lock file and
/// then find the packages there; apt's own lock (someone else's apt) is waited for, up to about 2 minutes.
pub fn apt_install(packages: &[&str], present: impl Fn() -> bool) {
    if present() {
        return;
    }
    if !is_root() {
        panic!(
            "these tests need Debian's {} (not installed, and only root installs it here): \
             run `sudo apt-get install -y --no-install-recommends {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open("/tmp/sipcfg-test-apt.lock")
        .expect("open /tmp/sipcfg-test-apt.lock");
    // flock(2): blocks while another test process installs; released when `lock` is dropped.
    lock.lock().expect("lock /tmp/sipcfg-test-apt.lock");
    if present() {
        return;
    }
    apt_get(&["update"]);
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt_get(&install);
    assert!(present(), "apt-get installed {} but the binaries are still missing", packages.join(" "));
}

fn apt_get(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = output(
            Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=60", "-q"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
            "apt-get",
        );
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let locked = stderr.contains("Could not get lock")
            || stderr.contains("Unable to acquire the dpkg frontend lock")
            || stderr.contains("Unable to lock");
        if !locked || Instant::now() > deadline {
            panic!(
                "apt-get {} failed ({}):\n{}\n{stderr}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Whether this process runs as root (`id -u`; no libc call, `unsafe` is forbidden and rustix lacks the
/// feature here).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = output(Command::new("id").arg("-u"), "id -u");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// `program` run as the `postgres` user when we are root (initdb and postgres refuse root), else as we are.
fn as_postgres(program: &Path) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        cmd
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: could not run {cmd:?}: {e}"))
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = output(cmd, what);
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
