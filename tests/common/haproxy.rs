//! A real HAProxy in TCP mode for integration tests: the cluster tests (issue 14) put it in front of several
//! nodes (or PostgreSQL servers) and kill some of them, as a load balancer in production would see it.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::pg::{apt_install, free_port};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// An HAProxy (`haproxy -db`, a child process) listening on 127.0.0.1:`addr().port()`, balancing round
/// robin over its backends, named `b0`, `b1`, … in proxy `sipcfg`. Killed on Drop.
pub struct Haproxy {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl Haproxy {
    /// Starts HAProxy in front of `backends` (installing it first if it is missing, as root only) and waits
    /// until its port accepts TCP connections. A backend is taken out after two failed checks 500 ms apart
    /// (and back in after two good ones); a connection refused by a backend is retried, the last time on
    /// another backend.
    pub fn start_tcp(backends: &[SocketAddr]) -> Haproxy {
        assert!(!backends.is_empty(), "HAProxy needs at least one backend");
        apt_install(&["haproxy"], || Path::new(HAPROXY).is_file());
        // A free port can be taken by someone else between our probe and HAProxy's bind: try another.
        for attempt in 1..=5 {
            let dir = tempfile::Builder::new().prefix("sipcfg-haproxy-").tempdir().expect("a temporary directory");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            std::fs::write(dir.path().join("haproxy.cfg"), config(addr, backends, &dir.path().join("stats.sock")))
                .expect("write haproxy.cfg");
            let log = std::fs::File::create(dir.path().join("log")).expect("create HAProxy's log");
            let child = Command::new(HAPROXY)
                .arg("-db")
                .arg("-f")
                .arg(dir.path().join("haproxy.cfg"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log's handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("could not run {HAPROXY}: {e}"));
            let haproxy = Haproxy { addr, dir, child: Mutex::new(Some(child)) };
            match haproxy.wait_listening() {
                Ok(()) => return haproxy,
                Err(status) => {
                    let log = haproxy.log();
                    let taken = log.contains("Address already in use") || log.contains("cannot bind socket");
                    if !taken || attempt == 5 {
                        panic!("HAProxy did not start on {addr} ({status}):\n{log}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// HAProxy's stderr so far: alerts, warnings, one line per connection and each backend's ups and downs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Runs one command on the admin socket (`show stat`, `disable server sipcfg/b0`, …) and returns the answer.
    pub fn admin(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let path = self.dir.path().join("stats.sock");
        let mut socket = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect to HAProxy's admin socket {}: {e}", path.display()));
        socket.set_read_timeout(Some(Duration::from_secs(5))).expect("set a read timeout");
        socket.write_all(format!("{command}\n").as_bytes()).expect("write to HAProxy's admin socket");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).expect("read HAProxy's answer");
        answer
    }

    /// Whether HAProxy currently counts backend `index` (`b{index}`) as up, per `show stat`.
    pub fn backend_up(&self, index: usize) -> bool {
        let name = format!("b{index}");
        let stat = self.admin("show stat");
        // CSV: pxname,svname,…,status (the 18th field),…
        stat.lines().map(|line| line.split(',').collect::<Vec<_>>()).any(|fields| {
            fields.len() > 17 && fields[0] == "sipcfg" && fields[1] == name && fields[17].starts_with("UP")
        })
    }

    /// Stops HAProxy (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until the port accepts connections; Err(exit status) if HAProxy exited first.
    fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(status.to_string());
            }
            // HAProxy creates its admin socket under a temporary name and renames it after the TCP port
            // may already accept: wait for both.
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.dir.path().join("stats.sock").exists()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill_now();
                return Err("not listening after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_now(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn config(addr: SocketAddr, backends: &[SocketAddr], stats: &Path) -> String {
    let mut cfg = format!(
        "global\n\
         \x20   log stderr format raw daemon\n\
         \x20   stats socket {} mode 600 level admin\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   retries 2\n\
         \x20   option redispatch\n\
         \n\
         listen sipcfg\n\
         \x20   bind {addr}\n\
         \x20   balance roundrobin\n",
        stats.display()
    );
    for (i, backend) in backends.iter().enumerate() {
        // HAProxy reads "ipv6@::1:5432", not "[::1]:5432".
        let backend = match backend {
            SocketAddr::V4(v4) => v4.to_string(),
            SocketAddr::V6(v6) => format!("ipv6@{}:{}", v6.ip(), v6.port()),
        };
        cfg.push_str(&format!("    server b{i} {backend} check inter 500ms fall 2 rise 2\n"));
    }
    cfg
}
